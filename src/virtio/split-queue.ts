/**
 * Split virtqueue, device side: pops descriptor chains from the avail ring (walking them with a budget and
 * reporting every malformation as a chain error), pushes them to the used ring and decides when to signal
 * the driver (EVENT_IDX or flags). Also the split ring layout shared with the driver side. It reaches guest
 * memory only through GuestMemory and knows nothing of vhost-user or of any device type.
 *
 * Memory ordering. The driver runs on other CPUs and writes the rings concurrently; guest RAM is a shared
 * mapping, so every load below reads the ring afresh: ring contents are never cached here. The 16-bit
 * indices and flags that carry the protocol (avail.idx, avail.flags, used_event, used.idx, used.flags,
 * avail_event) go through `Atomics` on a Uint16Array over the mapping, which are sequentially consistent:
 * - pop loads avail.idx first, then ring entries and descriptors. x86 never reorders loads with loads, and
 *   an atomic load is an acquire on weaker CPUs, so we never see an index ahead of the entries it covers.
 * - pushUsed writes the used element, then stores used.idx last: the driver may consume the element as
 *   soon as it sees the index. x86 keeps stores in order; the atomic store is a release elsewhere.
 * - notify and enableNotifications store an index and then load the other side's index or event. That
 *   store→load order is the one x86 does reorder; a sequentially consistent store followed by a
 *   sequentially consistent load forbids it (the full barrier Linux puts in the same places). Without it
 *   the driver and we could each miss the other's update and the guest would wait for ever.
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
  type WalkState,
} from "./queue-base.js";

export {
  DESCRIPTOR_SIZE,
  MAX_INDIRECT_ENTRIES,
  QUEUE_SIZE_MAX,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
} from "./queue-base.js";

/** used.flags: the device asks the driver not to kick. */
export const VRING_USED_F_NO_NOTIFY = 1;
/** avail.flags: the driver asks the device not to interrupt. */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;

/** Alignment the split ring requires of each area (virtio 1.x). */
export const SPLIT_RING_ALIGN = { desc: 16, avail: 2, used: 4 } as const;

/** Byte offsets inside the avail and used areas. */
export const AVAIL_FLAGS = 0;
export const AVAIL_IDX = 2;
export const AVAIL_RING = 4;
export const USED_FLAGS = 0;
export const USED_IDX = 2;
export const USED_RING = 4;
export const USED_ELEM_SIZE = 8;

export interface SplitRingAddresses {
  desc: number;
  avail: number;
  used: number;
}

/** Bytes of each area. The event fields (used_event, avail_event) exist only with EVENT_IDX. */
export function splitRingSizes(size: number, eventIdx: boolean): SplitRingAddresses {
  const event = eventIdx ? 2 : 0;
  return {
    desc: DESCRIPTOR_SIZE * size,
    avail: AVAIL_RING + 2 * size + event,
    used: USED_RING + USED_ELEM_SIZE * size + event,
  };
}

/** Byte offset of used_event in the avail area. */
export function usedEventOffset(size: number): number {
  return AVAIL_RING + 2 * size;
}

/** Byte offset of avail_event in the used area. */
export function availEventOffset(size: number): number {
  return USED_RING + USED_ELEM_SIZE * size;
}

/** EINVAL unless `size` is a power of two in 1..32768. */
export function checkQueueSize(size: number): void {
  if (!Number.isInteger(size) || size < 1 || size > QUEUE_SIZE_MAX || (size & (size - 1)) !== 0) {
    throw new VirtqueueError(
      "EINVAL",
      `queue size ${size} is not a power of two in 1..${QUEUE_SIZE_MAX}`,
    );
  }
}

export function checkRingIndex(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw new VirtqueueError("EINVAL", `${what} ${value} is not a 16-bit index`);
  }
}

/**
 * The EVENT_IDX rule, for either direction: the other side asked to hear about index `event`; we moved
 * our index from `oldIdx` to `newIdx`. Signal iff `event` lies in [oldIdx, newIdx), mod 2^16.
 */
