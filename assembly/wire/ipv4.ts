// IPv4 header view (RFC 791 §3.1).
//
//   0                   1                   2                   3
//   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  |Version|  IHL  |Type of Service|          Total Length         |
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  |         Identification        |Flags|      Fragment Offset    |
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  |  Time to Live |    Protocol   |         Header Checksum       |
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  |                       Source Address                          |
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  |                    Destination Address                        |
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Addresses are kept as the raw u32 `load<u32>` returns (network byte order
// bytes read little-endian): comparing, hashing and masking need no swaps.

import { Drop } from "../abi/reasons";
import { CTX_FRAG_OFFSET, CTX_HLEN, CTX_MORE_FRAGS, CTX_PROTO, CTX_TOTAL } from "./context";

export const IP_VER_IHL: u32 = 0;
export const IP_TOS: u32 = 1;
export const IP_TOTAL_LEN: u32 = 2;
export const IP_ID: u32 = 4;
export const IP_FRAG: u32 = 6;
export const IP_TTL: u32 = 8; // TTL and protocol share the checksum word at 8
export const IP_PROTO: u32 = 9;
export const IP_CSUM: u32 = 10;
export const IP_SRC: u32 = 12;
export const IP_DST: u32 = 16;
export const IP_MIN_HEADER: u32 = 20;

export const IP_FLAG_MF: u32 = 0x2000;
export const IP_FLAG_DF: u32 = 0x4000;
export const IP_OFFSET_MASK: u32 = 0x1fff;

// The checked view: `ipv4Check` validates once and writes what it found
// into the packet context (context.ts) it is given; afterwards the
// accessors below read fields without further checks.

@inline export function ipSrc(p: usize): u32 { return load<u32>(p, IP_SRC); }
@inline export function ipDst(p: usize): u32 { return load<u32>(p, IP_DST); }
@inline export function ipTtl(p: usize): u32 { return load<u8>(p, IP_TTL); }
@inline export function ipId(p: usize): u32 { return load<u16>(p, IP_ID); }

/** One's complement sum of the header: 32-bit words into a u64, folded once (IHL is a word count). */
@inline function headerSum(p: usize, hlen: u32): u32 {
  let s: u64 = <u64>load<u32>(p) + <u64>load<u32>(p, 4) + <u64>load<u32>(p, 8) + <u64>load<u32>(p, 12) + <u64>load<u32>(p, 16);
  for (let i: u32 = 20; i < hlen; i += 4) s += <u64>load<u32>(p + i);
  s = (s & 0xffffffff) + (s >>> 32);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return <u32>((s & 0xffff) + (s >>> 16));
}

/** Validates an IPv4 header of a packet of `len` bytes into `ctx`. Returns Drop.NONE or a reason. */
@inline export function ipv4Check(p: usize, len: u32, ctx: usize): u32 {
  if (len < IP_MIN_HEADER) return Drop.TRUNCATED;
  const vihl = <u32>load<u8>(p, IP_VER_IHL);
  if ((vihl >>> 4) != 4) return Drop.BAD_VERSION;
  const hlen = (vihl & 0xf) << 2;
  if (hlen < IP_MIN_HEADER || hlen > len) return Drop.BAD_IHL;
  const total = <u32>bswap<u16>(load<u16>(p, IP_TOTAL_LEN));
  // Bytes past the total length (link padding) are tolerated and left alone;
  // a total length beyond what was read is a truncated packet.
  if (total < hlen || total > len) return Drop.BAD_TOTAL_LEN;
  if (headerSum(p, hlen) != 0xffff) return Drop.BAD_IP_CSUM;
  const frag = <u32>bswap<u16>(load<u16>(p, IP_FRAG));
  const offset = (frag & IP_OFFSET_MASK) << 3;
  if (offset + total - hlen > 65535) return Drop.BAD_FRAGMENT;
  store<u32>(ctx, hlen, CTX_HLEN);
  store<u32>(ctx, total, CTX_TOTAL);
  store<u32>(ctx, load<u8>(p, IP_PROTO), CTX_PROTO);
  store<u32>(ctx, offset, CTX_FRAG_OFFSET);
  store<u32>(ctx, (frag & IP_FLAG_MF) != 0 ? 1 : 0, CTX_MORE_FRAGS);
  return Drop.NONE;
}
