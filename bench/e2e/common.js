// What the plain run, the mixed run and the router modes of the end-to-end
// bench share: the repo, the packet size and port, formatting and medians,
// stream tails, waiting for a listener, iperf3's JSON, and reachability.
import { execFileSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PAYLOAD = 36; // + UDP 8 + IPv4 20 = 64 bytes on the wire (L3)
export const FIRST_PORT = 5201;
export const NATT_PORT = 4500;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const log = (s) => process.stderr.write(s + '\n');
export const fmtInt = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
export const fmtMs = (n) => (Number.isFinite(n) ? `${n.toFixed(3)} ms` : '-');

export function median(xs) {
  const v = xs.filter(Number.isFinite).sort((x, y) => x - y);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function quantile(xs, q) {
  const v = xs.filter(Number.isFinite).sort((x, y) => x - y);
  if (v.length === 0) return NaN;
  return v[Math.min(v.length - 1, Math.floor(q * v.length))];
}

export function have(tool) {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore', timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}

export function firstLine(s) {
  return String(s).split('\n').map((l) => l.trim()).find(Boolean) ?? '';
}

/** Keeps the last `max` lines of a stream. */
export function tail(stream, max = 200) {
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

export async function waitListening(lab, ns, port, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const r = lab.tryExec(ns, ['ss', '-Htln', `sport = :${port}`], { timeoutMs: 5000 });
    if (r.ok && r.stdout.includes('LISTEN')) return true;
    await sleep(50);
  }
  return false;
}

export function iperfError(r) {
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
export function iperfTotals(r, what) {
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

export async function reachable(lab, ms) {
  const deadline = Date.now() + ms;
  do {
    const r = lab.tryExec(lab.lan[0], ['ping', '-n', '-c', '1', '-W', '1', lab.addr.wan[0]], { timeoutMs: 5000 });
    if (r.ok) return true;
    await sleep(200);
  } while (Date.now() < deadline);
  return false;
}

/** The bench's mode with option flow_offload '0': every packet through the TUNs and the engine (the default runs the kernel fast path). */
export const TUN_PATH_MODE = 'vpnmasq-tun-path';
