// ICMP: echo is NAPT on the identifier (masq.ts); errors (RFC 792, RFC 5508
// REQ-3/4) are translated both ways: the outer address, the embedded IP
// header and its checksum, the embedded port or identifier and the embedded
// L4 checksum when it was quoted, and the ICMP checksum over all of it.
//
// Embedded datagram of an error (RFC 792: IP header + at least 8 bytes):
//   icmp + 0  type, code, checksum, unused (8 bytes)
//   icmp + 8  original IP header (ihl bytes), then its first L4 bytes

import { DEST_FORWARD, PROTO_ESP, PROTO_GRE, PROTO_ICMP, PROTO_TCP, PROTO_UDP, TARGET_ACCEPT, ZONE_WAN } from "../abi/codes";
import { BIND_ICMP, F_ALIAS_PORT, F_LAN_ADDR, F_LAN_PORT, F_PKTS_IN, F_PKTS_OUT } from "../abi/records";
import { adjust16, adjust32 } from "../wire/checksum";
import { CTX_EMB_AVAIL, CTX_EMB_IP, CTX_EMB_L4, CTX_EMB_PROTO } from "../wire/context";
import { IP_CSUM, IP_DST, IP_MIN_HEADER, IP_PROTO, IP_SRC, ipDst, ipSrc } from "../wire/ipv4";
import { espLanOut } from "../vpn/esp";
import { IKE_PORT, ikeLanFor } from "../vpn/isakmp";
import { GRE_CALL_ID } from "../vpn/gre";
import { callAliasOf, callFindOut, callLanAddr } from "../vpn/pptp";
import { routerVerdict, ruleKeys, ruleMatch } from "./filter";
import {
  ICMP_CSUM, ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_HEADER, ICMP_ID, ICMP_PARAM_PROBLEM,
  ICMP_SOURCE_QUENCH, ICMP_TIME_EXCEEDED, L4_DST_PORT, L4_SRC_PORT, TCP_CSUM, UDP_CSUM, UDP_HEADER, port,
} from "../wire/l4";
import { natIn, natOut } from "./masq";
import { Drop } from "../abi/reasons";
import { rewriteAddr } from "./rewrite";
import { isLanAddr, wanAddr } from "./state";
import { flowFindIn, flowFindOut, rec } from "./table";
import { ACCT_IN, ACCT_OUT, flowAcctAdd } from "./acct";

@inline function isError(type: u32): bool {
  return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAM_PROBLEM || type == ICMP_SOURCE_QUENCH;
}

/** Checks the embedded datagram of an error and records it in `ctx` (CTX_EMB_*). */
function embeddedCheck(icmp: usize, icmpLen: u32, ctx: usize): u32 {
  if (icmpLen < ICMP_HEADER + IP_MIN_HEADER + 8) return Drop.ICMP_BAD_EMBEDDED;
  const e = icmp + ICMP_HEADER;
  const vihl = <u32>load<u8>(e);
  const ihl = (vihl & 0xf) << 2;
  if ((vihl >>> 4) != 4 || ihl < IP_MIN_HEADER || ICMP_HEADER + ihl + 8 > icmpLen) return Drop.ICMP_BAD_EMBEDDED;
  const embL4 = e + ihl;
  const embProto = <u32>load<u8>(e, IP_PROTO);
  store<u32>(ctx, <u32>e, CTX_EMB_IP);
  store<u32>(ctx, <u32>embL4, CTX_EMB_L4);
  store<u32>(ctx, embProto, CTX_EMB_PROTO);
  store<u32>(ctx, icmpLen - ICMP_HEADER - ihl, CTX_EMB_AVAIL);
  if (embProto == PROTO_ICMP && <u32>load<u8>(embL4) != ICMP_ECHO_REQUEST && <u32>load<u8>(embL4) != ICMP_ECHO_REPLY) {
    return Drop.ICMP_BAD_EMBEDDED; // errors about errors are never sent (RFC 1122 3.2.2)
  }
  if (embProto != PROTO_ICMP && embProto != PROTO_TCP && embProto != PROTO_UDP &&
      embProto != PROTO_ESP && embProto != PROTO_GRE) return Drop.ICMP_UNSUPPORTED;
  return Drop.NONE;
}

