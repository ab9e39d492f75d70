/**
 * Packed virtqueue, driver side: what a guest driver does with a packed ring, for the in-repo frontend
 * and for tests. Same method shape as DriverSplitQueue (add / needsKick / getUsed / enableCallbacks /
 * disableCallbacks), so the I2C driver runs on either. It lays out the descriptor ring and the two
 * event suppression structures, hands out buffer ids, writes chains with the head's flags last, reads
 * used descriptors by the used wrap counter and decides when to kick. A raw API writes arbitrary
 * descriptors so tests can build malformed rings. Memory ordering as in packed-queue.ts. Knows nothing
 * of vhost-user or I2C.
 * @module
 */

import {
  type AddOptions,
  checkAddArguments,
  type DriverBuffer,
  type UsedElement,
} from "./driver-split-queue.js";
import type { GuestMemory } from "./guest-memory.js";
import {
  advance,
  availFlags,
  checkPackedQueueSize,
  EVENT_FLAGS,
  EVENT_OFF_WRAP,
  encodePosition,
  isUsed,
  PACKED_DESC_ADDR,
  PACKED_DESC_FLAGS,
  PACKED_DESC_ID,
  PACKED_DESC_LEN,
  PACKED_RING_ALIGN,
  type PackedRingAddresses,
  packedNeedEvent,
  packedRingSizes,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  type RingPosition,
} from "./packed-queue.js";
import { VirtqueueError } from "./queue.js";
import {
  DESCRIPTOR_SIZE,
  RingArea,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
} from "./split-queue.js";

/** A packed descriptor exactly as it sits in the ring or a table (raw API). */
export interface RawPackedDescriptorFields {
  addr: number | bigint;
  len: number;
  id: number;
  /** NEXT / WRITE / INDIRECT; the raw publish adds the AVAIL/USED bits of the slot's lap. */
  flags: number;
}

export interface DriverPackedQueueOptions {
  /** VIRTIO_F_RING_EVENT_IDX negotiated. */
  eventIdx?: boolean;
}

export class DriverPackedQueue {
  readonly size: number;
  readonly memory: GuestMemory;
  readonly addresses: Readonly<PackedRingAddresses>;
  /** Bytes from the base address to the end of the device event suppression structure. */
  readonly byteLength: number;
  private readonly eventIdx: boolean;
  private readonly desc: RingArea;
  private readonly driverEvent: RingArea;
  private readonly deviceEvent: RingArea;
  private readonly nextAvail: RingPosition = { index: 0, wrap: true };
  private readonly lastUsed: RingPosition = { index: 0, wrap: true };
  private readonly freeIds: number[] = [];
  /** Ring slots each buffer id in flight occupies (raw chains may use any 16-bit id). */
  private readonly slotsOf = new Map<number, number>();
  /** Ids handed out by add (they go back to the free list when used). */
  private readonly allocatedIds = new Set<number>();
  /** Per id handed out by add: its chain's descriptors as (addr, len, flags) triples, for republish. */
  private readonly addedChains: (Float64Array | undefined)[];
  /** 1 for an id collected by getUsedInto and not yet republished or released. */
  private readonly held: Uint8Array;
  /** Scratch position for republish. */
  private readonly cursor: RingPosition = { index: 0, wrap: true };
  private freeSlots: number;
  private addedSinceKick = 0;
  private callbacksEnabled = true;

  /** Bytes a ring of `size` entries needs from a 16-aligned base. */
  static byteLength(size: number): number {
    checkPackedQueueSize(size);
    const sizes = packedRingSizes(size);
    return sizes.desc + sizes.driver + sizes.device;
  }

  /** Lays the ring out at `baseGpa` (descriptors, driver area, device area) and zeroes it. */
  constructor(
    memory: GuestMemory,
    baseGpa: number,
    size: number,
    options: DriverPackedQueueOptions = {},
  ) {
    checkPackedQueueSize(size);
    if (!Number.isSafeInteger(baseGpa) || baseGpa < 0 || baseGpa % PACKED_RING_ALIGN.desc !== 0) {
      throw new VirtqueueError("EINVAL", `ring base ${baseGpa} is not 16-aligned`);
    }
    this.size = size;
    this.memory = memory;
    this.eventIdx = options.eventIdx ?? false;
    const sizes = packedRingSizes(size);
    const driverGpa = baseGpa + sizes.desc;
    const deviceGpa = driverGpa + sizes.driver;
    this.addresses = Object.freeze({ desc: baseGpa, driver: driverGpa, device: deviceGpa });
    this.byteLength = DriverPackedQueue.byteLength(size);
    // Zeroed descriptors are not available in the first lap (wrap counter 1).
    memory.write(baseGpa, new Uint8Array(this.byteLength));
    this.desc = new RingArea(memory, baseGpa, sizes.desc, "descriptor ring");
    this.driverEvent = new RingArea(memory, driverGpa, sizes.driver, "driver event suppression");
    this.deviceEvent = new RingArea(memory, deviceGpa, sizes.device, "device event suppression");
    this.freeSlots = size;
    this.addedChains = new Array<Float64Array | undefined>(size).fill(undefined);
    this.held = new Uint8Array(size);
    for (let id = size - 1; id >= 0; id--) this.freeIds.push(id);
  }

