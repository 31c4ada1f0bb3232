// Internet checksum helpers (RFC 1071) and incremental update (RFC 1624).
//
// Every rewrite in the engine adjusts checksums with `adjust16`/`adjust32`;
// nothing is recomputed on the hot path. Words are used exactly as
// `load<u16>`/`load<u32>` return them (little-endian on Wasm): a one's
// complement sum is byte-order independent (RFC 1071 §2(B)), so as long as
// the checksum field and the data words are read the same way no byte swaps
// are needed.

@inline export function fold(s: u32): u32 {
  s = (s & 0xffff) + (s >>> 16);
  return (s & 0xffff) + (s >>> 16);
}

/** RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), for one 16-bit word. */
@inline export function adjust16(csum: u32, oldWord: u32, newWord: u32): u32 {
  return ~fold((~csum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff)) & 0xffff;
}

/** RFC 1624 eqn. 3 for a 32-bit field (an address): two words at once. */
@inline export function adjust32(csum: u32, oldVal: u32, newVal: u32): u32 {
  const notOld = ~oldVal;
  return ~fold(
    (~csum & 0xffff) + (notOld & 0xffff) + (notOld >>> 16) + (newVal & 0xffff) + (newVal >>> 16),
  ) & 0xffff;
}

/**
 * A NEEDS_CSUM partial sum (the folded pseudo-header sum, NOT inverted)
 * after a 32-bit pseudo-header field (an address) changes: S' = S - old + new
 * in one's complement arithmetic, i.e. the complement of adjust32 applied
 * to the complement.
 */
@inline export function partialAdjust32(sum: u32, oldVal: u32, newVal: u32): u32 {
  const notOld = ~oldVal;
  return fold((sum & 0xffff) + (notOld & 0xffff) + (notOld >>> 16) + (newVal & 0xffff) + (newVal >>> 16));
}

/** The same for a 16-bit pseudo-header field (the L4 length): S' = S - old + new. */
@inline export function partialAdjust16(sum: u32, oldWord: u32, newWord: u32): u32 {
  return fold((sum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff));
}

/** One's complement sum (not inverted) of `len` bytes, added to `initial`. */
export function sumBytes(p: usize, len: u32, initial: u32): u32 {
  let s: u64 = initial;
  let i: u32 = 0;
  for (; i + 1 < len; i += 2) s += <u64>load<u16>(p + i);
  if (i < len) s += <u64>load<u8>(p + i);
  while (s >>> 16) s = (s & 0xffff) + (s >>> 16);
  return <u32>s;
}
