// The NAT under test in the lab's router namespace, shared by the e2e tests
// (PPTP, IPsec/strongSwan, ike-scan):
//   vpnmasq      the real `vpnmasq run` (RunningRouter) — the default
//   kernel       the Linux kernel's own masquerading (nftables), a baseline
//   kernel-pptp  the same plus the kernel's PPTP conntrack/NAT helper
// chosen with E2E_NAT=… (VPNMASQ_E2E_NAT is accepted too).
//
// Every NAT answers flows() in one shape, so a test can look for "a UDP 4500
// flow of 192.168.1.11" without caring which NAT made it.
import type { Lab } from '../../../src/lab/lab.js';
import { RunningRouter } from '../../helpers/vpnmasq.js';

export type NatKind = 'vpnmasq' | 'kernel' | 'kernel-pptp';

/** E2E_NAT (or VPNMASQ_E2E_NAT) = vpnmasq | kernel | kernel-pptp; default vpnmasq. */
export function natKindFromEnv(): NatKind {
  const v = (process.env.E2E_NAT ?? process.env.VPNMASQ_E2E_NAT ?? 'vpnmasq').toLowerCase();
  if (v === '' || v === 'vpnmasq') return 'vpnmasq';
  if (v === 'kernel' || v === 'nft' || v === 'nftables') return 'kernel';
  if (v === 'kernel-pptp') return 'kernel-pptp';
  throw new Error(`E2E_NAT=${v}: expected vpnmasq, kernel or kernel-pptp`);
}

export const NAT_KIND: NatKind = natKindFromEnv();

/** An inbound forward from the router's WAN address to a LAN host. */
export interface Forward {
  name: string;
  /** tcp, udp, or a portless protocol (gre, esp, …) */
  proto: string;
  /** WAN port (tcp/udp only) */
  port?: number;
  /** the LAN host */
  to: string;
  /** port on the LAN host (default: port) */
  toPort?: number;
}

export interface NatFlow {
  proto: string;
  lan: string;
  lanPort: number;
  remote: string;
  remotePort: number;
  /** the WAN address and port the flow uses outside */
  wan: string;
  wanPort: number;
  replied: boolean;
  /** the NAT's own record (vpnmasq FlowEntry or the conntrack line) */
  raw: unknown;
}

export interface Nat {
  readonly kind: NatKind;
  flows(): NatFlow[];
  /** drop counters by reason (vpnmasq); {} for the kernel */
  drops(): Record<string, number>;
  /** sum of all drop counters */
  dropTotal(): number;
  /** the NAT's own log (vpnmasq output; the nft ruleset for the kernel) */
  logTail(lines?: number): string;
  stop(): Promise<void>;
}

const PORTFUL = new Set(['tcp', 'udp']);

class VpnmasqNat implements Nat {
  readonly kind = 'vpnmasq' as const;
  constructor(readonly router: RunningRouter) {}

  flows(): NatFlow[] {
    const r = this.router.cli('conntrack', '--json');
    if (!r.ok) throw new Error(`vpnmasq conntrack --json failed: ${r.stderr}\n${this.logTail(40)}`);
    const list = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
    return list.map((f) => ({
      proto: String(f.proto ?? ''),
      lan: String(f.lan ?? ''),
      lanPort: Number(f.lanPort ?? 0),
      remote: String(f.remote ?? ''),
      remotePort: Number(f.remotePort ?? 0),
      wan: String(f.wan ?? ''),
      wanPort: Number(f.aliasPort ?? 0),
      replied: !!f.replied,
      raw: f,
    }));
  }

  drops(): Record<string, number> {
    return (this.router.status().drops ?? {}) as Record<string, number>;
  }

  dropTotal(): number {
    return Object.values(this.drops()).reduce((a, b) => a + (Number(b) || 0), 0);
  }

  logTail(lines = 80): string {
    return `--- vpnmasq ---\n${this.router.output.split('\n').slice(-lines).join('\n')}`;
  }

  async stop(): Promise<void> {
    if (this.router.proc) await this.router.stop();
  }
}

class KernelNat implements Nat {
  constructor(readonly lab: Lab, readonly kind: 'kernel' | 'kernel-pptp') {}

