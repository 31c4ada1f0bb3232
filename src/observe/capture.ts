// The supervisor's side of the drop capture (assembly/nat/capture.ts): the
// engine copies dropped packets into a fixed ring while a capture runs; this
// drains the ring on a 100 ms timer (off the batch loop), keeps a bounded
// backlog for the CLI, which fetches it over the control socket
// (capture-read) and writes pcap (src/cli/capture.ts). One capture at a
// time; a capture whose client stopped asking for 5 s is switched off, so a
// killed CLI never leaves the engine copying drops.

import type { Engine } from '../engine/engine.js';
import { nowMs } from '../engine/engine.js';
import {
  CAPH_HEAD, CAPH_LOST, CAPH_TAIL, CAPR_CAPLEN, CAPR_DATA, CAPR_LEN, CAPR_REASON, CAPR_SIDE, CAPR_TIME,
  CAPTURE_HEADER, CAPTURE_REC_SIZE, CAPTURE_SLOTS, DROP_REASONS,
} from '../engine/abi.js';

export const DRAIN_MS = 100;
export const LEASE_MS = 5000;
/** Records kept for the CLI between two reads; beyond this they count as lost. */
export const BACKLOG = 2048;

export interface CapturedDrop {
  /** Wall-clock time, ms since the epoch (the engine's clock has 100 ms steps). */
  timeMs: number;
  reason: string;
  side: 'lan' | 'wan';
  /** The packet's length; `data` holds at most 2048 bytes of it. */
  length: number;
  /** The packet from its IP header, base64. */
  data: string;
}

export interface CaptureRead { drops: CapturedDrop[]; lost: number; active: boolean }

export class DropCapture {
  private active = false;
  private timer: NodeJS.Timeout | null = null;
  private backlog: CapturedDrop[] = [];
  private lost = 0;
  private lastRead = 0;
  private lostSeen = 0;

  /** onExpire: called when the lease ran out and the capture was switched off. */
  constructor(private readonly engine: Engine, private readonly onExpire: () => void = () => {}) {}

  get running(): boolean { return this.active; }

  /** reason: a drop reason name, or undefined for every reason. */
  start(reason?: string): void {
    if (this.active) throw new Error('a drop capture is already running');
    let code = 0;
    if (reason !== undefined) {
      code = DROP_REASONS.indexOf(reason as (typeof DROP_REASONS)[number]);
      if (code <= 0) throw new Error(`unknown drop reason '${reason}'`);
    }
    this.backlog = [];
    this.lost = 0;
    this.lostSeen = 0;
    this.lastRead = Date.now();
    this.engine.x.setCapture(1, code);
    this.active = true;
    this.timer = setInterval(() => this.tick(), DRAIN_MS);
    this.timer.unref();
  }

  private tick(): void {
    this.drain();
    if (Date.now() - this.lastRead > LEASE_MS) { this.stop(); this.onExpire(); }
  }

  /** Moves the engine's ring into the backlog. */
  drain(): void {
    const e = this.engine;
    const base = e.x.capturePtr();
    const dv = new DataView(e.buffer);
    const u8 = new Uint8Array(e.buffer);
    const head = dv.getUint32(base + CAPH_HEAD, true);
    let tail = dv.getUint32(base + CAPH_TAIL, true);
    // engine clock (ms) → wall clock
    const offset = Date.now() - nowMs();
    while (tail !== head) {
      const r = base + CAPTURE_HEADER + (tail & (CAPTURE_SLOTS - 1)) * CAPTURE_REC_SIZE;
      if (this.backlog.length < BACKLOG) {
        const caplen = dv.getUint16(r + CAPR_CAPLEN, true);
        this.backlog.push({
          timeMs: Math.round(dv.getUint32(r + CAPR_TIME, true) * 100 + offset),
          reason: DROP_REASONS[u8[r + CAPR_REASON]!] ?? String(u8[r + CAPR_REASON]),
          side: u8[r + CAPR_SIDE] ? 'wan' : 'lan',
          length: dv.getUint32(r + CAPR_LEN, true),
          data: Buffer.from(u8.subarray(r + CAPR_DATA, r + CAPR_DATA + caplen)).toString('base64'),
        });
      } else {
        this.lost++;
      }
      tail = (tail + 1) >>> 0;
    }
    dv.setUint32(base + CAPH_TAIL, tail, true);
    const engineLost = dv.getUint32(base + CAPH_LOST, true);
    this.lost += engineLost - this.lostSeen;
    this.lostSeen = engineLost;
  }

  /** What was captured since the last read (and renews the lease). */
  read(): CaptureRead {
    if (this.active) this.drain();
    this.lastRead = Date.now();
    const out = { drops: this.backlog, lost: this.lost, active: this.active };
    this.backlog = [];
    this.lost = 0;
    return out;
  }

  stop(): void {
    if (!this.active) return;
    this.engine.x.setCapture(0, 0);
    this.drain();
    this.active = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
