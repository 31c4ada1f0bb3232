// The flow table: fixed records plus two open-addressing indexes (linear
// probing, backward-shift deletion, so no tombstones ever accumulate).
// Outbound lookups key on (proto, lanAddr, lanPort, remoteAddr, remotePort),
// inbound on (proto, aliasPort, remoteAddr, remotePort). Index entries hold
// record number + 1; 0 is empty. Everything else talks to flows through the
// functions below.
//
// Record: FLOW_SIZE bytes, fields F_* and flags FL_* in abi/records.ts.
// Ports are host order. A free record keeps the next free record + 1 at 0.

import { C_EARLY_DROPS, C_FLOWS_ACTIVE, C_FLOWS_EXPIRED, C_FLOWS_NEW, EV_FLOW_EXPIRED, EV_FLOW_NEW } from "../abi/counters";
import {
  FLOW_SIZE, FL_CHARGED, FL_FIN_IN, FL_FIN_OUT, FL_HAIRPIN, FL_IN_USE, FL_NATT, FL_REDIRECT, FL_REPLIED, FL_WS_NONE, F_ALIAS_PORT,
  F_END_OUT, F_EXPIRES, F_FLAGS, F_HAIRPIN_PORT, F_HAIRPIN_SRC, F_LAN_ADDR, F_LAN_PORT, F_PKTS_IN, F_PKTS_OUT, F_PROTO, F_REM_ADDR, F_REM_PORT, F_STATE,
  F_TCP_OUT,
} from "../abi/records";
import { counters, flows, flowOutIndex, flowInIndex, hashMask, maxFlows } from "../layout";
import { count, countAdd, eventPush, isLanAddr, nowDs } from "./state";
import { hash1, hash2 } from "./hash";
import { bindOwns, bindRelease, bindRestore, protoIndex } from "./binding";
import {
  PROTO_ICMP, PROTO_TCP, PROTO_UDP, REFLECT_EXTERNAL, REFLECT_INTERNAL, RESTORE_BAD_BINDING, RESTORE_BAD_FIELD, RESTORE_DUPLICATE, RESTORE_FULL, RESTORE_OK,
  SNAP_MAX_LIFETIME_DS,
} from "../abi/codes";
import { LIM_FLOWS, srcCharge, srcRelease } from "./limits";
import { flowAcctClear } from "./acct";
import { TCPI_OFFLOADED } from "./fastpath";

let freeHead: u32 = 0;   // record + 1 of the first free record, 0 = none
let bumpNext: u32 = 0;   // records never used start here
let sweepHand: u32 = 0;
let evictHand: u32 = 0;
const EVICT_SCAN: u32 = 32;

/** Opened from the WAN side and not answered from the LAN yet: short-lived, evicted first. */
@inline export function flowUnrepliedWan(ff: u32): bool { return (ff & (FL_REDIRECT | FL_REPLIED)) == FL_REDIRECT; }

@inline export function rec(flow: u32): usize { return flows + (<usize>flow * FLOW_SIZE); }

// Keys through the engine's one keyed hash (nat/hash.ts): seeded per run, so
// WAN hosts cannot aim collisions at the inbound index, and every key word
// mixed on its own, so a LAN's regular tuples spread like random ones.
@inline export function hashOut(proto: u32, lanA: u32, lanP: u32, remA: u32, remP: u32): u32 {
  return hash2(<u64>lanA | (<u64>remA << 32), <u64>lanP | (<u64>remP << 16) | (<u64>proto << 32));
}
@inline export function hashIn(proto: u32, aliasP: u32, remA: u32, remP: u32): u32 {
  return hash2(<u64>remA | (<u64>aliasP << 32) | (<u64>remP << 48), <u64>proto);
}

@inline function recHashOut(r: usize): u32 {
  return hashOut(load<u8>(r, F_PROTO), load<u32>(r, F_LAN_ADDR), load<u16>(r, F_LAN_PORT),
    load<u32>(r, F_REM_ADDR), load<u16>(r, F_REM_PORT));
}
@inline function recHashIn(r: usize): u32 {
  return hashIn(load<u8>(r, F_PROTO), load<u16>(r, F_ALIAS_PORT), load<u32>(r, F_REM_ADDR), load<u16>(r, F_REM_PORT));
}

