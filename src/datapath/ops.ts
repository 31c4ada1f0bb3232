// The data path's steps: everything that touches the engine or the TUNs,
// as one table of calls (the supervisor's steps and the engine's readings).
// worker.ts serves them on the data-path thread (rpc.ts); inline.ts calls
// them on the main thread where a second thread does not fit (a router with
// little RAM). Each runs between two batches and returns a copy.
//
// The engine's clock (nowMs, continueClock) runs on the thread that calls
// these: every time the engine is given is taken there.

import { readlinkSync } from 'node:fs';
import { threadId } from 'node:worker_threads';
import { nowMs, type Engine, type FlowEntry } from '../engine/engine.js';
import { applyConfig } from '../engine/apply.js';
import { ipToRaw } from '../engine/abi.js';
import type { Config } from '../config/index.js';
import { matches, type ConntrackFilter } from '../cli/filter.js';
import { capture, restoreFile, SnapshotRefused, type Restored } from '../snapshot/state.js';
import { TUN_F, TunDevice, type QueueClock, type ReaderQueue } from '../tun/tun.js';
import { BatchLoop } from './loop.js';
import { FastPath, SYNC_MS, ifindexOf, openKernelFastPath, type FastPathStatus } from './fastpath.js';
import { Transfer } from './rpc.js';
import { applyDataPathPriority, type PriorityApplied } from './priority.js';
import type { Priority } from '../config/options.js';

/** What openTuns reports; the main thread logs it and shows it in `status`. */
export interface TunsOpened {
  vnet: boolean;
  /** TUN_F_* bits each device took */
  offloadsIn: number;
  /** option gro took effect: offloads on and USO4 on both TUNs */
  gro: boolean;
  offloadsOut: number;
  /** why offloads are off or partial ('' when all is as asked) */
  note: string;
  /** offloads were wanted and the kernel refused them (worth a warning) */
  refused: boolean;
  slotCount: number;
  slotSize: number;
  /** how each reader queue times packets (src/tun/tun.ts QueueClock; null: no CoDel) */
  queueClock: { lan: QueueClock | null; wan: QueueClock | null };
  /** Each TUN's reader queue as set (READER_QUEUE_HOST_QUEUES where it has host queues). */
  readerQueue: { lan: ReaderQueue | null; wan: ReaderQueue | null };
  /** LAN and WAN host queues (1: one ring), and why a device has one ring where more were asked for. */
  hostQueues: { lan: number; note: string; wan: number; wanNote: string };
}

export interface RestoreResult {
  restored: (Restored & { ms: number }) | null;
  refused: string | null;
}

const TICK_MS = 250;

/** The calls on `engine` (loaded by the caller, on the thread that will run them). */
/**
 * callWaiting: true while the main thread waits for a call (worker.ts reads
 * the shared word): a busy-polling loop then returns to the event loop,
 * which answers it. Called in place (inline), nothing ever waits.
 */
