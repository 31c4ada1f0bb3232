// Turns the typed Config into engine settings: LAN subnets, the settings
// record (port pool, timeouts, VPN options: every engine-bound row of the
// option table, config/options.ts), redirects (port forwards) and rules,
// expanded to the engine's one-protocol, one-network, one-range records.
// Used at start and on reload.

import { MAIN_TABLE, type Config, type EngineSettings, type MainConfig, type Redirect, type Rule } from '../config/index.js';
import type { Row } from '../config/options.js';
import { PROTO_ALL } from '../config/schema.js';
import type { Engine } from './engine.js';
import {
  DEST_FORWARD, DEST_ROUTER, REFLECT_EXTERNAL, REFLECT_INTERNAL, REFLECT_OFF, TARGET_ACCEPT, TARGET_DROP, TARGET_REJECT, ZONE_LAN, ZONE_WAN, ipToRaw, maskRaw,
} from './abi.js';

function cidr(s: string): [number, number] {
  const [a, len] = s.split('/');
  return [ipToRaw(a!), maskRaw(len === undefined ? 32 : Number(len))];
}

const TARGETS = { ACCEPT: TARGET_ACCEPT, DROP: TARGET_DROP, REJECT: TARGET_REJECT } as const;

/**
 * One engine rule per (protocol, source net, destination net, source port
 * range, destination port range, ICMP type and code): the engine matches one
 * of each. A row is addRule's arguments: [srcZone, destZone, target, proto,
 * icmpType, icmpCode, srcNet, srcMask, dstNet, dstMask, sportLo, sportHi,
 * dportLo, dportHi]; -1 and 0..65535 mean any.
 */
export function expandRule(r: Rule): number[][] {
  const out: number[][] = [];
  const any: [number, number][] = [[0, 65535]];
  const srcs = r.srcIp.length ? r.srcIp.map(cidr) : [[0, 0] as [number, number]];
  const dsts = r.destIp.length ? r.destIp.map(cidr) : [[0, 0] as [number, number]];
  const sports = r.srcPort.length ? r.srcPort : any;
  const dports = r.destPort.length ? r.destPort : any;
  const icmps = r.icmpType.length ? r.icmpType.map((t) => [t.type, t.code ?? -1]) : [[-1, -1]];
  const srcZone = r.src === 'wan' ? ZONE_WAN : ZONE_LAN;
  const destZone = r.dest === null ? DEST_ROUTER : DEST_FORWARD;
  const target = TARGETS[r.target];
  for (const proto of r.proto) {
    for (const [sn, sm] of srcs) for (const [dn, dm] of dsts) {
      const head = [srcZone, destZone, target];
      const nets = [sn, sm, dn, dm];
      if (proto === 6 || proto === 17) {
        for (const [sl, sh] of sports) for (const [dl, dh] of dports) out.push([...head, proto, -1, -1, ...nets, sl, sh, dl, dh]);
      } else if (proto === 1) {
        for (const [t, c] of icmps) out.push([...head, 1, t!, c!, ...nets, 0, 65535, 0, 65535]);
      } else {
        out.push([...head, proto === PROTO_ALL ? -1 : proto, -1, -1, ...nets, 0, 65535, 0, 65535]);
      }
    }
  }
  return out;
}

/** The engine-bound options of the table as one record, keyed by UCI option name, numbers only. */
export function engineSettings(m: MainConfig): EngineSettings {
  const s: Record<string, number> = {};
  for (const r of MAIN_TABLE as readonly Row[]) {
    if (r.engine.length === 0) continue;
    const nums = r.type.numbers!(m[r.key as keyof MainConfig]);
    r.engine.forEach((name, i) => { s[name] = nums[i]!; });
  }
  return s as EngineSettings;
}

/** Hands the settings record to the engine, which takes all of it or throws (nothing taken). */
export function applyEngineSettings(engine: Engine, s: EngineSettings): void {
  engine.applySettings(s);
}

export interface ApplyResult { lanSubnets: string[]; redirects: number; rules: number }

/** The engine's NAT loopback mode of a redirect (fw4: reflection default 1, reflection_src default internal). */
export function reflectionMode(r: Redirect): number {
  if (r.reflection === false) return REFLECT_OFF;
  return r.reflectionSrc === 'external' ? REFLECT_EXTERNAL : REFLECT_INTERNAL;
}

