// `vpnmasq run`: the thin supervisor. Load the config, start the data-path
// thread (src/datapath/worker.ts: the engine, both TUNs and the batch loop
// live there), set up policy routing, follow the WAN address, drain engine
// events into the log, answer the control socket, reload on SIGHUP or
// `vpnmasq reload`, and put everything back on SIGTERM/SIGINT. No packet
// logic lives here, and no packet waits for this thread.

import { totalmem } from 'node:os';
import { existsSync, writeFileSync } from 'node:fs';
import { ConfigError, loadConfig, redirectLabel, ruleLabel, type Config } from './config/index.js';
import { filterEmpty, type ConntrackFilter } from './cli/filter.js';
import { discard, discardStaleTemporaries, writeCapture, writeCaptureSync, type Restored } from './snapshot/state.js';
import { POLICY_REASONS, PROTO_NAMES } from './engine/abi.js';
import type { FlowEntry } from './engine/engine.js';
import { createLogger, type LogFormat, type Logger } from './log.js';
import { deviceExists, ipv4Addresses, setTxQueueLen, subnetsOf, txQueueLen } from './net/iface.js';
import { setupRouting, teardownStale, type ForwardPlan, type Routing, type RoutingPlan } from './net/routes.js';
import { installGuard } from './net/guard.js';
import { readWanAddress, watchWanAddress, type WanWatch } from './net/wanwatch.js';
import { HOST_QUEUE_COUNTS, HOST_QUEUE_COUNTS_TEXT, offloadNames, queueClockWanted, queueDrops, queueDropsByClass, queueMarks, queueTrims, readerQueueWanted, txQueueLenWanted, writeDrops } from './tun/tun.js';
import type { PriorityApplied } from './datapath/priority.js';
import { PRIORITIES, type Priority } from './config/options.js';
import { DataPathThread } from './datapath/thread.js';
import { hugePagesWanted, hugeResidentBytes } from './datapath/hugepages.js';
import type { TunsOpened } from './datapath/worker.js';
import { RemoteError } from './datapath/rpc.js';
import { ControlServer } from './control/server.js';
import type { Request, Response } from './control/protocol.js';
import { Observer } from './observe/index.js';
import { checkListeners, deviceAddresses } from './observe/listen.js';

/** Flows the kernel's fast path holds at most (two entries each, 48 + 16 bytes and the hash's own: about 10 MiB of kernel memory at most). */
const FAST_PATH_FLOWS = 65536;

/**
 * A boolean option, unless the environment variable says 0 or 1 (to run
 * test suites and benchmarks both ways): VPNMASQ_OFFLOAD for option
 * offload, VPNMASQ_GRO for option gro, VPNMASQ_FLOW_OFFLOAD for option
 * flow_offload.
 */
function switchWanted(option: boolean, envName: string): boolean {
  const env = process.env[envName];
  if (env === '0') return false;
  if (env === '1') return true;
  return option;
}

/**
 * option host_queues 'auto': 8 rings with this much RAM or more, else one.
 * A multi-queue TUN is made with the kernel's 256 possible queues and their
 * sysfs objects, about 7 MB of kernel memory, which a 256 MiB router does
 * not have to spare (the x86_64 image's OOM killer took vpnmasq with them).
 */
export const HOST_QUEUES_MIN_RAM = 384 * 1048576;
export const HOST_QUEUES_AUTO = 8;

/**
 * The LAN TUN's rings: option host_queues, or VPNMASQ_HOST_QUEUES (1, 2, 4,
 * 8 or 16) for A/B runs, anything else there refused; with why 'auto' chose
 * one ring ('' otherwise).
 */
export function hostQueuesWanted(option: number | 'auto', ram = totalmem()): { queues: number; note: string } {
  const env = process.env.VPNMASQ_HOST_QUEUES;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!HOST_QUEUE_COUNTS.includes(n)) throw new RangeError(`VPNMASQ_HOST_QUEUES must be ${HOST_QUEUE_COUNTS_TEXT}, not ${JSON.stringify(env)}`);
    return { queues: n, note: '' };
  }
  if (option !== 'auto') return { queues: option, note: '' };
  if (ram >= HOST_QUEUES_MIN_RAM) return { queues: HOST_QUEUES_AUTO, note: '' };
  return { queues: 1, note: `auto: ${Math.round(ram / 1048576)} MiB of RAM, ${HOST_QUEUES_MIN_RAM / 1048576} MiB or more for ${HOST_QUEUES_AUTO}` };
}

/** When this module (and everything it imports) had loaded: ms since the process started. */
const loadedAtMs = performance.now();

/** An error whose message is the one line to print before exiting non-zero. */
export class FatalError extends Error {
  constructor(message: string, readonly exitCode = 1) { super(message); }
}

export interface RunOptions {
  configPath: string;
  log?: Logger;
  logFormat?: LogFormat;
  /** `vpnmasq run --fresh`: discard the state snapshot instead of restoring it */
  fresh?: boolean;
}

