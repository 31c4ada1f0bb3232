// Restart keeps VPN state (issue 9): two LAN hosts each run raw ESP (scapy
// SAs), an IKE exchange from port 500 and a PPTP call (same Call ID on both
// hosts) with one server; vpnmasq is killed with -9 and started again with
// the same config; then the SERVER speaks first on each: ESP on each SA,
// IKE informationals by cookie, GRE on each call. None of these can be
// rebuilt from the packet itself (an unknown inbound SPI, a cookie, a Call
// ID alias), so each reaches the right host only if the state was restored.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { ESP_TOOLS, espClient, newEspSa, skipUnlessScapy, startEspServer, type EspClientResult, type EspServer } from './peers/esp.js';
import { PEERS_DIR, PPTP_TOOLS, PYTHON, pnsCall, startPptpd, type PnsCallResult, type PptpServer } from './peers/pptp.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', ...ESP_TOOLS, ...PPTP_TOOLS] }) || skipUnlessScapy();
const IKEPUSH = join(PEERS_DIR, 'ikepush.py');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface IkeResult { icookie: string; rcookie: string | null; answered: boolean; pushes: number; push_sources: string[]; foreign: string[] }

function runJson<T>(lab: LabT, ns: string, argv: string[], guardMs: number): { proc: ChildProcess; result: Promise<T> } {
  const proc = lab.spawn(ns, argv);
  let out = '';
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { out += d; });
  const guard = setTimeout(() => proc.kill('SIGKILL'), guardMs);
  const result = new Promise<T>((resolve, reject) => proc.once('exit', () => {
    clearTimeout(guard);
    const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
    if (line) resolve(JSON.parse(line) as T); else reject(new Error(`${argv.join(' ')} in ${ns}: ${out}`));
  }));
  return { proc, result };
}