/** How many router LAN addresses the engine keeps (assembly/nat/state.ts MAX_ROUTER_LAN). */
export const MAX_ROUTER_LAN = 8;

/**
 * Applies everything but the WAN address. `lanSubnets` overrides the
 * config's (derived from the device); `routerLan` are the router's own
 * addresses on the LAN device as 'a.b.c.d/len' (the source a server sees
 * through NAT loopback with reflection_src internal; the first
 * MAX_ROUTER_LAN are kept).
 */
export function applyConfig(engine: Engine, cfg: Config, lanSubnets: string[], routerLan: string[] = []): ApplyResult {
  const x = engine.x;
  // Check the limits before touching anything, so a refused reload leaves
  // the running settings whole.
  const ruleRows = cfg.rules.map((r) => ({ r, rows: expandRule(r) }));
  const nRules = ruleRows.reduce((a, b) => a + b.rows.length, 0);
  if (nRules > 256) throw new Error(`${cfg.file}: ${nRules} rules after expansion (protocols × addresses × ports); the engine holds 256`);
  const nRedirects = cfg.redirects.reduce((a, r) => a + r.proto.length, 0);
  if (nRedirects > 256) throw new Error(`${cfg.file}: ${nRedirects} redirects after expansion; the engine holds 256`);
  lanSubnets.forEach((s, i) => { const [n, mask] = cidr(s); x.setLanNet(i, n, mask); });
  x.setLanNetCount(lanSubnets.length);
  const own = routerLan.slice(0, MAX_ROUTER_LAN);
  own.forEach((s, i) => { const [, mask] = cidr(s); x.setRouterLanAddr(i, ipToRaw(s.split('/')[0]!), mask); });
  x.setRouterLanCount(own.length);
  engine.routerLan = own;
  applyEngineSettings(engine, engineSettings(cfg.main));
  x.clearRedirects();
  let redirects = 0;
  for (const r of cfg.redirects) {
    for (const proto of r.proto) {
      if (!r.srcDport || !r.destPort) {
        // A protocol forward (esp, gre, any protocol number) to one LAN host.
        if (x.addProtoForward(proto, ipToRaw(r.destIp)) < 0) throw new Error(`${cfg.file}:${r.line}: too many redirects`);
        redirects++;
        continue;
      }
      const i = x.addRedirect(proto, r.srcDport[0], r.srcDport[1], ipToRaw(r.destIp), r.destPort[0]);
      if (i < 0) {
        throw new Error(`${cfg.file}:${r.line}: redirect${r.name ? ` '${r.name}'` : ''} refused by the engine (too many redirects?)`);
      }
      if (x.setRedirectReflection(i, reflectionMode(r)) < 0) {
        throw new Error(`${cfg.file}:${r.line}: redirect${r.name ? ` '${r.name}'` : ''}: reflection refused by the engine`);
      }
      // fw4's src_ip / src_port / src_dip: who may open this forward.
      if (r.srcIp !== undefined || r.srcPort !== undefined || r.srcDip !== undefined) {
        const [net, mask] = r.srcIp !== undefined ? cidr(r.srcIp) : [0, 0];
        const [lo, hi] = r.srcPort ?? [0, 65535];
        if (x.setRedirectSource(i, net, mask, lo, hi, r.srcDip !== undefined ? ipToRaw(r.srcDip) : 0) < 0) {
          throw new Error(`${cfg.file}:${r.line}: redirect${r.name ? ` '${r.name}'` : ''}: source limits refused by the engine`);
        }
      }
      redirects++;
    }
  }
  x.clearRules();
  let rules = 0;
  for (const { r, rows } of ruleRows) {
    for (const a of rows) {
      if (x.addRule(a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!, a[6]!, a[7]!, a[8]!, a[9]!, a[10]!, a[11]!, a[12]!, a[13]!) < 0) {
        throw new Error(`${cfg.file}:${r.line}: too many rules after expansion (the engine holds 256)`);
      }
      rules++;
    }
  }
  return { lanSubnets, redirects, rules };
}
