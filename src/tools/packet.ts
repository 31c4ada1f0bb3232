// Packet building and checking for the tests and the fuzzer (`npm run
// fuzz`). The checksums here are computed in full from scratch (RFC 1071),
// which is what every incremental adjustment of the engine is compared
// against. Plain TypeScript over Uint8Array, no engine imports.

export function ip(a: string): number[] {
  return a.split('.').map(Number);
}

export function csum(bytes: Uint8Array, initial = 0): number {
  let s = initial;
  for (let i = 0; i + 1 < bytes.length; i += 2) s += (bytes[i] << 8) | bytes[i + 1];
  if (bytes.length & 1) s += bytes[bytes.length - 1] << 8;
  while (s >> 16) s = (s & 0xffff) + (s >>> 16);
  return s; // not inverted
}

function pseudo(src: number[], dst: number[], proto: number, len: number): number {
  const b = new Uint8Array([...src, ...dst, 0, proto, len >> 8, len & 0xff]);
  return csum(b);
}

export interface IpOpts {
  src: string; dst: string; proto: number; ttl?: number; id?: number; flags?: number; fragOffset?: number;
  tos?: number; options?: number[];
}

export function ipv4(o: IpOpts, payload: Uint8Array): Uint8Array {
  const opt = o.options ?? [];
  const hlen = 20 + opt.length;
  const total = hlen + payload.length;
  const p = new Uint8Array(total);
  p[0] = 0x40 | (hlen >> 2);
  p[1] = o.tos ?? 0;
  p[2] = total >> 8; p[3] = total & 0xff;
  const id = o.id ?? 0x1234;
  p[4] = id >> 8; p[5] = id & 0xff;
  const fo = ((o.flags ?? 0) << 13) | ((o.fragOffset ?? 0) >> 3);
  p[6] = fo >> 8; p[7] = fo & 0xff;
  p[8] = o.ttl ?? 64; p[9] = o.proto;
  p.set(ip(o.src), 12); p.set(ip(o.dst), 16);
  p.set(opt, 20);
  const c = (~csum(p.subarray(0, hlen))) & 0xffff;
  p[10] = c >> 8; p[11] = c & 0xff;
  p.set(payload, hlen);
  return p;
}

export function udp(src: string, sport: number, dst: string, dport: number, data: Uint8Array | number[] = [1, 2, 3, 4], opts: Partial<IpOpts> = {}): Uint8Array {
  const d = Uint8Array.from(data);
  const u = new Uint8Array(8 + d.length);
  u[0] = sport >> 8; u[1] = sport & 0xff; u[2] = dport >> 8; u[3] = dport & 0xff;
  u[4] = u.length >> 8; u[5] = u.length & 0xff;
  u.set(d, 8);
  let c = (~csum(u, pseudo(ip(src), ip(dst), 17, u.length))) & 0xffff;
  if (c === 0) c = 0xffff;
  u[6] = c >> 8; u[7] = c & 0xff;
  return ipv4({ src, dst, proto: 17, ...opts }, u);
}

export function tcp(src: string, sport: number, dst: string, dport: number, flags: number, data: number[] = [], opts: Partial<IpOpts> & { seq?: number; ack?: number; win?: number; tcpOptions?: number[] } = {}): Uint8Array {
  const o = opts.tcpOptions ?? [];
  const hl = 20 + ((o.length + 3) & ~3);
  const t = new Uint8Array(hl + data.length);
  t[0] = sport >> 8; t[1] = sport & 0xff; t[2] = dport >> 8; t[3] = dport & 0xff;
  const seq = opts.seq ?? 1000; const ack = opts.ack ?? 0;
  new DataView(t.buffer).setUint32(4, seq >>> 0); new DataView(t.buffer).setUint32(8, ack >>> 0);
  const win = opts.win ?? 0xffff;
  t[12] = (hl / 4) << 4; t[13] = flags; t[14] = win >> 8; t[15] = win & 0xff;
  t.set(o, 20); // padding stays 0 (end of options)
  t.set(data, hl);
  const c = (~csum(t, pseudo(ip(src), ip(dst), 6, t.length))) & 0xffff;
  t[16] = c >> 8; t[17] = c & 0xff;
  const { seq: _s, ack: _a, win: _w, tcpOptions: _o, ...ipOpts } = opts;
  return ipv4({ src, dst, proto: 6, ...ipOpts }, t);
}

/** TCP window scale option (RFC 7323 §2.2), padded with a NOP. */
export function wscaleOpt(shift: number): number[] { return [1, 3, 3, shift]; }

export const SYN = 0x02, ACK = 0x10, FIN = 0x01, RST = 0x04, PSH = 0x08;

