// Policy routing (src/net/routes.ts) for real, in network namespaces:
//
//   L (192.168.77.2) --veth-- [br-lan 192.168.77.1]  R  [wan 203.0.113.2] --veth-- W (203.0.113.1)
//                                               tin, tout (TUN)
//
// setupRouting runs inside R, in a small harness process (`ip netns exec R
// node harness.mjs`) that imports the compiled src/net modules and takes JSON
// commands on stdin. socat holds each TUN open (so it has carrier) and hands
// us every packet the kernel routes into it; it can also write them back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { buildNetModules, Harness } from '../helpers/netharness.js';
import { ephemeralRangeFor, planCommands, planNft, planSysctls, type RoutingPlan } from '../../src/net/routes.js';
import { guardScript, parseGuard } from '../../src/net/guard.js';

// ---------------------------------------------------------------------------
// Pure parts (no root needed)

const basePlan: RoutingPlan = {
  lanDevice: 'br-lan',
  wanDevice: 'wan',
  tunInside: 'tin',
  tunOutside: 'tout',
  wanAddress: '203.0.113.2',
  lanSubnets: ['192.168.77.0/24'],
  masqPorts: [61000, 65535],
};

describe('planCommands / planSysctls', () => {
  it('produces the recipe, in a safe order', () => {
    expect(planCommands({ ...basePlan, lanSubnets: ['192.168.77.9/24', '10.1.2.3/16'] }).map((a) => a.join(' '))).toEqual([
      'link set dev tin up',
      'link set dev tout up',
      '-4 route add default dev tin table 100',
      '-4 route add default dev tout table 101',
      '-4 route add 192.168.77.0/24 dev br-lan table 102',
      '-4 route add 10.1.0.0/16 dev br-lan table 102',
      '-4 route add default dev tin src 203.0.113.2 table 102',
      '-4 neigh replace proxy 203.0.113.2 dev wan',
      '-4 rule add pref 20 lookup local',
      '-4 rule del pref 0 lookup local',
      '-4 rule add pref 10 iif wan lookup 101',
      '-4 rule add pref 15 iif br-lan fwmark 0x2000000/0x2000000 lookup 100',
      '-4 rule add pref 30 iif br-lan fwmark 0x1000000/0x1000000 lookup 100',
      '-4 rule add pref 40 iif lo fwmark 0x1000000/0x1000000 lookup 102',
    ]);
  });

  it('marks only what would leave by the WAN device; written-back packets are never marked', () => {
    const nft = planNft({ ...basePlan, fwmark: 0x100 });
    expect(nft).toContain('iifname "br-lan" fib daddr . mark oifname "wan" meta mark set meta mark | 0x100');
    expect(nft).toContain('type route hook output priority mangle + 10');
    expect(nft).toContain('oifname "wan" meta mark set meta mark | 0x100');
    expect(nft).not.toMatch(/"(tin|tout)"/);
    // it replaces a table of an earlier run in the same transaction
    expect(nft.split('\n').slice(0, 2)).toEqual(['table ip vpnmasq', 'delete table ip vpnmasq']);
    expect(planCommands({ ...basePlan, fwmark: 0x100 }).map((a) => a.join(' '))).toContain('-4 rule add pref 30 iif br-lan fwmark 0x100/0x100 lookup 100');
    expect(() => planNft({ ...basePlan, fwmark: 3 })).toThrow(/single bit/);
  });

  it('the fail-closed guard: a forward drop both ways between exactly the two devices; its listing parses back', () => {
    const g = guardScript({ lanDevice: 'br-lan', wanDevice: 'pppoe-wan' });
    expect(g.split('\n').slice(0, 2)).toEqual(['table ip vpnmasq_guard', 'delete table ip vpnmasq_guard']);
    expect(g).toContain('type filter hook forward priority filter - 10; policy accept;');
    expect(g).toContain('iifname "br-lan" oifname "pppoe-wan" counter drop');
    expect(g).toContain('iifname "pppoe-wan" oifname "br-lan" counter drop');
    expect(g).not.toMatch(/hook (output|prerouting|postrouting)/); // the router's own outgoing traffic is never touched
    // to the router: only TCP/UDP from the WAN device that no socket of its own takes (never iif tout: vpnmasq's hand-over)
    expect(g).toContain('type filter hook input priority filter - 10; policy accept;');
    expect(g.split('\n').filter((l) => /^\t\tiifname/.test(l) && !/oifname/.test(l))).toEqual([
      '\t\tiifname "pppoe-wan" meta l4proto { tcp, udp } socket transparent { 0, 1 } return comment "a socket of the router\'s own"',
      '\t\tiifname "pppoe-wan" meta l4proto { tcp, udp } counter drop comment "translated traffic while vpnmasq is down: no answer"',
    ]);
    // without nft_socket: the masquerade pool (masq_ports)
    const p = guardScript({ lanDevice: 'br-lan', wanDevice: 'wan', masqPorts: [40000, 49999] }, 'ports');
    expect(p).toContain('iifname "wan" meta l4proto { tcp, udp } th dport 40000-49999 counter drop');
    expect(p).not.toContain('socket');
    expect(() => guardScript({ lanDevice: 'br-lan', wanDevice: 'wan', masqPorts: [5, 4] })).toThrow(/not a port range/);
    expect(() => guardScript({ lanDevice: 'br-lan', wanDevice: 'br-lan' })).toThrow(/both br-lan/);
    expect(() => guardScript({ lanDevice: 'br"lan', wanDevice: 'wan' })).toThrow(/not a usable interface name/);
    const listing = `table ip vpnmasq_guard {
	chain forward {
		type filter hook forward priority filter - 10; policy accept;
		iifname "br-lan" oifname "wan" counter packets 7 bytes 588 drop comment "lan to wan outside vpnmasq"
		iifname "wan" oifname "br-lan" counter packets 3 bytes 252 drop comment "wan to lan outside vpnmasq"
	}
}`;
    expect(parseGuard(listing)).toEqual({ lanDevice: 'br-lan', wanDevice: 'wan', droppedLanToWan: 7, droppedWanToLan: 3 });
    expect(parseGuard('table ip vpnmasq_guard {\n}')).toBeNull();
    const withInput = (rules: string) => listing.replace(/\n}$/, `
	chain input {
		type filter hook input priority filter - 10; policy accept;
${rules}
	}
}`);
    expect(parseGuard(withInput(`		iifname "wan" meta l4proto { tcp, udp } socket transparent { 0, 1 } return comment "a socket of the router's own"
		iifname "wan" meta l4proto { tcp, udp } counter packets 5 bytes 300 drop comment "translated traffic while vpnmasq is down: no answer"`)))
      .toEqual({ lanDevice: 'br-lan', wanDevice: 'wan', droppedLanToWan: 7, droppedWanToLan: 3, wanInput: 'socket', droppedWanToRouter: 5 });
    expect(parseGuard(withInput('		iifname "wan" meta l4proto { tcp, udp } th dport 61000-65535 counter packets 2 bytes 80 drop')))
      .toEqual({ lanDevice: 'br-lan', wanDevice: 'wan', droppedLanToWan: 7, droppedWanToLan: 3, wanInput: 'ports', wanInputPorts: [61000, 65535], droppedWanToRouter: 2 });
    // a drop without the socket rule before it is not the socket mode (it would drop the router's own connections)
    expect(parseGuard(withInput('		iifname "wan" meta l4proto { tcp, udp } counter packets 2 bytes 80 drop'))!.wanInput).toBeUndefined();
    // another device's input rule is not ours
    expect(parseGuard(withInput('		iifname "eth9" meta l4proto { tcp, udp } th dport 61000-65535 counter packets 2 bytes 80 drop'))!.wanInput).toBeUndefined();
  });

  it('leaves out the src route without a WAN address and honours tables', () => {
    const cmds = planCommands({ ...basePlan, wanAddress: null, tables: { inside: 200, outside: 201, local: 202 } }).map((a) => a.join(' '));
    expect(cmds.some((c) => c.includes(' src ') || c.includes('proxy'))).toBe(false);
    expect(cmds).toContain('-4 route add default dev tin table 200');
    expect(cmds).toContain('-4 rule add pref 40 iif lo fwmark 0x1000000/0x1000000 lookup 202');
  });

  it('rejects bad plans with a clear message', () => {
    expect(() => planCommands({ ...basePlan, wanAddress: '203.0.113.256' })).toThrow(/wanAddress/);
    expect(() => planCommands({ ...basePlan, lanSubnets: ['192.168.77.0'] })).toThrow(/LAN subnet/);
    expect(() => planCommands({ ...basePlan, tunInside: 'wan' })).toThrow(/four different/);
    expect(() => planCommands({ ...basePlan, lanDevice: 'a-very-long-interface-name' })).toThrow(/lanDevice/);
    expect(() => planCommands({ ...basePlan, masqPorts: [65535, 61000] })).toThrow(/masqPorts/);
    expect(() => planCommands({ ...basePlan, tables: { inside: 100, outside: 255, local: 102 } })).toThrow(/table 255/);
    expect(() => planCommands({ ...basePlan, tables: { inside: 100, outside: 100, local: 102 } })).toThrow(/distinct/);
  });

  it('moves the ephemeral port range below the masquerade pool', () => {
    expect(ephemeralRangeFor([32768, 60999], [61000, 65535])).toBeNull();
    expect(ephemeralRangeFor([32768, 65535], [61000, 65535])).toEqual([32768, 60999]);
    expect(ephemeralRangeFor([1024, 65535], [50000, 59999])).toEqual([1024, 49999]);
    expect(ephemeralRangeFor([32768, 60999], [50001, 65535])).toEqual([32769, 50000]); // parity
    expect(ephemeralRangeFor([61500, 65000], [61000, 65535])).toEqual([57500, 60999]);
    expect(ephemeralRangeFor([1024, 65535], [1024, 40000])).toEqual([40002, 65535]); // above the pool; parity
    expect(() => ephemeralRangeFor([1024, 65535], [1000, 65535])).toThrow(/no room/);
  });

  it('plans the sysctls', () => {
    const s = planSysctls(basePlan, { portRange: '32768\t65535', wanRpFilter: '1', wanProxyDelay: '80' });
    expect(s).toEqual([
      ['net/ipv4/ip_forward', '1'],
      ['net/ipv4/conf/all/rp_filter', '0'],
      ['net/ipv4/conf/tin/rp_filter', '0'],
      ['net/ipv4/conf/tout/rp_filter', '0'],
      ['net/ipv4/conf/tin/accept_local', '1'],
      ['net/ipv4/conf/tout/accept_local', '1'],
      ['net/ipv4/conf/wan/rp_filter', '2'],
      ['net/ipv4/neigh/wan/proxy_delay', '0'],
      ['net/ipv4/ip_local_port_range', '32768 60999'],
    ]);
    // early demux off (ip_forward drops a packet with the router's own socket attached)
    expect(planSysctls(basePlan, { tcpEarlyDemux: '1', udpEarlyDemux: '1' })).toEqual(expect.arrayContaining([
      ['net/ipv4/tcp_early_demux', '0'], ['net/ipv4/udp_early_demux', '0'],
    ]));
    expect(planSysctls(basePlan, { tcpEarlyDemux: '0', udpEarlyDemux: '0' }).some(([k]) => k.includes('early_demux'))).toBe(false);
    expect(planSysctls(basePlan, { portRange: '32768 60999', wanRpFilter: '2', wanProxyDelay: '0' })).toHaveLength(6);
  });
});