/** Home slot of the entry in slot i of the outbound or inbound index, or 0xffffffff when empty (nat/probe.ts). */
export function flowHomeAt(outbound: bool, i: u32): u32 {
  const e = load<u32>((outbound ? flowOutIndex : flowInIndex) + (<usize>i << 2));
  if (e == 0) return 0xffffffff;
  return (outbound ? recHashOut(rec(e - 1)) : recHashIn(rec(e - 1))) & hashMask;
}

// The batch's hashes: core.ts warmBatch hashes every slot's key (outbound on
// the inside, inbound on the outside) for its cache warm-up and keeps key and
// hash here (WARM_SIZE bytes a slot); the lookup of the packet in hand takes
// the hash from there instead of computing it again, when the key it looks up
// is exactly the one hashed (a rewrite before the lookup, an ICMP echo's
// identifier in a port's place, a header the warm-up read unchecked: the
// comparison fails, the hash is computed). Both directions hash their packed
// key words with the same hash2, so equal words mean an equal hash whichever
// lookup kept them: an outbound lookup that happens to meet an inbound key's
// words still gets the right hash.
const WARM_SIZE: usize = 24; // u64 (lanA, remA), u64 (lanP, remP, proto), u32 hash
const warmKeys: usize = memory.data(256 * 24); // one entry per batch slot (SLOT_COUNT at most)
let warmSlot: usize = 0;                       // the entry of the packet in hand, 0 = none

/** Hashes slot i's outbound key for the batch, keeps it, and returns the index entry at its home slot (a warm-up). */
@inline export function flowWarmOut(i: u32, proto: u32, lanA: u32, lanP: u32, remA: u32, remP: u32): u32 {
  const k1 = <u64>lanA | (<u64>remA << 32);
  const k2 = <u64>lanP | (<u64>remP << 16) | (<u64>proto << 32);
  const h = hash2(k1, k2); // hashOut
  const w = warmKeys + <usize>i * WARM_SIZE;
  store<u64>(w, k1); store<u64>(w, k2, 8); store<u32>(w, h, 16);
  return load<u32>(flowOutIndex + (<usize>(h & hashMask) << 2));
}
/** Hashes slot i's inbound key for the batch, keeps it, and returns the index entry at its home slot (a warm-up). */
@inline export function flowWarmIn(i: u32, proto: u32, aliasP: u32, remA: u32, remP: u32): u32 {
  const k1 = <u64>remA | (<u64>aliasP << 32) | (<u64>remP << 48);
  const k2 = <u64>proto;
  const h = hash2(k1, k2); // hashIn
  const w = warmKeys + <usize>i * WARM_SIZE;
  store<u64>(w, k1); store<u64>(w, k2, 8); store<u32>(w, h, 16);
  return load<u32>(flowInIndex + (<usize>(h & hashMask) << 2));
}
/** Slot i's packet is in hand (i < 0: none, between batches). */
@inline export function flowWarmSelect(i: i32): void { warmSlot = i < 0 ? 0 : warmKeys + <usize>i * WARM_SIZE; }

/** Outbound lookup; returns flow + 1 or 0. */
@inline export function flowFindOut(proto: u32, lanA: u32, lanP: u32, remA: u32, remP: u32): u32 {
  const k1 = <u64>lanA | (<u64>remA << 32);
  const k2 = <u64>lanP | (<u64>remP << 16) | (<u64>proto << 32);
  const w = warmSlot;
  let i = (w != 0 && load<u64>(w) == k1 && load<u64>(w, 8) == k2 ? load<u32>(w, 16) : hash2(k1, k2)) & hashMask;
  while (true) {
    const e = load<u32>(flowOutIndex + (<usize>i << 2));
    if (e == 0) return 0;
    const r = rec(e - 1);
    if (load<u32>(r, F_LAN_ADDR) == lanA && load<u32>(r, F_REM_ADDR) == remA &&
        load<u16>(r, F_LAN_PORT) == lanP && load<u16>(r, F_REM_PORT) == remP &&
        load<u8>(r, F_PROTO) == proto) return e;
    i = (i + 1) & hashMask;
  }
  return 0;
}

