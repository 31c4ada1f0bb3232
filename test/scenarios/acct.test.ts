// Flow accounting (option acct, Linux's nf_conntrack_acct): bytes per flow
// and direction beside the packet counters, off by default. A byte is what
// conntrack counts: the IP datagram's total length, and a GSO super-packet's
// whole length. Each scenario sends known packets and checks the counts
// both ways, as `vpnmasq conntrack -L` prints them.
import { describe, expect, it } from 'vitest';
import { TestRouter, WAN } from '../helpers/harness.js';
import { ACK, FIN, PSH, RST, SYN, icmpEcho, icmpError, parse, tcp, udp } from '../helpers/packet.js';
import { FA_BYTES_OUT, FLOW_ACCT_SIZE, SIDE_INSIDE, SNAP_FLOW_ACCT, VERDICT_PASS, ipToRaw, maskRaw } from '../../src/engine/abi.js';
import { capture, restoreInto } from '../../src/snapshot/state.js';
import { decode, encode } from '../../src/snapshot/format.js';
import { formatConntrack } from '../../src/cli/conntrack.js';
import { parseConfig } from '../../src/config/index.js';
import { applyConfig } from '../../src/engine/apply.js';
import type { FlowEntry } from '../../src/engine/engine.js';

const H1 = '192.168.1.10';
const H2 = '192.168.1.11';
const S1 = '198.51.100.7';

function pass(p: Uint8Array | null): Uint8Array {
  expect(p).not.toBeNull();
  return p!;
}

/** The one flow of `lan`:`lanPort`. */
function flowOf(r: TestRouter, lan: string, lanPort: number): FlowEntry {
  const f = r.engine.flows(WAN, r.now).filter((x) => x.lan === lan && x.lanPort === lanPort);
  expect(f.length).toBe(1);
  return f[0]!;
}

const sum = (...ps: Uint8Array[]) => ps.reduce((n, p) => n + p.length, 0);

