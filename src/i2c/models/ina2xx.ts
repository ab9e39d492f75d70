/**
 * TI INA219/INA220 and INA226 current/power monitors: shunt and bus voltage ADCs, the calibration
 * register that scales the current and power registers the chip computes, and (INA226) the alert
 * mask/limit and the manufacturer and die IDs. The current through the shunt and the bus voltage
 * are settable at run time; the shunt voltage follows from the shunt resistor the board has.
 * Owns only the chip's behaviour; must not know about buses, virtio or the configuration format.
 * @module
 */

import type { ModelDefinition } from "../model.js";
import { chipModel } from "./chip-model.js";
import { clampSigned, fromTwosComplement, toTwosComplement } from "./fixed-point.js";
import { byteState, validateState } from "./options.js";
import { numberProperty } from "./properties.js";
import { RegisterFile } from "./registers.js";

/** Register pointers. */
export const INA2XX_REGISTERS = {
  config: 0x00,
  shuntVoltage: 0x01,
  busVoltage: 0x02,
  power: 0x03,
  current: 0x04,
  calibration: 0x05,
  maskEnable: 0x06, // INA226
  alertLimit: 0x07, // INA226
  manufacturerId: 0xfe, // INA226
  dieId: 0xff, // INA226
} as const;

/** What tells the INA219 and INA226 apart, as their datasheets and Linux's `ina2xx_config` say. */
export interface Ina2xxVariant {
  readonly name: string;
  readonly description: string;
  readonly powerOnConfig: number;
  /** Configuration bits that read back as written (RST self-clears; the rest read fixed). */
  readonly configMask: number;
  /** Shunt voltage LSB (V) and the largest magnitude (LSBs) at a configuration. */
  readonly shuntLsb: number;
  shuntFullScale(config: number): number;
  /** Bus voltage LSB (V), the register's left shift and its largest value (LSBs). */
  readonly busLsb: number;
  readonly busShift: number;
  readonly busFullScale: number;
  /** current register = shunt register * calibration / currentDivisor. */
  readonly currentDivisor: number;
  /** power register = |current register| * bus register (LSBs) / powerDivisor. */
  readonly powerDivisor: number;
  readonly calibrationMask: number;
  /** INA226: mask/enable, alert limit and ID registers. */
  readonly hasAlert: boolean;
  /** Inputs the chip's pins take (A through a 10 mΩ shunt, V on the bus). */
  readonly busRange: { readonly min: number; readonly max: number };
}

const MODE_MASK = 0x0007;
const RESET = 0x8000;
/** INA219 bus voltage register: conversion ready, math overflow. */
const INA219_CNVR = 0x0002;
const INA219_OVF = 0x0001;
/** INA226 mask/enable bits. */
export const INA226_MASK = {
  shuntOver: 0x8000,
  shuntUnder: 0x4000,
  busOver: 0x2000,
  busUnder: 0x1000,
  powerOver: 0x0800,
  conversionReady: 0x0400,
  alertFlag: 0x0010,
  conversionFlag: 0x0008,
  overflow: 0x0004,
  latch: 0x0001,
} as const;
const INA226_MASK_WRITABLE = 0xfc03; // the five functions, CNVR enable, APOL, LEN
const INA226_MANUFACTURER_ID = 0x5449; // "TI"
const INA226_DIE_ID = 0x2260;

const INA219: Omit<Ina2xxVariant, "name" | "description"> = {
  powerOnConfig: 0x399f,
  configMask: 0x3fff, // bit 14 reads 0
  shuntLsb: 10e-6,
  // PG bits 12:11: ±40, ±80, ±160, ±320 mV
  shuntFullScale: (config) => 4000 * 2 ** ((config >> 11) & 3),
  busLsb: 4e-3,
  busShift: 3,
  busFullScale: 0x1fff,
  currentDivisor: 4096,
  powerDivisor: 5000,
  calibrationMask: 0xfffe, // bit 0 reads 0
  hasAlert: false,
  busRange: { min: 0, max: 26 },
};

const INA226: Omit<Ina2xxVariant, "name" | "description"> = {
  powerOnConfig: 0x4127,
  configMask: 0x0fff, // bits 14:12 read 100
  shuntLsb: 2.5e-6,
  shuntFullScale: () => 32767,
  busLsb: 1.25e-3,
  busShift: 0,
  busFullScale: 0x7fff,
  currentDivisor: 2048,
  powerDivisor: 20000,
  calibrationMask: 0x7fff, // bit 15 reads 0
  hasAlert: true,
  busRange: { min: 0, max: 36 },
};