/** Inbound lookup; returns flow + 1 or 0. */
@inline export function flowFindIn(proto: u32, aliasP: u32, remA: u32, remP: u32): u32 {
  const k1 = <u64>remA | (<u64>aliasP << 32) | (<u64>remP << 48);
  const k2 = <u64>proto;
  const w = warmSlot;
  let i = (w != 0 && load<u64>(w) == k1 && load<u64>(w, 8) == k2 ? load<u32>(w, 16) : hash2(k1, k2)) & hashMask;
  while (true) {
    const e = load<u32>(flowInIndex + (<usize>i << 2));
    if (e == 0) return 0;
    const r = rec(e - 1);
    if (load<u32>(r, F_REM_ADDR) == remA && load<u16>(r, F_ALIAS_PORT) == aliasP &&
        load<u16>(r, F_REM_PORT) == remP && load<u8>(r, F_PROTO) == proto) return e;
    i = (i + 1) & hashMask;
  }
  return 0;
}

function indexInsert(index: usize, h: u32, e: u32): void {
  let i = h & hashMask;
  while (load<u32>(index + (<usize>i << 2)) != 0) i = (i + 1) & hashMask;
  store<u32>(index + (<usize>i << 2), e);
}

function indexRemove(index: usize, h: u32, e: u32, outbound: bool): void {
  let i = h & hashMask;
  while (load<u32>(index + (<usize>i << 2)) != e) i = (i + 1) & hashMask;
  // Backward-shift deletion: pull later entries of the run into the hole
  // unless their home slot lies cyclically in (hole, j].
  let j = i;
  while (true) {
    j = (j + 1) & hashMask;
    const x = load<u32>(index + (<usize>j << 2));
    if (x == 0) break;
    const r = rec(x - 1);
    const k = (outbound ? recHashOut(r) : recHashIn(r)) & hashMask;
    const stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (stays) continue;
    store<u32>(index + (<usize>i << 2), x);
    i = j;
  }
  store<u32>(index + (<usize>i << 2), 0);
}

/** Creates a flow; returns flow + 1, or 0 when the table is full. */
export function flowInsert(proto: u32, lanA: u32, lanP: u32, remA: u32, remP: u32, aliasP: u32,
  state: u32, flags: u32, lifetimeDs: u32): u32 {
  let f: u32;
  if (freeHead != 0) {
    f = freeHead - 1;
    freeHead = load<u32>(rec(f));
  } else if (bumpNext < maxFlows) {
    f = bumpNext++;
  } else {
    // Full: drop an unanswered entry to make room (conntrack's early_drop).
    const v = flowEvictCandidate((flags & FL_REDIRECT) != 0, lanA);
    if (v == 0) return 0;
    flowRemove(v - 1, true);
    count(C_EARLY_DROPS);
    f = freeHead - 1;
    freeHead = load<u32>(rec(f));
  }
  const r = rec(f);
  store<u32>(r, lanA, F_LAN_ADDR); store<u32>(r, remA, F_REM_ADDR);
  store<u16>(r, <u16>lanP, F_LAN_PORT); store<u16>(r, <u16>remP, F_REM_PORT);
  store<u16>(r, <u16>aliasP, F_ALIAS_PORT); store<u8>(r, <u8>proto, F_PROTO);
  store<u8>(r, <u8>state, F_STATE); store<u32>(r, nowDs + lifetimeDs, F_EXPIRES);
  store<u16>(r, <u16>(flags | FL_IN_USE), F_FLAGS); store<u16>(r, 0, F_TCP_OUT); // and F_TCP_IN
  store<u32>(r, 0, F_PKTS_OUT); store<u32>(r, 0, F_PKTS_IN);
  flowAcctClear(f);
  store<u64>(r, 0, F_END_OUT); // and F_END_IN
  indexInsert(flowOutIndex, hashOut(proto, lanA, lanP, remA, remP), f + 1);
  indexInsert(flowInIndex, hashIn(proto, aliasP, remA, remP), f + 1);
  count(C_FLOWS_NEW);
  countAdd(C_FLOWS_ACTIVE, 1);
  eventPush(EV_FLOW_NEW, 0, proto, 0, lanA, remA, lanP, remP, aliasP, flags);
  return f + 1;
}

