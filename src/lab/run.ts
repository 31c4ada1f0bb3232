// Running commands in a lab namespace and waiting for children: what the
// demo (src/lab/demo.ts) and the end-to-end bench (bench/e2e/) share.
import type { ChildProcess } from 'node:child_process';
import type { Lab } from './lab.js';

export interface RunResult {
  /** exit code 0 and not timed out */
  ok: boolean;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface RunInOptions {
  /** written to the child's stdin, which is then closed; without it stdin is /dev/null */
  input?: string;
  /** called with the child right after it is spawned (to track or stop it) */
  onSpawn?: (child: ChildProcess) => void;
}

/** iperf3's JSON with --get-server-output is the largest stdout read (a few MiB at most). */
const MAX_STDOUT = 64 << 20;
const MAX_STDERR = 1 << 20;

/**
 * Runs argv in a lab namespace as a child the lab tracks (so destroying the
 * lab kills it); resolves with its exit and output, never rejects. SIGKILL
 * after timeoutMs (then timedOut is true).
 */
export function runIn(lab: Lab, ns: string, argv: string[], timeoutMs: number, opts: RunInOptions = {}): Promise<RunResult> {
  return new Promise((resolveP) => {
    const child = lab.spawn(ns, argv, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    opts.onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      if (stdout.length < MAX_STDOUT) stdout += d;
    });
    child.stderr?.on('data', (d: string) => {
      if (stderr.length < MAX_STDERR) stderr += d;
    });
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined); // it may exit before reading
      child.stdin.end(opts.input);
    }
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      resolveP({ ok: false, code: null, signal: null, stdout, stderr: stderr + String(e), timedOut });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolveP({ ok: code === 0 && !timedOut, code, signal, stdout, stderr, timedOut });
    });
  });
}

/** Resolves when the child has exited (or after ms); true if it exited. */
export function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolveP) => {
    const t = setTimeout(() => resolveP(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolveP(true);
    });
  });
}

/** SIGTERM, and SIGKILL when the child has not exited after termMs. */
export async function stopChild(child: ChildProcess, termMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (await waitExit(child, termMs)) return;
  child.kill('SIGKILL');
  await waitExit(child, 2000);
}