export function dataPathOps(engine: Engine, callWaiting: () => boolean = () => false) {
  let tunIn: TunDevice | null = null;
  let tunOut: TunDevice | null = null;
  let loop: BatchLoop | null = null;
  let ticker: NodeJS.Timeout | null = null;
  let fast: FastPath | null = null;
  let fastTimer: NodeJS.Timeout | null = null;
  let wanRaw = 0;

  /** This thread's kernel thread id (what /proc/PID/task/TID, ps -L and chrt -p show), or 0 where /proc does not say. */
  function kernelTid(): number {
    try {
      return Number(readlinkSync('/proc/thread-self').split('/').pop()) || 0;
    } catch {
      return 0;
    }
  }

  function setWan(addr: string | null): number {
    if (!addr) return 0;
    wanRaw = ipToRaw(addr);
    const n = engine.x.setWanAddress(wanRaw, nowMs());
    fast?.setWan(wanRaw);
    fast?.sync();
    return n;
  }

  /**
   * option flow_offload: the kernel's fast path on the LAN and WAN devices
   * (src/datapath/fastpath.ts), or why not (it is then off, and the TUN
   * path carries everything as before).
   */
  function openFastPath(lanDevice: string, wanDevice: string, capacity: number): { on: boolean; note: string } {
    closeFastPath();
    try {
      const lanIfindex = ifindexOf(lanDevice);
      const wanIfindex = ifindexOf(wanDevice);
      fast = new FastPath(engine, openKernelFastPath(lanDevice, wanDevice, capacity), lanIfindex, wanIfindex, capacity);
    } catch (err) {
      return { on: false, note: (err as Error).message };
    }
    fast.setWan(wanRaw);
    engine.x.setFastPath(1);
    const f = fast;
    if (loop) loop.afterBatch = () => f.take();
    fastTimer = setInterval(() => f.syncSlice(), SYNC_MS);
    return { on: true, note: '' };
  }

  function closeFastPath(): void {
    if (fastTimer) clearInterval(fastTimer);
    fastTimer = null;
    if (loop) loop.afterBatch = null;
    fast?.close();
    fast = null;
  }

  function closeTuns(): void {
    tunIn?.close();
    tunOut?.close();
    tunIn = tunOut = null;
  }

  /**
   * Opens both TUNs, with offloads when wanted: IFF_VNET_HDR, then
   * TUNSETOFFLOAD (the addon asks for less when the kernel refuses). A kernel
   * that refuses the virtio header on either device gets both reopened plain:
   * the engine has one slot geometry for both.
   */
  function openTuns(inside: string, outside: string, offload: boolean, gro = false, hostQueues = 1): TunsOpened {
    closeTuns();
    engine.setGro(false);
    let note = '';
    let refused = false;
    try {
      if (offload) {
        try {
          tunIn = TunDevice.open(inside, { offload: true, hostQueues });
          tunOut = TunDevice.open(outside, { offload: true, hostQueues, hostQueueKey: 'remote' });
          if (tunIn.vnet && tunOut.vnet) {
            engine.setVnet(true);
            // GRO on write sends UDP GSO (USO) into the TUNs: only where both took USO4.
            engine.setGro(gro && (tunIn.offloads & TUN_F.USO4) !== 0 && (tunOut.offloads & TUN_F.USO4) !== 0);
            if (tunIn.offloads !== tunOut.offloads) note = 'the two TUNs took different offloads';
            return opened(note, false);
          }
          note = 'the kernel refused IFF_VNET_HDR';
        } catch (err) {
          if ((err as { code?: string }).code !== 'EINVAL') throw err;
          note = `offloads refused: ${(err as Error).message}`;
        }
        closeTuns();
        refused = true;
        // EINVAL is also what a name taken by a non-TUN device gives: the plain
        // open below then fails with the one line that matters, and only if it
        // succeeds were the offloads what the kernel refused.
      } else {
        note = 'off (option offload)';
      }
      engine.setVnet(false);
      tunIn = TunDevice.open(inside, { hostQueues });
      tunOut = TunDevice.open(outside, { hostQueues, hostQueueKey: 'remote' });
      return opened(note, refused);
    } catch (err) {
      closeTuns();
      throw err;
    }
  }

  function opened(note: string, refused: boolean): TunsOpened {
    return {
      vnet: engine.vnet, gro: engine.gro, offloadsIn: tunIn!.offloads, offloadsOut: tunOut!.offloads, note, refused,
      slotCount: engine.slotCount, slotSize: engine.slotSize,
      queueClock: { lan: tunIn!.queueClock, wan: tunOut!.queueClock },
      readerQueue: { lan: tunIn!.readerQueue, wan: tunOut!.readerQueue },
      hostQueues: { lan: tunIn!.hostQueues, note: tunIn!.hostQueuesNote, wan: tunOut!.hostQueues, wanNote: tunOut!.hostQueuesNote },
    };
  }

  function entries(wan: string): FlowEntry[] {
    return [...engine.flows(wan), ...engine.vpnEntries(wan)];
  }

  const ops = {
    hello: () => ({ threadId, tid: kernelTid(), maxFlows: engine.maxFlows, acct: engine.acct, memoryBytes: engine.memoryBytes, hugePages: engine.hugePages, buildId: engine.buildId }),
    applyConfig: (cfg: Config, lanSubnets: string[], routerLan: string[]) => { applyConfig(engine, cfg, lanSubnets, routerLan); },
    /** A reload: `next` whole, or (refused) `prev` again, in one step no batch sees half of. */
    reload: (next: Config, prev: Config, lanSubnets: string[], routerLan: string[], prevRouterLan: string[]) => {
      try {
        applyConfig(engine, next, lanSubnets, routerLan);
      } catch (err) {
        applyConfig(engine, prev, lanSubnets, prevRouterLan);
        throw err;
      } finally {
        fast?.sync();
      }
    },
    setWanAddress: (addr: string | null) => setWan(addr),
    openTuns,
    /** The snapshot at `file`, if it fits; else an empty engine with `cfg` and the WAN address again. */
    restore: (file: string, wan: string | null, cfg: Config, lanSubnets: string[], routerLan: string[]): RestoreResult => {
      const t0 = performance.now();
      try {
        const res = restoreFile(engine, file, wan ? ipToRaw(wan) : null);
        fast?.sync();
        return { restored: res && { ...res, ms: +(performance.now() - t0).toFixed(1) }, refused: null };
      } catch (err) {
        const why = err instanceof SnapshotRefused ? err.message : `unexpected: ${(err as Error).message}`;
        // All or nothing: back to an empty engine with the configuration.
        engine.reset();
        applyConfig(engine, cfg, lanSubnets, routerLan);
        setWan(wan);
        return { restored: null, refused: why };
      }
    },
    /** Sets this thread's scheduling (`option priority`: Linux schedules threads, so it is set here), then starts the loop. */
    startLoop: (priority: Priority, busyPollUs = 0): PriorityApplied => {
      if (!tunIn || !tunOut) throw new Error('the TUNs are not open');
      const applied = applyDataPathPriority(priority);
      loop = new BatchLoop(engine, tunIn, tunOut, { busyPollUs, callWaiting });
      const f = fast;
      if (f) loop.afterBatch = () => f.take();
      loop.start();
      ticker = setInterval(() => engine.x.tick(nowMs(), 65536), TICK_MS);
      return applied;
    },
    /** No more batches (the TUNs stay open until closeTuns): the state is final for the last snapshot. */
    /** option busy_poll changed by a reload: taken from the next wake-up on. */
    setBusyPoll: (us: number) => { if (loop) loop.busyPollUs = us; },
    stopLoop: () => {
      closeFastPath();
      loop?.stop();
      tunIn?.pauseReading();
      tunOut?.pauseReading();
      if (ticker) clearInterval(ticker);
      ticker = null;
    },
    closeTuns,
    /** A copy of the state for the snapshot file; its buffers move to the caller. */
    capture: (wan: string | null) => {
      const c = capture(engine, wan ? ipToRaw(wan) : 0, nowMs());
      return new Transfer(c, c.sections.map((s) => s.data.buffer as ArrayBuffer));
    },
    /** Engine events, with the drop counters of the same moment (the log's "total"). */
    drainEvents: (max: number) => ({ events: engine.drainEvents(max), drops: engine.drops() }),
    counters: () => engine.counters(),
    drops: () => engine.drops(),
    flowActive: () => engine.flowActive(),
    flows: (wan: string, limit?: number) => engine.flows(wan, nowMs(), limit ?? Infinity),
    vpnEntries: (wan: string) => engine.vpnEntries(wan),
    /**
     * The conntrack listing: what the kernel's fast path moved until now credited first (the 500 ms round, a slice
     * of the flows, may not have come since; a listing right after a transfer lacked its bytes). Per listed flow two
     * table reads, as conntrack -D costs.
     */
    entries: (wan: string) => { fast?.sync(); return entries(wan); },
    flushAll: () => { const n = engine.x.flushAll(); fast?.sync(); return n; },
    /** conntrack -D: the matching entries, chosen and freed in one step (an index freed and reused in between would be another flow). */
    deleteMatching: (filter: ConntrackFilter, wan: string) => {
      const gone = entries(wan).filter((e) => matches(e, filter) && engine.deleteEntry(e));
      fast?.sync();
      return gone;
    },
    openFastPath,
    closeFastPath,
    setCapture: (on: boolean, reason: number) => engine.setCapture(on, reason),
    takeCaptured: (room: number) => engine.takeCaptured(room),
    batchSizes: () => (loop ? loop.batchSizes.slice() : null),
    status: () => ({
      flowActive: engine.flowActive(), bytesPerFlow: engine.bytesPerFlow(), counters: engine.counters(), drops: engine.drops(),
      vnet: engine.vnet, slotCount: engine.slotCount, slotSize: engine.slotSize, batches: loop?.batches ?? 0,
      busyPollUs: loop?.busyPollUs ?? 0, polls: loop?.polls ?? 0, wakes: loop?.wakes ?? 0,
      sojournUs: { lan: tunIn?.hostQueueSojournUs ?? null, wan: tunOut?.hostQueueSojournUs ?? null },
      fastPath: fast ? fast.status() : null as FastPathStatus | null,
    }),
  };
  return ops;
}