/** The INA226's fixed configuration bits 14:12. */
const INA226_CONFIG_FIXED = 0x4000;

/**
 * The chip, as in the INA219 and INA226 datasheets and as Linux's ina2xx driver uses it:
 * - 16-bit registers MSB first, selected by a pointer byte; reading on repeats the register;
 * - `ina2xx_init` (probe) writes the configuration (0x399f / 0x4527) and the calibration
 *   (4096 / 2048); current and power read 0 until the calibration is non-zero, and
 *   `ina2xx_read_reg` re-initialises the chip when it finds both 0 (a reset chip);
 * - the chip converts continuously (modes 5..7) or once per configuration write (modes 1..3):
 *   conversions are instant here; modes 0 and 4 (power-down, ADC off) keep the last result;
 * - shunt register = current * shunt resistor / LSB, clamped to the PGA range (INA219) or
 *   ±81.92 mV (INA226); current register = shunt * calibration / 4096 (2048); power register
 *   = |current| * bus / 5000 (20000); INA219 OVF flags a current or power that does not fit;
 * - INA219: the bus register holds the voltage in bits 15:3 (4 mV), CNVR (bit 1) set by a
 *   conversion and cleared by reading the power register, OVF (bit 0);
 * - INA226: mask/enable compares the function chosen (SOL, SUL, BOL, BUL, POL) against the alert
 *   limit: AFF follows it, latched when LEN is set; reading mask/enable clears CVRF and a latched
 *   AFF; `ina226_alert_read` reads AFF; IDs 0x5449 ("TI") and 0x2260 at 0xfe and 0xff;
 * - setting RST (config bit 15) restores every register's power-on value.
 */
export class Ina2xxChip {
  readonly variant: Ina2xxVariant;
  readonly target: RegisterFile;
  readonly shuntResistor: number;
  /** The physical inputs: amperes through the shunt, volts on the bus. */
  current: number;
  busVoltage: number;
  #config: number;
  #calibration = 0;
  /** The last conversion: shunt and bus voltage in LSBs. */
  #shunt = 0;
  #bus = 0;
  #conversionReady = false;
  #maskEnable = 0;
  #alertLimit = 0;
  #alertLatched = false;

  constructor(variant: Ina2xxVariant, shuntResistor: number, current: number, busVoltage: number) {
    this.variant = variant;
    this.shuntResistor = shuntResistor;
    this.current = current;
    this.busVoltage = busVoltage;
    this.#config = variant.powerOnConfig;
    this.#convert();
    this.target = new RegisterFile(
      { count: 256, autoIncrement: false, width: 2 },
      {
        read: (reg) => this.#readRegister(reg),
        write: (reg, value) => this.#writeRegister(reg, value),
      },
    );
  }

  get config(): number {
    return this.#config;
  }

  get #continuous(): boolean {
    return (this.#config & MODE_MASK) >= 5;
  }

  /** Samples the inputs as the ADCs would. */
  #convert(): void {
    const { variant } = this;
    const fullScale = variant.shuntFullScale(this.#config);
    const shunt = Math.round((this.current * this.shuntResistor) / variant.shuntLsb);
    this.#shunt = Math.min(fullScale, Math.max(-fullScale, shunt));
    const bus = Math.round(this.busVoltage / variant.busLsb);
    this.#bus = Math.min(variant.busFullScale, Math.max(0, bus));
    this.#conversionReady = true;
  }

  /** Refreshes the conversion when converting continuously. */
  #update(): void {
    if (this.#continuous) this.#convert();
  }

