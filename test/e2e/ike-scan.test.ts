// IKEv1 main mode from UDP port 500 through the NAT with ike-scan (real,
// unmodified): several LAN hosts start main mode with a strongSwan responder
// on the WAN host at once, each from its own port 500 and with its own
// initiator cookie. The NAT under test is vpnmasq by default, the Linux
// kernel's nftables masquerade with VPNMASQ_E2E_NAT=kernel (baseline).
//
// DESIGN.md, "VPN semantics": keep source port 500 where it is free toward
// that server; when several LAN hosts talk to the same server from port 500,
// route inbound IKE by the full initiator cookie (then the responder
// cookie); a new exchange whose initiator cookie collides with an
// outstanding one is dropped and counted, not misrouted.
//
// ike-scan only reports an answer that carries its own initiator cookie, so
// "handshake returned" in a host's output proves the answer reached the host
// that asked. tcpdump on the WAN host shows what left the router.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { startServer, skipUnlessStrongSwan } from './peers/strongswan.js';
import type { StrongSwanServer } from './peers/strongswan.js';
import { ikeScan, randomCookie } from './peers/ikescan.js';
import type { IkeScanResult } from './peers/ikescan.js';
import { Capture } from './peers/ike-capture.js';
import type { IsakmpPacket } from './peers/ike-capture.js';
import { natKindFromEnv, startNat } from './peers/nat.js';
import type { Nat } from './peers/nat.js';

const KIND = natKindFromEnv();

const skip =
  skipUnless({ root: true, tun: true, tools: ['ip', 'swanctl', 'ike-scan', 'tcpdump', 'nft', 'unshare'] }) ||
  skipUnlessStrongSwan();

