// virtio_net_hdr view (virtio spec 1.x §5.1.6; Linux include/uapi/linux/virtio_net.h),
// the 10 bytes a TUN opened with IFF_VNET_HDR puts before every packet. With
// TUNSETOFFLOAD the kernel hands the TUN GSO super-packets (one IPv4 + TCP
// header, up to 64 KB of payload that it will cut into gso_size segments on
// the way out) and packets whose L4 checksum it has not finished:
//
//   0       1          2        4          6            8             10
//   | flags | gso_type | hdr_len | gso_size | csum_start | csum_offset |
//
// Little-endian on the hosts vpnmasq runs on (TUN uses the host's order for
// the legacy header; x86_64 and aarch64 are little-endian, as is Wasm).
//
// NEEDS_CSUM: the checksum at csum_start + csum_offset is not a checksum but
// the folded one's complement sum of the pseudo header (addresses, protocol,
// length), not inverted; whoever sends the packet on sums the bytes from
// csum_start to the end, field included, and stores the complement. So an
// address change must move the partial sum by the pseudo-header difference,
// while a port or payload change must NOT touch it: those bytes lie inside
// the region that final sum covers (rewrite.ts, pptp.ts).

import { PROTO_TCP, PROTO_UDP } from "../abi/codes";
import { Drop } from "../abi/reasons";
import { CTX_FRAG_OFFSET, CTX_HLEN, CTX_L4_PARTIAL, CTX_MORE_FRAGS, CTX_PROTO, CTX_TOTAL, CTX_VNET } from "./context";
import { TCP_CSUM, UDP_CSUM } from "./l4";

export const VNET_FLAGS: usize = 0;
export const VNET_GSO_TYPE: usize = 1;
export const VNET_HDR_LEN: usize = 2;
export const VNET_GSO_SIZE: usize = 4;
export const VNET_CSUM_START: usize = 6;
export const VNET_CSUM_OFFSET: usize = 8;
export const VNET_HDR_SIZE: u32 = 10;

export const VNET_F_NEEDS_CSUM: u32 = 1;
export const VNET_F_DATA_VALID: u32 = 2;
export const VNET_GSO_NONE: u32 = 0;
export const VNET_GSO_TCPV4: u32 = 1;
export const VNET_GSO_UDP: u32 = 3;    // UFO, gone from Linux since 4.14
export const VNET_GSO_TCPV6: u32 = 4;
export const VNET_GSO_UDP_L4: u32 = 5; // USO
export const VNET_GSO_ECN: u32 = 0x80;

/** The largest packet a TUN read may hand over: an IPv4 datagram's limit. */
export const VNET_MAX_PACKET: u32 = 65535;

/** The GSO type without the ECN bit, 0 when the packet is no super-packet or has no header. */
@inline export function vnetGsoType(h: usize): u32 {
  return h == 0 ? 0 : <u32>load<u8>(h, VNET_GSO_TYPE) & ~VNET_GSO_ECN;
}

@inline function u16at(h: usize, off: usize): u32 { return <u32>load<u16>(h + off); }

/**
 * Checks the packet's virtio_net_hdr against its already checked IPv4
 * header (ipv4Check filled ctx) and notes in ctx whether the L4 checksum
 * is a partial sum. A header is never trusted: any field that disagrees
 * with the packet is a drop. No header (ctx CTX_VNET 0): nothing to check.
 */
export function vnetCheck(ctx: usize): u32 {
  store<u32>(ctx, 0, CTX_L4_PARTIAL);
  const h = <usize>load<u32>(ctx, CTX_VNET);
  if (h == 0) return Drop.NONE;
  const flags = <u32>load<u8>(h, VNET_FLAGS);
  const gso = <u32>load<u8>(h, VNET_GSO_TYPE) & ~VNET_GSO_ECN;
  if (flags == 0 && gso == VNET_GSO_NONE) return Drop.NONE; // the common small packet
  if ((flags & ~(VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID)) != 0) return Drop.VNET_BAD_CSUM;
  const proto = load<u32>(ctx, CTX_PROTO);
  const hlen = load<u32>(ctx, CTX_HLEN);
  const total = load<u32>(ctx, CTX_TOTAL);
  const fragment = load<u32>(ctx, CTX_FRAG_OFFSET) != 0 || load<u32>(ctx, CTX_MORE_FRAGS) != 0;
  if (gso != VNET_GSO_NONE) {
    // The kernel cuts a super-packet by gso_size below hdr_len's headers:
    // every field must describe this very packet.
    if (gso == VNET_GSO_TCPV4) { if (proto != PROTO_TCP) return Drop.VNET_BAD_GSO; }
    else if (gso == VNET_GSO_UDP_L4) { if (proto != PROTO_UDP) return Drop.VNET_BAD_GSO; }
    else return Drop.VNET_BAD_GSO; // IPv6 types on an IPv4 packet, UFO
    if (u16at(h, VNET_GSO_SIZE) == 0 || fragment) return Drop.VNET_BAD_GSO;
    if (u16at(h, VNET_HDR_LEN) > total) return Drop.VNET_BAD_GSO;
    if ((flags & VNET_F_NEEDS_CSUM) == 0) return Drop.VNET_BAD_GSO; // segments need their checksums finished
  }
  if (flags & VNET_F_NEEDS_CSUM) {
    if (fragment) return Drop.VNET_BAD_CSUM;
    const want = proto == PROTO_TCP ? TCP_CSUM : proto == PROTO_UDP ? UDP_CSUM : 0;
    if (want == 0 || u16at(h, VNET_CSUM_START) != hlen || u16at(h, VNET_CSUM_OFFSET) != want) return Drop.VNET_BAD_CSUM;
    if (hlen + want + 2 > total) return Drop.VNET_BAD_CSUM;
    store<u32>(ctx, 1, CTX_L4_PARTIAL);
  }
  return Drop.NONE;
}