  /** The current register before clamping to 16 bits. */
  #currentValue(): number {
    return Math.trunc((this.#shunt * this.#calibration) / this.variant.currentDivisor);
  }

  #powerValue(): number {
    return Math.trunc((Math.abs(this.#currentRegister()) * this.#bus) / this.variant.powerDivisor);
  }

  #currentRegister(): number {
    return clampSigned(this.#currentValue(), 16);
  }

  #overflow(): boolean {
    const current = this.#currentValue();
    return current !== clampSigned(current, 16) || this.#powerValue() > 0xffff;
  }

  /** The alert function chosen in mask/enable, compared with the limit now. */
  #alertActive(): boolean {
    const limit = this.#alertLimit;
    const m = this.#maskEnable;
    const shunt = this.#shunt;
    if (m & INA226_MASK.shuntOver) return shunt > fromTwosComplement(limit, 16);
    if (m & INA226_MASK.shuntUnder) return shunt < fromTwosComplement(limit, 16);
    if (m & INA226_MASK.busOver) return this.#bus > limit;
    if (m & INA226_MASK.busUnder) return this.#bus < limit;
    if (m & INA226_MASK.powerOver) return Math.min(0xffff, this.#powerValue()) > limit;
    return false;
  }

  #readRegister(reg: number): number {
    this.#update();
    const { variant } = this;
    switch (reg) {
      case INA2XX_REGISTERS.config:
        return this.#config;
      case INA2XX_REGISTERS.shuntVoltage:
        return toTwosComplement(this.#shunt, 16);
      case INA2XX_REGISTERS.busVoltage: {
        const flags = variant.hasAlert
          ? 0
          : (this.#conversionReady ? INA219_CNVR : 0) | (this.#overflow() ? INA219_OVF : 0);
        return (this.#bus << variant.busShift) | flags;
      }
      case INA2XX_REGISTERS.power:
        this.#conversionReady = variant.hasAlert ? this.#conversionReady : false;
        return Math.min(0xffff, this.#powerValue());
      case INA2XX_REGISTERS.current:
        return toTwosComplement(this.#currentRegister(), 16);
      case INA2XX_REGISTERS.calibration:
        return this.#calibration;
    }
    if (!variant.hasAlert) return 0;
    switch (reg) {
      case INA2XX_REGISTERS.maskEnable:
        return this.#readMaskEnable();
      case INA2XX_REGISTERS.alertLimit:
        return this.#alertLimit;
      case INA2XX_REGISTERS.manufacturerId:
        return INA226_MANUFACTURER_ID;
      case INA2XX_REGISTERS.dieId:
        return INA226_DIE_ID;
      default:
        return 0;
    }
  }

  #readMaskEnable(): number {
    const active = this.#alertActive();
    const latched = (this.#maskEnable & INA226_MASK.latch) !== 0;
    const alert = latched ? this.#alertLatched || active : active;
    const value =
      this.#maskEnable |
      (alert ? INA226_MASK.alertFlag : 0) |
      (this.#conversionReady ? INA226_MASK.conversionFlag : 0) |
      (this.#overflow() ? INA226_MASK.overflow : 0);
    // Reading clears CVRF and a latched AFF (the condition still holding sets it again).
    this.#conversionReady = this.#continuous;
    this.#alertLatched = false;
    return value;
  }

  #writeRegister(reg: number, value: number): void {
    const { variant } = this;
    switch (reg) {
      case INA2XX_REGISTERS.config:
        if (value & RESET) {
          this.reset();
          return;
        }
        this.#config = (variant.hasAlert ? INA226_CONFIG_FIXED : 0) | (value & variant.configMask);
        if ((this.#config & MODE_MASK) % 4 !== 0) this.#convert(); // modes 0 and 4 do not convert
        return;
      case INA2XX_REGISTERS.calibration:
        this.#calibration = value & variant.calibrationMask;
        return;
    }
    if (!variant.hasAlert) return;
    if (reg === INA2XX_REGISTERS.maskEnable) {
      this.#maskEnable = value & INA226_MASK_WRITABLE;
      this.#alertLatched = false;
    } else if (reg === INA2XX_REGISTERS.alertLimit) this.#alertLimit = value;
    // the voltage, current, power and ID registers are read-only
  }

  /** Power-on values in every register (RST). */
  reset(): void {
    this.#config = this.variant.powerOnConfig;
    this.#calibration = 0;
    this.#maskEnable = 0;
    this.#alertLimit = 0;
    this.#alertLatched = false;
    this.#convert();
  }

  /** INA226 latched alert: a conversion while the condition held (the chip latches at conversion). */
  #noteAlert(): void {
    if (this.variant.hasAlert && this.#alertActive()) this.#alertLatched = true;
  }

  /** A new input: converted now in continuous mode (the chip converts every few ms). */
  setInputs(inputs: { current?: number; busVoltage?: number }): void {
    if (inputs.current !== undefined) this.current = inputs.current;
    if (inputs.busVoltage !== undefined) this.busVoltage = inputs.busVoltage;
    this.#update();
    this.#noteAlert();
  }

  saveState(): Record<string, number | boolean> {
    return {
      pointer: this.target.pointer.value,
      current: this.current,
      busVoltage: this.busVoltage,
      config: this.#config,
      calibration: this.#calibration,
      shunt: this.#shunt,
      bus: this.#bus,
      conversionReady: this.#conversionReady,
      maskEnable: this.#maskEnable,
      alertLimit: this.#alertLimit,
      alertLatched: this.#alertLatched,
    };
  }

  restoreState(state: unknown): void {
    const word = { type: "integer", min: 0, max: 0xffff } as const;
    const schema = {
      type: "object",
      required: ["pointer", "current", "busVoltage", "config", "calibration", "shunt", "bus"],
      properties: {
        pointer: byteState,
        current: { type: "number" },
        busVoltage: {
          type: "number",
          min: this.variant.busRange.min,
          max: this.variant.busRange.max,
        },
        config: word,
        calibration: word,
        shunt: { type: "integer", min: -32768, max: 32767 },
        bus: { type: "integer", min: 0, max: this.variant.busFullScale },
        conversionReady: { type: "boolean" },
        maskEnable: word,
        alertLimit: word,
        alertLatched: { type: "boolean" },
      },
    } as const;
    const saved = validateState(schema, state, this.variant.name);
    const { variant } = this;
    this.target.pointer.value = saved.pointer ?? 0;
    this.current = saved.current ?? 0;
    this.busVoltage = saved.busVoltage ?? 0;
    this.#config =
      (variant.hasAlert ? INA226_CONFIG_FIXED : 0) |
      ((saved.config ?? variant.powerOnConfig) & variant.configMask);
    this.#calibration = (saved.calibration ?? 0) & variant.calibrationMask;
    this.#shunt = saved.shunt ?? 0;
    this.#bus = saved.bus ?? 0;
    this.#conversionReady = saved.conversionReady ?? true;
    this.#maskEnable = (saved.maskEnable ?? 0) & INA226_MASK_WRITABLE;
    this.#alertLimit = saved.alertLimit ?? 0;
    this.#alertLatched = saved.alertLatched ?? false;
  }
}

/** Linux's default shunt when the device tree names none (INA2XX_RSHUNT_DEFAULT, 10 mΩ). */
export const INA2XX_DEFAULT_SHUNT_OHMS = 0.01;

function ina2xxModel(variant: Ina2xxVariant): ModelDefinition {
  const { busRange } = variant;
  const schema = {
    type: "object",
    properties: {
      shuntResistor: {
        type: "number",
        min: 1e-6,
        max: 100,
        description: "shunt resistor on the board in Ω (default 0.01, Linux's default)",
      },
      current: {
        type: "number",
        min: -100,
        max: 100,
        description: "initial current in A (default 0)",
      },
      busVoltage: {
        type: "number",
        min: busRange.min,
        max: busRange.max,
        description: "initial bus voltage in V (default 0)",
      },
    },
  } as const;
  return chipModel({
    name: variant.name,
    description: variant.description,
    linuxDriver: "hwmon ina2xx",
    options: schema,
    create: (o) =>
      new Ina2xxChip(
        variant,
        o.shuntResistor ?? INA2XX_DEFAULT_SHUNT_OHMS,
        o.current ?? 0,
        o.busVoltage ?? 0,
      ),
    target: (chip) => chip.target,
    properties: (chip) => ({
      current: numberProperty(
        "current through the shunt in A (the shunt voltage saturates at the ADC's range)",
        () => chip.current,
        (v) => chip.setInputs({ current: v }),
        { min: -100, max: 100 },
      ),
      busVoltage: numberProperty(
        `bus voltage in V (${busRange.min}..${busRange.max})`,
        () => chip.busVoltage,
        (v) => chip.setInputs({ busVoltage: v }),
        busRange,
      ),
      shuntResistor: { description: "shunt resistor in Ω", get: () => chip.shuntResistor },
    }),
  });
}

/** Linux's ina2xx names: ina219 and ina220 share a configuration, as ina226 and ina230 do. */
export const ina2xxModels: readonly ModelDefinition[] = [
  ina2xxModel({
    ...INA219,
    name: "ina219",
    description: "TI INA219 current/power monitor (26 V, 12-bit)",
  }),
  ina2xxModel({
    ...INA219,
    name: "ina220",
    description: "TI INA220 current/power monitor (INA219 registers)",
  }),
  ina2xxModel({
    ...INA226,
    name: "ina226",
    description: "TI INA226 current/power monitor (36 V, 16-bit, alert, IDs)",
  }),
];
