// What the supervisor starts and stops for observability, in one object:
// the tallies the engine does not keep (WAN address history, reloads), the
// snapshots (stats, flow table) rebuilt at most once a second, and the
// servers and file the config asks for (metrics_listen, metrics_file,
// web_listen; all off by default).

import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Config } from '../config/index.js';
import type { EngineView, FlowEntry } from '../engine/engine.js';
import type { Logger } from '../log.js';
import { queueDrops, queueDropsByClass, queueMarks, queueTrims, writeDrops } from '../tun/tun.js';
import { collectStats, type FlowOffloadTally, type SnapshotTally, type Stats, type WanChange } from './stats.js';
import { CONTENT_TYPE, renderMetrics } from './metrics.js';
import { ReadOnlyServer, type Reply } from './http.js';
import { PAGE_CSS, PAGE_HTML, PAGE_JS } from './page.js';
import { DropCapture } from './capture.js';
import type { Request, Response } from '../control/protocol.js';

/** Snapshots are reused for this long. */
export const SNAPSHOT_MS = 1000;
/** metrics_file is rewritten this often. */
export const METRICS_FILE_MS = 5000;
/** The dashboard's flow list shows at most this many ordinary flows (VPN entries: all). */
export const FLOW_LIMIT = 1000;
const WAN_HISTORY = 20;

/** acct: option acct is on, the flows carry bytesOut/bytesIn. */
export interface FlowsView { total: number; shown: number; limit: number; acct: boolean; flows: FlowEntry[]; vpn: FlowEntry[] }

export interface ObserverOptions {
  cfg: Config;
  engine: EngineView;
  log: Logger;
  lanSubnets: string[];
  /** The batch loop's batch-size histogram (BatchLoop, or the data-path thread's copy of it). */
  loop: () => { readonly batchSizes: Float64Array } | null;
  /** The state snapshot's tallies (absent: no snapshot kept). */
  snapshot?: () => SnapshotTally;
  /** The TUN_F_* offload bits the TUNs took (absent: 0, off). */
  offloadBits?: () => number;
  /** The flow fast path's figures while it runs (absent, or null: not running). */
  flowOffload?: () => FlowOffloadTally | null;
}

export class Observer {
  private wanAddress: string | null = null;
  private wanChanges = 0;
  private readonly wanHistory: WanChange[] = [];
  private reloadsOk = 0;
  private reloadsFailed = 0;
  private readonly startTimeMs = Date.now();
  private cachedStats: { at: number; stats: Stats; metrics?: string; json?: string } | null = null;
  private cachedFlows: { at: number; json: string } | null = null;
  private servers: ReadOnlyServer[] = [];
  private fileTimer: NodeJS.Timeout | null = null;
  private fileFailing = false;

  readonly capture: DropCapture;

  constructor(private readonly o: ObserverOptions) {
    this.capture = new DropCapture(o.engine, () => this.o.log.warn('drop capture stopped: its client has not asked for 5 s'));
  }

  /** capture-start / capture-read / capture-stop from the control socket. */
  captureCommand(req: Request): Response {
    try {
      if (req.cmd === 'capture-start') {
        this.capture.start(req.reason);
        this.o.log.info({ reason: req.reason ?? 'all' }, 'drop capture started');
        return { ok: true };
      }
      if (req.cmd === 'capture-read') return { ok: true, data: this.capture.read() };
      const was = this.capture.running;
      this.capture.stop();
      if (was) this.o.log.info('drop capture stopped');
      return { ok: true };
    } catch (err) {
      return { ok: false, error: (err as Error).message };
    }
  }

  /** The WAN address now (null: none). The first call sets it without counting a change. */
  noteWanAddress(addr: string | null): void {
    const first = this.wanHistory.length === 0;
    if (!first && addr === this.wanAddress) return;
    if (!first) this.wanChanges++;
    this.wanAddress = addr;
    this.wanHistory.push({ timeMs: Date.now(), address: addr });
    if (this.wanHistory.length > WAN_HISTORY) this.wanHistory.shift();
  }

  noteReload(ok: boolean): void {
    if (ok) this.reloadsOk++; else this.reloadsFailed++;
  }

