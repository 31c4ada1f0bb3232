// Attack scenarios (issue 8 items 4 and 5): TCP state a blind attacker
// cannot steer, and no table one source (LAN or WAN) can fill. Each case
// is the attacker's packets beside the user's, whose traffic must go on.
import { describe, expect, it } from 'vitest';
import { TestRouter, WAN } from '../helpers/harness.js';
import { parseConfig } from '../../src/config/index.js';
import { applyConfig } from '../../src/engine/apply.js';
import {
  ACK, FIN, PSH, RST, SYN, esp, fragment, ipCsumOk, isakmp, l4CsumOk, parse, pptpMsg, tcp, udp, wscaleOpt,
} from '../helpers/packet.js';

const H1 = '192.168.1.10';
const H2 = '192.168.1.11';
const C = '192.168.1.20';
const S1 = '198.51.100.7';
const S2 = '198.51.100.8';

function ok(p: Uint8Array | null): Uint8Array {
  expect(p).not.toBeNull();
  expect(ipCsumOk(p!)).toBe(true);
  expect(l4CsumOk(p!)).toBe(true);
  return p!;
}

/** A WAN address for spray packet `i` (never a LAN, martian or our own address). */
function wanHost(i: number): string {
  return `100.${64 + ((i >> 16) & 0x3f)}.${(i >> 8) & 0xff}.${(i & 0xff) || 1}`;
}
const hex16 = (n: number) => n.toString(16).padStart(16, '0');

/** H1:40000 → S1:80, handshake done; returns the WAN port. ISNs: LAN 1000, server 5000. */
function established(r: TestRouter, o: { lanWin?: number; srvWin?: number; lanWs?: number; srvWs?: number } = {}) {
  const synOpts = o.lanWs === undefined ? {} : { tcpOptions: wscaleOpt(o.lanWs) };
  const sa = o.srvWs === undefined ? {} : { tcpOptions: wscaleOpt(o.srvWs) };
  const alias = parse(ok(r.out(tcp(H1, 40000, S1, 80, SYN, [], { seq: 1000, win: 64240, ...synOpts })))).sport;
  ok(r.in(tcp(S1, 80, WAN, alias, SYN | ACK, [], { seq: 5000, ack: 1001, win: 65160, ...sa })));
  ok(r.out(tcp(H1, 40000, S1, 80, ACK, [], { seq: 1001, ack: 5001, win: o.lanWin ?? 502 })));
  ok(r.in(tcp(S1, 80, WAN, alias, PSH | ACK, new Array(100).fill(7), { seq: 5001, ack: 1001, win: o.srvWin ?? 509 })));
  ok(r.out(tcp(H1, 40000, S1, 80, ACK, [], { seq: 1001, ack: 5101, win: o.lanWin ?? 502 })));
  return alias;
}
const flow = (r: TestRouter) => r.engine.flows(WAN, r.now).find((f) => f.proto === 'tcp')!;

