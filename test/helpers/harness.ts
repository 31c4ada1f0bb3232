// An engine on a test bench: LAN 192.168.1.0/24, WAN address 203.0.113.1,
// packets pushed through `process` one batch at a time, no TUN involved.
import { Engine } from '../../src/engine/engine.js';
import { SIDE_INSIDE, SIDE_OUTSIDE, VERDICT_PASS, ipToRaw, maskRaw } from '../../src/engine/abi.js';

export const WAN = '203.0.113.1';
export const LAN_NET = '192.168.1.0';

export interface BenchOpts {
  maxFlows?: number; wan?: string; pool?: [number, number]; debug?: boolean; seed?: number;
  timeouts?: { tcpEst?: number; tcpTrans?: number; udp?: number; icmp?: number; frag?: number };
}

export class TestRouter {
  readonly engine: Engine;
  now = 10_000;
  constructor(opts: BenchOpts = {}) {
    this.engine = Engine.load({ maxFlows: opts.maxFlows ?? 4096, debug: opts.debug ?? false, seed: opts.seed ?? 12345 });
    const x = this.engine.x;
    x.setLanNet(0, ipToRaw(LAN_NET), maskRaw(24));
    x.setLanNetCount(1);
    if (opts.pool) x.setPortPool(opts.pool[0], opts.pool[1]);
    const t = opts.timeouts ?? {};
    x.setTimeouts(t.tcpEst ?? 7440, t.tcpTrans ?? 240, t.udp ?? 300, t.icmp ?? 60, t.frag ?? 30);
    x.setWanAddress(ipToRaw(opts.wan ?? WAN), this.now);
  }
  /** One packet from the LAN side; returns the packet as emitted or null when dropped. */
  out(pkt: Uint8Array): Uint8Array | null { return this.batch([pkt], SIDE_INSIDE)[0]; }
  in(pkt: Uint8Array): Uint8Array | null { return this.batch([pkt], SIDE_OUTSIDE)[0]; }
  batch(pkts: Uint8Array[], side: number): (Uint8Array | null)[] {
    pkts.forEach((p, i) => this.engine.setPacket(i, p));
    this.engine.process(pkts.length, side, this.now);
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
    this.engine.x.setVpnSettings(o.esp ?? 1800, o.espInit ?? 120, o.retries ?? 5, o.ike ?? 3600, o.natt ?? 300, o.gre ?? 7440,
      o.parallel ? 1 : 0, o.guess ? 1 : 0);
  }
  protoForward(proto: number, dest: string): void {
    if (this.engine.x.addProtoForward(proto, ipToRaw(dest)) < 0) throw new Error('forward refused');
  }
  vpnEntries() { return this.engine.vpnEntries(WAN, this.now); }
  acceptToRouter(proto: number, portLo = 0, portHi = 65535, icmpType = -1): void {
    if (this.engine.x.addRule(0, 0, 1, proto, icmpType, 0, 0, 0, 0, portLo, portHi) < 0) throw new Error('rule refused');
  }
}
