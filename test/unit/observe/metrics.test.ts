// The Prometheus exposition (src/observe/metrics.ts) of a real engine after
// real batches (FakeTun → BatchLoop → engine), read back by an independent
// parser of the text format (parse-prometheus-text-format, prom2json's
// output shape), not by a regex.
import { describe, it, expect } from 'vitest';
import parsePrometheus from 'parse-prometheus-text-format';
import { BatchLoop } from '../../../src/datapath/loop.js';
import { FakeTun } from '../../../src/tun/fake.js';
import { Engine, nowMs } from '../../../src/engine/engine.js';
import { applyConfig } from '../../../src/engine/apply.js';
import { DROP_REASONS, SIDE_INSIDE, SIDE_OUTSIDE, ipToRaw } from '../../../src/engine/abi.js';
import { parseConfig } from '../../../src/config/index.js';
import { Observer } from '../../../src/observe/index.js';
import { createLogger } from '../../../src/log.js';
import { ACK, SYN, esp, parse, tcp, udp } from '../../helpers/packet.js';
import { TUN_F } from '../../../src/tun/tun.js';
import { FastPath, type FastPathKernel } from '../../../src/datapath/fastpath.js';

const WAN = '203.0.113.1';
const SERVER = '198.51.100.7';

interface Family { name: string; help: string; type: string; metrics: { value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string; sum?: string }[] }

function setup() {
  const cfg = parseConfig("config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n\tlist lan_subnet '192.168.1.0/24'\n", 'm');
  const engine = Engine.load({ maxFlows: 2048 });
  applyConfig(engine, cfg, [...cfg.main.lanSubnets]);
  engine.x.setWanAddress(ipToRaw(WAN), nowMs());
  const inside = new FakeTun('tin');
  const outside = new FakeTun('tout');
  const loop = new BatchLoop(engine, inside, outside);
  const obs = new Observer({ cfg, engine, log: createLogger('fatal'), lanSubnets: ['192.168.1.0/24'], loop: () => loop });
  obs.noteWanAddress(WAN);
  return { engine, inside, outside, loop, obs };
}

function scrape(obs: Observer): Map<string, Family> {
  const fams = parsePrometheus(obs.metrics()) as Family[];
  return new Map(fams.map((f) => [f.name, f]));
}
const value = (f: Family | undefined, labels: Record<string, string> = {}) =>
  Number(f?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))?.value);

