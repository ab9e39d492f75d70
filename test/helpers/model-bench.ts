/**
 * A test bench for one emulated chip: the model on a SimBus at its address, driven the way Linux
 * drivers drive chips (SMBus byte/word data and I2C block reads, as i2c-core emulates them with a
 * write of the command then a read), plus property access, a fake host clock and a handover to a
 * fresh chip (saveState through JSON into restoreState).
 * @module
 */

import assert from "node:assert/strict";
import type { I2cMessage } from "../../src/i2c/bus.js";
import {
  type ModelDefinition,
  ModelError,
  modelContext,
  type SimDevice,
} from "../../src/i2c/model.js";
import { SimBus, simTargets } from "../../src/i2c/sim-bus.js";

/** A host clock the test moves by hand. */
export class FakeClock {
  ms: number;

  constructor(ms = Date.UTC(2024, 4, 17, 13, 45, 30)) {
    this.ms = ms;
  }

  now(): number {
    return this.ms;
  }

  advance(ms: number): void {
    this.ms += ms;
  }
}

/** True for a ModelError of that code (for assert.throws). */
export const modelError = (code: string) => (e: unknown) =>
  e instanceof ModelError && e.code === code;

export class ModelBench {
  readonly address: number;
  readonly device: SimDevice;
  readonly bus: SimBus;

  constructor(definition: ModelDefinition, address: number, options: Record<string, unknown> = {}) {
    this.address = address;
    this.device = definition.create(options, modelContext({ address }));
    this.bus = new SimBus(simTargets(new Map([[address, this.device]])));
  }

  w(...bytes: number[]): I2cMessage {
    return { addr: this.address, read: false, buf: Uint8Array.from(bytes) };
  }

  r(length: number): I2cMessage {
    return { addr: this.address, read: true, buf: new Uint8Array(length) };
  }

  /** Runs the messages; returns how many succeeded. */
  transfer(...msgs: I2cMessage[]): number {
    return this.bus.transfer(msgs);
  }

  /** Command (register) write then a read of `length` bytes in one transfer; bytes in wire order. */
  readBytes(command: number, length: number): number[] {
    const msg = this.r(length);
    assert.equal(this.bus.transfer([this.w(command), msg]), 2, `read at 0x${command.toString(16)}`);
    return [...msg.buf];
  }

  /** A read with no command first (from the chip's current pointer). */
  readNow(length: number): number[] {
    const msg = this.r(length);
    assert.equal(this.bus.transfer([msg]), 1);
    return [...msg.buf];
  }

  /** i2c_smbus_read_byte_data. */
  readByte(command: number): number {
    return this.readBytes(command, 1)[0] ?? -1;
  }

  /** i2c_smbus_read_word_swapped: MSB first on the wire. */
  readWordBE(command: number): number {
    const [msb = 0, lsb = 0] = this.readBytes(command, 2);
    return (msb << 8) | lsb;
  }

  /** i2c_smbus_read_word_data: LSB first on the wire. */
  readWordLE(command: number): number {
    const [lsb = 0, msb = 0] = this.readBytes(command, 2);
    return (msb << 8) | lsb;
  }

  /** Writes `bytes` after the command in one message; asserts the chip took them all. */
  write(command: number, ...bytes: number[]): void {
    assert.equal(
      this.bus.transfer([this.w(command, ...bytes)]),
      1,
      `write at 0x${command.toString(16)}`,
    );
  }

  /** i2c_smbus_write_word_swapped: MSB first on the wire. */
  writeWordBE(command: number, value: number): void {
    this.write(command, (value >> 8) & 0xff, value & 0xff);
  }

  /** i2c_smbus_write_word_data: LSB first on the wire. */
  writeWordLE(command: number, value: number): void {
    this.write(command, value & 0xff, (value >> 8) & 0xff);
  }

  get(property: string): number | string | boolean {
    const p = this.device.properties?.[property];
    assert.ok(p, `property ${property}`);
    return p.get();
  }

  set(property: string, value: string): void {
    const p = this.device.properties?.[property];
    assert.ok(p?.set, `settable property ${property}`);
    p.set(value);
  }

  /** The chip's saved state as a successor gets it (through JSON). */
  savedState(): unknown {
    assert.ok(this.device.saveState, "saveState");
    return JSON.parse(JSON.stringify(this.device.saveState()));
  }

  /** Restores this bench's saved state into `successor`, a bench made with the same options. */
  handOverTo(successor: ModelBench): void {
    assert.ok(successor.device.restoreState, "restoreState");
    successor.device.restoreState(this.savedState());
  }
}
