// The main thread's handle on the data-path thread (worker.ts): starts the
// worker, and offers the engine's readings (EngineView, for the observer
// and the capture) and the supervisor's engine steps as synchronous calls
// (rpc.ts). Each returns a copy the worker took between two batches.
//
// A worker that dies, or stops answering for DATA_PATH_TIMEOUT_MS, runs
// onDeath once (the supervisor: one log line, exit non-zero), whether a
// call was waiting or not.

import type { FastPathStatus } from './fastpath.js';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker } from 'node:worker_threads';
import type { CaptureTake, EngineEvent, EngineView, FlowEntry, HugePages } from '../engine/engine.js';
import type { Config } from '../config/index.js';
import type { ConntrackFilter } from '../cli/filter.js';
import type { Capture } from '../snapshot/state.js';
import { CTL_WORDS, oneLine, RemoteError, SyncClient, Transfer, type Ops } from './rpc.js';
import { Engine } from '../engine/engine.js';
import { dataPathOps } from './ops.js';
import { adviseHugePages } from './hugepages.js';
import type { RestoreResult, TunsOpened, WorkerData } from './worker.js';
import type { PriorityApplied } from './priority.js';

/** The sojourn (µs) CoDel saw on one ring for the last packet it read, and the most since the state was made. */
export interface RingSojourn { last: number; max: number }
import type { Priority } from '../config/options.js';

/** How long a call may wait for the worker: far above a batch or a snapshot copy of a full table. */
export const DATA_PATH_TIMEOUT_MS = 15000;

const here = dirname(fileURLToPath(import.meta.url));

/** dist/datapath/worker.js, also when this module runs from src/ (tests): workers load JavaScript. */
export function workerPath(): string {
  const beside = join(here, 'worker.js');
  return existsSync(beside) ? beside : join(here, '..', '..', 'dist', 'datapath', 'worker.js');
}

export interface DataPathOptions {
  maxFlows: number;
  /**
   * Run the data path on the caller's thread instead of a worker: a second
   * V8 isolate with its own copy of the modules costs about 20 MiB, which a
   * router with 256 MiB does not have to spare (the supervisor decides).
   */
  inline?: boolean;
  /** option acct: per-flow byte counters (default off) */
  acct?: boolean;
  /** Ask for transparent huge pages under the engine's memory (hugepages.ts; default off: benches and tests). */
  hugePages?: boolean;
  /** The worker is dead or stuck: log and exit; must not return. */
  onDeath: (reason: string) => void;
  timeoutMs?: number;
  /** Another worker script (tests). */
  script?: string | URL;
}

export class DataPathThread implements EngineView {
  readonly maxFlows: number;
  /** option acct, as the engine took it at load */
  readonly acct: boolean;
  readonly memoryBytes: number;
  /** What the huge-page advice did (hugepages.ts), null when not asked. */
  readonly hugePages: HugePages | null;
  readonly buildId: string;
  /** The worker's threadId (status). */
  readonly threadId: number;
  /** The worker's kernel thread id (its scheduling is set per thread: `option priority`), 0 if unknown. */
  readonly tid: number;
  /** Where the data path runs: its own thread, or (DataPathOptions.inline) the caller's. */
  readonly thread: 'worker' | 'main';
  private readonly worker: Worker | null = null;
  private readonly rpc: SyncClient | null = null;
  private readonly inlineOps: Ops | null = null;
  private closing = false;

  constructor(o: DataPathOptions) {
    this.thread = o.inline ? 'main' : 'worker';
    if (o.inline) {
      // No second thread: the same calls, run here (an engine that cannot load throws to the caller).
      this.inlineOps = dataPathOps(Engine.load({ maxFlows: o.maxFlows, acct: o.acct ?? false, ...(o.hugePages ? { adviseMemory: adviseHugePages } : {}) }));
    } else {
      const ctl = new SharedArrayBuffer(CTL_WORDS * 4);
      const { port1, port2 } = new MessageChannel();
      const data: WorkerData = { maxFlows: o.maxFlows, acct: o.acct ?? false, hugePages: o.hugePages ?? false, port: port2, ctl };
      const worker = new Worker(o.script ?? workerPath(), { workerData: data, transferList: [port2] });
      this.worker = worker;
      let fired = false;
      const death = (reason: string) => {
        if (fired) return;
        fired = true;
        o.onDeath(reason);
      };
      const rpc = new SyncClient(port1, new Int32Array(ctl), { timeoutMs: o.timeoutMs ?? DATA_PATH_TIMEOUT_MS, onDeath: death });
      // Death while no call waits: the worker's reason (left on the port), else how it ended.
      this.rpc = rpc;
      worker.on('error', (err) => {
        if (this.closing) return;
        try { rpc.die(oneLine(err)); } catch { /* die() throws to stop a caller */ }
      });
      worker.on('exit', (code) => {
        if (this.closing) return;
        try { rpc.die(rpc.deathReason() ?? `exited with code ${code}`); } catch { /* die() throws to stop a caller */ }
      });
    }
    // The first call also waits for the worker to load the engine.
    const hello = this.call<{ threadId: number; tid: number; maxFlows: number; acct: boolean; memoryBytes: number; hugePages: HugePages | null; buildId: string }>('hello');
    this.threadId = hello.threadId;
    this.tid = hello.tid;
    this.maxFlows = hello.maxFlows;
    this.acct = hello.acct;
    this.memoryBytes = hello.memoryBytes;
    this.hugePages = hello.hugePages;
    this.buildId = hello.buildId;
  }

