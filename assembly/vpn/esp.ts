// ESP (IP 50) without NAT-T, told apart by SPI: the association algorithm
// of the VPN Masquerade HOWTO §6.2, improved.
//
// An outbound packet with an unseen SPI opens an OUTSTANDING entry for its
// LAN host and server (the inbound SPI is not known yet). While one is
// outstanding toward a server, new SPIs from other LAN hosts to that server
// wait (dropped, counted) unless parallel_sessions is on. The first unknown
// inbound SPI from the server binds to an outstanding entry: the one whose
// LAN host had the most recent IKE exchange with that server, else the
// oldest. An outstanding entry lives esp_init_timeout (2 min); after
// esp_init_retries (5) retries without an answer it is SQUELCHED for 30 s
// (its packets dropped, other hosts no longer wait), then freed. A retry is
// a packet on the outstanding SPI at least RETRY_INTERVAL_DS after the
// entry opened or after the last counted retry: a client sends a burst
// before the server's first reply can arrive (bulk data right after an SA
// comes up or a rekey: 50 packets at 1,000 pps and 50 ms round trip), and
// the HOWTO's retries are retransmissions of an unanswered exchange, not
// the packets of one burst. A new SPI while one is pending counts at once.
// Bound entries live esp_timeout (30 min) from the last packet.
//
// Limits (issue 8 item 5): an outstanding entry that times out unanswered
// is squelched like one that ran out of retries, so one host can hold the
// slot toward a server for esp_init_timeout at most and then has to let
// the others go first; a LAN host holds at most src_max_esp_pending
// outstanding entries. An SA bound from an unknown inbound SPI is
// provisional for esp_init_timeout: one more unknown SPI from that server is
// added to it, so a spoofed first packet cannot capture the association for
// good. SAs a WAN packet opened through an ESP forward live
// unreplied_timeout until the server behind the router sends ESP to that
// peer, and are the first dropped when the table is full.
//
// Record: ESP_SIZE bytes, fields ESP_* in abi/records.ts.
// Map keys: (remote, spiOut) → record+1 | OUT_BIT, (remote, spiIn / spiIn2) → record+1.

import { DEST_ROUTER, PROTO_ESP, SIDE_OUTSIDE, TARGET_ACCEPT, ZONE_WAN } from "../abi/codes";
import { C_EARLY_DROPS, C_ESP_ACTIVE, C_ESP_BOUND, C_LOCAL_ACCEPT, EV_ESP_BOUND } from "../abi/counters";
import {
  ESPF_CHARGED, ESPF_FORWARD, ESPF_OFFLOADED, ESPF_PROVISIONAL, ESPF_UNREPLIED, ESP_BOUND, ESP_DEADLINE, ESP_EXPIRES, ESP_FLAGS, ESP_FREE,
  ESP_LAN_ADDR, ESP_OUTSTANDING, ESP_PEER, ESP_PKTS, ESP_REM_ADDR, ESP_RETRIES, ESP_SIZE, ESP_SPI_IN, ESP_SPI_IN2,
  ESP_SPI_OUT, ESP_SQUELCHED, ESP_STATE, ESP_TIMER,
} from "../abi/records";
import { counters, espMap, espRecs, outstanding, ESP_CAP, ESP_MAP_SIZE, OUTSTANDING_CAP } from "../layout";
import { RESTORE_BAD_FIELD, RESTORE_DUPLICATE, RESTORE_FULL, RESTORE_OK, SNAP_MAX_LIFETIME_DS } from "../abi/codes";
import { IP_DST, IP_SRC, ipDst, ipSrc } from "../wire/ipv4";
import { peerEspBound, peerEspClosed, peerEspTouch, peerIkeLast, peerRecentHost } from "./peers";
import { dnatVerdict, lanForwardVerdict, ruleMatch } from "../nat/filter";
import { kmFirst, kmHas, kmInsert, kmNext, kmRemove, kmValueAt } from "./keymap";
import { protoForward } from "../nat/forward";
import { Drop } from "../abi/reasons";
import { rewriteAddr } from "../nat/rewrite";
import { evictSample, slabAlloc, slabFree, slabHighWater, slabInit } from "./slab";
import { LIM_ESP, srcCharge, srcRelease } from "../nat/limits";
import { RING_ESP, fastPathOn, passedByKernel, ringPush } from "../nat/fastpath";
import {
  count, countAdd, eventPush, espDs, espGuess, espInitDs, espInitRetries, espSquelchDs, nowDs, parallelSessions, unrepliedDs, wanAddr,
} from "../nat/state";

const OUT_BIT: u32 = 0x80000000;
const MAP_MASK: u32 = ESP_MAP_SIZE - 1;
const slab: usize = memory.data(16);
let outstandingCount: u32 = 0;
let sweepHand: u32 = 0;
let evictHand: u32 = 0;
const EVICT_SCAN: u32 = 64;
const PROMOTE_EVERY_DS: u32 = 50;
// Packets on an outstanding SPI closer together than this are one try.
// 1 s: above any round trip a server answers in, well below esp_init_timeout,
// so retries × 1 s still squelches a host nobody answers.
const RETRY_INTERVAL_DS: u32 = 10;

