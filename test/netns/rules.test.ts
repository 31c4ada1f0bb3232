// Issue 8 item 2 through the real router: `vpnmasq run` in a namespace lab
// (two LAN hosts, two WAN hosts that can also route to the LAN subnet), one
// config holding a rule of every shape the schema accepts, and a table of
// rows: each rule shape × a packet it matches and a packet it does not,
// sent from a real host, counted where it would arrive (an nftables counter
// in the receiving namespace) and in vpnmasq's drop reasons. Shapes
// vpnmasq cannot enforce are refused with FILE:LINE at check-config and at
// reload, while the running rules stay in force.
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'socat', 'nft', 'ping'] });

const LAN1 = '192.168.1.10';
const LAN2 = '192.168.1.11';
const WAN1 = '203.0.113.2';
const WAN2 = '203.0.113.3';
const ROUTER = '203.0.113.1';

const CONFIG = `
config redirect
	option proto 'udp'
	option src_dport '5000'
	option dest_ip '${LAN1}'
	option dest_port '5001'

# input (WAN -> router)
config rule
	option name 'I1'
	option src 'wan'
	option src_ip '${WAN1}'
	option proto 'udp'
	option dest_port '7000'
	option target 'ACCEPT'
config rule
	option name 'I2'
	option src 'wan'
	option proto 'tcp'
	option src_port '2000-2999'
	option dest_port '7001'
	option target 'ACCEPT'
config rule
	option name 'I3'
	option src 'wan'
	option src_ip '${WAN2}'
	option proto 'icmp'
	option icmp_type 'echo-request'
	option target 'ACCEPT'

# forward WAN -> LAN (routed, and after DNAT)
config rule
	option name 'F1'
	option src 'wan'
	option dest 'lan'
	option dest_ip '${LAN2}'
	option proto 'tcp'
	option dest_port '22'
	option target 'DROP'
config rule
	option name 'F2'
	option src 'wan'
	option dest 'lan'
	option dest_ip '${LAN2}'
	option proto 'all'
	option target 'ACCEPT'
config rule
	option name 'F3'
	option src 'wan'
	option dest 'lan'
	option dest_ip '${LAN1}'
	option proto 'udp'
	option dest_port '9443'
	option target 'ACCEPT'
config rule
	option name 'F4'
	option src 'wan'
	option dest 'lan'
	option src_ip '${WAN2}'
	option dest_ip '${LAN1}'
	option proto 'udp'
	option dest_port '5001'
	option target 'DROP'

# forward LAN -> WAN
config rule
	option name 'O1'
	option src 'lan'
	option dest 'wan'
	option src_ip '${LAN2}'
	option dest_ip '${WAN2}'
	option proto 'all'
	option target 'DROP'
config rule
	option name 'O2'
	option src 'lan'
	option dest 'wan'
	option proto 'tcp'
	option src_port '4000-4999'
	option dest_port '9998'
	option target 'REJECT'
config rule
	option name 'O3'
	option src 'lan'
	option dest 'wan'
	option src_ip '${LAN2}'
	option proto 'udp'
	option dest_port '500'
	option target 'DROP'
config rule
	option name 'O4'
	option src 'lan'
	option dest 'wan'
	option src_ip '${LAN1}'
	option proto 'esp'
	option target 'DROP'
config rule
	option name 'O5'
	option src 'lan'
	option dest 'wan'
	option src_ip '${LAN1}'
	option dest_ip '${WAN2}'
	option proto 'icmp'
	option icmp_type 'echo-request'
	option target 'DROP'
`;

/** An ISAKMP header (IKEv1 main mode, 28 bytes) plus 8 bytes, as a UDP payload. */
function isakmp(cookieByte: number): Buffer {
  const b = Buffer.alloc(36);
  b.fill(cookieByte, 0, 8);
  b[16] = 1; b[17] = 0x10; b[18] = 2; b.writeUInt32BE(36, 24);
  return b;
}
/** An ESP packet's payload: SPI, sequence number, 16 bytes. */
function espPayload(spi: number): Buffer {
  const b = Buffer.alloc(24, 0x5a);
  b.writeUInt32BE(spi, 0); b.writeUInt32BE(1, 4);
  return b;
}

