// The flow fast path's userland half (src/datapath/fastpath.ts with
// assembly/nat/fastpath.ts) against a real engine and a kernel table kept
// in a Map: which flows the engine offers and when, the entries written
// (the kernel program's input, byte for byte), the kernel's counts credited
// to the flow, and every way a flow is withdrawn. The kernel program itself
// is tested on real devices in test/netns/fastpath.test.ts, the two
// together in test/netns/flowoffload.test.ts.
import { describe, expect, it } from 'vitest';
import { FastPath, keyOf, type FastPathKernel } from '../../../src/datapath/fastpath.js';
import { ipToRaw } from '../../../src/engine/abi.js';
import { TestRouter, WAN, ok, pptpCall } from '../../helpers/harness.js';
import { ACK, FIN, PSH, RST, SYN, esp, gre, greCallId, icmpEcho, parse, pptpMsg, tcp, udp } from '../../helpers/packet.js';
import { capture, restoreInto } from '../../../src/snapshot/state.js';
import { decode, encode } from '../../../src/snapshot/format.js';

const H1 = '192.168.1.10', H2 = '192.168.1.11', S1 = '198.51.100.7';
const LAN_IF = 3, WAN_IF = 4;

/** The kernel's table as a Map of hex keys; `full` makes every put fail as E2BIG would. */
class FakeKernel implements FastPathKernel {
  readonly table = new Map<string, Buffer>();
  full = false;
  closed = false;
  put(key: Buffer, value: Buffer): void {
    if (this.full) throw new Error('flow fast path table full');
    this.table.set(key.toString('hex'), Buffer.from(value));
  }
  get(key: Buffer, out: Buffer): boolean {
    const v = this.table.get(key.toString('hex'));
    if (!v) return false;
    v.copy(out);
    return true;
  }
  remove(key: Buffer): boolean { return this.table.delete(key.toString('hex')); }
  /** Entries a readBatch hands over at most (the kernel: whole buckets), and the calls made. */
  batch = Infinity;
  batchReads = 0;
  /** The walk in insertion order, the token the place in it (entries deleted before it shift it back, as a bucket index would not: none is missed, some may be met twice). */
  readBatch(token: Buffer, first: boolean, keys: Buffer, values: Buffer): { count: number; done: boolean } {
    this.batchReads++;
    const at = first ? 0 : token.readUInt32LE(0);
    const all = [...this.table];
    const room = Math.min(keys.length / 16, values.length / 48, this.batch);
    const take = all.slice(at, at + room);
    take.forEach(([k, v], i) => { keys.write(k, i * 16, 'hex'); v.copy(values, i * 48); });
    token.writeUInt32LE(at + take.length, 0);
    return { count: take.length, done: at + take.length >= all.length };
  }
  stats(): number[] { return [0, 0, 0, 0, 0, 0, 0, 0]; }
  close(): void { this.closed = true; }
  /** The sender's end as the program moves it. */
  end(key: Buffer, end: number): void { this.table.get(key.toString('hex'))!.writeUInt32LE(end >>> 0, 24); }
  /** What the program adds as it forwards. */
  count(key: Buffer, packets: number, bytes: number): void {
    const v = this.table.get(key.toString('hex'))!;
    v.writeBigUInt64LE(v.readBigUInt64LE(32) + BigInt(packets), 32);
    v.writeBigUInt64LE(v.readBigUInt64LE(40) + BigInt(bytes), 40);
  }
}

function bench(capacity = 64, acct = false) {
  const r = new TestRouter({ acct, timeouts: { tcpEst: 100 } });
  const k = new FakeKernel();
  const fp = new FastPath(r.engine, k, LAN_IF, WAN_IF, capacity);
  r.engine.x.setFastPath(1);
  fp.setWan(ipToRaw(WAN));
  return { r, k, fp };
}

/** A LAN host's connection through its handshake; `take` after each packet, as the loop does after each batch. */
function connect(r: TestRouter, fp: FastPath, host = H1, sport = 40000, dport = 80): { alias: number; pendingBefore: number[] } {
  const pendingBefore: number[] = [];
  const alias = parse(ok(r.out(tcp(host, sport, S1, dport, SYN, [], { seq: 1000, win: 64240 })))).sport;
  pendingBefore.push(r.engine.x.fastPathPending()); fp.take();
  ok(r.in(tcp(S1, dport, WAN, alias, SYN | ACK, [], { seq: 5000, ack: 1001, win: 65160 })));
  pendingBefore.push(r.engine.x.fastPathPending()); fp.take();
  ok(r.out(tcp(host, sport, S1, dport, ACK, [], { seq: 1001, ack: 5001, win: 502 })));
  pendingBefore.push(r.engine.x.fastPathPending()); fp.take();
  return { alias, pendingBefore };
}

const outKey = (host: string, sport: number, dport = 80) => keyOf(ipToRaw(host), ipToRaw(S1), sport, dport);
const inKey = (alias: number, dport = 80) => keyOf(ipToRaw(S1), ipToRaw(WAN), dport, alias);
const flowOf = (r: TestRouter, lanPort: number) => r.engine.flows(WAN, r.now).find((f) => f.lanPort === lanPort && f.proto === 'tcp');

