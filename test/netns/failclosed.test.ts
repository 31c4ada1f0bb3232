// Fail closed (issue 8, item 1): from the first start until the operator
// removes it, nothing crosses between the LAN and WAN devices except through
// vpnmasq's TUNs — also while vpnmasq is dead (kill -9), during the respawn
// back-off, before it is ready, and after a clean stop. The router's own
// traffic and LAN -> router traffic keep working meanwhile.
//
// vpnmasq runs under the real firmware/files/usr/sbin/vpnmasq-respawn (as
// in the image) in the lab's router namespace; tcpdump on the WAN host
// watches for any packet with a LAN source address (untranslated), tcpdump
// on a LAN host for echo requests coming straight from the WAN host.
//
// The second part: while vpnmasq is down, WAN packets to the WAN address are
// delivered to the router itself (rule 10's table points at the vanished
// TUN). Those that belong to translated traffic must be dropped silently, not
// answered with a RST or an ICMP port unreachable that kills the connection
// the restored state would carry on; the router's own connections and its
// services on the WAN address keep working.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { CLI, RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { udpAnswerer } from '../helpers/servers.js';

const RESPAWN = resolve(__dirname, '../../firmware/files/usr/sbin/vpnmasq-respawn');
const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'nft', 'tcpdump', 'socat', 'ping'] });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** tcpdump in a namespace: one line per captured packet. */
class Capture {
  readonly lines: string[] = [];
  private err = '';
  private proc!: ChildProcess;
  constructor(private readonly lab: LabT, private readonly ns: string, private readonly filter: string) {}

  async start(): Promise<this> {
    this.proc = this.lab.spawn(this.ns, ['tcpdump', '-n', '-l', '-i', 'eth0', this.filter]);
    let buf = '';
    this.proc.stdout!.on('data', (d) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop()!;
      this.lines.push(...parts.filter(Boolean));
    });
    this.proc.stderr!.on('data', (d) => { this.err += d; });
    for (let i = 0; i < 100 && !/listening on/.test(this.err); i++) await sleep(50);
    if (!/listening on/.test(this.err)) throw new Error(`tcpdump in ${this.ns} did not start: ${this.err}`);
    return this;
  }

  async stop(): Promise<string[]> {
    await sleep(300); // what is still in flight
    if (this.proc.exitCode === null) {
      this.proc.kill('SIGTERM');
      await new Promise((r) => this.proc.once('exit', r));
    }
    return this.lines;
  }
}

