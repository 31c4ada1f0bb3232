// Restart keeps state (issue 9), through the real router: `vpnmasq run` in
// the lab's router namespace is killed with -9 and started again with the
// same config; the flows it had are restored from its snapshot file, so a
// WAN server's data on an old TCP connection reaches the LAN host although
// the LAN host sent nothing since. Then: a reload with changed rules keeps
// the tables, a restart with another max_flows refuses the snapshot with
// one log line and works empty, --fresh discards it, and a hostile file is
// refused without a crash.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync, existsSync, statSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { udpAnswerer } from '../helpers/servers.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'socat', '/usr/bin/python3'] });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// A WAN server that answers "later <s> <tag>" with "line:<tag>" <s> seconds later.
const SERVER_PY = `
import socket, threading, time, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 7000)); s.listen(16)
print('ready', flush=True)
def serve(c):
    f = c.makefile('rb')
    line = f.readline().decode().split()
    if len(line) == 3 and line[0] == 'later':
        time.sleep(float(line[1]))
        c.sendall(('line:%s\\n' % line[2]).encode())
    time.sleep(30)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

// A LAN client: one request, then only reads. Prints what came back (JSON).
const CLIENT_PY = `
import socket, sys, json, time
srv, delay, tag, wait = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
c = socket.create_connection((srv, 7000), timeout=5)
c.sendall(('later %s %s\\n' % (delay, tag)).encode())
print(json.dumps({'connected': True, 'port': c.getsockname()[1]}), flush=True)
c.settimeout(wait)
t0 = time.monotonic()
try:
    got = c.recv(100).decode()
except Exception as e:
    got = 'error: %s' % e
