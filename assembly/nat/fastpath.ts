// The flow fast path (option flow_offload): the engine's half.
//
// A TUN costs every packet two copies and a trip through this process; for
// an established flow that is all cost and no decision (the flow was
// judged when it opened). With the option on, the engine hands such a flow
// to a kernel fast path (src/tun/fastpath.cc: an eBPF program on the LAN and
// WAN devices' ingress that rewrites and redirects the flow's packets, like
// OpenWrt's software flow offloading) and keeps the authority:
// - only the engine offers a flow (fastPathOffer, here), and only a LAN
//   host's own masqueraded TCP after its handshake (ESTABLISHED), UDP
//   after a few packets, or ICMP echo once answered, or a port forward's
//   flow once its LAN server has answered (a server behind the router: the
//   same two entries, the forward's port as the alias): no hairpin, no
//   router traffic, nothing whose payload the engine reads or rewrites
//   (PPTP control on 1723, IKE on 500; NAT-T on 4500 is plain NAPT with
//   its own timeout, and goes);
// - the kernel passes every SYN, FIN and RST back up through the TUNs (and
//   drops a FIN or RST outside the sender's window, what tcpTrack would
//   have done), so the engine sees each TCP connection close; a UDP flow or
//   an echo ends when nothing moves for its timeout;
// - the data-path thread's sync (src/datapath/fastpath.ts) asks
//   fastPathCheck every round whether the flow still is what it offered,
//   credits the kernel's packet and byte counts to the flow
//   (fastPathCredit: timeouts, counters and accounting stay right) and
//   withdraws it otherwise.
// While a flow is offloaded its packets bypass the engine, so its sequence
// ends go stale: tcpTrack does not judge the packets that still come up (the
// kernel judged each FIN and RST against its own ends), and a withdrawn
// flow takes the kernel's ends where they are ahead (fastPathCheck).
//
// Candidates wait in a small ring for the thread to take after the batch;
// a full ring leaves the flow unmarked, and its next packet offers it again.
//
// ESP (IP 50, without NAT-T) goes too, by SPI: a LAN host's bound
// association (vpn/esp.ts espOffer says which) is two kernel entries, its
// outbound SPI toward the server from that host and the server's inbound
// SPI toward the WAN address, exactly the keys the engine bound, so a WAN
// packet still cannot choose its host. Its ring entries carry RING_ESP.
// A PPTP call's GRE goes likewise, by Call ID (vpn/pptp.ts callOffer):
// (host, server, the server's Call ID) out, (server, WAN address, the
// call's alias) in, the alias written back to the host's own Call ID.

import { PROTO_ICMP, PROTO_TCP, PROTO_UDP } from "../abi/codes";
import {
  FLOW_ACCT_SIZE, FLOW_SIZE, FL_HAIRPIN, FL_IN_USE, FL_REDIRECT, FL_REPLIED, F_ALIAS_PORT, F_FLAGS, F_LAN_ADDR, F_LAN_PORT, F_PKTS_IN, F_PKTS_OUT, F_PROTO,
  F_REM_ADDR, F_REM_PORT, F_STATE, F_TCP_OUT, F_TCP_IN, F_END_OUT, F_END_IN,
} from "../abi/records";
import { flowAcct, flows, acctOn } from "../layout";
import { ACCT_IN, ACCT_OUT } from "./acct";
import { countAdd, wanAddr } from "./state";
import { TCP_ESTABLISHED, UDP_REPLIED, lifetimeOf } from "./masq";
import { IKE_PORT } from "../vpn/isakmp";
import { flowTouch, rec } from "./table";
import { C_PASS_BYTES_INSIDE, C_PASS_BYTES_OUTSIDE, C_PASS_INSIDE, C_PASS_OUTSIDE } from "../abi/counters";

/** F_TCP_OUT bit: offered to the fast path and not withdrawn (bits 0-5 are tcpTrack's). */
export const TCPI_OFFLOADED: u32 = 0x40;
import { PPTP_PORT } from "../vpn/pptp"; // its control messages are rewritten (vpn/pptp.ts): never leaves the engine
const END_KNOWN: u32 = 0x20;     // masq.ts: the side's end is known

export const FAST_CAP: u32 = 256;
const ring: usize = memory.data(FAST_CAP * 4);
let ringCount: u32 = 0;
export let fastPathOn: bool = false;

@inline export function isOffloaded(r: usize): bool { return (<u32>load<u8>(r, F_TCP_OUT) & TCPI_OFFLOADED) != 0; }

