// Prometheus text exposition format 0.0.4 of a Stats snapshot.
//
// Why not prom-client: its metrics own their values (inc(), set(),
// observe()), while every vpnmasq number already lives somewhere else (the
// engine's u64 counters in Wasm memory, the batch loop's histogram array).
// Feeding them through prom-client would mean resetting and re-adding each
// counter at every scrape and re-observing histogram buckets one value at a
// time; the format itself is a few lines of text (below), checked in the
// tests by an independent parser (parse-prometheus-text-format).
//
// Names follow the Prometheus conventions: vpnmasq_ prefix, base units
// (packets, bytes, seconds), _total on counters, labels for the dimension
// that sums up (side, reason, table, protocol/state).

import type { Stats } from './stats.js';
import { TUN_F } from '../tun/tun.js';

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

type Labels = Record<string, string>;

/** Label values: backslash, double quote and line feed escaped (the format's rule). */
function labelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labelText(l: Labels | undefined): string {
  if (!l) return '';
  const parts = Object.entries(l).map(([k, v]) => `${k}="${labelValue(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function num(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

class Writer {
  private out: string[] = [];
  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string, samples: [Labels | undefined, number][]): void {
    this.out.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`);
    this.out.push(`# TYPE ${name} ${type}`);
    for (const [l, v] of samples) this.out.push(`${name}${labelText(l)} ${num(v)}`);
  }
  histogram(name: string, help: string, series: { labels: Labels; le: number[]; cumulative: number[]; count: number; sum: number }[]): void {
    this.out.push(`# HELP ${name} ${help}`);
    this.out.push(`# TYPE ${name} histogram`);
    for (const s of series) {
      s.le.forEach((le, i) => this.out.push(`${name}_bucket${labelText({ ...s.labels, le: String(le) })} ${s.cumulative[i]}`));
      this.out.push(`${name}_bucket${labelText({ ...s.labels, le: '+Inf' })} ${s.count}`);
      this.out.push(`${name}_sum${labelText(s.labels)} ${s.sum}`);
      this.out.push(`${name}_count${labelText(s.labels)} ${s.count}`);
    }
  }
  text(): string { return this.out.join('\n') + '\n'; }
}