describe('option acct: bytes per flow, as conntrack counts them', () => {
  it('A01 off (the default): no byte counters anywhere, the table costs what it did, conntrack prints packets= only', () => {
    const off = new TestRouter();
    const on = new TestRouter({ acct: true });
    expect([off.engine.acct, on.engine.acct]).toEqual([false, true]);
    pass(off.out(udp(H1, 5000, S1, 53)));
    const f = flowOf(off, H1, 5000);
    expect(f).not.toHaveProperty('bytesOut');
    expect(f).not.toHaveProperty('bytesIn');
    expect(JSON.stringify(f)).not.toContain('bytes');
    expect(formatConntrack([f])).not.toContain('bytes=');
    expect(off.engine.x.flowAcctPtr()).toBe(0);
    // 40-byte records + two indexes off; 16 bytes more per flow on, and the memory grows by as much.
    expect(off.engine.bytesPerFlow()).toBe(56);
    expect(on.engine.bytesPerFlow()).toBe(72);
    const more = on.engine.x.memoryBytes(4096, 1) - off.engine.x.memoryBytes(4096, 0);
    expect(more).toBeGreaterThanOrEqual(4096 * FLOW_ACCT_SIZE);
    expect(more).toBeLessThan(4096 * FLOW_ACCT_SIZE + 64);
  });

  it('A02 a TCP connection: every packet\'s IP length counted in its own direction, in step with packets=', () => {
    const r = new TestRouter({ acct: true });
    const o1 = pass(r.out(tcp(H1, 40000, S1, 80, SYN)));
    const port = parse(o1).sport;
    const i1 = pass(r.in(tcp(S1, 80, WAN, port, SYN | ACK)));
    const o2 = pass(r.out(tcp(H1, 40000, S1, 80, ACK)));
    const o3 = pass(r.out(tcp(H1, 40000, S1, 80, PSH | ACK, Array(300).fill(1), { seq: 1 })));
    const i2 = pass(r.in(tcp(S1, 80, WAN, port, PSH | ACK, Array(1400).fill(2), { seq: 1 })));
    const f = flowOf(r, H1, 40000);
    expect([f.packetsOut, f.packetsIn]).toEqual([3, 2]);
    expect([f.bytesOut, f.bytesIn]).toEqual([sum(o1, o2, o3), sum(i1, i2)]);
    expect(f.bytesOut).toBe(40 + 40 + 340);
    expect(f.bytesIn).toBe(40 + 1440);
  });

  it('A03 UDP, ICMP echo, and an ICMP error about a flow counted against that flow, like its packet', () => {
    const r = new TestRouter({ acct: true });
    const u = pass(r.out(udp(H1, 5353, S1, 53, Array(100).fill(0))));
    const ur = pass(r.in(udp(S1, 53, WAN, parse(u).sport, Array(500).fill(0))));
    const err = icmpError('198.51.100.1', WAN, 3, 3, u, 64);
    const er = pass(r.in(err));
    const uf = flowOf(r, H1, 5353);
    expect([uf.packetsOut, uf.packetsIn]).toEqual([1, 2]);
    expect([uf.bytesOut, uf.bytesIn]).toEqual([128, sum(ur, er)]);
    const e = pass(r.out(icmpEcho(H2, S1, 8, 77, 1, Array(56).fill(0))));
    const er2 = pass(r.in(icmpEcho(S1, WAN, 0, parse(e).icmpId, 1, Array(56).fill(0))));
    const ef = flowOf(r, H2, 77);
    expect([ef.bytesOut, ef.bytesIn]).toEqual([84, er2.length]);
  });

  it('A04 a GSO super-packet counts one packet and its whole length (what the kernel hands over), not one segment', () => {
    const r = new TestRouter({ acct: true });
    r.engine.setVnet(true);
    const send = (p: Uint8Array, h: Parameters<typeof r.engine.setVnetHdr>[1]) => {
      r.engine.setPacket(0, p);
      r.engine.setVnetHdr(0, h);
      r.engine.process(1, SIDE_INSIDE, r.now);
      return r.engine.verdict(0) === VERDICT_PASS;
    };
    expect(send(tcp(H1, 40000, S1, 443, SYN), {})).toBe(true);
    const sp = tcp(H1, 40000, S1, 443, ACK | PSH, Array(30 * 1448).fill(3), { seq: 1 });
    expect(sp.length).toBe(40 + 30 * 1448);
    expect(send(sp, { flags: 1, gsoType: 1, hdrLen: 40, gsoSize: 1448, csumStart: 20, csumOffset: 16 })).toBe(true);
    const f = flowOf(r, H1, 40000);
    expect(f.packetsOut).toBe(2);
    expect(f.bytesOut).toBe(40 + sp.length);
  });

  it('A05 what is dropped is not counted; a flow opened in a freed record starts at zero', () => {
    const r = new TestRouter({ acct: true });
    const o = pass(r.out(tcp(H1, 40000, S1, 80, SYN, [], { seq: 1000 })));
    const port = parse(o).sport;
    pass(r.in(tcp(S1, 80, WAN, port, SYN | ACK, [], { seq: 5000, ack: 1001 })));
    // A blind RST far outside the window: dropped, counts nothing.
    expect(r.in(tcp(S1, 80, WAN, port, RST, [], { seq: 5000 + 0x40000000 }))).toBeNull();
    let f = flowOf(r, H1, 40000);
    expect([f.packetsIn, f.bytesIn]).toEqual([1, 40]);
    // conntrack -D, then another host's flow takes the record.
    expect(r.engine.deleteEntry(f)).toBe(true);
    pass(r.out(udp(H2, 6000, S1, 53, [1, 2])));
    f = flowOf(r, H2, 6000);
    expect(f.id).toBe('flow:0');
    expect([f.bytesOut, f.bytesIn]).toEqual([30, 0]);
  });

  it('A06 u64 counters: a flow past 4 GiB does not wrap (the packet counter is u32, the byte counter is not)', () => {
    const r = new TestRouter({ acct: true });
    pass(r.out(tcp(H1, 40000, S1, 80, ACK, [], { seq: 1 })));
    const at = r.engine.x.flowAcctPtr() + FA_BYTES_OUT;
    const dv = new DataView(r.engine.memory.buffer);
    dv.setBigUint64(at, 2n ** 32n - 10n, true);
    pass(r.out(tcp(H1, 40000, S1, 80, ACK, Array(100).fill(0), { seq: 1 })));
    expect(flowOf(r, H1, 40000).bytesOut).toBe(2 ** 32 - 10 + 140);
  });

  it('A07 conntrack -L: bytes= right after packets= in each direction, before [UNREPLIED] and [ASSURED], as conntrack-tools print it', () => {
    const r = new TestRouter({ acct: true });
    const o1 = pass(r.out(tcp(H1, 40000, S1, 80, SYN)));
    const port = parse(o1).sport;
    pass(r.in(tcp(S1, 80, WAN, port, SYN | ACK)));
    pass(r.out(tcp(H1, 40000, S1, 80, ACK)));
    pass(r.out(udp(H2, 5000, S1, 53, [1, 2, 3, 4])));
    const [t, u] = r.engine.flows(WAN, r.now);
    expect(formatConntrack([t!])).toMatch(new RegExp(
      `^tcp      6 \\d+ ESTABLISHED src=${H1} dst=${S1} sport=40000 dport=80 packets=2 bytes=80 ` +
      `src=${S1} dst=${WAN} sport=80 dport=${port} packets=1 bytes=40 \\[ASSURED\\] use=1\\n$`));
    expect(formatConntrack([u!])).toMatch(new RegExp(
      `^udp      17 \\d+ src=${H2} dst=${S1} sport=5000 dport=53 packets=1 bytes=32 \\[UNREPLIED\\] ` +
      `src=${S1} dst=${WAN} sport=53 dport=\\d+ packets=0 bytes=0 use=1\\n$`));
    // A FIN later: the counts go on (state changes do not reset them).
    pass(r.out(tcp(H1, 40000, S1, 80, FIN | ACK, [], { seq: 1 })));
    expect(flowOf(r, H1, 40000).bytesOut).toBe(120);
  });

  it('A08 a flow opened from the WAN through a redirect: the original direction is the WAN side\'s, and so are its bytes', () => {
    const r = new TestRouter({ acct: true });
    r.redirect(6, 8080, H1, 80);
    const i = pass(r.in(tcp(S1, 50000, WAN, 8080, SYN, [9, 9, 9])));
    const o = pass(r.out(tcp(H1, 80, S1, 50000, SYN | ACK)));
    const f = flowOf(r, H1, 80);
    expect(f.redirect).toBe(true);
    expect([f.bytesIn, f.bytesOut]).toEqual([i.length, o.length]);
    // The original direction (src=S1) carries packets=1 bytes=43, the reply direction packets=1 bytes=40.
    expect(formatConntrack([f])).toContain(`src=${S1} dst=${WAN} sport=50000 dport=8080 packets=1 bytes=43 src=${H1} dst=${S1} sport=80 dport=50000 packets=1 bytes=40`);
  });
});

