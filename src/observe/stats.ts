// One snapshot of everything the router counts, read from the engine's
// counters and tables and from the supervisor's own tallies (WAN address
// changes, reloads, batch sizes). Both the Prometheus exposition
// (metrics.ts) and the dashboard's JSON (server.ts) are made from it, and it
// is rebuilt at most once a second whatever the number of requests
// (Observer.stats in index.ts), so a scraper or a browser can never make the
// main thread, or the data-path thread it asks for the engine's copies, do more than that.

import type { EngineView } from '../engine/engine.js';
import { DROP_REASONS, TABLE_CAPACITY } from '../engine/abi.js';
import { BATCH_BUCKETS } from '../datapath/loop.js';

export interface TableUse { table: string; used: number; capacity: number }

export interface BatchHistogram {
  /** Upper bounds of the buckets (packets per batch). */
  le: number[];
  /** Cumulative counts per bucket (Prometheus style: batches with n ≤ le). */
  cumulative: number[];
  count: number;
  sum: number;
}

export interface WanChange { timeMs: number; address: string | null }

export interface Stats {
  /** Wall-clock time of the snapshot (ms since the epoch). */
  timeMs: number;
  startTimeMs: number;
  /** Packets read from each TUN: side lan = the LAN TUN (LAN hosts and the router's own WAN-bound traffic). */
  received: { lan: number; wan: number };
  /** Packets the engine passed on, by the side they came from. */
  forwarded: { lan: number; wan: number };
  /** The same in IP bytes. */
  receivedBytes: { lan: number; wan: number };
  forwardedBytes: { lan: number; wan: number };
  /** WAN packets delivered to the router itself (rule-accepted). */
  localAccepted: number;
  /** Every drop reason, zeros included. */
  drops: Record<string, number>;
  /** Packets the TUN write dropped (full queue, link down). */
  tunWriteDrops: number;
  /** Packets the TUN readers' queue discipline dropped at the head (src/tun/tun.ts ReaderQueue). */
  tunQueueDrops: number;
  /** The same by packet class (tcp, udp, icmp, frag, other; src/tun/tun.ts QUEUE_CLASSES). */
  tunQueueDropsByClass: Record<string, number>;
  /** Of the tcp ones, those that took only a TCP super-packet's last segment (src/tun/addon.cc TrimLastSegment). */
  tunQueueTrims: number;
  /** CoDel's drops that became an ECN CE mark on an ECN-capable TCP packet instead (src/tun/addon.cc MarkCe). */
  tunQueueMarks: number;
  /** TUN offloads: the TUN_F_* bits the kernel took (0: off), and what came through them. */
  offload: { bits: number; gsoPackets: number; gsoBytes: number; csumPartial: number; groWrites: number; groDatagrams: number };
  flowsCreated: number;
  flowsExpired: number;
  flowsFlushed: number;
  eventsLost: number;
  /** Unanswered entries dropped to make room in a full table. */
  earlyDrops: number;
  tables: TableUse[];
  /** VPN sessions by protocol and state. */
  vpn: { esp: Record<'outstanding' | 'established' | 'squelched', number>; ike: number; pptp: number; espBound: number };
  wan: { address: string | null; changes: number; history: WanChange[] };
  reloads: { ok: number; failed: number };
  batches: { lan: BatchHistogram; wan: BatchHistogram };
  memoryBytes: number;
  /** The state snapshot (null: the supervisor keeps none, e.g. an engine on a test bench). */
  snapshot: SnapshotTally | null;
  /** The flow fast path while it runs (null: off, or refused by the kernel). */
  flowOffload: FlowOffloadTally | null;
}

/** What the metrics say about the state snapshot (issue 9). */
export interface SnapshotTally {
  /** Wall-clock time of the last snapshot written (ms since the epoch), null before the first. */
  lastWriteMs: number | null;
  /** Size of the last snapshot written. */
  bytes: number;
  /** Whether this run started from a restored snapshot. */
  restored: boolean;
}

/** What the supervisor keeps that the engine does not. */
export interface SupervisorTallies {
  startTimeMs: number;
  wanAddress: string | null;
  wanChanges: number;
  wanHistory: readonly WanChange[];
  reloadsOk: number;
  reloadsFailed: number;
  /** BatchLoop.batchSizes (null before the loop starts). */
  batchSizes: Float64Array | null;
  tunWriteDrops(): number;
  /** the readers' queue-discipline drops (default: none counted) */
  tunQueueDrops?(): number;
  /** the same by packet class (default: zeros) */
  tunQueueDropsByClass?(): Record<string, number>;
  /** the tcp drops that took only a last segment (default: 0) */
  tunQueueTrims?(): number;
  /** the drops that became CE marks (default: 0) */
  tunQueueMarks?(): number;
  /** the TUN_F_* offload bits the TUNs took (default: 0, off) */
  offloadBits?(): number;
  /** the flow fast path's figures while it runs (absent, or null: not running) */
  flowOffload?(): FlowOffloadTally | null;
  snapshot?: SnapshotTally | null;
}

