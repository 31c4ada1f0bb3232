// IPsec passthrough end to end with real, unmodified strongSwan: two LAN
// hosts run IKEv2 road-warrior clients (charon + kernel-libipsec, so ESP is
// UDP-encapsulated) against one strongSwan server on the WAN host, at the
// same time, through the NAT under test in the router namespace — vpnmasq by
// default, the Linux kernel's nftables masquerade with VPNMASQ_E2E_NAT=kernel
// (the baseline; see the notes at the kernel-only expectations).
//
// What has to work (DESIGN.md, "VPN semantics"): IKE starts on UDP 500 from
// each client and, behind the NAT, moves to NAT-T on UDP 4500; both tunnels
// come up and carry traffic; the NAT-T flows of both hosts are ordinary UDP
// NAPT entries; and with several LAN hosts talking to one server from port
// 500, vpnmasq keeps source port 500 for all of them and routes inbound IKE
// by cookie (the kernel moves the second host to another port).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { startClient, startServer, skipUnlessStrongSwan } from './peers/strongswan.js';
import type { IkeSa, StrongSwanClient, StrongSwanServer } from './peers/strongswan.js';
import { Capture } from './peers/ike-capture.js';
import { natKindFromEnv, startNat } from './peers/nat.js';
import type { Nat } from './peers/nat.js';

const KIND = natKindFromEnv();

const skip =
  skipUnless({ root: true, tun: true, tools: ['ip', 'swanctl', 'ike-scan', 'tcpdump', 'nft', 'unshare', 'ping'] }) ||
  skipUnlessStrongSwan();