describe('option acct: NAT loopback', () => {
  it('A11 a hairpin flow (a LAN host through the WAN address to a forward) counts both ways, printed after each direction\'s packets=', () => {
    const r = new TestRouter({ acct: true });
    applyConfig(r.engine, parseConfig(`config vpnmasq 'main'
	option lan_device 'br-lan'
	option wan_device 'wan'
config redirect 'web'
	option proto 'tcp'
	option src_dport '8080'
	option dest_ip '192.168.1.10'
	option dest_port '80'
`, 'test'), ['192.168.1.0/24'], ['192.168.1.1/24']);
    const o1 = pass(r.out(tcp(H2, 40000, WAN, 8080, SYN)));
    const alias = parse(o1).sport;
    const i1 = pass(r.out(tcp('192.168.1.10', 80, '192.168.1.1', alias, SYN | ACK, Array(10).fill(0))));
    const f = flowOf(r, H2, 40000);
    expect(f.hairpin).toBeDefined();
    expect([f.packetsOut, f.bytesOut, f.packetsIn, f.bytesIn]).toEqual([1, o1.length, 1, i1.length]);
    expect(formatConntrack([f])).toContain(`dport=8080 packets=1 bytes=40 src=192.168.1.10`);
    expect(formatConntrack([f])).toContain(`dport=${alias} packets=1 bytes=50 hairpin=internal`);
  });
});

describe('option acct: the attacker', () => {
  it('A09 spoofed and off-path packets aimed at a flow\'s public port count nothing against it', () => {
    const r = new TestRouter({ acct: true });
    const u = pass(r.out(udp(H1, 5353, S1, 53, [1, 2, 3, 4])));
    const alias = parse(u).sport;
    pass(r.in(udp(S1, 53, WAN, alias, [5, 6, 7, 8])));
    const before = flowOf(r, H1, 5353);
    // another remote host, another remote port, a LAN source from the WAN side, a bad IP checksum
    expect(r.in(udp('198.51.100.99', 53, WAN, alias, Array(1000).fill(0)))).toBeNull();
    expect(r.in(udp(S1, 54, WAN, alias, Array(1000).fill(0)))).toBeNull();
    expect(r.in(udp(H2, 53, WAN, alias, Array(1000).fill(0)))).toBeNull();
    const bad = udp(S1, 53, WAN, alias, Array(1000).fill(0));
    bad[10] ^= 0xff;
    expect(r.in(bad)).toBeNull();
    const after = flowOf(r, H1, 5353);
    expect([after.packetsIn, after.bytesIn, after.packetsOut, after.bytesOut]).toEqual([before.packetsIn, before.bytesIn, before.packetsOut, before.bytesOut]);
    expect([after.bytesOut, after.bytesIn]).toEqual([32, 32]);
  });
});

describe('option acct: what the engine is handed', () => {
  it('A10 the setting is the engine\'s, fixed at load: reset keeps it, the WAN address is unrelated', () => {
    const r = new TestRouter({ acct: true });
    pass(r.out(udp(H1, 5000, S1, 53)));
    r.engine.reset();
    expect(r.engine.x.acctEnabled()).toBe(1);
    r.engine.applySettings(r.settings);
    r.engine.x.setLanNet(0, ipToRaw('192.168.1.0'), maskRaw(24));
    r.engine.x.setLanNetCount(1);
    r.engine.x.setWanAddress(ipToRaw(WAN), r.now);
    pass(r.out(udp(H1, 5000, S1, 53)));
    expect(flowOf(r, H1, 5000).bytesOut).toBe(32);
  });
});

