/**
 * TI ADS1015 (12-bit) and ADS1115 (16-bit) four-input ADCs: conversion, configuration (input
 * multiplexer, gain, mode, data rate, comparator) and threshold registers, with the voltages on
 * AIN0..AIN3 settable at run time and conversions that take their data-rate time.
 * Owns only the chip's behaviour; must not know about buses, virtio or the configuration format.
 * @module
 */

import type { ModelDefinition } from "../model.js";
import { chipModel } from "./chip-model.js";
import { type HostClock, systemClock } from "./clock.js";
import { clampSigned, toTwosComplement } from "./fixed-point.js";
import { validateState } from "./options.js";
import { numberProperty } from "./properties.js";
import { RegisterFile } from "./registers.js";

export const ADS1015_REGISTERS = { conversion: 0, config: 1, loThresh: 2, hiThresh: 3 } as const;

const OS = 0x8000;
const SINGLE_SHOT = 0x0100; // MODE: 1 = single shot / power-down, 0 = continuous
export const ADS1015_POWER_ON_CONFIG = 0x8583;
/** Full-scale range (V) per PGA code; 5..7 are all ±0.256 V. */
const FULL_SCALE = [6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256];
/** Input pairs (positive, negative; -1 = GND) per MUX code. */
const MUX: readonly (readonly [number, number])[] = [
  [0, 1],
  [0, 3],
  [1, 3],
  [2, 3],
  [0, -1],
  [1, -1],
  [2, -1],
  [3, -1],
];
/** What an analog input may be driven to (V): GND - 0.3 to VDD + 0.3 at 5 V. */
const INPUT_RANGE = { min: -0.3, max: 5.5 } as const;
const INPUTS = 4;

export interface Ads1015Variant {
  readonly name: string;
  readonly bits: 12 | 16;
  /** Samples per second per DR code (Linux's ads1015_data_rate / ads1115_data_rate). */
  readonly dataRates: readonly number[];
}

/**
 * The chip, as in the ADS1015/ADS1115 datasheets and as Linux's ti-ads1015 driver uses it:
 * - a pointer byte selects one of four 16-bit registers (MSB first); reading on repeats it;
 * - power-on configuration 0x8583 (single shot, AIN0-AIN1, ±2.048 V, 128 SPS / 1600 SPS),
 *   thresholds 0x8000 and 0x7fff; the conversion register reads 0 until a conversion is done;
 * - `ads1015_set_power_state` switches to continuous mode; `ads1015_get_adc_result` writes MUX,
 *   PGA and DR and then waits one conversion at the old and one at the new data rate (+10 %)
 *   before reading: here, after a configuration write in continuous mode, the conversion
 *   register keeps its old value for 1/DR, then follows the inputs (one conversion every 1/DR);
 * - single shot: writing OS = 1 converts once in 1/DR; OS reads 0 while converting;
 * - code = V(+) - V(-) scaled to the PGA's full scale, clamped (ADS1015: 12 bits, left-justified);
 *   the comparator and its thresholds are kept but drive no ALERT/RDY line.
 */
export class Ads1015Chip {
  readonly variant: Ads1015Variant;
  readonly target: RegisterFile;
  readonly inputs: number[];
  readonly #clock: HostClock;
  /** The configuration without OS, which reads as "not converting" (see #readRegister). */
  #config = ADS1015_POWER_ON_CONFIG & ~OS;
  #loThresh = 0x8000;
  #hiThresh = 0x7fff;
  #conversion = 0;
  /** When the conversion in progress (single shot) or the first after a change (continuous) ends. */
  #readyAt: number | null = null;

  constructor(variant: Ads1015Variant, clock: HostClock, inputs: readonly number[]) {
    this.variant = variant;
    this.#clock = clock;
    this.inputs = [...inputs];
    this.target = new RegisterFile(
      { count: 4, pointerMask: 0x03, autoIncrement: false, width: 2 },
      {
        read: (reg) => this.#readRegister(reg),
        write: (reg, value) => this.#writeRegister(reg, value),
      },
    );
  }

  get #continuous(): boolean {
    return (this.#config & SINGLE_SHOT) === 0;
  }

