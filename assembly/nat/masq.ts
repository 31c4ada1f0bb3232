// NAPT for TCP, UDP and ICMP echo (the identifier is the "port"), the core
// of masquerading: outbound packets open flows and leave from the WAN
// address; inbound packets must match a flow, a redirect or a rule.

import { DEST_FORWARD, PROTO_ICMP, PROTO_TCP, TARGET_DROP, TARGET_REJECT, ZONE_LAN } from "../abi/codes";
import {
  FL_FIN_IN, FL_FIN_OUT, FL_NATT, FL_REDIRECT, FL_REPLIED, F_ALIAS_PORT, F_FLAGS, F_LAN_ADDR, F_LAN_PORT,
  F_PKTS_IN, F_PKTS_OUT, F_STATE,
} from "../abi/records";
import { IP_DST, IP_SRC, ipDst, ipSrc } from "../wire/ipv4";
import { ICMP_ID, L4_DST_PORT, L4_SRC_PORT, TCP_ACK_FLAG, TCP_FIN, TCP_RST, TCP_SYN, port, tcpFlags } from "../wire/l4";
import { NO_PORT, bindAcquire, bindRef, bindRelease } from "./binding";
import { routerVerdict, ruleMatch } from "./filter";
import { redirectDest, redirectDestPort, redirectFindFrom } from "./forward";
import { Drop } from "../abi/reasons";
import { rewriteAddrPort } from "./rewrite";
import { icmpDs, nattDs, tcpClosedDs, tcpEstablishedDs, tcpTransitoryDs, udpDs, wanAddr } from "./state";
import { flowFindIn, flowFindOut, flowInsert, flowTouch, rec } from "./table";

// TCP states, named as conntrack names them.
export const TCP_SYN_SENT: u32 = 1;
export const TCP_SYN_RECV: u32 = 2;
export const TCP_ESTABLISHED: u32 = 3;
export const TCP_FIN_WAIT: u32 = 4;
export const TCP_TIME_WAIT: u32 = 5;
export const TCP_CLOSE: u32 = 6;
export const UDP_UNREPLIED: u32 = 0;
export const UDP_REPLIED: u32 = 1;
/** NAT-T (RFC 3948): plain UDP NAPT, but idle for natt_timeout, far above the 20 s keepalive. */
export const NATT_PORT: u32 = 4500;

function lifetimeOf(proto: u32, state: u32, flags: u32): u32 {
  if (flags & FL_NATT) return nattDs;
  if (proto == PROTO_TCP) {
    if (state == TCP_ESTABLISHED) return tcpEstablishedDs;
    if (state == TCP_CLOSE) return tcpClosedDs;
    return tcpTransitoryDs;
  }
  return proto == PROTO_ICMP ? icmpDs : udpDs;
}

/** conntrack-like TCP tracking; `fromLan` is the direction of this packet. */
function tcpTrack(r: usize, flags: u32, fromLan: bool): u32 {
  let state = <u32>load<u8>(r, F_STATE);
  let ff = <u32>load<u16>(r, F_FLAGS);
  const initiatorLan = (ff & FL_REDIRECT) == 0;
  const fromInitiator = fromLan == initiatorLan;
  if (flags & TCP_RST) {
    state = TCP_CLOSE;
  } else if (flags & TCP_SYN) {
    if (!fromInitiator && (flags & TCP_ACK_FLAG) && state == TCP_SYN_SENT) state = TCP_SYN_RECV;
    else if (fromInitiator && state == TCP_CLOSE) state = TCP_SYN_SENT; // port reuse after close
  } else if (flags & TCP_FIN) {
    ff |= fromLan ? FL_FIN_OUT : FL_FIN_IN;
    state = (ff & (FL_FIN_OUT | FL_FIN_IN)) == (FL_FIN_OUT | FL_FIN_IN) ? TCP_TIME_WAIT : TCP_FIN_WAIT;
  } else if ((flags & TCP_ACK_FLAG) && state == TCP_SYN_RECV && fromInitiator) {
    state = TCP_ESTABLISHED;
  }
  store<u8>(r, <u8>state, F_STATE);
  store<u16>(r, <u16>ff, F_FLAGS);
  return state;
}

@inline function policyReason(target: u32): u32 {
  return target == TARGET_REJECT ? Drop.POLICY_REJECT : Drop.POLICY_DROP;
}

