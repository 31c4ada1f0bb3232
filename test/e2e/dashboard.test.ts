// The dashboard (web_listen) in a real browser: headless Chromium (Debian's
// chromium, driven by playwright-core) inside a LAN namespace loads the page
// from the running router, sees the chart update while UDP flows through the
// NAT, finds an ESP association (raw ESP from a LAN host, the server's answer
// with its own SPI: the SPI pair, ESTABLISHED) in the table, filters the flow
// table, reports no Content-Security-Policy violation; the same browser in
// the WAN namespace gets nothing. The screenshot it takes is the README's
// docs/dashboard.png (set DASHBOARD_PNG to keep it).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { skipUnless } from '../helpers/prereq.js';
import { RunningRouter } from '../helpers/vpnmasq.js';
import { sendEsp, sendIp } from './peers/crafted.js';
import { skipUnlessScapy } from './peers/esp.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { udpAnswerer } from '../helpers/servers.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'socat', 'chromium'] }) || skipUnlessScapy();
const BROWSER = resolve(__dirname, 'peers/browser.mjs');
const URL_LAN = 'http://192.168.1.1:8080/';
const SPI_OUT = 0x1234abcd;
const SPI_IN = 0x5678ef01;
const ICOOKIE = 'c0ffee0011223344';
/** UDP 500 → 500 (checksum 0: none) carrying an IKE header: initiator cookie, no responder cookie yet, Identity Protection. */
const IKE_HEX = '01f401f400240000' + ICOOKIE + '0000000000000000' + '01100200' + '00000000' + '0000001c';

interface BrowserResult {
  loaded: boolean; error?: string; status?: number; csp?: string; samples: number; lastOut: number; lastIn: number;
  esp: string[][]; ike: string[][]; drops: string[][]; tables: string[][]; flows: string[][]; filteredProtos?: string[]; wan: string;
  injected: number; cspViolations: string[]; consoleErrors: string[];
  bitsSamples: number; lastOutBits: number; bitsText: string;
  title?: string; images?: number; hostileShownAsText?: string; wanText?: string;
}

describe.skipIf(skip)('dashboard in a real browser', () => {
  let lab: LabT;
  let vm: RunningRouter;

  const browse = (ns: string, o: Record<string, unknown>): BrowserResult => {
    const out = lab.exec(ns, ['node', BROWSER, JSON.stringify(o)], { timeoutMs: 90_000, env: { ...process.env, HOME: vm.dir } });
    return JSON.parse(out.trim().split('\n').pop()!) as BrowserResult;
  };

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `db${process.pid % 10000}` });
    vm = new RunningRouter(lab, '', `\toption web_listen '192.168.1.1:8080'\n`);
    await vm.start();
    // WAN echo server and a steady UDP stream from the second LAN host (50 packets/s).
    lab.spawn(lab.wan[0]!, udpAnswerer(9999, 'pong'));
    lab.spawn(lab.lan[1]!, ['node', '-e',
      "const s=require('dgram').createSocket('udp4');s.bind(7777,()=>setInterval(()=>s.send('x',9999,'203.0.113.2'),20))"]);
    // Raw ESP from the first LAN host, then the server's own SPI back: an associated pair.
    sendEsp(lab, lab.lan[0]!, '203.0.113.2', { spi: SPI_OUT, count: 2 });
    sendEsp(lab, lab.wan[0]!, '203.0.113.1', { spi: SPI_IN, count: 1 });
    // An IKE exchange starting from port 500 (the cookie is what the table shows).
    sendIp(lab, lab.lan[0]!, '203.0.113.2', 17, IKE_HEX);
  }, 120_000);

  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  });

  it('01 the ESP pair is in the router (conntrack)', () => {
    const ct = vm.cli('conntrack').stdout;
    expect(ct).toMatch(/0x1234abcd/);
    expect(ct).toMatch(/0x5678ef01/);
    expect(ct).toContain(ICOOKIE);
  });

  it('02 from a LAN host: the chart updates with the traffic, the ESP association and the tables are shown', () => {
    const shot = join(vm.dir, 'dashboard.png');
    const r = browse(lab.lan[0]!, { url: URL_LAN, screenshot: shot, expectEsp: '0x5678ef01', minSamples: 12, filterProto: 'udp', timeoutMs: 45_000 });
    expect(r.error).toBeUndefined();
    expect(r.loaded).toBe(true);
    expect(r.status).toBe(200);
    expect(r.csp).toMatch(/^default-src 'none'; script-src 'self'/);
    expect(r.cspViolations).toEqual([]);
    expect(r.consoleErrors, JSON.stringify(r.consoleErrors)).toEqual([]);
    expect(r.samples).toBeGreaterThanOrEqual(12);
    expect(r.lastOut).toBeGreaterThan(0);
    // bits/s from the engine's byte counters: every IPv4 packet has at least its 20-byte header
    expect(r.bitsSamples).toBe(r.samples);
    expect(r.lastOutBits).toBeGreaterThanOrEqual(8 * 20 * r.lastOut * 0.999);
    expect(r.bitsText).toMatch(/^\d+(\.\d)? (bit|kbit)\/s$/);
    expect(r.wan).toBe('203.0.113.1');
    const row = r.esp.find((c) => c.includes('0x1234abcd'));
    expect(row).toBeDefined();
    expect(row!.slice(0, 5)).toEqual(['192.168.1.10', '203.0.113.2', '0x1234abcd', '0x5678ef01', 'ESTABLISHED']);
    const ike = r.ike.find((c) => c.includes(ICOOKIE));
    expect(ike?.slice(0, 4)).toEqual(['192.168.1.10', '203.0.113.2:500', ICOOKIE, '–']);
    expect(r.tables.map((t) => t[0])).toEqual(['flows', 'bindings', 'esp', 'ike', 'pptp', 'fragments']);
    expect(r.tables.find((t) => t[0] === 'esp')![2]).toBe('1');
    expect(r.flows.some((f) => f[0] === 'udp' && f[2] === '192.168.1.11:7777' && f[3] === '203.0.113.2:9999')).toBe(true);
    expect(r.filteredProtos).toEqual(['udp']);
    expect(r.injected).toBe(0);
    expect(statSync(shot).size).toBeGreaterThan(10_000);
    if (process.env.DASHBOARD_PNG) copyFileSync(shot, resolve(process.env.DASHBOARD_PNG));
  });

  it('04 hostile text in the data (a name that is markup) is shown as text: nothing is parsed, nothing runs', () => {
    const hostile = `<img src=x onerror="document.title='pwned'"><script>document.title='pwned'</script>`;
    const r = browse(lab.lan[0]!, { url: URL_LAN, hostile, timeoutMs: 30_000 });
    expect(r.error).toBeUndefined();
    expect(r.title).toBe('vpnmasq');
    expect(r.images).toBe(0);
    expect(r.injected).toBe(0);
    expect(r.hostileShownAsText).toBe(hostile);
    expect(r.wanText).toBe(hostile);
    expect(r.cspViolations).toEqual([]);
  });

  it('03 from the WAN: the same browser gets nothing, at the WAN address or the LAN address', () => {
    lab.exec(lab.wan[0]!, ['ip', 'route', 'replace', '192.168.1.0/24', 'via', '203.0.113.1']);
    for (const url of ['http://203.0.113.1:8080/', URL_LAN]) {
      const r = browse(lab.wan[0]!, { url, timeoutMs: 8_000 });
      expect(r.loaded, url).toBe(false);
      expect(r.error, url).toMatch(/net::ERR_|Timeout/);
    }
  });
});
