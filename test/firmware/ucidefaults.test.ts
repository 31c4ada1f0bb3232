// /etc/uci-defaults/90-vpnmasq-firewall (fw4 and vpnmasq side by side), run
// under dash and busybox sh against a stand-in uci (test/helpers/bin/uci)
// on a copy of OpenWrt's default /etc/config/firewall, checking the
// resulting configuration.
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { ROOT, SHELLS, run, tmpDirs } from '../helpers/shell.js';
import { parseUci } from '../../src/config/uci.js';

const SCRIPT = join(ROOT, 'firmware/files/etc/uci-defaults/90-vpnmasq-firewall');
const STANDIN = join(ROOT, 'test/helpers/bin');
const tmp = tmpDirs();

// OpenWrt 23.05's package/network/config/firewall4 default, abridged
const FIREWALL = `
config defaults
	option syn_flood	1
	option input		REJECT
	option output		ACCEPT
	option forward		REJECT

config zone
	option name		lan
	list   network		'lan'
	option input		ACCEPT
	option output		ACCEPT
	option forward		ACCEPT

config zone
	option name		wan
	list   network		'wan'
	list   network		'wan6'
	option input		REJECT
	option output		ACCEPT
	option forward		REJECT
	option masq		1
	option mtu_fix		1

config forwarding
	option src		lan
	option dest		wan

config rule
	option name		Allow-DHCP-Renew
	option src		wan
	option proto		udp
	option dest_port	68
	option target		ACCEPT
	option family		ipv4
`;

const vpnmasqConf = (extra = '') => `config vpnmasq 'main'
	option lan_device 'br-lan'
	option wan_device 'wan'
${extra}`;

interface Sec { type: string; name: string | null; opts: Record<string, string | string[]> }

function sections(dir: string): Sec[] {
  return parseUci(readFileSync(join(dir, 'firewall'), 'utf8'), 'firewall').sections.map((s) => ({
    type: s.type, name: s.name,
    opts: Object.fromEntries(s.options.map((o) => [o.name, o.list ? o.values : o.values[0]!])),
  }));
}

describe.skipIf(skipUnless({ tools: ['busybox'] }))('/etc/uci-defaults/90-vpnmasq-firewall against a stand-in uci', () => {
  beforeAll(() => {
    // the stand-in reads the built UCI parser
    expect(run('node', [join(STANDIN, 'uci'), '-c', '/nonexistent', '-q', 'get', 'x.y']).status).toBe(1);
  });

  function apply(shell: string[], vpnmasq: string, firewall = FIREWALL): { dir: string; status: number | null; stderr: string } {
    const dir = tmp('ucidef');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'firewall'), firewall);
    writeFileSync(join(dir, 'vpnmasq'), vpnmasq);
    const r = run(shell[0], [...shell.slice(1), SCRIPT], {
      env: { PATH: `${STANDIN}:${process.env.PATH}`, UCI_CONFIG_DIR: dir },
    });
    return { dir, status: r.status, stderr: r.stderr };
  }

  describe.each(SHELLS)('under %s', (_name, shell) => {
    it('disabled vpnmasq (the package as installed): a vpnmasq zone with both TUNs and four forwardings; wan keeps masq', () => {
      const { dir, status, stderr } = apply(shell, vpnmasqConf("\toption enabled '0'\n"));
      expect(stderr).toBe('');
      expect(status).toBe(0);
      const s = sections(dir);
      expect(s.find((x) => x.name === 'vpnmasq')).toEqual({
        type: 'zone', name: 'vpnmasq',
        opts: { name: 'vpnmasq', device: ['tin', 'tout'], input: 'ACCEPT', output: 'ACCEPT', forward: 'ACCEPT' },
      });
      const fwd = s.filter((x) => x.type === 'forwarding').map((x) => `${x.opts.src}->${x.opts.dest}`);
      expect(fwd).toEqual(['lan->wan', 'lan->vpnmasq', 'vpnmasq->lan', 'wan->vpnmasq', 'vpnmasq->wan']);
      expect(s.find((x) => x.opts.name === 'wan')!.opts.masq).toBe('1');
      // everything fw4 had is still there
      expect(s.filter((x) => x.type === 'rule').map((x) => x.opts.name)).toEqual(['Allow-DHCP-Renew']);
      expect(s.find((x) => x.type === 'defaults')!.opts.forward).toBe('REJECT');
    });

    it("enabled vpnmasq (option enabled '1'): the wan zone's masq is switched off, lan's untouched", () => {
      const { dir, status } = apply(shell, vpnmasqConf("\toption enabled '1'\n"));
      expect(status).toBe(0);
      const s = sections(dir);
      expect(s.find((x) => x.opts.name === 'wan')!.opts.masq).toBe('0');
      expect(s.find((x) => x.opts.name === 'lan')!.opts.masq).toBeUndefined();
    });

    it('uses the configured TUN names', () => {
      const { dir } = apply(shell, vpnmasqConf("\toption tun_inside 'vin'\n\toption tun_outside 'vout'\n"));
      expect(sections(dir).find((x) => x.name === 'vpnmasq')!.opts.device).toEqual(['vin', 'vout']);
    });

    it('running it again changes nothing (no second zone, no duplicate devices or forwardings)', () => {
      const { dir } = apply(shell, vpnmasqConf("\toption enabled '1'\n"));
      const once = readFileSync(join(dir, 'firewall'), 'utf8');
      const r = run(shell[0], [...shell.slice(1), SCRIPT], { env: { PATH: `${STANDIN}:${process.env.PATH}`, UCI_CONFIG_DIR: dir } });
      expect(r.status).toBe(0);
      expect(readFileSync(join(dir, 'firewall'), 'utf8')).toBe(once);
      expect(sections(dir).filter((x) => x.type === 'zone').map((x) => x.opts.name)).toEqual(['lan', 'wan', 'vpnmasq']);
    });
  });
});
