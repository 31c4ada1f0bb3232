// TUN offloads on the real path: `vpnmasq run` opens its TUNs with
// IFF_VNET_HDR and TUNSETOFFLOAD, and bulk TCP through it (iperf3, both
// directions, and through a port forward) arrives as GSO super-packets that
// the engine translates whole. The receiving TCP stacks check every segment's
// checksum, so bytes delivered mean checksums right; the super-packet counter
// says the fast path was taken. IKE sent with UDP_SEGMENT (uso-peer.py)
// reaches the TUN as one UDP super-packet per sendto(), which the engine cuts
// into its datagrams, each routed by its own cookies. With `option offload
// '0'` the same traffic passes one packet per read and no super-packet is seen.
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { lineReader } from '../helpers/peerlines.js';
import { iperfReceived as iperf, iperfServer } from '../helpers/servers.js';

const PEER = resolve(__dirname, 'uso-peer.py');

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'iperf3', 'python3'] });
const WANHOST = '203.0.113.2';

interface Got { from: string; port: number; cookie: string; len: number }

/**
 * UDP listeners on port 500 in `nss`, each until `n` datagrams in total came
 * (or 10 s), started before `send` runs; the datagrams each one got.
 */
async function collect(lab: LabT, nss: string[], n: number, send: () => void): Promise<Got[][]> {
  const peers = nss.map((ns) => lab.spawn(ns, ['python3', PEER, 'listen', '500', String(n), '10']));
  const got = peers.map((p) => {
    const g: Got[] = [];
    let buf = '';
    p.stdout!.on('data', (d) => {
      buf += d;
      for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) if (buf.startsWith('{')) g.push(JSON.parse(buf.slice(0, i)));
    });
    return g;
  });
  await Promise.all(peers.map((p) => lineReader(p)((l) => l === 'ready', 10_000)));
  send();
  for (let t = 0; t < 100 && got.reduce((a, g) => a + g.length, 0) < n; t++) await new Promise((r) => setTimeout(r, 100));
  for (const p of peers) p.kill();
  return got;
}

/** One sendto() with UDP_SEGMENT from port 500 in `ns`: ISAKMP messages of `size` bytes, one per cookie. */
function usoSend(lab: LabT, ns: string, host: string, size: number, cookies: string[]): void {
  lab.exec(ns, ['python3', PEER, 'send', host, '500', String(size), ...cookies]);
}

// The TUN's own offload counters are measured here: the flow fast path would carry the established flows past the TUNs.
const TUN_PATH = "\toption flow_offload '0'\n";

