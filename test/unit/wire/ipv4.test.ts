// IPv4 header (RFC 791 §3.1) byte vectors, in the manner of smoltcp's wire
// tests: each vector is written out byte by byte (generated once by an
// independent implementation, not by test/helpers/packet.ts) and checked
// four ways: deconstruct (the engine takes it, parse() reads its fields),
// construct (the builders produce exactly these bytes), truncated (every
// prefix is dropped with the right reason, never a trap) and overlong
// (bytes after the total length are tolerated and left untouched).
import { describe, expect, it } from 'vitest';
import { TestRouter, WAN } from '../../helpers/harness.js';
import { fixIp, send } from './kit.js';
import { DNS_QUERY, DNS_QUERY_NAT, DNS_REPLY, DNS_REPLY_NAT } from './vectors.js';
import { csum, ipCsumOk, l4CsumOk, parse, udp } from '../../helpers/packet.js';

const bytes = (...b: number[]) => Uint8Array.from(b);
const LAN_HOST = '192.168.1.100';

// IHL 6: a Router Alert option (RFC 2113), TTL 1, UDP 5000 → 5001 "ping".
const UDP_RA = bytes(
  0x46, 0x00, 0x00, 0x24, // IHL 6 (24 bytes), total length 36
  0x01, 0x01, 0x00, 0x00,
  0x01, 0x11, 0x5f, 0xb6, // TTL 1
  0xc0, 0xa8, 0x01, 0x64,
  0x01, 0x01, 0x01, 0x01,
  0x94, 0x04, 0x00, 0x00, // option: router alert
  0x13, 0x88, 0x13, 0x89,
  0x00, 0x0c, 0x35, 0xe6,
  0x70, 0x69, 0x6e, 0x67,
);
const UDP_RA_NAT = bytes(
  0x46, 0x00, 0x00, 0x24,
  0x01, 0x01, 0x00, 0x00,
  0x02, 0x11, 0xe4, 0xc0,
  0xcb, 0x00, 0x71, 0x01,
  0x01, 0x01, 0x01, 0x01,
  0x94, 0x04, 0x00, 0x00,
  0x13, 0x88, 0x13, 0x89,
  0x00, 0x0c, 0xbb, 0xf0,
  0x70, 0x69, 0x6e, 0x67,
);
const DNS = DNS_QUERY.subarray(28);



function expectDrop(r: TestRouter, side: 'out' | 'in', p: Uint8Array, reason: string): void {
  const { res, delta } = send(r, side, p);
  expect(res, `${reason} expected for ${p.length} bytes`).toBeNull();
  expect(delta, `${p.length} bytes`).toEqual({ [reason]: 1 });
}

/** What ipv4Check should answer, written from RFC 791 rather than from the engine. */
function ipModel(p: Uint8Array): string | null {
  if (p.length < 20) return 'truncated';
  if (p[0] >> 4 !== 4) return 'bad_version';
  const hl = (p[0] & 0xf) * 4;
  if (hl < 20 || hl > p.length) return 'bad_ihl';
  const total = (p[2] << 8) | p[3];
  if (total < hl || total > p.length) return 'bad_total_len';
  if (csum(p.subarray(0, hl)) !== 0xffff) return 'bad_ip_csum';
  const offset = (((p[6] << 8) | p[7]) & 0x1fff) * 8;
  if (offset + total - hl > 65535) return 'bad_fragment';
  return null;
}

