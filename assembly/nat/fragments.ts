// Fragments, tracked by IP ID as libalias does: the first fragment (offset
// 0) carries the L4 header and is translated like any packet; the engine
// remembers (src, dst, id, proto) → new address, and later fragments follow
// it. Memory is a fixed set-associative table (FRAG_CAP entries, 4 ways);
// inbound entries die 3 s after the datagram is complete (FRF_DONE: a late
// duplicate still goes its way; a full bucket takes them back first),
// outbound ones when it is complete, any after frag_timeout.
// Dropped: first fragments too short for the L4 header (tiny-fragment
// attack, RFC 1858), fragments that overlap the first (RFC 1858 §3.2 /
// RFC 3128 overlapping attack).
//
// No datagram of one host is handed to another:
// - A tracked datagram's destination never changes. A first fragment of
//   another datagram with the same (src, dst, IP ID, proto) — a server that
//   wrapped its IDs, or a spoofer — cannot be told apart from the tracked
//   one by its later fragments, so the key is marked contested: that first
//   fragment and every later fragment of the key are dropped
//   (frag_id_collision) until the entry times out. A duplicate of the first
//   fragment (same destination, same L4 identity: a retransmission) passes.
//   Limit: a later fragment that comes before its own first fragment while
//   another datagram under the same key is tracked cannot be told from that
//   datagram's (no field says which datagram it belongs to without
//   reassembly); it follows the tracked one.
// - Fragmented outbound datagrams leave with a fresh IP ID, all fragments of
//   one datagram alike, so two LAN hosts' datagrams to one server never
//   share (WAN address, server, proto, ID). Unfragmented packets keep their
//   ID (a router further on that fragments a DF-clear one sees the host's).
// - Later fragments that come before their first are held (a copy in one of
//   HOLD_CAP slots, at most HOLD_PER_SOURCE per sender, HOLD_DS at most) and
//   released when the first fragment is tracked: the engine marks their
//   hold slots VERDICT_PASS and the supervisor writes them to the TUN the
//   batch came from, right after the batch (releasedCount() > 0). The batch
//   slot itself is a drop (frag_no_head), so rx = passed + dropped holds per
//   batch; frags_held / frags_released / frags_hold_expired count the rest.
//
// Entry: FRAG_SIZE bytes, fields FRAG_* in abi/records.ts; held fragments:
// HOLD_* records beside the hold slots.

import { PROTO_ESP, PROTO_GRE, PROTO_ICMP, PROTO_TCP, PROTO_UDP, SIDE_INSIDE, VERDICT_PASS } from "../abi/codes";
import {
  C_FRAGS_ACTIVE, C_FRAGS_HELD, C_FRAGS_HOLD_DISCARDED, C_FRAGS_HOLD_EXPIRED, C_FRAGS_RELEASED, C_IP_IDS_REWRITTEN,
} from "../abi/counters";
import {
  FRAG_DST_ADDR, FRAG_EXPIRES, FRAG_FIRST_END, FRAG_FLAGS, FRAG_IP_ID, FRAG_L4_KEY, FRAG_NEW_ADDR, FRAG_NEW_ID,
  FRAG_PROTO, FRAG_SEEN, FRAG_SIDE, FRAG_SIZE, FRAG_SRC_ADDR, FRAG_TOTAL, FRF_CONTESTED, FRF_DONE, HOLD_DST_ADDR, HOLD_EXPIRES,
  HOLD_IP_ID, HOLD_PROTO, HOLD_SIDE, HOLD_SIZE, HOLD_SRC_ADDR,
} from "../abi/records";
import {
  frags, holdLens, holdRecs, holdSlots, holdVerdicts, FRAG_CAP, HOLD_CAP, HOLD_DS, HOLD_PER_SOURCE, SLOT_SIZE,
} from "../layout";
import { adjust16 } from "../wire/checksum";
import {
  IP_CSUM, IP_DST, IP_FLAG_MF, IP_FRAG, IP_ID, IP_OFFSET_MASK, IP_SRC, IP_TOTAL_LEN, ipId, ipDst, ipSrc,
} from "../wire/ipv4";
import { Drop } from "../abi/reasons";
import { rewriteAddr, ttlCompensate } from "./rewrite";
import { count, countAdd, fragDs, hashSeed, nowDs } from "./state";
import { LIM_FRAGS, srcCharge, srcRelease } from "./limits";
import { hash2 } from "./hash";

