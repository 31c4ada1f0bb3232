// GRO on write on the real path: `vpnmasq run` with offloads and option gro
// between namespaces. Bursts of UDP datagrams (connected sockets: Linux
// numbers their DF datagrams with consecutive IP IDs and hands them to the
// router with NEEDS_CSUM through the veth) reach the TUN several per batch;
// the engine links same-flow ones, the addon writes each group as one UDP
// GSO write, and the router's kernel cuts it back into the datagrams. With
// tx checksumming off on the router's WAN veth (gro-peer.py txcsum) the
// kernel does that cut and finishes the checksums before the veth, so a
// capture in the WAN host sees the datagrams as they leave: original IDs,
// lengths, TTL - 1, checksums right. Attackers: datagrams with a wrong
// complete checksum from a raw socket are not merged and not delivered (the
// capture shows the bad checksum kept); NEEDS_CSUM frames with chosen TTL,
// TOS and IDs are split exactly where the rules say; a spoofed source
// interleaved with a host's flow, IDs continuing it, is never merged into it.
import { resolve } from 'node:path';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { lineReader } from '../helpers/peerlines.js';
import { ipCsumOk, l4CsumOk, parse } from '../helpers/packet.js';
import { stopProcess } from '../helpers/shell.js';

const PEER = resolve(__dirname, 'gro-peer.py');
const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'python3', 'tcpdump'] });
const WANHOST = '203.0.113.2';
const WANADDR = '203.0.113.1';

interface FlowGot { n: number; tags: number[]; inOrder: boolean; complete: boolean; intact: boolean; sizes: number[] }
interface Got { total: number; flows: Record<string, FlowGot> }

/** A UDP listener (gro-peer.py listen) in `ns`; resolves to what it got once it stops (n datagrams or timeout). */
async function listener(lab: LabT, ns: string, port: number, n: number, timeoutS: number, opener?: [string, number]): Promise<{ done: Promise<Got> }> {
  const p = lab.spawn(ns, ['python3', PEER, 'listen', String(port), String(n), String(timeoutS), ...(opener ? [opener[0], String(opener[1])] : [])]);
  let out = '';
  p.stdout!.on('data', (d) => { out += d; });
  await lineReader(p)((l) => l === 'ready', 10_000);
  const done = new Promise<Got>((res, rej) => p.on('exit', () => {
    const line = out.split('\n').find((l) => l.startsWith('{'));
    if (line) res(JSON.parse(line)); else rej(new Error(`listener on ${port}: no result (${out})`));
  }));
  return { done };
}

/** tcpdump in `ns` on eth0 into a pcap file; stop() ends it (SIGINT: the file is flushed) and returns the IP packets. */
async function capture(lab: LabT, ns: string, filter: string): Promise<{ stop: () => Promise<Uint8Array[]> }> {
  const dir = mkdtempSync(join(tmpdir(), 'gro-pcap-'));
  const file = join(dir, 'c.pcap');
  const p: ChildProcess = lab.spawn(ns, ['tcpdump', '-i', 'eth0', '-n', '-U', '--immediate-mode', '-B', '16384', '-s', '512', '-w', file, filter]);
  let err = '';
  p.stderr!.on('data', (d) => { err += d; });
  for (let t = 0; t < 100 && !err.includes('listening on'); t++) await new Promise((r) => setTimeout(r, 50));
  return {
    stop: async () => {
      await new Promise((r) => setTimeout(r, 300));
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGINT');
      await exited;
      const pkts = readPcap(readFileSync(file));
      if (process.env.GRO_DEBUG) console.log(err, pkts.map((q) => `${parse(q).sport}:${new DataView(q.buffer).getUint32(29)}`).join(' '));
      rmSync(dir, { recursive: true, force: true });
      return pkts;
    },
  };
}

/** The IPv4 packets of a pcap file (Ethernet link type). */
function readPcap(b: Buffer): Uint8Array[] {
  const le = b.readUInt32LE(0) === 0xa1b2c3d4 || b.readUInt32LE(0) === 0xa1b23c4d;
  const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  expect(u32(20)).toBe(1); // LINKTYPE_ETHERNET
  const out: Uint8Array[] = [];
  for (let o = 24; o + 16 <= b.length;) {
    const incl = u32(o + 8);
    const frame = b.subarray(o + 16, o + 16 + incl);
    if (frame.length > 14 && frame.readUInt16BE(12) === 0x0800) out.push(Uint8Array.from(frame.subarray(14)));
    o += 16 + incl;
  }
  return out;
}

