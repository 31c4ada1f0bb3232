// NAPT for TCP, UDP and ICMP echo (the identifier is the "port"), the core
// of masquerading: outbound packets open flows and leave from the WAN
// address; inbound packets must match a flow, a redirect or a rule.

import { PROTO_ICMP, PROTO_TCP } from "../abi/codes";
import {
  FL_CHARGED, FL_FIN_IN, FL_FIN_OUT, FL_HAIRPIN, FL_NATT, FL_REDIRECT, FL_REPLIED, FL_WS_NONE, FL_WS_SHIFT, F_ALIAS_PORT, F_END_IN,
  F_END_OUT, F_FLAGS, F_LAN_ADDR, F_LAN_PORT, F_PKTS_IN, F_PKTS_OUT, F_STATE, F_TCP_IN, F_TCP_OUT,
} from "../abi/records";
import { IP_DST, IP_SRC, ipDst, ipSrc } from "../wire/ipv4";
import {
  ICMP_ID, L4_DST_PORT, L4_SRC_PORT, TCP_ACK_FLAG, TCP_FIN, TCP_HEADER, TCP_OFF, TCP_RST, TCP_SEQ, TCP_SYN, port, tcpFlags,
} from "../wire/l4";
import { NO_PORT, bindAcquire, bindRef, bindRelease } from "./binding";
import { dnatVerdict, keysToPort, lanForwardVerdict, routerVerdict, ruleKeys } from "./filter";
import { redirectDest, redirectDestPort, redirectFindFrom } from "./forward";
import { Drop } from "../abi/reasons";
import { rewriteAddrPort } from "./rewrite";
import { LIM_FLOWS, srcCharge, srcRelease } from "./limits";
import { icmpDs, nattDs, tcpClosedDs, tcpEstablishedDs, tcpTransitoryDs, udpDs, unrepliedDs, wanAddr } from "./state";
import { flowFindIn, flowFindOut, flowInsert, flowTouch, flowUnrepliedWan, rec } from "./table";
import { ACCT_IN, ACCT_OUT, flowAcctAdd } from "./acct";
import { fastPathOffer, fastPathOn, isOffloaded } from "./fastpath";

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

export function lifetimeOf(proto: u32, state: u32, flags: u32): u32 {
  let t: u32;
  if (flags & FL_NATT) t = nattDs;
  else if (proto == PROTO_TCP) t = state == TCP_ESTABLISHED ? tcpEstablishedDs : state == TCP_CLOSE ? tcpClosedDs : tcpTransitoryDs;
  else t = proto == PROTO_ICMP ? icmpDs : udpDs;
  // Opened from the WAN and never answered by the LAN host: short-lived
  // (conntrack's unreplied timeouts), so spoofed packets cannot pin entries.
  if (flowUnrepliedWan(flags) && t > unrepliedDs) t = unrepliedDs;
  return t;
}

// ---- TCP window tracking (conntrack's tcp_in_window, simplified) -----------
// Per direction the engine keeps the highest sequence number + length sent
// and the largest window advertised (as a power of two, scaled by the
// window scale of RFC 7323 when both SYNs carried one). A RST or FIN whose
// sequence number lies outside the receiver's window is dropped
// (tcp_out_of_window): a blind attacker cannot close or shorten a mapping.
// Other segments outside the window pass but change nothing (like
// nf_conntrack_tcp_be_liberal), so a confused view never stalls a
// connection. A side whose end is not known yet (first packet, pick-up
// after a restart) is accepted as it comes.
export const TRACK_DROP: u32 = 0xffffffff;
export const END_KNOWN: u32 = 0x20;
const WIN_LOG_MASK: u32 = 0x1f;
const WIN_LOG_FLOOR: u32 = 16;   // never judge against less than 64 KiB (the unscaled maximum)
const WS_NONE: u32 = 15;
const WS_UNKNOWN: u32 = 14;      // picked up mid-stream: assume the largest scale

