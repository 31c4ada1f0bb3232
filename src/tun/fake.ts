// An in-memory PacketDevice for tests, in the spirit of wireguard-go's
// tun/tuntest: inject() is "the kernel sent us a packet", `written` is "we
// sent the kernel a packet". Slot/length/verdict semantics, bounds checks and
// drop rules match the native addon, so code tested against FakeTun behaves
// the same on a real TUN.
import type { PacketDevice } from './tun.js';

function checkIndex(v: number, name: string): void {
  if (typeof v !== 'number') throw new TypeError(`${name} must be a number`);
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${name} must be a non-negative integer`);
}

function checkBuffer(mem: ArrayBuffer): void {
  if (!(mem instanceof ArrayBuffer)) throw new TypeError('buf must be an ArrayBuffer');
}

function checkSlotSize(slotSize: number): void {
  checkIndex(slotSize, 'slotSize');
  if (slotSize === 0 || slotSize > 0xffff_ffff) throw new RangeError('slotSize must be between 1 and 2^32-1');
}

/** Same test as the addon: [base, base + n*stride) inside len bytes. */
function fits(len: number, base: number, n: number, stride: number): boolean {
  if (n === 0) return base <= len;
  return base <= len && n <= Math.floor((len - base) / stride);
}

export class FakeTun implements PacketDevice {
  readonly name: string;
  /** Copies of every packet writeBatch sent, oldest first. */
  readonly written: Uint8Array[] = [];
  /** Packets readBatch dropped for being larger than slotSize. */
  readTruncated = 0;
  /** Packets writeBatch selected but could not send (length 0 or > slotSize). */
  writeDrops = 0;

  #queue: Uint8Array[] = [];
  #cb: (() => void) | null = null;
  #scheduled = false;
  #closed = false;

  constructor(name = 'fake0') {
    this.name = name;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Packets injected but not yet read. */
  get pending(): number {
    return this.#queue.length;
  }

  /** Queue a packet for the next readBatch (copied, so the caller may reuse pkt). */
  inject(pkt: Uint8Array): void {
    if (this.#closed) throw new Error(`TUN device "${this.name}" is closed`);
    this.#queue.push(pkt.slice());
    this.#wake();
  }

  readBatch(mem: ArrayBuffer, slotBase: number, slotSize: number, lenBase: number, max: number): number {
    this.#checkOpen();
    checkBuffer(mem);
    checkIndex(slotBase, 'slotBase');
    checkSlotSize(slotSize);
    checkIndex(lenBase, 'lenBase');
    checkIndex(max, 'max');
    const len = mem.byteLength;
    if (!fits(len, slotBase, max, slotSize) || !fits(len, lenBase, max, 4)) {
      throw new RangeError(`readBatch: slots or lengths fall outside the buffer (byteLength ${len})`);
    }
    const bytes = new Uint8Array(mem);
    const view = new DataView(mem);
    let n = 0;
    while (n < max && this.#queue.length > 0) {
      const pkt = this.#queue.shift()!;
      if (pkt.length > slotSize) {
        this.readTruncated++;
        continue;
      }
      bytes.set(pkt, slotBase + n * slotSize);
      view.setUint32(lenBase + 4 * n, pkt.length, true);
      n++;
    }
    return n;
  }

  writeBatch(
    mem: ArrayBuffer,
    slotBase: number,
    slotSize: number,
    lenBase: number,
    verdictBase: number,
    count: number,
    want: number,
  ): number {
    this.#checkOpen();
    checkBuffer(mem);
    checkIndex(slotBase, 'slotBase');
    checkSlotSize(slotSize);
    checkIndex(lenBase, 'lenBase');
    checkIndex(verdictBase, 'verdictBase');
    checkIndex(count, 'count');
    checkIndex(want, 'want');
    if (want > 255) throw new RangeError('want must be a byte (0..255)');
    const len = mem.byteLength;
    if (!fits(len, slotBase, count, slotSize) || !fits(len, lenBase, count, 4) || !fits(len, verdictBase, count, 1)) {
      throw new RangeError(`writeBatch: slots, lengths or verdicts fall outside the buffer (byteLength ${len})`);
    }
    const bytes = new Uint8Array(mem);
    const view = new DataView(mem);
    let written = 0;
    for (let i = 0; i < count; i++) {
      if (bytes[verdictBase + i] !== want) continue;
      const plen = view.getUint32(lenBase + 4 * i, true);
      if (plen === 0 || plen > slotSize) {
        this.writeDrops++;
        continue;
      }
      const start = slotBase + i * slotSize;
      this.written.push(bytes.slice(start, start + plen));
      written++;
    }
    return written;
  }

  /** The ring clock's answer, known here without asking: packets are queued. */
  waiting(): boolean {
    return this.#queue.length > 0;
  }

  onReadable(cb: () => void): void {
    this.#checkOpen();
    this.#cb = cb;
    this.#wake();
  }

  close(): void {
    this.#closed = true;
    this.#cb = null;
    this.#queue.length = 0;
  }

  // Level-triggered like uv_poll on a TUN fd: one wake-up per event-loop turn
  // while packets are queued, so a callback that leaves packets behind is
  // called again, and several injects in one turn coalesce into one wake-up.
  #wake(): void {
    if (this.#scheduled || !this.#cb || this.#queue.length === 0) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      const cb = this.#cb;
      if (!cb || this.#closed || this.#queue.length === 0) return;
      cb();
      this.#wake();
    });
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error(`TUN device "${this.name}" is closed`);
  }
}
