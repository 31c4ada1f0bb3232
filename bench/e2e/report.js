// The report: the machine, the plain table, the mixed table and the JSON
// summary (--json).
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { FIRST_PORT, NATT_PORT, PAYLOAD, firstLine, fmtInt, fmtMs, log } from './common.js';
import { HANDSHAKE_MS, MIX_CLASSES, REPLY_XOR, hex32 } from './mix.js';
import { renderChart } from './chart.js';

export function machine() {
  let nproc = cpus().length;
  try {
    nproc = Number(execFileSync('nproc', { encoding: 'utf8', timeout: 5000 }).trim()) || nproc;
  } catch { /* keep os.cpus() */ }
  let iperf = '';
  try {
    iperf = firstLine(execFileSync('iperf3', ['--version'], { encoding: 'utf8', timeout: 5000 }));
  } catch { /* ignore */ }
  return { nproc, kernel: release(), cpu: cpus()[0]?.model ?? 'unknown', node: process.version, iperf3: iperf };
}

/** `cmps`: [label, comparison] rows under the modes (vpnmasq/kernel, tun-path/kernel). */
export function printTable(a, m, modes, cmps) {
  const out = [];
  out.push('');
  out.push('vpnmasq end-to-end benchmark');
  out.push(`machine: nproc ${m.nproc}, kernel ${m.kernel}, cpu ${m.cpu}, node ${m.node}, ${m.iperf3}`);
  out.push(`traffic: 64-byte UDP (IPv4 20 + UDP 8 + ${PAYLOAD} payload), ${a.flows} flows, iperf3 -u -l ${PAYLOAD} -P ${a.flows / a.clients | 0}${a.clients > 1 ? ` x ${a.clients} clients` : ''} -b 0, lan1 -> router -> wan1`);
  out.push(`runs:    ${a.reps} reps x ${a.seconds} s per mode${a.warmup ? ' (+1 s warm-up)' : ''}${a.rounds > 1 && a.tcp ? ` over ${a.rounds} rounds, the modes taking turns` : ''}, medians; latency: median RTT of ${a.pings} pings at 10 ms LAN->WAN idle, and from lan2 during each flood (10 ms apart, the pinger at SCHED_FIFO 20: the router's own delay)`);
  if (a.busyPoll > 0) out.push(`vpnmasq: option busy_poll '${a.busyPoll}' (it keeps polling its TUNs for ${a.busyPoll} µs after the last packet)`);
  if (a.routerCpu > 0) out.push(`vpnmasq: limited to ${a.routerCpu} % of one CPU (--router-cpu; the kernel NAT is not)`);
  out.push('');
  const head = ['mode', 'delivered pps', 'sent pps', 'loss %', 'rcvbuf drops', 'ping median', 'lan2 RT ping in flood, median / p99', 'answered', 'reps ok'];
  const rows = [head];
  for (const r of modes) {
    if (!r.ok && !r.median) {
      rows.push([r.mode, 'FAILED', '', '', '', r.latency ? fmtMs(r.latency.medianMs) : '-', '', '', `${r.reps.filter((x) => !x.error).length}/${a.reps}`]);
      continue;
    }
    rows.push([
      r.mode,
      fmtInt(r.median.deliveredPps),
      fmtInt(r.median.sentPps),
      r.median.lossPct.toFixed(2),
      fmtInt(r.median.rcvbufErrors),
      fmtMs(r.latency?.medianMs),
      `${fmtMs(r.median.floodPingMs)} / ${fmtMs(r.median.floodPingP99Ms)}`,
      Number.isFinite(r.median.floodPingAnswered) ? `${(100 * r.median.floodPingAnswered).toFixed(0)} %` : '-',
      `${r.median.goodReps}/${a.reps}`,
    ]);
  }
  for (const [label, cmp] of cmps) {
    if (!cmp) continue;
    rows.push([
      label,
      Number.isFinite(cmp.ratio) ? cmp.ratio.toFixed(3) : '-',
      Number.isFinite(cmp.sentRatio) ? cmp.sentRatio.toFixed(3) : '-',
      '',
      '',
      Number.isFinite(cmp.addedLatencyMs) ? `${cmp.addedLatencyMs >= 0 ? '+' : ''}${cmp.addedLatencyMs.toFixed(3)} ms` : '-',
      Number.isFinite(cmp.addedFloodLatencyMs) ? `${cmp.addedFloodLatencyMs >= 0 ? '+' : ''}${cmp.addedFloodLatencyMs.toFixed(3)} ms` : '-',
      '',
      '',
    ]);
  }
  out.push(...renderRows(rows));
  for (const r of modes) if (r.error) out.push(`${r.mode}: ${firstLine(r.error)}`);
  out.push('');
  process.stdout.write(out.join('\n') + '\n');
}

