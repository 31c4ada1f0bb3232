// TUN offloads (IFF_VNET_HDR): each packet comes with a virtio_net_hdr; GSO
// super-packets are translated once and leave with the header as it came;
// NEEDS_CSUM checksums are partial sums. Every result is finished the way
// the kernel finishes it (checksum completion over csum_start.., and
// segmentation by gso_size with the partial sum moved by each segment's
// length) and then checked by a full recomputation (packet.ts).
import { describe, expect, it } from 'vitest';
import { TestRouter, WAN } from '../helpers/harness.js';
import { SIDE_INSIDE, SIDE_OUTSIDE, VERDICT_PASS } from '../../src/engine/abi.js';
import { ACK, FIN, PSH, SYN, csum, icmpEcho, ip, ipCsumOk, isakmp, l4CsumOk, parse, pptpField, pptpMsg, tcp, udp, fragment } from '../helpers/packet.js';
import { be16, complete, l4Off, partial, pseudoSum, put16, segmentUdp } from '../helpers/gso.js';

const H1 = '192.168.1.10';
const H2 = '192.168.1.11';
const S1 = '198.51.100.7';
const F_NEEDS_CSUM = 1;
const GSO_TCPV4 = 1, GSO_TCPV6 = 4, GSO_UDP_L4 = 5;

interface Vnet { flags?: number; gsoType?: number; hdrLen?: number; gsoSize?: number; csumStart?: number; csumOffset?: number }

/** The kernel finishing a NEEDS_CSUM checksum as this packet's virtio header asks. */
const completeAs = (p: Uint8Array, h: Vnet) => complete(p, h.csumStart!, h.csumOffset!);

/**
 * The kernel's TCP segmentation of a partial-checksum super-packet: headers
 * copied, IP length/ID/checksum per segment, seq advanced, FIN/PSH on the
 * last only, the partial sum moved by the length difference, then completed.
 */
function segmentTcp(p: Uint8Array, h: Vnet): Uint8Array[] {
  const hl = l4Off(p), thl = (p[hl + 12] >> 4) * 4, hdr = hl + thl, total = be16(p, 2);
  const segs: Uint8Array[] = [];
  const seq0 = new DataView(p.buffer, p.byteOffset).getUint32(hl + 4);
  for (let off = hdr, k = 0; off < total; off += h.gsoSize!, k++) {
    const n = Math.min(h.gsoSize!, total - off);
    const s = new Uint8Array(hdr + n);
    s.set(p.subarray(0, hdr)); s.set(p.subarray(off, off + n), hdr);
    put16(s, 2, hdr + n); put16(s, 4, (be16(p, 4) + k) & 0xffff);
    put16(s, 10, 0); put16(s, 10, ~csum(s.subarray(0, hl)) & 0xffff);
    new DataView(s.buffer).setUint32(hl + 4, (seq0 + (off - hdr)) >>> 0);
    if (off + n < total) s[hl + 13] &= ~(FIN | PSH);
    // partial sum: pseudo header with the super-packet's L4 length → this segment's
    let ps = be16(p, hl + 16) + (~(total - hl) & 0xffff) + (hdr + n - hl);
    while (ps >> 16) ps = (ps & 0xffff) + (ps >>> 16);
    put16(s, hl + 16, ps);
    segs.push(complete(s, hl, 16));
  }
  return segs;
}


/** The UDP payloads of datagrams, as one USO super-packet (partial checksum, as a sender with UDP_SEGMENT hands it over). */
function uso(src: string, sport: number, dst: string, dport: number, payloads: Uint8Array[], opts: { id?: number; ttl?: number } = {}): Uint8Array {
  const all = new Uint8Array(payloads.reduce((n, x) => n + x.length, 0));
  let o = 0;
  for (const x of payloads) { all.set(x, o); o += x.length; }
  return partial(udp(src, sport, dst, dport, all, opts));
}
const USO = (gsoSize: number): Vnet => ({ flags: F_NEEDS_CSUM, gsoType: GSO_UDP_L4, hdrLen: 28, gsoSize, csumStart: 20, csumOffset: 6 });
/** An ISAKMP message of exactly `size` bytes (the UDP payload of one datagram). */
const ikeMsg = (icookie: string, rcookie: string, size: number) => parse(isakmp(H1, 500, S1, 500, icookie, rcookie, size - 28)).l4.slice(8);
const cookieOf = (p: Uint8Array) => Buffer.from(parse(p).l4.subarray(8, 16)).toString('hex');

function bytes(n: number, seed = 7): number[] {
  return Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
}

