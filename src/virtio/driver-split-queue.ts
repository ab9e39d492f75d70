/**
 * Split virtqueue, driver side: what a guest driver does with a ring, for the in-repo frontend and for
 * tests. It lays out the three areas in memory it is given, keeps a free list of descriptors, adds chains
 * (direct or through an indirect table), decides when to kick, collects used buffers and steers
 * interrupts. A raw API writes arbitrary descriptors and ring entries so tests can build malformed rings.
 * Memory ordering follows the rules in split-queue.ts (RingArea). Knows nothing of vhost-user or I2C.
 * @module
 */

import type { GuestMemory } from "./guest-memory.js";
import { VirtqueueError } from "./queue.js";
import {
  AVAIL_FLAGS,
  AVAIL_IDX,
  AVAIL_RING,
  availEventOffset,
  checkQueueSize,
  checkRingIndex,
  DESCRIPTOR_SIZE,
  RingArea,
  SPLIT_RING_ALIGN,
  type SplitRingAddresses,
  splitRingSizes,
  USED_ELEM_SIZE,
  USED_FLAGS,
  USED_IDX,
  USED_RING,
  usedEventOffset,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "./split-queue.js";

export interface DriverBuffer {
  gpa: number;
  len: number;
  /** Device-writable (the device fills it). */
  writable: boolean;
}

export interface AddOptions {
  /** Put the buffers in an indirect table at `indirectGpa` (16 bytes per buffer): one ring slot. */
  indirect?: boolean;
  indirectGpa?: number;
}

/**
 * EINVAL unless add()'s arguments are valid for either ring layout: at least one buffer, every buffer a
 * valid range, a 16-aligned table address for an indirect chain. Returns that address (undefined when
 * the chain is direct).
 */
export function checkAddArguments(
  buffers: readonly DriverBuffer[],
  options: AddOptions,
): number | undefined {
  if (buffers.length === 0) throw new VirtqueueError("EINVAL", "a chain needs at least one buffer");
  for (const { gpa, len } of buffers) {
    if (
      !Number.isSafeInteger(gpa) ||
      gpa < 0 ||
      !Number.isInteger(len) ||
      len < 0 ||
      len > 0xffffffff
    ) {
      throw new VirtqueueError("EINVAL", `buffer ${gpa}+${len} is not a valid range`);
    }
  }
  const tableGpa = options.indirect ? options.indirectGpa : undefined;
  if (
    options.indirect &&
    (tableGpa === undefined || !Number.isSafeInteger(tableGpa) || tableGpa % 16 !== 0)
  ) {
    throw new VirtqueueError("EINVAL", "an indirect chain needs a 16-aligned indirectGpa");
  }
  return tableGpa;
}

/** A descriptor exactly as it sits in a table, for the raw API. */
export interface RawDescriptorFields {
  addr: number | bigint;
  len: number;
  flags: number;
  next: number;
}

export interface DriverSplitQueueOptions {
  /** VIRTIO_F_RING_EVENT_IDX negotiated. */
  eventIdx?: boolean;
  /** First avail and used index (a ring that already wrapped, or state after migration). Default 0. */
  initialIndex?: number;
  /** Alignment of the used area: 4 (virtio 1.x, default) or a page for legacy layouts. */
  usedAlign?: number;
}

export interface UsedElement {
  head: number;
  len: number;
}

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

export class DriverSplitQueue {
  readonly size: number;
  readonly memory: GuestMemory;
  readonly addresses: Readonly<SplitRingAddresses>;
  /** Bytes from the base address to the end of the used area. */
  readonly byteLength: number;
  private readonly eventIdx: boolean;
  private readonly desc: RingArea;
  private readonly avail: RingArea;
  private readonly used: RingArea;
  private readonly freeList: number[] = [];
  /** Scratch for one descriptor table entry (writeDescriptorAt). */
  private readonly entry = new Uint8Array(DESCRIPTOR_SIZE);
  private readonly entryView = new DataView(this.entry.buffer);
  /** For each head in flight, the descriptor indices its chain occupies. */
  private readonly chains: (number[] | undefined)[];
  /** 1 for a head collected by getUsedInto and not yet republished or released. */
  private readonly held: Uint8Array;
  private availIdx: number;
  private lastUsed: number;
  private kickedAvail: number;
  private callbacksEnabled = true;

  /** Bytes a ring of `size` entries needs from a 16-aligned base (see the constructor). */
  static byteLength(size: number, options: DriverSplitQueueOptions = {}): number {
    checkQueueSize(size);
    const sizes = splitRingSizes(size, options.eventIdx ?? false);
    const usedGpa = alignUp(sizes.desc + sizes.avail, options.usedAlign ?? SPLIT_RING_ALIGN.used);
    return usedGpa + sizes.used;
  }

  /** Lays the ring out at `baseGpa` (desc, avail right after, used aligned) and initialises it. */
  constructor(
    memory: GuestMemory,
    baseGpa: number,
    size: number,
    options: DriverSplitQueueOptions = {},
  ) {
    checkQueueSize(size);
    const usedAlign = options.usedAlign ?? SPLIT_RING_ALIGN.used;
    if (!Number.isInteger(usedAlign) || usedAlign < 4 || (usedAlign & (usedAlign - 1)) !== 0) {
      throw new VirtqueueError("EINVAL", `used alignment ${usedAlign} is not a power of two >= 4`);
    }
    if (!Number.isSafeInteger(baseGpa) || baseGpa < 0 || baseGpa % SPLIT_RING_ALIGN.desc !== 0) {
      throw new VirtqueueError("EINVAL", `ring base ${baseGpa} is not 16-aligned`);
    }
    const initialIndex = options.initialIndex ?? 0;
    checkRingIndex(initialIndex, "initial index");
    this.size = size;
    this.memory = memory;
    this.eventIdx = options.eventIdx ?? false;
    const sizes = splitRingSizes(size, this.eventIdx);
    const availGpa = baseGpa + sizes.desc;
    const usedGpa = alignUp(availGpa + sizes.avail, usedAlign);
    this.addresses = Object.freeze({ desc: baseGpa, avail: availGpa, used: usedGpa });
    this.byteLength = usedGpa + sizes.used - baseGpa;
    this.desc = new RingArea(memory, baseGpa, sizes.desc, "descriptor table");
    this.avail = new RingArea(memory, availGpa, sizes.avail, "avail ring");
    this.used = new RingArea(memory, usedGpa, sizes.used, "used ring");
    memory.write(baseGpa, new Uint8Array(this.byteLength));
    this.availIdx = initialIndex;
    this.lastUsed = initialIndex;
    this.kickedAvail = initialIndex;
    this.avail.store16(AVAIL_IDX, initialIndex);
    this.used.store16(USED_IDX, initialIndex);
    if (this.eventIdx) this.avail.store16(usedEventOffset(size), initialIndex);
    this.chains = new Array(size).fill(undefined);
    this.held = new Uint8Array(size);
    // Highest index last, so the first chains take descriptors 0, 1, 2...
    for (let i = size - 1; i >= 0; i--) this.freeList.push(i);
  }

  /** Descriptors not in use. */
  get numFree(): number {
    return this.freeList.length;
  }

  /** The driver's avail index (entries published so far). */
  get availIndex(): number {
    return this.availIdx;
  }

  /** The next used entry the driver will consume. */
  get lastUsedIndex(): number {
    return this.lastUsed;
  }

  /** used.idx as the device last published it. */
  get deviceUsedIndex(): number {
    return this.used.load16(USED_IDX);
  }

  /**
   * Adds one chain and publishes it (ring entry first, then avail.idx). Returns its head, or null when
   * there are not enough free descriptors. Readable buffers must come before writable ones.
   */
  add(buffers: readonly DriverBuffer[], options: AddOptions = {}): number | null {
    const tableGpa = checkAddArguments(buffers, options);
    const needed = tableGpa !== undefined ? 1 : buffers.length;
    if (needed > this.freeList.length) return null;
    const taken = this.freeList.splice(this.freeList.length - needed, needed).reverse();
    const head = taken[0]!;
    const last = buffers.length - 1;
    if (tableGpa !== undefined) {
      buffers.forEach((buffer, i) => {
        this.writeDescriptorAt(
          tableGpa + DESCRIPTOR_SIZE * i,
          chainFields(buffer, i < last ? i + 1 : null),
        );
      });
      this.writeDescriptor(head, {
        addr: tableGpa,
        len: DESCRIPTOR_SIZE * buffers.length,
        flags: VRING_DESC_F_INDIRECT,
        next: 0,
      });
    } else {
      buffers.forEach((buffer, i) => {
        this.writeDescriptor(taken[i]!, chainFields(buffer, i < last ? taken[i + 1]! : null));
      });
    }
    this.chains[head] = taken;
    this.publish(head);
    return head;
  }

  /**
   * Whether the device wants a kick for what was published since the last call: with EVENT_IDX iff
   * avail.idx crossed avail_event, else unless used.flags has NO_NOTIFY. Resets the "since" point.
   */
  needsKick(): boolean {
    const oldAvail = this.kickedAvail;
    this.kickedAvail = this.availIdx;
    if (oldAvail === this.availIdx) return false;
    if (this.eventIdx) {
      return vringNeedEvent(this.used.load16(availEventOffset(this.size)), this.availIdx, oldAvail);
    }
    return (this.used.load16(USED_FLAGS) & VRING_USED_F_NO_NOTIFY) === 0;
  }

  /** The next used element, freeing its descriptors; null when none. Throws EBADRING on a bad id. */
  getUsed(): UsedElement | null {
    const element = this.takeUsed();
    if (element === null) return null;
    this.checkInFlight(element.head);
    this.freeChain(element.head);
    return element;
  }

  /**
   * The next used element written into `into` (no allocation); false when none. Its chain stays as
   * added, held by the driver, until `republish` hands it to the device again or `release` frees it.
   * Throws EBADRING on an id that is not a chain in flight.
   */
  getUsedInto(into: UsedElement): boolean {
    if (!this.readUsed(into)) return false;
    this.checkInFlight(into.head);
    this.held[into.head] = 1;
    return true;
  }

  /** Makes a held chain (getUsedInto) available again exactly as it was added. */
  republish(head: number): void {
    this.checkHeld(head);
    this.held[head] = 0;
    this.publish(head);
  }

  /** Frees a held chain's descriptors (what getUsed does at once). */
  release(head: number): void {
    this.checkHeld(head);
    this.held[head] = 0;
    this.freeChain(head);
  }

  private checkInFlight(head: number): void {
    if (head >= this.size || this.chains[head] === undefined || this.held[head] === 1) {
      throw new VirtqueueError("EBADRING", `used id ${head} is not a chain in flight`);
    }
  }

  private checkHeld(head: number): void {
    if (!Number.isInteger(head) || head < 0 || head >= this.size || this.held[head] !== 1) {
      throw new VirtqueueError("EINVAL", `${head} is not a chain held by the driver`);
    }
  }

  private freeChain(head: number): void {
    const taken = this.chains[head] ?? [];
    this.chains[head] = undefined;
    this.freeList.push(...taken.reverse());
  }

  /**
   * Asks for interrupts again (used_event = next used entry, or NO_INTERRUPT cleared) and reports
   * whether used buffers arrived meanwhile: true means call getUsed again before waiting.
   */
  enableCallbacks(): boolean {
    this.callbacksEnabled = true;
    if (this.eventIdx) this.avail.store16(usedEventOffset(this.size), this.lastUsed);
    else this.avail.store16(AVAIL_FLAGS, 0);
    return this.used.load16(USED_IDX) !== this.lastUsed;
  }

  /** Asks the device not to interrupt (with EVENT_IDX: used_event set behind us, never reached soon). */
  disableCallbacks(): void {
    this.callbacksEnabled = false;
    if (this.eventIdx) this.avail.store16(usedEventOffset(this.size), (this.lastUsed - 1) & 0xffff);
    else this.avail.store16(AVAIL_FLAGS, VRING_AVAIL_F_NO_INTERRUPT);
  }

  // Raw API: writes exactly what it is told, bypassing the free list (tests build malformed rings).

  /** Writes descriptor `index` of the table. */
  writeDescriptor(index: number, fields: RawDescriptorFields): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) {
      throw new VirtqueueError("EINVAL", `descriptor index ${index} outside the table`);
    }
    this.writeDescriptorAt(this.addresses.desc + DESCRIPTOR_SIZE * index, fields);
  }

  /** Writes a descriptor anywhere in guest memory (indirect tables). */
  writeDescriptorAt(gpa: number, fields: RawDescriptorFields): void {
    // One scratch entry for every write: no buffer, view or BigInt per descriptor.
    const dv = this.entryView;
    const addr = fields.addr;
    if (typeof addr === "bigint") {
      dv.setBigUint64(0, addr, true);
    } else {
      dv.setUint32(0, addr % 2 ** 32, true);
      dv.setUint32(4, Math.floor(addr / 2 ** 32), true);
    }
    dv.setUint32(8, fields.len, true);
    dv.setUint16(12, fields.flags, true);
    dv.setUint16(14, fields.next, true);
    this.memory.write(gpa, this.entry);
  }

  /** Puts `head` in the next avail slot and publishes it; the head may be anything 16-bit. */
  publish(head: number): void {
    checkRingIndex(head, "head");
    this.avail.setU16(AVAIL_RING + 2 * (this.availIdx & (this.size - 1)), head);
    this.setAvailIndex((this.availIdx + 1) & 0xffff);
  }

  /** Writes avail.idx (any value: huge jumps break the ring). */
  setAvailIndex(index: number): void {
    checkRingIndex(index, "avail index");
    this.availIdx = index;
    this.avail.store16(AVAIL_IDX, index);
  }

  /** Writes avail.ring[slot] without publishing. */
  setAvailEntry(slot: number, head: number): void {
    checkRingIndex(head, "head");
    this.avail.setU16(AVAIL_RING + 2 * (slot & (this.size - 1)), head);
  }

  /** The next used element without any check or freeing (for rings built with the raw API). */
  takeUsed(): UsedElement | null {
    const element: UsedElement = { head: 0, len: 0 };
    return this.readUsed(element) ? element : null;
  }

  /** takeUsed into a caller's element; false when the device has published nothing new. */
  private readUsed(into: UsedElement): boolean {
    if (this.used.load16(USED_IDX) === this.lastUsed) return false;
    const elem = USED_RING + USED_ELEM_SIZE * (this.lastUsed & (this.size - 1));
    into.head = this.used.getU32(elem);
    into.len = this.used.getU32(elem + 4);
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    // As Linux does: while interrupts are wanted, keep used_event just ahead of what was consumed.
    if (this.eventIdx && this.callbacksEnabled) {
      this.avail.store16(usedEventOffset(this.size), this.lastUsed);
    }
    return true;
  }
}

/** Table fields of one buffer of a chain; `next` is null for the last buffer. */
function chainFields(buffer: DriverBuffer, next: number | null): RawDescriptorFields {
  return {
    addr: buffer.gpa,
    len: buffer.len,
    flags: (buffer.writable ? VRING_DESC_F_WRITE : 0) | (next !== null ? VRING_DESC_F_NEXT : 0),
    next: next ?? 0,
  };
}
