// GRO on write (option gro, assembly/nat/gro.ts): after a batch's verdicts,
// same-flow UDP datagrams read with NEEDS_CSUM leave as ONE UDP GSO write,
// which the kernel cuts back into the same datagrams. Each batch here runs
// twice on fresh engines with the same seed, gro off and on; every write is
// "sent" the way the kernel treats it (a USO write cut by __udp_gso_segment:
// the leader's headers, lengths, ID + k, the partial sum moved per segment,
// then every checksum finished; a NEEDS_CSUM packet finished; a plain one as
// is) and what reaches the wire must be byte for byte the same, per flow in
// the same order. Plus the leader's bytes and virtio header exactly, and
// every merge rule's negative case.
import { describe, expect, it } from 'vitest';
import { TestRouter, WAN } from '../helpers/harness.js';
import { SIDE_INSIDE, SIDE_OUTSIDE, VERDICT_PASS, VERDICT_FOLLOW } from '../../src/engine/abi.js';
import { ACK, SYN, csum, icmpEcho, ip, ipCsumOk, l4CsumOk, parse, tcp, udp } from '../helpers/packet.js';
import { be16, complete, l4Off, partial, pseudoSum, put16, segmentUdp } from '../helpers/gso.js';

const H1 = '192.168.1.10';
const H2 = '192.168.1.11';
const S1 = '198.51.100.7';
const S2 = '198.51.100.8';
const F_NEEDS_CSUM = 1, F_DATA_VALID = 2;
const GSO_UDP_L4 = 5;

interface Vnet { flags?: number; gsoType?: number; hdrLen?: number; gsoSize?: number; csumStart?: number; csumOffset?: number }
const CSUM: Vnet = { flags: F_NEEDS_CSUM, csumStart: 20, csumOffset: 6 };
const PLAIN: Vnet = {};

function hdrOf(b: Uint8Array): Required<Vnet> {
  const dv = new DataView(b.buffer, b.byteOffset);
  return { flags: b[0], gsoType: b[1], hdrLen: dv.getUint16(2, true), gsoSize: dv.getUint16(4, true), csumStart: dv.getUint16(6, true), csumOffset: dv.getUint16(8, true) };
}

/** A datagram of flow (src:sport → dst:dport) with `n` payload bytes and IP ID `id`, partial checksum. */
function dg(src: string, sport: number, dst: string, dport: number, id: number, n = 36, opts: { ttl?: number; tos?: number; flags?: number; seed?: number } = {}): Uint8Array {
  const data = Array.from({ length: n }, (_, i) => (i * 7 + id + (opts.seed ?? 0)) & 0xff);
  return partial(udp(src, sport, dst, dport, data, { id, ttl: opts.ttl ?? 64, tos: opts.tos, flags: opts.flags ?? 2 }));
}

/** The kernel cutting a USO write (test/helpers/gso.ts), its header length checked first. */
function segmentUdpAs(p: Uint8Array, h: Required<Vnet>): Uint8Array[] {
  expect(h.hdrLen).toBe(l4Off(p) + 8);
  return segmentUdp(p, h.gsoSize);
}

interface Write { slot: number; hdr: Required<Vnet>; bytes: Uint8Array }

class GroRouter extends TestRouter {
  constructor(gro: boolean) {
    super();
    this.engine.setVnet(true);
    this.engine.setGro(gro);
  }
  /** One batch; the writes the addon makes for it, in slot order (a group's members inside its leader's). */
  run(pkts: [Uint8Array, Vnet][], side: number): Write[] {
    pkts.forEach(([p, h], i) => { this.engine.setPacket(i, p); this.engine.setVnetHdr(i, h); });
    this.engine.process(pkts.length, side, this.now);
    const out: Write[] = [];
    for (let i = 0; i < pkts.length; i++) {
      if (this.engine.verdict(i) !== VERDICT_PASS) continue;
      out.push({ slot: i, hdr: hdrOf(this.engine.vnetHdr(i)), bytes: this.engine.gathered(i) });
    }
    return out;
  }
  verdicts(n: number): number[] { return Array.from({ length: n }, (_, i) => this.engine.verdict(i)); }
  links(n: number): number[] { return Array.from({ length: n }, (_, i) => this.engine.groLink(i)); }
}