describe('item 4: TCP state a blind attacker cannot steer', () => {
  it('A01 an RST with a sequence number outside the window is dropped (tcp_out_of_window) and the connection lives on; one inside closes it', () => {
    const r = new TestRouter();
    const alias = established(r);
    for (const seq of [5101 + 0x40000000, 5101 - 0x200000, 0x80000000 + 5101, 5101 + 0x100000]) {
      expect(r.in(tcp(S1, 80, WAN, alias, RST, [], { seq }))).toBeNull();
    }
    expect(r.drop('tcp_out_of_window')).toBe(4);
    expect(flow(r).state).toBe('ESTABLISHED');
    ok(r.out(tcp(H1, 40000, S1, 80, PSH | ACK, [1, 2, 3], { seq: 1001, ack: 5101 })));
    ok(r.in(tcp(S1, 80, WAN, alias, ACK, [], { seq: 5101, ack: 1004 })));
    // the server's own RST (sequence where the host expects it) still closes the flow
    ok(r.in(tcp(S1, 80, WAN, alias, RST, [], { seq: 5101 })));
    expect(flow(r).state).toBe('CLOSE');
  });

  it('A02 an out-of-window FIN does not shorten the flow\'s life; an in-window FIN does', () => {
    const r = new TestRouter();
    const alias = established(r);
    expect(r.in(tcp(S1, 80, WAN, alias, FIN | ACK, [], { seq: 5101 + 0x10000000, ack: 1001 }))).toBeNull();
    expect(r.drop('tcp_out_of_window')).toBe(1);
    const f = flow(r);
    expect(f.state).toBe('ESTABLISHED');
    expect(f.expiresInS).toBeGreaterThan(7000);
    ok(r.in(tcp(S1, 80, WAN, alias, FIN | ACK, [], { seq: 5101, ack: 1001 })));
    expect(flow(r).state).toBe('FIN_WAIT');
    expect(flow(r).expiresInS).toBeLessThanOrEqual(240);
  });

  it('A03 the check works from the LAN side too, and a blind RST ahead of the window is refused as well', () => {
    const r = new TestRouter();
    established(r);
    expect(r.out(tcp(H1, 40000, S1, 80, RST, [], { seq: 1001 + 0x01000000 }))).toBeNull();
    expect(r.drop('tcp_out_of_window')).toBe(1);
    expect(flow(r).state).toBe('ESTABLISHED');
    ok(r.out(tcp(H1, 40000, S1, 80, RST | ACK, [], { seq: 1001, ack: 5101 })));
    expect(flow(r).state).toBe('CLOSE');
  });

  it('A04 window scaling (RFC 7323) widens the window only as far as the host advertised it', () => {
    const r = new TestRouter();
    // the host advertises 1000 << 7 = 128000 bytes
    const alias = established(r, { lanWs: 7, srvWs: 7, lanWin: 1000 });
    expect(r.in(tcp(S1, 80, WAN, alias, RST, [], { seq: 5101 + 0x400000 }))).toBeNull(); // 4 MiB ahead
    expect(r.drop('tcp_out_of_window')).toBe(1);
    ok(r.in(tcp(S1, 80, WAN, alias, RST, [], { seq: 5101 + 120000 }))); // inside the scaled window
    expect(flow(r).state).toBe('CLOSE');
  });

  it('A05 a SYN on a port pair in TIME_WAIT opens a fresh connection (new state and flags)', () => {
    const r = new TestRouter();
    const alias = established(r);
    ok(r.out(tcp(H1, 40000, S1, 80, FIN | ACK, [], { seq: 1001, ack: 5101 })));
    ok(r.in(tcp(S1, 80, WAN, alias, FIN | ACK, [], { seq: 5101, ack: 1002 })));
    ok(r.out(tcp(H1, 40000, S1, 80, ACK, [], { seq: 1002, ack: 5102 })));
    expect(flow(r).state).toBe('TIME_WAIT');
    // the host reuses the port pair with a new ISN
    expect(parse(ok(r.out(tcp(H1, 40000, S1, 80, SYN, [], { seq: 900000 })))).sport).toBe(alias);
    expect(flow(r).state).toBe('SYN_SENT');
    ok(r.in(tcp(S1, 80, WAN, alias, SYN | ACK, [], { seq: 700000, ack: 900001 })));
    ok(r.out(tcp(H1, 40000, S1, 80, ACK, [], { seq: 900001, ack: 700001 })));
    expect(flow(r).state).toBe('ESTABLISHED');
    expect(flow(r).expiresInS).toBeGreaterThan(7000);
    // the old connection's FINs are forgotten: one FIN is FIN_WAIT, not TIME_WAIT
    ok(r.in(tcp(S1, 80, WAN, alias, FIN | ACK, [], { seq: 700001, ack: 900001 })));
    expect(flow(r).state).toBe('FIN_WAIT');
    // and the new sequence space is the one checked
    expect(r.in(tcp(S1, 80, WAN, alias, RST, [], { seq: 5101 }))).toBeNull();
    expect(r.drop('tcp_out_of_window')).toBe(1);
  });

  it('A06 a SYN after CLOSE reopens with fresh flags (a FIN of the old connection does not count)', () => {
    const r = new TestRouter();
    const alias = established(r);
    ok(r.out(tcp(H1, 40000, S1, 80, FIN | ACK, [], { seq: 1001, ack: 5101 })));
    ok(r.in(tcp(S1, 80, WAN, alias, RST, [], { seq: 5101 })));
    expect(flow(r).state).toBe('CLOSE');
    ok(r.out(tcp(H1, 40000, S1, 80, SYN, [], { seq: 50000 })));
    ok(r.in(tcp(S1, 80, WAN, alias, SYN | ACK, [], { seq: 60000, ack: 50001 })));
    ok(r.out(tcp(H1, 40000, S1, 80, ACK, [], { seq: 50001, ack: 60001 })));
    expect(flow(r).state).toBe('ESTABLISHED');
    ok(r.in(tcp(S1, 80, WAN, alias, FIN | ACK, [], { seq: 60001, ack: 50001 })));
    expect(flow(r).state).toBe('FIN_WAIT');
  });

  it('A07 data segments outside the window pass untouched but move nothing (liberal, like be_liberal)', () => {
    const r = new TestRouter();
    const alias = established(r);
    ok(r.in(tcp(S1, 80, WAN, alias, PSH | ACK, [9, 9], { seq: 5101 + 0x20000000, ack: 1001 })));
    // the spoofed data did not move the window: an RST next to it is still refused
    expect(r.in(tcp(S1, 80, WAN, alias, RST, [], { seq: 5103 + 0x20000000 }))).toBeNull();
    expect(flow(r).state).toBe('ESTABLISHED');
  });
});

