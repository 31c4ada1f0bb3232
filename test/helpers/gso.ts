// The kernel's side of TUN offloads, modelled for byte-vector tests
// (test/scenarios/offload, gro): what a sender with checksum offload leaves
// in a NEEDS_CSUM packet, how the kernel finishes that checksum on the way
// out, and how it cuts a UDP GSO packet (__udp_gso_segment).
import { csum, ip, parse } from './packet.js';

export function be16(b: Uint8Array, o: number): number { return (b[o] << 8) | b[o + 1]; }
export function put16(b: Uint8Array, o: number, v: number): void { b[o] = (v >> 8) & 0xff; b[o + 1] = v & 0xff; }
export const l4Off = (p: Uint8Array) => (p[0] & 0xf) * 4;
/** Offset of the TCP or UDP checksum field. */
export const csumField = (p: Uint8Array) => l4Off(p) + (p[9] === 6 ? 16 : 6);

/**
 * The pseudo-header sum (not inverted), as the kernel leaves it in a
 * NEEDS_CSUM packet, with the L4 length the IP header gives (a GSO leader's
 * header speaks for the whole group, not for the bytes at hand).
 */
export function pseudoSum(p: Uint8Array): number {
  const x = parse(p);
  const len = be16(p, 2) - l4Off(p);
  return csum(new Uint8Array([...ip(x.src), ...ip(x.dst), 0, p[9], len >> 8, len & 0xff]));
}

/** A packet with a complete checksum turned into what a sender with checksum offload hands over. */
export function partial(p: Uint8Array): Uint8Array {
  const q = Uint8Array.from(p);
  put16(q, csumField(q), pseudoSum(q));
  return q;
}

/** What the kernel does with NEEDS_CSUM on the way out: sum csum_start..end (field included), store the complement. */
export function complete(p: Uint8Array, start: number, offset: number): Uint8Array {
  const q = Uint8Array.from(p);
  put16(q, start + offset, ~csum(q.subarray(start, be16(q, 2))) & 0xffff);
  return q;
}

/**
 * The kernel's UDP segmentation (__udp_gso_segment) of a partial-checksum
 * USO packet: headers copied, IP length / ID + k / checksum, UDP length,
 * the partial sum moved by the length difference, then completed.
 */
export function segmentUdp(p: Uint8Array, gsoSize: number): Uint8Array[] {
  const hl = l4Off(p), hdr = hl + 8, total = be16(p, 2);
  const segs: Uint8Array[] = [];
  for (let off = hdr, k = 0; off < total; off += gsoSize, k++) {
    const n = Math.min(gsoSize, total - off);
    const s = new Uint8Array(hdr + n);
    s.set(p.subarray(0, hdr)); s.set(p.subarray(off, off + n), hdr);
    put16(s, 2, hdr + n); put16(s, 4, (be16(p, 4) + k) & 0xffff);
    put16(s, 10, 0); put16(s, 10, ~csum(s.subarray(0, hl)) & 0xffff);
    put16(s, hl + 4, 8 + n);
    let ps = be16(p, hl + 6) + (~(total - hl) & 0xffff) + (8 + n);
    while (ps >> 16) ps = (ps & 0xffff) + (ps >>> 16);
    put16(s, hl + 6, ps);
    segs.push(complete(s, hl, 6));
  }
  return segs;
}
