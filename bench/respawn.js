// Restart keeps state (issue 9): snapshot sizes and costs, and the respawn
// time of the real `vpnmasq run` with a restored table.
//
//   node bench/respawn.js [--flows 65536,1000000] [--runs 5] [--lab-flows 65536] [--no-lab] [--regular]
//
// 1. In process, per flow count: an engine filled with that many UDP flows
//    is captured (the synchronous copy the data path waits for), written
//    (checksum + temp file + rename, off the data path) and restored into a
//    second engine; sizes and times are printed.
// 2. As root: a namespace lab, a snapshot of --lab-flows flows made for its
//    WAN address, then --runs times: `vpnmasq run` started right after the
//    previous one was killed with -9 (as vpnmasq-respawn does now), and the
//    time from the new process's start to forwarding with the restored
//    state, split into node start-up (+ module loading, config), load Wasm,
//    stale clean-up, open TUNs, WAN address, restore, routes; median and worst.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { Engine } from '../dist/engine/engine.js';
import { ipToRaw, maskRaw } from '../dist/engine/abi.js';
import { capture, restoreInto, writeCapture } from '../dist/snapshot/state.js';
import { decode } from '../dist/snapshot/format.js';
import { fillFlows } from './udp.js';

const here = dirname(fileURLToPath(import.meta.url));
const CLI = join(here, '..', 'dist', 'cli', 'main.js');
const args = Object.fromEntries(process.argv.slice(2).reduce((a, x, i, arr) => {
  if (x.startsWith('--')) a.push([x.slice(2), arr[i + 1] && !arr[i + 1].startsWith('--') ? arr[i + 1] : 'true']);
  return a;
}, []));
const flowCounts = (args.flows ?? '65536,1000000').split(',').map(Number);
const RUNS = Number(args.runs ?? 5);
const LAB_FLOWS = Number(args['lab-flows'] ?? 65536);

/**
 * Flow i: 4096 LAN sockets (16 hosts × 256 ports: endpoint-independent
 * mapping gives each socket one WAN port) toward pseudo-random servers;
 * with --regular, bench/core.js's consecutive servers (198.51.100-103.x,
 * ports 53+), which the engine's hash once clustered (a restore of a
 * million of them took 4× as long; nat/hash.ts).
 */
const REGULAR = args.regular === 'true';
function flowTuple(i) {
  if (REGULAR) {
    const sock = i % 4096, rem = Math.floor(i / 4096);
    return { src: [192, 168, 1, 10 + (sock >> 8)], sport: 10000 + (sock & 255), dst: [198, 51, 100 + ((rem >> 8) & 3), rem & 255], dport: 53 + (rem >> 10) };
  }
  let h = Math.imul(i + 1, 0x9e3779b1) >>> 0; h ^= h >>> 15; h = Math.imul(h, 0x85ebca77) >>> 0; h ^= h >>> 13;
  return { src: [192, 168, 1, 10 + (i % 16)], sport: 10000 + ((i >> 4) % 256), dst: [100 + (h & 63), (h >>> 8) & 255, (h >>> 16) & 255, 1 + ((h >>> 24) % 250)], dport: 443 };
}

function configure(e, now) {
  const x = e.x;
  x.setLanNet(0, ipToRaw('192.168.1.0'), maskRaw(24)); x.setLanNetCount(1);
  e.applySettings({
    tcp_timeout: 7440, tcp_transitory_timeout: 240, udp_timeout: 3600, icmp_timeout: 60, frag_timeout: 30,
    esp_timeout: 1800, esp_init_timeout: 120, esp_init_retries: 5, ike_timeout: 3600, natt_timeout: 300, gre_timeout: 7440,
    parallel_sessions: 0, esp_guess: 0, masq_port_lo: 61000, masq_port_hi: 65535,
    unreplied_timeout: 30, src_max_flows: 0, src_max_ike: 256, src_max_calls: 256, src_max_esp_pending: 16, src_max_frags: 256,
  });
  x.setWanAddress(ipToRaw('203.0.113.1'), now);
}

