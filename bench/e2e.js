#!/usr/bin/env node
// End-to-end benchmark: 64-byte UDP packets (IPv4 20 + UDP 8 + 36 payload),
// 16 flows, LAN namespace -> router namespace -> WAN namespace, through
//   (a) the Linux kernel's own nftables masquerade in the router namespace, and
//   (b) vpnmasq running in the router namespace,
// in the same run on the same lab topology, with the identical generator.
// Reports delivered packets/s at the receiver (exact: bytes received by the
// iperf3 server / 36), the sender's rate, loss, and median ping RTT LAN->WAN.
//
// Then (unless --no-mix) a mixed run through the same two router modes, all
// 64-byte packets at once: plain UDP (iperf3, 8 flows, lan1), NAT-T (UDP from
// port 4500 to port 4500, lan2, bench/espgen.py) and ESP (raw IP protocol 50,
// one SPI per LAN host, lan1 and lan2, bench/espgen.py). The ESP responder in the WAN
// host answers the first packet of each SPI once with an SPI of its own, as
// an IPsec peer would, before the blast starts (lan2 only after lan1 is
// answered). Delivered packets are counted per class and per SPI by nftables
// counters on the WAN host's input hook; a second table shows them.
//
//   sudo node bench/e2e.js [--reps 5] [--seconds 3] [--kernel-only] [--json FILE]
//                          [--cli dist/cli/main.js] [--clients 1] [--pings 200]
//                          [--no-mix] [--mix-reps N] [--mix-flows 8]
//                          [--no-tcp] [--tcp-only] [--tcp-reps 3] [--tcp-seconds 3] [--offload-compare]
//
// Then (unless --no-tcp) bulk TCP through each mode (bench/e2e/tcp.js): iperf3
// 1 and 4 streams, upload and download, ping idle and under load, CPU per GB.
//
// Needs root, iproute2, nftables, iperf3, iputils-ping, python3 (for the mix;
// skipped with a note without it), and `npx tsc` having built dist/lab/lab.js.
// Exit codes: 0 ok; 1 vpnmasq missing/failed (unless --kernel-only) or the
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO, firstLine, have, log, reachable } from './e2e/common.js';

const USAGE = `usage: sudo node bench/e2e.js [options]
  --reps N         repetitions per mode (default 5)
  --seconds S      seconds per repetition (default 3)
  --flows N        UDP flows (default 16)
  --clients N      iperf3 client processes the flows are split over (default 1)
  --pings N        pings for the latency measurement, 10 ms apart (default 200)
  --kernel-only    bench the kernel's nftables masquerade only
  --cli PATH       vpnmasq CLI (default <repo>/dist/cli/main.js)
  --json FILE      also write a JSON summary to FILE
  --svg FILE       the tables as an SVG chart (default bench-e2e.svg; --no-svg: none)
  --no-warmup      skip the 1 s unmeasured warm-up run per mode
  --mix / --no-mix the mixed ESP + NAT-T + UDP run after the plain one (default on)
  --mix-reps N     repetitions of the mixed run per mode (default: --reps)
  --mix-flows N    plain UDP flows in the mixed run (default 8)
  --tcp / --no-tcp the TCP run (1 and 4 streams, both directions, ping under load, CPU/GB; default on)
  --tcp-only       only the TCP run (no 64-byte UDP, no mix)
  --rounds N       N rounds, the modes taking turns (kernel, vpnmasq, ..., kernel, vpnmasq, ...): each TCP row's
                   repetitions and the 64-byte UDP run's --reps spread over them and pooled, so a machine that drifts
                   over minutes drifts for every mode alike (default 3; the mixed run is in the first round only)
  --tcp-reps N     repetitions per TCP row in each round (default 1)
  --tcp-seconds S  seconds per TCP repetition (default 3)
  --offload-compare  also run the TCP rows through vpnmasq with option offload '0'
  --no-tun-path    skip the third mode, vpnmasq with option flow_offload '0' (every packet through the TUNs, without the kernel fast path the default runs)
  --router-cpu PCT   vpnmasq gets PCT % of one CPU (cgroup v1 cpu group: a router slower than its LAN hosts; the kernel NAT is not limited)
  --busy-poll US   vpnmasq with option busy_poll US (microseconds; default 0)`;

