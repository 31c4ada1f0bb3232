// Option acct through the real router in namespaces: `vpnmasq conntrack -L`
// prints bytes= beside packets= in both directions and the numbers grow with
// the traffic; a TCP bulk transfer (GSO super-packets when the TUNs have
// offloads) is counted whole; the JSON listing, rpcd's source (the control
// socket) and status carry it; the counters survive a restart; a reload
// that switches acct asks for a restart (the region is fixed at start, like
// max_flows), and the restart says what became of the counters.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import { CLI, RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { udpAnswerer } from '../helpers/servers.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'socat'] });
const WANHOST = '203.0.113.2';
const ACCT_ON = "\toption acct '1'\n";
// "hi\n" out (28 + 3 bytes), "203.0.113.1 port 5001\n" back (28 + 22 bytes)
const OUT_BYTES = 31, IN_BYTES = 50;
const BULK = 4_000_000;

interface Dir { packets: number; bytes: number }

describe.skipIf(skip)('option acct: bytes= through the real router (namespaces)', () => {
  let lab: LabT;
  let vm: RunningRouter;

  const sh = (ns: string, cmd: string, timeoutMs = 30_000) => lab.tryExec(ns, ['sh', '-c', cmd], { timeoutMs });
  /** One UDP exchange with the WAN echo server from source port 5001 (asked up to three times: UDP may be lost). */
  const udp = () =>
    sh(lab.lan[0]!, `for i in 1 2 3; do a=$(echo hi | socat -t2 - UDP:${WANHOST}:9999,sourceport=5001); [ -n "$a" ] && break; done; echo "$a"`);
  /** conntrack -L of that flow: the line, and the counters of each direction. */
  const counted = (): { line: string; orig: Dir; reply: Dir } => {
    const r = vm.cli('conntrack', '-L', '-p', 'udp', '--sport', '5001', '--dport', '9999');
    expect(r.ok).toBe(true);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const c = [...lines[0]!.matchAll(/ packets=(\d+)(?: bytes=(\d+))?/g)].map((m) => ({
      packets: Number(m[1]), bytes: m[2] === undefined ? NaN : Number(m[2]),
    }));
    expect(c).toHaveLength(2);
    return { line: lines[0]!, orig: c[0]!, reply: c[1]! };
  };

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `ac${process.pid % 10000}` });
    vm = new RunningRouter(lab, '', ACCT_ON);
    await vm.start();
    lab.spawn(lab.wan[0]!, udpAnswerer(9999, '$SOCAT_PEERADDR port $SOCAT_PEERPORT'));
    lab.spawn(lab.wan[0]!, ['socat', '-u', 'TCP-LISTEN:9000,fork,reuseaddr', 'OPEN:/dev/null']);
    await new Promise((r) => setTimeout(r, 300));
  });

  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  });

  it('01 conntrack -L: packets= bytes= in each direction, each datagram\'s IP length, growing with the traffic', () => {
    expect(udp().stdout.trim()).toBe('203.0.113.1 port 5001');
    const a = counted();
    expect(a.line).toMatch(new RegExp(`^udp +17 \\d+ src=192\\.168\\.1\\.10 dst=${WANHOST.replace(/\./g, '\\.')} sport=5001 dport=9999 ` +
      `packets=\\d+ bytes=\\d+ src=${WANHOST.replace(/\./g, '\\.')} dst=203\\.0\\.113\\.1 sport=9999 dport=5001 packets=\\d+ bytes=\\d+ use=1$`));
    expect(a.orig.packets).toBeGreaterThanOrEqual(1);
    expect(a.orig.bytes).toBe(a.orig.packets * OUT_BYTES);
    expect(a.reply.packets).toBeGreaterThanOrEqual(1);
    expect(a.reply.bytes).toBe(a.reply.packets * IN_BYTES);
    // Again on the same flow. The datagram out is counted whether or not the answer makes it back in time.
    udp();
    const b = counted();
    expect(b.orig.bytes).toBe(b.orig.packets * OUT_BYTES);
    expect(b.orig.packets).toBeGreaterThan(a.orig.packets);
    expect(b.orig.bytes).toBeGreaterThan(a.orig.bytes);
    expect(b.reply.bytes).toBe(b.reply.packets * IN_BYTES);
    expect(b.reply.bytes).toBeGreaterThanOrEqual(a.reply.bytes);
  });

  it('02 a TCP bulk transfer is counted whole: every payload byte plus at most a header per packet (super-packets by their full length)', () => {
    const r = sh(lab.lan[0]!, `head -c ${BULK} /dev/zero | socat -u - TCP:${WANHOST}:9000,sourceport=6001`, 60_000);
    expect(r.ok, r.stderr).toBe(true);
    const e = (JSON.parse(vm.cli('conntrack', '-L', '-p', 'tcp', '--sport', '6001', '--json').stdout) as any[]);
    expect(e).toHaveLength(1);
    const f = e[0];
    expect(f.bytesOut).toBeGreaterThan(BULK);
    expect(f.bytesOut - BULK).toBeLessThanOrEqual(f.packetsOut * 60); // IP + TCP headers (with options) of each packet
    expect(f.bytesIn).toBeGreaterThanOrEqual(f.packetsIn * 40); // ACKs: 40 bytes and options each
    expect(f.bytesIn).toBeLessThanOrEqual(f.packetsIn * 60);
  });

  it('03 the JSON listing and status carry it; memory per flow says what acct costs', () => {
    const [f] = JSON.parse(vm.cli('conntrack', '-L', '-p', 'udp', '--sport', '5001', '--json').stdout) as any[];
    expect(typeof f.bytesOut).toBe('number');
    expect(typeof f.bytesIn).toBe('number');
    // rpcd's conntrack method (the path LuCI uses), as rpcd runs the plugin: arguments on stdin
    const rp = lab.tryExec(lab.router, ['node', CLI, 'rpcd', 'call', 'conntrack', '--socket', vm.sock], { input: '{"proto":"udp","sport":5001}' });
    expect(rp.ok, rp.stderr).toBe(true);
    const answer = JSON.parse(rp.stdout);
    expect(answer.count).toBe(1);
    expect(answer.entries[0]).toMatchObject({ packetsOut: f.packetsOut, bytesOut: f.bytesOut, bytesIn: f.bytesIn });
    const s = vm.status();
    expect(s.flows).toMatchObject({ acct: true, max: 65536, bytesPerFlow: 72 });
    expect(vm.cli('status').stdout).toMatch(/^flows \d+\/65536 \(72 bytes\/flow with byte counters \(acct\),/m);
  });

  it('04 a restart with acct on keeps every byte count (state snapshot)', async () => {
    const before = counted();
    await vm.term();
    await vm.start();
    const after = counted();
    expect([after.orig, after.reply]).toEqual([before.orig, before.reply]);
  });

  it('05 reload switching acct off: the running table keeps its counters and a restart is asked for; the restart drops them and says so', async () => {
    vm.writeConfig('', "\toption acct '0'\n");
    const r = vm.cli('reload', '--json');
    expect(r.ok).toBe(true);
    expect(JSON.parse(r.stdout).restartNeeded).toContain('acct');
    expect(counted().line).toContain(' bytes=');
    expect(vm.status().flows.acct).toBe(true);
    await vm.term();
    await vm.start();
    expect(vm.cli('conntrack', '-L').stdout, `the flow did not come back; the router said:\n${vm.output.slice(-4000)}`).toContain('sport=5001');
    const c = counted();
    expect(c.line).not.toContain('bytes=');
    expect(c.orig.packets).toBeGreaterThanOrEqual(2); // the flow itself came back
    expect(vm.output).toMatch(/state restored, but acct is '0' now: the snapshot's byte counters are dropped/);
    expect(vm.status().flows).toMatchObject({ acct: false, bytesPerFlow: 56 });
  });
});
