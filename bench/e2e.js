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
//
// Needs root, iproute2, nftables, iperf3, iputils-ping, python3 (for the mix;
// skipped with a note without it), and `npx tsc` having built dist/lab/lab.js.
// Exit codes: 0 ok; 1 vpnmasq missing/failed (unless --kernel-only) or the
// kernel mode failed (plain or mix); 2 usage/prerequisites; 3 watchdog.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PAYLOAD = 36; // + UDP 8 + IPv4 20 = 64 bytes on the wire (L3)
const FIRST_PORT = 5201;
const NFT_TABLE = 'vpnmasq_bench';
const MIX_TABLE = 'vpnmasq_mix'; // counters in the WAN host during the mix
const NATT_PORT = 4500;
const ESPGEN = join(REPO, 'bench', 'espgen.py');
const HANDSHAKE_MS = 1000; // how long an ESP generator waits for the responder's answer
const REPLY_XOR = 0x80000000; // the responder answers SPI s with SPI s ^ REPLY_XOR

const USAGE = `usage: sudo node bench/e2e.js [options]
  --reps N         repetitions per mode (default 5)
  --seconds S      seconds per repetition (default 3)
  --flows N        UDP flows (default 16)
  --clients N      iperf3 client processes the flows are split over (default 1)
  --pings N        pings for the latency measurement, 10 ms apart (default 200)
  --kernel-only    bench the kernel's nftables masquerade only
  --cli PATH       vpnmasq CLI (default <repo>/dist/cli/main.js)
  --json FILE      also write a JSON summary to FILE
  --no-warmup      skip the 1 s unmeasured warm-up run per mode
  --mix / --no-mix the mixed ESP + NAT-T + UDP run after the plain one (default on)
  --mix-reps N     repetitions of the mixed run per mode (default: --reps)
  --mix-flows N    plain UDP flows in the mixed run (default 8)`;

function parseArgs(argv) {
  const a = {
    reps: 5, seconds: 3, flows: 16, clients: 1, pings: 200, kernelOnly: false, cli: null, json: null, warmup: true,
    mix: true, mixReps: null, mixFlows: 8,
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
      case '--cli': a.cli = resolve(val() ?? ''); break;
      case '--json': a.json = resolve(val() ?? ''); break;
      case '-h': case '--help': a.help = true; break;
      default: throw new Error(`unknown option ${k}`);
    }
  }
  if (a.clients > a.flows) throw new Error('--clients must not exceed --flows');
  a.mixReps ??= a.reps;
  return a;
}

// ---------------------------------------------------------------------------
// helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (s) => process.stderr.write(s + '\n');
const fmtInt = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
const fmtMs = (n) => (Number.isFinite(n) ? `${n.toFixed(3)} ms` : '-');

function median(xs) {
  const v = xs.filter(Number.isFinite).sort((x, y) => x - y);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function quantile(xs, q) {
  const v = xs.filter(Number.isFinite).sort((x, y) => x - y);
  if (v.length === 0) return NaN;
  return v[Math.min(v.length - 1, Math.floor(q * v.length))];
}

function have(tool) {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore', timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}

function firstLine(s) {
  return String(s).split('\n').map((l) => l.trim()).find(Boolean) ?? '';
}

/** Keeps the last `max` lines of a stream. */
function tail(stream, max = 200) {
  const lines = [];
  let part = '';
  stream?.setEncoding('utf8');
  stream?.on('data', (d) => {
    const parts = (part + d).split('\n');
    part = parts.pop() ?? '';
    lines.push(...parts);
    if (lines.length > max) lines.splice(0, lines.length - max);
  });
  return () => [...lines, ...(part ? [part] : [])];
}

/**
 * Runs argv in a lab namespace as a tracked child; resolves with
 * { code, signal, stdout, stderr, timedOut }. SIGKILL after timeoutMs.
 */
function runIn(lab, ns, argv, timeoutMs, onSpawn) {
  return new Promise((resolveP) => {
    const child = lab.spawn(ns, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d) => { if (stdout.length < 64 << 20) stdout += d; });
    child.stderr.on('data', (d) => { if (stderr.length < 1 << 20) stderr += d; });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolveP({ code: null, signal: null, stdout, stderr: stderr + String(e), timedOut });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolveP({ code, signal, stdout, stderr, timedOut });
    });
  });
}

/** Resolves when the child has exited (or after ms); returns true if it exited. */
function waitExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolveP) => {
    const t = setTimeout(() => resolveP(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolveP(true);
    });
  });
}

async function stopChild(child, termMs = 3000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (await waitExit(child, termMs)) return;
  child.kill('SIGKILL');
  await waitExit(child, 2000);
}

