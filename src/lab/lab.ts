// A throwaway lab of Linux network namespaces: one router, N LAN hosts on a
// bridge, M WAN hosts. Used by the `sudo npm start` demo, the netns
// integration tests and the end-to-end benchmark.
//
//   vm<id>-lan1 (eth0 192.168.1.10/24, default via .1) ──┐
//   vm<id>-lan2 (eth0 192.168.1.11/24, default via .1) ──┤ lan1, lan2 …
//                                                        br-lan 192.168.1.1/24
//                                              vm<id>-router (ip_forward=1)
//                                                        wan 203.0.113.1/24
//   wanHosts == 1:  wan <veth> eth0 of vm<id>-wan1 (203.0.113.2/24)
//   wanHosts  > 1:  wan <veth> uplink ── br-wan in vm<id>-wsw ── wan<j> <veth> eth0 of vm<id>-wan<j>
//                   (203.0.113.2, .3 …)
//
// WAN hosts have no route to 192.168.1.0/24 (and no default route), so only
// traffic whose source was rewritten to the router's WAN address can be
// answered. IPv6 is disabled in every lab namespace; MTU is 1500 everywhere.
// The router gets a default route via 203.0.113.2, like a real uplink.
//
// Every namespace name is `vm<id>-<role>` with id = [a-z0-9]{1,6}, so names
// stay ≤ 15 characters. A state file per lab (/run/vpnmasq-lab/<id>.json)
// records the owning process so cleanupStaleLabs() removes only labs whose
// owner is gone, never a lab that another live process is using.
import { execFileSync, spawn as spawnChild } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

export interface LabOptions {
  /** unique prefix part, [a-z0-9]{1,6}; default derived from the pid */
  id?: string;
  /** default 2 */
  lanHosts?: number;
  /** default 1 */
  wanHosts?: number;
}

export interface LabAddresses {
  routerLan: string;
  routerWan: string;
  lan: string[];
  wan: string[];
  lanSubnet: string;
  wanSubnet: string;
}

export interface ExecOptions {
  /** default 30 000 ms; the child is killed (SIGKILL) when it expires */
  timeoutMs?: number;
  /** written to the child's stdin */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export const DEFAULT_PREFIX = 'vm';
const STATE_DIR = '/run/vpnmasq-lab';
const ROLE_RE = /^(router|lan\d+|wan\d+|wsw)$/;
const ID_RE = /^[a-z0-9]{1,6}$/;
const MAX_HOSTS = 200;

// ---------------------------------------------------------------------------
// small synchronous helpers

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function firstLine(s: string): string {
  const line = s.split('\n').map((l) => l.trim()).find((l) => l.length > 0);
  return line ?? '';
}

function errText(e: unknown): string {
  const err = e as { stderr?: Buffer | string; message?: string; code?: string; signal?: string };
  const stderr = err.stderr ? err.stderr.toString().trim().slice(0, 4000) : '';
  if (stderr) return stderr;
  if (err.code === 'ETIMEDOUT') return 'timed out';
  return firstLine(err.message ?? String(e));
}

/** Runs a command synchronously; returns stdout; throws `cmd args: exit N: <stderr>` (stderr, stdout, status attached). */
function run(cmd: string, args: string[], opts: ExecOptions = {}): string {
  const timeout = opts.timeoutMs ?? 30_000;
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout,
      killSignal: 'SIGKILL',
      input: opts.input,
      env: opts.env,
      cwd: opts.cwd,
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (e) {
    const err = e as { status?: number | null; signal?: string | null; code?: string; stderr?: string };
    const what = `${cmd} ${args.join(' ')}`;
    if (err.code === 'ETIMEDOUT' || (err.signal === 'SIGKILL' && err.status === null)) {
      throw Object.assign(new Error(`${what}: timed out after ${timeout} ms`), { stderr: err.stderr ?? '', status: null });
    }
    const status = err.status ?? null;
    const reason = errText(e);
    throw Object.assign(new Error(`${what}: ${status !== null ? `exit ${status}` : (err.signal ?? 'failed')}${reason ? `: ${reason}` : ''}`), {
      stderr: err.stderr ?? '',
      stdout: (e as { stdout?: string }).stdout ?? '',
      status,
    });
  }
}

function listNamespaces(): string[] {
  let out: string;
  try {
    out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  } catch {
    return [];
  }
  // "name (id: 3)" or just "name"
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n): n is string => !!n);
}

