// TUN offloads on the real path: `vpnmasq run` opens its TUNs with
// IFF_VNET_HDR and TUNSETOFFLOAD, and bulk TCP through it (iperf3, both
// directions, and through a port forward) arrives as GSO super-packets that
// the engine translates whole. The receiving TCP stacks check every segment's
// checksum, so bytes delivered mean checksums right; the super-packet counter
// says the fast path was taken. With `option offload '0'` the same traffic
// passes one packet per read and no super-packet is seen.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'iperf3'] });
const WANHOST = '203.0.113.2';

/** iperf3 client in `ns` for 2 s; returns the bytes the receiver got. */
function iperf(lab: LabT, ns: string, args: string): number {
  const r = lab.tryExec(ns, ['sh', '-c', `iperf3 -J -t 2 ${args}`], { timeoutMs: 60_000 });
  if (!r.ok && !r.stdout) throw new Error(`iperf3 ${args}: ${r.stderr}`);
  const j = JSON.parse(r.stdout);
  if (j.error) throw new Error(`iperf3 ${args}: ${j.error}`);
  return j.end.sum_received.bytes as number;
}

async function serve(lab: LabT, ns: string, port: number): Promise<void> {
  lab.spawn(ns, ['iperf3', '-s', '-p', String(port)]);
  for (let i = 0; i < 50; i++) {
    if (lab.tryExec(ns, ['sh', '-c', `ss -ltn | grep -q ':${port} '`]).ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`iperf3 server on ${port} did not start`);
}

describe.skipIf(skip)('TUN offloads through the router (real TUN path)', () => {
  let lab: LabT;

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `of${process.pid % 10000}` });
    await serve(lab, lab.wan[0]!, 5201);
    await serve(lab, lab.lan[0]!, 5202);
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
`);
      // The suite may be run with VPNMASQ_OFFLOAD=0 to check the old path; this block is about the new one.
      vm.env = { VPNMASQ_OFFLOAD: '1' };
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

    it('05 no packet was refused for its virtio header', () => {
      const d = vm.status().drops;
      expect(d.vnet_bad_gso ?? 0).toBe(0);
      expect(d.vnet_bad_csum ?? 0).toBe(0);
    });
  });

  describe("option offload '0'", () => {
    let vm: RunningRouter;
    beforeAll(async () => {
      vm = new RunningRouter(lab, '', "\toption offload '0'");
      vm.env = { VPNMASQ_OFFLOAD: '' };
      await vm.start();
    });
    afterAll(async () => { await vm?.stop(); });

    it('06 one packet per read: status says off, TCP passes, no super-packet seen', () => {
      const s = vm.status();
      expect(s.offload.enabled).toBe(false);
      expect(s.offload.slots).toBe('256 × 2048 B');
      expect(iperf(lab, lab.lan[0]!, `-c ${WANHOST} -p 5201`)).toBeGreaterThan(100_000);
      expect(vm.status().counters.gsoRx).toBe(0);
    });
  });
});
