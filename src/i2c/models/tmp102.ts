/**
 * TI TMP102 digital temperature sensor: pointer register, temperature (read-only, 12-bit or 13-bit
 * extended mode), 16-bit configuration with one-shot and the comparator alert bit, T_LOW and T_HIGH.
 * The temperature is settable at run time. Owns only the chip's behaviour; must not know about
 * buses, virtio or the configuration format.
 * @module
 */

import type { ModelDefinition } from "../model.js";
import { chipModel } from "./chip-model.js";
import { type HostClock, systemClock } from "./clock.js";
import { decodeLeftJustified, encodeLeftJustified } from "./fixed-point.js";
import { validateState } from "./options.js";
import { numberProperty } from "./properties.js";
import { RegisterFile } from "./registers.js";

/** Register numbers (the pointer register's 2 low bits). */
export const TMP102_REGISTERS = { temperature: 0, config: 1, tlow: 2, thigh: 3 } as const;

/** Configuration bits, as the 16-bit register reads MSB first (Linux's tmp102.c names). */
export const TMP102_CONFIG = {
  shutdown: 0x0100,
  thermostatInterrupt: 0x0200,
  polarity: 0x0400,
  faultQueue: 0x1800,
  resolution: 0x6000, // R1:R0, read-only 11 (12 bits)
  oneShot: 0x8000,
  extendedMode: 0x0010,
  alert: 0x0020, // read-only
  conversionRate: 0x00c0,
} as const;

/** Power-on configuration: R1:R0 = 11, 4 Hz (CR1), alert inactive (AL = 1 with POL = 0). */
export const TMP102_POWER_ON_CONFIG = 0x60a0;
const WRITABLE_CONFIG = 0x1fd0; // SD TM POL F1 F0, CR1 CR0 EM; OS acts, R1 R0 AL are read-only

/** Typical conversion time (datasheet 26 ms; Linux waits 35 ms after probe before reading). */
export const TMP102_CONVERSION_MS = 26;

/** What the 13-bit extended format covers (°C); values outside are refused. */
export const TMP102_RANGE = { min: -55, max: 150 } as const;

const FRACTION_BITS = 4; // 0.0625 °C steps in both modes

/** Register format of a mode: normal 12 bits, extended 13 bits with bit 0 set to tell them apart. */
const format = (extended: boolean) =>
  extended ? { bits: 13, flag: 1, mask: 0xfff8 } : { bits: 12, flag: 0, mask: 0xfff0 };

/** °C as the temperature register holds it in the given mode. */
export function encodeTmp102Temperature(celsius: number, extended: boolean): number {
  const { bits, flag } = format(extended);
  return encodeLeftJustified(celsius, bits, FRACTION_BITS) | flag;
}

/** The °C a temperature or limit register holds in the given mode. */
export function decodeTmp102Temperature(register: number, extended: boolean): number {
  return decodeLeftJustified(register, format(extended).bits, FRACTION_BITS);
}

const schema = {
  type: "object",
  properties: {
    temperature: {
      type: "number",
      min: TMP102_RANGE.min,
      max: TMP102_RANGE.max,
      description: "initial temperature in °C (default 25)",
    },
  },
} as const;

const register16 = { type: "integer", min: 0, max: 0xffff } as const;

/**
 * What a successor needs (SimDevice.saveState): the pointer, the measured temperature, the last
 * conversion (°C), configuration, limits as registers and the alert's state. A conversion in
 * progress is taken as done: the successor starts between transfers, well after 26 ms.
 */
const stateSchema = {
  type: "object",
  required: [
    "pointer",
    "temperature",
    "converted",
    "config",
    "tlow",
    "thigh",
    "alert",
    "oneShotDone",
  ],
  properties: {
    pointer: { type: "integer", min: 0, max: 3 },
    temperature: { type: "number", min: TMP102_RANGE.min, max: TMP102_RANGE.max },
    converted: { type: "number", min: TMP102_RANGE.min, max: TMP102_RANGE.max },
    config: register16,
    tlow: register16,
    thigh: register16,
    alert: { type: "boolean" },
    oneShotDone: { type: "boolean" },
  },
} as const;

