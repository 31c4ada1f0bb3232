// The command line's conventions (issue 11): conntrack-tools' options and
// filters for `vpnmasq conntrack`, --socket for the control socket,
// --version and --help on every command, --json accepted by every command
// that prints and refused (usage error) by the others, usage errors exit 2,
// and `run` on a disabled configuration: exit 0 with one line.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { formatConntrack } from '../../../src/cli/conntrack.js';
import { FilterError, matches, original, parseFilter } from '../../../src/cli/filter.js';
import type { FlowEntry } from '../../../src/engine/engine.js';

const ROOT = resolve(__dirname, '../../..');
const CLI = join(ROOT, 'dist/cli/main.js');
const SHIPPED_CONFIG = join(ROOT, 'firmware/files/etc/config/vpnmasq');
const VERSION: string = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;
const COMMANDS = ['run', 'check-config', 'status', 'conntrack', 'reload', 'wan-update', 'demo'];

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('every command', () => {
  it.each(COMMANDS)('%s --version: "vpnmasq VERSION", exit 0', (cmd) => {
    expect(cli(cmd, '--version')).toEqual({ status: 0, stdout: `vpnmasq ${VERSION}\n`, stderr: '' });
    expect(cli(cmd, '-V').stdout).toBe(`vpnmasq ${VERSION}\n`);
  });

  it.each(COMMANDS)('%s --help: that command\'s usage on stdout, exit 0', (cmd) => {
    const r = cli(cmd, '--help');
    expect(r.status).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout.split('\n')[0]).toMatch(new RegExp(`^usage: vpnmasq ${cmd}\\b`));
  });

  it('vpnmasq --version without a command', () => {
    expect(cli('--version')).toEqual({ status: 0, stdout: `vpnmasq ${VERSION}\n`, stderr: '' });
  });

  it.each(['run', 'demo'])('%s --json: refused as a usage error (exit 2), never ignored', (cmd) => {
    const r = cli(cmd, '--json');
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')[0]).toMatch(new RegExp(`^vpnmasq: ${cmd}: --json is not accepted`));
  });

  it('check-config --json: the result as JSON, also every problem of a bad file', () => {
    const good = cli('check-config', '-c', SHIPPED_CONFIG, '--json');
    expect(good.status).toBe(0);
    expect(JSON.parse(good.stdout)).toEqual({ file: SHIPPED_CONFIG, ok: true, enabled: false, redirects: 0, rules: 0 });
    const bad = cli('check-config', '-c', '/nonexistent/vpnmasq', '--json');
    expect(bad.status).toBe(1);
    expect(JSON.parse(bad.stdout)).toMatchObject({ ok: false, errors: [{ file: '/nonexistent/vpnmasq', line: 0 }] });
  });

  it.each([
    [['status', 'extra'], /^vpnmasq: status: unexpected argument "extra"$/],
    [['conntrack', '-L', '-D', '-p', 'tcp'], /^vpnmasq: conntrack: --dump and --delete together/],
    [['conntrack', '-D'], /^vpnmasq: conntrack: -D needs at least one filter/],
    [['conntrack', '-F', '-p', 'tcp'], /^vpnmasq: conntrack: -F takes no filters/],
    [['conntrack', '-p', 'bogus'], /^vpnmasq: conntrack: -p: 'bogus' is not a protocol name or number$/],
    [['conntrack', '-s', '1.2.3'], /^vpnmasq: conntrack: --src: '1\.2\.3' is not an IPv4 address or network$/],
    [['conntrack', '--dport', '70000'], /^vpnmasq: conntrack: --dport: '70000' is out of range \(0\.\.65535\)$/],
    [['conntrack', '--spi', 'xyz'], /^vpnmasq: conntrack: --spi: 'xyz' is not a number$/],
    [['run', '--log-format', 'xml'], /^vpnmasq: run: --log-format 'xml' is not text, json or pretty$/],
    [['status', '--sport', '1'], /^vpnmasq: .*--sport/],
  ])('%j: a usage error, exit 2, the reason first', (args, reason) => {
    const r = cli(...args, '--socket', '/nonexistent/vpnmasq.sock');
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')[0]).toMatch(reason);
    expect(r.stderr).toContain('usage: vpnmasq <command> [options]');
  });

  it("run on a disabled configuration (the package's shipped file): exit 0, one line, nothing started", () => {
    const r = cli('run', '-c', SHIPPED_CONFIG);
    expect(r).toEqual({ status: 0, stdout: `vpnmasq: ${SHIPPED_CONFIG}: disabled (option enabled '0'); not starting\n`, stderr: '' });
  });

  it('conntrack takes -s as the source filter; --socket names the socket', () => {
    const r = cli('conntrack', '-s', '192.168.1.10', '--socket', '/nonexistent/x.sock');
    expect(r).toEqual({ status: 1, stdout: '', stderr: 'vpnmasq: vpnmasq is not running (no control socket at /nonexistent/x.sock)\n' });
  });
});

