// ISAKMP / IKE on UDP 500. The source port 500 is kept toward every server,
// also when several LAN hosts talk to the same server from port 500: inbound
// IKE is routed by the full 8-byte initiator cookie (IKEv2: initiator SPI)
// and, once seen, the responder cookie — not by port, which all share. A new
// exchange whose initiator cookie collides with an outstanding one of
// another host is dropped and counted, never misrouted (Hardin's patch kept
// 32 bits of cookie; the HOWTO names the collision this fixes). Entries
// live ike_timeout from the last packet, at least as long as the ESP table,
// so an SA's ESP never outlives its IKE routing (the HOWTO's §5.7 failure).
//
// ISAKMP header (RFC 2408 §3.1, RFC 7296 §3.1):
//   0 Initiator Cookie / SPI (8)   8 Responder Cookie / SPI (8)
//  16 Next Payload  17 Version  18 Exchange Type  19 Flags
//  20 Message ID (4)  24 Length (4)
//
// Record: IKE_SIZE bytes, fields IKE_* in abi/records.ts.
// Map key: (remote ^ icookie.hi, icookie.lo) → record + 1.

import { PROTO_UDP } from "../abi/codes";
import { C_EARLY_DROPS, C_IKE_ACTIVE, EV_IKE_COLLISION } from "../abi/counters";
import {
  IKEF_ANSWERED, IKEF_CHARGED, IKEF_INBOUND, IKE_EXPIRES, IKE_FLAGS, IKE_ICOOKIE, IKE_IN_USE, IKE_LAN_ADDR, IKE_LAST_SEEN, IKE_PKTS_IN,
  IKE_PKTS_OUT, IKE_RCOOKIE, IKE_REM_ADDR, IKE_REM_PORT, IKE_SIZE,
} from "../abi/records";
import { counters, ikeMap, ikeRecs, IKE_CAP, IKE_MAP_SIZE } from "../layout";
import { RESTORE_BAD_FIELD, RESTORE_DUPLICATE, RESTORE_FULL, RESTORE_OK, SNAP_MAX_LIFETIME_DS } from "../abi/codes";
import { IP_DST, IP_SRC, ipDst, ipSrc } from "../wire/ipv4";
import { L4_DST_PORT, L4_SRC_PORT, UDP_HEADER, port } from "../wire/l4";
import { dnatVerdict, keysToPort, lanForwardVerdict, routerVerdict, ruleKeys } from "../nat/filter";
import { redirectDest, redirectDestPort, redirectFind, redirectFindFrom } from "../nat/forward";
import { kmFirst, kmHas, kmInsert, kmNext, kmRemove, kmValueAt } from "./keymap";
import { Drop } from "../abi/reasons";
import { rewriteAddrPort } from "../nat/rewrite";
import { evictSample, slabAlloc, slabFree, slabHighWater, slabInit } from "./slab";
import { count, countAdd, eventPush, ikeDs, nowDs, unrepliedDs, wanAddr } from "../nat/state";
import { hash1 } from "../nat/hash";
import { LIM_IKE, srcCharge, srcRelease } from "../nat/limits";
import { peerEspActive, peerIkeClosed, peerIkeOpened, peerIkeRestored, peerIkeSeen, peerSetRecent } from "./peers";

export const IKE_PORT: u32 = 500;
const ISAKMP_HEADER: u32 = 28;
const MAP_MASK: u32 = IKE_MAP_SIZE - 1;
const slab: usize = memory.data(16);
let sweepHand: u32 = 0;
let evictHand: u32 = 0;
const EVICT_SCAN: u32 = 64;

export function ikeInit(): void { slabInit(slab, IKE_CAP, IKE_SIZE); sweepHand = 0; evictHand = 0; }

// An exchange a WAN packet opened (a responder behind the router, the
// router's own daemon) that the LAN side has not answered lives only
// unreplied_timeout, and entries never answered are dropped first when the
// table is full (issue 8 item 5); a LAN host holds at most src_max_ike.
@inline function lifetime(flags: u32): u32 {
  return (flags & (IKEF_INBOUND | IKEF_ANSWERED)) == IKEF_INBOUND ? unrepliedDs : ikeDs;
}

