// Logging with pino, in the form the reader needs:
//
//   text    (the default off a terminal) one line per message, the message
//           first, then key=value pairs; info and below on stdout, warn and
//           above on stderr. procd files a service's stdout at daemon.info
//           and its stderr at daemon.err, so `logread` shows warnings and
//           errors at error priority, as readable lines. No timestamp: syslog
//           adds its own.
//   json    pino's JSON lines (`--log-format json`), warn and above on
//           stderr too, for log collectors and tests that parse them.
//   pretty  pino-pretty, for a developer at a terminal (the default there).
//           pino-pretty is a dev dependency: where it is missing (the .ipk,
//           the image) pretty falls back to text.
//
// The format comes from `vpnmasq run --log-format`, else the environment's
// VPNMASQ_LOG_FORMAT (the non-procd image sets json for its console), else
// pretty on a terminal with pino-pretty installed, else text.
import pino, { type Logger } from 'pino';
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';

export type { Logger };
export type LogFormat = 'text' | 'json' | 'pretty';
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json', 'pretty'];

function havePretty(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}

const LEVEL_NAMES: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };
const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name']);

/** A value for key=value: bare when it is a plain word, else JSON (quoted, escaped: one line). */
function kv(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=\\]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return JSON.stringify(v) ?? String(v);
}

/** One pino JSON record as a text line: `message key=value …` (level=warn/error/fatal added for those). */
export function textLine(rec: Record<string, unknown>): string {
  const level = typeof rec.level === 'number' ? rec.level : 30;
  const parts = [String(rec.msg ?? '').replace(/[\r\n]+/g, ' ')];
  if (level >= 40) parts.push(`level=${LEVEL_NAMES[level] ?? level}`);
  for (const [k, v] of Object.entries(rec)) {
    if (SKIP.has(k) || v === undefined) continue;
    parts.push(`${k}=${kv(v)}`);
  }
  return parts.join(' ');
}

/** A pino destination that writes text lines, splitting by level between stdout and stderr. */
function textStream(out: NodeJS.WritableStream, err: NodeJS.WritableStream): Writable {
  let buf = '';
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let rec: Record<string, unknown>;
        try {
          rec = JSON.parse(line) as Record<string, unknown>;
        } catch {
          out.write(line + '\n');
          continue;
        }
        const lvl = typeof rec.level === 'number' ? rec.level : 30;
        (lvl >= 40 ? err : out).write(textLine(rec) + '\n');
      }
      cb();
    },
  });
}

/** Resolves the format: explicit, else VPNMASQ_LOG_FORMAT, else pretty at a terminal, else text. */
export function logFormat(explicit?: LogFormat, env = process.env): LogFormat {
  let f: LogFormat | undefined = explicit;
  if (!f && env.VPNMASQ_LOG_FORMAT && (LOG_FORMATS as readonly string[]).includes(env.VPNMASQ_LOG_FORMAT)) {
    f = env.VPNMASQ_LOG_FORMAT as LogFormat;
  }
  if (!f) f = process.stdout.isTTY === true ? 'pretty' : 'text';
  // pino-pretty is a dev dependency: without it, pretty is text.
  if (f === 'pretty' && !havePretty()) f = 'text';
  return f;
}

export function createLogger(level = 'info', opts: { format?: LogFormat; pretty?: boolean } = {}): Logger {
  const format = logFormat(opts.format ?? (opts.pretty === undefined ? undefined : opts.pretty ? 'pretty' : 'json'));
  if (format === 'pretty') {
    return pino({
      level,
      base: undefined,
      transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
    });
  }
  if (format === 'json') {
    // Warnings and errors on stderr as well, so procd files them at daemon.err.
    return pino(
      { level, base: { name: 'vpnmasq' }, timestamp: pino.stdTimeFunctions.isoTime },
      pino.multistream([
        { level: 'trace', stream: { write: (s: string) => { if (levelOf(s) < 40) process.stdout.write(s); } } },
        { level: 'warn', stream: process.stderr },
      ]),
    );
  }
  return pino({ level, base: undefined, timestamp: false }, textStream(process.stdout, process.stderr));
}

function levelOf(line: string): number {
  const m = /"level":(\d+)/.exec(line);
  return m ? Number(m[1]) : 30;
}
