// The image's DHCP WAN without QEMU: Debian's busybox udhcpd in the WAN
// namespace, busybox udhcpc in the router namespace running the image's
// script (firmware/image/rootfs/usr/share/udhcpc/default.script), which sets
// the address and tells the running vpnmasq through the same hotplug script
// OpenWrt's netifd runs (/etc/hotplug.d/iface/30-vpnmasq -> `vpnmasq
// wan-update`). A lease, then a renewal that brings a new address: vpnmasq
// follows (status and the masquerade address of new traffic), and the time
// from the script's "bound" line to vpnmasq using the new address is printed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { skipUnless } from '../helpers/prereq.js';
import { CLI, RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { udpAnswerer } from '../helpers/servers.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'socat', 'busybox'] });
const SCRIPT = resolve(__dirname, '../../firmware/image/rootfs/usr/share/udhcpc/default.script');
const HOTPLUG = resolve(__dirname, '../../firmware/files/etc/hotplug.d/iface/30-vpnmasq');
const WANHOST = '203.0.113.2';

describe.skipIf(skip)('WAN by DHCP: udhcpc + the image script + the hotplug path, vpnmasq following', () => {
  let lab: LabT;
  let vm: RunningRouter;
  let dir: string;
  let udhcpd: ChildProcess | null = null;
  let udhcpc: ChildProcess;
  let clientOut = '';

  const sh = (ns: string, cmd: string, timeoutMs = 20_000) => lab.tryExec(ns, ['sh', '-c', cmd], { timeoutMs });
  const udp = (sport: number) =>
    sh(lab.lan[0]!, `for i in 1 2 3; do a=$(echo hi | socat -t2 - UDP:${WANHOST}:9999,sourceport=${sport}); [ -n "$a" ] && break; done; echo "$a"`, 30_000);
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  function serve(addr: string): void {
    const conf = join(dir, 'udhcpd.conf');
    rmSync(join(dir, 'leases'), { force: true });
    writeFileSync(join(dir, 'leases'), '');
    writeFileSync(conf, [
      `start ${addr}`, `end ${addr}`, 'interface eth0', `lease_file ${join(dir, 'leases')}`, `pidfile ${join(dir, 'udhcpd.pid')}`,
      'option subnet 255.255.255.0', `option router ${WANHOST}`, 'option lease 600', '',
    ].join('\n'));
    udhcpd = lab.spawn(lab.wan[0]!, ['busybox', 'udhcpd', '-f', conf]);
  }
  async function stopServer(): Promise<void> {
    if (!udhcpd || udhcpd.exitCode !== null) return;
    const p = udhcpd;
    p.kill('SIGTERM');
    await new Promise((r) => p.once('exit', r));
  }
  async function until(what: string, cond: () => boolean, ms = 30_000): Promise<void> {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}\nudhcpc:\n${clientOut}\nvpnmasq:\n${vm.output.slice(-2000)}`);
      await sleep(50);
    }
  }

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `dh${process.pid % 10000}` });
    dir = mkdtempSync(join(tmpdir(), 'vpnmasq-dhcp-'));
    chmodSync(dir, 0o755);
    // the router starts without a WAN address, as a DHCP WAN does
    lab.exec(lab.router, ['ip', '-4', 'addr', 'flush', 'dev', 'wan']);
    vm = new RunningRouter(lab);
    await vm.start();
    // vpnmasq for the hotplug script (the image's /usr/bin/vpnmasq), on this test's socket; logger to a file
    writeFileSync(join(dir, 'vpnmasq'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@" --socket "${vm.sock}"\n`);
    writeFileSync(join(dir, 'logger'), `#!/bin/sh\necho "logger $*" >> "${join(dir, 'syslog')}"\n`);
    chmodSync(join(dir, 'vpnmasq'), 0o755);
    chmodSync(join(dir, 'logger'), 0o755);
    lab.spawn(lab.wan[0]!, udpAnswerer(9999, '$SOCAT_PEERADDR'));
    serve('203.0.113.1');
    udhcpc = lab.spawn(lab.router, ['busybox', 'udhcpc', '-f', '-i', 'wan', '-t', '20', '-T', '1', '-A', '1', '-s', SCRIPT], {
      env: { PATH: `${dir}:/usr/sbin:/usr/bin:/sbin:/bin`, VPNMASQ_HOTPLUG: HOTPLUG },
    });
    udhcpc.stdout!.on('data', (d) => { clientOut += d; });
    udhcpc.stderr!.on('data', (d) => { clientOut += d; });
  }, 60_000);

  afterAll(async () => {
    udhcpc?.kill('SIGTERM');
    await stopServer();
    await vm?.stop();
    lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a lease: the script sets the address, vpnmasq takes it through the hotplug path, LAN traffic is masqueraded to it', async () => {
    await until('the first lease', () => /udhcpc: bound wan 203\.0\.113\.1\/24/.test(clientOut));
    await until('vpnmasq to follow', () => vm.status().wanAddress === '203.0.113.1');
    expect(udp(5001).stdout.trim()).toBe('203.0.113.1');
  });

  it('a renewal with a new address is followed, the script telling vpnmasq through the hotplug path: new traffic leaves from the new address', async () => {
    await stopServer();
    serve('203.0.113.50');
    await sleep(300);
    // release, then renew: the server only has the new address now
    udhcpc.kill('SIGUSR2');
    await until('the release', () => /deconfigured/.test(clientOut.split('bound wan 203.0.113.1/24')[1] ?? ''));
    const mark = clientOut.length;
    udhcpc.kill('SIGUSR1');
    await until('the new lease', () => /udhcpc: bound wan 203\.0\.113\.50\/24/.test(clientOut.slice(mark)));
    const bound = Date.now();
    await until('vpnmasq to follow the new address', () => vm.status().wanAddress === '203.0.113.50', 5000);
    const followedMs = Date.now() - bound;
    console.log(`[dhcp] vpnmasq used the renewed address ${followedMs} ms after udhcpc's script printed the lease`);
    expect(vm.output).toMatch(/WAN address changed/);
    expect(udp(5002).stdout.trim()).toBe('203.0.113.50');
    // the script told vpnmasq through the hotplug path (its background wan-update answered with the new address)
    await until('the hotplug log line', () => {
      try { return readFileSync(join(dir, 'syslog'), 'utf8').includes('wan ifupdate: WAN address 203.0.113.50'); } catch { return false; }
    }, 10_000);
  });
});