/**
 * The chip, as in the TMP102 datasheet (SBOS397) and as Linux's tmp102 driver expects:
 * - registers as on the LM75: a 2-bit pointer set by a write's first byte, persisting between
 *   transfers; 16-bit registers MSB first; reading on repeats the register;
 * - `tmp102_probe` reads the configuration and refuses the chip unless R1:R0 read 11 and the low
 *   nibble 0, then sets TM, EM and CR1 and clears SD, OS and CR0: the model keeps R1:R0, AL and the
 *   low nibble read-only;
 * - a conversion takes 26 ms: after power-on and after leaving shutdown the temperature register
 *   holds the previous conversion (0 at power-on) until it is done, which is why the driver waits
 *   35 ms (`ready_time`) before its first read; once converting, new temperatures show at once;
 * - in shutdown, writing OS = 1 runs one conversion; OS reads 1 once it is done;
 * - the alert (AL, read-only) is a comparator: active from T_HIGH up, until below T_LOW; it reads
 *   0 when active with POL = 0 (the fault queue is not modelled: one conversion is enough);
 * - EM switches the temperature and limit formats from 12 to 13 bits (bit 0 of the temperature
 *   register set); the limits keep their bits, so they read differently after a switch, as on the chip.
 */
export class Tmp102Chip {
  readonly target: RegisterFile;
  readonly #clock: HostClock;
  #ambient: number;
  /** The last conversion's result (°C); what the temperature register shows. */
  #converted = 0;
  /** When the conversion in progress is done; null when none is. */
  #readyAt: number | null;
  #config = TMP102_POWER_ON_CONFIG;
  #oneShotDone = false;
  #tlow = encodeTmp102Temperature(75, false);
  #thigh = encodeTmp102Temperature(80, false);
  #alert = false;

  constructor(clock: HostClock, temperature = 25) {
    this.#clock = clock;
    this.#ambient = temperature;
    this.#readyAt = clock.now() + TMP102_CONVERSION_MS;
    this.target = new RegisterFile(
      { count: 4, pointerMask: 0x03, autoIncrement: false, width: 2 },
      {
        read: (reg) => this.#readRegister(reg),
        write: (reg, value) => this.#writeRegister(reg, value),
      },
    );
  }

