// Numbered restore scenarios (issue 9): an engine's state is captured the
// way the supervisor does it, written as a snapshot file (bytes), and
// restored into a second engine with another hash seed; replies that only
// the restored state can route must reach the right LAN host. Then what
// must be refused, whole: another layout, another WAN address, and files
// whose checksum is right but whose records lie.
import { describe, expect, it } from 'vitest';
import { TestRouter, WAN } from '../helpers/harness.js';
import { ACK, PSH, SYN, esp, gre, greCallId, icmpEcho, ipCsumOk, isakmp, l4CsumOk, parse, pptpField, pptpMsg, spiOf, tcp, udp } from '../helpers/packet.js';
import { ipToRaw, maskRaw } from '../../src/engine/abi.js';
import { capture, restoreInto, SnapshotRefused, type Capture } from '../../src/snapshot/state.js';
import { decode, encode, crc32 } from '../../src/snapshot/format.js';

const A = '192.168.1.10';
const B = '192.168.1.11';
const SRV = '198.51.100.7';
const CK_A = '0a0a0a0a0a0a0a0a';
const CK_B = '0b0b0b0b0b0b0b0b';

function ok(p: Uint8Array | null): Uint8Array {
  expect(p).not.toBeNull();
  expect(ipCsumOk(p!)).toBe(true);
  expect(l4CsumOk(p!)).toBe(true);
  return p!;
}

function router(seed = 12345, maxFlows = 4096): TestRouter {
  const r = new TestRouter({ seed, maxFlows });
  r.vpn();
  return r;
}

/** A router with TCP, UDP and ICMP flows of two hosts, two ESP associations, two IKE exchanges and two PPTP calls (same Call ID). */
function populated() {
  const r = router();
  const t = parse(ok(r.out(tcp(A, 40000, SRV, 80, SYN))));
  ok(r.in(tcp(SRV, 80, WAN, t.sport, SYN | ACK)));
  ok(r.out(tcp(A, 40000, SRV, 80, ACK)));
  const u = parse(ok(r.out(udp(B, 5353, SRV, 53))));
  const ping = parse(ok(r.out(icmpEcho(A, SRV, 8, 77))));
  // ESP: A then B to the same server; each bound by the server's first SPI
  ok(r.out(esp(A, SRV, 0x1001)));
  ok(r.in(esp(SRV, WAN, 0x2001)));
  ok(r.out(esp(B, SRV, 0x1002)));
  ok(r.in(esp(SRV, WAN, 0x2002)));
  // IKE from port 500 of both hosts, answered
  ok(r.out(isakmp(A, 500, SRV, 500, CK_A)));
  ok(r.out(isakmp(B, 500, SRV, 500, CK_B)));
  ok(r.in(isakmp(SRV, 500, WAN, 500, CK_A, 'dddddddddddddddd')));
  ok(r.in(isakmp(SRV, 500, WAN, 500, CK_B, 'eeeeeeeeeeeeeeee')));
  // PPTP: both hosts use Call ID 5
  const call = (host: string, sport: number, peer: number) => {
    const syn = parse(ok(r.out(tcp(host, sport, SRV, 1723, SYN))));
    ok(r.in(tcp(SRV, 1723, WAN, syn.sport, SYN | ACK)));
    ok(r.out(tcp(host, sport, SRV, 1723, ACK)));
    const ocrq = ok(r.out(tcp(host, sport, SRV, 1723, PSH | ACK, pptpMsg(7, 5))));
    const alias = pptpField(ocrq, 12);
    ok(r.in(tcp(SRV, 1723, WAN, syn.sport, PSH | ACK, pptpMsg(8, peer, alias))));
    return { wanPort: syn.sport, alias };
  };
  const ca = call(A, 41000, 700);
  const cb = call(B, 41001, 701);
  return { r, tcpPort: t.sport, udpPort: u.sport, pingId: ping.icmpId, ca, cb };
}

function snap(r: TestRouter, wan = WAN): Capture {
  return capture(r.engine, ipToRaw(wan), r.now);
}
function bytes(c: Capture): Buffer { return encode(c.header, c.sections); }

