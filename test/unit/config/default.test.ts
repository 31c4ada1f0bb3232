import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ConfigError,
  DEFAULT_CONFIG,
  MAIN_DEFAULTS,
  formatConfig,
  loadConfig,
  parseConfig,
  type Config,
} from '../../../src/config/index.js';

const FIRMWARE_FILE = fileURLToPath(new URL('../../../firmware/files/etc/config/vpnmasq', import.meta.url));

/** The Config without `file` and line numbers, for comparing re-parsed text. */
function strip(c: Config): unknown {
  return JSON.parse(JSON.stringify(c, (k, v) => (k === 'line' || k === 'file' ? undefined : v)));
}

function roundTrip(c: Config): void {
  const text = formatConfig(c);
  const again = parseConfig(text, 'formatted');
  expect(strip(again)).toEqual(strip(c));
  expect(formatConfig(again).split('\n').slice(1)).toEqual(text.split('\n').slice(1));
}

const RICH = `# every kind of section, with odd but valid spellings
config vpnmasq 'main'
	option lan_device 'eth1'
	option wan_device "eth0"
	option tun_inside tun_in
	option tun_outside 'tun_out'
	list lan_subnet '192.168.7.1/24'
	list lan_subnet '10.8.0.0/255.255.0.0'
	option max_flows 131072
	option log_level debug
	option masq_ports '50000:59999'
	option tcp_timeout 9000
	option tcp_transitory_timeout 300
	option udp_timeout 240
	option icmp_timeout 90
	option frag_timeout 60
	option esp_timeout 1200
	option esp_init_timeout 30
	option esp_init_retries 3
	option ike_timeout 1200
	option natt_timeout 120
	option gre_timeout 3600
	option parallel_sessions on
	option esp_guess enabled
	option control_socket '/tmp/vpnmasq ctl.sock'

config redirect 'web'
	option proto 'tcpudp'
	option src_dport '8000-8009'
	option dest_ip '192.168.7.20'
	option dest_port '9000-9009'

config redirect
	option name "Bob's \\"VPN\\" box"
	list proto esp
	list proto '47'
	option dest_ip '10.8.3.4'

config redirect
	option proto '4 41'
	option dest_ip '10.8.3.5'

config rule
	option name 'Ping'
	option src wan
	option proto icmp
	list icmp_type echo-request
	list icmp_type '3/4'
	option target ACCEPT

config rule
	option src lan
	option dest wan
	option src_ip '192.168.7.0/25 192.168.7.200'
	option proto all
	option target reject

config rule
	option src wan
	option dest lan
	option dest_ip '10.8.3.4'
	option dest_port '22 2200-2299'
	option src_port '1024-65535'
	option proto tcp
	option target DROP
`;

describe('default configuration', () => {
  it('the image file and the embedded constant are identical', () => {
    expect(readFileSync(FIRMWARE_FILE, 'utf8')).toBe(DEFAULT_CONFIG);
  });

  it('parses to the documented defaults, examples disabled', () => {
    const c = loadConfig(FIRMWARE_FILE);
    expect(c.file).toBe(FIRMWARE_FILE);
    expect(c.main).toEqual({ ...MAIN_DEFAULTS, lanDevice: 'br-lan', wanDevice: 'wan' });
    expect(c.redirects).toEqual([]);
    expect(c.rules).toEqual([]);
  });

  it('spells out every default (nothing in it differs from the built-in defaults)', () => {
    const minimal = parseConfig("config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n", 'minimal');
    expect(strip(parseConfig(DEFAULT_CONFIG, 'default'))).toEqual(strip(minimal));
    for (const name of Object.keys(MAIN_DEFAULTS)) {
      if (name === 'lanSubnets') continue;
      const uciName = name.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`);
      // An option that is off unless set (default null) is shown commented out, as an example.
      const off = MAIN_DEFAULTS[name as keyof typeof MAIN_DEFAULTS] === null ? '# ' : '';
      expect(DEFAULT_CONFIG).toMatch(new RegExp(`\\t${off}option ${uciName} '`));
    }
  });

  it('has valid examples: enabled, they parse as one redirect and one rule', () => {
    const enabled = DEFAULT_CONFIG.split('\n')
      .filter((l) => !l.includes("option enabled '0'"))
      .join('\n');
    const c = parseConfig(enabled, 'examples');
    expect(c.redirects).toMatchObject([{ name: 'Example-Forward-HTTP', srcDport: [8080, 8080], destIp: '192.168.1.10', destPort: [80, 80] }]);
    expect(c.rules).toMatchObject([{ name: 'Example-Allow-IKE', src: 'wan', dest: null, destPort: [[500, 500], [4500, 4500]], target: 'ACCEPT' }]);
  });

  it('round-trips through formatConfig', () => {
    roundTrip(parseConfig(DEFAULT_CONFIG, 'default'));
  });

  it('round-trips a config using every section and option', () => {
    const c = parseConfig(RICH, 'rich');
    expect(c.redirects).toHaveLength(3);
    expect(c.rules).toHaveLength(3);
    expect(c.redirects[1]!.name).toBe('Bob\'s "VPN" box');
    expect(c.main.controlSocket).toBe('/tmp/vpnmasq ctl.sock');
    roundTrip(c);
  });
});

describe('loadConfig', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'vpnmasq-config-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads a file and names it in the result and in errors', () => {
    const path = join(dir, 'good');
    writeFileSync(path, DEFAULT_CONFIG);
    expect(loadConfig(path).file).toBe(path);

    const bad = join(dir, 'bad');
    writeFileSync(bad, DEFAULT_CONFIG.replace("option max_flows '65536'", "option max_flows '12'"));
    const line = DEFAULT_CONFIG.split('\n').findIndex((l) => l.includes('max_flows')) + 1;
    expect(() => loadConfig(bad)).toThrow(`${bad}:${line}: option max_flows: '12' is out of range`);
  });

  it('a missing file is a ConfigError at line 0 with the errno text', () => {
    const path = join(dir, 'does-not-exist');
    try {
      loadConfig(path);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      const ce = e as ConfigError;
      expect(ce.file).toBe(path);
      expect(ce.line).toBe(0);
      expect(ce.reason).toContain('ENOENT: no such file or directory');
      expect(ce.message).toBe(`${path}:0: ${ce.reason}`);
    }
  });

  it('a directory is a ConfigError at line 0', () => {
    expect(() => loadConfig(dir)).toThrow(new RegExp(`^${dir}:0: .*EISDIR`));
  });

  it('refuses text that is not UTF-8, at its line', () => {
    const path = join(dir, 'latin1');
    writeFileSync(path, Buffer.concat([Buffer.from("config vpnmasq 'main'\n\toption lan_device 'br-lan'\n# caf"), Buffer.from([0xe9]), Buffer.from('\n')]));
    expect(() => loadConfig(path)).toThrow(`${path}:3: invalid UTF-8 text`);
  });

  it('keeps a byte order mark visible to the parser', () => {
    const path = join(dir, 'bom');
    writeFileSync(path, `\ufeff${DEFAULT_CONFIG}`);
    expect(() => loadConfig(path)).toThrow('byte order mark');
  });
});