/** An entry never answered, to drop for a new one (record + 1, or 0); WAN-opened ones first, and only those for a WAN packet. */
function evictCandidate(forWan: bool): u32 {
  const hw = slabHighWater(slab);
  let lanCand: u32 = 0;
  for (let n: u32 = 0; n < EVICT_SCAN && n < hw; n++) {
    const r = evictSample(evictHand++, hw);
    const e = rec(r);
    if (load<u8>(e, IKE_IN_USE) == 0) continue;
    const f = <u32>load<u16>(e, IKE_FLAGS);
    if (f & IKEF_ANSWERED) continue;
    if (f & IKEF_INBOUND) return r + 1;
    if (lanCand == 0) lanCand = r + 1;
  }
  return forWan ? 0 : lanCand;
}

@inline function rec(r: u32): usize { return ikeRecs + <usize>r * IKE_SIZE; }
// The 96-bit key (remote, cookie) is folded to the keymap's 64 bits with a
// keyed mix, so which exchanges share a folded key depends on the per-run
// seed; and they may share one: find() compares the full key and probes on.
@inline function key1(remA: u32, ic: u64): u32 { return remA ^ hash1(ic >>> 32); } // nat/hash.ts

function find(remA: u32, ic: u64): u32 {
  const k1 = key1(remA, ic);
  const k2 = <u32>ic;
  for (let i = kmFirst(ikeMap, MAP_MASK, k1, k2); i >= 0; i = kmNext(ikeMap, MAP_MASK, k1, k2, i)) {
    const v = kmValueAt(ikeMap, i);
    const e = rec(v - 1);
    if (load<u32>(e, IKE_REM_ADDR) != remA || load<u64>(e, IKE_ICOOKIE) != ic) continue; // same folded key, another exchange
    // The full key is unique in the table: freeing it ends the walk.
    if (<i32>(nowDs - load<u32>(e, IKE_EXPIRES)) >= 0 && !keepAlive(e)) { free(v - 1); return 0; }
    return v;
  }
  return 0;
}

/**
 * An IKE entry whose timer ran out lives on while its host still has ESP
 * with that server: IKEv1 without DPD is silent until the next rekey, and
 * losing the cookie routing then is the HOWTO's "session dies" failure.
 */
function keepAlive(e: usize): bool {
  if (!peerEspActive(load<u32>(e, IKE_LAN_ADDR), load<u32>(e, IKE_REM_ADDR))) return false;
  store<u32>(e, nowDs + ikeDs, IKE_EXPIRES);
  return true;
}

function free(r: u32): void {
  const e = rec(r);
  if (load<u16>(e, IKE_FLAGS) & <u16>IKEF_CHARGED) srcRelease(load<u32>(e, IKE_LAN_ADDR), LIM_IKE);
  kmRemove(ikeMap, MAP_MASK, key1(load<u32>(e, IKE_REM_ADDR), load<u64>(e, IKE_ICOOKIE)), <u32>load<u64>(e, IKE_ICOOKIE), r + 1);
  const lanA = load<u32>(e, IKE_LAN_ADDR);
  const remA = load<u32>(e, IKE_REM_ADDR);
  slabFree(slab, ikeRecs, r);
  countAdd(C_IKE_ACTIVE, -1);
  if (peerIkeClosed(lanA, remA)) findRecentHost(remA);
}

/** The server's host with the latest exchange left with it (a scan, only when that host's last exchange ended). */
function findRecentHost(remA: u32): void {
  const hw = slabHighWater(slab);
  let best: u32 = 0;
  let host: u32 = 0;
  for (let r: u32 = 0; r < hw; r++) {
    const e = rec(r);
    if (load<u8>(e, IKE_IN_USE) == 0 || load<u32>(e, IKE_REM_ADDR) != remA || load<u32>(e, IKE_LAN_ADDR) == wanAddr) continue;
    const seen = load<u32>(e, IKE_LAST_SEEN);
    if (seen >= best) { best = seen; host = load<u32>(e, IKE_LAN_ADDR); }
  }
  if (host != 0) peerSetRecent(remA, host, best);
}