describe('item 5, WAN side: unanswered entries are short-lived and evicted first', () => {
  it('B01 spoofed IKE initiator cookies to the router: unanswered entries die after unreplied_timeout; a full table still takes a LAN host\'s exchange', () => {
    const r = new TestRouter();
    r.vpn();
    r.acceptToRouter(17, 500, 500);
    // the router's own exchange, answered by its IKE daemon
    ok(r.in(isakmp(S1, 500, WAN, 500, 'aaaaaaaaaaaaaaaa')));
    ok(r.out(isakmp(WAN, 500, S1, 500, 'aaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbb')));
    for (let i = 1; i <= 5000; i++) r.in(isakmp(wanHost(i), 500, WAN, 500, hex16(0x1000000 + i)));
    // the table is full of spoofed exchanges: a LAN host's new exchange still gets in
    ok(r.out(isakmp(H1, 500, S2, 500, '0a0a0a0a0a0a0a0a')));
    expect(parse(ok(r.in(isakmp(S2, 500, WAN, 500, '0a0a0a0a0a0a0a0a', 'dddddddddddddddd')))).dst).toBe(H1);
    expect(r.drop('ike_table_full')).toBe(0);
    r.advance(31);
    const ike = r.vpnEntries().filter((e) => e.state === 'IKE');
    expect(ike.map((e) => e.icookie).sort()).toEqual(['0a0a0a0a0a0a0a0a', 'aaaaaaaaaaaaaaaa']);
    r.advance(600);
    expect(r.vpnEntries().filter((e) => e.state === 'IKE')).toHaveLength(2);
  });

  it('B02 unknown SPIs sprayed at an ESP forward: unanswered entries die after unreplied_timeout; the full table still takes new associations', () => {
    const r = new TestRouter();
    r.vpn();
    r.protoForward(50, C);
    // a real client of the server behind the router, answered by it
    expect(parse(ok(r.in(esp(S2, WAN, 0x7777)))).dst).toBe(C);
    ok(r.out(esp(C, S2, 0x8888)));
    for (let i = 1; i <= 9000; i++) r.in(esp(wanHost(i), WAN, 0x100000 + i));
    // a LAN host's new SA and another client of the server still get in
    ok(r.out(esp(H1, S1, 0x1111)));
    expect(parse(ok(r.in(esp(S1, WAN, 0xaaaa)))).dst).toBe(H1);
    expect(r.drop('esp_table_full')).toBe(0);
    r.advance(31);
    const left = r.vpnEntries().filter((e) => e.proto === 'esp');
    expect(left.length).toBeLessThanOrEqual(4);
    expect(parse(ok(r.in(esp(S2, WAN, 0x7777, 2)))).dst).toBe(C);
    expect(parse(ok(r.in(esp(S1, WAN, 0xaaaa, 2)))).dst).toBe(H1);
    r.advance(600);
    expect(parse(ok(r.in(esp(S2, WAN, 0x7777, 3)))).dst).toBe(C);
  });

  it('B03 bare ACKs sprayed at a port forward: unanswered flows die after unreplied_timeout, are evicted first, answered ones live on', () => {
    const r = new TestRouter({ maxFlows: 4096 });
    r.redirect(6, 8080, C, 80);
    // a real client, answered by the server behind the router
    ok(r.in(tcp(S2, 50000, WAN, 8080, SYN, [], { seq: 100 })));
    ok(r.out(tcp(C, 80, S2, 50000, SYN | ACK, [], { seq: 200, ack: 101 })));
    ok(r.in(tcp(S2, 50000, WAN, 8080, ACK, [], { seq: 101, ack: 201 })));
    for (let i = 1; i <= 6000; i++) r.in(tcp(wanHost(i), 1024 + (i % 60000), WAN, 8080, ACK, [], { seq: i }));
    const spray = r.engine.flows(WAN, r.now).filter((f) => f.remote !== S2);
    expect(spray.every((f) => f.expiresInS <= 30)).toBe(true);
    // a full table still opens the LAN host's flow (an unanswered entry makes room)
    ok(r.out(udp(H1, 5353, S1, 53)));
    expect(parse(ok(r.in(udp(S1, 53, WAN, 5353)))).dst).toBe(H1);
    expect(r.drop('table_full')).toBe(0);
    r.advance(31);
    const left = r.engine.flows(WAN, r.now);
    expect(left.map((f) => f.remote).sort()).toEqual([S1, S2]);
    expect(parse(ok(r.in(tcp(S2, 50000, WAN, 8080, PSH | ACK, [1], { seq: 101, ack: 201 })))).dst).toBe(C);
  });
});

