// vpnmasq engine: the exports the supervisor calls. Pointers and integers
// cross the boundary, never packets: the supervisor's TUN addon reads
// packets straight into the slots and writes the passing ones back.
// Addresses are raw u32 (network-order bytes read little-endian), ports
// host order, times in milliseconds (process/tick) or seconds (the settings record).

import { setFastPath as fastPathSet, fastPathPending as fpPending, fastPathRing as fpRing, fastPathTaken as fpTaken, fastPathCheck as fpCheck, fastPathCredit as fpCredit, fastPathForgetAll } from "./nat/fastpath";
import { COUNTER_SLOTS, C_FLOWS_FLUSHED, EVENT_CAP, EVENT_SIZE, EV_FLUSH } from "./abi/counters";
import { FLOW_SIZE } from "./abi/records";
import { captureSet } from "./nat/capture";
import { acctOn, callRecs, capture, counters, espRecs, events, extraLens, extraSlots, extraVerdicts, flowAcct, flows, holdLens, holdSlots, holdVerdicts, ikeRecs, lens, slots, verdicts, hashMask, layoutEnd, layoutInit, lanNets, maxFlows, groLinks, groOn, setGroOn, EXTRA_CAP, HOLD_CAP, MAX_LAN_NETS, SLOT_SIZE, setSlotGeometry, slotCount as curSlotCount, slotSize as curSlotSize, vnetHdrs, vnetOn, VNET_STRIDE } from "./layout";
import { ABI_WORDS, abiDescribe as describe } from "./abi/describe.gen";
import { bindResetDynamic } from "./nat/binding";
import { processBatch } from "./nat/core";
import { probeStat } from "./nat/probe";
import { ruleAdd, rulesClear } from "./nat/filter";
import { protoForwardAdd, redirectAdd, redirectSetReflection, redirectSetSource, redirectsClear } from "./nat/forward";
import { espDelete, espFastCheck, espFastCredit, espFlushAll, espForgetOffloaded, espHighWater, espInit, espSweep } from "./vpn/esp";
import { fragFlushAll, fragReleasedCount, fragSweep } from "./nat/fragments";
import { extraPending } from "./nat/segment";
import { ikeDelete, ikeFlushAll, ikeHighWater, ikeInit, ikeSweep } from "./vpn/isakmp";
import { peersInit } from "./vpn/peers";
import { callDelete, callFastCheck, callFastCredit, callFlushAll, callForgetOffloaded, callHighWater, callSweep, pptpInit } from "./vpn/pptp";
import { srcFlushAll } from "./nat/limits";
import { countAdd, eventPush, setClock, setLanNetCount as setLanNetCountState, setRouterLanAddr as setRouterLanAddrState, setRouterLanCount as setRouterLanCountState, setSeed, setWan, settingsApply, settingsRec, wanAddr } from "./nat/state";
import { flowActive as tableActive, flowDelete, flowFlushAll, flowHighWater as tableHighWater, flowReset, flowSweep } from "./nat/table";
import { RESTORE_ORDER as RESTORE_ORDER_CODE, SNAP_LAYOUT_VERSION } from "./abi/codes";
import {
  regionCapacity, regionCount, regionId, regionPtr, regionRecordSize, regionRecords, restoreIdle,
  restoreBegin as snapRestoreBegin, restoreEnd as snapRestoreEnd, restoreRecords as snapRestoreRecords,
  restoreVerify as snapRestoreVerify,
} from "./snapshot";

let ready: bool = false;

@inline function base(): usize { return __heap_base; }

/** Bytes of linear memory the engine needs for `flows` flows, with per-flow byte counters when `acct` is 1 (including static data). */
export function memoryBytes(flowCount: u32, acct: u32): usize {
  return layoutInit(base(), flowCount, acct != 0, false);
}

/** Carves the layout (`acct` 1: with the flows' byte counters, option acct). Returns 0, or -1 when the imported memory is too small. */
export function init(flowCount: u32, seed: u32, acct: u32): i32 {
  const end = layoutInit(base(), flowCount, acct != 0, false);
  if (end > (<usize>memory.size() << 16)) return -1;
  layoutInit(base(), flowCount, acct != 0, true);
  memory.fill(counters, 0, end - counters);
  setSeed(seed);
  espInit(); ikeInit(); pptpInit(); peersInit(); srcFlushAll();
  ready = true;
  return 0;
}

/** The one packet entry point: `count` packets in slots 0..count-1, read from `side`, at `nowMs`. */
export function process(count: u32, side: u32, nowMs: f64): u32 {
  if (!ready) return 0;
  setClock(nowMs);
  return processBatch(count, side);
}

