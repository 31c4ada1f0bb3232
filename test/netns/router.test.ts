// vpnmasq between real namespaces over the real TUN path: two LAN hosts,
// the router running `vpnmasq run`, one WAN host with no route back to the
// LAN, so only masqueraded traffic can be answered.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import { udpAnswerer } from '../helpers/servers.js';
import type { Lab as LabT } from '../../src/lab/lab.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'ss', 'socat', 'tcpdump', 'traceroute', 'ping'] });

describe.skipIf(skip)('router in namespaces (real TUN path)', () => {
  let lab: LabT;
  let vm: RunningRouter;
  const WANHOST = '203.0.113.2';

  const sh = (ns: string, cmd: string, timeoutMs = 15_000) => lab.tryExec(ns, ['sh', '-c', cmd], { timeoutMs });
  /** One UDP question to the WAN echo server, asked up to three times (UDP may be lost on a loaded machine). */
  const ask = (ns: string, sport: number) =>
    sh(ns, `for i in 1 2 3; do a=$(echo hi | socat -t2 - UDP:${WANHOST}:9999,sourceport=${sport}); [ -n "$a" ] && break; done; echo "$a"`, 30_000);

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `rt${process.pid % 10000}` });
    vm = new RunningRouter(lab, `
config redirect
	option name 'web'
	option proto 'tcp'
	option src_dport '8080'
	option dest_ip '192.168.1.10'
	option dest_port '80'
config rule
	option name 'Allow-Ping'
	option src 'wan'
	option proto 'icmp'
	option icmp_type 'echo-request'
	option target 'ACCEPT'
`);
    await vm.start();
    // Echo servers on the WAN host that answer with the peer address they saw.
    lab.spawn(lab.wan[0]!, udpAnswerer(9999, '$SOCAT_PEERADDR port $SOCAT_PEERPORT'));
    lab.spawn(lab.wan[0]!, ['socat', 'TCP-LISTEN:9998,fork,reuseaddr', 'SYSTEM:echo $SOCAT_PEERADDR']);
    lab.spawn(lab.lan[0]!, ['socat', 'TCP-LISTEN:80,fork,reuseaddr', 'SYSTEM:echo lan1 saw $SOCAT_PEERADDR']);
    // Wait until the three servers listen: on a loaded machine a server that
    // is not up yet answers the first question with a port unreachable.
    const listening = (ns: string, flag: string, port: number) =>
      sh(ns, `ss -Hln${flag} 'sport = :${port}'`).stdout.trim() !== '';
    for (let i = 0; i < 100 && !(listening(lab.wan[0]!, 'u', 9999) && listening(lab.wan[0]!, 't', 9998) && listening(lab.lan[0]!, 't', 80)); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  });

  it('01 both LAN hosts ping the WAN host at once; one hop is lost', () => {
    const a = sh(lab.lan[0]!, `ping -c 3 -i 0.2 -W 2 ${WANHOST}`);
    const b = sh(lab.lan[1]!, `ping -c 3 -i 0.2 -W 2 ${WANHOST}`);
    expect(a.stdout).toContain('3 received');
    expect(b.stdout).toContain('3 received');
    expect(a.stdout).toMatch(/ttl=63/); // WAN host sends 64, the router is one hop
  });

  it('02 UDP from the LAN leaves from the WAN address and the reply comes back', () => {
    const r = ask(lab.lan[0]!, 5353);
    expect(r.stdout.trim()).toBe('203.0.113.1 port 5353');
    const r2 = ask(lab.lan[1]!, 5353);
    const [addr, , port] = r2.stdout.trim().split(' ');
    expect(addr).toBe('203.0.113.1');
    expect(Number(port)).toBeGreaterThanOrEqual(61000);
  });

  it('03 TCP from the LAN is masqueraded', () => {
    const r = sh(lab.lan[1]!, `socat -t2 - TCP:${WANHOST}:9998,connect-timeout=3 </dev/null`);
    expect(r.stdout.trim()).toBe('203.0.113.1');
    const ct = vm.cli('conntrack');
    expect(ct.stdout).toMatch(/tcp +6 \d+ \w+ src=192\.168\.1\.11 dst=203\.0\.113\.2 sport=\d+ dport=9998/);
  });

  it('04 an ICMP port unreachable from the WAN reaches the LAN socket', () => {
    const r = sh(lab.lan[0]!, `echo x | socat -t2 - UDP:${WANHOST}:9,sourceport=4444 2>&1; echo rc=$?`);
    expect(r.stdout).toMatch(/Connection refused/);
  });

  it('05 traceroute shows the router once, then the WAN host', () => {
    const r = sh(lab.lan[0]!, `traceroute -n -q 1 -w 2 -m 5 ${WANHOST}`, 30_000);
    const hops = r.stdout.trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/).slice(0, 2));
    expect(hops).toEqual([['1', '192.168.1.1'], ['2', WANHOST]]);
  });

  it('06 fragmented datagrams pass both ways (ping 4000 bytes)', () => {
    // Up to five echoes, two must come back: a loaded machine may lose one, a broken path loses all.
    const r = sh(lab.lan[1]!, `ping -c 5 -i 0.3 -W 3 -s 4000 ${WANHOST}`, 30_000);
    expect(Number(/(\d+) received/.exec(r.stdout)?.[1] ?? 0)).toBeGreaterThanOrEqual(2);
    // One 6000-byte datagram (five fragments), asked up to three times like ask().
    const big = sh(lab.lan[0]!, `for i in 1 2 3; do a=$(head -c 6000 /dev/zero | tr '\\0' a | socat -t2 -b 8000 - UDP:${WANHOST}:9999,sourceport=7000); [ -n "$a" ] && break; done; echo "$a"`, 30_000);
    expect(big.stdout.trim().split('\n')[0]).toBe('203.0.113.1 port 7000');
  });

  it('07 port forward: WAN tcp/8080 reaches 192.168.1.10:80', () => {
    const r = sh(lab.wan[0]!, `socat -t2 - TCP:203.0.113.1:8080,connect-timeout=3 </dev/null`);
    expect(r.stdout.trim()).toBe(`lan1 saw ${WANHOST}`);
  });

  it('08 unsolicited WAN traffic is refused: closed ports, LAN addresses, no answer', () => {
    const before = vm.status().drops;
    const r = sh(lab.wan[0]!, `socat -t1 - TCP:203.0.113.1:2222,connect-timeout=2 </dev/null`);
    expect(r.ok).toBe(false);
    expect(r.stderr).not.toMatch(/refused/i); // dropped, not reset
    sh(lab.wan[0]!, 'ip route replace 192.168.1.0/24 via 203.0.113.1');
    const p = sh(lab.wan[0]!, 'ping -c 2 -i 0.2 -W 1 192.168.1.10');
    expect(p.stdout).toContain(' 0 received');
    sh(lab.wan[0]!, 'ip route del 192.168.1.0/24');
    const after = vm.status().drops;
    expect((after.no_flow ?? 0)).toBeGreaterThan(before.no_flow ?? 0);
    expect((after.wan_to_lan ?? 0)).toBeGreaterThan(before.wan_to_lan ?? 0);
    // the Allow-Ping rule lets the router itself answer
    expect(sh(lab.wan[0]!, 'ping -c 1 -W 2 203.0.113.1').stdout).toContain('1 received');
  });

  it('09 reload: a bad file is refused and the running config stays', async () => {
    const { readFileSync, writeFileSync } = await import('node:fs');
    const good = readFileSync(vm.config, 'utf8');
    writeFileSync(vm.config, good + "\nconfig redirect\n\toption proto 'tcp'\n\toption src_dport '99999'\n");
    const r = vm.cli('reload');
    expect(r.ok).toBe(false);
    expect(r.stderr).toMatch(/vpnmasq: .*vpnmasq:\d+: .*99999/);
    expect(sh(lab.wan[0]!, `socat -t2 - TCP:203.0.113.1:8080,connect-timeout=3 </dev/null`).stdout.trim()).toBe(`lan1 saw ${WANHOST}`);
    writeFileSync(vm.config, good);
    expect(vm.cli('reload').ok).toBe(true);
  });

  it('10 a new WAN address: new flows use it within a second, old flows are flushed', async () => {
    ask(lab.lan[0]!, 6000);
    expect(vm.status().flows.active).toBeGreaterThan(0);
    lab.setWanAddress('203.0.113.5');
    await new Promise((r) => setTimeout(r, 1200));
    const r = ask(lab.lan[0]!, 6001);
    expect(r.stdout.trim()).toBe('203.0.113.5 port 6001');
    // the hotplug script's call answers with the address in use
    expect(vm.cli('wan-update').stdout).toContain('WAN address 203.0.113.5');
    const s = vm.status();
    expect(s.wanAddress).toBe('203.0.113.5');
    expect(s.counters.flowsFlushed).toBeGreaterThan(0);
    const flows = JSON.parse(vm.cli('conntrack', '--json').stdout);
    expect(flows.every((f: any) => f.wan === '203.0.113.5')).toBe(true);
    expect(flows.some((f: any) => f.lanPort === 6000)).toBe(false);
  });

  it('11 SIGTERM removes the routes, rules and TUN devices', async () => {
    expect(await vm.stop()).toBe(0);
    const rules = sh(lab.router, 'ip rule').stdout;
    expect(rules).toMatch(/^0:\s+from all lookup local/m);
    expect(rules).not.toMatch(/lookup 10[012]/);
    const links = sh(lab.router, 'ip -o link').stdout;
    expect(links).not.toMatch(/\btin\b|\btout\b/);
    expect(vm.output).toContain('routes and TUN devices removed');
  });
});