export function espInit(): void { slabInit(slab, ESP_CAP, ESP_SIZE); outstandingCount = 0; sweepHand = 0; evictHand = 0; }

@inline function rec(r: u32): usize { return espRecs + <usize>r * ESP_SIZE; }
@inline function spiOf(l4: usize): u32 { return load<u32>(l4); }

// SPI (4) + sequence (4) + at least the 4-byte-aligned pad length and next
// header (RFC 4303 §2): anything shorter is not ESP. SPI 0 is reserved for
// local use and 1..255 by IANA (§2.1): no peer sends them.
const ESP_MIN: u32 = 12;
@inline function espCheck(l4: usize, l4len: u32): u32 {
  if (l4len < ESP_MIN) return Drop.TRUNCATED;
  const spi = bswap<u32>(load<u32>(l4));
  if (spi == 0) return Drop.ESP_SPI_ZERO;
  if (spi < 256) return Drop.ESP_SPI_RESERVED;
  return Drop.NONE;
}

function outstandingAdd(r: u32): bool {
  if (outstandingCount >= OUTSTANDING_CAP) {
    // Full: a provisional SA settles early to make room; outstanding entries never give way.
    for (let i: u32 = 0; i < outstandingCount; i++) {
      const x = load<u32>(outstanding + (<usize>i << 2));
      if (load<u8>(rec(x), ESP_STATE) == <u8>ESP_BOUND) { settle(x); break; }
    }
    if (outstandingCount >= OUTSTANDING_CAP) return false;
  }
  store<u32>(outstanding + (<usize>outstandingCount << 2), r);
  outstandingCount++;
  return true;
}
function outstandingDel(r: u32): void {
  for (let i: u32 = 0; i < outstandingCount; i++) {
    if (load<u32>(outstanding + (<usize>i << 2)) == r) {
      outstandingCount--;
      store<u32>(outstanding + (<usize>i << 2), load<u32>(outstanding + (<usize>outstandingCount << 2)));
      return;
    }
  }
}

function espFree(r: u32): void {
  const e = rec(r);
  const remA = load<u32>(e, ESP_REM_ADDR);
  const state = <u32>load<u8>(e, ESP_STATE);
  const flags = <u32>load<u16>(e, ESP_FLAGS);
  if (state == ESP_OUTSTANDING || state == ESP_SQUELCHED || (flags & ESPF_PROVISIONAL) != 0) outstandingDel(r);
  if (state == ESP_BOUND) peerEspClosed(load<u32>(e, ESP_LAN_ADDR), remA);
  if (flags & ESPF_CHARGED) srcRelease(load<u32>(e, ESP_LAN_ADDR), LIM_ESP);
  if (load<u32>(e, ESP_SPI_OUT) != 0) kmRemove(espMap, MAP_MASK, remA, load<u32>(e, ESP_SPI_OUT), (r + 1) | OUT_BIT);
  if (load<u32>(e, ESP_SPI_IN) != 0) kmRemove(espMap, MAP_MASK, remA, load<u32>(e, ESP_SPI_IN), r + 1);
  if (load<u32>(e, ESP_SPI_IN2) != 0) kmRemove(espMap, MAP_MASK, remA, load<u32>(e, ESP_SPI_IN2), r + 1);
  slabFree(slab, espRecs, r);
  countAdd(C_ESP_ACTIVE, -1);
}

/**
 * Ages the entry's state: an outstanding entry past its deadline is
 * squelched (so it cannot hold the slot toward its server for longer), a
 * squelch ends, an expired entry is freed. Returns false if freed.
 */
function espAge(r: u32): bool {
  const e = rec(r);
  const state = <u32>load<u8>(e, ESP_STATE);
  if (state == ESP_FREE) return false;
  if (state == ESP_OUTSTANDING && <i32>(nowDs - load<u32>(e, ESP_DEADLINE)) >= 0) {
    // The pause runs from the moment the slot expired, however late we look.
    const end = load<u32>(e, ESP_DEADLINE) + espSquelchDs;
    if (<i32>(nowDs - end) >= 0) { espFree(r); return false; }
    squelchUntil(e, end);
    return true;
  }
  if (<i32>(nowDs - load<u32>(e, ESP_EXPIRES)) >= 0) { espFree(r); return false; }
  if (state == ESP_SQUELCHED && <i32>(nowDs - load<u32>(e, ESP_DEADLINE)) >= 0) { espFree(r); return false; }
  return true;
}

/** For walks of the outstanding list: false when `r` left it (freed, or a provisional SA settled). */
function listLive(r: u32): bool {
  if (!espAge(r)) return false;
  const e = rec(r);
  if (load<u8>(e, ESP_STATE) == <u8>ESP_BOUND && <i32>(nowDs - load<u32>(e, ESP_TIMER)) >= 0) { settle(r); return false; }
  return true;
}

