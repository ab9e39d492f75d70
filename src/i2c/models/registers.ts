/**
 * Helpers most register-based chips need: a register pointer with auto-increment and wrap, and an
 * SMBus-style register file (address byte(s) select a register, data bytes follow, reads stream
 * from the pointer). Owns only the byte-level protocol; what a register holds belongs to the model
 * through hooks. Must not know about buses, addresses on the bus or any particular chip.
 * @module
 */

import type { I2cDeviceModel } from "../model.js";

/**
 * A register (or byte) pointer over `count` entries that wraps from the last entry to 0.
 *
 * @example
 * ```ts
 * const p = new RegisterPointer(0x40);
 * p.value = 0x3f;
 * p.next(); // 0x3f, and p.value is now 0
 * ```
 */
export class RegisterPointer {
  readonly count: number;
  #value = 0;

  constructor(count: number) {
    if (!Number.isInteger(count) || count <= 0)
      throw new RangeError(`count must be > 0, got ${count}`);
    this.count = count;
  }

  get value(): number {
    return this.#value;
  }

  /** Sets the pointer; values past the end wrap (modulo `count`). */
  set value(v: number) {
    this.#value = ((v % this.count) + this.count) % this.count;
  }

  /** Returns the current entry and moves to the next one, wrapping at the end. */
  next(): number {
    const current = this.#value;
    this.#value = current + 1 === this.count ? 0 : current + 1;
    return current;
  }
}

/** What a register holds: the model answers reads and takes writes, one whole register at a time. */
export interface RegisterFileHooks {
  /** Value of register `reg` (unsigned, `width(reg)` bytes), read when its first byte goes out. */
  read(reg: number): number;
  /** A whole register was written (partial registers at STOP or repeated START are dropped). */
  write(reg: number, value: number): void;
  /** START or repeated START (e.g. latch a snapshot). */
  start?(read: boolean): void;
  /** STOP (e.g. commit). */
  stop?(): void;
}

export interface RegisterFileOptions {
  /** Number of registers. */
  readonly count: number;
  /** Register address bytes at the start of a write message, big-endian (default 1). */
  readonly addressBytes?: 1 | 2;
  /** Bytes per register, fixed or per register (default 1). */
  readonly width?: 1 | 2 | 3 | 4 | ((reg: number) => 1 | 2 | 3 | 4);
  /** Register bytes least significant first (default: most significant first). */
  readonly littleEndian?: boolean;
  /**
   * Move to the next register after a whole register (default true). Without it, reading or
   * writing past a register's bytes repeats the same register (LM75).
   */
  readonly autoIncrement?: boolean;
  /**
   * The register after `reg`, for chips whose pointer moves otherwise than to the next address
   * (PCA9555: to the other register of a pair). Takes precedence over `autoIncrement`.
   */
  readonly nextRegister?: (reg: number) => number;
  /** Bits of the address that select a register (e.g. 0x03); default: the address modulo `count`. */
  readonly pointerMask?: number;
}

/**
 * An SMBus-style register device: a write message starts with the register address, further bytes
 * write registers from there; a read streams registers from the pointer; the pointer persists
 * between transfers. Multi-byte registers go out whole, so SMBus word reads see one consistent value.
 *
 * @example A chip with an ID register at 0 and a scratch register at 1:
 * ```ts
 * let scratch = 0;
 * const chip = new RegisterFile({ count: 2 }, {
 *   read: (reg) => (reg === 0 ? 0x5a : scratch),
 *   write: (reg, value) => { if (reg === 1) scratch = value; },
 * });
 * // i2cset -y 0 ADDR 1 0x33 then i2cget -y 0 ADDR 1 → 0x33
 * ```
 */
export class RegisterFile implements I2cDeviceModel {
  readonly pointer: RegisterPointer;
  readonly #hooks: RegisterFileHooks;
  readonly #addressBytes: number;
  readonly #width: (reg: number) => number;
  readonly #littleEndian: boolean;
  readonly #autoIncrement: boolean;
  readonly #nextRegister: ((reg: number) => number) | undefined;
  readonly #pointerMask: number | undefined;
  #writing = false;
  #addressBytesPending = 0;
  #address = 0;
  /** Byte index inside the current register, and the register value being read or written. */
  #byteIndex = 0;
  #value = 0;

  constructor(options: RegisterFileOptions, hooks: RegisterFileHooks) {
    this.pointer = new RegisterPointer(options.count);
    this.#hooks = hooks;
    this.#addressBytes = options.addressBytes ?? 1;
    const width = options.width ?? 1;
    this.#width = typeof width === "number" ? () => width : width;
    this.#littleEndian = options.littleEndian ?? false;
    this.#autoIncrement = options.autoIncrement ?? true;
    this.#nextRegister = options.nextRegister;
    this.#pointerMask = options.pointerMask;
  }

  start(read: boolean): boolean {
    this.#writing = !read;
    this.#addressBytesPending = read ? 0 : this.#addressBytes;
    this.#address = 0;
    this.#byteIndex = 0;
    this.#value = 0;
    this.#hooks.start?.(read);
    return true;
  }

  write(data: Uint8Array): boolean {
    if (!this.#writing) return false;
    for (const byte of data) {
      if (this.#addressBytesPending > 0) {
        this.#address = this.#address * 256 + byte;
        if (--this.#addressBytesPending === 0) {
          this.pointer.value =
            this.#pointerMask === undefined ? this.#address : this.#address & this.#pointerMask;
        }
        continue;
      }
      const reg = this.pointer.value;
      const width = this.#width(reg);
      const shift = this.#littleEndian ? this.#byteIndex : width - 1 - this.#byteIndex;
      this.#value += byte * 2 ** (8 * shift);
      if (++this.#byteIndex === width) {
        this.#hooks.write(reg, this.#value);
        this.#endRegister();
      }
    }
    return true;
  }

  read(into: Uint8Array): void {
    for (let i = 0; i < into.length; i++) {
      const reg = this.pointer.value;
      const width = this.#width(reg);
      if (this.#byteIndex === 0) this.#value = this.#hooks.read(reg);
      const shift = this.#littleEndian ? this.#byteIndex : width - 1 - this.#byteIndex;
      into[i] = Math.floor(this.#value / 2 ** (8 * shift)) & 0xff;
      if (++this.#byteIndex === width) this.#endRegister();
    }
  }

  stop(): void {
    this.#writing = false;
    this.#addressBytesPending = 0;
    this.#byteIndex = 0;
    this.#value = 0;
    this.#hooks.stop?.();
  }

  #endRegister(): void {
    this.#byteIndex = 0;
    this.#value = 0;
    if (this.#nextRegister) this.pointer.value = this.#nextRegister(this.pointer.value);
    else if (this.#autoIncrement) this.pointer.next();
  }
}
