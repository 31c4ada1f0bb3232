// The main thread's handle on the real data-path thread
// (src/datapath/thread.ts → dist/datapath/worker.js): the engine loads in
// the worker, and configuration, readings, snapshots and restores are calls
// answered there (no TUNs here: those need root, see
// test/netns/datapath.test.ts). Then the death path, in child processes
// with the supervisor's onDeath (one line, exit 1): an engine that cannot
// load, a worker that throws outside a call, a worker stuck in a call.
import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';
import { DataPathThread } from '../../../src/datapath/thread.js';
import { RemoteError } from '../../../src/datapath/rpc.js';
import { writeCaptureSync } from '../../../src/snapshot/state.js';
import { parseConfig } from '../../../src/config/index.js';

const FIXTURES = join(__dirname, 'fixtures');
const dir = mkdtempSync(join(tmpdir(), 'vpnmasq-dpthread-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const CFG = "config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n" +
  "\tlist lan_subnet '192.168.1.0/24'\n\toption masq_ports '40000-40009'\n";
const tooManyRules = CFG + Array.from({ length: 300 }, (_, i) =>
  `config rule\n\toption src 'wan'\n\toption proto 'tcp'\n\toption dest_port '${1000 + i}'\n\toption target 'ACCEPT'\n`).join('');

describe('the data-path thread (real worker, real engine)', () => {
  const deaths: string[] = [];
  const dp = new DataPathThread({ maxFlows: 2048, onDeath: (r) => { deaths.push(r); } });
  afterAll(async () => { await dp.terminate(); });

  it('runs on a thread of its own and loads the engine there', () => {
    expect(dp.threadId).toBeGreaterThan(0);
    expect(dp.threadId).not.toBe(threadId);
    expect(dp.maxFlows).toBe(2048);
    expect(dp.memoryBytes).toBeGreaterThan(0);
    expect(dp.buildId).toMatch(/^[0-9a-f]{64}$/);
  });

  it('takes the configuration and the WAN address; readings are copies from the worker', () => {
    const cfg = parseConfig(CFG, 'dp-test');
    dp.applyConfig(cfg, ['192.168.1.0/24']);
    expect(dp.setWanAddress('203.0.113.1')).toBe(0);
    expect(dp.flowActive()).toBe(0);
    expect(dp.flows('203.0.113.1')).toEqual([]);
    expect(dp.counters().rxInside).toBe(0);
    expect(dp.drainEvents(100).events).toEqual([]);
    const s = dp.status();
    expect(s.flowActive).toBe(0);
    expect(s.vnet).toBe(false);
    expect(dp.batchSizes.length).toBe(0); // no loop yet
  });

  it('a refused reload throws RemoteError with the reason, keeps the running config, and the worker lives on', () => {
    const ok = parseConfig(CFG, 'dp-test');
    const bad = parseConfig(tooManyRules, 'dp-bad');
    expect(() => dp.reload(bad, ok, ['192.168.1.0/24'])).toThrow(RemoteError);
    expect(() => dp.reload(bad, ok, ['192.168.1.0/24'])).toThrow(/300 rules after expansion/);
    dp.reload(ok, ok, ['192.168.1.0/24']);
    expect(dp.flowActive()).toBe(0);
    expect(deaths).toEqual([]);
  });

  it('a snapshot taken in the worker restores there; a changed WAN address refuses it and leaves an empty engine', () => {
    const cfg = parseConfig(CFG, 'dp-test');
    const c = dp.capture('203.0.113.1');
    expect(c.sections.length).toBeGreaterThan(0);
    expect(c.sections.every((s) => s.data instanceof Uint8Array)).toBe(true);
    const file = join(dir, 'snap.bin');
    writeCaptureSync(file, c);
    const r = dp.restore(file, '203.0.113.1', cfg, ['192.168.1.0/24']);
    expect(r.refused).toBeNull();
    expect(r.restored?.entries.flows).toBe(0);
    const moved = dp.restore(file, '203.0.113.9', cfg, ['192.168.1.0/24']);
    expect(moved.restored).toBeNull();
    expect(moved.refused).toMatch(/WAN address changed from 203\.0\.113\.1 to 203\.0\.113\.9/);
    expect(dp.restore(join(dir, 'none.bin'), '203.0.113.9', cfg, [])).toEqual({ restored: null, refused: null });
  });

  it('opening TUNs that cannot be opened is an error the caller sees (the worker lives on)', () => {
    expect(() => dp.openTuns('', '', false)).toThrow();
    expect(dp.flowActive()).toBe(0);
  });
});

describe('a data-path thread that dies takes the process down with one line', () => {
  // Not spawnSync: the test runner's own worker must stay responsive meanwhile.
  const run = (...args: string[]) => new Promise<{ status: number | null; lines: string[]; stdout: string }>((resolve) => {
    const p = spawn(process.execPath, [join(FIXTURES, 'die-main.mjs'), ...args], { timeout: 60_000 });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('close', (status) => resolve({ status, stdout, lines: stderr.split('\n').filter((l) => l.includes('data path thread died')) }));
  });

  it('an engine that cannot load', async () => {
    // More memory than Wasm can address: Engine.load throws in the worker, before its first answer.
    const r = await run('5000000000', 'real');
    expect(r.status).toBe(1);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^data path thread died: WebAssembly\.Memory\(\): .* \(at Engine\.load /);
    expect(r.stdout).not.toContain('survived');
  });

  it('a worker that throws while no call waits', async () => {
    const r = await run('1024', join(FIXTURES, 'rpc-worker.mjs'), 'crashLater');
    expect(r.status).toBe(1);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^data path thread died: engine trap in the worker/);
  });

  it('a worker stuck in a call (timeout)', async () => {
    const r = await run('1024', join(FIXTURES, 'rpc-worker.mjs'), 'hang');
    expect(r.status).toBe(1);
    expect(r.lines).toEqual(["data path thread died: no answer to 'hang' within 3000 ms (stuck)"]);
  });
});
