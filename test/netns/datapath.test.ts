// The data path off the main thread (issue 10, item 3), through the real
// router: `vpnmasq run` in the lab's router namespace with its test hooks
// (VPNMASQ_TEST_HOOKS=1). `status` names the data-path thread; with the
// main thread held in a busy loop (no timer, no control socket, no log
// runs), pings and UDP still cross the router both ways, which they could
// not if packets went through the main thread's event loop; a data-path
// thread that dies takes the daemon down with one log line and a non-zero
// exit, nothing crosses while it is down (the fail-closed guard), and the
// next start forwards again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import { request } from '../../src/control/client.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { udpAnswerer, waitListening } from '../helpers/servers.js';
import { thpMode } from '../../src/datapath/hugepages.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'ss', 'socat', 'ping'] });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** AnonHugePages of the whole process in bytes, read apart from the daemon's own reckoning. */
const processHugeBytes = (pid: number) => Number(/AnonHugePages:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? -1) * 1024;
const thp = thpMode();

describe.skipIf(skip)('the data path runs on its own thread', () => {
  let lab: LabT;
  let vm: RunningRouter;
  const WANHOST = '203.0.113.2';

  const sh = (ns: string, cmd: string, timeoutMs = 15_000) => lab.tryExec(ns, ['sh', '-c', cmd], { timeoutMs });
  const received = (out: string) => Number(/(\d+) received/.exec(out)?.[1] ?? 0);
  /** One UDP question to the WAN echo server, asked up to three times (UDP may be lost on a loaded machine). */
  const ask = (sport: number) =>
    sh(lab.lan[0]!, `for i in 1 2 3; do a=$(echo hi | socat -t2 - UDP:${WANHOST}:9999,sourceport=${sport}); [ -n "$a" ] && break; done; echo "$a"`, 30_000).stdout.trim();

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `dp${process.pid % 10000}` });
    vm = new RunningRouter(lab, `
config rule
	option name 'Allow-Ping'
	option src 'wan'
	option proto 'icmp'
	option icmp_type 'echo-request'
	option target 'ACCEPT'
`);
    vm.env = { VPNMASQ_TEST_HOOKS: '1' };
    await vm.start();
    lab.spawn(lab.wan[0]!, udpAnswerer(9999, '$SOCAT_PEERADDR'));
    await waitListening(lab, [[lab.wan[0]!, 'u', 9999]]);
  });

  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  });

  it('01 status names the data-path thread, a worker apart from the main thread, and its batches', () => {
    expect(received(sh(lab.lan[0]!, `ping -c 3 -i 0.2 -W 2 ${WANHOST}`).stdout)).toBeGreaterThanOrEqual(1);
    const s = vm.status();
    expect(s.dataPath.thread).toBe('worker');
    expect(s.dataPath.threadId).toBeGreaterThan(0);
    expect(s.dataPath.threadId).not.toBe(s.dataPath.mainThreadId);
    expect(s.dataPath.forwarding).toBe(true);
    expect(s.dataPath.batches).toBeGreaterThan(0);
    expect(s.counters.rxInside).toBeGreaterThan(0);
    expect(vm.cli('status').stdout).toMatch(new RegExp(`data path on its own thread \\(worker ${s.dataPath.threadId}\\), \\d+ batches`));
  });

  it('01b the engine memory is on huge pages (THP, asked for before the tables were written), as status and the kernel both say', () => {
    const s = vm.status();
    if (thp === null || thp === 'never') {
      expect(s.hugePages.advisedBytes).toBe(0);
      expect(s.hugePages.off).toMatch(/transparent/);
      return;
    }
    expect(s.hugePages.off).toBeUndefined();
    expect(s.hugePages.advisedBytes).toBeGreaterThan(s.memoryBytes / 2);
    expect(s.hugePages.residentBytes).toBeGreaterThan(0);
    expect(processHugeBytes(s.pid)).toBeGreaterThanOrEqual(s.hugePages.residentBytes);
    expect(vm.cli('status').stdout).toMatch(/MiB engine memory, \d+\.\d MiB on 2 MiB pages\)/);
  });

  it('02 traffic crosses the router both ways while the main thread is held in a busy loop', async () => {
    const marker = join(vm.dir, 'blocking');
    const release = join(vm.dir, 'release');
    let answered = false;
    const blocked = request(vm.sock, 'debug-block-main', 120_000, { ms: 90_000, marker, until: release })
      .finally(() => { answered = true; });
    for (let i = 0; i < 200 && !existsSync(marker); i++) await sleep(50);
    expect(existsSync(marker)).toBe(true);
    try {
      // LAN → WAN (a new flow: the engine creates it with the main thread busy) and back.
      expect(received(sh(lab.lan[0]!, `ping -c 4 -i 0.2 -W 2 ${WANHOST}`).stdout)).toBeGreaterThanOrEqual(2);
      expect(ask(41001)).toBe('203.0.113.1');
      // WAN → the router's WAN address (rule Allow-Ping), through the outside TUN.
      expect(received(sh(lab.wan[0]!, 'ping -c 3 -i 0.2 -W 2 203.0.113.1').stdout)).toBeGreaterThanOrEqual(1);
      // The main thread was busy all along: its answer has not come.
      expect(answered).toBe(false);
    } finally {
      writeFileSync(release, '');
    }
    const r = await blocked;
    expect(r.ok).toBe(true);
    expect(r.data).toMatchObject({ released: true });
    // And the main thread answers again.
    expect(vm.status().dataPath.forwarding).toBe(true);
  });

  it('03 a data-path thread that dies: one log line, exit non-zero, nothing crosses meanwhile; the next start forwards', async () => {
    const r = await request(vm.sock, 'debug-crash-datapath', 10_000);
    expect(r.ok).toBe(true);
    for (let i = 0; i < 200 && vm.exitCode === null; i++) await sleep(50);
    expect(vm.exitCode).toBe(1);
    const lines = vm.output.split('\n').filter((l) => l.includes('data path thread died'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/data path thread died: test hook: data path thread crashed/);
    // Down: the fail-closed guard keeps the kernel from forwarding in its place.
    expect(received(sh(lab.lan[0]!, `ping -c 2 -i 0.2 -W 1 ${WANHOST}`).stdout)).toBe(0);
    // The respawn's part: a new start cleans up after the dead one and forwards.
    await vm.start();
    expect(ask(41002)).toBe('203.0.113.1');
  });

  it('04 where a thread of its own does not fit (a 256 MiB router: VPNMASQ_DATAPATH=inline stands in for the RAM check) the same data path runs on the main thread', async () => {
    expect(await vm.term()).toBe(0);
    vm.env = { VPNMASQ_TEST_HOOKS: '1', VPNMASQ_DATAPATH: 'inline' };
    await vm.start();
    const s = vm.status();
    expect(s.dataPath.thread).toBe('main');
    expect(s.dataPath.tid).toBe(s.pid); // the process's main thread
    expect(vm.output).toMatch(/data path on the main thread: a thread of its own needs 384 MiB of RAM or more/);
    // Both ways, a new flow and an answer, the router's own address from the WAN.
    expect(ask(41003)).toBe('203.0.113.1');
    expect(received(sh(lab.lan[0]!, `ping -c 3 -i 0.2 -W 2 ${WANHOST}`).stdout)).toBeGreaterThanOrEqual(1);
    expect(received(sh(lab.wan[0]!, 'ping -c 3 -i 0.2 -W 2 203.0.113.1').stdout)).toBeGreaterThanOrEqual(1);
    const after = vm.status();
    expect(after.dataPath.batches).toBeGreaterThan(0);
    expect(after.flows.active).toBeGreaterThan(0);
    expect(vm.cli('status').stdout).toMatch(/data path on the main thread \(too little RAM for a thread of its own\), \d+ batches/);
    // Listings come from the same calls as on a thread of its own.
    expect(vm.cli('conntrack', '-L').stdout).toMatch(/dport=9999/);
    // The engine loaded on the main thread is on huge pages too.
    if (thp === 'madvise' || thp === 'always') expect(after.hugePages.residentBytes).toBeGreaterThan(0);
  });

  it('05 VPNMASQ_HUGE_PAGES=0: the engine memory stays on 4 KiB pages, and status says why', async () => {
    expect(await vm.term()).toBe(0);
    vm.env = { VPNMASQ_TEST_HOOKS: '1', VPNMASQ_HUGE_PAGES: '0' };
    await vm.start();
    const s = vm.status();
    expect(s.hugePages).toEqual({ advisedBytes: 0, residentBytes: 0, pageBytes: 0, off: 'VPNMASQ_HUGE_PAGES=0' });
    expect(vm.cli('status').stdout).toMatch(/MiB engine memory, 4 KiB pages: VPNMASQ_HUGE_PAGES=0\)/);
    // With THP in madvise mode nothing else in the process asks for huge pages: none at all.
    if (thp === 'madvise') expect(processHugeBytes(s.pid)).toBe(0);
    expect(ask(41005)).toBe('203.0.113.1');
  });
});