const WAYS: u32 = 4;
const BUCKETS: u32 = FRAG_CAP / WAYS;

@inline function bucketOf(src: u32, dst: u32, id: u32, proto: u32): usize {
  const h = hash2(<u64>src | (<u64>dst << 32), <u64>id | (<u64>proto << 16)); // nat/hash.ts
  return frags + <usize>((h & (BUCKETS - 1)) * WAYS) * FRAG_SIZE;
}

@inline function live(e: usize): bool {
  return load<u8>(e, FRAG_SIDE) != 0 && <i32>(nowDs - load<u32>(e, FRAG_EXPIRES)) < 0;
}

function free(e: usize): void {
  const side1 = load<u8>(e, FRAG_SIDE);
  if (side1 != 0) countAdd(C_FRAGS_ACTIVE, -1);
  if (side1 == 1) srcRelease(load<u32>(e, FRAG_SRC_ADDR), LIM_FRAGS); // outbound: its LAN host's count (limits.ts)
  store<u8>(e, 0, FRAG_SIDE);
}

function find(src: u32, dst: u32, id: u32, proto: u32, side: u32): usize {
  const b = bucketOf(src, dst, id, proto);
  for (let w: u32 = 0; w < WAYS; w++) {
    const e = b + <usize>w * FRAG_SIZE;
    if (load<u8>(e, FRAG_SIDE) == <u8>(side + 1) && load<u32>(e, FRAG_SRC_ADDR) == src && load<u32>(e, FRAG_DST_ADDR) == dst &&
        load<u16>(e, FRAG_IP_ID) == <u16>id && load<u8>(e, FRAG_PROTO) == <u8>proto) {
      if (live(e)) return e;
      free(e);
      return 0;
    }
  }
  return 0;
}

/** How long a complete datagram's entry lingers (and a fragment is held): never past frag_timeout. */
@inline function lingerDs(): u32 { return fragDs < HOLD_DS ? fragDs : HOLD_DS; }

/**
 * Accounts the bytes of one fragment. A complete datagram's entry is not
 * freed at once: it lingers (FRF_DONE) so that a late duplicate of one of
 * its fragments still goes its way, and another datagram's first fragment
 * under the same key meanwhile is a collision, not a fresh datagram that
 * the duplicate would then join.
 */
function account(e: usize, offset: u32, payload: u32, more: bool): void {
  const fl = <u32>load<u16>(e, FRAG_FLAGS);
  if ((fl & FRF_DONE) != 0) return;
  const seen = load<u32>(e, FRAG_SEEN) + payload;
  store<u32>(e, seen, FRAG_SEEN);
  if (!more) store<u32>(e, offset + payload, FRAG_TOTAL);
  const total = load<u32>(e, FRAG_TOTAL);
  if (total != 0 && seen >= total) {
    // Outbound keys hold the LAN host's own address: nothing to confuse, free at once.
    if (load<u8>(e, FRAG_SIDE) == <u8>(SIDE_INSIDE + 1)) { free(e); return; }
    store<u16>(e, <u16>(fl | FRF_DONE), FRAG_FLAGS);
    store<u32>(e, nowDs + lingerDs(), FRAG_EXPIRES);
  }
}

// ---- outbound IP IDs ----------------------------------------------------

let idCounter: u32 = 0;

/**
 * A fresh IP ID: an odd multiplier and an offset (both from the per-run
 * seed) over a counter, a bijection mod 2^16, so 65536 consecutive
 * datagrams never share an ID and the sequence is not the plain counter.
 */
@inline function nextIpId(): u32 {
  idCounter++;
  return (idCounter * (hashSeed | 1) + (hashSeed >>> 16)) & 0xffff;
}

/** Sets the IP ID to `raw` (as stored, no byte swap: the value is arbitrary) and adjusts the header checksum. */
@inline function rewriteIpId(p: usize, raw: u32): void {
  const oldW = <u32>load<u16>(p, IP_ID);
  store<u16>(p, <u16>raw, IP_ID);
  store<u16>(p, <u16>adjust16(load<u16>(p, IP_CSUM), oldW, raw), IP_CSUM);
}

