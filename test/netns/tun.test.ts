// Real TUN devices, inside a network namespace created (and deleted) here.
//
// The vitest worker cannot enter a namespace, so each scenario runs in a
// child `ip netns exec NS node child.mjs`. The child imports the real
// src/tun/tun.ts (TunDevice over the built addon) through a tiny loader hook
// that transpiles .ts with the project's own `typescript`, so the wrapper, the
// addon and the libuv poller are all exercised, not a copy of them.
// The children load it from a world-readable copy of the checkout's
// package.json, src/, addon, node-gyp-build and typescript
// (test/helpers/unprivileged.ts): one of them runs as nobody, who may not be
// able to enter the directory the checkout sits in.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { skipUnless } from '../helpers/prereq.js';
import { readableCopy, type ReadableCopy } from '../helpers/unprivileged.js';
import { READER_QUEUE, READER_QUEUE_HOST_QUEUES, TunDevice } from '../../src/tun/tun.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const ADDON = path.join(ROOT, 'build', 'Release', 'vpnmasq_tun.node');
const NS = `vmtun-${process.pid}`;

// The copy the children run from; child() writes each script into it, so
// this names the copy's src/tun/tun.ts.
let copy: ReadableCopy | undefined;
const TUN_TS = './src/tun/tun.ts';

// Loader hook: .ts -> ESM JavaScript via typescript.transpileModule.
const hooks = (root: string) => `
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
const ts = createRequire(${JSON.stringify(path.join(root, 'package.json'))})('typescript');
export async function load(url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context);
  const source = ts.transpileModule(await readFile(new URL(url), 'utf8'), {
    fileName: url,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  return { format: 'module', source, shortCircuit: true };
}
`;

// Scenario 1 (root, in NS): open t0, read a UDP packet the kernel routes to
// it, write a crafted one back, close. Prints one JSON line. It never calls
// process.exit: if the poller kept the loop alive after close(), the child
// would hang and the test would time out.
const IO_CHILD = `
import { TunDevice, writeDrops } from ${JSON.stringify(TUN_TS)};
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';

const SLOT = 2048, MAX = 16, SLOT_BASE = 0, LEN_BASE = SLOT * MAX, VERDICT_BASE = LEN_BASE + 4 * MAX;
const mem = new WebAssembly.Memory({ initial: 1 }).buffer; // what the engine will hand us
const bytes = new Uint8Array(mem);
const dv = new DataView(mem);
const ip4 = (p, o) => Array.from(p.subarray(o, o + 4)).join('.');
const out = {};

const dev = TunDevice.open('t0');
out.name = dev.name;
execFileSync('ip', ['addr', 'add', '10.200.0.1/24', 'dev', 't0']);
execFileSync('ip', ['link', 'set', 't0', 'up']);

// --- kernel -> readBatch -------------------------------------------------
const tx = dgram.createSocket('udp4');
out.read = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no UDP packet seen on t0 within 5 s')), 5000);
  let wakeups = 0;
  dev.onReadable(() => {
    wakeups++;
    const n = dev.readBatch(mem, SLOT_BASE, SLOT, LEN_BASE, MAX);
    for (let i = 0; i < n; i++) {
      const len = dv.getUint32(LEN_BASE + 4 * i, true);
      const p = bytes.subarray(SLOT_BASE + i * SLOT, SLOT_BASE + i * SLOT + len);
      // other traffic (IPv6 router solicitations, MLD) may show up too
      if (p[0] >> 4 !== 4 || p[9] !== 17 || ip4(p, 16) !== '10.200.0.2') continue;
      const ihl = (p[0] & 15) * 4;
      clearTimeout(timer);
      resolve({
        n, len, wakeups, version: p[0] >> 4, ihl, protocol: p[9],
        totalLength: (p[2] << 8) | p[3], src: ip4(p, 12), dst: ip4(p, 16),
        dstPort: (p[ihl + 2] << 8) | p[ihl + 3],
        payload: Buffer.from(p.subarray(ihl + 8)).toString(),
      });
    }
  });
  tx.send('hello-tun', 9999, '10.200.0.2', (err) => err && reject(err));
});
tx.close();

// --- writeBatch -> kernel ------------------------------------------------
function sum16(buf, start, end, acc = 0) {
  for (let i = start; i < end; i += 2) acc += (buf[i] << 8) | (i + 1 < end ? buf[i + 1] : 0);
  return acc;
}
const fold = (acc) => { while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16); return ~acc & 0xffff; };
function udp4(slot, src, dst, sport, dport, text) {
  const payload = Buffer.from(text);
  const total = 20 + 8 + payload.length;
  const p = bytes.subarray(SLOT_BASE + slot * SLOT, SLOT_BASE + slot * SLOT + total);
  p.fill(0);
  p.set([0x45, 0, total >> 8, total & 255, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, ...src, ...dst]);
  const ipsum = fold(sum16(p, 0, 20));
  p[10] = ipsum >> 8; p[11] = ipsum & 255;
  const ulen = 8 + payload.length;
  p.set([sport >> 8, sport & 255, dport >> 8, dport & 255, ulen >> 8, ulen & 255, 0, 0], 20);
  p.set(payload, 28);
  // pseudo-header: src, dst, zero+proto, udp length
  let acc = sum16(p, 12, 20) + 17 + ulen;
  let usum = fold(sum16(p, 20, total, acc));
  if (usum === 0) usum = 0xffff;
  p[26] = usum >> 8; p[27] = usum & 255;
  dv.setUint32(LEN_BASE + 4 * slot, total, true);
}

const rx = dgram.createSocket('udp4');
await new Promise((r) => rx.bind(0, '10.200.0.1', r));
const port = rx.address().port;
const received = [];
rx.on('message', (msg, rinfo) => received.push({ text: msg.toString(), from: rinfo.address + ':' + rinfo.port }));

const WANT = 1;
udp4(0, [10, 200, 0, 2], [10, 200, 0, 1], 4000, port, 'decoy: verdict 0, must not arrive');
bytes[VERDICT_BASE + 0] = 0;
udp4(1, [10, 200, 0, 2], [10, 200, 0, 1], 4242, port, 'from-the-engine');
bytes[VERDICT_BASE + 1] = WANT;
udp4(2, [10, 200, 0, 2], [10, 200, 0, 1], 4343, port, 'bad length: must be dropped');
dv.setUint32(LEN_BASE + 8, SLOT + 1, true);
bytes[VERDICT_BASE + 2] = WANT;

const drops0 = writeDrops();
const written = dev.writeBatch(mem, SLOT_BASE, SLOT, LEN_BASE, VERDICT_BASE, 3, WANT);
await new Promise((r) => setTimeout(r, 300));
rx.close();
out.write = { written, drops: writeDrops() - drops0, received };

// --- bounds and close ----------------------------------------------------
try { dev.readBatch(new ArrayBuffer(100), 0, SLOT, 0, 1); out.rangeError = null; }
catch (e) { out.rangeError = e.constructor.name + ': ' + e.message; }
dev.close();
dev.close();
try { execFileSync('ip', ['link', 'show', 't0'], { stdio: 'ignore' }); out.goneAfterClose = false; }
catch { out.goneAfterClose = true; }
try { dev.readBatch(mem, 0, SLOT, LEN_BASE, 1); } catch (e) { out.afterClose = e.message; }
console.log(JSON.stringify(out));
`;

// Scenario 2 (in NS, without CAP_NET_ADMIN): opening must fail cleanly.
const EPERM_CHILD = `
import { TunDevice } from ${JSON.stringify(TUN_TS)};
try {
  TunDevice.open('t1');
  console.log(JSON.stringify({ opened: true }));
} catch (e) {
  console.log(JSON.stringify({ message: e.message, code: e.code, syscall: e.syscall }));
}
`;

