/**
 * What a device sees of a virtqueue: descriptor chains to pop and a used ring to push them back to.
 * Ring layout and notification rules live in the implementations (split-queue.ts); nothing here knows
 * vhost-user or any device type.
 * @module
 */

import type { GuestMemory } from "./guest-memory.js";

export interface Descriptor {
  addr: number;
  len: number;
  writable: boolean;
}

export interface DescriptorChain {
  /** Id to return in the used ring. */
  readonly head: number;
  /** Indirect tables flattened, in order. */
  readonly descriptors: readonly Descriptor[];
  /** Malformed chain: why (descriptors may be partial). Starts with one of `CHAIN_ERROR`. */
  readonly error: string | null;
}

export interface DeviceQueue {
  readonly size: number;
  /** Current memory (replaced on SET_MEM_TABLE). */
  readonly memory: GuestMemory;
  /**
   * Null when the avail ring is empty. Throws VirtqueueError ("EBADRING") when the ring is broken.
   * The chain object is reused: it is valid until it goes to pushUsed (or back through rewind).
   */
  pop(): DescriptorChain | null;
  /** Give back the last `count` popped chains (unused). */
  rewind(count: number): void;
  pushUsed(chain: DescriptorChain, writtenLen: number): void;
  /**
   * Ring slots `chain` (popped, not yet used or given back) takes from the driver until it is used:
   * what the driver frees when the chain comes back. Split: its descriptors in the descriptor table
   * (1 for a chain whose head is an indirect descriptor; a direct chain that ends in an indirect one
   * counts that one too). Packed: the ring descriptors it used (1 for an indirect one). At least 1,
   * also for a malformed chain (counted as far as it was read). Asked while the chain is valid (see
   * pop); throws VirtqueueError ("EINVAL") for a chain this queue did not pop or that went back
   * through pushUsed.
   */
  ringSlots(chain: DescriptorChain): number;
  /** Signal the driver if the notification rules say so. */
  notify(): void;
  disableNotifications(): void;
  /** True if buffers arrived meanwhile: process again. */
  enableNotifications(): boolean;
  /** Popped and not yet used. */
  readonly inFlight: number;
  /**
   * Ring slots the chains popped and not yet used take (the sum of their ringSlots): what the
   * driver has given up to the device until they come back.
   */
  readonly inFlightSlots: number;
}

/**
 * Stable prefixes of `DescriptorChain.error`: the message is `"<kind>: <details>"`, so callers and tests
 * can tell the kinds apart without parsing prose.
 */
export const CHAIN_ERROR = {
  headOutOfRange: "head out of range",
  nextOutOfRange: "next out of range",
  loop: "chain too long or looping",
  tooManyDescriptors: "too many descriptors",
  indirectNotNegotiated: "indirect not negotiated",
  nestedIndirect: "indirect inside indirect",
  indirectWithNext: "indirect with next",
  indirectBadLength: "bad indirect table length",
  indirectOutsideMemory: "indirect table outside guest memory",
  zeroLength: "zero-length buffer",
  readableAfterWritable: "readable after writable",
  totalTooLong: "total length past 2^32",
  bufferOutsideMemory: "buffer outside guest memory",
} as const;
export type ChainErrorKind = (typeof CHAIN_ERROR)[keyof typeof CHAIN_ERROR];

/** EINVAL: bad argument or misuse; EFAULT: ring not in guest memory; EBADRING: the driver broke the ring. */
export type VirtqueueErrorCode = "EINVAL" | "EFAULT" | "EBADRING";

export class VirtqueueError extends Error {
  readonly code: VirtqueueErrorCode;

  constructor(code: VirtqueueErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "VirtqueueError";
    this.code = code;
  }
}
