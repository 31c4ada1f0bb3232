// NAT loopback's kernel side in the routing plan (src/net/routes.ts), pure:
// rule 15 before local delivery, the `reflect` chain that marks a LAN host's
// packets to a forwarded port of the WAN address and a forward's server
// answering the router at a pool port, the WAN address set that follows the
// address. The netns tests (test/netns/routes.test.ts, reflection.test.ts)
// check what the kernel makes of them.
import { describe, expect, it } from 'vitest';
import { planCommands, planNft, planWanAddrSet, type ForwardPlan, type RoutingPlan } from '../../../src/net/routes.js';
import { forwardsOf } from '../../../src/supervisor.js';
import { parseConfig } from '../../../src/config/index.js';

const plan: RoutingPlan = {
  lanDevice: 'br-lan', wanDevice: 'wan', tunInside: 'tin', tunOutside: 'tout',
  wanAddress: '203.0.113.2', lanSubnets: ['192.168.77.0/24'], masqPorts: [61000, 65535],
};
const web: ForwardPlan = { proto: 'tcp', ports: [8080, 8080], server: '192.168.77.10', serverPorts: [80, 80] };
const games: ForwardPlan = { proto: 'udp', ports: [27000, 27010], server: '192.168.77.11', serverPorts: [27000, 27010] };

/** The rules of chain reflect, one string each. */
function reflectChain(nft: string): string[] {
  const m = /\tchain reflect \{\n([\s\S]*?)\t\}/.exec(nft);
  expect(m).not.toBeNull();
  return m![1]!.split('\n').map((l) => l.trim()).filter(Boolean);
}

describe('NAT loopback in the routing plan', () => {
  it('rule 15 sends LAN traffic with the reflection mark into the inside table, before local delivery (20)', () => {
    const cmds = planCommands(plan).map((a) => a.join(' '));
    const r15 = cmds.indexOf('-4 rule add pref 15 iif br-lan fwmark 0x2000000/0x2000000 lookup 100');
    expect(r15).toBeGreaterThan(-1); // preference 15 < 20: looked at before local delivery
    expect(planCommands({ ...plan, reflectMark: 0x4 }).map((a) => a.join(' '))).toContain('-4 rule add pref 15 iif br-lan fwmark 0x4/0x4 lookup 100');
    expect(() => planCommands({ ...plan, reflectMark: 0x01000000 })).toThrow(/different bits/);
    expect(() => planCommands({ ...plan, reflectMark: 6 })).toThrow(/single bit/);
  });

  it('marks a LAN host calling a forwarded port of the WAN address, and the servers\' answers to a router address at a pool port', () => {
    const nft = planNft({ ...plan, forwards: [web, games] });
    expect(nft).toContain('iifname "br-lan" jump reflect');
    expect(nft).toContain('set wan_addr {\n\t\ttype ipv4_addr; elements = { 203.0.113.2 };');
    expect(reflectChain(nft)).toEqual([
      'ip daddr @wan_addr tcp dport { 8080 } meta mark set meta mark | 0x2000000',
      'ip daddr @wan_addr udp dport { 27000-27010 } meta mark set meta mark | 0x2000000',
      'th dport != 61000-65535 return',
      'fib daddr type != local return',
      'ip saddr 192.168.77.10 tcp sport 80 meta mark set meta mark | 0x2000000',
      'ip saddr 192.168.77.11 udp sport 27000-27010 meta mark set meta mark | 0x2000000',
    ]);
    // what the engine writes back into tin (iif tin) is never looked at
    expect(nft).not.toMatch(/"(tin|tout)"/);
  });

  it("reflection '0': the forwarded port is still diverted (the engine drops it, counted), its server's answers are not", () => {
    const chain = reflectChain(planNft({ ...plan, forwards: [web, { ...games, reflect: false }] }));
    expect(chain).toContain('ip daddr @wan_addr udp dport { 27000-27010 } meta mark set meta mark | 0x2000000');
    expect(chain.filter((l) => l.startsWith('ip saddr'))).toEqual(['ip saddr 192.168.77.10 tcp sport 80 meta mark set meta mark | 0x2000000']);
    // nothing reflected at all: no answer rules, not even their guards
    expect(reflectChain(planNft({ ...plan, forwards: [{ ...web, reflect: false }] }))).toEqual([
      'ip daddr @wan_addr tcp dport { 8080 } meta mark set meta mark | 0x2000000',
    ]);
  });

  it('no forwards: an empty chain; no WAN address yet: an empty set', () => {
    const nft = planNft({ ...plan, wanAddress: null });
    expect(reflectChain(nft.replace('\tchain reflect {\n', '\tchain reflect {\n\t\tX\n'))).toEqual(['X']);
    expect(nft).toContain('set wan_addr {\n\t\ttype ipv4_addr;\n\t}');
  });

  it('overlapping and repeated forwarded ports become one interval each (nft refuses overlaps in a set)', () => {
    const nft = planNft({ ...plan, forwards: [web, { ...web, ports: [8000, 8090], serverPorts: [8000, 8090] }, web, { ...web, ports: [8091, 8091] }] });
    expect(reflectChain(nft)[0]).toBe('ip daddr @wan_addr tcp dport { 8000-8091 } meta mark set meta mark | 0x2000000');
  });

  it('refuses a forward that is not a TCP/UDP port range to an address', () => {
    expect(() => planNft({ ...plan, forwards: [{ ...web, proto: 'gre' as 'tcp' }] })).toThrow(/not a TCP\/UDP port forward/);
    expect(() => planNft({ ...plan, forwards: [{ ...web, ports: [9, 8] }] })).toThrow(/not a TCP\/UDP port forward/);
    expect(() => planNft({ ...plan, forwards: [{ ...web, server: 'srv' }] })).toThrow(/not a TCP\/UDP port forward/);
  });

  it('the WAN address set follows the address in one transaction', () => {
    expect(planWanAddrSet('198.51.100.9')).toBe('flush set ip vpnmasq wan_addr\nadd element ip vpnmasq wan_addr { 198.51.100.9 }\n');
    expect(planWanAddrSet(null)).toBe('flush set ip vpnmasq wan_addr\n');
  });

  it('the forwards of a config: TCP/UDP port forwards, reflection on or off; protocol forwards are not', () => {
    const cfg = parseConfig(`config vpnmasq 'main'
	option lan_device 'br-lan'
	option wan_device 'wan'
config redirect
	option proto 'tcpudp'
	option src_dport '5000-5001'
	option dest_ip '192.168.77.10'
	option dest_port '6000-6001'
config redirect
	option proto 'tcp'
	option src_dport '2222'
	option dest_ip '192.168.77.11'
	option dest_port '22'
	option reflection '0'
config redirect
	option proto 'esp'
	option dest_ip '192.168.77.12'
`, 'test');
    expect(forwardsOf(cfg)).toEqual([
      { proto: 'tcp', ports: [5000, 5001], server: '192.168.77.10', serverPorts: [6000, 6001], reflect: true },
      { proto: 'udp', ports: [5000, 5001], server: '192.168.77.10', serverPorts: [6000, 6001], reflect: true },
      { proto: 'tcp', ports: [2222, 2222], server: '192.168.77.11', serverPorts: [22, 22], reflect: false },
    ]);
  });
});
