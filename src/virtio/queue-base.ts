/**
 * What the split and packed device queues share: the negotiated options and their fields, the ring
 * address alignment check, and the checks a chain's buffers and indirect tables must pass. It knows no
 * ring layout (split-queue.ts and packed-queue.ts own theirs) and nothing of vhost-user or any device.
 * @module
 */

import { emptyWindow, type GuestMemory, type MemoryWindow } from "./guest-memory.js";
import {
  CHAIN_ERROR,
  type ChainErrorKind,
  type Descriptor,
  type DescriptorChain,
  VirtqueueError,
} from "./queue.js";

/** Descriptor flags both ring layouts use (same bits). */
export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;
export const VRING_DESC_F_INDIRECT = 4;
export const DESCRIPTOR_SIZE = 16;
export const QUEUE_SIZE_MAX = 32768;
/**
 * Most entries an indirect table may claim: no chain can be longer than the largest queue. What a
 * walk reads is bounded by the chain length limit (QueueBase.maxChainLength), not by this.
 */
export const MAX_INDIRECT_ENTRIES = QUEUE_SIZE_MAX;

/** The options both queue kinds take; each adds its own ring indices. */
export interface QueueNotificationOptions {
  /** VIRTIO_F_RING_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_RING_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** VIRTIO_F_NOTIFY_ON_EMPTY negotiated. */
  notifyOnEmpty?: boolean;
  /** Signal the driver (writes the call eventfd). */
  notify: () => void;
  /**
   * Longest chain the device takes, in buffer descriptors (indirect tables flattened): longer
   * chains are refused as malformed. Default and upper bound: the queue size, the spec's limit
   * ("A driver MUST NOT create a descriptor chain longer than the Queue Size of the device").
   */
  maxChainLength?: number;
}

/** EINVAL unless every area's guest address is a non-negative safe integer aligned as `align` says. */
export function checkRingAlignment<Area extends string>(
  addresses: Readonly<Record<Area, number>>,
  align: Readonly<Record<Area, number>>,
): void {
  for (const area of Object.keys(align) as Area[]) {
    const gpa = addresses[area];
    if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa % align[area] !== 0) {
      throw new VirtqueueError("EINVAL", `${area} address ${gpa} is not ${align[area]}-aligned`);
    }
  }
}

/** EINVAL unless `writtenLen` is a 32-bit length. */
export function checkWrittenLength(writtenLen: number): void {
  if (!Number.isInteger(writtenLen) || writtenLen < 0 || writtenLen > 0xffffffff) {
    throw new VirtqueueError("EINVAL", `written length ${writtenLen} is not a 32-bit length`);
  }
}

/** A malformed chain: caught by pop and reported as the chain's error, never thrown to the caller. */
export class ChainFault extends Error {
  constructor(kind: ChainErrorKind, details: string) {
    super(`${kind}: ${details}`);
  }
}

/** The fields of a descriptor the chain checks look at; addr is -1 when it is 2^53 or more. */
export interface DescriptorFields {
  addr: number;
  len: number;
  flags: number;
}

/** A DescriptorChain as a queue fills it in. */
interface MutableChain {
  head: number;
  descriptors: Descriptor[];
  error: string | null;
}

/**
 * One reusable chain: the plain DescriptorChain object pop() hands out (only head, descriptors and
 * error, so it compares like any chain) and the descriptor objects it held before, refilled by the
 * next walk once the chain went back through pushUsed (or rewind).
 */
export class ReusableChain {
  readonly chain: MutableChain = { head: 0, descriptors: [], error: null };
  /** In the pool's free list (not popped). */
  free = false;
  /** Ring slots the chain takes (DeviceQueue.ringSlots), counted by the walk. */
  slots = 0;
  /** Packed rings' in-flight bookkeeping (InFlightChains): pop order, list place. */
  popOrder = 0;
  listIndex = -1;
  /** Every descriptor object the chain ever held: chain.descriptors[i] is spare[i]. */
  readonly #spare: Descriptor[] = [];
  #count = 0;

  /** Descriptors appended by the current walk. */
  get length(): number {
    return this.#count;
  }

  /** Empties the chain for a new walk (its objects stay for reuse). */
  reset(): void {
    this.#count = 0;
    this.slots = 0;
  }

