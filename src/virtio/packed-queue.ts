/**
 * Packed virtqueue (VIRTIO_F_RING_PACKED), device side: pops descriptor chains from the descriptor ring
 * by the avail/used flags and wrap counters (walking chains with a budget, reporting every malformation
 * as a chain error), writes used descriptors back in the same ring and decides when to signal the driver
 * through the driver's event suppression structure. Also the packed ring layout shared with the driver
 * side. It reaches guest memory only through GuestMemory and knows nothing of vhost-user or any device.
 *
 * Memory ordering (the split ring's rules in split-queue.ts apply; RingArea gives the atomics):
 * - pop loads a descriptor's flags first (atomic, an acquire), then its addr/len/id and the rest of the
 *   chain. The driver writes the head's flags last, so the flags make everything before them visible.
 * - pushUsed writes id and len, then stores flags last: the driver owns the element once it sees them.
 * - notify and enableNotifications store (flags, event suppression) and then load the other side's
 *   state; sequentially consistent atomics keep that store→load order (the full barrier).
 * - Event suppression: off_wrap is written before flags and read after them.
 * @module
 */

import type { GuestMemory } from "./guest-memory.js";
import { CHAIN_ERROR, type DescriptorChain, type DeviceQueue, VirtqueueError } from "./queue.js";
import {
  ChainFault,
  checkRingAlignment,
  checkWrittenLength,
  DESCRIPTOR_SIZE,
  QUEUE_SIZE_MAX,
  QueueBase,
  type QueueNotificationOptions,
  type ReusableChain,
  readDescriptorAddress,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  type WalkState,
} from "./queue-base.js";
import { checkRingIndex, RingArea, vringNeedEvent } from "./split-queue.js";

/** Descriptor flags only the packed ring has: the driver's and the device's wrap marks. */
export const VRING_PACKED_DESC_F_AVAIL = 1 << 7;
export const VRING_PACKED_DESC_F_USED = 1 << 15;

/** Event suppression flags (desc_event_flags). DESC is only valid with EVENT_IDX. */
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
export const RING_EVENT_FLAGS_DESC = 2;

/** Byte offsets inside a packed descriptor and an event suppression structure. */
export const PACKED_DESC_ADDR = 0;
export const PACKED_DESC_LEN = 8;
export const PACKED_DESC_ID = 12;
export const PACKED_DESC_FLAGS = 14;
export const EVENT_OFF_WRAP = 0;
export const EVENT_FLAGS = 2;
export const EVENT_SUPPRESSION_SIZE = 4;

/** Bit 15 of an index carries the wrap counter (SET/GET_VRING_BASE, off_wrap). */
export const WRAP_BIT = 0x8000;
/** Packed rings hold at most 2^15 descriptors (the index leaves bit 15 to the wrap counter). */
export const PACKED_QUEUE_SIZE_MAX = QUEUE_SIZE_MAX;
export const PACKED_RING_ALIGN = { desc: 16, driver: 4, device: 4 } as const;

/** The three areas: descriptor ring, driver event suppression, device event suppression. */
export interface PackedRingAddresses {
  desc: number;
  driver: number;
  device: number;
}

export function packedRingSizes(size: number): PackedRingAddresses {
  return {
    desc: DESCRIPTOR_SIZE * size,
    driver: EVENT_SUPPRESSION_SIZE,
    device: EVENT_SUPPRESSION_SIZE,
  };
}

/** EINVAL unless `size` is in 1..32768 (packed rings need not be a power of two). */
export function checkPackedQueueSize(size: number): void {
  if (!Number.isInteger(size) || size < 1 || size > PACKED_QUEUE_SIZE_MAX) {
    throw new VirtqueueError(
      "EINVAL",
      `packed queue size ${size} is not in 1..${PACKED_QUEUE_SIZE_MAX}`,
    );
  }
}

/** A ring position: index in the ring and the wrap counter that goes with it. */
export interface RingPosition {
  index: number;
  wrap: boolean;
}

/** Splits a 16-bit `index | wrap << 15` value; EINVAL when the index is outside the ring. */
export function decodePosition(value: number, size: number, what: string): RingPosition {
  checkRingIndex(value, what);
  const index = value & ~WRAP_BIT;
  if (index >= size) {
    throw new VirtqueueError("EINVAL", `${what} ${index} is outside a ring of ${size}`);
  }
  return { index, wrap: (value & WRAP_BIT) !== 0 };
}