function udpCounters(lab, ns) {
  const lines = lab.exec(ns, ['cat', '/proc/net/snmp'], { timeoutMs: 5000 }).split('\n').filter((l) => l.startsWith('Udp:'));
  if (lines.length < 2) return {};
  const names = lines[0].split(/\s+/).slice(1);
  const vals = lines[1].split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(names.map((n, i) => [n, vals[i]]));
}

async function waitListening(lab, ns, port, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const r = lab.tryExec(ns, ['ss', '-Htln', `sport = :${port}`], { timeoutMs: 5000 });
    if (r.ok && r.stdout.includes('LISTEN')) return true;
    await sleep(50);
  }
  return false;
}

function iperfError(r) {
  let j = null;
  try {
    j = JSON.parse(r.stdout);
  } catch { /* not JSON */ }
  if (j?.error) return j.error;
  return `${r.timedOut ? 'timed out' : `exit ${r.code}`}: ${firstLine(r.stderr) || firstLine(r.stdout) || 'no output'}`;
}

/**
 * Totals of one `iperf3 -c … -u -J --get-server-output` run: packets sent
 * (client) and delivered (bytes received by the server / PAYLOAD), with the
 * rates over each side's own duration. Throws one line naming `what`.
 */
function iperfTotals(r, what) {
  let j;
  try {
    j = JSON.parse(r.stdout);
  } catch {
    throw new Error(`${what}: ${iperfError(r)}`);
  }
  if (j.error) throw new Error(`${what}: ${j.error}`);
  const s = j.end?.sum_sent ?? j.end?.sum;
  const srv = j.server_output_json?.end;
  const rcv = srv?.sum_received ?? srv?.sum;
  if (!s || !rcv) throw new Error(`${what}: JSON without sender/receiver totals`);
  const rcvBytes = Number.isFinite(rcv.bytes) && rcv.bytes > 0
    ? rcv.bytes
    : (srv.streams ?? []).reduce((acc, st) => acc + (st.udp?.bytes ?? 0), 0);
  const got = Math.round(rcvBytes / PAYLOAD);
  return {
    sent: s.packets,
    seconds: s.seconds,
    sentPps: s.packets / s.seconds,
    delivered: got,
    deliveredPps: got / rcv.seconds,
  };
}

// ---------------------------------------------------------------------------
// the generator: identical for every router mode

/**
 * One measured run of `seconds`: flows split over `clients` iperf3 clients in
 * the LAN host, one one-off iperf3 server per client in the WAN host.
 * Returns { sentPps, deliveredPps, sent, delivered, lossPct, rcvbufErrors, ... }.
 */
async function udpGenerator(lab, { seconds, flows, clients }) {
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
    };
  } finally {
    for (const s of servers) await stopChild(s.child, 2000);
  }
}

async function pingLatency(lab, count) {
  const r = await runIn(lab, lab.lan[0], [
    'ping', '-n', '-c', String(count), '-i', '0.01', '-W', '1', '-w', String(Math.ceil(count * 0.01) + 10), lab.addr.wan[0],
  ], (Math.ceil(count * 0.01) + 20) * 1000);
  const rtts = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  return {
    sent: count,
    received: rtts.length,
    medianMs: median(rtts),
    p90Ms: quantile(rtts, 0.9),
    minMs: rtts.length ? Math.min(...rtts) : NaN,
    maxMs: rtts.length ? Math.max(...rtts) : NaN,
  };
}

async function reachable(lab, ms) {
  const deadline = Date.now() + ms;
  do {
    const r = lab.tryExec(lab.lan[0], ['ping', '-n', '-c', '1', '-W', '1', lab.addr.wan[0]], { timeoutMs: 5000 });
    if (r.ok) return true;
    await sleep(200);
  } while (Date.now() < deadline);
  return false;
}

// ---------------------------------------------------------------------------
// the mixed run: plain UDP + NAT-T + ESP at once, identical for every router mode

const hex32 = (n) => `0x${(n >>> 0).toString(16).padStart(8, '0')}`;

/** The two LAN hosts' outbound SPIs for mix repetition `rep` (fresh each rep, so each rep is a new association). */
function mixSpis(rep) {
  return [0, 1].map((h) => (0x10000000 + ((rep + 1) << 8) + h + 1) >>> 0);
}