/** Removes a flow and releases its port binding. */
export function flowRemove(f: u32, reasonEvent: bool): void {
  const r = rec(f);
  const proto = <u32>load<u8>(r, F_PROTO);
  indexRemove(flowOutIndex, recHashOut(r), f + 1, true);
  indexRemove(flowInIndex, recHashIn(r), f + 1, false);
  // A hairpin flow's alias port is unique per server endpoint, not a binding (nat/hairpin.ts).
  if ((load<u16>(r, F_FLAGS) & <u16>FL_HAIRPIN) == 0) bindRelease(protoIndex(proto), load<u16>(r, F_ALIAS_PORT));
  if (load<u16>(r, F_FLAGS) & <u16>FL_CHARGED) srcRelease(load<u32>(r, F_LAN_ADDR), LIM_FLOWS);
  if (reasonEvent) {
    eventPush(EV_FLOW_EXPIRED, 0, proto, 0, load<u32>(r, F_LAN_ADDR), load<u32>(r, F_REM_ADDR),
      load<u16>(r, F_LAN_PORT), load<u16>(r, F_REM_PORT), load<u16>(r, F_ALIAS_PORT), load<u32>(r, F_PKTS_OUT));
  }
  store<u16>(r, 0, F_FLAGS);
  store<u32>(r, freeHead, 0);
  freeHead = f + 1;
  countAdd(C_FLOWS_ACTIVE, -1);
}

/**
 * An entry that may be dropped for a new one when the table is full
 * (flow + 1, or 0), looking at EVICT_SCAN records sampled over the table:
 * entries the WAN side opened and the LAN never answered first, then (for
 * a LAN host's new flow only) an unanswered entry of another LAN host.
 * Answered flows are never dropped, a WAN packet never drops a LAN host's
 * entry, and a host that filled the table cannot churn through it.
 */
function flowEvictCandidate(forWan: bool, lanA: u32): u32 {
  let lanCand: u32 = 0;
  for (let n: u32 = 0; n < EVICT_SCAN; n++) {
    // Samples spread over the whole table (answered flows come in runs).
    const f = hash1(<u64>(evictHand++)) % bumpNext;
    const r = rec(f);
    const ff = <u32>load<u16>(r, F_FLAGS);
    if ((ff & FL_IN_USE) == 0 || (ff & FL_REPLIED) != 0) continue;
    if (ff & FL_REDIRECT) return f + 1;
    if (lanCand == 0 && load<u32>(r, F_LAN_ADDR) != lanA) lanCand = f + 1;
  }
  return forWan ? 0 : lanCand;
}

@inline export function flowTouch(r: usize, lifetimeDs: u32): void {
  store<u32>(r, nowDs + lifetimeDs, F_EXPIRES);
}

/** Expires up to `budget` records from the clock hand on; returns how many expired. */
export function flowSweep(budget: u32): u32 {
  if (bumpNext == 0) return 0;
  let expired: u32 = 0;
  if (budget > bumpNext) budget = bumpNext;
  for (let n: u32 = 0; n < budget; n++) {
    if (sweepHand >= bumpNext) sweepHand = 0;
    const f = sweepHand++;
    const r = rec(f);
    if ((load<u16>(r, F_FLAGS) & FL_IN_USE) != 0 && <i32>(nowDs - load<u32>(r, F_EXPIRES)) >= 0) {
      flowRemove(f, true);
      count(C_FLOWS_EXPIRED);
      expired++;
    }
  }
  return expired;
}

