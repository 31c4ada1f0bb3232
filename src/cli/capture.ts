// `vpnmasq capture --drops [--reason R] -w FILE.pcap [-c COUNT] [--duration S]`:
// asks the running daemon to copy the packets its engine drops (all, or one
// reason), fetches them every 200 ms over the control socket and writes a
// pcap file (LINKTYPE_RAW: packets start at the IPv4 header) that tcpdump
// and Wireshark read. Stops after COUNT packets, S seconds, or Ctrl-C /
// SIGTERM, then says how many packets of which reason it wrote.

import { closeSync, openSync, writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DEFAULT_CONFIG_PATH, loadConfig } from '../config/index.js';
import { MAIN_DEFAULTS } from '../config/schema.js';
import { request } from '../control/client.js';
import { DROP_REASONS } from '../engine/abi.js';
import type { CaptureRead } from '../observe/capture.js';

export const CAPTURE_USAGE = `usage: vpnmasq capture --drops [--reason REASON] -w FILE.pcap [-c COUNT] [--duration SECONDS]

Writes the packets the engine drops to FILE.pcap (raw IPv4, for tcpdump -r
or Wireshark) until COUNT packets, SECONDS seconds or Ctrl-C.

options:
  --drops              capture dropped packets (the only source for now)
  --reason REASON      only drops of this reason (see vpnmasq status)
  -w, --write FILE     the pcap file to write ('-': standard output)
  -c, --count N        stop after N packets
      --duration S     stop after S seconds
  -s, --socket PATH    control socket (default: the config's control_socket)
      --config FILE    configuration (default ${DEFAULT_CONFIG_PATH})
  -h, --help`;

/** pcap (libpcap 2.4) global header; LINKTYPE_RAW = 101. */
export const LINKTYPE_RAW = 101;
export const SNAPLEN = 2048;

export function pcapHeader(): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(0xa1b2c3d4, 0);
  b.writeUInt16LE(2, 4);
  b.writeUInt16LE(4, 6);
  b.writeInt32LE(0, 8);
  b.writeUInt32LE(0, 12);
  b.writeUInt32LE(SNAPLEN, 16);
  b.writeUInt32LE(LINKTYPE_RAW, 20);
  return b;
}

export function pcapRecord(timeMs: number, data: Buffer, origLen: number): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(Math.floor(timeMs / 1000), 0);
  h.writeUInt32LE(Math.round((timeMs % 1000) * 1000), 4);
  h.writeUInt32LE(data.length, 8);
  h.writeUInt32LE(Math.max(origLen, data.length), 12);
  return Buffer.concat([h, data]);
}

const fail = (msg: string, code = 1): never => {
  process.stderr.write(`vpnmasq: ${msg}\n`);
  process.exit(code);
};

export async function runCapture(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv, allowPositionals: false,
      options: {
        drops: { type: 'boolean' }, reason: { type: 'string' }, write: { type: 'string', short: 'w' },
        count: { type: 'string', short: 'c' }, duration: { type: 'string' }, socket: { type: 'string', short: 's' },
        config: { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    return fail(`capture: ${(err as Error).message}\n${CAPTURE_USAGE}`, 2);
  }
  if (values.help) { process.stdout.write(CAPTURE_USAGE + '\n'); return 0; }
  if (!values.drops) return fail(`capture: say what to capture: --drops\n${CAPTURE_USAGE}`, 2);
  if (!values.write) return fail(`capture: -w FILE is required\n${CAPTURE_USAGE}`, 2);
  if (values.reason !== undefined && DROP_REASONS.indexOf(values.reason as (typeof DROP_REASONS)[number]) <= 0) {
    return fail(`capture: unknown drop reason '${values.reason}' (one of: ${DROP_REASONS.slice(1).join(', ')})`, 2);
  }
  const count = values.count === undefined ? Infinity : Number(values.count);
  if (count !== Infinity && (!Number.isInteger(count) || count < 1)) return fail(`capture: -c wants a whole number ≥ 1, not '${values.count}'`, 2);
  const duration = values.duration === undefined ? Infinity : Number(values.duration);
  if (!(duration > 0)) return fail(`capture: --duration wants seconds > 0, not '${values.duration}'`, 2);
  let sock = values.socket;
  if (!sock) {
    try { sock = loadConfig(values.config ?? DEFAULT_CONFIG_PATH).main.controlSocket; } catch { sock = MAIN_DEFAULTS.controlSocket; }
  }

  const start = await request(sock, 'capture-start', 5000, values.reason ? { reason: values.reason } : {}).catch((e: Error) => fail(e.message));
  if (!start.ok) return fail(`capture: ${start.error}`);

  let fd: number;
  try {
    fd = values.write === '-' ? 1 : openSync(values.write, 'w', 0o600);
  } catch (err) {
    await request(sock, 'capture-stop').catch(() => undefined);
    return fail(`capture: cannot write ${values.write}: ${(err as Error).message}`);
  }
  writeSync(fd, pcapHeader());
  process.stderr.write(`vpnmasq: capturing ${values.reason ? `'${values.reason}' drops` : 'drops'} to ${values.write}` +
    `${Number.isFinite(count) ? `, ${count} packets` : ''}${Number.isFinite(duration) ? `, ${duration} s` : ''}; Ctrl-C stops\n`);

  let written = 0;
  let lost = 0;
  const byReason: Record<string, number> = {};
  let stopping = false;
  const onSig = () => { stopping = true; };
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  const deadline = Date.now() + duration * 1000;
  try {
    while (!stopping && written < count && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      const res = await request(sock, 'capture-read', 10_000);
      if (!res.ok) throw new Error(`capture: ${res.error}`);
      const d = res.data as CaptureRead;
      lost += d.lost;
      for (const p of d.drops) {
        if (written >= count) break;
        writeSync(fd, pcapRecord(p.timeMs, Buffer.from(p.data, 'base64'), p.length));
        written++;
        byReason[p.reason] = (byReason[p.reason] ?? 0) + 1;
      }
      if (!d.active) { process.stderr.write('vpnmasq: the daemon ended the capture\n'); break; }
    }
  } catch (err) {
    process.stderr.write(`vpnmasq: ${(err as Error).message}\n`);
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
    await request(sock, 'capture-stop').catch(() => undefined);
    if (fd !== 1) closeSync(fd);
  }
  const reasons = Object.entries(byReason).map(([r, n]) => `${r} ${n}`).join(', ');
  process.stderr.write(`vpnmasq: ${written} packets written${reasons ? ` (${reasons})` : ''}` +
    `${lost ? `; ${lost} drops not captured (ring full)` : ''}\n`);
  return 0;
}
