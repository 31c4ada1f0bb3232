// The plain run: 64-byte UDP from one LAN host to the WAN host (iperf3,
// --flows flows over --clients clients), the same generator for every router
// mode, plus the ping RTT through it: idle, and from a second LAN host
// (lan2) during each flood, 10 ms apart (what one host's flood costs the
// others' latency: the router's queue, README "Latency under load"). The
// flood's pinger runs at SCHED_FIFO 20, as bench/e2e/tcp.js's second one
// does: it stands for another machine, and an ordinary pinger's own wait
// for a CPU beside the generator, the receiver and the router would land
// in its RTT.
import { runIn, stopChild } from '../../dist/lab/run.js';
import {
  FIRST_PORT, PAYLOAD, fmtInt, fmtMs, firstLine, iperfTotals, log, median, quantile, reachable, tail, waitListening,
} from './common.js';

function udpCounters(lab, ns) {
  const lines = lab.exec(ns, ['cat', '/proc/net/snmp'], { timeoutMs: 5000 }).split('\n').filter((l) => l.startsWith('Udp:'));
  if (lines.length < 2) return {};
  const names = lines[0].split(/\s+/).slice(1);
  const vals = lines[1].split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(names.map((n, i) => [n, vals[i]]));
}

/**
 * One measured run of `seconds`: flows split over `clients` iperf3 clients in
 * the LAN host, one one-off iperf3 server per client in the WAN host.
 * Returns { sentPps, deliveredPps, sent, delivered, lossPct, rcvbufErrors, ... }.
 */