class GsoRouter extends TestRouter {
  constructor() { super(); this.engine.setVnet(true); }
  /** One packet with its virtio header; returns the packet and header as written back, or null. */
  send(pkt: Uint8Array, h: Vnet, side: number): { pkt: Uint8Array; hdr: Uint8Array } | null {
    return this.sendAll([[pkt, h]], side)[0];
  }
  /** Packets with their virtio headers in one batch; each as written back, or null. Extra packets: lastExtras. */
  sendAll(pkts: [Uint8Array, Vnet][], side: number): ({ pkt: Uint8Array; hdr: Uint8Array } | null)[] {
    pkts.forEach(([p, h], i) => { this.engine.setPacket(i, p); this.engine.setVnetHdr(i, h); });
    this.engine.process(pkts.length, side, this.now);
    this.lastExtras = this.engine.extras();
    const res = pkts.map((_, i) => (this.engine.verdict(i) === VERDICT_PASS ? { pkt: this.engine.packet(i), hdr: this.engine.vnetHdr(i) } : null));
    for (const p of [...res.map((o) => o?.pkt), ...this.lastExtras]) if (p) this.passedBytes += p.length;
    return res;
  }
  /** IP bytes of everything passed so far (slots and extra packets). */
  passedBytes = 0;
  /** Every packet read so far was passed or dropped with a reason, extras included; passed bytes are what left. */
  balanced(): boolean {
    const c = this.engine.counters();
    const drops = Object.values(this.engine.drops()).reduce((a, b) => a + b, 0);
    expect(c.passBytesInside + c.passBytesOutside).toBe(this.passedBytes);
    return c.rxInside + c.rxOutside === c.passInside + c.passOutside + drops;
  }
}

const hdrBytes = (h: Vnet) => {
  const b = new Uint8Array(10); const dv = new DataView(b.buffer);
  dv.setUint8(0, h.flags ?? 0); dv.setUint8(1, h.gsoType ?? 0); dv.setUint16(2, h.hdrLen ?? 0, true);
  dv.setUint16(4, h.gsoSize ?? 0, true); dv.setUint16(6, h.csumStart ?? 0, true); dv.setUint16(8, h.csumOffset ?? 0, true);
  return b;
};
const TSO = (gsoSize: number): Vnet => ({ flags: F_NEEDS_CSUM, gsoType: GSO_TCPV4, hdrLen: 40, gsoSize, csumStart: 20, csumOffset: 16 });