/** Restores file bytes into `into`; sets its clock to the continued one. */
function restore(into: TestRouter, file: Uint8Array, wan: string | null = WAN) {
  const res = restoreInto(into.engine, decode(file), wan === null ? null : ipToRaw(wan));
  into.now = res.clockMs;
  return res;
}

/** Refused, and the engine reset to empty, as the supervisor does. */
function refused(into: TestRouter, file: Uint8Array, re: RegExp, wan: string | null = WAN): void {
  let err: unknown;
  try { restore(into, file, wan); } catch (e) { err = e; }
  expect(err).toBeInstanceOf(SnapshotRefused);
  expect((err as Error).message).toMatch(re);
  into.engine.reset();
  const x = into.engine.x;
  expect([x.flowActive(), x.flowHighWater(), x.espCount(), x.ikeCount(), x.callCount()]).toEqual([0, 0, 0, 0, 0]);
  expect(x.restoreVerify()).toBe(0);
}

/** Rewrites the file with a new CRC after `edit` changed it: the framing is valid, only the contents lie. */
function forged(file: Buffer, edit: (b: Buffer) => void): Buffer {
  const b = Buffer.from(file);
  edit(b);
  b.writeUInt32LE(crc32(b.subarray(0, b.length - 4)), b.length - 4);
  return b;
}

/** Offset of the first record of section `id` in the file. */
function sectionAt(file: Buffer, id: number): { off: number; recordBytes: number; records: number; countAt: number } {
  let off = 128;
  for (;;) {
    const sid = file.readUInt32LE(off);
    const recordBytes = file.readUInt32LE(off + 4);
    const records = file.readUInt32LE(off + 8);
    if (sid === id) return { off: off + 16, recordBytes, records, countAt: off + 8 };
    off += 16 + recordBytes * records;
  }
}

