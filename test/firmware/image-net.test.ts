// The image's network set-up: /usr/sbin/vpnmasq-net reading the UCI file
// /etc/config/vpnmasq-net and the kernel command line, under dash and
// busybox sh, with stand-ins for ip and udhcpc (the QEMU tests boot it).
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { ROOT, SHELLS, run, tmpDirs, writeExec } from '../helpers/shell.js';

const NET = join(ROOT, 'firmware/image/rootfs/usr/sbin/vpnmasq-net');
const SHIPPED = join(ROOT, 'firmware/image/rootfs/etc/config/vpnmasq-net');
const tmp = tmpDirs();

const STATIC_DEFAULTS = [
  "LAN_IF='eth0'", "LAN_DEV='br-lan'", "LAN_ADDR='192.168.1.1/24'",
  "WAN_IF='eth1'", "WAN_DEV='wan'", "WAN_PROTO='static'", "WAN_ADDR='203.0.113.1/24'", "WAN_GW='203.0.113.2'",
];

describe.skipIf(skipUnless({ tools: ['busybox'] }))('/usr/sbin/vpnmasq-net (the image\'s network from /etc/config/vpnmasq-net)', () => {
  let dir: string;
  let bin: string;
  beforeAll(() => {
    dir = tmp('net');
    bin = join(dir, 'bin');
    writeExec(join(bin, 'ip'), 'echo "ip $*" >> "$FAKE_LOG"\n');
    writeExec(join(bin, 'udhcpc'), 'echo "udhcpc $*" >> "$FAKE_LOG"\necho "udhcpc: bound (stand-in)"\n');
  });

  let n = 0;
  /** Runs vpnmasq-net CMD with this UCI text (null: the shipped file) and kernel command line. */
  function net(shell: string[], cmd: string, uci: string | null, cmdline = 'console=ttyS0 quiet') {
    const id = ++n;
    const config = uci === null ? SHIPPED : join(dir, `config-${id}`);
    if (uci !== null) writeFileSync(config, uci);
    writeFileSync(join(dir, `cmdline-${id}`), `${cmdline}\n`);
    const log = join(dir, `calls-${id}`);
    writeFileSync(log, '');
    const r = run(shell[0], [...shell.slice(1), NET, cmd], {
      env: { PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`, VPNMASQ_NET_CONFIG: config, VPNMASQ_CMDLINE: join(dir, `cmdline-${id}`), FAKE_LOG: log },
    });
    const lines = (s: string) => s.split('\n').filter(Boolean);
    return { status: r.status, out: lines(r.stdout), err: lines(r.stderr).map((l) => l.replace(config, 'FILE')), calls: lines(readFileSync(log, 'utf8')) };
  }
  /** The shipped file with its wan_proto line written as an OpenWrt user would (uci set …; uci commit). */
  const shippedWith = (line: string) => {
    const text = readFileSync(SHIPPED, 'utf8');
    expect(text).toMatch(/^\toption wan_proto 'static'/m);
    return text.replace(/^\toption wan_proto 'static'.*$/m, line);
  };

  it("ships UCI syntax: one config network 'main' section, static WAN by default", () => {
    const text = readFileSync(SHIPPED, 'utf8');
    expect(text.match(/^config .*/gm)).toEqual(["config network 'main'"]);
    expect(text).toMatch(/^\toption wan_proto 'static'/m);
  });

  describe.each(SHELLS)('under %s', (_name, shell) => {
    it('the shipped file: static WAN with its address and gateway, nothing refused', () => {
      const r = net(shell, 'show', null);
      expect(r.err).toEqual([]);
      expect(r.out).toEqual(STATIC_DEFAULTS);
    });

    it("option wan_proto 'dhcp' selects DHCP (any UCI quoting, a trailing comment)", () => {
      for (const line of ["\toption wan_proto 'dhcp'", '\toption wan_proto "dhcp"', '\toption wan_proto dhcp\t# by the ISP']) {
        const r = net(shell, 'show', shippedWith(line));
        expect(r.err, line).toEqual([]);
        expect(r.out, line).toContain("WAN_PROTO='dhcp'");
      }
    });

    it('vpnmasq.* on the kernel command line overrides each option', () => {
      const r = net(shell, 'show', shippedWith("\toption wan_proto 'dhcp'"),
        'console=ttyS0 vpnmasq.lan=10.1.0.1/16 vpnmasq.wan=198.51.100.7/24 vpnmasq.gw=198.51.100.1 vpnmasq.wan_proto=static ' +
        'vpnmasq.lan_if=52:54:00:76:6d:01 vpnmasq.wan_if=52:54:00:76:6d:02');
      expect(r.err).toEqual([]);
      expect(r.out).toEqual([
        "LAN_IF='52:54:00:76:6d:01'", "LAN_DEV='br-lan'", "LAN_ADDR='10.1.0.1/16'",
        "WAN_IF='52:54:00:76:6d:02'", "WAN_DEV='wan'", "WAN_PROTO='static'", "WAN_ADDR='198.51.100.7/24'", "WAN_GW='198.51.100.1'",
      ]);
      expect(net(shell, 'show', null, 'vpnmasq.wan_proto=dhcp').out).toContain("WAN_PROTO='dhcp'");
    });

    it('a line it cannot apply exactly is refused with FILE:LINE and the default stays', () => {
      const r = net(shell, 'show', [
        "config network 'main'",
        "\toption wan_proto 'pppoe'",
        "\toption wan_addr '203.0.113.300/24'",
        "\toption wan_gateway 'router'",
        "\toption wan_mtu '1400'",
        '\tlist dns 9.9.9.9',
        "\toption lan_addr 'a b'",
        "config interface 'wan'",
        "\toption proto 'dhcp'",
        '',
      ].join('\n'), 'vpnmasq.wan_proto=ppp');
      expect(r.err).toEqual([
        "vpnmasq-net: FILE:2: option wan_proto: 'pppoe' is not 'static' or 'dhcp'",
        "vpnmasq-net: FILE:3: option wan_addr: '203.0.113.300/24' is not an IPv4 address/prefix such as 192.168.1.1/24",
        "vpnmasq-net: FILE:4: option wan_gateway: 'router' is not an IPv4 address (or '' for no default route)",
        'vpnmasq-net: FILE:5: option wan_mtu is not an option of the image\'s network (lan_if, lan_device, lan_addr, wan_if, wan_device, wan_proto, wan_addr, wan_gateway)',
        "vpnmasq-net: FILE:6: 'list' lines are not read here (config and option only)",
        'vpnmasq-net: FILE:7: too many words (a value with spaces?)',
        "vpnmasq-net: FILE:8: only the section config network 'main' is read here (this section's options are not)",
        "vpnmasq-net: kernel command line: vpnmasq.wan_proto=ppp: option wan_proto: 'ppp' is not 'static' or 'dhcp'",
      ]);
      expect(r.out).toEqual(STATIC_DEFAULTS);
    });

    it('attacker: values that would run commands where rcS evaluates the settings are refused', () => {
      const r = net(shell, 'show', [
        "config network 'main'",
        "\toption lan_device 'x$(touch /tmp/pwned)'",
        "\toption wan_device \"w';reboot;'\"",
        "\toption wan_if `id`",
        "\toption wan_proto 'dhcp\\'",
        '',
      ].join('\n'), "vpnmasq.gw=1.2.3.4';reboot;' vpnmasq.lan_if=$(id) vpnmasq.wan_if=/*");
      expect(r.err).toHaveLength(7);
      expect(r.err.at(-1)).toBe("vpnmasq-net: kernel command line: vpnmasq.wan_if=/*: option wan_if: '/*' is not an interface name or a MAC address");
      expect(r.out).toEqual(STATIC_DEFAULTS);
    });

    it("vpnmasq-net wan with wan_proto 'dhcp': busybox udhcpc on the WAN device with the image's script", () => {
      const r = net(shell, 'wan', [
        "config network 'main'", "\toption lan_if 'lo'", "\toption wan_if 'lo'", "\toption wan_device 'vqnet9'", "\toption wan_proto 'dhcp'", '',
      ].join('\n'));
      expect(r.err).toEqual([]);
      expect(r.status).toBe(0);
      expect(r.calls[0]).toBe('ip link set lo name vqnet9');
      expect(r.calls[1]).toBe('ip link set vqnet9 up');
      expect(r.calls[2]).toMatch(/^udhcpc -i vqnet9 -b -t 5 -T 2 -A 5 -s \/usr\/share\/udhcpc\/default\.script -p \/run\/udhcpc-vqnet9\.pid -x hostname:\S+$/);
      expect(r.calls).toHaveLength(3);
      expect(r.out).toEqual(['udhcpc: bound (stand-in)', 'vpnmasq-net: wan: vqnet9 (lo) dhcp']);
    });

    it('vpnmasq-net wan, static: the address and the default route, no udhcpc', () => {
      const r = net(shell, 'wan', [
        "config network 'main'", "\toption lan_if 'lo'", "\toption wan_if 'lo'", "\toption wan_device 'vqnet9'", '',
      ].join('\n'));
      expect(r.err).toEqual([]);
      expect(r.calls).toEqual([
        'ip link set lo name vqnet9', 'ip link set vqnet9 up', 'ip -4 addr flush dev vqnet9',
        'ip addr add 203.0.113.1/24 dev vqnet9', 'ip route replace default via 203.0.113.2 dev vqnet9',
      ]);
      expect(r.out).toEqual(['vpnmasq-net: wan: vqnet9 (lo) 203.0.113.1/24 via 203.0.113.2']);
    });

    it('an unknown command prints the usage and exits 2', () => {
      const r = net(shell, 'restart', null);
      expect(r.status).toBe(2);
      expect(r.err.join('\n')).toContain('vpnmasq-net wan');
    });
  });
});
