// Servers for namespace tests: a UDP server that answers every datagram
// with one line (e.g. the address it saw the sender from), an iperf3
// server, and a wait until servers listen.
//
// `socat UDP-RECVFROM:P,fork SYSTEM:'echo …'` loses answers on a loaded
// machine, and the lost answer looks like a router that dropped a datagram:
// socat's child writes the datagram into the shell's socketpair, but `echo`
// never reads it, and when the shell has already run and exited the write
// fails (EPIPE, "write(6, …, 3): Broken pipe"), the child exits 1 and the
// answer already in the socketpair is never sent (seen: 21 of 60 asks
// lost on this 2-core machine with two busy loops). Reading the datagram
// first closes that race, and `-t5` lets the child wait for the shell's
// answer after the datagram (socat's default, 0.5 s after one side ends,
// is too short under load; the child still ends as soon as the shell exits).
import type { Lab } from '../../src/lab/lab.js';

/** argv for lab.spawn(): answers each datagram on `port` with `answer` (a shell word list, $SOCAT_PEERADDR etc. expanded). */
export function udpAnswerer(port: number, answer: string): string[] {
  return ['socat', '-t5', `UDP-RECVFROM:${port},fork`, `SYSTEM:read -r datagram; echo ${answer}`];
}

/** A listening socket to wait for: namespace, TCP or UDP, port. */
type Listener = readonly [ns: string, proto: 't' | 'u', port: number];

/**
 * Resolves once every [namespace, 't'|'u', port] has a listening socket (up
 * to `ms`); throws naming the ones that do not, so a test never starts
 * against a server that is not up yet (its first question would get a port
 * unreachable, or nothing).
 */
export async function waitListening(lab: Lab, sockets: readonly Listener[], ms = 15_000): Promise<void> {
  const up = ([ns, proto, port]: Listener) =>
    lab.tryExec(ns, ['ss', `-Hln${proto}`, `sport = :${port}`]).stdout.trim() !== '';
  let missing = sockets;
  for (const end = Date.now() + ms; ; await new Promise((r) => setTimeout(r, 100))) {
    missing = missing.filter((s) => !up(s));
    if (missing.length === 0) return;
    if (Date.now() > end) break;
  }
  throw new Error(`not listening: ${missing.map(([ns, proto, port]) => `${ns} ${proto === 't' ? 'tcp' : 'udp'}/${port}`).join(', ')}`);
}

/** An iperf3 server on `port` in `ns`, listening when this resolves. */
export async function iperfServer(lab: Lab, ns: string, port: number): Promise<void> {
  lab.spawn(ns, ['iperf3', '-s', '-p', String(port)]);
  await waitListening(lab, [[ns, 't', port]]);
}

/** An iperf3 client in `ns` for 2 s (`args`: -c host, -P, -R …); the bytes the receiver got. */
export function iperfReceived(lab: Lab, ns: string, args: string): number {
  const r = lab.tryExec(ns, ['sh', '-c', `iperf3 -J -t 2 ${args}`], { timeoutMs: 60_000 });
  if (!r.ok && !r.stdout) throw new Error(`iperf3 ${args}: ${r.stderr}`);
  const j = JSON.parse(r.stdout);
  if (j.error) throw new Error(`iperf3 ${args}: ${j.error}`);
  return j.end.sum_received.bytes as number;
}