// ---------------------------------------------------------------------------
// Shared netns machinery


interface Ipv4Packet {
  src: string;
  dst: string;
  proto: number;
}

/** socat attached to a TUN: every packet the kernel sends into it; optionally writes it straight back. */
class TunTap {
  readonly packets: Buffer[] = [];
  echo = false;
  private buf = Buffer.alloc(0);
  readonly proc: ChildProcess;

  constructor(ns: string, dev: string) {
    this.proc = spawn('ip', ['netns', 'exec', ns, 'socat', `TUN,tun-name=${dev},tun-type=tun,iff-no-pi`, 'STDIO'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.proc.stdout!.on('data', (d: Buffer) => this.feed(d));
  }

  private feed(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 6) {
      const v = this.buf[0]! >> 4;
      const len = v === 4 ? this.buf.readUInt16BE(2) : v === 6 ? 40 + this.buf.readUInt16BE(4) : -1;
      if (len < 0) {
        this.buf = Buffer.alloc(0);
        break;
      }
      if (this.buf.length < len) break;
      const pkt = Buffer.from(this.buf.subarray(0, len));
      this.buf = this.buf.subarray(len);
      this.packets.push(pkt);
      if (this.echo) this.proc.stdin!.write(pkt);
    }
  }

  ipv4(): Ipv4Packet[] {
    return this.packets
      .filter((p) => p[0]! >> 4 === 4)
      .map((p) => ({ src: [...p.subarray(12, 16)].join('.'), dst: [...p.subarray(16, 20)].join('.'), proto: p[9]! }));
  }

  clear(): void {
    this.packets.length = 0;
  }

  async waitFor(pred: (p: Ipv4Packet) => boolean, ms = 3000): Promise<Ipv4Packet | undefined> {
    const end = Date.now() + ms;
    for (;;) {
      const hit = this.ipv4().find(pred);
      if (hit || Date.now() > end) return hit;
      await sleep(20);
    }
  }

  close(): void {
    this.proc.kill('SIGTERM');
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------

const tag = `vmrt-${process.pid}`;
const R = `${tag}-r`;
const L = `${tag}-l`;
const W = `${tag}-w`;
const NAMESPACES = [R, L, W];

function ipn(ns: string, ...args: string[]): string {
  return execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Text output of ip; '' if ip fails (e.g. a table that does not exist). */
function ipnText(ns: string, ...args: string[]): string {
  try {
    return ipn(ns, ...args).trim();
  } catch {
    return '';
  }
}

function rules(ns: string): string[] {
  return (JSON.parse(ipn(ns, '-4', '-j', 'rule', 'show')) as Record<string, unknown>[]).map((r) => {
    const { priority, ...rest } = r;
    return `${priority}: ${Object.entries(rest)
      .map(([k, v]) => `${k} ${v}`)
      .join(' ')}`;
  });
}

function table(ns: string, id: number): string[] {
  return ipnText(ns, '-4', 'route', 'show', 'table', String(id))
    .split('\n')
    .map((l) => l.trim().replace(/\s+/g, ' '))
    .filter(Boolean);
}

function readNsSysctl(ns: string, key: string): string {
  return execFileSync('ip', ['netns', 'exec', ns, 'cat', `/proc/sys/${key}`], { encoding: 'utf8' }).trim().split(/\s+/).join(' ');
}

function writeNsSysctl(ns: string, key: string, value: string): void {
  execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', `echo '${value}' > /proc/sys/${key}`]);
}

/** Pings from inside ns (asynchronously: the event loop must keep echoing packets meanwhile). */
function ping(ns: string, dst: string, count = 1, waitS = 1): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', ns, 'ping', '-n', '-c', String(count), '-i', '0.3', '-W', String(waitS), dst], (err, stdout) =>
      resolve({ ok: !err, out: String(stdout) }),
    );
  });
}