export function icmpEcho(src: string, dst: string, type: 8 | 0, id: number, seq = 1, data: number[] = [0xab, 0xcd], opts: Partial<IpOpts> = {}): Uint8Array {
  const m = new Uint8Array(8 + data.length);
  m[0] = type; m[4] = id >> 8; m[5] = id & 0xff; m[6] = seq >> 8; m[7] = seq & 0xff;
  m.set(data, 8);
  const c = (~csum(m)) & 0xffff;
  m[2] = c >> 8; m[3] = c & 0xff;
  return ipv4({ src, dst, proto: 1, ...opts }, m);
}

/** An ICMP error from `from` to `to` quoting `quoted` (its header + `quoteBytes` of L4). */
export function icmpError(from: string, to: string, type: number, code: number, quoted: Uint8Array, quoteBytes = 8): Uint8Array {
  const hlen = (quoted[0] & 0xf) * 4;
  const q = quoted.subarray(0, Math.min(quoted.length, hlen + quoteBytes));
  const m = new Uint8Array(8 + q.length);
  m[0] = type; m[1] = code; m.set(q, 8);
  const c = (~csum(m)) & 0xffff;
  m[2] = c >> 8; m[3] = c & 0xff;
  return ipv4({ src: from, dst: to, proto: 1 }, m);
}

export interface Parsed {
  src: string; dst: string; proto: number; ttl: number; id: number; mf: boolean; fragOffset: number; hlen: number;
  sport: number; dport: number; icmpType: number; icmpId: number; l4: Uint8Array;
}

export function parse(p: Uint8Array): Parsed {
  const hlen = (p[0] & 0xf) * 4;
  const total = (p[2] << 8) | p[3];
  const l4 = p.subarray(hlen, total);
  const fo = (p[6] << 8) | p[7];
  const s = (o: number) => (l4.length >= o + 2 ? (l4[o] << 8) | l4[o + 1] : -1);
  return {
    src: `${p[12]}.${p[13]}.${p[14]}.${p[15]}`, dst: `${p[16]}.${p[17]}.${p[18]}.${p[19]}`,
    proto: p[9], ttl: p[8], id: (p[4] << 8) | p[5], mf: (fo & 0x2000) !== 0, fragOffset: (fo & 0x1fff) * 8, hlen,
    sport: s(0), dport: s(2), icmpType: l4[0] ?? -1, icmpId: s(4), l4,
  };
}

/** Full recomputation: is the IP header checksum right? */
export function ipCsumOk(p: Uint8Array): boolean {
  const hlen = (p[0] & 0xf) * 4;
  return csum(p.subarray(0, hlen)) === 0xffff;
}

/** Full recomputation of the L4 checksum (unfragmented packets); UDP 0 = none counts as OK. */
export function l4CsumOk(p: Uint8Array): boolean {
  const hlen = (p[0] & 0xf) * 4;
  const total = (p[2] << 8) | p[3];
  if (((p[6] << 8) | p[7]) & 0x3fff) return true; // MF or an offset: a fragment
  const proto = p[9];
  const l4 = p.subarray(hlen, total);
  // the pseudo header straight from the address bytes (RFC 768 / 793)
  const ph = (proto: number) => ((p[12] << 8) | p[13]) + ((p[14] << 8) | p[15]) + ((p[16] << 8) | p[17]) + ((p[18] << 8) | p[19]) + proto + l4.length;
  if (proto === 17) {
    if (l4[6] === 0 && l4[7] === 0) return true;
    return csum(l4, ph(17)) === 0xffff;
  }
  if (proto === 6) return csum(l4, ph(6)) === 0xffff;
  if (proto === 1) return csum(l4) === 0xffff;
  return true;
}

/** For ICMP errors: the quoted IP header's checksum. */
export function quotedIpCsumOk(p: Uint8Array): boolean {
  const x = parse(p);
  const q = x.l4.subarray(8);
  const hlen = (q[0] & 0xf) * 4;
  return csum(q.subarray(0, hlen)) === 0xffff;
}

/** ICMP error types that quote a datagram (RFC 792). */
export const ICMP_ERROR_TYPES: readonly number[] = [3, 4, 5, 11, 12];

/** An unfragmented ICMP error with at least a quoted 20-byte header? */
export function isIcmpError(p: Uint8Array): boolean {
  const x = parse(p);
  return x.proto === 1 && !x.mf && x.fragOffset === 0 && ICMP_ERROR_TYPES.includes(x.icmpType) && x.l4.length >= 28;
}

/**
 * For ICMP errors quoting a whole unfragmented TCP/UDP/ICMP datagram (the
 * quote's total length fits in what was quoted): is the quoted L4 checksum
 * right? null when the quote is partial and so cannot be checked.
 */
export function quotedL4CsumOk(p: Uint8Array): boolean | null {
  const x = parse(p);
  const q = x.l4.subarray(8);
  if (q.length < 20 || (q[0] >> 4) !== 4) return null;
  const qhl = (q[0] & 0xf) * 4;
  const qtotal = (q[2] << 8) | q[3];
  if (qhl < 20 || qtotal < qhl || qtotal > q.length) return null;
  if (((q[6] << 8) | q[7]) & 0x3fff) return null; // a fragment: its L4 checksum covers the whole datagram
  return l4CsumOk(q.subarray(0, qtotal));
}

