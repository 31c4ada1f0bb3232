// Real, unmodified strongSwan (charon 5.9.x) as VPN peers inside lab
// namespaces: one responder on a WAN host, road-warrior initiators on LAN
// hosts, talking IKEv2 with pre-shared keys.
//
// ESP is done in userspace by the kernel-libipsec plugin (a TUN device
// `ipsec0` per namespace), which only speaks UDP-encapsulated ESP: every
// tunnel runs IKE_SA_INIT on UDP 500 and then moves IKE and ESP to NAT-T on
// UDP 4500 — exactly the traffic a masquerading router has to carry. No
// kernel XFRM state is involved, so nothing leaks between namespaces.
//
// Each charon gets:
//   - its own mount namespace with a private tmpfs on /run: the default vici
//     socket is /run/charon.vici (and the classic /usr/lib/ipsec/charon also
//     writes /run/charon.pid), so two instances — or one and a system-wide
//     strongSwan service — would otherwise take each other's socket,
//   - its own directory (strongswan.conf via STRONGSWAN_CONF, swanctl.conf,
//     vici socket, empty credential folders) under /tmp,
//   - logs on stderr, kept in memory for failure messages.
// swanctl runs outside the namespaces and reaches charon through the vici
// socket path (filesystem Unix sockets do not care about network namespaces).
//
// The server puts its tunnel address (10.99.0.1/32) on lo and drops any
// packet for 10.99.0.0/16 that arrives on a real interface, so a ping to it
// can only be answered through a tunnel (the lab's NAT would otherwise happily
// route a plain ping there). Clients ask for a virtual IP from 10.99.1.0/24.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { Lab } from '../../../src/lab/lab.js';
import { LogBuffer, exited, runAsync, terminate, waitFor } from './ike-util.js';
import type { RunResult } from './ike-util.js';

export const DEFAULT_PSK = 'vpnmasq-e2e-psk-0123456789';
export const TUNNEL_NET = '10.99.0.0/16';
export const SERVER_TUNNEL_ADDRESS = '10.99.0.1';
export const CLIENT_POOL = '10.99.1.0/24';
/** Proposals the IKEv1 responder accepts; ike-scan's default transform set offers 3DES/SHA1/PSK/modp1024 first. */
export const IKEV1_PROPOSALS = '3des-sha1-modp1024, 3des-md5-modp1024, aes128-sha1-modp1024, aes256-sha256-modp2048';

/** Plugins charon loads (no kernel XFRM; `kdf` is needed since 5.9.8 or IKE key derivation fails). */
export const CHARON_PLUGINS =
  'random nonce openssl kdf pem pkcs1 x509 revocation constraints pubkey kernel-libipsec kernel-netlink socket-default vici updown';
const SWANCTL_PLUGINS = 'random openssl pem pkcs1 x509 revocation constraints pubkey';
const CRED_DIRS = ['x509', 'x509ca', 'x509ocsp', 'x509aa', 'x509ac', 'x509crl', 'pubkey', 'private', 'rsa', 'ecdsa', 'bliss', 'pkcs8', 'pkcs12'];

const CHARON_CANDIDATES = ['/usr/sbin/charon-systemd', '/usr/lib/ipsec/charon', '/usr/libexec/ipsec/charon', '/usr/libexec/strongswan/charon'];

/** Path of a charon binary, or null (Debian: charon-systemd or strongswan-charon). */
export function findCharon(): string | null {
  const env = process.env.VPNMASQ_E2E_CHARON;
  if (env) return existsSync(env) ? env : null;
  return CHARON_CANDIDATES.find((p) => existsSync(p)) ?? null;
}

/** Plugins without which the harness cannot work, and the Debian package of each. */
const REQUIRED_PLUGINS: Record<string, string> = {
  'kernel-libipsec': 'libcharon-extra-plugins',
  openssl: 'libstrongswan-standard-plugins',
  vici: 'strongswan-swanctl',
  'socket-default': 'strongswan-libcharon',
};
const PLUGIN_DIRS = ['/usr/lib/ipsec/plugins', '/usr/lib/x86_64-linux-gnu/ipsec/plugins', '/usr/lib/aarch64-linux-gnu/ipsec/plugins', '/usr/libexec/ipsec/plugins'];

/** null when charon and the plugins the harness loads are installed, else what to apt-get install. */
/** True (skip) when strongSwan is missing outside CI; under CI=true a missing strongSwan fails the run. */
export function skipUnlessStrongSwan(): boolean {
  const why = strongSwanMissing();
  if (why === null) return false;
  if (process.env.CI === 'true' || process.env.CI === '1') throw new Error(`prerequisite missing under CI: ${why}`);
  console.warn(`skipping: ${why}`);
  return true;
}

