// The flow fast path (option flow_offload): the engine's half.
//
// A TUN costs every packet two copies and a trip through this process; for
// an established TCP flow that is all cost and no decision (the flow was
// judged when it opened). With the option on, the engine hands such a flow
// to a kernel fast path (src/tun/fastpath.cc: an eBPF program on the LAN and
// WAN devices' ingress that rewrites and redirects the flow's packets, like
// OpenWrt's software flow offloading) and keeps the authority:
// - only the engine offers a flow (fastPathOffer, here), only after its
//   handshake (ESTABLISHED), and only a LAN host's own masqueraded TCP:
//   no port forward, no hairpin, no router traffic, no PPTP control (1723,
//   whose payload the engine rewrites);
// - the kernel passes every SYN, FIN and RST back up through the TUNs (and
//   drops a FIN or RST outside the sender's window, what tcpTrack would
//   have done), so the engine sees each connection close;
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

import { PROTO_TCP } from "../abi/codes";
import {
  FLOW_SIZE, FL_HAIRPIN, FL_IN_USE, FL_REDIRECT, F_ALIAS_PORT, F_FLAGS, F_LAN_ADDR, F_LAN_PORT, F_PKTS_IN, F_PKTS_OUT, F_PROTO,
  F_REM_ADDR, F_REM_PORT, F_STATE, F_TCP_OUT, F_TCP_IN, F_END_OUT, F_END_IN,
} from "../abi/records";
import { flowAcct, flows, acctOn } from "../layout";
import { ACCT_IN, ACCT_OUT } from "./acct";
import { tcpEstablishedDs, wanAddr } from "./state";
import { flowTouch, rec } from "./table";
import { FLOW_ACCT_SIZE } from "../abi/records";

/** F_TCP_OUT bit: offered to the fast path and not withdrawn (bits 0-5 are tcpTrack's). */
export const TCPI_OFFLOADED: u32 = 0x40;
/** PPTP's control connection: its messages are rewritten (vpn/pptp.ts), so it never leaves the engine. */
const PPTP_PORT: u32 = 1723;
const TCP_ESTABLISHED: u32 = 3; // masq.ts (not imported: masq.ts imports this file)
const END_KNOWN: u32 = 0x20;     // masq.ts: the side's end is known

export const FAST_CAP: u32 = 256;
const ring: usize = memory.data(FAST_CAP * 4);
let ringCount: u32 = 0;
export let fastPathOn: bool = false;

@inline export function isOffloaded(r: usize): bool { return (<u32>load<u8>(r, F_TCP_OUT) & TCPI_OFFLOADED) != 0; }

/**
 * Called on each of a TCP flow's packets that the engine passed (natOut,
 * natIn) in `state`: an established, eligible flow not yet offered goes
 * into the ring.
 */
export function fastPathOffer(r: usize, state: u32): void {
  if (state != TCP_ESTABLISHED || isOffloaded(r) || ringCount >= FAST_CAP) return;
  const ff = <u32>load<u16>(r, F_FLAGS);
  if ((ff & (FL_REDIRECT | FL_HAIRPIN)) != 0) return;
  const lanA = load<u32>(r, F_LAN_ADDR);
  if (lanA == wanAddr || wanAddr == 0) return;
  if (<u32>load<u16>(r, F_LAN_PORT) == PPTP_PORT || <u32>load<u16>(r, F_REM_PORT) == PPTP_PORT) return;
  store<u8>(r, <u8>(<u32>load<u8>(r, F_TCP_OUT) | TCPI_OFFLOADED), F_TCP_OUT);
  store<u32>(ring + (<usize>ringCount << 2), <u32>((r - flows) / FLOW_SIZE));
  ringCount++;
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
@inline function same(f: u32, lanA: u32, lanP: u32, remA: u32, remP: u32, aliasP: u32): bool {
  const r = rec(f);
  return (<u32>load<u16>(r, F_FLAGS) & FL_IN_USE) != 0 && <u32>load<u8>(r, F_PROTO) == PROTO_TCP &&
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
export function fastPathCheck(f: u32, lanA: u32, lanP: u32, remA: u32, remP: u32, aliasP: u32, wan: u32,
  endOut: u32, endIn: u32, endsKnown: u32): u32 {
  if (!same(f, lanA, lanP, remA, remP, aliasP)) return 0;
  const r = rec(f);
  if (fastPathOn && <u32>load<u8>(r, F_STATE) == TCP_ESTABLISHED && wan == wanAddr) return 1;
  store<u8>(r, <u8>(<u32>load<u8>(r, F_TCP_OUT) & ~TCPI_OFFLOADED), F_TCP_OUT);
  // The kernel's ends where they are ahead (bit 0: LAN side's known, bit 1: WAN side's).
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
export function fastPathCredit(f: u32, lanA: u32, lanP: u32, remA: u32, remP: u32, aliasP: u32,
  pktsOut: u32, pktsIn: u32, bytesOut: f64, bytesIn: f64): u32 {
  if (!same(f, lanA, lanP, remA, remP, aliasP)) return 0;
  if (pktsOut == 0 && pktsIn == 0) return 1;
  const r = rec(f);
  store<u32>(r, load<u32>(r, F_PKTS_OUT) + pktsOut, F_PKTS_OUT);
  store<u32>(r, load<u32>(r, F_PKTS_IN) + pktsIn, F_PKTS_IN);
  if (acctOn) {
    const a = flowAcct + <usize>f * FLOW_ACCT_SIZE;
    store<u64>(a + ACCT_OUT, load<u64>(a + ACCT_OUT) + <u64>bytesOut);
    store<u64>(a + ACCT_IN, load<u64>(a + ACCT_IN) + <u64>bytesIn);
  }
  flowTouch(r, tcpEstablishedDs);
  return 1;
}

/** Unmarks every flow (the fast path closed, or a restore): each is offered again by its next packet. */
export function fastPathForgetAll(high: u32): void {
  ringCount = 0;
  for (let f: u32 = 0; f < high; f++) {
    const r = rec(f);
    store<u8>(r, <u8>(<u32>load<u8>(r, F_TCP_OUT) & ~TCPI_OFFLOADED), F_TCP_OUT);
  }
}
