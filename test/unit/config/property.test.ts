import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { ConfigError, DEFAULT_CONFIG, formatConfig, parseConfig, parseUci, uciQuote, type Config } from '../../../src/config/index.js';

/** Runs parseConfig; anything thrown must be a ConfigError with a proper FILE:LINE message. */
function attempt(text: string): Config | null {
  try {
    return parseConfig(text, 'fuzz');
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    expect(e.reason.startsWith('internal error')).toBe(false);
    expect(e.file).toBe('fuzz');
    expect(Number.isInteger(e.line) && e.line >= 0).toBe(true);
    expect(e.line).toBeLessThanOrEqual(text.split('\n').length);
    expect(e.message).toBe(`fuzz:${e.line}: ${e.reason}`);
    return null;
  }
}

function strip(c: Config): unknown {
  return JSON.parse(JSON.stringify(c, (k, v) => (k === 'line' || k === 'file' ? undefined : v)));
}

// Pieces that reach deep into both the tokenizer and the schema.
const KEYWORDS = ['config', 'option', 'list', 'package', 'c', 'o', 'l', 'p', '#', 'conf'];
const NAMES = [
  'vpnmasq', 'redirect', 'rule', 'main', 'zone', 'lan_device', 'wan_device', 'tun_inside', 'tun_outside',
  'lan_subnet', 'max_flows', 'log_level', 'masq_ports', 'tcp_timeout', 'udp_timeout', 'frag_timeout',
  'esp_timeout', 'ike_timeout', 'esp_init_retries', 'parallel_sessions', 'esp_guess', 'control_socket',
  'name', 'enabled', 'family', 'src', 'src_ip', 'proto', 'src_dport', 'dest', 'dest_ip', 'dest_port',
  'icmp_type', 'target', 'src_port',
];
const VALUES = [
  'br-lan', 'wan', 'lan', 'tin', 'tout', 'eth0', '*', '1', '0', 'yes', 'off', 'info', 'debug', 'tcp', 'udp',
  'tcp udp', 'tcpudp', 'esp', 'gre', 'icmp', 'all', '47', '256', '!tcp', '80', '8080', '500 4500', '1-65535',
  '61000-65535', '70000', '8000-8010', '0', '192.168.1.10', '192.168.1.0/24', '10.0.0.1/8', '1.2.3.4.5',
  'fd00::1', '192.168.1.255', 'echo-request', '3/4', 'ACCEPT', 'drop', 'DNAT', 'SNAT', 'ipv4', 'ipv6',
  '/var/run/x.sock', 'x', '', '65536', '1024', '3600', '1800',
];
const GLUE = [' ', '\t', '\n', '\r\n', "'", '"', '\\', '\\\n', ';', '#', '\ufeff', '\0', "'\n", ' # c\n'];

const token = fc.oneof(
  fc.constantFrom(...KEYWORDS),
  fc.constantFrom(...NAMES),
  fc.constantFrom(...VALUES).map((v) => `'${v}'`),
  fc.constantFrom(...VALUES),
  fc.constantFrom(...GLUE),
  fc.string({ maxLength: 4 }),
);
const soup = fc.array(token, { maxLength: 60 }).map((t) => t.join(''));

/** Lines that are mostly well formed, so the schema is reached. */
const line = fc.oneof(
  fc.tuple(fc.constantFrom('config'), fc.constantFrom('vpnmasq', 'redirect', 'rule'), fc.option(fc.constantFrom("'main'", "'x'", "''"))).map(
    ([k, t, n]) => `${k} ${t}${n ? ` ${n}` : ''}`,
  ),
  fc.tuple(fc.constantFrom('\toption', '\tlist'), fc.constantFrom(...NAMES), fc.constantFrom(...VALUES)).map(([k, n, v]) => `${k} ${n} ${uciQuote(v)}`),
);
const mostlyValid = fc
  .array(line, { maxLength: 25 })
  .map((ls) => ["config vpnmasq 'main'", "\toption lan_device 'br-lan'", "\toption wan_device 'wan'", ...ls].join('\n'));

describe('config: properties', () => {
  it('random text never throws anything but ConfigError', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300, unit: 'binary' }), (s) => {
        attempt(s);
      }),
      { numRuns: 2000 },
    );
  });

  it('token soup never throws anything but ConfigError', () => {
    fc.assert(
      fc.property(soup, (s) => {
        attempt(s);
      }),
      { numRuns: 3000 },
    );
  });

  it('mangled default configs never throw anything but ConfigError', () => {
    fc.assert(
      fc.property(fc.nat(DEFAULT_CONFIG.length), fc.nat(40), soup, (at, cut, junk) => {
        attempt(DEFAULT_CONFIG.slice(0, at) + junk + DEFAULT_CONFIG.slice(at + cut));
      }),
      { numRuns: 2000 },
    );
  });

  it('whatever parses, formatConfig writes back to an equal Config', () => {
    let parsed = 0;
    fc.assert(
      fc.property(mostlyValid, (text) => {
        const c = attempt(text);
        if (c === null) return;
        parsed++;
        expect(strip(parseConfig(formatConfig(c), 'again'))).toEqual(strip(c));
      }),
      { numRuns: 2000 },
    );
    expect(parsed).toBeGreaterThan(50);
  });

  it('uciQuote round-trips any value', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 60 }).filter((s) => !s.includes('\0')), (s) => {
        const f = parseUci(`config t\n\toption a ${uciQuote(s)}\n\tlist b ${uciQuote(s)}\n`, 'q');
        const opts = f.sections[0]!.options;
        expect(opts.find((o) => o.name === 'b')!.values).toEqual([s]);
        expect(opts.find((o) => o.name === 'a')?.values).toEqual(s === '' ? undefined : [s]);
      }),
      { numRuns: 1000 },
    );
  });
});
