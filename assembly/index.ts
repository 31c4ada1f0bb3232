// vpnmasq engine: the exports the supervisor calls. Pointers and integers
// cross the boundary, never packets: the supervisor's TUN addon reads
// packets straight into the slots and writes the passing ones back.
// Addresses are raw u32 (network-order bytes read little-endian), ports
// host order, times in milliseconds (process/tick) or seconds (settings).

import {
  callRecs, counters, espRecs, events, flows, ikeRecs, lens, slots, verdicts, hashMask, layoutEnd, layoutInit, lanNets, maxFlows,
  EVENT_CAP, EVENT_SIZE, FLOW_SIZE, MAX_LAN_NETS, SLOT_COUNT, SLOT_SIZE, COUNTER_SLOTS, ESP_SIZE,
} from "./layout";
import { LIM_CALLS, LIM_ESP, LIM_FLOWS, LIM_FRAGS, LIM_IKE, setLimit, srcFlushAll } from "./nat/limits";
import { bindResetDynamic } from "./nat/binding";
import { processBatch } from "./nat/core";
import { ruleAdd, rulesClear } from "./nat/filter";
import { protoForwardAdd, redirectAdd, redirectsClear } from "./nat/forward";
import { espFlushAll, espHighWater, espInit, espSweep } from "./nat/esp";
import { fragFlushAll, fragSweep } from "./nat/fragments";
import { ikeFlushAll, ikeHighWater, ikeInit, ikeSweep } from "./nat/isakmp";
import { callFlushAll, callHighWater, callSweep, pptpInit } from "./nat/pptp";
import {
  countAdd, eventPush, setClock, setLanNetCount, setPool, setSeed, setTimeoutsDs, setUnreplied, setVpn, setWan, wanAddr,
  C_FLOWS_FLUSHED, EV_FLUSH,
} from "./nat/state";
import { flowActive as tableActive, flowFlushAll, flowHighWater as tableHighWater, flowSweep } from "./nat/table";

let ready: bool = false;

@inline function base(): usize { return __heap_base; }

/** Bytes of linear memory the engine needs for `flows` flows (including static data). */
export function memoryBytes(flowCount: u32): usize {
  return layoutInit(base(), flowCount, false);
}

/** Carves the layout. Returns 0, or -1 when the imported memory is too small. */
export function init(flowCount: u32, seed: u32): i32 {
  const end = layoutInit(base(), flowCount, false);
  if (end > (<usize>memory.size() << 16)) return -1;
  layoutInit(base(), flowCount, true);
  memory.fill(counters, 0, end - counters);
  setSeed(seed);
  espInit(); ikeInit(); pptpInit(); srcFlushAll();
  // Default cap: one LAN host may hold a quarter of the flow table, and at
  // least 1024 flows (small tables: one busy host must still be usable).
  setLimit(LIM_FLOWS, defaultFlowCap(flowCount));
  ready = true;
  return 0;
}

export function process(count: u32, nowMs: f64, side: u32): u32 {
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
  espFlushAll(); ikeFlushAll(); callFlushAll(); fragFlushAll(); srcFlushAll();
  countAdd(C_FLOWS_FLUSHED, n);
  eventPush(EV_FLUSH, 0, 0, 0, 0, 0, 0, 0, 0, n);
  return n;
}

export function setLanNet(i: u32, net: u32, mask: u32): i32 {
  if (i >= MAX_LAN_NETS) return -1;
  store<u32>(lanNets + (<usize>i << 3), net & mask);
  store<u32>(lanNets + (<usize>i << 3), mask, 4);
  return 0;
}
function setLanNetCountExport(n: u32): void { setLanNetCount(n < MAX_LAN_NETS ? n : MAX_LAN_NETS); }
export { setLanNetCountExport as setLanNetCount };

export function setPortPool(lo: u32, hi: u32): i32 {
  if (lo == 0 || lo > hi || hi > 65535) return -1;
  setPool(lo, hi);
  return 0;
}

export function setTimeouts(tcpEst: u32, tcpTrans: u32, udp: u32, icmp: u32, frag: u32): void {
  setTimeoutsDs(tcpEst * 10, tcpTrans * 10, udp * 10, icmp * 10, frag * 10);
}

export function clearRedirects(): void { redirectsClear(); }
export function addRedirect(proto: u32, portLo: u32, portHi: u32, destAddr: u32, destPortLo: u32): i32 {
  return redirectAdd(proto, portLo, portHi, destAddr, destPortLo);
}
export function addProtoForward(proto: u32, destAddr: u32): i32 { return protoForwardAdd(proto, destAddr); }
export function clearRules(): void { rulesClear(); }

/** VPN settings in seconds (esp, esp_init, ike, natt, gre) and counts/flags. */
export function setVpnSettings(esp: u32, espInit: u32, espRetries: u32, ike: u32, natt: u32, gre: u32,
  parallel: u32, guess: u32): void {
  setVpn(esp * 10, espInit * 10, espRetries, ike * 10, natt * 10, gre * 10, parallel != 0, guess != 0);
}
/** Per-source caps (issue 8 item 5): flows, IKE exchanges, PPTP calls, outstanding ESP, fragmented datagrams. */
/** flows 0: the default share (a quarter of the table, at least 1024). */
export function setSourceLimits(flows: u32, ike: u32, calls: u32, esp: u32, frags: u32): void {
  setLimit(LIM_FLOWS, flows != 0 ? flows : defaultFlowCap(maxFlows));
  setLimit(LIM_IKE, ike); setLimit(LIM_CALLS, calls); setLimit(LIM_ESP, esp); setLimit(LIM_FRAGS, frags);
}
function defaultFlowCap(n: u32): u32 { return n / 4 > 1024 ? n / 4 : 1024; }
/** How long what a WAN packet opened lives until the LAN side answers (seconds). */
export function setUnrepliedTimeout(seconds: u32): void { setUnreplied(seconds * 10); }
export function addRule(srcZone: u32, destZone: u32, target: u32, proto: i32, icmpType: i32,
  srcNet: u32, srcMask: u32, dstNet: u32, dstMask: u32, portLo: u32, portHi: u32): i32 {
  return ruleAdd(srcZone, destZone, target, proto, icmpType, srcNet, srcMask, dstNet, dstMask, portLo, portHi);
}

// Memory map for the supervisor's views.
export function countersPtr(): usize { return counters; }
export function counterSlots(): u32 { return COUNTER_SLOTS; }
export function eventsPtr(): usize { return events; }
export function eventCap(): u32 { return EVENT_CAP; }
export function eventSize(): u32 { return EVENT_SIZE; }
export function slotsPtr(): usize { return slots; }
export function lensPtr(): usize { return lens; }
export function verdictsPtr(): usize { return verdicts; }
export function slotSize(): u32 { return SLOT_SIZE; }
export function slotCount(): u32 { return SLOT_COUNT; }
export function flowsPtr(): usize { return flows; }
export function flowSize(): u32 { return FLOW_SIZE; }
export function flowCapacity(): u32 { return maxFlows; }
export function flowHighWater(): u32 { return tableHighWater(); }
export function flowActive(): u32 { return tableActive(); }
export function hashSize(): u32 { return hashMask + 1; }
export function layoutBytesEnd(): usize { return layoutEnd; }
export function espPtr(): usize { return espRecs; }
export function espCount(): u32 { return espHighWater(); }
export function espRecordSize(): u32 { return ESP_SIZE; }
export function ikePtr(): usize { return ikeRecs; }
export function ikeCount(): u32 { return ikeHighWater(); }
export function callPtr(): usize { return callRecs; }
export function callCount(): u32 { return callHighWater(); }