/** The window scale option (kind 3) of a SYN, or WS_NONE. Options were bounds-checked by l4Check. */
function synWindowScale(l4: usize): u32 {
  const end = l4 + ((<usize>load<u8>(l4, TCP_OFF) >>> 4) << 2);
  let o = l4 + TCP_HEADER;
  while (o < end) {
    const kind = <u32>load<u8>(o);
    if (kind == 0) break;
    if (kind == 1) { o++; continue; }
    if (o + 1 >= end) break;
    const len = <u32>load<u8>(o, 1);
    if (len < 2 || o + len > end) break;
    if (kind == 3 && len == 3) { const ws = <u32>load<u8>(o, 2); return ws > 14 ? 14 : ws; }
    o += len;
  }
  return WS_NONE;
}

/** Window-scale nibbles of a new TCP flow: none yet when it opens with a SYN, unknown when picked up mid-stream. */
@inline export function tcpInitFlags(flags: u32): u32 {
  return (flags & TCP_SYN) ? FL_WS_NONE : (WS_UNKNOWN | (WS_UNKNOWN << 4)) << FL_WS_SHIFT;
}

@inline function wsOf(ff: u32, lanSide: bool): u32 { return (ff >>> (FL_WS_SHIFT + (lanSide ? 0 : 4))) & 0xf; }

