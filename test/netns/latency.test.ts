// Latency under load (issue 10 item 5): the data path's scheduling
// (`option priority`) is what the kernel gives the thread, as /proc shows it,
// and status says it; a TCP upload through the router reaches the reader's
// queue discipline (its drops are counted in status and the metrics, zero
// or more: no timing is asserted); a UDP flood through a realtime data path
// leaves the control socket answering.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { iperfServer } from '../helpers/servers.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'iperf3', 'setpriv'] });
const WANHOST = '203.0.113.2';

/** Scheduling of one thread of the daemon (the main thread: tid = pid): stat(5) fields 19 (nice), 40 (rt_priority), 41 (policy). */
function sched(pid: number, tid = pid): { nice: number; rtPriority: number; policy: number } {
  const s = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return { nice: Number(f[16]), rtPriority: Number(f[37]), policy: Number(f[38]) };
}

// The data path's wake-ups, polls and reader queue are measured here: the flow fast path would carry the
// established flows (the pings, the upload, the flood) past the TUNs. VPNMASQ_FLOW_OFFLOAD unset: the option decides.
const TUN_PATH = "\toption flow_offload '0'\n";
const TUN_PATH_ENV = { VPNMASQ_FLOW_OFFLOAD: '' };

describe.skipIf(skip)('latency under load: data path priority and the reader queue (real TUN path)', () => {
  let lab: LabT;
  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `lt${process.pid % 10000}` });
    await iperfServer(lab, lab.wan[0]!, 5201);
  });
  afterAll(() => lab?.destroy());

  describe('default: priority realtime', () => {
    let vm: RunningRouter;
    beforeAll(async () => {
      vm = new RunningRouter(lab, '', TUN_PATH);
      vm.env = { VPNMASQ_PRIORITY: '', ...TUN_PATH_ENV };
      await vm.start();
    });
    afterAll(async () => { await vm?.stop(); });

    it('01 the batch loop\'s thread runs SCHED_FIFO 10, and status says so', () => {
      const s = vm.status();
      expect(s.priority).toEqual({ applied: 'SCHED_FIFO 10', note: null });
      // the data-path thread, and only it: the main thread (control, logs) stays an ordinary thread
      expect(s.dataPath.tid).toBeGreaterThan(0);
      expect(s.dataPath.tid).not.toBe(s.pid);
      expect(sched(s.pid, s.dataPath.tid)).toMatchObject({ policy: 1, rtPriority: 10 });
      expect(sched(s.pid)).toMatchObject({ policy: 0, rtPriority: 0 });
      expect(vm.cli('status').stdout).toMatch(/^data path SCHED_FIFO 10$/m);
    });

    it('02 a TCP upload passes; status counts the reader queue\'s drops', () => {
      const r = lab.tryExec(lab.lan[0]!, ['iperf3', '-J', '-t', '2', '-P', '4', '-c', WANHOST, '-p', '5201'], { timeoutMs: 60_000 });
      expect(JSON.parse(r.stdout).end.sum_received.bytes).toBeGreaterThan(1_000_000);
      const s = vm.status();
      expect(typeof s.tunQueueDrops).toBe('number');
      expect(s.drops.vnet_bad_gso ?? 0).toBe(0);
      // busy_poll is off by default: every packet came by a wake-up
      expect(s.dataPath.busyPollUs).toBe(0);
      expect(s.dataPath.polls).toBe(0);
    });

    it('03 a UDP flood through the realtime data path leaves the control socket answering', async () => {
      const flood = lab.spawn(lab.lan[0]!, ['iperf3', '-u', '-b', '0', '-l', '64', '-P', '4', '-t', '3', '-c', WANHOST, '-p', '5201']);
      await new Promise((r) => setTimeout(r, 1000));
      const during = vm.status();
      await new Promise((r) => flood.once('exit', r));
      expect(during.counters.rxInside).toBeGreaterThan(0);
      expect(vm.status().priority.applied).toBe('SCHED_FIFO 10');
    });
  });

  it('05 without CAP_SYS_NICE (a container): realtime falls back to high, then to normal, and says why', () => {
    const mod = resolve(__dirname, '../../dist/datapath/priority.js');
    const script = `import(${JSON.stringify(mod)}).then((m) => console.log(JSON.stringify(m.applyDataPathPriority('realtime'))))`;
    const out = JSON.parse(execFileSync('setpriv', ['--bounding-set=-sys_nice', '--inh-caps=-sys_nice', process.execPath, '-e', script],
      { encoding: 'utf8' }));
    expect(out.applied).toBe('nice 0');
    expect(out.note).toMatch(/SCHED_FIFO refused: .*EPERM.*; nice -10 refused/);
  });

  describe("option busy_poll '100000' (100 ms)", () => {
    let vm: RunningRouter;
    beforeAll(async () => {
      vm = new RunningRouter(lab, '', `\toption busy_poll '100000'\n${TUN_PATH}`);
      vm.env = { VPNMASQ_PRIORITY: '', ...TUN_PATH_ENV };
      await vm.start();
    });
    afterAll(async () => { await vm?.stop(); });

    /** The data-path thread's state letter (stat(5) field 3: R running, S sleeping). */
    const threadState = (s: any) => readFileSync(`/proc/${s.pid}/task/${s.dataPath.tid}/stat`, 'utf8').split(') ')[1]!.slice(0, 1);

    it('06 pings 10 ms apart are taken by the poll, not by wake-ups, and calls are answered meanwhile', async () => {
      const s0 = vm.status();
      expect(s0.dataPath.busyPollUs).toBe(100000);
      const ping = lab.spawn(lab.lan[0]!, ['ping', '-n', '-c', '100', '-i', '0.01', '-W', '2', WANHOST], { stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      ping.stdout!.on('data', (d) => { out += d; });
      await new Promise((r) => setTimeout(r, 300));
      const during = vm.status(); // the main thread's call, answered while the data path polls
      await new Promise((r) => ping.once('exit', r));
      const after = vm.status();
      expect(Number(/(\d+) received/.exec(out)?.[1])).toBeGreaterThan(90);
      expect(during.dataPath.busyPollUs).toBe(100000);
      // Without the poll every echo would be a wake-up (its reply is back on tout before the write
      // of the request returns, so one round takes both).
      const polls = after.dataPath.polls - s0.dataPath.polls;
      const wakes = after.dataPath.wakes - s0.dataPath.wakes;
      expect(polls).toBeGreaterThan(50);
      expect(polls).toBeGreaterThan(wakes);
    });

    it('07 once traffic stops the thread sleeps again (no endless spin)', async () => {
      const s = vm.status();
      let state = threadState(s);
      for (let i = 0; i < 200 && state !== 'S'; i++) {
        await new Promise((r) => setTimeout(r, 50));
        state = threadState(s);
      }
      expect(state).toBe('S');
    });

    it('08 a reload to busy_poll 0 applies at once: the next pings are wake-ups', async () => {
      vm.writeConfig('', `\toption busy_poll '0'\n${TUN_PATH}`);
      expect(vm.cli('reload').ok).toBe(true);
      const s0 = vm.status();
      expect(s0.dataPath.busyPollUs).toBe(0);
      lab.tryExec(lab.lan[0]!, ['ping', '-n', '-c', '20', '-i', '0.01', '-W', '2', WANHOST], { timeoutMs: 30_000 });
      const s1 = vm.status();
      expect(s1.dataPath.polls).toBe(s0.dataPath.polls);
      expect(s1.dataPath.wakes - s0.dataPath.wakes).toBeGreaterThanOrEqual(20);
    });
  });

  for (const [want, applied, expected] of [
    ['high', 'nice -10', { policy: 0, nice: -10 }],
    ['normal', 'nice 0', { policy: 0, nice: 0 }],
  ] as const) {
    describe(`option priority '${want}'`, () => {
      let vm: RunningRouter;
      beforeAll(async () => {
        vm = new RunningRouter(lab, '', `\toption priority '${want}'`);
        vm.env = { VPNMASQ_PRIORITY: '' };
        await vm.start();
      });
      afterAll(async () => { await vm?.stop(); });

      it(`04 runs at ${applied}`, () => {
        const s = vm.status();
        expect(s.priority).toEqual({ applied, note: null });
        expect(sched(s.pid, s.dataPath.tid)).toMatchObject(expected);
      });
    });
  }
});