describe.skipIf(skip)('fail closed: the guard outlives vpnmasq (kill -9, respawn, clean stop, guard remove)', () => {
  let lab: LabT;
  let dir: string;
  let cfg: string;
  let respawn: ChildProcess;
  let respawnOut = '';
  const WANHOST = '203.0.113.2';
  const LAN1 = '192.168.1.10';

  const sh = (ns: string, cmd: string, timeoutMs = 15_000) => lab.tryExec(ns, ['sh', '-c', cmd], { timeoutMs });
  const cli = (...args: string[]) => lab.tryExec(lab.router, ['node', CLI, ...args, '--config', cfg], { timeoutMs: 20_000 });
  const status = (): { pid: number } | null => {
    const r = cli('status', '--json');
    return r.ok ? JSON.parse(r.stdout) : null;
  };
  const guard = () => {
    const r = cli('guard', 'status', '--json');
    return { code: r.status, ...(JSON.parse(r.stdout || '{}') as { installed?: boolean; droppedLanToWan?: number; droppedWanToLan?: number }) };
  };
  const received = (out: string) => Number(/(\d+) received/.exec(out)?.[1] ?? -1);

  async function waitReady(notPid: number | null, ms = 60_000): Promise<number> {
    const end = Date.now() + ms;
    for (;;) {
      const s = status();
      if (s && s.pid !== notPid) return s.pid;
      if (Date.now() > end) throw new Error(`vpnmasq not ready again within ${ms} ms\n${respawnOut.slice(-3000)}`);
      await sleep(100);
    }
  }

  /** What must keep working while vpnmasq is down: the router's own and LAN -> router traffic. */
  function expectRouterServicesWork(): void {
    expect(received(sh(lab.router, `ping -c 2 -i 0.2 -W 2 ${WANHOST}`).stdout), 'router -> WAN host').toBe(2);
    expect(received(sh(lab.lan[0]!, 'ping -c 2 -i 0.2 -W 2 192.168.1.1').stdout), 'LAN -> router').toBe(2);
    expect(sh(lab.lan[1]!, 'socat -t2 - TCP:192.168.1.1:2222,connect-timeout=3 </dev/null').stdout.trim(), 'LAN -> router TCP').toBe('router here');
  }

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `fc${process.pid % 10000}` });
    dir = mkdtempSync(join(tmpdir(), 'vpnmasq-fc-'));
    cfg = join(dir, 'vpnmasq');
    writeFileSync(cfg, `config vpnmasq 'main'
	option lan_device 'br-lan'
	option wan_device 'wan'
	option enabled '1'
	option log_level 'info'
	option control_socket '${join(dir, 'vpnmasq.sock')}'
	option snapshot_dir '${join(dir, 'state')}'
`);
    const bin = join(dir, 'vpnmasq-bin');
    // The wrapper restarts vpnmasq at once after a crash (issue 9); every
    // `run` after the first waits 3 s here, as a start that is not ready yet
    // would: a window in which nothing runs.
    writeFileSync(bin, `#!/bin/sh
if [ "$1" = run ]; then [ -e "${dir}/started" ] && sleep 3; : > "${dir}/started"; fi
exec "${process.execPath}" "${CLI}" "$@"
`);
    chmodSync(bin, 0o755);
    respawn = lab.spawn(lab.router, ['sh', RESPAWN, '--config', cfg], {
      env: { ...process.env, VPNMASQ_BIN: bin, VPNMASQ_RESPAWN_SCALE: '3' },
    });
    respawn.stdout!.on('data', (d) => { respawnOut += d; });
    respawn.stderr!.on('data', (d) => { respawnOut += d; });
    await waitReady(null);
    lab.spawn(lab.wan[0]!, udpAnswerer(9999, '$SOCAT_PEERADDR'));
    lab.spawn(lab.router, ['socat', 'TCP-LISTEN:2222,bind=192.168.1.1,fork,reuseaddr', 'SYSTEM:echo router here']);
    // The WAN host knows a route to the LAN: only the router can keep it out.
    lab.exec(lab.wan[0]!, ['ip', 'route', 'add', '192.168.1.0/24', 'via', '203.0.113.1']);
    await sleep(300);
  }, 90_000);

  afterAll(async () => {
    if (respawn && respawn.exitCode === null) {
      respawn.kill('SIGTERM');
      await new Promise((r) => respawn.once('exit', r));
    }
    lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  it('01 vpnmasq run installs the guard; LAN traffic leaves translated', async () => {
    expect(guard()).toMatchObject({ code: 0, installed: true, lanDevice: 'br-lan', wanDevice: 'wan' });
    const wanSees = await new Capture(lab, lab.wan[0]!, 'src net 192.168.1.0/24').start();
    const r = sh(lab.lan[0]!, `ping -c 3 -i 0.2 -W 2 ${WANHOST}`);
    expect(received(r.stdout), r.stdout).toBe(3);
    expect(await wanSees.stop()).toEqual([]);
  });

  it('02 kill -9 under traffic: closed both ways until the respawned vpnmasq is ready, the router keeps working, then open again', async () => {
    const wanSees = await new Capture(lab, lab.wan[0]!, 'src net 192.168.1.0/24').start();
    const lanSees = await new Capture(lab, lab.lan[0]!, `src host ${WANHOST} and icmp[icmptype] == icmp-echo`).start();
    // traffic both ways, all the time
    const out = lab.spawn(lab.lan[0]!, ['ping', '-n', '-i', '0.05', WANHOST]);
    const inward = lab.spawn(lab.wan[0]!, ['ping', '-n', '-i', '0.05', LAN1]);
    const before = guard();
    try {
      await sleep(500);
      const pid = status()!.pid;
      process.kill(pid, 'SIGKILL'); // our own child's child: the vpnmasq this test started
      for (let i = 0; i < 100 && status() !== null; i++) await sleep(50);
      expect(status()).toBeNull();
      expect(sh(lab.router, 'ip -o link show type tun').stdout).toBe(''); // the TUNs went with the process

      // down: the router's own traffic and LAN -> router still work
      expectRouterServicesWork();
      // lan2 pings meanwhile: the first respawn is immediate (state restore),
      // so some may already be answered by the new vpnmasq, translated; the
      // captures below prove none crossed untranslated.
      sh(lab.lan[1]!, `ping -c 3 -i 0.2 -W 1 ${WANHOST}`);

      await waitReady(pid);
      await sleep(1000); // traffic through the new vpnmasq
    } finally {
      out.kill('SIGINT');
      inward.kill('SIGINT');
    }
    // Nothing crossed untranslated, in either direction, at any time.
    expect(await wanSees.stop()).toEqual([]);
    expect(await lanSees.stop()).toEqual([]);
    const after = guard();
    expect(after.droppedLanToWan!, 'the guard dropped LAN -> WAN').toBeGreaterThan(before.droppedLanToWan!);
    expect(after.droppedWanToLan!, 'the guard dropped WAN -> LAN').toBeGreaterThan(before.droppedWanToLan!);
    expect(respawnOut).toMatch(/vpnmasq was killed by signal 9/);

    // open again, translated
    // (asked up to three times: UDP may be lost on a loaded machine)
    const again = sh(lab.lan[1]!, `for i in 1 2 3; do a=$(echo hi | socat -t2 - UDP:${WANHOST}:9999); [ -n "$a" ] && break; done; echo "$a"`, 30_000);
    expect(again.stdout.trim()).toBe('203.0.113.1');
    expect(received(sh(lab.lan[0]!, `ping -c 3 -i 0.2 -W 2 ${WANHOST}`).stdout)).toBe(3);
  }, 120_000);

  it('03 a clean stop removes the routes but keeps the guard (also against a WAN host spoofing a LAN source)', async () => {
    respawn.kill('SIGTERM');
    await new Promise((r) => respawn.once('exit', r));
    expect(respawnOut).toMatch(/stopped; vpnmasq exited with code 0/);
    const rules = sh(lab.router, 'ip rule').stdout;
    expect(rules).toMatch(/^0:\s+from all lookup local/m);
    expect(rules).not.toMatch(/lookup 10[012]/);
    expect(guard()).toMatchObject({ code: 0, installed: true });

    const wanSees = await new Capture(lab, lab.wan[0]!, 'src net 192.168.1.0/24').start();
    const lanSees = await new Capture(lab, lab.lan[0]!, `icmp[icmptype] == icmp-echo and not src host ${LAN1}`).start();
    expect(received(sh(lab.lan[0]!, `ping -c 3 -i 0.2 -W 1 ${WANHOST}`).stdout)).toBe(0);
    expect(received(sh(lab.wan[0]!, `ping -c 3 -i 0.2 -W 1 ${LAN1}`).stdout)).toBe(0);
    // the attacker's variant: a WAN host that claims a LAN source address
    lab.exec(lab.wan[0]!, ['ip', 'addr', 'add', '192.168.1.99/32', 'dev', 'eth0']);
    try {
      expect(received(sh(lab.wan[0]!, `ping -c 3 -i 0.2 -W 1 -I 192.168.1.99 ${LAN1}`).stdout)).toBe(0);
    } finally {
      lab.exec(lab.wan[0]!, ['ip', 'addr', 'del', '192.168.1.99/32', 'dev', 'eth0']);
    }
    expect((await wanSees.stop()).filter((l) => !l.includes('192.168.1.99'))).toEqual([]);
    expect(await lanSees.stop()).toEqual([]);
    expectRouterServicesWork();
  }, 60_000);

  it('04 `vpnmasq guard remove` opens the kernel path; `guard install` (as the init scripts run it) closes it again', async () => {
    const rm = cli('guard', 'remove');
    expect(rm.ok, rm.stderr).toBe(true);
    expect(rm.stdout).toMatch(/guard removed/);
    expect(guard()).toMatchObject({ code: 3, installed: false });
    expect(cli('guard', 'remove').stdout).toMatch(/no guard installed/);
    // Without it the kernel forwards untranslated: what the guard was keeping out.
    const wanSees = await new Capture(lab, lab.wan[0]!, 'src net 192.168.1.0/24').start();
    expect(received(sh(lab.lan[0]!, `ping -c 2 -i 0.2 -W 2 ${WANHOST}`).stdout)).toBe(2);
    expect((await wanSees.stop()).some((l) => l.includes(`${LAN1} > ${WANHOST}`))).toBe(true);

    const inst = cli('guard', 'install');
    expect(inst.ok, inst.stderr).toBe(true);
    expect(inst.stdout).toMatch(/guard installed: no forwarding between br-lan and wan/);
    expect(cli('guard', 'install').stdout).toMatch(/already installed/);
    expect(received(sh(lab.lan[0]!, `ping -c 2 -i 0.2 -W 1 ${WANHOST}`).stdout)).toBe(0);
  }, 60_000);

  it('05 guard install from a config that does not validate: the devices as written, the error named', () => {
    expect(cli('guard', 'remove').ok).toBe(true);
    const bad = join(dir, 'bad');
    writeFileSync(bad, `config vpnmasq 'main'
	option lan_device 'br-lan'
	option wan_device "wan"
	option max_flows 'lots'
`);
    const r = sh(lab.router, `node ${CLI} guard install --config ${bad} 2>&1`);
    expect(r.ok, r.stderr).toBe(true);
    expect(r.stdout).toMatch(new RegExp(`^vpnmasq: ${bad}:4: .*max_flows.*\\(guard installed from lan_device/wan_device as written\\)$`, 'm'));
    expect(guard()).toMatchObject({ code: 0, installed: true, lanDevice: 'br-lan', wanDevice: 'wan' });
    // no devices at all: refused, nothing installed
    writeFileSync(bad, "config vpnmasq 'main'\n\toption max_flows 'lots'\n");
    expect(cli('guard', 'remove').ok).toBe(true);
    const none = sh(lab.router, `node ${CLI} guard install --config ${bad} 2>&1`);
    expect(none.ok).toBe(false);
    expect(none.stdout).toMatch(/^vpnmasq: guard install: .*bad:\d+: /);
    expect(guard()).toMatchObject({ code: 3, installed: false });
  });
});

