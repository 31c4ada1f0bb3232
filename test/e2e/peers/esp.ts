// Raw ESP peers (IP protocol 50, no NAT-T) with real crypto: esp.py, using
// python3-scapy's SecurityAssociation (tunnel mode, AES-CBC +
// HMAC-SHA256-128) over raw sockets; no kernel IPsec needed.
//
//   const sas = [newEspSa(), newEspSa()];
//   const srv = await startEspServer(lab, lab.wan[0]!, sas);
//   const [a, b] = await Promise.all([
//     espClient(lab, lab.lan[0]!, '203.0.113.2', sas[0]!, { tag: 'h1' }),
//     espClient(lab, lab.lan[1]!, '203.0.113.2', sas[1]!, { tag: 'h2' }),
//   ]);
//   a.replies.length  // distinct requests answered (want: 5)
//   (await srv.stop()).sas[sas[0].c2s].peers  // outer source addresses seen
//
// Each client's SA pair has its own SPIs in both directions, so a reply
// delivered to the wrong LAN host shows up there as foreign_spi.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { Lab } from '../../../src/lab/lab.js';
import { inCI } from '../../helpers/prereq.js';
import { PEERS_DIR, PYTHON } from './pptp.js';

export const ESP_PY = join(PEERS_DIR, 'esp.py');

/** Tools the ESP peers need (python3-scapy + python3-cryptography under /usr/bin/python3). */
export const ESP_TOOLS = [PYTHON];

/** null when /usr/bin/python3 can import scapy's IPsec layer (python3-scapy + python3-cryptography), else why not. */
export function scapyMissing(): string | null {
  try {
    execFileSync(PYTHON, ['-c', 'import scapy.layers.ipsec, cryptography'], { stdio: 'ignore', timeout: 30_000 });
    return null;
  } catch {
    return 'needs python3-scapy and python3-cryptography (apt-get install them)';
  }
}

/** Like skipUnless() for scapy: true (skip) outside CI when missing, throws under CI. */
export function skipUnlessScapy(): boolean {
  const why = scapyMissing();
  if (why === null) return false;
  if (inCI) throw new Error(`prerequisite missing under CI: ${why}`);
  console.warn(`skipping: ${why}`);
  return true;
}

/** A tunnel-mode SA pair between one client and the server. */
export interface EspSa {
  /** SPI of client→server packets */
  c2s: number;
  /** SPI of server→client packets */
  s2c: number;
  /** AES-128 key, hex */
  encKey: string;
  /** HMAC-SHA256 key, hex */
  authKey: string;
}

const usedSpis = new Set<number>();

/** A random SPI ≥ 0x1000 (1..255 are reserved, 0 is invalid), unique within this process. */
export function randomSpi(): number {
  for (;;) {
    const spi = randomBytes(4).readUInt32BE(0);
    if (spi >= 0x1000 && !usedSpis.has(spi)) {
      usedSpis.add(spi);
      return spi;
    }
  }
}

/** A fresh SA pair: random distinct SPIs both ways and random keys. */
export function newEspSa(): EspSa {
  return { c2s: randomSpi(), s2c: randomSpi(), encKey: randomBytes(16).toString('hex'), authKey: randomBytes(32).toString('hex') };
}

function pairArg(sa: EspSa): string {
  return `${sa.c2s},${sa.s2c},${sa.encKey},${sa.authKey}`;
}

export interface EspServerStats {
  /** keyed by the decimal C2S SPI */
  sas: Record<string, { requests: number; replies: number; peers: string[]; pushed: number }>;
  unknown_spi: Record<string, number>;
  bad: number;
}

export interface EspServer {
  ns: string;
  proc: ChildProcess;
  /** SIGUSR1: the server sends first, 3 packets on each SA that has a peer */
  push(): void;
  /** stops the server (SIGTERM) and returns what it saw */
  stop(): Promise<EspServerStats>;
}

/**
 * Starts esp.py server in `ns` answering every SA pair given; resolves once
 * its socket is open. replyDelayMs holds every reply back that long (a slow
 * peer: keeps a new SPI outstanding in the NAT for that time); holdMs
 * overrides it per SA (by the client-to-server SPI).
 */