/** What leaves the router's kernel for these writes, in write order. */
function wire(ws: Write[]): Uint8Array[] {
  return ws.flatMap((w) => w.hdr.gsoType === GSO_UDP_L4 ? segmentUdpAs(w.bytes, w.hdr)
    : w.hdr.flags & F_NEEDS_CSUM ? [complete(w.bytes, w.hdr.csumStart, w.hdr.csumOffset)] : [w.bytes]);
}
const flowOf = (p: Uint8Array) => { const x = parse(p); return `${x.proto} ${x.src}:${x.sport} ${x.dst}:${x.dport}`; };
function perFlow(ps: Uint8Array[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const p of ps) { const k = flowOf(p); if (!m.has(k)) m.set(k, []); m.get(k)!.push(Buffer.from(p).toString('hex')); }
  return m;
}

/**
 * The batch through gro off and gro on (fresh engines, same seed, same
 * `setup` batches first): on the wire the same datagrams, per flow in the
 * same order. Returns the gro-on router and both runs' writes.
 */
function both(pkts: [Uint8Array, Vnet][], side = SIDE_INSIDE, setup: [Uint8Array, Vnet][][] = []) {
  const off = new GroRouter(false), on = new GroRouter(true);
  for (const s of setup) { off.run(s, SIDE_INSIDE); on.run(s, SIDE_INSIDE); }
  const wOff = off.run(pkts, side), wOn = on.run(pkts, side);
  const a = wire(wOff), b = wire(wOn);
  expect(b.length).toBe(a.length);
  expect(perFlow(b)).toEqual(perFlow(a));
  for (const p of b) expect(ipCsumOk(p)).toBe(true);
  return { on, off, wOn, wOff, n: pkts.length };
}

const burst = (n: number, id0 = 100, size = 36, src = H1, sport = 40000) =>
  Array.from({ length: n }, (_, k) => [dg(src, sport, S1, 9000, (id0 + k) & 0xffff, size), CSUM] as [Uint8Array, Vnet]);

