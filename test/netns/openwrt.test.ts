// Issue 11 against a running vpnmasq in namespaces: conntrack-tools'
// -L/-C/-D/-F with filters through the real CLI; rpcd's exec plugin
// (/usr/libexec/rpcd/vpnmasq) run the way rpcd runs it (`list`; `call
// METHOD` with JSON on stdin); redirects and rules by fw4 name in status;
// and a reload to `option enabled '0'` stopping the daemon cleanly.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { CLI, RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { udpAnswerer } from '../helpers/servers.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'socat'] });
const PLUGIN = resolve(__dirname, '../../firmware/files/usr/libexec/rpcd/vpnmasq');
const WANHOST = '203.0.113.2';

describe.skipIf(skip)('OpenWrt integration against a running vpnmasq (namespaces)', () => {
  let lab: LabT;
  let vm: RunningRouter;
  let bin: string;
  let binDir = '';

  const sh = (ns: string, cmd: string, timeoutMs = 20_000) => lab.tryExec(ns, ['sh', '-c', cmd], { timeoutMs });
  /** One UDP exchange with the WAN echo server from a fixed source port (asked up to three times: UDP may be lost). */
  const udp = (ns: string, sport: number) =>
    sh(ns, `for i in 1 2 3; do a=$(echo hi | socat -t2 - UDP:${WANHOST}:9999,sourceport=${sport}); [ -n "$a" ] && break; done; echo "$a"`, 30_000);
  const ct = (...args: string[]) => vm.cli('conntrack', ...args);
  /** The plugin as rpcd runs it: in the router, `call METHOD`, arguments on stdin. */
  const rpcd = (args: string[], input = '') =>
    lab.tryExec(lab.router, ['sh', PLUGIN, ...args], {
      input, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', VPNMASQ_BIN: bin, VPNMASQ_CONFIG: vm.config },
    });

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `ow${process.pid % 10000}` });
    vm = new RunningRouter(lab, `
config redirect 'web'
	option proto 'tcp'
	option src_dport '8080'
	option dest_ip '192.168.1.10'
	option dest_port '80'
config rule
	option name 'Allow-Ping'
	option src 'wan'
	option proto 'icmp'
	option target 'ACCEPT'
`);
    await vm.start();
    binDir = mkdtempSync(join(tmpdir(), 'vpnmasq-rpcd-'));
    const dir = binDir;
    chmodSync(dir, 0o755);
    bin = join(dir, 'vpnmasq');
    writeFileSync(bin, `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`);
    chmodSync(bin, 0o755);
    lab.spawn(lab.wan[0]!, udpAnswerer(9999, '$SOCAT_PEERADDR port $SOCAT_PEERPORT'));
    await new Promise((r) => setTimeout(r, 300));
    expect(udp(lab.lan[0]!, 5001).stdout.trim()).toBe('203.0.113.1 port 5001');
    expect(udp(lab.lan[1]!, 5002).stdout.trim()).toBe('203.0.113.1 port 5002');
  });

  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
    if (binDir) rmSync(binDir, { recursive: true, force: true });
  });

  it('conntrack -C counts, with filters', () => {
    expect(ct('-C', '-p', 'udp', '--dport', '9999')).toMatchObject({ ok: true, stdout: '2\n' });
    expect(ct('-C', '-s', '192.168.1.10', '-p', 'udp', '--dport', '9999').stdout).toBe('1\n');
    expect(ct('-C', '-s', '192.168.1.0/24', '--sport', '5002').stdout).toBe('1\n');
    expect(JSON.parse(ct('-C', '-p', 'esp', '--json').stdout)).toEqual({ count: 0 });
  });

  it('conntrack -L with filters shows exactly the matching flows', () => {
    const r = ct('-L', '-p', 'udp', '-s', '192.168.1.11', '--dport', '9999');
    expect(r.ok).toBe(true);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^udp +17 \d+ src=192\.168\.1\.11 dst=203\.0\.113\.2 sport=5002 dport=9999 /);
    expect(JSON.parse(ct('-L', '-d', WANHOST, '--sport', '5001', '--json').stdout)).toMatchObject([{ lan: '192.168.1.10', lanPort: 5001 }]);
  });

  it('status names the redirects and rules (fw4 name, else the uci section name)', () => {
    const s = vm.status();
    expect(s.redirectList).toEqual(['web: tcp 8080 -> 192.168.1.10:80']);
    expect(s.ruleList).toEqual(['Allow-Ping: wan -> router icmp ACCEPT']);
    expect(vm.cli('status').stdout).toContain('  redirect web: tcp 8080 -> 192.168.1.10:80\n');
  });

  it("rpcd: 'list' gives the methods; 'call' answers JSON for status, conntrack (filters) and reload", () => {
    const list = rpcd(['list']);
    expect(list.ok).toBe(true);
    expect(Object.keys(JSON.parse(list.stdout))).toEqual(['status', 'conntrack', 'conntrack_delete', 'reload']);

    const status = JSON.parse(rpcd(['call', 'status'], '{}').stdout);
    expect(status).toMatchObject({ wanAddress: '203.0.113.1', redirectList: ['web: tcp 8080 -> 192.168.1.10:80'] });

    const one = JSON.parse(rpcd(['call', 'conntrack'], JSON.stringify({ proto: 'udp', src: '192.168.1.10', dport: 9999 })).stdout);
    expect(one.count).toBe(1);
    expect(one.entries).toMatchObject([{ lan: '192.168.1.10', lanPort: 5001, remotePort: 9999 }]);

    expect(JSON.parse(rpcd(['call', 'conntrack'], '{"sport":"x"}').stdout)).toEqual({ error: "--sport: 'x' is not a number" });
    expect(JSON.parse(rpcd(['call', 'conntrack_delete'], '{}').stdout)).toEqual({ error: 'delete needs at least one filter' });
    expect(JSON.parse(rpcd(['call', 'conntrack'], 'not json').stdout)).toEqual({ error: 'the arguments are not JSON' });
    expect(JSON.parse(rpcd(['call', 'frobnicate'], '{}').stdout).error).toMatch(/^unknown method "frobnicate"/);
    expect(JSON.parse(rpcd(['call', 'reload'], '{}').stdout)).toEqual({ reloaded: true, restart_needed: [] });
  });

  it('rpcd: the ACL file grants reading (status, conntrack) apart from writing (conntrack_delete, reload)', () => {
    const acl = JSON.parse(readFileSync(resolve(__dirname, '../../firmware/files/usr/share/rpcd/acl.d/vpnmasq.json'), 'utf8'));
    expect(acl.vpnmasq.read.ubus.vpnmasq).toEqual(['status', 'conntrack']);
    expect(acl.vpnmasq.write.ubus.vpnmasq).toEqual(['conntrack_delete', 'reload']);
    expect(Object.keys(JSON.parse(rpcd(['list']).stdout)).sort()).toEqual(
      [...acl.vpnmasq.read.ubus.vpnmasq, ...acl.vpnmasq.write.ubus.vpnmasq].sort());
  });

  it('conntrack -D deletes only what the filters match (CLI and rpcd); the other host keeps its flow', () => {
    const r = ct('-D', '-s', '192.168.1.10', '-p', 'udp', '--dport', '9999');
    expect(r.ok).toBe(true);
    expect(r.stdout).toMatch(/^udp +17 \d+ src=192\.168\.1\.10 dst=203\.0\.113\.2 sport=5001 dport=9999 /);
    expect(ct('-C', '-s', '192.168.1.10', '--dport', '9999').stdout).toBe('0\n');
    expect(ct('-C', '-s', '192.168.1.11', '--dport', '9999').stdout).toBe('1\n');
    // the deleted host can open it again (its port binding was freed)
    expect(udp(lab.lan[0]!, 5001).stdout.trim()).toBe('203.0.113.1 port 5001');
    const del = JSON.parse(rpcd(['call', 'conntrack_delete'], JSON.stringify({ src: '192.168.1.11', dport: 9999 })).stdout);
    expect(del).toMatchObject({ deleted: 1, entries: [{ lan: '192.168.1.11', lanPort: 5002 }] });
    expect(ct('-C', '-s', '192.168.1.11', '--dport', '9999').stdout).toBe('0\n');
  });

  it('conntrack -F empties the tables', () => {
    expect(udp(lab.lan[1]!, 5003).stdout.trim()).toBe('203.0.113.1 port 5003');
    expect(Number(ct('-C').stdout)).toBeGreaterThan(0);
    const f = ct('-F');
    expect(f.ok).toBe(true);
    expect(ct('-C').stdout).toBe('0\n');
  });

  it('a refused reload names every problem of the file, one line each; the running config stays', () => {
    const good = readFileSync(vm.config, 'utf8');
    writeFileSync(vm.config, good.replace("option log_level 'debug'", "option log_level 'loud'\n\toption max_flows '12'"));
    const r = vm.cli('reload');
    writeFileSync(vm.config, good);
    expect(r.status).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`^vpnmasq: reload: ${vm.config}:\\d+: option log_level: 'loud' is not a log level`));
    expect(lines[1]).toMatch(new RegExp(`^vpnmasq: reload: ${vm.config}:\\d+: option max_flows: '12' is out of range`));
    expect(vm.status().redirectList).toEqual(['web: tcp 8080 -> 192.168.1.10:80']);
  });

  it("a reload that finds option enabled '0' stops vpnmasq cleanly (exit 0, routes and TUNs removed)", async () => {
    writeFileSync(vm.config, readFileSync(vm.config, 'utf8').replace("option enabled '1'", "option enabled '0'"));
    expect(vm.cli('reload').ok).toBe(true);
    for (let i = 0; i < 100 && vm.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
    expect(vm.exitCode).toBe(0);
    expect(vm.output).toContain("option enabled is '0' now: stopping");
    expect(lab.tryExec(lab.router, ['ip', '-o', 'link', 'show', 'type', 'tun']).stdout).toBe('');
  });
});