// A WAN server: echoes each line as "echo:<line>"; a line "push <text>" on
// its control port 7001 (loopback of the WAN host) sends "<text>" on every
// connection it holds and answers "pushed <n>".
const PUSH_SERVER_PY = `
import socket, threading
conns = []
lock = threading.Lock()
def serve(c):
    with lock: conns.append(c)
    f = c.makefile('rb')
    for line in f:
        c.sendall(b'echo:' + line)
def control():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('127.0.0.1', 7001)); s.listen(4)
    while True:
        c, _ = s.accept()
        text = c.makefile('rb').readline().decode().split(' ', 1)[1].strip()
        n = 0
        with lock:
            for k in conns:
                try: k.sendall((text + '\\n').encode()); n += 1
                except Exception: pass
        c.sendall(('pushed %d\\n' % n).encode()); c.close()
threading.Thread(target=control, daemon=True).start()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 7000)); s.listen(16)
print('ready', flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

// A client that holds one connection: "hello" and its echo, then it only
// reads until a pushed line comes, then "after" and its echo. One JSON line
// per step.
const PUSH_CLIENT_PY = `
import socket, sys, json
c = socket.create_connection((sys.argv[1], 7000), timeout=10)
f = c.makefile('rb')
def say(o): print(json.dumps(o), flush=True)
try:
    c.sendall(b'hello\\n')
    say({'connected': f.readline().decode() == 'echo:hello\\n', 'port': c.getsockname()[1]})
    c.settimeout(float(sys.argv[2]))
    say({'got': f.readline().decode()})
    c.sendall(b'after\\n')
    say({'echo': f.readline().decode()})
