import { COUNTER_SLOTS, EVENT_CAP, EVENT_HEADER, EVENT_SIZE } from "./abi/counters";
import {
  BIND_PROTOS, BIND_SIZE, CALL_SIZE, CAPTURE_HEADER, CAPTURE_REC_SIZE, CAPTURE_SLOTS, ESP_SIZE, FLOW_ACCT_SIZE, FLOW_SIZE, FRAG_SIZE,
  HOLD_SIZE, IKE_SIZE, PEER_SIZE, RULE_SIZE, SRC_SIZE,
} from "./abi/records";
// The engine's linear memory map. Memory is imported from the supervisor
// with initial == maximum pages, so every region below is carved once in
// `layoutInit` and never moves: JS views on it stay valid for the whole run.
//
//   heapBase ─► counters  (COUNTER_SLOTS × u64)
//               events    (header + EVENT_CAP × EVENT_SIZE)
//               slots     (SLOT_REGION bytes: SLOT_COUNT × SLOT_SIZE, or with TUN
//                          offloads GSO_SLOT_COUNT × GSO_SLOT_SIZE)
//               lens      (SLOT_COUNT × u32)   verdicts (SLOT_COUNT × u8)
//               vnetHdrs  (SLOT_COUNT × VNET_STRIDE: each slot's virtio_net_hdr)
//               groLinks  (SLOT_COUNT × u16: the next datagram of a slot's UDP GSO write, nat/gro.ts)
//               flows     (maxFlows × FLOW_SIZE)
//               flowOut / flowIn hash indexes (hashSize × u32 each)
//               flowAcct  (maxFlows × FLOW_ACCT_SIZE, only with option acct; else empty)
//               bindings  (3 protocols × 65536 × BIND_SIZE) + bindIndex
//               frags     (FRAG_CAP × FRAG_SIZE) + fragIndex
//               held fragments: holdSlots (HOLD_CAP × SLOT_SIZE), holdLens, holdVerdicts, holdRecs
//               extra output: extraSlots (EXTRA_CAP × SLOT_SIZE), extraLens, extraVerdicts
//               redirects, rules, lan subnets, VPN tables
//               capture   (header + CAPTURE_SLOTS × CAPTURE_REC_SIZE: dropped packets, nat/capture.ts)

export const SLOT_SIZE: u32 = 2048;
export const SLOT_COUNT: u32 = 256;
// With TUN offloads a read is a GSO super-packet of up to 64 KB, so the same
// region is cut into fewer, bigger slots (decided by memory: 64 × 64 KiB is
// 4 MiB, where 256 of them would be 16 MiB; a batch of 64 super-packets is
// 4 MB of traffic, and 64 small packets per batch costs little more than 256
// next to a syscall each). The stride is 64 bytes past 64 KiB so that the
// headers of consecutive slots do not all fall into the same cache sets.
export const GSO_SLOT_SIZE: u32 = 65536 + 64;
export const GSO_SLOT_COUNT: u32 = 64;
export const SLOT_REGION: u32 = GSO_SLOT_COUNT * GSO_SLOT_SIZE > SLOT_COUNT * SLOT_SIZE
  ? GSO_SLOT_COUNT * GSO_SLOT_SIZE : SLOT_COUNT * SLOT_SIZE;
export const VNET_STRIDE: u32 = 16;
export const BIND_INDEX_SIZE: u32 = 1 << 19;
export const FRAG_CAP: u32 = 4096;
export const FRAG_INDEX_SIZE: u32 = 8192;
// Later fragments held until their first fragment comes (nat/fragments.ts):
// HOLD_CAP packet slots beside the batch slots, at most HOLD_PER_SOURCE per
// sender, for at most HOLD_DS deciseconds.
export const HOLD_CAP: u32 = 64;
export const HOLD_PER_SOURCE: u32 = 8;
export const HOLD_DS: u32 = 30;
// Extra output (nat/segment.ts): packets a batch emits beyond its own slots,
// today the datagrams of USO super-packets cut in software. 128 plain slots:
// Linux sends at most 128 segments in one UDP GSO packet (UDP_MAX_SEGMENTS),
// and with the 64 batch and 64 hold slots' virtio headers they fill the
// header region's 256 entries exactly.
export const EXTRA_CAP: u32 = 128;
export const MAX_REDIRECTS: u32 = 256;
export const REDIRECT_SIZE: u32 = 32;
export const MAX_RULES: u32 = 256;
export const MAX_LAN_NETS: u32 = 32;
// VPN tables (fixed sizes; maps at load ≤ 0.25 so probes stay short)
export const ESP_CAP: u32 = 8192;
export const ESP_MAP_SIZE: u32 = 32768;
export const IKE_CAP: u32 = 4096;
export const IKE_MAP_SIZE: u32 = 16384;
export const CALL_CAP: u32 = 4096;
export const CALL_MAP_SIZE: u32 = 16384;
export const KM_SLOT: u32 = 12;
export const OUTSTANDING_CAP: u32 = 256;
// Per-(LAN host, server) facts (vpn/peers.ts): at most one pair per IKE entry
// or ESP association, plus one record per server.
export const PEER_CAP: u32 = 2 * (IKE_CAP + ESP_CAP);
export const PEER_MAP_SIZE: u32 = 65536;
// Per-source counters (nat/limits.ts): open addressing by LAN address, load ≤ 0.5.
export const SRC_SLOTS: u32 = 16384;