describe('flow fast path: what the engine offers and what the kernel is given', () => {
  it('01 an established LAN flow is offered at the handshake\'s last packet, not before, and written as two entries', () => {
    const { r, k, fp } = bench();
    const { alias, pendingBefore } = connect(r, fp);
    expect(pendingBefore).toEqual([0, 0, 1]);
    expect(k.table.size).toBe(2);
    const out = k.table.get(outKey(H1, 40000).toString('hex'))!;
    const inb = k.table.get(inKey(alias).toString('hex'))!;
    // Out: the source becomes the WAN address and the alias port; in from LAN, out to WAN.
    expect([...out.subarray(0, 4)]).toEqual([203, 0, 113, 1]);
    expect([...out.subarray(4, 8)]).toEqual([198, 51, 100, 7]);
    expect(out.readUInt16BE(8)).toBe(alias);
    expect(out.readUInt16BE(10)).toBe(80);
    expect([out.readUInt32LE(12), out.readUInt32LE(16)]).toEqual([LAN_IF, WAN_IF]);
    // The LAN side's end so far (seq 1001, no payload), known; the server's window (65160 unscaled: 2^16 floor).
    expect([out.readUInt32LE(24), out.readUInt32LE(28)]).toEqual([1001, 1]);
    expect(out.readUInt32LE(20)).toBe(0xffff);
    // In: the destination becomes the LAN host and its port; in from WAN, out to LAN; the server's end 5001.
    expect([...inb.subarray(0, 4)]).toEqual([198, 51, 100, 7]);
    expect([...inb.subarray(4, 8)]).toEqual([192, 168, 1, 10]);
    expect([inb.readUInt16BE(8), inb.readUInt16BE(10)]).toEqual([80, 40000]);
    expect([inb.readUInt32LE(12), inb.readUInt32LE(16)]).toEqual([WAN_IF, LAN_IF]);
    expect([inb.readUInt32LE(24), inb.readUInt32LE(28)]).toEqual([5001, 1]);
    expect(fp.status()).toMatchObject({ flows: 1, offloaded: 1, withdrawn: 0 });
    // Later packets of the flow offer nothing more.
    ok(r.out(tcp(H1, 40000, S1, 80, PSH | ACK, [1, 2, 3], { seq: 1001, ack: 5001 })));
    expect(r.engine.x.fastPathPending()).toBe(0);
  });

  it('02 not offered: PPTP control, a UDP flow of two packets, a forward\'s flows the server has not answered, and nothing with the option off', () => {
    const { r, k, fp } = bench();
    pptpCall(r, H1, S1, 41000, 7);
    fp.take();
    // A forwarded port flooded from the WAN side: SYNs never answered, datagrams never answered.
    r.redirect(6, 8080, H2, 80);
    r.redirect(17, 51820, H2, 51820);
    for (let i = 0; i < 20; i++) {
      ok(r.in(tcp(S1, 50000 + i, WAN, 8080, SYN, [], { seq: 1 })));
      ok(r.in(udp(S1, 60000, WAN, 51820, [i])));
    }
    fp.take();
    const a = parse(ok(r.out(udp(H1, 5000, S1, 53)))).sport;
    ok(r.in(udp(S1, 53, WAN, a)));
    fp.take();
    expect(k.table.size).toBe(0);
    r.engine.x.setFastPath(0);
    connect(r, fp, H1, 42000);
    expect(k.table.size).toBe(0);
  });

  it('02b a port forward\'s flow (a server behind the router) is offered once its server has answered: TCP at the handshake\'s last packet, UDP at its 8th; the same two entries, the forward\'s port as the alias', () => {
    const { r, k, fp } = bench();
    r.redirect(6, 8080, H2, 80);
    ok(r.in(tcp(S1, 50000, WAN, 8080, SYN, [], { seq: 1, win: 64240 })));
    fp.take();
    ok(r.out(tcp(H2, 80, S1, 50000, SYN | ACK, [], { seq: 9, ack: 2, win: 65160 })));
    fp.take();
    expect(k.table.size).toBe(0);
    ok(r.in(tcp(S1, 50000, WAN, 8080, ACK, [], { seq: 2, ack: 10, win: 502 })));
    fp.take();
    expect(k.table.size).toBe(2);
    // Out: the server's packets leave from the WAN address and the forwarded port, arriving on the LAN device.
    const out = k.table.get(keyOf(ipToRaw(H2), ipToRaw(S1), 80, 50000).toString('hex'))!;
    expect([...out.subarray(0, 4)]).toEqual([203, 0, 113, 1]);
    expect([...out.subarray(4, 8)]).toEqual([198, 51, 100, 7]);
    expect([out.readUInt16BE(8), out.readUInt16BE(10)]).toEqual([8080, 50000]);
    expect([out.readUInt32LE(12), out.readUInt32LE(16)]).toEqual([LAN_IF, WAN_IF]);
    // In: the client's packets to WAN:8080 go to the server's address and port, arriving on the WAN device.
    const inb = k.table.get(keyOf(ipToRaw(S1), ipToRaw(WAN), 50000, 8080).toString('hex'))!;
    expect([...inb.subarray(0, 4)]).toEqual([198, 51, 100, 7]);
    expect([...inb.subarray(4, 8)]).toEqual([192, 168, 1, 11]);
    expect([inb.readUInt16BE(8), inb.readUInt16BE(10)]).toEqual([50000, 80]);
    expect([inb.readUInt32LE(12), inb.readUInt32LE(16)]).toEqual([WAN_IF, LAN_IF]);
    // A UDP forward (a WireGuard server, say): not before the server answers, then at the 8th packet.
    r.redirect(17, 51820, H2, 51820);
    for (let i = 0; i < 10; i++) ok(r.in(udp(S1, 61000, WAN, 51820, [i])));
    fp.take();
    expect(k.table.size).toBe(2);
    ok(r.out(udp(H2, 51820, S1, 61000, [1])));
    fp.take();
    expect(k.table.size).toBe(4);
    expect(k.table.has(keyOf(ipToRaw(S1), ipToRaw(WAN), 61000, 51820, 17).toString('hex'))).toBe(true);
    expect(k.table.has(keyOf(ipToRaw(H2), ipToRaw(S1), 51820, 61000, 17).toString('hex'))).toBe(true);
    // Withdrawn like any flow: conntrack -D.
    r.engine.deleteEntry(r.engine.flows(WAN, r.now).find((f) => f.lanPort === 80 && f.proto === 'tcp')!);
    fp.sync();
    expect(k.table.size).toBe(2);
  });

  it('03 the kernel\'s counts go to the flow: packets, bytes (option acct), and its timeout', () => {
    const { r, k, fp } = bench(64, true);
    const { alias } = connect(r, fp);
    const before = flowOf(r, 40000)!;
    const c0 = r.engine.counters();
    k.count(outKey(H1, 40000), 10, 15_000);
    k.count(inKey(alias), 20, 1_040);
    fp.sync();
    let f = flowOf(r, 40000)!;
    // As passed by the router, by the side they came from: status, the metrics and the dashboard's rates count them.
    const c1 = r.engine.counters();
    expect([c1.passInside! - c0.passInside!, c1.passOutside! - c0.passOutside!]).toEqual([10, 20]);
    expect([c1.passBytesInside! - c0.passBytesInside!, c1.passBytesOutside! - c0.passBytesOutside!]).toEqual([15_000, 1_040]);
    expect(f.packetsOut - before.packetsOut).toBe(10);
    expect(f.packetsIn - before.packetsIn).toBe(20);
    expect(f.bytesOut! - before.bytesOut!).toBe(15_000);
    expect(f.bytesIn! - before.bytesIn!).toBe(1_040);
    // Counted once: a second round with nothing new adds nothing.
    fp.sync();
    expect(flowOf(r, 40000)!.packetsOut).toBe(f.packetsOut);
    // tcp_timeout 100 s: kept alive by what the kernel moves, though the engine saw none of it.
    for (let i = 0; i < 4; i++) {
      r.advance(60);
      k.count(outKey(H1, 40000), 1, 100);
      fp.sync();
    }
    f = flowOf(r, 40000)!;
    expect(f).toBeDefined();
    expect(fp.status().flows).toBe(1);
    // Idle in the kernel too: it expires, and the next round withdraws it.
    r.advance(120);
    expect(flowOf(r, 40000)).toBeUndefined();
    fp.sync();
    expect(k.table.size).toBe(0);
    expect(fp.status()).toMatchObject({ flows: 0, withdrawn: 1 });
  });
});

