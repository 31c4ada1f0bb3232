// State snapshot (issue 9): the engine lists the regions that hold its
// state (one record array per table, up to its high-water mark, plus the
// counters); the supervisor copies them to a file between two batches and
// hands them back after a restart, through the packet slots.
//
// Restore never trusts the file: each saved record is checked (fields in
// range, keys unique, consistent with the port bindings) and inserted
// through its table's own code, which rebuilds the hash indexes (with this
// run's seed), the free lists, the port bindings, the ESP outstanding list,
// the Call ID alias map and the peer facts ESP and IKE share. Free and
// expired records are skipped. Nothing saved is ever used as a pointer or
// an index, so no file can make the engine read or write outside a table.
// On any error the supervisor calls reset(): all or nothing.
//
// Times: the supervisor continues the engine clock where the saved one
// would be now (src/engine/engine.ts continueClock), so saved times are
// taken as they are, and whatever a table adds to its record comes along.
// A record size that changes refuses old snapshots (the size is in the
// file); a meaning that changes without it: bump SNAP_LAYOUT_VERSION.
//
// With option acct the flows' byte counters are one more region, right
// after the flows (nat/acct.ts maps each saved counter record to the flow
// its flow record became). Without it the regions are what they always were.

import {
  RESTORE_BAD_COUNT, RESTORE_BAD_REGION, RESTORE_INCONSISTENT, RESTORE_OK, RESTORE_ORDER, SNAP_CALLS, SNAP_COUNTERS,
  SNAP_ESP, SNAP_FLOW_ACCT, SNAP_FLOWS, SNAP_IKE,
} from "./abi/codes";
import {
  COUNTER_SLOTS, C_BINDINGS_ACTIVE, C_CALLS_ACTIVE, C_ESP_ACTIVE, C_FLOWS_ACTIVE, C_FRAGS_ACTIVE, C_IKE_ACTIVE,
} from "./abi/counters";
import { CALL_SIZE, ESP_SIZE, FLOW_ACCT_SIZE, FLOW_SIZE, IKE_SIZE } from "./abi/records";
import { NO_FLOW, acctRestore, acctRestoreNote, acctRestoreSettle } from "./nat/acct";
import { acctOn, callRecs, counters, espRecs, flowAcct, flows, ikeRecs, maxFlows, slots, CALL_CAP, ESP_CAP, IKE_CAP, SLOT_COUNT, SLOT_SIZE } from "./layout";
import { setClock } from "./nat/state";
import { flowHighWater, flowRestore, flowVerify } from "./nat/table";
import { espHighWater, espRestore, espVerify } from "./vpn/esp";
import { ikeHighWater, ikeRestore, ikeVerify } from "./vpn/isakmp";
import { callHighWater, callRestore, callVerify } from "./vpn/pptp";

const REGIONS: u32 = 5;

/** The regions without acct, in restore order: flows first (they rebuild the bindings), ESP before IKE (keep-alive), counters last. */
function baseRegionId(i: u32): u32 {
  return i == 0 ? SNAP_FLOWS : i == 1 ? SNAP_ESP : i == 2 ? SNAP_IKE : i == 3 ? SNAP_CALLS : i == 4 ? SNAP_COUNTERS : 0;
}
/** Region i in restore order; with acct, the byte counters come right after the flows. */
export function regionId(i: u32): u32 {
  if (!acctOn) return baseRegionId(i);
  return i == 0 ? SNAP_FLOWS : i == 1 ? SNAP_FLOW_ACCT : i < REGIONS + 1 ? baseRegionId(i - 1) : 0;
}
function orderOf(id: u32): i32 {
  for (let i: u32 = 0; i < regionCount(); i++) if (regionId(i) == id) return <i32>i;
  return -1;
}

export function regionCount(): u32 { return acctOn ? REGIONS + 1 : REGIONS; }
export function regionPtr(i: u32): usize {
  const id = regionId(i);
  return id == SNAP_COUNTERS ? counters : id == SNAP_FLOWS ? flows : id == SNAP_FLOW_ACCT ? flowAcct : id == SNAP_ESP ? espRecs
    : id == SNAP_IKE ? ikeRecs : id == SNAP_CALLS ? callRecs : 0;
}
export function regionRecordSize(i: u32): u32 {
  const id = regionId(i);
  return id == SNAP_COUNTERS ? 8 : id == SNAP_FLOWS ? FLOW_SIZE : id == SNAP_FLOW_ACCT ? FLOW_ACCT_SIZE : id == SNAP_ESP ? ESP_SIZE
    : id == SNAP_IKE ? IKE_SIZE : id == SNAP_CALLS ? CALL_SIZE : 0;
}
/** Records up to the high-water mark (free ones in between are copied too; restore skips them). */
export function regionRecords(i: u32): u32 {
  const id = regionId(i);
  return id == SNAP_COUNTERS ? COUNTER_SLOTS : id == SNAP_FLOWS || id == SNAP_FLOW_ACCT ? flowHighWater() : id == SNAP_ESP ? espHighWater()
    : id == SNAP_IKE ? ikeHighWater() : id == SNAP_CALLS ? callHighWater() : 0;
}
export function regionCapacity(i: u32): u32 {
  const id = regionId(i);
  return id == SNAP_COUNTERS ? COUNTER_SLOTS : id == SNAP_FLOWS || id == SNAP_FLOW_ACCT ? maxFlows : id == SNAP_ESP ? ESP_CAP
    : id == SNAP_IKE ? IKE_CAP : id == SNAP_CALLS ? CALL_CAP : 0;
}

