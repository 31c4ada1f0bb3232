// wanwatch (src/net/wanwatch.ts) for real, in a network namespace: the
// watcher runs in a harness process inside the namespace (`ip netns exec NS
// node harness.mjs`, importing the compiled src/net modules), the test changes
// addresses with `ip -n NS addr ...` and checks the callbacks and the
// watcher's child processes.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { buildNetModules, Harness } from '../helpers/netharness.js';
import { monitorLineDevice } from '../../src/net/wanwatch.js';
import { primaryIpv4 } from '../../src/net/iface.js';

describe('wanwatch parsing', () => {
  it('finds the device of an ip monitor line', () => {
    expect(monitorLineDevice('3: wan    inet 198.51.100.7/24 scope global wan\\       valid_lft forever preferred_lft forever')).toBe('wan');
    expect(monitorLineDevice('Deleted 3: wan    inet 198.51.100.7/24 scope global wan')).toBe('wan');
    expect(monitorLineDevice('7: eth0.100    inet 10.0.0.1/8 scope global eth0.100')).toBe('eth0.100');
    expect(monitorLineDevice('garbage')).toBeNull();
  });

  it('picks the first primary global address', () => {
    const out = JSON.stringify([
      {
        ifname: 'wan',
        addr_info: [
          { family: 'inet', local: '169.254.1.1', prefixlen: 16, scope: 'link' },
          { family: 'inet', local: '198.51.100.7', prefixlen: 24, scope: 'global' },
          { family: 'inet', local: '198.51.100.8', prefixlen: 24, scope: 'global', secondary: true },
        ],
      },
    ]);
    expect(primaryIpv4(out)).toBe('198.51.100.7');
    expect(primaryIpv4('')).toBeNull();
    expect(primaryIpv4('[{"ifname":"wan","addr_info":[]}]')).toBeNull();
  });
});


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const NS = `vmww-${process.pid}`;

function ipn(...args: string[]): void {
  execFileSync('ip', ['-n', NS, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A bound on how long a test waits for something, not a measurement: generous, for a loaded machine. */
const DEADLINE_MS = 20_000;

/** Waits until `done()` holds (polling every 10 ms); false when the deadline passed first. */
async function eventually(done: () => boolean | Promise<boolean>, ms = DEADLINE_MS): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await done()) return true;
    if (Date.now() > end) return false;
    await sleep(10);
  }
}

/**
 * Runs `change`, then expects the next callback to report `want` and to be
 * the only one. Returns its delay after `change` (logged, not asserted: the
 * machine is shared).
 */
async function expectChange(h: Harness, change: () => void, want: string | null): Promise<number> {
  const from = h.events.length;
  const t0 = Date.now();
  change();
  const seen = () => JSON.stringify(h.events.slice(from).map((e) => e.addr));
  expect(await eventually(() => h.events.length > from), `no callback after the change (want ${want})`).toBe(true);
  expect(h.events[from]!.addr, `the first callback after the change (all: ${seen()})`).toBe(want);
  // a duplicate or a stale value would follow at once, from the monitor's burst or the next poll
  await sleep(50);
  expect(h.events.slice(from).map((e) => e.addr), 'one callback per change').toEqual([want]);
  return h.events[from]!.t - t0;
}

/**
 * watch(dev) and its immediate report: the report is a callback of its own
 * (queued after the call returns), so it can reach us after the reply; a
 * change made before it arrived would be judged against it.
 */
async function startWatch(h: Harness, dev: string, opts: Record<string, unknown> = {}): Promise<void> {
  expect(await h.call('watch', dev, opts)).toBeNull();
  expect(await eventually(() => h.events.length > 0), 'the immediate report').toBe(true);
  await sleep(50);
  expect(h.events.map((e) => e.addr)).toEqual([null]);
}

async function children(h: Harness): Promise<{ pid: number; comm: string; state: string }[]> {
  return h.call('children');
}

/** stop(): its children (ip monitor, a poll in flight) end and none comes back. */
async function stopLeavesNothing(h: Harness): Promise<void> {
  await h.call('stopWatch');
  expect(await eventually(async () => (await children(h)).length === 0), `children after stop(): ${JSON.stringify(await children(h))}`).toBe(true);
}

