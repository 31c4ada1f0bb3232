// Core microbenchmark: packets per second through the engine's `process`
// on one core, with 1k, 100k and 1M established flows, and table bytes per
// flow. Only the process() calls are timed; refilling the slots with fresh
// untranslated packets between batches is not. Each flow count runs with
// option acct off (the default) and on (per-flow byte counters: 16 bytes
// more per flow, one more store per packet). The engine's memory is on
// transparent huge pages where the kernel has them, as in the daemon
// (src/datapath/hugepages.ts); --huge-pages off,on runs each size both ways,
// --huge-pages ab compares the two in one process instead (both engines
// loaded, batches interleaved: 20 of one, then 20 of the other, 300 rounds;
// the machine's drift then hits both alike) and prints only that table.
//
//   node bench/core.js [--flows 1000,100000,1000000] [--acct off,on] [--huge-pages on|off|off,on|ab] [--seconds 2] [--json FILE]

import { writeFileSync } from 'node:fs';
import { Engine } from '../dist/engine/engine.js';
import { ipToRaw, maskRaw } from '../dist/engine/abi.js';
import { adviseHugePages } from '../dist/datapath/hugepages.js';
import { csum, writeUdp } from './udp.js';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, x, i, arr) => {
  if (x.startsWith('--')) a.push([x.slice(2), arr[i + 1] && !arr[i + 1].startsWith('--') ? arr[i + 1] : 'true']);
  return a;
}, []));
const flowCounts = (args.flows ?? '1000,100000,1000000').split(',').map(Number);
const seconds = Number(args.seconds ?? 2);
const acctModes = (args.acct ?? 'off,on').split(',').map((a) => {
  if (a !== 'off' && a !== 'on') throw new Error(`--acct: '${a}' is not off or on`);
  return a === 'on';
});
const hugeAb = args['huge-pages'] === 'ab';
const hugeModes = (hugeAb ? 'on' : args['huge-pages'] ?? 'on').split(',').map((a) => {
  if (a !== 'off' && a !== 'on') throw new Error(`--huge-pages: '${a}' is not off or on`);
  return a === 'on';
});

function flowTuple(i) {
  const sock = i % 4096, rem = Math.floor(i / 4096);
  return {
    src: [192, 168, 1, 10 + (sock >> 8)], sport: 10000 + (sock & 255),
    dst: [198, 51, 100 + ((rem >> 8) & 3), rem & 255], dport: 53 + (rem >> 10),
  };
}

// The config defaults, but a UDP timeout of 3600 s so no flow expires during a run.
const SETTINGS = {
  tcp_timeout: 7440, tcp_transitory_timeout: 240, udp_timeout: 3600, icmp_timeout: 60, frag_timeout: 30,
  esp_timeout: 1800, esp_init_timeout: 120, esp_init_retries: 5, ike_timeout: 3600, natt_timeout: 300, gre_timeout: 7440,
  parallel_sessions: 0, esp_guess: 0, masq_port_lo: 61000, masq_port_hi: 65535,
  unreplied_timeout: 30, src_max_flows: 0, src_max_ike: 256, src_max_calls: 256, src_max_esp_pending: 16, src_max_frags: 256,
};

/** An engine with nFlows established flows; alias[i]: flow i's translated source port. */
function loaded(nFlows, acct, huge) {
  const e = Engine.load({ maxFlows: Math.max(nFlows, 1024), acct, seed: 1, ...(huge ? { adviseMemory: adviseHugePages } : {}) });
  const x = e.x;
  x.setLanNet(0, ipToRaw('192.168.1.0'), maskRaw(24)); x.setLanNetCount(1);
  e.applySettings({ ...SETTINGS });
  let now = 10_000;
  x.setWanAddress(ipToRaw('203.0.113.1'), now);
  const mem = new Uint8Array(e.buffer);
  const lens = new DataView(e.buffer);
  const S = e.slotCount, base = e.slotBase, size = e.slotSize;
  for (let i = 0; i < S; i++) lens.setUint32(e.lenBase + 4 * i, 64, true);
  // Open every flow once, noting the alias port each got (the translated source port left in its slot).
  const alias = new Uint16Array(nFlows);
  for (let i = 0; i < nFlows; i += S) {
    const n = Math.min(S, nFlows - i);
    for (let k = 0; k < n; k++) { const t = flowTuple(i + k); writeUdp(mem, base + k * size, t.src, t.sport, t.dst, t.dport, true); }
    x.process(n, 0, now);
    for (let k = 0; k < n; k++) alias[i + k] = (mem[base + k * size + 20] << 8) | mem[base + k * size + 21];
  }
  return { e, x, mem, S, base, size, now, alias };
}