  private snapshot(now = Date.now()) {
    if (!this.cachedStats || now - this.cachedStats.at >= SNAPSHOT_MS) {
      const tunWriteDrops = () => { try { return writeDrops(); } catch { return 0; } }; // no addon: engine-only tests
      const tunQueueDrops = () => { try { return queueDrops(); } catch { return 0; } };
      const tunQueueTrims = () => { try { return queueTrims(); } catch { return 0; } };
      const tunQueueMarks = () => { try { return queueMarks(); } catch { return 0; } };
      const tunQueueDropsByClass = () => { try { return queueDropsByClass(); } catch { return { tcp: 0, udp: 0, icmp: 0, frag: 0, other: 0 }; } };
      const stats = collectStats(this.o.engine, {
        startTimeMs: this.startTimeMs, wanAddress: this.wanAddress, wanChanges: this.wanChanges, wanHistory: this.wanHistory,
        reloadsOk: this.reloadsOk, reloadsFailed: this.reloadsFailed, batchSizes: this.o.loop()?.batchSizes ?? null, tunWriteDrops,
        tunQueueDrops, tunQueueDropsByClass, tunQueueTrims, tunQueueMarks, offloadBits: this.o.offloadBits, flowOffload: this.o.flowOffload,
        snapshot: this.o.snapshot?.() ?? null,
      });
      this.cachedStats = { at: now, stats };
    }
    return this.cachedStats;
  }

  stats(): Stats { return this.snapshot().stats; }

  metrics(): string {
    const s = this.snapshot();
    return (s.metrics ??= renderMetrics(s.stats));
  }

  private statsJson(): string {
    const s = this.snapshot();
    return (s.json ??= JSON.stringify(s.stats));
  }

  private flowsJson(now = Date.now()): string {
    if (!this.cachedFlows || now - this.cachedFlows.at >= SNAPSHOT_MS) {
      const wan = this.wanAddress ?? '0.0.0.0';
      const flows = this.o.engine.flows(wan, undefined, FLOW_LIMIT);
      const view: FlowsView = {
        total: this.o.engine.flowActive(), shown: flows.length, limit: FLOW_LIMIT, acct: this.o.engine.acct, flows, vpn: this.o.engine.vpnEntries(wan),
      };
      this.cachedFlows = { at: now, json: JSON.stringify(view) };
    }
    return this.cachedFlows.json;
  }

  async start(): Promise<void> {
    const m = this.o.cfg.main;
    const onError = (err: Error) => this.o.log.error({ err: err.message }, 'observability server error');
    try {
      if (m.metricsListen) {
        const s = new ReadOnlyServer({
          listen: m.metricsListen, allow: this.o.lanSubnets, hostCheck: false, refuseCrossSite: true, onError,
          routes: { '/metrics': (): Reply => ({ type: CONTENT_TYPE, body: this.metrics() }) },
        });
        this.servers.push(s);
        await s.listen();
        this.o.log.info({ listen: `${m.metricsListen.host}:${m.metricsListen.port}` }, 'metrics served at /metrics');
      }
      if (m.webListen) {
        const json = 'application/json; charset=utf-8';
        const s = new ReadOnlyServer({
          listen: m.webListen, allow: this.o.lanSubnets, hostCheck: true, refuseCrossSite: true, onError,
          routes: {
            '/': () => ({ type: 'text/html; charset=utf-8', body: PAGE_HTML }),
            '/app.js': () => ({ type: 'text/javascript; charset=utf-8', body: PAGE_JS }),
            '/app.css': () => ({ type: 'text/css; charset=utf-8', body: PAGE_CSS }),
            '/api/stats': () => ({ type: json, body: this.statsJson() }),
            '/api/flows': () => ({ type: json, body: this.flowsJson() }),
            '/favicon.ico': () => ({ status: 204, type: 'image/x-icon', body: '' }),
          },
        });
        this.servers.push(s);
        await s.listen();
        this.o.log.info({ listen: `http://${m.webListen.host}:${m.webListen.port}/` }, 'dashboard served');
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
    if (m.metricsFile) {
      const file = m.metricsFile;
      const write = () => void this.writeMetricsFile(file);
      write();
      this.fileTimer = setInterval(write, METRICS_FILE_MS);
      this.fileTimer.unref();
    }
  }

  /** Written to a temporary name beside it, then renamed: a reader sees the old or the new file, whole. */
  async writeMetricsFile(file: string): Promise<void> {
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      await mkdir(dirname(file), { recursive: true, mode: 0o755 });
      await writeFile(tmp, this.metrics(), { mode: 0o644 });
      await rename(tmp, file);
      if (this.fileFailing) this.o.log.info({ file }, 'metrics file written again');
      this.fileFailing = false;
    } catch (err) {
      if (!this.fileFailing) this.o.log.error({ file, err: (err as Error).message }, 'cannot write the metrics file');
      this.fileFailing = true;
    }
  }

  async stop(): Promise<void> {
    this.capture.stop();
    if (this.fileTimer) clearInterval(this.fileTimer);
    this.fileTimer = null;
    const s = this.servers;
    this.servers = [];
    await Promise.all(s.map((x) => x.close()));
  }
}