describe.skipIf(skip)('rules through the real router: each shape × a matching and a non-matching packet', () => {
  let lab: LabT;
  let vm: RunningRouter;
  let ns: Record<string, string>;

  const sh = (where: string, cmd: string, input?: string | Buffer) => lab.tryExec(where, ['sh', '-c', cmd], { timeoutMs: 15_000, input });

  /** Counts what arrives in `where` matching the nft expression `expr`, while `send` runs (up to `tries` times until it counts). */
  async function arrivals(where: string, expr: string, send: () => void, tries: number): Promise<number> {
    lab.exec(where, ['nft', 'flush', 'chain', 'ip', 'vt', 'c']);
    lab.exec(where, ['sh', '-c', `nft add rule ip vt c ${expr} counter`]);
    let n = 0;
    for (let i = 0; i < tries && n === 0; i++) {
      send();
      for (let w = 0; w < 10 && n === 0; w++) {
        await new Promise((r) => setTimeout(r, 100));
        n = Number(/counter packets (\d+)/.exec(lab.exec(where, ['nft', 'list', 'chain', 'ip', 'vt', 'c']))?.[1] ?? 0);
      }
    }
    return n;
  }
  const drops = (reason: string) => Number(vm.status().drops?.[reason] ?? 0);

  /** The matching packet arrives (UDP may be lost: up to three tries); the other does not, and vpnmasq counts why. */
  async function row(o: {
    to: string; toOther?: string; expr: (what: 'match' | 'other') => string;
    match: () => void; other: () => void; reason: string;
  }): Promise<void> {
    expect(await arrivals(o.to, o.expr('match'), o.match, 3), 'the matching packet arrives').toBeGreaterThan(0);
    const before = drops(o.reason);
    expect(await arrivals(o.toOther ?? o.to, o.expr('other'), o.other, 2), 'the other packet does not arrive').toBe(0);
    expect(drops(o.reason) - before, `counted as ${o.reason}`).toBeGreaterThan(0);
  }

  const udpSend = (from: string, dst: string, dport: number, sport: number, data: string | Buffer = 'x') =>
    () => { sh(from, `socat -u - UDP4-SENDTO:${dst}:${dport},sourceport=${sport}`, data); };
  const synSend = (from: string, dst: string, dport: number, sport: number) =>
    () => { sh(from, `socat -u /dev/null TCP4:${dst}:${dport},sourceport=${sport},connect-timeout=1 2>/dev/null; true`); };
  const ping = (from: string, dst: string) => () => { sh(from, `ping -c 1 -W 1 ${dst} >/dev/null; true`); };
  const espSend = (from: string, dst: string, spi: number) => () => { sh(from, `socat -u - IP4-SENDTO:${dst}:50`, espPayload(spi)); };

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `ru${process.pid % 10000}`, lanHosts: 2, wanHosts: 2 });
    ns = { lan1: lab.lan[0]!, lan2: lab.lan[1]!, wan1: lab.wan[0]!, wan2: lab.wan[1]!, router: lab.router };
    // The WAN hosts may route to the LAN subnet through the router (for the routed rows).
    for (const w of [ns.wan1, ns.wan2]) lab.exec(w, ['ip', 'route', 'add', '192.168.1.0/24', 'via', ROUTER]);
    // A counting chain in every namespace a packet may arrive in.
    for (const n of Object.values(ns)) {
      lab.exec(n, ['nft', 'add', 'table', 'ip', 'vt']);
      lab.exec(n, ['sh', '-c', "nft 'add chain ip vt c { type filter hook input priority 0; policy accept; }'"]);
    }
    vm = new RunningRouter(lab, CONFIG);
    await vm.start();
  });

  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  });

  it('I1 input, src_ip + dest_port ACCEPT: WAN1 reaches router:7000, WAN2 does not', () => row({
    to: ns.router, expr: (w) => `ip saddr ${w === 'match' ? WAN1 : WAN2} udp dport 7000`,
    match: udpSend(ns.wan1, ROUTER, 7000, 3333), other: udpSend(ns.wan2, ROUTER, 7000, 3333), reason: 'no_flow',
  }));

  it('I2 input, src_port + dest_port ACCEPT: from port 2500 in, from 3500 not', () => row({
    to: ns.router, expr: (w) => `tcp sport ${w === 'match' ? 2500 : 3500} tcp dport 7001`,
    match: synSend(ns.wan1, ROUTER, 7001, 2500), other: synSend(ns.wan1, ROUTER, 7001, 3500), reason: 'no_flow',
  }));

  it('I3 input, icmp_type + src_ip ACCEPT: WAN2\'s ping reaches the router, WAN1\'s does not', () => row({
    to: ns.router, expr: (w) => `ip saddr ${w === 'match' ? WAN2 : WAN1} icmp type echo-request`,
    match: ping(ns.wan2, ROUTER), other: ping(ns.wan1, ROUTER), reason: 'no_flow',
  }));

  it('F1+F2 routed: DROP tcp/22 before ACCEPT all for the host: port 80 reaches it, port 22 does not', () => row({
    to: ns.lan2, expr: (w) => `tcp dport ${w === 'match' ? 80 : 22}`,
    match: synSend(ns.wan1, LAN2, 80, 2222), other: synSend(ns.wan1, LAN2, 22, 2222), reason: 'policy_drop',
  }));

  it('F3 routed, port-specific ACCEPT: udp/9443 reaches LAN1, udp/9444 does not', () => row({
    to: ns.lan1, expr: (w) => `udp dport ${w === 'match' ? 9443 : 9444}`,
    match: udpSend(ns.wan1, LAN1, 9443, 3333), other: udpSend(ns.wan1, LAN1, 9444, 3333), reason: 'wan_to_lan',
  }));

  it('F4 after DNAT, src_ip + LAN host + its port DROP: the forward works for WAN1, not for WAN2', () => row({
    to: ns.lan1, expr: (w) => `ip saddr ${w === 'match' ? WAN1 : WAN2} udp dport 5001`,
    match: udpSend(ns.wan1, ROUTER, 5000, 3333), other: udpSend(ns.wan2, ROUTER, 5000, 3333), reason: 'policy_drop',
  }));

  it('O1 LAN→WAN, src_ip + dest_ip, proto all DROP: LAN2 reaches WAN1 but not WAN2; LAN1 reaches WAN2', async () => {
    const toWan2 = `ip saddr ${ROUTER} udp dport 9000`;
    expect(await arrivals(ns.wan1, toWan2, udpSend(ns.lan2, WAN1, 9000, 3334), 3)).toBeGreaterThan(0);
    const before = drops('policy_drop');
    expect(await arrivals(ns.wan2, toWan2, udpSend(ns.lan2, WAN2, 9000, 3335), 2)).toBe(0);
    expect(await arrivals(ns.wan2, `ip saddr ${ROUTER} icmp type echo-request`, ping(ns.lan2, WAN2), 2)).toBe(0);
    expect(drops('policy_drop') - before).toBeGreaterThan(1);
    expect(await arrivals(ns.wan2, toWan2, udpSend(ns.lan1, WAN2, 9000, 3336), 3)).toBeGreaterThan(0);
  });

  it('O2 LAN→WAN, src_port + dest_port REJECT: from 5500 out, from 4500 not', () => row({
    to: ns.wan1, expr: (w) => `tcp sport ${w === 'match' ? 5500 : 4500} tcp dport 9998`,
    match: synSend(ns.lan1, WAN1, 9998, 5500), other: synSend(ns.lan1, WAN1, 9998, 4500), reason: 'policy_reject',
  }));

  it('O3 LAN→WAN IKE (UDP from port 500), src_ip DROP: LAN1\'s IKE leaves, LAN2\'s does not', () => row({
    to: ns.wan1, expr: (w) => `udp dport 500 @th,64,8 ${w === 'match' ? '0x11' : '0x22'}`,
    match: udpSend(ns.lan1, WAN1, 500, 500, isakmp(0x11)), other: udpSend(ns.lan2, WAN1, 500, 500, isakmp(0x22)), reason: 'policy_drop',
  }));

  // (to two servers: toward one, a second host's new SPI would wait for the first's answer: esp_serialized)
  it('O4 LAN→WAN raw ESP, src_ip DROP: LAN2\'s ESP leaves, LAN1\'s does not', () => row({
    to: ns.wan1, toOther: ns.wan2, expr: (w) => `ip protocol esp esp spi ${w === 'match' ? 0x2222 : 0x1111}`,
    match: espSend(ns.lan2, WAN1, 0x2222), other: espSend(ns.lan1, WAN2, 0x1111), reason: 'policy_drop',
  }));

  it('O5 LAN→WAN, icmp_type + src_ip + dest_ip DROP: LAN1 pings WAN1 but not WAN2', async () => {
    expect(await arrivals(ns.wan1, 'icmp type echo-request', ping(ns.lan1, WAN1), 3)).toBeGreaterThan(0);
    const before = drops('policy_drop');
    expect(await arrivals(ns.wan2, 'icmp type echo-request', ping(ns.lan1, WAN2), 2)).toBe(0);
    expect(drops('policy_drop') - before).toBeGreaterThan(0);
  });

  it('shapes vpnmasq cannot enforce are refused with FILE:LINE, at check-config and at reload; the running rules stay', async () => {
    const bad = `${vm.config}.bad`;
    const lines = ["config vpnmasq 'main'", "\toption lan_device 'br-lan'", "\toption wan_device 'wan'", 'config rule', "\toption src 'lan'", "\toption proto 'tcp'", "\toption dest_port '22'", "\toption target 'DROP'"];
    writeFileSync(bad, `${lines.join('\n')}\n`);
    const r = vm.cli('check-config', '--config', bad);
    expect(r.ok).toBe(false);
    expect(r.stderr).toContain(`${bad}:5: option src: 'lan' without dest is an input rule`);
    // the same rule added to the running config: reload refused, I1 still enforced
    const { readFileSync } = await import('node:fs');
    const good = readFileSync(vm.config, 'utf8');
    writeFileSync(vm.config, `${good}\nconfig rule\n\toption src 'lan'\n\toption target 'DROP'\n`);
    const rl = vm.cli('reload');
    expect(rl.ok).toBe(false);
    expect(rl.stderr).toMatch(/:\d+: option src: 'lan' without dest is an input rule/);
    writeFileSync(vm.config, good);
    await row({
      to: ns.router, expr: (w) => `ip saddr ${w === 'match' ? WAN1 : WAN2} udp dport 7000`,
      match: udpSend(ns.wan1, ROUTER, 7000, 3337), other: udpSend(ns.wan2, ROUTER, 7000, 3337), reason: 'no_flow',
    });
  });
});