/** The provisional time of a bound SA is over: it takes no further SPI. */
function settle(r: u32): void {
  const e = rec(r);
  const flags = <u32>load<u16>(e, ESP_FLAGS);
  if (flags & ESPF_CHARGED) srcRelease(load<u32>(e, ESP_LAN_ADDR), LIM_ESP);
  store<u16>(e, <u16>(flags & ~(ESPF_PROVISIONAL | ESPF_CHARGED)), ESP_FLAGS);
  outstandingDel(r);
}

/** Expiry of a bound SA touched now: unreplied_timeout while the server behind the router has not answered. */
@inline function boundLife(e: usize): u32 {
  return nowDs + ((load<u16>(e, ESP_FLAGS) & <u16>ESPF_UNREPLIED) != 0 ? unrepliedDs : espDs);
}

/**
 * The server behind the router sends ESP to `remA`: the SAs that peer
 * opened through the forward are answered now and live esp_timeout.
 */
function promoteForward(remA: u32, lanA: u32): void {
  const hw = slabHighWater(slab);
  for (let r: u32 = 0; r < hw; r++) {
    const e = rec(r);
    if (load<u8>(e, ESP_STATE) != <u8>ESP_BOUND || (load<u16>(e, ESP_FLAGS) & <u16>ESPF_UNREPLIED) == 0) continue;
    if (load<u32>(e, ESP_REM_ADDR) != remA || load<u32>(e, ESP_LAN_ADDR) != lanA) continue;
    store<u16>(e, load<u16>(e, ESP_FLAGS) & ~<u16>ESPF_UNREPLIED, ESP_FLAGS);
    store<u32>(e, nowDs + espDs, ESP_EXPIRES);
    peerEspTouch(load<u32>(e, ESP_PEER), nowDs + espDs);
  }
}

/**
 * The server behind the router sent ESP on its SA `e` to `remA`: that
 * peer's unanswered inbound SAs are promoted, at most every
 * PROMOTE_EVERY_DS (each promotion scans the slab). Nothing for a LAN
 * host's own SA.
 */
function forwardAnswers(e: usize, remA: u32, lanA: u32): void {
  if ((load<u16>(e, ESP_FLAGS) & <u16>ESPF_FORWARD) == 0 || nowDs - load<u32>(e, ESP_TIMER) < PROMOTE_EVERY_DS) return;
  store<u32>(e, nowDs, ESP_TIMER);
  promoteForward(remA, lanA);
}

/** A forward SA never answered, to drop for a new entry when the table is full (record + 1, or 0). */
function evictCandidate(): u32 {
  const hw = slabHighWater(slab);
  for (let n: u32 = 0; n < EVICT_SCAN && n < hw; n++) {
    const r = evictSample(evictHand++, hw);
    const e = rec(r);
    if (load<u8>(e, ESP_STATE) == <u8>ESP_BOUND && (load<u16>(e, ESP_FLAGS) & <u16>ESPF_UNREPLIED) != 0) return r + 1;
  }
  return 0;
}

export function espSweep(budget: u32): void {
  const hw = slabHighWater(slab);
  if (hw == 0) return;
  for (let n: u32 = 0; n < budget && n < hw; n++) {
    if (sweepHand >= hw) sweepHand = 0;
    espAge(sweepHand++);
  }
}

function espNew(lanA: u32, remA: u32, spiOut: u32, spiIn: u32, state: u32, flags: u32): u32 {
  let r1 = slabAlloc(slab, espRecs);
  if (r1 == 0) {
    const v = evictCandidate();
    if (v == 0) return 0;
    espFree(v - 1);
    count(C_EARLY_DROPS);
    r1 = slabAlloc(slab, espRecs);
    if (r1 == 0) return 0;
  }
  const r = r1 - 1;
  const e = rec(r);
  store<u32>(e, lanA, ESP_LAN_ADDR); store<u32>(e, remA, ESP_REM_ADDR); store<u32>(e, spiOut, ESP_SPI_OUT); store<u32>(e, spiIn, ESP_SPI_IN);
  store<u8>(e, <u8>state, ESP_STATE); store<u16>(e, <u16>flags, ESP_FLAGS);
  if (state == ESP_OUTSTANDING) {
    store<u32>(e, nowDs + espInitDs, ESP_EXPIRES);
    store<u32>(e, nowDs + espInitDs, ESP_DEADLINE);
    store<u32>(e, nowDs, ESP_TIMER); // the first try
  } else {
    const life = boundLife(e);
    store<u32>(e, life, ESP_EXPIRES);
    store<u32>(e, peerEspBound(lanA, remA, life), ESP_PEER);
  }
  if (spiOut != 0) kmInsert(espMap, MAP_MASK, remA, spiOut, r1 | OUT_BIT);
  if (spiIn != 0) kmInsert(espMap, MAP_MASK, remA, spiIn, r1);
  countAdd(C_ESP_ACTIVE, 1);
  return r1;
}

