/**
 * PCF8574/PCF8574A (8-bit) and PCF8575 (16-bit) quasi-bidirectional I/O expanders: no registers, a
 * write sets the output latch, a read samples the pins; the levels driven onto the pins from outside
 * are settable at run time. Owns only the chip's behaviour; must not know about buses, virtio or the
 * configuration format.
 * @module
 */

import type { I2cDeviceModel, ModelDefinition } from "../model.js";
import { validateState } from "./options.js";
import { allPinsHigh, expanderModel, pinsOf, pinWordState } from "./pins.js";

/**
 * The chip, as in the PCF8574/PCF8575 datasheets and as Linux's gpio-pcf857x driver uses it:
 * - a written byte goes to the latch of one port: bytes alternate P0, P1 on the PCF8575
 *   (`i2c_write_le16`), every byte to the one port on the PCF8574 (`i2c_smbus_write_byte`);
 * - a read samples the pins the same way (P0 first); at power-on every latch bit is 1;
 * - quasi-bidirectional pins: a latch bit of 1 is a weak pull-up that anything outside can pull
 *   low, 0 drives the pin low; so a pin reads high only when neither pulls it low. The driver's
 *   probe writes all-ones (`n_latch` 0) to make every pin an input;
 * - INT is asserted while the pins differ from what the guest last read or wrote, as on the chip.
 */
export class Pcf857xChip implements I2cDeviceModel {
  readonly ports: 1 | 2;
  latch: number;
  inputs: number;
  /** The pin levels when the guest last read or wrote the port (INT compares against it). */
  #seen: number;
  /** Which port the next byte of this message belongs to. */
  #port = 0;

  constructor(ports: 1 | 2, inputs: number) {
    this.ports = ports;
    this.latch = allPinsHigh(pinsOf(ports));
    this.inputs = inputs;
    this.#seen = this.pins;
  }

  /** Pin levels: a pin is high only when neither the latch nor the outside pulls it low. */
  get pins(): number {
    return this.latch & this.inputs;
  }

  get interrupt(): boolean {
    return this.pins !== this.#seen;
  }

  start(_read: boolean): boolean {
    this.#port = 0;
    return true;
  }

  write(data: Uint8Array): boolean {
    for (const byte of data) {
      const shift = 8 * this.#port;
      this.latch = (this.latch & ~(0xff << shift)) | (byte << shift);
      this.#port = (this.#port + 1) % this.ports;
    }
    this.#seen = this.pins;
    return true;
  }

  read(into: Uint8Array): void {
    const pins = this.pins;
    for (let i = 0; i < into.length; i++) {
      into[i] = (pins >> (8 * this.#port)) & 0xff;
      this.#port = (this.#port + 1) % this.ports;
    }
    this.#seen = pins;
  }

  stop(): void {}

  saveState(): Record<string, number> {
    return { latch: this.latch, inputs: this.inputs, seen: this.#seen };
  }

  restoreState(state: unknown, name: string): void {
    const word = pinWordState(this.ports);
    const schema = {
      type: "object",
      required: ["latch", "inputs", "seen"],
      properties: { latch: word, inputs: word, seen: word },
    } as const;
    const saved = validateState(schema, state, name);
    this.latch = saved.latch ?? this.latch;
    this.inputs = saved.inputs ?? this.inputs;
    this.#seen = saved.seen ?? this.pins;
  }
}

function pcf857xModel(name: string, ports: 1 | 2, what: string): ModelDefinition {
  return expanderModel({
    name,
    linuxDriver: "gpio gpio-pcf857x",
    ports,
    description: `${what} ${8 * ports}-bit quasi-bidirectional I/O expander (write: latch, read: pins)`,
    create: (p, inputs) => new Pcf857xChip(p, inputs),
    target: (chip) => chip,
    properties: (chip) => ({
      latch: { description: "output latch last written by the guest", get: () => chip.latch },
      pins: { description: "pin levels the guest reads", get: () => chip.pins },
      interrupt: {
        description: "INT asserted: the pins changed since the guest last read or wrote",
        get: () => chip.interrupt,
      },
    }),
  });
}

/** Linux's gpio-pcf857x names: pcf8574, pcf8574a (other address range, same chip), pcf8575. */
export const pcf857xModels: readonly ModelDefinition[] = [
  pcf857xModel("pcf8574", 1, "NXP PCF8574"),
  pcf857xModel("pcf8574a", 1, "NXP PCF8574A"),
  pcf857xModel("pcf8575", 2, "NXP PCF8575"),
];