const ORIGINAL_RULES = ['0: src all table local', '32766: src all table main', '32767: src all table default'];

const SYSCTLS = [
  'net/ipv4/ip_forward',
  'net/ipv4/conf/all/rp_filter',
  'net/ipv4/conf/tin/rp_filter',
  'net/ipv4/conf/tout/rp_filter',
  'net/ipv4/conf/tin/accept_local',
  'net/ipv4/conf/tout/accept_local',
  'net/ipv4/conf/wan/rp_filter',
  'net/ipv4/neigh/wan/proxy_delay',
  'net/ipv4/ip_local_port_range',
  'net/ipv4/tcp_early_demux',
  'net/ipv4/udp_early_demux',
];
// What the test sets before setup (chosen so that setup changes every one of them).
const INITIAL: Record<string, string> = {
  'net/ipv4/ip_forward': '0',
  'net/ipv4/conf/all/rp_filter': '2',
  'net/ipv4/conf/tin/rp_filter': '1',
  'net/ipv4/conf/tout/rp_filter': '1',
  'net/ipv4/conf/tin/accept_local': '0',
  'net/ipv4/conf/tout/accept_local': '0',
  'net/ipv4/conf/wan/rp_filter': '1',
  'net/ipv4/neigh/wan/proxy_delay': '50',
  'net/ipv4/ip_local_port_range': '1024 65535',
  'net/ipv4/tcp_early_demux': '1',
  'net/ipv4/udp_early_demux': '1',
};
const CONFIGURED: Record<string, string> = {
  'net/ipv4/ip_forward': '1',
  'net/ipv4/conf/all/rp_filter': '0',
  'net/ipv4/conf/tin/rp_filter': '0',
  'net/ipv4/conf/tout/rp_filter': '0',
  'net/ipv4/conf/tin/accept_local': '1',
  'net/ipv4/conf/tout/accept_local': '1',
  'net/ipv4/conf/wan/rp_filter': '2',
  'net/ipv4/neigh/wan/proxy_delay': '0',
  'net/ipv4/ip_local_port_range': '1024 60999',
  'net/ipv4/tcp_early_demux': '0',
  'net/ipv4/udp_early_demux': '0',
};

