// Traffic meant for another tunnel never leaves in clear (issue 8, item 7):
// vpnmasq diverts only what the kernel would send out of wan_device.
//
//   lan1 192.168.1.10 ── br-lan [router: vpnmasq + strongSwan] wan 203.0.113.1 ── 203.0.113.2 gateway
//                                  │ wg0 10.77.0.1/30                               (strongSwan, 192.168.100.1 on lo,
//                                  └── 10.77.0.2 "wg peer" (10.200.0.1 on lo)        reachable only through the tunnel)
//
// Site-to-site: strongSwan on the router (kernel-libipsec: its route for the
// remote subnet sits in table 220, via ipsec0) tunnels 192.168.1.0/24 <->
// 192.168.100.0/24 to a WAN-side gateway that accepts the remote subnet only
// from inside the tunnel. A LAN host's and the router's own traffic to
// 192.168.100.1 must go through the tunnel and never appear in clear on the
// WAN. A WireGuard-style route (another device, main table) is the kernel's
// business: forwarded untranslated. And with vpnmasq dead the guard is still
// closed with this plumbing in place.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { Charon, skipUnlessStrongSwan, type CharonOptions } from '../e2e/peers/strongswan.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'nft', 'tcpdump', 'swanctl', 'unshare', 'ping'] }) || skipUnlessStrongSwan();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const LAN_NET = '192.168.1.0/24';
const REMOTE_NET = '192.168.100.0/24';
const REMOTE_HOST = '192.168.100.1';
const ROUTER_WAN = '203.0.113.1';
const GATEWAY = '203.0.113.2';

/** One end of a site-to-site tunnel (IKEv2, PSK, UDP-encapsulated ESP for kernel-libipsec). */
class SiteCharon extends Charon {
  constructor(lab: LabT, ns: string, private readonly site: { local: string; remote: string; localTs: string; remoteTs: string; id: string; peerId: string }, opts: CharonOptions = {}) {
    super(lab, ns, 'server', `site-${site.id}`, opts);
  }

  async up(): Promise<this> {
    await this.start();
    return this;
  }

  protected override swanctlConfText(): string {
    const s = this.site;
    return `connections {
  site {
    version = 2
    local_addrs = ${s.local}
    remote_addrs = ${s.remote}
    encap = yes
    local {
      auth = psk
      id = ${s.id}
    }
    remote {
      auth = psk
      id = ${s.peerId}
    }
    children {
      site {
        local_ts = ${s.localTs}
        remote_ts = ${s.remoteTs}
      }
    }
  }
}
secrets {
  ike-any {
    secret = "${this.psk}"
  }
}
`;
  }

  async initiate(): Promise<string> {
    const r = await this.swanctl(['--initiate', '--ike', 'site', '--child', 'site', '--timeout', '20'], 25_000);
    return r.stdout + r.stderr;
  }

  /** ESP packets out/in of the installed CHILD_SA. */
  async counters(): Promise<{ out: number; in: number }> {
    const sa = (await this.listSas()).find((s) => s.name === 'site' && s.state === 'ESTABLISHED');
    const c = sa?.children.find((x) => x.state === 'INSTALLED');
    return { out: c?.packetsOut ?? 0, in: c?.packetsIn ?? 0 };
  }
}

/** tcpdump in a namespace, one line per packet. */
function capture(lab: LabT, ns: string, dev: string, filter: string): { ready: Promise<void>; stop: () => Promise<string[]> } {
  const p: ChildProcess = lab.spawn(ns, ['tcpdump', '-n', '-l', '-i', dev, filter]);
  const lines: string[] = [];
  let buf = '';
  let err = '';
  p.stdout!.on('data', (d) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop()!;
    lines.push(...parts.filter(Boolean));
  });
  p.stderr!.on('data', (d) => { err += d; });
  const ready = (async () => {
    for (let i = 0; i < 100 && !/listening on/.test(err); i++) await sleep(50);
    if (!/listening on/.test(err)) throw new Error(`tcpdump in ${ns}: ${err}`);
  })();
  return {
    ready,
    stop: async () => {
      await sleep(300);
      if (p.exitCode === null) {
        p.kill('SIGTERM');
        await new Promise((r) => p.once('exit', r));
      }
      return lines;
    },
  };
}