  /** Measured temperature (°C, in 0.0625 °C steps). */
  get temperature(): number {
    return decodeTmp102Temperature(encodeTmp102Temperature(this.#ambient, true), true);
  }

  /** A new measured temperature; a converting chip reports it from its next read. */
  set temperature(celsius: number) {
    this.#ambient = celsius;
  }

  get shutdown(): boolean {
    return (this.#config & TMP102_CONFIG.shutdown) !== 0;
  }

  get extended(): boolean {
    return (this.#config & TMP102_CONFIG.extendedMode) !== 0;
  }

  /** Comparator state: true from T_HIGH up until the temperature falls below T_LOW. */
  get alert(): boolean {
    this.#update();
    return this.#alert;
  }

  /** The temperature register as the guest reads it now. */
  get temperatureRegister(): number {
    this.#update();
    return encodeTmp102Temperature(this.#converted, this.extended);
  }

  /** Brings the conversion result up to date with the host clock. */
  #update(): void {
    const converting = this.#readyAt === null ? !this.shutdown : this.#clock.now() >= this.#readyAt;
    if (!converting) return;
    if (this.#readyAt !== null && this.shutdown) this.#oneShotDone = true;
    this.#readyAt = null;
    this.#converted = this.#ambient;
    this.#compare();
  }

  #compare(): void {
    const t = decodeTmp102Temperature(
      encodeTmp102Temperature(this.#converted, this.extended),
      this.extended,
    );
    if (t >= decodeTmp102Temperature(this.#thigh, this.extended)) this.#alert = true;
    else if (t < decodeTmp102Temperature(this.#tlow, this.extended)) this.#alert = false;
  }

  #configRegister(): number {
    this.#update();
    const polarityHigh = (this.#config & TMP102_CONFIG.polarity) !== 0;
    const al = this.#alert === polarityHigh ? TMP102_CONFIG.alert : 0;
    const os = this.shutdown && this.#oneShotDone ? TMP102_CONFIG.oneShot : 0;
    return (this.#config & ~(TMP102_CONFIG.alert | TMP102_CONFIG.oneShot)) | al | os;
  }

  #writeConfig(value: number): void {
    this.#update();
    const wasShutdown = this.shutdown;
    const oldFormat = this.extended;
    this.#config = (this.#config & ~WRITABLE_CONFIG) | (value & WRITABLE_CONFIG);
    if (wasShutdown && !this.shutdown) this.#readyAt = this.#clock.now() + TMP102_CONVERSION_MS;
    if (this.shutdown && (value & TMP102_CONFIG.oneShot) !== 0) {
      this.#oneShotDone = false;
      this.#readyAt = this.#clock.now() + TMP102_CONVERSION_MS;
    }
    if (oldFormat !== this.extended) {
      // The limits keep their bits; only what the mode ignores is cleared.
      const { mask } = format(this.extended);
      this.#tlow &= mask;
      this.#thigh &= mask;
    }
  }

  #readRegister(reg: number): number {
    switch (reg) {
      case TMP102_REGISTERS.temperature:
        return this.temperatureRegister;
      case TMP102_REGISTERS.config:
        return this.#configRegister();
      case TMP102_REGISTERS.tlow:
        return this.#tlow;
      default:
        return this.#thigh;
    }
  }

  #writeRegister(reg: number, value: number): void {
    const { mask } = format(this.extended);
    if (reg === TMP102_REGISTERS.config) this.#writeConfig(value);
    else if (reg === TMP102_REGISTERS.tlow) this.#tlow = value & mask;
    else if (reg === TMP102_REGISTERS.thigh) this.#thigh = value & mask;
    // the temperature register is read-only: the write is acknowledged and ignored
  }

  /** Its state as plain data; a conversion in progress is saved as done (see stateSchema). */
  saveState(): Record<string, number | boolean> {
    this.#update();
    const converting = this.#readyAt !== null;
    return {
      pointer: this.target.pointer.value,
      temperature: this.#ambient,
      converted: converting ? this.#ambient : this.#converted,
      config: this.#config,
      tlow: this.#tlow,
      thigh: this.#thigh,
      alert: this.#alert,
      oneShotDone: this.#oneShotDone || (converting && this.shutdown),
    };
  }

  restoreState(state: unknown): void {
    const saved = validateState(stateSchema, state, "tmp102");
    this.target.pointer.value = saved.pointer ?? 0;
    this.#ambient = saved.temperature ?? 25;
    this.#converted = saved.converted ?? this.#ambient;
    this.#config =
      (TMP102_POWER_ON_CONFIG & ~WRITABLE_CONFIG) | ((saved.config ?? 0) & WRITABLE_CONFIG);
    const { mask } = format(this.extended);
    this.#tlow = (saved.tlow ?? 0) & mask;
    this.#thigh = (saved.thigh ?? 0) & mask;
    this.#alert = saved.alert ?? false;
    this.#readyAt = null;
    this.#oneShotDone = saved.oneShotDone ?? false;
  }
}

/** The TMP102 ModelDefinition with an injectable host clock (tests pass a fake one). */
export function tmp102Model(clock: HostClock = systemClock): ModelDefinition {
  return chipModel({
    name: "tmp102",
    linuxDriver: "hwmon tmp102",
    description: "TI TMP102 temperature sensor (12/13-bit, one-shot, comparator alert)",
    options: schema,
    create: (o) => new Tmp102Chip(clock, o.temperature ?? 25),
    target: (chip) => chip.target,
    properties: (chip) => ({
      temperature: numberProperty(
        `measured temperature in °C (${TMP102_RANGE.min}..${TMP102_RANGE.max}, 0.0625 °C steps)`,
        () => chip.temperature,
        (v) => {
          chip.temperature = v;
        },
        TMP102_RANGE,
      ),
      alert: { description: "comparator alert active (read-only)", get: () => chip.alert },
    }),
  });
}