describe.skipIf(skip)('TUN offloads through the router (real TUN path)', () => {
  let lab: LabT;

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `of${process.pid % 10000}` });
    await iperfServer(lab, lab.wan[0]!, 5201);
    await iperfServer(lab, lab.lan[0]!, 5202);
  });
  afterAll(() => lab?.destroy());

  describe('offload on (the default)', () => {
    let vm: RunningRouter;
    beforeAll(async () => {
      vm = new RunningRouter(lab, `
config redirect
	option proto 'tcp'
	option src_dport '5202'
	option dest_ip '192.168.1.10'
	option dest_port '5202'
`, TUN_PATH);
      // The suite may be run with VPNMASQ_OFFLOAD=0 to check the old path; this block is about the new one.
      // VPNMASQ_FLOW_OFFLOAD unset: the option above decides.
      vm.env = { VPNMASQ_OFFLOAD: '1', VPNMASQ_FLOW_OFFLOAD: '' };
      await vm.start();
    });
    afterAll(async () => { await vm?.stop(); });

    it('01 status says which offloads the kernel took', () => {
      const s = vm.status().offload;
      expect(s.enabled).toBe(true);
      expect(s.offloads).toEqual(expect.arrayContaining(['csum', 'tso4', 'tso6']));
      expect(s.slots).toBe('64 × 65600 B');
    });

    it('02 TCP LAN → WAN (upload, 2 streams) arrives whole and was carried as super-packets', () => {
      const before = vm.status().counters.gsoRx;
      expect(iperf(lab, lab.lan[0]!, `-c ${WANHOST} -p 5201 -P 2`)).toBeGreaterThan(1_000_000);
      const c = vm.status().counters;
      expect(c.gsoRx - before).toBeGreaterThan(0);
      expect(c.gsoBytes / c.gsoRx).toBeGreaterThan(1500);
    });

    it('03 TCP WAN → LAN (download, -R) too', () => {
      const before = vm.status().counters.gsoRx;
      expect(iperf(lab, lab.lan[1]!, `-c ${WANHOST} -p 5201 -R`)).toBeGreaterThan(1_000_000);
      expect(vm.status().counters.gsoRx - before).toBeGreaterThan(0);
    });

    it('04 TCP through a port forward (WAN host → WAN address:5202 → 192.168.1.10)', () => {
      const before = vm.status().counters.gsoRx;
      expect(iperf(lab, lab.wan[0]!, `-c 203.0.113.1 -p 5202`)).toBeGreaterThan(1_000_000);
      expect(vm.status().counters.gsoRx - before).toBeGreaterThan(0);
    });

    it('05 IKE sent with UDP_SEGMENT both ways: the router cuts each super-packet into its datagrams, and each reaches the host its cookie names', async () => {
      const c0 = vm.status().counters;
      const A = ['a1', 'a2', 'a3'].map((c) => c.repeat(8)), B = ['b1', 'b2', 'b3'].map((c) => c.repeat(8));
      // LAN → WAN: two hosts, three exchanges each, one sendto() apiece.
      const [atWan] = await collect(lab, [lab.wan[0]!], 6, () => {
        usoSend(lab, lab.lan[0]!, WANHOST, 300, A);
        usoSend(lab, lab.lan[1]!, WANHOST, 300, B);
      });
      expect(atWan!.map((d) => `${d.from}:${d.port}:${d.len}`)).toEqual(Array(6).fill('203.0.113.1:500:300'));
      expect(atWan!.map((d) => d.cookie).sort()).toEqual([...A, ...B]);
      const c1 = vm.status().counters;
      expect(c1.usoSplit - c0.usoSplit).toBe(2);
      expect(c1.usoDatagrams - c0.usoDatagrams).toBe(6);
      // WAN → LAN: one super-packet answering both hosts' exchanges, interleaved.
      const R = 'ee'.repeat(8);
      const [at0, at1] = await collect(lab, [lab.lan[0]!, lab.lan[1]!], 4, () => {
        usoSend(lab, lab.wan[0]!, '203.0.113.1', 200, [`${A[0]}:${R}`, `${B[0]}:${R}`, `${A[1]}:${R}`, `${B[1]}:${R}`]);
      });
      expect(at0!.map((d) => d.cookie)).toEqual([A[0], A[1]]);
      expect(at1!.map((d) => d.cookie)).toEqual([B[0], B[1]]);
      for (const d of [...at0!, ...at1!]) expect(`${d.from}:${d.port}:${d.len}`).toBe(`${WANHOST}:500:200`);
      const c2 = vm.status().counters;
      expect(c2.usoSplit - c1.usoSplit).toBe(1);
      expect(c2.usoDatagrams - c1.usoDatagrams).toBe(4);
    });

    it('06 no packet was refused for its virtio header', () => {
      const d = vm.status().drops;
      expect(d.vnet_bad_gso ?? 0).toBe(0);
      expect(d.vnet_bad_csum ?? 0).toBe(0);
      expect(d.vnet_gso_ike ?? 0).toBe(0);
    });
  });

  describe("option offload '0'", () => {
    let vm: RunningRouter;
    beforeAll(async () => {
      vm = new RunningRouter(lab, '', `\toption offload '0'\n${TUN_PATH}`);
      vm.env = { VPNMASQ_OFFLOAD: '', VPNMASQ_FLOW_OFFLOAD: '' };
      await vm.start();
    });
    afterAll(async () => { await vm?.stop(); });

    it('07 one packet per read: status says off, TCP passes, no super-packet seen', () => {
      const s = vm.status();
      expect(s.offload.enabled).toBe(false);
      expect(s.offload.slots).toBe('256 × 2048 B');
      expect(iperf(lab, lab.lan[0]!, `-c ${WANHOST} -p 5201`)).toBeGreaterThan(100_000);
      expect(vm.status().counters.gsoRx).toBe(0);
    });
  });
});
