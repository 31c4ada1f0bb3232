// The batch loop: the data path between the TUNs (src/tun/, a leaf that knows
// nothing of the engine) and the engine, run on the data-path thread
// (worker.ts) in the daemon. When a TUN is readable, read a batch of packets straight
// into the engine's slots, let the engine decide, write the passing ones
// back into the same TUN (the kernel routes them on with the main table).
// Per batch there is one read loop in C++, one Wasm call and one write loop
// in C++; no per-packet JavaScript. Later fragments the engine held until
// their first fragment came are released by that batch: they sit in the
// engine's hold slots with a VERDICT_PASS of their own and are written to
// the same TUN right after the batch (one more write loop, only then), and
// so are the extra packets of a batch (the later datagrams of a USO
// super-packet the engine cut in software, assembly/nat/segment.ts). With
// option gro the engine links same-flow datagrams of a batch behind a leader
// slot, and the addon writes each such group as one UDP GSO write.

import type { Engine } from '../engine/engine.js';
import { nowMs } from '../engine/engine.js';
import { SIDE_INSIDE, SIDE_OUTSIDE, VERDICT_PASS } from '../engine/abi.js';
import type { PacketDevice } from '../tun/tun.js';

/** Batches per wake-up before yielding to the other TUN, timers and the control socket. */
const BATCHES_PER_WAKE = 64;

/**
 * Longest a busy poll runs before it lets the thread's event loop turn
 * (timers: the engine's tick; the main thread's calls end it at once).
 */
const POLL_SLICE_MS = 5;