describe('Prometheus metrics', () => {
  it('count packets per side, drops by reason (zeros included), tables, VPN sessions and batch sizes', () => {
    const { inside, outside, loop, obs } = setup();
    const before = scrape(obs);
    // every drop reason is there at zero before anything happened
    const drops0 = before.get('vpnmasq_drops_total')!;
    expect(drops0.type).toBe('COUNTER');
    expect(drops0.metrics.map((m) => m.labels!.reason).sort()).toEqual(DROP_REASONS.slice(1).slice().sort());
    expect(drops0.metrics.every((m) => Number(m.value) === 0)).toBe(true);

    for (let i = 0; i < 5; i++) inside.inject(udp('192.168.1.10', 5000 + i, SERVER, 53));
    inside.inject(udp('192.168.1.12', 5000, SERVER, 53).subarray(0, 10)); // truncated
    inside.inject(esp('192.168.1.20', SERVER, 0x11112222));                 // opens an outstanding ESP association
    expect(loop.pump(inside, SIDE_INSIDE)).toBe(7);
    const reply = udp(SERVER, 53, WAN, parse(inside.written[0]!).sport);
    outside.inject(reply);
    outside.inject(udp(SERVER, 53, WAN, 1)); // no flow
    expect(loop.pump(outside, SIDE_OUTSIDE)).toBe(2);

    // snapshots are reused for a second; a new Observer tally forces nothing, so wait it out
    const m = scrapeFresh(obs);
    expect(value(m.get('vpnmasq_received_packets_total'), { side: 'lan' })).toBe(7);
    expect(value(m.get('vpnmasq_forwarded_packets_total'), { side: 'lan' })).toBe(6);
    expect(value(m.get('vpnmasq_received_packets_total'), { side: 'wan' })).toBe(2);
    expect(value(m.get('vpnmasq_forwarded_packets_total'), { side: 'wan' })).toBe(1);
    // bytes: 5 UDP packets of 32 bytes, a 10-byte truncated one, an ESP packet; the reply and the stray 32 each
    const espLen = esp('192.168.1.20', SERVER, 0x11112222).length;
    expect(value(m.get('vpnmasq_received_bytes_total'), { side: 'lan' })).toBe(5 * 32 + 10 + espLen);
    expect(value(m.get('vpnmasq_forwarded_bytes_total'), { side: 'lan' })).toBe(5 * 32 + espLen);
    expect(value(m.get('vpnmasq_received_bytes_total'), { side: 'wan' })).toBe(2 * reply.length);
    expect(value(m.get('vpnmasq_forwarded_bytes_total'), { side: 'wan' })).toBe(reply.length);
    expect(value(m.get('vpnmasq_drops_total'), { reason: 'truncated' })).toBe(1);
    expect(value(m.get('vpnmasq_drops_total'), { reason: 'no_flow' })).toBe(1);
    expect(value(m.get('vpnmasq_drops_total'), { reason: 'esp_spi_zero' })).toBe(0);
    expect(value(m.get('vpnmasq_table_entries'), { table: 'flows' })).toBe(5);
    expect(value(m.get('vpnmasq_table_capacity'), { table: 'flows' })).toBe(2048);
    for (const t of ['flows', 'bindings', 'esp', 'ike', 'pptp', 'fragments']) {
      expect(value(m.get('vpnmasq_table_capacity'), { table: t }), t).toBeGreaterThan(0);
    }
    expect(value(m.get('vpnmasq_table_entries'), { table: 'esp' })).toBe(1);
    expect(value(m.get('vpnmasq_vpn_sessions'), { protocol: 'esp', state: 'outstanding' })).toBe(1);
    expect(value(m.get('vpnmasq_vpn_sessions'), { protocol: 'esp', state: 'established' })).toBe(0);
    expect(value(m.get('vpnmasq_flows_created_total'))).toBe(5);
    expect(value(m.get('vpnmasq_wan_address_info'), { address: WAN })).toBe(1);

    // parse-prometheus-text-format folds the series of a labelled histogram
    // into one and drops _sum/_count that carry labels, so it is given one
    // side's series at a time, that label taken off (still the parser reading
    // the buckets, sum and count, not a regex).
    const oneSide = (side: string) => {
      const text = obs.metrics().split('\n')
        .filter((l) => !l.startsWith('vpnmasq_batch_packets') || l.includes(`side="${side}"`))
        .map((l) => l.replace(`{side="${side}"}`, '').replace(`side="${side}",`, '')).join('\n');
      const f = (parsePrometheus(text) as Family[]).find((x) => x.name === 'vpnmasq_batch_packets')!;
      expect(f.type).toBe('HISTOGRAM');
      return f.metrics[0]!;
    };
    const lan = oneSide('lan');
    expect(Number(lan.count)).toBe(1);          // one batch of 7
    expect(Number(lan.sum)).toBe(7);
    expect(Number(lan.buckets!['4'])).toBe(0);
    expect(Number(lan.buckets!['8'])).toBe(1);
    expect(Number(lan.buckets!['+Inf'])).toBe(1);
    const wan = oneSide('wan');
    expect(Number(wan.count)).toBe(1);          // one batch of 2
    expect(Number(wan.sum)).toBe(2);
    expect(Number(wan.buckets!['1'])).toBe(0);
    expect(Number(wan.buckets!['2'])).toBe(1);
  });

  it('expose the state snapshot: last write time, size, restored or not; nothing of it without a snapshot', () => {
    const { engine, loop } = setup();
    const cfg = parseConfig("config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n", 'm');
    const bare = new Observer({ cfg, engine, log: createLogger('fatal'), lanSubnets: ['192.168.1.0/24'], loop: () => loop });
    const none = scrape(bare);
    expect([...none.keys()].filter((n) => n.startsWith('vpnmasq_snapshot_'))).toEqual([]);
    let tally = { lastWriteMs: null as number | null, bytes: 0, restored: true };
    const obs = new Observer({ cfg, engine, log: createLogger('fatal'), lanSubnets: ['192.168.1.0/24'], loop: () => loop, snapshot: () => tally });
    const before = scrape(obs);
    expect(before.has('vpnmasq_snapshot_last_write_timestamp_seconds')).toBe(false); // none written yet
    expect(value(before.get('vpnmasq_snapshot_restored'))).toBe(1);
    expect(before.get('vpnmasq_snapshot_bytes')?.type).toBe('GAUGE');
    tally = { lastWriteMs: 1_764_650_000_500, bytes: 2_621_440, restored: false };
    const after = scrapeFresh(obs);
    expect(value(after.get('vpnmasq_snapshot_last_write_timestamp_seconds'))).toBe(1_764_650_000.5);
    expect(value(after.get('vpnmasq_snapshot_bytes'))).toBe(2_621_440);
    expect(value(after.get('vpnmasq_snapshot_restored'))).toBe(0);
  });

  it('expose TUN offloads: which the kernel took, GSO super-packets and their bytes, partial checksums, queue drops', () => {
    const { engine, loop } = setup();
    const cfg = parseConfig("config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n", 'm');
    const bits = TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6;
    const obs = new Observer({ cfg, engine, log: createLogger('fatal'), lanSubnets: ['192.168.1.0/24'], loop: () => loop, offloadBits: () => bits });
    const before = scrape(obs);
    for (const name of ['vpnmasq_gso_packets_total', 'vpnmasq_gso_bytes_total', 'vpnmasq_csum_partial_packets_total', 'vpnmasq_tun_queue_drops_total',
      'vpnmasq_tun_queue_trims_total', 'vpnmasq_tun_queue_marks_total',
      'vpnmasq_gro_writes_total', 'vpnmasq_gro_datagrams_total']) {
      expect(before.get(name)?.type, name).toBe('COUNTER');
      expect(value(before.get(name)), name).toBe(0);
    }
    const taken = before.get('vpnmasq_tun_offload')!;
    expect(taken.type).toBe('GAUGE');
    expect(Object.fromEntries(taken.metrics.map((m) => [m.labels!.offload, Number(m.value)])))
      .toEqual({ csum: 1, tso4: 1, tso6: 1, uso4: 0, uso6: 0 });

    // One TCP flow, then a 3-segment super-packet with a partial checksum (what a TSO sender hands the TUN).
    engine.setVnet(true);
    const send = (pkt: Uint8Array, h: Record<string, number>) => {
      engine.setPacket(0, pkt);
      engine.setVnetHdr(0, h);
      engine.process(1, SIDE_INSIDE, nowMs());
    };
    send(tcp('192.168.1.10', 40000, SERVER, 443, SYN), {});
    const sp = tcp('192.168.1.10', 40000, SERVER, 443, ACK, Array.from({ length: 3 * 1448 }, (_, i) => i & 0xff));
    send(sp, { flags: 1, gsoType: 1, hdrLen: 40, gsoSize: 1448, csumStart: 20, csumOffset: 16 });
    const m = scrapeFresh(obs);
    expect(value(m.get('vpnmasq_gso_packets_total'))).toBe(1);
    expect(value(m.get('vpnmasq_gso_bytes_total'))).toBe(sp.length);
    expect(value(m.get('vpnmasq_csum_partial_packets_total'))).toBe(1);
    // Option gro: three datagrams of one UDP flow (partial checksums, consecutive IDs) in one batch leave as one write.
    engine.setGro(true);
    for (let k = 0; k < 3; k++) {
      const d = udp('192.168.1.10', 40001, SERVER, 9000, Array(36).fill(k), { id: 10 + k, flags: 2 });
      d[26] = 0; d[27] = 0; // any partial sum will do here
      engine.setPacket(k, d);
      engine.setVnetHdr(k, { flags: 1, csumStart: 20, csumOffset: 6 });
    }
    engine.process(3, SIDE_INSIDE, nowMs());
    engine.setGro(false);
    const g = scrapeFresh(obs);
    expect(value(g.get('vpnmasq_gro_writes_total'))).toBe(1);
    expect(value(g.get('vpnmasq_gro_datagrams_total'))).toBe(3);
    // without an offloadBits source (engine-only benches) every offload reads 0
    const bare = scrape(new Observer({ cfg, engine, log: createLogger('fatal'), lanSubnets: ['192.168.1.0/24'], loop: () => loop }));
    expect(bare.get('vpnmasq_tun_offload')!.metrics.every((x) => Number(x.value) === 0)).toBe(true);
  });

  it('expose the flow fast path: running or not, flows held, hand-overs, the program\'s verdicts; what it forwarded counts as forwarded', () => {
    const { engine, loop, inside, outside } = setup();
    const cfg = parseConfig("config vpnmasq 'main'\n\toption lan_device 'br-lan'\n\toption wan_device 'wan'\n", 'm');
    // The kernel's table in a Map, its counters as the program would have them.
    const table = new Map<string, Buffer>();
    const kernel: FastPathKernel = {
      put: (k, v) => { table.set(k.toString('hex'), Buffer.from(v)); },
      remove: (k) => table.delete(k.toString('hex')),
      // The whole table in one batch (a sync here reads all of it).
      readBatch: (_token, _first, keys, values) => {
        [...table].forEach(([k, v], i) => { keys.write(k, i * 16, 'hex'); v.copy(values, i * 48); });
        return { count: table.size, done: true };
      },
      stats: () => [1000, 3, 7, 2, 0],
      close: () => {},
    };
    const fp = new FastPath(engine, kernel, 3, 4, 64);
    engine.x.setFastPath(1);
    fp.setWan(ipToRaw(WAN));
    let running = false;
    const obs = new Observer({ cfg, engine, log: createLogger('fatal'), lanSubnets: ['192.168.1.0/24'], loop: () => loop,
      flowOffload: () => (running ? fp.status() : null) });
    const off = scrapeFresh(obs);
    expect(value(off.get('vpnmasq_flow_offload_enabled'))).toBe(0);
    expect(off.has('vpnmasq_flow_offload_flows')).toBe(false);
    // A connection through its handshake: offered, held.
    inside.inject(tcp('192.168.1.10', 40000, SERVER, 80, SYN)); loop.pump(inside, SIDE_INSIDE);
    const alias = parse(inside.written.at(-1)!).sport;
    outside.inject(tcp(SERVER, 80, WAN, alias, SYN | ACK)); loop.pump(outside, SIDE_OUTSIDE);
    inside.inject(tcp('192.168.1.10', 40000, SERVER, 80, ACK)); loop.pump(inside, SIDE_INSIDE);
    fp.take();
    running = true;
    const before = scrapeFresh(obs);
    // What the kernel moved for it since: 40 packets out, 60 in.
    for (const v of table.values()) {
      const out = v[4] === 198; // the outbound entry rewrites toward the server
      v.writeBigUInt64LE(BigInt(out ? 40 : 60), 32);
      v.writeBigUInt64LE(BigInt(out ? 40 * 1500 : 60 * 52), 40);
    }
    fp.sync();
    const m = scrapeFresh(obs);
    expect(value(m.get('vpnmasq_flow_offload_enabled'))).toBe(1);
    expect(value(m.get('vpnmasq_flow_offload_flows'))).toBe(1);
    expect(value(m.get('vpnmasq_flow_offload_capacity'))).toBe(64);
    expect(value(m.get('vpnmasq_flow_offload_handovers_total'), { event: 'offloaded' })).toBe(1);
    expect(m.get('vpnmasq_flow_offload_packets_total')?.type).toBe('COUNTER');
    expect([['forwarded', 1000], ['out_of_window', 3], ['passed_close', 7], ['passed_other', 2]]
      .map(([verdict]) => value(m.get('vpnmasq_flow_offload_packets_total'), { verdict: verdict as string }))).toEqual([1000, 3, 7, 2]);
    const fwd = (x: Map<string, Family>, side: string) => value(x.get('vpnmasq_forwarded_packets_total'), { side });
    expect([fwd(m, 'lan') - fwd(before, 'lan'), fwd(m, 'wan') - fwd(before, 'wan')]).toEqual([40, 60]);
  });

  it('counts WAN address changes and reloads', () => {
    const { obs } = setup();
    obs.noteWanAddress('203.0.113.9');
    obs.noteWanAddress(null);
    obs.noteWanAddress(null); // no change
    obs.noteReload(true);
    obs.noteReload(false);
    const m = scrapeFresh(obs);
    expect(value(m.get('vpnmasq_wan_address_changes_total'))).toBe(2);
    expect(value(m.get('vpnmasq_wan_address_info'), { address: '' })).toBe(1);
    expect(value(m.get('vpnmasq_reloads_total'), { result: 'ok' })).toBe(1);
    expect(value(m.get('vpnmasq_reloads_total'), { result: 'failed' })).toBe(1);
    expect(obs.stats().wan.history.map((x) => x.address)).toEqual([WAN, '203.0.113.9', null]);
  });

  it('names follow the Prometheus conventions: vpnmasq_ prefix, _total on every counter and only there', () => {
    const { obs } = setup();
    const fams = parsePrometheus(obs.metrics()) as Family[];
    expect(fams.length).toBeGreaterThan(15);
    for (const f of fams) {
      expect(f.name).toMatch(/^vpnmasq_[a-z][a-z0-9_]*$/);
      expect(f.help.length, f.name).toBeGreaterThan(5);
      if (f.type === 'COUNTER') expect(f.name).toMatch(/_total$/);
      else expect(f.name).not.toMatch(/_total$/);
    }
  });
});

