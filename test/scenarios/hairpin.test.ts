// NAT loopback (fw4's `reflection` / `reflection_src` on a redirect), from
// the config through applyConfig to the engine, with byte packets: a LAN
// host that calls a forward through the WAN address reaches the LAN server,
// which sees the router's LAN address (internal, fw4's default) or the WAN
// address (external), and its answers reach the host from the address it
// called. Every emitted packet's checksums are recomputed in full. Then the
// attacker's side: spoofed answers, WAN packets, floods, reflection '0'.
import { describe, expect, it } from 'vitest';
import { TestRouter, WAN, ok } from '../helpers/harness.js';
import { ACK, FIN, RST, SYN, fragment, parse, tcp, udp } from '../helpers/packet.js';
import { parseConfig, redirectLabel } from '../../src/config/index.js';
import { applyConfig } from '../../src/engine/apply.js';
import { SIDE_INSIDE, ipToRaw } from '../../src/engine/abi.js';
import { formatConntrack } from '../../src/cli/conntrack.js';
import { matches, original, parseFilter } from '../../src/cli/filter.js';
import { capture, restoreInto } from '../../src/snapshot/state.js';
import { crc32, decode, encode } from '../../src/snapshot/format.js';
import { SnapshotRefused } from '../../src/snapshot/state.js';

const ROUTER_LAN = '192.168.1.1';
const SRV = '192.168.1.10';
const HOST = '192.168.1.20';
const OTHER = '192.168.1.30';
const STRANGER = '198.51.100.7';

const CONFIG = (extraMain = '', extra = '') => `config vpnmasq 'main'
	option lan_device 'br-lan'
	option wan_device 'wan'
	option enabled '1'
${extraMain}
config redirect 'web'
	option proto 'tcp'
	option src_dport '8080'
	option dest_ip '${SRV}'
	option dest_port '80'
config redirect 'dns'
	option proto 'udp'
	option src_dport '5353'
	option dest_ip '${SRV}'
	option dest_port '53'
	option reflection_src 'external'
config redirect 'ssh'
	option proto 'tcp'
	option src_dport '2222'
	option dest_ip '${SRV}'
	option dest_port '22'
	option reflection '0'
${extra}`;

function router(o: { extraMain?: string; extra?: string; seed?: number } = {}): TestRouter {
  const r = new TestRouter({ seed: o.seed });
  applyConfig(r.engine, parseConfig(CONFIG(o.extraMain, o.extra), 'test'), ['192.168.1.0/24'], [`${ROUTER_LAN}/24`]);
  return r;
}

const inPool = (p: number) => p >= 61000 && p <= 65535;

/** HOST:sport opens a TCP connection to WAN:8080 and the server answers; the alias port the server saw. */
function tcpHairpin(r: TestRouter, sport = 40000): number {
  const toSrv = parse(ok(r.out(tcp(HOST, sport, WAN, 8080, SYN))));
  expect(toSrv).toMatchObject({ src: ROUTER_LAN, dst: SRV, dport: 80 });
  const back = parse(ok(r.out(tcp(SRV, 80, ROUTER_LAN, toSrv.sport, SYN | ACK))));
  expect(back).toMatchObject({ src: WAN, sport: 8080, dst: HOST, dport: sport });
  return toSrv.sport;
}