function nsPids(ns: string): number[] {
  try {
    const out = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5_000 });
    return out
      .split(/\s+/)
      .map((s) => Number(s))
      .filter((n) => Number.isInteger(n) && n > 0 && n !== process.pid);
  } catch {
    return [];
  }
}

/** 'alive', 'zombie' or 'gone' for a pid, from /proc. */
function procState(pid: number): 'alive' | 'zombie' | 'gone' {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X' ? 'zombie' : 'alive';
  } catch {
    return 'gone';
  }
}

function procStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the command name; starttime is field 22 overall = index 19 here
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

function killPids(pids: number[], graceMs: number): void {
  const live = pids.filter((p) => procState(p) === 'alive');
  if (live.length === 0) return;
  for (const p of live) {
    try {
      process.kill(p, 'SIGTERM');
    } catch {
      /* already gone */
    }
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && live.some((p) => procState(p) === 'alive')) sleepSync(20);
  for (const p of live) {
    if (procState(p) !== 'alive') continue;
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

function deleteNamespace(ns: string): void {
  killPids(nsPids(ns), 500);
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 10_000 });
  } catch {
    /* not there */
  }
}

interface LabState {
  id: string;
  pid: number;
  start: string | null;
  namespaces: string[];
  created: string;
}

function stateDir(): string {
  return STATE_DIR;
}

function stateFile(id: string): string {
  return join(stateDir(), `${id}.json`);
}

function readState(id: string): LabState | null {
  try {
    return JSON.parse(readFileSync(stateFile(id), 'utf8')) as LabState;
  } catch {
    return null;
  }
}

function stateOwnerAlive(st: LabState | null): boolean {
  if (!st || !Number.isInteger(st.pid)) return false;
  if (procState(st.pid) !== 'alive') return false;
  if (st.start !== null && procStartTime(st.pid) !== st.start) return false; // pid reused
  return true;
}

/** Lab id of a namespace name like `vmabc1-lan2` (with the given prefix), else null. */
function labIdOf(ns: string, prefix: string): string | null {
  if (!ns.startsWith(DEFAULT_PREFIX) || !ns.startsWith(prefix)) return null;
  const dash = ns.lastIndexOf('-');
  if (dash < 0) return null;
  const id = ns.slice(DEFAULT_PREFIX.length, dash);
  const role = ns.slice(dash + 1);
  if (!ID_RE.test(id) || !ROLE_RE.test(role)) return null;
  return id;
}

// ---------------------------------------------------------------------------
// process-wide cleanup: on exit (always) and on SIGINT/SIGTERM (only when no
// one else listens for the signal — then that listener owns the shutdown and
// the exit hook still backs it up).

const liveLabs = new Set<Lab>();
let hooksInstalled = false;

function destroyAll(): void {
  for (const lab of [...liveLabs]) {
    try {
      lab.destroy();
    } catch {
      /* best effort */
    }
  }
}

function onSignal(sig: NodeJS.Signals): void {
  if (process.listenerCount(sig) > 1) return; // someone else handles shutdown
  destroyAll();
  uninstallHooks();
  process.kill(process.pid, sig); // default action now that we are gone
}
const onSigint = (): void => onSignal('SIGINT');
const onSigterm = (): void => onSignal('SIGTERM');

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', destroyAll);
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
}

function uninstallHooks(): void {
  if (!hooksInstalled) return;
  hooksInstalled = false;
  process.off('exit', destroyAll);
  process.off('SIGINT', onSigint);
  process.off('SIGTERM', onSigterm);
}

let labCounter = 0;

function defaultId(): string {
  const n = labCounter++;
  const id = process.pid.toString(36) + (n > 0 ? n.toString(36) : '');
  if (id.length <= 6) return id;
  return Math.floor(Math.random() * 36 ** 6).toString(36).padStart(6, '0');
}

