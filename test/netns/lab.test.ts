// Integration test of the namespace lab itself (src/lab/lab.ts): topology,
// isolation (the WAN cannot reach the LAN), kernel masquerade as a known-good
// NAT, WAN-address change, teardown and stale-lab cleanup.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { skipUnless } from '../helpers/prereq.js';
import { Lab, cleanupStaleLabs } from '../../src/lab/lab.js';

// unique per test file and per run: ≤ 6 chars, [a-z0-9]
const PID = process.pid.toString(36);
const ID = `l${PID}`;
const ID_MULTI = `m${PID}`;
const ID_STALE = `s${PID}`;

const skip = skipUnless({ root: true, tools: ['ip', 'nft', 'ping', 'tcpdump'] });

function netnsList(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 10_000 })
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n): n is string => !!n);
}

const NFT_MASQ = `table ip labtest {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade
  }
}
`;

/** Starts tcpdump in ns for one packet matching filter; resolves once it is capturing. */
async function capture(lab: Lab, ns: string, filter: string): Promise<{ child: ChildProcess; done: Promise<string> }> {
  const child = lab.spawn(ns, ['tcpdump', '-n', '-l', '--immediate-mode', '-c', '1', '-i', 'eth0', filter]);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => (out += d));
  const listening = new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`tcpdump did not start: ${err}`)), 10_000);
    child.stderr!.on('data', (d: string) => {
      err += d;
      if (err.includes('listening on')) {
        clearTimeout(t);
        resolve();
      }
    });
    child.once('exit', () => {
      clearTimeout(t);
      reject(new Error(`tcpdump exited early: ${err}`));
    });
  });
  const done = new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`tcpdump saw nothing within 10 s: ${err}`));
    }, 10_000);
    child.once('close', () => {
      clearTimeout(t);
      resolve(out);
    });
  });
  await listening;
  return { child, done };
}

const ping = (lab: Lab, ns: string, dst: string): void => {
  lab.exec(ns, ['ping', '-n', '-c', '1', '-W', '2', dst], { timeoutMs: 10_000 });
};

describe.skipIf(skip)('lab: router, 2 LAN hosts, 1 WAN host', () => {
  let lab: Lab;

  beforeAll(() => {
    lab = Lab.create({ id: ID });
  });
  afterAll(() => {
    lab?.destroy();
  });

  it('builds the namespaces, devices and addresses', () => {
    expect(lab.router).toBe(`vm${ID}-router`);
    expect(lab.lan).toEqual([`vm${ID}-lan1`, `vm${ID}-lan2`]);
    expect(lab.wan).toEqual([`vm${ID}-wan1`]);
    for (const ns of [lab.router, ...lab.lan, ...lab.wan]) expect(ns.length).toBeLessThanOrEqual(15);
    expect(lab.addr).toMatchObject({
      routerLan: '192.168.1.1',
      routerWan: '203.0.113.1',
      lan: ['192.168.1.10', '192.168.1.11'],
      wan: ['203.0.113.2'],
      lanSubnet: '192.168.1.0/24',
      wanSubnet: '203.0.113.0/24',
    });
    const names = netnsList();
    for (const ns of lab.namespaces) expect(names).toContain(ns);

    const br = lab.exec(lab.router, ['ip', '-o', '-4', 'addr', 'show', 'dev', 'br-lan']);
    expect(br).toContain('192.168.1.1/24');
    const wan = lab.exec(lab.router, ['ip', '-o', '-4', 'addr', 'show', 'dev', 'wan']);
    expect(wan).toContain('203.0.113.1/24');
    expect(lab.exec(lab.router, ['ip', '-d', 'link', 'show', 'dev', 'wan'])).toMatch(/mtu 1500[\s\S]*veth/);
    expect(lab.exec(lab.router, ['sysctl', '-n', 'net.ipv4.ip_forward']).trim()).toBe('1');
    expect(lab.exec(lab.lan[0]!, ['ip', 'route', 'show', 'default'])).toContain('via 192.168.1.1');
    // the WAN host has no route back to the LAN
    expect(lab.exec(lab.wan[0]!, ['ip', 'route'])).not.toMatch(/default|192\.168\.1\./);
    for (const ns of lab.namespaces) {
      expect(lab.exec(ns, ['sysctl', '-n', 'net.ipv6.conf.all.disable_ipv6']).trim()).toBe('1');
      expect(lab.exec(ns, ['ip', '-6', 'addr'])).toBe('');
    }
  });

  it('LAN hosts can ping the router LAN address', () => {
    for (const ns of lab.lan) ping(lab, ns, lab.addr.routerLan);
  });

  it('the WAN host cannot reach 192.168.1.10 directly', () => {
    const r = lab.tryExec(lab.wan[0]!, ['ping', '-n', '-c', '1', '-W', '1', '192.168.1.10'], { timeoutMs: 10_000 });
    expect(r.ok).toBe(false);
  });

  it('without NAT, LAN -> WAN gets no answer', () => {
    const r = lab.tryExec(lab.lan[0]!, ['ping', '-n', '-c', '1', '-W', '1', lab.addr.wan[0]!], { timeoutMs: 10_000 });
    expect(r.ok).toBe(false);
  });

  it('with nft masquerade, LAN -> WAN ping works and the WAN sees 203.0.113.1', async () => {
    lab.exec(lab.router, ['nft', '-f', '-'], { input: NFT_MASQ });
    try {
      const cap = await capture(lab, lab.wan[0]!, 'icmp[icmptype] == icmp-echo');
      ping(lab, lab.lan[0]!, lab.addr.wan[0]!);
      const seen = await cap.done;
      expect(seen).toMatch(/IP 203\.0\.113\.1 > 203\.0\.113\.2: ICMP echo request/);
      ping(lab, lab.lan[1]!, lab.addr.wan[0]!);
    } finally {
      lab.tryExec(lab.router, ['nft', 'delete', 'table', 'ip', 'labtest']);
    }
  });

  it('setWanAddress() replaces the router WAN address', async () => {
    lab.setWanAddress('203.0.113.9');
    try {
      expect(lab.addr.routerWan).toBe('203.0.113.9');
      const wan = lab.exec(lab.router, ['ip', '-o', '-4', 'addr', 'show', 'dev', 'wan']);
      expect(wan).toContain('203.0.113.9/24');
      expect(wan).not.toContain('203.0.113.1/');
      expect(lab.exec(lab.router, ['ip', 'route', 'show', 'default'])).toContain('via 203.0.113.2 dev wan');
      lab.exec(lab.router, ['nft', '-f', '-'], { input: NFT_MASQ });
      const cap = await capture(lab, lab.wan[0]!, 'icmp[icmptype] == icmp-echo');
      ping(lab, lab.lan[0]!, lab.addr.wan[0]!);
      expect(await cap.done).toMatch(/IP 203\.0\.113\.9 > 203\.0\.113\.2: ICMP echo request/);
    } finally {
      lab.tryExec(lab.router, ['nft', 'delete', 'table', 'ip', 'labtest']);
      lab.setWanAddress('203.0.113.1');
    }
    expect(lab.addr.routerWan).toBe('203.0.113.1');
  });

  it('exec() throws with the stderr of a failing command', () => {
    expect(() => lab.exec(lab.router, ['ip', 'link', 'show', 'dev', 'nosuchdev'])).toThrow(/nosuchdev|does not exist/);
  });

  it('destroy() kills tracked children, removes every namespace, and is idempotent', async () => {
    const sleeper = lab.spawn(lab.wan[0]!, ['sleep', '60']);
    const exited = new Promise((r) => sleeper.once('exit', r));
    const names = [...lab.namespaces];
    lab.destroy();
    await exited;
    const left = netnsList();
    for (const ns of names) expect(left).not.toContain(ns);
    expect(left.filter((n) => n.startsWith(`vm${ID}-`))).toEqual([]);
    expect(() => lab.destroy()).not.toThrow();
  });
});