describe('flow fast path: withdrawn', () => {
  it('04 a FIN the kernel judged in window passes the engine\'s stale ends, and the flow comes back to the engine', () => {
    const { r, k, fp } = bench();
    const { alias } = connect(r, fp);
    // The kernel moved 256 MiB down and 512 MiB up that the engine never saw;
    // the server's FIN is far past the engine's end (the program judged it and
    // deleted its own entry: the fake does the same).
    const seq = 5001 + 0x10000000;
    k.end(outKey(H1, 40000), 1001 + 0x20000000);
    k.remove(inKey(alias));
    ok(r.in(tcp(S1, 80, WAN, alias, FIN | ACK, [], { seq, ack: 1001 })));
    fp.sync();
    expect(k.table.size).toBe(0);
    expect(fp.status().withdrawn).toBe(1);
    // Back with the engine, it judges again: a RST far from the end it learned from that FIN is dropped,
    ok(r.in(tcp(S1, 80, WAN, alias, ACK, [], { seq: seq + 1, ack: 1001 })));
    expect(r.in(tcp(S1, 80, WAN, alias, RST, [], { seq: seq + 0x10000000 }))).toBeNull();
    // and the LAN host's FIN is in window at the end the kernel reached, which the engine took when the flow came back.
    expect(r.out(tcp(H1, 40000, S1, 80, FIN | ACK, [], { seq: 1001 + 0x20000000 + 0x10000000, ack: seq + 1 }))).toBeNull();
    ok(r.out(tcp(H1, 40000, S1, 80, FIN | ACK, [], { seq: 1001 + 0x20000000, ack: seq + 1 })));
    expect(flowOf(r, 40000)!.state).toBe('TIME_WAIT');
  });

  it('05 conntrack -D, a new WAN address, the option switched off', () => {
    const { r, k, fp } = bench();
    connect(r, fp, H1, 40000);
    r.engine.deleteEntry(flowOf(r, 40000)!);
    fp.sync();
    expect(k.table.size).toBe(0);

    connect(r, fp, H1, 40001);
    expect(k.table.size).toBe(2);
    const other = '203.0.113.9';
    r.engine.x.setWanAddress(ipToRaw(other), r.now);
    fp.setWan(ipToRaw(other));
    fp.sync();
    expect(k.table.size).toBe(0);

    const b = bench();
    connect(b.r, b.fp, H1, 40002);
    expect(b.k.table.size).toBe(2);
    b.fp.close();
    expect(b.k.closed).toBe(true);
    // The engine forgot the mark: with the option on again, the flow's next packet offers it anew.
    b.r.engine.x.setFastPath(1);
    ok(b.r.out(tcp(H1, 40002, S1, 80, PSH | ACK, [1], { seq: 1001, ack: 5001 })));
    expect(b.r.engine.x.fastPathPending()).toBe(1);
  });

  it('06 a record freed and reused for another flow is never credited or kept as the old one', () => {
    const { r, k, fp } = bench();
    const { alias } = connect(r, fp, H1, 40000);
    k.count(inKey(alias), 5, 500);
    r.engine.deleteEntry(flowOf(r, 40000)!);
    // The same record now holds another host's flow (not yet established, so not offered).
    ok(r.out(tcp(H2, 43000, S1, 80, SYN, [], { seq: 1 })));
    fp.sync();
    expect(k.table.size).toBe(0);
    expect(flowOf(r, 43000)!.packetsIn).toBe(0);
  });
});