// Scenario (root, in NS): TUNs with offloads. 'to0' asks for everything, 'to1'
// without USO (the fallback a kernel without USO gets). A UDP packet the
// kernel sends out of to0 arrives behind a virtio_net_hdr with NEEDS_CSUM (its
// checksum left to us: a partial sum); packets written back go out behind
// their own header: a zero header is a plain packet, a GSO header with
// gso_size 0 is refused by the kernel too (a counted write drop).
const OFFLOAD_CHILD = `
import { TunDevice, offloadNames, writeDrops } from ${JSON.stringify(TUN_TS)};
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';

const SLOT = 65600, MAX = 6, HDR = 16, LEN_BASE = SLOT * MAX, VERDICT_BASE = LEN_BASE + 4 * MAX, HDR_BASE = VERDICT_BASE + 64, LINK_BASE = HDR_BASE + HDR * MAX;
const mem = new WebAssembly.Memory({ initial: 8 }).buffer;
const bytes = new Uint8Array(mem);
const dv = new DataView(mem);
const out = {};
const dev = TunDevice.open('to0', { offload: true });
const dev1 = TunDevice.open('to1', { offload: true, uso: false });
const plain = TunDevice.open('to2');
out.to0 = { vnet: dev.vnet, offloads: offloadNames(dev.offloads) };
out.to1 = { vnet: dev1.vnet, offloads: offloadNames(dev1.offloads) };
out.to2 = { vnet: plain.vnet, offloads: plain.offloads };
try { dev.readBatch(mem, 0, SLOT, LEN_BASE, MAX); out.noHdrArgs = null; } catch (e) { out.noHdrArgs = e.message; }
execFileSync('ip', ['addr', 'add', '10.201.0.1/24', 'dev', 'to0']);
execFileSync('ip', ['link', 'set', 'to0', 'up']);
const tx = dgram.createSocket('udp4');
out.read = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no UDP packet seen on to0 within 5 s')), 5000);
  dev.onReadable(() => {
    const n = dev.readBatch(mem, 0, SLOT, LEN_BASE, MAX, HDR_BASE, HDR);
    for (let i = 0; i < n; i++) {
      const p = bytes.subarray(i * SLOT, i * SLOT + dv.getUint32(LEN_BASE + 4 * i, true));
      if (p[0] >> 4 !== 4 || p[9] !== 17) continue;
      clearTimeout(timer);
      const h = HDR_BASE + i * HDR;
      resolve({ len: p.length, first: p[0], flags: bytes[h], gsoType: bytes[h + 1],
        csumStart: dv.getUint16(h + 6, true), csumOffset: dv.getUint16(h + 8, true) });
    }
  });
  tx.send('hello-vnet', 9999, '10.201.0.2', (err) => err && reject(err));
});
tx.close();

function udp4(slot, sport, dport, text) {
  const payload = Buffer.from(text);
  const total = 28 + payload.length;
  const p = bytes.subarray(slot * SLOT, slot * SLOT + total);
  p.fill(0);
  p.set([0x45, 0, total >> 8, total & 255, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 201, 0, 2, 10, 201, 0, 1]);
  let a = 0; for (let i = 0; i < 20; i += 2) a += (p[i] << 8) | p[i + 1];
  while (a > 0xffff) a = (a & 0xffff) + (a >>> 16);
  p[10] = (~a >> 8) & 255; p[11] = ~a & 255;
  p.set([sport >> 8, sport & 255, dport >> 8, dport & 255, 0, 8 + payload.length, 0, 0], 20); // UDP checksum 0: none
  p.set(payload, 28);
  dv.setUint32(LEN_BASE + 4 * slot, total, true);
  bytes[VERDICT_BASE + slot] = 1;
}
const rx = dgram.createSocket('udp4');
await new Promise((r) => rx.bind(0, '10.201.0.1', r));
const port = rx.address().port;
const received = [];
rx.on('message', (msg) => received.push(msg.toString()));
bytes.fill(0, HDR_BASE, HDR_BASE + HDR * MAX);
udp4(0, 4000, port, 'plain-behind-zero-header');
udp4(1, 4001, port, 'gso-size-zero: refused');
bytes[HDR_BASE + HDR + 0] = 1; bytes[HDR_BASE + HDR + 1] = 1; // NEEDS_CSUM, GSO_TCPV4 on UDP, gso_size 0
dv.setUint16(HDR_BASE + HDR + 6, 20, true); dv.setUint16(HDR_BASE + HDR + 8, 6, true);
const drops0 = writeDrops();
out.written = dev.writeBatch(mem, 0, SLOT, LEN_BASE, VERDICT_BASE, 2, 1, HDR_BASE, HDR);
await new Promise((r) => setTimeout(r, 300));
out.writeDrops = writeDrops() - drops0;
out.received = received.splice(0);

// GRO on write (linkBase): slot 0 leads a UDP GSO write with slots 1 and 2
// linked (their payloads from hdr_len on, gathered by writev); the kernel
// cuts it back into three datagrams. Slot 3 leads a chain that goes back to
// slot 1: refused before anything is written (a counted drop).
function ipSum(p) {
  p[10] = 0; p[11] = 0;
  let a = 0; for (let i = 0; i < 20; i += 2) a += (p[i] << 8) | p[i + 1];
  while (a > 0xffff) a = (a & 0xffff) + (a >>> 16);
  p[10] = (~a >> 8) & 255; p[11] = ~a & 255;
}
bytes.fill(0, HDR_BASE, HDR_BASE + HDR * MAX);
bytes.fill(0, LINK_BASE, LINK_BASE + 2 * MAX);
['seg-A1', 'seg-B2', 'seg-C3', 'bad-ch'].forEach((t, i) => udp4(i, 4002, port, t));
for (const lead of [0, 3]) {
  const p = bytes.subarray(lead * SLOT, lead * SLOT + 28);
  const total = 28 + 3 * 6, ulen = total - 20;
  p[2] = total >> 8; p[3] = total & 255; ipSum(p);
  p[24] = ulen >> 8; p[25] = ulen & 255;
  let s = 0x0ac9 + 0x0002 + 0x0ac9 + 0x0001 + 17 + ulen; // pseudo header, not inverted (NEEDS_CSUM)
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  p[26] = s >> 8; p[27] = s & 255;
  const h = HDR_BASE + lead * HDR;
  bytes[h] = 1; bytes[h + 1] = 5; dv.setUint16(h + 2, 28, true); dv.setUint16(h + 4, 6, true);
  dv.setUint16(h + 6, 20, true); dv.setUint16(h + 8, 6, true);
}
bytes[VERDICT_BASE + 1] = 2; bytes[VERDICT_BASE + 2] = 2;
dv.setUint16(LINK_BASE + 0, 1, true); dv.setUint16(LINK_BASE + 2, 2, true);
dv.setUint16(LINK_BASE + 6, 1, true); // slot 3 → slot 1: backwards
const drops1 = writeDrops();
out.gro = { written: dev.writeBatch(mem, 0, SLOT, LEN_BASE, VERDICT_BASE, 4, 1, HDR_BASE, HDR, LINK_BASE) };
await new Promise((r) => setTimeout(r, 300));
rx.close();
out.gro.drops = writeDrops() - drops1;
out.gro.received = received;
dev.close(); dev1.close(); plain.close();
console.log(JSON.stringify(out));
`;

// Scenario 4 (root, in NS): the reader's queue discipline (ReaderQueue).
// tq0 stops a batch at 3000 bytes; tq1 runs CoDel with a 1 µs target and a
// 1 ms interval over a ring holding 20 TCP SYNs and 40 UDP datagrams that
// nobody reads for longer than that: both are dropped at the head, each
// counted under its class. Then tq2 (same discipline, MTU 4000) is handed
// what the kernel's IP stack would never route to it, through a packet
// socket (python3): ICMP, ESP, GRE, a fragment, IPv6, a 1-byte and a 19-byte
// read, an IPv4 header claiming more than it has, and a 3000-byte packet
// larger than the 2048-byte slot, in rotation, 10 rounds; read one packet a
// batch, every one is either read whole (its own length) or dropped and
// counted under its class, the oversize ones as truncated reads.
const INJECT_PY = `
import socket, struct, sys
dev = sys.argv[1]
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)
def ip4(proto, n, frag=0):
    return struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + n, 1, frag, 64, proto, 0, bytes([10,204,0,1]), bytes([10,204,0,2])) + bytes(n)
kinds = [
    ('icmp', 0x0800, ip4(1, 16)),
    ('other', 0x0800, ip4(50, 16)),          # ESP
    ('other', 0x0800, ip4(47, 16)),          # GRE
    ('frag', 0x0800, ip4(17, 16, 0x2000 | 3)),
    ('other', 0x86dd, bytes([0x60]) + bytes(47)),   # IPv6
    ('other', 0x0800, bytes([0x45])),        # 1 byte
    ('other', 0x0800, ip4(17, 0)[:19]),      # 19 bytes: no whole header
    ('udp', 0x0800, struct.pack('!BBHHHBBH4s4s', 0x45, 0, 1000, 1, 0, 64, 17, 0, bytes(4), bytes(4)) + bytes(8)),  # claims 1000
    ('big', 0x0800, ip4(17, 2980)),          # 3000 bytes: larger than the slot
]
for r in range(10):
    for k, proto, p in kinds[r % 9:] + kinds[:r % 9]:   # rotated a round: the drops fall on every kind
        s.sendto(p, (dev, proto))
`;

const QUEUE_CHILD = `
import { TunDevice, queueDrops, queueDropsByClass, readTruncated } from ${JSON.stringify(TUN_TS)};
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';

const SLOT = 2048, MAX = 64, LEN_BASE = SLOT * MAX;
const mem = new WebAssembly.Memory({ initial: 4 }).buffer;
const bytes = new Uint8Array(mem);
const dv = new DataView(mem);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const out = {};
function up(name, net24) {
  execFileSync('sysctl', ['-qw', 'net.ipv6.conf.' + name + '.disable_ipv6=1']);
  execFileSync('ip', ['addr', 'add', net24 + '.1/24', 'dev', name]);
  execFileSync('ip', ['link', 'set', name, 'up']);
}
const tx = dgram.createSocket('udp4');
const send = (addr) => new Promise((r, j) => tx.send(Buffer.alloc(1000, 7), 9, addr, (e) => (e ? j(e) : r())));

const tq0 = TunDevice.open('tq0', { queue: { batchBytes: 3000, targetUs: 0, intervalUs: 0 } });
up('tq0', '10.202.0');
for (let i = 0; i < 10; i++) await send('10.202.0.2');
await sleep(100);
out.batches = [];
for (let n; (n = tq0.readBatch(mem, 0, SLOT, LEN_BASE, MAX)) > 0;) out.batches.push(n);

const tq1 = TunDevice.open('tq1', { queue: { batchBytes: 0, targetUs: 1, intervalUs: 1000 } });
up('tq1', '10.203.0');
tq1.readBatch(mem, 0, SLOT, LEN_BASE, MAX); // finds the ring empty
const sockets = [];
for (let i = 0; i < 20; i++) {
  const s = net.connect({ host: '10.203.0.2', port: 1000 + i });
  s.on('error', () => {});
  sockets.push(s);
  await send('10.203.0.2');
  await send('10.203.0.2'); // two datagrams a SYN: drops (every other read here) fall on both classes
}
await sleep(100);
const drops0 = queueDrops();
const class0 = queueDropsByClass();
const seen = { tcp: 0, udp: 0 };
const count = (n) => {
  for (let i = 0; i < n; i++) {
    const p = bytes.subarray(i * SLOT, i * SLOT + dv.getUint32(LEN_BASE + 4 * i, true));
    if (p[0] >> 4 === 4 && p[9] === 6) seen.tcp++;
    if (p[0] >> 4 === 4 && p[9] === 17) seen.udp++;
  }
};
// One packet a batch, 5 ms apart (the clock is read once a batch): CoDel
// drops once the ring has stayed above target for a whole interval.
for (let n; (n = tq1.readBatch(mem, 0, SLOT, LEN_BASE, 1)) > 0; await sleep(5)) count(n);
out.seen = seen;
out.drops = tq1.queueDrops;
out.byClass = tq1.queueDropsByClass;
out.processDrops = queueDrops() - drops0;
const class1 = queueDropsByClass();
out.processByClass = Object.fromEntries(Object.keys(class1).map((k) => [k, class1[k] - class0[k]]));
out.tq0Drops = tq0.queueDrops;
for (const s of sockets) s.destroy();
tx.close();

const tq2 = TunDevice.open('tq2', { queue: { batchBytes: 0, targetUs: 1, intervalUs: 1000 } });
execFileSync('ip', ['link', 'set', 'tq2', 'mtu', '4000']);
up('tq2', '10.204.0');
tq2.readBatch(mem, 0, SLOT, LEN_BASE, MAX); // finds the ring empty
const trunc0 = readTruncated();
execFileSync('python3', ['-c', ${JSON.stringify(INJECT_PY)}, 'tq2']);
await sleep(100);
out.lens = {};
for (let n; (n = tq2.readBatch(mem, 0, SLOT, LEN_BASE, 1)) > 0; await sleep(5)) {
  const len = dv.getUint32(LEN_BASE, true);
  out.lens[len] = (out.lens[len] ?? 0) + 1;
}
out.inject = { drops: tq2.queueDrops, byClass: tq2.queueDropsByClass, truncated: readTruncated() - trunc0 };
tq0.close(); tq1.close(); tq2.close();
console.log(JSON.stringify(out));
`;

