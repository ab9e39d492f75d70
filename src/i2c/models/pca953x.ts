/**
 * PCA9555/TCA6416 (16-bit) and PCA9554/TCA6408 (8-bit) I/O expanders: input, output, polarity
 * inversion and configuration registers, one per 8-pin port, with the levels driven onto input pins
 * from outside settable at run time. Owns only the chip's behaviour; must not know about buses,
 * virtio or the configuration format.
 * @module
 */

import type { ModelDefinition } from "../model.js";
import { validateState } from "./options.js";
import { allPinsHigh, expanderModel, pinsOf, pinWordState } from "./pins.js";
import { RegisterFile } from "./registers.js";

/** Register kinds; register = kind * ports + port. */
export const PCA953X_REGISTERS = { input: 0, output: 1, polarity: 2, config: 3 } as const;

/** Ports of 8 pins: 1 (PCA9554, TCA6408) or 2 (PCA9555, TCA6416). */
export type Pca953xPorts = 1 | 2;

/**
 * The chip, as in the PCA9555/TCA6416/PCA9554 datasheets and as Linux's gpio-pca953x driver uses it:
 * - a write's first byte is the command (register); further bytes go to the other register of the
 *   pair on 16-bit chips (output 0, output 1, output 0...) and to the same register on 8-bit ones;
 *   reads do the same, so `pca953x_read_regs`/`pca953x_write_regs` move both ports at once;
 * - power-on: outputs 0xff, polarity 0x00, configuration 0xff (all pins inputs);
 * - `device_pca95xx_init` (probe) clears the polarity registers; a direction change writes the
 *   configuration (1 = input), a level change the output register, a read reads the input port;
 * - an input register bit is the pin's level, inverted where its polarity bit is 1; the level of
 *   an output pin is the output register's bit, that of an input pin what drives it from outside
 *   (`inputs`); writes to input registers are ignored;
 * - INT is asserted while an input port differs from what was last read from it (reading it
 *   clears INT), as on the chip.
 */
export class Pca953xChip {
  readonly ports: Pca953xPorts;
  readonly target: RegisterFile;
  /** Levels driven onto the pins from outside (bit n = pin n). */
  inputs: number;
  output: number;
  polarity = 0;
  config: number;
  /** The input register value the guest last read, per port (INT compares against it). */
  #lastRead: number;

  constructor(ports: Pca953xPorts, inputs: number) {
    this.ports = ports;
    const all = allPinsHigh(pinsOf(ports));
    this.inputs = inputs & all;
    this.output = all;
    this.config = all;
    this.#lastRead = this.inputRegister;
    this.target = new RegisterFile(
      {
        count: 4 * ports,
        pointerMask: 4 * ports - 1,
        nextRegister: ports === 2 ? (reg) => reg ^ 1 : (reg) => reg,
      },
      {
        read: (reg) => this.#readRegister(reg),
        write: (reg, value) => this.#writeRegister(reg, value),
      },
    );
  }

  /** Levels on the pins: outputs drive theirs, inputs show what drives them from outside. */
  get pins(): number {
    return (this.output & ~this.config) | (this.inputs & this.config);
  }

  /** What the input registers read (all ports): the pin levels, inverted where polarity says. */
  get inputRegister(): number {
    return this.pins ^ this.polarity;
  }

  /** INT (active low on the chip): an input port changed since the guest last read it. */
  get interrupt(): boolean {
    return ((this.inputRegister ^ this.#lastRead) & this.config) !== 0;
  }

  #readRegister(reg: number): number {
    const kind = Math.floor(reg / this.ports);
    const shift = 8 * (reg % this.ports);
    const byteOf = (value: number) => (value >> shift) & 0xff;
    switch (kind) {
      case PCA953X_REGISTERS.input: {
        const value = byteOf(this.inputRegister);
        this.#lastRead = (this.#lastRead & ~(0xff << shift)) | (value << shift);
        return value;
      }
      case PCA953X_REGISTERS.output:
        return byteOf(this.output);
      case PCA953X_REGISTERS.polarity:
        return byteOf(this.polarity);
      default:
        return byteOf(this.config);
    }
  }

  #writeRegister(reg: number, value: number): void {
    const kind = Math.floor(reg / this.ports);
    const shift = 8 * (reg % this.ports);
    const put = (old: number) => (old & ~(0xff << shift)) | (value << shift);
    if (kind === PCA953X_REGISTERS.output) this.output = put(this.output);
    else if (kind === PCA953X_REGISTERS.polarity) this.polarity = put(this.polarity);
    else if (kind === PCA953X_REGISTERS.config) this.config = put(this.config);
    // input registers are read-only: the write is acknowledged and ignored
  }

  saveState(): Record<string, number> {
    return {
      pointer: this.target.pointer.value,
      inputs: this.inputs,
      output: this.output,
      polarity: this.polarity,
      config: this.config,
      lastRead: this.#lastRead,
    };
  }

  restoreState(state: unknown, name: string): void {
    const word = pinWordState(this.ports);
    const schema = {
      type: "object",
      required: ["pointer", "inputs", "output", "polarity", "config", "lastRead"],
      properties: {
        pointer: { type: "integer", min: 0, max: 4 * this.ports - 1 },
        inputs: word,
        output: word,
        polarity: word,
        config: word,
        lastRead: word,
      },
    } as const;
    const saved = validateState(schema, state, name);
    this.target.pointer.value = saved.pointer ?? 0;
    this.inputs = saved.inputs ?? this.inputs;
    this.output = saved.output ?? this.output;
    this.polarity = saved.polarity ?? 0;
    this.config = saved.config ?? this.config;
    this.#lastRead = saved.lastRead ?? this.inputRegister;
  }
}

function pca953xModel(name: string, ports: Pca953xPorts, what: string): ModelDefinition {
  const readOnly = (description: string, get: () => number | boolean) => ({ description, get });
  return expanderModel({
    name,
    linuxDriver: "gpio gpio-pca953x",
    ports,
    description: `${what} ${8 * ports}-bit I/O expander (input, output, polarity, configuration)`,
    create: (p, inputs) => new Pca953xChip(p, inputs),
    target: (chip) => chip.target,
    properties: (chip) => ({
      pins: readOnly("pin levels (outputs drive theirs)", () => chip.pins),
      output: readOnly("output register(s)", () => chip.output),
      config: readOnly("configuration register(s): 1 = input", () => chip.config),
      interrupt: readOnly("INT asserted: an input changed since last read", () => chip.interrupt),
    }),
  });
}

/** Linux's gpio-pca953x names: 16-bit pca9555 and tca6416, 8-bit pca9554 and tca6408. */
export const pca953xModels: readonly ModelDefinition[] = [
  pca953xModel("pca9555", 2, "NXP PCA9555"),
  pca953xModel("tca6416", 2, "TI TCA6416"),
  pca953xModel("pca9554", 1, "NXP PCA9554"),
  pca953xModel("tca6408", 1, "TI TCA6408"),
];
