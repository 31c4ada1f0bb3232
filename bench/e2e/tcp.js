// The TCP run (issue 10): bulk TCP through each router mode with iperf3,
// 1 and 4 streams, LAN→WAN (upload) and WAN→LAN (download, iperf3 -R: the
// WAN host sends), and one stream from the WAN host to a server behind the
// router (a port forward: nftables dnat in the kernel's mode, a `config
// redirect` in vpnmasq's), medians of --tcp-reps runs; ping RTT through the router
// idle and during every repetition of every row (latency under load: pings
// from the LAN host every 10 ms, from 0.5 s after the transfer starts to its
// end; the row's figure is the median over its repetitions' medians, and the
// 99th percentile likewise); CPU seconds per GB moved.
//
// A second pinger runs beside the first, from the other LAN host (lan2) at
// SCHED_FIFO 20 (`chrt -f 20 ping`): on this lab both iperf3 ends, the
// router and the pinger share two vCPUs, and an ordinary pinger's own
// wait for a CPU (milliseconds behind two busy iperf3 processes and the
// router's real-time thread) lands in its RTT. The real-time pinger stands
// for a LAN host of its own, as on a real network: its RTT is the delay
// the router's queues and scheduling add, which is what issue 10's
// "under load" target is about. Both are printed; the kernel's NAT gets
// the same two pingers.
//
// CPU: the kernel NAT's work runs in softirq context on whatever CPU the
// packet is on, so it cannot be charged to the router namespace alone. Two
// approximations, both printed: the whole machine's busy CPU time
// (/proc/stat: everything but idle and iowait, so it includes iperf3 at both
// ends, the same in every mode: compare the modes' difference) per GB, and
// for vpnmasq its own process's CPU time (/proc/<pid>/stat utime + stime;
// not the kernel's TUN and forwarding work done on its behalf in softirq).
import { readFileSync } from 'node:fs';
import { runIn, stopChild } from '../../dist/lab/run.js';
import { TUN_PATH_MODE, firstLine, iperfError, log, median, sleep, waitListening } from './common.js';
import { pingFrom, plainMedian } from './plain.js';

export const TCP_PORT = 5301;
/** The port forward's port (the router's WAN address → lan1, the same port): a server behind the router. */
export const FWD_PORT = 5302;
const TICK = 100; // USER_HZ: /proc/stat and /proc/<pid>/stat count in 1/100 s

export const TCP_ROWS = [
  { key: 'up1', what: 'TCP LAN→WAN, 1 stream', streams: 1, reverse: false },
  { key: 'up4', what: 'TCP LAN→WAN, 4 streams', streams: 4, reverse: false },
  { key: 'down1', what: 'TCP WAN→LAN, 1 stream', streams: 1, reverse: true },
  { key: 'down4', what: 'TCP WAN→LAN, 4 streams', streams: 4, reverse: true },
  // A server behind the router: the WAN host uploads to lan1 through a port forward (nftables dnat for the kernel).
  { key: 'fwd1', what: 'TCP WAN→LAN server (port forward), 1 stream', streams: 1, reverse: false, forward: true },
];

/** Busy jiffies of the whole machine (all CPUs): user nice system irq softirq steal. */
function machineBusy() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return user + nice + system + irq + softirq + (steal ?? 0);
}

/** utime + stime of a process in jiffies, or NaN. */
function procCpu(pid) {
  if (!pid) return NaN;
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]); // fields 14 and 15 of stat(5), after pid and comm
  } catch {
    return NaN;
  }
}

