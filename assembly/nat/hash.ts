// The one keyed hash behind every hash table of the engine (flow indexes,
// port bindings, per-source counters, fragments, the VPN key maps) and its
// seeded samplers.
//
// Each key word goes through a strong mixer on its own, chained: h = mix(h ^ w),
// starting from a 64-bit key derived from the run's random seed. The tables
// used to fold the words linearly first (w1·K1 ^ w2·K2 ^ …) and mix once:
// a fold whose words vary only in a few bits (a LAN's tuples: consecutive
// hosts, whose varying octet sits in the top byte of a raw address, and
// consecutive ports) leaves few distinct values, and since the mixer is a
// bijection those became full collisions: 1M bench flows read 15 slots per
// lookup (473 at worst) instead of linear probing's 1.5 at load 0.5.
//
// Keyed: the first round mixes the word with the secret key, so two keys
// that differ collide only where mix(k ^ a) ^ mix(k ^ a') happens to equal
// the next words' difference — no difference does that for most keys k, so
// without the seed nobody builds colliding tuples. Not a PRF (SipHash would
// be, at about twice the cost): a hash-flooding defence, as the seed is.

let key: u64 = 0x9e3779b97f4a7c15;

/** murmur3's 64-bit finaliser (fmix64): a bijection in which every input bit flips every output bit with p ≈ ½. */
@inline export function mix64(x: u64): u64 {
  x ^= x >>> 33; x *= 0xff51afd7ed558ccd;
  x ^= x >>> 33; x *= 0xc4ceb9fe1a85ec53;
  x ^= x >>> 33;
  return x;
}

/** A new key from the run's seed (nat/state.ts setSeed). */
export function hashKeySet(seed: u32): void { key = mix64(<u64>seed ^ 0x6a09e667f3bcc908) ^ 0xbb67ae8584caa73b; }

/** Keyed hash of a key of up to 64 bits; the low bits index a table. */
@inline export function hash1(a: u64): u32 { return <u32>mix64(a ^ key); }

/** Keyed hash of a key of up to 128 bits (two words, each mixed in on its own). */
@inline export function hash2(a: u64, b: u64): u32 { return <u32>mix64(mix64(a ^ key) ^ b); }
