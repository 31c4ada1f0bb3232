// The data-path thread: a worker_thread that owns the Wasm engine and both
// TUN fds and runs the batch loop (loop.ts) in its own event loop, woken by
// the addon's uv_poll on each TUN. The main thread (src/supervisor.ts via
// thread.ts) keeps the control socket, config, WAN watching, logs, metrics
// and snapshots, and reaches the engine only through the calls below
// (rpc.ts): each runs here, between two batches, and returns a copy. So a
// listing, a snapshot or a reload never sees a table mid-change, and a busy
// main thread never delays a packet.
//
// The engine's clock (nowMs, continueClock) lives here too: every time the
// engine is given is taken on this thread.

import { workerData, type MessagePort } from 'node:worker_threads';
import { Engine } from '../engine/engine.js';
import { CTL_PENDING, dieWith, serve, type Ops } from './rpc.js';
import { dataPathOps } from './ops.js';
import { adviseHugePages } from './hugepages.js';

export type { RestoreResult, TunsOpened } from './ops.js';

export interface WorkerData {
  maxFlows: number;
  /** option acct: the flows' byte counters (fixed at load, like maxFlows) */
  acct: boolean;
  /** Transparent huge pages under the engine's memory (hugepages.ts). */
  hugePages: boolean;
  port: MessagePort;
  ctl: SharedArrayBuffer;
}

const data = workerData as WorkerData;
const ctl = new Int32Array(data.ctl);
let engine!: Engine;
try {
  engine = Engine.load({ maxFlows: data.maxFlows, acct: data.acct, ...(data.hugePages ? { adviseMemory: adviseHugePages } : {}) });
} catch (err) {
  dieWith(data.port, ctl, err);
}

// A busy-polling loop gives the thread back to its event loop as soon as the main thread waits for a call.
const ops = dataPathOps(engine, () => Atomics.load(ctl, CTL_PENDING) !== 0);

// Test hook (VPNMASQ_TEST_HOOKS=1): the thread dies as an engine trap would, outside any call.
const testOps: Ops = process.env.VPNMASQ_TEST_HOOKS === '1'
  ? { crash: () => { setImmediate(() => { throw new Error('test hook: data path thread crashed'); }); } }
  : {};

serve(data.port, ctl, { ...ops, ...testOps });