describe('NAT loopback (reflection)', () => {
  it('H01 TCP, reflection_src internal: the server sees the router\'s LAN address; the host sees WAN:8080 answer', () => {
    const r = router();
    const syn = parse(ok(r.out(tcp(HOST, 40000, WAN, 8080, SYN, [], { ttl: 64 }))));
    expect(syn).toMatchObject({ src: ROUTER_LAN, dst: SRV, dport: 80 });
    expect(inPool(syn.sport)).toBe(true);
    expect(syn.ttl).toBe(65); // the kernel takes one on each of its two forwards around the TUN
    const synAck = parse(ok(r.out(tcp(SRV, 80, ROUTER_LAN, syn.sport, SYN | ACK))));
    expect(synAck).toMatchObject({ src: WAN, sport: 8080, dst: HOST, dport: 40000 });
    // the rest of the connection both ways, through the same flow
    expect(parse(ok(r.out(tcp(HOST, 40000, WAN, 8080, ACK, [1, 2, 3], { seq: 1001 }))))).toMatchObject({ src: ROUTER_LAN, sport: syn.sport, dst: SRV, dport: 80 });
    expect(parse(ok(r.out(tcp(SRV, 80, ROUTER_LAN, syn.sport, ACK, [9, 9], { seq: 5001 }))))).toMatchObject({ src: WAN, sport: 8080, dst: HOST });
    const flows = r.engine.flows(WAN, r.now);
    expect(flows).toHaveLength(1);
    expect(flows[0]).toMatchObject({ lan: HOST, lanPort: 40000, remote: SRV, remotePort: 80, aliasPort: syn.sport, state: 'ESTABLISHED', hairpin: { wanPort: 8080, via: ROUTER_LAN, source: 'internal' } });
    // conntrack's filters read the original direction: the host calling WAN:8080
    expect(original(flows[0]!)).toEqual({ src: HOST, dst: WAN, sport: 40000, dport: 8080 });
    expect(matches(flows[0]!, parseFilter({ dst: WAN, dport: '8080' }))).toBe(true);
    expect(matches(flows[0]!, parseFilter({ dport: '80' }))).toBe(false);
    expect(formatConntrack(flows)).toContain(`src=${HOST} dst=${WAN} sport=40000 dport=8080 packets=2 src=${SRV} dst=${ROUTER_LAN} sport=80 dport=${syn.sport} packets=2 [ASSURED] hairpin=internal`);
  });

  it('H02 UDP, reflection_src external: the server sees the WAN address; its answer comes back from WAN:5353', () => {
    const r = router();
    const q = parse(ok(r.out(udp(HOST, 33333, WAN, 5353))));
    expect(q).toMatchObject({ src: WAN, dst: SRV, dport: 53 });
    expect(inPool(q.sport)).toBe(true);
    const a = parse(ok(r.out(udp(SRV, 53, WAN, q.sport))));
    expect(a).toMatchObject({ src: WAN, sport: 5353, dst: HOST, dport: 33333 });
    // an answer to the router's LAN address instead is not this flow's
    expect(r.out(udp(SRV, 53, ROUTER_LAN, q.sport))).toBeNull();
    expect(r.engine.flows(WAN, r.now)[0]).toMatchObject({ state: 'REPLIED', hairpin: { wanPort: 5353, via: WAN, source: 'external' } });
  });

  it('H03 reflection \'0\': a LAN host calling WAN:2222 gets nothing, counted hairpin', () => {
    const r = router();
    const before = r.drop('hairpin');
    expect(r.out(tcp(HOST, 40000, WAN, 2222, SYN))).toBeNull();
    expect(r.drop('hairpin')).toBe(before + 1);
    expect(r.engine.x.flowActive()).toBe(0);
    // a port no forward has: the same
    expect(r.out(udp(HOST, 40000, WAN, 9999))).toBeNull();
    expect(r.drop('hairpin')).toBe(before + 2);
  });

  it('H04 a WAN host still reaches the forward as before, beside a hairpin flow to the same server', () => {
    const r = router();
    const alias = tcpHairpin(r);
    const fromWan = parse(ok(r.in(tcp(STRANGER, 50000, WAN, 8080, SYN))));
    expect(fromWan).toMatchObject({ src: STRANGER, dst: SRV, dport: 80 });
    expect(parse(ok(r.out(tcp(SRV, 80, STRANGER, 50000, SYN | ACK))))).toMatchObject({ src: WAN, sport: 8080, dst: STRANGER });
    // and the hairpin flow is still its own
    expect(parse(ok(r.out(tcp(SRV, 80, ROUTER_LAN, alias, ACK, [], { seq: 2000 }))))).toMatchObject({ dst: HOST, dport: 40000 });
    expect(r.engine.x.flowActive()).toBe(2);
  });

  it('H05 the server reaching its own forward through the WAN address gets itself, from the router\'s address', () => {
    const r = router();
    const s = parse(ok(r.out(tcp(SRV, 45000, WAN, 8080, SYN))));
    expect(s).toMatchObject({ src: ROUTER_LAN, dst: SRV, dport: 80 });
    expect(parse(ok(r.out(tcp(SRV, 80, ROUTER_LAN, s.sport, SYN | ACK))))).toMatchObject({ src: WAN, sport: 8080, dst: SRV, dport: 45000 });
  });

  it('H06 two hosts on the same source port get distinct alias ports; each answer reaches its own host', () => {
    const r = router();
    const a = parse(ok(r.out(udp(HOST, 7000, WAN, 5353))));
    const b = parse(ok(r.out(udp(OTHER, 7000, WAN, 5353))));
    expect(a.sport).not.toBe(b.sport);
    expect(parse(ok(r.out(udp(SRV, 53, WAN, b.sport))))).toMatchObject({ dst: OTHER, dport: 7000 });
    expect(parse(ok(r.out(udp(SRV, 53, WAN, a.sport))))).toMatchObject({ dst: HOST, dport: 7000 });
  });

  it('H07 TCP: the server side is not sequence-tracked (its word holds the forwarded port), the host side is', () => {
    const r = router();
    const alias = tcpHairpin(r);
    ok(r.out(tcp(HOST, 40000, WAN, 8080, ACK, [], { seq: 1001 })));
    // the server's FIN and RST at any sequence number reach the host (only LAN hosts can send these anyway)
    expect(parse(ok(r.out(tcp(SRV, 80, ROUTER_LAN, alias, FIN | ACK, [], { seq: 0x70000000 }))))).toMatchObject({ dst: HOST, sport: 8080 });
    // the host's RST far outside its own window is dropped, as on any flow
    expect(r.out(tcp(HOST, 40000, WAN, 8080, RST, [], { seq: 0x40000000 }))).toBeNull();
    expect(r.drop('tcp_out_of_window')).toBe(1);
    expect(parse(ok(r.out(tcp(HOST, 40000, WAN, 8080, RST, [], { seq: 1001 }))))).toMatchObject({ dst: SRV });
  });

  it('H08 fw4\'s src_ip / src_port apply to LAN hosts too', () => {
    const r = router({ extra: `config redirect 'lanonly'
	option proto 'tcp'
	option src_dport '8443'
	option dest_ip '${SRV}'
	option dest_port '443'
	option src_ip '192.168.1.16/29'
` });
    expect(r.out(tcp(HOST, 40000, WAN, 8443, SYN))).not.toBeNull(); // .20 is in .16/29
    expect(r.out(tcp(OTHER, 40000, WAN, 8443, SYN))).toBeNull();    // .30 is not
  });

  it('H09 a hairpin flow survives a restart (snapshot) under another hash seed', () => {
    const r = router();
    const alias = tcpHairpin(r);
    const q = parse(ok(r.out(udp(HOST, 33333, WAN, 5353))));
    const c = capture(r.engine, ipToRaw(WAN), r.now);
    const r2 = router({ seed: 999 });
    const res = restoreInto(r2.engine, decode(encode(c.header, c.sections)), ipToRaw(WAN));
    r2.now = res.clockMs;
    expect(r2.engine.x.restoreVerify()).toBe(0);
    expect(parse(ok(r2.out(tcp(SRV, 80, ROUTER_LAN, alias, ACK, [], { seq: 3000 }))))).toMatchObject({ src: WAN, sport: 8080, dst: HOST, dport: 40000 });
    expect(parse(ok(r2.out(udp(SRV, 53, WAN, q.sport))))).toMatchObject({ src: WAN, sport: 5353, dst: HOST, dport: 33333 });
    expect(parse(ok(r2.out(tcp(HOST, 40000, WAN, 8080, ACK, [], { seq: 1001 }))))).toMatchObject({ src: ROUTER_LAN, sport: alias, dst: SRV });
  });

  it('H13 a snapshot whose hairpin record lies is refused whole (forwarded port 0, an unknown source kind, opened from the WAN, ICMP, a server outside the LAN)', () => {
    const r = router();
    tcpHairpin(r);
    const c = capture(r.engine, ipToRaw(WAN), r.now);
    const file = Buffer.from(encode(c.header, c.sections));
    // the flow section (id 2) follows the 128-byte header: 16 bytes of section header, then the one record
    expect(file.readUInt32LE(128)).toBe(2);
    const rec = 128 + 16;
    const forged = (edit: (b: Buffer) => void) => {
      const b = Buffer.from(file);
      edit(b);
      b.writeUInt32LE(crc32(b.subarray(0, b.length - 4)), b.length - 4);
      return b;
    };
    for (const edit of [
      (b: Buffer) => b.writeUInt16LE(0, rec + 36),                                   // F_HAIRPIN_PORT
      (b: Buffer) => { b[rec + 38] = 7; },                                           // F_HAIRPIN_SRC
      (b: Buffer) => b.writeUInt16LE(b.readUInt16LE(rec + 20) | 2, rec + 20),        // + FL_REDIRECT
      (b: Buffer) => { b[rec + 14] = 1; },                                           // ICMP
      (b: Buffer) => b.writeUInt32LE(0x076433c6, rec + 4),                           // a server outside the LAN (198.51.100.7)
    ]) {
      const into = router({ seed: 7 });
      expect(() => restoreInto(into.engine, decode(forged(edit)), ipToRaw(WAN))).toThrow(SnapshotRefused);
    }
    // the file as written is taken
    expect(restoreInto(router({ seed: 7 }).engine, decode(file), ipToRaw(WAN)).entries.flows).toBe(1);
  });

  it('H14 status names a forward\'s NAT loopback where it is not fw4\'s default', () => {
    expect(parseConfig(CONFIG(), 'test').redirects.map(redirectLabel)).toEqual([
      'web: tcp 8080 -> 192.168.1.10:80',
      'dns: udp 5353 -> 192.168.1.10:53 (reflection_src external)',
      'ssh: tcp 2222 -> 192.168.1.10:22 (reflection 0)',
    ]);
  });

  it('H10 a hairpin flow expires like any UDP flow; its answer is then dropped, and the host\'s share comes back', () => {
    const r = router({ extraMain: "\toption src_max_flows '2'" });
    const q = parse(ok(r.out(udp(HOST, 1, WAN, 5353))));
    ok(r.out(udp(HOST, 2, WAN, 5353)));
    expect(r.out(udp(HOST, 3, WAN, 5353))).toBeNull(); // over the host's cap
    r.advance(301);
    expect(r.engine.x.flowActive()).toBe(0);
    expect(r.out(udp(SRV, 53, WAN, q.sport))).toBeNull();
    expect(r.out(udp(HOST, 3, WAN, 5353))).not.toBeNull();
  });

  it('H11 without a router LAN address, internal reflection cannot pick a source: dropped, never sent from a wrong one', () => {
    const r = new TestRouter();
    applyConfig(r.engine, parseConfig(CONFIG(), 'test'), ['192.168.1.0/24'], []);
    expect(r.out(tcp(HOST, 40000, WAN, 8080, SYN))).toBeNull();
    expect(parse(ok(r.out(udp(HOST, 33333, WAN, 5353))))).toMatchObject({ src: WAN, dst: SRV }); // external needs none
  });

  it('H12 fragments are not reflected', () => {
    const r = router();
    const [first, second] = fragment(udp(HOST, 33333, WAN, 5353, new Array(64).fill(7)), 32);
    expect(r.out(first!)).toBeNull();
    expect(r.out(second!)).toBeNull();
    expect(r.engine.x.flowActive()).toBe(0);
  });
});

