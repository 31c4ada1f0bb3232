// Numbered NAT scenarios in the manner of libalias' natout tests: each
// reads like a line of the masquerading HOWTO and checks what goes on the
// wire, with every checksum recomputed in full.
import { describe, expect, it } from 'vitest';
import { TestRouter, WAN } from '../helpers/harness.js';
import {
  ACK, FIN, RST, SYN, fragment, icmpEcho, icmpError, ipCsumOk, ipv4, l4CsumOk, parse, quotedIpCsumOk, tcp, udp,
} from '../helpers/packet.js';

const H1 = '192.168.1.10';
const H2 = '192.168.1.11';
const S1 = '198.51.100.7';
const S2 = '198.51.100.8';

function valid(p: Uint8Array | null): Uint8Array {
  expect(p).not.toBeNull();
  expect(ipCsumOk(p!)).toBe(true);
  expect(l4CsumOk(p!)).toBe(true);
  return p!;
}

describe('natout scenarios', () => {
  it('01 a LAN host sends UDP: source becomes the WAN address, port kept, checksums right', () => {
    const r = new TestRouter();
    const o = parse(valid(r.out(udp(H1, 5353, S1, 53))));
    expect(o.src).toBe(WAN);
    expect(o.sport).toBe(5353);
    expect(o.dst).toBe(S1);
    expect(o.dport).toBe(53);
  });

  it('02 the reply comes back to the LAN host', () => {
    const r = new TestRouter();
    r.out(udp(H1, 5353, S1, 53));
    const i = parse(valid(r.in(udp(S1, 53, WAN, 5353))));
    expect(i.dst).toBe(H1);
    expect(i.dport).toBe(5353);
  });

  it('03 two LAN hosts with the same source port get distinct WAN ports from the pool', () => {
    const r = new TestRouter();
    const a = parse(valid(r.out(udp(H1, 4000, S1, 53))));
    const b = parse(valid(r.out(udp(H2, 4000, S1, 53))));
    expect(a.sport).toBe(4000);
    expect(b.sport).toBeGreaterThanOrEqual(61000);
    expect(b.sport).toBeLessThanOrEqual(65535);
    expect(parse(valid(r.in(udp(S1, 53, WAN, b.sport)))).dst).toBe(H2);
    expect(parse(valid(r.in(udp(S1, 53, WAN, 4000)))).dst).toBe(H1);
  });

  it('04 endpoint-independent mapping: one LAN socket keeps its WAN port toward every server', () => {
    const r = new TestRouter();
    r.out(udp(H1, 4000, S1, 53)); // takes 4000
    const a = parse(valid(r.out(udp(H2, 4000, S1, 53))));
    const b = parse(valid(r.out(udp(H2, 4000, S2, 123))));
    expect(b.sport).toBe(a.sport);
  });

  it('05 unsolicited UDP from the WAN is dropped and counted', () => {
    const r = new TestRouter();
    expect(r.in(udp(S1, 53, WAN, 5353))).toBeNull();
    expect(r.drop('no_flow')).toBe(1);
    // and a reply from another port of the server is not a reply
    r.out(udp(H1, 5353, S1, 53));
    expect(r.in(udp(S1, 54, WAN, 5353))).toBeNull();
    expect(r.drop('no_flow')).toBe(2);
  });

  it('06 TCP: handshake, data, FIN both ways, state followed; RST without a flow is dropped', () => {
    const r = new TestRouter();
    const syn = parse(valid(r.out(tcp(H1, 40000, S1, 80, SYN))));
    expect(syn.src).toBe(WAN);
    valid(r.in(tcp(S1, 80, WAN, syn.sport, SYN | ACK)));
    valid(r.out(tcp(H1, 40000, S1, 80, ACK)));
    let f = r.engine.flows(WAN)[0];
    expect(f.state).toBe('ESTABLISHED');
    valid(r.out(tcp(H1, 40000, S1, 80, FIN | ACK)));
    valid(r.in(tcp(S1, 80, WAN, syn.sport, FIN | ACK)));
    f = r.engine.flows(WAN)[0];
    expect(f.state).toBe('TIME_WAIT');
    expect(r.in(tcp(S1, 81, WAN, 40001, RST))).toBeNull();
    expect(r.out(tcp(H1, 40002, S1, 80, RST))).toBeNull();
    expect(r.drop('tcp_no_flow')).toBe(1);
  });

  it('07 ICMP echo: identifiers translated, two hosts with the same identifier each get their reply', () => {
    const r = new TestRouter();
    const a = parse(valid(r.out(icmpEcho(H1, S1, 8, 77))));
    const b = parse(valid(r.out(icmpEcho(H2, S1, 8, 77))));
    expect(a.src).toBe(WAN);
    expect(a.icmpId).toBe(77);
    expect(b.icmpId).not.toBe(77);
    const ra = parse(valid(r.in(icmpEcho(S1, WAN, 0, a.icmpId))));
    const rb = parse(valid(r.in(icmpEcho(S1, WAN, 0, b.icmpId))));
    expect([ra.dst, ra.icmpId]).toEqual([H1, 77]);
    expect([rb.dst, rb.icmpId]).toEqual([H2, 77]);
  });

  it('08 an ICMP error from the WAN reaches the LAN host with outer and quoted headers translated', () => {
    const r = new TestRouter();
    r.out(udp(H1, 4000, S1, 53));
    const sent = valid(r.out(udp(H2, 4000, S1, 53)));
    const alias = parse(sent).sport;
    for (const quote of [8, 64]) {
      const err = icmpError('198.51.100.1', WAN, 3, 3, sent, quote);
      const got = valid(r.in(err));
      const g = parse(got);
      expect(g.dst).toBe(H2);
      expect(quotedIpCsumOk(got)).toBe(true);
      const q = parse(g.l4.subarray(8));
      expect(q.src).toBe(H2);
      expect(q.sport).toBe(4000);
      expect(alias).not.toBe(4000);
      if (quote === 64) expect(l4CsumOk(g.l4.subarray(8))).toBe(true);
    }
  });

  it('09 an ICMP error from a LAN host about forwarded traffic leaves with the WAN address inside', () => {
    const r = new TestRouter();
    r.redirect(17, 5000, H1, 5001);
    const inbound = valid(r.in(udp(S1, 7777, WAN, 5000)));
    expect(parse(inbound).dst).toBe(H1);
    const err = icmpError(H1, S1, 3, 3, inbound, 8);
    const got = valid(r.out(err));
    const g = parse(got);
    expect(g.src).toBe(WAN);
    const q = parse(g.l4.subarray(8));
    expect([q.dst, q.dport]).toEqual([WAN, 5000]);
    expect(quotedIpCsumOk(got)).toBe(true);
  });

  it('10 port forward: WAN tcp/8080 reaches 192.168.1.10:80 and the answers leave from 8080', () => {
    const r = new TestRouter();
    r.redirect(6, 8080, H1, 80);
    const i = parse(valid(r.in(tcp(S1, 50000, WAN, 8080, SYN))));
    expect([i.dst, i.dport]).toEqual([H1, 80]);
    const o = parse(valid(r.out(tcp(H1, 80, S1, 50000, SYN | ACK))));
    expect([o.src, o.sport]).toEqual([WAN, 8080]);
    valid(r.in(tcp(S1, 50000, WAN, 8080, ACK)));
    expect(r.engine.flows(WAN)[0]).toMatchObject({ state: 'ESTABLISHED', redirect: true });
    // the forward does not open other ports
    expect(r.in(tcp(S1, 50000, WAN, 8081, SYN))).toBeNull();
  });

  it('11 a rule lets UDP 53 reach the router itself, untranslated; other ports stay closed', () => {
    const r = new TestRouter();
    expect(r.in(udp(S1, 5353, WAN, 53))).toBeNull();
    r.acceptToRouter(17, 53, 53);
    const p = parse(valid(r.in(udp(S1, 5353, WAN, 53))));
    expect([p.dst, p.dport]).toEqual([WAN, 53]);
    expect(r.in(udp(S1, 5353, WAN, 54))).toBeNull();
    // ping to the router only with an icmp rule
    expect(r.in(icmpEcho(S1, WAN, 8, 9))).toBeNull();
    r.acceptToRouter(1, 0, 65535, 8);
    valid(r.in(icmpEcho(S1, WAN, 8, 9)));
  });

  it('12 WAN packets addressed to the LAN or claiming a LAN source are refused', () => {
    const r = new TestRouter();
    r.out(udp(H1, 5353, S1, 53));
    expect(r.in(udp(S1, 53, H1, 5353))).toBeNull();
    expect(r.drop('wan_to_lan')).toBe(1);
    expect(r.in(udp(H2, 53, WAN, 5353))).toBeNull();
    expect(r.in(udp('127.0.0.1', 53, WAN, 5353))).toBeNull();
    expect(r.drop('bad_src')).toBe(2);
    expect(r.in(udp(S1, 53, '198.51.100.99', 5353))).toBeNull();
    expect(r.drop('not_for_us')).toBe(1);
  });

  it('13 fragments follow their first; orphans, tiny and overlapping fragments are dropped', () => {
    const r = new TestRouter();
    const big = udp(H1, 4500, S1, 4500, new Array(3000).fill(7), { id: 0x4242 });
    const frags = fragment(big, 1480);
    expect(frags.length).toBe(3);
    const outs = r.batch(frags, 0);
    for (const o of outs) { expect(o).not.toBeNull(); expect(ipCsumOk(o!)).toBe(true); expect(parse(o!).src).toBe(WAN); }
    // reassembled, the datagram's UDP checksum is right
    const pay = new Uint8Array(3008);
    for (const o of outs) { const x = parse(o!); pay.set(x.l4, x.fragOffset); }
    const whole = udp(WAN, 4500, S1, 4500, new Array(3000).fill(7));
    expect(Array.from(pay.subarray(6, 8))).toEqual(Array.from(parse(whole).l4.subarray(6, 8)));
    // orphan later fragment
    const other = fragment(udp(H1, 4501, S1, 4500, new Array(3000).fill(1), { id: 0x4343 }), 1480);
    expect(r.out(other[1])).toBeNull();
    expect(r.drop('frag_no_head')).toBe(1);
    // tiny first fragment: 8 bytes cannot hold a TCP header
    const t = fragment(tcp(H1, 40000, S1, 80, SYN, new Array(40).fill(0), { id: 0x5555 }), 8);
    expect(r.out(t[0])).toBeNull();
    expect(r.drop('frag_tiny')).toBe(1);
    // overlap: a fragment at offset 8 after a 1480-byte first fragment
    const f2 = fragment(udp(H1, 4502, S1, 4500, new Array(3000).fill(2), { id: 0x4444 }), 1480);
    expect(r.out(f2[0])).not.toBeNull();
    const overlap = fragment(udp(H1, 4502, S1, 4500, new Array(3000).fill(2), { id: 0x4444 }), 8)[1];
    expect(r.out(overlap)).toBeNull();
    expect(r.drop('frag_overlap')).toBe(1);
    // inbound fragments of a reply follow too
    const reply = fragment(udp(S1, 4500, WAN, 4500, new Array(2000).fill(3), { id: 0x7777 }), 1480);
    const ins = r.batch(reply, 1);
    for (const o of ins) expect(parse(o!).dst).toBe(H1);
  });

  it('14 one hop: the engine gives back the TTL the kernel takes twice, never past 255', () => {
    const r = new TestRouter();
    expect(parse(r.out(udp(H1, 1, S1, 53, [1], { ttl: 63 }))!).ttl).toBe(64);
    expect(parse(valid(r.out(udp(H1, 2, S1, 53, [1], { ttl: 255 })))).ttl).toBe(255);
  });

  it('15 idle flows expire on the timer and their port goes back to the pool', () => {
    const r = new TestRouter({ timeouts: { udp: 30 } });
    r.out(udp(H1, 4000, S1, 53));
    const b = parse(r.out(udp(H2, 4000, S1, 53))!).sport;
    expect(r.engine.x.flowActive()).toBe(2);
    r.advance(20);
    expect(r.engine.x.flowActive()).toBe(2);
    r.advance(11);
    expect(r.engine.x.flowActive()).toBe(0);
    expect(r.in(udp(S1, 53, WAN, b))).toBeNull();
    // H2's port 4000 is free again, so it is preserved now
    expect(parse(r.out(udp(H2, 4000, S1, 53))!).sport).toBe(4000);
  });

  it('16 a new WAN address: old flows flushed, new flows leave from the new address', () => {
    const r = new TestRouter();
    r.out(udp(H1, 4000, S1, 53));
    expect(r.engine.x.flowActive()).toBe(1);
    const flushed = r.engine.x.setWanAddress(0x050071cb /* 203.113.0.5 raw */, r.now);
    expect(flushed).toBe(1);
    expect(r.engine.x.flowActive()).toBe(0);
    expect(parse(r.out(udp(H1, 4000, S1, 53))!).src).toBe('203.113.0.5');
    expect(r.in(udp(S1, 53, WAN, 4000))).toBeNull();
  });

  it('17 a full table refuses new flows, counted, and keeps the existing ones', () => {
    const r = new TestRouter({ maxFlows: 1024 });
    for (let i = 0; i < 1024; i++) expect(r.out(udp(H1, 1000 + i, S1, 53))).not.toBeNull();
    expect(r.out(udp(H1, 3000, S1, 53))).toBeNull();
    expect(r.drop('table_full')).toBe(1);
    expect(r.in(udp(S1, 53, WAN, 1000))).not.toBeNull();
  });

  it('18 an exhausted pool refuses new mappings and counts it', () => {
    const r = new TestRouter({ pool: [62000, 62001] });
    r.out(udp(H1, 7000, S1, 53));
    expect(r.out(udp(H2, 7000, S1, 53))).not.toBeNull();
    expect(r.out(udp('192.168.1.12', 7000, S1, 53))).not.toBeNull();
    expect(r.out(udp('192.168.1.13', 7000, S1, 53))).toBeNull();
    expect(r.drop('pool_exhausted')).toBe(1);
  });

  it('19 the router\'s own traffic keeps its address and port', () => {
    const r = new TestRouter();
    const o = parse(valid(r.out(udp(WAN, 45000, S1, 123))));
    expect([o.src, o.sport]).toEqual([WAN, 45000]);
    expect(parse(valid(r.in(udp(S1, 123, WAN, 45000)))).dst).toBe(WAN);
  });

  it('20 inside packets from addresses that are not ours are refused (anti-spoofing)', () => {
    const r = new TestRouter();
    expect(r.out(udp('10.9.9.9', 4000, S1, 53))).toBeNull();
    expect(r.drop('bad_src')).toBe(1);
  });

  it('21 a LAN rule with target DROP blocks new outbound flows', () => {
    const r = new TestRouter();
    r.engine.x.addRule(1, 1, 2, 6, -1, -1, 0, 0, 0, 0, 0, 65535, 25, 25);
    expect(r.out(tcp(H1, 40000, S1, 25, SYN))).toBeNull();
    expect(r.drop('policy_drop')).toBe(1);
    expect(r.out(tcp(H1, 40000, S1, 80, SYN))).not.toBeNull();
  });

  it('22 other IP protocols are not leaked untranslated', () => {
    const r = new TestRouter();
    const sixin4 = ipv4({ src: H1, dst: S1, proto: 41 }, new Uint8Array(40));
    expect(r.out(sixin4)).toBeNull();
    expect(r.drop('proto_unsupported')).toBe(1);
    expect(r.in(ipv4({ src: S1, dst: WAN, proto: 41 }, new Uint8Array(40)))).toBeNull();
    expect(r.drop('no_flow')).toBe(1);
  });

  it('23 many flows expiring at once are swept a bounded slice per batch, never all in one call', () => {
    const r = new TestRouter({ maxFlows: 300_000, timeouts: { udp: 30 } });
    const n = 250_000;
    const batch: Uint8Array[] = [];
    for (let i = 0; i < n; i++) {
      // 1000 LAN sockets (bindings) × 250 servers: endpoint-independent mapping shares the ports
      const k = Math.floor(i / 1000);
      batch.push(udp(`192.168.1.${10 + (i % 100)}`, 2000 + (Math.floor(i / 100) % 10), `198.51.100.${1 + (k % 250)}`, 53));
      if (batch.length === 256) { r.batch(batch, 0); batch.length = 0; }
    }
    if (batch.length) r.batch(batch, 0);
    expect(r.engine.x.flowActive()).toBe(n);
    r.now += 31_000; // every flow is now past its deadline; no tick yet
    r.out(udp(H1, 1, S1, 53));
    // one batch of one packet expired only its slice (count/2 + 8), not 250 000
    expect(n + 1 - r.engine.x.flowActive()).toBeLessThanOrEqual(8);
    // the idle tick sweeps its budget per call; repeated, it empties the table
    let calls = 0;
    while (r.engine.x.flowActive() > 1 && calls < 100) { r.engine.x.tick(r.now, 65536); calls++; }
    expect(calls).toBeGreaterThanOrEqual(4);
    expect(r.engine.x.flowActive()).toBeLessThanOrEqual(1);
  });
});