export function encodePosition(position: RingPosition): number {
  return position.index | (position.wrap ? WRAP_BIT : 0);
}

/** Moves `position` forward by `count` slots (count <= size), flipping the wrap counter at the end. */
export function advance(position: RingPosition, count: number, size: number): void {
  position.index += count;
  if (position.index >= size) {
    position.index -= size;
    position.wrap = !position.wrap;
  }
}

/** Moves `position` back by `count` slots (count <= size). */
export function retreat(position: RingPosition, count: number, size: number): void {
  position.index -= count;
  if (position.index < 0) {
    position.index += size;
    position.wrap = !position.wrap;
  }
}

/** AVAIL and USED bits as the driver sets them to make a descriptor available in lap `wrap`. */
export function availFlags(wrap: boolean): number {
  return wrap ? VRING_PACKED_DESC_F_AVAIL : VRING_PACKED_DESC_F_USED;
}

/** AVAIL and USED bits as the device sets them to mark a descriptor used in lap `wrap`. */
export function usedFlags(wrap: boolean): number {
  return wrap ? VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED : 0;
}

/** Available in lap `wrap`: AVAIL equals the wrap counter and USED differs from it. */
export function isAvailable(flags: number, wrap: boolean): boolean {
  const avail = (flags & VRING_PACKED_DESC_F_AVAIL) !== 0;
  const used = (flags & VRING_PACKED_DESC_F_USED) !== 0;
  return avail === wrap && used !== wrap;
}

/** Used in lap `wrap`: AVAIL and USED both equal the wrap counter. */
export function isUsed(flags: number, wrap: boolean): boolean {
  const avail = (flags & VRING_PACKED_DESC_F_AVAIL) !== 0;
  const used = (flags & VRING_PACKED_DESC_F_USED) !== 0;
  return avail === wrap && used === wrap;
}

/**
 * The packed EVENT_IDX rule, for either direction: we moved our position forward by `moved` slots to
 * `now`; the other side asked to hear when position `offWrap` (index | wrap << 15) is passed. An event
 * in the previous lap counts `size` slots further back. Moving a whole ring or more always signals.
 */
export function packedNeedEvent(
  offWrap: number,
  now: RingPosition,
  moved: number,
  size: number,
): boolean {
  if (moved >= size) return true;
  let event = offWrap & ~WRAP_BIT;
  if (((offWrap & WRAP_BIT) !== 0) !== now.wrap) event -= size;
  return vringNeedEvent(event & 0xffff, now.index, (now.index - moved) & 0xffff);
}

export interface PackedQueueOptions extends QueueNotificationOptions {
  /** From SET_VRING_BASE: next descriptor to pop | avail wrap counter << 15. */
  lastAvailIndex: number;
  /** Next used descriptor to write | used wrap counter << 15 (default: lastAvailIndex). */
  usedIndex?: number;
  /**
   * Where each used element is announced before it is written: the 32-bit word at `offset` gets the
   * used position before it (low half) and after it (high half), so that after a crash
   * `recoverUsedPosition` can tell whether the element was written. Absent: no log.
   */
  usedLog?: { readonly view: DataView; readonly offset: number };
}

/**
 * The used position of a packed ring whose device died, from its position log word (see
 * PackedQueueOptions.usedLog) and the flags of the descriptor it names: the element being written at
 * `from` was written if the driver sees it as used in that lap, or has already made the slot
 * available again in the next one; else the position is still `from`.
 */
export function recoverUsedPosition(
  logWord: number,
  size: number,
  flagsAt: (index: number) => number,
): number {
  const from = logWord & 0xffff;
  const to = logWord >>> 16;
  if (from === to) return from;
  const at = decodePosition(from, size, "logged used position");
  const flags = flagsAt(at.index);
  const written = isUsed(flags, at.wrap) || isAvailable(flags, !at.wrap);
  if (written) decodePosition(to, size, "logged used position");
  return written ? to : from;
}

/**
 * The chains popped and not yet used, with the ring slots each took: an unordered list (each chain
 * knows its place, so removal is a swap) plus a pop counter for rewind's "latest first". Nothing is
 * allocated per chain.
 */
