// ike-scan (NTA Monitor, unmodified Debian package) as an IKEv1 initiator in
// a lab namespace: sends main mode message 1 from UDP port 500 (by default)
// with an initiator cookie we choose, and reports the responder's answer.
// ike-scan matches answers to its request by the initiator cookie, so a
// handshake line proves the answer to *this* host's cookie reached this host.
//
// Output lines it prints for a target, e.g.
//   203.0.113.2\tMain Mode Handshake returned HDR=(CKY-R=4a76b870306da018) SA=(Enc=3DES Hash=SHA1 …) VID=…
//   203.0.113.2\tNotify message 14 (NO-PROPOSAL-CHOSEN) HDR=(CKY-R=…)
import { randomBytes } from 'node:crypto';
import type { Lab } from '../../../src/lab/lab.js';
import { runAsync } from './ike-util.js';

export interface IkeScanOptions {
  /** source port (default 500: ike-scan binds it, so nothing else in the namespace may) */
  sport?: number;
  /** initiator cookie, 16 hex digits (default random) */
  cookie?: string;
  /** retries after the first try (default 2) */
  retries?: number;
  /** first per-try timeout in ms (default 1000; ike-scan backs off ×1.5) */
  tryTimeoutMs?: number;
  /** hard limit for the whole run (default 15 000 ms) */
  timeoutMs?: number;
  /** more ike-scan arguments (e.g. ['--trans=5,2,1,2']) */
  extra?: string[];
}

export interface IkeScanReply {
  host: string;
  kind: 'handshake' | 'notify' | 'other';
  /** responder cookie from HDR=(CKY-R=…) */
  cookieR?: string;
  /** notify message number, for kind 'notify' */
  notify?: number;
  line: string;
}

export interface IkeScanResult {
  ok: boolean;
  status: number | null;
  /** the initiator cookie used */
  cookie: string;
  sport: number;
  replies: IkeScanReply[];
  handshakes: IkeScanReply[];
  notifies: IkeScanReply[];
  /** stdout + stderr, for messages */
  output: string;
  ns: string;
}

/** A random non-zero initiator cookie, 16 hex digits. */
export function randomCookie(): string {
  for (;;) {
    const c = randomBytes(8).toString('hex');
    if (!/^0+$/.test(c)) return c;
  }
}

export function parseIkeScan(text: string): IkeScanReply[] {
  const out: IkeScanReply[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+\.\d+\.\d+\.\d+)\t(.*)$/.exec(line);
    if (!m) continue;
    const body = m[2]!;
    const cookieR = /CKY-R=([0-9a-f]{16})/.exec(body)?.[1];
    const notify = /^Notify message (\d+)/.exec(body);
    out.push({
      host: m[1]!,
      kind: /Handshake returned/.test(body) ? 'handshake' : notify ? 'notify' : 'other',
      cookieR,
      notify: notify ? Number(notify[1]) : undefined,
      line,
    });
  }
  return out;
}

/** Runs ike-scan in `ns` against `target` (IKEv1 main mode, PSK transforms by default); never throws. */
export async function ikeScan(lab: Lab, ns: string, target: string, opts: IkeScanOptions = {}): Promise<IkeScanResult> {
  const sport = opts.sport ?? 500;
  const cookie = (opts.cookie ?? randomCookie()).toLowerCase();
  if (!/^[0-9a-f]{16}$/.test(cookie)) throw new Error(`ikeScan: cookie ${JSON.stringify(opts.cookie)} must be 16 hex digits`);
  const argv = [
    'ike-scan', `--sport=${sport}`, `--cookie=${cookie}`, `--retry=${(opts.retries ?? 2) + 1}`,
    `--timeout=${opts.tryTimeoutMs ?? 1000}`, ...(opts.extra ?? []), target,
  ];
  void lab; // runs through `ip netns exec`, like lab.exec, but asynchronously
  const r = await runAsync(argv, { ns, timeoutMs: opts.timeoutMs ?? 15_000 });
  const replies = parseIkeScan(r.stdout);
  return {
    ok: r.ok,
    status: r.status,
    cookie,
    sport,
    replies,
    handshakes: replies.filter((x) => x.kind === 'handshake'),
    notifies: replies.filter((x) => x.kind === 'notify'),
    output: `$ ${r.cmd}\n${r.stdout}${r.stderr}`,
    ns,
  };
}