export function flowActive(): u32 { return <u32>load<u64>(counters + (<usize>C_FLOWS_ACTIVE << 3)); }
export function flowHighWater(): u32 { return bumpNext; }

/** Drops every flow at once (WAN address change); bindings are reset by the caller. */
/** `conntrack -D`: removes flow f (and frees its port binding) if it is in use. */
export function flowDelete(f: u32): bool {
  if (f >= bumpNext || (load<u16>(rec(f), F_FLAGS) & FL_IN_USE) == 0) return false;
  flowRemove(f, false);
  return true;
}

export function flowFlushAll(): u32 {
  const n = flowActive();
  memory.fill(flowOutIndex, 0, (<usize>hashMask + 1) << 2);
  memory.fill(flowInIndex, 0, (<usize>hashMask + 1) << 2);
  memory.fill(flows, 0, <usize>bumpNext * FLOW_SIZE);
  freeHead = 0; bumpNext = 0; sweepHand = 0; evictHand = 0;
  countAdd(C_FLOWS_ACTIVE, -(<i64>n));
  return n;
}

// ---- state snapshot restore (assembly/snapshot.ts) -------------------------

const FLOW_STATE_MAX: u32 = 6; // TCP_CLOSE (masq.ts), the highest state a flow has
const FL_ALL: u32 = FL_IN_USE | FL_REDIRECT | FL_REPLIED | FL_FIN_OUT | FL_FIN_IN | FL_NATT | FL_CHARGED | FL_HAIRPIN | FL_WS_NONE;

/** Back to an empty table (init has zeroed the memory). */
export function flowReset(): void { freeHead = 0; bumpNext = 0; sweepHand = 0; }

/**
 * One saved record (FLOW_SIZE bytes at `src`): skipped when free or
 * expired, else checked and inserted with its binding. RESTORE_OK or an
 * error; after an error the engine is reset, so a half-inserted record
 * never lives on.
 */
export function flowRestore(src: usize): u32 {
  const flags = <u32>load<u16>(src, F_FLAGS);
  if ((flags & FL_IN_USE) == 0) return RESTORE_OK;
  const left = load<u32>(src, F_EXPIRES) - nowDs;
  if (<i32>left <= 0) return RESTORE_OK;                 // expired while vpnmasq was down
  if (left > SNAP_MAX_LIFETIME_DS) return RESTORE_BAD_FIELD; // longer than any timeout
  const proto = <u32>load<u8>(src, F_PROTO);
  if (proto != PROTO_TCP && proto != PROTO_UDP && proto != PROTO_ICMP) return RESTORE_BAD_FIELD;
  if (<u32>load<u8>(src, F_STATE) > FLOW_STATE_MAX || (flags & ~FL_ALL) != 0) return RESTORE_BAD_FIELD;
  const alias = <u32>load<u16>(src, F_ALIAS_PORT);
  if (alias == 0) return RESTORE_BAD_FIELD;
  const hairpin = (flags & FL_HAIRPIN) != 0;
  if (hairpin) {
    // Opened by a LAN host, never through a forward from the WAN; a TCP or UDP
    // forwarded port; the source the server sees is one of the two kinds.
    if (proto == PROTO_ICMP || (flags & FL_REDIRECT) != 0 || load<u16>(src, F_HAIRPIN_PORT) == 0) return RESTORE_BAD_FIELD;
    if (!isLanAddr(load<u32>(src, F_LAN_ADDR)) || !isLanAddr(load<u32>(src, F_REM_ADDR))) return RESTORE_BAD_FIELD;
    const via = <u32>load<u8>(src, F_HAIRPIN_SRC);
    if (via != REFLECT_INTERNAL && via != REFLECT_EXTERNAL) return RESTORE_BAD_FIELD;
  }
  if (bumpNext >= maxFlows) return RESTORE_FULL;
  const f = bumpNext;
  // Copied first (the index walks compare records), then into both indexes,
  // each walk also looking for the same key.
  memory.copy(rec(f), src, FLOW_SIZE);
  const r = rec(f);
  // Not in this run's fast path (nat/fastpath.ts): its next packet offers it again.
  store<u8>(r, load<u8>(r, F_TCP_OUT) & ~<u8>TCPI_OFFLOADED, F_TCP_OUT);
  if (!indexInsertNew(flowOutIndex, recHashOut(r), f, true)) return RESTORE_DUPLICATE;
  if (!indexInsertNew(flowInIndex, recHashIn(r), f, false)) return RESTORE_DUPLICATE;
  const b = hairpin ? 0 : bindRestore(protoIndex(proto), alias, load<u32>(r, F_LAN_ADDR), load<u16>(r, F_LAN_PORT));
  if (b == 1) {
    // A redirect added since has this port: the flow goes, the rest stays.
    indexRemove(flowOutIndex, recHashOut(r), f + 1, true);
    indexRemove(flowInIndex, recHashIn(r), f + 1, false);
    memory.fill(r, 0, FLOW_SIZE);
    return RESTORE_OK;
  }
  if (b != 0) return RESTORE_BAD_BINDING;
  // Counted against its LAN host's cap again; over a cap lowered since, it
  // stays, uncounted (its release then finds nothing to release).
  if ((flags & FL_CHARGED) != 0 && !srcCharge(load<u32>(r, F_LAN_ADDR), LIM_FLOWS)) store<u16>(r, <u16>(flags & ~FL_CHARGED), F_FLAGS);
  bumpNext++;
  countAdd(C_FLOWS_ACTIVE, 1);
  return RESTORE_OK;
}

