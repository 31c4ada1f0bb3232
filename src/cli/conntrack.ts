// `vpnmasq conntrack`: the flow table the way `conntrack -L` prints it,
// original direction first, reply direction second.
import type { FlowEntry } from '../engine/engine.js';

export function formatConntrack(flows: FlowEntry[]): string {
  const lines = flows.map((f) => {
    if (f.proto === 'esp') {
      return `esp      50 ${Math.round(f.expiresInS)} ${f.state} src=${f.lan} dst=${f.remote} spi=${f.spiOut} packets=${f.packetsOut}` +
        ` src=${f.remote} dst=${f.wan} spi=${f.spiIn ?? '?'}${f.spiIn ? '' : ' [UNREPLIED]'} use=1`;
    }
    if (f.state === 'IKE') {
      return `udp      17 ${Math.round(f.expiresInS)} IKE src=${f.lan} dst=${f.remote} sport=500 dport=${f.remotePort}` +
        ` icookie=${f.icookie} rcookie=${f.rcookie ?? '-'} packets=${f.packetsOut} src=${f.remote} dst=${f.wan}` +
        ` sport=${f.remotePort} dport=500 packets=${f.packetsIn} use=1`;
    }
    if (f.proto === 'gre') {
      // conntrack-tools prints GRE keys as srckey=/dstkey= (a PPTP call's
      // key is the receiver's Call ID); vpnmasq adds the three Call IDs.
      const key = (n: number | null | undefined) => `0x${(n ?? 0).toString(16)}`;
      return `gre      47 ${Math.round(f.expiresInS)} ${f.state} src=${f.lan} dst=${f.remote}` +
        ` srckey=${key(f.callIdLan)} dstkey=${key(f.callIdRemote)} packets=${f.packetsOut}${f.callIdRemote == null ? ' [UNREPLIED]' : ''}` +
        ` src=${f.remote} dst=${f.wan} srckey=${key(f.callIdRemote)} dstkey=${key(f.callIdAlias)} packets=${f.packetsIn}` +
        ` callid=${f.callIdLan} alias=${f.callIdAlias} peer_callid=${f.callIdRemote ?? '?'} use=1`;
    }
    const portful = f.protoNum === 6 || f.protoNum === 17;
    const ports = (sp: number, dp: number, type = 8) => (portful ? ` sport=${sp} dport=${dp}` : ` type=${type} code=0 id=${sp || dp}`);
    const state = f.protoNum === 6 ? `${f.state} ` : '';
    // NAT loopback: the LAN host called the WAN address; the server answers
    // the router (conntrack shows a DNAT+SNAT flow the same way).
    if (f.hairpin) {
      const h = f.hairpin;
      return `${f.proto.padEnd(8)} ${f.protoNum} ${Math.round(f.expiresInS)} ${state}src=${f.lan} dst=${f.wan}${ports(f.lanPort, h.wanPort)}` +
        ` packets=${f.packetsOut}${f.replied ? '' : ' [UNREPLIED]'} src=${f.remote} dst=${h.via}${ports(f.remotePort, f.aliasPort)}` +
        ` packets=${f.packetsIn}${f.replied && f.protoNum === 6 && f.state === 'ESTABLISHED' ? ' [ASSURED]' : ''} hairpin=${h.source} use=1`;
    }
    // Original direction: who opened the flow. A redirect was opened from the WAN.
    const orig = f.redirect
      ? `src=${f.remote} dst=${f.wan}${ports(f.remotePort, f.aliasPort)}`
      : `src=${f.lan} dst=${f.remote}${ports(f.lanPort, f.remotePort)}`;
    const reply = f.redirect
      ? `src=${f.lan} dst=${f.remote}${ports(f.lanPort, f.remotePort, 0)}`
      : `src=${f.remote} dst=${f.wan}${ports(f.remotePort, f.aliasPort, 0)}`;
    const unreplied = f.replied ? '' : ' [UNREPLIED]';
    const flags = f.replied && f.protoNum === 6 && f.state === 'ESTABLISHED' ? ' [ASSURED]' : '';
    return `${f.proto.padEnd(8)} ${f.protoNum} ${Math.round(f.expiresInS)} ${state}${orig}` +
      ` packets=${f.packetsOut}${unreplied} ${reply} packets=${f.packetsIn}${flags} use=1`;
  });
  return lines.join('\n') + (lines.length ? '\n' : '');
}