  #conversionMs(): number {
    const rate = this.variant.dataRates[(this.#config >> 5) & 7] ?? 1;
    return 1000 / rate;
  }

  /** The code for the inputs now, at the configured multiplexer and gain. */
  #sample(): number {
    const [positive = 0, negative = -1] = MUX[(this.#config >> 12) & 7] ?? [0, 1];
    const volts = (this.inputs[positive] ?? 0) - (negative < 0 ? 0 : (this.inputs[negative] ?? 0));
    const fullScale = FULL_SCALE[(this.#config >> 9) & 7] ?? 2.048;
    const { bits } = this.variant;
    const code = clampSigned(Math.round((volts / fullScale) * 2 ** (bits - 1)), bits);
    return toTwosComplement(code, bits) << (16 - bits);
  }

  /** Brings the conversion register up to date with the clock. */
  #update(): void {
    const now = this.#clock.now();
    if (this.#readyAt !== null) {
      if (now < this.#readyAt) return;
      this.#readyAt = null;
      this.#conversion = this.#sample();
      return;
    }
    if (this.#continuous) this.#conversion = this.#sample();
  }

  get conversion(): number {
    this.#update();
    return this.#conversion;
  }

  #readRegister(reg: number): number {
    this.#update();
    switch (reg) {
      case ADS1015_REGISTERS.conversion:
        return this.#conversion;
      case ADS1015_REGISTERS.config: {
        const busy = !this.#continuous && this.#readyAt !== null;
        return (this.#config & ~OS) | (busy ? 0 : OS);
      }
      case ADS1015_REGISTERS.loThresh:
        return this.#loThresh;
      default:
        return this.#hiThresh;
    }
  }

  #writeRegister(reg: number, value: number): void {
    this.#update();
    if (reg === ADS1015_REGISTERS.config) {
      const changed = (value & ~OS) !== (this.#config & ~OS);
      this.#config = value & ~OS;
      const startSingle = !this.#continuous && (value & OS) !== 0;
      if (startSingle || (this.#continuous && changed)) {
        this.#readyAt = this.#clock.now() + this.#conversionMs();
      }
    } else if (reg === ADS1015_REGISTERS.loThresh) this.#loThresh = value;
    else if (reg === ADS1015_REGISTERS.hiThresh) this.#hiThresh = value;
    // the conversion register is read-only
  }

  saveState(): Record<string, unknown> {
    this.#update();
    return {
      pointer: this.target.pointer.value,
      inputs: [...this.inputs],
      config: this.#config,
      loThresh: this.#loThresh,
      hiThresh: this.#hiThresh,
      conversion: this.#conversion,
    };
  }

  /** A conversion in progress is taken as done: the successor starts well after it. */
  restoreState(state: unknown): void {
    const word = { type: "integer", min: 0, max: 0xffff } as const;
    const schema = {
      type: "object",
      required: ["pointer", "inputs", "config", "loThresh", "hiThresh", "conversion"],
      properties: {
        pointer: { type: "integer", min: 0, max: 3 },
        inputs: { type: "array", items: { type: "number", ...INPUT_RANGE }, maxItems: INPUTS },
        config: word,
        loThresh: word,
        hiThresh: word,
        conversion: word,
      },
    } as const;
    const saved = validateState(schema, state, this.variant.name);
    this.target.pointer.value = saved.pointer ?? 0;
    (saved.inputs ?? []).forEach((v, i) => {
      this.inputs[i] = v;
    });
    this.#config = (saved.config ?? ADS1015_POWER_ON_CONFIG) & ~OS;
    this.#loThresh = saved.loThresh ?? 0x8000;
    this.#hiThresh = saved.hiThresh ?? 0x7fff;
    this.#conversion = saved.conversion ?? 0;
    this.#readyAt = null;
  }
}

function ads1015Model(
  variant: Ads1015Variant,
  description: string,
  clock: HostClock,
): ModelDefinition {
  const input = { type: "number", ...INPUT_RANGE } as const;
  const schema = {
    type: "object",
    properties: {
      ain0: { ...input, description: "initial AIN0 voltage in V (default 0)" },
      ain1: { ...input, description: "initial AIN1 voltage in V (default 0)" },
      ain2: { ...input, description: "initial AIN2 voltage in V (default 0)" },
      ain3: { ...input, description: "initial AIN3 voltage in V (default 0)" },
    },
  } as const;
  return chipModel({
    name: variant.name,
    description,
    linuxDriver: "iio ti-ads1015",
    options: schema,
    create: (o) =>
      new Ads1015Chip(variant, clock, [o.ain0 ?? 0, o.ain1 ?? 0, o.ain2 ?? 0, o.ain3 ?? 0]),
    target: (chip) => chip.target,
    properties: (chip) => ({
      ...Object.fromEntries(
        chip.inputs.map((_, i) => [
          `ain${i}`,
          numberProperty(
            `AIN${i} voltage in V (${INPUT_RANGE.min}..${INPUT_RANGE.max})`,
            () => chip.inputs[i] ?? 0,
            (v) => {
              chip.inputs[i] = v;
            },
            INPUT_RANGE,
          ),
        ]),
      ),
      conversion: { description: "conversion register", get: () => chip.conversion },
    }),
  });
}

/** Linux's ti-ads1015 names: ads1015 (12-bit) and ads1115 (16-bit), with an injectable clock. */
export function ads1015Models(clock: HostClock = systemClock): ModelDefinition[] {
  return [
    ads1015Model(
      { name: "ads1015", bits: 12, dataRates: [128, 250, 490, 920, 1600, 2400, 3300, 3300] },
      "TI ADS1015 12-bit 4-input ADC (PGA, single shot and continuous)",
      clock,
    ),
    ads1015Model(
      { name: "ads1115", bits: 16, dataRates: [8, 16, 32, 64, 128, 250, 475, 860] },
      "TI ADS1115 16-bit 4-input ADC (PGA, single shot and continuous)",
      clock,
    ),
  ];
}