/** What `status` says about the state snapshot. */
interface SnapshotStatus {
  file: string;
  intervalS: number;
  restored: (Restored & { at: string; ms: number }) | null;
  refused: string | null;
  fresh: boolean;
  lastWrite: { at: string; bytes: number; copyMs: number; writeMs: number } | null;
  writeError: string | null;
}

/**
 * Below this much RAM the data path runs on the main thread: a thread of its
 * own is a second V8 isolate with its own copy of the modules, about 20 MiB,
 * which left a 256 MiB router (the image's budget) too little for a CLI
 * command beside the daemon (the OOM killer took vpnmasq).
 */
export const DATA_PATH_THREAD_MIN_RAM = 384 * 1048576;

/** Inline (main thread) or a thread of its own; VPNMASQ_DATAPATH=thread|inline overrides (tests). */
function dataPathInline(): boolean {
  const env = process.env.VPNMASQ_DATAPATH;
  if (env === 'thread') return false;
  if (env === 'inline') return true;
  return totalmem() < DATA_PATH_THREAD_MIN_RAM;
}

/** option priority, unless VPNMASQ_PRIORITY overrides it (benchmarks and tests on a shared machine). */
function priorityWanted(option: Priority): Priority {
  const env = process.env.VPNMASQ_PRIORITY;
  return env && (PRIORITIES as readonly string[]).includes(env) ? (env as Priority) : option;
}

/** The TCP/UDP port forwards of a config, as the kernel side of NAT loopback diverts them (src/net/routes.ts). */
export function forwardsOf(cfg: Config): ForwardPlan[] {
  const out: ForwardPlan[] = [];
  for (const r of cfg.redirects) {
    if (!r.srcDport || !r.destPort) continue;
    for (const proto of r.proto) {
      if (proto !== 6 && proto !== 17) continue;
      out.push({
        proto: proto === 6 ? 'tcp' : 'udp', ports: [r.srcDport[0], r.srcDport[1]], server: r.destIp,
        serverPorts: [r.destPort[0], r.destPort[1]], reflect: r.reflection !== false,
      });
    }
  }
  return out;
}

/** The router's own addresses on the LAN device as 'a.b.c.d/len' (NAT loopback's internal source); [] when it has none. */
function routerLanOf(dev: string): string[] {
  try {
    return ipv4Addresses(dev).map((a) => `${a.address}/${a.prefixLen}`);
  } catch {
    return [];
  }
}


export class Supervisor {
  private cfg: Config;
  private log: Logger;
  /** The data-path thread: the engine, both TUNs and the batch loop. */
  private dp!: DataPathThread;
  private tuns: TunsOpened | null = null;
  /** Each TUN's txqueuelen before start set it: a persistent TUN (created beforehand) outlives the run and gets it back at stop. */
  private txqlenBefore: [string, number][] = [];
  private forwarding = false;
  private routing: Routing | null = null;
  private wan: WanWatch | null = null;
  private priority: PriorityApplied | null = null;
  /** option flow_offload as it runs: on, or off with why (the option, or the kernel's refusal). */
  private fastPath: { on: boolean; note: string } = { on: false, note: 'off (option flow_offload)' };
  private control: ControlServer | null = null;
  private observer: Observer | null = null;
  private timers: NodeJS.Timeout[] = [];
  private wanAddress: string | null = null;
  private lanSubnets: string[] = [];
  /** The router's addresses on the LAN device, read at start and on reload. */
  private routerLan: string[] = [];
  private stopping = false;
  private startedAt = Date.now();
  private lastDrops: Record<string, number> = {};
  private snap!: SnapshotStatus;
  private snapWriting = false;
  /** The background snapshot write in flight, if any (stop waits for it, so the final snapshot is written last). */
  private snapWrite: Promise<void> | null = null;
  private startup: Record<string, number> = {};

  /** Called when a reload switches vpnmasq off (option enabled '0'): run() stops. */
  onDisabled: (() => void) | null = null;

  constructor(private readonly opts: RunOptions) {
    this.cfg = loadConfig(opts.configPath);
    this.log = opts.log ?? createLogger(this.cfg.main.logLevel, { format: opts.logFormat });
  }

  get config(): Config {
    return this.cfg;
  }

  private plan(): RoutingPlan {
    const m = this.cfg.main;
    return {
      lanDevice: m.lanDevice, wanDevice: m.wanDevice, tunInside: m.tunInside, tunOutside: m.tunOutside,
      wanAddress: this.wanAddress, lanSubnets: this.lanSubnets, masqPorts: [m.masqPorts[0], m.masqPorts[1]],
      stateFile: `/run/vpnmasq/routing-${m.tunInside}.json`,
      forwards: forwardsOf(this.cfg),
    };
  }

