// An engine on a test bench: LAN 192.168.1.0/24, WAN address 203.0.113.1,
// packets pushed through `process` one batch at a time, no TUN involved.
import { expect } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { SIDE_INSIDE, SIDE_OUTSIDE, VERDICT_PASS, ipToRaw, maskRaw, type EngineSettings } from '../../src/engine/abi.js';
import { ACK, PSH, SYN, ipCsumOk, l4CsumOk, parse, pptpField, pptpMsg, tcp } from './packet.js';

export const WAN = '203.0.113.1';
export const LAN_NET = '192.168.1.0';

export interface BenchOpts {
  maxFlows?: number; wan?: string; pool?: [number, number]; debug?: boolean; seed?: number;
  timeouts?: { tcpEst?: number; tcpTrans?: number; udp?: number; icmp?: number; frag?: number };
}

/** Per-source caps and unreplied_timeout as the config schema defaults them. */
const LIMIT_DEFAULTS = {
  unreplied_timeout: 30, src_max_flows: 0, src_max_ike: 256, src_max_calls: 256, src_max_esp_pending: 16, src_max_frags: 256,
};

/** VPN settings as the config schema defaults them. */
const VPN_DEFAULTS = {
  esp_timeout: 1800, esp_init_timeout: 120, esp_init_retries: 5, ike_timeout: 3600, natt_timeout: 300, gre_timeout: 7440,
  parallel_sessions: 0, esp_guess: 0,
};

export class TestRouter {
  readonly engine: Engine;
  /** The settings record last handed to the engine. */
  settings: EngineSettings;
  now = 10_000;
  constructor(opts: BenchOpts = {}) {
    this.engine = Engine.load({ maxFlows: opts.maxFlows ?? 4096, debug: opts.debug ?? false, seed: opts.seed ?? 12345 });
    const x = this.engine.x;
    x.setLanNet(0, ipToRaw(LAN_NET), maskRaw(24));
    x.setLanNetCount(1);
    const t = opts.timeouts ?? {};
    this.settings = {
      tcp_timeout: t.tcpEst ?? 7440, tcp_transitory_timeout: t.tcpTrans ?? 240, udp_timeout: t.udp ?? 300,
      icmp_timeout: t.icmp ?? 60, frag_timeout: t.frag ?? 30, ...VPN_DEFAULTS,
      masq_port_lo: opts.pool?.[0] ?? 61000, masq_port_hi: opts.pool?.[1] ?? 65535, ...LIMIT_DEFAULTS,
    };
    this.engine.applySettings(this.settings);
    x.setWanAddress(ipToRaw(opts.wan ?? WAN), this.now);
  }
  /** One packet from the LAN side; returns the packet as emitted or null when dropped. */
  out(pkt: Uint8Array): Uint8Array | null { return this.batch([pkt], SIDE_INSIDE)[0]; }
  in(pkt: Uint8Array): Uint8Array | null { return this.batch([pkt], SIDE_OUTSIDE)[0]; }
  /** Held fragments the last batch released (written to the same TUN after the batch). */
  lastReleased: Uint8Array[] = [];
  released(): Uint8Array[] { return this.lastReleased; }
  /** Extra packets the last batch passed (the later datagrams of USO super-packets cut in software). */
  lastExtras: Uint8Array[] = [];
  batch(pkts: Uint8Array[], side: number): (Uint8Array | null)[] {
    pkts.forEach((p, i) => this.engine.setPacket(i, p));
    this.engine.process(pkts.length, side, this.now);
    this.lastReleased = this.engine.released();
    this.lastExtras = this.engine.extras();
    return pkts.map((_, i) => (this.engine.verdict(i) === VERDICT_PASS ? this.engine.packet(i) : null));
  }
  advance(seconds: number): void {
    this.now += seconds * 1000;
    this.engine.x.tick(this.now, 1 << 20);
  }
  drop(reason: string): number { return this.engine.dropCount(reason); }
  redirect(proto: number, port: number, dest: string, destPort: number, portHi = port): void {
    if (this.engine.x.addRedirect(proto, port, portHi, ipToRaw(dest), destPort) < 0) throw new Error('redirect refused');
  }
  /** VPN settings in seconds; defaults as in the config schema. */
  vpn(o: { esp?: number; espInit?: number; retries?: number; ike?: number; natt?: number; gre?: number; parallel?: boolean; guess?: boolean } = {}): void {
    this.settings = {
      ...this.settings, ...VPN_DEFAULTS,
      esp_timeout: o.esp ?? 1800, esp_init_timeout: o.espInit ?? 120, esp_init_retries: o.retries ?? 5,
      ike_timeout: o.ike ?? 3600, natt_timeout: o.natt ?? 300, gre_timeout: o.gre ?? 7440,
      parallel_sessions: o.parallel ? 1 : 0, esp_guess: o.guess ? 1 : 0,
    };
    this.engine.applySettings(this.settings);
  }
  protoForward(proto: number, dest: string): void {
    if (this.engine.x.addProtoForward(proto, ipToRaw(dest)) < 0) throw new Error('forward refused');
  }
  vpnEntries() { return this.engine.vpnEntries(WAN, this.now); }
  acceptToRouter(proto: number, portLo = 0, portHi = 65535, icmpType = -1): void {
    if (this.engine.x.addRule(0, 0, 1, proto, icmpType, -1, 0, 0, 0, 0, 0, 65535, portLo, portHi) < 0) throw new Error('rule refused');
  }
}

/** A packet the engine let through, its IP and L4 checksums right by full recomputation. */
export function ok(p: Uint8Array | null): Uint8Array {
  expect(p).not.toBeNull();
  expect(ipCsumOk(p!)).toBe(true);
  expect(l4CsumOk(p!)).toBe(true);
  return p!;
}

/** A TestRouter with the VPN settings at their defaults. */
export function router(): TestRouter {
  const r = new TestRouter();
  r.vpn();
  return r;
}

/** A PPTP call from `host` (PNS) to `srv`: control connection + Outgoing-Call-Request; the WAN port and the Call ID alias. */
export function pptpCall(r: TestRouter, host: string, srv: string, sport: number, callId: number): { wanPort: number; alias: number } {
  const syn = parse(ok(r.out(tcp(host, sport, srv, 1723, SYN))));
  ok(r.in(tcp(srv, 1723, WAN, syn.sport, SYN | ACK)));
  ok(r.out(tcp(host, sport, srv, 1723, ACK)));
  const ocrq = ok(r.out(tcp(host, sport, srv, 1723, PSH | ACK, pptpMsg(7, callId))));
  return { wanPort: syn.sport, alias: pptpField(ocrq, 12) };
}