describe.skipIf(skipUnless({ root: true, tools: ['ip'] }))('watchWanAddress in a network namespace', () => {
  let dir = '';
  const harnesses: Harness[] = [];
  const harness = () => {
    const h = new Harness(NS, dir);
    harnesses.push(h);
    return h;
  };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), `${NS}-`));
    buildNetModules(dir);
    execFileSync('ip', ['netns', 'add', NS]);
    ipn('link', 'set', 'lo', 'up');
    ipn('link', 'add', 'wan', 'type', 'veth', 'peer', 'name', 'wanpeer');
    ipn('link', 'set', 'wan', 'up');
    // Deleting a primary deletes its secondaries (the test relies on it).
    execFileSync('ip', ['netns', 'exec', NS, 'sh', '-c', 'echo 0 > /proc/sys/net/ipv4/conf/wan/promote_secondaries']);
  });

  // Each test starts from a WAN device without addresses, whatever a failed one left behind.
  beforeEach(() => ipn('addr', 'flush', 'dev', 'wan'));

  afterAll(async () => {
    for (const h of harnesses) await h.close().catch(() => {});
    try {
      execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
    } catch {
      /* not created */
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('reports the address at once and every change through ip monitor (no poll in the test\'s time), without duplicates; stop() leaves nothing', async () => {
    const h = harness();
    // The poll every 10 minutes: within the test's deadline only the monitor can report.
    await startWatch(h, 'wan', { pollMs: 600_000 });

    const kids = await children(h);
    expect(kids.map((k) => k.comm)).toContain('ip'); // ip monitor

    const d1 = await expectChange(h, () => ipn('addr', 'add', '198.51.100.7/24', 'dev', 'wan'), '198.51.100.7');
    expect(await h.call('current')).toBe('198.51.100.7');

    // Neither a secondary nor a second subnet changes the primary address: no callback.
    const n = h.events.length;
    ipn('addr', 'add', '198.51.100.8/24', 'dev', 'wan');
    ipn('addr', 'add', '10.0.0.1/8', 'dev', 'wan');
    await sleep(1300);
    expect(h.events.slice(n)).toEqual([]);

    // Deleting the primary (and with it its secondary) makes 10.0.0.1 the primary.
    const d2 = await expectChange(h, () => ipn('addr', 'del', '198.51.100.7/24', 'dev', 'wan'), '10.0.0.1');
    const d3 = await expectChange(h, () => ipn('addr', 'flush', 'dev', 'wan'), null);
    expect(h.events.map((e) => e.addr)).toEqual([null, '198.51.100.7', '10.0.0.1', null]);
    console.log(`wanwatch (monitor) delays: ${d1} ms, ${d2} ms, ${d3} ms`);

    await stopLeavesNothing(h);
    const m = h.events.length;
    ipn('addr', 'add', '198.51.100.9/24', 'dev', 'wan');
    await sleep(1300);
    expect(h.events.slice(m)).toEqual([]); // nothing after stop()
    expect(await children(h)).toEqual([]);
    ipn('addr', 'flush', 'dev', 'wan');
    await h.close();
  });

  it('polling alone (no ip monitor) still reports every change', async () => {
    const h = harness();
    await startWatch(h, 'wan', { monitor: false });
    const d = await expectChange(h, () => ipn('addr', 'add', '203.0.113.5/24', 'dev', 'wan'), '203.0.113.5');
    await expectChange(h, () => ipn('addr', 'del', '203.0.113.5/24', 'dev', 'wan'), null);
    console.log(`wanwatch (poll only) delay: ${d} ms`);
    await stopLeavesNothing(h);
    await h.close();
  });

  it('restarts a dead ip monitor; meanwhile polling covers', async () => {
    const h = harness();
    await startWatch(h, 'wan', { monitorRestartMs: 300 });
    const [mon] = (await children(h)).filter((k) => k.comm === 'ip');
    expect(mon).toBeTruthy();
    process.kill(mon!.pid, 'SIGKILL');
    await sleep(50);
    await expectChange(h, () => ipn('addr', 'add', '192.0.2.44/24', 'dev', 'wan'), '192.0.2.44');
    const monitors = async () => (await children(h)).filter((k) => k.comm === 'ip' && k.state !== 'Z' && k.pid !== mon!.pid);
    expect(await eventually(async () => (await monitors()).length > 0), 'a new ip monitor').toBe(true);
    const again = (await children(h)).filter((k) => k.comm === 'ip' && k.state !== 'Z');
    expect(again.length).toBe(1);
    expect(again[0]!.pid).not.toBe(mon!.pid);
    await expectChange(h, () => ipn('addr', 'flush', 'dev', 'wan'), null);
    await stopLeavesNothing(h);
    await h.close();
  });

  it('handles a device that does not exist yet (PPP) and one that goes away', async () => {
    const h = harness();
    await startWatch(h, 'wan2');
    await expectChange(
      h,
      () => {
        ipn('link', 'add', 'wan2', 'type', 'veth', 'peer', 'name', 'wan2peer');
        ipn('addr', 'add', '100.64.0.9/10', 'dev', 'wan2');
      },
      '100.64.0.9',
    );
    await expectChange(h, () => ipn('link', 'del', 'wan2'), null);
    await stopLeavesNothing(h);
    await h.close();
  });
});