  /** Ring slots not in use. */
  get numFree(): number {
    return this.freeSlots;
  }

  /** Next slot to fill | avail wrap counter << 15. */
  get availIndex(): number {
    return encodePosition(this.nextAvail);
  }

  /** Next used slot to read | used wrap counter << 15. */
  get lastUsedIndex(): number {
    return encodePosition(this.lastUsed);
  }

  /**
   * Where the device will write its next used descriptor (index | wrap << 15), as far as the ring
   * shows: past every used descriptor not collected yet. A reconnect restarts the ring there.
   */
  get deviceUsedIndex(): number {
    const at: RingPosition = { ...this.lastUsed };
    for (let seen = 0; seen < this.size; ) {
      const flags = this.desc.load16(DESCRIPTOR_SIZE * at.index + PACKED_DESC_FLAGS);
      if (!isUsed(flags, at.wrap)) break;
      const slots = this.slotsOf.get(this.desc.getU16(DESCRIPTOR_SIZE * at.index + PACKED_DESC_ID));
      if (slots === undefined) break;
      advance(at, slots, this.size);
      seen += slots;
    }
    return encodePosition(at);
  }

  /**
   * Adds one chain and makes it available (head flags last). Returns its buffer id, or null when there
   * are not enough free slots. Readable buffers must come before writable ones.
   */
  add(buffers: readonly DriverBuffer[], options: AddOptions = {}): number | null {
    const tableGpa = checkAddArguments(buffers, options);
    const needed = tableGpa !== undefined ? 1 : buffers.length;
    if (needed > this.freeSlots || this.freeIds.length === 0) return null;
    const id = this.freeIds.pop()!;
    this.allocatedIds.add(id);
    let chain: RawPackedDescriptorFields[];
    if (tableGpa !== undefined) {
      buffers.forEach((buffer, i) => {
        this.writeDescriptorAt(tableGpa + DESCRIPTOR_SIZE * i, {
          addr: buffer.gpa,
          len: buffer.len,
          id: 0,
          flags: buffer.writable ? VRING_DESC_F_WRITE : 0,
        });
      });
      chain = [
        {
          addr: tableGpa,
          len: DESCRIPTOR_SIZE * buffers.length,
          id,
          flags: VRING_DESC_F_INDIRECT,
        },
      ];
    } else {
      const last = buffers.length - 1;
      chain = buffers.map((buffer, i) => ({
        addr: buffer.gpa,
        len: buffer.len,
        id,
        flags: (buffer.writable ? VRING_DESC_F_WRITE : 0) | (i < last ? VRING_DESC_F_NEXT : 0),
      }));
    }
    this.keepChain(id, chain);
    this.publishChain(chain);
    return id;
  }

  /** Remembers an added chain's descriptors (reusing the id's previous record when it is long enough). */
  private keepChain(id: number, chain: readonly RawPackedDescriptorFields[]): void {
    let kept = this.addedChains[id];
    if (kept === undefined || kept.length < 3 * chain.length) {
      kept = new Float64Array(3 * chain.length);
      this.addedChains[id] = kept;
    }
    chain.forEach((fields, i) => {
      kept[3 * i] = Number(fields.addr);
      kept[3 * i + 1] = fields.len;
      kept[3 * i + 2] = fields.flags;
    });
  }

  /**
   * Whether the device wants a kick for what was made available since the last call: DISABLE never,
   * ENABLE always, DESC (EVENT_IDX) iff the avail position passed the device's off_wrap.
   */
  needsKick(): boolean {
    const added = this.addedSinceKick;
    this.addedSinceKick = 0;
    if (added === 0) return false;
    // Flags first, then off_wrap (the device writes them in the other order).
    const flags = this.deviceEvent.load16(EVENT_FLAGS) & 3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return true;
    return packedNeedEvent(
      this.deviceEvent.load16(EVENT_OFF_WRAP),
      this.nextAvail,
      added,
      this.size,
    );
  }