/** Batches of random established flows (side 1: their replies), prepared outside the timed region. */
function batchImages(nFlows, S, side, alias, variants = 64) {
  const wan = [203, 0, 113, 1];
  const images = [];
  for (let v = 0; v < variants; v++) {
    const img = new Uint8Array(S * 64);
    for (let k = 0; k < S; k++) {
      const j = Math.floor(Math.random() * nFlows);
      const t = flowTuple(j);
      if (side === 0) writeUdp(img, k * 64, t.src, t.sport, t.dst, t.dport, true);
      else writeUdp(img, k * 64, t.dst, t.dport, wan, alias[j], true);
    }
    images.push(img);
  }
  return images;
}

/** Copies a batch image (64 bytes a slot) into the slots and times one process() call over them, in ns. */
function timedBatch({ x, mem, S, base, size, now }, img, side) {
  for (let k = 0; k < S; k++) mem.set(img.subarray(k * 64, k * 64 + 64), base + k * size);
  const t0 = process.hrtime.bigint();
  x.process(S, side, now);
  return Number(process.hrtime.bigint() - t0);
}

/** side 0: LAN→WAN packets of random established flows; side 1: their replies, WAN→LAN to the flows' alias ports. */
function run(nFlows, acct, side = 0, huge = true) {
  const eng = loaded(nFlows, acct, huge);
  const { e, x, S, alias } = eng;
  const active = x.flowActive();
  const variants = 64;
  const images = batchImages(nFlows, S, side, alias, variants);
  const passCounter = side === 0 ? 2 : 3;
  const rx0 = e.counter(passCounter);
  let packets = 0, ns = 0, v = 0;
  const batchTimes = [];
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    for (let r = 0; r < 50; r++) {
      const dt = timedBatch(eng, images[v++ % variants], side);
      ns += dt; packets += S; batchTimes.push(dt);
    }
  }
  const passed = e.counter(passCounter) - rx0;
  batchTimes.sort((a, b) => a - b);
  const medianBatchNs = batchTimes[batchTimes.length >> 1];
  return {
    flows: nFlows, acct, side: side === 0 ? 'LAN→WAN' : 'WAN→LAN', active, packets, passed,
    pages: e.hugePages?.advisedBytes ? `${e.hugePages.pageBytes >> 20} MiB` : '4 KiB',
    mpps: packets / (Number(ns) / 1e9) / 1e6,
    medianMpps: S / (medianBatchNs / 1e9) / 1e6,
    nsPerPacket: Number(ns) / packets,
    bytesPerFlow: e.bytesPerFlow(),
    memoryMiB: e.memoryBytes / 1048576,
  };
}

// ---- VPN flows: ESP associations and PPTP/GRE calls ------------------------