/** No answer after the retries: pause the host toward that server so it stops blocking others. */
function squelch(e: usize): void { squelchUntil(e, nowDs + espSquelchDs); }
function squelchUntil(e: usize, end: u32): void {
  store<u8>(e, <u8>ESP_SQUELCHED, ESP_STATE);
  store<u32>(e, end, ESP_DEADLINE);
  store<u32>(e, end, ESP_EXPIRES);
}

/** The host's own outstanding or squelched entry toward `remA` (record + 1, or 0). */
function hostPending(remA: u32, lanA: u32): u32 {
  for (let i: u32 = 0; i < outstandingCount; i++) {
    const r = load<u32>(outstanding + (<usize>i << 2));
    if (!listLive(r)) { i--; continue; }
    const e = rec(r);
    if (load<u32>(e, ESP_REM_ADDR) == remA && load<u32>(e, ESP_LAN_ADDR) == lanA && load<u8>(e, ESP_STATE) != <u8>ESP_BOUND) return r + 1;
  }
  return 0;
}

/** An outstanding entry toward `remA` from another LAN host (or 0). Ages what it passes. */
function outstandingOther(remA: u32, lanA: u32): u32 {
  for (let i: u32 = 0; i < outstandingCount; i++) {
    const r = load<u32>(outstanding + (<usize>i << 2));
    if (!listLive(r)) { i--; continue; } // gone from the list: it shrank under us
    const e = rec(r);
    if (load<u32>(e, ESP_REM_ADDR) == remA && load<u32>(e, ESP_LAN_ADDR) != lanA && load<u8>(e, ESP_STATE) == <u8>ESP_OUTSTANDING) return r + 1;
  }
  return 0;
}

/**
 * The entry (map value: record + 1, with OUT_BIT for `outbound`) whose SPI
 * toward or from `remA` is `spi` in that direction, or 0. Outbound and
 * inbound SPIs share the map (one host's inbound SPI may equal another
 * host's outbound SPI toward the same server): the walk skips the other
 * direction instead of stopping at it, and compares the record.
 */
function espFind(remA: u32, spi: u32, outbound: bool): u32 {
  for (let i = kmFirst(espMap, MAP_MASK, remA, spi); i >= 0; i = kmNext(espMap, MAP_MASK, remA, spi, i)) {
    const v = kmValueAt(espMap, i);
    if (((v & OUT_BIT) != 0) != outbound) continue;
    const e = rec((v & ~OUT_BIT) - 1);
    if (load<u32>(e, ESP_REM_ADDR) != remA) continue;
    if (outbound ? load<u32>(e, ESP_SPI_OUT) == spi : (load<u32>(e, ESP_SPI_IN) == spi || load<u32>(e, ESP_SPI_IN2) == spi)) return v;
  }
  return 0;
}