describe.skipIf(skip)('lab: 3 LAN hosts, 2 WAN hosts behind a WAN switch', () => {
  let lab: Lab;
  beforeAll(() => {
    lab = Lab.create({ id: ID_MULTI, lanHosts: 3, wanHosts: 2 });
  });
  afterAll(() => lab?.destroy());

  it('each host has its own namespace and the expected address', () => {
    expect(lab.lan).toHaveLength(3);
    expect(lab.wan).toEqual([`vm${ID_MULTI}-wan1`, `vm${ID_MULTI}-wan2`]);
    expect(lab.addr.lan).toEqual(['192.168.1.10', '192.168.1.11', '192.168.1.12']);
    expect(lab.addr.wan).toEqual(['203.0.113.2', '203.0.113.3']);
    expect(lab.exec(lab.wan[1]!, ['ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0'])).toContain('203.0.113.3/24');
  });

  it('router reaches both WAN hosts; LAN hosts reach the router and each other', () => {
    ping(lab, lab.router, '203.0.113.2');
    ping(lab, lab.router, '203.0.113.3');
    ping(lab, lab.lan[2]!, lab.addr.routerLan);
    ping(lab, lab.lan[0]!, lab.addr.lan[2]!);
  });

  it('the second WAN host sees masqueraded traffic from 203.0.113.1', async () => {
    lab.exec(lab.router, ['nft', '-f', '-'], { input: NFT_MASQ });
    const cap = await capture(lab, lab.wan[1]!, 'icmp[icmptype] == icmp-echo');
    ping(lab, lab.lan[2]!, '203.0.113.3');
    expect(await cap.done).toMatch(/IP 203\.0\.113\.1 > 203\.0\.113\.3: ICMP echo request/);
  });

  it('destroy() removes the switch namespace too', () => {
    const names = [...lab.namespaces];
    expect(names).toContain(`vm${ID_MULTI}-wsw`);
    lab.destroy();
    const left = netnsList();
    for (const ns of names) expect(left).not.toContain(ns);
  });
});

describe.skipIf(skip)('cleanupStaleLabs', () => {
  const stale = `vm${ID_STALE}-router`;
  afterAll(() => {
    try {
      execFileSync('ip', ['netns', 'del', stale], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  });

  it('removes namespaces of a dead lab and keeps a live one', () => {
    execFileSync('ip', ['netns', 'add', stale]); // a leftover without a live owner
    const live = Lab.create({ id: `k${PID}`, lanHosts: 1 });
    try {
      cleanupStaleLabs(`vm${ID_STALE}`);
      cleanupStaleLabs(`vmk${PID}`);
      const names = netnsList();
      expect(names).not.toContain(stale);
      for (const ns of live.namespaces) expect(names).toContain(ns);
    } finally {
      live.destroy();
    }
  });
});
