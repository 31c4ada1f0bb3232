// The firmware image under QEMU (TCG), shared by qemu.test.ts (x86_64) and
// qemu-aarch64.test.ts: built from Debian's packages by
// firmware/build-image.sh (cached in firmware/out/<arch>), booted by
// firmware/qemu-run.sh as the router between network namespaces, with
// vpnmasq started by the image's busybox init from /etc/config/vpnmasq (the
// shipped default, switched on, with its example port forward enabled). Real
// traffic goes from the LAN namespaces through the guest to the WAN
// namespace (ping, UDP, TCP, the port forward, raw ESP from two LAN hosts to
// one server, PPTP calls of two LAN hosts to one server); then vpnmasq is
// killed, and given a broken config, from the guest's console, and the WAN
// is switched to DHCP through the image's UCI file (option wan_proto 'dhcp').
//
// The serial console is captured to firmware/out/<arch>/serial-test.log;
// a failing assertion quotes its end.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inCI, missing, skipUnless } from '../helpers/prereq.js';
import { PPTP_TOOLS, pnsCall, pptpCall, startPptpd, type PptpCallResult } from '../e2e/peers/pptp.js';
import type { Lab } from '../../src/lab/lab.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const WAN_ADDR = '203.0.113.1';
const WAN_HOST = '203.0.113.2';

// Raw ESP with real crypto: the e2e suite's scapy peer (python3-scapy).
const PYTHON = '/usr/bin/python3';
const ESP_PY = join(ROOT, 'test', 'e2e', 'peers', 'esp.py');
function scapyMissing(): string | null {
  try {
    execFileSync(PYTHON, ['-c', 'import scapy.layers.ipsec, cryptography'], { stdio: 'ignore', timeout: 30_000 });
    return null;
  } catch {
    return 'needs python3-scapy and python3-cryptography (apt-get install them)';
  }
}

/** The two methods of src/lab's Lab that the e2e PPTP peers use, for these namespaces. */
const nsRunner = {
  spawn(ns: string, argv: string[], opts: Parameters<typeof spawn>[2] = {}): ChildProcess {
    return spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  },
  tryExec(ns: string, argv: string[], opts: { timeoutMs?: number } = {}) {
    try {
      const stdout = execFileSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 30_000 });
      return { ok: true, status: 0, stdout, stderr: '' };
    } catch (e) {
      const err = e as { status?: number | null; stdout?: string; stderr?: string; message: string };
      return { ok: false, status: err.status ?? null, stdout: err.stdout ?? '', stderr: err.stderr ?? err.message };
    }
  },
} as unknown as Lab;

/** An SA pair 'C2S,S2C,ENCKEY,AUTHKEY' for esp.py, random SPIs ≥ 0x1000. */
function espPair(): { c2s: number; arg: string } {
  const spi = () => 0x1000 + (randomBytes(4).readUInt32BE(0) % 0x7fff0000);
  const c2s = spi();
  return { c2s, arg: `${c2s},${spi()},${randomBytes(16).toString('hex')},${randomBytes(32).toString('hex')}` };
}

// A peer in a namespace: a server answering "peer ADDR:PORT", or a client
// printing the answer (exit 1 after 5 s without one); shared with qemu-run.sh.
const PEER_FILE = join(ROOT, 'firmware', 'peer.mjs');

function run(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((res) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number | null) ?? null : 0;
      res({ code: typeof code === 'number' ? code : null, out: `${stdout}${stderr}` });
    });
  });
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

export interface QemuImageOpts {
  arch: 'x86_64' | 'aarch64';
  /** QEMU's binary for the arch (Debian: qemu-system-x86 / qemu-system-arm). */
  qemu: string;
  /** Namespace id prefix, one letter, so two arches' files never share names. */
  idPrefix: string;
  /** Seconds from QEMU's start to "vpnmasq ready" before the boot counts as failed. */
  bootTimeoutS: number;
}