describe('flow fast path: one host cannot fill it, a full table keeps flows in the engine', () => {
  it('07 a LAN host holds at most a quarter of the table; another host still gets in', () => {
    const { r, k, fp } = bench(8);
    for (let p = 40000; p < 40004; p++) connect(r, fp, H1, p);
    expect(fp.status()).toMatchObject({ flows: 2, hostCapped: 2 });
    connect(r, fp, H2, 40000);
    expect(fp.status().flows).toBe(3);
    expect(k.table.has(outKey(H2, 40000).toString('hex'))).toBe(true);
  });

  it('08 a table the kernel refuses leaves the flow with the engine, judged by it, and offered again later', () => {
    const { r, k, fp } = bench();
    k.full = true;
    const { alias } = connect(r, fp);
    expect(fp.status()).toMatchObject({ flows: 0, full: 1 });
    // Not marked: the engine still judges its RSTs (this one is far out of window).
    expect(r.in(tcp(S1, 80, WAN, alias, RST, [], { seq: 5001 + 0x10000000 }))).toBeNull();
    k.full = false;
    ok(r.out(tcp(H1, 40000, S1, 80, PSH | ACK, [1], { seq: 1001, ack: 5001 })));
    fp.take();
    expect(k.table.size).toBe(2);
  });
});

describe('flow fast path: UDP and ICMP echo', () => {
  it('09 a UDP flow is offered at its 8th packet (a DNS query never is); IKE (500) never, NAT-T (4500, plain NAPT) too', () => {
    const { r, k, fp } = bench();
    const sends: number[] = [];
    let alias = 0;
    for (let i = 0; i < 8; i++) {
      alias = parse(ok(r.out(udp(H1, 5000, S1, 9000)))).sport;
      sends.push(r.engine.x.fastPathPending());
      fp.take();
    }
    expect(sends).toEqual([0, 0, 0, 0, 0, 0, 0, 1]);
    const out = k.table.get(keyOf(ipToRaw(H1), ipToRaw(S1), 5000, 9000, 17).toString('hex'))!;
    const inb = k.table.get(keyOf(ipToRaw(S1), ipToRaw(WAN), 9000, alias, 17).toString('hex'))!;
    expect([...out.subarray(0, 4)]).toEqual([203, 0, 113, 1]);
    expect([out.readUInt16BE(8), out.readUInt16BE(10)]).toEqual([alias, 9000]);
    expect([...inb.subarray(4, 8)]).toEqual([192, 168, 1, 10]);
    expect([inb.readUInt16BE(8), inb.readUInt16BE(10)]).toEqual([9000, 5000]);
    // No window for UDP: win, end and flags are 0.
    expect([out.readUInt32LE(20), out.readUInt32LE(24), out.readUInt32LE(28)]).toEqual([0, 0, 0]);
    for (const [sp, dp] of [[5001, 500], [500, 5002]] as const) {
      for (let i = 0; i < 10; i++) r.out(udp(H1, sp, S1, dp));
      fp.take();
    }
    expect(fp.status().flows).toBe(1);
    for (let i = 0; i < 8; i++) r.out(udp(H1, 4500, S1, 4500));
    fp.take();
    expect(fp.status().flows).toBe(2);
  });

  it('10 what the kernel carries back makes the UDP flow answered (replied flows are never evicted), and keeps it alive', () => {
    const { r, k, fp } = bench();
    let alias = 0;
    for (let i = 0; i < 8; i++) alias = parse(ok(r.out(udp(H1, 5000, S1, 9000)))).sport;
    fp.take();
    expect(flowOf(r, 5000)).toBeUndefined(); // flowOf looks for TCP
    const udpFlow = () => r.engine.flows(WAN, r.now).find((f) => f.lanPort === 5000 && f.proto === 'udp');
    expect(udpFlow()!.replied).toBe(false);
    k.count(keyOf(ipToRaw(S1), ipToRaw(WAN), 9000, alias, 17), 3, 300);
    fp.sync();
    expect(udpFlow()).toMatchObject({ replied: true, packetsIn: 3 });
    // udp_timeout 300 s: refreshed by the kernel's counts.
    for (let i = 0; i < 3; i++) {
      r.advance(200);
      k.count(keyOf(ipToRaw(H1), ipToRaw(S1), 5000, 9000, 17), 1, 100);
      fp.sync();
    }
    expect(udpFlow()).toBeDefined();
    expect(fp.status().flows).toBe(1);
  });

  it('11 an ICMP echo is offered once answered: requests out by the identifier, replies in (flags bit 2)', () => {
    const { r, k, fp } = bench();
    const id = parse(ok(r.out(icmpEcho(H1, S1, 8, 0x1234, 1)))).icmpId;
    fp.take();
    expect(k.table.size).toBe(0);
    ok(r.in(icmpEcho(S1, WAN, 0, id, 1)));
    fp.take();
    expect(k.table.size).toBe(2);
    const out = k.table.get(keyOf(ipToRaw(H1), ipToRaw(S1), 0x1234, 0, 1).toString('hex'))!;
    const inb = k.table.get(keyOf(ipToRaw(S1), ipToRaw(WAN), id, 0, 1).toString('hex'))!;
    expect([...out.subarray(0, 4)]).toEqual([203, 0, 113, 1]);
    expect(out.readUInt16BE(8)).toBe(id);
    expect(out.readUInt32LE(28)).toBe(0);
    expect([...inb.subarray(4, 8)]).toEqual([192, 168, 1, 10]);
    expect(inb.readUInt16BE(8)).toBe(0x1234);
    expect(inb.readUInt32LE(28)).toBe(4);
  });
});