describe('GRO on write (option gro)', () => {
  it('01 four datagrams of one flow leave as one USO write: leader bytes, virtio header, verdicts, links, counters', () => {
    const { on, off, wOn, wOff } = both(burst(4));
    expect(wOff.length).toBe(4);
    expect(wOn.length).toBe(1);
    expect(on.verdicts(4)).toEqual([VERDICT_PASS, VERDICT_FOLLOW, VERDICT_FOLLOW, VERDICT_FOLLOW]);
    expect(on.links(4)).toEqual([1, 2, 3, 0]);
    expect(wOn[0]!.hdr).toEqual({ flags: F_NEEDS_CSUM, gsoType: GSO_UDP_L4, hdrLen: 28, gsoSize: 36, csumStart: 20, csumOffset: 6 });
    // The leader: the first datagram as translated alone, with the group's lengths and checksums.
    const lead = on.engine.packet(0);
    const want = Uint8Array.from(off.engine.packet(0));
    put16(want, 2, 28 + 4 * 36);
    put16(want, 10, 0); put16(want, 10, ~csum(want.subarray(0, 20)) & 0xffff);
    put16(want, 24, 8 + 4 * 36);
    put16(want, 26, pseudoSum(want));
    expect(Buffer.from(lead).toString('hex')).toBe(Buffer.from(want).toString('hex'));
    expect(ipCsumOk(lead)).toBe(true);
    const x = parse(lead);
    expect([x.src, x.dst, x.dport, x.ttl]).toEqual([WAN, S1, 9000, 65]); // TTL compensated: the router's kernel takes one off the group once
    // The write: the leader, then each member's payload.
    expect(wOn[0]!.bytes.length).toBe(28 + 4 * 36);
    for (const s of wire(wOn)) expect(l4CsumOk(s)).toBe(true);
    expect(wire(wOn).map((s) => parse(s).id)).toEqual([100, 101, 102, 103]);
    const c = on.engine.counters();
    expect([c.groGroups, c.groDatagrams]).toEqual([1, 4]);
    expect([c.passInside, c.rxInside]).toEqual([4, 4]);
    expect(off.engine.counters().groGroups).toBe(0);
  });

  it('02 WAN → LAN: a server\'s datagrams to a LAN host are merged after the translation back', () => {
    const r = both(burst(5, 7, 100, S1, 9000).map(([, h], k) => [dg(S1, 9000, WAN, 0, 7 + k, 100), h] as [Uint8Array, Vnet]), SIDE_OUTSIDE, []);
    // No flow yet: every datagram dropped both ways. Now with the flow open.
    expect(r.wOn.length).toBe(0);
    const open = burst(1, 1, 36);
    const off = new GroRouter(false), on = new GroRouter(true);
    const [w0] = off.run(open, SIDE_INSIDE); on.run(open, SIDE_INSIDE);
    const port = parse(w0!.bytes).sport;
    const back = Array.from({ length: 5 }, (_, k) => [dg(S1, 9000, WAN, port, 500 + k, 100), CSUM] as [Uint8Array, Vnet]);
    const a = wire(off.run(back, SIDE_OUTSIDE)), wOn = on.run(back, SIDE_OUTSIDE), b = wire(wOn);
    expect(wOn.length).toBe(1);
    expect(b.map((p) => Buffer.from(p).toString('hex'))).toEqual(a.map((p) => Buffer.from(p).toString('hex')));
    for (const p of b) { expect(parse(p).dst).toBe(H1); expect(parse(p).dport).toBe(40000); expect(l4CsumOk(p)).toBe(true); }
  });

  it('03 the last datagram may be shorter, never longer; nothing joins after a shorter one', () => {
    const pk = [
      [dg(H1, 40000, S1, 9000, 1, 100), CSUM], [dg(H1, 40000, S1, 9000, 2, 100), CSUM], [dg(H1, 40000, S1, 9000, 3, 60), CSUM],
      [dg(H1, 40000, S1, 9000, 4, 60), CSUM], // after a shorter one: a new group
      [dg(H1, 40000, S1, 9000, 5, 80), CSUM], // longer than its leader's 60: a new group
    ] as [Uint8Array, Vnet][];
    const { on, wOn } = both(pk);
    expect(wOn.map((w) => w.slot)).toEqual([0, 3, 4]);
    expect(on.verdicts(5)).toEqual([VERDICT_PASS, VERDICT_FOLLOW, VERDICT_FOLLOW, VERDICT_PASS, VERDICT_PASS]);
    expect(wOn[0]!.hdr.gsoSize).toBe(100);
    expect(wOn[0]!.bytes.length).toBe(28 + 260);
    expect(wOn[1]!.hdr.gsoType).toBe(0); // a group of one: written as read
    expect(on.engine.counters().groGroups).toBe(1);
  });

  it('04 interleaved flows: one write per flow, each flow in its order; two hosts\' colliding ports stay apart', () => {
    const pk: [Uint8Array, Vnet][] = [];
    for (let k = 0; k < 4; k++) {
      pk.push([dg(H1, 40000, S1, 9000, 10 + k), CSUM]);
      pk.push([dg(H2, 40000, S1, 9000, 10 + k), CSUM]); // same port, same server: another WAN port
      pk.push([dg(H1, 40001, S2, 53, 900 + k, 36, { seed: 1 }), CSUM]);
    }
    const { on, wOn } = both(pk);
    expect(wOn.map((w) => w.slot)).toEqual([0, 1, 2]);
    const ports = wOn.map((w) => parse(w.bytes).sport);
    expect(new Set(ports).size).toBe(3);
    for (const w of wOn) expect(w.bytes.length).toBe(28 + 4 * 36);
    expect(on.links(12)).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 0, 0]);
    const c = on.engine.counters();
    expect([c.groGroups, c.groDatagrams]).toEqual([3, 12]);
  });

  it('05 order within a flow: a datagram that may not join (complete checksum) closes the group; the next group is written after it', () => {
    const bad = udp(H1, 40000, S1, 9000, Array(36).fill(9), { id: 3, flags: 2 });
    const pk = [...burst(3, 1), [bad, PLAIN], ...burst(3, 4)] as [Uint8Array, Vnet][];
    pk[4] = [dg(H1, 40000, S1, 9000, 4), CSUM]; pk[5] = [dg(H1, 40000, S1, 9000, 5), CSUM]; pk[6] = [dg(H1, 40000, S1, 9000, 6), CSUM];
    const { on, wOn } = both(pk);
    expect(wOn.map((w) => w.slot)).toEqual([0, 3, 4]);
    expect(on.verdicts(7)).toEqual([1, 2, 2, 1, 1, 2, 2]);
    expect(wOn[1]!.bytes.length).toBe(64); // the complete-checksum datagram alone, as read (translated)
    expect(wire(wOn).map((p) => parse(p).id)).toEqual([1, 2, 3, 3, 4, 5, 6]);
  });

  it('06 a fragment of the same two hosts closes their open groups (nothing of theirs overtakes it)', () => {
    const frag = udp(H1, 40000, S1, 9000, Array(100).fill(1), { id: 77, flags: 1 }); // MF, offset 0: a first fragment
    const pk = [...burst(2, 1), [frag.subarray(0, 20 + 48), PLAIN], [dg(H1, 40000, S1, 9000, 3), CSUM]] as [Uint8Array, Vnet][];
    const f = Uint8Array.from(pk[2]![0]); put16(f, 2, f.length); put16(f, 10, 0); put16(f, 10, ~csum(f.subarray(0, 20)) & 0xffff);
    pk[2] = [f, PLAIN];
    const { on, wOn } = both(pk);
    expect(on.verdicts(4)).toEqual([1, 2, 1, 1]);
    expect(wOn.map((w) => w.slot)).toEqual([0, 2, 3]);
  });

  describe('07 each merge rule: a datagram that breaks it is not merged', () => {
    const base = (k: number, o: Parameters<typeof dg>[6] = {}) => dg(H1, 40000, S1, 9000, 50 + k, 36, o);
    const cases: [string, [Uint8Array, Vnet]][] = [
      ['complete checksum (no NEEDS_CSUM: a raw socket\'s, maybe wrong)', [udp(H1, 40000, S1, 9000, Array(36).fill(0), { id: 51, flags: 2 }), PLAIN]],
      ['a wrong complete checksum', [(() => { const p = udp(H1, 40000, S1, 9000, Array(36).fill(0), { id: 51, flags: 2 }); p[26] ^= 0x55; return p; })(), PLAIN]],
      ['DATA_VALID beside NEEDS_CSUM', [base(1), { ...CSUM, flags: F_NEEDS_CSUM | F_DATA_VALID }]],
      ['a USO super-packet (gso_type set)', [dg(H1, 40000, S1, 9000, 51, 72), { ...CSUM, gsoType: GSO_UDP_L4, hdrLen: 28, gsoSize: 36 }]],
      ['IP options (IHL 6)', [(() => {
        const p = udp(H1, 40000, S1, 9000, Array(36).fill(0), { id: 51, flags: 2, options: [1, 1, 1, 0] });
        put16(p, 30, csum(new Uint8Array([...ip(H1), ...ip(S1), 0, 17, 0, 44]))); return p;
      })(), { ...CSUM, csumStart: 24 }]],
      ['another TOS', [base(1, { tos: 0x10 }), CSUM]],
      ['another TTL', [base(1, { ttl: 63 }), CSUM]],
      ['DF clear where the leader has it', [base(1, { flags: 0 }), CSUM]],
      ['an ID that is not the previous + 1', [base(2), CSUM]],
      ['an ID that goes back', [base(0), CSUM]],
      ['a longer payload', [dg(H1, 40000, S1, 9000, 51, 37), CSUM]],
      ['another source port', [dg(H1, 40002, S1, 9000, 51), CSUM]],
      ['another destination', [dg(H1, 40000, S2, 9000, 51), CSUM]],
      ['another destination port', [dg(H1, 40000, S1, 9001, 51), CSUM]],
      ['another LAN host', [dg(H2, 40000, S1, 9000, 51), CSUM]],
    ];
    for (const [name, second] of cases) {
      it(name, () => {
        const { on, wOn } = both([[base(0), CSUM], second]);
        expect(on.verdicts(2).includes(VERDICT_FOLLOW)).toBe(false);
        expect(on.links(2)).toEqual([0, 0]);
        for (const w of wOn) expect(w.hdr.gsoType === GSO_UDP_L4 ? w.slot : -1).toBe(w.slot === 1 && name.startsWith('a USO') ? 1 : -1);
        expect(on.engine.counters().groGroups).toBe(0);
      });
    }
    it('a zero-length payload is never a member nor a leader', () => {
      const { on } = both([[dg(H1, 40000, S1, 9000, 1, 0), CSUM], [dg(H1, 40000, S1, 9000, 2, 0), CSUM], [dg(H1, 40000, S1, 9000, 3, 0), CSUM]]);
      expect(on.verdicts(3)).toEqual([1, 1, 1]);
    });
    it('the ID wraps: 0xffff then 0 merge', () => {
      const { on, wOn } = both(burst(3, 0xfffe));
      expect(on.verdicts(3)).toEqual([1, 2, 2]);
      expect(wire(wOn).map((p) => parse(p).id)).toEqual([0xfffe, 0xffff, 0]);
    });
    it('DF clear on all: merged (the bit is the same)', () => {
      const pk = [0, 1, 2].map((k) => [dg(H1, 40000, S1, 9000, 60 + k, 36, { flags: 0 }), CSUM] as [Uint8Array, Vnet]);
      expect(both(pk).on.verdicts(3)).toEqual([1, 2, 2]);
    });
  });

  it('08 at most 65535 bytes a write: 64 datagrams of 1472 bytes make two writes (44 + 20)', () => {
    const { on, wOn } = both(burst(64, 1000, 1472));
    expect(wOn.map((w) => w.slot)).toEqual([0, 44]);
    expect(wOn.map((w) => w.bytes.length)).toEqual([28 + 44 * 1472, 28 + 20 * 1472]);
    expect(on.engine.counters().groDatagrams).toBe(64);
  });

  it('09 at most 64 datagrams a write; a full batch of one flow is one write', () => {
    const { wOn } = both(burst(64, 1, 20));
    expect(wOn.length).toBe(1);
    expect(wOn[0]!.bytes.length).toBe(28 + 64 * 20);
  });

  it('10 ICMP and TCP untouched between merged datagrams', () => {
    const pk: [Uint8Array, Vnet][] = [
      [dg(H1, 40000, S1, 9000, 1), CSUM], [icmpEcho(H1, S1, 8, 7), PLAIN], [tcp(H1, 41000, S1, 443, SYN), PLAIN],
      [dg(H1, 40000, S1, 9000, 2), CSUM], [icmpEcho(H1, S1, 8, 7, 2), PLAIN], [dg(H1, 40000, S1, 9000, 3), CSUM],
    ];
    const { on, off, wOn } = both(pk);
    expect(on.verdicts(6)).toEqual([1, 1, 1, 2, 1, 2]);
    for (const i of [1, 2, 4]) {
      expect(Buffer.from(on.engine.packet(i)).toString('hex')).toBe(Buffer.from(off.engine.packet(i)).toString('hex'));
      expect(on.engine.vnetHdr(i)).toEqual(off.engine.vnetHdr(i));
    }
    expect(wOn.length).toBe(4);
    void ACK;
  });

  it('11 gro off: today\'s output byte for byte (slots, lengths, headers, verdicts), no links, no counts', () => {
    const pk: [Uint8Array, Vnet][] = [...burst(5), [icmpEcho(H1, S1, 8, 7), PLAIN], ...burst(3, 300, 50, H2, 40000)];
    const off = new GroRouter(false);
    const plain = new TestRouter();
    plain.engine.setVnet(true); // never told about gro: the engine as before this change
    for (const r of [off, plain]) { pk.forEach(([p, h], i) => { r.engine.setPacket(i, p); r.engine.setVnetHdr(i, h); }); r.engine.process(pk.length, SIDE_INSIDE, r.now); }
    for (let i = 0; i < pk.length; i++) {
      expect(off.engine.verdict(i)).toBe(plain.engine.verdict(i));
      expect(Buffer.from(off.engine.packet(i)).equals(Buffer.from(plain.engine.packet(i)))).toBe(true);
      expect(off.engine.vnetHdr(i)).toEqual(plain.engine.vnetHdr(i));
      expect(off.engine.groLink(i)).toBe(0);
    }
    expect(off.engine.counters().groGroups).toBe(0);
    // And gro is nothing without the virtio header: plain slots never merge.
    const nov = new TestRouter();
    nov.engine.setGro(true);
    const got = nov.batch(burst(4).map(([p]) => p), SIDE_INSIDE);
    expect(got.every((p) => p !== null)).toBe(true);
    expect(nov.engine.counters().groGroups).toBe(0);
  });

  it('13 a batch after a merged one carries no link of it (a batch of one, and one that cannot merge)', () => {
    const r = new GroRouter(true);
    r.run(burst(4), SIDE_INSIDE);
    expect(r.links(4)).toEqual([1, 2, 3, 0]);
    const w = r.run([[dg(H1, 40000, S1, 9000, 104), CSUM]], SIDE_INSIDE);
    expect(r.links(4)[0]).toBe(0);
    expect(w[0]!.bytes.length).toBe(64);
    r.run(burst(4), SIDE_INSIDE);
    r.run([[dg(H1, 40000, S1, 9000, 1), CSUM], [dg(H2, 40000, S1, 9000, 1), CSUM]], SIDE_INSIDE);
    expect(r.links(2)).toEqual([0, 0]);
  });

  it('12 counts stay balanced: rx = passed + dropped, passed bytes are each datagram\'s own', () => {
    const { on } = both(burst(6));
    const c = on.engine.counters();
    expect(c.rxInside).toBe(c.passInside);
    expect(c.passBytesInside).toBe(6 * 64);
  });
});