/** LAN → WAN. */
export function espOut(p: usize, l4: usize, l4len: u32): u32 {
  const r0 = espCheck(l4, l4len);
  if (r0 != Drop.NONE) return r0;
  const spi = spiOf(l4);
  const lanA = ipSrc(p);
  const remA = ipDst(p);
  if (lanA == wanAddr) return Drop.NONE; // the router's own IPsec: not translated
  let v = espFind(remA, spi, true);
  if (v != 0) {
    const r = (v & ~OUT_BIT) - 1;
    if (!espAge(r)) v = 0;
  }
  if (v != 0) {
    const r = (v & ~OUT_BIT) - 1;
    const e = rec(r);
    if (load<u32>(e, ESP_LAN_ADDR) != lanA) return Drop.ESP_SERIALIZED; // the server chose this SPI for another host
    const state = <u32>load<u8>(e, ESP_STATE);
    if (state == ESP_SQUELCHED) return Drop.ESP_SQUELCHED;
    if (state == ESP_OUTSTANDING) {
      // Still unanswered: a retry only once a retry interval has passed
      // since the last try, so a burst before the first reply is one try.
      if (nowDs - load<u32>(e, ESP_TIMER) >= RETRY_INTERVAL_DS) {
        store<u32>(e, nowDs, ESP_TIMER);
        const tries = <u32>load<u8>(e, ESP_RETRIES) + 1;
        store<u8>(e, <u8>tries, ESP_RETRIES);
        if (tries > espInitRetries) { squelch(e); return Drop.ESP_SQUELCHED; }
      }
    } else {
      store<u32>(e, nowDs + espDs, ESP_EXPIRES);
      peerEspTouch(load<u32>(e, ESP_PEER), nowDs + espDs);
      forwardAnswers(e, remA, lanA);
    }
    store<u32>(e, load<u32>(e, ESP_PKTS) + 1, ESP_PKTS);
    rewriteAddr(p, IP_SRC, wanAddr);
    if (fastPathOn) espOffer(r);
    return Drop.NONE;
  }
  // A new SPI from this host toward this server: forward rules (src lan, dest wan) first.
  const verdict = lanForwardVerdict(PROTO_ESP, lanA, remA, 0);
  if (verdict != Drop.NONE) return verdict;
  const forwardHost = protoForward(PROTO_ESP) == lanA;
  if (forwardHost) {
    // The server behind the router answers with its own SPIs: nothing to wait for.
    const f1 = espNew(lanA, remA, spi, 0, ESP_BOUND, ESPF_FORWARD);
    if (f1 == 0) return Drop.ESP_TABLE_FULL;
    store<u32>(rec(f1 - 1), nowDs, ESP_TIMER);
    promoteForward(remA, lanA);
  } else {
    // One pending new SPI per host and server: further new SPIs count as
    // its retries, so a host spraying SPIs is squelched like one retrying.
    const mine = hostPending(remA, lanA);
    if (mine != 0) {
      const e = rec(mine - 1);
      if (load<u8>(e, ESP_STATE) == <u8>ESP_SQUELCHED) return Drop.ESP_SQUELCHED;
      const tries = <u32>load<u8>(e, ESP_RETRIES) + 1;
      store<u8>(e, <u8>tries, ESP_RETRIES);
      if (tries > espInitRetries) { squelch(e); return Drop.ESP_SQUELCHED; }
      rewriteAddr(p, IP_SRC, wanAddr);
      return Drop.NONE;
    }
    if (!parallelSessions && outstandingOther(remA, lanA) != 0) return Drop.ESP_SERIALIZED;
    if (!srcCharge(lanA, LIM_ESP)) return Drop.SRC_ESP_LIMIT;
    const r1 = espNew(lanA, remA, spi, 0, ESP_OUTSTANDING, ESPF_CHARGED);
    if (r1 == 0) { srcRelease(lanA, LIM_ESP); return Drop.ESP_TABLE_FULL; }
    if (!outstandingAdd(r1 - 1)) { espFree(r1 - 1); return Drop.ESP_TABLE_FULL; }
  }
  rewriteAddr(p, IP_SRC, wanAddr);
  return Drop.NONE;
}

/**
 * The entry an unknown inbound SPI from `remA` should bind to (record + 1,
 * or 0): an outstanding entry, else a provisional SA (bound from an unknown
 * SPI, maybe a spoofed one) that has not taken its second SPI yet.
 */
function pickOutstanding(remA: u32): u32 {
  let best: u32 = 0;
  let bestIke: u32 = 0;
  let bestCls: u32 = 0;
  let bestAge: u32 = 0;
  for (let i: u32 = 0; i < outstandingCount; i++) {
    const r = load<u32>(outstanding + (<usize>i << 2));
    if (!listLive(r)) { i--; continue; }
    const e = rec(r);
    if (load<u32>(e, ESP_REM_ADDR) != remA) continue;
    const state = <u32>load<u8>(e, ESP_STATE);
    if (state != ESP_OUTSTANDING && !(state == ESP_BOUND && load<u32>(e, ESP_SPI_IN2) == 0)) continue;
    // An outstanding entry before any provisional SA; then the host whose
    // IKE exchange with this server is most recent; among equals the oldest.
    const ike = peerIkeLast(load<u32>(e, ESP_LAN_ADDR), remA);
    const cls: u32 = state == ESP_OUTSTANDING ? 1 : 0;
    const age = nowDs - (state == ESP_OUTSTANDING ? load<u32>(e, ESP_DEADLINE) : load<u32>(e, ESP_TIMER)) + espInitDs;
    if (best == 0 || cls > bestCls || (cls == bestCls && (ike > bestIke || (ike == bestIke && age > bestAge)))) {
      best = r + 1; bestIke = ike; bestCls = cls; bestAge = age;
    }
  }
  return best;
}