describe.skipIf(skip)(`IPsec passthrough: two strongSwan clients, one server (${KIND})`, () => {
  let lab: LabT;
  let nat: Nat;
  let server: StrongSwanServer;
  let wan: Capture;
  const clients: StrongSwanClient[] = [];
  const sas: IkeSa[] = [];
  const ROUTER_WAN = '203.0.113.1';

  /** IKE packets on the WAN, one line each. */
  const summary = (cap: Capture): string =>
    cap.isakmp().map((p) =>
      `  ${p.src}:${p.sport} > ${p.dst}:${p.dport} v${p.version}${p.natt ? ' natt' : ''} ${p.icookie}->${p.rcookie} ${p.exchange}`).join('\n');

  /** Everything a failing assertion wants to see. */
  const diag = (): string =>
    [
      ...clients.map((c) => c.logTail(50)),
      server?.logTail(50) ?? '',
      nat?.logTail(40) ?? '',
      `--- WAN capture (IKE) ---\n${wan ? summary(wan) : ''}`,
    ].join('\n');

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `sw${process.pid % 10000}`, lanHosts: 2, wanHosts: 1 });
    nat = await startNat(lab, [], KIND);
    server = await startServer(lab, lab.wan[0]!);
    wan = await Capture.start(lab, lab.wan[0]!, { filter: 'udp port 500 or udp port 4500' });
    clients.push(...(await Promise.all([
      startClient(lab, lab.lan[0]!, server, 'client1'),
      startClient(lab, lab.lan[1]!, server, 'client2'),
    ])));
  }, 40_000);

  afterAll(async () => {
    if (process.env.VPNMASQ_E2E_VERBOSE && wan) {
      // VPNMASQ_E2E_VERBOSE=1: what went over the WAN and what the NAT kept, for the record
      console.log(`[${KIND}] WAN IKE packets:\n${summary(wan)}` +
        `\n[${KIND}] NAT flows:\n` + nat.flows().map((f) =>
          `  ${f.proto} ${f.lan}:${f.lanPort} -> ${f.remote}:${f.remotePort} as ${f.wan}:${f.wanPort}`).join('\n'));
    }
    await wan?.stop(0);
    await Promise.all(clients.map((c) => c.stop()));
    await server?.stop();
    await nat?.stop();
    lab?.destroy();
  }, 30_000);

  it('01 without a tunnel the server tunnel address is unreachable (harness guard)', async () => {
    const r = lab.tryExec(lab.lan[0]!, ['ping', '-n', '-c', '1', '-W', '1', server.tunnelAddress]);
    expect(r.stdout, diag()).toContain(' 0 received');
    expect(server.guardDrops()).toBeGreaterThan(0);
  });

  it('02 both LAN clients bring their tunnels up to one server at the same time', async () => {
    const up = await Promise.all(clients.map((c) => c.tryInitiate(20_000)));
    up.forEach((r, i) => expect(r.ok, `client${i + 1}:\n${r.output}\n${diag()}`).toBe(true));
    sas.push(...up.map((r) => r.sa!));
    for (const sa of sas) {
      expect(sa.state).toBe('ESTABLISHED');
      expect(sa.natLocal, 'the client saw the NAT (NAT-D payloads)').toBe(true);
      expect(sa.localPort, 'IKE moved to NAT-T').toBe(4500);
      expect(sa.localVips).toHaveLength(1);
      const child = sa.children.find((c) => c.state === 'INSTALLED');
      expect(child?.encap, 'ESP in UDP').toBe(true);
    }
    expect(sas[0]!.localVips[0]).not.toBe(sas[1]!.localVips[0]);
    const onServer = (await server.listSas()).filter((s) => s.state === 'ESTABLISHED');
    expect(onServer.map((s) => s.remoteId).sort(), diag()).toEqual(['client1', 'client2']);
    for (const s of onServer) expect(s.remoteHost).toBe(ROUTER_WAN);
  }, 40_000);

  it('03 a ping through each tunnel is answered, both tunnels at once', async () => {
    const pings = await Promise.all(clients.map((c) => c.pingThroughTunnel(4)));
    pings.forEach((p, i) => {
      const msg = `client${i + 1}: ${p.output}\n${diag()}`;
      expect(p.received, msg).toBe(4);
      expect(p.espOut, msg).toBeGreaterThanOrEqual(4);
      expect(p.espIn, msg).toBeGreaterThanOrEqual(4);
    });
  }, 30_000);

  it('04 IKE started from UDP 500 of each client, then moved to UDP 4500', () => {
    clients.forEach((c, i) => {
      const sent = c.packets().filter((p) => p.dir === 'sent');
      expect(sent[0], c.logTail()).toMatchObject({ from: lab.addr.lan[i], fromPort: 500, to: server.address, toPort: 500 });
      // IKE_SA_INIT (and any retransmits of it) on 500, everything after on 4500
      const firstNatt = sent.findIndex((p) => p.fromPort === 4500);
      expect(firstNatt, c.logTail()).toBeGreaterThan(0);
      expect(sent.slice(0, firstNatt).every((p) => p.fromPort === 500 && p.toPort === 500), c.logTail()).toBe(true);
      expect(sent.slice(firstNatt).every((p) => p.fromPort === 4500 && p.toPort === 4500), c.logTail()).toBe(true);
    });
    // the same seen on the WAN: each client's IKE_SA_INIT request, by its SPI
    const isakmp = wan.isakmp();
    for (const sa of sas) {
      const init = isakmp.find((p) => p.icookie === sa.initiatorSpi && p.exchange.includes('ikev2_init') && p.fromInitiator);
      expect(init, `IKE_SA_INIT of ${sa.localId} on the WAN\n${diag()}`).toBeDefined();
      expect(init!.src).toBe(ROUTER_WAN);
      expect(init!.dport).toBe(500);
      const natt = isakmp.filter((p) => p.icookie === sa.initiatorSpi && p.natt);
      expect(natt.length, diag()).toBeGreaterThan(0);
      expect(natt.every((p) => (p.src === ROUTER_WAN ? p.dport : p.sport) === 4500)).toBe(true);
    }
  });

  it('05 the NAT shows the NAT-T flows (udp 4500) of both hosts, and they carry each tunnel\'s ESP', async () => {
    const flows = nat.flows();
    const natt = clients.map((_, i) =>
      flows.find((f) => f.proto === 'udp' && f.lan === lab.addr.lan[i] && f.lanPort === 4500 && f.remote === server.address && f.remotePort === 4500));
    natt.forEach((f, i) => expect(f, `no udp 4500 flow of ${lab.addr.lan[i]}:\n${JSON.stringify(flows, null, 1)}\n${diag()}`).toBeDefined());
    expect(natt[0]!.wan).toBe(ROUTER_WAN);
    expect(natt[1]!.wan).toBe(ROUTER_WAN);
    expect(natt[0]!.wanPort).not.toBe(natt[1]!.wanPort);
    // the server talks to each client on exactly that outside port
    const onServer = await server.listSas();
    clients.forEach((c, i) => {
      const s = onServer.find((x) => x.remoteId === c.id && x.state === 'ESTABLISHED');
      expect(s?.remotePort, diag()).toBe(natt[i]!.wanPort);
    });
    // ESP on the WAN: each client's outbound SPI comes from its mapping, its inbound SPI goes back to it
    const esp = wan.esp();
    sas.forEach((sa, i) => {
      const child = sa.children.find((c) => c.state === 'INSTALLED')!;
      const out = esp.filter((p) => p.spi === child.spiOut.replace(/^0+/, '') || p.spi === child.spiOut);
      const back = esp.filter((p) => p.spi === child.spiIn.replace(/^0+/, '') || p.spi === child.spiIn);
      expect(out.length, `ESP spi ${child.spiOut} of ${sa.localId}\n${diag()}`).toBeGreaterThan(0);
      expect(back.length, `ESP spi ${child.spiIn} to ${sa.localId}\n${diag()}`).toBeGreaterThan(0);
      expect(out.every((p) => p.src === ROUTER_WAN && p.sport === natt[i]!.wanPort)).toBe(true);
      expect(back.every((p) => p.dst === ROUTER_WAN && p.dport === natt[i]!.wanPort)).toBe(true);
    });
  });

  it('06 on the WAN both IKE_SA_INITs leave from port 500 of the router (inbound IKE routed by SPI)', () => {
    const isakmp = wan.isakmp();
    const ports = sas.map((sa) => isakmp.find((p) => p.icookie === sa.initiatorSpi && p.exchange.includes('ikev2_init') && p.fromInitiator)?.sport);
    if (KIND === 'kernel') {
      // Baseline: the kernel keeps 500 for whichever host came first and
      // moves the other to another source port (a clash of the 5-tuple).
      expect(ports.filter((p) => p === 500), `sports ${ports}`).toHaveLength(1);
      return;
    }
    expect(ports, `IKE_SA_INIT source ports on the WAN\n${diag()}`).toEqual([500, 500]);
    // and each answer went back to port 500 of the router
    for (const sa of sas) {
      const resp = isakmp.find((p) => p.icookie === sa.initiatorSpi && p.exchange.includes('ikev2_init') && !p.fromInitiator);
      expect(resp?.dport).toBe(500);
      expect(resp?.rcookie).toBe(sa.responderSpi);
    }
  });

  it('07 CHILD_SA rekeying through the NAT keeps both tunnels working', async () => {
    const before = await Promise.all(clients.map((c) => c.sa()));
    const rk = await Promise.all(clients.map((c) => c.swanctl(['--rekey', '--child', c.conn], 10_000)));
    rk.forEach((r) => expect(r.ok, r.stdout + r.stderr).toBe(true));
    // rekeying is asynchronous: wait until each client has a new inbound SPI
    const deadline = Date.now() + 10_000;
    for (;;) {
      const now = await Promise.all(clients.map((c) => c.sa()));
      const renewed = now.every((sa, i) => sa?.children.some((ch) => ch.state === 'INSTALLED' &&
        !before[i]!.children.some((old) => old.spiIn === ch.spiIn)));
      if (renewed) break;
      if (Date.now() > deadline) throw new Error(`CHILD_SAs were not rekeyed\n${diag()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const pings = await Promise.all(clients.map((c) => c.pingThroughTunnel(3)));
    pings.forEach((p, i) => expect(p.received, `client${i + 1}: ${p.output}\n${diag()}`).toBe(3));
  }, 30_000);

  it('08 both tunnels torn down and brought up again at once', async () => {
    const down = await Promise.all(clients.map((c) => c.swanctl(['--terminate', '--ike', c.conn, '--timeout', '5'], 8_000)));
    down.forEach((r) => expect(r.ok, r.stdout + r.stderr).toBe(true));
    const up = await Promise.all(clients.map((c) => c.tryInitiate(20_000)));
    up.forEach((r, i) => expect(r.ok, `client${i + 1}:\n${r.output}\n${diag()}`).toBe(true));
    const pings = await Promise.all(clients.map((c) => c.pingThroughTunnel(3)));
    pings.forEach((p, i) => expect(p.received, `client${i + 1}: ${p.output}\n${diag()}`).toBe(3));
  }, 50_000);
});
