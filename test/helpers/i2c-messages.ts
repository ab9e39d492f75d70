/**
 * I2C messages for bus tests: a write of some bytes and a read of some length to one address.
 * Used only by tests.
 * @module
 */

import type { I2cMessage } from "../../src/i2c/bus.js";

/** A write of `bytes` to `addr`. */
export const w = (addr: number, ...bytes: number[]): I2cMessage => ({
  addr,
  read: false,
  buf: Uint8Array.from(bytes),
});

/** A read of `length` bytes from `addr`. */
export const r = (addr: number, length: number): I2cMessage => ({
  addr,
  read: true,
  buf: new Uint8Array(length),
});