describe.skipIf(skip)(`IKEv1 main mode from port 500 with ike-scan (${KIND})`, () => {
  let lab: LabT;
  let nat: Nat;
  let server: StrongSwanServer;
  const ROUTER_WAN = '203.0.113.1';
  let SERVER = '';

  const show = (r: IkeScanResult): string => `${r.ns} cookie ${r.cookie}:\n${r.output}`;
  const line = (p: IsakmpPacket): string =>
    `${p.src}:${p.sport} > ${p.dst}:${p.dport} ${p.icookie}->${p.rcookie} ${p.exchange}`;
  const diag = (cap?: Capture): string =>
    [cap ? `--- WAN capture ---\n${cap.isakmp().map(line).join('\n')}` : '', server?.logTail(30) ?? '', nat?.logTail(30) ?? ''].join('\n');

  /** Runs ike-scan in the given hosts at once while capturing on the WAN host. */
  async function scanAll(hosts: { ns: string; cookie: string }[]): Promise<{ results: IkeScanResult[]; wan: IsakmpPacket[]; cap: Capture }> {
    const cap = await Capture.start(lab, lab.wan[0]!, { filter: 'udp port 500' });
    try {
      const results = await Promise.all(hosts.map((h) => ikeScan(lab, h.ns, SERVER, { cookie: h.cookie, retries: 2, tryTimeoutMs: 800 })));
      await cap.stop();
      return { results, wan: cap.isakmp(), cap };
    } catch (e) {
      await cap.stop(0);
      throw e;
    }
  }

  /** The answered exchange of `r` as seen on the WAN: request(s) and response(s) carrying its cookie. */
  function exchange(wan: IsakmpPacket[], r: IkeScanResult): { req: IsakmpPacket[]; resp: IsakmpPacket[] } {
    return {
      req: wan.filter((p) => p.icookie === r.cookie && p.fromInitiator && p.dst === SERVER),
      resp: wan.filter((p) => p.icookie === r.cookie && !p.fromInitiator && p.src === SERVER),
    };
  }

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `ik${process.pid % 10000}`, lanHosts: 3, wanHosts: 1 });
    SERVER = lab.addr.wan[0]!;
    nat = await startNat(lab, [], KIND);
    server = await startServer(lab, lab.wan[0]!, { ikev1: true });
  }, 40_000);

  afterAll(async () => {
    await server?.stop();
    await nat?.stop();
    lab?.destroy();
  }, 30_000);

  it('01 one LAN host: main mode from port 500 is answered and leaves from port 500', async () => {
    const { results: [r], wan, cap } = await scanAll([{ ns: lab.lan[0]!, cookie: randomCookie() }]);
    expect(r!.handshakes.map((h) => h.host), show(r!) + diag(cap)).toEqual([SERVER]);
    const { req, resp } = exchange(wan, r!);
    expect(req.length, diag(cap)).toBeGreaterThan(0);
    expect(req.every((p) => p.src === ROUTER_WAN && p.sport === 500 && p.dport === 500), diag(cap)).toBe(true);
    expect(resp.some((p) => p.dst === ROUTER_WAN && p.dport === 500 && p.rcookie === r!.handshakes[0]!.cookieR), diag(cap)).toBe(true);
  });

  it('02 two LAN hosts at once: both answered; on the WAN both come from port 500, told apart by cookie', async () => {
    const hosts = [lab.lan[0]!, lab.lan[1]!].map((ns) => ({ ns, cookie: randomCookie() }));
    const { results, wan, cap } = await scanAll(hosts);
    for (const r of results) {
      expect(r.handshakes.map((h) => h.host), show(r) + diag(cap)).toEqual([SERVER]);
      // the response that reached this host is the one the server sent for its cookie
      const { resp } = exchange(wan, r);
      expect(resp.map((p) => p.rcookie), diag(cap)).toContain(r.handshakes[0]!.cookieR);
    }
    const sports = results.map((r) => exchange(wan, r).req.map((p) => p.sport));
    if (KIND === 'kernel') {
      // Baseline: lan1 still holds 192.168.1.10:500 <-> 203.0.113.1:500 from
      // test 01, so the kernel keeps 500 for lan1 and moves lan2 to another
      // (privileged, <1024) source port. Both are still answered, because
      // they use distinct outside ports.
      expect(sports[0]!.every((p) => p === 500), `sports ${JSON.stringify(sports)}`).toBe(true);
      expect(sports[1]!.every((p) => p !== 500), `sports ${JSON.stringify(sports)}`).toBe(true);
      return;
    }
    const all500 = (ps: number[]): boolean => ps.length > 0 && ps.every((p) => p === 500);
    expect(sports.map(all500), `source ports on the WAN per host: ${JSON.stringify(sports)}\n${diag(cap)}`).toEqual([true, true]);
    for (const r of results) expect(exchange(wan, r).resp.every((p) => p.dport === 500)).toBe(true);
  });

  it('03 a third host joins while the first two exchanges are outstanding: answered, from port 500 too', async () => {
    const { results: [r], wan, cap } = await scanAll([{ ns: lab.lan[2]!, cookie: randomCookie() }]);
    expect(r!.handshakes.map((h) => h.host), show(r!) + diag(cap)).toEqual([SERVER]);
    const sports = exchange(wan, r!).req.map((p) => p.sport);
    if (KIND === 'kernel') {
      expect(sports.every((p) => p !== 500), `sports ${sports}`).toBe(true); // baseline: moved as well
      return;
    }
    expect(sports.length > 0 && sports.every((p) => p === 500), `sports ${sports}\n${diag(cap)}`).toBe(true);
  });

  it('04 a second host reusing an outstanding initiator cookie is dropped and counted, not misrouted', async () => {
    const cookie = randomCookie();
    const first = await scanAll([{ ns: lab.lan[0]!, cookie }]);
    expect(first.results[0]!.handshakes.map((h) => h.host), show(first.results[0]!) + diag(first.cap)).toEqual([SERVER]);
    const dropsBefore = nat.dropTotal();
    const second = await scanAll([{ ns: lab.lan[1]!, cookie }]);
    const r = second.results[0]!;
    // never answered: the only answer for this cookie belongs to lan1
    expect(r.handshakes, show(r) + diag(second.cap)).toEqual([]);
    const req = exchange(second.wan, r).req;
    if (KIND === 'kernel') {
      // Baseline: the kernel sends it on from another source port; strongSwan
      // takes it for a retransmit of lan1's exchange (same cookie, same
      // 203.0.113.1) and answers lan1's port 500 — so lan2 still gets nothing.
      expect(req.length, diag(second.cap)).toBeGreaterThan(0);
      expect(req.every((p) => p.sport !== 500), diag(second.cap)).toBe(true);
      return;
    }
    expect(req, `lan2's colliding request left the router\n${diag(second.cap)}`).toEqual([]);
    expect(nat.dropTotal(), `drops ${JSON.stringify(nat.drops())}`).toBeGreaterThan(dropsBefore);
  });
});
