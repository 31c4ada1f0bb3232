// Transport header views: UDP (RFC 768), TCP (RFC 9293 §3.1), ICMP (RFC 792).
//
// UDP:                                 TCP (first 20 bytes):
//  0      7 8     15 16    23 24    31  |  Source Port  |   Dest Port   |
// |  Source Port    |   Dest Port     | |        Sequence Number        |
// |    Length       |   Checksum      | |     Acknowledgment Number     |
//                                       |Off| |Flags|      Window       |
// ICMP:                                 |   Checksum    | Urgent Pointer|
// |  Type  |  Code  |   Checksum      |
// | Identifier      | Sequence Number |   (echo; errors carry the
//                                          original IP header + 8 bytes)

import { PROTO_ICMP, PROTO_TCP, PROTO_UDP } from "../abi/codes";
import { Drop } from "../abi/reasons";

export const L4_SRC_PORT: u32 = 0;
export const L4_DST_PORT: u32 = 2;
export const UDP_LEN: u32 = 4;
export const UDP_CSUM: u32 = 6;
export const UDP_HEADER: u32 = 8;
export const TCP_SEQ: u32 = 4;
export const TCP_ACK: u32 = 8;
export const TCP_OFF: u32 = 12;
export const TCP_FLAGS: u32 = 13;
export const TCP_CSUM: u32 = 16;
export const TCP_HEADER: u32 = 20;
export const ICMP_TYPE: u32 = 0;
export const ICMP_CODE: u32 = 1;
export const ICMP_CSUM: u32 = 2;
export const ICMP_ID: u32 = 4;
export const ICMP_SEQ: u32 = 6;
export const ICMP_HEADER: u32 = 8;

export const TCP_FIN: u32 = 0x01;
export const TCP_SYN: u32 = 0x02;
export const TCP_RST: u32 = 0x04;
export const TCP_ACK_FLAG: u32 = 0x10;

export const ICMP_ECHO_REPLY: u32 = 0;
export const ICMP_DEST_UNREACH: u32 = 3;
export const ICMP_SOURCE_QUENCH: u32 = 4;
export const ICMP_ECHO_REQUEST: u32 = 8;
export const ICMP_TIME_EXCEEDED: u32 = 11;
export const ICMP_PARAM_PROBLEM: u32 = 12;

@inline export function port(l4: usize, off: u32): u32 { return <u32>bswap<u16>(load<u16>(l4 + off)); }
@inline export function tcpFlags(l4: usize): u32 { return load<u8>(l4, TCP_FLAGS); }

/** Offset of the L4 checksum field, or 0xffffffff when the protocol has none we keep. */
@inline export function l4CsumOffset(proto: u32): u32 {
  return proto == PROTO_TCP ? TCP_CSUM : proto == PROTO_UDP ? UDP_CSUM : ICMP_CSUM;
}

/** Minimum header that must be present before the engine reads a field. */
export function l4MinHeader(proto: u32): u32 {
  if (proto == PROTO_TCP) return TCP_HEADER;
  if (proto == PROTO_UDP) return UDP_HEADER;
  if (proto == PROTO_ICMP) return ICMP_HEADER;
  return 0;
}

/** Checked constructor for a complete (unfragmented or first-fragment) L4 header. */
@inline export function l4Check(proto: u32, l4: usize, l4len: u32, firstFragment: bool): u32 {
  const need = l4MinHeader(proto);
  if (l4len < need) return firstFragment ? Drop.FRAG_TINY : Drop.TRUNCATED;
  if (proto == PROTO_TCP) {
    const off = (<u32>load<u8>(l4, TCP_OFF) >>> 4) << 2;
    if (off < TCP_HEADER) return Drop.BAD_L4_HEADER;
    // A first fragment must carry the whole TCP header (RFC 1858 tiny fragments).
    if (off > l4len) return firstFragment ? Drop.FRAG_TINY : Drop.TRUNCATED;
  } else if (proto == PROTO_UDP && !firstFragment) {
    const ulen = port(l4, UDP_LEN);
    if (ulen < UDP_HEADER || ulen > l4len) return Drop.BAD_L4_HEADER;
  }
  return Drop.NONE;
}