let phase: i32 = -1;        // -1 idle, else the order index of the region being restored
let phaseRecords: u32 = 0;  // records of that region taken so far
// With acct: flow and counter records the file held, and whether the counters are settled (nat/acct.ts).
let flowsSaved: u32 = 0;
let acctSaved: u32 = 0;
let acctSettled: bool = true;

/** Once the flows and their counters are in (or the counters were not in the file): clears the map. */
function settleAcct(): u32 {
  if (acctSettled) return RESTORE_OK;
  acctSettled = true;
  return acctRestoreSettle(flowsSaved, acctSaved, flowHighWater());
}

/** Gauges are recounted by the inserts, not restored. */
@inline function isGauge(i: u32): bool {
  return i == C_FLOWS_ACTIVE || i == C_BINDINGS_ACTIVE || i == C_FRAGS_ACTIVE || i == C_ESP_ACTIVE ||
    i == C_IKE_ACTIVE || i == C_CALLS_ACTIVE;
}

/** Starts a restore into an empty engine (settings applied, nothing forwarded yet), its clock at `nowMs`. */
export function restoreBegin(nowMs: f64): u32 {
  if (flowHighWater() != 0 || espHighWater() != 0 || ikeHighWater() != 0 || callHighWater() != 0) return RESTORE_ORDER;
  setClock(nowMs);
  phase = 0;
  phaseRecords = 0;
  flowsSaved = 0; acctSaved = 0; acctSettled = !acctOn;
  return RESTORE_OK;
}

/** `count` saved records of region `id`, staged in the packet slots at `src`. RESTORE_OK or an error. */
export function restoreRecords(id: u32, src: usize, count: u32): u32 {
  if (phase < 0) return RESTORE_ORDER;
  const at = orderOf(id);
  if (at < 0) return RESTORE_BAD_REGION;
  if (at < phase) return RESTORE_ORDER;
  if (at > phase) { phase = at; phaseRecords = 0; }
  const size = <usize>regionRecordSize(<u32>at);
  // The staging area is the packet slots: nothing outside them is read.
  const stageEnd = slots + <usize>SLOT_COUNT * SLOT_SIZE;
  if (src < slots || src > stageEnd || <u64>count * size > <u64>(stageEnd - src)) return RESTORE_BAD_COUNT;
  if (<u64>phaseRecords + count > <u64>regionCapacity(<u32>at)) return RESTORE_BAD_COUNT;
  if (id != SNAP_FLOWS && id != SNAP_FLOW_ACCT) {
    const s = settleAcct();
    if (s != RESTORE_OK) { phase = -1; return s; }
  }
  for (let n: u32 = 0; n < count; n++) {
    const r = src + <usize>n * size;
    let e: u32 = RESTORE_OK;
    if (id == SNAP_FLOWS) {
      const before = flowHighWater();
      e = flowRestore(r);
      if (acctOn) acctRestoreNote(phaseRecords + n, flowHighWater() > before ? before : NO_FLOW);
    }
    else if (id == SNAP_FLOW_ACCT) acctRestore(phaseRecords + n, r);
    else if (id == SNAP_ESP) e = espRestore(r);
    else if (id == SNAP_IKE) e = ikeRestore(r);
    else if (id == SNAP_CALLS) e = callRestore(r);
    else if (id == SNAP_COUNTERS) {
      const i = phaseRecords + n;
      if (!isGauge(i)) store<u64>(counters + (<usize>i << 3), load<u64>(r));
    }
    if (e != RESTORE_OK) { phase = -1; return e; }
  }
  phaseRecords += count;
  if (id == SNAP_FLOWS) flowsSaved = phaseRecords;
  else if (id == SNAP_FLOW_ACCT) acctSaved = phaseRecords;
  return RESTORE_OK;
}

/**
 * Ends a restore. Every insert went through the tables' own code, which
 * keeps the indexes right; restoreVerify() (tests call it) walks them all,
 * too slow for a million flows on the way to forwarding.
 */
export function restoreEnd(): u32 {
  if (phase < 0) return RESTORE_ORDER;
  phase = -1;
  return settleAcct();
}

/** Every live record is found through its indexes and holds its binding/alias; the gauges match. */
export function restoreVerify(): u32 {
  return flowVerify() && espVerify() && ikeVerify() && callVerify() ? RESTORE_OK : RESTORE_INCONSISTENT;
}

export function restoreIdle(): void { phase = -1; }