/** Column-aligned lines: first row is the head, first column left-aligned, the rest right-aligned. */
export function renderRows(rows) {
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  const out = [];
  for (const [i, r] of rows.entries()) {
    out.push(r.map((cell, c) => (c === 0 ? String(cell).padEnd(w[c]) : String(cell).padStart(w[c]))).join('   '));
    if (i === 0) out.push(w.map((n) => '-'.repeat(n)).join('   '));
  }
  return out;
}

/** `cmps`: [label, mixComparison] rows under the modes. */
export function printMixTable(a, modes, cmps) {
  const out = [];
  out.push('');
  out.push('mixed traffic: ESP + NAT-T + plain UDP at once, every packet 64 bytes (L3)');
  out.push(`  UDP:   iperf3 -u -l ${PAYLOAD} -P ${a.mixFlows} -b 0, lan1 -> wan1:${FIRST_PORT}`);
  out.push(`  NAT-T: one UDP flow lan2:${NATT_PORT} -> wan1:${NATT_PORT}, 36-byte payloads, bench/espgen.py flat out`);
  out.push('  ESP:   raw IP protocol 50 (IPv4 20 + SPI 4 + seq 4 + 36), one SPI per host, lan1 and lan2 -> wan1, bench/espgen.py flat out;');
  out.push(`         before each rep wan1 answers each host's first packet once with its own SPI (lan2 starts after lan1; ${HANDSHAKE_MS} ms wait)`);
  out.push('  start: iperf3 first; NAT-T and ESP as soon as its streams are set up');
  out.push(`runs:    ${a.mixReps} reps x ${a.seconds} s per mode, medians; delivered pps counted per class/SPI by nftables on wan1's input hook`);
  out.push('');
  const head = ['mode', ...MIX_CLASSES.map(([, name]) => name), 'total', 'sent pps', 'loss %', 'reps ok'];
  const rows = [head];
  for (const r of modes) {
    const mx = r.mix;
    if (!mx) continue;
    if (!mx.median) {
      rows.push([r.mode, 'FAILED', ...MIX_CLASSES.map(() => ''), '', '', `${mx.reps.filter((x) => !x.error).length}/${a.mixReps}`]);
      continue;
    }
    rows.push([
      r.mode,
      ...MIX_CLASSES.map(([c]) => fmtInt(mx.median[c].deliveredPps)),
      fmtInt(mx.median.total.deliveredPps),
      fmtInt(mx.median.total.sentPps),
      Number.isFinite(mx.median.total.lossPct) ? mx.median.total.lossPct.toFixed(2) : '-',
      `${mx.median.goodReps}/${a.mixReps}`,
    ]);
  }
  const f = (x) => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');
  for (const [label, cmp] of cmps) {
    if (cmp) rows.push([label, ...MIX_CLASSES.map(([c]) => f(cmp.deliveredRatio[c])), f(cmp.deliveredRatio.total), f(cmp.sentRatio.total), '', '']);
  }
  out.push(...renderRows(rows));
  const notes = [];
  const ans = [];
  for (const r of modes) {
    const e = r.mix?.esp;
    if (!e) continue;
    const good = r.mix.median?.goodReps ?? 0;
    ans.push(`${r.mode} lan1 ${e.lan1Answered}/${good}, lan2 ${e.lan2Answered}/${good}`);
    if (e.lan1GotLan2Answers) notes.push(`${r.mode}: ${fmtInt(e.lan1GotLan2Answers)} answers to lan2's SPI were delivered to lan1`);
    if (e.lan2GotLan1Answers) notes.push(`${r.mode}: ${fmtInt(e.lan2GotLan1Answers)} answers to lan1's SPI were delivered to lan2`);
    if (e.espOtherSpi) notes.push(`${r.mode}: ${fmtInt(e.espOtherSpi)} ESP packets reached wan1 with neither host's SPI`);
    const drops = Object.entries(e.routerDrops ?? {}).filter(([, n]) => n > 0);
    if (drops.length) notes.push(`${r.mode}: router drops over the mixed reps: ${drops.map(([k, n]) => `${k} ${fmtInt(n)}`).join(', ')}`);
  }
  if (ans.length) out.push(`ESP answered (wan1's reply to the host's first packet reached it): ${ans.join('; ')}`);
  out.push(...notes);
  if (cmps.some(([, cmp]) => cmp && MIX_CLASSES.some(([c]) => !Number.isFinite(cmp.deliveredRatio[c])))) out.push('n/a: the kernel delivered none of that class');
  for (const r of modes) if (r.mix?.error) out.push(`${r.mode} mix: ${firstLine(r.mix.error)}`);
  out.push('');
  process.stdout.write(out.join('\n') + '\n');
}

