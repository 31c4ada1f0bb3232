// Logging with pino: JSON lines for procd/syslog and tests, human-readable
// lines (pino-pretty) when standard output is a terminal.
import pino, { type Logger } from 'pino';
import { createRequire } from 'node:module';

export type { Logger };

function havePretty(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}

export function createLogger(level = 'info', opts: { pretty?: boolean } = {}): Logger {
  // Router images leave pino-pretty out: a terminal there gets JSON lines too.
  const pretty = (opts.pretty ?? (process.stdout.isTTY === true)) && havePretty();
  if (pretty) {
    return pino({
      level,
      base: undefined,
      transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
    });
  }
  return pino({ level, base: { name: 'vpnmasq' }, timestamp: pino.stdTimeFunctions.isoTime });
}
