/**
 * LM75 / LM75A digital temperature sensor: pointer register, temperature (read-only), configuration,
 * T_HYST and T_OS, with the temperature settable at run time. Owns only the chip's behaviour; must
 * not know about buses, virtio or the configuration format.
 * @module
 */

import type { DeviceProperty, ModelDefinition, SimDevice } from "../model.js";
import { validateOptions, validateState } from "./options.js";
import { integerProperty, numberProperty } from "./properties.js";
import { RegisterFile } from "./registers.js";

/** Register numbers (the pointer register's 2 low bits). */
export const LM75_REGISTERS = { temperature: 0, config: 1, thyst: 2, tos: 3 } as const;

/** Configuration bits: shutdown, comparator(0)/interrupt(1) mode, OS polarity, fault queue (2 bits). */
export const LM75_CONFIG = {
  shutdown: 0x01,
  interrupt: 0x02,
  polarityHigh: 0x04,
  faultQueue: 0x18,
} as const;
const CONFIG_MASK = 0x1f; // bits 7..5 are reserved and read 0

/** Measurable range (°C); values outside are clamped. */
export const LM75_RANGE = { min: -55, max: 125 } as const;

/** Bits of temperature resolution: 9 (0.5 °C, LM75) or 11 (0.125 °C, LM75A). */
export type Lm75Resolution = 9 | 11;

const clamp = (celsius: number) => Math.min(LM75_RANGE.max, Math.max(LM75_RANGE.min, celsius));

/**
 * Encodes °C as the chip's 16-bit register: two's complement, left-justified, `bits` significant
 * bits, rounded to the resolution and clamped to -55..125.
 *
 * @example
 * ```ts
 * encodeLm75Temperature(25, 9);    // 0x1900
 * encodeLm75Temperature(-0.5, 9);  // 0xff80
 * encodeLm75Temperature(-25.125, 11); // 0xe6e0
 * ```
 */
export function encodeLm75Temperature(celsius: number, bits: Lm75Resolution): number {
  const steps = Math.round(clamp(celsius) * 2 ** (bits - 8));
  return (steps * 2 ** (16 - bits)) & 0xffff;
}

/** Decodes a 16-bit register value to °C at `bits` resolution (lower bits ignored). */
export function decodeLm75Temperature(register: number, bits: Lm75Resolution): number {
  const signed = (register & 0xffff) >= 0x8000 ? (register & 0xffff) - 0x10000 : register & 0xffff;
  return Math.floor(signed / 2 ** (16 - bits)) / 2 ** (bits - 8);
}

const LIMIT_BITS = 9; // T_HYST and T_OS are 9-bit on both variants

const schema = {
  type: "object",
  properties: {
    temperature: {
      type: "number",
      min: LM75_RANGE.min,
      max: LM75_RANGE.max,
      description: "initial temperature in °C (default 25)",
    },
  },
} as const;

const celsiusState = { type: "number", min: LM75_RANGE.min, max: LM75_RANGE.max } as const;
const registerState = { type: "integer", min: 0, max: 0xffff } as const;

/**
 * What a successor needs (SimDevice.saveState): the pointer, the measured temperature and the one
 * the register holds in shutdown (°C), the configuration, and T_HYST and T_OS as their registers
 * (the guest may write limits the °C properties could not).
 */
const stateSchema = {
  type: "object",
  required: ["pointer", "temperature", "frozen", "config", "thyst", "tos"],
  properties: {
    pointer: { type: "integer", min: 0, max: 3 },
    temperature: celsiusState,
    frozen: celsiusState,
    config: { type: "integer", min: 0, max: CONFIG_MASK },
    thyst: registerState,
    tos: registerState,
  },
} as const;

/**
 * The chip, as in the LM75/LM75A datasheets and as Linux's lm75 driver expects:
 * - a write's first byte sets the pointer (2 bits); a 1-byte write only sets the pointer, which
 *   persists between transfers;
 * - 16-bit registers go MSB first; reading past a register's bytes repeats it (no auto-increment);
 * - the temperature register is read-only; in shutdown it holds the last conversion;
 * - T_HYST and T_OS keep 9 bits (0.5 °C), the configuration 5 bits.
 */
export class Lm75Chip {
  readonly resolution: Lm75Resolution;
  readonly target: RegisterFile;
  /** The temperature the sensor measures (°C, already quantised to the resolution). */
  #ambient: number;
  /** What the temperature register holds while in shutdown. */
  #frozen: number;
  #config = 0;
  #thyst = encodeLm75Temperature(75, LIMIT_BITS);
  #tos = encodeLm75Temperature(80, LIMIT_BITS);

  constructor(resolution: Lm75Resolution, temperature = 25) {
    this.resolution = resolution;
    this.#ambient = this.#quantise(temperature);
    this.#frozen = this.#ambient;
    this.target = new RegisterFile(
      { count: 4, pointerMask: 0x03, autoIncrement: false, width: (reg) => (reg === 1 ? 1 : 2) },
      {
        read: (reg) => this.#readRegister(reg),
        write: (reg, value) => this.#writeRegister(reg, value),
      },
    );
  }