  /** The next used element, freeing its slots and id; null when none. Throws EBADRING on a bad id. */
  getUsed(): UsedElement | null {
    const element: UsedElement = { head: 0, len: 0 };
    return this.consumeUsed(element, false) ? element : null;
  }

  /**
   * The next used element written into `into` (no allocation); false when none. Its chain (one that
   * add made) stays held by the driver, slots and id included, until `republish` hands it to the
   * device again or `release` frees it. Throws EBADRING on an id that is not such a chain in flight.
   */
  getUsedInto(into: UsedElement): boolean {
    return this.consumeUsed(into, true);
  }

  /** Makes a held chain (getUsedInto) available again exactly as add wrote it, head flags last. */
  republish(id: number): void {
    this.checkHeld(id);
    const kept = this.addedChains[id];
    const slots = this.slotsOf.get(id);
    if (kept === undefined || slots === undefined) {
      throw new VirtqueueError("EINVAL", `${id} is not a chain held by the driver`);
    }
    this.held[id] = 0;
    const head = this.nextAvail;
    const cursor = this.cursor;
    cursor.index = head.index;
    cursor.wrap = head.wrap;
    for (let i = 0; i < slots; i++) {
      const flags = (kept[3 * i + 2] ?? 0) | availFlags(cursor.wrap);
      this.writeSlot(cursor.index, kept[3 * i] ?? 0, kept[3 * i + 1] ?? 0, id);
      if (i > 0) this.desc.store16(DESCRIPTOR_SIZE * cursor.index + PACKED_DESC_FLAGS, flags);
      advance(cursor, 1, this.size);
    }
    const headIndex = head.index;
    const headFlags = (kept[2] ?? 0) | availFlags(head.wrap);
    head.index = cursor.index;
    head.wrap = cursor.wrap;
    this.addedSinceKick += slots;
    // Last: the head's flags make the whole chain available.
    this.desc.store16(DESCRIPTOR_SIZE * headIndex + PACKED_DESC_FLAGS, headFlags);
  }

  /** Frees a held chain's slots and id (what getUsed does at once). */
  release(id: number): void {
    this.checkHeld(id);
    this.held[id] = 0;
    this.freeChain(id, this.slotsOf.get(id) ?? 0);
  }

  /** Reads the next used descriptor into `into`; `hold` keeps its chain for republish/release. */
  private consumeUsed(into: UsedElement, hold: boolean): boolean {
    const at = DESCRIPTOR_SIZE * this.lastUsed.index;
    if (!isUsed(this.desc.load16(at + PACKED_DESC_FLAGS), this.lastUsed.wrap)) return false;
    const id = this.desc.getU16(at + PACKED_DESC_ID);
    const len = this.desc.getU32(at + PACKED_DESC_LEN);
    const slots = this.slotsOf.get(id);
    const isHeld = id < this.size && this.held[id] === 1;
    if (slots === undefined || isHeld || (hold && !this.allocatedIds.has(id))) {
      throw new VirtqueueError("EBADRING", `used id ${id} is not a chain in flight`);
    }
    if (hold) this.held[id] = 1;
    else this.freeChain(id, slots);
    advance(this.lastUsed, slots, this.size);
    // As Linux does: while interrupts are wanted, keep off_wrap on the next used slot.
    if (this.eventIdx && this.callbacksEnabled) {
      this.driverEvent.store16(EVENT_OFF_WRAP, encodePosition(this.lastUsed));
    }
    into.head = id;
    into.len = len;
    return true;
  }

