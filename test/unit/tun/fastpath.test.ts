// The fast path's ESP and GRE keys (src/tun/fastpath.ts's fastPathEspKey
// and fastPathGreKey): the SPI's four bytes where TCP's and UDP's ports are,
// PPTP's Call ID where the destination port is, as the program copies them
// from the packet (test/netns/fastpath.test.ts sends such packets through it).
import { describe, expect, it } from 'vitest';
import { FAST_PATH_PROTO_ESP, FAST_PATH_PROTO_GRE, fastPathEspKey, fastPathGreKey, fastPathKey, parseFastPathKey } from '../../../src/tun/fastpath.js';

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

describe('fastPathGreKey', () => {
  it('holds the Call ID as the packet does (network order at bytes 10..11), sport 0, protocol 47', () => {
    const k = fastPathGreKey('10.1.2.3', '192.0.2.200', 0xbeef);
    expect(k.toString('hex')).toBe('0a010203' + 'c00002c8' + '0000' + 'beef' + '2f000000');
    expect(k.readUInt16BE(10)).toBe(0xbeef);
    expect(parseFastPathKey(k)).toEqual({ saddr: '10.1.2.3', daddr: '192.0.2.200', sport: 0, dport: 0xbeef, proto: FAST_PATH_PROTO_GRE });
    expect(FAST_PATH_PROTO_GRE).toBe(47);
  });

  it('is fastPathKey with sport 0 and dport the Call ID', () => {
    for (const callId of [0, 1, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x1234]) {
      expect(fastPathGreKey('10.0.0.1', '10.0.0.2', callId)).toEqual(
        fastPathKey({ saddr: '10.0.0.1', daddr: '10.0.0.2', sport: 0, dport: callId, proto: 47 }),
      );
    }
  });

  it('keys the addresses too: the same Call ID from another host is another key; and is not ESP\'s or UDP\'s', () => {
    const a = fastPathGreKey('10.0.0.1', '10.0.0.2', 0x1000);
    expect(fastPathGreKey('10.0.0.3', '10.0.0.2', 0x1000).equals(a)).toBe(false);
    expect(fastPathGreKey('10.0.0.1', '10.0.0.4', 0x1000).equals(a)).toBe(false);
    expect(fastPathGreKey('10.0.0.1', '10.0.0.2', 0x1001).equals(a)).toBe(false);
    expect(fastPathEspKey('10.0.0.1', '10.0.0.2', 0x1000).equals(a)).toBe(false);
    expect(fastPathKey({ saddr: '10.0.0.1', daddr: '10.0.0.2', sport: 0, dport: 0x1000, proto: 17 }).equals(a)).toBe(false);
  });

  it('refuses what is no Call ID, and an address that is no dotted quad', () => {
    for (const bad of [-1, 0x10000, 1.5, NaN, 2 ** 32]) expect(() => fastPathGreKey('10.0.0.1', '10.0.0.2', bad)).toThrow(RangeError);
    expect(() => fastPathGreKey('10.0.0.1', '10.0.0.256', 1)).toThrow(/not a dotted-quad/);
  });
});