export async function udpGenerator(lab, { seconds, flows, clients }) {
  const src = lab.lan[0];
  const dst = lab.wan[0];
  const dstAddr = lab.addr.wan[0];
  const per = Array.from({ length: clients }, (_, i) => Math.floor(flows / clients) + (i < flows % clients ? 1 : 0));
  const servers = [];
  try {
    for (let i = 0; i < clients; i++) {
      const port = FIRST_PORT + i;
      const child = lab.spawn(dst, ['iperf3', '-s', '-1', '-J', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
      servers.push({ child, port, out: tail(child.stdout, 100000) });
      if (!(await waitListening(lab, dst, port, 5000))) throw new Error(`iperf3 server on port ${port} did not start`);
    }
    const before = udpCounters(lab, dst);
    // pings from the other LAN host, from 0.5 s in to 0.5 s before the end
    const pinger = lab.lan[1] ?? src;
    const ping = seconds >= 2
      ? new Promise((r) => setTimeout(r, 500)).then(() => pingFrom(lab, pinger, Math.floor((seconds - 1) * 100), { rt: true })).catch(() => null)
      : Promise.resolve(null);
    const results = await Promise.all(
      per.map((p, i) =>
        runIn(lab, src, [
          'iperf3', '-c', dstAddr, '-p', String(FIRST_PORT + i),
          '-u', '-l', String(PAYLOAD), '-P', String(p), '-b', '0', '-t', String(seconds),
          '-J', '--get-server-output', '--connect-timeout', '3000',
        ], (seconds + 25) * 1000),
      ),
    );
    const after = udpCounters(lab, dst);
    const pingDuring = await ping;
    let sent = 0, delivered = 0, sentPps = 0, deliveredPps = 0;
    for (const [i, r] of results.entries()) {
      const t = iperfTotals(r, `iperf3 client ${i + 1}`);
      sent += t.sent;
      delivered += t.delivered;
      sentPps += t.sentPps;
      deliveredPps += t.deliveredPps;
    }
    return {
      seconds,
      sent,
      delivered,
      sentPps,
      deliveredPps,
      lossPct: sent > 0 ? Math.max(0, 100 * (1 - delivered / sent)) : NaN,
      rcvbufErrors: (after.RcvbufErrors ?? 0) - (before.RcvbufErrors ?? 0),
      udpInDatagrams: (after.InDatagrams ?? 0) - (before.InDatagrams ?? 0),
      ping: pingDuring,
    };
  } finally {
    for (const s of servers) await stopChild(s.child, 2000);
  }
}

export function pingLatency(lab, count) {
  return pingFrom(lab, lab.lan[0], count);
}

/**
 * `count` pings 10 ms apart from `ns` to the WAN host: median, p90, p99, min, max (ms) and how many were answered;
 * rt: the pinger at SCHED_FIFO 20 (see the header).
 */
export async function pingFrom(lab, ns, count, { rt = false } = {}) {
  const argv = ['ping', '-n', '-c', String(count), '-i', '0.01', '-W', '1', '-w', String(Math.ceil(count * 0.01) + 10), lab.addr.wan[0]];
  const r = await runIn(lab, ns, rt ? ['chrt', '-f', '20', ...argv] : argv, (Math.ceil(count * 0.01) + 20) * 1000);
  const rtts = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  return {
    sent: count,
    received: rtts.length,
    medianMs: median(rtts),
    p90Ms: quantile(rtts, 0.9),
    p99Ms: quantile(rtts, 0.99),
    minMs: rtts.length ? Math.min(...rtts) : NaN,
    maxMs: rtts.length ? Math.max(...rtts) : NaN,
  };
}

/** The medians over the good repetitions (of one run, or pooled over rounds), or null when none is good. */
export function plainMedian(reps) {
  const good = reps.filter((r) => !r.error);
  if (good.length === 0) return null;
  return {
    deliveredPps: median(good.map((r) => r.deliveredPps)),
    sentPps: median(good.map((r) => r.sentPps)),
    lossPct: median(good.map((r) => r.lossPct)),
    rcvbufErrors: median(good.map((r) => r.rcvbufErrors)),
    goodReps: good.length,
    // lan2's pings during the floods: medians over the reps of each rep's median, p99 and answered share
    floodPingMs: median(good.filter((r) => r.ping?.received).map((r) => r.ping.medianMs)),
    floodPingP99Ms: median(good.filter((r) => r.ping?.received).map((r) => r.ping.p99Ms)),
    floodPingAnswered: median(good.filter((r) => r.ping).map((r) => r.ping.received / r.ping.sent)),
  };
}

/** The 64-byte UDP repetitions of round `round` of `rounds`: a.reps in all, the first rounds one more where they do not divide. */
export function plainRepsInRound(reps, rounds, round) {
  return Math.floor(reps / rounds) + (round < reps % rounds ? 1 : 0);
}

/**
 * Brings the router mode up and measures latency and throughput with the
 * shared generator: { mode, ok, error, reps, latency, median }. Never throws.
 */
export async function benchPlain(lab, mode, a) {
  const res = { mode: mode.label, ok: false, error: null, reps: [], latency: null, median: null };
  try {
    await mode.up(lab);
    if (!(await reachable(lab, 5000))) throw new Error(`${lab.addr.wan[0]} not reachable from ${lab.addr.lan[0]} through ${mode.label}`);
    res.latency = await pingLatency(lab, a.pings);
    mode.check?.();
    log(`${mode.label}: ping median ${fmtMs(res.latency.medianMs)} (${res.latency.received}/${res.latency.sent} answered)`);
    const gen = { seconds: a.seconds, flows: a.flows, clients: a.clients };
    if (a.warmup) {
      try {
        await udpGenerator(lab, { ...gen, seconds: 1 });
      } catch (e) {
        log(`${mode.label}: warm-up failed: ${firstLine(e.message)}`);
      }
    }
    for (let i = 0; i < a.reps; i++) {
      try {
        const drops0 = await mode.routerDrops?.(lab);
        const r = await udpGenerator(lab, gen);
        const drops1 = await mode.routerDrops?.(lab);
        if (drops0 && drops1) {
          r.routerDrops = Object.fromEntries(Object.keys(drops1).map((k) => [k, drops1[k] - (drops0[k] ?? 0)]).filter(([k, n]) => n > 0 && /tun_queue|tin:tx|tout:tx|tun_write/.test(k)));
        }
        res.reps.push(r);
        log(`${mode.label} rep ${i + 1}/${a.reps}: delivered ${fmtInt(r.deliveredPps)} pps, sent ${fmtInt(r.sentPps)} pps, loss ${r.lossPct.toFixed(2)} %, rcvbuf drops ${r.rcvbufErrors}` +
          (r.ping ? `; lan2 ping (real-time) during it: median ${fmtMs(r.ping.medianMs)}, p90 ${fmtMs(r.ping.p90Ms)}, p99 ${fmtMs(r.ping.p99Ms)}, ${r.ping.received}/${r.ping.sent} answered` : '') +
          (r.routerDrops ? `; router drops ${JSON.stringify(r.routerDrops)}` : ''));
      } catch (e) {
        res.reps.push({ error: e.message });
        log(`${mode.label} rep ${i + 1}/${a.reps}: FAILED: ${e.message}`);
      }
      mode.check?.();
      if (!(await reachable(lab, 3000))) throw new Error(`${mode.label}: path LAN->WAN broke after rep ${i + 1}`);
    }
    res.median = plainMedian(res.reps);
    if (!res.median) throw new Error('every repetition failed');
    res.ok = true;
  } catch (e) {
    res.error = e.message;
    log(`${mode.label}: FAILED: ${e.message}`);
  }
  return res;
}