/** Splits an IPv4 packet into fragments carrying `chunk` bytes of payload each (multiple of 8). */
export function fragment(p: Uint8Array, chunk: number): Uint8Array[] {
  const x = parse(p);
  const payload = p.subarray(x.hlen, (p[2] << 8) | p[3]);
  const out: Uint8Array[] = [];
  for (let off = 0; off < payload.length; off += chunk) {
    const part = payload.subarray(off, Math.min(payload.length, off + chunk));
    const more = off + chunk < payload.length;
    out.push(ipv4({ src: x.src, dst: x.dst, proto: x.proto, ttl: x.ttl, id: x.id, flags: more ? 1 : 0, fragOffset: off }, part));
  }
  return out;
}

// ---- VPN protocols ---------------------------------------------------------

/** ISAKMP / IKE header (28 bytes) + `extra` payload bytes, in UDP. Cookies as 16 hex digits. */
export function isakmp(src: string, sport: number, dst: string, dport: number, icookie: string, rcookie = '0000000000000000', extra = 32, opts: Partial<IpOpts> = {}): Uint8Array {
  const m = new Uint8Array(28 + extra);
  m.set(Buffer.from(icookie, 'hex'), 0);
  m.set(Buffer.from(rcookie, 'hex'), 8);
  m[16] = 33; m[17] = 0x20; m[18] = 34; m[19] = 0x08;
  new DataView(m.buffer).setUint32(24, m.length);
  for (let i = 28; i < m.length; i++) m[i] = i & 0xff;
  return udp(src, sport, dst, dport, m, opts);
}

export function esp(src: string, dst: string, spi: number, seq = 1, payload = 48): Uint8Array {
  const m = new Uint8Array(8 + payload);
  const dv = new DataView(m.buffer);
  dv.setUint32(0, spi >>> 0); dv.setUint32(4, seq);
  for (let i = 8; i < m.length; i++) m[i] = (i * 7) & 0xff;
  return ipv4({ src, dst, proto: 50 }, m);
}

export function spiOf(p: Uint8Array): number {
  const x = parse(p);
  return new DataView(x.l4.buffer, x.l4.byteOffset).getUint32(0) >>> 0;
}

export function ah(src: string, dst: string, spi: number): Uint8Array {
  const m = new Uint8Array(24);
  m[0] = 4; m[1] = 4; new DataView(m.buffer).setUint32(4, spi);
  return ipv4({ src, dst, proto: 51 }, m);
}

/** Enhanced GRE (PPTP data): version 1, protocol 0x880B, key = (payload length, call ID). */
export function gre(src: string, dst: string, callId: number, payload = 20, opts: { version?: number; protocol?: number } = {}): Uint8Array {
  const m = new Uint8Array(12 + payload);
  m[0] = 0x30; m[1] = 0x80 | ((opts.version ?? 1) & 7);
  const dv = new DataView(m.buffer);
  dv.setUint16(2, opts.protocol ?? 0x880b); dv.setUint16(4, payload); dv.setUint16(6, callId); dv.setUint32(8, 1);
  return ipv4({ src, dst, proto: 47 }, m);
}

export function greCallId(p: Uint8Array): number {
  const x = parse(p);
  return (x.l4[6] << 8) | x.l4[7];
}

/** RFC 2637 lengths of control messages 1..15. */
export const PPTP_LENGTHS = [0, 156, 156, 16, 16, 16, 20, 168, 32, 220, 24, 28, 16, 148, 40, 24];

/** A PPTP control message: type, Call ID field at 12 and (replies) Peer's Call ID at 14. */
export function pptpMsg(ctype: number, callId = 0, peerCallId = 0, opts: { length?: number; magic?: number; msgType?: number } = {}): number[] {
  const len = opts.length ?? PPTP_LENGTHS[ctype] ?? 16;
  const m = new Uint8Array(Math.max(len, 16));
  const dv = new DataView(m.buffer);
  dv.setUint16(0, len); dv.setUint16(2, opts.msgType ?? 1); dv.setUint32(4, opts.magic ?? 0x1a2b3c4d);
  dv.setUint16(8, ctype); dv.setUint16(12, callId); dv.setUint16(14, peerCallId);
  return Array.from(m.subarray(0, Math.max(len, 12)));
}

/** The 16-bit field at `off` of the first PPTP message in a TCP packet. */
export function pptpField(p: Uint8Array, off: number, msgIndex = 0): number {
  const x = parse(p);
  let m = (x.l4[12] >> 4) * 4;
  for (let i = 0; i < msgIndex; i++) m += (x.l4[m] << 8) | x.l4[m + 1];
  return (x.l4[m + off] << 8) | x.l4[m + off + 1];
}