/** Idle-time expiry: sweeps up to `budget` flow records. */
export function tick(nowMs: f64, budget: u32): u32 {
  if (!ready) return 0;
  setClock(nowMs);
  espSweep(budget); ikeSweep(budget); callSweep(budget); fragSweep(budget);
  return flowSweep(budget);
}

/** New WAN address: flows of the old one are flushed. Returns how many. */
export function setWanAddress(addr: u32, nowMs: f64): u32 {
  setClock(nowMs);
  if (addr == wanAddr) return 0;
  const hadOld = wanAddr != 0;
  setWan(addr);
  if (!hadOld) return 0;
  return flushAll();
}

export function flushAll(): u32 {
  const n = flowFlushAll();
  bindResetDynamic();
  peersInit(); // first: the tables' frees below then find no peer facts to update
  espFlushAll(); ikeFlushAll(); callFlushAll(); fragFlushAll();
  srcFlushAll(); // every per-source count goes with the tables
  countAdd(C_FLOWS_FLUSHED, n);
  eventPush(EV_FLUSH, 0, 0, 0, 0, 0, 0, 0, 0, n);
  return n;
}

/**
 * `conntrack -D`: frees one record, named by table (0 flow, 1 ESP, 2 IKE,
 * 3 PPTP call; ENTRY_TABLES in src/engine/engine.ts) and index. Returns 1
 * when it was in use, else 0 (already gone, or a bad table/index).
 */
export function deleteEntry(table: u32, index: u32): u32 {
  if (table == 0) return flowDelete(index) ? 1 : 0;
  if (table == 1) return espDelete(index) ? 1 : 0;
  if (table == 2) return ikeDelete(index) ? 1 : 0;
  if (table == 3) return callDelete(index) ? 1 : 0;
  return 0;
}

export function setLanNet(i: u32, net: u32, mask: u32): i32 {
  if (i >= MAX_LAN_NETS) return -1;
  store<u32>(lanNets + (<usize>i << 3), net & mask);
  store<u32>(lanNets + (<usize>i << 3), mask, 4);
  return 0;
}
export function setLanNetCount(n: u32): void { setLanNetCountState(n < MAX_LAN_NETS ? n : MAX_LAN_NETS); }
/** The router's own address i on the LAN device, with its network's mask (NAT loopback's internal source). */
export function setRouterLanAddr(i: u32, addr: u32, mask: u32): i32 { return setRouterLanAddrState(i, addr, mask); }
export function setRouterLanCount(n: u32): void { setRouterLanCountState(n); }

/** Where the supervisor writes the settings record (fields SET_* in abi/settings.ts). */
export function settingsPtr(): usize { return settingsRec; }
/** Takes the settings record whole: 0, or the offset + 1 of the first field refused (nothing taken then). */
export function applySettings(): i32 { return settingsApply(); }

export function clearRedirects(): void { redirectsClear(); }
export function addRedirect(proto: u32, portLo: u32, portHi: u32, destAddr: u32, destPortLo: u32): i32 {
  return redirectAdd(proto, portLo, portHi, destAddr, destPortLo);
}
export function addProtoForward(proto: u32, destAddr: u32): i32 { return protoForwardAdd(proto, destAddr); }
/** fw4 src_ip / src_port / src_dip of port forward `i` (the index addRedirect returned). */
export function setRedirectSource(i: u32, net: u32, mask: u32, portLo: u32, portHi: u32, dip: u32): i32 {
  return redirectSetSource(i, net, mask, portLo, portHi, dip);
}
/** fw4 reflection / reflection_src of port forward `i`: REFLECT_OFF, REFLECT_INTERNAL (the default) or REFLECT_EXTERNAL. */
export function setRedirectReflection(i: u32, mode: u32): i32 { return redirectSetReflection(i, mode); }
export function clearRules(): void { rulesClear(); }

export function addRule(srcZone: u32, destZone: u32, target: u32, proto: i32, icmpType: i32, icmpCode: i32,
  srcNet: u32, srcMask: u32, dstNet: u32, dstMask: u32, sportLo: u32, sportHi: u32, dportLo: u32, dportHi: u32): i32 {
  return ruleAdd(srcZone, destZone, target, proto, icmpType, icmpCode, srcNet, srcMask, dstNet, dstMask,
    sportLo, sportHi, dportLo, dportHi);
}

/** Probe-length figure `stat` (PROBE_*) over hash index `index` (INDEX_*), walking the whole index (tests, benches); -1 when unknown. */
export function hashProbe(index: u32, stat: u32): f64 { return probeStat(index, stat); }