async function iperfTcp(lab, { streams, reverse, forward, seconds }) {
  const [ns, to, port] = forward ? [lab.wan[0], lab.addr.routerWan, FWD_PORT] : [lab.lan[0], lab.addr.wan[0], TCP_PORT];
  const r = await runIn(lab, ns, [
    'iperf3', '-c', to, '-p', String(port), '-P', String(streams), '-t', String(seconds),
    '-J', '--connect-timeout', '3000', ...(reverse ? ['-R'] : []),
  ], (seconds + 25) * 1000);
  let j;
  try { j = JSON.parse(r.stdout); } catch { throw new Error(`iperf3: ${iperfError(r)}`); }
  if (j.error) throw new Error(`iperf3: ${j.error}`);
  const rcv = j.end?.sum_received;
  if (!rcv) throw new Error('iperf3: JSON without receiver totals');
  return { bytes: rcv.bytes, seconds: rcv.seconds, mbps: (rcv.bits_per_second ?? (8 * rcv.bytes) / rcv.seconds) / 1e6, retransmits: j.end?.sum_sent?.retransmits ?? 0 };
}

/** Pings every 10 ms for `seconds` from `ns` (default lan1); rt: at SCHED_FIFO 20 (see the header). */
function pingDuring(lab, seconds, { ns = lab.lan[0], rt = false } = {}) {
  return pingFrom(lab, ns, Math.max(10, Math.floor((seconds * 1000 - 500) / 10)), { rt });
}

/** One iperf3 run with pings beside it, from 0.5 s in to its end: lan1's ordinary pinger and lan2's real-time one. */
async function iperfWithPing(lab, row, seconds) {
  const run = iperfTcp(lab, { ...row, seconds });
  const ping = sleep(500).then(() => pingDuring(lab, seconds - 0.5));
  const pingRt = lab.lan[1] ? sleep(500).then(() => pingDuring(lab, seconds - 0.5, { ns: lab.lan[1], rt: true })) : Promise.reject(new Error('no lan2'));
  const [r, p, q] = await Promise.allSettled([run, ping, pingRt]);
  if (r.status === 'rejected') throw r.reason;
  return { ...r.value, ping: p.status === 'fulfilled' ? p.value : null, pingRt: q.status === 'fulfilled' ? q.value : null };
}

/**
 * The TCP rows for one router mode (already up): { ok, error, rows: {key: {reps, medianMbps,
 * pingMs, pingP99Ms}}, pingIdleMs, pingLoadMs (the 4-stream upload's), cpu: { machineSPerGB, procSPerGB } }.
 * Never throws.
 */
export async function benchTcp(lab, mode, a) {
  const res = { ok: false, error: null, rows: {}, pingIdleMs: NaN, pingLoadMs: NaN, cpu: null };
  const servers = [];
  try {
    for (const [ns, port] of [[lab.wan[0], TCP_PORT], [lab.lan[0], FWD_PORT]]) {
      servers.push(lab.spawn(ns, ['iperf3', '-s', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] }));
      if (!(await waitListening(lab, ns, port, 5000))) throw new Error(`iperf3 server on port ${port} did not start`);
    }
    res.pingIdleMs = (await pingDuring(lab, 2)).medianMs;
    let bytes = 0, busy = 0, proc = 0;
    for (const row of TCP_ROWS) {
      const reps = [];
      for (let i = 0; i < a.tcpReps; i++) {
        const b0 = machineBusy(), p0 = procCpu(mode.pid?.());
        try {
          const r = await iperfWithPing(lab, row, a.tcpSeconds);
          const b1 = machineBusy(), p1 = procCpu(mode.pid?.());
          reps.push(r);
          bytes += r.bytes; busy += b1 - b0; proc += p1 - p0;
          log(`${mode.label} ${row.what} rep ${i + 1}/${a.tcpReps}: ${r.mbps.toFixed(0)} Mbit/s, ${r.retransmits} retransmits, ` +
            `ping median ${fmt(r.ping?.medianMs, 3)} ms, p99 ${fmt(r.ping?.p99Ms, 3)} ms; ` +
            `real-time pinger (lan2) median ${fmt(r.pingRt?.medianMs, 3)} ms, p99 ${fmt(r.pingRt?.p99Ms, 3)} ms`);
        } catch (e) {
          reps.push({ error: e.message });
          log(`${mode.label} ${row.what} rep ${i + 1}/${a.tcpReps}: FAILED: ${firstLine(e.message)}`);
        }
        mode.check?.();
        await sleep(300);
      }
      res.rows[row.key] = rowOf(reps);
    }
    res.pingLoadMs = res.rows.up4.pingMs;
    const gb = bytes / 1e9;
    res.cpu = { gb, machineSPerGB: busy / TICK / gb, procSPerGB: Number.isFinite(proc) ? proc / TICK / gb : NaN };
    res.ok = Object.values(res.rows).every((r) => r.goodReps > 0);
    if (!res.ok) res.error = 'a TCP row had no good repetition';
  } catch (e) {
    res.error = e.message;
    log(`${mode.label}: TCP run FAILED: ${e.message}`);
  } finally {
    for (const server of servers) await stopChild(server, 2000);
  }
  return res;
}

