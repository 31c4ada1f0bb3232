// Senders of crafted and malformed VPN packets (crafted.py, scapy for the IP
// framing) and the receiving ends that show what crossed the router, for
// tests that check the NAT drops bad input. PPTP control messages go over a
// real TCP connection: see sendPptpControl / BAD_CTRL in ./pptp.ts.
//
//   const cap = await startCapture(lab, lab.wan[0]!, 47, 1500);
//   await sendGre(lab, lab.lan[0]!, '203.0.113.2', BAD_GRE.version0);
//   expect((await cap.done()).packets).toEqual([]);   // nothing got out
//
// Tunnelled forms: sendGre/sendEsp/sendIp all take `count`, and the
// `truncate`, fragment and TTL knobs of CraftCommon.
import { join } from 'node:path';
import type { Lab } from '../../../src/lab/lab.js';
import { PEERS_DIR, PYTHON } from './pptp.js';

export const CRAFTED_PY = join(PEERS_DIR, 'crafted.py');

export interface CraftCommon {
  /** packets to send (default 1) */
  count?: number;
  /** gap between them (default 20 ms) */
  intervalMs?: number;
  /** send only the first N bytes of the IP payload */
  truncate?: number;
  ttl?: number;
  /** fragment offset in 8-byte units */
  fragOffset?: number;
  moreFragments?: boolean;
}

export interface GreOptions extends CraftCommon {
  /** GRE version (default 1, enhanced GRE) */
  version?: number;
  /** protocol type (default 0x880B, PPP) */
  proto?: number;
  /** Call ID in the key field (default 0x1234) */
  callId?: number;
  /** leave out the key field (K bit clear) */
  noKey?: boolean;
  seq?: number;
  ack?: number;
  /** raw first header byte (C R K S s Recur), overrides the K/S bits */
  flags?: number;
  /** payload (default an LCP Configure-Request in ff 03) */
  payloadHex?: string;
  /** value of the payload length field (default the real length) */
  payloadLen?: number;
}

export interface EspOptions extends CraftCommon {
  /** default 0 (invalid: RFC 4303 reserves it) */
  spi?: number;
  seq?: number;
  /** default 32 random bytes */
  payloadHex?: string;
}

export interface SendResult {
  sent: number;
  /** the first packet, whole IP header included */
  hex: string;
}

function commonArgs(o: CraftCommon): string[] {
  const a: string[] = [];
  if (o.count !== undefined) a.push('--count', String(o.count));
  if (o.intervalMs !== undefined) a.push('--interval-ms', String(o.intervalMs));
  if (o.truncate !== undefined) a.push('--truncate', String(o.truncate));
  if (o.ttl !== undefined) a.push('--ttl', String(o.ttl));
  if (o.fragOffset !== undefined) a.push('--frag-offset', String(o.fragOffset));
  if (o.moreFragments) a.push('--more-fragments');
  return a;
}

function runSend(lab: Lab, ns: string, args: string[]): SendResult {
  const out = lab.exec(ns, [PYTHON, CRAFTED_PY, 'send', ...args], { timeoutMs: 30_000 });
  const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  if (!line) throw new Error(`crafted.py send printed nothing: ${out}`);
  return JSON.parse(line) as SendResult;
}

/** Sends GRE from `ns` to `dst` (synchronous; returns once sent). */
export function sendGre(lab: Lab, ns: string, dst: string, o: GreOptions = {}): SendResult {
  const a = ['--dst', dst, '--kind', 'gre', ...commonArgs(o)];
  if (o.version !== undefined) a.push('--version', String(o.version));
  if (o.proto !== undefined) a.push('--proto', String(o.proto));
  if (o.callId !== undefined) a.push('--call-id', String(o.callId));
  if (o.noKey) a.push('--no-key');
  if (o.seq !== undefined) a.push('--seq', String(o.seq));
  if (o.ack !== undefined) a.push('--ack', String(o.ack));
  if (o.flags !== undefined) a.push('--flags', String(o.flags));
  if (o.payloadHex !== undefined) a.push('--payload-hex', o.payloadHex);
  if (o.payloadLen !== undefined) a.push('--payload-len', String(o.payloadLen));
  return runSend(lab, ns, a);
}

/** Sends ESP from `ns` to `dst` (default SPI 0). */
export function sendEsp(lab: Lab, ns: string, dst: string, o: EspOptions = {}): SendResult {
  const a = ['--dst', dst, '--kind', 'esp', ...commonArgs(o)];
  a.push('--spi', String(o.spi ?? 0));
  if (o.seq !== undefined) a.push('--seq', String(o.seq));
  if (o.payloadHex !== undefined) a.push('--payload-hex', o.payloadHex);
  return runSend(lab, ns, a);
}