export interface LoopOptions {
  /**
   * option busy_poll: after a wake-up, keep reading both TUNs until this
   * many µs pass without a packet, instead of sleeping in epoll at once
   * (0: never). A packet that comes meanwhile is taken without the wake-up
   * of a sleeping thread, which in a VM also means waking a halted vCPU
   * (about 100 µs each way measured here); the price is the CPU time spun.
   */
  busyPollUs?: number;
  /** True when the main thread waits for a call: a poll returns to the event loop, which answers it. */
  callWaiting?: () => boolean;
  /** Milliseconds for the poll's reckoning (tests step it; default performance.now). */
  clock?: () => number;
}

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
  busyPollUs: number;
  /** Wake-ups from epoll that found packets, and busy-poll rounds that found packets without one (status). */
  wakes = 0;
  polls = 0;
  /** A busy poll is running (or continues at the next turn of the event loop). */
  polling = false;
  private lastPacketMs = 0;
  /** Called after each batch's writes (the flow fast path takes the engine's offers: src/datapath/fastpath.ts). */
  afterBatch: (() => void) | null = null;
  private readonly callWaiting: () => boolean;
  private readonly clock: () => number;

  constructor(private readonly engine: Engine, private readonly inside: PacketDevice, private readonly outside: PacketDevice, o: LoopOptions = {}) {
    this.busyPollUs = o.busyPollUs ?? 0;
    this.callWaiting = o.callWaiting ?? (() => false);
    this.clock = o.clock ?? (() => performance.now());
  }

  start(): void {
    this.inside.onReadable(() => this.wake(this.inside, SIDE_INSIDE));
    this.outside.onReadable(() => this.wake(this.outside, SIDE_OUTSIDE));
  }

  private wake(dev: PacketDevice, side: number): void {
    if (this.pump(dev, side) > 0) {
      this.wakes++;
      this.lastPacketMs = this.clock();
    }
    if (this.busyPollUs > 0 && !this.polling) this.poll();
  }

  /**
   * Busy poll (option busy_poll): both TUNs read without waiting until
   * busyPollUs pass without a packet; in slices, so that timers and the
   * main thread's calls are served in between (setImmediate, not epoll:
   * the thread does not sleep).
   */
  private poll(): void {
    this.polling = true;
    const t0 = this.clock();
    for (;;) {
      if (this.stopped) break;
      // Level-triggered epoll may still report a TUN this round drains; its wake-up then finds nothing.
      const n = this.pump(this.inside, SIDE_INSIDE) + this.pump(this.outside, SIDE_OUTSIDE);
      const t = this.clock();
      if (n > 0) {
        this.lastPacketMs = t;
        this.polls++;
      } else if ((t - this.lastPacketMs) * 1000 >= this.busyPollUs) {
        break;
      }
      if (t - t0 >= POLL_SLICE_MS || this.callWaiting()) {
        setImmediate(() => this.poll());
        return;
      }
    }
    this.polling = false;
  }

  /**
   * Drains up to BATCHES_PER_WAKE batches; level-triggered polling brings us
   * back for the rest. After each batch the other TUN gets one batch of its
   * own when it has packets waiting (PacketDevice.waiting: the ring clock
   * says so without a read): a backlog on one side (a LAN host's flood the
   * router cannot keep up with) then never holds the other side's packets
   * (the replies every other host waits for) for more than a batch, where
   * it used to hold them for BATCHES_PER_WAKE batches.
   */
  pump(dev: PacketDevice, side: number): number {
    if (this.stopped) return 0;
    const other = dev === this.inside ? this.outside : this.inside;
    const otherSide = side === SIDE_INSIDE ? SIDE_OUTSIDE : SIDE_INSIDE;
    const slotCount = this.engine.slotCount;
    let total = 0;
    for (let b = 0; b < BATCHES_PER_WAKE; b++) {
      const n = this.batch(dev, side);
      total += n;
      if (n === 0) break;
      if (other.waiting?.()) total += this.batch(other, otherSide);
      if (n < slotCount) break;
    }
    return total;
  }

  /** One batch: read, the engine's verdicts, the writes. The packets read. */
  private batch(dev: PacketDevice, side: number): number {
    const e = this.engine;
    // With TUN offloads (dev.vnet, engine.setVnet) each slot's virtio_net_hdr rides beside it.
    const n = e.vnet
      ? dev.readBatch(e.buffer, e.slotBase, e.slotSize, e.lenBase, e.slotCount, e.vnetBase, e.vnetStride)
      : dev.readBatch(e.buffer, e.slotBase, e.slotSize, e.lenBase, e.slotCount);
    if (n === 0) return 0;
    e.process(n, side, nowMs());
    // Option gro (engine.gro): a slot may lead a UDP GSO write of later slots linked from it (assembly/nat/gro.ts).
    if (e.vnet) dev.writeBatch(e.buffer, e.slotBase, e.slotSize, e.lenBase, e.verdictBase, n, VERDICT_PASS, e.vnetBase, e.vnetStride, e.gro ? e.groLinkBase : undefined);
    else dev.writeBatch(e.buffer, e.slotBase, e.slotSize, e.lenBase, e.verdictBase, n, VERDICT_PASS);
    if (e.hot.releasedCount() !== 0) {
      // Held fragments sit in hold slots of their own size; on a TUN with offloads each goes out behind a zero virtio header.
      if (e.vnet) dev.writeBatch(e.buffer, e.holdBase, e.holdSlotSize, e.holdLenBase, e.holdVerdictBase, e.holdCap, VERDICT_PASS, e.holdVnetBase, e.vnetStride);
      else dev.writeBatch(e.buffer, e.holdBase, e.holdSlotSize, e.holdLenBase, e.holdVerdictBase, e.holdCap, VERDICT_PASS);
    }
    const extra = e.hot.extraCount();
    if (extra !== 0) {
      // The later datagrams of USO super-packets to or from UDP 500 (cut in software), plain slots like the hold slots.
      if (e.vnet) dev.writeBatch(e.buffer, e.extraBase, e.holdSlotSize, e.extraLenBase, e.extraVerdictBase, extra, VERDICT_PASS, e.extraVnetBase, e.vnetStride);
      else dev.writeBatch(e.buffer, e.extraBase, e.holdSlotSize, e.extraLenBase, e.extraVerdictBase, extra, VERDICT_PASS);
    }
    if (this.afterBatch) this.afterBatch();
    this.batches++;
    const h = side * (BATCH_BUCKETS + 1);
    this.batchSizes[h + Math.min(BATCH_BUCKETS - 1, 32 - Math.clz32(n - 1))]++;
    this.batchSizes[h + BATCH_BUCKETS] += n;
    return n;
  }

  stop(): void {
    this.stopped = true;
  }
}
