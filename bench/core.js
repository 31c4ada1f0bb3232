// Core microbenchmark: packets per second through the engine's `process`
// on one core, with 1k, 100k and 1M established flows, and table bytes per
// flow. Only the process() calls are timed; refilling the slots with fresh
// untranslated packets between batches is not.
//
//   node bench/core.js [--flows 1000,100000,1000000] [--seconds 2] [--json FILE]

import { writeFileSync } from 'node:fs';
import { Engine } from '../dist/engine/engine.js';
import { ipToRaw, maskRaw } from '../dist/engine/abi.js';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, x, i, arr) => {
  if (x.startsWith('--')) a.push([x.slice(2), arr[i + 1] && !arr[i + 1].startsWith('--') ? arr[i + 1] : 'true']);
  return a;
}, []));
const flowCounts = (args.flows ?? '1000,100000,1000000').split(',').map(Number);
const seconds = Number(args.seconds ?? 2);

function csum(b, off, len, init = 0) {
  let s = init;
  for (let i = 0; i < len; i += 2) s += (b[off + i] << 8) | (b[off + i + 1] ?? 0);
  while (s >> 16) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** A 64-byte IPv4/UDP packet with valid checksums, written at `off`. */
function writeUdp(b, off, src, sport, dst, dport) {
  b.fill(0, off, off + 64);
  b[off] = 0x45; b[off + 3] = 64; b[off + 5] = 1; b[off + 8] = 64; b[off + 9] = 17;
  b.set(src, off + 12); b.set(dst, off + 16);
  const h = ~csum(b, off, 20) & 0xffff; b[off + 10] = h >> 8; b[off + 11] = h & 0xff;
  const u = off + 20;
  b[u] = sport >> 8; b[u + 1] = sport & 0xff; b[u + 2] = dport >> 8; b[u + 3] = dport & 0xff; b[u + 5] = 44;
  for (let i = 8; i < 44; i++) b[u + i] = i;
  const ps = csum(new Uint8Array([...src, ...dst, 0, 17, 0, 44]), 0, 12);
  let c = ~csum(b, u, 44, ps) & 0xffff; if (c === 0) c = 0xffff;
  b[u + 6] = c >> 8; b[u + 7] = c & 0xff;
}

function flowTuple(i) {
  const sock = i % 4096, rem = Math.floor(i / 4096);
  return {
    src: [192, 168, 1, 10 + (sock >> 8)], sport: 10000 + (sock & 255),
    dst: [198, 51, 100 + ((rem >> 8) & 3), rem & 255], dport: 53 + (rem >> 10),
  };
}

function run(nFlows) {
  const e = Engine.load({ maxFlows: Math.max(nFlows, 1024), seed: 1 });
  const x = e.x;
  x.setLanNet(0, ipToRaw('192.168.1.0'), maskRaw(24)); x.setLanNetCount(1);
  x.setTimeouts(7440, 240, 3600, 60, 30);
  let now = 10_000;
  x.setWanAddress(ipToRaw('203.0.113.1'), now);
  const mem = new Uint8Array(e.buffer);
  const lens = new DataView(e.buffer);
  const S = e.slotCount, base = e.slotBase, size = e.slotSize;
  for (let i = 0; i < S; i++) lens.setUint32(e.lenBase + 4 * i, 64, true);
  // Open every flow once.
  for (let i = 0; i < nFlows; i += S) {
    const n = Math.min(S, nFlows - i);
    for (let k = 0; k < n; k++) { const t = flowTuple(i + k); writeUdp(mem, base + k * size, t.src, t.sport, t.dst, t.dport); }
    x.process(n, now, 0);
  }
  const active = x.flowActive();
  // Batches of random established flows, prepared outside the timed region.
  const variants = 64;
  const images = [];
  for (let v = 0; v < variants; v++) {
    const img = new Uint8Array(S * 64);
    for (let k = 0; k < S; k++) { const t = flowTuple(Math.floor(Math.random() * nFlows)); writeUdp(img, k * 64, t.src, t.sport, t.dst, t.dport); }
    images.push(img);
  }
  const rx0 = e.counter(2);
  let packets = 0, ns = 0n, v = 0;
  const batchTimes = [];
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    for (let r = 0; r < 50; r++) {
      const img = images[v++ % variants];
      for (let k = 0; k < S; k++) mem.set(img.subarray(k * 64, k * 64 + 64), base + k * size);
      const t0 = process.hrtime.bigint();
      x.process(S, now, 0);
      const dt = process.hrtime.bigint() - t0;
      ns += dt; packets += S; batchTimes.push(Number(dt));
    }
  }
  const passed = e.counter(2) - rx0;
  batchTimes.sort((a, b) => a - b);
  const medianBatchNs = batchTimes[batchTimes.length >> 1];
  return {
    flows: nFlows, active, packets, passed,
    mpps: packets / (Number(ns) / 1e9) / 1e6,
    medianMpps: S / (medianBatchNs / 1e9) / 1e6,
    nsPerPacket: Number(ns) / packets,
    bytesPerFlow: e.bytesPerFlow(),
    memoryMiB: e.memoryBytes / 1048576,
  };
}

const results = flowCounts.map(run);
console.log('\ncore: engine process() on one core, 64-byte UDP, LAN→WAN, established flows');
console.log('| flows | Mpps (mean) | Mpps (median batch) | ns/packet | table bytes/flow | Wasm memory MiB | passed |');
console.log('|---:|---:|---:|---:|---:|---:|---:|');
for (const r of results) {
  console.log(`| ${r.flows} | ${r.mpps.toFixed(2)} | ${r.medianMpps.toFixed(2)} | ${r.nsPerPacket.toFixed(1)} | ${r.bytesPerFlow.toFixed(1)} | ${r.memoryMiB.toFixed(1)} | ${r.passed === r.packets ? 'all' : `${r.passed}/${r.packets}`} |`);
}
if (args.json) writeFileSync(args.json, JSON.stringify(results, null, 2));