// ---- first fragments ----------------------------------------------------

/**
 * The first fragment's L4 identity as received (before translation): tells
 * a duplicate first fragment from another datagram's with the same IP ID.
 * The L4 header is present (l4Check passed; ESP/GRE checked here).
 */
export function fragL4Key(proto: u32, l4: usize, l4len: u32): u32 {
  if (proto == PROTO_TCP || proto == PROTO_UDP) return load<u32>(l4);   // both ports
  if (proto == PROTO_ICMP) return load<u32>(l4, 4);                    // echo identifier + sequence
  if (l4len < 8) return 0;
  if (proto == PROTO_ESP) return load<u32>(l4);                        // SPI
  if (proto == PROTO_GRE) return <u32>load<u16>(l4, 6);                // PPTP Call ID in the key
  return 0;
}

/**
 * After a first fragment (MF set, offset 0) was translated: remember how
 * the rest of its datagram is rewritten, and release its held later
 * fragments. `src`/`dst`/`id` are as received; `newAddr` replaces src
 * (side 0, outbound) or dst (side 1); outbound, the datagram gets a fresh
 * IP ID (set in `p` here). `l4key` is fragL4Key() of the packet as received.
 */
export function fragNoteFirst(p: usize, side: u32, src: u32, dst: u32, id: u32, proto: u32, newAddr: u32, payload: u32,
  l4key: u32): u32 {
  let e = find(src, dst, id, proto, side);
  if (e != 0) {
    const fl = <u32>load<u16>(e, FRAG_FLAGS);
    if ((fl & FRF_CONTESTED) == 0 && load<u32>(e, FRAG_NEW_ADDR) == newAddr && load<u32>(e, FRAG_L4_KEY) == l4key) {
      // The same first fragment again (a retransmission): same way, same ID; its bytes were counted.
      if ((fl & FRF_DONE) == 0) store<u32>(e, nowDs + fragDs, FRAG_EXPIRES);
      if (side == SIDE_INSIDE) rewriteIpId(p, load<u16>(e, FRAG_NEW_ID));
      return Drop.NONE;
    }
    // Another datagram under a tracked key: the later fragments of the two
    // cannot be told apart, so the key is contested and nobody gets them.
    // (A complete datagram's key stays contested only while it lingers.)
    store<u16>(e, <u16>(fl | FRF_CONTESTED), FRAG_FLAGS);
    if ((fl & FRF_DONE) == 0) store<u32>(e, nowDs + fragDs, FRAG_EXPIRES);
    return Drop.FRAG_ID_COLLISION;
  }
  const b = bucketOf(src, dst, id, proto);
  for (let w: u32 = 0; w < WAYS; w++) {
    const c = b + <usize>w * FRAG_SIZE;
    if (!live(c)) { free(c); e = c; break; }
  }
  if (e == 0) {
    // No free way: a complete datagram's lingering entry gives way first.
    for (let w: u32 = 0; w < WAYS; w++) {
      const c = b + <usize>w * FRAG_SIZE;
      if ((load<u16>(c, FRAG_FLAGS) & <u16>FRF_DONE) != 0) { free(c); e = c; break; }
    }
  }
  if (e == 0) return Drop.FRAG_TABLE_FULL;
  // A LAN host holds at most src_max_frags datagrams in flight.
  if (side == SIDE_INSIDE && !srcCharge(src, LIM_FRAGS)) return Drop.SRC_FRAG_LIMIT;
  store<u32>(e, src, FRAG_SRC_ADDR); store<u32>(e, dst, FRAG_DST_ADDR); store<u16>(e, <u16>id, FRAG_IP_ID); store<u8>(e, <u8>proto, FRAG_PROTO);
  store<u8>(e, <u8>(side + 1), FRAG_SIDE);
  store<u32>(e, 0, FRAG_SEEN); store<u32>(e, 0, FRAG_TOTAL);
  store<u16>(e, 0, FRAG_FLAGS); store<u32>(e, l4key, FRAG_L4_KEY);
  countAdd(C_FRAGS_ACTIVE, 1);
  store<u32>(e, newAddr, FRAG_NEW_ADDR);
  store<u32>(e, nowDs + fragDs, FRAG_EXPIRES);
  store<u32>(e, payload, FRAG_FIRST_END);
  if (side == SIDE_INSIDE) {
    const nid = nextIpId();
    store<u16>(e, <u16>nid, FRAG_NEW_ID);
    rewriteIpId(p, nid);
    count(C_IP_IDS_REWRITTEN);
  }
  account(e, 0, payload, true);
  release(e, side, src, dst, id, proto);
  return Drop.NONE;
}