function create(lanA: u32, remA: u32, remP: u32, ic: u64, flags: u32): u32 {
  let v = slabAlloc(slab, ikeRecs);
  if (v == 0) {
    const x = evictCandidate((flags & IKEF_INBOUND) != 0);
    if (x == 0) return 0;
    free(x - 1);
    count(C_EARLY_DROPS);
    v = slabAlloc(slab, ikeRecs);
    if (v == 0) return 0;
  }
  const e = rec(v - 1);
  store<u32>(e, lanA, IKE_LAN_ADDR); store<u32>(e, remA, IKE_REM_ADDR); store<u64>(e, ic, IKE_ICOOKIE); store<u64>(e, 0, IKE_RCOOKIE);
  store<u32>(e, nowDs + lifetime(flags), IKE_EXPIRES); store<u32>(e, nowDs, IKE_LAST_SEEN); store<u16>(e, <u16>remP, IKE_REM_PORT);
  store<u16>(e, <u16>flags, IKE_FLAGS); store<u8>(e, 1, IKE_IN_USE);
  kmInsert(ikeMap, MAP_MASK, key1(remA, ic), <u32>ic, v);
  countAdd(C_IKE_ACTIVE, 1);
  peerIkeOpened(lanA, remA);
  peerIkeSeen(lanA, remA, lanA != wanAddr);
  return v;
}

function touch(e: usize, rc: u64, outbound: bool): void {
  if (load<u64>(e, IKE_RCOOKIE) == 0 && rc != 0) store<u64>(e, rc, IKE_RCOOKIE);
  let f = <u32>load<u16>(e, IKE_FLAGS);
  if (outbound == ((f & IKEF_INBOUND) != 0)) { f |= IKEF_ANSWERED; store<u16>(e, <u16>f, IKE_FLAGS); }
  store<u32>(e, nowDs + lifetime(f), IKE_EXPIRES);
  store<u32>(e, nowDs, IKE_LAST_SEEN);
  const lanA = load<u32>(e, IKE_LAN_ADDR);
  peerIkeSeen(lanA, load<u32>(e, IKE_REM_ADDR), lanA != wanAddr);
  if (outbound) store<u32>(e, load<u32>(e, IKE_PKTS_OUT) + 1, IKE_PKTS_OUT);
  else store<u32>(e, load<u32>(e, IKE_PKTS_IN) + 1, IKE_PKTS_IN);
}

@inline function checkHeader(l4: usize, l4len: u32): u32 {
  if (l4len < UDP_HEADER + ISAKMP_HEADER) return Drop.ISAKMP_TRUNCATED;
  if (load<u64>(l4 + UDP_HEADER) == 0) return Drop.ISAKMP_ZERO_COOKIE;
  return Drop.NONE;
}

/** UDP from a LAN host's port 500. */
export function ikeOut(p: usize, l4: usize, l4len: u32): u32 {
  const r0 = checkHeader(l4, l4len);
  if (r0 != Drop.NONE) return r0;
  const lanA = ipSrc(p);
  const remA = ipDst(p);
  const ic = load<u64>(l4 + UDP_HEADER);
  const rc = load<u64>(l4 + UDP_HEADER, 8);
  let v = find(remA, ic);
  if (v != 0) {
    const e = rec(v - 1);
    if (load<u32>(e, IKE_LAN_ADDR) != lanA) {
      // Another LAN host owns this initiator cookie toward this server.
      eventPush(EV_IKE_COLLISION, 0, PROTO_UDP, 0, lanA, remA, IKE_PORT, port(l4, L4_DST_PORT), IKE_PORT, <u32>ic);
      return Drop.ISAKMP_COOKIE_COLLISION;
    }
  } else {
    if (rc != 0 && lanA != wanAddr) {
      // A responder's reply with no session: only a server behind the router
      // answers exchanges it did not start, and its session was made inbound.
      return Drop.NO_FLOW;
    }
    // A new exchange from a LAN host: forward rules (src lan, dest wan) first.
    const verdict = lanForwardVerdict(PROTO_UDP, lanA, remA, ruleKeys(PROTO_UDP, l4));
    if (verdict != Drop.NONE) return verdict;
    const charged = lanA != wanAddr;
    if (charged && !srcCharge(lanA, LIM_IKE)) return Drop.SRC_IKE_LIMIT;
    v = create(lanA, remA, port(l4, L4_DST_PORT), ic, charged ? IKEF_CHARGED : 0);
    if (v == 0) { if (charged) srcRelease(lanA, LIM_IKE); return Drop.IKE_TABLE_FULL; }
  }
  touch(rec(v - 1), rc, true);
  rewriteAddrPort(p, IP_SRC, wanAddr, l4, PROTO_UDP, L4_SRC_PORT, IKE_PORT);
  return Drop.NONE;
}

