/**
 * SMBus commands carried as plain I2C transfers, the way Linux emulates them on an adapter that only
 * does I2C (i2c_smbus_xfer_emulated), which is what a guest's i2c-tools get on virtio-i2c: quick write
 * = a zero-length write, read byte data = write [reg] + read 1, words little-endian, and so on. Each
 * call is one transfer; null means it failed (the guest would see -EIO). Also the functionality
 * (I2C_FUNCS) a Linux guest reports for a virtio-i2c adapter. Must not format output or parse argv.
 * @module
 */

import type { I2cOp, TransferResult } from "../frontend/i2c-driver.js";
import type { FunctionalityName } from "./format.js";

/** Anything that runs one I2C transfer: the backend session, or a recording fake in tests. */
export interface I2cTransport {
  transfer(ops: readonly I2cOp[]): Promise<TransferResult>;
}

/** What Linux's i2c-virtio reports: I2C plus SMBus emulation; quick needs zero-length requests. */
export function virtioI2cFunctionality(zeroLength: boolean): (name: FunctionalityName) => boolean {
  return (name) => {
    if (name === "SMBus Quick Command") return zeroLength;
    return name !== "SMBus Block Read" && name !== "SMBus Block Process Call";
  };
}

/** SMBus commands to one chip address over an I2C-only transport. */
export class SmbusDevice {
  readonly #transport: I2cTransport;
  readonly addr: number;

  constructor(transport: I2cTransport, addr: number) {
    this.#transport = transport;
    this.addr = addr;
  }

  async #run(ops: readonly I2cOp[]): Promise<readonly Uint8Array[] | null> {
    const result = await this.#transport.transfer(ops);
    return result.ok ? result.reads : null;
  }

  #write(bytes: readonly number[]): Promise<boolean> {
    return this.#run([{ addr: this.addr, write: Uint8Array.from(bytes) }]).then((r) => r !== null);
  }

  async #writeThenRead(reg: number, length: number): Promise<Uint8Array | null> {
    const reads = await this.#run([
      { addr: this.addr, write: Uint8Array.of(reg) },
      { addr: this.addr, read: length },
    ]);
    return reads?.[0] ?? null;
  }

  /** SMBus quick write: the address alone, no data (i2cdetect's default probe). */
  quickWrite(): Promise<boolean> {
    return this.#write([]);
  }

  /** SMBus receive byte: one byte from the current address. */
  async readByte(): Promise<number | null> {
    const reads = await this.#run([{ addr: this.addr, read: 1 }]);
    return reads?.[0]?.[0] ?? null;
  }

  /** SMBus send byte. */
  writeByte(value: number): Promise<boolean> {
    return this.#write([value]);
  }

  async readByteData(reg: number): Promise<number | null> {
    return (await this.#writeThenRead(reg, 1))?.[0] ?? null;
  }

  writeByteData(reg: number, value: number): Promise<boolean> {
    return this.#write([reg, value]);
  }

  /** SMBus read word data: low byte first. */
  async readWordData(reg: number): Promise<number | null> {
    const bytes = await this.#writeThenRead(reg, 2);
    if (bytes === null) return null;
    return (bytes[0] ?? 0) | ((bytes[1] ?? 0) << 8);
  }

  writeWordData(reg: number, value: number): Promise<boolean> {
    return this.#write([reg, value & 0xff, value >> 8]);
  }

  /** I2C block read: write [reg], read `length` (1..32) bytes. */
  readI2cBlock(reg: number, length: number): Promise<Uint8Array | null> {
    return this.#writeThenRead(reg, length);
  }

  /** I2C block write: [reg, ...data]. */
  writeI2cBlock(reg: number, data: readonly number[]): Promise<boolean> {
    return this.#write([reg, ...data]);
  }

  /** SMBus block write: [reg, count, ...data]. */
  writeBlockData(reg: number, data: readonly number[]): Promise<boolean> {
    return this.#write([reg, data.length, ...data]);
  }
}
