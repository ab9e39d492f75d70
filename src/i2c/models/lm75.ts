/**
 * LM75-family digital temperature sensors (LM75, LM75A, TMP75, TMP275): pointer register,
 * temperature (read-only), configuration, T_HYST and T_OS, with the temperature settable at run time. Owns only the chip's behaviour; must
 * not know about buses, virtio or the configuration format.
 * @module
 */

import type { DeviceProperty, ModelDefinition } from "../model.js";
import { chipModel } from "./chip-model.js";
import { decodeLeftJustified, encodeLeftJustified } from "./fixed-point.js";
import { validateState } from "./options.js";
import { integerProperty, numberProperty } from "./properties.js";
import { RegisterFile } from "./registers.js";

/** Register numbers (the pointer register's 2 low bits). */
export const LM75_REGISTERS = { temperature: 0, config: 1, thyst: 2, tos: 3 } as const;

/**
 * Configuration bits: shutdown, comparator(0)/interrupt(1) mode, OS polarity, fault queue (2 bits);
 * on the TMP75/TMP275 also the resolution (R1:R0) and one-shot (OS).
 */
export const LM75_CONFIG = {
  shutdown: 0x01,
  interrupt: 0x02,
  polarityHigh: 0x04,
  faultQueue: 0x18,
  resolution: 0x60,
  oneShot: 0x80,
} as const;

/** Measurable range of the LM75/LM75A (°C); values outside are clamped. */
export const LM75_RANGE = { min: -55, max: 125 } as const;

/** Bits of temperature resolution: 9 (0.5 °C, LM75) to 12 (0.0625 °C, TMP75 at R1:R0 = 11). */
export type Lm75Resolution = 9 | 10 | 11 | 12;

/**
 * What tells the members of the family apart, as Linux's lm75 driver (drivers/hwmon/lm75.c,
 * `device_params`) sees them.
 */
export interface Lm75Variant {
  readonly name: string;
  readonly description: string;
  /** Resolution of the temperature register for a configuration value. */
  resolution(config: number): Lm75Resolution;
  /** Configuration bits that hold what is written (the others read 0). */
  readonly configMask: number;
  /** Significant bits of T_HYST/T_LOW and T_OS/T_HIGH. */
  readonly limitBits: Lm75Resolution;
  /** Operating range in °C: the temperature option and property refuse values outside. */
  readonly range: { readonly min: number; readonly max: number };
  /** OS (bit 7) written as 1 in shutdown runs one conversion; the bit reads 0. */
  readonly oneShot: boolean;
}

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
  const clamped = Math.min(LM75_RANGE.max, Math.max(LM75_RANGE.min, celsius));
  return encodeLeftJustified(clamped, bits, bits - 8);
}

/** Decodes a 16-bit register value to °C at `bits` resolution (lower bits ignored). */
export function decodeLm75Temperature(register: number, bits: Lm75Resolution): number {
  return decodeLeftJustified(register, bits, bits - 8);
}

/** The register mask that keeps a limit's `bits` significant bits. */
const limitMask = (bits: Lm75Resolution) => 0x10000 - 2 ** (16 - bits);

function optionSchema(variant: Lm75Variant) {
  return {
    type: "object",
    properties: {
      temperature: {
        type: "number",
        min: variant.range.min,
        max: variant.range.max,
        description: "initial temperature in °C (default 25)",
      },
    },
  } as const;
}

function stateSchema(variant: Lm75Variant) {
  const celsius = { type: "number", min: variant.range.min, max: variant.range.max } as const;
  const register = { type: "integer", min: 0, max: 0xffff } as const;
  /**
   * What a successor needs (SimDevice.saveState): the pointer, the measured temperature and the one
   * the register holds in shutdown (°C), the configuration, and the limits as their registers
   * (the guest may write limits the °C properties could not).
   */
  return {
    type: "object",
    required: ["pointer", "temperature", "frozen", "config", "thyst", "tos"],
    properties: {
      pointer: { type: "integer", min: 0, max: 3 },
      temperature: celsius,
      frozen: celsius,
      config: { type: "integer", min: 0, max: variant.configMask },
      thyst: register,
      tos: register,
    },
  } as const;
}