/** The flow fast path (src/datapath/fastpath.ts FastPathStatus): what the metrics need of it. */
export interface FlowOffloadTally {
  flows: number; capacity: number; offloaded: number; withdrawn: number;
  forwarded: number; outOfWindow: number; passedFlags: number; passedOther: number;
}

const BUCKET_LE = Array.from({ length: BATCH_BUCKETS }, (_, i) => 2 ** i);

function histogram(raw: Float64Array | null, side: number): BatchHistogram {
  const cumulative: number[] = [];
  let acc = 0;
  for (let i = 0; i < BATCH_BUCKETS; i++) {
    acc += raw ? raw[side * (BATCH_BUCKETS + 1) + i]! : 0;
    cumulative.push(acc);
  }
  return { le: BUCKET_LE, cumulative, count: acc, sum: raw ? raw[side * (BATCH_BUCKETS + 1) + BATCH_BUCKETS]! : 0 };
}

export function collectStats(e: EngineView, t: SupervisorTallies): Stats {
  const c = e.counters();
  const nonZero = e.drops();
  const drops: Record<string, number> = {};
  for (let r = 1; r < DROP_REASONS.length; r++) drops[DROP_REASONS[r]!] = nonZero[DROP_REASONS[r]!] ?? 0;
  // ESP states need the table (at most ESP capacity records, once a second).
  const esp = { outstanding: 0, established: 0, squelched: 0 };
  for (const v of e.vpnEntries(t.wanAddress ?? '0.0.0.0')) {
    if (v.protoNum !== 50) continue;
    const k = v.state.toLowerCase();
    if (k === 'outstanding' || k === 'established' || k === 'squelched') esp[k]++;
  }
  return {
    timeMs: Date.now(),
    startTimeMs: t.startTimeMs,
    received: { lan: c.rxInside!, wan: c.rxOutside! },
    forwarded: { lan: c.passInside!, wan: c.passOutside! },
    receivedBytes: { lan: c.rxBytesInside!, wan: c.rxBytesOutside! },
    forwardedBytes: { lan: c.passBytesInside!, wan: c.passBytesOutside! },
    localAccepted: c.localAccept!,
    drops,
    tunWriteDrops: t.tunWriteDrops(),
    tunQueueDrops: t.tunQueueDrops?.() ?? 0,
    tunQueueDropsByClass: t.tunQueueDropsByClass?.() ?? { tcp: 0, udp: 0, icmp: 0, frag: 0, other: 0 },
    tunQueueTrims: t.tunQueueTrims?.() ?? 0,
    tunQueueMarks: t.tunQueueMarks?.() ?? 0,
    offload: { bits: t.offloadBits?.() ?? 0, gsoPackets: c.gsoRx!, gsoBytes: c.gsoBytes!, csumPartial: c.csumPartial!,
      groWrites: c.groGroups!, groDatagrams: c.groDatagrams! },
    flowsCreated: c.flowsNew!,
    flowsExpired: c.flowsExpired!,
    flowsFlushed: c.flowsFlushed!,
    eventsLost: c.eventsLost!,
    earlyDrops: c.earlyDrops ?? 0,
    tables: [
      { table: 'flows', used: e.flowActive(), capacity: e.maxFlows },
      { table: 'bindings', used: c.bindingsActive!, capacity: TABLE_CAPACITY.bindings },
      { table: 'esp', used: c.espActive!, capacity: TABLE_CAPACITY.esp },
      { table: 'ike', used: c.ikeActive!, capacity: TABLE_CAPACITY.ike },
      { table: 'pptp', used: c.callsActive!, capacity: TABLE_CAPACITY.pptp },
      { table: 'fragments', used: c.fragsActive!, capacity: TABLE_CAPACITY.fragments },
    ],
    vpn: { esp, ike: c.ikeActive!, pptp: c.callsActive!, espBound: c.espBound! },
    wan: { address: t.wanAddress, changes: t.wanChanges, history: [...t.wanHistory] },
    reloads: { ok: t.reloadsOk, failed: t.reloadsFailed },
    batches: { lan: histogram(t.batchSizes, 0), wan: histogram(t.batchSizes, 1) },
    memoryBytes: e.memoryBytes,
    snapshot: t.snapshot ?? null,
    flowOffload: t.flowOffload?.() ?? null,
  };
}