/** Packets a UDP flow or ICMP echo must have had before it is offered (a DNS query's one or two never are). */
const UDP_MIN_PACKETS: u32 = 8;
const ICMP_MIN_PACKETS: u32 = 2;

/**
 * Called on each packet the engine passed for a LAN host's flow (natOut,
 * natIn), in `state`: an eligible flow not yet offered goes into the ring.
 * TCP once established; UDP once it has carried UDP_MIN_PACKETS (never
 * IKE's 500, which the engine routes by its cookies; NAT-T's 4500 is plain
 * NAPT and keeps its natt_timeout); an ICMP echo once answered. A port
 * forward's flow likewise, once its LAN server has answered.
 */
export function fastPathOffer(r: usize, proto: u32, state: u32): void {
  if (isOffloaded(r) || ringCount >= FAST_CAP) return;
  const ff = <u32>load<u16>(r, F_FLAGS);
  if ((ff & FL_HAIRPIN) != 0) return;
  // A forward's flow once its server has answered: what the WAN side opens
  // alone (a flood of SYNs or datagrams to a forwarded port, spoofed or
  // not) stays with the engine, evictable as unreplied.
  if ((ff & (FL_REDIRECT | FL_REPLIED)) == FL_REDIRECT) return;
  const lanA = load<u32>(r, F_LAN_ADDR);
  if (lanA == wanAddr || wanAddr == 0) return;
  const lanP = <u32>load<u16>(r, F_LAN_PORT), remP = <u32>load<u16>(r, F_REM_PORT);
  const pkts = load<u32>(r, F_PKTS_OUT) + load<u32>(r, F_PKTS_IN);
  if (proto == PROTO_TCP) {
    if (state != TCP_ESTABLISHED || lanP == PPTP_PORT || remP == PPTP_PORT) return;
  } else if (proto == PROTO_UDP) {
    // IKE on 500 is routed by its cookies; NAT-T on 4500 is plain NAPT (DESIGN.md), so it may go.
    if (lanP == IKE_PORT || remP == IKE_PORT) return;
    if (pkts < UDP_MIN_PACKETS) return;
  } else if (proto == PROTO_ICMP) {
    if ((ff & FL_REPLIED) == 0 || pkts < ICMP_MIN_PACKETS) return;
  } else {
    return;
  }
  store<u8>(r, <u8>(<u32>load<u8>(r, F_TCP_OUT) | TCPI_OFFLOADED), F_TCP_OUT);
  ringPush(<u32>((r - flows) / FLOW_SIZE));
}

/** A ring entry with this bit is an ESP association's record (vpn/esp.ts espOffer), not a flow's. */
export const RING_ESP: u32 = 0x80000000;
/** ... and with this one a PPTP call's (vpn/pptp.ts callOffer). Flow indexes stay below both. */
export const RING_CALL: u32 = 0x40000000;

/** Queues `v` (a flow index, RING_ESP | an ESP record, or RING_CALL | a call record) for the thread; false when the ring is full. */
export function ringPush(v: u32): bool {
  if (ringCount >= FAST_CAP) return false;
  store<u32>(ring + (<usize>ringCount << 2), v);
  ringCount++;
  return true;
}

export function setFastPath(on: bool): void {
  fastPathOn = on;
  ringCount = 0;
}

/** Flows offered since the last take (the thread reads fastPathRing()[0 .. n) and then calls fastPathTaken). */
export function fastPathPending(): u32 { return ringCount; }
export function fastPathRing(): usize { return ring; }
export function fastPathTaken(): void { ringCount = 0; }

/** The flow the thread offloaded as flow `f` with this tuple: still that flow, still offloaded? */
@inline function same(f: u32, proto: u32, lanA: u32, lanP: u32, remA: u32, remP: u32, aliasP: u32): bool {
  const r = rec(f);
  return (<u32>load<u16>(r, F_FLAGS) & FL_IN_USE) != 0 && <u32>load<u8>(r, F_PROTO) == proto &&
    load<u32>(r, F_LAN_ADDR) == lanA && <u32>load<u16>(r, F_LAN_PORT) == lanP &&
    load<u32>(r, F_REM_ADDR) == remA && <u32>load<u16>(r, F_REM_PORT) == remP &&
    <u32>load<u16>(r, F_ALIAS_PORT) == aliasP && isOffloaded(r);
}