/** UDP to the WAN address's port 500. */
export function ikeIn(p: usize, l4: usize, l4len: u32): u32 {
  const r0 = checkHeader(l4, l4len);
  if (r0 != Drop.NONE) return r0;
  const remA = ipSrc(p);
  const ic = load<u64>(l4 + UDP_HEADER);
  const rc = load<u64>(l4 + UDP_HEADER, 8);
  let v = find(remA, ic);
  if (v != 0) {
    const e = rec(v - 1);
    // Once both cookies are known, both must match (RFC 2408 §2.5.3 pairs them).
    const known = load<u64>(e, IKE_RCOOKIE);
    if (known != 0 && rc != 0 && known != rc) return Drop.ISAKMP_COOKIE_COLLISION;
  } else {
    // An exchange the server side starts: a responder behind the router
    // (redirect udp 500) or the router's own IKE daemon (rule).
    const fwd = redirectFindFrom(PROTO_UDP, IKE_PORT, remA, port(l4, L4_SRC_PORT), ipDst(p));
    if (fwd != 0) {
      if (rc != 0) return Drop.NO_FLOW;
      // A new exchange toward the server behind: forward rules, after DNAT.
      const verdict = dnatVerdict(PROTO_UDP, remA, redirectDest(fwd), keysToPort(ruleKeys(PROTO_UDP, l4), redirectDestPort(fwd, IKE_PORT)));
      if (verdict != Drop.NONE) return verdict;
      v = create(redirectDest(fwd), remA, port(l4, L4_SRC_PORT), ic, IKEF_INBOUND);
      if (v == 0) return Drop.IKE_TABLE_FULL;
    } else {
      const verdict = routerVerdict(PROTO_UDP, remA, ipDst(p), ruleKeys(PROTO_UDP, l4));
      if (verdict == Drop.NONE && rc == 0 && create(wanAddr, remA, port(l4, L4_SRC_PORT), ic, IKEF_INBOUND) == 0) return Drop.IKE_TABLE_FULL;
      return verdict;
    }
  }
  const e = rec(v - 1);
  touch(e, rc, false);
  const lanA = load<u32>(e, IKE_LAN_ADDR);
  if (lanA == wanAddr) return Drop.NONE; // the router's own exchange
  const fwd = (load<u16>(e, IKE_FLAGS) & IKEF_INBOUND) != 0 ? redirectFind(PROTO_UDP, IKE_PORT) : 0;
  const lanPort = fwd != 0 ? redirectDestPort(fwd, IKE_PORT) : IKE_PORT;
  rewriteAddrPort(p, IP_DST, lanA, l4, PROTO_UDP, L4_DST_PORT, lanPort);
  return Drop.NONE;
}

/** The LAN host of the exchange with initiator cookie `ic` toward `remA` (0 if none). */
export function ikeLanFor(remA: u32, ic: u64): u32 {
  const v = find(remA, ic);
  return v != 0 ? load<u32>(rec(v - 1), IKE_LAN_ADDR) : 0;
}

export function ikeSweep(budget: u32): void {
  const hw = slabHighWater(slab);
  for (let n: u32 = 0; n < budget && n < hw; n++) {
    if (sweepHand >= hw) sweepHand = 0;
    const r = sweepHand++;
    const e = rec(r);
    if (load<u8>(e, IKE_IN_USE) != 0 && <i32>(nowDs - load<u32>(e, IKE_EXPIRES)) >= 0 && !keepAlive(e)) free(r);
  }
}