/** An IPv4 packet with a valid header checksum (the engine checks only that one) at `off`. */
function writeIp(b, off, src, dst, proto, payload) {
  const total = 20 + payload.length;
  b.fill(0, off, off + 20);
  b[off] = 0x45; b[off + 2] = total >> 8; b[off + 3] = total & 0xff; b[off + 5] = 1; b[off + 8] = 64; b[off + 9] = proto;
  b.set(src, off + 12); b.set(dst, off + 16);
  const h = ~csum(b, off, 20) & 0xffff; b[off + 10] = h >> 8; b[off + 11] = h & 0xff;
  b.set(payload, off + 20);
  return total;
}
const be32 = (v) => [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
const be16 = (v) => [(v >>> 8) & 255, v & 255];
const espPayload = (spi) => Uint8Array.from([...be32(spi), 0, 0, 0, 1, ...new Array(36).fill(7)]);
const grePayload = (call) => Uint8Array.from([0x30, 0x81, 0x88, 0x0b, 0, 24, ...be16(call), 0, 0, 0, 1, 0, 0, 0, 0, ...new Array(20).fill(9)]);
function tcpSeg(sport, dport, flags, data = []) {
  return Uint8Array.from([...be16(sport), ...be16(dport), 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0, ...data]);
}
function pptpMsg(ctype, callId, peer = 0) {
  const len = { 7: 168, 8: 32 }[ctype];
  const m = new Array(len).fill(0);
  m.splice(0, 12, ...be16(len), 0, 1, 0x1a, 0x2b, 0x3c, 0x4d, ...be16(ctype), 0, 0);
  m.splice(12, 4, ...be16(callId), ...be16(peer));
  return m;
}

function runVpn(kind, n) {
  const e = Engine.load({ maxFlows: 65536, seed: 1 });
  const x = e.x;
  x.setLanNet(0, ipToRaw('192.168.1.0'), maskRaw(24)); x.setLanNetCount(1);
  e.applySettings({ ...SETTINGS, parallel_sessions: 1 });
  const now = 10_000;
  x.setWanAddress(ipToRaw('203.0.113.1'), now);
  const mem = new Uint8Array(e.buffer);
  const dv = new DataView(e.buffer);
  const S = e.slotCount, base = e.slotBase, size = e.slotSize;
  const WAN = [203, 0, 113, 1];
  const host = (i) => [192, 168, 1, 10 + (i % 200)];
  const server = (i) => [198, 51, 100 + (i >> 8), i & 255];
  const one = (side, src, dst, proto, payload) => {
    dv.setUint32(e.lenBase, writeIp(mem, base, src, dst, proto, payload), true);
    x.process(1, side, now);
    if (mem[e.verdictBase] !== 1) throw new Error(`${kind} set-up packet dropped: ${JSON.stringify(e.drops())}`);
    return mem.slice(base, base + 64);
  };
  const aliases = [];
  for (let i = 0; i < n; i++) {
    if (kind === 'esp') {
      one(0, host(i), server(i), 50, espPayload(0x10000 + i));
      one(1, server(i), WAN, 50, espPayload(0x20000 + i));
    } else {
      const sport = 20000 + i;
      const syn = one(0, host(i), server(i), 6, tcpSeg(sport, 1723, 0x02));
      const wanPort = (syn[20] << 8) | syn[21];
      one(1, server(i), WAN, 6, tcpSeg(1723, wanPort, 0x12));
      const ocrq = one(0, host(i), server(i), 6, tcpSeg(sport, 1723, 0x18, pptpMsg(7, 1)));
      const alias = (ocrq[40 + 12] << 8) | ocrq[40 + 13];
      one(1, server(i), WAN, 6, tcpSeg(1723, wanPort, 0x18, pptpMsg(8, 500 + i, alias)));
      aliases.push(alias);
    }
  }
  const results = [];
  for (const side of [0, 1]) {
    const images = [];
    for (let v = 0; v < 16; v++) {
      const img = new Uint8Array(S * 64);
      for (let k = 0; k < S; k++) {
        const i = Math.floor(Math.random() * n);
        if (kind === 'esp') {
          if (side === 0) writeIp(img, k * 64, host(i), server(i), 50, espPayload(0x10000 + i));
          else writeIp(img, k * 64, server(i), WAN, 50, espPayload(0x20000 + i));
        } else if (side === 0) writeIp(img, k * 64, host(i), server(i), 47, grePayload(500 + i));
        else writeIp(img, k * 64, server(i), WAN, 47, grePayload(aliases[i]));
      }
      images.push(img);
    }
    for (let k = 0; k < S; k++) dv.setUint32(e.lenBase + 4 * k, 64, true);
    const pass0 = e.counter(side === 0 ? 2 : 3);
    let ns = 0, packets = 0, v = 0;
    const deadline = Date.now() + seconds * 500;
    while (Date.now() < deadline) {
      for (let r = 0; r < 50; r++) {
        ns += timedBatch({ x, mem, S, base, size, now }, images[v++ % images.length], side); packets += S;
      }
    }
    const passed = e.counter(side === 0 ? 2 : 3) - pass0;
    results.push({ kind, n, side: side === 0 ? 'LAN→WAN' : 'WAN→LAN', mpps: packets / (Number(ns) / 1e9) / 1e6, nsPerPacket: Number(ns) / packets, passed, packets });
  }
  return results;
}

/** --huge-pages ab: the median batch of the engine on 4 KiB pages and on huge pages, batches interleaved in one process. */
function abHuge(nFlows, acct) {
  const engines = [loaded(nFlows, acct, false), loaded(nFlows, acct, true)];
  const images = batchImages(nFlows, engines[0].S, 0, engines[0].alias);
  const times = [[], []];
  let v = 0;
  for (let round = 0; round < 300; round++) {
    for (const which of (round & 1) ? [0, 1] : [1, 0]) {
      for (let r = 0; r < 20; r++) {
        const dt = timedBatch(engines[which], images[v++ % images.length], 0);
        if (round >= 20) times[which].push(dt); // the first rounds warm both up
      }
    }
  }
  const mpps = times.map((t, i) => { t.sort((a, b) => a - b); return engines[i].S / (t[t.length >> 1] / 1e9) / 1e6; });
  const h = engines[1].e.hugePages;
  return { flows: nFlows, acct, small: mpps[0], huge: mpps[1], ratio: mpps[1] / mpps[0], advised: h?.advisedBytes ?? 0, off: h?.off };
}

if (hugeAb) {
  const ab = flowCounts.flatMap((n) => acctModes.map((acct) => abHuge(n, acct)));
  console.log('\ncore: 4 KiB pages against huge pages, one process, batches interleaved (LAN→WAN, median batch)');
  console.log('| flows | acct | 4 KiB pages Mpps | huge pages Mpps | huge / 4 KiB | advised |');
  console.log('|---:|---|---:|---:|---:|---|');
  for (const r of ab) {
    console.log(`| ${r.flows} | ${r.acct ? 'on' : 'off'} | ${r.small.toFixed(2)} | ${r.huge.toFixed(2)} | ${r.ratio.toFixed(3)} | ${r.off ?? `${(r.advised / 1048576).toFixed(0)} MiB`} |`);
  }
  if (args.json) writeFileSync(args.json, JSON.stringify({ hugePagesAb: ab }, null, 2));
  process.exit(0);
}

const results = flowCounts.flatMap((n) => acctModes.flatMap((acct) => hugeModes.flatMap((huge) => [run(n, acct, 0, huge), run(n, acct, 1, huge)])));
console.log('\ncore: engine process() on one core, 64-byte UDP, established flows (WAN→LAN: their replies)');
console.log('| flows | acct | pages | direction | Mpps (mean) | Mpps (median batch) | ns/packet | table bytes/flow | Wasm memory MiB | passed |');
console.log('|---:|---|---|---|---:|---:|---:|---:|---:|---:|');
for (const r of results) {
  console.log(`| ${r.flows} | ${r.acct ? 'on' : 'off'} | ${r.pages} | ${r.side} | ${r.mpps.toFixed(2)} | ${r.medianMpps.toFixed(2)} | ${r.nsPerPacket.toFixed(1)} | ${r.bytesPerFlow.toFixed(1)} | ${r.memoryMiB.toFixed(1)} | ${r.passed === r.packets ? 'all' : `${r.passed}/${r.packets}`} |`);
}
const vpn = [...runVpn('esp', 1000), ...runVpn('gre', 1000)];
console.log('\ncore: VPN flows, 64-byte packets, 1000 ESP associations / 1000 PPTP calls (GRE), random per packet');
console.log('| kind | direction | Mpps | ns/packet | passed |');
console.log('|---|---|---:|---:|---:|');
for (const r of vpn) {
  console.log(`| ${r.kind} | ${r.side} | ${r.mpps.toFixed(2)} | ${r.nsPerPacket.toFixed(1)} | ${r.passed === r.packets ? 'all' : `${r.passed}/${r.packets}`} |`);
}
if (args.json) writeFileSync(args.json, JSON.stringify({ udp: results, vpn }, null, 2));
