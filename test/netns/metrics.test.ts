// Prometheus metrics of the real router (vpnmasq run in the lab's router
// namespace): scraped over HTTP from a LAN host and read by a Prometheus
// text-format parser, counters moving with real traffic through the TUNs;
// the metrics file rewritten whole; the WAN host gets nothing; a WAN
// address in metrics_listen is refused by check-config and by run.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import parsePrometheus from 'parse-prometheus-text-format';
import { skipUnless } from '../helpers/prereq.js';
import { CLI, RunningRouter } from '../helpers/vpnmasq.js';
import type { Lab as LabT } from '../../src/lab/lab.js';
import { udpAnswerer } from '../helpers/servers.js';

const skip = skipUnless({ root: true, tun: true, tools: ['ip', 'socat'] });

type Family = { name: string; type: string; metrics: { value?: string; labels?: Record<string, string> }[] };
const value = (fams: Family[], name: string, labels: Record<string, string> = {}) =>
  Number(fams.find((f) => f.name === name)?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))?.value);

/** GET from inside a namespace with Node's fetch: {status, type, body} or {error}. */
const FETCH = `
const [url, ms] = process.argv.slice(1);
fetch(url, { signal: AbortSignal.timeout(Number(ms)) })
  .then(async (r) => console.log(JSON.stringify({ status: r.status, type: r.headers.get('content-type'), body: await r.text() })))
  .catch((e) => console.log(JSON.stringify({ error: String(e.cause?.code ?? e.name ?? e) })));
`;

