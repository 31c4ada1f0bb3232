// Small process helpers shared by the VPN peer harnesses: asynchronous
// commands with hard timeouts (so two peers can work at the same time),
// bounded log buffers, and a poll loop.
import { execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import type { Lab } from '../../../src/lab/lab.js';

export interface RunResult {
  ok: boolean;
  /** exit status; null when killed (timeout) or it could not start */
  status: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** `cmd args` as run, for messages */
  cmd: string;
}

/** Runs a command (optionally in a lab namespace) without blocking the event loop; never throws. */
export function runAsync(
  argv: string[],
  opts: { lab?: Lab; ns?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  const full = opts.ns !== undefined ? ['ip', 'netns', 'exec', opts.ns, ...argv] : argv;
  const timeout = opts.timeoutMs ?? 30_000;
  const cmd = full.join(' ');
  return new Promise((resolvePromise) => {
    const child = execFile(
      full[0]!,
      full.slice(1),
      { encoding: 'utf8', timeout, killSignal: 'SIGKILL', maxBuffer: 32 * 1024 * 1024, env: opts.env },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: number | string; killed?: boolean; signal?: string }) | null;
        const timedOut = !!e && (e.killed === true || e.signal === 'SIGKILL');
        resolvePromise({
          ok: !e,
          status: e ? (typeof e.code === 'number' ? e.code : null) : 0,
          stdout: String(stdout ?? ''),
          stderr: String(stderr ?? '') + (e && typeof e.code === 'string' ? `${e.code}: ${e.message}\n` : '') +
            (timedOut ? `(timed out after ${timeout} ms)\n` : ''),
          timedOut,
          cmd,
        });
      },
    );
    child.stdin?.end();
  });
}

/** Keeps the last `limit` characters of a stream of output. */
export class LogBuffer {
  private text = '';
  constructor(private readonly limit = 256 * 1024) {}
  push(chunk: string | Buffer): void {
    this.text += chunk.toString();
    if (this.text.length > this.limit * 2) this.text = this.text.slice(-this.limit);
  }
  get value(): string {
    return this.text.length > this.limit ? this.text.slice(-this.limit) : this.text;
  }
  /** the last `lines` lines, for failure messages */
  tail(lines = 60): string {
    return this.value.split('\n').slice(-lines).join('\n');
  }
  attach(child: ChildProcess): void {
    child.stdout?.on('data', (d: Buffer) => this.push(d));
    child.stderr?.on('data', (d: Buffer) => this.push(d));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every `everyMs` until it returns a non-undefined value or `timeoutMs` passes (then throws `what`). */
export async function waitFor<T>(what: () => string, check: () => T | undefined | Promise<T | undefined>, timeoutMs: number, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() >= deadline) throw new Error(`${what()} (after ${timeoutMs} ms)`);
    await sleep(everyMs);
  }
}

/** Whether a child process has ended. */
export function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the child is gone. */
export async function terminate(child: ChildProcess | undefined, graceMs = 3_000): Promise<void> {
  if (!child || child.pid === undefined || exited(child)) return;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => { if (!exited(child)) child.kill('SIGKILL'); }, graceMs);
  await Promise.race([gone, sleep(graceMs + 2_000)]);
  clearTimeout(t);
}
