#!/usr/bin/env node
// End-to-end benchmark: 64-byte UDP packets (IPv4 20 + UDP 8 + 36 payload),
// 16 flows, LAN namespace -> router namespace -> WAN namespace, through
//   (a) the Linux kernel's own nftables masquerade in the router namespace, and
//   (b) vpnmasq running in the router namespace,
// in the same run on the same lab topology, with the identical generator.
// Reports delivered packets/s at the receiver (exact: bytes received by the
// iperf3 server / 36), the sender's rate, loss, and median ping RTT LAN->WAN.
//
//   sudo node bench/e2e.js [--reps 5] [--seconds 3] [--kernel-only] [--json FILE]
//                          [--cli dist/cli/main.js] [--clients 1] [--pings 200]
//
// Needs root, iproute2, nftables, iperf3, iputils-ping, and `npx tsc` having
// built dist/lab/lab.js. Exit codes: 0 ok; 1 vpnmasq missing/failed (unless
// --kernel-only) or the kernel mode failed; 2 usage/prerequisites; 3 watchdog.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PAYLOAD = 36; // + UDP 8 + IPv4 20 = 64 bytes on the wire (L3)
const FIRST_PORT = 5201;
const NFT_TABLE = 'vpnmasq_bench';

const USAGE = `usage: sudo node bench/e2e.js [options]
  --reps N         repetitions per mode (default 5)
  --seconds S      seconds per repetition (default 3)
  --flows N        UDP flows (default 16)
  --clients N      iperf3 client processes the flows are split over (default 1)
  --pings N        pings for the latency measurement, 10 ms apart (default 200)
  --kernel-only    bench the kernel's nftables masquerade only
  --cli PATH       vpnmasq CLI (default <repo>/dist/cli/main.js)
  --json FILE      also write a JSON summary to FILE
  --no-warmup      skip the 1 s unmeasured warm-up run per mode`;

function parseArgs(argv) {
  const a = { reps: 5, seconds: 3, flows: 16, clients: 1, pings: 200, kernelOnly: false, cli: null, json: null, warmup: true };
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
      case '--cli': a.cli = resolve(val() ?? ''); break;
      case '--json': a.json = resolve(val() ?? ''); break;
      case '-h': case '--help': a.help = true; break;
      default: throw new Error(`unknown option ${k}`);
    }
  }
  if (a.clients > a.flows) throw new Error('--clients must not exceed --flows');
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
function runIn(lab, ns, argv, timeoutMs) {
  return new Promise((resolveP) => {
    const child = lab.spawn(ns, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
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
      let j;
      try {
        j = JSON.parse(r.stdout);
      } catch {
        throw new Error(`iperf3 client ${i + 1}: ${r.timedOut ? 'timed out' : `exit ${r.code}`}: ${firstLine(r.stderr) || firstLine(r.stdout) || 'no output'}`);
      }
      if (j.error) throw new Error(`iperf3 client ${i + 1}: ${j.error}`);
      const s = j.end?.sum_sent ?? j.end?.sum;
      const srv = j.server_output_json?.end;
      const rcv = srv?.sum_received ?? srv?.sum;
      if (!s || !rcv) throw new Error(`iperf3 client ${i + 1}: JSON without sender/receiver totals`);
      const rcvBytes = Number.isFinite(rcv.bytes) && rcv.bytes > 0
        ? rcv.bytes
        : (srv.streams ?? []).reduce((acc, st) => acc + (st.udp?.bytes ?? 0), 0);
      const got = Math.round(rcvBytes / PAYLOAD);
      sent += s.packets;
      delivered += got;
      sentPps += s.packets / s.seconds;
      deliveredPps += got / rcv.seconds;
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
// router modes

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
  const w = head.map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  for (const [i, r] of rows.entries()) {
    out.push(r.map((cell, c) => (c === 0 ? String(cell).padEnd(w[c]) : String(cell).padStart(w[c]))).join('   '));
    if (i === 0) out.push(w.map((n) => '-'.repeat(n)).join('   '));
  }
  for (const r of modes) if (r.error) out.push(`${r.mode}: ${firstLine(r.error)}`);
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

  const m = machine();
  log(`machine: nproc ${m.nproc}, kernel ${m.kernel}, node ${m.node}`);

  const modesCount = doVpnmasq ? 2 : 1;
  const budgetS = 90 + modesCount * (60 + (a.reps + 1) * (a.seconds + 35) + a.pings * 0.02);
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
    lab = Lab.create({ lanHosts: 1, wanHosts: 1 });
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
  if (modes.length) printTable(a, m, modes, cmp);
  if (cliMissing) console.log(`vpnmasq: not benchmarked (no CLI at ${cliPath})`);

  if (a.json) {
    const summary = {
      date: new Date().toISOString(),
      machine: m,
      params: { reps: a.reps, seconds: a.seconds, flows: a.flows, clients: a.clients, pings: a.pings, warmup: a.warmup, packetBytes: 20 + 8 + PAYLOAD, payloadBytes: PAYLOAD },
      modes: Object.fromEntries(modes.map((r) => [r.mode, r])),
      vpnmasq: doVpnmasq ? 'benchmarked' : cliMissing ? `not benchmarked: no CLI at ${cliPath}` : 'not benchmarked: --kernel-only',
      comparison: cmp,
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