/** The whole QEMU suite for one architecture (the two files differ only in these options). */
export function describeQemuImage(o: QemuImageOpts): void {
  const skip = skipUnless({
    root: true,
    tools: [o.qemu, 'ip', 'ping', 'cpio', 'zstd', 'readelf', 'depmod', 'apt-get', 'dpkg-deb'],
  });
  const OUT = join(ROOT, 'firmware', 'out', o.arch);
  const LOG = join(OUT, 'serial-test.log');
  const ID = `${o.idPrefix}${(process.pid % 46656).toString(36)}`;
  const NS = { lan1: `vq${ID}-lan1`, lan2: `vq${ID}-lan2`, wan1: `vq${ID}-wan1`, host: `vq${ID}-h` };
  const BOOT_TIMEOUT_S = o.bootTimeoutS;
  const noScapy = scapyMissing();
  if (noScapy && !inCI) console.warn(`skipping the QEMU ESP test: ${noScapy}`);
  const noPptp = missing({ tools: PPTP_TOOLS });
  if (noPptp && !inCI) console.warn(`skipping the QEMU PPTP test: ${noPptp}`);

  const serial = (): string => {
    try { return readFileSync(LOG, 'utf8'); } catch { return ''; }
  };
  const tail = (n = 40): string => `\n--- last lines of ${LOG} ---\n${serial().split('\n').slice(-n).join('\n')}`;
  const count = (re: RegExp): number => (serial().match(new RegExp(re.source, 'g')) ?? []).length;
  const waitFor = async (what: string, pred: () => boolean, timeoutMs: number): Promise<void> => {
    const end = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${tail()}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  describe.skipIf(skip)(`firmware image under QEMU (${o.arch}, TCG)`, () => {
    let qemuRun: ChildProcess | undefined;
    let qemuPid = 0;
    let stderr = '';
    let bootS = 0;
    const servers: ChildProcess[] = [];

    const ask = (ns: string, mode: 'udp-ask' | 'tcp-ask', host: string, port: number) =>
      run('ip', ['netns', 'exec', ns, process.execPath, PEER_FILE, mode, host, String(port)], 15_000);

    /** Types a line on the guest's serial console (a busybox shell). */
    const consoleLine = (line: string) => qemuRun!.stdin!.write(`${line}\n`);

    beforeAll(async () => {
      // The image: fetched and built on the first run, then cached by its inputs.
      const build = await run('bash', [join(ROOT, 'firmware', 'build-image.sh'), '--arch', o.arch], 15 * 60_000);
      if (build.code !== 0) throw new Error(`firmware/build-image.sh failed (${build.code}):\n${build.out.slice(-4000)}`);

      qemuRun = spawn('bash', [join(ROOT, 'firmware', 'qemu-run.sh'), '--arch', o.arch, '--no-build', '--no-checks', '--keep',
        '--id', ID, '--log', LOG, '--timeout', String(BOOT_TIMEOUT_S)], { stdio: ['pipe', 'ignore', 'pipe'] });
      qemuRun.stdin!.on('error', () => {});
      qemuRun.stderr!.setEncoding('utf8');
      await new Promise<void>((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`qemu-run.sh did not report "guest running" in ${BOOT_TIMEOUT_S + 60} s\n${stderr}${tail()}`)),
          (BOOT_TIMEOUT_S + 60) * 1000);
        qemuRun!.stderr!.on('data', (d: string) => {
          stderr += d;
          const m = stderr.match(/vpnmasq ready after ([\d.]+) s/);
          if (m) bootS = Number(m[1]);
          const p = stderr.match(/guest running \(pid (\d+)\)/);
          if (p) { qemuPid = Number(p[1]); clearTimeout(timer); res(); }
        });
        qemuRun!.on('exit', (code) => { clearTimeout(timer); rej(new Error(`qemu-run.sh exited (${code}) before the guest was ready:\n${stderr}`)); });
      });
      console.log(`[qemu test ${o.arch}] vpnmasq ready after ${bootS} s; serial log ${LOG}`);

      for (const [ns, mode, port] of [[NS.wan1, 'udp-serve', 5000], [NS.wan1, 'tcp-serve', 5001], [NS.lan1, 'tcp-serve', 80]] as const) {
        const p = spawn('ip', ['netns', 'exec', ns, process.execPath, PEER_FILE, mode, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
        servers.push(p);
        await new Promise<void>((res, rej) => {
          const t = setTimeout(() => rej(new Error(`${mode} in ${ns} did not start`)), 10_000);
          p.stdout!.once('data', () => { clearTimeout(t); res(); });
        });
      }
    }, 25 * 60_000);

    afterAll(async () => {
      for (const s of servers) if (s.pid && s.exitCode === null) s.kill('SIGKILL');
      if (qemuRun && qemuRun.exitCode === null) {
        qemuRun.kill('SIGTERM'); // qemu-run.sh stops QEMU and deletes its namespaces
        await new Promise<void>((res) => {
          const t = setTimeout(() => { qemuRun!.kill('SIGKILL'); res(); }, 20_000);
          qemuRun!.on('exit', () => { clearTimeout(t); res(); });
        });
      }
      // Whatever is left after a hard kill: QEMU by its pid, then the namespaces.
      if (qemuPid && alive(qemuPid)) process.kill(qemuPid, 'SIGKILL');
      for (const ns of Object.values(NS)) {
        if (existsSync(`/run/netns/${ns}`)) await run('ip', ['netns', 'del', ns], 10_000);
      }
    }, 60_000);

    it('fits the budget: kernel + initramfs ≤ 64 MiB, booted to "vpnmasq ready" with 256 MiB', () => {
      const report = readFileSync(join(OUT, 'size-report.txt'), 'utf8');
      console.log(report);
      const total = Number(report.match(/total compressed\s+([\d.]+) MiB/)?.[1]);
      expect(total).toBeGreaterThan(5);
      expect(total).toBeLessThanOrEqual(64);
      expect(bootS).toBeGreaterThan(0);
      expect(bootS).toBeLessThan(BOOT_TIMEOUT_S);
      const s = serial();
      expect(s, tail()).toMatch(/rcS: network: br-lan \(eth0\) 192\.168\.1\.1\/24, wan \(eth1\) 203\.0\.113\.1\/24/);
      // /etc/config/vpnmasq-net as shipped: every line applied, none refused
      expect(s, tail()).not.toMatch(/rcS: \/etc\/config\/vpnmasq-net:/);
      const ready = s.split('\n').find((l) => l.includes('"msg":"vpnmasq ready"'))!;
      const j = JSON.parse(ready.slice(ready.indexOf('{')));
      expect(j).toMatchObject({ lan: 'br-lan', wan: 'wan', wanAddress: WAN_ADDR, lanSubnets: ['192.168.1.0/24'], redirects: 1 });
      // the reader queue's ring clock loads on the image's kernel (its eBPF program, clsact and cls_bpf from the image's modules)
      expect(j.queueClock, tail()).toBe('stamps');
      // host_queues 'auto' on 256 MiB: one ring (a multi-queue TUN's kernel memory is more than the image spares)
      expect(j.hostQueues, tail()).toBe(1);
      // the flow fast path (flow_offload '1', the default) attaches on the image's kernel (bookworm-backports' 6.12: tcx)
      expect(j.flowOffload, tail()).toBe('on');
    });

    it('rcS installs the fail-closed guard before init starts vpnmasq; it is in place in the guest', async () => {
      const s = serial();
      const guardAt = s.search(/rcS: vpnmasq: guard (installed|already installed): no forwarding between br-lan and wan/);
      expect(guardAt, tail()).toBeGreaterThan(0);
      expect(guardAt, tail()).toBeLessThan(s.indexOf('"msg":"vpnmasq ready"'));
      consoleLine('');
      consoleLine('vpnmasq guard status');
      await waitFor('vpnmasq guard status in the guest', () => /guard installed: br-lan <-> wan closed outside vpnmasq/.test(serial()), 60_000);
    }, 90_000);

    it('ping from both LAN hosts reaches the WAN host through the guest', async () => {
      for (const ns of [NS.lan1, NS.lan2]) {
        // -w: wait for three answers (up to 15 s), not for twice the fastest RTT after the third
        // request, which an emulated guest's jitter (4–22 ms RTTs seen under TCG) can outlast.
        const r = await run('ip', ['netns', 'exec', ns, 'ping', '-c', '3', '-i', '0.3', '-w', '15', WAN_HOST], 20_000);
        expect(Number(/(\d+) received/.exec(r.out)?.[1] ?? 0), r.out + tail()).toBe(3);
        expect(r.out, r.out + tail()).toMatch(/ttl=63/); // answered by the WAN host through the router, not by the router
      }
    });

    it('UDP from both LAN hosts is masqueraded to the WAN address', async () => {
      for (const ns of [NS.lan1, NS.lan2]) {
        const r = await ask(ns, 'udp-ask', WAN_HOST, 5000);
        expect(r.out, r.out + tail()).toContain(`peer ${WAN_ADDR}:`);
      }
    });

    it('TCP from the LAN is masqueraded to the WAN address', async () => {
      const r = await ask(NS.lan1, 'tcp-ask', WAN_HOST, 5001);
      expect(r.out, r.out + tail()).toContain(`peer ${WAN_ADDR}:`);
    });

    it('the port forward tcp 8080 reaches lan1:80 with the WAN client\'s own address', async () => {
      const r = await ask(NS.wan1, 'tcp-ask', WAN_ADDR, 8080);
      expect(r.out, r.out + tail()).toContain(`peer ${WAN_HOST}:`);
    });

    it.skipIf(noScapy !== null && !inCI)('raw ESP (no NAT-T) from two LAN hosts to one WAN server: each gets its own replies', async () => {
      if (noScapy) throw new Error(`prerequisite missing under CI: ${noScapy}`);
      const sa1 = espPair();
      const sa2 = espPair();
      const srv = spawn('ip', ['netns', 'exec', NS.wan1, PYTHON, ESP_PY, 'server', '--sa', sa1.arg, '--sa', sa2.arg],
        { stdio: ['ignore', 'pipe', 'pipe'] });
      let srvOut = '';
      srv.stdout!.on('data', (d) => { srvOut += d; });
      srv.stderr!.on('data', (d) => { srvOut += d; });
      try {
        await waitFor('the ESP server', () => srvOut.includes('"ready"') || srv.exitCode !== null, 30_000);
        expect(srvOut).toContain('"ready"');
        // Both at once: the NAT holds the second host's new SPI back until the
        // first one's is bound (one outstanding SPI per server); clients retransmit.
        const client = (ns: string, arg: string, tag: string) =>
          run('ip', ['netns', 'exec', ns, PYTHON, ESP_PY, 'client', '--server', WAN_HOST, '--sa', arg, '--tag', tag,
            '--want', '5', '--timeout', '30'], 60_000);
        const results = await Promise.all([client(NS.lan1, sa1.arg, 'h1'), client(NS.lan2, sa2.arg, 'h2')]);
        for (const r of results) {
          const line = r.out.trim().split('\n').filter((l) => l.startsWith('{')).pop() ?? '{}';
          const j = JSON.parse(line) as { replies?: number[]; foreign_spi?: Record<string, number>; bad?: number; not_ours?: number };
          expect(j.replies?.length ?? 0, r.out + tail()).toBeGreaterThanOrEqual(5);
          expect(j.foreign_spi, r.out).toEqual({});
          expect(j.bad, r.out).toBe(0);
          expect(j.not_ours, r.out).toBe(0);
        }
      } finally {
        srv.kill('SIGTERM');
        await Promise.race([new Promise((r) => srv.once('exit', r)), new Promise((r) => setTimeout(r, 3000))]);
      }
      const stats = JSON.parse(srvOut.trim().split('\n').filter((l) => l.startsWith('{"sas"')).pop() ?? '{}') as
        { sas?: Record<string, { peers: string[] }> };
      // The server saw both hosts as the masquerade address.
      expect(stats.sas?.[String(sa1.c2s)]?.peers, srvOut).toEqual([WAN_ADDR]);
      expect(stats.sas?.[String(sa2.c2s)]?.peers, srvOut).toEqual([WAN_ADDR]);
    }, 120_000);

    it.skipIf(noPptp !== null && !inCI)('PPTP: two LAN hosts call one WAN server at once (pptp-linux, and the same Call ID), each gets its own GRE back', async () => {
      if (noPptp) throw new Error(`prerequisite missing under CI: ${noPptp}`);
      const srv = await startPptpd(nsRunner, NS.wan1);
      const own = (r: PptpCallResult) => `${r.tag}: ${r.echoed.length}/${r.expected.length} echoed, foreign=${JSON.stringify(r.foreign)}`;
      try {
        const [a, b] = await Promise.all([
          pptpCall(nsRunner, NS.lan1, WAN_HOST, { tag: 'h1', frames: 5, timeoutMs: 20_000 }),
          pptpCall(nsRunner, NS.lan2, WAN_HOST, { tag: 'h2', frames: 5, timeoutMs: 20_000 }),
        ]);
        for (const r of [a, b]) {
          expect([...r.echoed].sort(), own(r) + tail()).toEqual([...r.expected].sort());
          expect(r.foreign, own(r)).toEqual([]);
        }
        const [c, d] = await Promise.all([
          pnsCall(nsRunner, NS.lan1, WAN_HOST, { tag: 'same1', callId: 0x1234, frames: 5, timeoutMs: 20_000 }),
          pnsCall(nsRunner, NS.lan2, WAN_HOST, { tag: 'same2', callId: 0x1234, frames: 5, timeoutMs: 20_000 }),
        ]);
        for (const r of [c, d]) {
          const j = JSON.stringify(r);
          expect([...r.echoed].sort(), j + tail()).toEqual([...r.expected].sort());
          expect(r.foreign, j).toEqual([]);
        }
      } finally {
        await srv.stop();
      }
    }, 120_000);

    it('a killed vpnmasq is restarted by busybox init + vpnmasq-respawn and routes again', async () => {
      const readyBefore = count(/"msg":"vpnmasq ready"/);
      consoleLine('');
      consoleLine('kill -9 $(pidof node)');
      await waitFor('vpnmasq-respawn to report the kill', () => /vpnmasq-respawn: vpnmasq was killed by signal 9/.test(serial()), 60_000);
      await waitFor('vpnmasq ready again', () => count(/"msg":"vpnmasq ready"/) > readyBefore, 120_000);
      const r = await ask(NS.lan1, 'udp-ask', WAN_HOST, 5000);
      expect(r.out, r.out + tail()).toContain(`peer ${WAN_ADDR}:`);
    }, 200_000);

    it("option host_queues '8' loads on the image's kernel: multi-queue LAN and WAN TUNs, their steering programs, a ring clock numbering each ring; option flow_offload '1' is on there (tcx, Linux 6.6+: the image's 6.12) and the kernel carries a LAN host's ping and TCP; then the defaults again", async () => {
      const lastReady = () => {
        const line = serial().split('\n').filter((l) => l.includes('"msg":"vpnmasq ready"')).pop()!;
        return JSON.parse(line.slice(line.indexOf('{')));
      };
      /** `vpnmasq status --json`'s flowOffload, asked on the guest's console (one line: FASTPATH {...}). */
      const fastPath = async (): Promise<Record<string, unknown> & { enabled: boolean; forwarded: number; offloaded: number }> => {
        const re = /^FASTPATH (\{.*\})\r?$/gm;
        const seen = () => [...serial().matchAll(re)];
        const before = seen().length;
        consoleLine('');
        consoleLine(`vpnmasq status --json > /tmp/st.json && node -e 'console.log("FASTPATH " + JSON.stringify(require("/tmp/st.json").flowOffload))'`);
        await waitFor('vpnmasq status in the guest', () => seen().length > before, 90_000);
        return JSON.parse(seen().pop()![1]!);
      };
      const restartWith = async (cmd: string, what: string) => {
        const before = count(/"msg":"vpnmasq ready"/);
        consoleLine('');
        consoleLine(`${cmd}; kill $(pidof node)`);
        await waitFor(what, () => count(/"msg":"vpnmasq ready"/) > before, 150_000);
      };
      await restartWith("cp /etc/config/vpnmasq /tmp/hq; sed -i \"s/option host_queues 'auto'/option host_queues '8'/; s/option flow_offload '0'/option flow_offload '1'/\" /etc/config/vpnmasq", 'vpnmasq ready with host_queues 8');
      // and the WAN TUN's host queues (by remote host and protocol), their clock program loaded too
      expect(lastReady(), tail()).toMatchObject({ queueClock: 'stamps', hostQueues: 8, wanHostQueues: 8 });
      // the flow fast path: on, with no reason against it
      expect(lastReady().flowOffload, tail()).toBe('on');
      expect(serial(), tail()).not.toMatch(/flow fast path unavailable/);
      const f0 = await fastPath();
      expect(f0, tail()).toMatchObject({ enabled: true });
      expect(f0, tail()).not.toHaveProperty('note');
      // a ping (an echo flow goes to the kernel once answered) and TCP through the router: the kernel carries some of it
      const p = await run('ip', ['netns', 'exec', NS.lan2, 'ping', '-c', '30', '-i', '0.2', '-w', '40', WAN_HOST], 50_000);
      expect(Number(/(\d+) received/.exec(p.out)?.[1] ?? 0), p.out + tail()).toBe(30);
      expect(p.out, p.out + tail()).toMatch(/ttl=63/);
      const r = await ask(NS.lan2, 'tcp-ask', WAN_HOST, 5001);
      expect(r.out, r.out + tail()).toContain(`peer ${WAN_ADDR}:`);
      const f1 = await fastPath();
      expect(f1.offloaded, JSON.stringify(f1) + tail()).toBeGreaterThan(f0.offloaded);
      expect(f1.forwarded, JSON.stringify(f1) + tail()).toBeGreaterThan(f0.forwarded);
      await restartWith('cp /tmp/hq /etc/config/vpnmasq', 'vpnmasq ready with host_queues auto');
      expect(lastReady(), tail()).toMatchObject({ queueClock: 'stamps', hostQueues: 1, wanHostQueues: 1 });
    }, 480_000);

    it('a broken /etc/config/vpnmasq is logged and retried with growing back-off, then recovers', async () => {
      const readyBefore = count(/"msg":"vpnmasq ready"/);
      const failsBefore = count(/vpnmasq-respawn: vpnmasq exited with code [1-9]\d*/);
      consoleLine('');
      consoleLine("cp /etc/config/vpnmasq /tmp/good; sed -i \"s/option max_flows '65536'/option max_flows 'lots'/\" /etc/config/vpnmasq; kill $(pidof node)");
      await waitFor('two failed starts', () => count(/vpnmasq-respawn: vpnmasq exited with code [1-9]\d*/) >= failsBefore + 2, 150_000);
      const s = serial();
      // The reason is logged, with the file and line.
      expect(s, tail()).toMatch(/\/etc\/config\/vpnmasq:\d+: .*max_flows/);
      const delays = [...s.matchAll(/vpnmasq-respawn: vpnmasq exited with code [1-9]\d* after [\d.]+ s; restarting in (\d+) s/g)]
        .slice(failsBefore).map((m) => Number(m[1]));
      expect(delays.length, tail()).toBeGreaterThanOrEqual(2);
      expect(delays[1]!, `delays ${delays}` + tail()).toBeGreaterThan(delays[0]!);
      consoleLine('cp /tmp/good /etc/config/vpnmasq');
      await waitFor('vpnmasq ready with the repaired config', () => count(/"msg":"vpnmasq ready"/) > readyBefore, 150_000);
      const r = await ask(NS.lan2, 'tcp-ask', WAN_HOST, 5001);
      expect(r.out, r.out + tail()).toContain(`peer ${WAN_ADDR}:`);
    }, 320_000);

    it("the WAN by DHCP, chosen by option wan_proto 'dhcp' in /etc/config/vpnmasq-net: a lease and a renewal with a new address are followed", async () => {
      // Debian's busybox udhcpd in the WAN namespace, one address at a time.
      const dir = join(OUT, `dhcp-${ID}`);
      execFileSync('mkdir', ['-p', dir]);
      let server: ChildProcess | null = null;
      const serve = (addr: string) => {
        writeFileSync(join(dir, 'leases'), '');
        writeFileSync(join(dir, 'udhcpd.conf'), [`start ${addr}`, `end ${addr}`, 'interface eth0', `lease_file ${join(dir, 'leases')}`,
          `pidfile ${join(dir, 'udhcpd.pid')}`, 'option subnet 255.255.255.0', `option router ${WAN_HOST}`, 'option lease 600', ''].join('\n'));
        server = spawn('ip', ['netns', 'exec', NS.wan1, 'busybox', 'udhcpd', '-f', join(dir, 'udhcpd.conf')], { stdio: 'ignore' });
      };
      const stop = async () => {
        const p = server as ChildProcess | null;
        if (!p || p.exitCode !== null) return;
        p.kill('SIGTERM');
        await new Promise((r) => p.once('exit', r));
      };
      try {
        serve('203.0.113.60');
        // As an OpenWrt user would (uci set …wan_proto=dhcp; uci commit; ifup
        // wan): the option written into the image's UCI file, then the WAN
        // applied again by the image's own network script, which reads it.
        consoleLine('');
        consoleLine(`sed -i "s/option wan_proto 'static'/option wan_proto 'dhcp'/" /etc/config/vpnmasq-net && ` +
          `grep "option wan_proto 'dhcp'" /etc/config/vpnmasq-net && vpnmasq-net wan`);
        await waitFor('the lease 203.0.113.60', () => /udhcpc: bound wan 203\.0\.113\.60\/24/.test(serial()), 60_000);
        await waitFor('vpnmasq-net to report the WAN by DHCP', () => /vpnmasq-net: wan: wan \(wan\) dhcp/.test(serial()), 30_000);
        await waitFor('vpnmasq to follow', () => /"new":"203\.0\.113\.60"/.test(serial()), 30_000);
        const a = await ask(NS.lan1, 'udp-ask', WAN_HOST, 5000);
        expect(a.out, a.out + tail()).toContain('peer 203.0.113.60:');
        // the renewal brings a new address: release, then renew against a server that only has .61
        await stop();
        serve('203.0.113.61');
        await new Promise((r) => setTimeout(r, 500));
        consoleLine('kill -USR2 $(cat /run/udhcpc-wan.pid); sleep 1; kill -USR1 $(cat /run/udhcpc-wan.pid)');
        // (udhcpc is a daemon by now: its script's output no longer reaches the console)
        await waitFor('vpnmasq to follow the renewal to 203.0.113.61', () => /"new":"203\.0\.113\.61"/.test(serial()), 60_000);
        const b = await ask(NS.lan2, 'udp-ask', WAN_HOST, 5000);
        expect(b.out, b.out + tail()).toContain('peer 203.0.113.61:');
      } finally {
        await stop();
        rmSync(dir, { recursive: true, force: true });
      }
    }, 240_000);
  });
}
