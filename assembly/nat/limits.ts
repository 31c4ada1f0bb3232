// Per-source caps (issue 8 item 5): no LAN host may take a whole table.
// Every table a LAN host can fill by itself (flows, IKE exchanges, PPTP
// calls, outstanding ESP associations, fragment entries) charges the host's
// counter here when it opens an entry and releases it when the entry goes;
// at the cap the new entry is refused with a reason of its own
// (src_*_limit), so the flooding host is held and the others keep working.
// The router's own traffic (source = the WAN address) is never capped.
// WAN sources are not counted: they are spoofable, and what they open is
// short-lived and evicted first instead (unrepliedDs, early drop).
//
// Table: SRC_SLOTS records (abi/records.ts, group src), open addressing on
// the LAN address (linear probing, backward-shift deletion; a record goes
// when all its counts are 0). Caps: the src_max_* settings (nat/state.ts).

import { SRC_ADDR, SRC_FLOWS, SRC_SIZE } from "../abi/records";
import { maxFlows, srcTable, SRC_SLOTS } from "../layout";
import { hash1 } from "./hash";
import { srcMaxCalls, srcMaxEspPending, srcMaxFlows, srcMaxFrags, srcMaxIke, wanAddr } from "./state";

export const LIM_FLOWS: u32 = 0;
export const LIM_IKE: u32 = 1;
export const LIM_CALLS: u32 = 2;
export const LIM_ESP: u32 = 3;   // outstanding (unanswered) ESP associations
export const LIM_FRAGS: u32 = 4;

const MASK: u32 = SRC_SLOTS - 1;
const MAX_SOURCES: u32 = SRC_SLOTS / 2;
let sources: u32 = 0;

/** The cap of `kind` (src_max_*; flows 0: a quarter of the table, at least 1024). */
export function limitOf(kind: u32): u32 {
  if (kind == LIM_FLOWS) return srcMaxFlows != 0 ? srcMaxFlows : (maxFlows / 4 > 1024 ? maxFlows / 4 : 1024);
  if (kind == LIM_IKE) return srcMaxIke;
  if (kind == LIM_CALLS) return srcMaxCalls;
  if (kind == LIM_ESP) return srcMaxEspPending;
  return srcMaxFrags;
}

@inline function home(a: u32): u32 {
  return hash1(<u64>a) & MASK; // nat/hash.ts
}
@inline function at(i: u32): usize { return srcTable + <usize>i * SRC_SIZE; }
/** Home slot of the record in slot i, or 0xffffffff when empty (nat/probe.ts). */
export function srcHomeAt(i: u32): u32 {
  const a = load<u32>(at(i), SRC_ADDR);
  return a == 0 ? 0xffffffff : home(a);
}
@inline function countAt(e: usize, kind: u32): u32 {
  // SRC_FLOWS is a u32; the u16 counts follow at SRC_IKE.. in LIM_* order
  return kind == LIM_FLOWS ? load<u32>(e, SRC_FLOWS) : <u32>load<u16>(e + 6 + (<usize>kind << 1));
}
@inline function countSet(e: usize, kind: u32, n: u32): void {
  if (kind == LIM_FLOWS) store<u32>(e, n, SRC_FLOWS);
  else store<u16>(e + 6 + (<usize>kind << 1), <u16>n);
}

/** Slot of `a`'s record, or the empty slot where it would go (bit 31 set). */
function slotOf(a: u32): u32 {
  let i = home(a);
  while (true) {
    const k = load<u32>(at(i), SRC_ADDR);
    if (k == a) return i;
    if (k == 0) return i | 0x80000000;
    i = (i + 1) & MASK;
  }
  return 0;
}

/**
 * Charges one entry of `kind` to source `a`. False when the source is at
 * its cap (or the source table is full): the caller refuses the entry.
 */
export function srcCharge(a: u32, kind: u32): bool {
  if (a == wanAddr || a == 0) return true;
  let i = slotOf(a);
  const cap = limitOf(kind);
  if (i & 0x80000000) {
    if (sources >= MAX_SOURCES) return false;
    i &= MASK;
    const e = at(i);
    memory.fill(e, 0, SRC_SIZE);
    store<u32>(e, a, SRC_ADDR);
    sources++;
  }
  const e = at(i);
  const n = countAt(e, kind);
  // A flow cap at or above the table size is no cap: the table's own limit applies.
  if (n >= cap && !(kind == LIM_FLOWS && cap >= maxFlows)) return false;
  countSet(e, kind, n + 1);
  return true;
}

/** Releases one entry of `kind` charged to `a`. */
export function srcRelease(a: u32, kind: u32): void {
  if (a == wanAddr || a == 0) return;
  const i0 = slotOf(a);
  if (i0 & 0x80000000) return;
  const e = at(i0);
  const n = countAt(e, kind);
  if (n != 0) countSet(e, kind, n - 1);
  if (load<u32>(e, SRC_FLOWS) != 0 || load<u64>(e, 8) != 0) return; // every count (the u16s at 8..15)
  // All counts 0: delete with backward shift so no tombstones accumulate.
  let i = i0;
  let j = i0;
  while (true) {
    j = (j + 1) & MASK;
    const x = load<u32>(at(j), SRC_ADDR);
    if (x == 0) break;
    const k = home(x);
    const stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (stays) continue;
    memory.copy(at(i), at(j), SRC_SIZE);
    i = j;
  }
  store<u32>(at(i), 0, SRC_ADDR);
  sources--;
}

/** Count of `kind` charged to `a` (tests, status). */
export function srcCount(a: u32, kind: u32): u32 {
  const i = slotOf(a);
  return (i & 0x80000000) ? 0 : countAt(at(i), kind);
}
export function srcSources(): u32 { return sources; }

/** Forgets every count (the tables were flushed). */
export function srcFlushAll(): void {
  memory.fill(srcTable, 0, <usize>SRC_SLOTS * SRC_SIZE);
  sources = 0;
}