/** Rewrites a later fragment like its first and accounts it; Drop.NONE or why not. */
function follow(e: usize, p: usize, side: u32, offset: u32, payload: u32, more: bool): u32 {
  if ((load<u16>(e, FRAG_FLAGS) & <u16>FRF_CONTESTED) != 0) return Drop.FRAG_ID_COLLISION;
  if (offset < load<u32>(e, FRAG_FIRST_END)) return Drop.FRAG_OVERLAP;
  rewriteAddr(p, side == SIDE_INSIDE ? IP_SRC : IP_DST, load<u32>(e, FRAG_NEW_ADDR));
  if (side == SIDE_INSIDE) rewriteIpId(p, load<u16>(e, FRAG_NEW_ID));
  account(e, offset, payload, more);
  return Drop.NONE;
}

/** A later fragment (offset > 0): rewrite it like its first fragment was, or hold it until the first comes. */
export function fragFollow(p: usize, side: u32, proto: u32, offset: u32, payload: u32, more: bool): u32 {
  const src = ipSrc(p);
  const dst = ipDst(p);
  const id = ipId(p);
  const e = find(src, dst, id, proto, side);
  if (e == 0) {
    hold(p, side, src, dst, id, proto);
    return Drop.FRAG_NO_HEAD;
  }
  return follow(e, p, side, offset, payload, more);
}

// ---- held later fragments -----------------------------------------------

let releasedCount: u32 = 0;

@inline function holdRec(i: u32): usize { return holdRecs + <usize>i * HOLD_SIZE; }
@inline function holdSlot(i: u32): usize { return holdSlots + <usize>i * SLOT_SIZE; }
/** Released this batch, not yet written by the supervisor: the slot is not free. */
@inline function pending(i: u32): bool { return load<u8>(holdVerdicts + i) == VERDICT_PASS; }

function holdFree(i: u32, counter: u32): void {
  store<u8>(holdRec(i), 0, HOLD_SIDE);
  count(counter);
}

/** Keeps a copy of a later fragment whose first has not come, within the per-source and total bounds. */
function hold(p: usize, side: u32, src: u32, dst: u32, id: u32, proto: u32): void {
  // A hold slot is a plain slot (SLOT_SIZE): with TUN offloads a read may be
  // longer (a fragment off a jumbo link); such a fragment is not held (it
  // stays the frag_no_head drop it was counted as).
  if (<u32>bswap<u16>(load<u16>(p, IP_TOTAL_LEN)) > SLOT_SIZE) return;
  let fromSrc: u32 = 0;
  let freeSlot: i32 = -1;
  let oldest: i32 = -1;
  for (let i: u32 = 0; i < HOLD_CAP; i++) {
    if (pending(i)) continue;
    const h = holdRec(i);
    if (load<u8>(h, HOLD_SIDE) == 0) { if (freeSlot < 0) freeSlot = <i32>i; continue; }
    if (<i32>(nowDs - load<u32>(h, HOLD_EXPIRES)) >= 0) {
      holdFree(i, C_FRAGS_HOLD_EXPIRED);
      if (freeSlot < 0) freeSlot = <i32>i;
      continue;
    }
    if (load<u32>(h, HOLD_SRC_ADDR) == src) fromSrc++;
    if (oldest < 0 || <i32>(load<u32>(h, HOLD_EXPIRES) - load<u32>(holdRec(<u32>oldest), HOLD_EXPIRES)) < 0) oldest = <i32>i;
  }
  if (fromSrc >= HOLD_PER_SOURCE) return;
  if (freeSlot < 0) {
    // All slots hold other sources' fragments: the oldest gives way (each source holds few).
    if (oldest < 0) return;
    holdFree(<u32>oldest, C_FRAGS_HOLD_DISCARDED);
    freeSlot = oldest;
  }
  const i = <u32>freeSlot;
  const len = <u32>bswap<u16>(load<u16>(p, IP_TOTAL_LEN)); // ≤ SLOT_SIZE (above); link padding is not kept
  memory.copy(holdSlot(i), p, len);
  store<u32>(holdLens + (<usize>i << 2), len);
  const h = holdRec(i);
  store<u32>(h, src, HOLD_SRC_ADDR); store<u32>(h, dst, HOLD_DST_ADDR); store<u16>(h, <u16>id, HOLD_IP_ID);
  store<u8>(h, <u8>proto, HOLD_PROTO); store<u8>(h, <u8>(side + 1), HOLD_SIDE);
  store<u32>(h, nowDs + lingerDs(), HOLD_EXPIRES);
  count(C_FRAGS_HELD);
}