/** WAN → WAN address. */
export function espIn(p: usize, l4: usize, l4len: u32): u32 {
  const r0 = espCheck(l4, l4len);
  if (r0 != Drop.NONE) return r0;
  const spi = spiOf(l4);
  const remA = ipSrc(p);
  let v = espFind(remA, spi, false);
  if (v != 0 && !espAge(v - 1)) v = 0;
  if (v == 0) {
    let pick = pickOutstanding(remA);
    // The router's own IPsec (rule-accepted ESP): it wins unknown SPIs from a
    // server when its IKE exchange with that server is the most recent.
    if (ruleMatch(ZONE_WAN, DEST_ROUTER, PROTO_ESP, remA, ipDst(p), 0) == TARGET_ACCEPT &&
        (pick == 0 || peerIkeLast(wanAddr, remA) > peerIkeLast(load<u32>(rec(pick - 1), ESP_LAN_ADDR), remA))) {
      count(C_LOCAL_ACCEPT);
      return Drop.NONE;
    }
    if (pick != 0) {
      const r = pick - 1;
      const e = rec(r);
      if (load<u8>(e, ESP_STATE) == <u8>ESP_BOUND) {
        // A provisional SA takes a second inbound SPI and settles. The
        // kernel holds its first two SPIs only: the second inbound one
        // stays with the engine (espOffer).
        store<u32>(e, spi, ESP_SPI_IN2);
        settle(r);
      } else {
        // Bound, but provisional for esp_init_timeout: it stays on the list,
        // no longer counted as its host's outstanding entry.
        store<u32>(e, spi, ESP_SPI_IN);
        store<u8>(e, <u8>ESP_BOUND, ESP_STATE);
        const fl = <u32>load<u16>(e, ESP_FLAGS);
        if (fl & ESPF_CHARGED) srcRelease(load<u32>(e, ESP_LAN_ADDR), LIM_ESP);
        store<u16>(e, <u16>((fl & ~ESPF_CHARGED) | ESPF_PROVISIONAL), ESP_FLAGS);
        store<u32>(e, nowDs + espInitDs, ESP_TIMER);
        store<u32>(e, peerEspBound(load<u32>(e, ESP_LAN_ADDR), remA, nowDs + espDs), ESP_PEER);
      }
      store<u32>(e, nowDs + espDs, ESP_EXPIRES);
      kmInsert(espMap, MAP_MASK, remA, spi, pick);
      count(C_ESP_BOUND);
      eventPush(EV_ESP_BOUND, 0, PROTO_ESP, SIDE_OUTSIDE, load<u32>(e, ESP_LAN_ADDR), remA, 0, 0, 0, bswap<u32>(spi));
      v = pick;
    } else if (protoForward(PROTO_ESP) != 0) {
      // A server behind the router (redirect proto esp): unknown SPIs are its,
      // unless a forward rule (src wan, dest lan) drops this server's; it stays
      // unanswered until it sends ESP to that peer (short-lived, evicted first).
      const verdict = dnatVerdict(PROTO_ESP, remA, protoForward(PROTO_ESP), 0);
      if (verdict != Drop.NONE) return verdict;
      v = espNew(protoForward(PROTO_ESP), remA, 0, spi, ESP_BOUND, ESPF_FORWARD | ESPF_UNREPLIED);
      if (v == 0) return Drop.ESP_TABLE_FULL;
    } else if (espGuess) {
      // Option esp_guess: hand it to the LAN host with the most recent IKE
      // exchange with this server, without binding (the HOWTO's fallback).
      const lanA = peerRecentHost(remA);
      if (lanA == 0) return Drop.ESP_NO_SA;
      rewriteAddr(p, IP_DST, lanA);
      return Drop.NONE;
    } else {
      return Drop.ESP_NO_SA;
    }
  }
  const e = rec(v - 1);
  const life = boundLife(e);
  store<u32>(e, life, ESP_EXPIRES);
  peerEspTouch(load<u32>(e, ESP_PEER), life);
  store<u32>(e, load<u32>(e, ESP_PKTS) + 1, ESP_PKTS);
  rewriteAddr(p, IP_DST, load<u32>(e, ESP_LAN_ADDR));
  if (fastPathOn) espOffer(v - 1);
  return Drop.NONE;
}

// ---- the flow fast path (nat/fastpath.ts; option flow_offload) -------------

/**
 * A LAN host's bound association, both SPIs known, goes to the kernel:
 * two entries, (host, server, spiOut) and (server, WAN address, spiIn), the
 * keys this module bound. Not the router's own. A provisional SA goes too:
 * taking a second inbound SPI adds a key and changes neither of these two,
 * so the kernel's entries still do what the engine would; that second
 * SPI's packets stay with the engine.
 *
 * A forward's SA (a server behind the router, `redirect` proto esp) is
 * one SPI a record, so one entry: the server's outbound SA toward a peer
 * (server, peer, spiOut), and an inbound one (peer, WAN address, spiIn)
 * only once answered, that is promoted by the server's ESP to that peer:
 * SPIs the internet sprays at the WAN address stay with the engine,
 * unreplied and evicted first. The server's packets the kernel carries
 * still promote (espFastCredit).
 */
function espOffer(r: u32): void {
  const e = rec(r);
  const flags = <u32>load<u16>(e, ESP_FLAGS);
  if ((flags & (ESPF_OFFLOADED | ESPF_UNREPLIED)) != 0 || load<u8>(e, ESP_STATE) != <u8>ESP_BOUND) return;
  const noOut = load<u32>(e, ESP_SPI_OUT) == 0, noIn = load<u32>(e, ESP_SPI_IN) == 0;
  if ((flags & ESPF_FORWARD) != 0 ? noOut == noIn : noOut || noIn) return;
  if (wanAddr == 0 || load<u32>(e, ESP_LAN_ADDR) == wanAddr) return;
  if (!ringPush(RING_ESP | r)) return;
  store<u16>(e, <u16>(flags | ESPF_OFFLOADED), ESP_FLAGS);
}