// Scenario 5 (root, in NS): the ring clock (src/tun/ringclock.h). tc0: a
// packet's sojourn is its own time in the ring, not the time since the
// ring was last empty (A waits about 60 ms, B behind it about 30). tc1 and
// tc2: a ring kept busy but shallow (two packets, each waiting ~10 ms,
// never empty) for 100 steps under a 20 ms target: with stamps CoDel drops
// only packets that did wait the target; tc2 runs on the ring-empty bound
// (VPNMASQ_QUEUE_CLOCK=empty), which sees a 0.5 s standing queue and drops.
// tr0 (offloads) is handed TCP/IPv4 and UDP/IPv4 (USO) super-packets
// through a packet socket with a virtio header (python3), read one a batch
// under a 1 µs target;
// what comes out is written back into tr0 and the kernel forwards it to the
// plain tr1, where it must arrive cut into segments with valid checksums.
const GSO_PY = `
import socket, struct, sys
dev, rounds = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)  # a TUN has no link header: raw is the IP packet
s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR (raw sockets only)
def fold(a):
    while a > 0xffff: a = (a & 0xffff) + (a >> 16)
    return a
def words(b):
    return sum(struct.unpack('!%dH' % (len(b) // 2), b))
src, dst = bytes([10, 99, 0, 1]), bytes([10, 206, 0, 2])
seq = 1000
KINDS = (('trim', 3500, 0x18), ('fin', 3500, 0x19), ('two', 1800, 0x18), ('utrim', 3500, 0), ('utwo', 1800, 0))
for r in range(rounds):
    # each round one place further, so that CoDel's drops (every other read) fall on every kind; the IP ID names it
    for j in range(len(KINDS)):
        k = (j + r) % len(KINDS)
        kind, payload, flags = KINDS[k]
        ipid = 0x200 + len(KINDS) * r + k
        if kind.startswith('u'):
            # USO: 4 datagrams (1000, 1000, 1000, 500) or 2 (1000, 800); each datagram starts with its offset
            data = b''.join(struct.pack('!I', off) + bytes((off + i) & 255 for i in range(4, min(1000, payload - off)))
                            for off in range(0, payload, 1000))
            udplen = 8 + payload
            ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + udplen, ipid, 0x4000, 64, 17, 0, src, dst)
            ip = ip[:10] + struct.pack('!H', 0xffff - fold(words(ip))) + ip[12:]
            udp = struct.pack('!HHHH', 40000, 443, udplen, fold(words(src + dst) + 17 + udplen))
            vnet = struct.pack('<BBHHHH', 1, 5, 28, 1000, 20, 6)  # NEEDS_CSUM, GSO_UDP_L4
            s.sendto(vnet + ip + udp + data, (dev, 0x0800))
            continue
        data = bytes((seq + i) & 255 for i in range(payload))
        tcplen = 20 + payload
        ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + tcplen, ipid, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack('!H', 0xffff - fold(words(ip))) + ip[12:]
        partial = fold(words(src + dst) + 6 + tcplen)  # NEEDS_CSUM: the pseudo-header sum, not inverted
        tcp = struct.pack('!HHIIBBHHH', 40000, 80, seq, 1, 0x50, flags, 65535, partial, 0)
        vnet = struct.pack('<BBHHHH', 1, 1, 40, 1000, 20, 16)
        s.sendto(vnet + ip + tcp + data, (dev, 0x0800))
        seq += payload
`;

const CLOCK_CHILD = `
import { TunDevice, queueTrims } from ${JSON.stringify(TUN_TS)};
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';

const SLOT = 65600, MAX = 8, HDR = 16, LEN_BASE = SLOT * MAX, VERDICT_BASE = LEN_BASE + 4 * MAX, HDR_BASE = VERDICT_BASE + 64;
const mem = new WebAssembly.Memory({ initial: 10 }).buffer;
const bytes = new Uint8Array(mem);
const dv = new DataView(mem);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
const out = {};
function up(name, net24) {
  execFileSync('sysctl', ['-qw', 'net.ipv6.conf.' + name + '.disable_ipv6=1']);
  execFileSync('ip', ['addr', 'add', net24 + '.1/24', 'dev', name]);
  execFileSync('ip', ['link', 'set', name, 'up']);
}
const filters = (dev) => (execFileSync('tc', ['filter', 'show', 'dev', dev, 'egress']).toString().match(/vpnmasq_ringclock/g) ?? []).length;
const tx = dgram.createSocket('udp4');
const send = (addr, seq) => new Promise((r, j) => tx.send(Buffer.from(String(seq).padStart(8, '0')), 9, addr, (e) => (e ? j(e) : r())));
const seqOf = (i) => Number(Buffer.from(bytes.subarray(i * SLOT + 28, i * SLOT + 36)).toString());
const never = { batchBytes: 0, targetUs: 1e9, intervalUs: 1e9 };

// --- tc0: each packet's own sojourn --------------------------------------
const tc0 = TunDevice.open('tc0', { queue: never });
up('tc0', '10.207.0');
out.clock0 = tc0.queueClock;
out.filters0 = filters('tc0');
tc0.readBatch(mem, 0, SLOT, LEN_BASE, MAX); // finds the ring empty: the stamps' numbering aligns
const sent = [];
for (const seq of [1, 2]) {
  const t0 = now(); await send('10.207.0.2', seq); sent.push([t0, now()]);
  await sleep(30);
}
out.sojourn = [];
for (let k = 0; k < 2; k++) {
  const t0 = now(); const n = tc0.readBatch(mem, 0, SLOT, LEN_BASE, 1); const t1 = now();
  const [s0, s1] = sent[k];
  out.sojourn.push({ n, seq: seqOf(0), us: tc0.sojournUs.last, atLeast: (t0 - s1) * 1000, atMost: (t1 - s0) * 1000 });
}
// B was the last stamped: that batch ended without the EAGAIN read. Then one
// packet, one batch of up to MAX: read, and again no EAGAIN read; the next
// packet is read by the next batch (nothing was lost by not asking).
const saved0 = tc0.emptyReadsSaved;
out.saved = [];
for (const seq of [3, 4]) {
  await send('10.207.0.2', seq);
  const n = tc0.readBatch(mem, 0, SLOT, LEN_BASE, MAX);
  out.saved.push({ n, seq: seqOf(0), saved: tc0.emptyReadsSaved - saved0 });
}
out.savedBefore = saved0;

// --- tc1 (stamps) and tc2 (ring-empty bound): busy but shallow --------------
async function shallow(dev, addr) {
  dev.readBatch(mem, 0, SLOT, LEN_BASE, MAX);
  const sentAt = new Map();
  let next = 0;
  const push = async () => { sentAt.set(next, now()); await send(addr, next++); };
  await push(); await push();
  const dropped = [];
  let expect = 0;
  for (let step = 0; step < 100; step++) {
    await push();
    await sleep(5);
    const n = dev.readBatch(mem, 0, SLOT, LEN_BASE, 1);
    const t1 = now();
    const got = n ? seqOf(0) : next;
    for (; expect < got; expect++) dropped.push({ seq: expect, waitedAtMostMs: t1 - sentAt.get(expect) });
    if (n) expect = got + 1;
  }
  return { dropped, drops: dev.queueDrops };
}
const shallowQueue = { batchBytes: 0, targetUs: 20000, intervalUs: 40000 };
const tc1 = TunDevice.open('tc1', { queue: shallowQueue });
up('tc1', '10.208.0');
out.stamps = await shallow(tc1, '10.208.0.2');
process.env.VPNMASQ_QUEUE_CLOCK = 'empty';
const tc2 = TunDevice.open('tc2', { queue: shallowQueue });
delete process.env.VPNMASQ_QUEUE_CLOCK;
up('tc2', '10.209.0');
out.clock2 = tc2.queueClock;
out.saved2 = tc2.emptyReadsSaved;
out.filters2 = execFileSync('tc', ['qdisc', 'show', 'dev', 'tc2']).toString().includes('clsact');
out.bound = await shallow(tc2, '10.209.0.2');

// --- tr0 -> tr1: CoDel takes a super-packet's last segment ------------------
execFileSync('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
execFileSync('sysctl', ['-qw', 'net.ipv4.conf.all.rp_filter=0']);
const tr0 = TunDevice.open('tr0', { offload: true, queue: { batchBytes: 0, targetUs: 1, intervalUs: 1000 } });
const tr1 = TunDevice.open('tr1', { queue: null });
up('tr0', '10.205.0'); up('tr1', '10.206.0');
execFileSync('sysctl', ['-qw', 'net.ipv4.conf.tr0.rp_filter=0']);
execFileSync('ip', ['route', 'add', '10.99.0.0/24', 'dev', 'tr0']);
tr0.readBatch(mem, 0, SLOT, LEN_BASE, MAX, HDR_BASE, HDR);
tr1.readBatch(mem, 0, 2048, LEN_BASE, MAX);
const trims0 = queueTrims();
execFileSync('python3', ['-c', ${JSON.stringify(GSO_PY)}, 'tr0', '20']);
await sleep(50);
const full = { trim: 3540, fin: 3540, two: 1840, utrim: 3528, utwo: 1828 };
out.gso = { read: [], written: 0 };
for (let n; (n = tr0.readBatch(mem, 0, SLOT, LEN_BASE, 1, HDR_BASE, HDR)) > 0; await sleep(5)) {
  const len = dv.getUint32(LEN_BASE, true);
  const p = bytes.subarray(0, len);
  const udp = p[9] === 17;
  const kind = ['trim', 'fin', 'two', 'utrim', 'utwo'][(((p[4] << 8) | p[5]) - 0x200) % 5]; // the IP ID names it
  let a = 0; for (let i = 0; i < 20; i += 2) a += (p[i] << 8) | p[i + 1];
  while (a > 0xffff) a = (a & 0xffff) + (a >>> 16);
  let ps = 0x0a63 + 0x0001 + 0x0ace + 0x0002 + p[9] + (len - 20);
  while (ps > 0xffff) ps = (ps & 0xffff) + (ps >>> 16);
  const check = udp ? 26 : 36;
  out.gso.read.push({ kind, len, cut: full[kind] - len, totalLength: (p[2] << 8) | p[3], ipSumOk: a === 0xffff,
    partialOk: ((p[check] << 8) | p[check + 1]) === ps, udpLength: udp ? (p[24] << 8) | p[25] : undefined,
    hdr: Array.from(bytes.subarray(HDR_BASE, HDR_BASE + 10)) });
  bytes[VERDICT_BASE] = 1;
  out.gso.written += tr0.writeBatch(mem, 0, SLOT, LEN_BASE, VERDICT_BASE, 1, 1, HDR_BASE, HDR);
}
out.gso.trims = tr0.queueTrims;
out.gso.processTrims = queueTrims() - trims0;
out.gso.byClass = tr0.queueDropsByClass;
await sleep(100);
// tr1 (plain, no offloads): the kernel cut what was written into segments and finished their checksums
out.segments = [];
out.datagrams = [];
for (let n; (n = tr1.readBatch(mem, 0, 2048, LEN_BASE, MAX)) > 0;) {
  for (let i = 0; i < n; i++) {
    const len = dv.getUint32(LEN_BASE + 4 * i, true);
    const p = bytes.subarray(i * 2048, i * 2048 + len);
    if (p[9] === 17) {
      let s = 0x0a63 + 0x0001 + 0x0ace + 0x0002 + 17 + (len - 20);
      for (let k = 20; k < len; k += 2) s += (p[k] << 8) | (k + 1 < len ? p[k + 1] : 0);
      while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
      const at = ((p[28] << 24) | (p[29] << 16) | (p[30] << 8) | p[31]) >>> 0;
      let dataOk = (p[24] << 8 | p[25]) === len - 20;
      for (let k = 32; k < len; k++) if (p[k] !== ((at + k - 28) & 255)) dataOk = false;
      out.datagrams.push({ len, at, csumOk: s === 0xffff, dataOk });
      continue;
    }
    if (p[9] !== 6) continue;
    let s = 0x0a63 + 0x0001 + 0x0ace + 0x0002 + 6 + (len - 20);
    for (let k = 20; k < len; k += 2) s += (p[k] << 8) | (k + 1 < len ? p[k + 1] : 0);
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    const seq = ((p[24] << 24) | (p[25] << 16) | (p[26] << 8) | p[27]) >>> 0;
    let dataOk = true;
    for (let k = 40; k < len; k++) if (p[k] !== ((seq + k - 40) & 255)) dataOk = false;
    out.segments.push({ len, seq, csumOk: s === 0xffff, dataOk, fin: (p[33] & 1) === 1 });
  }
}
for (const d of [tc0, tc1, tc2, tr0, tr1]) d.close();
tx.close();
console.log(JSON.stringify(out));
`;