export function ikeFlushAll(): void {
  const hw = slabHighWater(slab);
  for (let r: u32 = 0; r < hw; r++) if (load<u8>(rec(r), IKE_IN_USE) != 0) free(r);
}
/** `conntrack -D`: frees IKE entry r if it is in use. */
export function ikeDelete(r: u32): bool {
  if (r >= slabHighWater(slab) || load<u8>(rec(r), IKE_IN_USE) == 0) return false;
  free(r);
  return true;
}
export function ikeHighWater(): u32 { return slabHighWater(slab); }

// ---- state snapshot restore (assembly/snapshot.ts) -------------------------

/**
 * One saved exchange (IKE_SIZE bytes at `src`): skipped when free, or
 * expired with no bound ESP left to keep it alive; else checked, inserted,
 * and its host's peer facts (latest exchange) made anew.
 */
export function ikeRestore(src: usize): u32 {
  if (load<u8>(src, IKE_IN_USE) == 0) return RESTORE_OK;
  const lanA = load<u32>(src, IKE_LAN_ADDR), remA = load<u32>(src, IKE_REM_ADDR);
  const ic = load<u64>(src, IKE_ICOOKIE);
  let flags = <u32>load<u16>(src, IKE_FLAGS);
  if (ic == 0 || (flags & ~(IKEF_INBOUND | IKEF_ANSWERED | IKEF_CHARGED)) != 0) return RESTORE_BAD_FIELD;
  const left = load<u32>(src, IKE_EXPIRES) - nowDs;
  if (<i32>left > 0 && left > SNAP_MAX_LIFETIME_DS) return RESTORE_BAD_FIELD;
  const expired = <i32>left <= 0;
  if (expired && !peerEspActive(lanA, remA)) return RESTORE_OK; // ESP is restored first
  const k1 = key1(remA, ic);
  for (let i = kmFirst(ikeMap, MAP_MASK, k1, <u32>ic); i >= 0; i = kmNext(ikeMap, MAP_MASK, k1, <u32>ic, i)) {
    const x = rec(kmValueAt(ikeMap, i) - 1);
    if (load<u32>(x, IKE_REM_ADDR) == remA && load<u64>(x, IKE_ICOOKIE) == ic) return RESTORE_DUPLICATE;
  }
  const r1 = slabAlloc(slab, ikeRecs);
  if (r1 == 0) return RESTORE_FULL;
  const e = rec(r1 - 1);
  memory.copy(e, src, IKE_SIZE);
  store<u8>(e, 1, IKE_IN_USE);
  if (expired) store<u32>(e, nowDs + ikeDs, IKE_EXPIRES); // kept alive by its ESP, as the sweep would
  if ((flags & IKEF_CHARGED) != 0 && !srcCharge(lanA, LIM_IKE)) { flags &= ~IKEF_CHARGED; store<u16>(e, <u16>flags, IKE_FLAGS); }
  kmInsert(ikeMap, MAP_MASK, key1(remA, ic), <u32>ic, r1);
  countAdd(C_IKE_ACTIVE, 1);
  peerIkeOpened(lanA, remA);
  peerIkeRestored(lanA, remA, load<u32>(e, IKE_LAST_SEEN), lanA != wanAddr);
  return RESTORE_OK;
}

/** Every live exchange is found by its cookie; the gauge matches. */
export function ikeVerify(): bool {
  const hw = slabHighWater(slab);
  let live: u32 = 0;
  for (let r: u32 = 0; r < hw; r++) {
    const e = rec(r);
    if (load<u8>(e, IKE_IN_USE) == 0) continue;
    live++;
    const remA = load<u32>(e, IKE_REM_ADDR);
    const ic = load<u64>(e, IKE_ICOOKIE);
    if (!kmHas(ikeMap, MAP_MASK, key1(remA, ic), <u32>ic, r + 1)) return false;
  }
  return <u64>live == load<u64>(counters + (<usize>C_IKE_ACTIVE << 3));
}