/** The association the thread offloaded as record `r` with these SPIs: still that one, still bound and offloaded? */
function espSame(r: u32, lanA: u32, remA: u32, spiOut: u32, spiIn: u32): bool {
  if (r >= slabHighWater(slab)) return false;
  const e = rec(r);
  return load<u8>(e, ESP_STATE) == <u8>ESP_BOUND && (load<u16>(e, ESP_FLAGS) & <u16>ESPF_OFFLOADED) != 0 &&
    load<u32>(e, ESP_LAN_ADDR) == lanA && load<u32>(e, ESP_REM_ADDR) == remA &&
    load<u32>(e, ESP_SPI_OUT) == spiOut && load<u32>(e, ESP_SPI_IN) == spiIn;
}

/**
 * The sync's question for an offloaded association: 1 to keep it, 0 to
 * withdraw it (freed, expired, reused, a new WAN address, the option off;
 * a live one is unmarked, and its next packet offers it again).
 */
export function espFastCheck(r: u32, lanA: u32, remA: u32, spiOut: u32, spiIn: u32, wan: u32): u32 {
  if (!espSame(r, lanA, remA, spiOut, spiIn) || !espAge(r)) return 0;
  if (fastPathOn && wan == wanAddr) return 1;
  const e = rec(r);
  store<u16>(e, load<u16>(e, ESP_FLAGS) & ~<u16>ESPF_OFFLOADED, ESP_FLAGS);
  return 0;
}

/** What the kernel moved for it since the last sync: counted, and the association (and its peer's IKE state) kept alive as a packet would. */
export function espFastCredit(r: u32, lanA: u32, remA: u32, spiOut: u32, spiIn: u32, pktsOut: u32, pktsIn: u32, bytesOut: f64, bytesIn: f64): u32 {
  if (!espSame(r, lanA, remA, spiOut, spiIn)) return 0;
  if (pktsOut == 0 && pktsIn == 0) return 1;
  passedByKernel(pktsOut, pktsIn, bytesOut, bytesIn);
  const e = rec(r);
  store<u32>(e, load<u32>(e, ESP_PKTS) + pktsOut + pktsIn, ESP_PKTS);
  const life = boundLife(e);
  store<u32>(e, life, ESP_EXPIRES);
  peerEspTouch(load<u32>(e, ESP_PEER), life);
  // What the kernel carried from a server behind the router answers its peer, as its packets through espOut do.
  if (pktsOut != 0) forwardAnswers(e, remA, lanA);
  return 1;
}

/** Every association unmarked (the fast path closed, or a restore). */
export function espForgetOffloaded(): void {
  const hw = slabHighWater(slab);
  for (let r: u32 = 0; r < hw; r++) {
    const e = rec(r);
    store<u16>(e, load<u16>(e, ESP_FLAGS) & ~<u16>ESPF_OFFLOADED, ESP_FLAGS);
  }
}

/** The LAN host whose outbound SPI toward `remA` this is (0 if none): for ICMP errors quoting ESP. */
export function espLanOut(remA: u32, spi: u32): u32 {
  const v = espFind(remA, spi, true);
  if (v == 0) return 0;
  const r = (v & ~OUT_BIT) - 1;
  return espAge(r) ? load<u32>(rec(r), ESP_LAN_ADDR) : 0;
}

export function espFlushAll(): void {
  const hw = slabHighWater(slab);
  for (let r: u32 = 0; r < hw; r++) if (load<u8>(rec(r), ESP_STATE) != 0) espFree(r);
}
/** `conntrack -D`: frees association r if it is in use. */
export function espDelete(r: u32): bool {
  if (r >= slabHighWater(slab) || load<u8>(rec(r), ESP_STATE) == 0) return false;
  espFree(r);
  return true;
}
export function espHighWater(): u32 { return slabHighWater(slab); }

// ---- state snapshot restore (assembly/snapshot.ts) -------------------------

