// The readers' queue discipline under floods that are not TCP (issue 10
// item 5): `vpnmasq run` between namespaces, one LAN host flooding, a second
// one talking. The daemon is stopped (SIGSTOP) for a moment during each
// flood and each TCP transfer, so the ring certainly fills behind a reader that cannot keep up
// (what a slower CPU does all the time), and CoDel runs with a 1 µs target
// and 100 µs interval (VPNMASQ_READER_QUEUE) so that a ring not emptied for
// 100 µs counts as a standing queue however fast this machine is. Asserted:
// the flood's packets are dropped at the head and counted under their class,
// the second host's questions and pings are answered, the engine's books
// balance, and the settings are in status. No timing is asserted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import { iperfServer, udpAnswerer, waitListening } from '../helpers/servers.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { READER_QUEUE, TUN_TXQUEUELEN } from '../../src/tun/tun.js';
import { sleep, stopProcess } from '../helpers/shell.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'tc', 'iperf3', 'socat', 'python3', 'ping'] });
const PEER = resolve(__dirname, 'queue-flood.py');
const WANHOST = '203.0.113.2';

// A TCP stream whose every byte depends on its place: MB k is random.Random(k)'s.
// SOURCE host port mb: sends it and prints {bytes, sha256}; SINK port: receives one stream, prints the same.
const SOURCE = `
import hashlib, json, random, socket, sys
h, n = hashlib.sha256(), 0
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
for k in range(int(sys.argv[3])):
    b = random.Random(k).randbytes(1 << 20)
    s.sendall(b); h.update(b); n += len(b)
s.shutdown(socket.SHUT_WR); s.recv(1)
print(json.dumps({'bytes': n, 'sha256': h.hexdigest()}))
`;
const SINK = `
import hashlib, json, socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('0.0.0.0', int(sys.argv[1]))); l.listen(1)
c, _ = l.accept()
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
c.close()
print(json.dumps({'bytes': n, 'sha256': h.hexdigest()}), flush=True)
`;
// UDP GSO (USO) bursts, as QUIC stacks send them: USO_SOURCE host port bursts sends each burst of 8 datagrams of
// 1000 bytes in one send (UDP_SEGMENT), 100 bursts every 25 ms; datagram i of burst b is (b, i), then bytes
// (i + k) & 255. USO_SINK port: receives into a buffer no run can fill until 2 s pass without a datagram, and
// prints {received, bad, notPrefix}: datagrams that are not whole and their own, and bursts with a hole.
const USO_SOURCE = `
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(17, 103, 1000)  # SOL_UDP, UDP_SEGMENT
s.connect((sys.argv[1], int(sys.argv[2])))
body = [bytes((i + k) & 255 for k in range(8, 1000)) for i in range(8)]
n = int(sys.argv[3])
for b in range(n):
    s.send(b''.join(struct.pack('!II', b, i) + body[i] for i in range(8)))
    if b % 100 == 99: time.sleep(0.025)
print(n * 8)
`;
const USO_SINK = `
import json, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 512 << 20)  # SO_RCVBUFFORCE
s.bind(('0.0.0.0', int(sys.argv[1])))
print('ready', flush=True)
body = [bytes((i + k) & 255 for k in range(8, 1000)) for i in range(8)]
got, bad = {}, 0
s.settimeout(30)
while True:
    try: d = s.recv(4096)
    except socket.timeout: break
    s.settimeout(2)
    b, i = struct.unpack('!II', d[:8])
    if len(d) != 1000 or i > 7 or d[8:] != body[i]: bad += 1
    else: got.setdefault(b, set()).add(i)
print(json.dumps({'received': sum(len(v) for v in got.values()), 'bad': bad,
                  'notPrefix': sum(1 for v in got.values() if v != set(range(len(v))))}), flush=True)
`;
// The TUN readers' queue is measured here: the flow fast path would carry the established flows (and a flood's echo
// requests once answered) past the TUNs. VPNMASQ_FLOW_OFFLOAD unset: the option decides.
const TUN_PATH = "\toption flow_offload '0'\n";