/** vpnmasq against the kernel in the plain run: delivered and sent ratios, added ping latency; null without both medians. */
export function comparison(k, v) {
  if (!k?.median || !v?.median) return null;
  return {
    ratio: v.median.deliveredPps / k.median.deliveredPps,
    sentRatio: v.median.sentPps / k.median.sentPps,
    addedLatencyMs: (v.latency?.medianMs ?? NaN) - (k.latency?.medianMs ?? NaN),
    addedFloodLatencyMs: (v.median.floodPingMs ?? NaN) - (k.median.floodPingMs ?? NaN),
  };
}

/**
 * Writes the JSON summary of a run to a.json (numbers that are not finite
 * become null); false, after saying why, when the file cannot be written.
 */
export function writeSummary(a, m, modes, extras) {
  const summary = buildSummary(a, m, modes, extras);
  try {
    writeFileSync(a.json, JSON.stringify(summary, (_, val) => (typeof val === 'number' && !Number.isFinite(val) ? null : val), 2) + '\n');
    log(`JSON summary written to ${a.json}`);
    return true;
  } catch (e) {
    console.error(`bench/e2e: cannot write ${a.json}: ${e.message}`);
    return false;
  }
}

/** Writes the report as an SVG chart (chart.js) to a.svg; false, after saying why, when it cannot. */
export function writeChart(a, m, modes, extras) {
  try {
    writeFileSync(a.svg, renderChart(buildSummary(a, m, modes, extras)));
    log(`SVG chart written to ${a.svg}`);
    return true;
  } catch (e) {
    console.error(`bench/e2e: cannot write ${a.svg}: ${e.message}`);
    return false;
  }
}

/** The summary of a run, as --json writes it and chart.js draws it. */
export function buildSummary(a, m, modes, { doVpnmasq, cliMissing, cliPath, mixSkipped, cmp, mixCmp }) {
  return {
    date: new Date().toISOString(),
    machine: m,
    params: {
      reps: a.reps, seconds: a.seconds, flows: a.flows, clients: a.clients, pings: a.pings, warmup: a.warmup, packetBytes: 20 + 8 + PAYLOAD, payloadBytes: PAYLOAD,
      mix: a.mix ? { reps: a.mixReps, seconds: a.seconds, udpFlows: a.mixFlows, nattPort: NATT_PORT, espPacketBytes: 20 + 8 + PAYLOAD, handshakeMs: HANDSHAKE_MS, replyXor: hex32(REPLY_XOR) } : null,
    },
    modes: Object.fromEntries(modes.map((r) => [r.mode, r])),
    vpnmasq: doVpnmasq ? 'benchmarked' : cliMissing ? `not benchmarked: no CLI at ${cliPath}` : 'not benchmarked: --kernel-only',
    comparison: cmp,
    mix: a.mix ? 'benchmarked' : mixSkipped ? `skipped: ${mixSkipped}` : 'not run: --no-mix',
    mixComparison: mixCmp,
  };
}
