// NAT loopback (fw4 `reflection` / `reflection_src`) through the real router
// in namespaces: a LAN host connects (TCP and UDP) to the WAN address at a
// forwarded port and reaches the server on another LAN host, which sees the
// router's LAN address (internal, the default) or the WAN address
// (external); the host's own socket only accepts answers from the address
// it called, so each answer proves the way back too. reflection '0' gets
// nothing (counted hairpin); a WAN host reaches the forwards as before; the
// router's own services on its addresses stay its own; the kernel side
// follows a new WAN address.
//
//   lan1 192.168.1.10: the server (socat answers each connection or datagram
//                      with the address it sees the client from)
//   lan2 192.168.1.11: the LAN client    lan3 192.168.1.12: another LAN host
//   wan1 203.0.113.2:  a WAN client
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import { udpAnswerer, waitListening } from '../helpers/servers.js';
import type { Lab as LabT } from '../../src/lab/lab.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'socat', 'nft', 'ss'] });
const SRV = '192.168.1.10';
const ROUTER_LAN = '192.168.1.1';

const REDIRECTS = `
config redirect 'web'
	option proto 'tcp'
	option src_dport '8080'
	option dest_ip '${SRV}'
	option dest_port '80'
config redirect 'echo'
	option proto 'udp'
	option src_dport '9000'
	option dest_ip '${SRV}'
config redirect 'web_ext'
	option proto 'tcp'
	option src_dport '8081'
	option dest_ip '${SRV}'
	option dest_port '81'
	option reflection_src 'external'
config redirect 'echo_ext'
	option proto 'udp'
	option src_dport '9001'
	option dest_ip '${SRV}'
	option reflection_src 'external'
config redirect 'closed'
	option proto 'tcp udp'
	option src_dport '8082'
	option dest_ip '${SRV}'
	option dest_port '82'
	option reflection '0'
`;

