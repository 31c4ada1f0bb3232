// option flow_offload through the real router in namespaces: `vpnmasq run`
// hands each LAN host's established TCP flow to the kernel's fast path (an
// eBPF program on br-lan's and wan's ingress, src/tun/fastpath.cc), which
// then moves the flow's packets without the TUNs. What a user sees: bulk TCP
// both ways arrives whole, mostly carried by the kernel, and `conntrack -L`
// still counts every packet and byte. What an attacker tries: a blind RST
// from the internet (dropped by the kernel's window check, the connection
// lives on); and when the daemon is killed, the fast path dies with it:
// nothing crosses.
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { lineReader } from '../helpers/peerlines.js';
import { iperfServer } from '../helpers/servers.js';
import { sleep, until } from '../helpers/shell.js';

const PEER = resolve(__dirname, 'flowoffload-peer.py');
const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'iperf3', 'python3', 'socat'] });
const WANHOST = '203.0.113.2';
const WANADDR = '203.0.113.1';
const BULK = 20_000_000;

/** iperf3 client in `ns` for 2 s; the bytes the receiver got. */
function iperf(lab: LabT, ns: string, args: string): number {
  const r = lab.tryExec(ns, ['sh', '-c', `iperf3 -J -t 2 ${args}`], { timeoutMs: 60_000 });
  if (!r.ok && !r.stdout) throw new Error(`iperf3 ${args}: ${r.stderr}`);
  const j = JSON.parse(r.stdout);
  if (j.error) throw new Error(`iperf3 ${args}: ${j.error}`);
  return j.end.sum_received.bytes as number;
}

