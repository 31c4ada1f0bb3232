// The fast path's ESP key (src/tun/fastpath.ts's fastPathEspKey): the SPI's
// four bytes where TCP's and UDP's ports are, as the program copies them from
// the packet (test/netns/fastpath.test.ts sends such packets through it).
import { describe, expect, it } from 'vitest';
import { FAST_PATH_PROTO_ESP, fastPathEspKey, fastPathKey, parseFastPathKey } from '../../../src/tun/fastpath.js';

describe('fastPathEspKey', () => {
  it('holds the SPI as the packet does (network order at bytes 8..11), protocol 50', () => {
    const k = fastPathEspKey('10.1.2.3', '192.0.2.200', 0xc0ffee01);
    expect(k.toString('hex')).toBe('0a010203' + 'c00002c8' + 'c0ffee01' + '32000000');
    expect(k.readUInt32BE(8)).toBe(0xc0ffee01);
    expect(parseFastPathKey(k)).toEqual({ saddr: '10.1.2.3', daddr: '192.0.2.200', sport: 0xc0ff, dport: 0xee01, proto: FAST_PATH_PROTO_ESP });
    expect(FAST_PATH_PROTO_ESP).toBe(50);
  });

  it('is fastPathKey with sport the high 16 bits and dport the low 16', () => {
    for (const spi of [0, 1, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 0x12345678]) {
      expect(fastPathEspKey('10.0.0.1', '10.0.0.2', spi)).toEqual(
        fastPathKey({ saddr: '10.0.0.1', daddr: '10.0.0.2', sport: spi >>> 16, dport: spi & 0xffff, proto: 50 }),
      );
    }
  });

  it('keys the addresses too: the same SPI from another host is another key', () => {
    const a = fastPathEspKey('10.0.0.1', '10.0.0.2', 0x1000);
    expect(fastPathEspKey('10.0.0.3', '10.0.0.2', 0x1000).equals(a)).toBe(false);
    expect(fastPathEspKey('10.0.0.1', '10.0.0.2', 0x1001).equals(a)).toBe(false);
  });

  it('refuses what is no SPI, and an address that is no dotted quad', () => {
    for (const bad of [-1, 2 ** 32, 1.5, NaN]) expect(() => fastPathEspKey('10.0.0.1', '10.0.0.2', bad)).toThrow(RangeError);
    expect(() => fastPathEspKey('10.0.0', '10.0.0.2', 1)).toThrow(/not a dotted-quad/);
  });
});