class InFlightChains {
  readonly #list: ReusableChain[] = [];
  #count = 0;
  #popCounter = 0;

  get size(): number {
    return this.#count;
  }

  add(reusable: ReusableChain, slots: number): void {
    reusable.slots = slots;
    reusable.popOrder = this.#popCounter++;
    reusable.listIndex = this.#count;
    this.#list[this.#count++] = reusable;
  }

  has(reusable: ReusableChain): boolean {
    return reusable.listIndex < this.#count && this.#list[reusable.listIndex] === reusable;
  }

  remove(reusable: ReusableChain): void {
    const last = this.#list[--this.#count] as ReusableChain;
    this.#list[reusable.listIndex] = last;
    last.listIndex = reusable.listIndex;
    reusable.listIndex = -1;
  }

  /** The `count` chains popped last, latest first (rewind: rare, so it may allocate). */
  latest(count: number): ReusableChain[] {
    return this.#list
      .slice(0, this.#count)
      .sort((a, b) => b.popOrder - a.popOrder)
      .slice(0, count);
  }
}

interface RawPackedDescriptor {
  addr: number;
  len: number;
  id: number;
  flags: number;
}

export class PackedQueue extends QueueBase<PackedRingAddresses> implements DeviceQueue {
  private desc!: RingArea;
  private driverEvent!: RingArea;
  private deviceEvent!: RingArea;
  private readonly nextAvail: RingPosition;
  private readonly nextUsed: RingPosition;
  /** Chains popped and not yet used, in pop order, with the ring slots each took. */
  private readonly inFlightChains = new InFlightChains();
  private slotsInFlight = 0;
  /** Used slots written since the last notify(), and whether the last decision is known (see notify). */
  private usedSinceNotify = 0;
  private signalledValid = false;
  private readonly raw: RawPackedDescriptor = { addr: 0, len: 0, id: 0, flags: 0 };
  private readonly usedLog: { readonly view: DataView; readonly offset: number } | null;

  constructor(
    memory: GuestMemory,
    size: number,
    addresses: PackedRingAddresses,
    options: PackedQueueOptions,
  ) {
    checkPackedQueueSize(size);
    const nextAvail = decodePosition(options.lastAvailIndex, size, "last avail index");
    const nextUsed = decodePosition(
      options.usedIndex ?? options.lastAvailIndex,
      size,
      "used index",
    );
    checkRingAlignment(addresses, PACKED_RING_ALIGN);
    super(memory, size, addresses, options);
    this.nextAvail = nextAvail;
    this.nextUsed = nextUsed;
    this.usedLog = options.usedLog ?? null;
    const start = encodePosition(nextUsed);
    this.usedLog?.view.setUint32(this.usedLog.offset, (start | (start << 16)) >>> 0, true);
    this.resolve(memory);
  }

  get inFlight(): number {
    return this.inFlightChains.size;
  }

  get inFlightSlots(): number {
    return this.slotsInFlight;
  }

  /** Next descriptor to pop | avail wrap counter << 15 (GET_VRING_BASE, low half). */
  get lastAvailIndex(): number {
    return encodePosition(this.nextAvail);
  }

  /** Next used descriptor to write | used wrap counter << 15. */
  get usedIndex(): number {
    return encodePosition(this.nextUsed);
  }

  /** The vhost-user vring base of a packed ring: avail position low, used position high. */
  get vringBase(): number {
    return (this.lastAvailIndex | (this.usedIndex << 16)) >>> 0;
  }