/** Inserts record f + 1 unless a record with the same key is indexed already (false then). */
function indexInsertNew(index: usize, h: u32, f: u32, outbound: bool): bool {
  const r = rec(f);
  let i = h & hashMask;
  while (true) {
    const x = load<u32>(index + (<usize>i << 2));
    if (x == 0) break;
    const o = rec(x - 1);
    const same = load<u32>(o, F_REM_ADDR) == load<u32>(r, F_REM_ADDR) && load<u16>(o, F_REM_PORT) == load<u16>(r, F_REM_PORT) &&
      load<u8>(o, F_PROTO) == load<u8>(r, F_PROTO) && (outbound
        ? load<u32>(o, F_LAN_ADDR) == load<u32>(r, F_LAN_ADDR) && load<u16>(o, F_LAN_PORT) == load<u16>(r, F_LAN_PORT)
        : load<u16>(o, F_ALIAS_PORT) == load<u16>(r, F_ALIAS_PORT));
    if (same) return false;
    i = (i + 1) & hashMask;
  }
  store<u32>(index + (<usize>i << 2), f + 1);
  return true;
}

/** Every live flow is found by both indexes and holds its binding; the gauge matches. */
export function flowVerify(): bool {
  let live: u32 = 0;
  for (let f: u32 = 0; f < bumpNext; f++) {
    const r = rec(f);
    if ((load<u16>(r, F_FLAGS) & <u16>FL_IN_USE) == 0) continue;
    live++;
    const proto = <u32>load<u8>(r, F_PROTO);
    const lanA = load<u32>(r, F_LAN_ADDR), remA = load<u32>(r, F_REM_ADDR);
    const lanP = <u32>load<u16>(r, F_LAN_PORT), remP = <u32>load<u16>(r, F_REM_PORT);
    const alias = <u32>load<u16>(r, F_ALIAS_PORT);
    if (flowFindOut(proto, lanA, lanP, remA, remP) != f + 1) return false;
    if (flowFindIn(proto, alias, remA, remP) != f + 1) return false;
    if ((load<u16>(r, F_FLAGS) & <u16>FL_HAIRPIN) == 0 && !bindOwns(protoIndex(proto), alias, lanA, lanP)) return false;
  }
  return live == flowActive();
}