describe.skipIf(skip)('NAT loopback through the real router (namespaces)', () => {
  let lab: LabT;
  let vm: RunningRouter;
  let wanAddr = '203.0.113.1';

  const sh = (ns: string, cmd: string, timeoutMs = 20_000) => lab.tryExec(ns, ['sh', '-c', cmd], { timeoutMs });
  /** One TCP connection; what the server wrote back (its view of our address), '' when none. */
  const tcp = (ns: string, addr: string, port: number) =>
    sh(ns, `socat -T3 - TCP:${addr}:${port},connect-timeout=3 </dev/null`).stdout.trim();
  /**
   * One UDP exchange from a connected socket (answers from another address
   * are not taken), asked up to three times (UDP may be lost); each ask
   * waits 3 s for the answer, a deadline only.
   */
  const udp = (ns: string, addr: string, port: number) =>
    sh(ns, `for i in 1 2 3; do a=$(echo hi | socat -t3 - UDP:${addr}:${port}); [ -n "$a" ] && break; done; echo "$a"`, 30_000).stdout.trim();
  const drops = (reason: string): number => vm.status().drops?.[reason] ?? 0;

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `rf${process.pid % 10000}`, lanHosts: 3 });
    const server = lab.lan[0]!;
    for (const port of [80, 81, 82]) lab.spawn(server, ['socat', `TCP-LISTEN:${port},fork,reuseaddr`, 'SYSTEM:echo $SOCAT_PEERADDR']);
    for (const port of [9000, 9001, 8082]) lab.spawn(server, udpAnswerer(port, '$SOCAT_PEERADDR'));
    // the router's own services: one on the WAN address (not forwarded), one on its LAN address at a pool port
    lab.spawn(lab.router, ['socat', `TCP-LISTEN:7777,bind=${wanAddr},fork,reuseaddr`, 'SYSTEM:echo router-wan']);
    lab.spawn(lab.router, ['socat', `TCP-LISTEN:62000,bind=${ROUTER_LAN},fork,reuseaddr`, 'SYSTEM:echo router-lan']);
    // every server up before the first question (a datagram to a port nobody listens on yet is simply gone)
    await waitListening(lab, [
      ...[80, 81, 82].map((p) => [server, 't', p] as const), ...[9000, 9001, 8082].map((p) => [server, 'u', p] as const),
      [lab.router, 't', 7777], [lab.router, 't', 62000],
    ]);
    vm = new RunningRouter(lab, REDIRECTS);
    await vm.start();
    await new Promise((r) => setTimeout(r, 300));
  }, 60_000);

  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  });

  it('L1 TCP, reflection_src internal: the LAN client reaches the server through WAN:8080; the server sees the router\'s LAN address', () => {
    expect(tcp(lab.lan[1]!, wanAddr, 8080)).toBe(ROUTER_LAN);
    expect(tcp(lab.lan[2]!, wanAddr, 8080)).toBe(ROUTER_LAN);
    const ct = vm.cli('conntrack', '-L', '-p', 'tcp');
    expect(ct.stdout).toMatch(new RegExp(`src=192\\.168\\.1\\.11 dst=${wanAddr.replace(/\./g, '\\.')} sport=\\d+ dport=8080 .* src=${SRV.replace(/\./g, '\\.')} dst=192\\.168\\.1\\.1 sport=80 dport=\\d+ .*hairpin=internal`));
  });

  it('L2 UDP, internal: the answer comes back from WAN:9000', () => {
    expect(udp(lab.lan[1]!, wanAddr, 9000)).toBe(ROUTER_LAN);
  });

  it('L3 TCP and UDP, reflection_src external: the server sees the WAN address', () => {
    expect(tcp(lab.lan[1]!, wanAddr, 8081)).toBe(wanAddr);
    expect(udp(lab.lan[1]!, wanAddr, 9001)).toBe(wanAddr);
  });

  it('L4 the server reaching its own forward through the WAN address gets itself', () => {
    expect(tcp(lab.lan[0]!, wanAddr, 8080)).toBe(ROUTER_LAN);
  });

  it("L5 reflection '0': nothing reaches the server, counted hairpin", () => {
    const before = drops('hairpin');
    expect(tcp(lab.lan[1]!, wanAddr, 8082)).toBe('');
    expect(udp(lab.lan[1]!, wanAddr, 8082)).toBe('');
    expect(drops('hairpin')).toBeGreaterThan(before);
    // the server itself answers on 82 (the forward is there, only not reflected)
    expect(tcp(lab.lan[1]!, SRV, 82)).toBe('192.168.1.11');
  });

  it('L6 a WAN host still reaches the forwards as before (and sees no router address)', () => {
    expect(tcp(lab.wan[0]!, wanAddr, 8080)).toBe(lab.addr.wan[0]);
    expect(tcp(lab.wan[0]!, wanAddr, 8082)).toBe(lab.addr.wan[0]);
    expect(udp(lab.wan[0]!, wanAddr, 9000)).toBe(lab.addr.wan[0]);
  });

  it("L7 the router's own services stay its own: WAN address at an unforwarded port, LAN address at a pool port", () => {
    expect(tcp(lab.lan[1]!, wanAddr, 7777)).toBe('router-wan');
    expect(tcp(lab.lan[1]!, ROUTER_LAN, 62000)).toBe('router-lan');
    // the server's own sockets to the router from a port that is not its forwarded one are the router's too
    expect(sh(lab.lan[0]!, `socat -T3 - TCP:${ROUTER_LAN}:62000,sourceport=5555,connect-timeout=3 </dev/null`).stdout.trim()).toBe('router-lan');
  });

  it("L8 another LAN host sending to a hairpin flow's alias port (router LAN and WAN address) never reaches the client", async () => {
    // the client: a datagram to WAN:9000 from port 40000 (asked three times: UDP may be lost), listening 5 s;
    // its connected socket takes only datagrams from WAN:9000, which is what a
    // forged datagram the engine took for the server's would become
    const client = lab.spawn(lab.lan[1]!, ['sh', '-c', `(echo hi; sleep 1; echo hi; sleep 1; echo hi; sleep 3) | socat -T6 - UDP:${wanAddr}:9000,sourceport=40000`]);
    let got = '';
    client.stdout!.on('data', (d) => { got += d; });
    const done = new Promise((r) => client.once('exit', r));
    let alias = 0;
    for (let i = 0; i < 30 && !alias; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const flows = JSON.parse(vm.cli('conntrack', '-L', '-p', 'udp', '--json').stdout) as { lanPort: number; hairpin?: { wanPort: number }; aliasPort: number }[];
      alias = flows.find((f) => f.hairpin?.wanPort === 9000 && f.lanPort === 40000)?.aliasPort ?? 0;
    }
    expect(alias).toBeGreaterThanOrEqual(61000);
    // lan3, from its own address, at the server's port and another, to both router addresses
    for (const dst of [ROUTER_LAN, wanAddr]) {
      for (const sport of [9000, 5555]) sh(lab.lan[2]!, `echo forged | socat -u - UDP:${dst}:${alias},sourceport=${sport}`);
    }
    await done;
    // every datagram it got is the server's answer (up to one per ask), none is forged
    const lines = got.trim().split('\n').filter(Boolean);
    expect(lines.length).toBeGreaterThan(0);
    expect(new Set(lines)).toEqual(new Set([ROUTER_LAN]));
  }, 30_000);

  it('L9 a new WAN address: the kernel side follows it (hairpin to the new address works, to the old one not)', async () => {
    const old = wanAddr;
    lab.setWanAddress('203.0.113.9/24');
    wanAddr = '203.0.113.9';
    for (let i = 0; i < 50 && vm.status().wanAddress !== wanAddr; i++) await new Promise((r) => setTimeout(r, 100));
    expect(vm.status().wanAddress).toBe(wanAddr);
    const set = lab.tryExec(lab.router, ['nft', 'list', 'set', 'ip', 'vpnmasq', 'wan_addr']).stdout;
    expect(set).toContain(wanAddr);
    expect(set).not.toContain(old);
    expect(tcp(lab.lan[1]!, wanAddr, 8080)).toBe(ROUTER_LAN);
    expect(tcp(lab.lan[1]!, old, 8080)).toBe('');
  }, 60_000);

  it('L10 a reload that removes a forward stops diverting it; adding it back restores it', async () => {
    vm.writeConfig(REDIRECTS.replace(/config redirect 'web'\n(\t.*\n)+/, ''));
    expect(vm.cli('reload').ok).toBe(true);
    expect(lab.tryExec(lab.router, ['nft', 'list', 'chain', 'ip', 'vpnmasq', 'reflect']).stdout).not.toMatch(/\b8080\b/);
    expect(tcp(lab.lan[1]!, wanAddr, 8080)).toBe(''); // the router's own (nothing listens: refused)
    vm.writeConfig(REDIRECTS);
    expect(vm.cli('reload').ok).toBe(true);
    expect(tcp(lab.lan[1]!, wanAddr, 8080)).toBe(ROUTER_LAN);
  }, 60_000);

  it('L11 stop removes the NAT loopback rule and marks with the rest', async () => {
    await vm.term();
    expect(lab.tryExec(lab.router, ['ip', '-4', 'rule', 'show', 'pref', '15']).stdout.trim()).toBe('');
    expect(lab.tryExec(lab.router, ['nft', 'list', 'table', 'ip', 'vpnmasq']).ok).toBe(false);
  }, 60_000);
});