  async start(): Promise<void> {
    const tStart = performance.now();
    const m = this.cfg.main;
    if (process.getuid && process.getuid() !== 0) {
      throw new FatalError('vpnmasq: must run as root (it creates TUN devices and policy routes)');
    }
    if (!existsSync('/dev/net/tun')) throw new FatalError('vpnmasq: /dev/net/tun is missing (load the tun module: modprobe tun)');
    for (const [opt, dev] of [['lan_device', m.lanDevice], ['wan_device', m.wanDevice]] as const) {
      if (!deviceExists(dev)) throw new FatalError(`vpnmasq: ${this.cfg.file}: option ${opt}: device "${dev}" does not exist`);
    }
    // Fail closed before anything else changes: from here on, whatever happens
    // to this process, the kernel never forwards between LAN and WAN itself.
    try {
      const g = installGuard({ lanDevice: m.lanDevice, wanDevice: m.wanDevice, masqPorts: m.masqPorts });
      if (g.done !== 'present') this.log.info({ lan: m.lanDevice, wan: m.wanDevice, wanInput: g.wanInput }, `fail-closed guard ${g.done}`);
      if (g.fallback) {
        this.log.warn({ reason: g.fallback }, 'fail-closed guard: no nft socket lookup (kmod nft_socket); while vpnmasq is down only the masquerade pool is kept from being answered, kept source ports are not');
      }
    } catch (err) {
      throw new FatalError(`vpnmasq: cannot install the fail-closed guard: ${(err as Error).message}`);
    }
    this.lanSubnets = m.lanSubnets.length ? [...m.lanSubnets] : subnetsOf(m.lanDevice);
    if (this.lanSubnets.length === 0) {
      throw new FatalError(`vpnmasq: ${m.lanDevice} has no IPv4 subnet and no lan_subnet is configured`);
    }
    // Metrics and dashboard addresses: a LAN (or loopback) address, never the WAN's.
    const addrs = deviceAddresses(this.cfg);
    try {
      if (addrs) checkListeners(this.cfg, addrs, readWanAddress(m.wanDevice));
    } catch (err) {
      throw new FatalError(`vpnmasq: ${(err as Error).message}`);
    }
    this.routerLan = routerLanOf(m.lanDevice);
    if (this.routerLan.length === 0 && this.cfg.redirects.some((r) => r.reflection !== false && r.reflectionSrc !== 'external' && r.srcDport)) {
      this.log.warn({ lan: m.lanDevice }, 'the LAN device has no IPv4 address: NAT loopback with reflection_src internal cannot work until a restart with one');
    }
    const t0 = performance.now();
    const inline = dataPathInline();
    if (inline) {
      this.log.info({ ramMiB: Math.round(totalmem() / 1048576) }, `data path on the main thread: a thread of its own needs ${DATA_PATH_THREAD_MIN_RAM / 1048576} MiB of RAM or more`);
    }
    this.dp = new DataPathThread({ maxFlows: m.maxFlows, acct: m.acct, hugePages: hugePagesWanted().on, inline, onDeath: (reason) => this.dataPathDied(reason) });
    try {
      this.dp.applyConfig(this.cfg, this.lanSubnets, this.routerLan);
    } catch (err) {
      await this.dp.terminate();
      throw new FatalError(`vpnmasq: ${(err as Error).message}`);
    }
    const t1 = performance.now();

    // Crash safety: whatever a killed earlier run left (rules, routes,
    // sysctls, proxy-ARP entries) is removed here, once, before anything of
    // this run exists; setupRouting below is told not to do it again, and
    // stop() removes only what this run installed.
    teardownStale(this.plan());
    const t1b = performance.now();
    try {
      const hostQueues = hostQueuesWanted(m.hostQueues);
      this.tuns = this.dp.openTuns(m.tunInside, m.tunOutside, switchWanted(m.offload, 'VPNMASQ_OFFLOAD'), switchWanted(m.gro, 'VPNMASQ_GRO'), hostQueues.queues);
      // One ring by choice ('auto' on a small router) is said in status, not warned of.
      if (!this.tuns.hostQueues.note && hostQueues.note) this.tuns.hostQueues.note = hostQueues.note;
      else if (this.tuns.hostQueues.note) this.log.warn({ device: m.tunInside, reason: this.tuns.hostQueues.note }, 'host queues unavailable: one ring for all LAN hosts');
      if (hostQueues.queues > 1 && this.tuns.hostQueues.wanNote) this.log.warn({ device: m.tunOutside, reason: this.tuns.hostQueues.wanNote }, 'host queues unavailable: one ring for all WAN traffic');
    } catch (err) {
      await this.dp.terminate();
      throw new FatalError(`vpnmasq: ${(err as Error).message}`);
    }
    if (this.tuns.refused) this.log.warn({ reason: this.tuns.note }, 'TUN offloads unavailable: one packet per read');
    const clock = this.tuns.queueClock.lan ?? this.tuns.queueClock.wan;
    if (clock?.kind === 'empty' && queueClockWanted()) {
      this.log.warn({ reason: clock.reason }, 'TUN ring clock unavailable: the reader queue times packets by the ring-empty bound');
    }

    // The ring toward the reader (README "Floods that are not TCP"): long enough
    // for the bursts TCP sends while the data path waits for its CPU, short
    // enough that a flood it cannot keep up with adds little delay.
    try {
      const len = txQueueLenWanted();
      for (const dev of [m.tunInside, m.tunOutside]) {
        const before = txQueueLen(dev);
        if (before !== null) this.txqlenBefore.push([dev, before]);
        setTxQueueLen(dev, len);
      }
    } catch (err) {
      await this.stop();
      throw new FatalError(`vpnmasq: ${(err as Error).message}`);
    }
    const t2 = performance.now();

    // The first WAN address is read synchronously so routes start complete.
    this.wan = watchWanAddress(m.wanDevice, (addr) => this.onWanAddress(addr));
    this.wanAddress = this.wan.current();
    if (this.wanAddress) this.dp.setWanAddress(this.wanAddress);
    const t3 = performance.now();
    this.restoreState();
    const t4 = performance.now();
    try {
      this.routing = setupRouting(this.plan(), { staleCleaned: true });
    } catch (err) {
      await this.stop();
      throw new FatalError(`vpnmasq: routing setup failed: ${(err as Error).message}`);
    }
    const t5 = performance.now();

    // The data-path thread sets its own scheduling (per thread on Linux) before its first batch.
    this.priority = this.dp.startLoop(priorityWanted(m.priority), m.busyPoll);
    if (this.priority.note) this.log.warn({ priority: this.priority.applied }, `data path priority: ${this.priority.note}`);
    this.setFastPath(m);
    this.forwarding = true;
    // performance.now() counts from the process's start: this is the
    // respawn time (node start-up, module loading included) up to forwarding.
    const t6 = performance.now();
    const r = (ms: number) => +ms.toFixed(1);
    this.startup = {
      nodeMs: r(t0), nodeAndImportsMs: r(loadedAtMs), configMs: r(tStart - loadedAtMs), checksMs: r(t0 - tStart),
      loadWasmMs: r(t1 - t0), staleMs: r(t1b - t1), tunsMs: r(t2 - t1b), wanMs: r(t3 - t2), restoreMs: r(t4 - t3),
      routesMs: r(t5 - t4), forwardingAtMs: r(t6),
    };
    this.control = new ControlServer(m.controlSocket, (req) => this.handle(req));
    await this.control.listen();
    this.observer = new Observer({
      cfg: this.cfg, engine: this.dp, log: this.log, lanSubnets: this.lanSubnets, loop: () => (this.forwarding ? this.dp : null),
      offloadBits: () => (this.tuns?.vnet ? this.tuns.offloadsIn : 0),
      flowOffload: () => (this.fastPath.on ? this.dp.status().fastPath : null),
      snapshot: () => ({
        lastWriteMs: this.snap.lastWrite ? Date.parse(this.snap.lastWrite.at) : null,
        bytes: this.snap.lastWrite?.bytes ?? 0,
        restored: this.snap.restored !== null,
      }),
    });
    this.observer.noteWanAddress(this.wanAddress);
    try {
      await this.observer.start();
    } catch (err) {
      await this.stop();
      throw new FatalError(`vpnmasq: metrics/dashboard server: ${(err as Error).message}`);
    }
    // The engine's tick (expiry) runs on the data-path thread's own timer.
    this.timers.push(setInterval(() => this.drainEvents(), 200));
    if (m.snapshotInterval > 0) this.timers.push(setInterval(() => void this.saveState(), m.snapshotInterval * 1000));
    this.log.info({ startup: this.startup }, 'forwarding');
    this.log.info({
      lan: m.lanDevice, wan: m.wanDevice, wanAddress: this.wanAddress, lanSubnets: this.lanSubnets,
      maxFlows: m.maxFlows, acct: this.dp.acct, memoryMiB: +(this.dp.memoryBytes / 1048576).toFixed(1), hugePages: this.hugePagesStatus(), dataPathThread: this.dp.threadId,
      redirects: this.cfg.redirects.length, rules: this.cfg.rules.length,
      redirectList: this.cfg.redirects.map(redirectLabel), ruleList: this.cfg.rules.map(ruleLabel), socket: m.controlSocket,
      offload: this.tuns.vnet ? offloadNames(this.tuns.offloadsIn).join(',') || 'vnet only' : 'off',
      priority: this.priority?.applied,
      queueClock: (this.tuns.queueClock.lan ?? this.tuns.queueClock.wan)?.kind ?? 'off',
      hostQueues: this.tuns.hostQueues.lan,
      wanHostQueues: this.tuns.hostQueues.wan,
      flowOffload: this.fastPath.on ? 'on' : this.fastPath.note,
    }, 'vpnmasq ready');
  }