// ---- restart: the counters in the state snapshot ---------------------------

/** Flows of three hosts with known bytes; the middle record freed (conntrack -D) so restore packs the records. */
function counted(acct: boolean) {
  const r = new TestRouter({ acct });
  const t = pass(r.out(tcp(H1, 40000, S1, 80, SYN)));
  pass(r.in(tcp(S1, 80, WAN, parse(t).sport, SYN | ACK, Array(200).fill(0))));
  pass(r.out(udp(H2, 7000, S1, 53, Array(10).fill(0))));
  const u = pass(r.out(udp(H1, 5353, S1, 53, Array(1000).fill(0))));
  pass(r.in(udp(S1, 53, WAN, parse(u).sport, Array(100).fill(0))));
  expect(r.engine.deleteEntry(flowOf(r, H2, 7000))).toBe(true);
  return r;
}
const fileOf = (r: TestRouter) => encode(...((c) => [c.header, c.sections] as const)(capture(r.engine, ipToRaw(WAN), r.now)));
function restoreTo(into: TestRouter, file: Uint8Array) {
  const res = restoreInto(into.engine, decode(file), ipToRaw(WAN));
  into.now = res.clockMs;
  return res;
}
const byTuple = (r: TestRouter) => r.engine.flows(WAN, r.now)
  .map((f) => [f.proto, f.lan, f.lanPort, f.packetsOut, f.packetsIn, f.bytesOut, f.bytesIn]).sort();

describe('option acct across a restart (state snapshot)', () => {
  it('A20 acct on before and after: every flow keeps its bytes, also when restore packs the records into other places', () => {
    const a = counted(true);
    const file = fileOf(a);
    expect(decode(file).sections.map((s) => s.id)).toContain(SNAP_FLOW_ACCT);
    const b = new TestRouter({ acct: true, seed: 999 });
    const res = restoreTo(b, file);
    expect(res.acctNote).toBeUndefined();
    expect(b.engine.x.restoreVerify()).toBe(0);
    expect(byTuple(b)).toEqual(byTuple(a));
    expect(flowOf(b, H1, 5353)).toMatchObject({ id: 'flow:1', bytesOut: 1028, bytesIn: 128 });
    expect(flowOf(b, H1, 40000)).toMatchObject({ bytesOut: 40, bytesIn: 240 });
    // and they go on counting
    pass(b.out(udp(H1, 5353, S1, 53, [1])));
    expect(flowOf(b, H1, 5353).bytesOut).toBe(1028 + 29);
  });

  it('A21 acct switched on across the restart: the flows come back and count from 0, and the result says so', () => {
    const b = new TestRouter({ acct: true, seed: 999 });
    const res = restoreTo(b, fileOf(counted(false)));
    expect(res.acctNote).toMatch(/no byte counters: restored flows count bytes from 0/);
    expect(b.engine.flows(WAN, b.now).map((f) => [f.bytesOut, f.bytesIn])).toEqual([[0, 0], [0, 0]]);
  });

  it('A22 acct switched off across the restart: the flows come back without bytes, and the result says the counters were dropped', () => {
    const b = new TestRouter({ seed: 999 });
    const res = restoreTo(b, fileOf(counted(true)));
    expect(res.acctNote).toMatch(/byte counters are dropped/);
    expect(res.entries.flows).toBe(2);
    expect(b.engine.flows(WAN, b.now).every((f) => !('bytesOut' in f))).toBe(true);
  });

  it('A23 a forged file whose byte counters do not match its flows record for record is refused whole', () => {
    const file = Buffer.from(fileOf(counted(true)));
    const snap = decode(file);
    const acct = snap.sections.find((s) => s.id === SNAP_FLOW_ACCT)!;
    acct.records -= 1;
    acct.data = acct.data.subarray(0, acct.records * acct.recordBytes);
    const b = new TestRouter({ acct: true, seed: 999 });
    expect(() => restoreTo(b, encode(snap, snap.sections))).toThrow(/record count out of range/);
  });

  it('A24 a snapshot with an unknown extra table is still refused (only the byte counters may come and go)', () => {
    const snap = decode(Buffer.from(fileOf(counted(false))));
    snap.sections.push({ id: 77, recordBytes: 8, records: 0, capacity: 1, data: new Uint8Array(0) });
    expect(() => restoreTo(new TestRouter({ acct: true }), encode(snap, snap.sections))).toThrow(/tables, this engine has/);
  });
});
