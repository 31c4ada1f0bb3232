// Mutations of valid packets, shared by the property tests (fast-check
// draws the Mutation records) and the fuzzer (its own PRNG draws them).
// Each mutation is a plain record so a failing case prints as data.

import { csum } from './packet.js';

/** Header fields a 'field' mutation can set; q* are inside an ICMP error's quote. */
export const FIELDS = [
  'version', 'ihl', 'total', 'frag', 'proto', 'ttl', 'src', 'dst', 'sport', 'dport', 'tcpOff', 'tcpFlags', 'udpLen',
  'icmpType', 'icmpCode', 'qVersionIhl', 'qTotal', 'qProto', 'qSrc', 'qDst', 'qSport', 'qDport', 'qIcmpType',
] as const;
export type Field = (typeof FIELDS)[number];

/** Values worth trying in any 16-bit field: limits, flags, the usual IHL and version bytes. */
export const EDGE_VALUES: readonly number[] = [0, 1, 4, 5, 7, 8, 0x45, 0xff, 0xffff, 0x2000, 0x1fff];

export type Mutation =
  | { k: 'flip'; pos: number; bit: number }
  | { k: 'truncate'; n: number }
  | { k: 'extend'; bytes: Uint8Array }
  | { k: 'field'; f: Field; v: number; a: number }
  | { k: 'byte'; pos: number; v: number }
  | { k: 'fixIp' }
  | { k: 'fixTotal' };

function put16(p: Uint8Array, off: number, v: number): void {
  if (off >= 0 && off + 2 <= p.length) { p[off] = (v >> 8) & 0xff; p[off + 1] = v & 0xff; }
}
function put8(p: Uint8Array, off: number, v: number): void { if (off >= 0 && off < p.length) p[off] = v & 0xff; }
export function putAddr(p: Uint8Array, off: number, a: string): void {
  if (off >= 0 && off + 4 <= p.length) p.set(a.split('.').map(Number), off);
}

/** Recomputes the IPv4 header checksum in place (over what is there of the header). */
export function fixIp(p: Uint8Array): Uint8Array {
  const hl = Math.min((p[0] & 0xf) * 4, p.length);
  if (p.length < 12) return p;
  p[10] = 0; p[11] = 0;
  const c = ~csum(p.subarray(0, hl)) & 0xffff;
  p[10] = c >> 8; p[11] = c & 0xff;
  return p;
}

export function setField(p: Uint8Array, f: Field, v: number, a: string): void {
  const l4 = (p[0] & 0xf) * 4;
  const q = l4 + 8;             // quoted IP header of an ICMP error
  const ql4 = q + ((p[q] ?? 0x45) & 0xf) * 4;
  switch (f) {
    case 'version': put8(p, 0, ((v & 0xf) << 4) | (p[0] & 0xf)); break;
    case 'ihl': put8(p, 0, (p[0] & 0xf0) | (v & 0xf)); break;
    case 'total': put16(p, 2, v); break;
    case 'frag': put16(p, 6, v); break;
    case 'proto': put8(p, 9, [1, 6, 17, 47, 50, v & 0xff][v % 6]); break;
    case 'ttl': put8(p, 8, v); break;
    case 'src': putAddr(p, 12, a); break;
    case 'dst': putAddr(p, 16, a); break;
    case 'sport': put16(p, l4, v); break;
    case 'dport': put16(p, l4 + 2, v); break;
    case 'tcpOff': put8(p, l4 + 12, (v & 0xf) << 4); break;
    case 'tcpFlags': put8(p, l4 + 13, v); break;
    case 'udpLen': put16(p, l4 + 4, v); break;
    case 'icmpType': put8(p, l4, [0, 3, 4, 5, 8, 11, 12, 13, v & 0xff][v % 9]); break;
    case 'icmpCode': put8(p, l4 + 1, v); break;
    case 'qVersionIhl': put8(p, q, v); break;
    case 'qTotal': put16(p, q + 2, v); break;
    case 'qProto': put8(p, q + 9, [1, 6, 17, 47, v & 0xff][v % 5]); break;
    case 'qSrc': putAddr(p, q + 12, a); break;
    case 'qDst': putAddr(p, q + 16, a); break;
    case 'qSport': put16(p, ql4, v); break;
    case 'qDport': put16(p, ql4 + 2, v); break;
    case 'qIcmpType': put8(p, ql4, v); break;
  }
}

/** A mutated copy of `pkt`; `addrs` are the addresses 'field' mutations of src/dst pick from (by `a`). */
export function mutate(pkt: Uint8Array, ms: readonly Mutation[], finalFix: boolean, addrs: readonly string[]): Uint8Array {
  let p = pkt.slice();
  for (const m of ms) {
    switch (m.k) {
      case 'flip': if (p.length) p[m.pos % p.length] ^= 1 << m.bit; break;
      case 'byte': if (p.length) p[m.pos % p.length] = m.v; break;
      case 'truncate': p = p.slice(0, m.n % (p.length + 1)); break;
      case 'extend': { const q = new Uint8Array(p.length + m.bytes.length); q.set(p); q.set(m.bytes, p.length); p = q; break; }
      case 'field': setField(p, m.f, m.v, addrs[m.a % addrs.length]); break;
      case 'fixIp': fixIp(p); break;
      case 'fixTotal': put16(p, 2, p.length); fixIp(p); break;
    }
  }
  return finalFix ? fixIp(p) : p;
}