/**
 * Rewrites the embedded address at `field` and the embedded port at
 * `portOff` (or the echo identifier), keeping the embedded IP checksum, the
 * embedded L4 checksum (when quoted) and the outer ICMP checksum right.
 */
const NO_PORT_FIELD: u32 = 0xffffffff; // ESP, GRE: no port, no quoted checksum to keep

function rewriteEmbedded(icmp: usize, ctx: usize, field: u32, newAddr: u32, portOff: u32, newPortHost: u32): void {
  const embIp = <usize>load<u32>(ctx, CTX_EMB_IP);
  const embL4 = <usize>load<u32>(ctx, CTX_EMB_L4);
  const embProto = load<u32>(ctx, CTX_EMB_PROTO);
  let icmpSum = <u32>load<u16>(icmp, ICMP_CSUM);
  const oldAddr = load<u32>(embIp + field);
  store<u32>(embIp + field, newAddr);
  icmpSum = adjust32(icmpSum, oldAddr, newAddr);
  const oldIpSum = <u32>load<u16>(embIp, IP_CSUM);
  const newIpSum = adjust32(oldIpSum, oldAddr, newAddr);
  store<u16>(embIp, <u16>newIpSum, IP_CSUM);
  icmpSum = adjust16(icmpSum, oldIpSum, newIpSum);
  if (portOff == NO_PORT_FIELD) { store<u16>(icmp, <u16>icmpSum, ICMP_CSUM); return; }

  const oldPort = <u32>load<u16>(embL4 + portOff);
  const newPort = <u32>bswap<u16>(<u16>newPortHost);
  store<u16>(embL4 + portOff, <u16>newPort);
  icmpSum = adjust16(icmpSum, oldPort, newPort);

  // The quoted L4 checksum, when the quote reaches it.
  const co = embProto == PROTO_TCP ? TCP_CSUM : embProto == PROTO_UDP ? UDP_CSUM : ICMP_CSUM;
  if (co + 2 <= load<u32>(ctx, CTX_EMB_AVAIL)) {
    const oldC = <u32>load<u16>(embL4 + co);
    if (!(embProto == PROTO_UDP && oldC == 0)) {
      let newC = adjust16(oldC, oldPort, newPort);
      if (embProto != PROTO_ICMP) newC = adjust32(newC, oldAddr, newAddr);
      if (embProto == PROTO_UDP && newC == 0) newC = 0xffff;
      store<u16>(embL4 + co, <u16>newC);
      icmpSum = adjust16(icmpSum, oldC, newC);
    }
  }
  store<u16>(icmp, <u16>icmpSum, ICMP_CSUM);
}

/** Does a (malformed) error's quote still show a LAN address as its destination? */
function quotesLan(icmp: usize, icmpLen: u32): bool {
  return icmpLen >= ICMP_HEADER + IP_MIN_HEADER && isLanAddr(load<u32>(icmp + ICMP_HEADER, IP_DST));
}