/** Writes every ABI constant as compiled at `out` (abi/describe.gen.ts); returns how many u32s. */
export function abiDescribe(out: usize): u32 { return describe(out); }
/** How many u32 values abiDescribe writes. */
export function abiWords(): u32 { return ABI_WORDS; }

// Memory map for the supervisor's views.
export function countersPtr(): usize { return counters; }
export function counterSlots(): u32 { return COUNTER_SLOTS; }
export function eventsPtr(): usize { return events; }
export function eventCap(): u32 { return EVENT_CAP; }
export function eventSize(): u32 { return EVENT_SIZE; }
export function slotsPtr(): usize { return slots; }
export function lensPtr(): usize { return lens; }
export function verdictsPtr(): usize { return verdicts; }
export function slotSize(): u32 { return curSlotSize; }
export function slotCount(): u32 { return curSlotCount; }
/** Each slot's virtio_net_hdr (10 bytes at vnetPtr() + i × vnetStride()), read and written by the TUN addon. */
export function vnetPtr(): usize { return vnetHdrs; }
export function vnetStride(): u32 { return VNET_STRIDE; }
export function vnetEnabled(): u32 { return vnetOn ? 1 : 0; }
/**
 * 1: the TUNs carry a virtio_net_hdr before each packet (IFF_VNET_HDR, offloads):
 * GSO-sized slots, headers checked per packet. 0: plain 2 KiB slots. Call
 * between batches; slotSize()/slotCount() change with it.
 */
export function setVnet(on: u32): void { setSlotGeometry(on != 0); }
/**
 * Option gro (nat/gro.ts): 1 coalesces same-flow UDP datagrams of a batch
 * into one UDP GSO write (members get VERDICT_FOLLOW, the slot before each
 * links to it at groLinksPtr() + 2 × slot, u16, 0 = end). Only takes effect
 * with setVnet(1); the supervisor asks for it only where both TUNs took USO4.
 */
export function setGro(on: u32): void { setGroOn(on != 0); }
export function groEnabled(): u32 { return groOn ? 1 : 0; }
// The flow fast path (option flow_offload, nat/fastpath.ts).
export function setFastPath(on: u32): void { fastPathSet(on != 0); if (on == 0) fastPathForget(); }
export function fastPathPending(): u32 { return fpPending(); }
export function fastPathRing(): usize { return fpRing(); }
export function fastPathTaken(): void { fpTaken(); }
export function fastPathCheck(f: u32, proto: u32, lanA: u32, lanP: u32, remA: u32, remP: u32, aliasP: u32, wan: u32,
  endOut: u32, endIn: u32, endsKnown: u32): u32 {
  return fpCheck(f, proto, lanA, lanP, remA, remP, aliasP, wan, endOut, endIn, endsKnown);
}
export function fastPathCredit(f: u32, proto: u32, lanA: u32, lanP: u32, remA: u32, remP: u32, aliasP: u32,
  pktsOut: u32, pktsIn: u32, bytesOut: f64, bytesIn: f64): u32 {
  return fpCredit(f, proto, lanA, lanP, remA, remP, aliasP, pktsOut, pktsIn, bytesOut, bytesIn);
}
export function fastPathForget(): void { fastPathForgetAll(tableHighWater()); espForgetOffloaded(); callForgetOffloaded(); }
/** An offloaded ESP association (record r, raw addresses and SPIs): 1 keep, 0 withdraw. */
export function fastPathCheckEsp(r: u32, lanA: u32, remA: u32, spiOut: u32, spiIn: u32, wan: u32): u32 { return espFastCheck(r, lanA, remA, spiOut, spiIn, wan); }
/** The kernel's packets and bytes for it since the last sync, out and in. */
export function fastPathCreditEsp(r: u32, lanA: u32, remA: u32, spiOut: u32, spiIn: u32, pktsOut: u32, pktsIn: u32, bytesOut: f64, bytesIn: f64): u32 {
  return espFastCredit(r, lanA, remA, spiOut, spiIn, pktsOut, pktsIn, bytesOut, bytesIn);
}
/** An offloaded PPTP call (record r, raw addresses, Call IDs host order): 1 keep, 0 withdraw. */
export function fastPathCheckCall(r: u32, lanA: u32, remA: u32, callLan: u32, alias: u32, callRemote: u32, wan: u32): u32 {
  return callFastCheck(r, lanA, remA, callLan, alias, callRemote, wan);
}
/** The kernel's GRE packets and bytes for it since the last sync, out and in. */
export function fastPathCreditCall(r: u32, lanA: u32, remA: u32, callLan: u32, alias: u32, callRemote: u32,
  pktsOut: u32, pktsIn: u32, bytesOut: f64, bytesIn: f64): u32 {
  return callFastCredit(r, lanA, remA, callLan, alias, callRemote, pktsOut, pktsIn, bytesOut, bytesIn);
}
export function groLinksPtr(): usize { return groLinks; }
export function flowsPtr(): usize { return flows; }
export function flowSize(): u32 { return FLOW_SIZE; }
/** Option acct: 1 when the flows have byte counters, at flowAcctPtr() + flow × FLOW_ACCT_SIZE (fields FA_*). */
export function acctEnabled(): u32 { return acctOn ? 1 : 0; }
export function flowAcctPtr(): usize { return flowAcct; }
export function flowCapacity(): u32 { return maxFlows; }
export function flowHighWater(): u32 { return tableHighWater(); }
export function flowActive(): u32 { return tableActive(); }
export function hashSize(): u32 { return hashMask + 1; }
export function layoutBytesEnd(): usize { return layoutEnd; }
export function espPtr(): usize { return espRecs; }
export function espCount(): u32 { return espHighWater(); }
export function ikePtr(): usize { return ikeRecs; }
export function ikeCount(): u32 { return ikeHighWater(); }
export function callPtr(): usize { return callRecs; }
export function callCount(): u32 { return callHighWater(); }
// Held fragments (nat/fragments.ts): after each process() call with
// releasedCount() > 0, the supervisor writes the hold slots whose verdict is
// VERDICT_PASS to the TUN the batch came from (same slot size as the batch).
export function holdSlotsPtr(): usize { return holdSlots; }
export function holdLensPtr(): usize { return holdLens; }
export function holdVerdictsPtr(): usize { return holdVerdicts; }
export function holdCap(): u32 { return HOLD_CAP; }
/** Hold slots are plain slots (SLOT_SIZE bytes apart) whatever the batch slots' geometry. */
export function holdSlotSize(): u32 { return SLOT_SIZE; }
export function releasedCount(): u32 { return fragReleasedCount(); }
// Extra output (nat/segment.ts: the datagrams of USO super-packets to or from
// UDP 500, cut in software): after each process() call with extraCount() > 0,
// the supervisor writes extra slots 0..extraCount()-1 whose verdict is
// VERDICT_PASS to the TUN the batch came from, after the hold slots; plain
// packets (SLOT_SIZE apart), behind zero virtio headers on a TUN with offloads.
export function extraSlotsPtr(): usize { return extraSlots; }
export function extraLensPtr(): usize { return extraLens; }
export function extraVerdictsPtr(): usize { return extraVerdicts; }
export function extraCap(): u32 { return EXTRA_CAP; }
export function extraCount(): u32 { return extraPending(); }

