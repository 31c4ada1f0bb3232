// Facts about one LAN host and one server that both VPN tables need, kept
// in one place so neither asks the other (and neither scans the other's
// table): when the host last exchanged IKE with the server (ESP binding
// prefers the latest), whether it still has bound ESP with it (an IKE
// entry lives on while it does, the HOWTO's §5.7 failure), and which LAN
// host had the server's latest IKE exchange (esp_guess). isakmp.ts and
// esp.ts write them as their entries come and go; reads are one map probe.
//
// Pair record key (remote, lanAddr); server record key (remote, 0): a LAN
// host is never 0.0.0.0. A pair lives while it has live IKE entries or
// bound ESP; a server record while it has pairs. Fields: PEER_* in
// abi/records.ts. The fixed table holds a pair per IKE entry and ESP
// association plus a record per server, so it never fills.

import {
  ESP_PEER, PEER_ESP_BOUND, PEER_ESP_EXPIRES, PEER_IKE_COUNT, PEER_IKE_LAST, PEER_LAN_ADDR, PEER_RECENT_HOST,
  PEER_REFS, PEER_REM_ADDR, PEER_SIZE,
} from "../abi/records";
import { peerMap, peerRecs, PEER_CAP, PEER_MAP_SIZE } from "../layout";
import { nowDs } from "../nat/state";
import { kmClear, kmFirst, kmInsert, kmNext, kmRemove, kmValueAt } from "./keymap";
import { slabAlloc, slabFree, slabInit } from "./slab";

const MAP_MASK: u32 = PEER_MAP_SIZE - 1;
const slab: usize = memory.data(16);

export function peersInit(): void { slabInit(slab, PEER_CAP, PEER_SIZE); kmClear(peerMap, MAP_MASK); }

@inline function rec(v: u32): usize { return peerRecs + <usize>(v - 1) * PEER_SIZE; }

/** Record + 1 of (remA, lanA), or 0. lanA 0 = the server record. The map key is the full key; the record is compared all the same. */
function find(lanA: u32, remA: u32): u32 {
  for (let i = kmFirst(peerMap, MAP_MASK, remA, lanA); i >= 0; i = kmNext(peerMap, MAP_MASK, remA, lanA, i)) {
    const v = kmValueAt(peerMap, i);
    const r = rec(v);
    if (load<u32>(r, PEER_LAN_ADDR) == lanA && load<u32>(r, PEER_REM_ADDR) == remA) return v;
  }
  return 0;
}

function open(lanA: u32, remA: u32): u32 {
  let v = find(lanA, remA);
  if (v != 0) return v;
  let server: u32 = 0;
  if (lanA != 0) {
    server = open(0, remA);
    if (server == 0) return 0;
  }
  v = slabAlloc(slab, peerRecs);
  if (v == 0) return 0;
  const r = rec(v);
  store<u32>(r, lanA, PEER_LAN_ADDR);
  store<u32>(r, remA, PEER_REM_ADDR);
  kmInsert(peerMap, MAP_MASK, remA, lanA, v);
  if (server != 0) store<u32>(rec(server), load<u32>(rec(server), PEER_REFS) + 1, PEER_REFS);
  return v;
}

function close(v: u32): void {
  const r = rec(v);
  const lanA = load<u32>(r, PEER_LAN_ADDR);
  const remA = load<u32>(r, PEER_REM_ADDR);
  kmRemove(peerMap, MAP_MASK, remA, lanA, v);
  slabFree(slab, peerRecs, v - 1);
  if (lanA == 0) return;
  const s = find(0, remA);
  if (s == 0) return;
  const refs = load<u32>(rec(s), PEER_REFS) - 1;
  store<u32>(rec(s), refs, PEER_REFS);
  if (refs == 0) close(s);
}

@inline function closeIfIdle(v: u32): void {
  const r = rec(v);
  if (load<u32>(r, PEER_IKE_COUNT) == 0 && load<u32>(r, PEER_ESP_BOUND) == 0) close(v);
}

// ---- IKE (isakmp.ts) --------------------------------------------------------

/** A new IKE entry of lanA with remA. */
export function peerIkeOpened(lanA: u32, remA: u32): void {
  const v = open(lanA, remA);
  if (v != 0) store<u32>(rec(v), load<u32>(rec(v), PEER_IKE_COUNT) + 1, PEER_IKE_COUNT);
}

/** An IKE packet of lanA's exchange with remA; `counts` = lanA may be handed guessed ESP (not the router). */
export function peerIkeSeen(lanA: u32, remA: u32, counts: bool): void {
  const v = find(lanA, remA);
  if (v == 0) return;
  store<u32>(rec(v), nowDs, PEER_IKE_LAST);
  if (counts) peerSetRecent(remA, lanA, nowDs);
}