  pop(): DescriptorChain | null {
    if (this.brokenReason !== null) throw new VirtqueueError("EBADRING", this.brokenReason);
    // Flags first, alone (ordering: module comment); the rest of the chain only once it is available.
    const headFlags = this.desc.load16(DESCRIPTOR_SIZE * this.nextAvail.index + PACKED_DESC_FLAGS);
    if (!isAvailable(headFlags, this.nextAvail.wrap)) return null;
    const budget = this.size - this.slotsInFlight;
    if (budget === 0) {
      // Every slot belongs to a chain we hold: the driver reused one it does not own.
      this.brokenReason = `descriptor ${this.nextAvail.index} made available while all ${this.size} slots are in flight`;
      throw new VirtqueueError("EBADRING", this.brokenReason);
    }
    const state = this.startWalk();
    let error: string | null = null;
    let slots = 0;
    let id = 0;
    for (;;) {
      if (slots === budget) {
        error ??= `${CHAIN_ERROR.loop}: more than ${budget} descriptors`;
        break;
      }
      const at = DESCRIPTOR_SIZE * this.nextAvail.index;
      this.readDescriptor(this.desc.dv, this.desc.offset + at);
      advance(this.nextAvail, 1, this.size);
      slots++;
      // The buffer id is the one in the chain's last descriptor.
      id = this.raw.id;
      const flags = this.raw.flags;
      if (error === null) {
        try {
          this.take(state, slots - 1);
        } catch (fault) {
          if (!(fault instanceof ChainFault)) throw fault;
          error = fault.message;
        }
      }
      // A malformed chain is still skipped to its end, so the next pop starts on a chain head.
      if ((flags & VRING_DESC_F_NEXT) === 0) break;
    }
    this.inFlightChains.add(state.chain, slots);
    this.slotsInFlight += slots;
    return state.chain.finish(id, error);
  }

  rewind(count: number): void {
    if (!Number.isInteger(count) || count < 0 || count > this.inFlightChains.size) {
      throw new VirtqueueError(
        "EINVAL",
        `cannot rewind ${count} chains with ${this.inFlightChains.size} in flight`,
      );
    }
    for (const reusable of this.inFlightChains.latest(count)) {
      retreat(this.nextAvail, reusable.slots, this.size);
      this.slotsInFlight -= reusable.slots;
      this.inFlightChains.remove(reusable);
      this.chains.releaseEntry(reusable);
    }
  }

  pushUsed(chain: DescriptorChain, writtenLen: number): void {
    const reusable = this.chains.popped(chain);
    if (reusable === undefined || !this.inFlightChains.has(reusable)) {
      throw new VirtqueueError("EINVAL", "pushUsed with a chain not in flight on this queue");
    }
    const slots = reusable.slots;
    checkWrittenLength(writtenLen);
    const at = DESCRIPTOR_SIZE * this.nextUsed.index;
    const log = this.usedLog;
    if (log !== null) {
      const from = encodePosition(this.nextUsed);
      let index = this.nextUsed.index + slots;
      let wrap = this.nextUsed.wrap;
      if (index >= this.size) {
        index -= this.size;
        wrap = !wrap;
      }
      const to = index | (wrap ? WRAP_BIT : 0);
      log.view.setUint32(log.offset, (from | (to << 16)) >>> 0, true);
    }
    this.desc.setU16(at + PACKED_DESC_ID, chain.head);
    this.desc.setU32(at + PACKED_DESC_LEN, writtenLen);
    // Last: the flags hand the element to the driver. WRITE says the device wrote into the buffer.
    this.desc.store16(
      at + PACKED_DESC_FLAGS,
      usedFlags(this.nextUsed.wrap) | (writtenLen > 0 ? VRING_DESC_F_WRITE : 0),
    );
    // One used element stands for the whole chain: skip the slots it took.
    advance(this.nextUsed, slots, this.size);
    this.inFlightChains.remove(reusable);
    this.slotsInFlight -= slots;
    this.usedSinceNotify += slots;
    this.chains.releaseEntry(reusable);
  }

  /**
   * Signals the driver when something was used since the last call and its event suppression asks
   * for it: ENABLE always, DISABLE never, DESC (EVENT_IDX) iff the used position passed off_wrap since
   * the last call. After construction or remap the first DESC decision signals (the previous state is
   * unknown; a spurious interrupt is harmless, a missed one hangs the guest). NOTIFY_ON_EMPTY signals
   * whenever the queue has run dry.
   */
  notify(): void {
    if (this.usedSinceNotify === 0) return;
    const moved = this.usedSinceNotify;
    const known = this.signalledValid;
    this.usedSinceNotify = 0;
    this.signalledValid = true;
    if (this.needsNotification(moved, known)) this.signal();
  }

  /** The driver reads the device event suppression flags before kicking. */
  disableNotifications(): void {
    this.deviceEvent.store16(EVENT_FLAGS, RING_EVENT_FLAGS_DISABLE);
  }