describe('TUN offloads: virtio_net_hdr and GSO super-packets', () => {
  it('01 the slots grow for super-packets: 64 slots of 64 KiB + 64 with a header beside each', () => {
    const r = new GsoRouter();
    expect([r.engine.slotCount, r.engine.slotSize, r.engine.vnetStride]).toEqual([64, 65600, 16]);
    r.engine.setVnet(false);
    expect([r.engine.slotCount, r.engine.slotSize]).toEqual([256, 2048]);
  });

  it('02 a TCP super-packet from the LAN: translated once, header unchanged, every segment valid after the kernel finishes it', () => {
    const r = new GsoRouter();
    // H1 holds WAN port 40000 toward S1, so H2's same port is moved to the pool: a port change too.
    r.send(tcp(H1, 40000, S1, 443, SYN), {}, SIDE_INSIDE);
    expect(r.send(tcp(H2, 40000, S1, 443, SYN), {}, SIDE_INSIDE)).not.toBeNull();
    const h = TSO(1448);
    const sp = partial(tcp(H2, 40000, S1, 443, ACK | PSH, bytes(3 * 1448 + 100), { ttl: 63, seq: 5000 }));
    const o = r.send(sp, h, SIDE_INSIDE)!;
    expect(o).not.toBeNull();
    expect(o.hdr).toEqual(hdrBytes(h));
    const x = parse(o.pkt);
    expect([x.src, x.dst, x.dport, x.ttl]).toEqual([WAN, S1, 443, 64]);
    expect(x.sport).toBeGreaterThanOrEqual(61000);
    expect(ipCsumOk(o.pkt)).toBe(true);
    // The field is still a partial sum: the new pseudo header's.
    expect(be16(o.pkt, 36)).toBe(pseudoSum(o.pkt));
    expect(l4CsumOk(completeAs(o.pkt, h))).toBe(true);
    const segs = segmentTcp(o.pkt, h);
    expect(segs.length).toBe(4);
    for (const s of segs) { expect(ipCsumOk(s)).toBe(true); expect(l4CsumOk(s)).toBe(true); }
    // Payload untouched, in order.
    expect(Array.from(o.pkt.subarray(40))).toEqual(bytes(3 * 1448 + 100));
    expect(r.engine.counters()).toMatchObject({ gsoRx: 1, gsoBytes: sp.length, csumPartial: 1 });
  });

  it('03 a super-packet from the WAN to a pool port comes back to the LAN host with the right partial sum', () => {
    const r = new GsoRouter();
    r.send(tcp(H1, 40000, S1, 443, SYN), {}, SIDE_INSIDE);
    const syn = r.send(tcp(H2, 40000, S1, 443, SYN), {}, SIDE_INSIDE)!;
    const pool = parse(syn.pkt).sport;
    const h = TSO(1000);
    const o = r.send(partial(tcp(S1, 443, WAN, pool, ACK, bytes(5000, 3), { ttl: 50 })), h, SIDE_OUTSIDE)!;
    const x = parse(o.pkt);
    expect([x.dst, x.dport, x.ttl]).toEqual([H2, 40000, 51]);
    expect(o.hdr).toEqual(hdrBytes(h));
    for (const s of segmentTcp(o.pkt, h)) expect(l4CsumOk(s)).toBe(true);
  });

  it('04 the NEEDS_CSUM rule: treating the partial sum as a checksum (ports adjusted too) would have been wrong', () => {
    // Guard for the test itself: with a port change, the complete-checksum
    // adjustment and the partial one differ, so test 02/03 could tell.
    const r = new GsoRouter();
    r.send(udp(H1, 5000, S1, 53), {}, SIDE_INSIDE);
    const h: Vnet = { flags: F_NEEDS_CSUM, csumStart: 20, csumOffset: 6 };
    const sp = partial(udp(H2, 5000, S1, 53, bytes(300)));
    const o = r.send(sp, h, SIDE_INSIDE)!;
    expect(parse(o.pkt).sport).not.toBe(5000);
    expect(l4CsumOk(completeAs(o.pkt, h))).toBe(true);
    // Without the header the same bytes are a complete checksum: the engine adjusts the port too, and the
    // completion the kernel would apply to that result is wrong.
    const plain = new TestRouter();
    plain.out(udp(H1, 5000, S1, 53));
    const wrong = plain.out(sp)!;
    expect(l4CsumOk(completeAs(wrong, h))).toBe(false);
  });

  it('05 a packet with a zero header is a plain packet, complete checksums adjusted as before', () => {
    const r = new GsoRouter();
    const o = r.send(udp(H1, 5353, S1, 53), {}, SIDE_INSIDE)!;
    expect(parse(o.pkt).src).toBe(WAN);
    expect(l4CsumOk(o.pkt)).toBe(true);
    expect(r.engine.counters()).toMatchObject({ gsoRx: 0, csumPartial: 0 });
  });

  it('06 the largest super-packet (64 KiB) fits a slot and passes', () => {
    const r = new GsoRouter();
    const h = TSO(1448);
    const sp = partial(tcp(H1, 40000, S1, 443, ACK, bytes(65535 - 40)));
    expect(sp.length).toBe(65535);
    const o = r.send(sp, h, SIDE_INSIDE)!;
    expect(o).not.toBeNull();
    expect(l4CsumOk(completeAs(o.pkt, h))).toBe(true);
  });

  it('07 UDP segmentation offload (USO) passes like TCP, translated whole, header unchanged', () => {
    const r = new GsoRouter();
    const h = USO(1200);
    const o = r.send(partial(udp(H1, 4500, S1, 4500, bytes(3000))), h, SIDE_INSIDE)!;
    expect(o).not.toBeNull();
    expect(o.hdr).toEqual(hdrBytes(h));
    expect(l4CsumOk(completeAs(o.pkt, h))).toBe(true);
    for (const s of segmentUdp(o.pkt, h.gsoSize!)) { expect(ipCsumOk(s)).toBe(true); expect(l4CsumOk(s)).toBe(true); }
    expect(r.lastExtras).toEqual([]);
    expect(r.engine.counters()).toMatchObject({ gsoRx: 1, usoSplit: 0 });
  });

  it('08 PPTP control messages in a super-packet, one straddling a segment boundary: Call IDs translated, checksums right', () => {
    const r = new GsoRouter();
    const SRV = S1;
    const open = (host: string, sport: number) => {
      const syn = r.send(tcp(host, sport, SRV, 1723, SYN), {}, SIDE_INSIDE)!;
      r.send(tcp(SRV, 1723, WAN, parse(syn.pkt).sport, SYN | ACK), {}, SIDE_OUTSIDE);
      r.send(tcp(host, sport, SRV, 1723, ACK), {}, SIDE_INSIDE);
    };
    open(H2, 40002);
    open(H1, 40001);
    // H2 holds Call ID 11 toward the server, so H1's 11 must become another alias (a rewrite in the payload).
    expect(pptpField(r.send(tcp(H2, 40002, SRV, 1723, PSH | ACK, pptpMsg(7, 11)), {}, SIDE_INSIDE)!.pkt, 12)).toBe(11);
    const h: Vnet = { flags: F_NEEDS_CSUM, gsoType: GSO_TCPV4, hdrLen: 40, gsoSize: 100, csumStart: 20, csumOffset: 16 };
    const sp = partial(tcp(H1, 40001, SRV, 1723, PSH | ACK, [...pptpMsg(7, 11), ...pptpMsg(7, 12)]));
    const o = r.send(sp, h, SIDE_INSIDE)!;
    expect(o).not.toBeNull();
    const a0 = pptpField(o.pkt, 12, 0), a1 = pptpField(o.pkt, 12, 1);
    expect(a0).not.toBe(11);
    expect(new Set([11, a0, a1]).size).toBe(3);
    expect(o.hdr).toEqual(hdrBytes(h));
    for (const s of segmentTcp(o.pkt, h)) expect(l4CsumOk(s)).toBe(true);
  });

  it('09 TCP state follows a super-packet: a FIN in it moves the flow to FIN_WAIT', () => {
    const r = new GsoRouter();
    r.send(tcp(H1, 40000, S1, 80, SYN), {}, SIDE_INSIDE);
    r.send(tcp(S1, 80, WAN, 40000, SYN | ACK), {}, SIDE_OUTSIDE);
    r.send(tcp(H1, 40000, S1, 80, ACK), {}, SIDE_INSIDE);
    expect(r.engine.flows(WAN, r.now)[0].state).toBe('ESTABLISHED');
    r.send(partial(tcp(H1, 40000, S1, 80, ACK | FIN, bytes(4000))), TSO(1448), SIDE_INSIDE);
    expect(r.engine.flows(WAN, r.now)[0].state).toBe('FIN_WAIT');
  });

  it('11 with GSO slots, later fragments are still held in plain hold slots and released whole; one longer than a hold slot is not held', () => {
    const r = new GsoRouter();
    r.send(udp(H1, 7000, S1, 9999), {}, SIDE_INSIDE);
    const f = fragment(udp(H1, 7000, S1, 9999, bytes(3000, 5), { id: 0x0303 }), 1480);
    r.send(f[2], {}, SIDE_INSIDE);
    r.send(f[1], {}, SIDE_INSIDE);
    const first = r.send(f[0], {}, SIDE_INSIDE)!;
    expect(first).not.toBeNull();
    const rel = r.engine.released();
    expect(rel.length).toBe(2);
    for (const o of rel) { expect(parse(o).src).toBe(WAN); expect(ipCsumOk(o)).toBe(true); expect(parse(o).id).toBe(parse(first.pkt).id); }
    expect(rel.map((o) => o.length).sort()).toEqual([f[1].length, f[2].length].sort());
    // A 9000-byte later fragment (a jumbo link) fits a GSO slot but not a hold slot: dropped, not held, nothing overwritten.
    const big = fragment(udp(H1, 7001, S1, 9999, bytes(20000, 9), { id: 0x0404 }), 8976);
    expect(big[1].length).toBeGreaterThan(2048);
    expect(r.send(big[1], {}, SIDE_INSIDE)).toBeNull();
    expect(r.engine.counters().fragsHeld).toBe(2);
  });

  describe('10 bad virtio headers are dropped with a reason and leave no state (a forged header is never trusted)', () => {
    const cases: [string, Vnet, () => Uint8Array, string][] = [
      ['gso_size 0 with a GSO type', { ...TSO(0) }, () => partial(tcp(H1, 40000, S1, 443, ACK, bytes(3000))), 'vnet_bad_gso'],
      ['hdr_len past the packet', { ...TSO(1448), hdrLen: 5000 }, () => partial(tcp(H1, 40000, S1, 443, ACK, bytes(3000))), 'vnet_bad_gso'],
      ['an IPv6 GSO type on IPv4', { ...TSO(1448), gsoType: GSO_TCPV6 }, () => partial(tcp(H1, 40000, S1, 443, ACK, bytes(3000))), 'vnet_bad_gso'],
      ['TCP GSO on a UDP packet', { ...TSO(1448), csumOffset: 6 }, () => partial(udp(H1, 4000, S1, 53, bytes(3000))), 'vnet_bad_gso'],
      ['GSO without NEEDS_CSUM', { ...TSO(1448), flags: 0 }, () => tcp(H1, 40000, S1, 443, ACK, bytes(3000)), 'vnet_bad_gso'],
      ['csum_start out of range', { ...TSO(1448), csumStart: 60000 }, () => partial(tcp(H1, 40000, S1, 443, ACK, bytes(3000))), 'vnet_bad_csum'],
      ['csum_start not at the L4 header', { ...TSO(1448), csumStart: 24 }, () => partial(tcp(H1, 40000, S1, 443, ACK, bytes(3000))), 'vnet_bad_csum'],
      ['csum_offset not the TCP checksum', { ...TSO(1448), csumOffset: 6 }, () => partial(tcp(H1, 40000, S1, 443, ACK, bytes(3000))), 'vnet_bad_csum'],
      ['an unknown flag', { flags: 0x10 }, () => udp(H1, 4000, S1, 53), 'vnet_bad_csum'],
      ['NEEDS_CSUM on ICMP', { flags: F_NEEDS_CSUM, csumStart: 20, csumOffset: 2 }, () => icmpEcho(H1, S1, 8, 77), 'vnet_bad_csum'],
      ['NEEDS_CSUM on a fragment', { flags: F_NEEDS_CSUM, csumStart: 20, csumOffset: 6 }, () => fragment(udp(H1, 4000, S1, 53, bytes(100)), 48)[0], 'vnet_bad_csum'],
      ['GSO on a fragment', { ...TSO(1448) }, () => fragment(tcp(H1, 40000, S1, 443, ACK, bytes(3000)), 1480)[0], 'vnet_bad_gso'],
    ];
    for (const [what, h, pkt, reason] of cases) {
      it(what, () => {
        const r = new GsoRouter();
        expect(r.send(pkt(), h, SIDE_INSIDE)).toBeNull();
        expect(r.drop(reason)).toBe(1);
        expect(r.engine.x.flowActive()).toBe(0);
      });
    }
    it('a read over 64 KiB', () => {
      const r = new GsoRouter();
      const big = new Uint8Array(65536 + 20);
      big.set(tcp(H1, 40000, S1, 443, ACK));
      expect(r.send(big, TSO(1448), SIDE_INSIDE)).toBeNull();
      expect(r.drop('oversize')).toBe(1);
    });
    it('from the WAN too: a forged GSO header on a reply does not pass', () => {
      const r = new GsoRouter();
      r.send(tcp(H1, 40000, S1, 443, SYN), {}, SIDE_INSIDE);
      expect(r.send(partial(tcp(S1, 443, WAN, 40000, ACK, bytes(3000))), { ...TSO(0) }, SIDE_OUTSIDE)).toBeNull();
      expect(r.drop('vnet_bad_gso')).toBe(1);
    });
  });
  describe('USO to or from UDP 500 is cut into datagrams, each routed by its own cookies', () => {
    const A1 = 'a1a1a1a1a1a1a1a1', A2 = 'a2a2a2a2a2a2a2a2', A3 = 'a3a3a3a3a3a3a3a3', A4 = 'a4a4a4a4a4a4a4a4';
    const B1 = 'b1b1b1b1b1b1b1b1', R = (c: string) => c.replace(/./g, (x) => (x === 'a' || x === 'b' ? 'e' : x));

    it('12 a LAN host\'s super-packet of four IKE datagrams: four datagrams leave, each its own exchange, every checksum complete', () => {
      const r = new GsoRouter();
      const msgs = [ikeMsg(A1, '0', 200), ikeMsg(A2, '0', 200), ikeMsg(A3, '0', 200), ikeMsg(A4, '0', 120)];
      const h = USO(200);
      const sp = uso(H1, 500, S1, 500, msgs, { id: 0x4000, ttl: 63 });
      const o = r.send(sp, h, SIDE_INSIDE)!;
      expect(o).not.toBeNull();
      // The first datagram in the slot, a plain packet now (zero virtio header); the other three after the batch.
      expect(o.hdr).toEqual(new Uint8Array(10));
      const out = [o.pkt, ...r.lastExtras];
      expect(out.length).toBe(4);
      out.forEach((d, k) => {
        const x = parse(d);
        expect([x.src, x.sport, x.dst, x.dport, x.ttl, x.id]).toEqual([WAN, 500, S1, 500, 64, 0x4000 + k]);
        expect(ipCsumOk(d)).toBe(true);
        expect(l4CsumOk(d)).toBe(true);
        expect(d[20 + 6] | d[20 + 7]).not.toBe(0); // a real checksum, not "none"
        expect(x.l4.length).toBe(8 + msgs[k].length);
        expect(Array.from(x.l4.subarray(8))).toEqual(Array.from(msgs[k]));
      });
      const ike = r.vpnEntries().filter((e) => e.state === 'IKE');
      expect(ike.map((e) => e.icookie).sort()).toEqual([A1, A2, A3, A4]);
      expect(ike.every((e) => e.lan === H1)).toBe(true);
      expect(r.engine.counters()).toMatchObject({ gsoRx: 1, usoSplit: 1, usoDatagrams: 4, rxInside: 4, passInside: 4 });
      // The kernel's own segmentation of the same super-packet gives the same datagrams as went in.
      expect(segmentUdp(sp, h.gsoSize!).map((d) => Array.from(parse(d).l4.subarray(8)))).toEqual(msgs.map((m) => Array.from(m)));
    });

    it('13 a server\'s super-packet answering two LAN hosts\' exchanges: each datagram goes to the host that owns its cookie', () => {
      const r = new GsoRouter();
      r.send(isakmp(H1, 500, S1, 500, A1), {}, SIDE_INSIDE);
      r.send(isakmp(H2, 500, S1, 500, B1), {}, SIDE_INSIDE);
      r.send(isakmp(H1, 500, S1, 500, A2), {}, SIDE_INSIDE);
      const msgs = [ikeMsg(A1, R(A1), 300), ikeMsg(B1, R(B1), 300), ikeMsg(A2, R(A2), 300), ikeMsg(B1, R(B1), 64)];
      const o = r.send(uso(S1, 500, WAN, 500, msgs, { ttl: 50 }), USO(300), SIDE_OUTSIDE)!;
      const out = [o.pkt, ...r.lastExtras];
      expect(out.map((d) => parse(d).dst)).toEqual([H1, H2, H1, H2]);
      expect(out.map(cookieOf)).toEqual([A1, B1, A2, B1]);
      for (const d of out) {
        expect([parse(d).sport, parse(d).dport, parse(d).ttl]).toEqual([500, 500, 51]);
        expect(ipCsumOk(d)).toBe(true);
        expect(l4CsumOk(d)).toBe(true);
      }
      // Each exchange learned its responder cookie from its own datagram.
      const ike = Object.fromEntries(r.vpnEntries().filter((e) => e.state === 'IKE').map((e) => [e.icookie, e.rcookie]));
      expect(ike).toEqual({ [A1]: R(A1), [B1]: R(B1), [A2]: R(A2) });
      expect(r.balanced()).toBe(true);
    });

    it('14 the attacker\'s datagrams inside a super-packet are judged one by one: a stranger\'s cookie or a colliding one drops only itself', () => {
      const r = new GsoRouter();
      r.send(isakmp(H1, 500, S1, 500, A1), {}, SIDE_INSIDE);
      r.send(isakmp(H2, 500, S1, 500, B1), {}, SIDE_INSIDE);
      // From the WAN: H1's reply, a cookie nobody opened (spoofed), H2's reply with a wrong responder cookie after a right one.
      r.send(isakmp(S1, 500, WAN, 500, B1, R(B1)), {}, SIDE_OUTSIDE);
      const inb = [ikeMsg(A1, R(A1), 100), ikeMsg('dededededededede', '0', 100), ikeMsg(B1, 'ffffffffffffffff', 100)];
      const o = r.send(uso(S1, 500, WAN, 500, inb), USO(100), SIDE_OUTSIDE)!;
      expect(parse(o.pkt).dst).toBe(H1);
      expect(r.lastExtras).toEqual([]);
      expect(r.drop('no_flow')).toBe(1);
      expect(r.drop('isakmp_cookie_collision')).toBe(1);
      // From the LAN: H2 reuses H1's outstanding cookie toward the same server in the middle of its super-packet.
      const out = [ikeMsg('c1c1c1c1c1c1c1c1', '0', 100), ikeMsg(A1, '0', 100), ikeMsg('c2c2c2c2c2c2c2c2', '0', 100)];
      const o2 = r.send(uso(H2, 500, S1, 500, out), USO(100), SIDE_INSIDE)!;
      expect(cookieOf(o2.pkt)).toBe('c1c1c1c1c1c1c1c1');
      expect(r.lastExtras.map(cookieOf)).toEqual(['c2c2c2c2c2c2c2c2']);
      expect(r.drop('isakmp_cookie_collision')).toBe(2);
      expect(r.vpnEntries().find((e) => e.icookie === A1)!.lan).toBe(H1);
      expect(r.balanced()).toBe(true);
    });

    it('15 one datagram\'s worth (payload ≤ gso_size) becomes one plain packet; the next batch does not send the extras again', () => {
      const r = new GsoRouter();
      const o = r.send(uso(H1, 500, S1, 500, [ikeMsg(A1, '0', 150)]), USO(400), SIDE_INSIDE)!;
      expect(o.hdr).toEqual(new Uint8Array(10));
      expect(l4CsumOk(o.pkt)).toBe(true);
      expect(r.lastExtras).toEqual([]);
      r.send(uso(H1, 500, S1, 500, [ikeMsg(A2, '0', 150), ikeMsg(A3, '0', 150)]), USO(150), SIDE_INSIDE);
      expect(r.lastExtras.length).toBe(1);
      r.send(udp(H1, 5000, S1, 53), {}, SIDE_INSIDE);
      expect(r.lastExtras).toEqual([]);
      expect(r.engine.x.extraCount()).toBe(0);
    });

    it('16 super-packets of one batch share the extra ring in order; one that no longer fits is dropped whole (vnet_gso_ike), the rest pass', () => {
      const r = new GsoRouter();
      // 100 IKE datagrams of 40 bytes, cookies c0..c99 of super-packet c.
      const cookie = (c: number, k: number) => `${c}`.repeat(12) + k.toString(16).padStart(4, '0');
      const big = (c: number) => uso(H1, 500, S1, 500, Array.from({ length: 100 }, (_, k) => ikeMsg(cookie(c, k), '0', 40)), { id: c * 1000 });
      const res = r.sendAll([[big(1), USO(40)], [big(2), USO(40)], [udp(H1, 5000, S1, 53), {}]], SIDE_INSIDE);
      expect(res[0]).not.toBeNull();
      expect(res[1]).toBeNull(); // 99 more datagrams: only 28 places left of 128
      expect(res[2]).not.toBeNull();
      expect(r.lastExtras.length).toBe(99);
      expect(r.lastExtras.map((d) => parse(d).id)).toEqual(Array.from({ length: 99 }, (_, k) => 1000 + k + 1));
      expect(r.drop('vnet_gso_ike')).toBe(1);
      expect(r.vpnEntries().filter((e) => e.state === 'IKE').map((e) => e.icookie).sort()).toEqual(Array.from({ length: 100 }, (_, k) => cookie(1, k)));
      expect(r.balanced()).toBe(true);
    });

    it('16b random super-packets to and from UDP 500 (any gso_size and lengths, a lying UDP length): never a trap, every packet accounted, every datagram out whole and checksummed', () => {
      const r = new GsoRouter();
      let seed = 12345;
      const rnd = (n: number) => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return (seed >>> 8) % n; };
      const opened: string[] = [];
      let out = 0;
      for (let t = 0; t < 300; t++) {
        const gsoSize = [1, 8, 28, 100, 500, 1400, 2020, 2021, 4000][rnd(9)]!;
        const outbound = rnd(2) === 0 || opened.length === 0;
        const msg = (k: number, size: number) => {
          if (size < 28) return new Uint8Array(size).fill(7); // too short for ISAKMP
          if (!outbound) return ikeMsg(opened[rnd(opened.length)]!, R(A1), size);
          const c = `${t.toString(16).padStart(4, '0')}${k}`.padEnd(16, 'c');
          opened.push(c);
          return ikeMsg(c, '0', size);
        };
        // All but the last datagram are gso_size long (as a sender cuts them); the last may be shorter.
        const n = 1 + rnd(6);
        const msgs = Array.from({ length: n }, (_, k) => msg(k, k < n - 1 ? gsoSize : Math.max(1, gsoSize - rnd(3) * rnd(gsoSize))));
        const p = outbound ? uso(rnd(2) ? H1 : H2, 500, S1, 500, msgs) : uso(S1, 500, WAN, 500, msgs);
        if (rnd(8) === 0) put16(p, 24, rnd(0x10000)); // a UDP length field that lies
        const got = r.send(p, USO(gsoSize), outbound ? SIDE_INSIDE : SIDE_OUTSIDE);
        for (const d of got ? [got.pkt, ...r.lastExtras] : r.lastExtras) {
          expect(ipCsumOk(d)).toBe(true);
          expect(l4CsumOk(d)).toBe(true);
          expect(parse(d).l4.length).toBeLessThanOrEqual(8 + gsoSize);
          out++;
        }
      }
      expect(out).toBeGreaterThan(300);
      expect(r.balanced()).toBe(true);
    });

    describe('bad or unsplittable super-packets to UDP 500 are dropped with a reason and leave no state', () => {
      const cases: [string, Vnet, () => Uint8Array, string][] = [
        ['a UDP length that is not the super-packet\'s', USO(100), () => {
          const p = uso(H1, 500, S1, 500, [ikeMsg(A1, '0', 100), ikeMsg(A2, '0', 100)]);
          put16(p, 24, 108); put16(p, 10, 0); put16(p, 10, ~csum(p.subarray(0, 20)) & 0xffff);
          return p;
        }, 'vnet_bad_gso'],
        ['datagrams over 2 KiB each', USO(2100), () => uso(H1, 500, S1, 500, [ikeMsg(A1, '0', 2100), ikeMsg(A2, '0', 100)]), 'vnet_gso_ike'],
        ['more datagrams than the ring holds (gso_size 1)', USO(1), () => uso(H1, 500, S1, 500, [ikeMsg(A1, '0', 300)]), 'vnet_gso_ike'],
        ['gso_size 0', USO(0), () => uso(H1, 500, S1, 500, [ikeMsg(A1, '0', 100), ikeMsg(A2, '0', 100)]), 'vnet_bad_gso'],
        ['a TCP GSO type', { ...USO(100), gsoType: GSO_TCPV4 }, () => uso(H1, 500, S1, 500, [ikeMsg(A1, '0', 100), ikeMsg(A2, '0', 100)]), 'vnet_bad_gso'],
      ];
      for (const [what, h, pkt, reason] of cases) {
        it(what, () => {
          const r = new GsoRouter();
          expect(r.send(pkt(), h, SIDE_INSIDE)).toBeNull();
          expect(r.drop(reason)).toBe(1);
          expect(r.lastExtras).toEqual([]);
          expect(r.vpnEntries()).toEqual([]);
          expect(r.engine.counters().usoDatagrams).toBe(0);
        });
      }
    });

    it('17 NAT-T (UDP 4500): a super-packet of ESP datagrams with different SPIs and a non-ESP-marked IKE message is translated whole, and the kernel\'s segments equal what each datagram alone gives', () => {
      // NAT-T is NAPT on the 5-tuple all datagrams of a super-packet share; the engine reads no SPI or marker there.
      const espIn = (spi: number, n: number) => { const b = new Uint8Array(n); new DataView(b.buffer).setUint32(0, spi); b.fill(0x5a, 8); return b; };
      const nonEsp = new Uint8Array([0, 0, 0, 0, ...ikeMsg(A1, R(A1), 196)]);
      const msgs = [espIn(0x1001, 200), nonEsp, espIn(0x1002, 200), espIn(0x1003, 90)];
      const h = USO(200);
      const gso = new GsoRouter(), plain = new GsoRouter();
      // The same history in both: H1 holds 4500 toward S1, so H2's NAT-T moves to a pool port.
      for (const t of [gso, plain]) t.send(udp(H1, 4500, S1, 4500), {}, SIDE_INSIDE);
      const sp = uso(H2, 4500, S1, 4500, msgs, { id: 0x2000 });
      const o = gso.send(sp, h, SIDE_INSIDE)!;
      expect(o.hdr).toEqual(hdrBytes(h));
      expect(gso.lastExtras).toEqual([]);
      const viaGso = segmentUdp(o.pkt, h.gsoSize!);
      const alone = segmentUdp(sp, h.gsoSize!).map((d) => plain.send(d, {}, SIDE_INSIDE)!.pkt);
      expect(viaGso.length).toBe(4);
      expect(viaGso.map((d) => Array.from(d))).toEqual(alone.map((d) => Array.from(d)));
      const pool = parse(o.pkt).sport;
      expect(pool).not.toBe(4500);
      // And back: the server's super-packet to the pool port reaches H2's 4500 whole.
      const back = uso(S1, 4500, WAN, pool, msgs);
      const b = gso.send(back, h, SIDE_OUTSIDE)!;
      expect([parse(b.pkt).dst, parse(b.pkt).dport]).toEqual([H2, 4500]);
      const backAlone = segmentUdp(back, h.gsoSize!).map((d) => plain.send(d, {}, SIDE_OUTSIDE)!.pkt);
      expect(segmentUdp(b.pkt, h.gsoSize!).map((d) => Array.from(d))).toEqual(backAlone.map((d) => Array.from(d)));
      expect(gso.engine.counters().usoSplit).toBe(0);
    });
  });

  describe('PPTP control (TCP 1723) in TSO super-packets: every message of the super-packet is seen', () => {
    const SRV = S1;
    const open = (r: GsoRouter, host: string, sport: number) => {
      const syn = r.send(tcp(host, sport, SRV, 1723, SYN), {}, SIDE_INSIDE)!;
      const wanPort = parse(syn.pkt).sport;
      r.send(tcp(SRV, 1723, WAN, wanPort, SYN | ACK), {}, SIDE_OUTSIDE);
      r.send(tcp(host, sport, SRV, 1723, ACK), {}, SIDE_INSIDE);
      return wanPort;
    };
    const h: Vnet = { flags: F_NEEDS_CSUM, gsoType: GSO_TCPV4, hdrLen: 40, gsoSize: 100, csumStart: 20, csumOffset: 16 };

    it('18 six Outgoing-Call-Requests in one super-packet open six calls; the replies in one super-packet map every Call ID back', () => {
      const r = new GsoRouter();
      open(r, H2, 40002);
      const wanPort = open(r, H1, 40001);
      // H2 holds Call IDs 21..23 as aliases, so H1's 21..23 must be moved: rewrites in the middle of the payload.
      for (const c of [21, 22, 23]) r.send(tcp(H2, 40002, SRV, 1723, PSH | ACK, pptpMsg(7, c)), {}, SIDE_INSIDE);
      const ids = [21, 22, 23, 24, 25, 26];
      const o = r.send(partial(tcp(H1, 40001, SRV, 1723, PSH | ACK, ids.flatMap((c) => pptpMsg(7, c)))), h, SIDE_INSIDE)!;
      expect(o).not.toBeNull();
      const aliases = ids.map((_, k) => pptpField(o.pkt, 12, k));
      expect(new Set([21, 22, 23, ...aliases]).size).toBe(9); // every one moved off H2's, all distinct
      for (const s of segmentTcp(o.pkt, h)) expect(l4CsumOk(s)).toBe(true);
      expect(r.vpnEntries().filter((e) => e.id?.startsWith('call:')).length).toBe(9);
      // The server answers all six in one super-packet (Outgoing-Call-Reply: its Call ID, then the peer's = our alias).
      const replies = aliases.flatMap((a, k) => pptpMsg(8, 900 + k, a));
      const b = r.send(partial(tcp(SRV, 1723, WAN, wanPort, PSH | ACK, replies)), h, SIDE_OUTSIDE)!;
      expect(parse(b.pkt).dst).toBe(H1);
      expect(ids.map((_, k) => pptpField(b.pkt, 14, k))).toEqual(ids);
      expect(ids.map((_, k) => pptpField(b.pkt, 12, k))).toEqual(ids.map((_, k) => 900 + k));
      for (const s of segmentTcp(b.pkt, h)) expect(l4CsumOk(s)).toBe(true);
    });

    it('19 a bad message at the end of a super-packet drops all of it before any call is opened', () => {
      const r = new GsoRouter();
      open(r, H1, 40001);
      const calls = () => r.vpnEntries().filter((e) => e.id?.startsWith('call:')).length;
      const before = calls();
      const bad = [...pptpMsg(7, 31), ...pptpMsg(7, 32), ...pptpMsg(7, 33, 0, { magic: 0xdeadbeef })];
      expect(r.send(partial(tcp(H1, 40001, SRV, 1723, PSH | ACK, bad)), h, SIDE_INSIDE)).toBeNull();
      expect(r.drop('pptp_bad_magic')).toBe(1);
      const cut = [...pptpMsg(7, 31), ...pptpMsg(7, 32).slice(0, 100)];
      expect(r.send(partial(tcp(H1, 40001, SRV, 1723, PSH | ACK, cut)), h, SIDE_INSIDE)).toBeNull();
      expect(r.drop('pptp_bad_length')).toBe(1);
      expect(calls()).toBe(before);
    });
  });
});