describe.skipIf(skip)('restart keeps VPN state: the server speaks first after kill -9 and restart', () => {
  let lab: LabT;
  let vm: RunningRouter;
  let esp: EspServer;
  let pptpd: PptpServer;
  let ikeServer: ChildProcess;
  let SERVER = '';
  const sas = [newEspSa(), newEspSa()];
  const cookies = ['a1a2a3a4a5a6a7a8', 'b1b2b3b4b5b6b7b8'];
  let espRuns: Promise<EspClientResult>[] = [];
  let ikeRuns: Promise<IkeResult>[] = [];
  let pptpRuns: Promise<PnsCallResult>[] = [];
  let restored: any = null;
  const LINGER = 40_000;

  const conntrack = () => JSON.parse(vm.cli('conntrack', '--json').stdout) as any[];

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `rv${process.pid % 10000}`, lanHosts: 2, wanHosts: 1 });
    SERVER = lab.addr.wan[0]!;
    vm = new RunningRouter(lab);
    await vm.start();
    esp = await startEspServer(lab, lab.wan[0]!, sas);
    pptpd = await startPptpd(lab, lab.wan[0]!);
    ikeServer = lab.spawn(lab.wan[0]!, [PYTHON, IKEPUSH, 'server']);
    let ikeOut = '';
    ikeServer.stdout!.on('data', (d) => { ikeOut += d; });
    for (let i = 0; i < 100 && !ikeOut.includes('ready'); i++) await sleep(50);

    // Both hosts: ESP, IKE and a PPTP call (both with Call ID 0x1234), lingering for the pushes.
    espRuns = [0, 1].map((i) => espClient(lab, lab.lan[i]!, SERVER, sas[i]!, { tag: `h${i}`, want: 3, timeoutMs: LINGER + 10_000, lingerMs: LINGER, pushes: 3 }));
    ikeRuns = [0, 1].map((i) => runJson<IkeResult>(lab, lab.lan[i]!, [PYTHON, IKEPUSH, 'client', '--server', SERVER, '--cookie', cookies[i]!,
      '--linger-ms', String(LINGER), '--pushes', '3'], LINGER + 30_000).result);
    pptpRuns = [0, 1].map((i) => pnsCall(lab, lab.lan[i]!, SERVER, { tag: `p${i}`, callId: 0x1234, frames: 3, lingerMs: LINGER, pushes: 3, noClear: true }));

    // Everything established through the router?
    for (let i = 0; i < 200; i++) {
      const ct = conntrack();
      const ok = ct.filter((f) => f.proto === 'esp' && f.spiIn).length === 2 &&
        ct.filter((f) => f.state === 'IKE' && f.rcookie).length === 2 &&
        ct.filter((f) => f.proto === 'gre' && f.callIdRemote !== null).length === 2;
      if (ok) break;
      if (i === 199) throw new Error(`VPN sessions not established: ${JSON.stringify(ct, null, 1)}\n${vm.output.slice(-3000)}`);
      await sleep(100);
    }
    const t = Date.now();
    for (let i = 0; i < 50; i++) {
      const w = vm.status().snapshot?.lastWrite;
      if (w && Date.parse(w.at) > t) break;
      await sleep(100);
    }
    await vm.kill9();
    await vm.start();
    restored = vm.status().snapshot.restored;
    // The server speaks first, on every session.
    esp.push();
    ikeServer.kill('SIGUSR1');
    for (const line of pptpd.log().split('\n')) {
      const m = /^\S+ (\d+) start args=/.exec(line);
      if (m) { try { process.kill(Number(m[1]), 'SIGUSR1'); } catch { /* call gone */ } }
    }
  }, 120_000);

  afterAll(async () => {
    ikeServer?.kill('SIGTERM');
    await esp?.stop().catch(() => undefined);
    await pptpd?.stop();
    await vm?.stop();
    lab?.destroy();
  }, 30_000);

  it('00 the new process restored the ESP, IKE and PPTP entries', () => {
    expect(restored, vm.output.slice(-3000)).not.toBeNull();
    expect(restored.entries.esp).toBe(2);
    expect(restored.entries.ike).toBe(2);
    expect(restored.entries.calls).toBe(2);
  });

  it('01 ESP the server sends first reaches each host under its own SA', async () => {
    const rs = await Promise.all(espRuns);
    for (const r of rs) {
      expect(r.replies.length, JSON.stringify(r)).toBeGreaterThanOrEqual(3);
      expect(r.pushes, JSON.stringify(r) + vm.output.slice(-2000)).toBeGreaterThanOrEqual(1);
      expect(r.foreign_spi, JSON.stringify(r)).toEqual({});
      expect(r.bad + r.not_ours, JSON.stringify(r)).toBe(0);
    }
  });

  it('02 IKE informationals the server sends first are routed by cookie to the right host, from port 500', async () => {
    const rs = await Promise.all(ikeRuns);
    rs.forEach((r, i) => {
      expect(r.icookie).toBe(cookies[i]);
      expect(r.answered, JSON.stringify(r)).toBe(true);
      expect(r.pushes, JSON.stringify(r) + vm.output.slice(-2000)).toBeGreaterThanOrEqual(1);
      expect(r.push_sources, JSON.stringify(r)).toEqual([`${SERVER}:500`]);
      expect(r.foreign, JSON.stringify(r)).toEqual([]);
    });
  });

  it('03 GRE the PPTP server sends first reaches the right client (both use Call ID 0x1234)', async () => {
    const rs = await Promise.all(pptpRuns);
    rs.forEach((r, i) => {
      expect(r.error, JSON.stringify(r)).toBeNull();
      expect([...r.echoed].sort(), JSON.stringify(r)).toEqual([...r.expected].sort());
      expect(r.pushes.length, JSON.stringify(r) + pptpd.log().slice(-2000)).toBeGreaterThanOrEqual(1);
      expect(r.pushes.every((p) => p.startsWith(`push:p${i}:`)), JSON.stringify(r)).toBe(true);
      expect(r.foreign, JSON.stringify(r)).toEqual([]);
      expect(r.wrong_key, JSON.stringify(r)).toEqual([]);
    });
  });
});
