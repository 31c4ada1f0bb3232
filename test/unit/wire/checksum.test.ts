// The engine never recomputes a checksum: every rewrite adjusts it
// incrementally (RFC 1624 eqn. 3). Observed through translations, the
// adjusted value must be *exactly* what a full recomputation (RFC 1071)
// gives: same 16 bits, canonical zero, UDP's "computed 0 is sent as 0xffff"
// (RFC 768), and a UDP checksum of 0 ("none") left 0.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ipToRaw, maskRaw } from '../../../src/engine/abi.js';
import { TestRouter, WAN } from '../../helpers/harness.js';
import { ACK, csum, icmpEcho, icmpError, ip, l4CsumOk, parse, tcp, udp, type IpOpts } from '../../helpers/packet.js';

const H1 = '192.168.1.10';
const H2 = '192.168.1.11';
const S1 = '198.51.100.7';

const word = (p: Uint8Array, o: number) => (p[o] << 8) | p[o + 1];
const hex = (n: number) => `0x${n.toString(16).padStart(4, '0')}`;

/** Full recomputation of the IPv4 header checksum of `p` (the field itself ignored). */
function ipChecksumOf(p: Uint8Array): number {
  const h = p.slice(0, (p[0] & 0xf) * 4);
  h[10] = 0; h[11] = 0;
  return ~csum(h) & 0xffff;
}

/** Full recomputation of the L4 checksum of an unfragmented packet, as a sender would put it on the wire. */
function l4ChecksumOf(p: Uint8Array): number {
  const x = parse(p);
  const l4 = x.l4.slice();
  const co = x.proto === 17 ? 6 : x.proto === 6 ? 16 : 2;
  l4[co] = 0; l4[co + 1] = 0;
  if (x.proto === 1) return ~csum(l4) & 0xffff;
  const ph = Uint8Array.from([...ip(x.src), ...ip(x.dst), 0, x.proto, l4.length >> 8, l4.length & 0xff]);
  const c = ~csum(l4, csum(ph)) & 0xffff;
  return x.proto === 17 && c === 0 ? 0xffff : c;
}

function l4Field(p: Uint8Array): number {
  const x = parse(p);
  return word(x.l4, x.proto === 17 ? 6 : x.proto === 6 ? 16 : 2);
}

/**
 * The checksums `p` carries are exactly the recomputed ones. `udpNone`: the
 * UDP checksum (or, for an ICMP error, the quoted one) must still be 0, none.
 */
function expectExact(p: Uint8Array, what: string, udpNone = false): void {
  expect(hex(word(p, 10)), `${what}: IP header checksum`).toBe(hex(ipChecksumOf(p)));
  const x = parse(p);
  if (x.mf || x.fragOffset) return;
  const isError = x.proto === 1 && [3, 4, 11, 12].includes(x.icmpType);
  if (udpNone && !isError) { expect(l4Field(p), `${what}: UDP checksum stays none`).toBe(0); return; }
  expect(hex(l4Field(p)), `${what}: L4 checksum`).toBe(hex(l4ChecksumOf(p)));
  if (isError) {
    const q = x.l4.subarray(8);
    expect(hex(word(q, 10)), `${what}: quoted IP header checksum`).toBe(hex(ipChecksumOf(q)));
    const qt = (q[2] << 8) | q[3];
    if (udpNone) expect(l4Field(q), `${what}: quoted UDP checksum stays none`).toBe(0);
    else if (q.length >= qt) expect(hex(l4Field(q)), `${what}: quoted L4 checksum`).toBe(hex(l4ChecksumOf(q.subarray(0, qt))));
  }
}

type Proto = 'udp' | 'tcp' | 'icmp';
/** A packet of `proto` with ports (or the echo identifier in `sport` outbound, `dport` inbound). */
function build(proto: Proto, src: string, sport: number, dst: string, dport: number, data: number[], o: Partial<IpOpts> = {}): Uint8Array {
  if (proto === 'udp') return udp(src, sport, dst, dport, data, o);
  if (proto === 'tcp') return tcp(src, sport, dst, dport, ACK, data, { seq: 777, ack: 999, ...o });
  return dport === 0 ? icmpEcho(src, dst, 8, sport, 1, data, o) : icmpEcho(src, dst, 0, dport, 1, data, o);
}