describe.skipIf(skip)('other tunnels keep their traffic (site-to-site strongSwan on the router, a WireGuard-style route)', () => {
  let lab: LabT;
  let vm: RunningRouter;
  let onRouter: SiteCharon;
  let onGateway: SiteCharon;
  let wgPeer = '';

  const sh = (ns: string, cmd: string, timeoutMs = 20_000) => lab.tryExec(ns, ['sh', '-c', cmd], { timeoutMs });
  const received = (out: string) => Number(/(\d+) received/.exec(out)?.[1] ?? -1);

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `tn${process.pid % 10000}`, lanHosts: 1, wanHosts: 1 });
    const gw = lab.wan[0]!;
    // The gateway's subnet: on lo, and only a tunnel may deliver to it.
    lab.exec(gw, ['ip', 'addr', 'add', `${REMOTE_HOST}/32`, 'dev', 'lo']);
    lab.exec(gw, ['nft', '-f', '-'], {
      input: `table ip site_guard {
  chain input {
    type filter hook input priority -10; policy accept;
    iifname "eth0" ip daddr ${REMOTE_NET} counter drop
  }
}
`,
    });

    // A WireGuard-style peer on another device of the router.
    wgPeer = `vmwg${process.pid % 100000}`;
    execFileSync('ip', ['netns', 'add', wgPeer]);
    lab.exec(lab.router, ['ip', 'link', 'add', 'wg0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', wgPeer]);
    lab.exec(lab.router, ['ip', 'addr', 'add', '10.77.0.1/30', 'dev', 'wg0']);
    lab.exec(lab.router, ['ip', 'link', 'set', 'wg0', 'up']);
    lab.exec(lab.router, ['ip', 'route', 'add', '10.200.0.0/24', 'via', '10.77.0.2', 'dev', 'wg0']);
    for (const a of [['link', 'set', 'lo', 'up'], ['addr', 'add', '10.77.0.2/30', 'dev', 'eth0'], ['link', 'set', 'eth0', 'up'],
      ['addr', 'add', '10.200.0.1/32', 'dev', 'lo'], ['route', 'add', LAN_NET, 'via', '10.77.0.1']]) {
      execFileSync('ip', ['-n', wgPeer, ...a]);
    }

    vm = new RunningRouter(lab, `
config rule
	option name 'Allow-IKE'
	option src 'wan'
	option proto 'udp'
	option dest_port '500 4500'
	option target 'ACCEPT'
`);
    await vm.start();
    onGateway = await new SiteCharon(lab, gw, { local: GATEWAY, remote: ROUTER_WAN, localTs: REMOTE_NET, remoteTs: LAN_NET, id: 'gateway', peerId: 'router' }).up();
    onRouter = await new SiteCharon(lab, lab.router, { local: ROUTER_WAN, remote: GATEWAY, localTs: LAN_NET, remoteTs: REMOTE_NET, id: 'router', peerId: 'gateway' }).up();
    const out = await onRouter.initiate();
    if (!/initiate completed successfully/.test(out)) {
      throw new Error(`site-to-site tunnel did not come up\n${out}\n${onRouter.logTail(60)}\n${onGateway.logTail(60)}\n${vm.output.slice(-3000)}`);
    }
  }, 90_000);

  afterAll(async () => {
    await onRouter?.stop();
    await onGateway?.stop();
    await vm?.stop();
    lab?.destroy();
    if (wgPeer) {
      try { execFileSync('ip', ['netns', 'del', wgPeer], { stdio: 'ignore' }); } catch { /* not created */ }
    }
  }, 30_000);

  it('01 strongSwan\'s route is in its own table 220 (behind vpnmasq\'s rules 10-40)', () => {
    expect(sh(lab.router, 'ip rule').stdout).toMatch(/^220:\s+from all lookup 220/m);
    expect(sh(lab.router, 'ip route show table 220').stdout).toMatch(/192\.168\.100\.0\/24 .*dev ipsec0/);
  });

  it('02 a LAN host\'s traffic to the remote subnet goes through the tunnel, never in clear on the WAN', async () => {
    const wan = capture(lab, lab.wan[0]!, 'eth0', `icmp or net ${REMOTE_NET} or net ${LAN_NET}`);
    await wan.ready;
    const before = await onRouter.counters();
    const r = sh(lab.lan[0]!, `ping -c 3 -i 0.3 -W 3 ${REMOTE_HOST}`);
    const after = await onRouter.counters();
    const clear = await wan.stop();
    expect(received(r.stdout), `${r.stdout}\n${onRouter.logTail(30)}`).toBe(3);
    expect(after.out - before.out).toBeGreaterThanOrEqual(3);
    expect(after.in - before.in).toBeGreaterThanOrEqual(3);
    expect(clear).toEqual([]);
    // and vpnmasq never saw it: no flow toward the remote subnet
    expect(vm.cli('conntrack', '--json').stdout).not.toContain('192.168.100.');
  });

  it('03 the router\'s own traffic to the remote subnet goes through the tunnel too', async () => {
    const wan = capture(lab, lab.wan[0]!, 'eth0', `icmp or net ${REMOTE_NET}`);
    await wan.ready;
    const before = await onRouter.counters();
    const r = sh(lab.router, `ping -c 3 -i 0.3 -W 3 -I 192.168.1.1 ${REMOTE_HOST}`);
    const after = await onRouter.counters();
    expect(received(r.stdout), r.stdout).toBe(3);
    expect(after.out - before.out).toBeGreaterThanOrEqual(3);
    expect(await wan.stop()).toEqual([]);
  });

  it('04 a WireGuard-style route via another device is left to the kernel (untranslated, not via the NAT)', async () => {
    const peer = capture(lab, wgPeer, 'eth0', 'icmp');
    await peer.ready;
    const r = sh(lab.lan[0]!, 'ping -c 2 -i 0.3 -W 3 10.200.0.1');
    const seen = await peer.stop();
    expect(received(r.stdout), r.stdout).toBe(2);
    expect(seen.some((l) => l.includes('192.168.1.10 > 10.200.0.1'))).toBe(true);
    expect(seen.some((l) => l.includes(`${ROUTER_WAN} >`))).toBe(false);
    // traffic to the WAN is still translated
    const w = sh(lab.lan[0]!, `ping -c 2 -i 0.3 -W 3 ${GATEWAY}`);
    expect(received(w.stdout), w.stdout).toBe(2);
    expect(vm.cli('conntrack').stdout).toMatch(new RegExp(`icmp .*src=192\\.168\\.1\\.10 dst=${GATEWAY.replace(/\./g, '\\.')}`));
  });

  it('05 with vpnmasq killed the guard is still closed with this plumbing; the tunnel, the wg route and the router keep working', async () => {
    const wan = capture(lab, lab.wan[0]!, 'eth0', `src net ${LAN_NET} or icmp`);
    await wan.ready;
    vm.proc.kill('SIGKILL');
    await new Promise((r) => vm.proc.once('exit', r));
    const direct = sh(lab.lan[0]!, `ping -c 3 -i 0.3 -W 1 ${GATEWAY}`);
    const tunnel = sh(lab.lan[0]!, `ping -c 3 -i 0.3 -W 3 ${REMOTE_HOST}`);
    const wg = sh(lab.lan[0]!, 'ping -c 2 -i 0.3 -W 3 10.200.0.1');
    const clear = await wan.stop();
    expect(received(direct.stdout), direct.stdout).toBe(0);
    expect(clear.filter((l) => l.includes('192.168.1.'))).toEqual([]);
    expect(clear.filter((l) => l.includes(REMOTE_HOST))).toEqual([]);
    expect(received(tunnel.stdout), tunnel.stdout).toBe(3);
    expect(received(wg.stdout), wg.stdout).toBe(2);
    expect(received(sh(lab.router, `ping -c 2 -i 0.3 -W 2 ${GATEWAY}`).stdout)).toBe(2);
  }, 60_000);
});