function parseArgs(argv) {
  const a = {
    reps: 5, seconds: 3, flows: 16, clients: 1, pings: 200, kernelOnly: false, cli: null, json: null, svg: resolve('bench-e2e.svg'), warmup: true,
    mix: true, mixReps: null, mixFlows: 8, tcp: true, tcpOnly: false, tcpReps: 1, tcpSeconds: 3, offloadCompare: false, tunPath: true, busyPoll: 0, rounds: 3,
  };
  const num = (name, v, min, max) => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min || n > max) throw new Error(`${name} wants a number in ${min}..${max}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const eq = k.indexOf('=');
    const key = eq > 0 ? k.slice(0, eq) : k;
    const val = () => (eq > 0 ? k.slice(eq + 1) : argv[++i]);
    switch (key) {
      case '--reps': a.reps = Math.round(num(key, val(), 1, 100)); break;
      case '--seconds': a.seconds = Math.round(num(key, val(), 1, 600)); break;
      case '--flows': a.flows = Math.round(num(key, val(), 1, 128)); break;
      case '--clients': a.clients = Math.round(num(key, val(), 1, 16)); break;
      case '--pings': a.pings = Math.round(num(key, val(), 1, 10000)); break;
      case '--kernel-only': a.kernelOnly = true; break;
      case '--no-warmup': a.warmup = false; break;
      case '--mix': a.mix = true; break;
      case '--no-mix': a.mix = false; break;
      case '--mix-reps': a.mixReps = Math.round(num(key, val(), 1, 100)); break;
      case '--mix-flows': a.mixFlows = Math.round(num(key, val(), 1, 128)); break;
      case '--tcp': a.tcp = true; break;
      case '--no-tcp': a.tcp = false; break;
      case '--tcp-only': a.tcpOnly = true; a.tcp = true; a.mix = false; break;
      case '--tcp-reps': a.tcpReps = Math.round(num(key, val(), 1, 100)); break;
      case '--tcp-seconds': a.tcpSeconds = Math.round(num(key, val(), 1, 600)); break;
      case '--offload-compare': a.offloadCompare = true; break;
      case '--no-tun-path': a.tunPath = false; break;
      case '--rounds': a.rounds = Math.round(num(key, val(), 1, 20)); break;
      case '--busy-poll': a.busyPoll = Math.round(num(key, val(), 0, 100000)); break;
      case '--cli': a.cli = resolve(val() ?? ''); break;
      case '--router-cpu': a.routerCpu = num(key, val(), 1, 100); break;
      case '--json': a.json = resolve(val() ?? ''); break;
      case '--svg': a.svg = resolve(val() ?? ''); break;
      case '--no-svg': a.svg = null; break;
      case '-h': case '--help': a.help = true; break;
      default: throw new Error(`unknown option ${k}`);
    }
  }
  if (a.clients > a.flows) throw new Error('--clients must not exceed --flows');
  a.mixReps ??= a.reps;
  return a;
}

// ---------------------------------------------------------------------------

/**
 * One router mode: up, the plain run (plainReps repetitions; 0: none), the
 * mixed run (with mix, after a good plain run), the TCP run, down.
 */
async function benchMode(lab, mode, a, { benchPlain, benchMix, benchTcp }, { plainReps = a.tcpOnly ? 0 : a.reps, mix = a.mix && !a.tcpOnly } = {}) {
  let res;
  if (plainReps === 0) {
    res = { mode: mode.label, ok: false, error: null, reps: [], latency: null, median: null };
    try {
      await mode.up(lab);
      if (!(await reachable(lab, 5000))) throw new Error(`${lab.addr.wan[0]} not reachable through ${mode.label}`);
      res.ok = true;
    } catch (e) {
      res.error = e.message;
      log(`${mode.label}: FAILED: ${e.message}`);
    }
  } else {
    res = await benchPlain(lab, mode, { ...a, reps: plainReps });
  }
  if (mix) {
    res.mix = res.ok ? await benchMix(lab, mode, a) : { ok: false, error: 'not run: the plain run failed', reps: [], median: null, esp: null };
  }
  if (a.tcp && res.ok) res.tcp = await benchTcp(lab, mode, a);
  try {
    await mode.down(lab);
  } catch (e) {
    res.ok = false;
    res.error = res.error ?? e.message;
    log(`${mode.label}: ${e.message}`);
  }
  return res;
}

async function main() {
  let a;
  try {
    a = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`bench/e2e: ${e.message}\n${USAGE}`);
    return 2;
  }
  if (a.help) {
    console.log(USAGE);
    return 0;
  }
  if (process.getuid && process.getuid() !== 0) {
    console.error('bench/e2e: needs root (it builds network namespaces): run it with sudo');
    return 2;
  }
  const tools = ['ip', 'nft', 'iperf3', 'ping', 'ss'].filter((t) => !have(t));
  if (tools.length) {
    console.error(`bench/e2e: missing tools: ${tools.join(', ')} (apt-get install iproute2 nftables iperf3 iputils-ping)`);
    return 2;
  }
  const labJs = join(REPO, 'dist', 'lab', 'lab.js');
  for (const f of [labJs, join(REPO, 'dist', 'lab', 'run.js')]) {
    if (!existsSync(f)) {
      console.error(`bench/e2e: ${f} missing — build first: npx tsc -p tsconfig.json`);
      return 2;
    }
  }
  const { Lab, cleanupStaleLabs } = await import(pathToFileURL(labJs).href);
  // the parts import dist/lab/run.js: loaded once the build is known to be there
  const { benchPlain, plainRepsInRound } = await import('./e2e/plain.js');
  const { ESPGEN, benchMix, mixComparison } = await import('./e2e/mix.js');
  const { kernelMode, vpnmasqMode } = await import('./e2e/modes.js');
  const { TUN_PATH_MODE } = await import('./e2e/common.js');
  const { comparison, machine, printMixTable, printTable, renderRows, writeChart, writeSummary } = await import('./e2e/report.js');
  const { benchTcp, poolRounds, printTcpTable } = await import('./e2e/tcp.js');
  const parts = { benchPlain, benchMix, benchTcp };

  const cliPath = a.cli ?? join(REPO, 'dist', 'cli', 'main.js');
  let doVpnmasq = !a.kernelOnly;
  let cliMissing = false;
  if (doVpnmasq && !existsSync(cliPath)) {
    console.log(`bench/e2e: vpnmasq CLI not found at ${cliPath} (build it: npm run build) — benchmarking the kernel only`);
    doVpnmasq = false;
    cliMissing = true;
  }

  let mixSkipped = null;
  if (a.mix && !have('python3')) {
    mixSkipped = 'python3 missing (apt-get install python3)';
    a.mix = false;
  } else if (a.mix && !existsSync(ESPGEN)) {
    mixSkipped = `${ESPGEN} missing`;
    a.mix = false;
  }

  const m = machine();
  log(`machine: nproc ${m.nproc}, kernel ${m.kernel}, node ${m.node}`);

  const modesCount = doVpnmasq ? (a.tunPath ? 3 : 2) : 1;
  const budgetS = 90 + modesCount * (60 + (a.reps + 1) * (a.seconds + 35) + a.pings * 0.02 + (a.mix ? a.mixReps * (a.seconds + 45) : 0)) +
    (a.tcp ? a.rounds * modesCount * (60 + 4 * a.tcpReps * (a.tcpSeconds + 30) + 60) : 0) +
    (a.offloadCompare ? 60 + 4 * a.tcpReps * (a.tcpSeconds + 30) + 60 : 0);
  let lab = null;
  let tmp = null;
  const cleanup = () => {
    try { lab?.destroy(); } catch { /* best effort */ }
    try { if (tmp) rmSync(tmp, { recursive: true, force: true }); } catch { /* best effort */ }
  };
  const watchdog = setTimeout(() => {
    console.error(`bench/e2e: watchdog: not finished after ${Math.round(budgetS)} s — aborting`);
    cleanup();
    process.exit(3);
  }, budgetS * 1000);
  const onSig = (sig) => {
    console.error(`bench/e2e: ${sig} — cleaning up`);
    cleanup();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);

  const modes = [];
  try {
    cleanupStaleLabs();
    // lan2: the mix's second sender, and the plain run's pinger during the flood
    lab = Lab.create({ lanHosts: 2, wanHosts: 1 });
    tmp = mkdtempSync(join(tmpdir(), 'vpnmasq-e2e-'));
    log(`lab ${lab.id}: ${lab.namespaces.join(' ')}`);
    const rounds = a.tcp ? a.rounds : 1;
    for (let round = 0; round < rounds; round++) {
      if (rounds > 1) log(`round ${round + 1}/${rounds}`);
      // The 64-byte UDP repetitions spread over the rounds, the mixed run in the first; every round has the TCP rows.
      const run = { plainReps: a.tcpOnly ? 0 : plainRepsInRound(a.reps, rounds, round), mix: a.mix && !a.tcpOnly && round === 0 };
      modes.push(await benchMode(lab, kernelMode(), a, parts, run));
      if (doVpnmasq) modes.push(await benchMode(lab, vpnmasqMode(cliPath, tmp, { busyPollUs: a.busyPoll, cpuPct: a.routerCpu ?? 0 }), a, parts, run));
      if (doVpnmasq && a.tcp && a.offloadCompare) modes.push(await benchMode(lab, vpnmasqMode(cliPath, tmp, { offload: false }), a, parts, { plainReps: 0, mix: false }));
      // Without the kernel fast path (option flow_offload '0'): every packet through the TUNs, a mode of its own in every table.
      if (doVpnmasq && a.tunPath) modes.push(await benchMode(lab, vpnmasqMode(cliPath, tmp, { flowOffload: false }), a, parts, run));
    }
    if (rounds > 1) modes.splice(0, modes.length, ...poolRounds(modes));
  } catch (e) {
    console.error(`bench/e2e: ${firstLine(e.message)}`);
  } finally {
    cleanup();
    clearTimeout(watchdog);
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
  }

  const k = modes.find((r) => r.mode === 'kernel-nft');
  const v = modes.find((r) => r.mode === 'vpnmasq');
  const cmp = comparison(k, v);
  const mixCmp = a.mix ? mixComparison(k?.mix, v?.mix) : null;
  // The TUN path's mode (option flow_offload '0'): its own ratio rows.
  const tp = modes.find((r) => r.mode === TUN_PATH_MODE);
  const udpModes = modes.filter((r) => r.median || (!r.ok && !r.tcp));
  if (udpModes.length && !a.tcpOnly) printTable(a, m, udpModes, [['vpnmasq/kernel', cmp], ['tun-path/kernel', comparison(k, tp)]]);
  if (a.tcp) printTcpTable(a, modes, renderRows);
  if (a.mix && modes.some((r) => r.mix)) printMixTable(a, modes, [['vpnmasq/kernel', mixCmp], ['tun-path/kernel', mixComparison(k?.mix, tp?.mix)]]);
  if (mixSkipped) console.log(`mixed traffic: skipped (${mixSkipped})`);
  if (cliMissing) console.log(`vpnmasq: not benchmarked (no CLI at ${cliPath})`);

  if (a.json && !writeSummary(a, m, modes, { doVpnmasq, cliMissing, cliPath, mixSkipped, cmp, mixCmp })) return 1;
  if (a.svg && !a.tcpOnly && udpModes.length && !writeChart(a, m, udpModes, { doVpnmasq, cliMissing, cliPath, mixSkipped, cmp, mixCmp })) return 1;

  if (a.tcp && modes.some((r) => r.tcp && !r.tcp.ok)) return 1;
  if (!k?.ok) return 1;
  if (doVpnmasq && !v?.ok) return 1;
  if (a.mix && (!k.mix?.ok || (doVpnmasq && !v.mix?.ok))) return 1;
  if (cliMissing && !a.kernelOnly) return 1;
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`bench/e2e: ${e?.stack ?? e}`);
    process.exit(1);
  },
);