// Scenario 5b (root, in NS): ECN. te0 (plain, 1 µs target) is handed TCP
// segments claiming ECT(1), ECT(0), CE and Not-ECT, and UDP claiming ECT(0),
// in rotating order, 12 rounds, read one a batch: CoDel marks the ECN-capable ones
// CE (checksum valid) while its drop count is low, then drops them like the
// rest; Not-ECT is never marked.
const ECN_PY = `
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)
def fold(a):
    while a > 0xffff: a = (a & 0xffff) + (a >> 16)
    return a
def ip4(proto, tos, n, ident):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, tos, 20 + n, ident, 0x4000, 64, proto, 0, bytes([10, 99, 0, 1]), bytes([10, 210, 0, 2]))
    return h[:10] + struct.pack('!H', 0xffff - fold(sum(struct.unpack('!10H', h)))) + h[12:]
kinds = [(6, 1), (6, 2), (6, 3), (6, 0), (17, 2)]  # (protocol, ECN field)
for r in range(12):
    for j in range(len(kinds)):
        i = (j + r) % len(kinds)  # each round one place further: CoDel's every-other-read verdicts fall on every kind
        proto, ecn = kinds[i]
        s.sendto(ip4(proto, 0x20 | ecn, 20, r * 8 + i) + bytes(20), (sys.argv[1], 0x0800))
`;

const ECN_CHILD = `
import { TunDevice } from ${JSON.stringify(TUN_TS)};
import { execFileSync } from 'node:child_process';
const SLOT = 2048, LEN_BASE = SLOT * 64;
const mem = new WebAssembly.Memory({ initial: 4 }).buffer;
const bytes = new Uint8Array(mem);
const dv = new DataView(mem);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
execFileSync('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
const te0 = TunDevice.open('te0', { queue: { batchBytes: 0, targetUs: 1, intervalUs: 1000 } });
execFileSync('ip', ['link', 'set', 'te0', 'up']);
te0.readBatch(mem, 0, SLOT, LEN_BASE, 64);
execFileSync('python3', ['-c', ${JSON.stringify(ECN_PY)}, 'te0']);
await sleep(50);
const read = [];
for (let n; (n = te0.readBatch(mem, 0, SLOT, LEN_BASE, 1)) > 0; await sleep(5)) {
  const p = bytes.subarray(0, dv.getUint32(LEN_BASE, true));
  let a = 0; for (let i = 0; i < 20; i += 2) a += (p[i] << 8) | p[i + 1];
  while (a > 0xffff) a = (a & 0xffff) + (a >>> 16);
  const id = (p[4] << 8) | p[5];
  read.push({ kind: id % 8, proto: p[9], dscp: p[1] >> 2, ecn: p[1] & 3, ipSumOk: a === 0xffff });
}
console.log(JSON.stringify({ read, marks: te0.queueMarks, byClass: te0.queueDropsByClass }));
te0.close();
`;

// Scenario 5c (root, in NS): a GSO packet that the kernel cuts after the
// ring clock's hook is one stamp for several ring entries. ts0 is a plain TUN
// (no TSO: every GSO packet is cut), ts1 has TSO but no USO (UDP ones are
// cut, TCP ones stay whole). Each is handed, 40 ms apart, plain datagrams and
// GSO packets of 4 segments (python3, one process a packet: UDP from a socket
// with UDP_SEGMENT, routed to the TUN; TCP with a virtio header through a
// packet socket); then everything is read one a batch. Every entry's sojourn
// must lie between the bounds measured around its own packet's send and its
// read: segments share their packet's stamp, and what follows keeps its own.
const SEG_PY = `
import socket, struct, sys
dev, kind, dst = sys.argv[1], sys.argv[2], sys.argv[3]
if kind in ('plain', 'udp'):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if kind == 'udp': s.setsockopt(17, 103, 1000)  # SOL_UDP, UDP_SEGMENT: 4 datagrams in one GSO packet
    s.sendto(bytes(32 if kind == 'plain' else 4000), (dst, 9))
    sys.exit(0)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
def fold(a):
    while a > 0xffff: a = (a & 0xffff) + (a >> 16)
    return a
def words(b):
    return sum(struct.unpack('!%dH' % (len(b) // 2), b))
src, dst = bytes([10, 99, 0, 1]), socket.inet_aton(dst)
data = bytes(4000)
h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 40 + len(data), 1, 0x4000, 64, 6, 0, src, dst)
h = h[:10] + struct.pack('!H', 0xffff - fold(words(h))) + h[12:]
tcp = struct.pack('!HHIIBBHHH', 40000, 80, 1, 1, 0x50, 0x18, 65535, fold(words(src + dst) + 6 + 20 + len(data)), 0)
s.sendto(struct.pack('<BBHHHH', 1, 1, 40, 1000, 20, 16) + h + tcp + data, (dev, 0x0800))
`;

const SEG_CHILD = `
import { TunDevice } from ${JSON.stringify(TUN_TS)};
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
const SLOT = 65600, HDR = 16, LEN_BASE = SLOT * 8, VERDICT_BASE = LEN_BASE + 64, HDR_BASE = VERDICT_BASE + 64;
const mem = new WebAssembly.Memory({ initial: 10 }).buffer;
const bytes = new Uint8Array(mem);
const dv = new DataView(mem);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const never = { batchBytes: 0, targetUs: 1e9, intervalUs: 1e9 };
execFileSync('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
const py = (name, kind, dst) => execFileSync('python3', ['-c', ${JSON.stringify(SEG_PY)}, name, kind, dst]);
const udp = dgram.createSocket('udp4');
const out = {};

function sum16(b, from, to, acc = 0) {
  for (let k = from; k < to; k += 2) acc += (b[k] << 8) | (k + 1 < to ? b[k + 1] : 0);
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return acc;
}
/** Answers the SYN in slot 0 with a SYN-ACK (MSS 1000) written into the TUN: the kernel's socket is then established. */
function synAck(d) {
  const syn = bytes.slice(0, 40);
  const p = bytes.subarray(0, 44);
  p.fill(0);
  p.set([0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6], 0);
  p.set(syn.subarray(16, 20), 12); p.set(syn.subarray(12, 16), 16);          // addresses swapped
  p.set(syn.subarray(22, 24), 20); p.set(syn.subarray(20, 22), 22);          // ports swapped
  dv.setUint32(24, 1000); dv.setUint32(28, dv.getUint32.call(new DataView(syn.buffer), 24) + 1);
  p[32] = 0x60; p[33] = 0x12; dv.setUint16(34, 65535);                        // 24-byte header, SYN ACK
  p.set([2, 4, 0x03, 0xe8], 40);                                              // MSS 1000
  dv.setUint16(10, 0xffff - sum16(p, 0, 20));
  dv.setUint16(36, 0xffff - sum16(p, 20, 44, sum16(p, 12, 20) + 6 + 24));
  dv.setUint32(LEN_BASE, 44, true); bytes[VERDICT_BASE] = 1; bytes.fill(0, HDR_BASE, HDR_BASE + HDR);
  return d.writeBatch(mem, 0, SLOT, LEN_BASE, VERDICT_BASE, 1, 1, HDR_BASE, HDR);
}

// [device, open options, net, what each step sends, ring entries each makes]
for (const [name, opts, ipnet, kinds, entries] of [
  ['ts0', { queue: never }, '10.211.0', ['plain', 'udp', 'plain', 'udp', 'plain'], [1, 4, 1, 4, 1]],
  ['ts1', { queue: never, offload: true, uso: false }, '10.212.0', ['plain', 'udp', 'tcp', 'dgram'], [1, 4, 1, 1]],
]) {
  const d = TunDevice.open(name, opts);
  execFileSync('ip', ['addr', 'add', ipnet + '.1/24', 'dev', name]);
  execFileSync('ip', ['link', 'set', name, 'up']);
  const read = () => (d.vnet ? d.readBatch(mem, 0, SLOT, LEN_BASE, 1, HDR_BASE, HDR) : d.readBatch(mem, 0, SLOT, LEN_BASE, 1));
  let sock = null;
  if (kinds.includes('tcp')) {
    // a local TCP connection through the TUN, its handshake answered here: its data leaves as the TCP stack's own
    // super-packets (gso_segs set), which a TUN with TSO takes whole
    sock = net.connect({ host: ipnet + '.2', port: 80, localAddress: ipnet + '.1', noDelay: true });
    sock.on('error', () => {});
    for (let k = 0; k < 200 && !(read() > 0 && bytes[9] === 6 && bytes[33] === 2); k++) await sleep(10);
    synAck(d);
    await new Promise((r) => sock.once('connect', r));
    await sleep(20);
  }
  while (read() > 0); // the ring is empty: the numbering aligns
  const sent = [];
  for (const kind of kinds) {
    const t0 = performance.now();
    if (kind === 'tcp') sock.write(Buffer.alloc(2000)); // the stack's smallest super-packet: 2 segments of 1000
    else if (kind === 'dgram') await new Promise((r) => udp.send(Buffer.alloc(32), 9, ipnet + '.2', r));
    else py(name, kind, ipnet + '.2');
    sent.push([t0, performance.now()]);
    await sleep(40);
  }
  // exactly the entries expected (a retransmission of the unanswered TCP data may follow them)
  const owners = entries.flatMap((n, i) => Array(n).fill(i));
  const got = [];
  while (got.length < owners.length) {
    const t0 = performance.now(); const n = read(); const t1 = performance.now();
    if (n === 0) break;
    const own = owners[got.length];
    const [s0, s1] = sent[own];
    got.push({ kind: kinds[own], len: dv.getUint32(LEN_BASE, true), gsoType: d.vnet ? bytes[HDR_BASE + 1] : 0, us: d.sojournUs.last, atLeast: (t0 - s1) * 1000, atMost: (t1 - s0) * 1000 });
  }
  out[name] = { offloads: d.offloads, entries: got };
  // a reset, not a close: a closed socket with unanswered data would go on retransmitting it, orphaned, through
  // whichever device later routes its destination
  sock?.resetAndDestroy();
  d.close();
}
udp.close();
console.log(JSON.stringify(out));
`;

