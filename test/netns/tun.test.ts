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
import { TunDevice } from '../../src/tun/tun.js';

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

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 30_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\nstdout: ${stdout}\nstderr: ${stderr}`));
      else resolve(stdout);
    });
  });
}

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

describe.skipIf(skipUnless({ root: true, tun: true, tools: ['ip', 'setpriv'] }))('TunDevice on a real TUN (netns)', () => {
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
