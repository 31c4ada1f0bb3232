// fw4's src_ip / src_port / src_dip on a port forward, from the config
// through applyConfig to the engine: only the sources the redirect names
// open the forward; any other source is what it would be without the
// redirect (unsolicited: dropped, or a rule's). Established forwards keep
// working; the masquerade and other forwards are untouched.
import { describe, expect, it } from 'vitest';
import { TestRouter, WAN } from '../helpers/harness.js';
import { SYN, isakmp, parse, tcp, udp } from '../helpers/packet.js';
import { parseConfig } from '../../src/config/index.js';
import { applyConfig } from '../../src/engine/apply.js';

const SRV = '192.168.1.10';
const FRIEND = '198.51.100.7';
const FRIEND_NET_OTHER = '198.51.100.200';
const STRANGER = '203.0.113.99';

function router(redirect: string): TestRouter {
  const r = new TestRouter();
  const cfg = parseConfig(`config vpnmasq 'main'
	option lan_device 'br-lan'
	option wan_device 'wan'
	option enabled '1'
config redirect 'ssh'
	option proto 'tcp'
	option src_dport '2222'
	option dest_ip '${SRV}'
	option dest_port '22'
${redirect}
config redirect 'open'
	option proto 'udp'
	option src_dport '5000'
	option dest_ip '${SRV}'
`, 'test');
  applyConfig(r.engine, cfg, ['192.168.1.0/24']);
  return r;
}

describe('redirect src_ip / src_port / src_dip', () => {
  it('R01 src_ip: the named network opens the forward, others are dropped as unsolicited', () => {
    const r = router("\toption src_ip '198.51.100.0/25'");
    const ok = r.in(tcp(FRIEND, 40000, WAN, 2222, SYN));
    expect(ok).not.toBeNull();
    expect(parse(ok!)).toMatchObject({ dst: SRV, dport: 22 });
    expect(r.in(tcp(FRIEND_NET_OTHER, 40001, WAN, 2222, SYN))).toBeNull();
    expect(r.in(tcp(STRANGER, 40002, WAN, 2222, SYN))).toBeNull();
    // the reply of the allowed one goes back out through the WAN address
    expect(parse(r.out(tcp(SRV, 22, FRIEND, 40000, SYN | 0x10))!)).toMatchObject({ src: WAN, sport: 2222 });
    // an unrestricted redirect beside it is open to everyone
    expect(parse(r.in(udp(STRANGER, 1234, WAN, 5000))!)).toMatchObject({ dst: SRV, dport: 5000 });
  });

  it('R02 src_port: only from those source ports', () => {
    const r = router("\toption src_port '1000-1999'");
    expect(r.in(tcp(STRANGER, 1500, WAN, 2222, SYN))).not.toBeNull();
    expect(r.in(tcp(STRANGER, 999, WAN, 2222, SYN))).toBeNull();
    expect(r.in(tcp(STRANGER, 2000, WAN, 2222, SYN))).toBeNull();
  });

  it('R03 src_dip: only while the packets are addressed to that WAN address', () => {
    const same = router(`\toption src_dip '${WAN}'`);
    expect(same.in(tcp(STRANGER, 40000, WAN, 2222, SYN))).not.toBeNull();
    const other = router("\toption src_dip '198.18.0.1'");
    expect(other.in(tcp(STRANGER, 40000, WAN, 2222, SYN))).toBeNull();
  });

  it('R04 all three together; an attacker spoofing the allowed network from a wrong port is still refused', () => {
    const r = router("\toption src_ip '198.51.100.7'\n\toption src_port '40000'\n\toption src_dip '203.0.113.1'");
    expect(r.in(tcp(FRIEND, 40000, WAN, 2222, SYN))).not.toBeNull();
    expect(r.in(tcp(FRIEND, 40001, WAN, 2222, SYN))).toBeNull();
    expect(r.in(tcp(FRIEND_NET_OTHER, 40000, WAN, 2222, SYN))).toBeNull();
  });

  it('R05 an IKE responder behind the router (udp 500 forward) limited to one peer', () => {
    const r = new TestRouter();
    r.vpn();
    applyConfig(r.engine, parseConfig(`config vpnmasq 'main'
	option lan_device 'br-lan'
	option wan_device 'wan'
	option enabled '1'
config redirect
	option proto 'udp'
	option src_dport '500'
	option dest_ip '${SRV}'
	option src_ip '${FRIEND}'
`, 'test'), ['192.168.1.0/24']);
    expect(parse(r.in(isakmp(FRIEND, 500, WAN, 500, '0101010101010101'))!).dst).toBe(SRV);
    expect(r.in(isakmp(STRANGER, 500, WAN, 500, '0202020202020202'))).toBeNull();
  });
});
