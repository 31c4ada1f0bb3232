// The batch loop: the data path between the TUNs (src/tun/, a leaf that knows
// nothing of the engine) and the engine. When a TUN is readable, read a batch of packets straight
// into the engine's slots, let the engine decide, write the passing ones
// back into the same TUN (the kernel routes them on with the main table).
// Per batch there is one read loop in C++, one Wasm call and one write loop
// in C++; no per-packet JavaScript. Later fragments the engine held until
// their first fragment came are released by that batch: they sit in the
// engine's hold slots with a VERDICT_PASS of their own and are written to
// the same TUN right after the batch (one more write loop, only then).

import type { Engine } from '../engine/engine.js';
import { nowMs } from '../engine/engine.js';
import { SIDE_INSIDE, SIDE_OUTSIDE, VERDICT_PASS } from '../engine/abi.js';
import type { PacketDevice } from '../tun/tun.js';

/** Batches per wake-up before yielding to the other TUN, timers and the control socket. */
const BATCHES_PER_WAKE = 64;

/** Batch-size histogram buckets per side: upper bounds 1, 2, 4 … 256 (the slot count). */
export const BATCH_BUCKETS = 9;

export class BatchLoop {
  batches = 0;
  /**
   * Batch sizes for the metrics (src/observe): per side, BATCH_BUCKETS
   * counts of batches with n ≤ 2^i packets (not cumulative), then the
   * packets summed. One increment per batch, never per packet.
   */
  readonly batchSizes = new Float64Array(2 * (BATCH_BUCKETS + 1));
  private stopped = false;

  constructor(private readonly engine: Engine, private readonly inside: PacketDevice, private readonly outside: PacketDevice) {}

  start(): void {
    this.inside.onReadable(() => this.pump(this.inside, SIDE_INSIDE));
    this.outside.onReadable(() => this.pump(this.outside, SIDE_OUTSIDE));
  }

  /** Drains up to BATCHES_PER_WAKE batches; level-triggered polling brings us back for the rest. */
  pump(dev: PacketDevice, side: number): number {
    if (this.stopped) return 0;
    const e = this.engine;
    let total = 0;
    for (let b = 0; b < BATCHES_PER_WAKE; b++) {
      const n = dev.readBatch(e.buffer, e.slotBase, e.slotSize, e.lenBase, e.slotCount);
      if (n === 0) break;
      e.process(n, side, nowMs());
      dev.writeBatch(e.buffer, e.slotBase, e.slotSize, e.lenBase, e.verdictBase, n, VERDICT_PASS);
      if (e.x.releasedCount() !== 0) {
        dev.writeBatch(e.buffer, e.holdBase, e.slotSize, e.holdLenBase, e.holdVerdictBase, e.holdCap, VERDICT_PASS);
      }
      total += n;
      this.batches++;
      const h = side * (BATCH_BUCKETS + 1);
      this.batchSizes[h + Math.min(BATCH_BUCKETS - 1, 32 - Math.clz32(n - 1))]++;
      this.batchSizes[h + BATCH_BUCKETS] += n;
      if (n < e.slotCount) break;
    }
    return total;
  }

  stop(): void {
    this.stopped = true;
  }
}