/**
 * The chip, as in the LM75/LM75A/TMP75/TMP275 datasheets and as Linux's lm75 driver expects:
 * - a write's first byte sets the pointer (2 bits); a 1-byte write only sets the pointer, which
 *   persists between transfers;
 * - 16-bit registers go MSB first; reading past a register's bytes repeats it (no auto-increment);
 * - the temperature register is read-only; in shutdown it holds the last conversion (a one-shot
 *   write of OS converts once on chips that have it);
 * - the limits keep `limitBits` bits, the configuration the variant's `configMask`.
 */
export class Lm75Chip {
  readonly variant: Lm75Variant;
  readonly target: RegisterFile;
  /** The temperature the sensor measures (°C, clamped to the range, not yet quantised). */
  #ambient: number;
  /** What the temperature register holds while in shutdown (°C, quantised when converted). */
  #frozen: number;
  #config = 0;
  #thyst: number;
  #tos: number;

  constructor(variant: Lm75Variant, temperature = 25) {
    this.variant = variant;
    this.#ambient = this.#clamp(temperature);
    this.#frozen = this.temperature;
    this.#thyst = encodeLm75Temperature(75, variant.limitBits);
    this.#tos = encodeLm75Temperature(80, variant.limitBits);
    this.target = new RegisterFile(
      { count: 4, pointerMask: 0x03, autoIncrement: false, width: (reg) => (reg === 1 ? 1 : 2) },
      {
        read: (reg) => this.#readRegister(reg),
        write: (reg, value) => this.#writeRegister(reg, value),
      },
    );
  }

