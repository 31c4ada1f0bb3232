// Watches the primary IPv4 address of the WAN device.
//
// Two sources: `ip -4 -o monitor address` (netlink events, immediate) and a
// poll of `ip -4 -j addr show dev X` every second (fallback: covers a monitor
// that died, events missed between start-up and subscription, a device that
// does not exist yet). Both only trigger a re-read; the callback runs only
// when the primary address actually changes. Runs inside the supervisor, so
// nothing here blocks the event loop except the single read at start.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { isValidIfName, primaryIpv4 } from './iface.js';

export interface WanWatch {
  /** Kills the monitor child and clears every timer; no callback after it returns. */
  stop(): void;
  /** The address last reported (or about to be reported, right after start). */
  current(): string | null;
}

export interface WanWatchOptions {
  /** Poll interval in ms (default 1000). */
  pollMs?: number;
  /** Use `ip monitor` (default true); polling alone still reports within pollMs. */
  monitor?: boolean;
  /** Delay before restarting an `ip monitor` that exited (default 5000 ms). */
  monitorRestartMs?: number;
}

const NO_DEVICE_RE = /does not exist|Cannot find device/i;

function addrArgs(dev: string): string[] {
  return ['-4', '-j', 'addr', 'show', 'dev', dev];
}

/** `dev`'s primary IPv4 address, read synchronously; null if the device does not exist or has no IPv4 address. */
export function readWanAddress(dev: string): string | null {
  try {
    return primaryIpv4(execFileSync('ip', addrArgs(dev), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
  } catch {
    return null;
  }
}

/** The interface name an `ip -o monitor address` line is about, or null. */
export function monitorLineDevice(line: string): string | null {
  const m = /^(?:Deleted\s+)?\d+:\s+([^\s@]+)/.exec(line);
  return m ? m[1]! : null;
}

/**
 * Reports `dev`'s primary IPv4 address (first non-secondary global address,
 * null if none / no such device) once right away (from a microtask, so the
 * returned handle is already assigned) and then on every change, at the
 * latest after about pollMs. Duplicates are suppressed.
 */
export function watchWanAddress(dev: string, cb: (addr: string | null) => void, opts: WanWatchOptions = {}): WanWatch {
  if (!isValidIfName(dev)) throw new Error(`watchWanAddress: invalid interface name ${JSON.stringify(dev)}`);
  const pollMs = opts.pollMs ?? 1000;
  const restartMs = opts.monitorRestartMs ?? 5000;

  let stopped = false;
  let cur = readWanAddress(dev);
  let inflight: ChildProcess | null = null;
  let again = false;
  let monitor: ChildProcess | null = null;
  let restartTimer: NodeJS.Timeout | null = null;

  const report = (addr: string | null) => {
    if (stopped || addr === cur) return;
    cur = addr;
    cb(addr);
  };

  const refresh = () => {
    if (stopped) return;
    if (inflight) {
      again = true;
      return;
    }
    inflight = execFile('ip', addrArgs(dev), { encoding: 'utf8', timeout: 5000 }, (err, stdout, stderr) => {
      inflight = null;
      if (stopped) return;
      if (err) {
        // A missing device means "no address"; anything else (timeout, ip
        // missing) tells us nothing, so keep the last known value.
        if (NO_DEVICE_RE.test(String(stderr))) report(null);
      } else {
        let addr: string | null | undefined;
        try {
          addr = primaryIpv4(stdout);
        } catch {
          addr = undefined;
        }
        if (addr !== undefined) report(addr);
      }
      if (again) {
        again = false;
        refresh();
      }
    });
  };

  const startMonitor = () => {
    restartTimer = null;
    if (stopped) return;
    const child = spawn('ip', ['-4', '-o', 'monitor', 'address'], { stdio: ['ignore', 'pipe', 'ignore'] });
    monitor = child;
    let buf = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      let hit = false;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const d = monitorLineDevice(line);
        if (d === null || d === dev) hit = true;
      }
      if (hit) refresh();
    });
    child.on('error', () => {
      /* e.g. ENOENT; 'exit'/'close' handles the restart, polling covers the gap */
    });
    child.on('close', () => {
      if (monitor === child) monitor = null;
      if (!stopped && restartTimer === null) restartTimer = setTimeout(startMonitor, restartMs);
    });
  };

  const pollTimer = setInterval(refresh, pollMs);
  if (opts.monitor !== false) startMonitor();

  const initial = cur;
  queueMicrotask(() => {
    if (!stopped && cur === initial) cb(initial);
  });

  return {
    current: () => cur,
    stop: () => {
      if (stopped) return;
      stopped = true;
      clearInterval(pollTimer);
      if (restartTimer) clearTimeout(restartTimer);
      restartTimer = null;
      monitor?.kill('SIGTERM');
      monitor = null;
      inflight?.kill('SIGTERM');
      inflight = null;
    },
  };
}