/** One TCP connection from lan[0] to the WAN host's echo server on `port`: send, and what the server saw. */
async function connection(lab: LabT, port: number) {
  const server = lab.spawn(lab.wan[0]!, ['python3', PEER, 'server', String(port)]);
  const fromServer = lineReader(server);
  await fromServer((l) => l === 'ready', 10_000);
  const client = lab.spawn(lab.lan[0]!, ['python3', PEER, 'client', WANHOST, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const fromClient = lineReader(client);
  await fromClient((l) => l === 'connected', 10_000);
  const hello = JSON.parse(await fromServer((l) => l.includes('"alias"'), 10_000)) as { alias: number; isn: number };
  let echoed = 0;
  let sent = 0;
  let k = 0;
  return {
    ...hello,
    /** Sends n bytes; resolves with true when they came back within 5 s. */
    async send(n: number): Promise<boolean> {
      const mine = k++;
      sent += n;
      client.stdin!.write(`send ${n}\n`);
      const l = JSON.parse(await fromClient((x) => x.startsWith('{') && JSON.parse(x).k === mine, 10_000));
      if (l.error) return false;
      echoed += n;
      return true;
    },
    /** The server's next sequence number (what it echoed so far). */
    serverNext: () => (hello.isn + 1 + echoed) >>> 0,
    sent: () => sent,
    /** Whether the server received `total` bytes within `ms`. */
    serverGot: (total: number, ms: number) => fromServer((l) => l.startsWith('{"got"') && JSON.parse(l).got >= total, ms).then(() => true, () => false),
    close: () => { client.kill(); server.kill(); },
  };
}

describe.skipIf(skip)('option flow_offload: established TCP through the kernel fast path', () => {
  let lab: LabT;
  let vm: RunningRouter;

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `fo${process.pid % 10000}` });
    await iperfServer(lab, lab.wan[0]!, 5201);
    lab.spawn(lab.wan[0]!, ['socat', '-u', 'TCP-LISTEN:9000,fork,reuseaddr', 'OPEN:/dev/null']);
    vm = new RunningRouter(lab, '', "\toption flow_offload '1'\n\toption acct '1'\n");
    // The suites may run with VPNMASQ_FLOW_OFFLOAD set either way; here the option decides (07 reloads it).
    vm.env = { VPNMASQ_FLOW_OFFLOAD: '' };
    await vm.start();
  });
  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  });

  const fp = () => vm.status().flowOffload;

  it('01 status says the fast path is on, and the ready line too', () => {
    expect(fp()).toMatchObject({ enabled: true, flows: 0, capacity: 65536 });
    expect(vm.output).toMatch(/vpnmasq ready.*flowOffload[^a-z]+on/);
  });

  it('02 upload and download (iperf3, 2 streams) arrive whole, nearly all of it carried by the kernel', () => {
    for (const args of [`-c ${WANHOST} -P 2`, `-c ${WANHOST} -P 2 -R`]) {
      const f0 = fp(), c0 = vm.status().counters;
      expect(iperf(lab, lab.lan[0]!, args)).toBeGreaterThan(10_000_000);
      const f1 = fp(), c1 = vm.status().counters;
      // The control connection and the two data streams.
      expect(f1.offloaded - f0.offloaded).toBeGreaterThanOrEqual(3);
      // Received checksums are checked by each end's TCP: bytes delivered mean the kernel's rewrite is right.
      const viaKernel = f1.forwarded - f0.forwarded;
      const viaTuns = c1.rxInside + c1.rxOutside - c0.rxInside - c0.rxOutside;
      expect(viaKernel).toBeGreaterThan(1000);
      expect(viaKernel).toBeGreaterThan(10 * viaTuns);
    }
  });

  it('03 every closed connection is withdrawn from the kernel; conntrack -L counted what the kernel moved', async () => {
    await until(() => fp().flows === 0, 5_000);
    expect(fp().withdrawn).toBe(fp().offloaded);
    const r = lab.tryExec(lab.lan[0]!, ['sh', '-c', `head -c ${BULK} /dev/zero | socat -u - TCP:${WANHOST}:9000,sourceport=6001`], { timeoutMs: 60_000 });
    expect(r.ok, r.stderr).toBe(true);
    await sleep(1_200); // a sync round or two
    const [f] = JSON.parse(vm.cli('conntrack', '-L', '-p', 'tcp', '--sport', '6001', '--json').stdout) as any[];
    expect(f).toBeDefined();
    // Every byte counted, though the engine saw only the handshake and the close.
    expect(f.bytesOut).toBeGreaterThan(BULK);
    expect(f.packetsOut).toBeGreaterThan(100);
  });

  it('04 attacker on the internet: a blind RST far out of the window is dropped by the kernel, the connection lives on', async () => {
    const c = await connection(lab, 5300);
    try {
      expect(await c.send(1000)).toBe(true);
      await until(() => fp().flows >= 1, 5_000);
      const before = fp();
      lab.exec(lab.wan[0]!, ['python3', PEER, 'rst', WANHOST, '5300', WANADDR, String(c.alias), String((c.serverNext() + 0x40000000) >>> 0)]);
      await until(() => fp().outOfWindow > before.outOfWindow, 5_000);
      expect(await c.send(1000)).toBe(true);
      expect(fp().flows).toBe(before.flows);
    } finally {
      c.close();
    }
  });

  it('05 an in-window RST ends it: passed up to the engine, the flow closed and withdrawn', async () => {
    const c = await connection(lab, 5301);
    try {
      expect(await c.send(1000)).toBe(true);
      await until(() => fp().flows >= 1, 5_000);
      const before = fp();
      lab.exec(lab.wan[0]!, ['python3', PEER, 'rst', WANHOST, '5301', WANADDR, String(c.alias), String(c.serverNext())]);
      await until(() => fp().passedFlags > before.passedFlags, 5_000);
      await until(() => fp().flows === before.flows - 1, 5_000);
      expect(await c.send(1000)).toBe(false);
    } finally {
      c.close();
    }
  });

  it('06 a restart keeps the connection (the snapshot), and its next packets hand it to the new run\'s fast path', async () => {
    const c = await connection(lab, 5303);
    try {
      expect(await c.send(1000)).toBe(true);
      await until(() => fp().flows >= 1, 5_000);
      await vm.term();
      await vm.start();
      expect(fp()).toMatchObject({ enabled: true, flows: 0 });
      expect(await c.send(1000)).toBe(true);
      await until(() => fp().flows >= 1, 5_000);
      expect(await c.send(100_000)).toBe(true);
    } finally {
      c.close();
    }
  });

  it('07 a reload with flow_offload \'0\' closes it (every flow back through the TUNs), \'1\' opens it again', async () => {
    const c = await connection(lab, 5304);
    try {
      expect(await c.send(1000)).toBe(true);
      await until(() => fp().flows >= 1, 5_000);
      vm.writeConfig('', "\toption flow_offload '0'\n\toption acct '1'\n");
      expect(vm.cli('reload').ok).toBe(true);
      expect(fp()).toEqual({ enabled: false, note: "off (option flow_offload)" });
      const rx0 = vm.status().counters.rxInside;
      expect(await c.send(100_000)).toBe(true);
      expect(vm.status().counters.rxInside - rx0).toBeGreaterThan(0);
      vm.writeConfig('', "\toption flow_offload '1'\n\toption acct '1'\n");
      expect(vm.cli('reload').ok).toBe(true);
      expect(await c.send(1000)).toBe(true);
      await until(() => fp().enabled && fp().flows >= 1, 5_000);
    } finally {
      c.close();
    }
  });

  it('08 kill -9 of the daemon takes the fast path with it: nothing of an offloaded connection crosses afterwards', async () => {
    const c = await connection(lab, 5302);
    try {
      expect(await c.send(1000)).toBe(true);
      await until(() => fp().flows >= 1, 5_000);
      await vm.kill9();
      void c.send(5000);
      expect(await c.serverGot(6000, 3_000)).toBe(false);
    } finally {
      c.close();
    }
  });
});