/** A row's medians over its repetitions (failed ones left out). */
function rowOf(reps) {
  const good = reps.filter((r) => !r.error);
  return {
    reps, medianMbps: median(good.map((r) => r.mbps)), goodReps: good.length,
    pingMs: median(good.map((r) => r.ping?.medianMs)), pingP99Ms: median(good.map((r) => r.ping?.p99Ms)),
    pingRtMs: median(good.map((r) => r.pingRt?.medianMs)), pingRtP99Ms: median(good.map((r) => r.pingRt?.p99Ms)),
    retransmits: median(good.map((r) => r.retransmits)),
  };
}

/**
 * One mode's TCP results from several rounds (--rounds: the modes take turns,
 * so a machine that slows down over minutes slows every mode alike): each
 * row's repetitions pooled, the medians taken over all of them.
 */
export function mergeTcp(list) {
  const ok = list.filter((t) => t?.ok);
  if (ok.length === 0) return list[0];
  const rows = {};
  for (const row of TCP_ROWS) rows[row.key] = rowOf(ok.flatMap((t) => t.rows[row.key]?.reps ?? []));
  return {
    ok: ok.length === list.length, error: ok.length === list.length ? null : 'a round failed', rows,
    pingIdleMs: median(ok.map((t) => t.pingIdleMs)), pingLoadMs: rows.up4.pingMs,
    cpu: { gb: ok.reduce((n, t) => n + (t.cpu?.gb ?? 0), 0), machineSPerGB: median(ok.map((t) => t.cpu?.machineSPerGB)),
      procSPerGB: median(ok.map((t) => t.cpu?.procSPerGB)) },
  };
}

/**
 * The results of several rounds (one entry per mode and round, in the order
 * run) as one entry per mode: its first round's (the idle ping and the mixed
 * run are made there only), ok when every round was, its 64-byte UDP
 * repetitions and its TCP repetitions pooled over the rounds, the medians
 * taken over all of them.
 */
export function poolRounds(results) {
  const byMode = new Map();
  for (const r of results) byMode.set(r.mode, [...(byMode.get(r.mode) ?? []), r]);
  return [...byMode.values()].map((list) => {
    const reps = list.flatMap((r) => r.reps ?? []);
    return { ...list[0], ok: list.every((r) => r.ok), reps, median: plainMedian(reps) ?? list[0].median, tcp: mergeTcp(list.map((r) => r.tcp)) };
  });
}

const fmt = (n, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '-');