describe.skipIf(skip)('queue discipline: floods that are not TCP (real TUN path)', () => {
  let lab: LabT;
  let vm: RunningRouter;
  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `qd${process.pid % 10000}`, lanHosts: 2 });
    await iperfServer(lab, lab.wan[0]!, 5201);
    await iperfServer(lab, lab.wan[0]!, 5202);
    lab.spawn(lab.wan[0]!, udpAnswerer(7000, 'answer'));
    await waitListening(lab, [[lab.wan[0]!, 'u', 7000]]);
    vm = new RunningRouter(lab, '', TUN_PATH);
    vm.env = { VPNMASQ_READER_QUEUE: '262144,1,100', VPNMASQ_TXQUEUELEN: '', VPNMASQ_FLOW_OFFLOAD: '' };
    await vm.start();
  }, 60_000);
  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  });

  /**
   * Stops the whole daemon for `ms` `times` times while a flood runs, `gapMs` after its start and after each
   * SIGCONT: the ring fills; after each SIGCONT the reader finds a standing queue. One such queue is one ring
   * to drain, about 16 batches of 64, and CoDel decides at most once a batch: a sender this machine runs
   * slower than the reader (a loaded machine) makes no standing queue of its own, so those stalls are all
   * the decisions a flood gets.
   */
  async function stall(pid: number, ms: number, gapMs = 300, times = 2): Promise<void> {
    for (let i = 0; i < times; i++) {
      await sleep(gapMs);
      await stopProcess(pid); // every thread, the data path's too: kill() returns before they stop
      await sleep(ms);
      process.kill(pid, 'SIGCONT');
    }
  }

  const ask = (n: number) => JSON.parse(lab.exec(lab.lan[1]!, ['python3', PEER, 'ask', WANHOST, '7000', String(n)], { timeoutMs: 60_000 }));
  const ping = (n: number) => {
    const r = lab.tryExec(lab.lan[1]!, ['ping', '-n', '-c', String(n), '-i', '0.05', '-W', '1', WANHOST], { timeoutMs: 30_000 });
    return Number(/(\d+) received/.exec(r.stdout)?.[1] ?? 0);
  };
  /** The ring clock's filters on dev's egress (`tc filter show`), or -1 when dev has no clsact qdisc. */
  const ringClockFilters = (dev: string) => {
    const qdiscs = lab.exec(lab.router, ['tc', 'qdisc', 'show', 'dev', dev]);
    if (!/qdisc clsact/.test(qdiscs)) return -1;
    return (lab.exec(lab.router, ['tc', 'filter', 'show', 'dev', dev, 'egress']).match(/vpnmasq_ringclock/g) ?? []).length;
  };
  /**
   * `mb` MB from lan1 to the WAN host over TCP `port`, the daemon stalled twice meanwhile (a standing queue
   * whatever this machine's speed): what the sender sent and what the receiver got ({bytes, sha256} each).
   */
  const transfer = async (port: number, mb: number) => {
    let got = '';
    let sent = '';
    const sink = lab.spawn(lab.wan[0]!, ['python3', '-c', SINK, String(port)]);
    sink.stdout!.on('data', (d) => { got += d; });
    const done = new Promise((r) => sink.once('exit', r));
    await waitListening(lab, [[lab.wan[0]!, 't', port]]);
    const source = lab.spawn(lab.lan[0]!, ['python3', '-c', SOURCE, WANHOST, String(port), String(mb)]);
    source.stdout!.on('data', (d) => { sent += d; });
    const sourceDone = new Promise((r) => source.once('exit', r));
    await stall(vm.status().pid as number, 300, 100);
    await sourceDone;
    await done;
    return { sent: JSON.parse(sent), got: JSON.parse(got) };
  };
  /** The engine's refusals of virtio headers and partial checksums: a cut super-packet must never add to them. */
  const vnetRefused = (x: any) => [x.drops.vnet_bad_gso ?? 0, x.drops.vnet_bad_csum ?? 0];
  const books = (s: any) => {
    const c = s.counters;
    const dropped = Object.values(s.drops as Record<string, number>).reduce((a, b) => a + b, 0);
    return { rx: c.rxInside + c.rxOutside, passedAndDropped: c.passInside + c.passOutside + dropped };
  };

  it('01 status shows the TUN rings and the queue discipline; the devices have that txqueuelen', () => {
    const s = vm.status();
    const { sojournUs, ...rest } = s.tunQueue;
    expect(rest).toEqual({
      txqueuelen: { lan: TUN_TXQUEUELEN, wan: TUN_TXQUEUELEN }, batchBytes: READER_QUEUE.batchBytes, targetUs: 1, intervalUs: 100,
      clock: { lan: { kind: 'stamps' }, wan: { kind: 'stamps' } }, hostQueues: 8, wanHostQueues: 8,
    });
    // CoDel's view per ring: the LAN TUN's 16 (8 host queues, a bulk and a sparse ring each), the WAN TUN's 8
    expect(sojournUs.lan).toHaveLength(16);
    expect(sojournUs.wan).toHaveLength(8);
    for (const r of [...sojournUs.lan, ...sojournUs.wan]) expect(r.max).toBeGreaterThanOrEqual(r.last);
    expect(s.tunQueueDropsByClass).toEqual({ tcp: 0, udp: 0, icmp: 0, frag: 0, other: 0 });
    for (const dev of ['tin', 'tout']) {
      expect(JSON.parse(lab.exec(lab.router, ['ip', '-j', 'link', 'show', 'dev', dev]))[0].txqlen).toBe(TUN_TXQUEUELEN);
      // the ring clock's stamping program sits on each TUN's egress
      expect(ringClockFilters(dev)).toBe(1);
    }
    expect(vm.cli('status').stdout).toMatch(new RegExp(`^tun queue txqueuelen ${TUN_TXQUEUELEN}/${TUN_TXQUEUELEN}, 8 LAN host queues \\(a bulk and a sparse ring each\\), 8 WAN host queues \\(by remote host and protocol\\), CoDel target 1 µs interval 100 µs on ring stamps, batch ${READER_QUEUE.batchBytes} B$`, 'm'));
  });

  it('02 a 64-byte UDP flood from one LAN host is dropped at the head (counted as udp); a second host is answered', async () => {
    const pid = vm.status().pid as number;
    const before = vm.status().tunQueueDropsByClass;
    const marks0 = vm.status().tunQueueMarks;
    // Two floods from one host, into one ring: -S 2, every datagram claiming ECT(0), which buys it marks
    // while CoDel's count is low (at most 16 an episode: tun.test's ECN case), and one that claims nothing and
    // is dropped at every decision, so that the drops do not hang on an episode lasting past 16 decisions
    const floods = [['-S', '2', '-p', '5201'], ['-p', '5202']].map((args) =>
      lab.spawn(lab.lan[0]!, ['iperf3', '-u', '-l', '36', '-b', '0', '-P', '8', '-t', '4', '-c', WANHOST, ...args]));
    const exited = Promise.all(floods.map((f) => new Promise((r) => f.once('exit', r))));
    await stall(pid, 300, 200, 4);
    const during = { answers: ask(5), pings: ping(20) };
    await exited;
    const s = vm.status();
    const by = s.tunQueueDropsByClass;
    expect(by.udp - before.udp).toBeGreaterThan(0);
    expect(s.tunQueueMarks - marks0).toBeGreaterThan(0);
    expect(s.tunQueueDrops).toBe(Object.values(by as Record<string, number>).reduce((a, b) => a + b, 0));
    expect(during.answers).toEqual({ asked: 5, answered: 5 });
    expect(during.pings).toBeGreaterThan(0);
    const b = books(s);
    expect(b.passedAndDropped).toBe(b.rx);
    expect(vm.cli('status').stdout).toMatch(/^ {2}tun_queue +\d+ \(.*udp \d+.*\)$/m);
  }, 60_000);

  it('02b TCP through a CoDel that drops at every chance: super-packets lose only their last segment, and the stream arrives whole', async () => {
    const before = vm.status();
    const { sent, got } = await transfer(7100, 96);
    expect(sent.bytes).toBe(96 << 20);
    expect(got).toEqual(sent);
    const s = vm.status();
    // the 1 µs target dropped at the head, and mostly a last segment rather than a whole super-packet
    expect(s.tunQueueTrims - before.tunQueueTrims).toBeGreaterThan(0);
    expect(s.tunQueueDropsByClass.tcp - before.tunQueueDropsByClass.tcp).toBeGreaterThanOrEqual(s.tunQueueTrims - before.tunQueueTrims);
    expect(vm.cli('status').stdout).toMatch(/^ {2}tun_queue +\d+ \(.*tcp \d+.*; \d+ of them a super-packet's last segment\)$/m);
    // the engine took every cut super-packet as it was: no virtio header or checksum it refused
    expect(vnetRefused(s)).toEqual(vnetRefused(before));
    const b = books(s);
    expect(b.passedAndDropped).toBe(b.rx);
  }, 150_000);

  it('02c ECN: an ECN-capable TCP stream through the same CoDel is marked CE, and arrives whole', async () => {
    const netstat = (ns: string) => {
      const lines = lab.exec(ns, ['cat', '/proc/net/netstat']).split('\n').filter((l) => l.startsWith('IpExt:'));
      const [names, values] = lines.map((l) => l.trim().split(/\s+/));
      return Number(values![names!.indexOf('InCEPkts')]);
    };
    lab.exec(lab.lan[0]!, ['sysctl', '-qw', 'net.ipv4.tcp_ecn=1']);
    try {
      const before = vm.status();
      const ce0 = netstat(lab.wan[0]!);
      const { sent, got } = await transfer(7101, 96);
      expect(got).toEqual(sent);
      const s = vm.status();
      const marks = s.tunQueueMarks - before.tunQueueMarks;
      expect(marks).toBeGreaterThan(0);
      // each mark reached the WAN host as CE (a marked super-packet arrives as many CE segments)
      expect(netstat(lab.wan[0]!) - ce0).toBeGreaterThanOrEqual(marks);
      expect(vm.cli('status').stdout).toMatch(new RegExp(`^ecn: \\d+ packets marked CE by the tun queue instead of dropped$`, 'm'));
    } finally {
      lab.exec(lab.lan[0]!, ['sysctl', '-qw', 'net.ipv4.tcp_ecn=2']);
    }
  }, 150_000);

  it('02d UDP GSO bursts (QUIC\'s way of sending) through the same CoDel lose only their last datagrams, each delivered one intact', async () => {
    const before = vm.status();
    let out = '';
    const sink = lab.spawn(lab.wan[0]!, ['python3', '-c', USO_SINK, '7200']);
    sink.stdout!.on('data', (d) => { out += d; });
    const done = new Promise((r) => sink.once('exit', r));
    while (!out.includes('ready')) await sleep(20);
    // 6000 bursts over about 1.5 s, the daemon stopped twice for 300 ms meanwhile: the ring fills, and CoDel finds a standing queue
    let sentOut = '';
    const source = lab.spawn(lab.lan[0]!, ['python3', '-c', USO_SOURCE, WANHOST, '7200', '6000']);
    source.stdout!.on('data', (d) => { sentOut += d; });
    const sourceDone = new Promise((r) => source.once('exit', r));
    await stall(vm.status().pid as number, 300);
    await sourceDone;
    const sent = Number(sentOut.trim());
    await done;
    const got = JSON.parse(out.trim().split('\n').at(-1)!);
    const s = vm.status();
    // they crossed the router as super-packets, and the 1 µs target cut some
    expect(s.counters.gsoRx - before.counters.gsoRx).toBeGreaterThan(0);
    const trims = s.tunQueueTrims - before.tunQueueTrims;
    expect(trims).toBeGreaterThan(0);
    expect(s.tunQueueDropsByClass.udp - before.tunQueueDropsByClass.udp).toBeGreaterThanOrEqual(trims);
    // every datagram that arrived is its own, whole; a cut burst is missing its tail, never a datagram in the middle
    expect(got.bad).toBe(0);
    expect(got.notPrefix).toBe(0);
    expect(got.received).toBeLessThan(sent);
    expect(got.received).toBeGreaterThan(0);
    expect(vnetRefused(s)).toEqual(vnetRefused(before));
    const b = books(s);
    expect(b.passedAndDropped).toBe(b.rx);
  }, 90_000);

  it('03 attacker: an ESP, GRE, ICMP and fragment flood from one host is dropped at the head under its classes; the other host still talks', async () => {
    const pid = vm.status().pid as number;
    const before = vm.status().tunQueueDropsByClass;
    let out = '';
    const flood = lab.spawn(lab.lan[0]!, ['python3', PEER, 'raw', WANHOST, '4']);
    flood.stdout!.on('data', (d) => { out += d; });
    const exited = new Promise((r) => flood.once('exit', r));
    await stall(pid, 300, 200, 4);
    const during = { answers: ask(5), pings: ping(20) };
    await exited;
    const sent = JSON.parse(out);
    expect(sent.esp).toBeGreaterThan(1000);
    const s = vm.status();
    const by = s.tunQueueDropsByClass;
    // ESP and GRE are "other"; ICMP echo requests "icmp"; blind TCP is "tcp": the half claiming ECT(1) marked
    // while CoDel's count is low, the other half dropped like the rest
    expect(sent.tcp).toBeGreaterThan(1000);
    expect(by.tcp - before.tcp).toBeGreaterThan(0);
    expect(by.other - before.other).toBeGreaterThan(0);
    expect(by.icmp - before.icmp).toBeGreaterThan(0);
    // The router's kernel forwards fragments without reassembling them (no conntrack here): they reach the TUN as fragments.
    expect(by.frag - before.frag).toBeGreaterThan(0);
    expect(during.answers).toEqual({ asked: 5, answered: 5 });
    expect(during.pings).toBeGreaterThan(0);
    const b = books(s);
    expect(b.passedAndDropped).toBe(b.rx);
    // still forwarding after the flood
    expect(ask(3)).toEqual({ asked: 3, answered: 3 });
    expect(ping(5)).toBeGreaterThan(0);
    expect(vm.exitCode).toBe(null);
  }, 60_000);

  it('04 stop removes the TUNs (and their txqueuelen with them)', async () => {
    await vm.stop();
    for (const dev of ['tin', 'tout']) expect(lab.tryExec(lab.router, ['ip', 'link', 'show', 'dev', dev]).ok).toBe(false);
  });

  it('05 TUNs made persistent beforehand (ip tuntap) run with VPNMASQ_TXQUEUELEN (and one LAN ring: no multi_queue) and get their own txqueuelen back at stop', async () => {
    const txqlen = (dev: string) => JSON.parse(lab.exec(lab.router, ['ip', '-j', 'link', 'show', 'dev', dev]))[0].txqlen;
    for (const [dev, len] of [['tin', 321], ['tout', 654]] as const) {
      lab.exec(lab.router, ['ip', 'tuntap', 'add', 'dev', dev, 'mode', 'tun']);
      lab.exec(lab.router, ['ip', 'link', 'set', 'dev', dev, 'txqueuelen', String(len)]);
    }
    const p = new RunningRouter(lab);
    p.env = { VPNMASQ_TXQUEUELEN: '2222', VPNMASQ_READER_QUEUE: '' };
    try {
      await p.start();
      expect(p.status().tunQueue.txqueuelen).toEqual({ lan: 2222, wan: 2222 });
      expect(txqlen('tin')).toBe(2222);
      expect(ask(2)).toEqual({ asked: 2, answered: 2 });
      expect([ringClockFilters('tin'), ringClockFilters('tout')]).toEqual([1, 1]);
      // a device made without multi_queue takes one queue only: one ring, and status says why
      expect(p.status().tunQueue).toMatchObject({ hostQueues: 1, hostQueuesNote: 'tin is a single-queue device' });
      expect(p.cli('status').stdout).toMatch(/, one LAN ring \(host queues: tin is a single-queue device\), CoDel/);
    } finally {
      await p.stop();
    }
    expect(txqlen('tin')).toBe(321);
    expect(txqlen('tout')).toBe(654);
    // the ring clock's filter and the clsact qdisc it added leave with the daemon
    expect([ringClockFilters('tin'), ringClockFilters('tout')]).toEqual([-1, -1]);
    for (const dev of ['tin', 'tout']) lab.exec(lab.router, ['ip', 'tuntap', 'del', 'dev', dev, 'mode', 'tun']);
  }, 60_000);

  it('06 attacker: a VPNMASQ_TXQUEUELEN that is not a length stops the start with one line, leaving no TUN behind', async () => {
    const p = new RunningRouter(lab);
    p.env = { VPNMASQ_TXQUEUELEN: '1e9', VPNMASQ_READER_QUEUE: '' };
    try {
      await expect(p.start()).rejects.toThrow(/VPNMASQ_TXQUEUELEN must be an integer 1\.\.65536/);
    } finally {
      await p.stop();
    }
    for (const dev of ['tin', 'tout']) expect(lab.tryExec(lab.router, ['ip', 'link', 'show', 'dev', dev]).ok).toBe(false);
  }, 60_000);
});