export function strongSwanMissing(): string | null {
  if (!findCharon()) return 'needs a charon binary (apt-get install charon-systemd)';
  for (const [plugin, pkg] of Object.entries(REQUIRED_PLUGINS)) {
    if (!PLUGIN_DIRS.some((d) => existsSync(join(d, `libstrongswan-${plugin}.so`)))) {
      return `needs the strongSwan ${plugin} plugin (apt-get install ${pkg})`;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------
// swanctl --raw output (vici messages printed as `key=value`, `key=[a b]`,
// `key {…}`)

export type ViciValue = string | string[] | ViciSection;
export interface ViciSection { [key: string]: ViciValue }

/** Parses one raw vici message body, e.g. `{home {uniqueid=1 … child-sas {…}}}`. */
export function parseViciRaw(text: string): ViciSection {
  const re = /([^\s{}=\[\]]+)=\[([^\]]*)\]|([^\s{}=\[\]]+)=([^\s{}\[\]]*)|([^\s{}=\[\]]+) ?\{|\{|\}/g;
  const root: ViciSection = {};
  const stack: ViciSection[] = [];
  let cur = root;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    if (m[1] !== undefined) cur[m[1]] = m[2]!.split(/\s+/).filter(Boolean);
    else if (m[3] !== undefined) cur[m[3]] = m[4]!;
    else if (m[5] !== undefined) {
      const s: ViciSection = {};
      cur[m[5]] = s;
      stack.push(cur);
      cur = s;
    } else if (m[0] === '}') cur = stack.pop() ?? root;
    // a bare '{' only opens the message itself
  }
  return root;
}

export interface ChildSa {
  name: string;
  state: string;
  mode: string;
  protocol: string;
  encap: boolean;
  spiIn: string;
  spiOut: string;
  packetsIn: number;
  packetsOut: number;
  bytesIn: number;
  bytesOut: number;
  localTs: string[];
  remoteTs: string[];
}

export interface IkeSa {
  /** connection name */
  name: string;
  uniqueid: string;
  version: number;
  state: string;
  localHost: string;
  localPort: number;
  localId: string;
  remoteHost: string;
  remotePort: number;
  remoteId: string;
  initiatorSpi: string;
  responderSpi: string;
  /** NAT detected in front of us / in front of the peer (from the NAT-D payloads) */
  natLocal: boolean;
  natRemote: boolean;
  natFake: boolean;
  localVips: string[];
  remoteVips: string[];
  children: ChildSa[];
}

const str = (v: ViciValue | undefined): string => (typeof v === 'string' ? v : '');
const num = (v: ViciValue | undefined): number => (typeof v === 'string' && v !== '' ? Number(v) : 0);
const list = (v: ViciValue | undefined): string[] => (Array.isArray(v) ? v : typeof v === 'string' && v ? [v] : []);

/** Parses `swanctl --list-sas --raw` output into IKE SAs. */
export function parseListSas(raw: string): IkeSa[] {
  const out: IkeSa[] = [];
  for (const line of raw.split('\n')) {
    const at = line.indexOf('list-sa event ');
    if (at < 0) continue;
    const body = parseViciRaw(line.slice(at + 'list-sa event '.length));
    for (const [name, v] of Object.entries(body)) {
      if (typeof v !== 'object' || Array.isArray(v)) continue;
      const s = v as ViciSection;
      const kids = (typeof s['child-sas'] === 'object' && !Array.isArray(s['child-sas']) ? s['child-sas'] : {}) as ViciSection;
      const children: ChildSa[] = Object.values(kids)
        .filter((c): c is ViciSection => typeof c === 'object' && !Array.isArray(c))
        .map((c) => ({
          name: str(c.name), state: str(c.state), mode: str(c.mode), protocol: str(c.protocol), encap: str(c.encap) === 'yes',
          spiIn: str(c['spi-in']), spiOut: str(c['spi-out']),
          packetsIn: num(c['packets-in']), packetsOut: num(c['packets-out']), bytesIn: num(c['bytes-in']), bytesOut: num(c['bytes-out']),
          localTs: list(c['local-ts']), remoteTs: list(c['remote-ts']),
        }));
      out.push({
        name, uniqueid: str(s.uniqueid), version: num(s.version), state: str(s.state),
        localHost: str(s['local-host']), localPort: num(s['local-port']), localId: str(s['local-id']),
        remoteHost: str(s['remote-host']), remotePort: num(s['remote-port']), remoteId: str(s['remote-id']),
        initiatorSpi: str(s['initiator-spi']), responderSpi: str(s['responder-spi']),
        natLocal: str(s['nat-local']) === 'yes', natRemote: str(s['nat-remote']) === 'yes', natFake: str(s['nat-fake']) === 'yes',
        localVips: list(s['local-vips']), remoteVips: list(s['remote-vips']), children,
      });
    }
  }
  return out;
}

/** One `sending packet: from A[p] to B[q]` / `received packet: …` line of a charon log. */
export interface LoggedPacket {
  dir: 'sent' | 'received';
  from: string;
  fromPort: number;
  to: string;
  toPort: number;
  bytes: number;
}

export function parsePacketLog(log: string): LoggedPacket[] {
  const re = /(sending|received) packet: from ([\d.]+)\[(\d+)\] to ([\d.]+)\[(\d+)\] \((\d+) bytes\)/g;
  const out: LoggedPacket[] = [];
  for (let m = re.exec(log); m; m = re.exec(log)) {
    out.push({ dir: m[1] === 'sending' ? 'sent' : 'received', from: m[2]!, fromPort: Number(m[3]), to: m[4]!, toPort: Number(m[5]), bytes: Number(m[6]) });
  }
  return out;
}

// ---------------------------------------------------------------------------

export interface CharonOptions {
  /** pre-shared key (default DEFAULT_PSK) */
  psk?: string;
  /** ms to wait for charon's vici socket (default 10 000) */
  startTimeoutMs?: number;
  /** charon binary (default findCharon()) */
  charon?: string;
  /** keep the instance directory after stop() (also: env VPNMASQ_E2E_KEEP=1) */
  keepDir?: boolean;
}

export interface ServerOptions extends CharonOptions {
  /** the address IKE listens on; default the namespace's first global IPv4 address */
  address?: string;
  /** address inside the tunnel network, on lo (default 10.99.0.1) */
  tunnelAddress?: string;
  /** virtual IP pool for clients (default 10.99.1.0/24) */
  pool?: string;
  /** also answer IKEv1 main mode with PSK (connection `v1`, for ike-scan); default true */
  ikev1?: boolean;
  /** IKEv1 proposals (default IKEV1_PROPOSALS) */
  ikev1Proposals?: string;
}

export interface ClientOptions extends CharonOptions {
  /** force UDP encapsulation even without NAT (default true; kernel-libipsec needs it) */
  encap?: boolean;
  /** remote traffic selector (default the server's tunnel address /32) */
  remoteTs?: string;
  /** the server's IKE identity (default 'server') */
  serverId?: string;
}

/** One charon process with its own directory, vici socket and /run. */
export abstract class Charon {
  readonly dir: string;
  readonly conf: string;
  readonly swanctlConf: string;
  readonly vici: string;
  readonly log = new LogBuffer();
  readonly psk: string;
  proc?: ChildProcess;
  private readonly keepDir: boolean;
  private readonly charonPath: string;

  protected constructor(
    readonly lab: Lab,
    readonly ns: string,
    readonly role: 'server' | 'client',
    readonly name: string,
    protected readonly opts: CharonOptions,
  ) {
    const charon = opts.charon ?? findCharon();
    if (!charon) throw new Error('strongswan: no charon binary (apt-get install charon-systemd)');
    this.charonPath = charon;
    this.psk = opts.psk ?? DEFAULT_PSK;
    this.keepDir = opts.keepDir ?? !!process.env.VPNMASQ_E2E_KEEP;
    this.dir = mkdtempSync(join('/tmp', `vpnmasq-e2e-swan-${name.replace(/[^\w.-]/g, '_')}-`));
    this.conf = join(this.dir, 'strongswan.conf');
    this.swanctlConf = join(this.dir, 'swanctl.conf');
    this.vici = join(this.dir, 'charon.vici');
    for (const d of CRED_DIRS) mkdirSync(join(this.dir, d));
  }

  /** settings section: libcharon reads `<daemon name>.…` */
  private strongswanConf(): string {
    const section = basename(this.charonPath);
    return `# ${this.role} ${this.name} in ${this.ns} (generated by test/e2e/peers/strongswan.ts)
${section} {
  load_modular = no
  load = ${CHARON_PLUGINS}
  # keep the default 16 worker threads: with 8, long-running jobs (receiver,
  # netlink, libipsec, scheduler …) take them all and vici accepts nothing
  install_routes = yes
  install_virtual_ip = yes
  # fail fast: about 10 s of retransmits instead of the default 165 s
  retransmit_timeout = 1.0
  retransmit_base = 1.4
  retransmit_tries = 4
  journal {
    default = -1
  }
  syslog {
    daemon {
      default = -1
    }
    auth {
      default = -1
    }
  }
  filelog {
    stderr {
      time_format = %H:%M:%S
      ike_name = yes
      default = 1
      ike = 2
      net = 1
      cfg = 1
      knl = 1
    }
  }
  plugins {
    vici {
      socket = unix://${this.vici}
    }
    kernel-libipsec {
      allow_peer_ts = no
    }
  }
}
swanctl {
  load = ${SWANCTL_PLUGINS}
}
`;
  }

  protected abstract swanctlConfText(): string;

  protected async start(): Promise<void> {
    writeFileSync(this.conf, this.strongswanConf());
    writeFileSync(this.swanctlConf, this.swanctlConfText());
    const env = { ...process.env, STRONGSWAN_CONF: this.conf };
    // a private /run (see the top of this file)
    this.proc = this.lab.spawn(this.ns, ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
      'mount -t tmpfs -o mode=0755 tmpfs /run && exec "$0"', this.charonPath], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.log.attach(this.proc);
    const timeout = this.opts.startTimeoutMs ?? 10_000;
    await waitFor(
      () => `strongswan ${this.role} ${this.name} in ${this.ns}: charon did not open ${this.vici}\n${this.log.tail()}`,
      async () => {
        if (exited(this.proc!)) throw new Error(`strongswan ${this.role} ${this.name} in ${this.ns}: charon exited (${this.proc!.exitCode ?? this.proc!.signalCode})\n${this.log.tail()}`);
        if (!existsSync(this.vici)) return undefined;
        return (await this.swanctl(['--stats'], 3_000)).ok ? true : undefined;
      },
      timeout,
      100,
    );
    const load = await this.swanctl(['--load-all', '--noprompt', '--file', this.swanctlConf], 10_000);
    if (!load.ok || /failed|error/i.test(load.stdout.replace(/\d+ unloaded/g, ''))) {
      throw new Error(`strongswan ${this.role} ${this.name}: swanctl --load-all failed\n${load.stdout}${load.stderr}\n${this.log.tail()}`);
    }
  }

  /** `swanctl <args> --uri <this instance>`; never throws. */
  swanctl(args: string[], timeoutMs = 10_000): Promise<RunResult> {
    return runAsync(['swanctl', ...args, '--uri', `unix://${this.vici}`], {
      timeoutMs,
      env: { ...process.env, STRONGSWAN_CONF: this.conf },
    });
  }

  /** The IKE SAs this charon has now. */
  async listSas(): Promise<IkeSa[]> {
    const r = await this.swanctl(['--list-sas', '--raw'], 10_000);
    if (!r.ok) throw new Error(`strongswan ${this.name}: swanctl --list-sas failed: ${r.stderr}`);
    return parseListSas(r.stdout);
  }

  /** IKE packets this charon logged (addresses as it saw them). */
  packets(): LoggedPacket[] {
    return parsePacketLog(this.log.value);
  }

  /** The log so far, last `lines` lines, headed by who this is. */
  logTail(lines = 80): string {
    return `--- strongswan ${this.role} ${this.name} (${this.ns}) ---\n${this.log.tail(lines)}`;
  }

  get running(): boolean {
    return !!this.proc && !exited(this.proc);
  }

  /** Stops charon (SIGTERM, then SIGKILL) and removes its directory. Idempotent. */
  async stop(): Promise<void> {
    await terminate(this.proc, 3_000);
    if (!this.keepDir) rmSync(this.dir, { recursive: true, force: true });
  }
}

export class StrongSwanServer extends Charon {
  readonly address: string;
  readonly tunnelAddress: string;
  readonly pool: string;
  readonly id = 'server';
  private readonly sopts: ServerOptions;

  private constructor(lab: Lab, ns: string, opts: ServerOptions, address: string) {
    super(lab, ns, 'server', `server-${ns}`, opts);
    this.sopts = opts;
    this.address = address;
    this.tunnelAddress = opts.tunnelAddress ?? SERVER_TUNNEL_ADDRESS;
    this.pool = opts.pool ?? CLIENT_POOL;
  }

  /** Starts a responder in `ns` (a WAN host): IKEv2 road warriors with virtual IPs, plus IKEv1 main mode PSK. */
  static async start(lab: Lab, ns: string, opts: ServerOptions = {}): Promise<StrongSwanServer> {
    const address = opts.address ?? firstAddress(lab, ns);
    const s = new StrongSwanServer(lab, ns, opts, address);
    try {
      const dev = deviceOf(lab, ns, address);
      lab.exec(ns, ['ip', 'addr', 'replace', `${s.tunnelAddress}/32`, 'dev', 'lo']);
      // only a tunnel may deliver to the tunnel network
      lab.exec(ns, ['nft', '-f', '-'], {
        input: `table ip vpnmasq_e2e_guard {
  chain input {
    type filter hook input priority -10; policy accept;
    iifname "${dev}" ip daddr ${TUNNEL_NET} counter drop
  }
}
`,
      });
      await s.start();
    } catch (e) {
      await s.stop();
      throw e;
    }
    return s;
  }

  protected override swanctlConfText(): string {
    const v1 = this.sopts.ikev1 ?? true;
    return `# server (generated by test/e2e/peers/strongswan.ts)
connections {
  rw {
    version = 2
    local_addrs = ${this.address}
    pools = rwpool
    local {
      auth = psk
      id = ${this.id}
    }
    remote {
      auth = psk
    }
    children {
      net {
        local_ts = ${this.tunnelAddress}/32
      }
    }
  }
${v1 ? `  v1 {
    version = 1
    aggressive = no
    local_addrs = ${this.address}
    proposals = ${this.sopts.ikev1Proposals ?? IKEV1_PROPOSALS}
    local {
      auth = psk
      id = ${this.id}
    }
    remote {
      auth = psk
    }
    children {
      v1net {
        local_ts = ${this.tunnelAddress}/32
      }
    }
  }
` : ''}}
pools {
  rwpool {
    addrs = ${this.pool}
  }
}
secrets {
  ike-any {
    secret = "${this.psk}"
  }
}
`;
  }

  /** Packets the guard dropped: pings that tried to reach the tunnel address outside a tunnel. */
  guardDrops(): number {
    const r = this.lab.tryExec(this.ns, ['nft', 'list', 'table', 'ip', 'vpnmasq_e2e_guard']);
    const m = /counter packets (\d+)/.exec(r.stdout);
    return m ? Number(m[1]) : 0;
  }
}

export interface InitiateResult {
  ok: boolean;
  /** swanctl --initiate output (the IKE log of the exchange) */
  output: string;
  sa?: IkeSa;
}

export interface PingResult {
  sent: number;
  received: number;
  output: string;
  /** ESP packets counted by this client's CHILD_SA during the ping */
  espOut: number;
  espIn: number;
}

export class StrongSwanClient extends Charon {
  readonly conn = 'home';
  private readonly copts: ClientOptions;

  private constructor(lab: Lab, ns: string, readonly server: StrongSwanServer | string, readonly id: string, opts: ClientOptions) {
    super(lab, ns, 'client', id, opts);
    this.copts = opts;
    if (!/^[A-Za-z0-9._@-]+$/.test(id)) throw new Error(`strongswan client: id ${JSON.stringify(id)} must be a plain word`);
  }

  /** Starts an initiator in `ns` (a LAN host) for `server` (a StrongSwanServer or its address); `id` must be unique per server. */
  static async start(lab: Lab, ns: string, server: StrongSwanServer | string, id: string, opts: ClientOptions = {}): Promise<StrongSwanClient> {
    const c = new StrongSwanClient(lab, ns, server, id, opts);
    try {
      await c.start();
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  get serverAddress(): string {
    return typeof this.server === 'string' ? this.server : this.server.address;
  }

  get serverTunnelAddress(): string {
    return typeof this.server === 'string' ? SERVER_TUNNEL_ADDRESS : this.server.tunnelAddress;
  }

  protected override swanctlConfText(): string {
    const remoteTs = this.copts.remoteTs ?? `${this.serverTunnelAddress}/32`;
    return `# client ${this.id} (generated by test/e2e/peers/strongswan.ts)
connections {
  ${this.conn} {
    version = 2
    remote_addrs = ${this.serverAddress}
    vips = 0.0.0.0
    encap = ${(this.copts.encap ?? true) ? 'yes' : 'no'}
    local {
      auth = psk
      id = ${this.id}
    }
    remote {
      auth = psk
      id = ${this.copts.serverId ?? (typeof this.server === 'string' ? 'server' : this.server.id)}
    }
    children {
      ${this.conn} {
        remote_ts = ${remoteTs}
      }
    }
  }
}
secrets {
  ike-any {
    secret = "${this.psk}"
  }
}
`;
  }

  /** The established IKE SA of this client, if any. */
  async sa(): Promise<IkeSa | undefined> {
    return (await this.listSas()).find((s) => s.name === this.conn && s.state === 'ESTABLISHED');
  }

  /** `swanctl --initiate`; never throws. */
  async tryInitiate(timeoutMs = 20_000): Promise<InitiateResult> {
    const secs = Math.max(1, Math.floor(timeoutMs / 1000) - 1);
    const r = await this.swanctl(['--initiate', '--ike', this.conn, '--child', this.conn, '--timeout', String(secs)], timeoutMs + 2_000);
    const output = r.stdout + r.stderr;
    const ok = r.ok && /initiate completed successfully/.test(output);
    let sa: IkeSa | undefined;
    try {
      sa = await this.sa();
    } catch {
      /* reported through ok/output */
    }
    return { ok: ok && !!sa && sa.children.some((c) => c.state === 'INSTALLED'), output, sa };
  }

  /** Brings the tunnel up; throws with both peers' logs when it does not come up. */
  async initiate(timeoutMs = 20_000): Promise<IkeSa> {
    const r = await this.tryInitiate(timeoutMs);
    if (r.ok && r.sa) return r.sa;
    const server = typeof this.server === 'string' ? '' : `\n${this.server.logTail(60)}`;
    throw new Error(`strongswan client ${this.id} (${this.ns}): tunnel to ${this.serverAddress} did not come up\n` +
      `--- swanctl --initiate ---\n${r.output}\n${this.logTail(60)}${server}`);
  }

  /** The virtual IP the server assigned (after initiate). */
  async virtualIp(): Promise<string | undefined> {
    return (await this.sa())?.localVips[0];
  }

  /** Pings the server's tunnel address from the virtual IP and reads the CHILD_SA counters around it. */
  async pingThroughTunnel(count = 3, timeoutMs = 15_000): Promise<PingResult> {
    const before = await this.sa();
    const vip = before?.localVips[0];
    const child0 = before?.children.find((c) => c.state === 'INSTALLED');
    if (!before || !vip || !child0) {
      return { sent: count, received: 0, output: `no established tunnel with a virtual IP\n${this.logTail(40)}`, espOut: 0, espIn: 0 };
    }
    const r = await runAsync(['ping', '-n', '-c', String(count), '-i', '0.2', '-W', '2', '-I', vip, this.serverTunnelAddress], {
      ns: this.ns,
      timeoutMs,
    });
    const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
    const after = await this.sa();
    const child1 = after?.children.find((c) => c.spiIn === child0.spiIn);
    return {
      sent: m ? Number(m[1]) : 0,
      received: m ? Number(m[2]) : 0,
      output: r.stdout + r.stderr,
      espOut: child1 ? child1.packetsOut - child0.packetsOut : 0,
      espIn: child1 ? child1.packetsIn - child0.packetsIn : 0,
    };
  }
}

/** `startServer(lab, ns)`: a strongSwan responder in a WAN namespace. */
export function startServer(lab: Lab, ns: string, opts: ServerOptions = {}): Promise<StrongSwanServer> {
  return StrongSwanServer.start(lab, ns, opts);
}

/** `startClient(lab, ns, server, id)`: a strongSwan initiator in a LAN namespace. */
export function startClient(lab: Lab, ns: string, server: StrongSwanServer | string, id: string, opts: ClientOptions = {}): Promise<StrongSwanClient> {
  return StrongSwanClient.start(lab, ns, server, id, opts);
}

// ---------------------------------------------------------------------------

function firstAddress(lab: Lab, ns: string): string {
  const out = lab.exec(ns, ['ip', '-o', '-4', 'addr', 'show', 'scope', 'global']);
  const m = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(out);
  if (!m) throw new Error(`strongswan: no IPv4 address in ${ns}`);
  return m[1]!;
}

function deviceOf(lab: Lab, ns: string, address: string): string {
  const out = lab.exec(ns, ['ip', '-o', '-4', 'addr', 'show']);
  for (const line of out.split('\n')) {
    const m = /^\d+:\s+(\S+)\s+inet (\d+\.\d+\.\d+\.\d+)\//.exec(line);
    if (m && m[2] === address) return m[1]!;
  }
  throw new Error(`strongswan: ${address} is not an address in ${ns}`);
}