export function renderMetrics(s: Stats): string {
  const w = new Writer();
  const sides = (v: { lan: number; wan: number }): [Labels, number][] => [[{ side: 'lan' }, v.lan], [{ side: 'wan' }, v.wan]];
  w.family('vpnmasq_received_packets_total', 'counter',
    'Packets read from the TUN of a side (lan: LAN hosts and the router\'s own WAN-bound traffic; wan: all WAN ingress).', sides(s.received));
  w.family('vpnmasq_received_bytes_total', 'counter', 'IP bytes of the packets read from the TUN of a side.', sides(s.receivedBytes));
  w.family('vpnmasq_forwarded_packets_total', 'counter',
    'Packets the engine passed on, by the side they came from (lan: toward the WAN, wan: toward the LAN or the router).', sides(s.forwarded));
  w.family('vpnmasq_forwarded_bytes_total', 'counter', 'IP bytes of the packets the engine passed on, by the side they came from.',
    sides(s.forwardedBytes));
  w.family('vpnmasq_local_packets_total', 'counter', 'WAN packets delivered to the router itself (accepted by a rule).', [[undefined, s.localAccepted]]);
  w.family('vpnmasq_drops_total', 'counter', 'Packets the engine dropped, by reason (every reason, zeros included).',
    Object.entries(s.drops).map(([reason, n]) => [{ reason }, n]));
  w.family('vpnmasq_tun_write_drops_total', 'counter', 'Packets the TUN write dropped (queue full, link down).', [[undefined, s.tunWriteDrops]]);
  w.family('vpnmasq_tun_queue_drops_total', 'counter',
    'Packets the TUN readers dropped at the head of a standing queue (CoDel on the TUN ring).', [[undefined, s.tunQueueDrops]]);
  w.family('vpnmasq_tun_queue_class_drops_total', 'counter',
    'The TUN readers\' head drops by packet class (tcp, udp, icmp, frag: an IPv4 fragment, other: ESP, GRE, the rest).',
    Object.entries(s.tunQueueDropsByClass).map(([c, n]) => [{ class: c }, n]));
  w.family('vpnmasq_tun_queue_trims_total', 'counter',
    'Of the tcp and udp head drops, those that took only a GSO super-packet\'s last segment (one TCP segment to retransmit instead of up to 44, one datagram lost instead of up to 64).', [[undefined, s.tunQueueTrims]]);
  w.family('vpnmasq_tun_queue_marks_total', 'counter',
    'CoDel\'s drops that became an ECN CE mark on an ECN-capable packet instead (not counted as drops).', [[undefined, s.tunQueueMarks]]);
  w.family('vpnmasq_tun_offload', 'gauge', 'TUN offloads the kernel accepted (1) or not (0), by offload.',
    Object.entries(TUN_F).filter(([k]) => k !== 'TSO_ECN' && k !== 'UFO')
      .map(([k, bit]) => [{ offload: k.toLowerCase() }, (s.offload.bits & bit) !== 0 ? 1 : 0]));
  w.family('vpnmasq_gso_packets_total', 'counter', 'GSO super-packets read (translated whole, segmented further on by the kernel).',
    [[undefined, s.offload.gsoPackets]]);
  w.family('vpnmasq_gso_bytes_total', 'counter', 'IP bytes of the GSO super-packets read.', [[undefined, s.offload.gsoBytes]]);
  w.family('vpnmasq_gro_writes_total', 'counter',
    'UDP GSO writes made of several same-flow datagrams of one batch (option gro; the kernel cuts each back into its datagrams).',
    [[undefined, s.offload.groWrites]]);
  w.family('vpnmasq_gro_datagrams_total', 'counter', 'Datagrams those writes carried (one write each without gro).',
    [[undefined, s.offload.groDatagrams]]);
  w.family('vpnmasq_csum_partial_packets_total', 'counter',
    'Packets read with a partial L4 checksum (NEEDS_CSUM: the kernel finishes it further on).', [[undefined, s.offload.csumPartial]]);
  const fo = s.flowOffload;
  w.family('vpnmasq_flow_offload_enabled', 'gauge', 'The flow fast path (option flow_offload) runs (1) or not (0: off, or the kernel refused it).',
    [[undefined, fo ? 1 : 0]]);
  if (fo) {
    w.family('vpnmasq_flow_offload_flows', 'gauge', 'Flows (and ESP associations, PPTP calls) the kernel fast path holds now.', [[undefined, fo.flows]]);
    w.family('vpnmasq_flow_offload_capacity', 'gauge', 'Flows the kernel fast path can hold.', [[undefined, fo.capacity]]);
    w.family('vpnmasq_flow_offload_handovers_total', 'counter', 'Flows handed to the kernel fast path, and withdrawn from it.',
      [[{ event: 'offloaded' }, fo.offloaded], [{ event: 'withdrawn' }, fo.withdrawn]]);
    w.family('vpnmasq_flow_offload_packets_total', 'counter',
      'Packets the kernel fast path judged: forwarded (also in vpnmasq_forwarded_packets_total, at each sync), out_of_window (a FIN or RST dropped), passed_close (SYN, FIN, RST or a closed direction, up to the engine), passed_other (up to the engine: wrong device, TTL, MTU, no route).',
      [[{ verdict: 'forwarded' }, fo.forwarded], [{ verdict: 'out_of_window' }, fo.outOfWindow],
        [{ verdict: 'passed_close' }, fo.passedFlags], [{ verdict: 'passed_other' }, fo.passedOther]]);
  }
  w.family('vpnmasq_flows_created_total', 'counter', 'Flows created.', [[undefined, s.flowsCreated]]);
  w.family('vpnmasq_flows_expired_total', 'counter', 'Flows expired by their idle timeout.', [[undefined, s.flowsExpired]]);
  w.family('vpnmasq_flows_flushed_total', 'counter', 'Flows flushed by a WAN address change.', [[undefined, s.flowsFlushed]]);
  w.family('vpnmasq_early_drops_total', 'counter', 'Unanswered entries dropped to make room in a full table.', [[undefined, s.earlyDrops]]);
  w.family('vpnmasq_events_lost_total', 'counter', 'Engine events lost because the event ring was full.', [[undefined, s.eventsLost]]);
  w.family('vpnmasq_table_entries', 'gauge', 'Entries in use per engine table.', s.tables.map((t) => [{ table: t.table }, t.used]));
  w.family('vpnmasq_table_capacity', 'gauge', 'Fixed capacity per engine table.', s.tables.map((t) => [{ table: t.table }, t.capacity]));
  w.family('vpnmasq_vpn_sessions', 'gauge', 'VPN passthrough sessions: ESP associations by state, IKE exchanges, PPTP calls.', [
    [{ protocol: 'esp', state: 'outstanding' }, s.vpn.esp.outstanding],
    [{ protocol: 'esp', state: 'established' }, s.vpn.esp.established],
    [{ protocol: 'esp', state: 'squelched' }, s.vpn.esp.squelched],
    [{ protocol: 'ike', state: 'active' }, s.vpn.ike],
    [{ protocol: 'pptp', state: 'active' }, s.vpn.pptp],
  ]);
  w.family('vpnmasq_esp_associations_bound_total', 'counter', 'Inbound ESP SPIs associated with a LAN host.', [[undefined, s.vpn.espBound]]);
  w.family('vpnmasq_wan_address_changes_total', 'counter', 'Changes of the WAN address (including losing it).', [[undefined, s.wan.changes]]);
  w.family('vpnmasq_wan_address_info', 'gauge', 'The current WAN address (value 1; address "" when there is none).',
    [[{ address: s.wan.address ?? '' }, 1]]);
  w.family('vpnmasq_reloads_total', 'counter', 'Configuration reloads, by result.',
    [[{ result: 'ok' }, s.reloads.ok], [{ result: 'failed' }, s.reloads.failed]]);
  w.histogram('vpnmasq_batch_packets', 'Packets per batch read from a TUN (one engine call each).', [
    { labels: { side: 'lan' }, ...s.batches.lan },
    { labels: { side: 'wan' }, ...s.batches.wan },
  ]);
  w.family('vpnmasq_engine_memory_bytes', 'gauge', 'Fixed linear memory of the engine.', [[undefined, s.memoryBytes]]);
  w.family('vpnmasq_start_time_seconds', 'gauge', 'Start time of the daemon since the Unix epoch.', [[undefined, s.startTimeMs / 1000]]);
  if (s.snapshot) {
    // The age is time() - this, as node_exporter's textfile timestamps are read.
    if (s.snapshot.lastWriteMs !== null) {
      w.family('vpnmasq_snapshot_last_write_timestamp_seconds', 'gauge', 'When the last state snapshot was written, since the Unix epoch.',
        [[undefined, s.snapshot.lastWriteMs / 1000]]);
    }
    w.family('vpnmasq_snapshot_bytes', 'gauge', 'Size of the last state snapshot written.', [[undefined, s.snapshot.bytes]]);
    w.family('vpnmasq_snapshot_restored', 'gauge', '1 when this run started from a restored state snapshot, else 0.',
      [[undefined, s.snapshot.restored ? 1 : 0]]);
  }
  return w.text();
}