// ---------------------------------------------------------------------------

export class Lab {
  readonly id: string;
  readonly router: string;
  readonly lan: string[];
  readonly wan: string[];
  /** the WAN switch namespace when wanHosts > 1, else null */
  readonly wanSwitch: string | null;
  /** every namespace of this lab, in creation order */
  readonly namespaces: string[];
  readonly addr: LabAddresses;

  private readonly children = new Set<ChildProcess>();
  private created: string[] = [];
  private claimed = false;
  private destroyed = false;

  private constructor(id: string, lanHosts: number, wanHosts: number) {
    const p = `${DEFAULT_PREFIX}${id}`;
    this.id = id;
    this.router = `${p}-router`;
    this.lan = Array.from({ length: lanHosts }, (_, i) => `${p}-lan${i + 1}`);
    this.wan = Array.from({ length: wanHosts }, (_, i) => `${p}-wan${i + 1}`);
    this.wanSwitch = wanHosts > 1 ? `${p}-wsw` : null;
    this.namespaces = [this.router, ...this.lan, ...(this.wanSwitch ? [this.wanSwitch] : []), ...this.wan];
    this.addr = {
      routerLan: '192.168.1.1',
      routerWan: '203.0.113.1',
      lan: Array.from({ length: lanHosts }, (_, i) => `192.168.1.${10 + i}`),
      wan: Array.from({ length: wanHosts }, (_, i) => `203.0.113.${2 + i}`),
      lanSubnet: '192.168.1.0/24',
      wanSubnet: '203.0.113.0/24',
    };
  }

  /** Builds the lab. On any failure tears down what it made and throws one clear line. */
  static create(opts: LabOptions = {}): Lab {
    if (process.getuid && process.getuid() !== 0) throw new Error('lab: needs root (network namespaces)');
    const lanHosts = opts.lanHosts ?? 2;
    const wanHosts = opts.wanHosts ?? 1;
    if (!Number.isInteger(lanHosts) || lanHosts < 1 || lanHosts > MAX_HOSTS) throw new Error(`lab: lanHosts must be 1..${MAX_HOSTS}`);
    if (!Number.isInteger(wanHosts) || wanHosts < 1 || wanHosts > MAX_HOSTS) throw new Error(`lab: wanHosts must be 1..${MAX_HOSTS}`);
    const id = opts.id ?? defaultId();
    if (!ID_RE.test(id)) throw new Error(`lab: id ${JSON.stringify(id)} must match [a-z0-9]{1,6}`);

    const lab = new Lab(id, lanHosts, wanHosts);
    try {
      lab.claim();
      lab.build();
    } catch (e) {
      lab.destroy();
      throw new Error(`lab ${id}: ${firstLine((e as Error).message)}`);
    }
    return lab;
  }

  /** Takes ownership of the id: refuses if a live process owns it, removes stale leftovers. */
  private claim(): void {
    const st = readState(this.id);
    if (st && st.pid !== process.pid && stateOwnerAlive(st)) {
      throw new Error(`id in use by live process ${st.pid}`);
    }
    if (st && st.pid === process.pid && [...liveLabs].some((l) => l.id === this.id)) {
      throw new Error('id already used by a live lab in this process');
    }
    for (const ns of listNamespaces()) {
      if (labIdOf(ns, DEFAULT_PREFIX) === this.id) deleteNamespace(ns); // stale leftovers of a crashed run
    }
    mkdirSync(stateDir(), { recursive: true });
    const state: LabState = {
      id: this.id,
      pid: process.pid,
      start: procStartTime(process.pid),
      namespaces: this.namespaces,
      created: new Date().toISOString(),
    };
    writeFileSync(stateFile(this.id), JSON.stringify(state) + '\n');
    this.claimed = true;
    liveLabs.add(this);
    installHooks();
  }

  private ip(ns: string, ...args: string[]): void {
    run('ip', ['-n', ns, ...args], { timeoutMs: 10_000 });
  }