/**
 * An IKE entry of lanA with remA was freed. Returns true when the server's
 * recent host has to be found again (it was lanA and lanA has no exchange left).
 */
export function peerIkeClosed(lanA: u32, remA: u32): bool {
  const v = find(lanA, remA);
  if (v == 0) return false;
  const r = rec(v);
  const n = load<u32>(r, PEER_IKE_COUNT) - 1;
  store<u32>(r, n, PEER_IKE_COUNT);
  if (n != 0) return false;
  store<u32>(r, 0, PEER_IKE_LAST);
  closeIfIdle(v);
  const s = find(0, remA);
  if (s == 0 || load<u32>(rec(s), PEER_RECENT_HOST) != lanA) return false;
  store<u32>(rec(s), 0, PEER_RECENT_HOST);
  store<u32>(rec(s), 0, PEER_IKE_LAST);
  return true;
}

/** Records `lanA` as the server's host with the latest IKE exchange (at `seenDs`) when it is not older. */
export function peerSetRecent(remA: u32, lanA: u32, seenDs: u32): void {
  const s = find(0, remA);
  if (s == 0) return;
  const r = rec(s);
  if (load<u32>(r, PEER_RECENT_HOST) != 0 && seenDs < load<u32>(r, PEER_IKE_LAST)) return;
  store<u32>(r, lanA, PEER_RECENT_HOST);
  store<u32>(r, seenDs, PEER_IKE_LAST);
}

/** When lanA last exchanged IKE with remA (deciseconds; 0 = no live exchange). */
export function peerIkeLast(lanA: u32, remA: u32): u32 {
  const v = find(lanA, remA);
  return v != 0 ? load<u32>(rec(v), PEER_IKE_LAST) : 0;
}

/** The LAN host with the latest IKE exchange with remA, or 0. */
export function peerRecentHost(remA: u32): u32 {
  const s = find(0, remA);
  return s != 0 ? load<u32>(rec(s), PEER_RECENT_HOST) : 0;
}

// ---- ESP (esp.ts) -------------------------------------------------------------

/**
 * An association of lanA with remA became bound, alive until `expiresDs`.
 * Returns the pair's record + 1 (0 if none): the association keeps it
 * (ESP_PEER) so each packet's touch is a store, not a lookup.
 */
export function peerEspBound(lanA: u32, remA: u32, expiresDs: u32): u32 {
  const v = open(lanA, remA);
  if (v == 0) return 0;
  store<u32>(rec(v), load<u32>(rec(v), PEER_ESP_BOUND) + 1, PEER_ESP_BOUND);
  peerEspTouch(v, expiresDs);
  return v;
}

/** A bound association of pair record `v` was used: alive until `expiresDs`. */
@inline export function peerEspTouch(v: u32, expiresDs: u32): void {
  if (v == 0) return;
  const r = rec(v);
  if (<i32>(expiresDs - load<u32>(r, PEER_ESP_EXPIRES)) > 0) store<u32>(r, expiresDs, PEER_ESP_EXPIRES);
}

/** A bound association of lanA with remA was freed. */
export function peerEspClosed(lanA: u32, remA: u32): void {
  const v = find(lanA, remA);
  if (v == 0) return;
  const r = rec(v);
  const n = load<u32>(r, PEER_ESP_BOUND) - 1;
  store<u32>(r, n, PEER_ESP_BOUND);
  if (n == 0) { store<u32>(r, 0, PEER_ESP_EXPIRES); closeIfIdle(v); }
}

/** True when a bound association between the two hosts is alive. */
export function peerEspActive(lanA: u32, remA: u32): bool {
  const v = find(lanA, remA);
  if (v == 0) return false;
  const r = rec(v);
  return load<u32>(r, PEER_ESP_BOUND) != 0 && <i32>(nowDs - load<u32>(r, PEER_ESP_EXPIRES)) < 0;
}

/** A restored IKE entry (assembly/snapshot.ts) of lanA with remA, last seen at `seenDs`. */
export function peerIkeRestored(lanA: u32, remA: u32, seenDs: u32, counts: bool): void {
  const v = find(lanA, remA);
  if (v == 0) return;
  if (seenDs > load<u32>(rec(v), PEER_IKE_LAST)) store<u32>(rec(v), seenDs, PEER_IKE_LAST);
  if (counts) peerSetRecent(remA, lanA, seenDs);
}