// ---------------------------------------------------------------------------
const base = { wan: '203.0.113.1', redirect: false, replied: true, packetsOut: 3, packetsIn: 2, expiresInS: 100 };
const UDP: FlowEntry = { ...base, id: 'flow:0', proto: 'udp', protoNum: 17, state: 'REPLIED', lan: '192.168.1.10', lanPort: 5353, remote: '198.51.100.7', remotePort: 53, aliasPort: 5353 };
const FWD: FlowEntry = { ...base, id: 'flow:1', proto: 'tcp', protoNum: 6, state: 'ESTABLISHED', redirect: true, lan: '192.168.1.20', lanPort: 80, remote: '198.51.100.9', remotePort: 40000, aliasPort: 8080 };
const ESP: FlowEntry = { ...base, id: 'esp:0', proto: 'esp', protoNum: 50, state: 'ESTABLISHED', lan: '192.168.1.11', lanPort: 0, remote: '198.51.100.50', remotePort: 0, aliasPort: 0, spiOut: '0x0000a001', spiIn: '0xc0de0001' };
const IKE: FlowEntry = { ...base, id: 'ike:0', proto: 'udp', protoNum: 17, state: 'IKE', lan: '192.168.1.11', lanPort: 500, remote: '198.51.100.50', remotePort: 500, aliasPort: 500, icookie: '0102030405060708', rcookie: null };
const GRE: FlowEntry = { ...base, id: 'call:0', proto: 'gre', protoNum: 47, state: 'CALL', lan: '192.168.1.12', lanPort: 0, remote: '198.51.100.60', remotePort: 0, aliasPort: 0, callIdLan: 0x100, callIdAlias: 0x2001, callIdRemote: 0x77 };
const ALL = [UDP, FWD, ESP, IKE, GRE];
const pick = (a: Record<string, string>) => ALL.filter((e) => matches(e, parseFilter(a))).map((e) => e.id);

describe('conntrack filters (original direction, as conntrack-tools reads them)', () => {
  it('the original direction: a redirect was opened from the WAN', () => {
    expect(original(UDP)).toEqual({ src: '192.168.1.10', dst: '198.51.100.7', sport: 5353, dport: 53 });
    expect(original(FWD)).toEqual({ src: '198.51.100.9', dst: '203.0.113.1', sport: 40000, dport: 8080 });
    expect(original(ESP)).toEqual({ src: '192.168.1.11', dst: '198.51.100.50', sport: null, dport: null });
  });

  it('-p by name or number; udp includes IKE', () => {
    expect(pick({ proto: 'udp' })).toEqual(['flow:0', 'ike:0']);
    expect(pick({ proto: '50' })).toEqual(['esp:0']);
    expect(pick({ proto: 'GRE' })).toEqual(['call:0']);
  });

  it('-s/-d: address or network; --sport/--dport', () => {
    expect(pick({ src: '192.168.1.11' })).toEqual(['esp:0', 'ike:0']);
    expect(pick({ src: '192.168.1.0/24' })).toEqual(['flow:0', 'esp:0', 'ike:0', 'call:0']);
    expect(pick({ dst: '203.0.113.1' })).toEqual(['flow:1']);
    expect(pick({ dport: '8080' })).toEqual(['flow:1']);
    expect(pick({ sport: '500', dport: '500' })).toEqual(['ike:0']);
    expect(pick({ proto: 'udp', dport: '53', src: '192.168.1.10' })).toEqual(['flow:0']);
    expect(pick({ proto: 'tcp', dport: '53' })).toEqual([]);
  });

  it('--spi matches either SPI (hex or decimal); --call-id any of the three Call IDs', () => {
    expect(pick({ spi: '0xc0de0001' })).toEqual(['esp:0']);
    expect(pick({ spi: String(0xa001) })).toEqual(['esp:0']);
    expect(pick({ spi: '0x1' })).toEqual([]);
    for (const id of ['256', '0x2001', '119']) expect(pick({ 'call-id': id })).toEqual(['call:0']);
    expect(pick({ 'call-id': '5' })).toEqual([]);
  });

  it('bad values are FilterErrors naming the option', () => {
    expect(() => parseFilter({ sport: '-1' })).toThrow(FilterError);
    expect(() => parseFilter({ src: '10.0.0.0/33' })).toThrow("--src: '10.0.0.0/33' has a bad prefix length");
    expect(() => parseFilter({ proto: '256' })).toThrow(FilterError);
  });

  it('option acct: bytes= right after packets= in each direction (libnetfilter_conntrack\'s order); off: packets= only', () => {
    const acct = { bytesOut: 1500, bytesIn: 61234567890 };
    expect(formatConntrack([{ ...UDP, ...acct }])).toBe(
      'udp      17 100 src=192.168.1.10 dst=198.51.100.7 sport=5353 dport=53 packets=3 bytes=1500' +
        ' src=198.51.100.7 dst=203.0.113.1 sport=53 dport=5353 packets=2 bytes=61234567890 use=1\n',
    );
    expect(formatConntrack([{ ...UDP, ...acct, replied: false }])).toContain('packets=3 bytes=1500 [UNREPLIED] src=');
    // A redirect's original direction is the WAN side's: its counters are the inbound ones.
    expect(formatConntrack([{ ...FWD, ...acct }])).toBe(
      'tcp      6 100 ESTABLISHED src=198.51.100.9 dst=203.0.113.1 sport=40000 dport=8080 packets=2 bytes=61234567890' +
        ' src=192.168.1.20 dst=198.51.100.9 sport=80 dport=40000 packets=3 bytes=1500 [ASSURED] use=1\n',
    );
    expect(formatConntrack([UDP, FWD])).not.toContain('bytes=');
  });

  it('GRE is shown with conntrack\'s srckey=/dstkey= and the Call IDs', () => {
    expect(formatConntrack([GRE])).toBe(
      'gre      47 100 CALL src=192.168.1.12 dst=198.51.100.60 srckey=0x100 dstkey=0x77 packets=3' +
        ' src=198.51.100.60 dst=203.0.113.1 srckey=0x77 dstkey=0x2001 packets=2 callid=256 alias=8193 peer_callid=119 use=1\n',
    );
    expect(formatConntrack([{ ...GRE, callIdRemote: null }])).toContain('dstkey=0x0 packets=3 [UNREPLIED]');
  });
});
