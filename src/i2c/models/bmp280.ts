/**
 * Bosch BMP280 pressure/temperature and BME280 pressure/temperature/humidity sensors: chip ID,
 * soft reset, the factory calibration words, control and configuration registers and the raw ADC
 * registers. The model holds physical temperature, pressure and humidity (settable at run time) and
 * turns them into the raw ADC values the datasheet's compensation formulas (which Linux's bmp280
 * driver runs) turn back into them.
 * Owns only the chip's behaviour; must not know about buses, virtio or the configuration format.
 * @module
 */

import type { ModelDefinition } from "../model.js";
import { chipModel } from "./chip-model.js";
import { byteState as byte, type ObjectSchema, validateState } from "./options.js";
import { numberProperty } from "./properties.js";
import { RegisterFile } from "./registers.js";

export const BMP280_REGISTERS = {
  calibrationTp: 0x88, // 24 bytes: T1..T3, P1..P9, little-endian
  calibrationH1: 0xa1,
  id: 0xd0,
  reset: 0xe0,
  calibrationH2: 0xe1, // 7 bytes: H2..H6
  ctrlHumidity: 0xf2,
  status: 0xf3,
  ctrlMeasure: 0xf4,
  config: 0xf5,
  pressure: 0xf7, // msb, lsb, xlsb (bits 7:4)
  temperature: 0xfa,
  humidity: 0xfd, // msb, lsb
} as const;

const SOFT_RESET = 0xb6;
const MODE_MASK = 0x03;
const MODE_FORCED = 0x01;
const MODE_NORMAL = 0x03;
/** What a data register holds for a channel skipped (oversampling 0) or never measured. */
const SKIPPED_20 = 0x80000;
const SKIPPED_16 = 0x8000;
const CONFIG_MASK = 0xfd; // bit 1 is reserved

/** Calibration words: the datasheet's example for T and P, typical BME280 values for H. */
export interface Bmp280Calibration {
  readonly T1: number;
  readonly T2: number;
  readonly T3: number;
  readonly P1: number;
  readonly P2: number;
  readonly P3: number;
  readonly P4: number;
  readonly P5: number;
  readonly P6: number;
  readonly P7: number;
  readonly P8: number;
  readonly P9: number;
  readonly H1: number;
  readonly H2: number;
  readonly H3: number;
  readonly H4: number;
  readonly H5: number;
  readonly H6: number;
}

export const BMP280_DEFAULT_CALIBRATION: Bmp280Calibration = {
  T1: 27504,
  T2: 26435,
  T3: -1000,
  P1: 36477,
  P2: -10685,
  P3: 3024,
  P4: 2855,
  P5: 140,
  P6: -7,
  P7: 15500,
  P8: -14600,
  P9: 6000,
  H1: 75,
  H2: 362,
  H3: 0,
  H4: 313,
  H5: 50,
  H6: 30,
};

/**
 * Datasheet 8.2 / Linux `bmp280_compensate_temp` (32-bit integer): t_fine and °C × 100.
 * JavaScript's `>>` wraps to 32 bits first, as the C code's s32 arithmetic does.
 */
export function compensateTemperature(
  adc: number,
  c: Bmp280Calibration,
): { tFine: number; centi: number } {
  const var1 = Math.imul((adc >> 3) - (c.T1 << 1), c.T2) >> 11;
  const d = (adc >> 4) - c.T1;
  const var2 = Math.imul(Math.imul(d, d) >> 12, c.T3) >> 14;
  const tFine = var1 + var2;
  return { tFine, centi: (tFine * 5 + 128) >> 8 };
}

/** Datasheet 8.2 / Linux `bmp280_compensate_press` (64-bit integer): Pa × 256. */
export function compensatePressure(adc: number, tFine: number, c: Bmp280Calibration): bigint {
  const B = BigInt;
  let var1 = B(tFine) - 128000n;
  let var2 = var1 * var1 * B(c.P6);
  var2 += (var1 * B(c.P5)) << 17n;
  var2 += B(c.P4) << 35n;
  var1 = ((var1 * var1 * B(c.P3)) >> 8n) + ((var1 * B(c.P2)) << 12n);
  var1 = (((1n << 47n) + var1) * B(c.P1)) >> 33n;
  if (var1 === 0n) return 0n;
  let p = 1048576n - B(adc);
  p = (((p << 31n) - var2) * 3125n) / var1;
  var1 = (B(c.P9) * (p >> 13n) * (p >> 13n)) >> 25n;
  var2 = (B(c.P8) * p) >> 19n;
  return ((p + var1 + var2) >> 8n) + (B(c.P7) << 4n);
}

