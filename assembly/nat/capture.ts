// Drop capture: while an operator runs `vpnmasq capture --drops`, every
// dropped packet (or those of one reason) is copied, as the engine saw it
// when it gave up on it, into a fixed ring of CAPTURE_SLOTS records in linear
// memory. The supervisor drains the ring on a timer, off the batch loop, and
// the CLI writes pcap. Off (one predictable branch per drop) unless enabled;
// a full ring counts the drop as lost instead of overwriting what the
// supervisor has not read yet. Nothing is allocated.

import {
  CAPH_HEAD, CAPH_LOST, CAPH_TAIL, CAPR_CAPLEN, CAPR_DATA, CAPR_LEN, CAPR_REASON, CAPR_SIDE, CAPR_TIME,
  CAPTURE_REC_SIZE, CAPTURE_SLOTS,
} from "../abi/records";
import { capture, lens, slots, SLOT_COUNT, SLOT_SIZE } from "../layout";

export let captureOn: bool = false;
/** 0: every reason; else only this one. */
let captureReason: u32 = 0;

/** Starts (resetting the ring) or stops the capture. */
export function captureSet(on: bool, reason: u32): void {
  if (on) {
    store<u32>(capture, 0, CAPH_HEAD);
    store<u32>(capture, 0, CAPH_TAIL);
    store<u32>(capture, 0, CAPH_LOST);
  }
  captureReason = reason;
  captureOn = on;
}

/** Copies the dropped packet at slot address `p` (from processBatch) into the ring. */
export function captureDrop(reason: u32, side: u32, p: usize, nowDs: u32): void {
  if (captureReason != 0 && reason != captureReason) return;
  if (p < slots || p >= slots + <usize>SLOT_COUNT * SLOT_SIZE) return;
  const head = load<u32>(capture, CAPH_HEAD);
  if (head - load<u32>(capture, CAPH_TAIL) >= CAPTURE_SLOTS) {
    store<u32>(capture, load<u32>(capture, CAPH_LOST) + 1, CAPH_LOST);
    return;
  }
  const len = load<u32>(lens + (((p - slots) / SLOT_SIZE) << 2));
  const caplen = len < SLOT_SIZE ? len : SLOT_SIZE;
  const r = capture + 64 + <usize>(head & (CAPTURE_SLOTS - 1)) * CAPTURE_REC_SIZE;
  store<u32>(r, len, CAPR_LEN);
  store<u16>(r, <u16>caplen, CAPR_CAPLEN);
  store<u8>(r, <u8>reason, CAPR_REASON);
  store<u8>(r, <u8>side, CAPR_SIDE);
  store<u32>(r, nowDs, CAPR_TIME);
  memory.copy(r + CAPR_DATA, p, caplen);
  store<u32>(capture, head + 1, CAPH_HEAD);
}
