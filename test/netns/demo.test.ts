// `sudo npm start` (vpnmasq demo, one-shot): besides ping, UDP and TCP it
// shows the VPN part: both LAN hosts get their ESP answered by the same WAN
// server at once (scapy SAs, real encryption), IKE leaves from port 500 for
// both (ike-scan), and conntrack lists both SPI pairs and both cookies with
// sport=500; one line says what the kernel's NAT would do.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { skipUnless } from '../helpers/prereq.js';
import { skipUnlessScapy } from '../e2e/peers/esp.js';
import { CLI } from '../helpers/vpnmasq.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'ping', 'socat', 'ss', 'ike-scan'] }) || skipUnlessScapy();

describe.skipIf(skip)('the demo', () => {
  it('shows two hosts running ESP and IKE through one address, and the conntrack view of it', () => {
    const r = spawnSync(process.execPath, [CLI, 'demo'], {
      encoding: 'utf8', timeout: 170_000, env: { ...process.env, VPNMASQ_DEMO_ONESHOT: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = r.stdout + r.stderr;
    expect(out, out).toContain('demonstration: all steps worked');
    // Its state lives beside its config in its own temporary directory (never the router's
    // /run/vpnmasq, which other tests' daemons share for their routing state), removed at the end.
    const state = /option snapshot_dir '(\/[^']+)\/state'/.exec(out);
    expect(state, 'the demo config names no snapshot_dir of its own').not.toBeNull();
    expect(out).toContain(`config ${state![1]}/vpnmasq.conf:`);
    expect(existsSync(state![1]!)).toBe(false);
    expect(r.status).toBe(0);
    expect(out).toMatch(/lan1 \(192\.168\.1\.10\): [3-9] encrypted replies/);
    expect(out).toMatch(/lan2 \(192\.168\.1\.11\): [3-9] encrypted replies/);
    expect(out).toMatch(/Under the kernel's NAT the second host would get nothing/);
    expect(out.match(/the WAN host heard IKE from 203\.0\.113\.1:500$/gm)).toHaveLength(2);
    // conntrack: an established SPI pair per host, an IKE entry with its cookie and port 500 per host
    for (const host of ['192.168.1.10', '192.168.1.11']) {
      expect(out).toMatch(new RegExp(`esp +50 \\d+ ESTABLISHED src=${host.replace(/\./g, '\\.')} dst=203\\.0\\.113\\.2 spi=0x[0-9a-f]{8} .* spi=0x[0-9a-f]{8}`));
      expect(out).toMatch(new RegExp(`IKE src=${host.replace(/\./g, '\\.')} dst=203\\.0\\.113\\.2 sport=500 dport=500 icookie=c0de000[12]00000000 .* sport=500`));
    }
  }, 180_000);
});
