// Issue 11, config and install: what an OpenWrt user expects of
// /etc/config/vpnmasq. Off until `option enabled '1'`; the main section is
// `config vpnmasq 'main'` (the scripts read vpnmasq.main.*); a bad file is
// reported whole, every problem at its line; fw4's src_ip / src_port /
// src_dip / reflection / reflection_src on redirects are read.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ConfigError, DEFAULT_CONFIG, MAIN_DEFAULTS, formatConfig, parseConfig } from '../../../src/config/index.js';

const F = '/etc/config/vpnmasq';
const ROOT = resolve(__dirname, '../../..');
const CLI = join(ROOT, 'dist/cli/main.js');
const HEAD = ["config vpnmasq 'main'", "\toption lan_device 'br-lan'", "\toption wan_device 'wan'"];

function fails(text: string): ConfigError {
  try {
    parseConfig(text, F);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error(`expected a ConfigError for:\n${text}`);
}

const redirect = (...opts: string[]) =>
  parseConfig([...HEAD, 'config redirect', "\toption proto 'tcp'", "\toption src_dport '8080'", "\toption dest_ip '192.168.1.10'", ...opts].join('\n') + '\n', F)
    .redirects[0]!;

describe('option enabled', () => {
  it("is off when left out, and read as a uci boolean", () => {
    expect(MAIN_DEFAULTS.enabled).toBe(false);
    expect(parseConfig(HEAD.join('\n') + '\n', F).main.enabled).toBe(false);
    expect(parseConfig([...HEAD, "\toption enabled '1'"].join('\n') + '\n', F).main.enabled).toBe(true);
    expect(parseConfig([...HEAD, "\toption enabled 'yes'"].join('\n') + '\n', F).main.enabled).toBe(true);
    const e = fails([...HEAD, "\toption enabled 'maybe'"].join('\n') + '\n');
    expect(e.message).toBe(`${F}:4: option enabled: 'maybe' is not a boolean (use one of 1, yes, on, true, enabled, 0, no, off, false, disabled)`);
  });

  it("the package's shipped file is off: its main section says enabled '0'", () => {
    const c = parseConfig(DEFAULT_CONFIG, F);
    expect(c.main.enabled).toBe(false);
    expect(DEFAULT_CONFIG).toMatch(/^config vpnmasq 'main'\n(\t.*\n)*\toption enabled '0'\t# '1' to run/m);
    expect(formatConfig(parseConfig([...HEAD, "\toption enabled '1'"].join('\n') + '\n', F))).toContain("\toption enabled '1'\n");
  });
});

describe('the main section', () => {
  it("an anonymous 'config vpnmasq' is refused: the scripts read vpnmasq.main", () => {
    const e = fails("config vpnmasq\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n");
    expect(e.message).toBe(
      `${F}:1: config vpnmasq: the main section must be named: write "config vpnmasq 'main'" (the init, hotplug and rpcd scripts read vpnmasq.main)`,
    );
    expect(e.all).toHaveLength(1);
  });

  it("a main section with another name is refused", () => {
    const e = fails("config vpnmasq 'router'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n");
    expect(e.message).toBe(`${F}:1: config vpnmasq 'router': the main section must be named 'main' (the init, hotplug and rpcd scripts read vpnmasq.main)`);
  });
});

describe('every problem of a file is reported', () => {
  const BAD = [
    "config vpnmasq 'main'", //                  1
    "\toption lan_device 'br-lan'", //            2
    "\toption wan_device 'wan'", //               3
    "\toption max_flows '12'", //                 4
    "\toption colour 'blue'", //                  5
    "\toption log_level 'loud'", //               6
    '', //                                        7
    "config redirect 'web'", //                   8
    "\toption src_dport '8080'", //               9
    "\toption dest_ip '192.168.1.300'", //        10
    "\toption src_mac '02:00:00:00:00:01'", //    11
    '', //                                        12
    'config rule', //                             13
    "\toption src 'wan'", //                      14
    '', //                                        15
    'config zone', //                             16
  ].join('\n') + '\n';

  it('each as FILE:LINE: reason, in file order; the error itself is the first', () => {
    const e = fails(BAD);
    expect(e.all.map((x) => `${x.line}: ${x.reason.split(':')[0]}`)).toEqual([
      '4: option max_flows',
      '5: option colour',
      '6: option log_level',
      '10: option dest_ip',
      '11: option src_mac',
      "13: rule",
      '16: config zone',
    ]);
    expect(e).toBe(e.all[0]);
    for (const x of e.all) expect(x.message).toBe(`${F}:${x.line}: ${x.reason}`);
    expect(e.lines('vpnmasq: ').split('\n')).toHaveLength(7);
  });

  it('vpnmasq check-config prints them all, one line each, exit 1', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vpnmasq-all-'));
    const f = join(dir, 'bad');
    writeFileSync(f, BAD);
    let r;
    try {
      r = spawnSync(process.execPath, [CLI, 'check-config', '-c', f], { encoding: 'utf8' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines.map((l) => /^vpnmasq: (.+):(\d+): /.exec(l)?.slice(1, 3))).toEqual(
      [4, 5, 6, 10, 11, 13, 16].map((n) => [f, `${n}`]),
    );
  });
});

describe('redirect: fw4 src_ip, src_port, src_dip, reflection', () => {
  it('leaves a plain forward as it was (the options are absent)', () => {
    const r = redirect();
    for (const k of ['srcIp', 'srcPort', 'srcDip', 'reflection', 'reflectionSrc']) expect(r).not.toHaveProperty(k);
  });

  it('reads them the way fw4 writes them', () => {
    const r = redirect("option src_ip '198.51.100.7/24'", "option src_port '1000-2000'", "option src_dip '203.0.113.5'",
      "option reflection '0'", "option reflection_src 'external'");
    expect(r).toMatchObject({
      srcIp: '198.51.100.0/24', srcPort: [1000, 2000], srcDip: '203.0.113.5', reflection: false, reflectionSrc: 'external',
    });
    expect(redirect("option src_ip '198.51.100.7'").srcIp).toBe('198.51.100.7/32');
    expect(redirect("option reflection '1'").reflection).toBe(true);
  });

  it('round-trips through formatConfig', () => {
    const text = [...HEAD, 'config redirect', "\toption proto 'udp'", "\toption src_dport '500'", "\toption dest_ip '192.168.1.10'",
      "\toption src_ip '198.51.100.0/24'", "\toption src_port '500'", "\toption src_dip '203.0.113.5'", "\toption reflection '0'"].join('\n') + '\n';
    const c = parseConfig(text, F);
    expect(parseConfig(formatConfig(c), F).redirects[0]).toMatchObject({ ...c.redirects[0], line: expect.any(Number) });
  });

  it('refuses what it cannot enforce, saying why, at the line', () => {
    const at = (opt: string, extra: string[] = []) => {
      const e = fails([...HEAD, 'config redirect', "\toption src_dport '8080'", "\toption dest_ip '192.168.1.10'", ...extra, `\t${opt}`].join('\n') + '\n');
      return e.message;
    };
    expect(at("option src_ip '1.2.3.0/24 5.6.7.0/24'")).toBe(
      `${F}:7: option src_ip: '5.6.7.0/24' is a second source network; vpnmasq supports one src_ip per redirect (use one redirect for each)`);
    expect(at("option src_ip '2001:db8::1'")).toContain('IPv4-only');
    expect(at("option src_ip '!1.2.3.4'")).toContain("negation ('!')");
    expect(at("option src_port '0'")).toContain('out of range');
    expect(at("option src_dip '127.0.0.1'")).toBe(`${F}:7: option src_dip: '127.0.0.1' is not an address the WAN device can have (loopback)`);
    expect(at("option reflection 'sometimes'")).toContain('is not a boolean');
    expect(at("option reflection_src 'both'")).toBe(`${F}:7: option reflection_src: 'both' is not 'internal' or 'external'`);
    expect(at("option reflection_zone 'lan'")).toBe(`${F}:7: option reflection_zone: this fw4 option is not supported by vpnmasq in a 'redirect' section`);
    const esp = fails([...HEAD, 'config redirect', "\toption proto 'esp'", "\toption dest_ip '192.168.1.10'", "\toption src_ip '1.2.3.4'"].join('\n') + '\n');
    expect(esp.message).toBe(
      `${F}:7: option src_ip: '1.2.3.4' is not supported by vpnmasq for a protocol forward (proto esp); only tcp/udp port forwards can be limited`);
  });
});