function sysctls(ns: string): Record<string, string> {
  return Object.fromEntries(SYSCTLS.map((k) => [k, readNsSysctl(ns, k)]));
}

function proxies(ns: string): string[] {
  return (JSON.parse(ipn(ns, '-4', '-j', 'neigh', 'show', 'proxy') || '[]') as { dst: string; dev: string }[]).map(
    (n) => `${n.dst} dev ${n.dev}`,
  );
}

function expectRecipe(wanAddress: string | null): void {
  expect(rules(R)).toEqual([
    '10: src all iif wan table 101',
    '15: src all fwmark 0x2000000 fwmask 0x2000000 iif br-lan table 100',
    '20: src all table local',
    '30: src all fwmark 0x1000000 fwmask 0x1000000 iif br-lan table 100',
    '40: src all fwmark 0x1000000 fwmask 0x1000000 iif lo table 102',
    '32766: src all table main',
    '32767: src all table default',
  ]);
  expect(table(R, 100)).toEqual(['default dev tin scope link']);
  expect(table(R, 101)).toEqual(['default dev tout scope link']);
  expect(table(R, 102)).toEqual([
    ...(wanAddress ? [`default dev tin scope link src ${wanAddress}`] : []),
    '192.168.77.0/24 dev br-lan scope link',
  ]);
  expect(proxies(R)).toEqual(wanAddress ? [`${wanAddress} dev wan`] : []);
  expect(sysctls(R)).toEqual(CONFIGURED);
  expect(nftTables(R)).toEqual(['table ip vpnmasq']);
}