except Exception as e:
    say({'error': '%s: %s' % (type(e).__name__, e)})
`;

describe.skipIf(skip || skipUnless({ tools: ['/usr/bin/python3'] }))('fail closed toward the router: while vpnmasq is down nothing answers translated traffic on the WAN address', () => {
  let lab: LabT;
  let vm: RunningRouter;
  const WANHOST = '203.0.113.2';
  const WANADDR = '203.0.113.1';
  const KEPT = 40123; // a LAN host's UDP source port that vpnmasq keeps

  const sh = (ns: string, cmd: string, timeoutMs = 20_000) => lab.tryExec(ns, ['sh', '-c', cmd], { timeoutMs });
  const guard = () => {
    const r = lab.tryExec(lab.router, ['node', CLI, 'guard', 'status', '--json', '--config', vm.config]);
    return { code: r.status, ...(JSON.parse(r.stdout || '{}') as { installed?: boolean; wanInput?: string; droppedWanToRouter?: number }) };
  };
  /** A UDP question, asked up to three times (a datagram may be lost on a loaded machine). */
  const ask = (ns: string, target: string, extra = '') => {
    const a = sh(ns, `for i in 1 2 3; do a=$(echo hi | socat -t2 - UDP:${target}${extra}); [ -n "$a" ] && break; done; echo "$a"`, 30_000).stdout.trim();
    if (!a) console.log(`no answer from ${target}:\n${sh(lab.router, 'nft list table ip vpnmasq_guard; ss -uanp; ip rule; ip -o link').stdout}\n${vm.output.slice(-2000)}`);
    return a;
  };

  function client(ns: string, waitS: number) {
    const proc = lab.spawn(ns, ['/usr/bin/python3', '-c', PUSH_CLIENT_PY, WANHOST, String(waitS)]);
    let out = '';
    proc.stdout!.on('data', (d) => { out += d; });
    proc.stderr!.on('data', (d) => { out += d; });
    const done = new Promise<void>((r) => proc.once('exit', () => r()));
    const lines = () => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    return { proc, done, lines, raw: () => out };
  }
  async function until(what: string, f: () => boolean, ms = 15_000): Promise<void> {
    for (const end = Date.now() + ms; !f(); await sleep(50)) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
  }
  /** Waits for a snapshot copied after `since` (the header's wall time at offset 40). */
  async function snapshotAfter(since: number): Promise<void> {
    await until('a snapshot', () => {
      try { return readFileSync(vm.snapshotFile).readDoubleLE(40) > since; } catch { return false; }
    });
  }

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `fr${process.pid % 10000}`, lanHosts: 2, wanHosts: 1 });
    // The router is a VPN endpoint: IKE on its WAN address is accepted.
    vm = new RunningRouter(lab, `