describe('flow fast path: the timer\'s rounds', () => {
  it('12 a round syncs a slice of the flows; the walk goes through every one, and one withdrawn meanwhile leaves at the next', () => {
    const { r, k, fp } = bench();
    k.batch = 4; // entries a read hands over: two flows' (the kernel: whole buckets)
    const aliases = [40000, 40001, 40002, 40003, 40004].map((p) => connect(r, fp, H1, p).alias);
    expect(fp.status().flows).toBe(5);
    for (const a of aliases) k.count(inKey(a), 1, 100);
    const credited = () => [40000, 40001, 40002, 40003, 40004].filter((p) => flowOf(r, p)?.packetsIn === 2).length;
    fp.syncSlice(2);
    expect(credited()).toBe(2);
    r.engine.deleteEntry(flowOf(r, 40000)!);
    fp.syncSlice(2);
    fp.syncSlice(2);
    // Every live flow credited once; the deleted one was met before it went, so it is still held.
    expect(credited()).toBe(4);
    expect(fp.status().flows).toBe(5);
    fp.sync();
    expect(fp.status().flows).toBe(4);
    expect(k.table.size).toBe(8);
  });

  it('12b a walk reads the table in batches, one call for many entries; however they cut a flow\'s two entries, it is credited once', () => {
    const { r, k, fp } = bench();
    const ports = [41000, 41001, 41002, 41003, 41004, 41005, 41006];
    const aliases = ports.map((p) => connect(r, fp, H1, p).alias);
    k.batch = 3; // odd: most flows' entries fall into two batches
    ports.forEach((p, i) => { k.count(outKey(H1, p), i + 1, 1000 * (i + 1)); k.count(inKey(aliases[i]!), 2 * (i + 1), 500); });
    const before = ports.map((p) => ({ ...flowOf(r, p)! }));
    k.batchReads = 0;
    fp.sync();
    expect(k.batchReads).toBe(Math.ceil((2 * ports.length) / 3));
    ports.forEach((p, i) => {
      const f = flowOf(r, p)!;
      expect(f.packetsOut - before[i]!.packetsOut).toBe(i + 1);
      expect(f.packetsIn - before[i]!.packetsIn).toBe(2 * (i + 1));
    });
    // A second walk with nothing moved credits nothing more.
    fp.sync();
    ports.forEach((p, i) => expect(flowOf(r, p)!.packetsIn - before[i]!.packetsIn).toBe(2 * (i + 1)));
  });

  it('12c a flow whose entry the walk does not meet is settled at the walk\'s end: what the other direction moved is credited, and a deleted flow withdrawn', () => {
    const { r, k, fp } = bench();
    const a = connect(r, fp, H1, 42000).alias;
    const b = connect(r, fp, H1, 42001).alias;
    k.count(inKey(a), 5, 5000);
    const before = flowOf(r, 42000)!.packetsIn;
    k.table.delete(outKey(H1, 42000).toString('hex')); // the out entry gone from the kernel's table
    r.engine.deleteEntry(flowOf(r, 42001)!);
    k.table.delete(outKey(H1, 42001).toString('hex'));
    k.table.delete(inKey(b).toString('hex')); // neither entry met at all
    fp.sync();
    expect(flowOf(r, 42000)!.packetsIn - before).toBe(5);
    expect(fp.status().flows).toBe(1);
    expect(fp.status().withdrawn).toBe(1);
  });
});