  private snapshotFile(): string {
    return `${this.cfg.main.snapshotDir}/snapshot-${this.cfg.main.tunInside}.bin`;
  }

  /** Restores the snapshot if there is one that fits; else one log line and an empty engine. */
  private restoreState(): void {
    const file = this.snapshotFile();
    this.snap = {
      file, intervalS: this.cfg.main.snapshotInterval, restored: null, refused: null, fresh: !!this.opts.fresh,
      lastWrite: null, writeError: null,
    };
    const stale = discardStaleTemporaries(file);
    if (stale.length) this.log.info({ file, removed: stale }, 'half-written snapshot files of a killed run removed');
    if (this.opts.fresh) {
      if (discard(file)) this.log.info({ file }, 'state snapshot discarded (--fresh)');
      return;
    }
    const r = this.dp.restore(file, this.wanAddress, this.cfg, this.lanSubnets, this.routerLan);
    if (r.restored) {
      const res = r.restored;
      this.snap.restored = { ...res, at: new Date().toISOString() };
      this.log.info({ file, savedAt: res.savedAt, ageS: +(res.ageMs / 1000).toFixed(1), entries: res.entries,
        bytes: res.bytes, ms: res.ms, ...(res.buildIdChanged ? { engineChanged: true } : {}) }, 'state restored');
      if (res.acctNote) this.log.warn({ file }, `state restored, but ${res.acctNote}`);
    } else if (r.refused) {
      // The data-path thread went back to an empty engine with the configuration: all or nothing.
      this.snap.refused = r.refused;
      this.log.warn({ file }, `state snapshot refused, starting empty: ${r.refused}`);
    }
  }

