// Shared by the engine benches (bench/core.js, bench/respawn.js) and the
// hash-index test (test/unit/engine/hash.test.ts): 64-byte IPv4/UDP packets
// with valid checksums, and filling an engine's flow table with them.
// No imports, so both the built benches and the TypeScript test can use it.

export function csum(b, off, len, init = 0) {
  let s = init;
  for (let i = 0; i < len; i += 2) s += (b[off + i] << 8) | (b[off + i + 1] ?? 0);
  while (s >> 16) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/**
 * A 64-byte IPv4/UDP packet with valid checksums, written at `off`; the 36
 * payload bytes are zero, or 8..43 with `payload`.
 */
export function writeUdp(b, off, src, sport, dst, dport, payload = false) {
  b.fill(0, off, off + 64);
  b[off] = 0x45; b[off + 3] = 64; b[off + 5] = 1; b[off + 8] = 64; b[off + 9] = 17;
  b.set(src, off + 12); b.set(dst, off + 16);
  const h = ~csum(b, off, 20) & 0xffff; b[off + 10] = h >> 8; b[off + 11] = h & 0xff;
  const u = off + 20;
  b[u] = sport >> 8; b[u + 1] = sport & 0xff; b[u + 2] = dport >> 8; b[u + 3] = dport & 0xff; b[u + 5] = 44;
  if (payload) for (let i = 8; i < 44; i++) b[u + i] = i;
  const ps = csum(new Uint8Array([...src, ...dst, 0, 17, 0, 44]), 0, 12);
  let c = ~csum(b, u, 44, ps) & 0xffff; if (c === 0) c = 0xffff;
  b[u + 6] = c >> 8; b[u + 7] = c & 0xff;
}

/**
 * Opens flows 0..n-1 LAN→WAN: `tuple(i)` ({ src, sport, dst, dport }) as
 * 64-byte packets, a slot batch per process() call at `now`.
 */
export function fillFlows(e, n, tuple, now) {
  const mem = new Uint8Array(e.buffer);
  const lens = new DataView(e.buffer);
  const S = e.slotCount;
  for (let i = 0; i < S; i++) lens.setUint32(e.lenBase + 4 * i, 64, true);
  for (let i = 0; i < n; i += S) {
    const k0 = Math.min(S, n - i);
    for (let k = 0; k < k0; k++) { const t = tuple(i + k); writeUdp(mem, e.slotBase + k * e.slotSize, t.src, t.sport, t.dst, t.dport); }
    e.x.process(k0, 0, now); // (count, side, nowMs)
  }
}
