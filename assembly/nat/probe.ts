// Probe-length figures over the engine's open-addressing indexes (linear
// probing): what a lookup costs with the keys actually stored, so tests and
// benches can tell a hash that spreads keys from one that clusters them
// (linear probing at load 0.5 reads 1.5 slots per successful lookup on
// average). Walks a whole index: tests and benches only, never per packet.

import {
  INDEX_BIND, INDEX_CALL, INDEX_ESP, INDEX_FLOW_IN, INDEX_FLOW_OUT, INDEX_IKE, INDEX_PEER, INDEX_SRC, PROBE_ENTRIES,
  PROBE_MAX, PROBE_MEAN, PROBE_RUN_MAX, PROBE_RUN_MEAN, PROBE_SLOTS,
} from "../abi/codes";
import {
  BIND_INDEX_SIZE, CALL_MAP_SIZE, ESP_MAP_SIZE, IKE_MAP_SIZE, PEER_MAP_SIZE, SRC_SLOTS, callMap, espMap, hashMask, ikeMap,
  peerMap,
} from "../layout";
import { bindHomeAt } from "./binding";
import { srcHomeAt } from "./limits";
import { flowHomeAt } from "./table";
import { kmHomeAt } from "../vpn/keymap";

/** Returned by a home function for an empty slot. */
export const NO_HOME: u32 = 0xffffffff;

function flowOutHome(i: u32): u32 { return flowHomeAt(true, i); }
function flowInHome(i: u32): u32 { return flowHomeAt(false, i); }
function espHome(i: u32): u32 { return kmHomeAt(espMap, ESP_MAP_SIZE - 1, i); }
function ikeHome(i: u32): u32 { return kmHomeAt(ikeMap, IKE_MAP_SIZE - 1, i); }
function callHome(i: u32): u32 { return kmHomeAt(callMap, CALL_MAP_SIZE - 1, i); }
function peerHome(i: u32): u32 { return kmHomeAt(peerMap, PEER_MAP_SIZE - 1, i); }

/** One figure (PROBE_*) of index `index` (INDEX_*); -1 for an unknown index or figure. */
export function probeStat(index: u32, stat: u32): f64 {
  let size: u32;
  let homeAt: (i: u32) => u32;
  if (index == INDEX_FLOW_OUT) { size = hashMask + 1; homeAt = flowOutHome; }
  else if (index == INDEX_FLOW_IN) { size = hashMask + 1; homeAt = flowInHome; }
  else if (index == INDEX_BIND) { size = BIND_INDEX_SIZE; homeAt = bindHomeAt; }
  else if (index == INDEX_SRC) { size = SRC_SLOTS; homeAt = srcHomeAt; }
  else if (index == INDEX_ESP) { size = ESP_MAP_SIZE; homeAt = espHome; }
  else if (index == INDEX_IKE) { size = IKE_MAP_SIZE; homeAt = ikeHome; }
  else if (index == INDEX_CALL) { size = CALL_MAP_SIZE; homeAt = callHome; }
  else if (index == INDEX_PEER) { size = PEER_MAP_SIZE; homeAt = peerHome; }
  else return -1;
  const mask = size - 1;
  // Start after an empty slot so no run is cut in two by the wrap-around.
  let start: u32 = 0;
  while (start < size && homeAt(start) != NO_HOME) start++;
  let entries: u32 = 0, runs: u32 = 0, run: u32 = 0, runMax: u32 = 0, max: u32 = 0;
  let total: f64 = 0;
  for (let n: u32 = 1; n <= size; n++) {
    const i = (start + n) & mask;
    const k = homeAt(i);
    if (k == NO_HOME) {
      if (run != 0) { runs++; if (run > runMax) runMax = run; run = 0; }
      continue;
    }
    run++;
    entries++;
    const d = ((i - k) & mask) + 1;
    total += <f64>d;
    if (d > max) max = d;
  }
  if (run != 0) { runs++; if (run > runMax) runMax = run; } // a full index: one run
  if (stat == PROBE_SLOTS) return <f64>size;
  if (stat == PROBE_ENTRIES) return <f64>entries;
  if (stat == PROBE_MEAN) return entries != 0 ? total / <f64>entries : 0;
  if (stat == PROBE_MAX) return <f64>max;
  if (stat == PROBE_RUN_MEAN) return runs != 0 ? <f64>entries / <f64>runs : 0;
  if (stat == PROBE_RUN_MAX) return <f64>runMax;
  return -1;
}