/** Datasheet (BME280 4.2.3) / Linux `bmp280_compensate_humidity` (32-bit): %RH × 1024. */
export function compensateHumidity(adc: number, tFine: number, c: Bmp280Calibration): number {
  const mul = Math.imul; // s32 products, wrapping as the C code's do
  const x = tFine - 76800;
  const offset = ((adc << 14) - (c.H4 << 20) - mul(c.H5, x) + 16384) >> 15;
  const curve = mul(mul(x, c.H6) >> 10, (mul(x, c.H3) >> 11) + 32768) >> 10;
  const scale = (mul(curve + 2097152, c.H2) + 8192) >> 14;
  let v = mul(offset, scale);
  v = (v - (mul(mul(v >> 15, v >> 15) >> 7, c.H1) >> 4)) | 0;
  return Math.min(419430400, Math.max(0, v)) >> 12;
}

/**
 * The ADC value in [0, max] whose compensated value is closest to `target`, for a compensation
 * that rises (or falls, `rising` false) with the ADC value: a binary search, so the inversion is
 * exact for whatever calibration the chip carries.
 */
function invert(
  target: number,
  max: number,
  rising: boolean,
  compensate: (adc: number) => number,
): number {
  let low = 0;
  let high = max;
  while (low < high) {
    const mid = Math.floor((low + high) / 2);
    const below = compensate(mid) < target;
    if (below === rising) low = mid + 1;
    else high = mid;
  }
  const neighbour = Math.max(0, low - 1);
  return Math.abs(compensate(neighbour) - target) < Math.abs(compensate(low) - target)
    ? neighbour
    : low;
}

/** Raw ADC readings for physical values: °C, Pa and %RH. */
export function rawReadings(
  physical: { temperature: number; pressure: number; humidity: number },
  c: Bmp280Calibration,
): { temperature: number; pressure: number; humidity: number } {
  const tFineTarget = physical.temperature * 5120; // t_fine is °C × 5120
  const temperature = invert(
    tFineTarget,
    0xfffff,
    true,
    (adc) => compensateTemperature(adc, c).tFine,
  );
  const { tFine } = compensateTemperature(temperature, c);
  const pressure = invert(physical.pressure * 256, 0xfffff, false, (adc) =>
    Number(compensatePressure(adc, tFine, c)),
  );
  const humidity = invert(physical.humidity * 1024, 0xffff, true, (adc) =>
    compensateHumidity(adc, tFine, c),
  );
  return { temperature, pressure, humidity };
}

/** The calibration words as the chip's registers hold them (0x88.., 0xa1, 0xe1..). */
function calibrationBytes(c: Bmp280Calibration): Map<number, number> {
  const bytes = new Map<number, number>();
  const word = (reg: number, value: number) => {
    bytes.set(reg, value & 0xff);
    bytes.set(reg + 1, (value >> 8) & 0xff);
  };
  [c.T1, c.T2, c.T3, c.P1, c.P2, c.P3, c.P4, c.P5, c.P6, c.P7, c.P8, c.P9].forEach((v, i) => {
    word(BMP280_REGISTERS.calibrationTp + 2 * i, v);
  });
  bytes.set(BMP280_REGISTERS.calibrationH1, c.H1 & 0xff);
  word(BMP280_REGISTERS.calibrationH2, c.H2);
  bytes.set(0xe3, c.H3 & 0xff);
  // H4 and H5 are 12-bit and share 0xe5: H4 = e4 << 4 | e5[3:0], H5 = e6 << 4 | e5[7:4]
  bytes.set(0xe4, (c.H4 >> 4) & 0xff);
  bytes.set(0xe5, (c.H4 & 0x0f) | ((c.H5 & 0x0f) << 4));
  bytes.set(0xe6, (c.H5 >> 4) & 0xff);
  bytes.set(0xe7, c.H6 & 0xff);
  return bytes;
}

export interface Bmp280Variant {
  readonly name: string;
  readonly chipId: number;
  readonly humidity: boolean;
}

export const BMP280_RANGE = {
  temperature: { min: -40, max: 85 },
  pressure: { min: 30000, max: 110000 },
  humidity: { min: 0, max: 100 },
} as const;

