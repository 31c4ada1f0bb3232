// vpnmasq configuration: /etc/config/vpnmasq, UCI syntax, fw4 option names.
//
//   loadConfig(path)        read and validate a file
//   parseConfig(text, file) validate text (file is used in messages)
//   formatConfig(cfg)       canonical UCI text of a Config, every effective
//                           value spelled out (parses back to an equal Config)
//
// Every problem is a ConfigError with `file`, `line` (0: the file as a
// whole) and `reason`; its message is `FILE:LINE: reason`.

import { readFileSync } from 'node:fs';
import {
  PROTO_ALL,
  PROTOCOL_NAMES,
  validateConfig,
  type Config,
  type PortRange,
  type Redirect,
  type Rule,
} from './schema.js';
import { formatMain } from './options.js';
import { ConfigError, parseUci, uciQuote } from './uci.js';

export { ConfigError, parseUci, uciQuote };
export type { UciFile, UciOption, UciSection } from './uci.js';
export {
  LOG_LEVELS,
  MAIN_DEFAULTS,
  MAIN_OPTIONS,
  MAIN_TABLE,
  PROTOCOL_NAMES,
  PROTO_AH,
  PROTO_ALL,
  PROTO_ESP,
  PROTO_GRE,
  PROTO_ICMP,
  PROTO_TCP,
  PROTO_UDP,
  validateConfig,
} from './schema.js';
export type { Config, EngineSettings, IcmpType, LogLevel, MainConfig, PortRange, Redirect, Rule } from './schema.js';
export { optionsMarkdown } from './options.js';
export { DEFAULT_CONFIG } from './default.js';

/** Where the image keeps the configuration. */
export const DEFAULT_CONFIG_PATH = '/etc/config/vpnmasq';

/** Validates UCI text into a deeply frozen Config. Throws ConfigError only. */
export function parseConfig(text: string, file: string): Config {
  try {
    return validateConfig(parseUci(text, file));
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(file, 0, `internal error: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** "ENOENT: no such file or directory, open '/x'" -> "ENOENT: no such file or directory" */
function errnoText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const msg = typeof err?.message === 'string' ? err.message : String(e);
  const m = /^([A-Z][A-Z0-9_]*: [^,]*)/.exec(msg);
  return m ? m[1]! : msg;
}

/** Decodes UTF-8, refusing invalid byte sequences with the line they are on. */
function decode(buf: Buffer, file: string): string {
  const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  try {
    return strict.decode(buf);
  } catch {
    let start = 0;
    for (let line = 1; ; line++) {
      const nl = buf.indexOf(0x0a, start);
      const end = nl < 0 ? buf.length : nl;
      try {
        new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(buf.subarray(start, end));
      } catch {
        throw new ConfigError(file, line, 'invalid UTF-8 text');
      }
      if (nl < 0) throw new ConfigError(file, 0, 'invalid UTF-8 text');
      start = nl + 1;
    }
  }
}

/** Reads and validates a config file. A missing or unreadable file is a ConfigError at line 0. */
export function loadConfig(path: string): Config {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new ConfigError(path, 0, `cannot read the configuration: ${errnoText(e)}`);
  }
  return parseConfig(decode(buf, path), path);
}

// ---------------------------------------------------------------------------
// formatConfig

function protoName(p: number): string {
  if (p === PROTO_ALL) return 'all';
  for (const [name, num] of Object.entries(PROTOCOL_NAMES)) if (num === p) return name;
  return `${p}`;
}

function port(r: PortRange): string {
  return r[0] === r[1] ? `${r[0]}` : `${r[0]}-${r[1]}`;
}

function opt(name: string, value: string | number | boolean): string {
  const v = typeof value === 'boolean' ? (value ? '1' : '0') : `${value}`;
  return `\toption ${name} ${uciQuote(v)}\n`;
}

function list(name: string, values: readonly string[]): string {
  return values.map((v) => `\tlist ${name} ${uciQuote(v)}\n`).join('');
}

function redirectText(r: Redirect): string {
  let s = '\nconfig redirect\n';
  if (r.name !== null) s += opt('name', r.name);
  s += opt('src', r.src);
  s += opt('proto', r.proto.map(protoName).join(' '));
  if (r.srcDport) s += opt('src_dport', port(r.srcDport));
  s += opt('dest', r.dest);
  s += opt('dest_ip', r.destIp);
  if (r.destPort) s += opt('dest_port', port(r.destPort));
  if (r.srcIp !== undefined) s += opt('src_ip', r.srcIp);
  if (r.srcPort) s += opt('src_port', port(r.srcPort));
  if (r.srcDip !== undefined) s += opt('src_dip', r.srcDip);
  if (r.reflection !== undefined) s += opt('reflection', r.reflection);
  if (r.reflectionSrc !== undefined) s += opt('reflection_src', r.reflectionSrc);
  s += opt('target', r.target);
  return s;
}

function ruleText(r: Rule): string {
  let s = '\nconfig rule\n';
  if (r.name !== null) s += opt('name', r.name);
  s += opt('src', r.src);
  s += list('src_ip', r.srcIp);
  s += list('src_port', r.srcPort.map(port));
  if (r.dest !== null) s += opt('dest', r.dest);
  s += list('dest_ip', r.destIp);
  s += opt('proto', r.proto.map(protoName).join(' '));
  s += list('dest_port', r.destPort.map(port));
  s += list('icmp_type', r.icmpType.map((t) => (t.code === null ? `${t.type}` : `${t.type}/${t.code}`)));
  s += opt('target', r.target);
  return s;
}

/**
 * The Config as canonical UCI text with every effective value written out
 * (defaults included, disabled sections gone). Useful as a summary of what
 * is in force; parseConfig(formatConfig(c)) equals c up to `file` and lines.
 */
export function formatConfig(cfg: Config): string {
  let s = `# effective configuration from ${cfg.file.replace(/[\r\n]/g, ' ')}\n\nconfig vpnmasq 'main'\n`;
  s += formatMain(cfg.main, (kind, name, value) => (kind === 'list' ? list(name, [value]) : opt(name, value)));
  for (const r of cfg.redirects) s += redirectText(r);
  for (const r of cfg.rules) s += ruleText(r);
  return s;
}

// ---------------------------------------------------------------------------
// One line per redirect and rule, under its fw4 `name` (else the uci section
// name, else its line): what `vpnmasq status` and the log show.

export function redirectLabel(r: Redirect): string {
  const what = r.srcDport
    ? `${r.proto.map(protoName).join('/')} ${port(r.srcDport)} -> ${r.destIp}:${port(r.destPort!)}`
    : `${r.proto.map(protoName).join('/')} -> ${r.destIp}`;
  // NAT loopback is named only where it is not fw4's default (on, internal).
  const loop = !r.srcDport ? null : r.reflection === false ? 'reflection 0' : r.reflectionSrc === 'external' ? 'reflection_src external' : null;
  const from = [r.srcIp && `from ${r.srcIp}`, r.srcPort && `sport ${port(r.srcPort)}`, r.srcDip && `to ${r.srcDip}`, loop].filter(Boolean);
  return `${r.name ?? `redirect@${r.line}`}: ${what}${from.length ? ` (${from.join(', ')})` : ''}`;
}

export function ruleLabel(r: Rule): string {
  const ports = r.destPort.length ? ` ${r.destPort.map(port).join(',')}` : '';
  return `${r.name ?? `rule@${r.line}`}: ${r.src} -> ${r.dest ?? 'router'} ${r.proto.map(protoName).join('/')}${ports} ${r.target}`;
}
