// The batch loop: the data path between the TUNs (src/tun/, a leaf that knows
// nothing of the engine) and the engine. When a TUN is readable, read a batch of packets straight
// into the engine's slots, let the engine decide, write the passing ones
// back into the same TUN (the kernel routes them on with the main table).
// Per batch there is one read loop in C++, one Wasm call and one write loop
// in C++; no per-packet JavaScript.

import type { Engine } from '../engine/engine.js';
import { nowMs } from '../engine/engine.js';
import { SIDE_INSIDE, SIDE_OUTSIDE, VERDICT_PASS } from '../engine/abi.js';
import type { PacketDevice } from '../tun/tun.js';

/** Batches per wake-up before yielding to the other TUN, timers and the control socket. */
const BATCHES_PER_WAKE = 64;

export class BatchLoop {
  batches = 0;
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
      total += n;
      this.batches++;
      if (n < e.slotCount) break;
    }
    return total;
  }

  stop(): void {
    this.stopped = true;
  }
}
