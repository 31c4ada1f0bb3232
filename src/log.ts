// Logging with pino: JSON lines for procd/syslog and tests, human-readable
// lines (pino-pretty) when standard output is a terminal.
import pino, { type Logger } from 'pino';

export type { Logger };

export function createLogger(level = 'info', opts: { pretty?: boolean } = {}): Logger {
  const pretty = opts.pretty ?? (process.stdout.isTTY === true);
  if (pretty) {
    return pino({
      level,
      base: undefined,
      transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
    });
  }
  return pino({ level, base: { name: 'vpnmasq' }, timestamp: pino.stdTimeFunctions.isoTime });
}