  private sysctl(ns: string, ...kv: string[]): void {
    run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', ...kv], { timeoutMs: 10_000 });
  }

  private build(): void {
    for (const ns of this.namespaces) {
      run('ip', ['netns', 'add', ns], { timeoutMs: 10_000 });
      this.created.push(ns);
      this.sysctl(ns, 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
      this.ip(ns, 'link', 'set', 'lo', 'up');
    }

    const R = this.router;
    this.sysctl(R, 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0');

    // LAN: bridge in the router, one veth per host
    this.ip(R, 'link', 'add', 'br-lan', 'mtu', '1500', 'type', 'bridge', 'stp_state', '0');
    this.ip(R, 'addr', 'add', `${this.addr.routerLan}/24`, 'dev', 'br-lan');
    this.ip(R, 'link', 'set', 'br-lan', 'up');
    this.lan.forEach((ns, i) => {
      const port = `lan${i + 1}`;
      this.ip(R, 'link', 'add', port, 'mtu', '1500', 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', '1500', 'netns', ns);
      this.ip(R, 'link', 'set', port, 'master', 'br-lan');
      this.ip(R, 'link', 'set', port, 'up');
      this.ip(ns, 'addr', 'add', `${this.addr.lan[i]}/24`, 'dev', 'eth0');
      this.ip(ns, 'link', 'set', 'eth0', 'up');
      this.ip(ns, 'route', 'add', 'default', 'via', this.addr.routerLan, 'dev', 'eth0');
    });

    // WAN: direct veth to the single WAN host, or via a switch namespace
    if (this.wanSwitch === null) {
      this.ip(R, 'link', 'add', 'wan', 'mtu', '1500', 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', '1500', 'netns', this.wan[0]);
    } else {
      const S = this.wanSwitch;
      this.ip(S, 'link', 'add', 'br-wan', 'mtu', '1500', 'type', 'bridge', 'stp_state', '0');
      this.ip(S, 'link', 'set', 'br-wan', 'up');
      this.ip(R, 'link', 'add', 'wan', 'mtu', '1500', 'type', 'veth', 'peer', 'name', 'uplink', 'mtu', '1500', 'netns', S);
      this.ip(S, 'link', 'set', 'uplink', 'master', 'br-wan');
      this.ip(S, 'link', 'set', 'uplink', 'up');
      this.wan.forEach((ns, j) => {
        const port = `wan${j + 1}`;
        this.ip(S, 'link', 'add', port, 'mtu', '1500', 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', '1500', 'netns', ns);
        this.ip(S, 'link', 'set', port, 'master', 'br-wan');
        this.ip(S, 'link', 'set', port, 'up');
      });
    }
    this.ip(R, 'addr', 'add', `${this.addr.routerWan}/24`, 'dev', 'wan');
    this.ip(R, 'link', 'set', 'wan', 'up');
    this.wan.forEach((ns, j) => {
      this.ip(ns, 'addr', 'add', `${this.addr.wan[j]}/24`, 'dev', 'eth0');
      this.ip(ns, 'link', 'set', 'eth0', 'up');
    });
    this.ip(R, 'route', 'add', 'default', 'via', this.addr.wan[0], 'dev', 'wan');
  }

  /** `ip netns exec <ns> argv…`, returns stdout; throws (with stderr) on failure or timeout (default 30 s). */
  exec(ns: string, argv: string[], opts: ExecOptions = {}): string {
    if (argv.length === 0) throw new Error('lab.exec: empty argv');
    return run('ip', ['netns', 'exec', ns, ...argv], opts);
  }

  /** Like exec() but never throws: returns exit status, stdout and stderr. */
  tryExec(ns: string, argv: string[], opts: ExecOptions = {}): { ok: boolean; status: number | null; stdout: string; stderr: string } {
    try {
      return { ok: true, status: 0, stdout: this.exec(ns, argv, opts), stderr: '' };
    } catch (e) {
      const err = e as { status?: number | null; stdout?: string; stderr?: string; message: string };
      return { ok: false, status: err.status ?? null, stdout: err.stdout ?? '', stderr: err.stderr ?? err.message };
    }
  }

  /** `ip netns exec <ns> argv…` as a child process, tracked and killed on destroy(). */
  spawn(ns: string, argv: string[], opts: SpawnOptions = {}): ChildProcess {
    if (this.destroyed) throw new Error('lab.spawn: lab is destroyed');
    if (argv.length === 0) throw new Error('lab.spawn: empty argv');
    const child = spawnChild('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    child.once('error', () => this.children.delete(child));
    return child;
  }

  /** Replaces the router's WAN address (default prefix /24) and restores its default route. */
  setWanAddress(addr: string): void {
    const [ip, len] = addr.includes('/') ? addr.split('/') : [addr, '24'];
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(ip!) || !/^\d{1,2}$/.test(len!) || Number(len) > 32) {
      throw new Error(`lab.setWanAddress: bad IPv4 address ${JSON.stringify(addr)}`);
    }
    const R = this.router;
    run('ip', ['-n', R, '-4', 'addr', 'flush', 'dev', 'wan'], { timeoutMs: 10_000 });
    run('ip', ['-n', R, 'addr', 'add', `${ip}/${len}`, 'dev', 'wan'], { timeoutMs: 10_000 });
    // the default route went away with the old address; put it back if the gateway is still on-link
    try {
      run('ip', ['-n', R, 'route', 'replace', 'default', 'via', this.addr.wan[0]!, 'dev', 'wan'], { timeoutMs: 10_000 });
    } catch {
      /* gateway not on-link for the new address: leave without a default route */
    }
    this.addr.routerWan = ip!;
  }

  /** Idempotent: kills tracked children (and anything else left in the lab's namespaces), deletes the namespaces. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    const pids: number[] = [];
    for (const c of this.children) {
      if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) pids.push(c.pid);
    }
    killPids(pids, 1_000);
    this.children.clear();
    // delete in reverse creation order; once the id is ours, also anything
    // matching our names that we did not record (never when the claim failed:
    // those namespaces belong to someone else)
    const names = new Set([...this.created].reverse());
    if (this.claimed) for (const ns of listNamespaces()) if (labIdOf(ns, DEFAULT_PREFIX) === this.id) names.add(ns);
    for (const ns of names) deleteNamespace(ns);
    this.created = [];
    if (this.claimed) {
      try {
        const st = readState(this.id);
        if (st && st.pid === process.pid) rmSync(stateFile(this.id), { force: true });
      } catch {
        /* ignore */
      }
    }
    liveLabs.delete(this);
    if (liveLabs.size === 0) uninstallHooks();
  }

  /** true while the lab exists */
  get alive(): boolean {
    return !this.destroyed;
  }
}

/**
 * Removes namespaces left from crashed runs: names `vm<id>-<role>` starting
 * with `prefix` (default 'vm') whose lab has no live owner process.
 */
export function cleanupStaleLabs(prefix: string = DEFAULT_PREFIX): void {
  const byId = new Map<string, string[]>();
  for (const ns of listNamespaces()) {
    const id = labIdOf(ns, prefix);
    if (id === null) continue;
    const list = byId.get(id) ?? [];
    list.push(ns);
    byId.set(id, list);
  }
  const liveIds = new Set([...liveLabs].map((l) => l.id));
  for (const [id, names] of byId) {
    if (liveIds.has(id)) continue;
    const st = readState(id);
    if (st && st.pid !== process.pid && stateOwnerAlive(st)) continue;
    for (const ns of names) deleteNamespace(ns);
    rmSync(stateFile(id), { force: true });
  }
  // state files whose namespaces are all gone and whose owner is dead
  if (existsSync(stateDir())) {
    for (const f of readdirSync(stateDir())) {
      if (!f.endsWith('.json')) continue;
      const id = f.slice(0, -5);
      if (!ID_RE.test(id) || !(DEFAULT_PREFIX + id).startsWith(prefix)) continue;
      if (liveIds.has(id) || byId.has(id)) continue;
      const st = readState(id);
      if (st && st.pid !== process.pid && stateOwnerAlive(st)) continue;
      rmSync(stateFile(id), { force: true });
    }
  }
}
