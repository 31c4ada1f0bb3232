// Host queues (option host_queues): the LAN TUN as one ring per LAN host,
// read in turn (src/tun/ringclock.h, hostqueue). `vpnmasq run` between
// namespaces, two LAN hosts. A burst from one host while the daemon is
// stopped (SIGSTOP: a router that cannot keep up, which a slower CPU is all
// the time) fills that host's ring; the other host's datagrams, sent after
// it, must all get through. The same burst with option host_queues '1'
// loses them at the one full ring's tail: the control that shows the test
// can fail. CoDel runs with a 1 s target here (VPNMASQ_READER_QUEUE), so
// every loss counted is the ring's, not a head drop. The WAN TUN's host
// queues (one ring per internet host and protocol) get the same test from
// two WAN hosts. No timing is asserted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import { waitListening } from '../helpers/servers.js';
import { sleep, stopProcess, until } from '../helpers/shell.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { hostQueueOf, READER_QUEUE_HOST_QUEUES, remoteQueueOf, TUN_TXQUEUELEN } from '../../src/tun/tun.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'tc', 'python3'] });
const WANHOST = '203.0.113.2';
const PORT = 7300;

// SINK port [source | hello wanport peer...]: counts the datagrams by their first byte (or, with `source`, by their
// source address) until 2 s pass without one; prints {"A": n, "B": m} (or {"addr": n}). By first byte, the 2 s start
// at the first upper-case tag: the lower-case ones come before a stall, which on a loaded machine can itself last 2 s.
// With `hello` it first says hello to each peer's wanport from its port (three times: the path may lose a datagram),
// for the WAN peers (WAN_PEER) to answer through the router's mapping.
const SINK = `
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: the sink is never what loses one
s.bind(('0.0.0.0', int(sys.argv[1])))
by_source = sys.argv[2:] == ['source']
if sys.argv[2:3] == ['hello']:
    for _ in range(3):
        for h in sys.argv[4:]: s.sendto(b'hello', (h, int(sys.argv[3])))
        time.sleep(0.05)
print('ready', flush=True)
got = {}
s.settimeout(60)
while True:
    try: d, a = s.recvfrom(2048)
    except socket.timeout: break
    k = a[0] if by_source else d[:1].decode()
    if by_source or k.isupper(): s.settimeout(2)
    got[k] = got.get(k, 0) + 1
print(json.dumps(got), flush=True)
`;
// TRICKLE host port seconds: a 64-byte datagram every millisecond for that long.
const TRICKLE = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
end = time.time() + float(sys.argv[3])
while time.time() < end:
    s.send(b'x' * 64)
    time.sleep(0.001)
`;
// SEND host port tag n: n datagrams of 64 bytes, each tag + its number, as fast as the socket takes them.
const SEND = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
for i in range(int(sys.argv[4])):
    s.send((sys.argv[3] + str(i)).encode().ljust(64, b'.'))
`;
// WAN_PEER port: binds the port (prints 'bound'), takes one datagram (a LAN host's hello: its source is the router's
// mapping), prints 'ready'; then for a line "tag n" on stdin sends n datagrams of 64 bytes (tag + number) back to that
// source from the same socket, prints 'sent' and exits.
const WAN_PEER = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', int(sys.argv[1])))
print('bound', flush=True)
d, peer = s.recvfrom(2048)
print('ready', flush=True)
tag, n = sys.stdin.readline().split()
for i in range(int(n)):
    s.sendto((tag + str(i)).encode().ljust(64, b'.'), peer)