/** Sends any IP protocol with a given payload from `ns` to `dst`. */
export function sendIp(lab: Lab, ns: string, dst: string, proto: number, payloadHex: string, o: CraftCommon = {}): SendResult {
  return runSend(lab, ns, ['--dst', dst, '--kind', 'ip', '--proto', String(proto), '--payload-hex', payloadHex, ...commonArgs(o)]);
}

/** Ready-made bad GRE (pass to sendGre, optionally spread with more options). */
export const BAD_GRE = Object.freeze({
  /** version 0 (plain GRE) with the PPP protocol and a key */
  version0: { version: 0 } as GreOptions,
  /** version 2 (undefined) */
  version2: { version: 2 } as GreOptions,
  /** enhanced GRE header with protocol 0x0800 instead of 0x880B */
  wrongProtocol: { proto: 0x0800 } as GreOptions,
  /** version 1 without the key field (K bit clear): no Call ID to translate */
  noKey: { noKey: true } as GreOptions,
  /** checksum and routing bits set (C, R), which enhanced GRE forbids */
  checksumRouting: { flags: 0xe0 } as GreOptions,
  /** payload length field larger than the payload */
  lengthLies: { payloadLen: 1400 } as GreOptions,
  /** the header cut after 6 bytes (Call ID incomplete) */
  truncatedHeader: { truncate: 6 } as GreOptions,
});

/** Ready-made bad ESP. */
export const BAD_ESP = Object.freeze({
  /** SPI 0 is reserved (RFC 4303) */
  spi0: { spi: 0 } as EspOptions,
  /** SPIs 1..255 are reserved by IANA */
  spiReserved: { spi: 7 } as EspOptions,
  /** shorter than SPI + sequence number */
  truncated: { spi: 0x1234, truncate: 6 } as EspOptions,
  /** just the 8-byte header, no payload */
  headerOnly: { spi: 0x1234, payloadHex: '' } as EspOptions,
});

export interface Capture {
  /** stops at the end of the window (or now) and returns what arrived */
  done(): Promise<{ packets: Array<{ src: string; dst: string; hex: string }> }>;
}

function startJsonListener<T>(lab: Lab, ns: string, argv: string[], windowMs: number): Promise<{ done(): Promise<T> }> {
  return new Promise((resolveStart, rejectStart) => {
    const child = lab.spawn(ns, argv);
    let out = '';
    let err = '';
    let started = false;
    let exited = false;
    const waiters: Array<() => void> = [];
    child.stdout!.on('data', (d) => {
      out += d;
      if (!started && out.includes('"listening"')) {
        started = true;
        resolveStart({
          done: () =>
            new Promise<T>((res, rej) => {
              const finish = () => {
                const line = out.trim().split('\n').filter((l) => l.startsWith('{') && !l.includes('"listening"')).pop();
                if (!line) rej(new Error(`${argv.join(' ')} printed no result: ${out}${err}`));
                else res(JSON.parse(line) as T);
              };
              if (exited) finish();
              else {
                waiters.push(finish);
                child.kill('SIGTERM');
              }
            }),
        });
      }
    });
    child.stderr!.on('data', (d) => { err += d; });
    const guard = setTimeout(() => child.kill('SIGKILL'), windowMs + 30_000);
    child.once('exit', () => {
      exited = true;
      clearTimeout(guard);
      if (!started) rejectStart(new Error(`${argv.join(' ')} did not start: ${out}${err}`));
      for (const w of waiters) w();
    });
  });
}

/**
 * Listens for IP protocol `proto` in `ns` (a raw socket: whole packets) for
 * up to `windowMs`; done() ends early and returns what came.
 */
export function startCapture(lab: Lab, ns: string, proto: number, windowMs = 2000, from?: string): Promise<Capture> {
  return startJsonListener(lab, ns, [PYTHON, CRAFTED_PY, 'capture', '--proto', String(proto), '--ms', String(windowMs),
    ...(from ? ['--from', from] : [])], windowMs);
}

export interface TcpSink {
  done(): Promise<{ connections: Array<{ peer: string; hex: string; closed: boolean }> }>;
}

/** A TCP listener on `port` in `ns` that records every byte received per connection (e.g. a fake PPTP server on 1723). */
export function startTcpSink(lab: Lab, ns: string, port = 1723, windowMs = 10_000): Promise<TcpSink> {
  return startJsonListener(lab, ns, [PYTHON, CRAFTED_PY, 'sink', '--port', String(port), '--ms', String(windowMs)], windowMs);
}