config rule
	option name 'Allow-IKE'
	option src 'wan'
	option proto 'udp'
	option dest_port '500'
	option target 'ACCEPT'
config rule
	option name 'Allow-Service'
	option src 'wan'
	option proto 'udp'
	option dest_port '5001'
	option target 'ACCEPT'
`);
    await vm.start();
    const srv = lab.spawn(lab.wan[0]!, ['/usr/bin/python3', '-c', PUSH_SERVER_PY]);
    let out = '';
    srv.stdout!.on('data', (d) => { out += d; });
    srv.stderr!.on('data', (d) => { out += d; });
    lab.spawn(lab.wan[0]!, udpAnswerer(9999, '$SOCAT_PEERADDR port $SOCAT_PEERPORT'));
    lab.spawn(lab.router, udpAnswerer(500, 'router ike'));
    lab.spawn(lab.router, udpAnswerer(5001, 'router service'));
    await until('the WAN server', () => out.includes('ready'));
  }, 60_000);

  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  }, 30_000);

  it('06 kill -9: no RST, no port unreachable from the router; the router and its services keep working; after the restart the connection carries on', async () => {
    // A LAN host's TCP connection through vpnmasq, the router's own, and a LAN host's UDP flow on a kept port.
    const lanClient = client(lab.lan[0]!, 40);
    const routerClient = client(lab.router, 40);
    await until('both connections', () => lanClient.lines().length > 0 && routerClient.lines().length > 0)
      .catch((e) => { throw new Error(`${e.message}: ${lanClient.raw()} | ${routerClient.raw()}`); });
    expect(lanClient.lines()[0], lanClient.raw()).toMatchObject({ connected: true });
    expect(routerClient.lines()[0], routerClient.raw()).toMatchObject({ connected: true });
    expect(ask(lab.lan[1]!, `${WANHOST}:9999`, `,sourceport=${KEPT}`)).toBe(`${WANADDR} port ${KEPT}`);
    await snapshotAfter(Date.now());

    const answers = await new Capture(lab, lab.wan[0]!,
      `src host ${WANADDR} and ((tcp[tcpflags] & tcp-rst) != 0 or icmp[icmptype] == icmp-unreach)`).start();
    await vm.kill9();
    expect(sh(lab.router, 'ip -o link show type tun').stdout).toBe(''); // the TUNs went with the process
    try {
      // The server speaks on both connections while nothing translates.
      expect(sh(lab.wan[0]!, 'echo "push push:one" | socat -t5 - TCP:127.0.0.1:7001').stdout.trim()).toBe('pushed 2');
      // The router's own connection, opened while vpnmasq ran, carries on.
      await until('the push on the router\'s own connection', () => routerClient.lines().length >= 3, 10_000);
      expect(routerClient.lines().slice(1)).toEqual([{ got: 'push:one\n' }, { echo: 'echo:after\n' }]);
      // A new connection of the router's own, and its services seen from the WAN.
      expect(sh(lab.router, `echo new | socat -t3 - TCP:${WANHOST}:7000,connect-timeout=5`).stdout).toBe('echo:new\n');
      expect(ask(lab.wan[0]!, `${WANADDR}:500`)).toBe('router ike');
      expect(ask(lab.wan[0]!, `${WANADDR}:5001`)).toBe('router service');
      // Translated UDP (the kept port and one of the pool) and TCP to a pool port: no answer.
      sh(lab.wan[0]!, `echo x | socat -t1 - UDP:${WANADDR}:${KEPT},sourceport=9998`);
      sh(lab.wan[0]!, `echo x | socat -t1 - UDP:${WANADDR}:61111,sourceport=9998`);
      sh(lab.wan[0]!, `socat -t1 - TCP:${WANADDR}:61112,connect-timeout=1 </dev/null`);
      await sleep(1500); // the server retransmits its line meanwhile (RTO 0.2 s, doubling)
      expect(lanClient.lines().length, 'nothing reaches the LAN host while vpnmasq is down').toBe(1);
      expect(await answers.stop(), 'what the router answered').toEqual([]);
      expect(guard().droppedWanToRouter!, 'the guard dropped it').toBeGreaterThan(0);
    } finally {
      await answers.stop();
    }

    // The restarted vpnmasq restores the mapping and the retransmitted line arrives.
    await vm.start();
    expect(vm.status().snapshot.restored, JSON.stringify(vm.status().snapshot)).not.toBeNull();
    await Promise.race([lanClient.done, sleep(30_000)]);
    expect(lanClient.lines().slice(1), `${lanClient.raw()}\n${vm.output.slice(-3000)}`).toEqual([{ got: 'push:one\n' }, { echo: 'echo:after\n' }]);
  }, 120_000);

  it('07 while vpnmasq runs the guard does not touch what it hands to the router (iif tout): the service answers, the counter stays', async () => {
    const before = guard();
    expect(before).toMatchObject({ code: 0, installed: true, wanInput: 'socket' });
    // (not the plain-text "IKE" service: vpnmasq drops a UDP 500 datagram that is no ISAKMP message)
    expect(ask(lab.wan[0]!, `${WANADDR}:5001`)).toBe('router service');
    expect(sh(lab.router, `echo new | socat -t3 - TCP:${WANHOST}:7000,connect-timeout=5`).stdout, 'the router\'s own TCP through vpnmasq').toBe('echo:new\n');
    expect(ask(lab.lan[1]!, `${WANHOST}:9999`, `,sourceport=${KEPT + 1}`)).toBe(`${WANADDR} port ${KEPT + 1}`);
    expect(guard().droppedWanToRouter).toBe(before.droppedWanToRouter);
  }, 60_000);
});