/** An engine with `n` UDP flows. */
function filled(n, maxFlows = n) {
  const e = Engine.load({ maxFlows, seed: 1 });
  const now = 10_000;
  configure(e, now);
  fillFlows(e, n, flowTuple, now);
  return { e, now };
}

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s.length % 2 ? s[(s.length - 1) >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const fmt = (x) => x.toFixed(1);

async function sizes() {
  const dir = mkdtempSync(join(tmpdir(), 'vpnmasq-bench-'));
  const rows = [];
  for (const n of flowCounts) {
    const { e, now } = filled(n);
    const copies = [];
    let c;
    for (let i = 0; i < 5; i++) { c = capture(e, ipToRaw('203.0.113.1'), now); copies.push(c.copyMs); }
    const file = join(dir, `snap-${n}.bin`);
    const t0 = performance.now();
    const bytes = await writeCapture(file, c);
    const writeMs = performance.now() - t0;
    const e2 = Engine.load({ maxFlows: n, seed: 2 });
    configure(e2, now);
    const { readFileSync } = await import('node:fs');
    const t1 = performance.now();
    const res = restoreInto(e2, decode(readFileSync(file)), ipToRaw('203.0.113.1'));
    const restoreMs = performance.now() - t1;
    rows.push({ flows: n, active: e.x.flowActive(), restored: res.entries.flows, bytes, mib: +(bytes / 1048576).toFixed(2),
      bytesPerFlow: +(bytes / n).toFixed(1), copyMsMedian: +median(copies).toFixed(2), copyMsWorst: +Math.max(...copies).toFixed(2),
      writeMs: +writeMs.toFixed(1), readRestoreMs: +restoreMs.toFixed(1) });
  }
  rmSync(dir, { recursive: true, force: true });
  console.log('snapshot size and cost (in process):');
  console.table(rows);
  return rows;
}

async function respawn() {
  const { Lab } = await import('../dist/lab/lab.js');
  const lab = Lab.create({ id: `bn${process.pid % 10000}`, lanHosts: 1, wanHosts: 1 });
  const dir = mkdtempSync(join(tmpdir(), 'vpnmasq-bench-'));
  const sock = join(dir, 'vpnmasq.sock');
  const config = join(dir, 'vpnmasq');
  writeFileSync(config, `config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n\toption control_socket '${sock}'\n\toption snapshot_dir '${dir}'\n\toption max_flows '${LAB_FLOWS}'\n\toption udp_timeout '3600'\n`);
  const { e, now } = filled(LAB_FLOWS);
  const snapFile = join(dir, 'snapshot-tin.bin');
  await writeCapture(snapFile, capture(e, ipToRaw(lab.addr.routerWan), now));
  let proc = null;
  let out = '';
  const start = () => new Promise((resolve, reject) => {
    out = '';
    const t = performance.now();
    proc = lab.spawn(lab.router, ['node', CLI, 'run', '--config', config]);
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { out += d; });
    const iv = setInterval(() => {
      if (out.includes('vpnmasq ready')) { clearInterval(iv); resolve(performance.now() - t); }
      if (proc.exitCode !== null) { clearInterval(iv); reject(new Error(out)); }
    }, 5);
  });
  const kill9 = () => new Promise((r) => { proc.once('exit', r); proc.kill('SIGKILL'); });
  const rows = [];
  try {
    for (let i = 0; i < RUNS; i++) {
      const tKill = performance.now();
      if (proc) await kill9();
      const killMs = proc ? performance.now() - tKill : 0;
      if (i > 0 && statSync(snapFile).size < 1000) throw new Error('snapshot vanished');
      await start();
      const st = JSON.parse(execFileSync('ip', ['netns', 'exec', lab.router, 'node', CLI, 'status', '--json', '--socket', sock], { encoding: 'utf8' }));
      rows.push({ run: i + 1, restoredFlows: st.snapshot.restored?.entries.flows ?? 0, ...st.startup, killMs: +killMs.toFixed(1),
        killToForwardingMs: +(killMs + st.startup.forwardingAtMs).toFixed(1) });
      if (!st.snapshot.restored) console.log(`run ${i + 1}: not restored: ${st.snapshot.refused}`);
      // let the new process write its own snapshot before the next kill (1 s interval)
      await new Promise((r) => setTimeout(r, 1500));
    }
  } finally {
    if (proc && proc.exitCode === null) { proc.kill('SIGTERM'); await new Promise((r) => proc.once('exit', r)); }
    lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`respawn with ${LAB_FLOWS} restored flows (ms from the new process's start; ${RUNS} runs):`);
  console.table(rows);
  const keys = ['nodeAndImportsMs', 'configMs', 'checksMs', 'loadWasmMs', 'staleMs', 'tunsMs', 'wanMs', 'restoreMs', 'routesMs', 'forwardingAtMs', 'killToForwardingMs'];
  const summary = Object.fromEntries(keys.map((k) => [k, { median: fmt(median(rows.map((r) => r[k]))), worst: fmt(Math.max(...rows.map((r) => r[k]))) }]));
  console.table(summary);
  return { rows, summary };
}

await sizes();
if (args['no-lab'] !== 'true') {
  if (process.getuid && process.getuid() !== 0) console.log('respawn part skipped: needs root (namespaces, TUN)');
  else await respawn();
}