/** A scrape that does not reuse the snapshot of an earlier one. */
function scrapeFresh(obs: Observer): Map<string, Family> {
  (obs as unknown as { cachedStats: unknown }).cachedStats = null;
  return scrape(obs);
}

describe('table capacities', () => {
  it('are the engine layout\'s (assembly/layout.ts, assembly/abi/records.ts)', async () => {
    const { readFileSync } = await import('node:fs');
    const { TABLE_CAPACITY } = await import('../../../src/engine/abi.js');
    const src = (f: string) => readFileSync(new URL(`../../../assembly/${f}`, import.meta.url), 'utf8');
    const constant = (text: string, name: string) => Number(new RegExp(`export const ${name}: u32 = (\\d+);`).exec(text)?.[1]);
    const layout = src('layout.ts');
    expect(TABLE_CAPACITY.esp).toBe(constant(layout, 'ESP_CAP'));
    expect(TABLE_CAPACITY.ike).toBe(constant(layout, 'IKE_CAP'));
    expect(TABLE_CAPACITY.pptp).toBe(constant(layout, 'CALL_CAP'));
    expect(TABLE_CAPACITY.fragments).toBe(constant(layout, 'FRAG_CAP'));
    expect(TABLE_CAPACITY.bindings).toBe(constant(src('abi/records.ts'), 'BIND_PROTOS') * 65536);
  });
});