  /** Parses /proc/net/nf_conntrack (or `conntrack -L`) of the router namespace. */
  flows(): NatFlow[] {
    let text: string;
    const proc = this.lab.tryExec(this.lab.router, ['cat', '/proc/net/nf_conntrack']);
    if (proc.ok) text = proc.stdout;
    else {
      const ct = this.lab.tryExec(this.lab.router, ['conntrack', '-L']);
      if (!ct.ok) throw new Error('kernel NAT: neither /proc/net/nf_conntrack nor conntrack -L is available');
      text = ct.stdout;
    }
    const out: NatFlow[] = [];
    for (const line of text.split('\n')) {
      const proto = /\b(tcp|udp|icmp|esp|gre|unknown)\b/.exec(line)?.[1];
      const src = [...line.matchAll(/src=(\S+)/g)].map((m) => m[1]!);
      const dst = [...line.matchAll(/dst=(\S+)/g)].map((m) => m[1]!);
      const sport = [...line.matchAll(/sport=(\d+)/g)].map((m) => Number(m[1]));
      const dport = [...line.matchAll(/dport=(\d+)/g)].map((m) => Number(m[1]));
      if (!proto || src.length < 2 || dst.length < 2) continue;
      out.push({
        proto, lan: src[0]!, lanPort: sport[0] ?? 0, remote: dst[0]!, remotePort: dport[0] ?? 0,
        wan: dst[1]!, wanPort: dport[1] ?? 0, replied: !line.includes('[UNREPLIED]'), raw: line,
      });
    }
    return out;
  }

  drops(): Record<string, number> {
    return {};
  }

  dropTotal(): number {
    return 0;
  }

  logTail(): string {
    return `--- kernel NAT (nft) ---\n${this.lab.tryExec(this.lab.router, ['nft', 'list', 'table', 'ip', 'vpnmasq_e2e_nat']).stdout}`;
  }

  async stop(): Promise<void> {
    this.lab.tryExec(this.lab.router, ['nft', 'delete', 'table', 'ip', 'vpnmasq_e2e_nat']);
  }
}

function uciRedirects(forwards: Forward[]): string {
  return forwards
    .map((f) => {
      const lines = [`config redirect`, `\toption name '${f.name}'`, `\toption proto '${f.proto}'`];
      if (PORTFUL.has(f.proto)) {
        if (f.port === undefined) throw new Error(`forward ${f.name}: proto ${f.proto} needs a port`);
        lines.push(`\toption src_dport '${f.port}'`);
      }
      lines.push(`\toption dest_ip '${f.to}'`);
      if (PORTFUL.has(f.proto)) lines.push(`\toption dest_port '${f.toPort ?? f.port}'`);
      return lines.join('\n') + '\n';
    })
    .join('');
}

function nftForwards(forwards: Forward[]): string {
  return forwards
    .map((f) => {
      if (PORTFUL.has(f.proto)) {
        if (f.port === undefined) throw new Error(`forward ${f.name}: proto ${f.proto} needs a port`);
        return `    iifname "wan" ${f.proto} dport ${f.port} dnat to ${f.to}:${f.toPort ?? f.port}\n`;
      }
      return `    iifname "wan" ip protocol ${f.proto} dnat to ${f.to}\n`;
    })
    .join('');
}

/**
 * Starts the NAT in the lab's router namespace with the given inbound
 * forwards. `kind` defaults to NAT_KIND (E2E_NAT); `vpnmasqConfig` is extra
 * UCI text for RunningRouter (vpnmasq only).
 */
export async function startNat(lab: Lab, forwards: Forward[] = [], kind: NatKind = NAT_KIND, vpnmasqConfig = ''): Promise<Nat> {
  if (kind === 'kernel' || kind === 'kernel-pptp') {
    const pptp = kind === 'kernel-pptp';
    if (pptp) lab.tryExec(lab.router, ['modprobe', 'nf_conntrack_pptp']); // may be built in or already loaded
    lab.exec(lab.router, ['nft', '-f', '-'], {
      input: `table ip vpnmasq_e2e_nat {
${pptp ? `  ct helper pptp {
    type "pptp" protocol tcp
  }
  chain helpers {
    type filter hook prerouting priority 0; policy accept;
    tcp dport 1723 ct helper set "pptp"
  }
` : ''}  chain pre {
    type nat hook prerouting priority -100; policy accept;
${nftForwards(forwards)}  }
  chain post {
    type nat hook postrouting priority 100; policy accept;
    oifname "wan" masquerade
  }
}
`,
    });
    return new KernelNat(lab, kind);
  }
  const router = new RunningRouter(lab, uciRedirects(forwards) + vpnmasqConfig);
  await router.start();
  return new VpnmasqNat(router);
}
