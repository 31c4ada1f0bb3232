// The supervisor's side of the drop capture (assembly/nat/capture.ts): the
// engine copies dropped packets into a fixed ring while a capture runs; this
// drains the ring on a 100 ms timer (Engine.takeCaptured, run on the
// data-path thread between batches, returns copies), keeps a bounded
// backlog for the CLI, which fetches it over the control socket
// (capture-read) and writes pcap (src/cli/capture.ts). One capture at a
// time; a capture whose client stopped asking for 5 s is switched off, so a
// killed CLI never leaves the engine copying drops.

import type { CapturedDrop, EngineView } from '../engine/engine.js';
import { DROP_REASONS } from '../engine/abi.js';

export type { CapturedDrop } from '../engine/engine.js';

export const DRAIN_MS = 100;
export const LEASE_MS = 5000;
/** Records kept for the CLI between two reads; beyond this they count as lost. */
export const BACKLOG = 2048;

export interface CaptureRead { drops: CapturedDrop[]; lost: number; active: boolean }

export class DropCapture {
  private active = false;
  private timer: NodeJS.Timeout | null = null;
  private backlog: CapturedDrop[] = [];
  private lost = 0;
  private lastRead = 0;
  private lostSeen = 0;

  /** onExpire: called when the lease ran out and the capture was switched off. */
  constructor(private readonly engine: Pick<EngineView, 'setCapture' | 'takeCaptured'>, private readonly onExpire: () => void = () => {}) {}

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
    this.engine.setCapture(true, code);
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
    const t = this.engine.takeCaptured(BACKLOG - this.backlog.length);
    for (const d of t.drops) this.backlog.push(d);
    this.lost += t.skipped + t.engineLost - this.lostSeen;
    this.lostSeen = t.engineLost;
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
    this.engine.setCapture(false, 0);
    this.drain();
    this.active = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
