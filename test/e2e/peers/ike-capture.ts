// tcpdump in a lab namespace, parsed into the IKE/ISAKMP and UDP-encapsulated
// ESP packets it saw. Used on the WAN side to check what actually left the
// router: source ports, initiator/responder cookies (SPIs), ESP SPIs.
//
// tcpdump runs with -n -vv -l --immediate-mode, so every packet is a line
// the moment it is seen; -vv makes tcpdump print ISAKMP cookies:
//   203.0.113.1.500 > 203.0.113.2.500: [udp sum ok] isakmp 1.0 msgid 00000000 cookie 00000000000a0001->0000000000000000: phase 1 I ident:
//   203.0.113.1.500 > 203.0.113.2.500: … isakmp 2.0 msgid 00000000 cookie 8dd65ee8cde76505->0000000000000000: parent_sa ikev2_init[I]:
//   203.0.113.1.4500 > 203.0.113.2.4500: … NONESP-encap: isakmp 2.0 msgid 00000001 cookie …->…: child_sa  ikev2_auth[I]:
//   203.0.113.1.4500 > 203.0.113.2.4500: … UDP-encap: ESP(spi=0xaf6388bc,seq=0x1), length 120
import type { ChildProcess } from 'node:child_process';
import type { Lab } from '../../../src/lab/lab.js';
import { LogBuffer, exited, sleep, terminate, waitFor } from './ike-util.js';

export interface UdpPacket {
  src: string;
  sport: number;
  dst: string;
  dport: number;
  /** the rest of the line after `dst.dport: ` */
  info: string;
}

export interface IsakmpPacket extends UdpPacket {
  /** 1 or 2 */
  version: number;
  /** sent with the 4-byte non-ESP marker (UDP 4500) */
  natt: boolean;
  msgid: string;
  /** initiator cookie / IKEv2 initiator SPI, 16 hex digits */
  icookie: string;
  /** responder cookie / SPI, 16 hex digits (zeros in the first message) */
  rcookie: string;
  /** e.g. `phase 1 I ident`, `parent_sa ikev2_init[I]` */
  exchange: string;
  /** sent by the initiator of the exchange (IKEv1 ` I `, IKEv2 `[I]`) */
  fromInitiator: boolean;
}

export interface EspPacket extends UdpPacket {
  spi: string;
  seq: number;
}

const ADDR_RE = /^\s*(\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): (.*)$/;

export function parseUdp(text: string): UdpPacket[] {
  const out: UdpPacket[] = [];
  for (const line of text.split('\n')) {
    // -vv: the ports are on the continuation line; -v/-q: after "IP "
    const l = line.replace(/^\S+ IP (?!\()/, '');
    const m = ADDR_RE.exec(l);
    if (m) out.push({ src: m[1]!, sport: Number(m[2]), dst: m[3]!, dport: Number(m[4]), info: m[5]! });
  }
  return out;
}

export function parseIsakmp(text: string): IsakmpPacket[] {
  const out: IsakmpPacket[] = [];
  for (const p of parseUdp(text)) {
    const m = /(NONESP-encap: )?isakmp (\d)\.\d msgid ([0-9a-f]+) cookie ([0-9a-f]{16})->([0-9a-f]{16}): (.*?):?\s*$/.exec(p.info);
    if (!m) continue;
    const exchange = m[6]!.replace(/\s+/g, ' ').replace(/:$/, '');
    out.push({
      ...p, natt: !!m[1], version: Number(m[2]), msgid: m[3]!, icookie: m[4]!, rcookie: m[5]!, exchange,
      fromInitiator: /\[I\]| I /.test(` ${exchange} `),
    });
  }
  return out;
}

export function parseEsp(text: string): EspPacket[] {
  const out: EspPacket[] = [];
  for (const p of parseUdp(text)) {
    const m = /UDP-encap: ESP\(spi=0x([0-9a-f]+),seq=0x([0-9a-f]+)\)/.exec(p.info);
    if (m) out.push({ ...p, spi: m[1]!, seq: parseInt(m[2]!, 16) });
  }
  return out;
}

export class Capture {
  readonly out = new LogBuffer(4 * 1024 * 1024);
  private proc?: ChildProcess;

  private constructor(readonly lab: Lab, readonly ns: string, readonly iface: string, readonly filter: string) {}

  /** Starts tcpdump and waits until it listens (default: eth0, IKE and NAT-T). */
  static async start(lab: Lab, ns: string, opts: { iface?: string; filter?: string; timeoutMs?: number } = {}): Promise<Capture> {
    const c = new Capture(lab, ns, opts.iface ?? 'eth0', opts.filter ?? 'udp port 500 or udp port 4500');
    c.proc = lab.spawn(ns, ['tcpdump', '-n', '-vv', '-l', '--immediate-mode', '-i', c.iface, c.filter]);
    c.out.attach(c.proc);
    await waitFor(
      () => `tcpdump in ${ns} did not start: ${c.out.tail(10)}`,
      () => {
        if (exited(c.proc!)) throw new Error(`tcpdump in ${ns} exited: ${c.out.tail(10)}`);
        return /listening on/.test(c.out.value) ? true : undefined;
      },
      opts.timeoutMs ?? 5_000,
    );
    return c;
  }

  get text(): string {
    return this.out.value;
  }

  isakmp(): IsakmpPacket[] {
    return parseIsakmp(this.text);
  }

  esp(): EspPacket[] {
    return parseEsp(this.text);
  }

  udp(): UdpPacket[] {
    return parseUdp(this.text);
  }

  /** Stops tcpdump after a short grace for packets still in flight. */
  async stop(graceMs = 300): Promise<void> {
    await sleep(graceMs);
    await terminate(this.proc, 2_000);
  }
}