// GRO on the TUN writes is tested here: the flow fast path would carry a UDP flow past the TUNs after its 8th datagram
// (and reorder the hand-over: 04 saw IDs 1023-1025 on the wire before 1010-1022). VPNMASQ_FLOW_OFFLOAD unset: the option decides.
const TUN_PATH = "\toption flow_offload '0'\n";
const ids = (ps: Uint8Array[]) => ps.map((p) => parse(p).id);
const consecutive = (xs: number[]) => xs.every((x, i) => i === 0 || x === ((xs[i - 1]! + 1) & 0xffff));

describe.skipIf(skip)('GRO on write through the router (real TUN path)', () => {
  let lab: LabT;
  let vm: RunningRouter;
  let routerMac: string;
  const counters = () => vm.status().counters as Record<string, number>;
  /**
   * Runs `send` with the router stopped (SIGSTOP), so that everything sent
   * queues in the TUN and the router then reads it in full batches: what can
   * merge does, whatever the machine's timing (a router that keeps up with
   * one sender reads one datagram per batch and has nothing to merge).
   */
  async function frozen(send: () => Promise<unknown> | void): Promise<void> {
    const pid = vm.status().pid as number;
    await stopProcess(pid); // every thread, the data path's too: kill() returns before they stop
    try { await send(); } finally { process.kill(pid, 'SIGCONT'); }
  }

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `gr${process.pid % 10000}` });
    vm = new RunningRouter(lab, '', TUN_PATH);
    // No CoDel in the reader: the bursts below wait in the ring while the router is frozen, so
    // CoDel is right to thin them at the head once the thaw takes longer than its interval to
    // drain them (a loaded machine: one of 800 datagrams lost once in CI). GRO is what is tested
    // here; the reader queue has test/netns/queue.test.ts.
    vm.env = { VPNMASQ_OFFLOAD: '1', VPNMASQ_GRO: '1', VPNMASQ_READER_QUEUE: '262144,0,0', VPNMASQ_FLOW_OFFLOAD: '' };
    await vm.start();
    // The kernel segments (and checksums) before the router's WAN veth: the WAN host's capture sees the datagrams.
    lab.exec(lab.router, ['python3', PEER, 'txcsum', 'wan', '0']);
    routerMac = JSON.parse(lab.exec(lab.router, ['ip', '-j', 'link', 'show', 'br-lan']))[0].address;
  });
  afterAll(async () => { await vm?.stop(); lab?.destroy(); });

  it('01 status: offloads with USO, gro on', () => {
    const s = vm.status().offload;
    expect(s.enabled).toBe(true);
    expect(s.uso).toBe(true);
    expect(s.gro).toBe(true);
  });

  it('02 LAN → WAN: two hosts\' bursts arrive complete, in order, intact; merged on the way; on the wire the original IDs, lengths, TTL - 1, checksums right', async () => {
    const c0 = counters();
    const BURSTS = 10, PER = 40, SIZE = 100;
    const l = await listener(lab, lab.wan[0]!, 7000, 2 * BURSTS * PER, 20);
    const cap = await capture(lab, lab.wan[0]!, 'udp and dst port 7000');
    await frozen(async () => {
      const senders = [lab.lan[0]!, lab.lan[1]!].map((ns, i) =>
        lab.spawn(ns, ['python3', PEER, 'send', WANHOST, '7000', '41000', String(i + 1), String(BURSTS), String(PER), String(SIZE)]));
      await Promise.all(senders.map((p) => new Promise((r) => p.on('exit', r))));
    });
    const got = await l.done;
    const pkts = await cap.stop();
    const why = () => JSON.stringify({ got, drops: vm.status().drops, tunWriteDrops: vm.status().tunWriteDrops, tunQueueDrops: vm.status().tunQueueDrops,
      wan: lab.exec(lab.wan[0]!, ['sh', '-c', 'nstat -az 2>/dev/null | grep -E "UdpRcvbufErrors|UdpInErrors|UdpInCsumErrors|IpInDiscards"'])  });
    expect(got.total, why()).toBe(2 * BURSTS * PER);
    const flows = Object.values(got.flows);
    expect(flows.length).toBe(2);
    for (const f of flows) {
      expect(f).toMatchObject({ n: BURSTS * PER, inOrder: true, complete: true, intact: true, sizes: [SIZE] });
      expect(f.tags.length).toBe(1);
    }
    const c1 = counters();
    expect(c1.groGroups - c0.groGroups).toBeGreaterThan(0);
    expect(c1.groDatagrams - c0.groDatagrams).toBeGreaterThan(c1.groGroups - c0.groGroups);
    // The wire: every datagram on its own, as its sender numbered it: its ID the sender's first plus its
    // sequence number from the payload (the capture's ring holds the burst: small snaplen, 16 MiB buffer).
    expect(pkts.length).toBe(2 * BURSTS * PER);
    const bySport = new Map<number, Uint8Array[]>();
    for (const p of pkts) {
      const x = parse(p);
      expect(p.length).toBe(28 + SIZE);
      expect([x.src, x.dst, x.ttl, x.proto]).toEqual([WANADDR, WANHOST, 63, 17]);
      expect(ipCsumOk(p)).toBe(true);
      expect(l4CsumOk(p)).toBe(true);
      if (!bySport.has(x.sport)) bySport.set(x.sport, []);
      bySport.get(x.sport)!.push(p);
    }
    expect(bySport.size).toBe(2);
    for (const ps of bySport.values()) {
      const seq = (p: Uint8Array) => new DataView(p.buffer, p.byteOffset).getUint32(29);
      const base = (parse(ps[0]!).id - seq(ps[0]!)) & 0xffff;
      for (const p of ps) expect((parse(p).id - seq(p)) & 0xffff).toBe(base);
      expect(ps.map(seq)).toEqual(ps.map((_, k) => k));
      expect(consecutive(ids(ps))).toBe(true);
    }
  });

  it('03 WAN → LAN: a server\'s bursts to a LAN host arrive complete, in order, intact, and were merged', async () => {
    const opened = await listener(lab, lab.wan[0]!, 7001, 1, 5);
    const BURSTS = 8, PER = 40, SIZE = 200;
    const l = await listener(lab, lab.lan[0]!, 42000, BURSTS * PER, 20, [WANHOST, 7001]);
    const o = await opened.done;
    const mapped = Number(Object.keys(o.flows)[0]!.split(':')[1]);
    const c0 = counters();
    await frozen(() => { lab.exec(lab.wan[0]!, ['python3', PEER, 'send', WANADDR, String(mapped), '7001', '9', String(BURSTS), String(PER), String(SIZE)], { timeoutMs: 30_000 }); });
    const got = await l.done;
    expect(got.total).toBe(BURSTS * PER);
    expect(got.flows[`${WANHOST}:7001`]).toMatchObject({ n: BURSTS * PER, inOrder: true, complete: true, intact: true, sizes: [SIZE], tags: [9] });
    const c1 = counters();
    expect(c1.groGroups - c0.groGroups).toBeGreaterThan(0);
  });

  it('04 attacker: datagrams with a wrong complete checksum (raw socket) are never merged nor delivered; the wire keeps the bad checksum', async () => {
    const c0 = counters();
    const l = await listener(lab, lab.wan[0]!, 7002, 1, 3);
    const cap = await capture(lab, lab.wan[0]!, 'udp and dst port 7002');
    lab.exec(lab.lan[0]!, ['python3', PEER, 'rawbad', '192.168.1.10', WANHOST, '43000', '7002', '40', '36', '1000']);
    const got = await l.done;
    const pkts = await cap.stop();
    expect(got.total).toBe(0);
    const c1 = counters();
    expect(c1.groGroups - c0.groGroups).toBe(0);
    expect(c1.groDatagrams - c0.groDatagrams).toBe(0);
    expect(pkts.length).toBeGreaterThan(0);
    for (const p of pkts) {
      expect(p.length).toBe(28 + 36);
      expect(ipCsumOk(p)).toBe(true);
      expect(l4CsumOk(p)).toBe(false);
    }
    expect(consecutive(ids(pkts))).toBe(true);
  });

  it('05 attacker: NEEDS_CSUM frames with varying TTL, TOS and IDs leave exactly as sent (TTL - 1), split where the rules say', async () => {
    const H = '192.168.1.11';
    // [src, id, ttl, tos, size, tag]: runs that may merge, broken by a TTL, a TOS, an ID gap, a longer datagram.
    const spec: [string, number, number, number, number, number][] = [
      [H, 500, 64, 0, 80, 5], [H, 501, 64, 0, 80, 5], [H, 502, 64, 0, 80, 5],
      [H, 503, 30, 0, 80, 5], [H, 504, 30, 0, 80, 5],
      [H, 505, 30, 0x10, 80, 5], [H, 506, 30, 0x10, 80, 5],
      [H, 600, 30, 0x10, 80, 5], [H, 601, 30, 0x10, 60, 5], [H, 602, 30, 0x10, 80, 5],
      [H, 603, 64, 0, 80, 5], [H, 604, 64, 0, 80, 5],
    ];
    const l = await listener(lab, lab.wan[0]!, 7003, spec.length, 10);
    const cap = await capture(lab, lab.wan[0]!, 'udp and dst port 7003');
    const c0 = counters();
    await frozen(() => { lab.exec(lab.lan[1]!, ['python3', PEER, 'pktsend', 'eth0', routerMac, WANHOST, '44000', '7003', JSON.stringify(spec)]); });
    const got = await l.done;
    const pkts = await cap.stop();
    expect(got.total).toBe(spec.length);
    expect(Object.values(got.flows)[0]).toMatchObject({ n: spec.length, inOrder: true, complete: true, intact: true });
    expect(pkts.map((p) => { const x = parse(p); return [x.id, x.ttl, p[1], p.length - 28]; }))
      .toEqual(spec.map(([, id, ttl, tos, size]) => [id, ttl - 1, tos, size]));
    for (const p of pkts) { expect(ipCsumOk(p)).toBe(true); expect(l4CsumOk(p)).toBe(true); }
    // One batch: groups 500-502, 503-504 (TTL), 505-506 (TOS), 600-601 (ID gap; a shorter last), 602 alone
    // (nothing after a shorter one), 603-604 (TTL and TOS back): five writes of 11 datagrams.
    const c1 = counters();
    expect(c1.groGroups - c0.groGroups).toBe(5);
    expect(c1.groDatagrams - c0.groDatagrams).toBe(11);
  });

  it('06 attacker: a spoofed source interleaved with a host\'s flow, IDs continuing it, is never merged into it', async () => {
    const H = '192.168.1.11', SPOOF = '192.168.1.99';
    const spec: [string, number, number, number, number, number][] = [];
    // Same ports, same server; the IDs run on across both sources, so only merging across them would make a group.
    for (let k = 0; k < 32; k++) spec.push([k % 2 ? SPOOF : H, 2000 + k, 64, 0, 100, k % 2 ? 7 : 6]);
    const l = await listener(lab, lab.wan[0]!, 7004, spec.length, 10);
    const c0 = counters();
    await frozen(() => { lab.exec(lab.lan[1]!, ['python3', PEER, 'pktsend', 'eth0', routerMac, WANHOST, '45000', '7004', JSON.stringify(spec)]); });
    const got = await l.done;
    expect(got.total).toBe(32);
    const flows = Object.values(got.flows);
    expect(flows.length).toBe(2);
    for (const f of flows) expect(f).toMatchObject({ n: 16, inOrder: true, complete: true, intact: true });
    expect(flows.map((f) => f.tags).sort()).toEqual([[6], [7]]);
    const c1 = counters();
    expect(c1.groDatagrams - c0.groDatagrams).toBe(0);
    // The same frames from one source (IDs consecutive): one batch, one write (the control for the line above).
    const one = spec.map(([, id, ttl, tos, size]) => [H, id, ttl, tos, size, 6]);
    const l2 = await listener(lab, lab.wan[0]!, 7005, one.length, 10);
    await frozen(() => { lab.exec(lab.lan[1]!, ['python3', PEER, 'pktsend', 'eth0', routerMac, WANHOST, '45001', '7005', JSON.stringify(one)]); });
    expect((await l2.done).total).toBe(32);
    const c2 = counters();
    expect([c2.groGroups - c1.groGroups, c2.groDatagrams - c1.groDatagrams]).toEqual([1, 32]);
  });

  it('07 no write was refused for its shape and no virtio-header drop', () => {
    const d = vm.status().drops as Record<string, number>;
    expect(d.vnet_bad_gso ?? 0).toBe(0);
    expect(d.vnet_bad_csum ?? 0).toBe(0);
  });
});

describe.skipIf(skip)("option gro '0'", () => {
  let lab: LabT;
  let vm: RunningRouter;
  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `gs${process.pid % 10000}` });
    vm = new RunningRouter(lab, '', `\toption gro '0'\n${TUN_PATH}`);
    vm.env = { VPNMASQ_OFFLOAD: '1', VPNMASQ_GRO: '', VPNMASQ_FLOW_OFFLOAD: '' };
    await vm.start();
  });
  afterAll(async () => { await vm?.stop(); lab?.destroy(); });

  it('08 the same bursts pass one write each: status says gro off, nothing merged', async () => {
    expect(vm.status().offload.gro).toBe(false);
    const l = await listener(lab, lab.wan[0]!, 7000, 200, 15);
    lab.exec(lab.lan[0]!, ['python3', PEER, 'send', WANHOST, '7000', '41000', '1', '5', '40', '100'], { timeoutMs: 30_000 });
    const got = await l.done;
    expect(got.total).toBe(200);
    expect(Object.values(got.flows)[0]).toMatchObject({ n: 200, inOrder: true, complete: true, intact: true });
    const c = vm.status().counters as Record<string, number>;
    expect(c.groGroups).toBe(0);
    expect(c.groDatagrams).toBe(0);
  });
});