  /** Appends a descriptor, reusing an object of an earlier walk when there is one. */
  append(addr: number, len: number, writable: boolean): void {
    const index = this.#count++;
    let descriptor = this.#spare[index];
    if (descriptor === undefined) {
      descriptor = { addr, len, writable };
      this.#spare.push(descriptor);
    } else {
      descriptor.addr = addr;
      descriptor.len = len;
      descriptor.writable = writable;
    }
    if (index >= this.chain.descriptors.length) this.chain.descriptors.push(descriptor);
  }

  /** Ends the walk: `descriptors` holds exactly what was appended; `error` says why it stopped. */
  finish(head: number, error: string | null): DescriptorChain {
    const chain = this.chain;
    chain.head = head;
    chain.error = error;
    if (chain.descriptors.length !== this.#count) chain.descriptors.length = this.#count;
    return chain;
  }
}

/**
 * The chains of one queue: pop() fills one from here, pushUsed() gives it back, so the steady state
 * creates no chain or descriptor objects. A popped chain is therefore valid until it is pushed (or
 * rewound); a chain object the pool did not hand out is ignored on release.
 */
export class ChainPool {
  /** free[0, freeCount) are free: a stack that never shrinks the array (that would allocate). */
  readonly #free: ReusableChain[] = [];
  #freeCount = 0;
  readonly #owners = new WeakMap<DescriptorChain, ReusableChain>();

  acquire(): ReusableChain {
    let reusable: ReusableChain;
    if (this.#freeCount > 0) {
      reusable = this.#free[--this.#freeCount] as ReusableChain;
    } else {
      reusable = new ReusableChain();
      this.#owners.set(reusable.chain, reusable);
    }
    reusable.free = false;
    reusable.reset();
    return reusable;
  }

  /** The pool entry behind a chain this pool handed out and that is not back yet, else undefined. */
  popped(chain: DescriptorChain): ReusableChain | undefined {
    const reusable = this.#owners.get(chain);
    return reusable === undefined || reusable.free ? undefined : reusable;
  }

  release(chain: DescriptorChain): void {
    const reusable = this.#owners.get(chain);
    if (reusable !== undefined) this.releaseEntry(reusable);
  }

  /** Gives back the pool entry of a popped chain (from `popped`, or a queue's own record of it). */
  releaseEntry(reusable: ReusableChain): void {
    if (reusable.free) return;
    reusable.free = true;
    this.#free[this.#freeCount++] = reusable;
  }
}

/** How chain errors name where a descriptor sits: a ring or table descriptor, or a packed table entry. */
export type DescriptorPlace = "descriptor" | "table entry";

/** What one chain walk has collected so far. */
export interface WalkState {
  chain: ReusableChain;
  total: number;
  seenWritable: boolean;
}

/** The 64-bit address at `offset` of `dv`, or -1 when it is 2^53 or more. */
export function readDescriptorAddress(dv: DataView, offset: number): number {
  const low = dv.getUint32(offset, true);
  const high = dv.getUint32(offset + 4, true);
  return high < 2 ** 21 ? high * 2 ** 32 + low : -1;
}

/**
 * The state and option fields both device queues keep, and the parts of DeviceQueue that do not depend on
 * the ring layout. Subclasses validate their arguments before super() and resolve their areas after it.
 */
export abstract class QueueBase<Addresses extends object> {
  readonly size: number;
  readonly addresses: Readonly<Addresses>;
  protected currentMemory: GuestMemory;
  protected readonly eventIdx: boolean;
  protected readonly indirect: boolean;
  protected readonly notifyOnEmpty: boolean;
  protected readonly signal: () => void;
  /**
   * Longest chain taken, in buffer descriptors: what one pop may walk and keep, however the ring or
   * an indirect table (shared by any number of chains) is laid out.
   */
  protected readonly maxChainLength: number;
  protected brokenReason: string | null = null;
  /** Popped chains are reused once pushed: no objects per pop in the steady state. */
  protected readonly chains = new ChainPool();
  /** The walk of the chain being popped (one pop at a time). */
  protected readonly walkState: WalkState = {
    chain: new ReusableChain(),
    total: 0,
    seenWritable: false,
  };
  /** Where an indirect table lies in guest memory, when in one window (see GuestMemory.locate). */
  protected readonly tableWindow: MemoryWindow = emptyWindow();
  /** Scratch for a descriptor of an indirect table that does not lie in one memory window. */
  protected readonly entry = new Uint8Array(DESCRIPTOR_SIZE);
  protected readonly entryView = new DataView(this.entry.buffer);