/** Drop capture (nat/capture.ts): on 1 starts it, emptying the ring; reason 0 = every reason. */
export function setCapture(on: u32, reason: u32): void { captureSet(on != 0, reason); }
export function capturePtr(): usize { return capture; }

// ---- state snapshot (assembly/snapshot.ts) ---------------------------------
export function snapLayoutVersion(): u32 { return SNAP_LAYOUT_VERSION; }
export function snapRegionCount(): u32 { return regionCount(); }
export function snapRegionId(i: u32): u32 { return regionId(i); }
export function snapRegionPtr(i: u32): usize { return regionPtr(i); }
export function snapRegionRecordSize(i: u32): u32 { return regionRecordSize(i); }
export function snapRegionRecords(i: u32): u32 { return regionRecords(i); }
export function snapRegionCapacity(i: u32): u32 { return regionCapacity(i); }
/** Starts a restore into this freshly configured, empty engine; its clock at `nowMs`. RESTORE_* code. */
export function restoreBegin(nowMs: f64): u32 { return ready ? snapRestoreBegin(nowMs) : RESTORE_ORDER_CODE; }
/** `count` saved records of region `id` staged in the packet slots at `src`. RESTORE_* code. */
export function restoreRecords(id: u32, src: usize, count: u32): u32 { return ready ? snapRestoreRecords(id, src, count) : RESTORE_ORDER_CODE; }
export function restoreEnd(): u32 { return ready ? snapRestoreEnd() : RESTORE_ORDER_CODE; }
/** Walks every table (tests): RESTORE_OK or RESTORE_INCONSISTENT. */
export function restoreVerify(): u32 { return snapRestoreVerify(); }

/** Back to the state right after init: empty tables, zero counters, no WAN address, a new hash seed (settings stay). */
export function reset(seed: u32): void {
  if (!ready) return;
  init(maxFlows, seed, acctOn ? 1 : 0);
  flowReset();
  setWan(0);
  restoreIdle();
}