export let counters: usize = 0;
export let events: usize = 0;
export let slots: usize = 0;
/** The slot geometry in use (setSlotGeometry): plain, or GSO-sized with virtio headers. */
export let slotSize: u32 = SLOT_SIZE;
export let slotCount: u32 = SLOT_COUNT;
export let vnetOn: bool = false;
export let vnetHdrs: usize = 0;
/** Option gro (nat/gro.ts): same-flow UDP datagrams of a batch leave as one UDP GSO write; only with vnetOn. */
export let groOn: bool = false;
export let groLinks: usize = 0;
export let lens: usize = 0;
export let verdicts: usize = 0;
export let flows: usize = 0;
export let flowOutIndex: usize = 0;
export let flowInIndex: usize = 0;
export let hashMask: u32 = 0;
export let maxFlows: u32 = 0;
/** Option acct: the flows' byte counters (nat/acct.ts) have their region; fixed at init, like maxFlows. */
export let acctOn: bool = false;
export let flowAcct: usize = 0;
export let bindings: usize = 0;
export let bindIndex: usize = 0;
export let frags: usize = 0;
export let fragIndex: usize = 0;
export let redirects: usize = 0;
export let rules: usize = 0;
export let lanNets: usize = 0;
export let espRecs: usize = 0;
export let espMap: usize = 0;
export let ikeRecs: usize = 0;
export let ikeMap: usize = 0;
export let callRecs: usize = 0;
export let callMap: usize = 0;
export let callIdBitmap: usize = 0;
export let outstanding: usize = 0;
export let peerRecs: usize = 0;
export let peerMap: usize = 0;
export let holdSlots: usize = 0;
export let holdLens: usize = 0;
export let holdVerdicts: usize = 0;
export let holdRecs: usize = 0;
export let extraSlots: usize = 0;
export let extraLens: usize = 0;
export let extraVerdicts: usize = 0;
export let srcTable: usize = 0;
export let capture: usize = 0;
export let layoutEnd: usize = 0;

@inline function align64(x: usize): usize { return (x + 63) & ~<usize>63; }

export function hashSizeFor(flowsWanted: u32): u32 {
  // Load factor ≤ 0.5 keeps linear probes short; power of two for masking.
  let n: u32 = 1024;
  while (n < flowsWanted * 2) n <<= 1;
  // Memory budget: records + both indexes ≤ 64 bytes per flow. Where the
  // next power of two would cost more than 3 slots per flow (24 bytes),
  // take the one below (load ≤ 0.67).
  if (n > 1024 && n > flowsWanted * 3) n >>= 1;
  return n;
}