describe('flow fast path: ESP by SPI', () => {
  const ESP = 50, SPI_OUT = 0x11112222, SPI_IN = 0x33334444;
  const espKey = (src: string, dst: string, spi: number) => keyOf(ipToRaw(src), ipToRaw(dst), spi >>> 16, spi & 0xffff, ESP);
  const outK = (host = H1, spi = SPI_OUT) => espKey(host, S1, spi).toString('hex');
  const inK = (spi = SPI_IN) => espKey(S1, WAN, spi).toString('hex');
  const sa = (r: TestRouter, host = H1) => r.vpnEntries().find((e) => e.proto === 'esp' && e.lan === host);
  /** H1's association with S1: its first packet, the server's answer (which binds it), `take` after each. */
  function bind(r: TestRouter, fp: FastPath, host = H1, spiOut = SPI_OUT, spiIn = SPI_IN): number[] {
    const pending: number[] = [];
    ok(r.out(esp(host, S1, spiOut)));
    pending.push(r.engine.x.fastPathPending()); fp.take();
    ok(r.in(esp(S1, WAN, spiIn)));
    pending.push(r.engine.x.fastPathPending()); fp.take();
    return pending;
  }
  function espBench(capacity = 64) {
    const b = bench(capacity);
    b.r.vpn({ esp: 100 });
    return b;
  }

  it('13 a bound association is offered when the server\'s SPI binds it, as two entries with the SPIs unchanged', () => {
    const { r, k, fp } = espBench();
    // Outstanding (no inbound SPI yet): nothing to offer; bound by the answer: offered.
    expect(bind(r, fp)).toEqual([0, 1]);
    expect([...k.table.keys()].sort()).toEqual([outK(), inK()].sort());
    const out = k.table.get(outK())!, inb = k.table.get(inK())!;
    // Out: from the WAN address, the SPI as it was; in from LAN, out to WAN. No window, no flags.
    expect([...out.subarray(0, 8)]).toEqual([203, 0, 113, 1, 198, 51, 100, 7]);
    expect(out.readUInt32BE(8)).toBe(SPI_OUT);
    expect([out.readUInt32LE(12), out.readUInt32LE(16), out.readUInt32LE(20), out.readUInt32LE(28)]).toEqual([LAN_IF, WAN_IF, 0, 0]);
    // In: to the LAN host that association belongs to; in from WAN, out to LAN.
    expect([...inb.subarray(0, 8)]).toEqual([198, 51, 100, 7, 192, 168, 1, 10]);
    expect(inb.readUInt32BE(8)).toBe(SPI_IN);
    expect([inb.readUInt32LE(12), inb.readUInt32LE(16)]).toEqual([WAN_IF, LAN_IF]);
    expect(fp.status()).toMatchObject({ flows: 1, offloaded: 1 });
    // Later packets offer nothing more.
    ok(r.out(esp(H1, S1, SPI_OUT, 2)));
    ok(r.in(esp(S1, WAN, SPI_IN, 2)));
    expect(r.engine.x.fastPathPending()).toBe(0);
  });

  it('14 the kernel\'s packets count for the association and keep it (and its IKE peer state) alive; idle, it expires and is withdrawn', () => {
    const { r, k, fp } = espBench();
    bind(r, fp);
    const before = sa(r)!.packetsOut;
    const c0 = r.engine.counters();
    k.count(Buffer.from(outK(), 'hex'), 7, 700);
    k.count(Buffer.from(inK(), 'hex'), 5, 500);
    fp.sync();
    expect(sa(r)!.packetsOut - before).toBe(12);
    const c1 = r.engine.counters();
    expect([c1.passInside! - c0.passInside!, c1.passOutside! - c0.passOutside!, c1.passBytesInside! - c0.passBytesInside!]).toEqual([7, 5, 700]);
    fp.sync();
    expect(sa(r)!.packetsOut - before).toBe(12);
    // esp_timeout 100 s: alive for 240 s on what the kernel moved alone.
    for (let i = 0; i < 4; i++) {
      r.advance(60);
      k.count(Buffer.from(inK(), 'hex'), 1, 100);
      fp.sync();
    }
    expect(sa(r)).toMatchObject({ state: 'ESTABLISHED', spiIn: '0x33334444' });
    expect(fp.status().flows).toBe(1);
    r.advance(120);
    fp.sync();
    expect(sa(r)).toBeUndefined();
    expect(k.table.size).toBe(0);
    expect(fp.status()).toMatchObject({ flows: 0, withdrawn: 1 });
  });

  it('15 withdrawn by conntrack -D, a new WAN address and the option off; a new association on the same record is not the old one', () => {
    const { r, k, fp } = espBench();
    bind(r, fp);
    k.count(Buffer.from(inK(), 'hex'), 9, 900);
    r.engine.deleteEntry(sa(r)!);
    // The freed record is taken at once by another host's association, still
    // outstanding: the old one's kernel counts are not credited to it.
    ok(r.out(esp(H2, S1, 0x55556666)));
    expect(sa(r, H2)!.id).toBe('esp:0');
    fp.sync();
    expect(k.table.size).toBe(0);
    expect(sa(r, H2)).toMatchObject({ state: 'OUTSTANDING', packetsOut: 0 });

    const b = espBench();
    bind(b.r, b.fp);
    const other = '203.0.113.9';
    b.r.engine.x.setWanAddress(ipToRaw(other), b.r.now);
    b.fp.setWan(ipToRaw(other));
    b.fp.sync();
    expect(b.k.table.size).toBe(0);

    const c = espBench();
    bind(c.r, c.fp);
    c.fp.close();
    c.r.engine.x.setFastPath(1);
    ok(c.r.out(esp(H1, S1, SPI_OUT, 3)));
    expect(c.r.engine.x.fastPathPending()).toBe(1);
  });

  it('16 attacker: the kernel holds only the bound keys; another host\'s packets on that SPI, a spoofed source, a forward\'s SAs stay with the engine', () => {
    const { r, k, fp } = espBench();
    bind(r, fp);
    // H2 reuses H1's outbound SPI toward S1: not H2's key, and the engine refuses it.
    expect(k.table.has(outK(H2))).toBe(false);
    expect(r.out(esp(H2, S1, SPI_OUT))).toBeNull();
    expect(r.drop('esp_serialized')).toBe(1);
    // The server's SPI from another internet address is no key of the kernel's (its source is part of the key).
    expect(k.table.has(espKey('198.51.100.66', WAN, SPI_IN).toString('hex'))).toBe(false);
    // A provisional SA taking a second inbound SPI keeps its two kernel entries as they were; the new SPI is the engine's.
    ok(r.in(esp(S1, WAN, 0x77778888)));
    fp.take();
    expect([...k.table.keys()].sort()).toEqual([outK(), inK()].sort());
    expect(parse(ok(r.in(esp(S1, WAN, 0x77778888, 2)))).dst).toBe(H1);
  });

  it('16b a server behind the router (redirect proto esp): its outbound SA is one entry from its second packet; an inbound SPI once the server has answered that peer, never before; the kernel\'s packets from the server still answer the peer\'s next SPI', () => {
    const { r, k, fp } = espBench();
    r.protoForward(ESP, H2);
    const SPI_A = 0x9999aaaa, SPI_B = 0xbbbbcccc, SPI_C = 0xddddeeee;
    // The internet sprays SPIs at the WAN address (spoofed or not): delivered to the server, never offered.
    for (let i = 1; i <= 5; i++) {
      expect(parse(ok(r.in(esp(S1, WAN, SPI_A, i)))).dst).toBe(H2);
      ok(r.in(esp('198.51.100.66', WAN, 0x1000 + i)));
    }
    fp.take();
    expect(k.table.size).toBe(0);
    // The server answers S1: its first packet opens its SA (and answers S1's SPI A), its second offers it.
    expect(parse(ok(r.out(esp(H2, S1, SPI_B)))).src).toBe(WAN);
    fp.take();
    expect(k.table.size).toBe(0);
    ok(r.out(esp(H2, S1, SPI_B, 2)));
    fp.take();
    expect([...k.table.keys()]).toEqual([espKey(H2, S1, SPI_B).toString('hex')]);
    const out = k.table.get(espKey(H2, S1, SPI_B).toString('hex'))!;
    expect([...out.subarray(0, 8)]).toEqual([203, 0, 113, 1, 198, 51, 100, 7]);
    expect([out.readUInt32LE(12), out.readUInt32LE(16)]).toEqual([LAN_IF, WAN_IF]);
    // S1's SPI A, answered now: offered by its next packet, one entry to the server.
    ok(r.in(esp(S1, WAN, SPI_A, 6)));
    fp.take();
    const inb = k.table.get(espKey(S1, WAN, SPI_A).toString('hex'))!;
    expect([...inb.subarray(0, 8)]).toEqual([198, 51, 100, 7, 192, 168, 1, 11]);
    expect([inb.readUInt32LE(12), inb.readUInt32LE(16)]).toEqual([WAN_IF, LAN_IF]);
    expect(k.table.size).toBe(2);
    expect(fp.status().flows).toBe(2);
    // The other source's SPIs stay unanswered and the engine's.
    ok(r.in(esp('198.51.100.66', WAN, 0x1001, 9)));
    fp.take();
    expect(k.table.size).toBe(2);
    // A new SPI from S1 (a rekey) while the server's packets go by the kernel: unanswered, not offered...
    ok(r.in(esp(S1, WAN, SPI_C)));
    fp.take();
    expect(k.table.size).toBe(2);
    // ...until the kernel's packets from the server, credited at a sync, answer it (as the server's own packets would).
    r.advance(6);
    k.count(espKey(H2, S1, SPI_B), 50, 5000);
    fp.sync();
    expect(fp.status().flows).toBe(2);
    ok(r.in(esp(S1, WAN, SPI_C, 2)));
    fp.take();
    expect(k.table.has(espKey(S1, WAN, SPI_C).toString('hex'))).toBe(true);
    // Each SA is credited and withdrawn alone: conntrack -D of the outbound one leaves the inbound ones.
    r.engine.deleteEntry(r.vpnEntries().find((e) => e.proto === 'esp' && e.spiOut === '0xbbbbcccc')!);
    fp.sync();
    expect(k.table.has(espKey(H2, S1, SPI_B).toString('hex'))).toBe(false);
    expect(k.table.size).toBe(2);
  });

  it('17 a snapshot of an offloaded association restores (the mark is this run\'s) and is offered again by its next packet', () => {
    const { r, fp } = espBench();
    bind(r, fp);
    const c = capture(r.engine, ipToRaw(WAN), r.now);
    const n = new TestRouter({ seed: 999 });
    n.vpn({ esp: 100 });
    const res = restoreInto(n.engine, decode(encode(c.header, c.sections)), ipToRaw(WAN));
    n.now = res.clockMs;
    expect(res.entries).toMatchObject({ esp: 1 });
    n.engine.x.setFastPath(1);
    expect(parse(ok(n.in(esp(S1, WAN, SPI_IN, 5)))).dst).toBe(H1);
    expect(n.engine.x.fastPathPending()).toBe(1);
  });
});