  /**
   * Asks for a kick on the next descriptor (flags ENABLE, or DESC with off_wrap = next to pop), then
   * looks at that descriptor again: one made available before the driver could see our request came
   * without a kick, so the caller must process again when this returns true.
   */
  enableNotifications(): boolean {
    if (this.eventIdx) {
      this.deviceEvent.store16(EVENT_OFF_WRAP, encodePosition(this.nextAvail));
      this.deviceEvent.store16(EVENT_FLAGS, RING_EVENT_FLAGS_DESC);
    } else {
      this.deviceEvent.store16(EVENT_FLAGS, RING_EVENT_FLAGS_ENABLE);
    }
    if (this.brokenReason !== null) return false;
    return this.headAvailable();
  }

  private headAvailable(): boolean {
    const flags = this.desc.load16(DESCRIPTOR_SIZE * this.nextAvail.index + PACKED_DESC_FLAGS);
    return isAvailable(flags, this.nextAvail.wrap);
  }

  private needsNotification(moved: number, known: boolean): boolean {
    if (this.notifyOnEmpty && this.inFlightChains.size === 0 && !this.headAvailable()) return true;
    const flags = this.driverEvent.load16(EVENT_FLAGS) & 3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    // ENABLE, DESC without EVENT_IDX (not allowed, so be safe) or the reserved value: signal.
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx || !known) return true;
    const offWrap = this.driverEvent.load16(EVENT_OFF_WRAP);
    return packedNeedEvent(offWrap, this.nextUsed, moved, this.size);
  }

  protected resolve(memory: GuestMemory): void {
    const sizes = packedRingSizes(this.size);
    const desc = new RingArea(memory, this.addresses.desc, sizes.desc, "descriptor ring");
    const driver = new RingArea(
      memory,
      this.addresses.driver,
      sizes.driver,
      "driver event suppression",
    );
    const device = new RingArea(
      memory,
      this.addresses.device,
      sizes.device,
      "device event suppression",
    );
    this.desc = desc;
    this.driverEvent = driver;
    this.deviceEvent = device;
    this.signalledValid = false;
  }

  /** Checks the ring descriptor in `raw` (the `position`-th of its chain) and adds its buffers. */
  private take(state: WalkState, position: number): void {
    const raw = this.raw;
    if (raw.flags & VRING_DESC_F_INDIRECT) {
      this.checkIndirect(raw);
      // Every entry of a packed table is in the chain: a table too long is refused unread.
      const count = raw.len / DESCRIPTOR_SIZE;
      if (state.chain.length + count > this.maxChainLength) {
        throw new ChainFault(
          CHAIN_ERROR.tooManyDescriptors,
          `more than ${this.maxChainLength} (table of ${count})`,
        );
      }
      this.walkIndirect(raw.addr, count, state);
      return;
    }
    this.addBuffer(raw, state, "descriptor", position);
  }

  /**
   * An indirect table holds `count` packed descriptors in order: NEXT and the id are ignored there,
   * WRITE is the only flag that counts, INDIRECT is nesting (refused).
   */
  private walkIndirect(gpa: number, count: number, state: WalkState): void {
    const memory = this.currentMemory;
    const table = this.tableWindow;
    const inWindow = memory.locate(gpa, count * DESCRIPTOR_SIZE, table);
    for (let i = 0; i < count; i++) {
      if (inWindow) {
        this.readDescriptor(table.dv, table.offset + DESCRIPTOR_SIZE * i);
      } else {
        memory.read(gpa + DESCRIPTOR_SIZE * i, this.entry);
        this.readDescriptor(this.entryView, 0);
      }
      if (this.raw.flags & VRING_DESC_F_INDIRECT) {
        throw new ChainFault(CHAIN_ERROR.nestedIndirect, `INDIRECT flag in table entry ${i}`);
      }
      this.addBuffer(this.raw, state, "table entry", i);
    }
  }

  /** Loads the packed descriptor at `offset` of `dv` into `raw`; addr is -1 when it is 2^53 or more. */
  private readDescriptor(dv: DataView, offset: number): void {
    const raw = this.raw;
    raw.addr = readDescriptorAddress(dv, offset + PACKED_DESC_ADDR);
    raw.len = dv.getUint32(offset + PACKED_DESC_LEN, true);
    raw.id = dv.getUint16(offset + PACKED_DESC_ID, true);
    raw.flags = dv.getUint16(offset + PACKED_DESC_FLAGS, true);
  }
}