/** Bytes the layout needs for `flowsWanted` flows (with byte counters when `acct`), starting at `base`. */
export function layoutInit(base: usize, flowsWanted: u32, acct: bool, commit: bool): usize {
  let p = align64(base);
  const c = p; p = align64(p + COUNTER_SLOTS * 8);
  const e = p; p = align64(p + EVENT_HEADER + EVENT_CAP * EVENT_SIZE);
  const s = p; p = align64(p + <usize>SLOT_REGION);
  const l = p; p = align64(p + SLOT_COUNT * 4);
  const v = p; p = align64(p + SLOT_COUNT);
  const vh = p; p = align64(p + SLOT_COUNT * VNET_STRIDE);
  const gl = p; p = align64(p + SLOT_COUNT * 2);
  const f = p; p = align64(p + <usize>flowsWanted * FLOW_SIZE);
  const hs = hashSizeFor(flowsWanted);
  const fo = p; p = align64(p + <usize>hs * 4);
  const fi = p; p = align64(p + <usize>hs * 4);
  const fa = p; p = align64(p + (acct ? <usize>flowsWanted * FLOW_ACCT_SIZE : 0));
  const b = p; p = align64(p + <usize>BIND_PROTOS * 65536 * BIND_SIZE);
  const bi = p; p = align64(p + <usize>BIND_INDEX_SIZE * 4);
  const fr = p; p = align64(p + <usize>FRAG_CAP * FRAG_SIZE);
  const hs_ = p; p = align64(p + <usize>HOLD_CAP * SLOT_SIZE);
  const hl = p; p = align64(p + <usize>HOLD_CAP * 4);
  const hv = p; p = align64(p + <usize>HOLD_CAP);
  const hr = p; p = align64(p + <usize>HOLD_CAP * HOLD_SIZE);
  const xs = p; p = align64(p + <usize>EXTRA_CAP * SLOT_SIZE);
  const xl = p; p = align64(p + <usize>EXTRA_CAP * 4);
  const xv = p; p = align64(p + <usize>EXTRA_CAP);
  const fx = p; p = align64(p + <usize>FRAG_INDEX_SIZE * 4);
  const rd = p; p = align64(p + MAX_REDIRECTS * REDIRECT_SIZE);
  const ru = p; p = align64(p + MAX_RULES * RULE_SIZE);
  const ln = p; p = align64(p + MAX_LAN_NETS * 8);
  const er = p; p = align64(p + <usize>ESP_CAP * ESP_SIZE);
  const em = p; p = align64(p + <usize>ESP_MAP_SIZE * KM_SLOT);
  const ir = p; p = align64(p + <usize>IKE_CAP * IKE_SIZE);
  const im = p; p = align64(p + <usize>IKE_MAP_SIZE * KM_SLOT);
  const cr = p; p = align64(p + <usize>CALL_CAP * CALL_SIZE);
  const cm = p; p = align64(p + <usize>CALL_MAP_SIZE * KM_SLOT);
  const cb = p; p = align64(p + 65536 / 8);
  const os = p; p = align64(p + OUTSTANDING_CAP * 4);
  const pr = p; p = align64(p + <usize>PEER_CAP * PEER_SIZE);
  const pm = p; p = align64(p + <usize>PEER_MAP_SIZE * KM_SLOT);
  const st = p; p = align64(p + <usize>SRC_SLOTS * SRC_SIZE);
  const cp = p; p = align64(p + CAPTURE_HEADER + <usize>CAPTURE_SLOTS * CAPTURE_REC_SIZE);
  if (commit) {
    srcTable = st;
    espRecs = er; espMap = em; ikeRecs = ir; ikeMap = im; callRecs = cr; callMap = cm;
    callIdBitmap = cb; outstanding = os; peerRecs = pr; peerMap = pm; capture = cp;
    counters = c; events = e; slots = s; lens = l; verdicts = v; vnetHdrs = vh; groLinks = gl;
    flows = f; flowOutIndex = fo; flowInIndex = fi; hashMask = hs - 1; maxFlows = flowsWanted;
    acctOn = acct; flowAcct = acct ? fa : 0;
    bindings = b; bindIndex = bi; frags = fr; fragIndex = fx;
    holdSlots = hs_; holdLens = hl; holdVerdicts = hv; holdRecs = hr;
    extraSlots = xs; extraLens = xl; extraVerdicts = xv;
    redirects = rd; rules = ru; lanNets = ln; layoutEnd = p;
  }
  return p;
}

/**
 * Plain slots (256 × 2 KiB, bare IP) or, for TUNs with offloads, GSO slots
 * (64 × 64 KiB) each with its virtio_net_hdr in vnetHdrs. Same region.
 */
export function setSlotGeometry(vnet: bool): void {
  vnetOn = vnet;
  slotSize = vnet ? GSO_SLOT_SIZE : SLOT_SIZE;
  slotCount = vnet ? GSO_SLOT_COUNT : SLOT_COUNT;
  memory.fill(vnetHdrs, 0, <usize>SLOT_COUNT * VNET_STRIDE);
  memory.fill(groLinks, 0, <usize>SLOT_COUNT * 2);
}

/** Option gro: coalesce on write (nat/gro.ts), where the TUNs take UDP GSO (vnet and USO4). */
export function setGroOn(on: bool): void {
  groOn = on;
  memory.fill(groLinks, 0, <usize>SLOT_COUNT * 2);
}