describe('item 5, LAN side: per-source caps and early drop', () => {
  it('B04 a host opening new flows at will is held at its cap (a quarter of the table); the others keep opening theirs', () => {
    const r = new TestRouter({ maxFlows: 4096 });
    let passed = 0;
    for (let i = 0; i < 5000; i++) if (r.out(udp(H1, 1024 + i, S1, 9))) passed++;
    expect(passed).toBe(1024);
    expect(r.drop('src_flow_limit')).toBe(5000 - 1024);
    for (let i = 0; i < 500; i++) {
      const o = parse(ok(r.out(udp(H2, 30000 + i, S2, 53))));
      expect(parse(ok(r.in(udp(S2, 53, WAN, o.sport)))).dst).toBe(H2);
    }
    // once the flooder's flows expire it may open new ones again
    r.advance(301);
    ok(r.out(udp(H1, 9999, S1, 9)));
  });

  it('B05 a full table drops an unanswered flow to make room; answered flows are kept', () => {
    const r = new TestRouter({ maxFlows: 4096 });
    const hosts = ['192.168.1.31', '192.168.1.32', '192.168.1.33', '192.168.1.34'];
    const answered: [string, number, number][] = [];
    for (const h of hosts) {
      for (let i = 0; i < 1000; i++) {
        const o = parse(ok(r.out(udp(h, 2000 + i, S1, 9))));
        if (i < 500) { ok(r.in(udp(S1, 9, WAN, o.sport))); answered.push([h, 2000 + i, o.sport]); }
      }
    }
    for (let i = 0; i < 300; i++) {
      const o = parse(ok(r.out(udp(H2, 30000 + i, S2, 53))));
      expect(parse(ok(r.in(udp(S2, 53, WAN, o.sport)))).dst).toBe(H2);
    }
    expect(r.drop('table_full')).toBe(0);
    for (const [h, , alias] of answered) expect(parse(ok(r.in(udp(S1, 9, WAN, alias)))).dst).toBe(h);
  });

  it('B06 a host spraying IKE initiator cookies is capped; another host\'s exchange goes through', () => {
    const r = new TestRouter();
    r.vpn();
    let passed = 0;
    for (let i = 1; i <= 5000; i++) if (r.out(isakmp(H1, 500, S1, 500, hex16(0x2000000 + i)))) passed++;
    expect(passed).toBeLessThanOrEqual(256);
    expect(r.drop('src_ike_limit')).toBe(5000 - passed);
    ok(r.out(isakmp(H2, 500, S1, 500, '0b0b0b0b0b0b0b0b')));
    expect(parse(ok(r.in(isakmp(S1, 500, WAN, 500, '0b0b0b0b0b0b0b0b', 'dddddddddddddddd')))).dst).toBe(H2);
  });

  it('B07 a host opening PPTP calls at will is capped; another host\'s call goes through', () => {
    const r = new TestRouter();
    r.vpn();
    const alias = parse(ok(r.out(tcp(H1, 40000, S1, 1723, SYN)))).sport;
    ok(r.in(tcp(S1, 1723, WAN, alias, SYN | ACK, [], { seq: 5000, ack: 1001 })));
    let passed = 0;
    for (let i = 1; i <= 5000; i++) {
      if (r.out(tcp(H1, 40000, S1, 1723, PSH | ACK, pptpMsg(7, i), { seq: 1001 + (i - 1) * 168, ack: 5001 }))) passed++;
    }
    expect(passed).toBeLessThanOrEqual(256);
    expect(r.drop('src_call_limit')).toBe(5000 - passed);
    const b = parse(ok(r.out(tcp(H2, 40000, S1, 1723, SYN)))).sport;
    ok(r.in(tcp(S1, 1723, WAN, b, SYN | ACK, [], { seq: 9000, ack: 1001 })));
    ok(r.out(tcp(H2, 40000, S1, 1723, PSH | ACK, pptpMsg(7, 1), { seq: 1001, ack: 9001 })));
    expect(r.drop('pptp_table_full')).toBe(0);
  });

  it('B08 a host opening new SPIs toward many servers holds few outstanding slots; another host\'s new SA goes through', () => {
    const r = new TestRouter();
    r.vpn();
    let passed = 0;
    for (let i = 1; i <= 300; i++) if (r.out(esp(H1, wanHost(i), 0x5000 + i))) passed++;
    expect(passed).toBeLessThanOrEqual(16);
    expect(r.drop('src_esp_limit')).toBe(300 - passed);
    ok(r.out(esp(H2, S1, 0x2222)));
    expect(parse(ok(r.in(esp(S1, WAN, 0xbbbb)))).dst).toBe(H2);
  });

  it('B09 a host sending first fragments at will is capped; another host\'s fragmented datagram passes', () => {
    const r = new TestRouter();
    let passed = 0;
    for (let i = 1; i <= 5000; i++) {
      const [first] = fragment(udp(H1, 4000, S1, 9, new Array(64).fill(1), { id: i }), 32);
      if (r.out(first!)) passed++;
    }
    expect(passed).toBeLessThanOrEqual(256);
    expect(r.drop('src_frag_limit')).toBe(5000 - passed);
    const frags = fragment(udp(H2, 4001, S1, 9, new Array(64).fill(2), { id: 0x4242 }), 32);
    for (const f of r.batch(frags, 0)) expect(parse(f!).src).toBe(WAN);
  });
});