  /** Copies the state between batches, writes it in the background (one write at a time). */
  private async saveState(): Promise<void> {
    if (this.snapWriting || this.stopping) return;
    this.snapWriting = true;
    let done!: () => void;
    this.snapWrite = new Promise<void>((r) => { done = r; });
    try {
      const c = this.dp.capture(this.wanAddress);
      const t0 = performance.now();
      const bytes = await writeCapture(this.snapshotFile(), c);
      this.snap.lastWrite = { at: new Date(c.header.wallMs).toISOString(), bytes, copyMs: +c.copyMs.toFixed(2), writeMs: +(performance.now() - t0).toFixed(1) };
      if (this.snap.writeError) this.log.info('state snapshot written again');
      this.snap.writeError = null;
    } catch (err) {
      const msg = (err as Error).message;
      if (this.snap.writeError !== msg) this.log.error({ file: this.snapshotFile(), error: msg }, 'state snapshot not written');
      this.snap.writeError = msg;
    } finally {
      this.snapWriting = false;
      done();
    }
  }

  private onWanAddress(addr: string | null): void {
    if (this.stopping || addr === this.wanAddress) return;
    const old = this.wanAddress;
    this.wanAddress = addr;
    this.observer?.noteWanAddress(addr);
    // No address: keep the old flows until one arrives (a DHCP renew may
    // bring the same address back); a different address flushes them.
    if (addr) {
      const flushed = this.dp.setWanAddress(addr);
      this.log.info({ old, new: addr, flushed }, 'WAN address changed');
    } else {
      this.log.warn({ old }, 'WAN address lost');
    }
    try {
      this.routing?.updateWanAddress(addr);
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'could not update the WAN route');
    }
  }

  private drainEvents(): void {
    const { events, drops } = this.dp.drainEvents(4096);
    for (const ev of events) {
      if (ev.type === 'drop' && ev.reason) {
        const total = drops[ev.reason] ?? 0;
        const since = total - (this.lastDrops[ev.reason] ?? 0);
        this.lastDrops[ev.reason] = total;
        // Policy drops are worth a line (at most one a second per reason);
        // malformed input is counted quietly.
        const level = POLICY_REASONS.has(ev.reason) ? 'info' : 'debug';
        this.log[level]({ reason: ev.reason, side: ev.side ? 'wan' : 'lan', since, total }, 'dropped');
      } else if (ev.type === 'flow_new' || ev.type === 'flow_expired') {
        if (this.log.isLevelEnabled('debug')) {
          this.log.debug({
            proto: PROTO_NAMES[ev.proto] ?? ev.proto, lan: `${ev.lan}:${ev.lanPort}`,
            remote: `${ev.remote}:${ev.remotePort}`, wanPort: ev.aliasPort,
          }, ev.type === 'flow_new' ? 'flow new' : 'flow expired');
        }
      } else if (ev.type === 'esp_bound') {
        this.log.info({ lan: ev.lan, server: ev.remote, spiIn: '0x' + (ev.extra >>> 0).toString(16).padStart(8, '0') }, 'ESP inbound SPI associated');
      } else if (ev.type === 'ah_refused') {
        this.log.warn({ lan: ev.lan, remote: ev.remote, side: ev.side ? 'wan' : 'lan' },
          'AH dropped: it authenticates the IP addresses, so it cannot pass address translation (use ESP, or NAT-T)');
      } else if (ev.type === 'ike_collision') {
        this.log.info({ lan: ev.lan, server: ev.remote }, 'IKE initiator cookie already in use toward this server by another LAN host: dropped');
      } else if (ev.type === 'flush') {
        this.log.info({ flows: ev.extra }, 'flows flushed');
      }
    }
  }

  /**
   * option flow_offload (VPNMASQ_FLOW_OFFLOAD overrides it both ways): the
   * kernel's fast path for established TCP (src/datapath/fastpath.ts)
   * opened or closed; a kernel that refuses it leaves it off with one
   * warning, and the TUN path carries everything.
   */
  private setFastPath(m: Config['main']): void {
    if (!switchWanted(m.flowOffload, 'VPNMASQ_FLOW_OFFLOAD')) {
      if (this.fastPath.on) this.dp.closeFastPath();
      this.fastPath = { on: false, note: 'off (option flow_offload)' };
      return;
    }
    if (this.fastPath.on) return;
    this.fastPath = this.dp.openFastPath(m.lanDevice, m.wanDevice, FAST_PATH_FLOWS);
    if (!this.fastPath.on) this.log.warn({ reason: this.fastPath.note }, 'flow fast path unavailable: every packet through the TUNs');
  }

  /** What `status` says about TUN offloads. */
  offloadStatus(): Record<string, unknown> {
    const t = this.tuns;
    const bits = t?.offloadsIn ?? 0;
    return {
      enabled: t?.vnet ?? false, offloads: offloadNames(bits),
      uso: (bits & 0x60) === 0x60, gro: t?.gro ?? false, slots: t ? `${t.slotCount} × ${t.slotSize} B` : null,
      ...(t?.note ? { note: t.note } : {}),
    };
  }

  /** The TUN rings and the readers' queue discipline as they run (txqueuelen read back from the devices). */
  tunQueueStatus(sojournUs?: unknown): Record<string, unknown> {
    const m = this.cfg.main;
    const len = (dev: string) => { try { return txQueueLen(dev); } catch { return null; } };
    // As each TUN runs it (READER_QUEUE_HOST_QUEUES where it has host queues); before the TUNs, what they will get.
    const q = this.tuns?.readerQueue.lan ?? readerQueueWanted();
    const w = this.tuns?.readerQueue.wan;
    const differs = w && (w.targetUs !== q.targetUs || w.intervalUs !== q.intervalUs);
    return {
      txqueuelen: { lan: len(m.tunInside), wan: len(m.tunOutside) }, batchBytes: q.batchBytes, targetUs: q.targetUs, intervalUs: q.intervalUs,
      ...(differs ? { wanTargetUs: w.targetUs, wanIntervalUs: w.intervalUs } : {}),
      clock: this.tuns?.queueClock ?? null,
      hostQueues: this.tuns?.hostQueues.lan ?? null,
      ...(this.tuns?.hostQueues.note ? { hostQueuesNote: this.tuns.hostQueues.note } : {}),
      wanHostQueues: this.tuns?.hostQueues.wan ?? null,
      ...(this.tuns?.hostQueues.wanNote ? { wanHostQueuesNote: this.tuns.hostQueues.wanNote } : {}),
      ...(sojournUs ? { sojournUs } : {}),
    };
  }

  /**
   * The engine's memory on transparent huge pages (src/datapath/hugepages.ts):
   * how much was advised and how much of it is on huge pages now (the
   * kernel may not have found free 2 MiB blocks), or why none.
   */
  private hugePagesStatus(): { advisedBytes: number; residentBytes: number; pageBytes: number; off?: string } {
    const h = this.dp.hugePages;
    if (!h) return { advisedBytes: 0, residentBytes: 0, pageBytes: 0, off: hugePagesWanted().off ?? 'not asked' };
    const residentBytes = h.advisedBytes ? hugeResidentBytes(h.address, h.advisedBytes) : 0;
    return { advisedBytes: h.advisedBytes, residentBytes, pageBytes: h.pageBytes, ...(h.off ? { off: h.off } : {}) };
  }

  status(): Record<string, unknown> {
    // One call: every engine figure below is from the same moment between two batches.
    const e = this.dp.status();
    return {
      offload: this.offloadStatus(),
      flowOffload: { enabled: this.fastPath.on, ...(this.fastPath.note ? { note: this.fastPath.note } : {}), ...(e.fastPath ?? {}) },
      priority: this.priority,
      dataPath: { thread: this.dp.thread, threadId: this.dp.threadId, tid: this.dp.tid, mainThreadId: 0, forwarding: this.forwarding, batches: e.batches,
        busyPollUs: e.busyPollUs, wakes: e.wakes, polls: e.polls },
      pid: process.pid, uptimeS: Math.round((Date.now() - this.startedAt) / 1000),
      config: this.cfg.file, lanDevice: this.cfg.main.lanDevice, wanDevice: this.cfg.main.wanDevice,
      wanAddress: this.wanAddress, lanSubnets: this.lanSubnets,
      flows: { active: e.flowActive, max: this.dp.maxFlows, acct: this.dp.acct, bytesPerFlow: +e.bytesPerFlow.toFixed(1) },
      memoryBytes: this.dp.memoryBytes, hugePages: this.hugePagesStatus(), counters: e.counters, drops: e.drops, tunWriteDrops: writeDrops(), tunQueueDrops: queueDrops(),
      tunQueueDropsByClass: queueDropsByClass(), tunQueueTrims: queueTrims(), tunQueueMarks: queueMarks(), tunQueue: this.tunQueueStatus(e.sojournUs),
      redirects: this.cfg.redirects.length, rules: this.cfg.rules.length,
      // by fw4 name (else the uci section name, else the line)
      redirectList: this.cfg.redirects.map(redirectLabel), ruleList: this.cfg.rules.map(ruleLabel),
      startup: this.startup,
      snapshot: this.snap,
    };
  }

  /** Re-reads the config; a bad file is refused and the running config stays. */
  reload(): { ok: boolean; error?: string; restartNeeded?: string[] } {
    let next: Config;
    try {
      next = loadConfig(this.opts.configPath);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      for (const e of err.all) this.log.error({ file: e.file, line: e.line }, `reload refused, keeping the running config: ${e.message}`);
      this.observer?.noteReload(false);
      return { ok: false, error: err.lines() };
    }
    if (!next.main.enabled) {
      // `uci set vpnmasq.main.enabled=0; uci commit; reload_config` (or a
      // SIGHUP): the same as stopping it.
      this.log.warn({ file: next.file }, "option enabled is '0' now: stopping");
      setImmediate(() => this.onDisabled?.());
      return { ok: true, restartNeeded: [] };
    }
    const restartNeeded: string[] = [];
    const a = this.cfg.main, b = next.main;
    for (const k of ['lanDevice', 'wanDevice', 'tunInside', 'tunOutside', 'offload', 'gro', 'hostQueues', 'priority', 'maxFlows', 'acct', 'controlSocket', 'snapshotDir', 'snapshotInterval'] as const) {
      if (a[k] !== b[k]) restartNeeded.push(k);
    }
    if (JSON.stringify(a.lanSubnets) !== JSON.stringify(b.lanSubnets)) restartNeeded.push('lanSubnets');
    if (a.masqPorts[0] !== b.masqPorts[0] || a.masqPorts[1] !== b.masqPorts[1]) restartNeeded.push('masqPorts');
    for (const k of ['metricsListen', 'metricsFile', 'webListen'] as const) {
      if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) restartNeeded.push(k);
    }
    const routerLan = routerLanOf(a.lanDevice); // lan_device itself changes only with a restart
    try {
      // Applied on the data-path thread in one step (or, refused, the running config again): no batch sees half of it.
      this.dp.reload(next, this.cfg, this.lanSubnets, routerLan, this.routerLan);
    } catch (err) {
      if (!(err instanceof RemoteError)) throw err;
      const msg = err.message;
      this.log.error({ error: msg }, 'reload refused; keeping the running config');
      this.observer?.noteReload(false);
      return { ok: false, error: msg };
    }
    this.routerLan = routerLan;
    if (a.busyPoll !== b.busyPoll) this.dp.setBusyPoll(b.busyPoll);
    if (a.flowOffload !== b.flowOffload) this.setFastPath(b);
    // NAT loopback's kernel side follows the forwards.
    try {
      this.routing?.updateForwards(forwardsOf(next));
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'could not update the NAT loopback marks');
    }
    this.observer?.noteReload(true);
    this.cfg = next;
    this.log.level = b.logLevel;
    if (restartNeeded.length) this.log.warn({ options: restartNeeded }, 'these options take effect after a restart');
    this.log.info({
      redirects: next.redirects.length, rules: next.rules.length,
      redirectList: next.redirects.map(redirectLabel), ruleList: next.rules.map(ruleLabel),
    }, 'config reloaded');
    return { ok: true, restartNeeded };
  }

  private handle(req: Request): Response {
    switch (req.cmd) {
      case 'status': return { ok: true, data: this.status() };
      case 'conntrack':
        return { ok: true, data: this.entries() };
      case 'conntrack-flush': {
        const flushed = this.dp.flushAll();
        this.log.info({ flows: flushed }, 'conntrack -F: every table emptied');
        return { ok: true, data: { flushed } };
      }
      case 'conntrack-delete': {
        const filter: ConntrackFilter | undefined = req.filter;
        if (!filter || typeof filter !== 'object' || filterEmpty(filter)) return { ok: false, error: 'conntrack-delete needs a filter' };
        // Chosen and deleted in one step on the data-path thread.
        const deleted = this.dp.deleteMatching(filter, this.wanAddress ?? '0.0.0.0');
        this.log.info({ filter, deleted: deleted.length }, 'conntrack -D: entries deleted');
        return { ok: true, data: deleted };
      }
      case 'reload': { const r = this.reload(); return { ok: r.ok, error: r.error, data: r }; }
      case 'wan-update': {
        // From the hotplug script: re-read the WAN address now instead of at the next poll.
        // A device that is gone reads as no address.
        this.onWanAddress(readWanAddress(this.cfg.main.wanDevice));
        return { ok: true, data: { wanAddress: this.wanAddress } };
      }
      case 'capture-start': case 'capture-read': case 'capture-stop':
        return this.observer ? this.observer.captureCommand(req) : { ok: false, error: 'not running' };
      case 'debug-block-main': case 'debug-crash-datapath':
        if (process.env.VPNMASQ_TEST_HOOKS === '1') return this.testHook(req);
        return { ok: false, error: `unknown command ${req.cmd}` };
      default: return { ok: false, error: `unknown command ${(req as { cmd: unknown }).cmd}` };
    }
  }

  /**
   * Test hooks (VPNMASQ_TEST_HOOKS=1 only). debug-block-main: the main thread
   * spins (no timer, no socket, no log runs) after writing `marker`, until
   * the file `until` exists or `ms` passed; traffic must flow meanwhile.
   * debug-crash-datapath: the data-path thread throws outside any call.
   */
  private testHook(req: Request): Response {
    if (req.cmd === 'debug-crash-datapath') { this.dp.call('crash'); return { ok: true }; }
    const limit = Math.min(Number(req.ms) || 1000, 120000);
    if (req.marker) writeFileSync(req.marker, String(process.pid));
    const t0 = performance.now();
    let released = false;
    while (performance.now() - t0 < limit) {
      if (req.until && existsSync(req.until)) { released = true; break; }
    }
    return { ok: true, data: { blockedMs: Math.round(performance.now() - t0), released } };
  }

  /** The data-path thread is gone or stuck: one line, then exit non-zero (the respawn and the fail-closed guard take over). */
  private dataPathDied(reason: string): never {
    this.log.fatal(`data path thread died: ${reason}`);
    process.exit(1);
  }

  /** Every entry of the flow, ESP, IKE and call tables, as `conntrack` lists them. */
  private entries(): FlowEntry[] {
    return this.dp.entries(this.wanAddress ?? '0.0.0.0');
  }

  /** Idempotent: stops traffic, removes routes, TUNs, the socket, timers. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    if (this.forwarding) this.dp.stopLoop();
    this.wan?.stop();
    const errors: string[] = [];
    // Clean stop: the last state, taken after the last batch, written after
    // any background write still in flight (else that older one could land last).
    if (this.snapWriting) await this.snapWrite;
    if (this.forwarding && this.snap) {
      try {
        const c = this.dp.capture(this.wanAddress);
        const bytes = writeCaptureSync(this.snapshotFile(), c);
        this.log.info({ file: this.snapshotFile(), bytes }, 'state snapshot written');
      } catch (err) { errors.push(`snapshot: ${(err as Error).message}`); }
    }
    // Only what this run installed: a setupRouting that failed has already
    // undone its partial work, and a crash's leftovers are the next start's.
    try { this.routing?.teardown(); } catch (err) { errors.push((err as Error).message); }
    if (this.dp) this.dp.closeTuns();
    // A TUN vpnmasq created went with its fd; one that was there before (persistent) gets its txqueuelen back.
    for (const [dev, len] of this.txqlenBefore) {
      try { if (txQueueLen(dev) !== null) setTxQueueLen(dev, len); } catch (err) { errors.push(`txqueuelen ${dev}: ${(err as Error).message}`); }
    }
    this.txqlenBefore = [];
    await this.control?.close();
    await this.observer?.stop();
    if (this.dp) {
      this.drainEvents();
      await this.dp.terminate();
    }
    if (errors.length) this.log.error({ errors }, 'teardown incomplete');
    else this.log.info('vpnmasq stopped; routes and TUN devices removed (the fail-closed guard stays: vpnmasq guard remove)');
  }
}


/** Runs until SIGTERM/SIGINT; resolves with the exit code. */
export async function run(opts: RunOptions): Promise<number> {
  let sup: Supervisor;
  try {
    sup = new Supervisor(opts);
  } catch (err) {
    if (err instanceof ConfigError) throw new FatalError(err.lines('vpnmasq: '));
    throw err;
  }
  if (!sup.config.main.enabled) {
    // Off until switched on: nothing is created, and exit 0 (procd's init
    // script does not even start it; this covers a hand-run or inittab).
    process.stdout.write(`vpnmasq: ${sup.config.file}: disabled (option enabled '0'); not starting\n`);
    return 0;
  }
  await sup.start();
  return new Promise<number>((resolve) => {
    const finish = async (code: number) => {
      await sup.stop();
      resolve(code);
    };
    sup.onDisabled = () => void finish(0);
    process.once('SIGTERM', () => void finish(0));
    process.once('SIGINT', () => void finish(0));
    process.on('SIGHUP', () => sup.reload());
    process.once('uncaughtException', (err) => {
      console.error(`vpnmasq: ${err.stack ?? err.message}`);
      void finish(1);
    });
  });
}