print('sent', flush=True)
`;
// The TUNs' rings are measured here: the flow fast path would carry a flow offloaded before a stall past them.
// VPNMASQ_FLOW_OFFLOAD unset: the option decides.
const TUN_PATH = "\toption flow_offload '0'\n";
const ipNumber = (a: string) => a.split('.').reduce((n, b) => n * 256 + Number(b), 0);

describe.skipIf(skip)('host queues: one LAN host\'s burst fills only its own ring (real TUN path)', () => {
  let lab: LabT;
  let vm: RunningRouter;
  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `hq${process.pid % 10000}`, lanHosts: 2, wanHosts: 2 });
    vm = new RunningRouter(lab, '', TUN_PATH);
    vm.env = { VPNMASQ_READER_QUEUE: '262144,1000000,2000000', VPNMASQ_TXQUEUELEN: '', VPNMASQ_HOST_QUEUES: '', VPNMASQ_FLOW_OFFLOAD: '' };
    await vm.start();
  }, 60_000);
  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  });

  /**
   * The router's kernel's forwarded datagrams so far (/proc/net/snmp Ip ForwDatagrams): each one routed to a TUN,
   * queued in its ring or dropped at the full ring. A sender's exit says only that its socket took the datagrams;
   * on a loaded machine the kernel may still hold some in its backlog, and a SIGCONT before they reach the TUN lets
   * them into a ring the reader has drained (seen: 1080 of WAN host 1's 3000 delivered, option flow_offload '0').
   */
  const forwarded = () => {
    const [names, values] = lab.exec(lab.router, ['cat', '/proc/net/snmp']).split('\n').filter((l) => l.startsWith('Ip:')).map((l) => l.trim().split(/\s+/));
    return Number(values![names!.indexOf('ForwDatagrams')]);
  };

  /**
   * With the daemon stopped, lan1 sends `burst` datagrams (A) and then lan2 sends 50 (B); the daemon goes on.
   * What the WAN host received of each.
   */
  async function burstThenOther(burst: number): Promise<{ A?: number; B?: number }> {
    let out = '';
    const sink = lab.spawn(lab.wan[0]!, ['python3', '-c', SINK, String(PORT)]);
    sink.stdout!.on('data', (d) => { out += d; });
    const done = new Promise((r) => sink.once('exit', r));
    await waitListening(lab, [[lab.wan[0]!, 'u', PORT]]);
    // Both hosts' flows exist before the stop, so nothing below waits for a new mapping.
    lab.exec(lab.lan[0]!, ['python3', '-c', SEND, WANHOST, String(PORT), 'a', '1']);
    lab.exec(lab.lan[1]!, ['python3', '-c', SEND, WANHOST, String(PORT), 'b', '1']);
    await sleep(200);
    const pid = vm.status().pid as number;
    const f0 = forwarded();
    // Stopped before the first datagram: kill() returns before the stop reaches the data-path thread (stopProcess).
    try {
      await stopProcess(pid);
      lab.exec(lab.lan[0]!, ['python3', '-c', SEND, WANHOST, String(PORT), 'A', String(burst)]);
      lab.exec(lab.lan[1]!, ['python3', '-c', SEND, WANHOST, String(PORT), 'B', '50']);
      await until(() => forwarded() - f0 >= burst + 50, 30_000, 'the router to route both bursts to the TUN');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await done;
    return JSON.parse(out.split('\n').filter((l) => l.startsWith('{')).pop()!);
  }

  /**
   * The same from the WAN side: lan1 says hello to both WAN hosts; with the daemon stopped, WAN host 1 sends
   * `burst` datagrams (A) back to lan1's mapping and then WAN host 2 sends 50 (B); the daemon goes on. What lan1
   * received of each.
   */
  async function wanBurstThenOther(burst: number): Promise<{ A?: number; B?: number }> {
    const port = PORT + 2;
    const peers = [0, 1].map((j) => {
      const p = lab.spawn(lab.wan[j]!, ['python3', '-c', WAN_PEER, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      p.stdout!.on('data', (d) => { out += d; });
      return { p, out: () => out };
    });
    await until(() => peers.every((x) => x.out().includes('bound')), 30_000, 'the WAN peers to bind');
    let got = '';
    const sink = lab.spawn(lab.lan[0]!, ['python3', '-c', SINK, String(port), 'hello', String(port), lab.addr.wan[0]!, lab.addr.wan[1]!]);
    sink.stdout!.on('data', (d) => { got += d; });
    const done = new Promise((r) => sink.once('exit', r));
    await until(() => peers.every((x) => x.out().includes('ready')), 30_000, 'a hello at each WAN peer');
    const pid = vm.status().pid as number;
    const f0 = forwarded();
    // Stopped before the first datagram: kill() returns before the stop reaches the data-path thread, which read
    // on meanwhile; on a loaded machine up to 679 of the burst (CI: 1,064 got through where one ring holds 1,000).
    try {
      await stopProcess(pid);
      peers[0]!.p.stdin!.write(`A ${burst}\n`);
      await until(() => peers[0]!.out().includes('sent'), 30_000, 'WAN host 1\'s burst');
      peers[1]!.p.stdin!.write('B 50\n');
      await until(() => peers[1]!.out().includes('sent'), 30_000, 'WAN host 2\'s datagrams');
      await until(() => forwarded() - f0 >= burst + 50, 30_000, 'the router to route both bursts to the TUN');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await done;
    return JSON.parse(got.split('\n').filter((l) => l.startsWith('{')).pop()!);
  }

  it('01 status and the devices: the LAN TUN has 16 rings (8 host queues, two rings each), the WAN TUN 8; a reload to another count waits for a restart; the lab hosts sit on different rings', () => {
    const s = vm.status();
    expect(s.tunQueue.hostQueues).toBe(8);
    expect(s.tunQueue.hostQueuesNote).toBeUndefined();
    expect(s.tunQueue.wanHostQueues).toBe(8);
    expect(s.tunQueue.wanHostQueuesNote).toBeUndefined();
    // two rings a LAN host queue: its bulk flows' and its sparse flows' (src/tun/ringclock.h); one a WAN one
    expect(lab.exec(lab.router, ['ip', '-d', 'link', 'show', 'tin'])).toMatch(/multi_queue numqueues 16 /);
    expect(lab.exec(lab.router, ['ip', '-d', 'link', 'show', 'tout'])).toMatch(/multi_queue numqueues 8 /);
    for (const dev of ['tin', 'tout']) expect(lab.exec(lab.router, ['tc', 'filter', 'show', 'dev', dev, 'egress']).match(/vpnmasq_ringclock/g)).toHaveLength(1);
    expect(vm.cli('status').stdout).toMatch(new RegExp(`^tun queue txqueuelen ${TUN_TXQUEUELEN}/${TUN_TXQUEUELEN}, 8 LAN host queues \\(a bulk and a sparse ring each\\), 8 WAN host queues \\(by remote host and protocol\\), CoDel`, 'm'));
    // A reload to another count is asked to wait for a restart; the rings stay as they are meanwhile.
    vm.writeConfig('', `\toption host_queues '2'\n${TUN_PATH}`);
    const r = vm.cli('reload', '--json');
    expect(r.ok).toBe(true);
    expect(JSON.parse(r.stdout).restartNeeded).toEqual(['hostQueues']);
    expect(lab.exec(lab.router, ['ip', '-d', 'link', 'show', 'tin'])).toMatch(/multi_queue numqueues 16 /);
    expect(lab.exec(lab.router, ['ip', '-d', 'link', 'show', 'tout'])).toMatch(/multi_queue numqueues 8 /);
    vm.writeConfig('', TUN_PATH);
    expect(vm.cli('reload').ok).toBe(true);
    // The scenarios below need the two hosts on different rings (the steering hash, src/tun/ringclock.h).
    expect(hostQueueOf(ipNumber(lab.addr.lan[0]!), 3)).not.toBe(hostQueueOf(ipNumber(lab.addr.lan[1]!), 3));
    expect(remoteQueueOf(ipNumber(lab.addr.wan[0]!), 17, 3)).not.toBe(remoteQueueOf(ipNumber(lab.addr.wan[1]!), 17, 3));
  });

  it('02 attacker: a burst three rings long from lan1, sent while the router stalls, fills only lan1\'s ring; all 50 of lan2\'s datagrams sent after it get through', async () => {
    const tx0 = Number(lab.exec(lab.router, ['cat', '/sys/class/net/tin/statistics/tx_dropped']));
    const got = await burstThenOther(3 * TUN_TXQUEUELEN);
    expect(got.B).toBe(50);
    // lan1 got at most its two rings' worth through (one flow: its first datagram in the sparse ring, the rest in
    // the bulk ring); the rest was lost at the full ring's tail
    expect(got.A).toBeGreaterThan(0);
    expect(got.A).toBeLessThanOrEqual(2 * TUN_TXQUEUELEN);
    const tx1 = Number(lab.exec(lab.router, ['cat', '/sys/class/net/tin/statistics/tx_dropped']));
    expect(tx1 - tx0).toBeGreaterThanOrEqual(3 * TUN_TXQUEUELEN - got.A!);
  }, 60_000);

  it('02b attacker on the internet: a burst three rings long from one WAN host fills only its own ring of the WAN TUN; all 50 of another WAN host\'s datagrams get through', async () => {
    const tx0 = Number(lab.exec(lab.router, ['cat', '/sys/class/net/tout/statistics/tx_dropped']));
    const got = await wanBurstThenOther(3 * TUN_TXQUEUELEN);
    expect(got.B).toBe(50);
    // WAN host 1's UDP is one ring: at most its worth got through, the rest was lost at its tail
    expect(got.A).toBeGreaterThan(0);
    expect(got.A).toBeLessThanOrEqual(TUN_TXQUEUELEN);
    const tx1 = Number(lab.exec(lab.router, ['cat', '/sys/class/net/tout/statistics/tx_dropped']));
    expect(tx1 - tx0).toBeGreaterThanOrEqual(3 * TUN_TXQUEUELEN - got.A!);
  }, 60_000);

  it('03 control, option host_queues \'1\': the same bursts fill each TUN\'s one ring, and the other host\'s datagrams are lost at its tail', async () => {
    const env = vm.env;
    await vm.stop();
    vm = new RunningRouter(lab, '', `\toption host_queues '1'\n${TUN_PATH}`);
    vm.env = env;
    await vm.start();
    expect(vm.status().tunQueue).toMatchObject({ hostQueues: 1, wanHostQueues: 1 });
    for (const dev of ['tin', 'tout']) expect(lab.exec(lab.router, ['ip', '-d', 'link', 'show', dev])).not.toMatch(/multi_queue/);
    expect(vm.cli('status').stdout).toMatch(/, one LAN ring, CoDel/);
    const got = await burstThenOther(3 * TUN_TXQUEUELEN);
    // the ring was full of lan1's burst when lan2's came: none of them got in
    expect(got.B ?? 0).toBe(0);
    expect(got.A).toBeGreaterThan(0);
    // and the WAN TUN's one ring was full of WAN host 1's burst when WAN host 2's came
    const wan = await wanBurstThenOther(3 * TUN_TXQUEUELEN);
    expect(wan.B ?? 0).toBe(0);
    expect(wan.A).toBeGreaterThan(0);
  }, 60_000);

  it('04 attacker: a VPNMASQ_HOST_QUEUES that is not 1, 2, 4, 8 or 16 stops the start with one line, leaving no TUN behind', async () => {
    await vm.stop();
    const p = new RunningRouter(lab);
    p.env = { VPNMASQ_HOST_QUEUES: '3' };
    try {
      await expect(p.start()).rejects.toThrow(/vpnmasq: VPNMASQ_HOST_QUEUES must be 1, 2, 4, 8 or 16, not "3"/);
    } finally {
      await p.stop();
    }
    for (const dev of ['tin', 'tout']) expect(lab.tryExec(lab.router, ['ip', 'link', 'show', 'dev', dev]).ok).toBe(false);
  }, 60_000);

  it('05 attacker\'s timing: kill -9 under traffic with 8 rings: the multi-queue TUN goes with the daemon, and nothing reaches the WAN untranslated', async () => {
    const p = new RunningRouter(lab);
    p.env = { VPNMASQ_HOST_QUEUES: '' };
    let out = '';
    const sink = lab.spawn(lab.wan[0]!, ['python3', '-c', SINK, String(PORT + 1), 'source']);
    sink.stdout!.on('data', (d) => { out += d; });
    const done = new Promise((r) => sink.once('exit', r));
    try {
      await p.start();
      expect(p.status().tunQueue.hostQueues).toBe(8);
      // on the defaults: the host queues' CoDel target and interval on both TUNs
      expect(p.status().tunQueue).toMatchObject({ targetUs: READER_QUEUE_HOST_QUEUES.targetUs, intervalUs: READER_QUEUE_HOST_QUEUES.intervalUs });
      expect(p.status().tunQueue.wanTargetUs).toBeUndefined();
      expect(p.cli('status').stdout).toMatch(/, CoDel target 2000 µs interval 40000 µs on ring stamps, /);
      await waitListening(lab, [[lab.wan[0]!, 'u', PORT + 1]]);
      const trickle = lab.spawn(lab.lan[0]!, ['python3', '-c', TRICKLE, WANHOST, String(PORT + 1), '3']);
      const trickled = new Promise((r) => trickle.once('exit', r));
      await sleep(1000);
      await p.kill9();
      // every ring's fd closed with the process: the device is gone, and the guard holds the kernel path shut
      expect(lab.tryExec(lab.router, ['ip', 'link', 'show', 'dev', 'tin']).ok).toBe(false);
      await trickled;
      await done;
    } finally {
      await p.stop();
    }
    const got: Record<string, number> = JSON.parse(out.split('\n').filter((l) => l.startsWith('{')).pop()!);
    // translated while vpnmasq ran; nothing with a LAN source after it died
    expect(got[lab.addr.routerWan]).toBeGreaterThan(0);
    expect(Object.keys(got)).toEqual([lab.addr.routerWan]);
  }, 60_000);
});