/** ICMP from the LAN (or the router) toward the WAN. */
export function icmpOut(p: usize, icmp: usize, icmpLen: u32, ctx: usize): u32 {
  const type = <u32>load<u8>(icmp);
  if (type == ICMP_ECHO_REQUEST) return natOut(p, icmp, PROTO_ICMP, BIND_ICMP);
  const own = ipSrc(p) == wanAddr;
  if (!isError(type)) return own ? Drop.NONE : Drop.ICMP_UNSUPPORTED; // the router's echo replies and the like
  const r0 = embeddedCheck(icmp, icmpLen, ctx);
  if (own) {
    // The router's own error. About its own traffic it leaves as it is. About
    // a translated inbound packet (the kernel forwarding it onto the LAN
    // answers from the `src <WAN>` route: fragmentation needed, host
    // unreachable) it quotes the LAN host's address and port: it must quote
    // what the server sent, the WAN address and the alias, or not go out.
    if (r0 != Drop.NONE) return quotesLan(icmp, icmpLen) ? r0 : Drop.NONE;
    if (!isLanAddr(load<u32>(<usize>load<u32>(ctx, CTX_EMB_IP), IP_DST))) return Drop.NONE;
  } else if (r0 != Drop.NONE) {
    return r0;
  }
  const embIp = <usize>load<u32>(ctx, CTX_EMB_IP);
  const embL4 = <usize>load<u32>(ctx, CTX_EMB_L4);
  const embProto = load<u32>(ctx, CTX_EMB_PROTO);
  const embAvail = load<u32>(ctx, CTX_EMB_AVAIL);
  if (embProto == PROTO_ESP || embProto == PROTO_GRE) {
    if (!own) return Drop.ICMP_UNSUPPORTED;
    if (embProto == PROTO_GRE) {
      // Inbound GRE had its key's Call ID turned from the alias into the LAN
      // host's own: turn it back (GRE carries no checksum here; the ICMP one is adjusted).
      if (embAvail < GRE_CALL_ID + 2) return Drop.ICMP_NO_FLOW;
      const alias = callAliasOf(load<u32>(embIp, IP_DST), load<u32>(embIp, IP_SRC), port(embL4, GRE_CALL_ID));
      if (alias == 0) return Drop.ICMP_NO_FLOW;
      const oldW = <u32>load<u16>(embL4, GRE_CALL_ID);
      const newW = <u32>bswap<u16>(<u16>alias);
      store<u16>(embL4, <u16>newW, GRE_CALL_ID);
      store<u16>(icmp, <u16>adjust16(load<u16>(icmp, ICMP_CSUM), oldW, newW), ICMP_CSUM);
    }
    rewriteEmbedded(icmp, ctx, IP_DST, wanAddr, NO_PORT_FIELD, 0); // the SPI was never translated
    return Drop.NONE;
  }
  // The quoted packet went WAN → LAN: its destination is the LAN endpoint.
  const remA = load<u32>(embIp, IP_SRC);
  const lanA = load<u32>(embIp, IP_DST);
  const isEcho = embProto == PROTO_ICMP;
  const lanP = isEcho ? port(embL4, ICMP_ID) : port(embL4, L4_DST_PORT);
  const remP = isEcho ? 0 : port(embL4, L4_SRC_PORT);
  const e = flowFindOut(embProto, lanA, lanP, remA, remP);
  if (e == 0) {
    // IKE is not in the flow table: its public port is 500 as well.
    if (own && embProto == PROTO_UDP && lanP == IKE_PORT && embAvail >= UDP_HEADER + 8 &&
        ikeLanFor(remA, load<u64>(embL4 + UDP_HEADER)) == lanA) {
      rewriteEmbedded(icmp, ctx, IP_DST, wanAddr, L4_DST_PORT, IKE_PORT);
      return Drop.NONE;
    }
    // Routed, not translated (a rule forwards WAN → that LAN address): the WAN side knows the address.
    if (own && ruleMatch(ZONE_WAN, DEST_FORWARD, embProto, remA, lanA, isEcho ? ruleKeys(PROTO_ICMP, embL4) : (remP << 16) | lanP) == TARGET_ACCEPT) return Drop.NONE;
    return Drop.ICMP_NO_FLOW;
  }
  const r = rec(e - 1);
  store<u32>(r, load<u32>(r, F_PKTS_OUT) + 1, F_PKTS_OUT);
  flowAcctAdd(e - 1, ACCT_OUT, p);
  rewriteEmbedded(icmp, ctx, IP_DST, wanAddr, isEcho ? ICMP_ID : L4_DST_PORT, load<u16>(r, F_ALIAS_PORT));
  if (!own) rewriteAddr(p, IP_SRC, wanAddr);
  return Drop.NONE;
}