// Scenario 6: the ring clock where it cannot be: root without CAP_BPF and
// CAP_SYS_ADMIN opens a TUN with CoDel; the queue runs on the ring-empty
// bound and says why, and nothing is left on the device.
const NOBPF_CHILD = `
import { TunDevice } from ${JSON.stringify(TUN_TS)};
import { execFileSync } from 'node:child_process';
const d = TunDevice.open('tb0', { queue: { batchBytes: 0, targetUs: 500, intervalUs: 5000 } });
const out = { clock: d.queueClock, clsact: execFileSync('tc', ['qdisc', 'show', 'dev', 'tb0']).toString().includes('clsact') };
d.close();
console.log(JSON.stringify(out));
`;

// Scenario 7: a persistent TUN (ip tuntap) whose reader was killed keeps its
// filter and clsact; the next reader replaces the filter (one, not two) and
// on close removes it, and the clsact unless someone else's filter is on it.
const PERSIST_CHILD = (exitWithoutClose: boolean) => `
import { TunDevice } from ${JSON.stringify(TUN_TS)};
import { execFileSync } from 'node:child_process';
const filters = () => (execFileSync('tc', ['filter', 'show', 'dev', 'tp0', 'egress']).toString().match(/vpnmasq_ringclock/g) ?? []).length;
const clsact = () => execFileSync('tc', ['qdisc', 'show', 'dev', 'tp0']).toString().includes('clsact');
const out = { before: filters() };
const d = TunDevice.open('tp0', { queue: { batchBytes: 0, targetUs: 500, intervalUs: 5000 } });
out.clock = d.queueClock;
out.running = filters();
if (${exitWithoutClose}) { console.log(JSON.stringify(out)); process.exit(0); }
d.close();
out.after = filters();
out.clsactAfter = clsact();
console.log(JSON.stringify(out));
`;

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 30_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\nstdout: ${stdout}\nstderr: ${stderr}`));
      else resolve(stdout);
    });
  });
}

// What the host-queue children share: a TUN called name, with 8 host queues (CoDel
// off) and 10.<net>.0.1/24 on it, slots for one batch, and hostsOn(prefix,
// n): n source addresses on lo, each hashed to a host queue of its own.
const hostQueuePrelude = (name: string, net: number, key = 'lan') => `
import { TunDevice, hostQueueOf, remoteQueueOf } from ${JSON.stringify(TUN_TS)};
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';