function nftTables(ns: string): string[] {
  return execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables'], { encoding: 'utf8' }).split('\n').filter(Boolean);
}

function expectPristine(): void {
  expect(rules(R)).toEqual(ORIGINAL_RULES);
  for (const t of [100, 101, 102]) expect(table(R, t)).toEqual([]);
  expect(proxies(R)).toEqual([]);
  expect(sysctls(R)).toEqual(INITIAL);
  expect(nftTables(R)).toEqual([]);
}

describe.skipIf(skipUnless({ root: true, tools: ['ip', 'nft'] }))('the guard as nft prints it back', () => {
  it('both input modes (socket lookup, and the masquerade-pool fallback) parse back from the kernel\'s listing', () => {
    const ns = `vmgd${process.pid % 100000}`;
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      const apply = (script: string) => execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: script });
      const list = () => execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'ip', 'vpnmasq_guard'], { encoding: 'utf8' });
      apply(guardScript({ lanDevice: 'br-lan', wanDevice: 'eth0.2' }));
      expect(parseGuard(list())).toEqual({ lanDevice: 'br-lan', wanDevice: 'eth0.2', droppedLanToWan: 0, droppedWanToLan: 0, wanInput: 'socket', droppedWanToRouter: 0 });
      apply(guardScript({ lanDevice: 'br-lan', wanDevice: 'eth0.2', masqPorts: [50000, 50000] }, 'ports'));
      expect(parseGuard(list())).toEqual({ lanDevice: 'br-lan', wanDevice: 'eth0.2', droppedLanToWan: 0, droppedWanToLan: 0, wanInput: 'ports', wanInputPorts: [50000, 50000], droppedWanToRouter: 0 });
      apply(guardScript({ lanDevice: 'br-lan', wanDevice: 'eth0.2', masqPorts: [61000, 65535] }, 'ports'));
      expect(parseGuard(list())).toMatchObject({ wanInput: 'ports', wanInputPorts: [61000, 65535] });
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
  });
});