describe('flow fast path: PPTP\'s GRE by Call ID', () => {
  const GRE = 47, SERVER_CALL = 0x4d2;
  const greKey = (src: string, dst: string, callId: number) => keyOf(ipToRaw(src), ipToRaw(dst), 0, callId, GRE).toString('hex');
  const call = (r: TestRouter, host = H1) => r.vpnEntries().find((e) => e.proto === 'gre' && e.lan === host);
  /** A call from `host` with its own Call ID 7, answered by the server (its Call ID `serverCall`); the alias. */
  function answered(r: TestRouter, host = H1, sport = 41000, serverCall = SERVER_CALL): number {
    const c = pptpCall(r, host, S1, sport, 7);
    ok(r.in(tcp(S1, 1723, WAN, c.wanPort, PSH | ACK, pptpMsg(8, serverCall, c.alias))));
    return c.alias;
  }
  function greBench() {
    const b = bench();
    b.r.vpn({ gre: 100 });
    return b;
  }

  it('18 an answered call\'s GRE is offered on its first packet: out unchanged, in with the alias written back to the host\'s Call ID', () => {
    const { r, k, fp } = greBench();
    const c = pptpCall(r, H1, S1, 41000, 7);
    // The server's Call ID not known yet: the engine has no call for its GRE, and nothing is offered.
    expect(r.out(gre(H1, S1, SERVER_CALL))).toBeNull();
    fp.take();
    expect(k.table.size).toBe(0);
    ok(r.in(tcp(S1, 1723, WAN, c.wanPort, PSH | ACK, pptpMsg(8, SERVER_CALL, c.alias))));
    ok(r.out(gre(H1, S1, SERVER_CALL)));
    expect(r.engine.x.fastPathPending()).toBe(1);
    fp.take();
    expect([...k.table.keys()].sort()).toEqual([greKey(H1, S1, SERVER_CALL), greKey(S1, WAN, c.alias)].sort());
    const out = k.table.get(greKey(H1, S1, SERVER_CALL))!, inb = k.table.get(greKey(S1, WAN, c.alias))!;
    expect([...out.subarray(0, 8)]).toEqual([203, 0, 113, 1, 198, 51, 100, 7]);
    expect([out.readUInt16BE(8), out.readUInt16BE(10)]).toEqual([0, SERVER_CALL]);
    expect([out.readUInt32LE(12), out.readUInt32LE(16)]).toEqual([LAN_IF, WAN_IF]);
    expect([...inb.subarray(0, 8)]).toEqual([198, 51, 100, 7, 192, 168, 1, 10]);
    expect([inb.readUInt16BE(8), inb.readUInt16BE(10)]).toEqual([0, 7]);
    expect([inb.readUInt32LE(12), inb.readUInt32LE(16)]).toEqual([WAN_IF, LAN_IF]);
    // What the engine itself does with the server's packet: the same rewrite.
    const back = ok(r.in(gre(S1, WAN, c.alias)));
    expect([parse(back).dst, greCallId(back)]).toEqual([H1, 7]);
    expect(r.engine.x.fastPathPending()).toBe(0);
  });

  it('19 the kernel\'s packets count for the call each way and keep it alive; a hang-up on the control connection withdraws it, and the engine carries the lingering GRE', () => {
    const { r, k, fp } = greBench();
    const alias = answered(r);
    ok(r.out(gre(H1, S1, SERVER_CALL)));
    fp.take();
    const before = call(r)!;
    k.count(Buffer.from(greKey(H1, S1, SERVER_CALL), 'hex'), 4, 400);
    k.count(Buffer.from(greKey(S1, WAN, alias), 'hex'), 6, 600);
    const c0 = r.engine.counters();
    fp.sync();
    expect(r.engine.counters().passBytesOutside! - c0.passBytesOutside!).toBe(600);
    expect([call(r)!.packetsOut - before.packetsOut, call(r)!.packetsIn - before.packetsIn]).toEqual([4, 6]);
    // gre_timeout 100 s: alive for 240 s on the kernel's packets alone.
    for (let i = 0; i < 4; i++) {
      r.advance(60);
      k.count(Buffer.from(greKey(S1, WAN, alias), 'hex'), 1, 100);
      fp.sync();
    }
    expect(call(r)).toMatchObject({ state: 'CALL' });
    expect(k.table.size).toBe(2);
    // The host hangs up (Call-Disconnect-Notify with its own Call ID): the next round withdraws it.
    ok(r.out(tcp(H1, 41000, S1, 1723, PSH | ACK, pptpMsg(13, 7))));
    fp.sync();
    expect(k.table.size).toBe(0);
    expect(call(r)).toMatchObject({ state: 'DISCONNECTED' });
    expect(parse(ok(r.in(gre(S1, WAN, alias)))).dst).toBe(H1);
    expect(r.engine.x.fastPathPending()).toBe(0);
  });

  it('20 attacker and neighbours: two hosts with the same Call ID to one server get apart keys; conntrack -D and a snapshot restore drop the mark', () => {
    const { r, k, fp } = greBench();
    const a1 = answered(r, H1, 41000, 0x100);
    const a2 = answered(r, H2, 41001, 0x200);
    expect(a1).not.toBe(a2);
    ok(r.out(gre(H1, S1, 0x100)));
    ok(r.out(gre(H2, S1, 0x200)));
    fp.take();
    expect(k.table.get(greKey(S1, WAN, a1))!.subarray(4, 8)).toEqual(Buffer.from([192, 168, 1, 10]));
    expect(k.table.get(greKey(S1, WAN, a2))!.subarray(4, 8)).toEqual(Buffer.from([192, 168, 1, 11]));
    // H2 sending on H1's server Call ID is no key of the kernel's, and the engine refuses it.
    expect(k.table.has(greKey(H2, S1, 0x100))).toBe(false);
    expect(r.out(gre(H2, S1, 0x100))).toBeNull();
    const c = capture(r.engine, ipToRaw(WAN), r.now);
    r.engine.deleteEntry(call(r, H1)!);
    fp.sync();
    expect(k.table.has(greKey(S1, WAN, a1))).toBe(false);
    expect(k.table.has(greKey(S1, WAN, a2))).toBe(true);
    const n = new TestRouter({ seed: 4242 });
    n.vpn({ gre: 100 });
    const res = restoreInto(n.engine, decode(encode(c.header, c.sections)), ipToRaw(WAN));
    n.now = res.clockMs;
    expect(res.entries).toMatchObject({ calls: 2 });
    n.engine.x.setFastPath(1);
    expect(parse(ok(n.in(gre(S1, WAN, a2)))).dst).toBe(H2);
    expect(n.engine.x.fastPathPending()).toBe(1);
  });
});