const SLOT = 2048, MAX = 64, LEN_BASE = SLOT * MAX, HDR_BASE = LEN_BASE + 4 * MAX;
const mem = new WebAssembly.Memory({ initial: 4 }).buffer;
const bytes = new Uint8Array(mem);
const dv = new DataView(mem);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
const never = { batchBytes: 0, targetUs: 1e9, intervalUs: 1e9 };
const ipNumber = (a) => a.split('.').reduce((n, b) => n * 256 + Number(b), 0);
const out = {};
execFileSync('ip', ['link', 'set', 'lo', 'up']);
const th = TunDevice.open('${name}', { offload: true, hostQueues: 8, hostQueueKey: '${key}', queue: never });
execFileSync('sysctl', ['-qw', 'net.ipv6.conf.${name}.disable_ipv6=1']);
execFileSync('ip', ['addr', 'add', '10.${net}.0.1/24', 'dev', '${name}']);
execFileSync('ip', ['link', 'set', '${name}', 'up']);
const hostsOn = (prefix, n) => {
  const hosts = [];
  for (let x = 1; hosts.length < n; x++) {
    const a = prefix + x;
    const q = hostQueueOf(ipNumber(a), 3);
    if (hosts.some((h) => h.q === q)) continue;
    execFileSync('ip', ['addr', 'add', a + '/32', 'dev', 'lo']);
    hosts.push({ a, q });
  }
  return hosts;
};
`;

// Host queues (ringclock.h hostqueue): th0 with 8 rings, three source
// addresses on three rings; A sends 20, then 30 ms later B 5 and C 3; one
// batch reads them. Prints the order read, each queue's sojourn figures and
// the times around the sends and the read.
const HOSTQ_CHILD = `${hostQueuePrelude('th0', 210)}out.hostQueues = th.hostQueues;
out.note = th.hostQueuesNote;
out.link = /multi_queue numqueues \\d+/.exec(execFileSync('ip', ['-d', 'link', 'show', 'th0']).toString())?.[0];
// three sources on three different rings, by the steering's hash
const hosts = hostsOn('10.211.0.', 3);
out.queues = hosts.map((h) => h.q);
const read = () => th.readBatch(mem, 0, SLOT, LEN_BASE, MAX, HDR_BASE, 16);
out.first = read(); // every ring found empty: the stamps' numbering aligns
const send = async (host, tag, n) => {
  const s = dgram.createSocket('udp4');
  await new Promise((r) => s.bind(0, host.a, r));
  for (let i = 0; i < n; i++) await new Promise((r, j) => s.send(Buffer.from(tag + i), 9, '10.210.0.2', (e) => (e ? j(e) : r())));
  s.close();
};
const t = {};
t.a0 = now(); await send(hosts[0], 'A', 20); t.a1 = now();
await sleep(30);
t.b0 = now(); await send(hosts[1], 'B', 5); await send(hosts[2], 'C', 3); t.b1 = now();
t.r0 = now(); const n = read(); t.r1 = now();
out.n = n;
out.order = [];
for (let i = 0; i < n; i++) {
  const len = dv.getUint32(LEN_BASE + 4 * i, true);
  out.order.push(Buffer.from(bytes.subarray(i * SLOT + 28, i * SLOT + len)).toString());
}
out.sojourn = th.hostQueueSojournUs;
out.t = t;
out.after = read();
th.close();
// the longer clock programs load too: TSO without USO (UDP GSO cut after the hook, as on kernels before 6.2), no offloads
out.programs = [];
for (const [name, o] of [['th2', { offload: true, uso: false }], ['th3', {}]]) {
  const d = TunDevice.open(name, { ...o, hostQueues: 8, queue: never });
  out.programs.push({ hostQueues: d.hostQueues, clock: d.queueClock.kind, note: d.hostQueuesNote });
  d.close();
}
// without the ring clock there are no host queues: one ring, and why
process.env.VPNMASQ_QUEUE_CLOCK = 'empty';
const th1 = TunDevice.open('th1', { hostQueues: 8, queue: never });
delete process.env.VPNMASQ_QUEUE_CLOCK;
out.fallback = { hostQueues: th1.hostQueues, note: th1.hostQueuesNote, link: /multi_queue numqueues \\d+/.exec(execFileSync('ip', ['-d', 'link', 'show', 'th1']).toString())?.[0] ?? null };
th1.close();
// the reader queue a device gets by default: 2 ms / 40 ms with host queues, 0.5 ms / 5 ms on one
// ring, also where host queues fall back to one
out.defaults = {};
for (const [name, n, clock] of [['th8', 8, ''], ['th9', 1, ''], ['th10', 8, 'empty']]) {
  if (clock) process.env.VPNMASQ_QUEUE_CLOCK = clock;
  const d = TunDevice.open(name, { hostQueues: n });
  delete process.env.VPNMASQ_QUEUE_CLOCK;
  out.defaults[name] = { hostQueues: d.hostQueues, queue: d.readerQueue };
  d.close();
}
console.log(JSON.stringify(out));
`;

// A 22-byte IPv4 packet that says TCP (2 bytes of its header), from argv[1] to argv[2], by a raw socket.
const SHORT_TCP_PY = `
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 22, 7, 0, 64, 6, 0, socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2]))
s.sendto(ip + bytes([1, 2]), (sys.argv[2], 0))
`;

// A raw IPv4 packet of protocol argv[3] (1: an ICMP echo request, 6: a TCP ACK) from argv[1] to argv[2].
const RAW_PY = `
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
proto = int(sys.argv[3])
body = struct.pack('!BBHHH', 8, 0, 0, 0x5151, 1) + b'p' * 8 if proto == 1 else struct.pack('!HHIIBBHHH', 40000, 80, 1, 1, 0x50, 0x10, 512, 0, 0)
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(body), 9, 0, 64, proto, 0, socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2]))
s.sendto(ip + body, (sys.argv[2], 0))
`;

// The WAN TUN's host queues (ringclock.h HostKey::kRemote): th5 with 8,
// keyed by source address and protocol. One source sends 20 UDP datagrams,
// then an ICMP echo request and a TCP ACK; one batch reads them. Then the
// clock program for that key loads on the other offload variants.
const REMOTE_CHILD = `${hostQueuePrelude('th5', 218, 'remote')}out.rings = th.rings;
out.hostQueues = th.hostQueues;
const src = '10.219.0.1';
execFileSync('ip', ['addr', 'add', src + '/32', 'dev', 'lo']);
const a = ipNumber(src);
out.queues = [17, 1, 6].map((p) => remoteQueueOf(a, p, 3));
const read = () => {
  const n = th.readBatch(mem, 0, SLOT, LEN_BASE, MAX, HDR_BASE, 16);
  const got = [];
  for (let i = 0; i < n; i++) {
    const ip = i * SLOT, proto = bytes[ip + 9];
    got.push(proto === 17 ? Buffer.from(bytes.subarray(ip + 28, ip + dv.getUint32(LEN_BASE + 4 * i, true))).toString() : proto === 1 ? 'ICMP' : proto === 6 ? 'TCP' : 'p' + proto);
  }
  return got;
};
out.first = read().length; // every ring found empty: the numbering aligns
const u = dgram.createSocket('udp4');
await new Promise((r) => u.bind(0, src, r));
for (let i = 0; i < 20; i++) await new Promise((r, j) => u.send(Buffer.from('U' + i), 9, '10.218.0.2', (e) => (e ? j(e) : r())));
for (const p of ['1', '6']) execFileSync('python3', ['-c', ${JSON.stringify(RAW_PY)}, src, '10.218.0.2', p]);
out.order = read();
out.after = read().length;
u.close();
th.close();
out.programs = [];
for (const [name, o] of [['th6', { offload: true, uso: false }], ['th7', {}]]) {
  const d = TunDevice.open(name, { ...o, hostQueues: 8, hostQueueKey: 'remote', queue: never });
  out.programs.push({ hostQueues: d.hostQueues, rings: d.rings, clock: d.queueClock.kind, note: d.hostQueuesNote });
  d.close();
}
console.log(JSON.stringify(out));
`;

// Sparse flows (ringclock.h hostqueue): th4 with 8 host queues (16 rings).
// Host A sends 20 datagrams of flow 1, then one of flow 2 (another
// destination) while flow 1's wait unread; then 30 datagrams to 30 new
// destinations beside host B's 5 of one flow; then 10 small datagrams, one
// that the kernel cuts into fragments and one more, to one destination.
// Prints the order each batch read.
const SPARSE_CHILD = `${hostQueuePrelude('th4', 216)}out.rings = th.rings;
const hosts = hostsOn('10.217.0.', 2);
const read = () => {
  const n = th.readBatch(mem, 0, SLOT, LEN_BASE, MAX, HDR_BASE, 16);
  const got = [];
  for (let i = 0; i < n; i++) got.push(label(i));
  return got;
};
const socket = async (host) => {
  const s = dgram.createSocket('udp4');
  await new Promise((r) => s.bind(0, host.a, r));
  return s;
};
const send = (s, text, to = 2) => new Promise((r, j) => s.send(Buffer.from(text), 9, '10.216.0.' + to, (e) => (e ? j(e) : r())));
// a fragment by its offset (L0 the first, L1480 …), anything else by its payload
const label = (i) => {
  const ip = i * SLOT, frag = dv.getUint16(ip + 6) & 0x3fff;
  if (frag !== 0) return 'L' + (frag & 0x1fff) * 8;
  if (bytes[ip + 9] === 6) return 'T' + dv.getUint32(LEN_BASE + 4 * i, true);
  return Buffer.from(bytes.subarray(ip + 28, ip + dv.getUint32(LEN_BASE + 4 * i, true))).toString();
};
out.first = read().length; // every ring found empty: the numbering aligns, the read positions are known
const f1 = await socket(hosts[0]);
const f2 = await socket(hosts[0]);
for (let i = 0; i < 20; i++) await send(f1, 'F' + i);
await send(f2, 'G0', 3);
out.one = read();
// every packet read, and a pause (a flow is sparse after 1 ms without a packet): flow 1 has nothing unread, so its
// next packet is sparse again, ahead of flow 2's backlog
await new Promise((r) => setTimeout(r, 5));
for (let i = 0; i < 5; i++) await send(f2, 'G' + (i + 1), 3);
await send(f1, 'F20');
out.two = read();
// an attacker's new flows, each sparse, against B's one flow
const b = await socket(hosts[1]);
for (let i = 0; i < 30; i++) {
  const s = await socket(hosts[0]);
  await send(s, 'N' + i, 10 + i);
  s.close();
}
for (let i = 0; i < 5; i++) await send(b, 'B' + i);
out.three = read();
// one host's UDP to one destination is one flow, fragments or not (NAT-T's ESP must not be overtaken)
for (let i = 0; i < 10; i++) await send(f1, 'S' + i, 4);
await send(f1, 'L'.repeat(3000), 4);
await send(f1, 'S10', 4);
out.four = read();
// a TCP header cut short of its ports (the kernel forwards such a packet): still a flow of its own, so sparse
for (let i = 0; i < 5; i++) await send(f1, 'U' + i, 5);
execFileSync('python3', ['-c', ${JSON.stringify(SHORT_TCP_PY)}, hosts[0].a, '10.216.0.6']);
out.five = read();
for (let i = 0; i < 20; i++) await send(f1, 'F' + i, 2);
for (let i = 0; i < 30; i++) await send(f2, 'N' + i, 40 + i);
out.six = read();
out.after = read().length;
out.sojourn = th.hostQueueSojournUs.length;
for (const s of [f1, f2, b]) s.close();
th.close();
console.log(JSON.stringify(out));
`;

function child(script: string, prefix: string[] = []): Promise<string> {
  const dir = copy!.root;
  const file = path.join(dir, `child-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(file, script, { mode: 0o644 });
  const register = `data:text/javascript,import{register}from"node:module";register(${JSON.stringify(
    pathToFileURL(path.join(dir, 'hooks.mjs')).href,
  )});`;
  return run('ip', ['netns', 'exec', NS, ...prefix, process.execPath, '--import', register, file]);
}

const lastLine = (s: string) => JSON.parse(s.trim().split('\n').at(-1)!);