/** ICMP from the WAN to the WAN address. */
export function icmpIn(p: usize, icmp: usize, icmpLen: u32, ctx: usize): u32 {
  const type = <u32>load<u8>(icmp);
  if (type == ICMP_ECHO_REPLY) return natIn(p, icmp, PROTO_ICMP, BIND_ICMP);
  if (!isError(type)) {
    // Echo requests and the rest are for the router itself: rules decide.
    return routerVerdict(PROTO_ICMP, ipSrc(p), ipDst(p), ruleKeys(PROTO_ICMP, icmp));
  }
  const r0 = embeddedCheck(icmp, icmpLen, ctx);
  if (r0 != Drop.NONE) return r0;
  const embIp = <usize>load<u32>(ctx, CTX_EMB_IP);
  const embL4 = <usize>load<u32>(ctx, CTX_EMB_L4);
  const embProto = load<u32>(ctx, CTX_EMB_PROTO);
  // The quoted packet is one we sent: its source is the WAN address.
  if (load<u32>(embIp, IP_SRC) != wanAddr) return Drop.ICMP_NO_FLOW;
  const remA = load<u32>(embIp, IP_DST);
  // Errors about VPN traffic (fragmentation needed for ESP above all: path
  // MTU discovery) go to the host whose SA, call or IKE exchange it quotes.
  let vpnHost: u32 = 0;
  let vpnPortOff = NO_PORT_FIELD;
  if (embProto == PROTO_ESP) {
    vpnHost = espLanOut(remA, load<u32>(embL4));
  } else if (embProto == PROTO_GRE) {
    const v = callFindOut(remA, <u32>bswap<u16>(load<u16>(embL4, GRE_CALL_ID)));
    vpnHost = v != 0 ? callLanAddr(v) : 0;
  } else if (embProto == PROTO_UDP && port(embL4, L4_SRC_PORT) == IKE_PORT) {
    if (load<u32>(ctx, CTX_EMB_AVAIL) < UDP_HEADER + 8) return Drop.ICMP_NO_FLOW; // the cookie was not quoted
    vpnHost = ikeLanFor(remA, load<u64>(embL4 + UDP_HEADER));
    vpnPortOff = L4_SRC_PORT;
  }
  if (embProto == PROTO_ESP || embProto == PROTO_GRE || vpnPortOff != NO_PORT_FIELD) {
    if (vpnHost == 0) return Drop.ICMP_NO_FLOW;
    if (vpnHost == wanAddr) return Drop.NONE; // about the router's own IPsec/PPTP
    rewriteEmbedded(icmp, ctx, IP_SRC, vpnHost, vpnPortOff, IKE_PORT);
    rewriteAddr(p, IP_DST, vpnHost);
    return Drop.NONE;
  }
  const isEcho = embProto == PROTO_ICMP;
  const aliasP = isEcho ? port(embL4, ICMP_ID) : port(embL4, L4_SRC_PORT);
  const remP = isEcho ? 0 : port(embL4, L4_DST_PORT);
  const e = flowFindIn(embProto, aliasP, remA, remP);
  if (e == 0) return Drop.ICMP_NO_FLOW;
  const r = rec(e - 1);
  store<u32>(r, load<u32>(r, F_PKTS_IN) + 1, F_PKTS_IN);
  flowAcctAdd(e - 1, ACCT_IN, p);
  const lanA = load<u32>(r, F_LAN_ADDR);
  rewriteEmbedded(icmp, ctx, IP_SRC, lanA, isEcho ? ICMP_ID : L4_SRC_PORT, load<u16>(r, F_LAN_PORT));
  rewriteAddr(p, IP_DST, lanA);
  return Drop.NONE;
}
