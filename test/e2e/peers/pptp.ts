// PPTP peers for end-to-end tests, without kernel PPP: pptpd (PoPToP) and
// pptp-linux in --nolaunchpppd mode, each with fakeppp.py in place of pppd.
// Real TCP 1723 control connections (Start-Control-Connection,
// Outgoing-Call-Request/Reply, Call-Clear, Stop-Control-Connection) and real
// enhanced GRE (version 1, protocol 0x880B, Call ID in the key field,
// sequence/ack numbers) go over the wire; the PPP frames inside are what
// fakeppp writes and echoes.
//
//   const srv = await startPptpd(lab, lab.wan[0]!);
//   const r = await pptpCall(lab, lab.lan[0]!, '203.0.113.2', { tag: 'h1', frames: 5 });
//   r.echoed  // ['h1:0', … 'h1:4'] when every frame made the round trip
//
// pnsCall() is the same call made by pptpc.py, a minimal Python PNS, with a
// Call ID of the test's choosing (pptp-linux picks its own at random), so
// several LAN hosts can use the same Call ID — the case that needs Call ID
// translation.
//
// Every pptpd and every client runs in its own mount namespace with a tmpfs
// on /run: pptp's call manager socket (/run/pptp/<server>) and pptpd's pid
// file would otherwise collide between namespaces sharing one filesystem.
// Debian packages: pptpd, pptp-linux (pulls ppp; no kernel PPP is used).
import { mkdtempSync, writeFileSync, chmodSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { Lab } from '../../../src/lab/lab.js';

export const PEERS_DIR = resolve(__dirname);
export const FAKEPPP = join(PEERS_DIR, 'fakeppp.py');
export const PPTPC = join(PEERS_DIR, 'pptpc.py');
/** Debian's interpreter: python3-scapy lives there, whatever `python3` on PATH is. */
export const PYTHON = '/usr/bin/python3';

/** Tools the PPTP peers need (for skipUnless). */
export const PPTP_TOOLS = ['pptpd', 'pptp', 'unshare', 'ss', PYTHON];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** argv that runs `argv` inside a private mount namespace with a fresh tmpfs on /run. */
export function privateRun(argv: string[]): string[] {
  return ['unshare', '-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs tmpfs /run && exec "$0" "$@"', ...argv];
}

export interface PptpServer {
  ns: string;
  dir: string;
  proc: ChildProcess;
  /** fakeppp's log: one line per call start, echoed frame, exit */
  log(): string;
  /** number of calls (fakeppp instances) started so far */
  calls(): number;
  stop(): Promise<void>;
}

export interface PptpdOptions {
  /** address pptpd listens on (default: all) */
  listen?: string;
}

/** Starts pptpd in `ns` (foreground, fakeppp as its pppd) and waits until TCP 1723 listens. */
export async function startPptpd(lab: Lab, ns: string, opts: PptpdOptions = {}): Promise<PptpServer> {
  const dir = mkdtempSync(join(tmpdir(), 'e2e-pptpd-'));
  const wrapper = join(dir, 'ppp');
  writeFileSync(wrapper, `#!/bin/sh\nexec ${PYTHON} '${FAKEPPP}' server "$@"\n`);
  chmodSync(wrapper, 0o755);
  writeFileSync(join(dir, 'options'), '# unused by fakeppp\n');
  writeFileSync(join(dir, 'pptpd.conf'), `ppp ${wrapper}\noption ${join(dir, 'options')}\n${opts.listen ? `listen ${opts.listen}\n` : ''}`);
  const logPath = join(dir, 'fakeppp.log');
  writeFileSync(logPath, '');
  const proc = lab.spawn(ns, privateRun(['pptpd', '-f', '-D', '-c', join(dir, 'pptpd.conf'), '-p', '/run/pptpd.pid']), {
    env: { ...process.env, FAKEPPP_LOG: logPath },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout?.on('data', (d) => { out += d; });
  proc.stderr?.on('data', (d) => { out += d; });
  let exited = false;
  proc.once('exit', () => { exited = true; });
  for (let i = 0; i < 100; i++) {
    const ss = lab.tryExec(ns, ['ss', '-Hltn', 'sport = :1723']);
    if (ss.ok && /:1723\b/.test(ss.stdout)) break;
    if (exited) throw new Error(`pptpd in ${ns} exited: ${out}`);
    if (i === 99) throw new Error(`pptpd in ${ns} does not listen on 1723: ${out}`);
    await sleep(50);
  }
  const log = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
  return {
    ns,
    dir,
    proc,
    log,
    calls: () => log().split('\n').filter((l) => / start args=/.test(l)).length,
    async stop() {
      if (!exited) {
        proc.kill('SIGTERM');
        await Promise.race([new Promise((r) => proc.once('exit', r)), sleep(2000)]);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface PptpCallOptions {
  /** payload prefix; frames carry `${tag}:${i}` (default: the namespace name) */
  tag?: string;
  /** frames to send (default 5) */
  frames?: number;
  /** give up after this long (default 15 000 ms) */
  timeoutMs?: number;
  /** resend unanswered frames this often (default 300 ms) */
  resendMs?: number;
}

export interface PptpCallResult {
  tag: string;
  /** frames written to pptp (with resends) */
  sent: number;
  /** own payloads that came back, in arrival order, each once */
  echoed: string[];
  /** PPP IP frames that came back but were not ours (misrouted GRE) */
  foreign: string[];
  /** LCP frames received (fakeppp on the server sends one Configure-Request per call) */
  lcp: number;
  bad_fcs: number;
  first_echo_ms: number | null;
  elapsed_ms: number;
  pptp_rc: number | null;
  /** the client's own diagnostics if it printed any, and stderr of the wrapper */
  pptp_log: string;
  /** the payloads this call sent */
  expected: string[];
}

/**
 * One PPTP call from `ns` to `server`: sets the call up with pptp-linux,
 * sends the frames, collects the echoes, hangs up. Resolves when done
 * (never rejects for network failures: check `echoed`).
 */
export async function pptpCall(lab: Lab, ns: string, server: string, opts: PptpCallOptions = {}): Promise<PptpCallResult> {
  const tag = opts.tag ?? ns;
  const frames = opts.frames ?? 5;
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const argv = privateRun([
    PYTHON, FAKEPPP, 'client', '--server', server, '--tag', tag, '--frames', String(frames),
    '--timeout', String(timeoutMs / 1000), '--resend-ms', String(opts.resendMs ?? 300),
  ]);
  const r = await runJson<PptpCallResult>(lab, ns, argv, timeoutMs + 10_000, 'pptp client');
  r.expected = Array.from({ length: frames }, (_, i) => `${tag}:${i}`);
  return r;
}

/** Runs `argv` in `ns`, resolves with the last JSON line it printed. */
function runJson<T>(lab: Lab, ns: string, argv: string[], guardMs: number, what: string): Promise<T> {
  return new Promise((resolvePromise, reject) => {
    const child = lab.spawn(ns, argv);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => { out += d; });
    child.stderr!.on('data', (d) => { err += d; });
    const guard = setTimeout(() => child.kill('SIGKILL'), guardMs);
    child.once('error', (e) => { clearTimeout(guard); reject(e); });
    child.once('exit', (code, sig) => {
      clearTimeout(guard);
      const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      if (!line) reject(new Error(`${what} in ${ns} (exit ${code ?? sig}) printed no result: ${out}${err}`));
      else resolvePromise(JSON.parse(line) as T);
    });
  });
}

export interface PnsCallOptions extends PptpCallOptions {
  /** our Call ID (default 0x1234) */
  callId?: number;
  /** skip Call-Clear-Request / Stop-Control-Connection, just close the TCP connection */
  noClear?: boolean;
  /** once every frame came back, keep receiving this long (server pushes) */
  lingerMs?: number;
  /** stop lingering after this many server-pushed frames of our call */
  pushes?: number;
}

export interface PnsCallResult {
  tag: string;
  call_id: number;
  /** the server's Call ID from the Outgoing-Call-Reply (as seen after the NAT) */
  peer_call_id: number | null;
  sent: number;
  echoed: string[];
  /** payloads in GRE with our Call ID that were not ours */
  foreign: string[];
  /** Call IDs of GRE packets from the server that did not carry ours (first 50) */
  wrong_key: number[];
  lcp: number;
  bad_gre: number;
  first_echo_ms: number | null;
  elapsed_ms: number;
  /** a Call-Disconnect-Notify answered our Call-Clear-Request (pptpd just closes instead) */
  cdn: boolean;
  error: string | null;
  /** socket errors on the GRE socket: ICMP errors (e.g. protocol 47 unreachable from a NAT that lost the call) */
  icmp_errors: number;
  last_icmp: string | null;
  /** frames the server sent first (fakeppp's SIGUSR1 push) on our call */
  pushes: string[];
  expected: string[];
}

/** One call by the Python PNS (pptpc.py): our Call ID, PPP frames in GRE, echoes counted. */
export async function pnsCall(lab: Lab, ns: string, server: string, opts: PnsCallOptions = {}): Promise<PnsCallResult> {
  const tag = opts.tag ?? ns;
  const frames = opts.frames ?? 5;
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const argv = [
    PYTHON, PPTPC, 'call', '--server', server, '--call-id', String(opts.callId ?? 0x1234), '--tag', tag,
    '--frames', String(frames), '--timeout', String(timeoutMs / 1000), '--resend-ms', String(opts.resendMs ?? 300),
    ...(opts.noClear ? ['--no-clear'] : []),
    ...(opts.lingerMs ? ['--linger-ms', String(opts.lingerMs)] : []),
    ...(opts.pushes ? ['--pushes', String(opts.pushes)] : []),
  ];
  const r = await runJson<PnsCallResult>(lab, ns, argv, timeoutMs + (opts.lingerMs ?? 0) + 10_000, 'pptpc call');
  r.expected = Array.from({ length: frames }, (_, i) => `${tag}:${i}`);
  return r;
}

// ---------------------------------------------------------------------------
// PPTP control messages, well-formed and not, for tests that check the NAT's
// parser (RFC 2637 section 2). All multi-byte fields big-endian.

export const PPTP_MAGIC = 0x1a2b3c4d;
export const CTRL = Object.freeze({
  SCCRQ: 1, SCCRP: 2, STOPCCRQ: 3, STOPCCRP: 4, ECHORQ: 5, ECHORP: 6, OCRQ: 7, OCRP: 8,
  ICRQ: 9, ICRP: 10, ICCN: 11, CCRQ: 12, CDN: 13, WEN: 14, SLI: 15,
});
/** The fixed length of each control message type. */
export const CTRL_LENGTH: Readonly<Record<number, number>> = Object.freeze({
  1: 156, 2: 156, 3: 16, 4: 16, 5: 16, 6: 20, 7: 168, 8: 32, 9: 220, 10: 24, 11: 28, 12: 16, 13: 148, 14: 40, 15: 24,
});

export interface CtrlMessageOptions {
  /** default 0x1A2B3C4D */
  magic?: number;
  /** the length field (default: the real length of header + body) */
  length?: number;
  /** PPTP message type (default 1 = control) */
  msgType?: number;
}

/** A control message: 12-byte header + body (body zero-filled to the type's length unless given). */
export function ctrlMessage(type: number, body?: Buffer, o: CtrlMessageOptions = {}): Buffer {
  const b = body ?? Buffer.alloc(Math.max(0, (CTRL_LENGTH[type] ?? 16) - 12));
  const h = Buffer.alloc(12);
  h.writeUInt16BE(o.length ?? 12 + b.length, 0);
  h.writeUInt16BE(o.msgType ?? 1, 2);
  h.writeUInt32BE((o.magic ?? PPTP_MAGIC) >>> 0, 4);
  h.writeUInt16BE(type, 8);
  return Buffer.concat([h, b]);
}

/** Outgoing-Call-Request with our Call ID (168 bytes). */
export function outgoingCallRequest(callId: number, o: CtrlMessageOptions = {}): Buffer {
  const b = Buffer.alloc(156);
  b.writeUInt16BE(callId, 0);
  b.writeUInt32BE(2400, 4);
  b.writeUInt32BE(10_000_000, 8);
  b.writeUInt32BE(3, 12);
  b.writeUInt32BE(3, 16);
  b.writeUInt16BE(64, 20);
  return ctrlMessage(CTRL.OCRQ, b, o);
}

/** Set-Link-Info for a peer Call ID (24 bytes). */
export function setLinkInfo(peerCallId: number, o: CtrlMessageOptions = {}): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(peerCallId, 0);
  b.writeUInt32BE(0xffffffff, 4);
  b.writeUInt32BE(0xffffffff, 8);
  return ctrlMessage(CTRL.SLI, b, o);
}

/** Ready-made malformed control messages (each a single Buffer to send on TCP 1723). */
export const BAD_CTRL = Object.freeze({
  /** an Outgoing-Call-Request whose magic cookie is wrong */
  wrongMagic: (callId = 0x1234) => outgoingCallRequest(callId, { magic: 0xdeadbeef }),
  /** length field smaller than the header (8) */
  lengthBelowHeader: (callId = 0x1234) => outgoingCallRequest(callId, { length: 8 }),
  /** an Outgoing-Call-Request whose length field says 40 (type needs 168), and only 40 bytes sent */
  shortForType: (callId = 0x1234) => outgoingCallRequest(callId, { length: 40 }).subarray(0, 40),
  /** length field claims 168 but the segment ends after 20 bytes (rest never comes) */
  truncated: (callId = 0x1234) => outgoingCallRequest(callId).subarray(0, 20),
  /** control message type 99 */
  unknownType: () => ctrlMessage(99, Buffer.alloc(20)),
  /** type 0 */
  typeZero: () => ctrlMessage(0, Buffer.alloc(4)),
  /** PPTP message type 2 (management), not 1 (control) */
  managementMessage: (callId = 0x1234) => outgoingCallRequest(callId, { msgType: 2 }),
  /** length field larger than any control message (0xffff) */
  hugeLength: (callId = 0x1234) => outgoingCallRequest(callId, { length: 0xffff }),
});

export interface CtrlRawResult {
  connected: boolean;
  /** control messages (hex) read back, the Start-Control-Connection-Reply first when handshake */
  replies: string[];
  /** the other side closed the connection */
  closed: boolean;
  error: string | null;
}

/**
 * Opens a TCP 1723 connection from `ns` to `server`, optionally does the
 * Start-Control-Connection exchange, writes `messages` (each as its own
 * send), then reads replies for `waitMs`. A test checks what the NAT let
 * through with a sink on the other side (startTcpSink) or its counters.
 */
export function sendPptpControl(
  lab: Lab, ns: string, server: string, messages: Buffer[], opts: { handshake?: boolean; waitMs?: number } = {},
): Promise<CtrlRawResult> {
  const argv = [PYTHON, PPTPC, 'raw', '--server', server, '--wait-ms', String(opts.waitMs ?? 1000),
    ...(opts.handshake ? ['--handshake'] : []), ...messages.map((m) => m.toString('hex'))];
  return runJson<CtrlRawResult>(lab, ns, argv, (opts.waitMs ?? 1000) + 15_000, 'pptpc raw');
}
