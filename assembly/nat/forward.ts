// Port forwards: fw4 `redirect` sections (target DNAT). A WAN packet to the
// WAN address whose protocol and destination port match opens a flow to
// dest_ip:dest_port; the alias ports are reserved in the binding table so
// the masquerade pool never hands them out.
//
// Redirect record (REDIRECT_SIZE = 32 bytes):
//   0 u16 proto  2 u16 portLo  4 u16 portHi  6 u16 destPortLo  8 u32 destAddr  12 u8 portless
//   13 u8 reflect (REFLECT_*: NAT loopback for LAN hosts, nat/hairpin.ts)
//   16 u32 srcNet  20 u32 srcMask  24 u16 srcPortLo  26 u16 srcPortHi  28 u32 srcDip
// The source part is fw4's src_ip / src_port / src_dip: who may open a
// forward (mask 0, ports 0..65535, dip 0: anyone). Only a forward's first
// packet is checked; its flow carries the rest.
//
// A portless record is a protocol forward (natd's redirect_proto, the
// HOWTO's ipfwd): ESP, GRE or any IP protocol to one LAN host. The VPN
// handlers consult it only after their own demultiplexing (SPI, Call ID)
// found nothing, so masqueraded clients and a server behind the router
// coexist.

import { REFLECT_EXTERNAL, REFLECT_INTERNAL } from "../abi/codes";
import { redirects, MAX_REDIRECTS, REDIRECT_SIZE } from "../layout";
import { bindReserve, bindUnreserveAll, protoIndex } from "./binding";

let redirectCount: u32 = 0;

export function redirectsClear(): void {
  redirectCount = 0;
  bindUnreserveAll();
}

export function redirectAdd(proto: u32, portLo: u32, portHi: u32, destAddr: u32, destPortLo: u32): i32 {
  if (redirectCount >= MAX_REDIRECTS || portLo > portHi || portHi > 65535) return -1;
  if (destPortLo + (portHi - portLo) > 65535) return -1;
  const r = redirects + <usize>redirectCount * REDIRECT_SIZE;
  store<u16>(r, <u16>proto, 0); store<u16>(r, <u16>portLo, 2); store<u16>(r, <u16>portHi, 4);
  store<u16>(r, <u16>destPortLo, 6); store<u32>(r, destAddr, 8); store<u8>(r, 0, 12);
  store<u8>(r, <u8>REFLECT_INTERNAL, 13); // fw4's default: reflection on, reflection_src internal
  anySource(r);
  for (let port = portLo; port <= portHi; port++) {
    bindReserve(protoIndex(proto), port, destAddr, destPortLo + (port - portLo));
  }
  redirectCount++;
  return <i32>(redirectCount - 1);
}

export function protoForwardAdd(proto: u32, destAddr: u32): i32 {
  if (redirectCount >= MAX_REDIRECTS) return -1;
  const r = redirects + <usize>redirectCount * REDIRECT_SIZE;
  store<u16>(r, <u16>proto, 0); store<u16>(r, 0, 2); store<u16>(r, 0, 4);
  store<u16>(r, 0, 6); store<u32>(r, destAddr, 8); store<u8>(r, 1, 12);
  store<u8>(r, 0, 13); // protocol forwards are not reflected
  anySource(r);
  redirectCount++;
  return <i32>(redirectCount - 1);
}

@inline function anySource(r: usize): void {
  store<u32>(r, 0, 16); store<u32>(r, 0, 20); store<u16>(r, 0, 24); store<u16>(r, 0xffff, 26); store<u32>(r, 0, 28);
}

/**
 * Limits port forward `i` (as addRedirect returned it) to sources in
 * net/mask, source ports lo..hi and packets to address dip (0: any), all in
 * the byte order of the packet fields. -1 for a bad index or range.
 */
export function redirectSetSource(i: u32, net: u32, mask: u32, portLo: u32, portHi: u32, dip: u32): i32 {
  if (i >= redirectCount || portLo > portHi || portHi > 65535) return -1;
  const r = redirects + <usize>i * REDIRECT_SIZE;
  if (load<u8>(r, 12) != 0) return -1; // protocol forwards take no source limit
  store<u32>(r, net & mask, 16); store<u32>(r, mask, 20);
  store<u16>(r, <u16>portLo, 24); store<u16>(r, <u16>portHi, 26); store<u32>(r, dip, 28);
  return 0;
}

/** Sets port forward `i`'s NAT loopback (REFLECT_*). -1 for a bad index or mode, or a protocol forward. */
export function redirectSetReflection(i: u32, mode: u32): i32 {
  if (i >= redirectCount || mode > REFLECT_EXTERNAL) return -1;
  const r = redirects + <usize>i * REDIRECT_SIZE;
  if (load<u8>(r, 12) != 0) return -1;
  store<u8>(r, <u8>mode, 13);
  return 0;
}

/** The NAT loopback mode (REFLECT_*) of a redirect record redirectFind returned. */
@inline export function redirectReflection(r: usize): u32 { return <u32>load<u8>(r, 13); }

/** The LAN host of the protocol forward for `proto`, or 0 when there is none. */
export function protoForward(proto: u32): u32 {
  for (let i: u32 = 0; i < redirectCount; i++) {
    const r = redirects + <usize>i * REDIRECT_SIZE;
    if (load<u16>(r, 0) != proto || load<u8>(r, 12) == 0) continue;
    return load<u32>(r, 8);
  }
  return 0;
}

/** The redirect record covering (proto, dport), or 0; read it with redirectDest/redirectDestPort. */
export function redirectFind(proto: u32, dport: u32): usize {
  for (let i: u32 = 0; i < redirectCount; i++) {
    const r = redirects + <usize>i * REDIRECT_SIZE;
    if (load<u16>(r, 0) != proto || load<u8>(r, 12) != 0) continue;
    const lo = <u32>load<u16>(r, 2);
    if (dport < lo || dport > <u32>load<u16>(r, 4)) continue;
    return r;
  }
  return 0;
}
/**
 * The redirect covering (proto, dport) that a new packet from remA:remP to
 * dstA may open, or 0: a redirect whose fw4 src_ip / src_port / src_dip
 * does not match is not applied (the packet is then what it would be
 * without it: unsolicited, unless a rule accepts it).
 */
export function redirectFindFrom(proto: u32, dport: u32, remA: u32, remP: u32, dstA: u32): usize {
  const r = redirectFind(proto, dport);
  if (r == 0) return 0;
  if ((remA & load<u32>(r, 20)) != load<u32>(r, 16)) return 0;
  if (remP < <u32>load<u16>(r, 24) || remP > <u32>load<u16>(r, 26)) return 0;
  const dip = load<u32>(r, 28);
  if (dip != 0 && dip != dstA) return 0;
  return r;
}

@inline export function redirectDest(r: usize): u32 { return load<u32>(r, 8); }
/** The LAN port `dport` maps to: ranges map one to one from destPortLo. */
@inline export function redirectDestPort(r: usize, dport: u32): u32 {
  return <u32>load<u16>(r, 6) + (dport - <u32>load<u16>(r, 2));
}