describe.each([['release', false], ['debug', true]] as const)('wire/checksum (%s build)', (_name, debug) => {
  it('the reference sum is RFC 1071\'s own example (§3: 0xddf2)', () => {
    expect(csum(Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]))).toBe(0xddf2);
  });

  it('RFC 1624 §4 through the engine: 0x5555 → 0x3285 under checksum 0xdd2f gives 0x0000, not 0xffff', () => {
    // WAN 50.133.1.1 and a LAN host 85.85.1.1: masquerading turns the source
    // word 0x5555 into 0x3285 and leaves the other word alone, which is the
    // RFC's example; the IP ID (and a payload word) are chosen so the old
    // checksums are 0xdd2f.
    const r = new TestRouter({ debug, wan: '50.133.1.1' });
    r.engine.x.setLanNet(1, ipToRaw('85.85.0.0'), maskRaw(16));
    r.engine.x.setLanNetCount(2);
    const host = '85.85.1.1';
    const opts = { ttl: 255 }; // no hop compensation: the address is the only change
    const solveId = (f: (id: number) => Uint8Array) => {
      // ones' complement: the ID that brings the header sum to ~0xdd2f
      const c0 = word(f(0), 10);
      let id = (~0xdd2f & 0xffff) + c0;
      id = (id & 0xffff) + (id >>> 16);
      return id;
    };
    const solveWord = (f: (w: number) => Uint8Array) => {
      const c0 = l4Field(f(0));
      let w = (~0xdd2f & 0xffff) + c0;
      w = (w & 0xffff) + (w >>> 16);
      return w;
    };
    const data = (w: number) => [0x10, 0x20, w >> 8, w & 0xff];

    const uw = solveWord((w) => udp(host, 5555, S1, 53, data(w), opts));
    const uid = solveId((id) => udp(host, 5555, S1, 53, data(uw), { ...opts, id }));
    const u = udp(host, 5555, S1, 53, data(uw), { ...opts, id: uid });
    expect([hex(word(u, 10)), hex(l4Field(u))]).toEqual(['0xdd2f', '0xdd2f']);
    const uo = r.out(u)!;
    expect(hex(word(uo, 10))).toBe('0x0000');
    expect(hex(l4Field(uo))).toBe('0xffff'); // UDP sends a computed 0 as 0xffff (RFC 768)
    expectExact(uo, 'udp');

    const tw = solveWord((w) => tcp(host, 5556, S1, 80, ACK, data(w), opts));
    const t = tcp(host, 5556, S1, 80, ACK, data(tw), opts);
    expect(hex(l4Field(t))).toBe('0xdd2f');
    const to = r.out(t)!;
    expect(hex(l4Field(to))).toBe('0x0000');
    expectExact(to, 'tcp');

    // ICMP has no pseudo header: the RFC's words are the echo identifier,
    // 0x5555 moved to 0x3285 by a one-port pool after a collision.
    const r2 = new TestRouter({ debug, pool: [0x3285, 0x3285] });
    r2.out(icmpEcho(H1, S1, 8, 0x5555));
    const iw = solveWord((w) => icmpEcho(H2, S1, 8, 0x5555, 1, data(w)));
    const e = icmpEcho(H2, S1, 8, 0x5555, 1, data(iw));
    expect(hex(l4Field(e))).toBe('0xdd2f');
    const eo = r2.out(e)!;
    expect(parse(eo).icmpId).toBe(0x3285);
    expect(hex(l4Field(eo))).toBe('0x0000');
    expectExact(eo, 'icmp');
  });

  describe('edges: checksums that must come out as (or start from) zero', () => {
    // For each protocol, direction and whether the port changes, the data
    // word (and the IP ID) are chosen so that either the translated packet's
    // recomputed checksums are zero (UDP: 0xffff on the wire), or the
    // original's are. The engine's output must equal, byte for byte, the
    // packet built from scratch with the translated fields.
    const cases: [Proto, 'out' | 'in', boolean, 'result' | 'input'][] = [];
    for (const proto of ['udp', 'tcp', 'icmp'] as const)
      for (const dir of ['out', 'in'] as const)
        for (const collide of [false, true])
          for (const zero of ['result', 'input'] as const) cases.push([proto, dir, collide, zero]);

    it.each(cases)('%s %s, port changed: %s, zero in the %s', (proto, dir, collide, zero) => {
      const pool = 62000;
      const r = new TestRouter({ debug, pool: [pool, pool] });
      const lanPort = 4242;
      const srvPort = proto === 'icmp' ? 0 : 53;
      if (collide) r.out(build(proto, H1, lanPort, S1, srvPort, [9, 9]));
      const alias = collide ? pool : lanPort;
      const ttl = 100;
      // fields on both sides of the router
      const lanSide = (data: number[], o: Partial<IpOpts>) => dir === 'out'
        ? build(proto, H2, lanPort, S1, srvPort, data, o)
        : proto === 'icmp' ? icmpEcho(S1, H2, 0, lanPort, 1, data, o) : build(proto, S1, srvPort, H2, lanPort, data, o);
      const wanSide = (data: number[], o: Partial<IpOpts>) => dir === 'out'
        ? build(proto, WAN, alias, S1, srvPort, data, o)
        : proto === 'icmp' ? icmpEcho(S1, WAN, 0, alias, 1, data, o) : build(proto, S1, srvPort, WAN, alias, data, o);
      const input = dir === 'out' ? lanSide : wanSide;
      const output = dir === 'out' ? wanSide : lanSide;
      const target = zero === 'result' ? output : input;
      const tTtl = zero === 'result' ? ttl + 1 : ttl;

      const data = [1, 2, 3, 4, 0, 0, 7, 8];
      const c0 = l4Field(target(data, { ttl: tTtl }));
      data[4] = c0 >> 8; data[5] = c0 & 0xff; // the sum is now 0xffff: the checksum is zero
      const id = word(target(data, { ttl: tTtl, id: 0 }), 10);
      const want = output(data, { ttl: ttl + 1, id });
      const pkt = input(data, { ttl, id });
      const z = zero === 'result' ? want : pkt;
      expect(hex(word(z, 10))).toBe('0x0000');
      expect(hex(l4Field(z))).toBe(proto === 'udp' ? '0xffff' : '0x0000');

      if (dir === 'in') {
        const opened = r.out(build(proto, H2, lanPort, S1, srvPort, [5]));
        expect(proto === 'icmp' ? parse(opened!).icmpId : parse(opened!).sport).toBe(alias);
      }
      const got = dir === 'out' ? r.out(pkt) : r.in(pkt);
      expect(got).toEqual(want);
    });

    it('a header or TCP checksum sent as 0xffff (the other zero) is accepted and comes out canonical', () => {
      const r = new TestRouter({ debug });
      const data = [1, 2, 3, 4, 0, 0];
      const c0 = l4Field(tcp(H1, 1000, S1, 80, ACK, data));
      data[4] = c0 >> 8; data[5] = c0 & 0xff;
      const id = word(tcp(H1, 1000, S1, 80, ACK, data, { id: 0 }), 10);
      const p = tcp(H1, 1000, S1, 80, ACK, data, { id });
      expect([word(p, 10), l4Field(p)]).toEqual([0, 0]);
      p[10] = 0xff; p[11] = 0xff; p[36] = 0xff; p[37] = 0xff;
      const got = r.out(p)!;
      expect(got).not.toBeNull();
      expectExact(got, '0xffff in');
      expect(got).toEqual(tcp(WAN, 1000, S1, 80, ACK, data, { id, ttl: 65 }));
    });

    it('a UDP checksum of 0 (none) stays 0 both ways, and inside a quoted datagram', () => {
      const r = new TestRouter({ debug, pool: [62000, 62000] });
      r.out(udp(H1, 4000, S1, 53));
      const none = (p: Uint8Array) => { const q = p.slice(); q[26] = 0; q[27] = 0; return q; };
      const o = r.out(none(udp(H2, 4000, S1, 53, [1, 2, 3])))!;
      expect(parse(o).sport).toBe(62000);
      expectExact(o, 'out', true);
      const i = r.in(none(udp(S1, 53, WAN, 62000, [4, 5, 6])))!;
      expect(parse(i).dst).toBe(H2);
      expectExact(i, 'in', true);
      const e = r.in(icmpError(S1, WAN, 3, 3, o, 100))!;
      const q = parse(e).l4.subarray(8);
      expect(word(q, 26)).toBe(0);
      expect(parse(q).sport).toBe(4000);
      expectExact(e, 'quoted none', true);
    });

    it('the engine adjusts, never recomputes: a corrupted datagram stays exactly as corrupt', () => {
      const r = new TestRouter({ debug });
      const good = udp(H1, 7000, S1, 53, [1, 2, 3, 4]);
      const bad = good.slice();
      bad[bad.length - 1] ^= 0x40;
      const g = r.out(good)!;
      const b = r.out(bad)!;
      expect(l4CsumOk(b)).toBe(false);
      expect(l4Field(b)).toBe(l4Field(g));
      const t = tcp(H1, 7001, S1, 80, ACK, [1, 2, 3, 4]);
      const tg = r.out(t)!;
      t[t.length - 2] ^= 1;
      const tb = r.out(t)!;
      expect(l4CsumOk(tb)).toBe(false);
      expect(l4Field(tb)).toBe(l4Field(tg));
    });
  });

  describe('random rewrites', () => {
    const octet = fc.integer({ min: 0, max: 255 });
    const lanHost = fc.integer({ min: 1, max: 254 }).map((n) => `192.168.1.${n}`);
    const publicAddr = fc.tuple(fc.integer({ min: 1, max: 223 }), octet, octet, fc.integer({ min: 1, max: 254 }))
      .filter(([a, b]) => a !== 127 && !(a === 192 && b === 168))
      .map((o) => o.join('.'));
    const port = fc.integer({ min: 1, max: 65535 });
    const scenario = fc.record({
      proto: fc.constantFrom<Proto>('udp', 'tcp', 'icmp'),
      wan: publicAddr, host: lanHost, lanPort: port, server: publicAddr, srvPort: port,
      data: fc.array(octet, { maxLength: 300, size: 'max' }),
      ttl: octet, tos: octet, id: fc.integer({ min: 0, max: 0xffff }), df: fc.boolean(),
      options: fc.array(octet, { maxLength: 10 }).map((a) => a.slice(0, a.length & ~3)),
      collide: fc.boolean(),
      quote: fc.constantFrom(8, 1000),
    }).filter((s) => s.wan !== s.server);

    it('every adjusted checksum (IP, TCP, UDP, ICMP, quoted) equals full recomputation, both ways', () => {
      const r = new TestRouter({ debug, pool: [61000, 61015] });
      fc.assert(fc.property(scenario, (s) => {
        r.engine.x.setWanAddress(ipToRaw(s.wan), r.now);
        r.engine.x.flushAll();
        const o: Partial<IpOpts> = { ttl: s.ttl, tos: s.tos, id: s.id, flags: s.df ? 2 : 0, options: s.options };
        const srvPort = s.proto === 'icmp' ? 0 : s.srvPort;
        if (s.collide) r.out(build(s.proto, '192.168.1.255', s.lanPort, s.server, srvPort, [1]));
        const lanPkt = build(s.proto, s.host, s.lanPort, s.server, srvPort, s.data, o);
        const sent = r.out(lanPkt.slice());
        expect(sent).not.toBeNull();
        const x = parse(sent!);
        expect(x.src).toBe(s.wan);
        expect(x.ttl).toBe(Math.min(s.ttl + 1, 255));
        expectExact(sent!, 'out');
        const alias = s.proto === 'icmp' ? x.icmpId : x.sport;
        if (!s.collide) expect(alias).toBe(s.lanPort);

        const reply = s.proto === 'icmp'
          ? icmpEcho(s.server, s.wan, 0, alias, 1, s.data, o)
          : build(s.proto, s.server, srvPort, s.wan, alias, s.data, o);
        const back = r.in(reply);
        expect(back).not.toBeNull();
        expectExact(back!, 'in');

        const err = r.in(icmpError(s.server, s.wan, 3, 3, sent!, s.quote));
        expect(err).not.toBeNull();
        expectExact(err!, 'icmp error');
        const quote = parse(err!).l4.subarray(8);
        const q = parse(quote);
        expect([q.src, s.proto === 'icmp' ? q.icmpId : q.sport]).toEqual([s.host, s.lanPort]);
        // Adjusted out and adjusted back: the quote is byte for byte what the
        // host sent (checksums included, even when only partly quoted), but
        // for the TTL the WAN side saw and the header checksum that covers it.
        expect(quote[8]).toBe(Math.min(s.ttl + 1, 255));
        const mask = (b: Uint8Array) => Array.from(b, (v, i) => (i === 8 || i === 10 || i === 11 ? 0 : v));
        expect(mask(quote)).toEqual(mask(lanPkt.subarray(0, quote.length)));
      }), { numRuns: debug ? 150 : 250 });
    });
  });
});
