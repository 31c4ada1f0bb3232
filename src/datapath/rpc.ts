// Synchronous calls from the main thread into the data-path thread
// (src/datapath/worker.ts), so every call site on the main thread stays a
// plain function call. The caller posts { seq, op, args } on a
// MessagePort and sleeps in Atomics.wait on a shared word; the worker
// answers between two batches (its event loop runs one JS callback at a
// time, so no answer ever sees a table half changed), posts the reply,
// stores seq in the shared word and wakes the caller, which takes the reply
// with receiveMessageOnPort. Nothing of this runs per packet or per batch.
//
// A worker that dies says so in the shared word (and why, on the port)
// before it goes, which wakes a caller at once; a worker that hangs is
// caught by the timeout. Either way the caller's onDeath runs and the call
// never returns (the supervisor logs one line and exits non-zero).

import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';

/** Int32 words of the shared control buffer. */
export const CTL_REPLY_SEQ = 0;
export const CTL_DEAD = 1;
/** Calls posted and not yet taken up: a busy-polling loop (loop.ts) hands the thread back to its event loop when non-zero. */
export const CTL_PENDING = 2;
export const CTL_WORDS = 4;

export interface RpcRequest { seq: number; op: string; args: unknown[] }
export interface RpcReply { seq: number; ok: boolean; value?: unknown; error?: string; dead?: string }

/** Thrown into the caller when the worker's op threw: the worker lives on (a refused reload, a bad snapshot). */
export class RemoteError extends Error {}

export type Ops = Record<string, (...args: any[]) => unknown>;

/** What an op returns when it wants buffers moved, not copied, to the caller. */
export class Transfer<T> {
  constructor(readonly value: T, readonly buffers: ArrayBuffer[]) {}
}

export interface SyncClientOptions {
  /** Longest a call may wait for its answer before the worker counts as stuck. */
  timeoutMs: number;
  /** The worker is dead or stuck: must not return (log and exit); if it does, the call throws. */
  onDeath: (reason: string) => void;
}

export class SyncClient {
  private seq = 0;
  private dead: string | null = null;

  constructor(private readonly port: MessagePort, private readonly ctl: Int32Array, private readonly o: SyncClientOptions) {}

  /** Calls op in the worker and returns its value (structured-cloned). */
  call<T>(op: string, ...args: unknown[]): T {
    if (this.dead !== null) return this.die(this.dead);
    const seq = (this.seq = (this.seq + 1) | 0 || 1);
    const before = Atomics.load(this.ctl, CTL_REPLY_SEQ);
    Atomics.add(this.ctl, CTL_PENDING, 1);
    this.port.postMessage({ seq, op, args } satisfies RpcRequest);
    const deadline = performance.now() + this.o.timeoutMs;
    for (;;) {
      const reply = this.takeReply();
      if (reply?.dead !== undefined) return this.die(reply.dead);
      if (reply) {
        if (reply.seq !== seq) return this.die(`answered call ${reply.seq} to call ${seq}`);
        if (!reply.ok) throw new RemoteError(reply.error ?? 'data path call failed');
        return reply.value as T;
      }
      if (Atomics.load(this.ctl, CTL_DEAD) !== 0) return this.die(this.deathReason() ?? 'exited');
      const left = deadline - performance.now();
      if (left <= 0) return this.die(`no answer to '${op}' within ${this.o.timeoutMs} ms (stuck)`);
      // Wakes on the worker's notify after it stored a new reply sequence (or at once if it already had).
      Atomics.wait(this.ctl, CTL_REPLY_SEQ, before, Math.min(left, 1000));
    }
  }

  /** The reason a dead worker left on the port, if any. */
  deathReason(): string | null {
    for (;;) {
      const r = this.takeReply();
      if (!r) return null;
      if (r.dead !== undefined) return r.dead;
    }
  }

  private takeReply(): RpcReply | null {
    const m = receiveMessageOnPort(this.port);
    return m ? (m.message as RpcReply) : null;
  }

  /** Marks the worker dead and runs onDeath once. */
  die(reason: string): never {
    const first = this.dead === null;
    this.dead = reason;
    if (first) this.o.onDeath(reason);
    throw new Error(`data path thread died: ${reason}`);
  }
}

/** Worker side: answers each request with ops[op](...args), between whatever else its event loop runs. */
export function serve(port: MessagePort, ctl: Int32Array, ops: Ops): void {
  port.on('message', (req: RpcRequest) => {
    Atomics.sub(ctl, CTL_PENDING, 1);
    let reply: RpcReply;
    let transfer: ArrayBuffer[] = [];
    try {
      const fn = ops[req.op];
      if (!fn) throw new Error(`unknown data path call '${req.op}'`);
      let value = fn(...req.args);
      if (value instanceof Transfer) { transfer = value.buffers; value = value.value; }
      reply = { seq: req.seq, ok: true, value };
    } catch (err) {
      reply = { seq: req.seq, ok: false, error: (err as Error).message };
    }
    port.postMessage(reply, transfer);
    Atomics.store(ctl, CTL_REPLY_SEQ, req.seq);
    Atomics.notify(ctl, CTL_REPLY_SEQ);
  });
  process.on('uncaughtException', (err) => dieWith(port, ctl, err));
  // Any other end of the thread (process.exit somewhere) also wakes a waiting caller at once.
  process.on('exit', (code) => {
    if (Atomics.load(ctl, CTL_DEAD) !== 0) return;
    port.postMessage({ seq: 0, ok: false, dead: `exited with code ${code}` } satisfies RpcReply);
    Atomics.store(ctl, CTL_DEAD, 1);
    Atomics.notify(ctl, CTL_REPLY_SEQ);
  });
}

/** Worker side, an error it cannot go on after: say why on the port, flag it, wake a waiting caller, end the thread. */
export function dieWith(port: MessagePort, ctl: Int32Array, err: unknown): never {
  port.postMessage({ seq: 0, ok: false, dead: oneLine(err) } satisfies RpcReply);
  Atomics.store(ctl, CTL_DEAD, 1);
  Atomics.notify(ctl, CTL_REPLY_SEQ);
  process.exit(1);
}

/** An error as one log line: its message and where it was thrown. */
export function oneLine(err: unknown): string {
  if (!(err instanceof Error)) return String(err).replace(/\s+/g, ' ');
  const at = (err.stack ?? '').split('\n').find((l) => l.trim().startsWith('at '))?.trim();
  return `${err.message}${at ? ` (${at})` : ''}`.replace(/\s+/g, ' ');
}