/** One saved association (ESP_SIZE bytes at `src`): skipped when free or expired, else checked and inserted. */
export function espRestore(src: usize): u32 {
  const state = <u32>load<u8>(src, ESP_STATE);
  if (state == ESP_FREE) return RESTORE_OK;
  // Offloaded is this run's business (the kernel's table is gone with it): re-offered by the next packet.
  let flags = <u32>load<u16>(src, ESP_FLAGS) & ~ESPF_OFFLOADED;
  if (state > ESP_SQUELCHED || (flags & ~(ESPF_FORWARD | ESPF_UNREPLIED | ESPF_PROVISIONAL | ESPF_CHARGED)) != 0) return RESTORE_BAD_FIELD;
  const pending = state == ESP_OUTSTANDING || state == ESP_SQUELCHED;
  if (!pending && (flags & ESPF_CHARGED) != 0 && (flags & ESPF_PROVISIONAL) == 0) return RESTORE_BAD_FIELD;
  const left = load<u32>(src, ESP_EXPIRES) - nowDs;
  if (<i32>left <= 0) return RESTORE_OK;
  // An outstanding entry past its deadline would be squelched now, a squelch past its end freed: both go.
  if (pending && <i32>(load<u32>(src, ESP_DEADLINE) - nowDs) <= 0) return RESTORE_OK;
  if (left > SNAP_MAX_LIFETIME_DS || (pending && load<u32>(src, ESP_DEADLINE) - nowDs > SNAP_MAX_LIFETIME_DS)) return RESTORE_BAD_FIELD;
  const lanA = load<u32>(src, ESP_LAN_ADDR), remA = load<u32>(src, ESP_REM_ADDR);
  const spiOut = load<u32>(src, ESP_SPI_OUT), spiIn = load<u32>(src, ESP_SPI_IN), spiIn2 = load<u32>(src, ESP_SPI_IN2);
  if (spiOut == 0 && spiIn == 0) return RESTORE_BAD_FIELD;
  if (pending && (spiOut == 0 || spiIn != 0 || spiIn2 != 0)) return RESTORE_BAD_FIELD;
  if (spiIn2 != 0 && (spiIn == 0 || spiIn2 == spiIn)) return RESTORE_BAD_FIELD;
  // One (server, SPI) may be one entry's outbound and another's inbound
  // SPI (espOut allows that); twice in one direction it may not.
  if (spiOut != 0 && espFind(remA, spiOut, true) != 0) return RESTORE_DUPLICATE;
  if (spiIn != 0 && espFind(remA, spiIn, false) != 0) return RESTORE_DUPLICATE;
  if (spiIn2 != 0 && espFind(remA, spiIn2, false) != 0) return RESTORE_DUPLICATE;
  const r1 = slabAlloc(slab, espRecs);
  if (r1 == 0) return RESTORE_FULL;
  const e = rec(r1 - 1);
  memory.copy(e, src, ESP_SIZE);
  // A provisional SA whose time ran out while vpnmasq was down has settled.
  if ((flags & ESPF_PROVISIONAL) != 0 && <i32>(load<u32>(e, ESP_TIMER) - nowDs) <= 0) flags &= ~(ESPF_PROVISIONAL | ESPF_CHARGED);
  if ((flags & ESPF_PROVISIONAL) != 0 && load<u32>(e, ESP_TIMER) - nowDs > SNAP_MAX_LIFETIME_DS) return RESTORE_BAD_FIELD;
  if ((flags & ESPF_CHARGED) != 0 && !srcCharge(lanA, LIM_ESP)) flags &= ~ESPF_CHARGED;
  store<u16>(e, <u16>flags, ESP_FLAGS);
  if ((pending || (flags & ESPF_PROVISIONAL) != 0) && !outstandingAdd(r1 - 1)) return RESTORE_FULL;
  // The saved peer record number is this run's business: made anew.
  if (state == ESP_BOUND) store<u32>(e, peerEspBound(lanA, remA, load<u32>(e, ESP_EXPIRES)), ESP_PEER);
  if (spiOut != 0) kmInsert(espMap, MAP_MASK, remA, spiOut, r1 | OUT_BIT);
  if (spiIn != 0) kmInsert(espMap, MAP_MASK, remA, spiIn, r1);
  if (spiIn2 != 0) kmInsert(espMap, MAP_MASK, remA, spiIn2, r1);
  countAdd(C_ESP_ACTIVE, 1);
  return RESTORE_OK;
}

/** Every live association is found by its SPIs; pending ones are on the outstanding list; the gauge matches. */
export function espVerify(): bool {
  const hw = slabHighWater(slab);
  let live: u32 = 0, pending: u32 = 0;
  for (let r: u32 = 0; r < hw; r++) {
    const e = rec(r);
    const state = <u32>load<u8>(e, ESP_STATE);
    if (state == ESP_FREE) continue;
    live++;
    const remA = load<u32>(e, ESP_REM_ADDR), spiOut = load<u32>(e, ESP_SPI_OUT), spiIn = load<u32>(e, ESP_SPI_IN);
    // each SPI's slot points at this record (other slots may share the key)
    if (spiOut != 0 && !kmHas(espMap, MAP_MASK, remA, spiOut, (r + 1) | OUT_BIT)) return false;
    if (spiIn != 0 && !kmHas(espMap, MAP_MASK, remA, spiIn, r + 1)) return false;
    const spiIn2 = load<u32>(e, ESP_SPI_IN2);
    if (spiIn2 != 0 && !kmHas(espMap, MAP_MASK, remA, spiIn2, r + 1)) return false;
    if (state == ESP_OUTSTANDING || state == ESP_SQUELCHED || (load<u16>(e, ESP_FLAGS) & <u16>ESPF_PROVISIONAL) != 0) {
      pending++;
      let found = false;
      for (let i: u32 = 0; i < outstandingCount; i++) if (load<u32>(outstanding + (<usize>i << 2)) == r) found = true;
      if (!found) return false;
    }
  }
  return pending == outstandingCount && <u64>live == load<u64>(counters + (<usize>C_ESP_ACTIVE << 3));
}