  private checkHeld(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.size || this.held[id] !== 1) {
      throw new VirtqueueError("EINVAL", `${id} is not a chain held by the driver`);
    }
  }

  private freeChain(id: number, slots: number): void {
    this.slotsOf.delete(id);
    this.freeSlots += slots;
    if (this.allocatedIds.delete(id)) this.freeIds.push(id);
  }

  /** Writes a ring slot's address, length and id (not its flags) without allocating. */
  private writeSlot(index: number, addr: number, len: number, id: number): void {
    const at = DESCRIPTOR_SIZE * index;
    this.desc.setU32(at + PACKED_DESC_ADDR, addr % 2 ** 32);
    this.desc.setU32(at + PACKED_DESC_ADDR + 4, Math.floor(addr / 2 ** 32));
    this.desc.setU32(at + PACKED_DESC_LEN, len);
    this.desc.setU16(at + PACKED_DESC_ID, id);
  }

  /**
   * Asks for interrupts again (DESC with off_wrap = next used slot, or ENABLE) and reports whether a
   * used descriptor arrived meanwhile: true means call getUsed again before waiting.
   */
  enableCallbacks(): boolean {
    this.callbacksEnabled = true;
    if (this.eventIdx) {
      this.driverEvent.store16(EVENT_OFF_WRAP, encodePosition(this.lastUsed));
      this.driverEvent.store16(EVENT_FLAGS, RING_EVENT_FLAGS_DESC);
    } else {
      this.driverEvent.store16(EVENT_FLAGS, RING_EVENT_FLAGS_ENABLE);
    }
    const flags = this.desc.load16(DESCRIPTOR_SIZE * this.lastUsed.index + PACKED_DESC_FLAGS);
    return isUsed(flags, this.lastUsed.wrap);
  }

  /** Asks the device not to interrupt. */
  disableCallbacks(): void {
    this.callbacksEnabled = false;
    this.driverEvent.store16(EVENT_FLAGS, RING_EVENT_FLAGS_DISABLE);
  }

  // Raw API: writes exactly what it is told (tests build malformed rings).

  /**
   * Writes `descriptors` into consecutive slots from the next avail one, each with the AVAIL/USED bits
   * of its slot's lap, the first one's flags last, and makes the chain available. The id of the last
   * descriptor is the chain's buffer id; it is recorded so getUsed accepts it. No free-slot check.
   */
  publishChain(descriptors: readonly RawPackedDescriptorFields[]): void {
    if (descriptors.length === 0 || descriptors.length > this.size) {
      throw new VirtqueueError("EINVAL", `a chain of ${descriptors.length} descriptors`);
    }
    const head: RingPosition = { ...this.nextAvail };
    const position: RingPosition = { ...this.nextAvail };
    descriptors.forEach((fields, i) => {
      const flags = fields.flags | availFlags(position.wrap);
      this.writeRingDescriptor(position.index, fields, i === 0 ? null : flags);
      advance(position, 1, this.size);
    });
    const first = descriptors[0]!;
    const last = descriptors[descriptors.length - 1]!;
    this.slotsOf.set(last.id, descriptors.length);
    this.freeSlots -= descriptors.length;
    this.nextAvail.index = position.index;
    this.nextAvail.wrap = position.wrap;
    this.addedSinceKick += descriptors.length;
    // Last: the head's flags make the whole chain available.
    this.desc.store16(
      DESCRIPTOR_SIZE * head.index + PACKED_DESC_FLAGS,
      first.flags | availFlags(head.wrap),
    );
  }

  /** Writes descriptor `index` of the ring exactly as given (flags included, no lap bits added). */
  writeDescriptor(index: number, fields: RawPackedDescriptorFields): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) {
      throw new VirtqueueError("EINVAL", `descriptor index ${index} outside the ring`);
    }
    this.writeRingDescriptor(index, fields, fields.flags);
  }

  /** Writes a packed descriptor anywhere in guest memory (indirect tables). */
  writeDescriptorAt(gpa: number, fields: RawPackedDescriptorFields): void {
    this.memory.write(gpa, encodeDescriptor(fields, fields.flags));
  }

  /** Writes the driver event suppression structure as given (tests). */
  setDriverEvent(offWrap: number, flags: number): void {
    this.driverEvent.store16(EVENT_OFF_WRAP, offWrap);
    this.driverEvent.store16(EVENT_FLAGS, flags);
  }

  /** The device event suppression structure: off_wrap and flags as the device last wrote them. */
  deviceEventSuppression(): { offWrap: number; flags: number } {
    const flags = this.deviceEvent.load16(EVENT_FLAGS);
    return { offWrap: this.deviceEvent.load16(EVENT_OFF_WRAP), flags };
  }

  /** Writes a ring slot; `flags` null leaves the slot's flags as they were (a head, published last). */
  private writeRingDescriptor(
    index: number,
    fields: RawPackedDescriptorFields,
    flags: number | null,
  ): void {
    const at = DESCRIPTOR_SIZE * index;
    const bytes = encodeDescriptor(fields, 0);
    this.memory.write(this.addresses.desc + at, bytes.subarray(0, PACKED_DESC_FLAGS));
    if (flags !== null) this.desc.store16(at + PACKED_DESC_FLAGS, flags);
  }
}

function encodeDescriptor(fields: RawPackedDescriptorFields, flags: number): Uint8Array {
  const bytes = new Uint8Array(DESCRIPTOR_SIZE);
  const dv = new DataView(bytes.buffer);
  dv.setBigUint64(0, BigInt(fields.addr), true);
  dv.setUint32(PACKED_DESC_LEN, fields.len, true);
  dv.setUint16(PACKED_DESC_ID, fields.id, true);
  dv.setUint16(PACKED_DESC_FLAGS, flags, true);
  return bytes;
}