print(json.dumps({'got': got, 'after_ms': int((time.monotonic() - t0) * 1000)}), flush=True)
`;

interface Client { proc: ChildProcess; lines: () => any[]; done: Promise<void> }

// The server's line comes 4 s after the request, as in the issue. If the
// restart (0.6-4.4 s on this shared machine) is not done by then, the line
// reaches the router while no vpnmasq runs: the fail-closed guard's input
// chain drops it unanswered (no RST from the router's own TCP stack), and
// the server's retransmission reaches the restarted vpnmasq.
const LINE_DELAY_S = 4;

describe.skipIf(skip)('restart keeps state (real TUN path, kill -9)', () => {
  let lab: LabT;
  let vm: RunningRouter;
  let WANHOST = '';
  const timings: Record<string, number>[] = [];

  const status = () => vm.status();

  function client(ns: string, delayS: number, tag: string, waitS = 25): Client {
    const proc = lab.spawn(ns, ['/usr/bin/python3', '-c', CLIENT_PY, WANHOST, String(delayS), tag, String(waitS)]);
    let out = '';
    proc.stdout!.on('data', (d) => { out += d; });
    proc.stderr!.on('data', (d) => { out += d; });
    const done = new Promise<void>((r) => proc.once('exit', () => r()));
    return { proc, done, lines: () => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)) };
  }

  /**
   * Waits until a snapshot copied after `since` (ms since the epoch) is on
   * disk: the header's wall-clock time of the copy (offset 40), read from
   * the file itself (not `vpnmasq status`: a CLI process costs up to a
   * second on a loaded machine, and the WAN server's clock is running).
   */
  async function snapshotAfter(since: number): Promise<void> {
    for (let i = 0; i < 300; i++) {
      try { if (readFileSync(vm.snapshotFile).readDoubleLE(40) > since) return; } catch { /* not yet */ }
      await sleep(20);
    }
    throw new Error(`no snapshot written after ${new Date(since).toISOString()}: ${JSON.stringify(status().snapshot)}`);
  }

  /** One UDP question to the WAN echo server, asked up to five times (a datagram may be lost on a loaded machine). */
  async function ask(ns: string, port: number): Promise<string> {
    const r = lab.tryExec(ns, ['sh', '-c',
      `for i in 1 2 3 4 5; do a=$(echo hi | socat -t2 - UDP:${WANHOST}:9999,sourceport=${port}); [ -n "$a" ] && break; done; echo "$a"`], { timeoutMs: 40_000 });
    if (!r.stdout.trim()) {
      const diag = ['ip rule', 'ip route show table all', 'ip link'].map((c) => `$ ${c}\n${lab.tryExec(lab.router, ['sh', '-c', c]).stdout}`).join('\n');
      const st = status();
      console.log(`ask ${ns}:${port} got nothing\n${diag}\n${JSON.stringify(st.counters)}\n${JSON.stringify(st.drops)}\n` +
        `${vm.output.split('\n').slice(-40).join('\n')}`);
    }
    return r.stdout.trim();
  }

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `rs${process.pid % 10000}`, lanHosts: 2, wanHosts: 1 });
    WANHOST = lab.addr.wan[0]!;
    vm = new RunningRouter(lab);
    await vm.start();
    const srv = lab.spawn(lab.wan[0]!, ['/usr/bin/python3', '-c', SERVER_PY]);
    let out = '';
    srv.stdout!.on('data', (d) => { out += d; });
    lab.spawn(lab.wan[0]!, udpAnswerer(9999, '$SOCAT_PEERADDR port $SOCAT_PEERPORT'));
    for (let i = 0; i < 50 && !out.includes('ready'); i++) await sleep(100);
  });

  afterAll(async () => {
    if (timings.length) console.log(`restart timings (ms from process start): ${JSON.stringify(timings)}`);
    await vm?.stop();
    lab?.destroy();
  });

  it('01 a TCP line the WAN server sends after kill -9 and restart reaches the LAN host, which sent nothing since', async () => {
    const c = client(lab.lan[0]!, LINE_DELAY_S, 'tcp1');
    for (let i = 0; i < 50 && c.lines().length === 0; i++) await sleep(100);
    expect(c.lines()[0], JSON.stringify(c.lines())).toMatchObject({ connected: true });
    const opened = Date.now();
    await snapshotAfter(opened);
    await vm.kill9();
    // what a kill -9 in the middle of a background write leaves: its temporary file, half written
    const halfWritten = `${vm.snapshotFile}.tmp-99999-3`;
    writeFileSync(halfWritten, 'VPNM');
    await vm.start();
    expect(existsSync(halfWritten)).toBe(false);
    expect(vm.output).toMatch(/half-written snapshot files of a killed run removed/);
    const st = status();
    timings.push(st.startup);
    expect(st.snapshot.restored, JSON.stringify(st.snapshot)).not.toBeNull();
    expect(st.snapshot.restored.entries.flows, JSON.stringify(st.snapshot)).toBeGreaterThanOrEqual(1);
    await c.done;
    const last = c.lines().pop();
    expect(last?.got, `${JSON.stringify(c.lines())}\n${vm.output.slice(-3000)}`).toBe('line:tcp1\n');
    // the conntrack of the new process shows the old connection
    expect(vm.cli('conntrack').stdout).toMatch(new RegExp(`tcp .*src=${lab.addr.lan[0]!.replace(/\./g, '\\.')} dst=${WANHOST.replace(/\./g, '\\.')} .*dport=7000`));
  });

  it('02 status says when the state was restored and how many entries each table had', () => {
    const st = status();
    expect(Date.parse(st.snapshot.restored.at)).toBeGreaterThan(0);
    expect(Date.parse(st.snapshot.restored.savedAt)).toBeLessThanOrEqual(Date.parse(st.snapshot.restored.at));
    expect(Object.keys(st.snapshot.restored.entries).sort()).toEqual(['bindings', 'calls', 'esp', 'flows', 'ike']);
    const text = vm.cli('status').stdout;
    expect(text).toMatch(/state restored at \S+ from .*snapshot-tin\.bin .*flows [1-9]/);
    // the tables say who talks to whom: root only
    expect(statSync(vm.snapshotFile).mode & 0o777).toBe(0o600);
    expect(statSync(vm.stateDir).mode & 0o777).toBe(0o700);
  });

  it('03 a reload with changed rules, redirects and timeouts keeps the tables', async () => {
    const before = vm.cli('conntrack', '--json');
    const flowsBefore = JSON.parse(before.stdout).filter((f: any) => f.remotePort === 7000);
    expect(flowsBefore.length).toBeGreaterThanOrEqual(1);
    vm.writeConfig(`
config rule
	option name 'Allow-Ping'
	option src 'wan'
	option proto 'icmp'
	option target 'ACCEPT'