describe.skipIf(skipUnless({ root: true, tun: true, tools: ['ip', 'tc', 'setpriv', 'python3'] }))('TunDevice on a real TUN (netns)', () => {
  beforeAll(() => {
    if (!existsSync(ADDON)) throw new Error(`${ADDON} is missing: run \`npm run build:addon\` first`);
    copy = readableCopy(['src', 'build/Release/vpnmasq_tun.node'], ['typescript']);
    writeFileSync(path.join(copy.root, 'hooks.mjs'), hooks(copy.root), { mode: 0o644 });
    execFileSync('ip', ['netns', 'add', NS]);
  });

  afterAll(() => {
    try {
      execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
    } catch {
      // never created
    }
    copy?.cleanup();
  });

  it('opens TUNs with IFF_VNET_HDR and offloads: partial checksums read behind a virtio header, headers written back; USO can be left out', async () => {
    const out = lastLine(await child(OFFLOAD_CHILD));
    expect(out.to0.vnet).toBe(true);
    expect(out.to0.offloads).toEqual(expect.arrayContaining(['csum', 'tso4', 'tso6']));
    expect(out.to1).toEqual({ vnet: true, offloads: ['csum', 'tso4', 'tso6'] });
    expect(out.to2).toEqual({ vnet: false, offloads: 0 });
    expect(out.noHdrArgs).toMatch(/virtio headers: pass hdrBase and hdrStride/);
    // The kernel left the UDP checksum to the device: NEEDS_CSUM at the UDP checksum.
    expect(out.read).toMatchObject({ first: 0x45, flags: 1, gsoType: 0, csumStart: 20, csumOffset: 6 });
    expect(out.written).toBe(1);
    expect(out.writeDrops).toBe(1);
    expect(out.received).toEqual(['plain-behind-zero-header']);
    // GRO on write: one write carried three datagrams; a backward chain was refused whole.
    expect(out.gro).toEqual({ written: 1, drops: 1, received: ['seg-A1', 'seg-B2', 'seg-C3'] });
  });

  it('reader queue: batches stop at their byte budget; a ring not emptied for a CoDel interval loses packets of every class at the head', async () => {
    const out = lastLine(await child(QUEUE_CHILD));
    // 10 datagrams of 1028 bytes, 3000 bytes a batch: 3 (3084 ≥ 3000), 3, 3, 1
    expect(out.batches).toEqual([3, 3, 3, 1]);
    expect(out.tq0Drops).toBe(0);
    // 20 SYNs and 40 datagrams, interleaved: each read or dropped, both classes dropped, each drop counted once under its class
    expect(out.seen.tcp + out.byClass.tcp).toBe(20);
    expect(out.seen.udp + out.byClass.udp).toBe(40);
    expect(out.byClass.tcp).toBeGreaterThanOrEqual(1);
    expect(out.byClass.udp).toBeGreaterThanOrEqual(1);
    expect(out.byClass).toMatchObject({ icmp: 0, frag: 0, other: 0 });
    expect(out.drops).toBe(out.byClass.tcp + out.byClass.udp);
    expect(out.processDrops).toBe(out.drops);
    expect(out.processByClass).toEqual(out.byClass);
  });

  it('reader queue, attacker: what the IP stack never routes (IPv6, 1 and 19 bytes, a lying header, ESP, GRE, a fragment, oversize) is read whole or dropped under its class', async () => {
    const out = lastLine(await child(QUEUE_CHILD));
    const { inject, lens } = out;
    // 10 rounds of 9: the 10 oversize reads are dropped as truncated before the queue discipline sees them
    expect(inject.truncated).toBe(10);
    // every other packet read with its own length (36 ICMP/ESP/GRE/fragment, 48 IPv6, 1, 19, 28 the lying header) or dropped
    const expected: Record<string, number> = { 36: 40, 48: 10, 1: 10, 19: 10, 28: 10 };
    const dropped = Object.values(inject.byClass as Record<string, number>).reduce((a, b) => a + b, 0);
    expect(dropped).toBe(inject.drops);
    expect(dropped).toBeGreaterThanOrEqual(5);
    expect(Object.values(lens as Record<string, number>).reduce((a, b) => a + b, 0) + dropped).toBe(80);
    for (const [len, n] of Object.entries(lens as Record<string, number>)) {
      expect(expected[len], `a read of ${len} bytes`).toBeDefined();
      expect(n).toBeLessThanOrEqual(expected[len]!);
    }
    // the rotation lines drops up with every class: icmp 1, other 5 (ESP, GRE, IPv6, 1 B, 19 B), frag 1, udp 1 (the lying header) a round
    expect(inject.byClass.tcp).toBe(0);
    expect(inject.byClass.other).toBeGreaterThanOrEqual(1);
    expect(inject.byClass.icmp + inject.byClass.frag + inject.byClass.udp + inject.byClass.other).toBe(dropped);
  });

  it('ring clock: a packet\'s sojourn is its own time in the ring; a busy but shallow ring loses nothing under the target (the ring-empty bound drops there)', async () => {
    const out = lastLine(await child(CLOCK_CHILD));
    expect(out.clock0).toEqual({ kind: 'stamps' });
    expect(out.filters0).toBe(1);
    // A, then B sent 30 ms later, both read now: each sojourn within what the child measured around it
    expect(out.sojourn.map((s: { n: number; seq: number }) => [s.n, s.seq])).toEqual([[1, 1], [1, 2]]);
    for (const s of out.sojourn) {
      expect(s.us).toBeGreaterThanOrEqual(s.atLeast);
      expect(s.us).toBeLessThanOrEqual(s.atMost);
    }
    // B's own wait, not "since the ring was last empty" (which is A's)
    expect(out.sojourn[1].us).toBeLessThan(out.sojourn[0].atLeast);
    // the stamps say when the ring is empty: no read to learn it
    expect(out.savedBefore).toBeGreaterThanOrEqual(1);
    expect(out.saved).toEqual([{ n: 1, seq: 3, saved: 1 }, { n: 1, seq: 4, saved: 2 }]);
    // stamps: whatever CoDel dropped had waited the 20 ms target
    for (const d of out.stamps.dropped) expect(d.waitedAtMostMs).toBeGreaterThanOrEqual(20);
    expect(out.stamps.drops).toBe(out.stamps.dropped.length);
    // the ring-empty bound, same traffic: a 0.5 s "standing queue", drops
    expect(out.clock2).toEqual({ kind: 'empty', reason: 'VPNMASQ_QUEUE_CLOCK=empty' });
    expect(out.filters2).toBe(false);
    expect(out.saved2).toBe(0);
    expect(out.bound.drops).toBeGreaterThanOrEqual(1);
  });

  it('ring clock: CoDel takes only a TCP or UDP super-packet\'s last segment, with lengths and checksums that the kernel\'s own segmentation turns into valid segments and datagrams; FIN and 2-segment packets are dropped whole', async () => {
    const out = lastLine(await child(CLOCK_CHILD));
    const { read, written, trims, processTrims, byClass } = out.gso;
    const cut = read.filter((r: { cut: number }) => r.cut > 0);
    expect(cut.filter((r: { kind: string }) => r.kind === 'trim').length).toBeGreaterThanOrEqual(1);
    expect(cut.filter((r: { kind: string }) => r.kind === 'utrim').length).toBeGreaterThanOrEqual(1);
    expect(trims).toBe(cut.length);
    expect(processTrims).toBe(cut.length);
    for (const r of read) {
      // only the 4-segment super-packets without FIN are cut, by their last segment (500 bytes)
      expect(r.cut).toBe((r.kind === 'trim' || r.kind === 'utrim') && r.cut ? 500 : 0);
      expect(r.totalLength).toBe(r.len);
      expect(r.ipSumOk).toBe(true);
      expect(r.partialOk).toBe(true);
      // the virtio header as sent (NEEDS_CSUM, TCPV4 or UDP_L4, gso_size 1000, csum at 20+16 or 20+6); hdr_len
      // (the kernel's linear length, here the whole packet) never past the packet
      const udp = r.kind.startsWith('u');
      if (udp) expect(r.udpLength).toBe(r.len - 20);
      expect([...r.hdr.slice(0, 2), ...r.hdr.slice(4)]).toEqual(udp ? [1, 5, 232, 3, 20, 0, 6, 0] : [1, 1, 232, 3, 20, 0, 16, 0]);
      expect(r.hdr[2] | (r.hdr[3] << 8)).toBeLessThanOrEqual(r.len);
    }
    // 20 rounds of 5: each read (cut or not) or dropped whole; TCP drops under tcp, USO drops under udp
    expect(read.length + byClass.tcp + byClass.udp - trims).toBe(100);
    expect(written).toBe(read.length);
    // what was written came out of the plain tr1 as segments, checksums valid, data where its sequence says
    const tcpReads = read.filter((r: { kind: string }) => !r.kind.startsWith('u'));
    const segs = tcpReads.reduce((a: number, r: { len: number }) => a + Math.ceil((r.len - 40) / 1000), 0);
    expect(out.segments.length).toBe(segs);
    for (const s of out.segments) expect(s).toMatchObject({ csumOk: true, dataOk: true });
    expect(out.segments.filter((s: { fin: boolean }) => s.fin).length).toBe(read.filter((r: { kind: string }) => r.kind === 'fin').length);
    // and datagrams: as many as the USO reads held, each with a valid checksum, its own UDP length and its own bytes;
    // a cut 4-datagram packet arrives as its first three
    const udpReads = read.filter((r: { kind: string }) => r.kind.startsWith('u'));
    expect(out.datagrams.length).toBe(udpReads.reduce((a: number, r: { len: number }) => a + Math.ceil((r.len - 28) / 1000), 0));
    for (const d of out.datagrams) expect(d).toMatchObject({ csumOk: true, dataOk: true });
    expect(out.datagrams.filter((d: { at: number }) => d.at === 3000).length).toBe(udpReads.filter((r: { kind: string; cut: number }) => r.kind === 'utrim' && r.cut === 0).length);
  });

  it('ring clock: the segments of a GSO packet the kernel cuts after the stamp share its stamp, and what follows keeps its own (a plain TUN; TSO without USO)', async () => {
    const out = lastLine(await child(SEG_CHILD));
    // what was read, by length: a plain datagram 60 bytes, a UDP segment 1028, the whole TCP packet 4040
    const lens = (e: { len: number }[]) => e.map((x) => x.len);
    // plain TUN: each UDP GSO packet arrives as its 4 datagrams
    expect(lens(out.ts0.entries)).toEqual([60, 1028, 1028, 1028, 1028, 60, 1028, 1028, 1028, 1028, 60]);
    // TSO without USO: the UDP one is cut, the TCP one stays whole
    expect(out.ts1.offloads & 0x02).toBe(0x02);
    expect(out.ts1.offloads & 0x20).toBe(0);
    // the local connection's 2000 bytes: one TCP super-packet (GSO TCPV4) of 2 segments, taken whole
    expect(lens(out.ts1.entries)).toEqual([60, 1028, 1028, 1028, 1028, 2040, 60]);
    expect(out.ts1.entries[5].gsoType).toBe(1);
    for (const e of [...out.ts0.entries, ...out.ts1.entries]) {
      expect(e.us).toBeGreaterThanOrEqual(e.atLeast);
      expect(e.us).toBeLessThanOrEqual(e.atMost);
    }
  });

  it('ECN: CoDel marks ECN-capable TCP and UDP (QUIC) CE instead of dropping it, only while its drop count is low; Not-ECT is never marked', async () => {
    const out = lastLine(await child(ECN_CHILD));
    const sentEcn = [1, 2, 3, 0, 2];
    expect(out.marks).toBeGreaterThanOrEqual(1);
    // 16 marks at most, then the count is past the limit and ECN-capable packets are dropped too (5 a round, 12 rounds)
    expect(out.marks).toBeLessThanOrEqual(16);
    expect(out.byClass.tcp + out.byClass.udp).toBeGreaterThanOrEqual(1);
    expect(out.read.length + out.byClass.tcp + out.byClass.udp).toBe(60);
    let ce = 0;
    const markedKinds = new Set();
    for (const r of out.read) {
      expect(r.ipSumOk).toBe(true);
      expect(r.dscp).toBe(8); // the DSCP bits untouched
      if (r.ecn !== sentEcn[r.kind]) {
        // only ECT(0)/ECT(1) packets ever change, and only to CE
        expect(r.ecn).toBe(3);
        expect([0, 1, 4]).toContain(r.kind);
        markedKinds.add(r.kind);
        ce++;
      }
    }
    // UDP claiming ECT(0) (QUIC's way) is marked like TCP, and so is TCP of either ECT
    expect(markedKinds.has(4)).toBe(true);
    expect(markedKinds.has(0) || markedKinds.has(1)).toBe(true);
    // a mark on a packet that already was CE changes nothing, so ce ≤ marks
    expect(ce).toBeGreaterThanOrEqual(1);
    expect(ce).toBeLessThanOrEqual(out.marks);
  });

  it('host queues: each source address waits in its own ring (the steering\'s hash), read round-robin one packet each, each ring numbered by the ring clock on its own; without the clock, one ring', async () => {
    const out = lastLine(await child(HOSTQ_CHILD));
    expect(out.hostQueues).toBe(8);
    expect(out.note).toBe('');
    expect(out.link).toBe('multi_queue numqueues 16'); // two rings a host queue: bulk and sparse
    expect(out.first).toBe(0);
    expect(out.n).toBe(28);
    const host = (p: string) => p[0];
    // the first three rounds take one packet of each host; then B's and C's run out, and A's rest follows
    for (let round = 0; round < 3; round++) expect(out.order.slice(3 * round, 3 * round + 3).map(host).sort()).toEqual(['A', 'B', 'C']);
    expect(out.order.slice(13)).toEqual(Array.from({ length: 15 }, (_v, i) => `A${i + 5}`));
    for (const tag of ['A', 'B', 'C']) {
      const mine = out.order.filter((p: string) => host(p) === tag);
      expect(mine).toEqual(mine.map((_p: string, i: number) => `${tag}${i}`)); // each host keeps its order
    }
    // each ring's stamps are its own: A's waited the 30 ms, B's and C's only since their own send
    const [qa, qb, qc] = out.queues;
    const { t } = out;
    expect(out.sojourn[qa].max).toBeGreaterThanOrEqual((t.r0 - t.a1) * 1000);
    expect(out.sojourn[qa].max).toBeLessThanOrEqual((t.r1 - t.a0) * 1000);
    for (const q of [qb, qc]) {
      expect(out.sojourn[q].max).toBeLessThanOrEqual((t.r1 - t.b0) * 1000);
      expect(out.sojourn[q].max).toBeLessThan((t.r0 - t.a1) * 1000);
    }
    expect(out.after).toBe(0);
    expect(out.programs).toEqual([{ hostQueues: 8, clock: 'stamps', note: '' }, { hostQueues: 8, clock: 'stamps', note: '' }]);
    expect(out.fallback).toEqual({ hostQueues: 1, note: 'VPNMASQ_QUEUE_CLOCK=empty (host queues are read by their ring clock stamps)', link: null });
    expect(out.defaults).toEqual({
      th8: { hostQueues: 8, queue: READER_QUEUE_HOST_QUEUES },
      th9: { hostQueues: 1, queue: READER_QUEUE },
      th10: { hostQueues: 1, queue: READER_QUEUE },
    });
    expect(READER_QUEUE_HOST_QUEUES).toEqual({ batchBytes: READER_QUEUE.batchBytes, targetUs: 2000, intervalUs: 40_000 });
  });

  it('host queues, sparse flows: a flow with nothing unread goes ahead of its own host\'s backlog, every flow keeps its order, and new flows give a host no more than its turn', async () => {
    const out = lastLine(await child(SPARSE_CHILD));
    expect(out.rings).toBe(16);
    expect(out.first).toBe(0);
    // G0, sent after all 20 of flow 1, is read second: F0 found the rings empty (sparse), G0 too; F1..F19 wait in the
    // bulk ring
    expect(out.one).toEqual(['F0', 'G0', ...Array.from({ length: 19 }, (_v, i) => `F${i + 1}`)]);
    // now flow 2 has the backlog (G1 sparse, G2..G5 bulk) and F20 is the sparse one: read before G2, after G1
    expect(out.two).toEqual(['G1', 'F20', 'G2', 'G3', 'G4', 'G5']);
    // 30 new flows from A (the first 16 sparse, then the sparse ring is full and the rest wait in the bulk ring), and
    // B's 5: A and B alternate while B has packets
    const three: string[] = out.three;
    expect(three).toHaveLength(35);
    const firstTen = three.slice(0, 10);
    expect(firstTen.filter((p) => p[0] === 'B')).toEqual(['B0', 'B1', 'B2', 'B3', 'B4']);
    // (30 flows share 256 buckets: one that found its bucket's packet unread waited in the bulk ring, so only the set is fixed)
    expect(three.filter((p) => p[0] === 'N').sort()).toEqual(Array.from({ length: 30 }, (_v, i) => `N${i}`).sort());
    // small datagrams and the fragments of a big one, one flow: read in the order sent
    expect(out.four).toEqual([...Array.from({ length: 10 }, (_v, i) => `S${i}`), 'L0', 'L1480', 'L2960', 'S10']);
    // a 22-byte TCP packet (2 bytes of header) found its flow empty and went to the sparse ring: the program ran to the end
    expect(out.five).toEqual(['U0', 'T22', 'U1', 'U2', 'U3', 'U4']);
    // attacker: a stream of new flows (30 destinations) behind a bulk flow of the same host queue fills the sparse ring to
    // its 16 (F0, N0..N14) and no further (N15..N29 wait behind F19 in the bulk ring), and cannot starve the bulk ring:
    // after 8 sparse turns in a row one goes to the bulk ring (F1, F2)
    const n = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_v, i) => `N${i + from}`);
    expect(out.six).toEqual(['F0', ...n(0, 6), 'F1', ...n(7, 14), ...Array.from({ length: 18 }, (_v, i) => `F${i + 2}`), ...n(15, 29)]);
    expect(out.after).toBe(0);
    expect(out.sojourn).toBe(16);
  });

  it('host queues keyed by remote host and protocol (the WAN TUN\'s): a source\'s ICMP and TCP are read beside its UDP backlog, not after it; the clock program loads for every offload variant', async () => {
    const out = lastLine(await child(REMOTE_CHILD));
    expect(out.hostQueues).toBe(8);
    // one ring a host queue: no sparse ring on this side
    expect(out.rings).toBe(8);
    // UDP, ICMP and TCP of one source: three different rings (protocol + (protocol >> 3) apart)
    expect(new Set(out.queues).size).toBe(3);
    expect(out.first).toBe(0);
    // the first round takes one packet of each ring, the ICMP and TCP among them; the UDP keeps its order
    expect(out.order).toHaveLength(22);
    expect(out.order.slice(0, 3).sort()).toEqual(['ICMP', 'TCP', 'U0']);
    expect(out.order.slice(3)).toEqual(Array.from({ length: 19 }, (_v, i) => `U${i + 1}`));
    expect(out.after).toBe(0);
    expect(out.programs).toEqual([{ hostQueues: 8, rings: 8, clock: 'stamps', note: '' }, { hostQueues: 8, rings: 8, clock: 'stamps', note: '' }]);
  });

  it('ring clock, fallback: without CAP_BPF the queue runs on the ring-empty bound and says why; nothing is left on the device', async () => {
    const out = lastLine(await child(NOBPF_CHILD, ['setpriv', '--bounding-set=-bpf,-sys_admin', '--inh-caps=-bpf,-sys_admin']));
    expect(out.clock.kind).toBe('empty');
    expect(out.clock.reason).toMatch(/^bpf (map|program load).*: Operation not permitted$/);
    expect(out.clsact).toBe(false);
  });

  it('ring clock on a persistent TUN: a killed reader\'s filter is replaced, not doubled, and removed on close with its clsact, which an operator\'s filter keeps', async () => {
    execFileSync('ip', ['netns', 'exec', NS, 'ip', 'tuntap', 'add', 'dev', 'tp0', 'mode', 'tun']);
    try {
      const killed = lastLine(await child(PERSIST_CHILD(true)));
      expect(killed).toMatchObject({ before: 0, clock: { kind: 'stamps' }, running: 1 });
      const tc = (...a: string[]) => execFileSync('ip', ['netns', 'exec', NS, 'tc', ...a]).toString();
      expect(tc('qdisc', 'show', 'dev', 'tp0')).toContain('clsact'); // what the killed reader left
      const next = lastLine(await child(PERSIST_CHILD(false)));
      expect(next).toEqual({ before: 1, clock: { kind: 'stamps' }, running: 1, after: 0, clsactAfter: false });

      // An operator's filter on the same clsact (ingress, a classic BPF program that matches nothing) keeps it, and is kept.
      const killedAgain = lastLine(await child(PERSIST_CHILD(true)));
      expect(killedAgain).toMatchObject({ before: 0, running: 1 });
      tc('filter', 'add', 'dev', 'tp0', 'ingress', 'prio', '7', 'bpf', 'bytecode', '1,6 0 0 0,');
      const withTheirs = lastLine(await child(PERSIST_CHILD(false)));
      expect(withTheirs).toEqual({ before: 1, clock: { kind: 'stamps' }, running: 1, after: 0, clsactAfter: true });
      expect(tc('filter', 'show', 'dev', 'tp0', 'ingress')).toMatch(/pref 7 bpf/);
    } finally {
      execFileSync('ip', ['netns', 'exec', NS, 'ip', 'tuntap', 'del', 'dev', 'tp0', 'mode', 'tun']);
    }
  });

  it('reads a kernel-routed UDP packet and injects a crafted one, zero-copy into wasm memory', async () => {
    const out = lastLine(await child(IO_CHILD));
    expect(out.name).toBe('t0');

    expect(out.read).toMatchObject({
      version: 4,
      ihl: 20,
      protocol: 17,
      src: '10.200.0.1',
      dst: '10.200.0.2',
      dstPort: 9999,
      payload: 'hello-tun',
    });
    expect(out.read.len).toBe(out.read.totalLength);
    expect(out.read.wakeups).toBeGreaterThanOrEqual(1);

    // slot 0 had the wrong verdict, slot 2 a length over slotSize
    expect(out.write.written).toBe(1);
    expect(out.write.drops).toBe(1);
    expect(out.write.received).toEqual([{ text: 'from-the-engine', from: '10.200.0.2:4242' }]);

    expect(out.rangeError).toMatch(/^RangeError: readBatch: slots or lengths fall outside the buffer/);
    expect(out.goneAfterClose).toBe(true);
    expect(out.afterClose).toBe('TUN device "t0" is closed');
  });

  it('fails with a one-line EPERM error when root lacks CAP_NET_ADMIN', async () => {
    // uid 0 can still open /dev/net/tun, so this reaches TUNSETIFF, which
    // is where the kernel checks CAP_NET_ADMIN.
    const out = lastLine(
      await child(EPERM_CHILD, ['setpriv', '--bounding-set=-net_admin', '--inh-caps=-net_admin']),
    );
    expect(out).toEqual({
      message: 'cannot create TUN device "t1": Operation not permitted (EPERM) — run as root with CAP_NET_ADMIN',
      code: 'EPERM',
      syscall: 'ioctl',
    });
  });

  it('fails with a one-line error for an unprivileged user', async () => {
    const out = lastLine(await child(EPERM_CHILD, ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']));
    // Stock Debian has /dev/net/tun 0666: open succeeds and TUNSETIFF says
    // EPERM. Hardened hosts (0600) refuse the open itself with EACCES.
    const worldRw = (statSync('/dev/net/tun').mode & 0o006) === 0o006;
    if (worldRw) {
      expect(out).toEqual({
        message: 'cannot create TUN device "t1": Operation not permitted (EPERM) — run as root with CAP_NET_ADMIN',
        code: 'EPERM',
        syscall: 'ioctl',
      });
    } else {
      expect(out).toEqual({
        message:
          'cannot create TUN device "t1": open /dev/net/tun: Permission denied (EACCES) — run as root with CAP_NET_ADMIN',
        code: 'EACCES',
        syscall: 'open',
      });
    }
  });

  it('rejects a name the kernel would truncate, before touching the kernel', () => {
    let err: (Error & { code?: string }) | undefined;
    try {
      TunDevice.open('a-name-of-16-byt');
    } catch (e) {
      err = e as Error & { code?: string };
    }
    expect(err?.code).toBe('EINVAL');
    expect(err?.message).toBe(
      'cannot create TUN device "a-name-of-16-byt": Invalid argument (EINVAL) — interface names are 1 to 15 bytes, without spaces, \'/\' or \':\'',
    );
    expect(() => TunDevice.open('two\nlines')).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});
