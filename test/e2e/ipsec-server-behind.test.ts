// An IPsec server behind the router (redirects of UDP 500 and 4500 and a
// protocol forward of ESP to a LAN host) reached by a client on the WAN,
// while another LAN host runs IPsec as a client to an outside server at the
// same time: real strongSwan on all four ends.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/prereq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { startClient, startServer, skipUnlessStrongSwan, type StrongSwanClient, type StrongSwanServer } from './peers/strongswan.js';
import { startNat, type Nat } from './peers/nat.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'swanctl', 'nft', 'unshare', 'ping'] }) || skipUnlessStrongSwan();

const FORWARDS = `
config redirect
	option name 'ike'
	option proto 'udp'
	option src_dport '500'
	option dest_ip '192.168.1.10'
config redirect
	option name 'natt'
	option proto 'udp'
	option src_dport '4500'
	option dest_ip '192.168.1.10'
config redirect
	option name 'esp'
	option proto 'esp'
	option dest_ip '192.168.1.10'
`;

describe.skipIf(skip)('an IPsec server behind the router and an IPsec client beside it', () => {
  let lab: LabT;
  let nat: Nat;
  let inside: StrongSwanServer;   // on LAN host 1, reached through the forwards
  let outside: StrongSwanServer;  // on WAN host 2
  let remote: StrongSwanClient;   // on WAN host 1, calls the router's address
  let local: StrongSwanClient;    // on LAN host 2, calls the outside server
  const diag = () => [remote, local, inside, outside].map((x) => x?.logTail(40) ?? '').join('\n') + '\n' + (nat?.logTail(40) ?? '');

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `sb${process.pid % 10000}`, lanHosts: 2, wanHosts: 2 });
    nat = await startNat(lab, [], 'vpnmasq', FORWARDS);
    inside = await startServer(lab, lab.lan[0]!, { address: '192.168.1.10', ikev1: false });
    outside = await startServer(lab, lab.wan[1]!, { tunnelAddress: '10.98.0.1', pool: '10.98.1.0/24', ikev1: false });
    remote = await startClient(lab, lab.wan[0]!, '203.0.113.1', 'remote1');
    local = await startClient(lab, lab.lan[1]!, outside, 'local1');
  }, 60_000);

  afterAll(async () => {
    await Promise.all([remote?.stop(), local?.stop()]);
    await Promise.all([inside?.stop(), outside?.stop()]);
    await nat?.stop();
    lab?.destroy();
  }, 30_000);

  it('01 both tunnels come up at the same time', async () => {
    const [r, l] = await Promise.all([remote.tryInitiate(20_000), local.tryInitiate(20_000)]);
    expect(r.ok, `remote:\n${r.output}\n${diag()}`).toBe(true);
    expect(l.ok, `local:\n${l.output}\n${diag()}`).toBe(true);
    // the server behind the router saw the WAN client itself, and knows it is behind a NAT
    const sas = (await inside.listSas()).filter((s) => s.state === 'ESTABLISHED');
    expect(sas.map((s) => s.remoteHost), diag()).toEqual([lab.addr.wan[0]]);
    // the outside server saw the router's address
    const out = (await outside.listSas()).filter((s) => s.state === 'ESTABLISHED');
    expect(out.map((s) => s.remoteHost), diag()).toEqual(['203.0.113.1']);
  }, 60_000);

  it('02 pings through both tunnels are answered', async () => {
    const [r, l] = await Promise.all([remote.pingThroughTunnel(4), local.pingThroughTunnel(4)]);
    expect(r.received, `remote: ${r.output}\n${diag()}`).toBe(4);
    expect(l.received, `local: ${l.output}\n${diag()}`).toBe(4);
  }, 30_000);

  it('03 the flow table shows the forwarded IKE and NAT-T of the server beside the client\'s own', () => {
    const flows = nat.flows();
    const toServer = flows.filter((f) => f.lan === '192.168.1.10');
    expect(toServer.some((f) => f.lanPort === 4500 && f.remote === lab.addr.wan[0]), JSON.stringify(flows)).toBe(true);
    const client = flows.filter((f) => f.lan === '192.168.1.11' && f.remote === lab.addr.wan[1]);
    expect(client.some((f) => f.lanPort === 4500 && f.wanPort !== 4500), JSON.stringify(flows)).toBe(true);
  });
});