export function vringNeedEvent(event: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - event - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** One ring area resolved once through GuestMemory.view; re-resolved when the memory table changes. */
export class RingArea {
  readonly dv: DataView;
  readonly offset: number;
  /** Present when the area is 2-aligned in its buffer on a little-endian host: enables Atomics. */
  private readonly u16: Uint16Array | null;

  constructor(memory: GuestMemory, gpa: number, length: number, what: string) {
    try {
      const { dv, offset } = memory.view(gpa, length);
      this.dv = dv;
      this.offset = offset;
    } catch (cause) {
      throw new VirtqueueError(
        "EFAULT",
        `${what} area 0x${gpa.toString(16)}+${length} is not in guest memory`,
        { cause },
      );
    }
    const byteOffset = this.dv.byteOffset + this.offset;
    this.u16 =
      LITTLE_ENDIAN_HOST && byteOffset % 2 === 0
        ? new Uint16Array(this.dv.buffer, byteOffset, length >> 1)
        : null;
  }

  /** Sequentially consistent 16-bit load (see the module comment). */
  load16(at: number): number {
    return this.u16 !== null
      ? Atomics.load(this.u16, at >> 1)
      : this.dv.getUint16(this.offset + at, true);
  }

  /** Sequentially consistent 16-bit store (see the module comment). */
  store16(at: number, value: number): void {
    if (this.u16 !== null) Atomics.store(this.u16, at >> 1, value);
    else this.dv.setUint16(this.offset + at, value, true);
  }

  getU16(at: number): number {
    return this.dv.getUint16(this.offset + at, true);
  }

  setU16(at: number, value: number): void {
    this.dv.setUint16(this.offset + at, value, true);
  }

  getU32(at: number): number {
    return this.dv.getUint32(this.offset + at, true);
  }

  setU32(at: number, value: number): void {
    this.dv.setUint32(this.offset + at, value, true);
  }
}

export interface SplitQueueOptions extends QueueNotificationOptions {
  /** From SET_VRING_BASE: the next avail ring entry to pop. */
  lastAvailIndex: number;
  /** The used index to continue from (default: lastAvailIndex, as after SET_VRING_BASE). */
  usedIndex?: number;
}

interface RawDescriptor {
  addr: number;
  len: number;
  flags: number;
  next: number;
}

export class SplitQueue extends QueueBase<SplitRingAddresses> implements DeviceQueue {
  private desc!: RingArea;
  private avail!: RingArea;
  private used!: RingArea;
  private nextAvail: number;
  private nextUsed: number;
  private popped = 0;
  /** Ring slots the popped chains take (DeviceQueue.inFlightSlots). */
  private slotsInFlight = 0;
  /**
   * The chain popped from each avail ring position (index & (size - 1)), for rewind: the chains in
   * flight came from distinct positions, the last `popped` ones before nextAvail.
   */
  private readonly poppedFrom: (ReusableChain | undefined)[];
  /** Used index at the last notify(), and whether it means anything yet (see notify). */
  private signalledUsed: number;
  private signalledUsedValid = false;
  private pushedSinceNotify = false;
  /** Reused for every descriptor read: fields of the descriptor being walked. */
  private readonly raw: RawDescriptor = { addr: 0, len: 0, flags: 0, next: 0 };

  constructor(
    memory: GuestMemory,
    size: number,
    addresses: SplitRingAddresses,
    options: SplitQueueOptions,
  ) {
    checkQueueSize(size);
    checkRingIndex(options.lastAvailIndex, "last avail index");
    const usedIndex = options.usedIndex ?? options.lastAvailIndex;
    checkRingIndex(usedIndex, "used index");
    checkRingAlignment(addresses, SPLIT_RING_ALIGN);
    super(memory, size, addresses, options);
    this.poppedFrom = new Array<ReusableChain | undefined>(size).fill(undefined);
    this.nextAvail = options.lastAvailIndex;
    this.nextUsed = usedIndex;
    this.signalledUsed = usedIndex;
    this.resolve(memory);
  }

  /** Popped and not yet used. */
  get inFlight(): number {
    return this.popped;
  }

  get inFlightSlots(): number {
    return this.slotsInFlight;
  }

  /** The next avail entry to pop (GET_VRING_BASE reports it). */
  get lastAvailIndex(): number {
    return this.nextAvail;
  }

  get usedIndex(): number {
    return this.nextUsed;
  }

  pop(): DescriptorChain | null {
    if (this.brokenReason !== null) throw new VirtqueueError("EBADRING", this.brokenReason);
    // avail.idx once, then the entries it covers (ordering: module comment).
    const availIdx = this.avail.load16(AVAIL_IDX);
    const pending = (availIdx - this.nextAvail) & 0xffff;
    if (pending > this.size) {
      this.brokenReason = `avail index ${availIdx} is ${pending} ahead of ${this.nextAvail} (queue size ${this.size})`;
      throw new VirtqueueError("EBADRING", this.brokenReason);
    }
    if (pending === 0) return null;
    if (this.popped === this.size) {
      // Every head belongs to a chain we hold: the driver published one it does not own. Refusing
      // here also bounds what a driver can make us hold (chain objects, requests) to the queue size.
      this.brokenReason = `avail entry ${this.nextAvail} published while all ${this.size} chains are in flight`;
      throw new VirtqueueError("EBADRING", this.brokenReason);
    }
    const position = this.nextAvail & (this.size - 1);
    const head = this.avail.getU16(AVAIL_RING + 2 * position);
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    this.popped++;
    const state = this.startWalk();
    let error: string | null = null;
    try {
      this.walk(head, state);
    } catch (fault) {
      if (!(fault instanceof ChainFault)) throw fault;
      error = fault.message;
    }
    // A head past the table reads no descriptor, yet the driver gave up an entry for it.
    if (state.chain.slots === 0) state.chain.slots = 1;
    this.slotsInFlight += state.chain.slots;
    this.poppedFrom[position] = state.chain;
    return state.chain.finish(head, error);
  }

  rewind(count: number): void {
    if (!Number.isInteger(count) || count < 0 || count > this.popped) {
      throw new VirtqueueError(
        "EINVAL",
        `cannot rewind ${count} chains with ${this.popped} in flight`,
      );
    }
    for (let i = 1; i <= count; i++) {
      const position = (this.nextAvail - i) & (this.size - 1);
      const reusable = this.poppedFrom[position];
      this.poppedFrom[position] = undefined;
      // Given back unused: its slots and its pool entry are free again.
      if (reusable !== undefined && !reusable.free) {
        this.slotsInFlight -= reusable.slots;
        this.chains.releaseEntry(reusable);
      }
    }
    this.nextAvail = (this.nextAvail - count) & 0xffff;
    this.popped -= count;
  }

  pushUsed(chain: DescriptorChain, writtenLen: number): void {
    if (this.popped === 0) throw new VirtqueueError("EINVAL", "pushUsed with no chain in flight");
    checkWrittenLength(writtenLen);
    if (!Number.isInteger(chain.head) || chain.head < 0 || chain.head > 0xffff) {
      throw new VirtqueueError("EINVAL", `chain head ${chain.head} is not a ring index`);
    }
    const elem = USED_RING + USED_ELEM_SIZE * (this.nextUsed & (this.size - 1));
    this.used.setU32(elem, chain.head);
    this.used.setU32(elem + 4, writtenLen);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    // Last: publishing the index hands the element to the driver.
    this.used.store16(USED_IDX, this.nextUsed);
    this.popped--;
    this.pushedSinceNotify = true;
    const reusable = this.chains.popped(chain);
    if (reusable !== undefined) {
      this.slotsInFlight -= reusable.slots;
      this.chains.releaseEntry(reusable);
    }
    // A chain the pool did not hand out counts no slots: none are left once nothing is in flight.
    if (this.popped === 0) this.slotsInFlight = 0;
  }

  /**
   * Signals the driver when something was pushed since the last call and the driver wants to hear:
   * - NOTIFY_ON_EMPTY: always when the queue has run dry (nothing in flight, avail ring empty).
   * - without EVENT_IDX: unless avail.flags has NO_INTERRUPT (a hint the driver may ignore us on).
   * - with EVENT_IDX: iff the used index crossed used_event since the last call (vringNeedEvent). After
   *   construction or remap the previous value is unknown (another backend may have run the ring), so
   *   the first decision signals: a spurious interrupt is harmless, a missed one hangs the guest.
   * Every call records the current used index as "old", signalled or not, so that the next decision
   * only looks at what was pushed in between.
   */
  notify(): void {
    if (!this.pushedSinceNotify) return;
    this.pushedSinceNotify = false;
    const oldUsed = this.signalledUsed;
    const oldValid = this.signalledUsedValid;
    this.signalledUsed = this.nextUsed;
    this.signalledUsedValid = true;
    if (this.needsNotification(oldUsed, oldValid)) this.signal();
  }

  /**
   * Without EVENT_IDX the driver reads used.flags before kicking. With EVENT_IDX it kicks when its avail
   * index crosses avail_event: leaving avail_event where it is already suppresses further kicks once the
   * driver passed it, so disabling writes nothing.
   */
  disableNotifications(): void {
    if (!this.eventIdx) this.used.store16(USED_FLAGS, VRING_USED_F_NO_NOTIFY);
  }

  /**
   * Asks for a kick on the next buffer (used.flags cleared, or avail_event = next entry to pop), then
   * re-reads avail.idx: a buffer added before the driver could see our request came without a kick, so
   * the caller must process again when this returns true.
   */
  enableNotifications(): boolean {
    if (this.eventIdx) this.used.store16(availEventOffset(this.size), this.nextAvail);
    else this.used.store16(USED_FLAGS, 0);
    if (this.brokenReason !== null) return false;
    return this.avail.load16(AVAIL_IDX) !== this.nextAvail;
  }

  private needsNotification(oldUsed: number, oldValid: boolean): boolean {
    if (
      this.notifyOnEmpty &&
      this.popped === 0 &&
      this.avail.load16(AVAIL_IDX) === this.nextAvail
    ) {
      return true;
    }
    if (!this.eventIdx) {
      return (this.avail.load16(AVAIL_FLAGS) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
    }
    if (!oldValid) return true;
    const usedEvent = this.avail.load16(usedEventOffset(this.size));
    return vringNeedEvent(usedEvent, this.nextUsed, oldUsed);
  }

  protected resolve(memory: GuestMemory): void {
    const sizes = splitRingSizes(this.size, this.eventIdx);
    const desc = new RingArea(memory, this.addresses.desc, sizes.desc, "descriptor table");
    const avail = new RingArea(memory, this.addresses.avail, sizes.avail, "avail ring");
    const used = new RingArea(memory, this.addresses.used, sizes.used, "used ring");
    this.desc = desc;
    this.avail = avail;
    this.used = used;
    this.signalledUsedValid = false;
  }

  /**
   * Walks the chain at `head` into `state`, throwing ChainFault on the first malformation. The budget
   * (ttl) is the table length: a chain visiting more entries than its table holds has a loop.
   */
  private walk(head: number, state: WalkState): void {
    if (head >= this.size) {
      throw new ChainFault(CHAIN_ERROR.headOutOfRange, `head ${head}, queue size ${this.size}`);
    }
    const memory = this.currentMemory;
    const raw = this.raw;
    let tableSize = this.size;
    let ttl = this.size;
    /** Set while walking an indirect table: its address, and whether tableWindow holds it. */
    let indirectGpa = -1;
    let indirectInWindow = false;
    const table = this.tableWindow;
    let index = head;
    for (;;) {
      if (ttl-- === 0) {
        throw new ChainFault(CHAIN_ERROR.loop, `more than ${tableSize} descriptors`);
      }
      if (indirectGpa < 0) {
        this.readDescriptor(this.desc.dv, this.desc.offset + DESCRIPTOR_SIZE * index);
        // Each descriptor of the table is a ring slot the driver frees when the chain is used.
        state.chain.slots++;
      } else if (indirectInWindow) {
        this.readDescriptor(table.dv, table.offset + DESCRIPTOR_SIZE * index);
      } else {
        memory.read(indirectGpa + DESCRIPTOR_SIZE * index, this.entry);
        this.readDescriptor(this.entryView, 0);
      }
      if (raw.flags & VRING_DESC_F_INDIRECT) {
        // Only reachable with INDIRECT negotiated, so the nested check may come first.
        if (indirectGpa >= 0) {
          throw new ChainFault(CHAIN_ERROR.nestedIndirect, "INDIRECT flag in a table");
        }
        this.checkIndirect(raw);
        indirectGpa = raw.addr;
        indirectInWindow = memory.locate(raw.addr, raw.len, table);
        tableSize = raw.len / DESCRIPTOR_SIZE;
        ttl = tableSize;
        index = 0;
        continue;
      }
      this.addBuffer(raw, state, "descriptor", index);
      if ((raw.flags & VRING_DESC_F_NEXT) === 0) return;
      if (raw.next >= tableSize) {
        throw new ChainFault(
          CHAIN_ERROR.nextOutOfRange,
          `next ${raw.next}, table size ${tableSize}`,
        );
      }
      index = raw.next;
    }
  }

  /** Loads the descriptor at `offset` of `dv` into `raw`; addr is -1 when it is 2^53 or more. */
  private readDescriptor(dv: DataView, offset: number): void {
    const raw = this.raw;
    raw.addr = readDescriptorAddress(dv, offset);
    raw.len = dv.getUint32(offset + 8, true);
    raw.flags = dv.getUint16(offset + 12, true);
    raw.next = dv.getUint16(offset + 14, true);
  }
}