/**
 * The chip, as in the BMP280 and BME280 datasheets and as Linux's bmp280 driver uses it:
 * - registers auto-increment from the address a write's first byte sets (burst reads);
 * - `bmp280_probe` checks the chip ID (0x58 BMP280, 0x60 BME280), soft-resets (0xb6 to 0xe0),
 *   reads the calibration (0x88..0x9f; BME280 also 0xa1 and 0xe1..0xe7), then
 *   `bmp280_chip_config` sets oversampling and normal mode in ctrl_meas and the filter in config
 *   (BME280: ctrl_hum first, which takes effect with the next ctrl_meas write);
 * - `bmp280_read_temp`/`_press`/`bme280_read_humid` burst-read the ADC registers (20-bit
 *   temperature and pressure, 16-bit humidity) and refuse 0x80000/0x8000: what a channel reads
 *   while skipped (oversampling 0) or before the first measurement;
 * - measurements are instant here: in normal mode each transfer sees a fresh one, a forced mode
 *   write measures once and returns to sleep; the data are one snapshot per transfer; the IIR
 *   filter and standby time are kept but not applied; status reads 0 (never busy).
 */
export class Bmp280Chip {
  readonly variant: Bmp280Variant;
  readonly target: RegisterFile;
  readonly calibration: Bmp280Calibration;
  readonly #calibrationBytes: Map<number, number>;
  temperature: number;
  pressure: number;
  humidity: number;
  #ctrlHumidity = 0;
  /** ctrl_hum as latched by the last ctrl_meas write. */
  #humidityOversampling = 0;
  #ctrlMeasure = 0;
  #config = 0;
  /** The data registers 0xf7..0xfe (8 bytes). */
  #data = [0x80, 0, 0, 0x80, 0, 0, 0x80, 0];