config redirect
	option proto 'tcp'
	option src_dport '8080'
	option dest_ip '192.168.1.10'
	option dest_port '80'
`, `\toption udp_timeout '200'\n`);
    const r = vm.cli('reload');
    expect(r.ok, r.stderr).toBe(true);
    const after = JSON.parse(vm.cli('conntrack', '--json').stdout).filter((f: any) => f.remotePort === 7000);
    expect(after.map((f: any) => [f.lan, f.lanPort, f.aliasPort])).toEqual(flowsBefore.map((f: any) => [f.lan, f.lanPort, f.aliasPort]));
  });

  it('04 a restart with changed rules keeps the state too (a line after the restart still arrives)', async () => {
    const c = client(lab.lan[1]!, LINE_DELAY_S, 'tcp2');
    for (let i = 0; i < 50 && c.lines().length === 0; i++) await sleep(100);
    await snapshotAfter(Date.now());
    await vm.kill9();
    vm.writeConfig('', `\toption tcp_timeout '8000'\n`);
    await vm.start();
    const st = status();
    timings.push(st.startup);
    expect(st.snapshot.restored, JSON.stringify(st.snapshot)).not.toBeNull();
    await c.done;
    expect(c.lines().pop()?.got, vm.output.slice(-3000)).toBe('line:tcp2\n');
  });

  it('05 a restart with another max_flows refuses the snapshot with one log line and works empty', async () => {
    expect(await ask(lab.lan[0]!, 5353)).toBe('203.0.113.1 port 5353');
    await snapshotAfter(Date.now());
    await vm.term(); // clean stop: writes the snapshot, then a restart with 131072 flows
    expect(existsSync(vm.snapshotFile)).toBe(true);
    const outBefore = vm.output.length;
    vm.writeConfig('', `\toption max_flows '131072'\n`);
    await vm.start();
    const log = vm.output.slice(outBefore);
    const refused = log.split('\n').filter((l) => /state snapshot refused/.test(l));
    expect(refused.length, log).toBe(1);
    expect(refused[0]).toMatch(/max_flows 65536, configured 131072/);
    const st = status();
    expect(st.snapshot.restored).toBeNull();
    expect(st.snapshot.refused).toMatch(/max_flows/);
    expect(st.flows.active).toBe(0);
    expect(st.counters.espActive + st.counters.ikeActive + st.counters.callsActive).toBe(0);
    // and it works
    expect(await ask(lab.lan[0]!, 5354), vm.output.slice(outBefore).slice(-4000)).toBe('203.0.113.1 port 5354');
  });

  it('06 --fresh discards the snapshot', async () => {
    await snapshotAfter(Date.now());
    await vm.kill9();
    expect(existsSync(vm.snapshotFile)).toBe(true);
    await vm.start(['--fresh']);
    const st = status();
    expect(st.snapshot.restored).toBeNull();
    expect(st.snapshot.fresh).toBe(true);
    expect(st.flows.active).toBe(0);
    expect(vm.output).toMatch(/state snapshot discarded \(--fresh\)/);
  });

  it('07 hostile snapshot files are refused with one line each; vpnmasq starts empty and forwards', async () => {
    await vm.term();
    vm.writeConfig('', `\toption max_flows '131072'\n`);
    const good = readFileSync(vm.snapshotFile);
    expect(statSync(vm.snapshotFile).size).toBeGreaterThan(128);
    const flip = Buffer.from(good); flip[200] ^= 0x10;
    const cases: [string, Buffer][] = [
      ['truncated', good.subarray(0, Math.floor(good.length / 2))],
      ['bit-flipped', flip],
      ['garbage', Buffer.from('not a snapshot at all\n')],
    ];
    for (const [name, bytes] of cases) {
      writeFileSync(vm.snapshotFile, bytes);
      const outBefore = vm.output.length;
      await vm.start();
      const refused = vm.output.slice(outBefore).split('\n').filter((l) => /state snapshot refused/.test(l));
      expect(refused.length, `${name}: ${vm.output.slice(outBefore)}`).toBe(1);
      expect(status().flows.active, name).toBe(0);
      expect(await ask(lab.lan[1]!, 6000 + cases.findIndex((c) => c[0] === name))).toMatch(/^203\.0\.113\.1 port /);
      await vm.kill9();
    }
    await vm.start();
  });
});