  call<T>(op: string, ...args: unknown[]): T {
    if (this.inlineOps) return callInline<T>(this.inlineOps, op, args);
    return this.rpc!.call<T>(op, ...args);
  }

  // ---- EngineView ----------------------------------------------------------
  counters(): Record<string, number> { return this.call('counters'); }
  drops(): Record<string, number> { return this.call('drops'); }
  flowActive(): number { return this.call('flowActive'); }
  /** `now` is the worker's: the engine's clock lives there. */
  flows(wan: string, _now?: number, limit?: number): FlowEntry[] { return this.call('flows', wan, limit); }
  vpnEntries(wan: string): FlowEntry[] { return this.call('vpnEntries', wan); }
  setCapture(on: boolean, reason: number): void { this.call('setCapture', on, reason); }
  takeCaptured(room: number): CaptureTake { return this.call('takeCaptured', room); }

  /** The batch loop's histogram, for the observer's loop(). */
  get batchSizes(): Float64Array { return this.call<Float64Array | null>('batchSizes') ?? new Float64Array(0); }

  // ---- the supervisor's steps ------------------------------------------------
  /** routerLan: the router's own LAN addresses (NAT loopback), as applyConfig takes them. */
  applyConfig(cfg: Config, lanSubnets: string[], routerLan: string[] = []): void { this.call('applyConfig', cfg, lanSubnets, routerLan); }
  /** Throws RemoteError (with `prev` applied again) when the engine refuses `next`. */
  reload(next: Config, prev: Config, lanSubnets: string[], routerLan: string[] = [], prevRouterLan: string[] = routerLan): void {
    this.call('reload', next, prev, lanSubnets, routerLan, prevRouterLan);
  }
  setWanAddress(addr: string | null): number { return this.call('setWanAddress', addr); }
  openTuns(inside: string, outside: string, offload: boolean, gro = false, hostQueues = 1): TunsOpened { return this.call('openTuns', inside, outside, offload, gro, hostQueues); }
  restore(file: string, wan: string | null, cfg: Config, lanSubnets: string[], routerLan: string[] = []): RestoreResult {
    return this.call('restore', file, wan, cfg, lanSubnets, routerLan);
  }
  /** Starts the batch loop at `priority` (set on the data-path thread itself); returns what the kernel granted. */
  startLoop(priority: Priority = 'normal', busyPollUs = 0): PriorityApplied { return this.call('startLoop', priority, busyPollUs); }
  setBusyPoll(us: number): void { this.call('setBusyPoll', us); }
  /** option flow_offload: the kernel's fast path on the two devices, or why not. */
  openFastPath(lanDevice: string, wanDevice: string, capacity: number): { on: boolean; note: string } {
    return this.call('openFastPath', lanDevice, wanDevice, capacity);
  }
  closeFastPath(): void { this.call('closeFastPath'); }
  stopLoop(): void { this.call('stopLoop'); }
  closeTuns(): void { this.call('closeTuns'); }
  capture(wan: string | null): Capture { return this.call('capture', wan); }
  drainEvents(max: number): { events: EngineEvent[]; drops: Record<string, number> } { return this.call('drainEvents', max); }
  entries(wan: string): FlowEntry[] { return this.call('entries', wan); }
  flushAll(): number { return this.call('flushAll'); }
  deleteMatching(filter: ConntrackFilter, wan: string): FlowEntry[] { return this.call('deleteMatching', filter, wan); }
  status(): { flowActive: number; bytesPerFlow: number; counters: Record<string, number>; drops: Record<string, number>;
    vnet: boolean; slotCount: number; slotSize: number; batches: number; busyPollUs: number; polls: number; wakes: number;
    sojournUs: { lan: RingSojourn[] | null; wan: RingSojourn[] | null }; fastPath: FastPathStatus | null } {
    return this.call('status');
  }

  /** Ends the worker (after stopLoop and closeTuns); its exit is no death. */
  async terminate(): Promise<void> {
    this.closing = true;
    await this.worker?.terminate();
  }
}

/**
 * An op called in place, answering as the worker would: Transfer unwrapped,
 * a refusal (an exception from the op) as RemoteError, so callers handle
 * both modes alike.
 */
function callInline<T>(ops: Ops, op: string, args: unknown[]): T {
  const fn = ops[op];
  if (!fn) throw new RemoteError(`no such data path call: ${op}`);
  let r: unknown;
  try {
    r = fn(...args);
  } catch (err) {
    throw new RemoteError(err instanceof Error ? err.message : String(err));
  }
  return (r instanceof Transfer ? r.value : r) as T;
}