export async function startEspServer(lab: Lab, ns: string, sas: EspSa[],
  opts: { replyDelayMs?: number; holdMs?: Map<number, number> } = {}): Promise<EspServer> {
  const holds = [...(opts.holdMs ?? new Map<number, number>())].flatMap(([spi, ms]) => ['--hold', `${spi}:${ms}`]);
  const argv = [PYTHON, ESP_PY, 'server', ...sas.flatMap((s) => ['--sa', pairArg(s)]), '--reply-delay-ms', String(opts.replyDelayMs ?? 0), ...holds];
  const proc = lab.spawn(ns, argv);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { err += d; });
  let exited = false;
  proc.once('exit', () => { exited = true; });
  for (let i = 0; !out.includes('"ready"'); i++) {
    if (exited || i > 200) throw new Error(`esp server in ${ns} did not start: ${out}${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    ns,
    proc,
    push() { proc.kill('SIGUSR1'); },
    async stop() {
      if (!exited) {
        proc.kill('SIGTERM');
        await Promise.race([new Promise((r) => proc.once('exit', r)), new Promise((r) => setTimeout(r, 3000))]);
      }
      const line = out.trim().split('\n').filter((l) => l.startsWith('{"sas"')).pop();
      if (!line) throw new Error(`esp server in ${ns} printed no stats: ${out}${err}`);
      return JSON.parse(line) as EspServerStats;
    },
  };
}

export interface EspClientOptions {
  /** payload prefix (default: the namespace) */
  tag?: string;
  /** distinct replies wanted (default 5) */
  want?: number;
  /** a new request this often (default 200 ms) */
  intervalMs?: number;
  /** give up after (default 10 000 ms) */
  timeoutMs?: number;
  /** inner (tunnelled) addresses (defaults 10.99.0.2 → 10.99.255.1) */
  innerSrc?: string;
  innerDst?: string;
  /** wall-clock time (Date.now() scale) of the first request; lines clients up despite python start-up jitter */
  startAt?: number;
  /** once served, keep receiving (not sending) this long so in-flight replies do not reach the next client (default 0) */
  lingerMs?: number;
  /** while lingering, stop once this many server-pushed packets (the server's SIGUSR1) arrived */
  pushes?: number;
}

export interface EspClientResult {
  tag: string;
  /** requests sent */
  sent: number;
  /** request numbers answered, each once */
  replies: number[];
  first_reply_ms: number | null;
  elapsed_ms: number;
  /** ESP from the server with an SPI that is not ours: decimal SPI → count */
  foreign_spi: Record<string, number>;
  /** ESP with our SPI that failed to authenticate/decrypt */
  bad: number;
  /** decrypted under our SA but another tag */
  not_ours: number;
  send_errors: number;
  /** own replies that arrived while lingering */
  late: number;
  /** packets the server sent first (its SIGUSR1 push) that reached us under our own SA */
  pushes: number;
}

/** Runs one ESP client in `ns` against `server` until `want` replies or the timeout. */
export function espClient(lab: Lab, ns: string, server: string, sa: EspSa, opts: EspClientOptions = {}): Promise<EspClientResult> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const argv = [
    PYTHON, ESP_PY, 'client', '--server', server, '--sa', pairArg(sa), '--tag', opts.tag ?? ns,
    '--want', String(opts.want ?? 5), '--interval-ms', String(opts.intervalMs ?? 200), '--timeout', String(timeoutMs / 1000),
    ...(opts.innerSrc ? ['--inner-src', opts.innerSrc] : []), ...(opts.innerDst ? ['--inner-dst', opts.innerDst] : []),
    ...(opts.startAt ? ['--start-at', String(opts.startAt)] : []),
    ...(opts.lingerMs ? ['--linger-ms', String(opts.lingerMs)] : []),
    ...(opts.pushes ? ['--pushes', String(opts.pushes)] : []),
  ];
  return new Promise((resolvePromise, reject) => {
    const child = lab.spawn(ns, argv);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => { out += d; });
    child.stderr!.on('data', (d) => { err += d; });
    const guard = setTimeout(() => child.kill('SIGKILL'), timeoutMs + 15_000 + Math.max(0, (opts.startAt ?? 0) - Date.now()));
    child.once('error', (e) => { clearTimeout(guard); reject(e); });
    child.once('exit', (code, sig) => {
      clearTimeout(guard);
      const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      if (!line) reject(new Error(`esp client in ${ns} (exit ${code ?? sig}) printed no result: ${out}${err}`));
      else resolvePromise(JSON.parse(line) as EspClientResult);
    });
  });
}
