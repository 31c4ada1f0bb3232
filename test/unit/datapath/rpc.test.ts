// Synchronous calls into the data-path thread (src/datapath/rpc.ts),
// against a stand-in worker (fixtures/rpc-worker.mjs) running the real
// serve(): answers come back in order, a refusal is an error the caller can
// catch while the worker lives on, buffers move instead of being copied,
// and a worker that crashes outside a call, exits, or hangs in a call is a
// death reported once (never a call that waits forever).
import { afterEach, describe, expect, it } from 'vitest';
import { MessageChannel, Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { CTL_WORDS, RemoteError, SyncClient } from '../../../src/datapath/rpc.js';

const FIXTURE = join(__dirname, 'fixtures', 'rpc-worker.mjs');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let workers: Worker[] = [];
afterEach(async () => {
  await Promise.all(workers.map((w) => w.terminate()));
  workers = [];
});

function start(timeoutMs = 10_000) {
  const ctl = new SharedArrayBuffer(CTL_WORDS * 4);
  const { port1, port2 } = new MessageChannel();
  const w = new Worker(FIXTURE, { workerData: { port: port2, ctl }, transferList: [port2] });
  workers.push(w);
  const deaths: string[] = [];
  const client = new SyncClient(port1, new Int32Array(ctl), { timeoutMs, onDeath: (r) => deaths.push(r) });
  const exited = new Promise<number>((r) => w.once('exit', r));
  return { client, deaths, exited };
}

describe('synchronous calls into the data-path thread', () => {
  it('answers each call with its own result, in order, also the first one while the worker still loads', () => {
    const { client } = start();
    for (let i = 0; i < 200; i++) expect(client.call('add', i, 1)).toBe(i + 1);
    expect(client.call('calls')).toBe(200);
  });

  it('a refused call throws RemoteError with the reason; the worker keeps answering', () => {
    const { client, deaths } = start();
    expect(() => client.call('refuse', 'engine settings: option x refused')).toThrow(RemoteError);
    expect(() => client.call('refuse', 'again')).toThrow('again');
    expect(() => client.call('noSuchOp')).toThrow("unknown data path call 'noSuchOp'");
    expect(client.call('add', 2, 3)).toBe(5);
    expect(deaths).toEqual([]);
  });

  it('moves a returned buffer to the caller (Transfer) with its contents', () => {
    const { client } = start();
    const b = client.call<Uint8Array>('bytes', 1 << 20);
    expect(b.length).toBe(1 << 20);
    expect(b[0]).toBe(7);
    expect(b[(1 << 20) - 1]).toBe(7);
  });

  it('a worker that throws outside any call: the next call reports its death with the reason, once', async () => {
    const { client, deaths, exited } = start();
    client.call('crashLater');
    expect(await exited).toBe(1);
    expect(() => client.call('add', 1, 1)).toThrow(/data path thread died: engine trap in the worker/);
    expect(() => client.call('add', 1, 1)).toThrow(/data path thread died/);
    expect(deaths).toHaveLength(1);
    expect(deaths[0]).toMatch(/^engine trap in the worker \(at .*rpc-worker\.mjs/);
  });

  it('a worker that exits: the waiting caller gets a death, not an endless wait', async () => {
    const { client, deaths, exited } = start();
    client.call('exit', 3);
    expect(await exited).toBe(3);
    expect(() => client.call('add', 1, 1)).toThrow(/data path thread died: exited with code 3/);
    expect(deaths).toEqual(['exited with code 3']);
  });

  it('a worker stuck in a call: the caller gives up after its timeout and reports the death', () => {
    const { client, deaths } = start(500);
    expect(() => client.call('hang')).toThrow(/data path thread died: no answer to 'hang' within 500 ms \(stuck\)/);
    expect(deaths).toEqual(["no answer to 'hang' within 500 ms (stuck)"]);
    // Dead stays dead: no new call is posted to it.
    expect(() => client.call('add', 1, 1)).toThrow(/stuck/);
    expect(deaths).toHaveLength(1);
  });

  it('flooded with calls from a busy caller, never mixes up answers', async () => {
    const { client } = start();
    let sum = 0;
    for (let i = 0; i < 1000; i++) {
      sum += client.call<number>('add', i, 0);
      if (i % 100 === 0) await sleep(0);
    }
    expect(sum).toBe((999 * 1000) / 2);
  });
});