  constructor(
    memory: GuestMemory,
    size: number,
    addresses: Addresses,
    options: QueueNotificationOptions,
  ) {
    this.size = size;
    this.addresses = Object.freeze({ ...addresses });
    this.eventIdx = options.eventIdx;
    this.indirect = options.indirect;
    this.notifyOnEmpty = options.notifyOnEmpty ?? false;
    this.signal = options.notify;
    const maxChainLength = options.maxChainLength ?? size;
    if (!Number.isInteger(maxChainLength) || maxChainLength < 1) {
      throw new VirtqueueError("EINVAL", `chain length limit ${maxChainLength} is not positive`);
    }
    this.maxChainLength = Math.min(size, maxChainLength);
    this.currentMemory = memory;
  }

  get memory(): GuestMemory {
    return this.currentMemory;
  }

  /** True once the driver broke the ring; pop() then always throws. */
  get broken(): boolean {
    return this.brokenReason !== null;
  }

  /** DeviceQueue.ringSlots: what the walk counted for a chain still in flight. */
  ringSlots(chain: DescriptorChain): number {
    const reusable = this.chains.popped(chain);
    if (reusable === undefined) {
      throw new VirtqueueError("EINVAL", "ring slots of a chain not in flight on this queue");
    }
    return reusable.slots;
  }

  /** Re-resolves the ring areas in new memory (SET_MEM_TABLE). Throws EFAULT and keeps the old on failure. */
  remap(memory: GuestMemory): void {
    this.resolve(memory);
    this.currentMemory = memory;
  }

  /** Starts the walk of a chain into a chain from the pool. */
  protected startWalk(): WalkState {
    const state = this.walkState;
    state.chain = this.chains.acquire();
    state.total = 0;
    state.seenWritable = false;
    return state;
  }

  /** Resolves the ring areas in `memory`; throws EFAULT without changing anything on failure. */
  protected abstract resolve(memory: GuestMemory): void;

  /** Checks `raw`, which refers to an indirect table (not nested: the caller checks that); throws ChainFault. */
  protected checkIndirect(raw: DescriptorFields): void {
    if (!this.indirect)
      throw new ChainFault(CHAIN_ERROR.indirectNotNegotiated, "INDIRECT flag set");
    if (raw.flags & VRING_DESC_F_NEXT) {
      throw new ChainFault(CHAIN_ERROR.indirectWithNext, "INDIRECT and NEXT both set");
    }
    const count = raw.len / DESCRIPTOR_SIZE;
    if (raw.len === 0 || !Number.isInteger(count) || count > MAX_INDIRECT_ENTRIES) {
      throw new ChainFault(CHAIN_ERROR.indirectBadLength, `${raw.len} bytes`);
    }
    if (raw.addr < 0 || !this.currentMemory.isBacked(raw.addr, raw.len)) {
      throw new ChainFault(CHAIN_ERROR.indirectOutsideMemory, `table of ${raw.len} bytes`);
    }
  }

  /**
   * Checks the buffer descriptor `raw` (entry `index` of its table, named `place` in errors) against
   * the chain so far and appends it. Error texts are only built on failure.
   */
  protected addBuffer(
    raw: DescriptorFields,
    state: WalkState,
    place: DescriptorPlace,
    index: number,
  ): void {
    if (state.chain.length === this.maxChainLength) {
      throw new ChainFault(CHAIN_ERROR.tooManyDescriptors, `more than ${this.maxChainLength}`);
    }
    if (raw.len === 0) throw new ChainFault(CHAIN_ERROR.zeroLength, `${place} ${index}`);
    const writable = (raw.flags & VRING_DESC_F_WRITE) !== 0;
    if (state.seenWritable && !writable) {
      throw new ChainFault(CHAIN_ERROR.readableAfterWritable, `${place} ${index}`);
    }
    state.seenWritable = writable;
    state.total += raw.len;
    if (state.total > 2 ** 32) {
      throw new ChainFault(CHAIN_ERROR.totalTooLong, `${state.total} bytes`);
    }
    if (raw.addr < 0 || !this.currentMemory.isBacked(raw.addr, raw.len)) {
      throw new ChainFault(
        CHAIN_ERROR.bufferOutsideMemory,
        `${place} ${index}: ${raw.addr < 0 ? "address past 2^53" : `0x${raw.addr.toString(16)}+${raw.len}`}`,
      );
    }
    state.chain.append(raw.addr, raw.len, writable);
  }
}
