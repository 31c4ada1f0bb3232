// `sudo npm start`: builds a lab (2 LAN hosts, 1 WAN host), runs vpnmasq in
// the router namespace and shows it working: pings, a UDP and a TCP exchange
// in which the WAN host reports the router's address as the source, then the
// VPN part (both LAN hosts run raw ESP to the same WAN server at once, with
// scapy SAs from the project's test peers, and IKE from port 500 with
// ike-scan; each step names the Debian packages it needs when they are
// missing and moves on), and the conntrack table with the SPI pairs, the
// IKE cookies and port 500 kept for both. Then waits for Ctrl-C (unless stdin is not a TTY or
// VPNMASQ_DEMO_ONESHOT=1) and tears everything down.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { Lab, cleanupStaleLabs } from './lab.js';
import { runIn, waitExit, type RunResult } from './run.js';
import { randomBytes } from 'node:crypto';

export interface DemoOptions {
  /** path of the vpnmasq CLI (dist/cli/main.js), run with this Node binary */
  cliPath: string;
  /** where the demo's lines go; default stdout */
  log?: (line: string) => void;
}

const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;
const UDP_PORT = 7001;
const TCP_PORT = 7002;
const PYTHON = '/usr/bin/python3';

/** The project's ESP peer (scapy SAs, real crypto), beside the built CLI in a checkout. */
function espPeer(cliPath: string): string {
  return resolve(cliPath, '..', '..', '..', 'test', 'e2e', 'peers', 'esp.py');
}

function scapyReady(): boolean {
  try {
    execFileSync(PYTHON, ['-c', 'import scapy.layers.ipsec, cryptography'], { stdio: 'ignore', timeout: 30_000 });
    return true;
  } catch {
    return false;
  }
}

const PINO_LEVELS: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };

/** Quotes an argv for display as a shell command. */
function shq(argv: string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

function have(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore', timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Formats one line of vpnmasq output (pino JSON becomes `level msg {extra}`). */
function formatVpnmasqLine(line: string): string {
  const t = line.trim();
  if (t.startsWith('{')) {
    try {
      const o = JSON.parse(t) as Record<string, unknown>;
      const { level, msg, time, pid, hostname, ...rest } = o;
      void time;
      void pid;
      void hostname;
      const lv = typeof level === 'number' ? (PINO_LEVELS[level] ?? String(level)) : String(level ?? '');
      const extra = Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : '';
      return `${lv} ${String(msg ?? '')}${extra}`;
    } catch {
      /* not JSON after all */
    }
  }
  return t;
}

function lineSplitter(onLine: (l: string) => void): (chunk: string) => void {
  let part = '';
  return (chunk: string) => {
    const parts = (part + chunk).split('\n');
    part = parts.pop() ?? '';
    for (const p of parts) if (p.trim()) onLine(p);
  };
}

export async function runDemo(opts: DemoOptions): Promise<void> {
  const log = opts.log ?? ((line: string) => process.stdout.write(line + '\n'));

  if (process.getuid && process.getuid() !== 0) {
    log('vpnmasq demo: needs root (it creates network namespaces and TUN devices) — run: sudo npm start');
    process.exitCode = 1;
    return;
  }
  const missingTools = ['ip', 'ping', 'socat', 'ss'].filter((t) => !have(t));
  if (missingTools.length) {
    log(`vpnmasq demo: missing tools: ${missingTools.join(', ')} — apt-get install iproute2 iputils-ping socat`);
    process.exitCode = 1;
    return;
  }
  const cliPath = resolve(opts.cliPath);
  if (!existsSync(cliPath)) {
    log(`vpnmasq demo: CLI not found at ${cliPath} — build first: npm run build`);
    process.exitCode = 1;
    return;
  }
  const oneshot = process.env.VPNMASQ_DEMO_ONESHOT === '1' || !process.stdin.isTTY;

  // --- signals: the first one stops the demo cleanly, a second one forces it
  let lab: Lab | null = null;
  let tmp: string | null = null;
  let stopRequested: NodeJS.Signals | null = null;
  let wakeWaiter: (() => void) | null = null;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopRequested) {
      log(`vpnmasq demo: second ${sig} — forcing teardown`);
      try {
        lab?.destroy();
      } finally {
        if (tmp) rmSync(tmp, { recursive: true, force: true });
        process.exit(130);
      }
    }
    stopRequested = sig;
    log('');
    log(`vpnmasq demo: ${sig} — stopping`);
    wakeWaiter?.();
  };
  const onSigint = (): void => onSignal('SIGINT');
  const onSigterm = (): void => onSignal('SIGTERM');
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);

  let vpnmasq: ChildProcess | null = null;
  let vpnmasqExit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  let failures = 0;

  const show = (argv: string[], ns?: string): void => {
    log('');
    log(`$ ${ns ? `ip netns exec ${ns} ` : ''}${shq(argv)}`);
  };
  const indent = (text: string): void => {
    for (const l of text.replace(/\s+$/, '').split('\n')) if (l.length) log(`  ${l}`);
  };
  const report = (r: RunResult): void => {
    indent(r.stdout);
    indent(r.stderr);
    if (r.timedOut) log('  (timed out)');
    else if (!r.ok) log(`  (exit ${r.code ?? r.signal})`);
  };

  try {
    cleanupStaleLabs();
    lab = Lab.create({ lanHosts: 2, wanHosts: 1 });
    const L = lab;
    const wanHost = L.addr.wan[0]!;
    log(`vpnmasq demo: lab ${L.id} is up`);
    log(`  ${L.lan.map((ns, i) => `${ns} ${L.addr.lan[i]}`).join(', ')}  --  br-lan ${L.addr.routerLan} [${L.router}] wan ${L.addr.routerWan}  --  ${L.wan[0]} ${wanHost}`);
    log(`  WAN hosts have no route to ${L.addr.lanSubnet}: only masqueraded traffic gets answers`);

    // --- start vpnmasq
    tmp = mkdtempSync(join(tmpdir(), 'vpnmasq-demo-'));
    const sock = join(tmp, 'vpnmasq.sock');
    const cfg = join(tmp, 'vpnmasq.conf');
    const cfgText = [
      "config vpnmasq 'main'",
      "\toption lan_device 'br-lan'",
      "\toption wan_device 'wan'",
      "\toption enabled '1'",
      "\toption max_flows '65536'",
      "\toption log_level 'info'",
      `\toption control_socket '${sock}'`,
      // its state beside its config, removed with it: never the router's /run/vpnmasq
      `\toption snapshot_dir '${join(tmp, 'state')}'`,
      '',
    ].join('\n');
    writeFileSync(cfg, cfgText);
    log('');
    log(`config ${cfg}:`);
    indent(cfgText);
    const runArgv = [process.execPath, cliPath, 'run', '--config', cfg];
    show(runArgv, L.router);
    // detached: Ctrl-C in the terminal reaches only us; we stop vpnmasq with SIGTERM
    const child = L.spawn(L.router, runArgv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    vpnmasq = child;
    child.once('exit', (code, signal) => {
      vpnmasqExit = { code, signal };
      wakeWaiter?.();
    });
    const vlog = lineSplitter((l) => log(`  [vpnmasq] ${formatVpnmasqLine(l)}`));
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', vlog);
    child.stderr?.on('data', vlog);

    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!existsSync(sock)) {
      if (stopRequested) return;
      if (vpnmasqExit) throw new Error(`vpnmasq exited (${describeExit(vpnmasqExit)}) before it was ready`);
      if (Date.now() > deadline) throw new Error(`vpnmasq not ready: ${sock} did not appear within ${READY_TIMEOUT_MS / 1000} s`);
      await sleep(100);
    }
    log(`  vpnmasq is ready (control socket ${sock})`);

    // --- the demonstration
    const steps: Array<() => Promise<boolean>> = [];
    L.lan.forEach((ns) => {
      steps.push(async () => {
        const argv = ['ping', '-n', '-c', '3', '-i', '0.2', '-W', '2', wanHost];
        show(argv, ns);
        const r = await runIn(L, ns, argv, 15_000);
        report(r);
        return r.ok;
      });
    });

    // UDP, then TCP: a one-shot socat server on the WAN host says whom it heard from.
    const exchange = (kind: 'UDP' | 'TCP', ns: string, heading: string) => async () => {
      const port = kind === 'UDP' ? UDP_PORT : TCP_PORT;
      const listen = kind === 'UDP' ? `UDP4-RECVFROM:${port}` : `TCP4-LISTEN:${port},reuseaddr`;
      const srvArgv = ['socat', '-T', '10', listen, `SYSTEM:read -r l; echo "${L.wan[0]} got [$l] over ${kind} from $SOCAT_PEERADDR:$SOCAT_PEERPORT"`];
      log('');
      log(heading);
      show(srvArgv, L.wan[0]);
      log('  (in the background)');
      const srv = runIn(L, L.wan[0]!, srvArgv, 15_000);
      if (!(await waitSocket(L, L.wan[0]!, kind === 'UDP' ? 'u' : 't', port))) {
        log('  (server did not start)');
        return false;
      }
      const cliArgv = ['socat', '-t', kind === 'UDP' ? '1' : '3', '-T', '5', '-', `${kind}4:${wanHost}:${port}`];
      log('');
      log(`$ echo 'hello from ${ns}' | ip netns exec ${ns} ${shq(cliArgv)}`);
      const r = await runIn(L, ns, cliArgv, 15_000, { input: `hello from ${ns}\n` });
      report(r);
      await srv;
      return r.stdout.includes(`from ${L.addr.routerWan}:`);
    };
    steps.push(exchange('UDP', L.lan[0]!, '# UDP: a one-shot socat server on the WAN host tells whom it heard from'));
    steps.push(exchange('TCP', L.lan[L.lan.length - 1]!, '# TCP: the same over a TCP connection'));

    // --- the VPN part: what a kernel NAT cannot do for two hosts at once
    steps.push(async () => {
      log('');
      log('# ESP (IP protocol 50, no NAT-T): both LAN hosts to the same WAN server at once, real encryption (scapy SAs)');
      const peer = espPeer(cliPath);
      if (!existsSync(peer) || !scapyReady()) {
        log(`  skipped: needs ${existsSync(peer) ? '' : `the checkout's ${peer} and `}python3-scapy and python3-cryptography` +
          ' (apt-get install python3-scapy python3-cryptography)');
        return true;
      }
      const spi = () => (randomBytes(4).readUInt32BE(0) | 0x10000000) >>> 0;
      const sas = L.lan.map(() => [spi(), spi(), randomBytes(16).toString('hex'), randomBytes(32).toString('hex')].join(','));
      const srvArgv = [PYTHON, peer, 'server', ...sas.flatMap((sa) => ['--sa', sa]), '--duration', '60'];
      show([...srvArgv.slice(0, 3), '--sa', 'C2S,S2C,KEY,KEY', '…'], L.wan[0]);
      log('  (in the background)');
      let srvOut = '';
      let srvChild: ChildProcess | null = null;
      const srv = runIn(L, L.wan[0]!, srvArgv, 70_000, {
        onSpawn: (c) => { srvChild = c; c.stdout?.on('data', (d) => { srvOut += d; }); },
      });
      for (let i = 0; i < 200 && !srvOut.includes('"ready"'); i++) await sleep(50);
      const clients = L.lan.map((ns, i) => {
        const argv = [PYTHON, peer, 'client', '--server', wanHost, '--sa', sas[i]!, '--tag', ns, '--want', '3', '--timeout', '20'];
        log(`$ ip netns exec ${ns} ${shq([PYTHON, 'esp.py', 'client', '--server', wanHost, '--sa', `0x${sas[i]!.split(',').slice(0, 2).map((x) => Number(x).toString(16)).join(',0x')},…`, '--want', '3'])} &`);
        return runIn(L, ns, argv, 40_000);
      });
      const results = await Promise.all(clients);
      (srvChild as ChildProcess | null)?.kill('SIGTERM');
      await srv;
      let ok = true;
      results.forEach((r, i) => {
        const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
        const res = line ? JSON.parse(line) as { sent: number; replies: number[]; foreign_spi: Record<string, number> } : null;
        const n = res?.replies.length ?? 0;
        if (n < 3) ok = false;
        log(`  ${L.lan[i]} (${L.addr.lan[i]}): ${n} encrypted replies to ${res?.sent ?? '?'} requests` +
          `${res && Object.keys(res.foreign_spi).length ? `, ${Object.values(res.foreign_spi).reduce((a, b) => a + b, 0)} of the other host's` : ''}`);
      });
      log("  Under the kernel's NAT the second host would get nothing: conntrack tracks ESP by address only, so its ESP to the same server fails the insert (the bench's mixed run measures it).");
      return ok;
    });

    steps.push(async () => {
      log('');
      log('# IKE from UDP port 500: both LAN hosts at once (ike-scan); the router keeps source port 500 for both');
      if (!have('ike-scan')) {
        log('  skipped: ike-scan is not installed (apt-get install ike-scan)');
        return true;
      }
      // One socket that reads every datagram: socat's UDP4-RECVFROM,fork hands its socket to a child per datagram,
      // and a second one that arrives meanwhile (both hosts' IKE leave the router in one batch, microseconds apart)
      // went unheard.
      const srvArgv = [PYTHON, '-c', "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 500))\n" +
        "while True:\n    print('the WAN host heard IKE from %s:%d' % s.recvfrom(2048)[1], file=sys.stderr, flush=True)"];
      show(srvArgv, L.wan[0]);
      log('  (in the background: it only listens)');
      let heard = '';
      let srvChild: ChildProcess | null = null;
      const srv = runIn(L, L.wan[0]!, srvArgv, 30_000, { onSpawn: (c) => { srvChild = c; c.stderr?.on('data', (d) => { heard += d; }); } });
      if (!(await waitSocket(L, L.wan[0]!, 'u', 500))) { log('  (listener did not start)'); return false; }
      const scans = L.lan.map((ns, i) => {
        const argv = ['ike-scan', '--sport=500', '--retry=1', '--timeout=500', `--cookie=${(0xc0de0001 + i).toString(16)}00000000`, wanHost];
        show(argv, ns);
        return runIn(L, ns, argv, 15_000);
      });
      await Promise.all(scans);
      await sleep(300);
      (srvChild as ChildProcess | null)?.kill('SIGTERM');
      await srv;
      const lines = heard.split('\n').filter((l) => l.includes('heard IKE'));
      log('  (no IKE responder runs on the WAN host, so ike-scan prints no handshake; what counts is the source port)');
      for (const l of lines) log(`  ${l}`);
      return lines.length >= 2 && lines.every((l) => l.endsWith(`${L.addr.routerWan}:500`));
    });

    steps.push(async () => {
      const argv = [process.execPath, cliPath, 'conntrack', '--socket', sock];
      log('');
      log(`$ vpnmasq conntrack --socket ${sock}`);
      // the control socket is a filesystem path: reachable from any network namespace
      const r = await runIn(L, L.router, argv, 10_000);
      report(r);
      return r.ok;
    });

    for (const step of steps) {
      if (stopRequested) break;
      if (vpnmasqExit) throw new Error(`vpnmasq exited (${describeExit(vpnmasqExit)}) during the demonstration`);
      let ok = false;
      try {
        ok = await step();
      } catch (e) {
        log(`  (failed: ${(e as Error).message.split('\n')[0]})`);
      }
      if (!ok) failures++;
    }
    if (stopRequested) return;
    log('');
    log(failures === 0 ? 'demonstration: all steps worked' : `demonstration: ${failures} of ${steps.length} steps FAILED`);
    if (failures) process.exitCode = 1;

    if (oneshot) return;
    log('');
    log('The lab stays up until you press Ctrl-C. In another terminal, try:');
    log(`  sudo ip netns exec ${L.lan[0]} ping ${wanHost}`);
    log(`  sudo ip netns exec ${L.wan[0]} tcpdump -n -i eth0`);
    log(`  sudo ${process.execPath} ${cliPath} conntrack --socket ${sock}`);
    await new Promise<void>((res) => {
      wakeWaiter = res;
      if (stopRequested || vpnmasqExit) res();
    });
    if (vpnmasqExit && !stopRequested) {
      log(`vpnmasq exited (${describeExit(vpnmasqExit)}) — tearing down`);
      process.exitCode = 1;
    }
  } catch (e) {
    log(`vpnmasq demo: ${(e as Error).message.split('\n')[0]}`);
    process.exitCode = 1;
  } finally {
    // --- teardown: SIGTERM vpnmasq, wait for it, destroy the lab
    if (vpnmasq && !vpnmasqExit) {
      log('stopping vpnmasq (SIGTERM)');
      vpnmasq.kill('SIGTERM');
      if (!(await waitExit(vpnmasq, STOP_TIMEOUT_MS))) {
        log(`vpnmasq did not exit within ${STOP_TIMEOUT_MS / 1000} s — killing it`);
        vpnmasq.kill('SIGKILL');
        await waitExit(vpnmasq, 2_000);
      }
      if (vpnmasqExit) log(`vpnmasq exited (${describeExit(vpnmasqExit)})`);
    }
    if (lab) {
      lab.destroy();
      log(`lab ${lab.id} removed`);
    }
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
  }
}

function describeExit(e: { code: number | null; signal: NodeJS.Signals | null }): string {
  return e.signal ? `signal ${e.signal}` : `code ${e.code}`;
}

/** Polls `ss` in ns until a socket is bound to port (proto 't' or 'u'). */
async function waitSocket(lab: Lab, ns: string, proto: 't' | 'u', port: number): Promise<boolean> {
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    const r = lab.tryExec(ns, ['ss', '-Hln' + proto, `sport = :${port}`], { timeoutMs: 5_000 });
    if (r.ok && r.stdout.trim().length > 0) return true;
    await sleep(50);
  }
  return false;
}