/** conntrack-like TCP tracking; `fromLan` is the direction of this packet. Returns the state or TRACK_DROP. */
export function tcpTrack(p: usize, l4: usize, r: usize, fromLan: bool): u32 {
  const flags = tcpFlags(l4);
  let state = <u32>load<u8>(r, F_STATE);
  let ff = <u32>load<u16>(r, F_FLAGS);
  const initiatorLan = (ff & FL_REDIRECT) == 0;
  const fromInitiator = fromLan == initiatorLan;
  // A SYN from the initiator on a closed or closing port pair is a new
  // connection: fresh state, flags and sequence spaces.
  if ((flags & (TCP_SYN | TCP_ACK_FLAG | TCP_RST)) == TCP_SYN && fromInitiator &&
      (state == TCP_TIME_WAIT || state == TCP_CLOSE)) {
    state = TCP_SYN_SENT;
    ff = (ff & ~(FL_FIN_OUT | FL_FIN_IN)) | FL_WS_NONE;
    store<u16>(r, 0, F_TCP_OUT);
  }
  const sInfoOff: usize = fromLan ? F_TCP_OUT : F_TCP_IN;
  const rInfoOff: usize = fromLan ? F_TCP_IN : F_TCP_OUT;
  const sEndOff: usize = fromLan ? F_END_OUT : F_END_IN;
  let sInfo = <u32>load<u8>(r + sInfoOff);
  // A hairpin flow's server side keeps no end: that word holds the
  // forwarded port (F_HAIRPIN_PORT), so the side never becomes known.
  const endless = !fromLan && (ff & FL_HAIRPIN) != 0;
  // Offloaded (nat/fastpath.ts): the kernel moved what came between, so
  // the ends here are stale; it judged this FIN or RST against its own
  // ends, and the engine takes the kernel's when the flow comes back.
  const offloaded = isOffloaded(r);
  const seq = bswap<u32>(load<u32>(l4, TCP_SEQ));
  if ((sInfo & END_KNOWN) != 0 && !offloaded) {
    let wlog = <u32>load<u8>(r + rInfoOff) & WIN_LOG_MASK;
    if (wlog < WIN_LOG_FLOOR) wlog = WIN_LOG_FLOOR;
    const w = <i64>1 << wlog;
    const d = <i64><i32>(seq - load<u32>(r + sEndOff));
    if (d < -w || d > w) {
      if (flags & (TCP_RST | TCP_FIN)) return TRACK_DROP;
      return <u32>load<u8>(r, F_STATE); // liberal: passes, moves nothing
    }
  }
  // In window (or the first we hear of this side): learn from it.
  if (flags & TCP_SYN) {
    const sh: u32 = FL_WS_SHIFT + (fromLan ? 0 : 4);
    ff = (ff & ~(<u32>0xf << sh)) | (synWindowScale(l4) << sh);
  }
  const ihl = (<u32>load<u8>(p) & 0xf) << 2;
  const doff = (<u32>load<u8>(l4, TCP_OFF) >>> 4) << 2;
  const total = <u32>bswap<u16>(load<u16>(p, 2));
  const plen = total > ihl + doff ? total - ihl - doff : 0;
  const end = seq + plen + ((flags & TCP_SYN) ? 1 : 0) + ((flags & TCP_FIN) ? 1 : 0);
  if (!endless && ((sInfo & END_KNOWN) == 0 || <i32>(end - load<u32>(r + sEndOff)) > 0)) store<u32>(r + sEndOff, end);
  // Window: SYN windows are never scaled; later ones by the sender's scale
  // when both sides announced one (RFC 7323 §2.2).
  const wsS = wsOf(ff, fromLan);
  const wsR = wsOf(ff, !fromLan);
  const shift = (flags & TCP_SYN) || wsS == WS_NONE || wsR == WS_NONE ? 0 : wsS;
  const win = <u32>bswap<u16>(load<u16>(l4, 14)) << shift;
  const wl: u32 = win == 0 ? 0 : 32 - <u32>clz<u32>(win);
  if (wl > (sInfo & WIN_LOG_MASK)) sInfo = (sInfo & ~WIN_LOG_MASK) | wl;
  store<u8>(r + sInfoOff, <u8>(endless ? sInfo : sInfo | END_KNOWN));

  if (flags & TCP_RST) {
    state = TCP_CLOSE;
  } else if (flags & TCP_SYN) {
    if (!fromInitiator && (flags & TCP_ACK_FLAG) && state == TCP_SYN_SENT) state = TCP_SYN_RECV;
  } else if (flags & TCP_FIN) {
    ff |= fromLan ? FL_FIN_OUT : FL_FIN_IN;
    state = (ff & (FL_FIN_OUT | FL_FIN_IN)) == (FL_FIN_OUT | FL_FIN_IN) ? TCP_TIME_WAIT : TCP_FIN_WAIT;
  } else if ((flags & TCP_ACK_FLAG) && state == TCP_SYN_RECV && fromInitiator) {
    state = TCP_ESTABLISHED;
  }
  // The LAN host answering what the WAN opened (a RST is a refusal, not an answer).
  if (fromLan && !initiatorLan && (flags & TCP_RST) == 0) ff |= FL_REPLIED;
  store<u8>(r, <u8>state, F_STATE);
  store<u16>(r, <u16>ff, F_FLAGS);
  return state;
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
    const verdict = lanForwardVerdict(proto, lanA, remA, ruleKeys(proto, l4));
    if (verdict != Drop.NONE) return verdict;
    // One LAN host may hold only its share of the table (src_max_flows).
    const charged = lanA != wanAddr;
    if (charged && !srcCharge(lanA, LIM_FLOWS)) return Drop.SRC_FLOW_LIMIT;
    const alias = bindAcquire(pi, lanA, lanP);
    if (alias == NO_PORT) { if (charged) srcRelease(lanA, LIM_FLOWS); return Drop.POOL_EXHAUSTED; }
    // A SYN opens SYN_SENT; any other segment is picked up mid-stream as
    // established (loose tracking, so connections survive a restart).
    const state = proto == PROTO_TCP ? ((flags & TCP_SYN) ? TCP_SYN_SENT : TCP_ESTABLISHED) : UDP_UNREPLIED;
    const fl = (!isIcmp && (lanP == NATT_PORT || remP == NATT_PORT) ? FL_NATT : 0) | (charged ? FL_CHARGED : 0) |
      (proto == PROTO_TCP ? tcpInitFlags(flags) : 0);
    e = flowInsert(proto, lanA, lanP, remA, remP, alias, state, fl, lifetimeOf(proto, state, fl));
    if (e == 0) { bindRelease(pi, alias); if (charged) srcRelease(lanA, LIM_FLOWS); return Drop.TABLE_FULL; }
    r = rec(e - 1);
  } else {
    r = rec(e - 1);
  }
  let state = <u32>load<u8>(r, F_STATE);
  if (proto == PROTO_TCP) {
    state = tcpTrack(p, l4, r, true);
    if (state == TRACK_DROP) return Drop.TCP_OUT_OF_WINDOW;
  } else if ((load<u16>(r, F_FLAGS) & FL_REDIRECT) != 0) {
    // The LAN host answers what the WAN side opened.
    state = UDP_REPLIED;
    store<u8>(r, <u8>state, F_STATE);
    store<u16>(r, load<u16>(r, F_FLAGS) | <u16>FL_REPLIED, F_FLAGS);
  }
  flowTouch(r, lifetimeOf(proto, state, load<u16>(r, F_FLAGS)));
  store<u32>(r, load<u32>(r, F_PKTS_OUT) + 1, F_PKTS_OUT);
  flowAcctAdd(e - 1, ACCT_OUT, p);
  if (fastPathOn) fastPathOffer(r, proto, state);
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
      const verdict = dnatVerdict(proto, remA, fwdAddr, keysToPort(ruleKeys(proto, l4), fwdPort));
      if (verdict != Drop.NONE) return verdict;
      const state = proto == PROTO_TCP ? ((flags & TCP_SYN) ? TCP_SYN_SENT : TCP_ESTABLISHED) : UDP_UNREPLIED;
      bindRef(pi, aliasP);
      const fl = FL_REDIRECT | (fwdPort == NATT_PORT || remP == NATT_PORT ? FL_NATT : 0) |
        (proto == PROTO_TCP ? tcpInitFlags(flags) : 0);
      e = flowInsert(proto, fwdAddr, fwdPort, remA, remP, aliasP, state, fl, lifetimeOf(proto, state, fl));
      if (e == 0) { bindRelease(pi, aliasP); return Drop.TABLE_FULL; }
      r = rec(e - 1);
    } else {
      // Not a reply and not forwarded: only a rule lets it reach the router.
      return routerVerdict(proto, remA, ipDst(p), ruleKeys(proto, l4));
    }
  } else {
    r = rec(e - 1);
  }
  let state = <u32>load<u8>(r, F_STATE);
  const redirected = (load<u16>(r, F_FLAGS) & <u16>FL_REDIRECT) != 0;
  if (proto == PROTO_TCP) {
    state = tcpTrack(p, l4, r, false);
    if (state == TRACK_DROP) return Drop.TCP_OUT_OF_WINDOW;
  } else if (!redirected) {
    state = UDP_REPLIED;
    store<u8>(r, <u8>state, F_STATE);
  }
  // A reply from the WAN; for a forwarded flow the WAN side is the opener.
  if (!redirected) store<u16>(r, load<u16>(r, F_FLAGS) | <u16>FL_REPLIED, F_FLAGS);
  flowTouch(r, lifetimeOf(proto, state, load<u16>(r, F_FLAGS)));
  store<u32>(r, load<u32>(r, F_PKTS_IN) + 1, F_PKTS_IN);
  flowAcctAdd(e - 1, ACCT_IN, p);
  if (fastPathOn) fastPathOffer(r, proto, state);
  const lanA = load<u32>(r, F_LAN_ADDR);
  rewriteAddrPort(p, IP_DST, lanA, l4, proto, isIcmp ? ICMP_ID : L4_DST_PORT, load<u16>(r, F_LAN_PORT));
  return Drop.NONE;
}