/** Yields the child's stdout JSON lines one at a time: next(ms) -> object, or null on EOF/timeout. */
function jsonLines(stream) {
  const queue = [];
  const waiters = [];
  let buf = '';
  let ended = false;
  stream.setEncoding('utf8');
  stream.on('data', (d) => {
    buf += d;
    for (let i; (i = buf.indexOf('\n')) >= 0;) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      let v;
      try {
        v = JSON.parse(line);
      } catch {
        v = { event: 'garbage', line };
      }
      if (waiters.length) waiters.shift()(v);
      else queue.push(v);
    }
  });
  stream.on('end', () => {
    ended = true;
    while (waiters.length) waiters.shift()(null);
  });
  return (ms) => {
    if (queue.length) return Promise.resolve(queue.shift());
    if (ended) return Promise.resolve(null);
    return new Promise((resolveP) => {
      const w = (v) => {
        clearTimeout(t);
        resolveP(v);
      };
      const t = setTimeout(() => {
        const k = waiters.indexOf(w);
        if (k >= 0) waiters.splice(k, 1);
        resolveP(null);
      }, ms);
      waiters.push(w);
    });
  };
}

/** Fresh named counters in the WAN host's input hook: plain UDP, NAT-T, each host's SPI, all ESP. */
function mixCountersUp(lab, spis) {
  const ns = lab.wan[0];
  lab.tryExec(ns, ['nft', 'delete', 'table', 'ip', MIX_TABLE], { timeoutMs: 10000 });
  lab.exec(ns, ['nft', '-f', '-'], {
    timeoutMs: 10000,
    input: [
      `table ip ${MIX_TABLE} {`,
      '\tcounter c_udp {}', '\tcounter c_natt {}', '\tcounter c_esp1 {}', '\tcounter c_esp2 {}', '\tcounter c_esp {}',
      '\tchain input {',
      '\t\ttype filter hook input priority filter; policy accept;',
      `\t\tudp dport ${FIRST_PORT} counter name "c_udp"`,
      `\t\tudp dport ${NATT_PORT} counter name "c_natt" drop`, // no listener: drop quietly (no port unreachable)
      `\t\tesp spi ${spis[0]} counter name "c_esp1"`,
      `\t\tesp spi ${spis[1]} counter name "c_esp2"`,
      '\t\tip protocol esp counter name "c_esp"',
      '\t}',
      '}',
      '',
    ].join('\n'),
  });
}

function mixCounters(lab) {
  const j = JSON.parse(lab.exec(lab.wan[0], ['nft', '-j', 'list', 'counters', 'table', 'ip', MIX_TABLE], { timeoutMs: 10000 }));
  const out = {};
  for (const o of j.nftables ?? []) if (o.counter) out[o.counter.name.replace(/^c_/, '')] = o.counter.packets;
  return out;
}

/** Per-key difference of two counter objects, nonzero keys only. */
function deltas(before, after) {
  if (!before || !after) return null;
  const out = {};
  for (const k of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const d = (after[k] ?? 0) - (before[k] ?? 0);
    if (d) out[k] = d;
  }
  return out;
}

/**
 * One mixed repetition of `seconds` through whatever router mode is up.
 * Sequence: counters; ESP responder and iperf3 server in wan1; ESP
 * association lan1 then lan2 (one packet each, wait for the answer); then
 * iperf3 UDP (lan1, mixFlows flows -> :5201) and, once its streams are set
 * up, the NAT-T generator (lan2, 4500 -> :4500, one flow) and both ESP
 * generators' blasts, all for `seconds`.
 */
