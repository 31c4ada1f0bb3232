// What the tests of the shell scripts and packaging (test/firmware/*,
// test/docker/*) share: the repo root, throw-away directories removed after
// the file's tests, running a command (blocking, or without blocking the
// vitest worker for long builds), stand-in executables, the shells the
// scripts must work in, and a directory listing to compare trees.
import { afterAll } from 'vitest';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const VERSION: string = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;

/** The shells the scripts must work in: Debian's /bin/sh (dash) and busybox ash (OpenWrt, the image). */
export const SHELLS: [string, string[]][] = [['sh', ['sh']], ['busybox sh', ['busybox', 'sh']]];

/**
 * Call at the top of a test file: returns tmp(prefix), which makes a fresh
 * directory under the system's temp dir; all of them are removed after the
 * file's tests.
 */
export function tmpDirs(): (prefix: string) => string {
  const dirs: string[] = [];
  afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });
  return (prefix: string): string => {
    const d = mkdtempSync(join(tmpdir(), `vpnmasq-fw-${prefix}-`));
    dirs.push(d);
    return d;
  };
}

/** Writes an executable (a #!/bin/sh script unless body has its own #! line), making its directory. */
export function writeExec(path: string, body: string): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, body.startsWith('#!') ? body : `#!/bin/sh\n${body}`);
  chmodSync(path, 0o755);
  return path;
}

export type RunOpts = { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number };

export function run(cmd: string, args: string[], opts: RunOpts = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout: opts.timeout ?? 120_000, cwd: opts.cwd, env: opts.env ?? cleanEnv(), maxBuffer: 64 << 20 });
}

/** The environment without what `npm test` adds (npm_*: its config, package, lifecycle). */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'INIT_CWD') env[k] = v;
  return { ...env, ...extra };
}

/** stdout of a command that exited 0; else throws with its exit and output. */
export function ok(r: Pick<SpawnSyncReturns<string>, 'status' | 'signal' | 'stdout' | 'stderr'>, what: string): string {
  if (r.status !== 0) throw new Error(`${what}: exit ${r.status} ${r.signal ?? ''}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

export type Result = { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string };

/**
 * run() without blocking the worker: for the long commands (builds), so
 * vitest's worker keeps answering its RPC.
 */
export function runAsync(cmd: string, args: string[], opts: RunOpts = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeout ?? 300_000);
    child.on('error', reject);
    child.on('close', (status, signal) => { clearTimeout(timer); resolve({ status, signal, stdout, stderr }); });
  });
}

export async function okAsync(p: Promise<Result>, what: string): Promise<string> {
  return ok(await p, what);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

/** Every thread of pid is stopped (state T in /proc/<pid>/task/<tid>/stat; one that has exited counts as stopped). */
export function allThreadsStopped(pid: number): boolean {
  let tids: string[];
  try { tids = readdirSync(`/proc/${pid}/task`); } catch { return false; }
  return tids.every((tid) => {
    let stat: string;
    try { stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'); } catch { return true; }
    // "tid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'T' || state === 'Z' || state === 'X';
  });
}

/**
 * SIGSTOP, then waits until every thread of pid has stopped. kill() only queues the signal: the group stop
 * begins when one thread (the main one, woken from its poll) takes it, which on a loaded machine can be
 * milliseconds later, and the other threads (vpnmasq's data path) run on until it reaches them.
 */
export async function stopProcess(pid: number, ms = 30_000): Promise<void> {
  process.kill(pid, 'SIGSTOP');
  await until(() => allThreadsStopped(pid), ms, `every thread of pid ${pid} to stop`);
}

/** Every file below dir, as sorted relative paths (directories end in /). */
export function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) { out.push(relative(dir, p) + '/'); walk(p); } else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}
