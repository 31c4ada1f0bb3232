// The router as VPN endpoint: its own IKE daemon (real strongSwan in the
// router namespace) is reached through `config rule` sections accepting UDP
// 500/4500 and ESP to the router; that traffic is not translated, and a LAN
// host's IKE to another server from port 500 keeps working beside it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { startServer, skipUnlessStrongSwan, type StrongSwanServer } from './peers/strongswan.js';
import { ikeScan, randomCookie } from './peers/ikescan.js';
import { startNat, type Nat } from './peers/nat.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'swanctl', 'ike-scan', 'nft', 'unshare'] }) || skipUnlessStrongSwan();

const RULES = `
config rule
	option name 'Allow-IKE'
	option src 'wan'
	option proto 'udp'
	option dest_port '500 4500'
	option target 'ACCEPT'
config rule
	option name 'Allow-ESP'
	option src 'wan'
	option proto 'esp'
	option target 'ACCEPT'
`;

describe.skipIf(skip)('the router as VPN endpoint (vpnmasq rules, strongSwan on the router)', () => {
  let lab: LabT;
  let nat: Nat;
  let onRouter: StrongSwanServer;
  let onWan: StrongSwanServer;
  const ROUTER_WAN = '203.0.113.1';

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `re${process.pid % 10000}`, lanHosts: 1, wanHosts: 2 });
    nat = await startNat(lab, [], 'vpnmasq', RULES);
    onRouter = await startServer(lab, lab.router, { address: ROUTER_WAN });
    onWan = await startServer(lab, lab.wan[1]!);
  }, 40_000);

  afterAll(async () => {
    await onRouter?.stop();
    await onWan?.stop();
    await nat?.stop();
    lab?.destroy();
  }, 30_000);

  it('01 a WAN host\'s IKE reaches the router\'s own daemon untranslated, and its answer leaves from port 500', async () => {
    const cookie = randomCookie();
    const r = await ikeScan(lab, lab.wan[0]!, ROUTER_WAN, { cookie, retries: 2, tryTimeoutMs: 800 });
    expect(r.handshakes.length, `${r.output}\n${onRouter.logTail(30)}\n${nat.logTail(30)}`).toBe(1);
    expect(r.handshakes[0]!.host).toBe(ROUTER_WAN);
    // the router's daemon saw the WAN host itself, on port 500
    const seen = onRouter.packets().filter((p) => p.dir === 'received');
    expect(seen.some((p) => p.from === lab.addr.wan[0] && p.to === ROUTER_WAN && p.toPort === 500), onRouter.logTail(30)).toBe(true);
    // conntrack: an IKE entry whose "LAN" side is the router itself
    const ike = nat.flows().filter((f) => (f.raw as { state?: string }).state === 'IKE');
    expect(ike.some((f) => f.lan === ROUTER_WAN && f.remote === lab.addr.wan[0]), JSON.stringify(ike)).toBe(true);
  });

  it('02 at the same time a LAN host talks IKE to another server from port 500', async () => {
    const [lanScan, wanScan] = await Promise.all([
      ikeScan(lab, lab.lan[0]!, lab.addr.wan[1]!, { cookie: randomCookie(), retries: 2, tryTimeoutMs: 800 }),
      ikeScan(lab, lab.wan[0]!, ROUTER_WAN, { cookie: randomCookie(), retries: 2, tryTimeoutMs: 800 }),
    ]);
    expect(lanScan.handshakes.length, lanScan.output).toBe(1);
    expect(wanScan.handshakes.length, wanScan.output).toBe(1);
    const fromLan = onWan.packets().filter((p) => p.dir === 'received');
    expect(fromLan.every((p) => p.from === ROUTER_WAN && p.fromPort === 500), onWan.logTail(20)).toBe(true);
  });

  it('03 IKE to a port the rules do not open is refused', async () => {
    // dropped and counted, no answer
    const before = nat.drops().no_flow ?? 0;
    const r = await ikeScan(lab, lab.wan[0]!, ROUTER_WAN, { sport: 501, cookie: randomCookie(), retries: 0, tryTimeoutMs: 500, extra: ['--dport=501'] });
    expect(r.handshakes.length).toBe(0);
    expect((nat.drops().no_flow ?? 0)).toBeGreaterThan(before);
  });
});