/** The TCP table: one column per mode, the ratio of the first vpnmasq mode to the kernel. */
export function printTcpTable(a, modes, renderRows) {
  const withTcp = modes.filter((m) => m.tcp);
  if (!withTcp.length) return;
  const k = withTcp.find((m) => m.mode === 'kernel-nft')?.tcp;
  const v = withTcp.find((m) => m.mode === 'vpnmasq')?.tcp;
  // The TUN path's column (option flow_offload '0') gets its own ratio.
  const fo = withTcp.find((m) => m.mode === TUN_PATH_MODE)?.tcp;
  const rows = [['row', ...withTcp.map((m) => m.mode), ...(k && v ? ['vpnmasq/kernel'] : []), ...(k && fo ? ['tun-path/kernel'] : [])]];
  for (const r of TCP_ROWS) {
    const ratio = k && v ? v.rows[r.key]?.medianMbps / k.rows[r.key]?.medianMbps : NaN;
    const foRatio = k && fo ? fo.rows[r.key]?.medianMbps / k.rows[r.key]?.medianMbps : NaN;
    rows.push([`${r.what} (Mbit/s)`, ...withTcp.map((m) => fmt(m.tcp.rows[r.key]?.medianMbps)), ...(k && v ? [fmt(ratio, 2) + '×'] : []),
      ...(k && fo ? [fmt(foRatio, 2) + '×'] : [])]);
  }
  const us = (d) => `${d >= 0 ? '+' : ''}${fmt(d * 1000, 0)} µs`;
  // The added-latency columns: vpnmasq's, then the TUN path's, each against the kernel.
  const added = (get) => [...(k && v ? [us(get(v) - get(k))] : []), ...(k && fo ? [us(get(fo) - get(k))] : [])];
  const blank = [...(k && v ? [''] : []), ...(k && fo ? [''] : [])];
  rows.push(['ping RTT idle, median (ms)', ...withTcp.map((m) => fmt(m.tcp.pingIdleMs, 3)), ...added((t) => t.pingIdleMs)]);
  for (const r of TCP_ROWS) {
    for (const [f, what] of [['pingMs', 'median'], ['pingP99Ms', 'p99'], ['pingRtMs', 'median, real-time pinger (lan2),'], ['pingRtP99Ms', 'p99, real-time pinger (lan2),']]) {
      rows.push([`ping RTT ${what} during ${r.what.replace('TCP ', '')} (ms)`, ...withTcp.map((m) => fmt(m.tcp.rows[r.key]?.[f], 3)),
        ...added((t) => t.rows[r.key]?.[f])]);
    }
  }
  // What the router's drops cost the senders (README "Latency under load": the reader queue's head drops of super-packets).
  rows.push([`TCP retransmits, median per rep: ${TCP_ROWS.map((r) => r.key).join(' / ')}`,
    ...withTcp.map((m) => TCP_ROWS.map((r) => fmt(m.tcp.rows[r.key]?.retransmits)).join(' / ')), ...blank]);
  rows.push(['machine CPU s per GB (all processes)', ...withTcp.map((m) => fmt(m.tcp.cpu?.machineSPerGB, 2)), ...blank]);
  rows.push(['vpnmasq process CPU s per GB', ...withTcp.map((m) => fmt(m.tcp.cpu?.procSPerGB, 2)), ...blank]);
  const reps = a.rounds > 1 ? `${a.tcpReps * a.rounds} reps per row (${a.rounds} rounds of ${a.tcpReps}, the modes taking turns)` : `${a.tcpReps} reps per row`;
  const out = ['', `TCP: iperf3 -P 1 / -P 4, ${a.tcpSeconds} s, median of ${reps}; WAN→LAN is iperf3 -R (the WAN host sends); the port forward row: the WAN host sends to lan1's iperf3 through a forward of the router's WAN address`, ...renderRows(rows)];
  for (const m of withTcp) if (m.tcp.error) out.push(`${m.mode}: TCP: ${firstLine(m.tcp.error)}`);
  out.push('ping: lan1 at normal priority (its own wait for a CPU included), lan2 at SCHED_FIFO 20 (the delay the router adds; a LAN host of its own)');
  out.push('CPU: machine = busy time of all CPUs (includes both iperf3 ends) per GB received; vpnmasq process = its utime+stime (not the kernel work done for it in softirq)');
  out.push('');
  process.stdout.write(out.join('\n') + '\n');
}