/**
 * The sync's question for an offloaded flow: 1 to keep it in the fast
 * path, 0 to withdraw it (then the flow, if it is still this one, is
 * unmarked and tcpTrack learns its ends afresh). Withdrawn: the flow is
 * gone or reused, no longer established (a FIN or RST came up), the WAN
 * address changed, or the option is off.
 */
export function fastPathCheck(f: u32, proto: u32, lanA: u32, lanP: u32, remA: u32, remP: u32, aliasP: u32, wan: u32,
  endOut: u32, endIn: u32, endsKnown: u32): u32 {
  if (!same(f, proto, lanA, lanP, remA, remP, aliasP)) return 0;
  const r = rec(f);
  if (fastPathOn && wan == wanAddr && (proto != PROTO_TCP || <u32>load<u8>(r, F_STATE) == TCP_ESTABLISHED)) return 1;
  store<u8>(r, <u8>(<u32>load<u8>(r, F_TCP_OUT) & ~TCPI_OFFLOADED), F_TCP_OUT);
  // The kernel's ends where they are ahead (bit 0: LAN side's known, bit 1: WAN side's).
  if (proto != PROTO_TCP) return 0;
  if (endsKnown & 1) takeEnd(r + F_TCP_OUT, r + F_END_OUT, endOut);
  if (endsKnown & 2) takeEnd(r + F_TCP_IN, r + F_END_IN, endIn);
  return 0;
}

@inline function takeEnd(info: usize, at: usize, end: u32): void {
  const i = <u32>load<u8>(info);
  if ((i & END_KNOWN) == 0 || <i32>(end - load<u32>(at)) > 0) {
    store<u32>(at, end);
    store<u8>(info, <u8>(i | END_KNOWN));
  }
}

/**
 * What the kernel moved for offloaded flow `f` since the last sync: the
 * flow's packet counters and (option acct) byte counters grow by it, and a
 * flow that moved anything is alive for another established timeout.
 */
export function fastPathCredit(f: u32, proto: u32, lanA: u32, lanP: u32, remA: u32, remP: u32, aliasP: u32,
  pktsOut: u32, pktsIn: u32, bytesOut: f64, bytesIn: f64): u32 {
  if (!same(f, proto, lanA, lanP, remA, remP, aliasP)) return 0;
  if (pktsOut == 0 && pktsIn == 0) return 1;
  passedByKernel(pktsOut, pktsIn, bytesOut, bytesIn);
  const r = rec(f);
  store<u32>(r, load<u32>(r, F_PKTS_OUT) + pktsOut, F_PKTS_OUT);
  store<u32>(r, load<u32>(r, F_PKTS_IN) + pktsIn, F_PKTS_IN);
  if (acctOn) {
    const a = flowAcct + <usize>f * FLOW_ACCT_SIZE;
    store<u64>(a + ACCT_OUT, load<u64>(a + ACCT_OUT) + <u64>bytesOut);
    store<u64>(a + ACCT_IN, load<u64>(a + ACCT_IN) + <u64>bytesIn);
  }
  // An answer the kernel carried is an answer (natIn's rule for a LAN host's flow).
  if (pktsIn != 0 && proto != PROTO_TCP) {
    store<u16>(r, load<u16>(r, F_FLAGS) | <u16>FL_REPLIED, F_FLAGS);
    if (proto == PROTO_UDP) store<u8>(r, <u8>UDP_REPLIED, F_STATE);
  }
  flowTouch(r, lifetimeOf(proto, <u32>load<u8>(r, F_STATE), <u32>load<u16>(r, F_FLAGS)));
  return 1;
}

/**
 * What the kernel carried counts as passed, by the side it came from, as
 * if the engine had passed it: the counters behind `status`, the metrics
 * and the dashboard's rates (a sync round's worth at a time).
 */
export function passedByKernel(pktsOut: u32, pktsIn: u32, bytesOut: f64, bytesIn: f64): void {
  countAdd(C_PASS_INSIDE, <i64>pktsOut);
  countAdd(C_PASS_OUTSIDE, <i64>pktsIn);
  countAdd(C_PASS_BYTES_INSIDE, <i64>bytesOut);
  countAdd(C_PASS_BYTES_OUTSIDE, <i64>bytesIn);
}

/** Unmarks every flow (the fast path closed, or a restore): each is offered again by its next packet. */
export function fastPathForgetAll(high: u32): void {
  ringCount = 0;
  for (let f: u32 = 0; f < high; f++) {
    const r = rec(f);
    store<u8>(r, <u8>(<u32>load<u8>(r, F_TCP_OUT) & ~TCPI_OFFLOADED), F_TCP_OUT);
  }
}