describe.each([['release', false], ['debug', true]] as const)('wire/ipv4 (%s build)', (_name, debug) => {
  const router = () => new TestRouter({ debug });

  describe('deconstruct', () => {
    it('a DNS query: every header field reads back, the engine emits exactly the translated bytes', () => {
      const x = parse(DNS_QUERY);
      expect(DNS_QUERY[0] >> 4).toBe(4);
      expect(x.hlen).toBe(20);
      expect(DNS_QUERY[1]).toBe(0); // TOS
      expect((DNS_QUERY[2] << 8) | DNS_QUERY[3]).toBe(57);
      expect(x.id).toBe(0x5c2e);
      expect(DNS_QUERY[6] & 0x40).toBe(0x40); // DF
      expect(x.mf).toBe(false);
      expect(x.fragOffset).toBe(0);
      expect(x.ttl).toBe(64);
      expect(x.proto).toBe(17);
      expect(ipCsumOk(DNS_QUERY)).toBe(true);
      expect(x.src).toBe(LAN_HOST);
      expect(x.dst).toBe('1.1.1.1');
      expect([x.sport, x.dport]).toEqual([54321, 53]);
      expect(l4CsumOk(DNS_QUERY)).toBe(true);

      const r = router();
      const out = r.out(DNS_QUERY.slice());
      expect(out).toEqual(DNS_QUERY_NAT);
      const o = parse(out!);
      expect([o.src, o.dst, o.ttl, o.id]).toEqual([WAN, '1.1.1.1', 65, 0x5c2e]);
      expect(out![6]).toBe(0x40); // DF kept
    });

    it('the answer comes back to the LAN host, exactly', () => {
      const r = router();
      r.out(DNS_QUERY.slice());
      const x = parse(DNS_REPLY);
      expect([x.src, x.dst, x.ttl, x.id, x.proto]).toEqual(['1.1.1.1', WAN, 57, 0, 17]);
      expect(r.in(DNS_REPLY.slice())).toEqual(DNS_REPLY_NAT);
    });

    it('IP options (IHL 6) are carried through untouched, the L4 header found after them', () => {
      const x = parse(UDP_RA);
      expect(x.hlen).toBe(24);
      expect([x.sport, x.dport, x.ttl]).toEqual([5000, 5001, 1]);
      expect(Array.from(UDP_RA.subarray(20, 24))).toEqual([0x94, 0x04, 0x00, 0x00]);
      expect(ipCsumOk(UDP_RA) && l4CsumOk(UDP_RA)).toBe(true);
      const r = router();
      expect(r.out(UDP_RA.slice())).toEqual(UDP_RA_NAT);
    });

    it('TTL 255 stays 255 (the hop compensation never wraps), checksum still right', () => {
      const r = router();
      const p = fixIp(Object.assign(DNS_QUERY.slice(), { 8: 255 }));
      const out = r.out(p)!;
      expect(out[8]).toBe(255);
      expect(ipCsumOk(out)).toBe(true);
      expect(l4CsumOk(out)).toBe(true);
    });
  });

  describe('construct', () => {
    it('the builders produce exactly these bytes', () => {
      expect(udp(LAN_HOST, 54321, '1.1.1.1', 53, DNS, { id: 0x5c2e, flags: 2 })).toEqual(DNS_QUERY);
      expect(udp(WAN, 54321, '1.1.1.1', 53, DNS, { id: 0x5c2e, flags: 2, ttl: 65 })).toEqual(DNS_QUERY_NAT);
      expect(udp('1.1.1.1', 53, WAN, 54321, DNS_REPLY.subarray(28), { id: 0, flags: 2, ttl: 57 })).toEqual(DNS_REPLY);
      expect(udp(LAN_HOST, 5000, '1.1.1.1', 5001, [0x70, 0x69, 0x6e, 0x67], { id: 0x0101, ttl: 1, options: [0x94, 4, 0, 0] }))
        .toEqual(UDP_RA);
    });

    it('the checksum helper agrees with the RFC 791 example header (Wikipedia: 0xb861)', () => {
      const h = bytes(0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7);
      expect(~csum(h) & 0xffff).toBe(0xb861);
    });
  });

  describe('truncated', () => {
    it('every prefix of a 20-byte-header packet: truncated below 20 bytes, bad_total_len after, both sides', () => {
      const r = router();
      r.out(DNS_QUERY.slice()); // a flow, so that only the header is at fault inbound
      for (let n = 0; n < DNS_QUERY.length; n++) {
        expectDrop(r, 'out', DNS_QUERY.slice(0, n), n < 20 ? 'truncated' : 'bad_total_len');
      }
      for (let n = 0; n < DNS_REPLY.length; n++) {
        expectDrop(r, 'in', DNS_REPLY.slice(0, n), n < 20 ? 'truncated' : 'bad_total_len');
      }
      expect(r.engine.x.flowActive()).toBe(1);
    });

    it('every prefix of a packet with options: truncated, then bad_ihl while the options are cut, then bad_total_len', () => {
      const r = router();
      for (let n = 0; n < UDP_RA.length; n++) {
        expectDrop(r, 'out', UDP_RA.slice(0, n), n < 20 ? 'truncated' : n < 24 ? 'bad_ihl' : 'bad_total_len');
      }
      expect(r.engine.x.flowActive()).toBe(0);
    });
  });

  describe('malformed headers', () => {
    it('versions other than 4 are bad_version', () => {
      const r = router();
      for (let v = 0; v < 16; v++) {
        if (v === 4) continue;
        const p = DNS_QUERY.slice();
        p[0] = (v << 4) | 5;
        expectDrop(r, 'out', fixIp(p), 'bad_version');
      }
    });

    it('IHL below 5 or beyond the packet is bad_ihl; total length below IHL or beyond the packet is bad_total_len', () => {
      const r = router();
      for (const ihl of [0, 1, 2, 3, 4]) {
        const p = DNS_QUERY.slice();
        p[0] = 0x40 | ihl;
        expectDrop(r, 'out', p, 'bad_ihl');
      }
      const short = DNS_QUERY.slice(0, 40); // IHL 15 = 60 bytes > 40 read
      short[0] = 0x4f;
      expectDrop(r, 'out', short, 'bad_ihl');
      for (const total of [0, 1, 19, 58, 1500, 65535]) {
        const p = DNS_QUERY.slice();
        p[2] = total >> 8; p[3] = total & 0xff;
        expectDrop(r, 'out', fixIp(p), 'bad_total_len');
      }
    });

    it('a wrong header checksum is bad_ip_csum; every single-bit flip of the header is dropped as RFC 791 says', () => {
      const r = router();
      const p = DNS_QUERY.slice();
      p[11] ^= 1;
      expectDrop(r, 'out', p, 'bad_ip_csum');
      const seen = new Set<string>();
      for (let bit = 0; bit < 160; bit++) {
        const q = DNS_QUERY.slice();
        q[bit >> 3] ^= 0x80 >> (bit & 7);
        const want = ipModel(q);
        expect(want, `bit ${bit}`).not.toBeNull();
        seen.add(want!);
        expectDrop(r, 'out', q, want!);
      }
      // flips reach the version, IHL, total length and checksum checks
      expect([...seen].sort()).toEqual(['bad_ihl', 'bad_ip_csum', 'bad_total_len', 'bad_version']);
      expect(r.engine.x.flowActive()).toBe(0);
    });

    it('a fragment reaching past 65535 bytes is bad_fragment; one just inside it is an orphan fragment', () => {
      const r = router();
      const p = DNS_QUERY.slice();
      p[6] = 0x1f; p[7] = 0xff; // offset 65528 + 37 bytes
      expectDrop(r, 'out', fixIp(p), 'bad_fragment');
      const q = DNS_QUERY.slice();
      q[6] = 0x1f; q[7] = 0xfb; // offset 65496 + 37 = 65533
      expectDrop(r, 'out', fixIp(q), 'frag_no_head');
    });

    it('more than a slot (2048 bytes) read is oversize', () => {
      const r = router();
      const big = new Uint8Array(2049);
      big.set(DNS_QUERY);
      expectDrop(r, 'out', big, 'oversize');
    });
  });

  describe('overlong', () => {
    it('bytes after the total length (link padding) are tolerated and left untouched, both ways', () => {
      const r = router();
      for (const extra of [1, 2, 3, 7, 64, 1400]) {
        const tail = Uint8Array.from({ length: extra }, (_, i) => (0xa5 + 31 * i) & 0xff);
        const p = new Uint8Array(DNS_QUERY.length + extra);
        p.set(DNS_QUERY); p.set(tail, DNS_QUERY.length);
        const out = r.out(p);
        expect(out).not.toBeNull();
        expect(out!.length).toBe(p.length);
        expect(out!.subarray(0, DNS_QUERY.length)).toEqual(DNS_QUERY_NAT);
        expect(out!.subarray(DNS_QUERY.length)).toEqual(tail);

        const q = new Uint8Array(DNS_REPLY.length + extra);
        q.set(DNS_REPLY); q.set(tail, DNS_REPLY.length);
        const back = r.in(q);
        expect(back).not.toBeNull();
        expect(back!.subarray(0, DNS_REPLY.length)).toEqual(DNS_REPLY_NAT);
        expect(back!.subarray(DNS_REPLY.length)).toEqual(tail);
      }
      expect(r.engine.drops()).toEqual({});
    });
  });
});
