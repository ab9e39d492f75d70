/**
 * Public API for emulated I2C chips. A model sees bus events for its own address only; the bus
 * (src/i2c/sim-bus.ts) does the addressing, ordering and error containment.
 * Must not know about virtio, guest memory or host adapters.
 * @module
 */

import { EEPROM_24C02, Eeprom } from "./models/eeprom.js";

/**
 * An emulated I2C target driven by bus events. For each message addressed to the model the bus calls
 * `start(read)`, then `write(data)` or `read(into)` (nothing for zero-length messages), and at the end
 * of the transfer `stop()` once, also when the transfer failed.
 *
 * @example A one-register chip: writes set the register, reads return it.
 * ```ts
 * import { SimBus } from "./sim-bus.js";
 * import type { I2cDeviceModel } from "./model.js";
 *
 * class Register implements I2cDeviceModel {
 *   value = 0;
 *   start(_read: boolean): boolean { return true; }   // ACK both directions
 *   write(data: Uint8Array): boolean {
 *     const last = data.at(-1);
 *     if (last !== undefined) this.value = last;
 *     return true;
 *   }
 *   read(into: Uint8Array): void { into.fill(this.value); }
 *   stop(): void {}
 * }
 *
 * const bus = new SimBus(new Map([[0x20, new Register()]]));
 * const buf = new Uint8Array(1);
 * bus.transfer([{ addr: 0x20, read: false, buf: Uint8Array.of(7) }, { addr: 0x20, read: true, buf }]);
 * // buf[0] === 7
 * ```
 */
export interface I2cDeviceModel {
  /** START or repeated START to this address in the given direction; false = NACK (message fails). */
  start(read: boolean): boolean;
  /** Bytes from the controller; false = NACK (message fails). */
  write(data: Uint8Array): boolean;
  /** Fill `into` with bytes for the controller. */
  read(into: Uint8Array): void;
  /** STOP: end of the transfer (commit writes, reset per-transfer state). */
  stop(): void;
}

/** Options every named model accepts. */
export interface ModelOptions {
  /** Initial memory content, for models that have memory. */
  readonly contents?: Uint8Array;
}

export class ModelError extends Error {
  readonly code = "I2C_UNKNOWN_MODEL";
  constructor(message: string) {
    super(message);
    this.name = "ModelError";
  }
}

const MODEL_FACTORIES: Readonly<Record<string, (options: ModelOptions) => I2cDeviceModel>> = {
  "24c02": (options) => new Eeprom({ ...EEPROM_24C02, ...options }),
};

/** Names accepted by `createModel`, e.g. for `sim:0x50=24c02` in the device list. */
export const MODEL_NAMES: readonly string[] = Object.keys(MODEL_FACTORIES);

export function isModelName(name: string): boolean {
  return Object.hasOwn(MODEL_FACTORIES, name);
}

/**
 * Creates an emulated chip by name. Throws ModelError (code "I2C_UNKNOWN_MODEL") for unknown names.
 *
 * @example
 * ```ts
 * const eeprom = createModel("24c02");
 * const bus = new SimBus(new Map([[0x50, eeprom]]));
 * ```
 */
export function createModel(name: string, options: ModelOptions = {}): I2cDeviceModel {
  const factory = Object.hasOwn(MODEL_FACTORIES, name) ? MODEL_FACTORIES[name] : undefined;
  if (!factory) {
    throw new ModelError(`unknown device model "${name}" (known: ${MODEL_NAMES.join(", ")})`);
  }
  return factory(options);
}