describe.skipIf(skipUnless({ root: true, tun: true, tools: ['ip', 'ping', 'socat', 'nft'] }))('routing in network namespaces', () => {
  let dir = '';
  let stateFile = '';
  let plan: RoutingPlan;
  let tin: TunTap;
  let tout: TunTap;
  const harnesses: Harness[] = [];
  const harness = (env?: NodeJS.ProcessEnv) => {
    const h = new Harness(R, dir, env);
    harnesses.push(h);
    return h;
  };
  let h: Harness;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), `${tag}-`));
    stateFile = join(dir, 'run', 'routing.json');
    buildNetModules(dir);
    for (const ns of NAMESPACES) {
      execFileSync('ip', ['netns', 'add', ns]);
      ipn(ns, 'link', 'set', 'lo', 'up');
    }
    ipn(R, 'link', 'add', 'br-lan', 'type', 'bridge');
    ipn(R, 'link', 'add', 'lanp', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', L);
    ipn(R, 'link', 'set', 'lanp', 'master', 'br-lan');
    ipn(R, 'link', 'add', 'wan', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', W);
    for (const d of ['br-lan', 'lanp', 'wan']) ipn(R, 'link', 'set', d, 'up');
    ipn(L, 'link', 'set', 'eth0', 'up');
    ipn(W, 'link', 'set', 'eth0', 'up');
    ipn(R, 'addr', 'add', '192.168.77.1/24', 'dev', 'br-lan');
    ipn(R, 'addr', 'add', '203.0.113.2/24', 'dev', 'wan');
    ipn(L, 'addr', 'add', '192.168.77.2/24', 'dev', 'eth0');
    ipn(L, 'route', 'add', 'default', 'via', '192.168.77.1');
    ipn(W, 'addr', 'add', '203.0.113.1/24', 'dev', 'eth0');
    ipn(W, 'route', 'add', '192.168.77.0/24', 'via', '203.0.113.2');
    for (const t of ['tin', 'tout']) {
      ipn(R, 'tuntap', 'add', 'dev', t, 'mode', 'tun');
      ipn(R, 'link', 'set', t, 'up');
    }
    for (const [k, v] of Object.entries(INITIAL)) writeNsSysctl(R, k, v);
    tin = new TunTap(R, 'tin');
    tout = new TunTap(R, 'tout');
    plan = { ...basePlan, stateFile };
  });

  afterAll(async () => {
    for (const x of harnesses) await x.close().catch(() => {});
    tin?.close();
    tout?.close();
    await sleep(100);
    for (const ns of NAMESPACES) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        /* not created */
      }
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('starts from the kernel defaults', () => {
    expectPristine();
  });

  it('setupRouting installs exactly the recipe and records the originals', async () => {
    h = harness();
    expect(await h.call('call', 'iface', 'subnetsOf', 'br-lan')).toEqual(['192.168.77.0/24']);
    expect(await h.call('call', 'iface', 'ipv4Addresses', 'wan')).toEqual([{ address: '203.0.113.2', prefixLen: 24 }]);
    expect(await h.call('call', 'iface', 'deviceExists', 'tin')).toBe(true);
    expect(await h.call('call', 'iface', 'deviceExists', 'nope0')).toBe(false);
    await expect(h.call('call', 'iface', 'ipv4Addresses', 'nope0')).rejects.toThrow(/^ip -4 -j addr show dev nope0 failed: Device "nope0" does not exist\.$/);
    await h.call('call', 'iface', 'setLinkUp', 'lanp', 1400);
    expect(ipn(R, 'link', 'show', 'lanp')).toMatch(/mtu 1400 .*state UP/);
    await h.call('call', 'iface', 'setLinkUp', 'lanp', 1500);

    expect(await h.call('setup', plan)).toBe('203.0.113.2');
    expectRecipe('203.0.113.2');
    const state = JSON.parse(readFileSync(stateFile, 'utf8'));
    expect(state.hadLocalPref0).toBe(true);
    expect(state.sysctls).toEqual(INITIAL);
  });

  it('LAN, WAN and router traffic goes into the right TUN', async () => {
    tin.clear();
    tout.clear();
    // LAN host to the Internet: inside TUN, untranslated.
    await ping(L, '203.0.113.1');
    expect(await tin.waitFor((p) => p.src === '192.168.77.2' && p.dst === '203.0.113.1' && p.proto === 1)).toBeTruthy();
    // WAN ingress to the router's own address: outside TUN, not local delivery.
    // W has to ARP for it first; R has sent nothing to W yet.
    expect(ipnText(W, 'neigh', 'show', '203.0.113.2')).toBe('');
    await ping(W, '203.0.113.2');
    expect(await tout.waitFor((p) => p.src === '203.0.113.1' && p.dst === '203.0.113.2' && p.proto === 1)).toBeTruthy();
    // Router-originated WAN traffic: inside TUN, with the WAN address as source.
    await ping(R, '203.0.113.1');
    expect(await tin.waitFor((p) => p.src === '203.0.113.2' && p.dst === '203.0.113.1')).toBeTruthy();
    expect(tout.ipv4().filter((p) => p.src !== '203.0.113.1')).toEqual([]);
    expect(tin.ipv4().filter((p) => p.dst !== '203.0.113.1')).toEqual([]);

    // Router <-> LAN and LAN -> router stay direct.
    tin.clear();
    expect((await ping(R, '192.168.77.2')).ok).toBe(true);
    expect((await ping(L, '192.168.77.1')).ok).toBe(true);
    expect(tin.ipv4()).toEqual([]);
  });

  it('packets written back into the TUNs are routed by the main table (identity engine)', async () => {
    tin.echo = tout.echo = true;
    try {
      const lan = await ping(L, '203.0.113.1', 3, 2);
      expect(lan.ok, lan.out).toBe(true);
      const router = await ping(R, '203.0.113.1', 3, 2); // needs accept_local on tin
      expect(router.ok, router.out).toBe(true);
      const wan = await ping(W, '203.0.113.2', 3, 2);
      expect(wan.ok, wan.out).toBe(true);
    } finally {
      tin.echo = tout.echo = false;
    }
  });

  it('traffic the kernel routes to another device stays there (WireGuard-style route, a policy table like strongSwan\'s 220, wg-quick\'s fwmark rule)', async () => {
    for (const d of ['wg0', 'ipsec0']) {
      ipn(R, 'tuntap', 'add', 'dev', d, 'mode', 'tun');
      ipn(R, 'link', 'set', d, 'up');
    }
    const wg = new TunTap(R, 'wg0');
    const ipsec = new TunTap(R, 'ipsec0');
    try {
      await sleep(200);
      ipn(R, 'route', 'add', '10.200.0.0/24', 'dev', 'wg0');
      ipn(R, 'route', 'add', '192.168.100.0/24', 'dev', 'ipsec0', 'table', '220');
      ipn(R, 'rule', 'add', 'pref', '220', 'lookup', '220');
      tin.clear();
      tout.clear();
      await Promise.all([ping(L, '10.200.0.5'), ping(R, '10.200.0.5'), ping(L, '192.168.100.5'), ping(R, '192.168.100.5')]);
      expect(await wg.waitFor((p) => p.src === '192.168.77.2' && p.dst === '10.200.0.5')).toBeTruthy();
      expect(await wg.waitFor((p) => p.src !== '192.168.77.2' && p.dst === '10.200.0.5')).toBeTruthy(); // the router's own
      expect(await ipsec.waitFor((p) => p.src === '192.168.77.2' && p.dst === '192.168.100.5')).toBeTruthy();
      expect(await ipsec.waitFor((p) => p.src !== '192.168.77.2' && p.dst === '192.168.100.5')).toBeTruthy();
      expect(tin.ipv4()).toEqual([]);
      // WAN-bound traffic still goes to the NAT.
      await ping(L, '203.0.113.1');
      expect(await tin.waitFor((p) => p.src === '192.168.77.2' && p.dst === '203.0.113.1')).toBeTruthy();

      // wg-quick's full tunnel: everything without the tunnel's own mark goes to
      // wg0; the tunnel's own (marked) packets leave by the WAN, through the NAT.
      ipn(R, 'route', 'add', 'default', 'dev', 'wg0', 'table', '51820');
      ipn(R, 'rule', 'add', 'pref', '32000', 'not', 'fwmark', '0xca6c', 'lookup', '51820');
      tin.clear();
      wg.clear();
      await Promise.all([ping(L, '203.0.113.1'), ping(R, '203.0.113.1')]);
      expect(await wg.waitFor((p) => p.src === '192.168.77.2' && p.dst === '203.0.113.1')).toBeTruthy();
      expect(await wg.waitFor((p) => p.src !== '192.168.77.2' && p.dst === '203.0.113.1')).toBeTruthy();
      expect(tin.ipv4()).toEqual([]);
      wg.clear();
      await new Promise<void>((resolve) => execFile('ip', ['netns', 'exec', R, 'ping', '-n', '-c', '1', '-W', '1', '-m', '51820', '203.0.113.1'], () => resolve()));
      // (ping picks its source with an unmarked probe, so it may be any of the router's addresses)
      expect(await tin.waitFor((p) => p.src !== '192.168.77.2' && p.dst === '203.0.113.1' && p.proto === 1)).toBeTruthy();
      expect(wg.ipv4()).toEqual([]);
    } finally {
      ipnText(R, 'rule', 'del', 'pref', '32000');
      ipnText(R, 'rule', 'del', 'pref', '220');
      ipnText(R, 'route', 'flush', 'table', '220');
      ipnText(R, 'route', 'flush', 'table', '51820');
      wg.close();
      ipsec.close();
      await sleep(100);
      for (const d of ['wg0', 'ipsec0']) ipnText(R, 'link', 'del', d);
    }
  });

  it('follows the WAN address', async () => {
    expect(await h.call('update', null)).toBeNull();
    expect(table(R, 102)).toEqual(['192.168.77.0/24 dev br-lan scope link']);
    expect(ipnText(R, 'route', 'get', '203.0.113.1')).toMatch(/dev wan/); // falls through to main
    expect(await h.call('update', null)).toBeNull(); // already gone: fine

    expect(await h.call('update', '203.0.113.2')).toBe('203.0.113.2');
    expect(await h.call('update', '203.0.113.2')).toBe('203.0.113.2'); // idempotent
    expect(table(R, 102)).toEqual(['default dev tin scope link src 203.0.113.2', '192.168.77.0/24 dev br-lan scope link']);

    // The address changes (DHCP). Kernel 6.18 leaves the route with the stale
    // src in table 102 (it only flushes prefsrc routes of main); replace copes.
    ipn(R, 'addr', 'del', '203.0.113.2/24', 'dev', 'wan');
    ipn(R, 'addr', 'add', '203.0.113.3/24', 'dev', 'wan');
    expect(await h.call('update', '203.0.113.3')).toBe('203.0.113.3');
    expect(table(R, 102)).toEqual(['default dev tin scope link src 203.0.113.3', '192.168.77.0/24 dev br-lan scope link']);
    expect(proxies(R)).toEqual(['203.0.113.3 dev wan']);
    tout.clear();
    ipn(W, 'neigh', 'flush', 'dev', 'eth0');
    await ping(W, '203.0.113.3'); // ARP for the new address is answered (proxy entry)
    expect(await tout.waitFor((p) => p.src === '203.0.113.1' && p.dst === '203.0.113.3')).toBeTruthy();
    tin.clear();
    await ping(R, '203.0.113.1');
    expect(await tin.waitFor((p) => p.src === '203.0.113.3' && p.dst === '203.0.113.1')).toBeTruthy();

    // An address that is not ours is refused with ip's reason, in one line.
    const err = await h.call('update', '198.51.100.9').catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/^ip -4 route replace default dev tin src 198\.51\.100\.9 table 102 failed: .+/);
    expect(err.message).not.toContain('\n');

    ipn(R, 'addr', 'del', '203.0.113.3/24', 'dev', 'wan');
    ipn(R, 'addr', 'add', '203.0.113.2/24', 'dev', 'wan');
    expect(await h.call('update', '203.0.113.2')).toBe('203.0.113.2');
    expectRecipe('203.0.113.2');

    // Admin-down of the WAN device drops the proxy entry; updating again restores it.
    ipn(R, 'link', 'set', 'wan', 'down');
    ipn(R, 'link', 'set', 'wan', 'up');
    expect(proxies(R)).toEqual([]);
    await h.call('update', '203.0.113.2');
    expectRecipe('203.0.113.2');
  });

  it('teardown restores rules, tables and sysctls exactly, and is idempotent', async () => {
    await h.call('teardown');
    expectPristine();
    expect(existsSync(stateFile)).toBe(false);
    await h.call('teardown');
    await h.call('update', '203.0.113.2'); // no-op after teardown
    expectPristine();
    expect((await ping(L, '192.168.77.1')).ok).toBe(true);
    await h.close();
  });

  it('a setup that fails after moving the local rule is rolled back (pref 0 back)', async () => {
    // A fake `ip` first in PATH fails one command late in the sequence.
    const realIp = execFileSync('sh', ['-c', 'command -v ip'], { encoding: 'utf8' }).trim();
    const bin = join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(
      join(bin, 'ip'),
      `#!/bin/sh\ncase " $* " in *" rule add pref 30 "*) echo "Error: injected failure." >&2; exit 2;; esac\nexec ${realIp} "$@"\n`,
    );
    chmodSync(join(bin, 'ip'), 0o755);
    const hf = harness({ ...process.env, PATH: `${bin}:${process.env.PATH}` });
    const err = await hf.call('setup', plan).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toBe('ip -4 rule add pref 30 iif br-lan fwmark 0x1000000/0x1000000 lookup 100 failed: Error: injected failure.');
    expectPristine();
    expect(existsSync(stateFile)).toBe(false);
    expect((await ping(L, '192.168.77.1')).ok).toBe(true);
    expect((await ping(R, '203.0.113.2')).ok).toBe(true); // local delivery
    await hf.close();
  });

  it('setup with no WAN address yet, then the address arrives', async () => {
    const h1 = harness();
    expect(await h1.call('setup', { ...plan, wanAddress: null })).toBeNull();
    expectRecipe(null);
    expect(await h1.call('update', '203.0.113.2')).toBe('203.0.113.2');
    expectRecipe('203.0.113.2');
    await h1.call('teardown');
    expectPristine();
    await h1.close();
  });

  it('setup replaces the state of a crashed run; teardownStale cleans up after a crash', async () => {
    const h1 = harness();
    await h1.call('setup', plan);
    await h1.crash();
    expectRecipe('203.0.113.2');

    // Start-up over stale state: no duplicates, and the originals survive via the state file.
    const h2 = harness();
    await h2.call('setup', plan);
    expectRecipe('203.0.113.2');
    expect(JSON.parse(readFileSync(stateFile, 'utf8')).sysctls).toEqual(INITIAL);
    await h2.crash();

    // The `vpnmasq cleanup` path.
    const h3 = harness();
    await h3.call('stale', { stateFile });
    expectPristine();
    expect(existsSync(stateFile)).toBe(false);
    await h3.call('stale', { stateFile }); // nothing to do: fine
    expectPristine();
    await h3.close();
  });

  it('teardownStale restores local delivery after a crash right after "rule del pref 0"', async () => {
    const h1 = harness();
    const cmds: string[][] = await h1.call('call', 'routes', 'planCommands', plan);
    const cut = cmds.findIndex((c) => c.join(' ') === '-4 rule del pref 0 lookup local');
    for (const c of cmds.slice(0, cut + 1)) await h1.call('call', 'iface', 'runIp', c);
    expect(rules(R)).toEqual(['20: src all table local', '32766: src all table main', '32767: src all table default']);
    await h1.crash();

    const h2 = harness();
    await h2.call('stale', { wanDevice: 'wan' }); // no state file: rules, routes and proxy entries
    expectPristine();
    await h2.close();
  });
});