describe('restore: what comes back', () => {
  it('R01 flows (TCP, UDP, ICMP) come back under another hash seed; the server speaks first and reaches the right host', () => {
    const p = populated();
    const file = bytes(snap(p.r));
    const n = router(999);
    const res = restore(n, file);
    expect(res.entries).toMatchObject({ flows: 3 + 2 /* pptp control */, esp: 2, ike: 2, calls: 2 });
    expect(n.engine.x.restoreVerify()).toBe(0);
    const strip = (f: any[]) => f.map((e) => [e.proto, e.lan, e.lanPort, e.remote, e.remotePort, e.aliasPort, e.state]).sort();
    expect(strip(n.engine.flows(WAN, n.now))).toEqual(strip(p.r.engine.flows(WAN, p.r.now)));
    expect(parse(ok(n.in(tcp(SRV, 80, WAN, p.tcpPort, PSH | ACK, [1, 2, 3])))).dst).toBe(A);
    const rb = parse(ok(n.in(udp(SRV, 53, WAN, p.udpPort))));
    expect([rb.dst, rb.dport]).toEqual([B, 5353]);
    expect(parse(ok(n.in(icmpEcho(SRV, WAN, 0, p.pingId)))).dst).toBe(A);
    // an unrelated inbound packet is still dropped
    expect(n.in(udp(SRV, 53, WAN, 4444))).toBeNull();
  });

  it('R02 ESP by inbound SPI, IKE by cookie, GRE by Call ID alias reach the right host after the restore', () => {
    const p = populated();
    const n = router(4242);
    restore(n, bytes(snap(p.r)));
    const ea = ok(n.in(esp(SRV, WAN, 0x2001)));
    const eb = ok(n.in(esp(SRV, WAN, 0x2002)));
    expect([parse(ea).dst, spiOf(ea), parse(eb).dst, spiOf(eb)]).toEqual([A, 0x2001, B, 0x2002]);
    const ia = parse(ok(n.in(isakmp(SRV, 500, WAN, 500, CK_A, 'dddddddddddddddd'))));
    const ib = parse(ok(n.in(isakmp(SRV, 500, WAN, 500, CK_B, 'eeeeeeeeeeeeeeee'))));
    expect([ia.dst, ia.dport, ib.dst, ib.dport]).toEqual([A, 500, B, 500]);
    // the responder cookie is remembered too: another one is a collision
    expect(n.in(isakmp(SRV, 500, WAN, 500, CK_A, 'ffffffffffffffff'))).toBeNull();
    const ga = ok(n.in(gre(SRV, WAN, p.ca.alias)));
    const gb = ok(n.in(gre(SRV, WAN, p.cb.alias)));
    expect([parse(ga).dst, greCallId(ga), parse(gb).dst, greCallId(gb)]).toEqual([A, 5, B, 5]);
    // outbound GRE keeps using the server's Call IDs, and new ESP SPIs still follow the HOWTO
    expect(parse(ok(n.out(esp(A, SRV, 0x1001)))).src).toBe(WAN);
    expect(n.engine.x.restoreVerify()).toBe(0);
  });

  it('R03 counters come back; gauges are recounted from what was restored', () => {
    const p = populated();
    const before = p.r.engine.counters();
    const n = router(1);
    restore(n, bytes(snap(p.r)));
    const after = n.engine.counters();
    expect(after.rxInside).toBe(before.rxInside);
    expect(after.flowsNew).toBe(before.flowsNew);
    expect(after.espBound).toBe(before.espBound);
    expect([after.flowsActive, after.espActive, after.ikeActive, after.callsActive]).toEqual([5, 2, 2, 2]);
    expect(after.bindingsActive).toBe(before.bindingsActive);
  });

  it('R04 entries that expired while the router was down are dropped; the rest live on', () => {
    const p = populated();
    const c = snap(p.r);
    c.header.wallMs = Date.now() - 400_000; // saved 400 s ago: UDP (300 s) and ICMP (60 s) expired, TCP did not
    const n = router(7);
    const res = restore(n, bytes(c));
    const protos = n.engine.flows(WAN, n.now).map((f) => f.proto).sort();
    expect(protos).toEqual(['tcp', 'tcp', 'tcp']);
    expect(res.entries).toMatchObject({ esp: 2, ike: 2, calls: 2 });
    expect(n.in(udp(SRV, 53, WAN, p.udpPort))).toBeNull();
    expect(n.engine.x.restoreVerify()).toBe(0);
  });

  it('R05 a redirect added since takes its port: the flow that held it is dropped, the rest restored', () => {
    const p = populated();
    const file = bytes(snap(p.r));
    const n = router(8);
    n.redirect(17, p.udpPort, '192.168.1.99', 53);
    const res = restore(n, file);
    expect(res.entries.flows).toBe(4);
    expect(parse(ok(n.in(udp(SRV, 53, WAN, p.udpPort)))).dst).toBe('192.168.1.99');
    expect(n.engine.x.restoreVerify()).toBe(0);
  });

  it('R06 a redirect flow comes back on its reserved port', () => {
    const r = router();
    r.redirect(6, 8080, A, 80);
    ok(r.in(tcp(SRV, 33000, WAN, 8080, SYN)));
    const n = router(9);
    n.redirect(6, 8080, A, 80);
    restore(n, bytes(snap(r)));
    expect(parse(ok(n.out(tcp(A, 80, SRV, 33000, SYN | ACK)))).sport).toBe(8080);
    expect(n.engine.x.restoreVerify()).toBe(0);
  });
});