/** Outbound (LAN or router → WAN): find or open the flow, translate the source. */
export function natOut(p: usize, l4: usize, proto: u32, pi: u32): u32 {
  const lanA = ipSrc(p);
  const remA = ipDst(p);
  const isIcmp = proto == PROTO_ICMP;
  const lanP = isIcmp ? port(l4, ICMP_ID) : port(l4, L4_SRC_PORT);
  const remP = isIcmp ? 0 : port(l4, L4_DST_PORT);
  let e = flowFindOut(proto, lanA, lanP, remA, remP);
  let r: usize;
  if (e == 0) {
    if ((!isIcmp && (lanP == 0 || remP == 0))) return Drop.BAD_PORT;
    const flags = proto == PROTO_TCP ? tcpFlags(l4) : 0;
    if (flags & TCP_RST) return Drop.TCP_NO_FLOW;
    if (lanA != wanAddr) {
      const target = ruleMatch(ZONE_LAN, DEST_FORWARD, proto, lanA, remA, isIcmp ? 8 : remP);
      if (target == TARGET_DROP || target == TARGET_REJECT) return policyReason(target);
    }
    const alias = bindAcquire(pi, lanA, lanP);
    if (alias == NO_PORT) return Drop.POOL_EXHAUSTED;
    // A SYN opens SYN_SENT; any other segment is picked up mid-stream as
    // established (loose tracking, so connections survive a restart).
    const state = proto == PROTO_TCP ? ((flags & TCP_SYN) ? TCP_SYN_SENT : TCP_ESTABLISHED) : UDP_UNREPLIED;
    const natt = !isIcmp && (lanP == NATT_PORT || remP == NATT_PORT) ? FL_NATT : 0;
    e = flowInsert(proto, lanA, lanP, remA, remP, alias, state, natt, lifetimeOf(proto, state, natt));
    if (e == 0) { bindRelease(pi, alias); return Drop.TABLE_FULL; }
    r = rec(e - 1);
  } else {
    r = rec(e - 1);
  }
  let state = <u32>load<u8>(r, F_STATE);
  if (proto == PROTO_TCP) state = tcpTrack(r, tcpFlags(l4), true);
  else if ((load<u16>(r, F_FLAGS) & FL_REDIRECT) != 0) state = UDP_REPLIED;
  flowTouch(r, lifetimeOf(proto, state, load<u16>(r, F_FLAGS)));
  store<u32>(r, load<u32>(r, F_PKTS_OUT) + 1, F_PKTS_OUT);
  rewriteAddrPort(p, IP_SRC, wanAddr, l4, proto, isIcmp ? ICMP_ID : L4_SRC_PORT, load<u16>(r, F_ALIAS_PORT));
  return Drop.NONE;
}

/** Inbound (WAN → WAN address): match a flow, a redirect or a rule; translate the destination. */
export function natIn(p: usize, l4: usize, proto: u32, pi: u32): u32 {
  const remA = ipSrc(p);
  const isIcmp = proto == PROTO_ICMP;
  const aliasP = isIcmp ? port(l4, ICMP_ID) : port(l4, L4_DST_PORT);
  const remP = isIcmp ? 0 : port(l4, L4_SRC_PORT);
  let e = flowFindIn(proto, aliasP, remA, remP);
  let r: usize;
  if (e == 0) {
    const flags = proto == PROTO_TCP ? tcpFlags(l4) : 0;
    const fwd: usize = isIcmp ? <usize>0 : redirectFindFrom(proto, aliasP, remA, remP, ipDst(p));
    if (fwd != 0) {
      const fwdAddr = redirectDest(fwd);
      const fwdPort = redirectDestPort(fwd, aliasP);
      if (remP == 0) return Drop.BAD_PORT;
      if (flags & TCP_RST) return Drop.TCP_NO_FLOW;
      const state = proto == PROTO_TCP ? ((flags & TCP_SYN) ? TCP_SYN_SENT : TCP_ESTABLISHED) : UDP_UNREPLIED;
      bindRef(pi, aliasP);
      const fl = FL_REDIRECT | (fwdPort == NATT_PORT || remP == NATT_PORT ? FL_NATT : 0);
      e = flowInsert(proto, fwdAddr, fwdPort, remA, remP, aliasP, state, fl, lifetimeOf(proto, state, fl));
      if (e == 0) { bindRelease(pi, aliasP); return Drop.TABLE_FULL; }
      r = rec(e - 1);
    } else {
      // Not a reply and not forwarded: only a rule lets it reach the router.
      return routerVerdict(proto, remA, ipDst(p), isIcmp ? <u32>load<u8>(l4) : aliasP);
    }
  } else {
    r = rec(e - 1);
  }
  let state = <u32>load<u8>(r, F_STATE);
  if (proto == PROTO_TCP) {
    state = tcpTrack(r, tcpFlags(l4), false);
  } else {
    state = UDP_REPLIED;
    store<u8>(r, <u8>state, F_STATE);
  }
  store<u16>(r, load<u16>(r, F_FLAGS) | <u16>FL_REPLIED, F_FLAGS);
  flowTouch(r, lifetimeOf(proto, state, load<u16>(r, F_FLAGS)));
  store<u32>(r, load<u32>(r, F_PKTS_IN) + 1, F_PKTS_IN);
  const lanA = load<u32>(r, F_LAN_ADDR);
  rewriteAddrPort(p, IP_DST, lanA, l4, proto, isIcmp ? ICMP_ID : L4_DST_PORT, load<u16>(r, F_LAN_PORT));
  return Drop.NONE;
}
