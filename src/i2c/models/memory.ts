/**
 * Shared memory plumbing for models: open a model's store (a backing file when the options name
 * one, plain memory otherwise), expose it as DeviceMemory with range checks and write-through, and
 * carry it in a saved state. Must not know about any particular chip.
 * @module
 */

import { resolve } from "node:path";
import { checkRange, memoryBacking } from "../backing-store.js";
import type { BackingStore, DeviceMemory, ModelContext } from "../model.js";
import { MODEL_ERROR_CODES, ModelError } from "./model-error.js";

/**
 * The model's bytes: from `context.openBacking` when `backing` is set (path relative to
 * `context.baseDir`; the file is created from `initial` when missing), else in memory from `initial`.
 * `initial` shorter than `size` leaves the rest `fill` (0xff: an erased EEPROM).
 */
export function openModelStore(
  context: ModelContext,
  backing: string | undefined,
  size: number,
  initial: Uint8Array | undefined,
  fill = 0xff,
): BackingStore {
  const content = new Uint8Array(size).fill(fill);
  if (initial) content.set(initial.subarray(0, size));
  if (backing === undefined) return memoryBacking(content);
  return context.openBacking(resolve(context.baseDir, backing), size, content);
}

/** DeviceMemory over `store.bytes[base, base+size)`; writes are committed (durable) before returning. */
export function storeMemory(
  store: BackingStore,
  base = 0,
  size = store.bytes.length - base,
): DeviceMemory {
  return {
    size,
    read(offset, length) {
      checkRange(size, offset, length);
      return store.bytes.slice(base + offset, base + offset + length);
    },
    write(offset, data) {
      checkRange(size, offset, data.length);
      store.bytes.set(data, base + offset);
      store.commit(base + offset, data.length);
    },
  };
}

/**
 * Tracks the lowest and highest offset written since the last commit, so a STOP commits only the
 * changed range.
 */
export class DirtyRange {
  #low = Number.POSITIVE_INFINITY;
  #high = -1;

  mark(offset: number): void {
    if (offset < this.#low) this.#low = offset;
    if (offset > this.#high) this.#high = offset;
  }

  /** Commits the marked range (if any) and clears it. */
  commit(store: BackingStore): void {
    if (this.#high < 0) return;
    const low = this.#low;
    const length = this.#high - low + 1;
    this.#low = Number.POSITIVE_INFINITY;
    this.#high = -1;
    store.commit(low, length);
  }
}

/** The schema of a saved state's `memory` (see `savedMemory`) for a store of `size` bytes. */
export function memoryStateSchema(size: number) {
  return {
    type: "hex-bytes",
    maxLength: size,
    description: "the memory, when no backing file holds it",
  } as const;
}

/**
 * The memory part of a chip's saved state: the bytes as hex when they live only in this process;
 * nothing when a backing file holds them, since the file is what the next process reads (one truth).
 */
export function savedMemory(store: BackingStore, backed: boolean): { memory?: string } {
  return backed ? {} : { memory: Buffer.from(store.bytes).toString("hex") };
}

/**
 * Checks a saved state's `memory` (validated by `memoryStateSchema`) against the chip, before
 * anything changes: exactly the store's size without a backing file, none with one. Returns what
 * puts it in place. Throws ModelError "I2C_MODEL_BAD_STATE".
 */
export function checkSavedMemory(
  memory: Uint8Array | undefined,
  store: BackingStore,
  backed: boolean,
  subject: string,
): () => void {
  const size = store.bytes.length;
  const found = memory === undefined ? "missing" : `${memory.length} bytes`;
  const expected = backed ? "none (the backing file holds the memory)" : `${size} bytes`;
  if (backed ? memory !== undefined : memory?.length !== size) {
    throw new ModelError(
      MODEL_ERROR_CODES.badState,
      `${subject}: state.memory: expected ${expected}, found ${found}`,
      { issues: [{ path: "state.memory", expected, found }] },
    );
  }
  return () => {
    if (memory !== undefined) store.bytes.set(memory);
  };
}
