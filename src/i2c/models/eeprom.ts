/**
 * 24Cxx-style serial EEPROM model: memory array, address pointer, page-wrapping writes committed at
 * STOP. Owns only the chip's state; must not know about buses, addresses on the bus or virtio.
 * @module
 */

import type { I2cDeviceModel } from "../model.js";

export interface EepromOptions {
  /** Memory size in bytes (power of two). */
  readonly size: number;
  /** Write page size in bytes (power of two, at most `size`). */
  readonly pageSize: number;
  /** Word address bytes sent before data: 1 (up to 256 bytes) or 2 (up to 64 KiB). */
  readonly addressBytes: 1 | 2;
  /** Initial content (shorter content leaves the rest 0xff, like an erased chip). */
  readonly contents?: Uint8Array;
}

export class EepromOptionsError extends Error {
  readonly code = "I2C_MODEL_BAD_OPTIONS";
  constructor(message: string) {
    super(message);
    this.name = "EepromOptionsError";
  }
}

/** Geometry of the 24C02: 256 bytes, 8-byte pages, one address byte. */
export const EEPROM_24C02: EepromOptions = { size: 256, pageSize: 8, addressBytes: 1 };

const isPowerOfTwo = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

function validate(options: EepromOptions): void {
  const { size, pageSize, addressBytes, contents } = options;
  if (addressBytes !== 1 && addressBytes !== 2) {
    throw new EepromOptionsError(`addressBytes must be 1 or 2, got ${String(addressBytes)}`);
  }
  if (!isPowerOfTwo(size) || size > 1 << (8 * addressBytes)) {
    throw new EepromOptionsError(
      `size must be a power of two up to ${1 << (8 * addressBytes)} bytes, got ${size}`,
    );
  }
  if (!isPowerOfTwo(pageSize) || pageSize > size) {
    throw new EepromOptionsError(`pageSize must be a power of two up to ${size}, got ${pageSize}`);
  }
  if (contents && contents.length > size) {
    throw new EepromOptionsError(`contents of ${contents.length} bytes exceed size ${size}`);
  }
}

/**
 * The chip's behaviour, as in 24Cxx datasheets:
 * - a write message starts with the word address (1 or 2 bytes, big-endian), which sets the pointer;
 * - further bytes go to the pointer, which wraps inside the current page;
 * - the write cycle starts at STOP: written bytes are committed then, and discarded when a repeated
 *   START comes first;
 * - reads return bytes from the pointer and auto-increment, rolling over at the end of the memory;
 * - the pointer persists between transfers (current-address read).
 */
export class Eeprom implements I2cDeviceModel {
  readonly size: number;
  readonly pageSize: number;
  readonly addressBytes: 1 | 2;
  readonly #memory: Uint8Array;
  #pointer = 0;
  /** Word address bytes still expected in the current write message. */
  #addressBytesPending = 0;
  #pendingAddress = 0;
  /** Bytes written since the last START, keyed by memory offset, committed at STOP. */
  readonly #pendingWrites = new Map<number, number>();
  #writing = false;

  constructor(options: EepromOptions = EEPROM_24C02) {
    validate(options);
    this.size = options.size;
    this.pageSize = options.pageSize;
    this.addressBytes = options.addressBytes;
    this.#memory = new Uint8Array(this.size).fill(0xff);
    if (options.contents) this.#memory.set(options.contents);
  }

  /** The current address pointer. */
  get pointer(): number {
    return this.#pointer;
  }

  /** A copy of the committed memory content. */
  contents(): Uint8Array {
    return this.#memory.slice();
  }

  start(read: boolean): boolean {
    this.#pendingWrites.clear(); // a repeated START before STOP aborts the write cycle
    this.#writing = !read;
    this.#addressBytesPending = read ? 0 : this.addressBytes;
    this.#pendingAddress = 0;
    return true;
  }

  write(data: Uint8Array): boolean {
    if (!this.#writing) return false;
    for (const byte of data) {
      if (this.#addressBytesPending > 0) {
        this.#pendingAddress = (this.#pendingAddress << 8) | byte;
        this.#addressBytesPending--;
        if (this.#addressBytesPending === 0) this.#pointer = this.#pendingAddress & (this.size - 1);
        continue;
      }
      this.#pendingWrites.set(this.#pointer, byte);
      const pageBase = this.#pointer & ~(this.pageSize - 1);
      this.#pointer = pageBase | ((this.#pointer + 1) & (this.pageSize - 1));
    }
    return true;
  }

  read(into: Uint8Array): void {
    for (let i = 0; i < into.length; i++) {
      into[i] = this.#memory[this.#pointer] ?? 0xff;
      this.#pointer = (this.#pointer + 1) & (this.size - 1);
    }
  }

  stop(): void {
    for (const [offset, value] of this.#pendingWrites) this.#memory[offset] = value;
    this.#pendingWrites.clear();
    this.#writing = false;
    this.#addressBytesPending = 0;
  }
}