describe('restore: what is refused, whole', () => {
  it('R10 another max_flows, another layout version, another WAN address, no WAN address', () => {
    const p = populated();
    const file = bytes(snap(p.r));
    refused(router(1, 8192), file, /max_flows 4096, configured 8192/);
    refused(router(1), forged(file, (b) => b.writeUInt32LE(77, 16)), /layout version 77/);
    refused(router(1), file, /WAN address changed from 203\.0\.113\.1 to 203\.0\.113\.9/, '203.0.113.9');
    refused(router(1), file, /no address/, null);
  });

  it('R11 a record twice (duplicate key), in each table', () => {
    const file = bytes(snap(populated().r));
    for (const id of [2, 3, 4, 5]) {
      const s = sectionAt(file, id);
      const dup = forged(file, (b) => b.copy(b, s.off + s.recordBytes, s.off, s.off + s.recordBytes));
      refused(router(1), dup, /same key|inconsistent|bindings/);
    }
  });

  it('R12 impossible fields: a flow of protocol 99, state 200, alias port 0, a lifetime of years; ESP state 9; IKE cookie 0; call alias 0', () => {
    const file = bytes(snap(populated().r));
    const f = sectionAt(file, 2);
    refused(router(1), forged(file, (b) => { b[f.off + 14] = 99; }), /impossible field/);
    refused(router(1), forged(file, (b) => { b[f.off + 15] = 200; }), /impossible field/);
    refused(router(1), forged(file, (b) => b.writeUInt16LE(0, f.off + 12)), /impossible field/);
    refused(router(1), forged(file, (b) => b.writeUInt32LE(b.readUInt32LE(f.off + 16) + 300_000_000, f.off + 16)), /impossible field/);
    const e = sectionAt(file, 3);
    refused(router(1), forged(file, (b) => { b[e.off + 24] = 9; }), /impossible field/);
    const i = sectionAt(file, 4);
    refused(router(1), forged(file, (b) => b.fill(0, i.off + 8, i.off + 16)), /impossible field/);
    const c = sectionAt(file, 5);
    refused(router(1), forged(file, (b) => b.writeUInt16LE(0, c.off + 10)), /impossible field/);
  });

  it('R13 two flows of different hosts on one dynamic port (inconsistent with the bindings)', () => {
    const file = bytes(snap(populated().r));
    const f = sectionAt(file, 2);
    // record 0 is A's TCP flow, record 1 B's UDP flow: make record 1 a TCP flow of B on A's port
    const bad = forged(file, (b) => {
      const r0 = f.off, r1 = f.off + f.recordBytes;
      b.writeUInt16LE(b.readUInt16LE(r0 + 12), r1 + 12); // same alias port
      b[r1 + 14] = b[r0 + 14]!;                          // same protocol
      b.writeUInt32LE(0x0b01a8c0, r1);                    // another LAN host (192.168.1.11)
    });
    refused(router(1), bad, /bindings|same key/);
  });

  it('R14 counts beyond the table, records past the end of the file, a truncated file, a flipped bit, another format version', () => {
    const file = bytes(snap(populated().r));
    const f = sectionAt(file, 2);
    expect(() => decode(forged(file, (b) => b.writeUInt32LE(0xffffffff, f.countAt)))).toThrow(SnapshotRefused);
    expect(() => decode(forged(file, (b) => b.writeUInt32LE(f.records + 1, f.countAt)))).toThrow(SnapshotRefused);
    expect(() => decode(forged(file, (b) => b.writeUInt32LE(0x7fffffff, f.countAt - 4)))).toThrow(/record size/);
    expect(() => decode(file.subarray(0, file.length - 9))).toThrow(/checksum|truncated/);
    const flip = Buffer.from(file); flip[f.off + 3] ^= 4;
    expect(() => decode(flip)).toThrow(/checksum/);
    expect(() => decode(forged(file, (b) => b.writeUInt32LE(2, 8)))).toThrow(/format version 2/);
    expect(() => decode(Buffer.alloc(64))).toThrow(/truncated/);
  });

  it('R15 a refused restore leaves an engine that forwards as a fresh one', () => {
    const file = bytes(snap(populated().r));
    const n = router(3);
    refused(n, forged(file, (b) => { b[sectionAt(b, 3).off + 24] = 9; }), /impossible/);
    // the supervisor applies the config again after reset()
    n.engine.applySettings(n.settings);
    n.engine.x.setWanAddress(ipToRaw(WAN), n.now);
    n.engine.x.setLanNet(0, ipToRaw('192.168.1.0'), maskRaw(24));
    n.engine.x.setLanNetCount(1);
    const o = parse(ok(n.out(udp(A, 5000, SRV, 53))));
    expect(parse(ok(n.in(udp(SRV, 53, WAN, o.sport)))).dst).toBe(A);
  });
  it('R16 a saved wall clock past the last instant a Date holds (forged, checksum right) is refused like any bad field', () => {
    const c = snap(populated().r);
    c.header.wallMs = 1e300;
    refused(router(999), bytes(c), /wall clock 1e\+300 out of range/);
  });
});