describe.skipIf(skip)('Prometheus metrics of the running router', () => {
  let lab: LabT;
  let vm: RunningRouter;
  const WANHOST = '203.0.113.2';
  let promFile: string;

  const get = (ns: string, url: string, ms = 3000) =>
    JSON.parse(lab.exec(ns, ['node', '-e', FETCH, url, String(ms)], { timeoutMs: ms + 10_000 }).trim()) as
      { status?: number; type?: string; body?: string; error?: string };
  const scrape = (): Family[] => {
    const r = get(lab.lan[0]!, 'http://192.168.1.1:9753/metrics');
    expect(r.status, JSON.stringify(r)).toBe(200);
    expect(r.type).toBe('text/plain; version=0.0.4; charset=utf-8');
    return parsePrometheus(r.body!) as Family[];
  };

  beforeAll(async () => {
    const { Lab } = await import('../../src/lab/lab.js');
    lab = Lab.create({ id: `me${process.pid % 10000}` });
    vm = new RunningRouter(lab, '', `\toption metrics_listen '192.168.1.1:9753'\n\toption metrics_file '/PROM'\n`);
    promFile = join(vm.dir, 'prom', 'vpnmasq.prom');
    writeFileSync(vm.config, readFileSync(vm.config, 'utf8').replace('/PROM', promFile));
    await vm.start();
    lab.spawn(lab.wan[0]!, udpAnswerer(9999, 'pong'));
    await new Promise((r) => setTimeout(r, 300));
  });

  afterAll(async () => {
    await vm?.stop();
    lab?.destroy();
  });

  it('01 a LAN host scrapes /metrics; every drop reason is listed, tables have their capacity', () => {
    const fams = scrape();
    const drops = fams.find((f) => f.name === 'vpnmasq_drops_total')!;
    expect(drops.type).toBe('COUNTER');
    expect(drops.metrics.length).toBeGreaterThan(40);
    expect(drops.metrics.some((m) => m.value === '0')).toBe(true);
    expect(value(fams, 'vpnmasq_table_capacity', { table: 'flows' })).toBe(65536);
    expect(value(fams, 'vpnmasq_wan_address_info', { address: '203.0.113.1' })).toBe(1);
  });

  it('02 counters move with traffic through the router', async () => {
    const before = scrape();
    for (let i = 0; i < 5; i++) {
      lab.tryExec(lab.lan[1]!, ['sh', '-c', `echo hi | socat -t1 - UDP:${WANHOST}:9999,sourceport=${7000 + i}`], { timeoutMs: 10_000 });
    }
    await new Promise((r) => setTimeout(r, 1100)); // the snapshot is reused for up to a second
    const after = scrape();
    const d = (name: string, labels: Record<string, string> = {}) => value(after, name, labels) - value(before, name, labels);
    expect(d('vpnmasq_forwarded_packets_total', { side: 'lan' })).toBeGreaterThanOrEqual(5);
    expect(d('vpnmasq_forwarded_packets_total', { side: 'wan' })).toBeGreaterThanOrEqual(1);
    // each "hi\n" datagram is 20 + 8 + 3 bytes of IP
    expect(d('vpnmasq_forwarded_bytes_total', { side: 'lan' })).toBeGreaterThanOrEqual(5 * 31);
    expect(d('vpnmasq_flows_created_total')).toBeGreaterThanOrEqual(5);
    expect(value(after, 'vpnmasq_table_entries', { table: 'flows' })).toBeGreaterThanOrEqual(5);
  });

  it('03 the metrics file is written whole and rewritten', async () => {
    for (let i = 0; i < 100 && !existsSync(promFile); i++) await new Promise((r) => setTimeout(r, 100));
    const first = statSync(promFile).mtimeMs;
    const fams = parsePrometheus(readFileSync(promFile, 'utf8')) as Family[];
    expect(value(fams, 'vpnmasq_table_capacity', { table: 'esp' })).toBeGreaterThan(0);
    for (let i = 0; i < 120 && statSync(promFile).mtimeMs === first; i++) await new Promise((r) => setTimeout(r, 100));
    expect(statSync(promFile).mtimeMs).toBeGreaterThan(first);
  });

  it('04 the WAN host gets nothing, neither at the WAN address nor at the LAN address', async () => {
    const before = value(scrape(), 'vpnmasq_drops_total', { reason: 'wan_to_lan' });
    lab.exec(lab.wan[0]!, ['ip', 'route', 'replace', '192.168.1.0/24', 'via', '203.0.113.1']);
    const viaWan = get(lab.wan[0]!, 'http://203.0.113.1:9753/metrics', 2000);
    const viaLan = get(lab.wan[0]!, 'http://192.168.1.1:9753/metrics', 2000);
    expect(viaWan.status).toBeUndefined();
    expect(viaWan.error).toBeTruthy();
    expect(viaLan.status).toBeUndefined();
    expect(viaLan.error).toBeTruthy();
    await new Promise((r) => setTimeout(r, 1100));
    expect(value(scrape(), 'vpnmasq_drops_total', { reason: 'wan_to_lan' })).toBeGreaterThan(before);
  });

  it('05 only GET is answered', () => {
    const r = lab.exec(lab.lan[0]!, ['node', '-e',
      "fetch('http://192.168.1.1:9753/metrics',{method:'POST',body:'x'}).then(r=>console.log(r.status, r.headers.get('allow')))"]);
    expect(r.trim()).toBe('405 GET');
  });

  it('06 a WAN address as metrics_listen is refused by check-config and by run, with the line', () => {
    const bad = join(vm.dir, 'bad');
    writeFileSync(bad, `config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n\toption metrics_listen '203.0.113.1:9753'\n` +
      `\toption control_socket '${join(vm.dir, 'bad.sock')}'\n\toption tun_inside 'tin9'\n\toption tun_outside 'tout9'\n\toption enabled '1'\n`);
    const check = lab.tryExec(lab.router, ['node', CLI, 'check-config', '--config', bad]);
    expect(check.ok).toBe(false);
    expect(check.stderr.trim()).toBe(`vpnmasq: ${bad}:4: option metrics_listen: 203.0.113.1 is an address of the WAN device wan; it must never be reachable from the WAN`);
    const run = lab.tryExec(lab.router, ['node', CLI, 'run', '--config', bad]);
    expect(run.ok).toBe(false);
    expect(run.stderr).toContain(`${bad}:4: option metrics_listen: 203.0.113.1 is an address of the WAN device wan`);
    expect(lab.tryExec(lab.router, ['ip', 'link', 'show', 'tin9']).ok).toBe(false); // refused before anything was made
  });
  it('08 the state snapshot: written since start (its time and size), not restored on a fresh start', async () => {
    // the snapshot is written every second (snapshot_interval 1), the scrape reused for up to one
    let fams = scrape();
    for (let i = 0; i < 30 && !fams.some((f) => f.name === 'vpnmasq_snapshot_last_write_timestamp_seconds'); i++) {
      await new Promise((r) => setTimeout(r, 500));
      fams = scrape();
    }
    const last = value(fams, 'vpnmasq_snapshot_last_write_timestamp_seconds');
    expect(last).toBeGreaterThanOrEqual(value(fams, 'vpnmasq_start_time_seconds'));
    expect(value(fams, 'vpnmasq_snapshot_bytes')).toBeGreaterThan(128); // a header and the tables
    expect(value(fams, 'vpnmasq_snapshot_restored')).toBe(0);
  });

  it('07 a reload and a new WAN address are counted', async () => {
    const before = scrape();
    expect(vm.cli('reload').ok).toBe(true);
    lab.setWanAddress('203.0.113.7');
    // the WAN watch polls every second; the snapshot is reused for up to one
    let after = before;
    for (let i = 0; i < 30 && value(after, 'vpnmasq_wan_address_changes_total') === value(before, 'vpnmasq_wan_address_changes_total'); i++) {
      await new Promise((r) => setTimeout(r, 500));
      after = scrape();
    }
    // the lab flushes the old address before it adds the new one: the watch may see the loss as a change too
    expect(value(after, 'vpnmasq_wan_address_changes_total') - value(before, 'vpnmasq_wan_address_changes_total')).toBeGreaterThanOrEqual(1);
    expect(value(after, 'vpnmasq_wan_address_info', { address: '203.0.113.7' })).toBe(1);
    expect(value(after, 'vpnmasq_reloads_total', { result: 'ok' }) - value(before, 'vpnmasq_reloads_total', { result: 'ok' })).toBe(1);
  });
});