describe('item 5: ESP serialisation cannot be held or captured', () => {
  it('B10 a host opening one new SPI every 120 s toward a server cannot hold the outstanding slot forever', () => {
    const r = new TestRouter();
    r.vpn();
    let bPassed = -1;
    // A opens a new SPI the moment its previous one times out (every 120 s);
    // B tries every 10 s, always just after A.
    for (let t = 0; t < 1200 && bPassed < 0; t += 10) {
      if (t % 120 === 0) r.out(esp(H1, S1, 0x10000 + t));
      if (t > 0 && r.out(esp(H2, S1, 0x2222))) bPassed = t;
      r.advance(10);
    }
    expect(bPassed).toBeGreaterThan(0);
    expect(bPassed).toBeLessThanOrEqual(130); // the holder's 120 s at most, then B's next try
    expect(parse(ok(r.in(esp(S1, WAN, 0xbbbb)))).dst).toBe(H2);
  });

  it('B11 a spoofed inbound SPI binding first does not capture the pending association: the server\'s real SPI still reaches the host', () => {
    const r = new TestRouter();
    r.vpn();
    ok(r.out(esp(H1, S1, 0x1111)));
    expect(parse(ok(r.in(esp(S1, WAN, 0xdead)))).dst).toBe(H1); // spoofed, blind
    expect(parse(ok(r.in(esp(S1, WAN, 0xaaaa)))).dst).toBe(H1); // the server's real SPI
    expect(parse(ok(r.in(esp(S1, WAN, 0xaaaa, 2)))).dst).toBe(H1);
    ok(r.out(esp(H1, S1, 0x1111, 2)));
    // no further unknown SPI is taken once the association is settled
    r.advance(121);
    ok(r.out(esp(H1, S1, 0x1111, 3)));
    expect(r.in(esp(S1, WAN, 0xbeef))).toBeNull();
    expect(r.drop('esp_no_sa')).toBe(1);
  });
});

