// In-place rewrites of addresses and ports with incremental checksum
// adjustment (RFC 1624). The L4 checksum of TCP and UDP covers a pseudo
// header with both addresses, so an address change adjusts it too; ICMP's
// does not. A UDP checksum of 0 means "none" and stays 0; an adjusted one
// that comes out 0 is sent as 0xffff (RFC 768).

import { PROTO_ICMP, PROTO_UDP } from "../abi/codes";
import { adjust16, adjust32 } from "../wire/checksum";
import { IP_CSUM, IP_TOTAL_LEN, IP_TTL, IP_VER_IHL } from "../wire/ipv4";
import { l4CsumOffset } from "../wire/l4";

/** Replaces the address at `field` (IP_SRC / IP_DST) and a 16-bit port or identifier at l4 + portOff. */
@inline export function rewriteAddrPort(p: usize, field: u32, newAddr: u32, l4: usize, proto: u32,
  portOff: u32, newPortHost: u32): void {
  const oldAddr = load<u32>(p + field);
  store<u32>(p + field, newAddr);
  store<u16>(p, <u16>adjust32(load<u16>(p, IP_CSUM), oldAddr, newAddr), IP_CSUM);
  const oldPort = <u32>load<u16>(l4 + portOff);
  const newPort = <u32>bswap<u16>(<u16>newPortHost);
  store<u16>(l4 + portOff, <u16>newPort);
  const co = l4CsumOffset(proto);
  const c = <u32>load<u16>(l4 + co);
  if (proto == PROTO_UDP && c == 0) return;
  let n = adjust16(c, oldPort, newPort);
  if (proto != PROTO_ICMP) n = adjust32(n, oldAddr, newAddr);
  if (proto == PROTO_UDP && n == 0) n = 0xffff;
  // RFC 1624 §3: the incremental update gives -0 (0x0000) where recomputing
  // gives 0xffff only when every other word summed is +0, i.e. is zero. With
  // TCP and UDP the pseudo header never is; an ICMP message can be: an echo
  // reply with identifier 0, sequence 0 and no data (found by npm run fuzz).
  if (proto == PROTO_ICMP && n == 0 && icmpAllZero(p, l4)) n = 0xffff;
  store<u16>(l4 + co, <u16>n);
}

/** Is the ICMP message, its checksum aside, all zero bytes? (Checked only when an update gave 0.) */
function icmpAllZero(p: usize, l4: usize): bool {
  const len = <u32>bswap<u16>(load<u16>(p, IP_TOTAL_LEN)) - ((<u32>load<u8>(p, IP_VER_IHL) & 0xf) << 2);
  if (load<u16>(l4) != 0) return false; // type and code
  for (let i: u32 = 4; i < len; i++) if (load<u8>(l4 + i) != 0) return false;
  return true;
}

/** Replaces only the IP address (later fragments, protocols without ports). */
export function rewriteAddr(p: usize, field: u32, newAddr: u32): void {
  const oldAddr = load<u32>(p + field);
  store<u32>(p + field, newAddr);
  store<u16>(p, <u16>adjust32(load<u16>(p, IP_CSUM), oldAddr, newAddr), IP_CSUM);
}

/**
 * The kernel decrements TTL on both forwards around the TUN; adding one back
 * makes the router count as one hop. Never past 255.
 */
@inline export function ttlCompensate(p: usize): void {
  const oldWord = <u32>load<u16>(p, IP_TTL); // TTL and protocol, as stored
  const ttl = oldWord & 0xff;                 // first byte in memory = TTL
  if (ttl == 255) return;
  const newWord = oldWord + 1;
  store<u16>(p, <u16>newWord, IP_TTL);
  store<u16>(p, <u16>adjust16(load<u16>(p, IP_CSUM), oldWord, newWord), IP_CSUM);
}