  constructor(
    variant: Bmp280Variant,
    physical: { temperature: number; pressure: number; humidity: number },
  ) {
    this.variant = variant;
    this.calibration = BMP280_DEFAULT_CALIBRATION;
    this.#calibrationBytes = calibrationBytes(this.calibration);
    this.temperature = physical.temperature;
    this.pressure = physical.pressure;
    this.humidity = physical.humidity;
    this.target = new RegisterFile(
      { count: 256 },
      {
        start: () => {
          if ((this.#ctrlMeasure & MODE_MASK) === MODE_NORMAL) this.#measure();
        },
        read: (reg) => this.#readRegister(reg),
        write: (reg, value) => this.#writeRegister(reg, value),
      },
    );
  }

  /** Takes one measurement of every channel not skipped into the data registers. */
  #measure(): void {
    const raw = rawReadings(this, this.calibration);
    const osrsT = (this.#ctrlMeasure >> 5) & 7;
    const osrsP = (this.#ctrlMeasure >> 2) & 7;
    const t = osrsT === 0 ? SKIPPED_20 : raw.temperature;
    const p = osrsP === 0 ? SKIPPED_20 : raw.pressure;
    const h = this.#humidityOversampling === 0 ? SKIPPED_16 : raw.humidity;
    const bytes20 = (v: number) => [(v >> 12) & 0xff, (v >> 4) & 0xff, (v & 0x0f) << 4];
    this.#data = [...bytes20(p), ...bytes20(t), (h >> 8) & 0xff, h & 0xff];
  }

  #readRegister(reg: number): number {
    if (reg >= BMP280_REGISTERS.pressure) {
      const offset = reg - BMP280_REGISTERS.pressure;
      if (!this.variant.humidity && offset >= 6) return 0;
      return this.#data[offset] ?? 0;
    }
    const calibration = this.#calibrationBytes.get(reg);
    if (calibration !== undefined) {
      const humidityCalibration =
        reg === BMP280_REGISTERS.calibrationH1 || reg >= BMP280_REGISTERS.calibrationH2;
      return humidityCalibration && !this.variant.humidity ? 0 : calibration;
    }
    switch (reg) {
      case BMP280_REGISTERS.id:
        return this.variant.chipId;
      case BMP280_REGISTERS.ctrlHumidity:
        return this.variant.humidity ? this.#ctrlHumidity : 0;
      case BMP280_REGISTERS.ctrlMeasure:
        return this.#ctrlMeasure;
      case BMP280_REGISTERS.config:
        return this.#config;
      default:
        return 0; // status (never busy), reset, reserved
    }
  }

  #writeRegister(reg: number, value: number): void {
    switch (reg) {
      case BMP280_REGISTERS.reset:
        if (value === SOFT_RESET) this.reset();
        return;
      case BMP280_REGISTERS.ctrlHumidity:
        if (this.variant.humidity) this.#ctrlHumidity = value & 0x07;
        return;
      case BMP280_REGISTERS.ctrlMeasure:
        this.#humidityOversampling = this.#ctrlHumidity;
        this.#ctrlMeasure = value;
        if ((value & MODE_MASK) === MODE_FORCED || (value & MODE_MASK) === 2) {
          this.#measure();
          this.#ctrlMeasure &= ~MODE_MASK; // back to sleep once measured
        } else if ((value & MODE_MASK) === MODE_NORMAL) this.#measure();
        return;
      case BMP280_REGISTERS.config:
        this.#config = value & CONFIG_MASK;
        return;
      // calibration, ID, status and data registers are read-only
    }
  }

  /** Power-on state (soft reset): sleep mode, data registers at their skipped values. */
  reset(): void {
    this.#ctrlHumidity = 0;
    this.#humidityOversampling = 0;
    this.#ctrlMeasure = 0;
    this.#config = 0;
    this.#data = [0x80, 0, 0, 0x80, 0, 0, 0x80, 0];
  }

  saveState(): Record<string, unknown> {
    return {
      pointer: this.target.pointer.value,
      temperature: this.temperature,
      pressure: this.pressure,
      humidity: this.humidity,
      ctrlHumidity: this.#ctrlHumidity,
      humidityOversampling: this.#humidityOversampling,
      ctrlMeasure: this.#ctrlMeasure,
      config: this.#config,
      data: [...this.#data],
    };
  }

  restoreState(state: unknown): void {
    const schema = {
      type: "object",
      required: ["pointer", "temperature", "pressure", "humidity", "ctrlMeasure", "config", "data"],
      properties: {
        pointer: byte,
        temperature: { type: "number", ...BMP280_RANGE.temperature },
        pressure: { type: "number", ...BMP280_RANGE.pressure },
        humidity: { type: "number", ...BMP280_RANGE.humidity },
        ctrlHumidity: { type: "integer", min: 0, max: 7 },
        humidityOversampling: { type: "integer", min: 0, max: 7 },
        ctrlMeasure: byte,
        config: byte,
        data: { type: "array", items: byte, maxItems: 8 },
      },
    } as const;
    const saved = validateState(schema, state, this.variant.name);
    this.target.pointer.value = saved.pointer ?? 0;
    this.temperature = saved.temperature ?? this.temperature;
    this.pressure = saved.pressure ?? this.pressure;
    this.humidity = saved.humidity ?? this.humidity;
    this.#ctrlHumidity = saved.ctrlHumidity ?? 0;
    this.#humidityOversampling = saved.humidityOversampling ?? 0;
    this.#ctrlMeasure = saved.ctrlMeasure ?? 0;
    this.#config = (saved.config ?? 0) & CONFIG_MASK;
    const data = saved.data ?? [];
    this.#data = this.#data.map((old, i) => data[i] ?? old);
  }
}

const temperatureOption = {
  type: "number",
  ...BMP280_RANGE.temperature,
  description: "initial °C (default 25)",
} as const;
const pressureOption = {
  type: "number",
  ...BMP280_RANGE.pressure,
  description: "initial Pa (default 101325)",
} as const;
const humidityOption = {
  type: "number",
  ...BMP280_RANGE.humidity,
  description: "initial %RH (default 50)",
} as const;

function bmp280Model(variant: Bmp280Variant, description: string): ModelDefinition {
  // The BMP280 has no humidity channel: its options do not take one.
  const schema: ObjectSchema = {
    type: "object",
    properties: variant.humidity
      ? { temperature: temperatureOption, pressure: pressureOption, humidity: humidityOption }
      : { temperature: temperatureOption, pressure: pressureOption },
  };
  return chipModel({
    name: variant.name,
    description,
    linuxDriver: "iio bmp280",
    options: schema,
    create: (options) => {
      const o = options as { temperature?: number; pressure?: number; humidity?: number };
      return new Bmp280Chip(variant, {
        temperature: o.temperature ?? 25,
        pressure: o.pressure ?? 101325,
        humidity: o.humidity ?? 50,
      });
    },
    target: (chip) => chip.target,
    properties: (chip) => {
      const physical = (key: "temperature" | "pressure" | "humidity", what: string) =>
        numberProperty(
          `${what} (${BMP280_RANGE[key].min}..${BMP280_RANGE[key].max})`,
          () => chip[key],
          (v) => {
            chip[key] = v;
          },
          BMP280_RANGE[key],
        );
      return {
        temperature: physical("temperature", "temperature in °C"),
        pressure: physical("pressure", "pressure in Pa"),
        ...(variant.humidity && { humidity: physical("humidity", "relative humidity in %") }),
      };
    },
  });
}

/** Linux's bmp280 names: bmp280 (chip ID 0x58) and bme280 (0x60). */
export const bmp280Models: readonly ModelDefinition[] = [
  bmp280Model(
    { name: "bmp280", chipId: 0x58, humidity: false },
    "Bosch BMP280 pressure and temperature sensor",
  ),
  bmp280Model(
    { name: "bme280", chipId: 0x60, humidity: true },
    "Bosch BME280 pressure, temperature and humidity sensor",
  ),
];