  #quantise(celsius: number): number {
    return decodeLm75Temperature(encodeLm75Temperature(celsius, this.resolution), this.resolution);
  }

  /** Measured temperature (°C, quantised); what the temperature register shows unless shut down. */
  get temperature(): number {
    return this.#ambient;
  }

  set temperature(celsius: number) {
    this.#ambient = this.#quantise(celsius);
    if (!this.shutdown) this.#frozen = this.#ambient;
  }

  get shutdown(): boolean {
    return (this.#config & LM75_CONFIG.shutdown) !== 0;
  }

  get config(): number {
    return this.#config;
  }

  set config(value: number) {
    this.#config = value & CONFIG_MASK;
    if (!this.shutdown) this.#frozen = this.#ambient; // leaving shutdown converts again
  }

  get thyst(): number {
    return decodeLm75Temperature(this.#thyst, LIMIT_BITS);
  }

  set thyst(celsius: number) {
    this.#thyst = encodeLm75Temperature(celsius, LIMIT_BITS);
  }

  get tos(): number {
    return decodeLm75Temperature(this.#tos, LIMIT_BITS);
  }

  set tos(celsius: number) {
    this.#tos = encodeLm75Temperature(celsius, LIMIT_BITS);
  }

  /** Its state as plain data (SimDevice.saveState). */
  saveState(): Record<string, number> {
    return {
      pointer: this.target.pointer.value,
      temperature: this.#ambient,
      frozen: this.#frozen,
      config: this.#config,
      thyst: this.#thyst,
      tos: this.#tos,
    };
  }

  /** Takes a state `saveState` returned, all checked first (SimDevice.restoreState). */
  restoreState(state: unknown, subject: string): void {
    const saved = validateState(stateSchema, state, subject);
    this.target.pointer.value = saved.pointer ?? 0;
    this.#ambient = this.#quantise(saved.temperature ?? 25);
    this.#frozen = this.#quantise(saved.frozen ?? this.#ambient);
    this.#config = saved.config ?? 0;
    this.#thyst = (saved.thyst ?? 0) & 0xff80;
    this.#tos = (saved.tos ?? 0) & 0xff80;
  }

  #readRegister(reg: number): number {
    switch (reg) {
      case LM75_REGISTERS.temperature:
        return encodeLm75Temperature(this.shutdown ? this.#frozen : this.#ambient, this.resolution);
      case LM75_REGISTERS.config:
        return this.#config;
      case LM75_REGISTERS.thyst:
        return this.#thyst;
      default:
        return this.#tos;
    }
  }

  #writeRegister(reg: number, value: number): void {
    const limit = value & 0xff80; // 9 significant bits
    if (reg === LM75_REGISTERS.config) this.config = value;
    else if (reg === LM75_REGISTERS.thyst) this.#thyst = limit;
    else if (reg === LM75_REGISTERS.tos) this.#tos = limit;
    // the temperature register is read-only: the write is acknowledged and ignored
  }
}

function lm75Properties(chip: Lm75Chip): Record<string, DeviceProperty> {
  // The chip measures -55..125 °C: a value it could never report is refused rather than clamped,
  // as the `temperature` option is, so an operator's typo does not pass silently.
  const celsius = (description: string, get: () => number, set: (v: number) => void) =>
    numberProperty(description, get, set, LM75_RANGE);
  return {
    temperature: celsius(
      `measured temperature in °C (${LM75_RANGE.min}..${LM75_RANGE.max}, ${2 ** (8 - chip.resolution)} °C steps)`,
      () => chip.temperature,
      (v) => {
        chip.temperature = v;
      },
    ),
    config: integerProperty(
      "configuration register (bit 0 shutdown, 1 interrupt mode, 2 OS active high, 3-4 fault queue)",
      () => chip.config,
      (v) => {
        chip.config = v;
      },
      { min: 0, max: 0xff },
    ),
    thyst: celsius(
      "T_HYST in °C (0.5 °C steps)",
      () => chip.thyst,
      (v) => {
        chip.thyst = v;
      },
    ),
    tos: celsius(
      "T_OS in °C (0.5 °C steps)",
      () => chip.tos,
      (v) => {
        chip.tos = v;
      },
    ),
  };
}

function lm75Model(name: string, resolution: Lm75Resolution, what: string): ModelDefinition {
  return {
    name,
    description: `${what} temperature sensor (${resolution}-bit, ${2 ** (8 - resolution)} °C steps)`,
    options: schema,
    create(options): SimDevice {
      const o = validateOptions(schema, options, name);
      const chip = new Lm75Chip(resolution, o.temperature ?? 25);
      return {
        targets: [chip.target],
        properties: lm75Properties(chip),
        saveState: () => chip.saveState(),
        restoreState: (state) => chip.restoreState(state, name),
      };
    },
  };
}

/** LM75 (9-bit) and LM75A (11-bit). */
export const lm75Models: readonly ModelDefinition[] = [
  lm75Model("lm75", 9, "LM75"),
  lm75Model("lm75a", 11, "LM75A"),
];