  #clamp(celsius: number): number {
    return Math.min(this.variant.range.max, Math.max(this.variant.range.min, celsius));
  }

  #quantise(celsius: number): number {
    const bits = this.resolution;
    return decodeLm75Temperature(encodeLm75Temperature(celsius, bits), bits);
  }

  /** Bits of the temperature register at the current configuration. */
  get resolution(): Lm75Resolution {
    return this.variant.resolution(this.#config);
  }

  /** Measured temperature (°C, quantised); what the temperature register shows unless shut down. */
  get temperature(): number {
    return this.#quantise(this.#ambient);
  }

  set temperature(celsius: number) {
    this.#ambient = this.#clamp(celsius);
    if (!this.shutdown) this.#convert();
  }

  get shutdown(): boolean {
    return (this.#config & LM75_CONFIG.shutdown) !== 0;
  }

  get config(): number {
    return this.#config;
  }

  set config(value: number) {
    this.#config = value & this.variant.configMask;
    // Leaving shutdown converts again; so does a one-shot request while shut down.
    const oneShot = this.variant.oneShot && (value & LM75_CONFIG.oneShot) !== 0;
    if (!this.shutdown || oneShot) this.#convert();
  }

  get thyst(): number {
    return decodeLm75Temperature(this.#thyst, this.variant.limitBits);
  }

  set thyst(celsius: number) {
    this.#thyst = encodeLm75Temperature(celsius, this.variant.limitBits);
  }

  get tos(): number {
    return decodeLm75Temperature(this.#tos, this.variant.limitBits);
  }

  set tos(celsius: number) {
    this.#tos = encodeLm75Temperature(celsius, this.variant.limitBits);
  }

  #convert(): void {
    this.#frozen = this.temperature;
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
  restoreState(state: unknown): void {
    const saved = validateState(stateSchema(this.variant), state, this.variant.name);
    const mask = limitMask(this.variant.limitBits);
    this.target.pointer.value = saved.pointer ?? 0;
    this.#config = (saved.config ?? 0) & this.variant.configMask;
    this.#ambient = saved.temperature ?? 25;
    this.#frozen = this.#quantise(saved.frozen ?? this.#ambient);
    this.#thyst = (saved.thyst ?? 0) & mask;
    this.#tos = (saved.tos ?? 0) & mask;
  }

  #readRegister(reg: number): number {
    switch (reg) {
      case LM75_REGISTERS.temperature: {
        const celsius = this.shutdown ? this.#frozen : this.temperature;
        return encodeLm75Temperature(celsius, this.resolution);
      }
      case LM75_REGISTERS.config:
        return this.#config;
      case LM75_REGISTERS.thyst:
        return this.#thyst;
      default:
        return this.#tos;
    }
  }

  #writeRegister(reg: number, value: number): void {
    const limit = value & limitMask(this.variant.limitBits);
    if (reg === LM75_REGISTERS.config) this.config = value;
    else if (reg === LM75_REGISTERS.thyst) this.#thyst = limit;
    else if (reg === LM75_REGISTERS.tos) this.#tos = limit;
    // the temperature register is read-only: the write is acknowledged and ignored
  }
}

function lm75Properties(chip: Lm75Chip): Record<string, DeviceProperty> {
  const { range } = chip.variant;
  // A value the chip could never report is refused rather than clamped, as the `temperature`
  // option is, so an operator's typo does not pass silently.
  const celsius = (description: string, get: () => number, set: (v: number) => void) =>
    numberProperty(description, get, set, range);
  const limitSteps = 2 ** (8 - chip.variant.limitBits);
  return {
    temperature: celsius(
      `measured temperature in °C (${range.min}..${range.max}, quantised to the resolution)`,
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
      `T_HYST (T_LOW) in °C (${limitSteps} °C steps)`,
      () => chip.thyst,
      (v) => {
        chip.thyst = v;
      },
    ),
    tos: celsius(
      `T_OS (T_HIGH) in °C (${limitSteps} °C steps)`,
      () => chip.tos,
      (v) => {
        chip.tos = v;
      },
    ),
  };
}

function lm75Model(variant: Lm75Variant): ModelDefinition {
  return chipModel({
    name: variant.name,
    description: variant.description,
    linuxDriver: "hwmon lm75",
    options: optionSchema(variant),
    create: (o) => new Lm75Chip(variant, o.temperature ?? 25),
    target: (chip) => chip.target,
    properties: lm75Properties,
  });
}

/** A variant whose resolution the configuration does not change. */
function fixedResolution(name: string, bits: Lm75Resolution, what: string): Lm75Variant {
  return {
    name,
    description: `${what} temperature sensor (${bits}-bit, ${2 ** (8 - bits)} °C steps)`,
    resolution: () => bits,
    configMask: 0x1f, // bits 7..5 are reserved and read 0
    limitBits: 9,
    range: LM75_RANGE,
    oneShot: false,
  };
}

/**
 * TMP75/TMP275: R1:R0 (configuration bits 6:5) choose 9 to 12 bits, power-on 9; Linux's lm75 driver
 * sets 12 at probe (`set_mask = 3 << 5`) and changes them for `update_interval`; OS is one-shot.
 */
function tmp75Variant(name: string, what: string): Lm75Variant {
  return {
    name,
    description: `${what} temperature sensor (9 to 12 bits by configuration, one-shot)`,
    resolution: (config) => (9 + ((config & LM75_CONFIG.resolution) >> 5)) as Lm75Resolution,
    configMask: 0x7f,
    limitBits: 12,
    range: { min: -40, max: 125 },
    oneShot: true,
  };
}

/** LM75 (9-bit), LM75A (11-bit), TMP75 and TMP275 (9 to 12 bits). */
export const lm75Models: readonly ModelDefinition[] = [
  lm75Model(fixedResolution("lm75", 9, "LM75")),
  lm75Model(fixedResolution("lm75a", 11, "LM75A")),
  lm75Model(tmp75Variant("tmp75", "TI TMP75")),
  lm75Model(tmp75Variant("tmp275", "TI TMP275")),
];