describe('NAT loopback: the attacker\'s side', () => {
  it('H20 another LAN host sending to the router\'s alias port of someone\'s hairpin flow is dropped (the flow is the server\'s)', () => {
    const r = router();
    const alias = tcpHairpin(r);
    const before = r.drop('hairpin');
    expect(r.out(tcp(OTHER, 80, ROUTER_LAN, alias, ACK, [6, 6, 6]))).toBeNull();
    expect(r.out(tcp(OTHER, 5555, ROUTER_LAN, alias, ACK))).toBeNull();
    // the server's other ports neither
    expect(r.out(tcp(SRV, 81, ROUTER_LAN, alias, ACK))).toBeNull();
    expect(r.drop('hairpin')).toBe(before + 3);
    // external: the same at the WAN address
    const q = parse(ok(r.out(udp(HOST, 33333, WAN, 5353))));
    expect(r.out(udp(OTHER, 53, WAN, q.sport))).toBeNull();
  });

  it('H21 a WAN packet never creates or uses a hairpin flow', () => {
    const r = router();
    const alias = tcpHairpin(r);
    const q = parse(ok(r.out(udp(HOST, 33333, WAN, 5353))));
    // spoofing the server from the WAN: a LAN source on the WAN side is dropped as spoofed
    expect(r.in(tcp(SRV, 80, WAN, alias, ACK))).toBeNull();
    expect(r.in(udp(SRV, 53, WAN, q.sport))).toBeNull();
    expect(r.drop('bad_src')).toBe(2);
    // any WAN host at the alias ports: unsolicited
    expect(r.in(tcp(STRANGER, 80, WAN, alias, ACK))).toBeNull();
    expect(r.in(udp(STRANGER, 53, WAN, q.sport))).toBeNull();
    // to the router's LAN address from the WAN: never translated
    expect(r.in(tcp(STRANGER, 80, ROUTER_LAN, alias, ACK))).toBeNull();
    expect(r.engine.x.flowActive()).toBe(2);
    expect(r.engine.flows(WAN, r.now).every((f) => f.hairpin && f.lan === HOST)).toBe(true);
  });

  it('H22 one LAN host cannot fill the table through hairpin: its cap holds, others still get through', () => {
    const r = router({ extraMain: "\toption src_max_flows '64'" });
    const passed = [];
    for (let p = 1000; p < 1200; p++) passed.push(r.out(udp(HOST, p, WAN, 5353)));
    expect(passed.filter((p) => p !== null)).toHaveLength(64);
    expect(r.drop('src_flow_limit')).toBe(136);
    expect(r.out(udp(OTHER, 1000, WAN, 5353))).not.toBeNull();
  });

  it('H23 the router itself (source = WAN address) and non-LAN sources never open hairpin flows', () => {
    const r = router();
    expect(r.out(tcp(WAN, 40000, WAN, 8080, SYN))).toBeNull();
    expect(r.out(tcp(STRANGER, 40000, WAN, 8080, SYN))).toBeNull();
    expect(r.engine.x.flowActive()).toBe(0);
  });

  it('H24 deleting a hairpin flow (conntrack -D) leaves a masquerade binding on the same port number alone', () => {
    // a one-port pool: the hairpin alias and a masqueraded host's port are the same number
    const r = router({ extraMain: "\toption masq_ports '61000-61000'" });
    ok(r.out(udp(OTHER, 7000, STRANGER, 53)));                    // keeps its port 7000
    const m = parse(ok(r.out(udp(HOST, 7000, STRANGER, 53))));    // takes the pool's one port
    expect(m.sport).toBe(61000);
    const q = parse(ok(r.out(udp(HOST, 33333, WAN, 5353))));
    expect(q.sport).toBe(61000);
    const e = r.engine.flows(WAN, r.now).find((f) => f.hairpin)!;
    expect(r.engine.deleteEntry(e)).toBe(true);
    expect(r.engine.x.restoreVerify()).toBe(0);
    expect(parse(ok(r.in(udp(STRANGER, 53, WAN, 61000))))).toMatchObject({ dst: HOST, dport: 7000 });
    // a second hairpin flow of the same server endpoint finds no free port: counted, not misrouted
    ok(r.out(udp(HOST, 33333, WAN, 5353)));
    expect(r.out(udp(OTHER, 33333, WAN, 5353))).toBeNull();
    expect(r.drop('pool_exhausted')).toBe(1);
  });

  it('H25 a batch of hairpin packets passes through the inside side only (side check)', () => {
    const r = router();
    const res = r.batch([tcp(HOST, 40000, WAN, 8080, SYN), udp(HOST, 1, WAN, 5353)], SIDE_INSIDE);
    expect(res.every((p) => p !== null)).toBe(true);
  });
});