/** The first fragment of (src, dst, id, proto) is tracked in `e`: its held later fragments go out. */
function release(e: usize, side: u32, src: u32, dst: u32, id: u32, proto: u32): void {
  for (let i: u32 = 0; i < HOLD_CAP; i++) {
    const h = holdRec(i);
    if (load<u8>(h, HOLD_SIDE) != <u8>(side + 1) || load<u32>(h, HOLD_SRC_ADDR) != src ||
        load<u32>(h, HOLD_DST_ADDR) != dst || load<u16>(h, HOLD_IP_ID) != <u16>id || load<u8>(h, HOLD_PROTO) != <u8>proto) continue;
    if (<i32>(nowDs - load<u32>(h, HOLD_EXPIRES)) >= 0) { holdFree(i, C_FRAGS_HOLD_EXPIRED); continue; }
    // The held copy passed ipv4Check when it came; read its fragment fields again.
    const hp = holdSlot(i);
    const frag = <u32>bswap<u16>(load<u16>(hp, IP_FRAG));
    const payload = <u32>bswap<u16>(load<u16>(hp, IP_TOTAL_LEN)) - ((<u32>load<u8>(hp) & 0xf) << 2);
    if (follow(e, hp, side, (frag & IP_OFFSET_MASK) << 3, payload, (frag & IP_FLAG_MF) != 0) != Drop.NONE) {
      holdFree(i, C_FRAGS_HOLD_DISCARDED);
      continue;
    }
    ttlCompensate(hp);
    store<u8>(h, 0, HOLD_SIDE);
    store<u8>(holdVerdicts + i, VERDICT_PASS);
    releasedCount++;
    count(C_FRAGS_RELEASED);
  }
}

/** Start of a batch: the fragments released by the last one have been written; their slots are free again. */
export function fragHoldReap(): void {
  if (releasedCount == 0) return;
  memory.fill(holdVerdicts, 0, HOLD_CAP);
  releasedCount = 0;
}

/** Held fragments the last process() call released (hold slots with VERDICT_PASS). */
export function fragReleasedCount(): u32 { return releasedCount; }

let sweepHand: u32 = 0;

/** Frees up to `budget` entries past their timeout (datagrams whose fragments never all came), and expired holds. */
export function fragSweep(budget: u32): void {
  if (budget > FRAG_CAP) budget = FRAG_CAP;
  for (let n: u32 = 0; n < budget; n++) {
    if (sweepHand >= FRAG_CAP) sweepHand = 0;
    const e = frags + <usize>(sweepHand++) * FRAG_SIZE;
    if (load<u8>(e, FRAG_SIDE) != 0 && !live(e)) free(e);
  }
  for (let i: u32 = 0; i < HOLD_CAP; i++) {
    const h = holdRec(i);
    if (load<u8>(h, HOLD_SIDE) != 0 && <i32>(nowDs - load<u32>(h, HOLD_EXPIRES)) >= 0) holdFree(i, C_FRAGS_HOLD_EXPIRED);
  }
}

/** Drops every entry and every held fragment (a new WAN address). */
export function fragFlushAll(): void {
  for (let i: u32 = 0; i < FRAG_CAP; i++) free(frags + <usize>i * FRAG_SIZE);
  for (let i: u32 = 0; i < HOLD_CAP; i++) store<u8>(holdRec(i), 0, HOLD_SIDE);
  memory.fill(holdVerdicts, 0, HOLD_CAP);
  releasedCount = 0;
}