describe('item 5: the caps and unreplied_timeout come from the config', () => {
  it('B12 src_max_flows, src_max_ike, src_max_esp_pending and unreplied_timeout from /etc/config/vpnmasq reach the engine', () => {
    const r = new TestRouter();
    const cfg = parseConfig(`config vpnmasq 'main'
\toption lan_device 'br-lan'
\toption wan_device 'wan'
\toption src_max_flows '10'
\toption src_max_ike '3'
\toption src_max_esp_pending '2'
\toption unreplied_timeout '5'
config redirect
\toption proto 'udp'
\toption src_dport '7000'
\toption dest_ip '${C}'
\toption dest_port '7000'
`, '/etc/config/vpnmasq');
    applyConfig(r.engine, cfg, ['192.168.1.0/24']);
    let flows = 0;
    for (let i = 0; i < 20; i++) if (r.out(udp(H1, 2000 + i, S1, 9))) flows++;
    expect(flows).toBe(10);
    let ike = 0;
    for (let i = 1; i <= 5; i++) if (r.out(isakmp(H2, 500, S1, 500, hex16(i)))) ike++;
    expect(ike).toBe(3);
    let espOut = 0;
    for (let i = 1; i <= 4; i++) if (r.out(esp(H2, wanHost(i), 0x1000 + i))) espOut++;
    expect(espOut).toBe(2);
    ok(r.in(udp(S2, 4000, WAN, 7000)));
    expect(r.engine.flows(WAN, r.now).find((f) => f.remote === S2)!.expiresInS).toBeLessThanOrEqual(5);
    r.advance(6);
    expect(r.engine.flows(WAN, r.now).find((f) => f.remote === S2)).toBeUndefined();
    // a cap of 0 (or past its table) is refused by name, and the running caps stay
    expect(() => r.engine.applySettings({ ...r.settings, src_max_ike: 0 })).toThrow('src_max_ike = 0 refused');
    expect(() => r.engine.applySettings({ ...r.settings, src_max_esp_pending: 257 })).toThrow('src_max_esp_pending = 257 refused');
  });
});