async function mixGenerator(lab, mode, { seconds, mixFlows }, rep) {
  const wan = lab.wan[0];
  const dstAddr = lab.addr.wan[0];
  const spis = mixSpis(rep);
  const kids = [];
  const py = (ns, args) => {
    const child = lab.spawn(ns, ['python3', ESPGEN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.on('error', () => { /* it may exit before reading */ });
    const k = { child, next: jsonLines(child.stdout), err: tail(child.stderr, 20) };
    kids.push(k);
    return k;
  };
  const why = (k) => {
    const e = k.err().filter(Boolean);
    return e.length ? `: ${e[e.length - 1]}` : k.child.exitCode !== null ? ` (exit ${k.child.exitCode})` : '';
  };
  try {
    mixCountersUp(lab, spis);
    const responder = py(wan, ['recv', '--expect', '2', '--reply-xor', hex32(REPLY_XOR)]);
    if ((await responder.next(10000))?.event !== 'ready') throw new Error(`ESP responder in ${wan} did not start${why(responder)}`);
    {
      const child = lab.spawn(wan, ['iperf3', '-s', '-1', '-J', '-p', String(FIRST_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
      tail(child.stdout, 10);
      tail(child.stderr, 10);
      kids.push({ child });
      if (!(await waitListening(lab, wan, FIRST_PORT, 5000))) throw new Error(`iperf3 server on port ${FIRST_PORT} did not start`);
    }

    // ESP association: lan1 first; lan2 only once lan1 is answered (or given up on)
    const esp = [];
    for (let h = 0; h < 2; h++) {
      const gen = py(lab.lan[h], [
        'send', '--dst', dstAddr, '--spi', hex32(spis[h]), '--reply-spi', hex32(spis[h] ^ REPLY_XOR), '--handshake-ms', String(HANDSHAKE_MS),
      ]);
      const hs = await gen.next(HANDSHAKE_MS + 10000);
      if (hs?.event !== 'handshake') throw new Error(`ESP generator in ${lab.lan[h]} failed${why(gen)}`);
      esp.push({ gen, handshake: hs });
    }
    responder.child.stdin.end();
    const answered = [];
    for (let v; (v = await responder.next(1000)) !== null;) if (v.event === 'spi') answered.push(v);
    await stopChild(responder.child, 1000);
    // from now on wan1 drops ESP after counting it (no raw socket, no ICMP protocol-unreachable)
    lab.exec(wan, ['nft', 'add', 'rule', 'ip', MIX_TABLE, 'input', 'ip', 'protocol', 'esp', 'drop'], { timeoutMs: 10000 });

    const natt = py(lab.lan[1], ['udp', '--dst', dstAddr, '--dport', String(NATT_PORT), '--sport', String(NATT_PORT)]);
    if ((await natt.next(10000))?.event !== 'ready') throw new Error(`NAT-T generator in ${lab.lan[1]} did not start${why(natt)}`);

    const routerBefore = await mode.routerDrops?.(lab);
    const before = mixCounters(lab);
    // iperf3 first, alone: its UDP set-up (one datagram each way per stream, no
    // retry in iperf3 3.12) must not meet a saturated router, or it hangs.
    const client = runIn(lab, lab.lan[0], [
      'iperf3', '-c', dstAddr, '-p', String(FIRST_PORT),
      '-u', '-l', String(PAYLOAD), '-P', String(mixFlows), '-b', '0', '-t', String(seconds),
      '-J', '--get-server-output', '--connect-timeout', '3000',
    ], (seconds + 25) * 1000, (child) => kids.push({ child }));
    let clientDone = false;
    client.then(() => { clientDone = true; });
    const deadline = Date.now() + 5000;
    for (;;) {
      // the server connect()s one UDP socket per stream as it accepts it
      const r = lab.tryExec(wan, ['ss', '-Hun', 'state', 'established', `sport = :${FIRST_PORT}`], { timeoutMs: 5000 });
      if (r.ok && r.stdout.split('\n').filter((l) => l.trim()).length >= mixFlows) break;
      if (clientDone) throw new Error(`iperf3 UDP: ${iperfError(await client)}`);
      if (Date.now() > deadline) throw new Error(`iperf3 UDP: ${mixFlows} streams not set up within 5 s (set-up datagram lost?)`);
      await sleep(20);
    }
    const gens = [natt, ...esp.map((e) => e.gen)];
    for (const g of gens) g.child.stdin.write(`go ${seconds}\n`);
    const blasts = gens.map((g) => g.next((seconds + 15) * 1000));
    const udpR = await client;
    const [nattDone, ...done] = await Promise.all(blasts);
    const after = mixCounters(lab);
    const routerAfter = await mode.routerDrops?.(lab);

    const udp = iperfTotals(udpR, 'iperf3 UDP');
    if (nattDone?.event !== 'done') throw new Error(`NAT-T generator in ${lab.lan[1]} did not finish${why(natt)}`);
    const d = (k) => (after[k] ?? 0) - (before[k] ?? 0);
    const cls = (sent, secs, delivered, extra = {}) => ({
      sent, seconds: secs, sentPps: sent / secs, delivered, deliveredPps: delivered / secs,
      lossPct: sent > 0 ? Math.max(0, 100 * (1 - delivered / sent)) : NaN, ...extra,
    });
    const classes = {
      udp: cls(udp.sent, udp.seconds, d('udp'), { flows: mixFlows, appDelivered: udp.delivered }),
      natt: cls(nattDone.sent, nattDone.seconds, d('natt'), { flows: 1, sendErrors: nattDone.errors }),
    };
    for (let h = 0; h < 2; h++) {
      const r = done[h];
      if (r?.event !== 'done') throw new Error(`ESP generator in ${lab.lan[h]} did not finish${why(esp[h].gen)}`);
      classes[`espLan${h + 1}`] = cls(r.sent, r.seconds, d(`esp${h + 1}`), {
        spi: hex32(spis[h]),
        replySpi: hex32(spis[h] ^ REPLY_XOR),
        answered: esp[h].handshake.replied,
        handshakeMs: esp[h].handshake.ms,
        receivedBySpi: r.received, // ESP that reached this LAN host after its handshake, by SPI
        sendErrors: r.errors,
      });
    }
    const all = Object.values(classes);
    const sent = all.reduce((acc, c) => acc + c.sent, 0);
    const delivered = all.reduce((acc, c) => acc + c.delivered, 0);
    return {
      seconds,
      classes,
      total: {
        sent,
        delivered,
        sentPps: all.reduce((acc, c) => acc + c.sentPps, 0),
        deliveredPps: all.reduce((acc, c) => acc + c.deliveredPps, 0),
        lossPct: sent > 0 ? Math.max(0, 100 * (1 - delivered / sent)) : NaN,
      },
      espOtherSpi: d('esp') - d('esp1') - d('esp2'), // ESP with neither SPI: should be 0
      responderSaw: answered, // SPIs the responder saw first packets of, with the source address
      routerDrops: deltas(routerBefore, routerAfter),
    };
  } finally {
    for (const k of kids) await stopChild(k.child, 2000);
    lab.tryExec(wan, ['nft', 'delete', 'table', 'ip', MIX_TABLE], { timeoutMs: 10000 });
  }
}

const MIX_CLASSES = [
  ['udp', 'UDP'],
  ['natt', 'NAT-T'],
  ['espLan1', 'ESP lan1'],
  ['espLan2', 'ESP lan2'],
];

/** The mixed repetitions of one router mode (already up). Never throws. */
async function benchMix(lab, mode, a) {
  const mix = { ok: false, error: null, reps: [], median: null, esp: null };
  try {
    for (let i = 0; i < a.mixReps; i++) {
      try {
        const r = await mixGenerator(lab, mode, { seconds: a.seconds, mixFlows: a.mixFlows }, i);
        mix.reps.push(r);
        const c = r.classes;
        const espNote = (x) => `${fmtInt(x.deliveredPps)}${x.answered ? '' : ' (unanswered)'}`;
        log(`${mode.label} mix rep ${i + 1}/${a.mixReps}: UDP ${fmtInt(c.udp.deliveredPps)}, NAT-T ${fmtInt(c.natt.deliveredPps)}, ` +
          `ESP lan1 ${espNote(c.espLan1)}, lan2 ${espNote(c.espLan2)}, total ${fmtInt(r.total.deliveredPps)} pps delivered ` +
          `of ${fmtInt(r.total.sentPps)} sent${r.routerDrops && Object.keys(r.routerDrops).length ? `; router drops ${JSON.stringify(r.routerDrops)}` : ''}`);
      } catch (e) {
        mix.reps.push({ error: e.message });
        log(`${mode.label} mix rep ${i + 1}/${a.mixReps}: FAILED: ${e.message}`);
      }
      mode.check?.();
      if (!(await reachable(lab, 3000))) throw new Error(`${mode.label}: path LAN->WAN broke after mix rep ${i + 1}`);
    }
    const good = mix.reps.filter((r) => !r.error);
    if (good.length === 0) throw new Error('every mixed repetition failed');
    mix.median = { goodReps: good.length, total: {} };
    for (const [k] of MIX_CLASSES) {
      mix.median[k] = {
        deliveredPps: median(good.map((r) => r.classes[k].deliveredPps)),
        sentPps: median(good.map((r) => r.classes[k].sentPps)),
        lossPct: median(good.map((r) => r.classes[k].lossPct)),
      };
    }
    for (const f of ['deliveredPps', 'sentPps', 'lossPct']) mix.median.total[f] = median(good.map((r) => r.total[f]));
    // what happened to the ESP associations, over the good reps
    const stray = (h) => good.reduce((acc, r) => {
      const other = r.classes[`espLan${2 - h}`].replySpi; // the other host's answer SPI
      return acc + (r.classes[`espLan${h + 1}`].receivedBySpi?.[other] ?? 0);
    }, 0);
    mix.esp = {
      lan1Answered: good.filter((r) => r.classes.espLan1.answered).length,
      lan2Answered: good.filter((r) => r.classes.espLan2.answered).length,
      // answers meant for the other LAN host's SPI that reached this one
      lan1GotLan2Answers: stray(0),
      lan2GotLan1Answers: stray(1),
      espOtherSpi: good.reduce((acc, r) => acc + r.espOtherSpi, 0),
      routerDrops: good.reduce((acc, r) => {
        for (const [k, v] of Object.entries(r.routerDrops ?? {})) acc[k] = (acc[k] ?? 0) + v;
        return acc;
      }, {}),
    };
    mix.ok = true;
  } catch (e) {
    mix.error = e.message;
    log(`${mode.label} mix: FAILED: ${e.message}`);
  }
  return mix;
}

// ---------------------------------------------------------------------------
// router modes

/** rx/tx drops of every device in the router namespace (the TUNs' tx queue, veth backlogs), as `dev:rx_dropped`. */
function deviceDrops(lab) {
  const r = lab.tryExec(lab.router, ['ip', '-s', '-j', 'link', 'show'], { timeoutMs: 5000 });
  const out = {};
  if (!r.ok) return out;
  try {
    for (const d of JSON.parse(r.stdout)) {
      const st = d.stats64 ?? d.stats;
      if (!st || d.ifname === 'lo') continue;
      out[`${d.ifname}:rx_dropped`] = st.rx?.dropped ?? 0;
      out[`${d.ifname}:tx_dropped`] = st.tx?.dropped ?? 0;
    }
  } catch { /* no JSON: no device drops */ }
  return out;
}

function kernelMode() {
  return {
    name: 'kernel',
    label: 'kernel-nft',
    async up(lab) {
      lab.exec(lab.router, ['nft', '-f', '-'], {
        timeoutMs: 10000,
        input: `table ip ${NFT_TABLE} {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname "wan" masquerade\n\t}\n}\n`,
      });
    },
    async down(lab) {
      lab.tryExec(lab.router, ['nft', 'delete', 'table', 'ip', NFT_TABLE], { timeoutMs: 10000 });
    },
    /** conntrack's failed inserts and drops in the router (summed over CPUs) and its devices' drops, or null */
    async routerDrops(lab) {
      const r = lab.tryExec(lab.router, ['cat', '/proc/net/stat/nf_conntrack'], { timeoutMs: 5000 });
      if (!r.ok) return null;
      const [head, ...rows] = r.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/));
      const out = deviceDrops(lab);
      for (const name of ['insert_failed', 'drop', 'early_drop', 'invalid']) {
        const i = head.indexOf(name);
        if (i >= 0) out[`conntrack_${name}`] = rows.reduce((acc, row) => acc + (parseInt(row[i], 16) || 0), 0);
      }
      return out;
    },
  };
}

function vpnmasqMode(cliPath, tmp) {
  const sock = join(tmp, 'vpnmasq.sock');
  const cfg = join(tmp, 'vpnmasq.conf');
  let child = null;
  let output = () => [];
  let exitInfo = null;
  let ready = false;
  return {
    name: 'vpnmasq',
    label: 'vpnmasq',
    /** throws if vpnmasq has gone away since it became ready */
    check() {
      if (ready && exitInfo) throw new Error(`vpnmasq exited during the benchmark (${exitInfo.signal ?? `code ${exitInfo.code}`})${fmtTail(output())}`);
    },
    async up(lab) {
      const leftover = lab.tryExec(lab.router, ['nft', 'list', 'table', 'ip', NFT_TABLE], { timeoutMs: 5000 });
      if (leftover.ok) throw new Error(`kernel masquerade table ${NFT_TABLE} still present in the router`);
      writeFileSync(cfg, [
        "config vpnmasq 'main'",
        "\toption lan_device 'br-lan'",
        "\toption wan_device 'wan'",
        "\toption enabled '1'",
        "\toption max_flows '65536'",
        "\toption log_level 'warn'",
        `\toption control_socket '${sock}'`,
        '',
      ].join('\n'));
      rmSync(sock, { force: true });
      child = lab.spawn(lab.router, [process.execPath, cliPath, 'run', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
      const out = tail(child.stdout, 100);
      const err = tail(child.stderr, 100);
      output = () => [...out(), ...err()].slice(-20);
      child.once('exit', (code, signal) => { exitInfo = { code, signal }; });
      const deadline = Date.now() + 15000;
      while (!existsSync(sock)) {
        if (exitInfo) throw new Error(`vpnmasq exited (${exitInfo.signal ?? `code ${exitInfo.code}`}) before it was ready${fmtTail(output())}`);
        if (Date.now() > deadline) throw new Error(`vpnmasq not ready: control socket ${sock} did not appear within 15 s${fmtTail(output())}`);
        await sleep(100);
      }
      ready = true;
    },
    /** the engine's drops by reason plus TUN write drops, from `vpnmasq status --json`, or null */
    async routerDrops(lab) {
      const r = await new Promise((resolveP) => {
        execFile(process.execPath, [cliPath, 'status', '--json', '--socket', sock], { timeout: 5000, encoding: 'utf8' },
          (err, stdout) => resolveP(err ? null : stdout));
      });
      try {
        const st = JSON.parse(r);
        return { ...st.drops, ...(st.tunWriteDrops ? { tun_write: st.tunWriteDrops } : {}), ...deviceDrops(lab) };
      } catch {
        return null;
      }
    },
    async down() {
      if (!child) return;
      const early = ready ? exitInfo : null;
      await stopChild(child, 10000);
      if (!exitInfo || (exitInfo.code === null && exitInfo.signal === 'SIGKILL')) log('vpnmasq: did not exit within 10 s of SIGTERM; killed');
      if (early) throw new Error(`vpnmasq exited during the benchmark (${early.signal ?? `code ${early.code}`})${fmtTail(output())}`);
    },
  };
}

function fmtTail(lines) {
  return lines.length ? `; last output:\n    ${lines.join('\n    ')}` : '';
}

/** Brings the router mode up, measures latency and throughput with the shared generator, brings it down. */
async function benchMode(lab, mode, a) {
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
        const r = await udpGenerator(lab, gen);
        res.reps.push(r);
        log(`${mode.label} rep ${i + 1}/${a.reps}: delivered ${fmtInt(r.deliveredPps)} pps, sent ${fmtInt(r.sentPps)} pps, loss ${r.lossPct.toFixed(2)} %, rcvbuf drops ${r.rcvbufErrors}`);
      } catch (e) {
        res.reps.push({ error: e.message });
        log(`${mode.label} rep ${i + 1}/${a.reps}: FAILED: ${e.message}`);
      }
      mode.check?.();
      if (!(await reachable(lab, 3000))) throw new Error(`${mode.label}: path LAN->WAN broke after rep ${i + 1}`);
    }
    const good = res.reps.filter((r) => !r.error);
    if (good.length === 0) throw new Error('every repetition failed');
    res.median = {
      deliveredPps: median(good.map((r) => r.deliveredPps)),
      sentPps: median(good.map((r) => r.sentPps)),
      lossPct: median(good.map((r) => r.lossPct)),
      rcvbufErrors: median(good.map((r) => r.rcvbufErrors)),
      goodReps: good.length,
    };
    res.ok = true;
  } catch (e) {
    res.error = e.message;
    log(`${mode.label}: FAILED: ${e.message}`);
  }
  if (a.mix) {
    res.mix = res.ok ? await benchMix(lab, mode, a) : { ok: false, error: 'not run: the plain run failed', reps: [], median: null, esp: null };
  }
  try {
    await mode.down(lab);
  } catch (e) {
    res.ok = false;
    res.error = res.error ?? e.message;
    log(`${mode.label}: ${e.message}`);
  }
  return res;
}

// ---------------------------------------------------------------------------

function machine() {
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

function printTable(a, m, modes, cmp) {
  const out = [];
  out.push('');
  out.push('vpnmasq end-to-end benchmark');
  out.push(`machine: nproc ${m.nproc}, kernel ${m.kernel}, cpu ${m.cpu}, node ${m.node}, ${m.iperf3}`);
  out.push(`traffic: 64-byte UDP (IPv4 20 + UDP 8 + ${PAYLOAD} payload), ${a.flows} flows, iperf3 -u -l ${PAYLOAD} -P ${a.flows / a.clients | 0}${a.clients > 1 ? ` x ${a.clients} clients` : ''} -b 0, lan1 -> router -> wan1`);
  out.push(`runs:    ${a.reps} reps x ${a.seconds} s per mode${a.warmup ? ' (+1 s warm-up)' : ''}, medians; latency: median RTT of ${a.pings} pings at 10 ms LAN->WAN`);
  out.push('');
  const head = ['mode', 'delivered pps', 'sent pps', 'loss %', 'rcvbuf drops', 'ping median', 'reps ok'];
  const rows = [head];
  for (const r of modes) {
    if (!r.ok && !r.median) {
      rows.push([r.mode, 'FAILED', '', '', '', r.latency ? fmtMs(r.latency.medianMs) : '-', `${r.reps.filter((x) => !x.error).length}/${a.reps}`]);
      continue;
    }
    rows.push([
      r.mode,
      fmtInt(r.median.deliveredPps),
      fmtInt(r.median.sentPps),
      r.median.lossPct.toFixed(2),
      fmtInt(r.median.rcvbufErrors),
      fmtMs(r.latency?.medianMs),
      `${r.median.goodReps}/${a.reps}`,
    ]);
  }
  if (cmp) {
    rows.push([
      'vpnmasq/kernel',
      Number.isFinite(cmp.ratio) ? cmp.ratio.toFixed(3) : '-',
      Number.isFinite(cmp.sentRatio) ? cmp.sentRatio.toFixed(3) : '-',
      '',
      '',
      Number.isFinite(cmp.addedLatencyMs) ? `${cmp.addedLatencyMs >= 0 ? '+' : ''}${cmp.addedLatencyMs.toFixed(3)} ms` : '-',
      '',
    ]);
  }
  out.push(...renderRows(rows));
  for (const r of modes) if (r.error) out.push(`${r.mode}: ${firstLine(r.error)}`);
  out.push('');
  process.stdout.write(out.join('\n') + '\n');
}

/** Column-aligned lines: first row is the head, first column left-aligned, the rest right-aligned. */
function renderRows(rows) {
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  const out = [];
  for (const [i, r] of rows.entries()) {
    out.push(r.map((cell, c) => (c === 0 ? String(cell).padEnd(w[c]) : String(cell).padStart(w[c]))).join('   '));
    if (i === 0) out.push(w.map((n) => '-'.repeat(n)).join('   '));
  }
  return out;
}

function mixComparison(k, v) {
  if (!k?.median || !v?.median) return null;
  const ratio = (x, y) => (Number.isFinite(x) && Number.isFinite(y) && y > 0 ? x / y : NaN);
  const cmp = { deliveredRatio: {}, sentRatio: {} };
  for (const [c] of [...MIX_CLASSES, ['total']]) {
    cmp.deliveredRatio[c] = ratio(v.median[c].deliveredPps, k.median[c].deliveredPps);
    cmp.sentRatio[c] = ratio(v.median[c].sentPps, k.median[c].sentPps);
  }
  return cmp;
}

function printMixTable(a, modes, cmp) {
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
  if (cmp) {
    const f = (x) => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');
    rows.push(['vpnmasq/kernel', ...MIX_CLASSES.map(([c]) => f(cmp.deliveredRatio[c])), f(cmp.deliveredRatio.total), f(cmp.sentRatio.total), '', '']);
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
  if (cmp && MIX_CLASSES.some(([c]) => !Number.isFinite(cmp.deliveredRatio[c]))) out.push('n/a: the kernel delivered none of that class');
  for (const r of modes) if (r.mix?.error) out.push(`${r.mode} mix: ${firstLine(r.mix.error)}`);
  out.push('');
  process.stdout.write(out.join('\n') + '\n');
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
  if (!existsSync(labJs)) {
    console.error(`bench/e2e: ${labJs} missing — build first: npx tsc -p tsconfig.json`);
    return 2;
  }
  const { Lab, cleanupStaleLabs } = await import(pathToFileURL(labJs).href);

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

  const modesCount = doVpnmasq ? 2 : 1;
  const budgetS = 90 + modesCount * (60 + (a.reps + 1) * (a.seconds + 35) + a.pings * 0.02 +
    (a.mix ? a.mixReps * (a.seconds + 45) : 0));
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
    lab = Lab.create({ lanHosts: a.mix ? 2 : 1, wanHosts: 1 });
    tmp = mkdtempSync(join(tmpdir(), 'vpnmasq-e2e-'));
    log(`lab ${lab.id}: ${lab.namespaces.join(' ')}`);
    modes.push(await benchMode(lab, kernelMode(), a));
    if (doVpnmasq) modes.push(await benchMode(lab, vpnmasqMode(cliPath, tmp), a));
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
  let cmp = null;
  if (k?.median && v?.median) {
    cmp = {
      ratio: v.median.deliveredPps / k.median.deliveredPps,
      sentRatio: v.median.sentPps / k.median.sentPps,
      addedLatencyMs: (v.latency?.medianMs ?? NaN) - (k.latency?.medianMs ?? NaN),
    };
  }
  const mixCmp = a.mix ? mixComparison(k?.mix, v?.mix) : null;
  if (modes.length) printTable(a, m, modes, cmp);
  if (a.mix && modes.some((r) => r.mix)) printMixTable(a, modes, mixCmp);
  if (mixSkipped) console.log(`mixed traffic: skipped (${mixSkipped})`);
  if (cliMissing) console.log(`vpnmasq: not benchmarked (no CLI at ${cliPath})`);

  if (a.json) {
    const summary = {
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
    try {
      writeFileSync(a.json, JSON.stringify(summary, (_, val) => (typeof val === 'number' && !Number.isFinite(val) ? null : val), 2) + '\n');
      log(`JSON summary written to ${a.json}`);
    } catch (e) {
      console.error(`bench/e2e: cannot write ${a.json}: ${e.message}`);
      return 1;
    }
  }

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
