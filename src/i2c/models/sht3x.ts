/**
 * Sensirion SHT3x humidity and temperature sensor (and the temperature-only STS3x): 16-bit
 * commands, single-shot measurements with or without clock stretching, periodic measurements
 * fetched with 0xE000, status register, heater, alert limits, serial number, and a CRC-8 after
 * every data word. Temperature and humidity are settable at run time.
 * Owns only the chip's behaviour; must not know about buses, virtio or the configuration format.
 * @module
 */

import type { I2cDeviceModel, ModelDefinition } from "../model.js";
import { chipModel } from "./chip-model.js";
import { type HostClock, systemClock } from "./clock.js";
import { crc8, SENSIRION_CRC8 } from "./crc8.js";
import { type ObjectSchema, validateState } from "./options.js";
import { numberProperty } from "./properties.js";

/** Commands (datasheet section 4). */
export const SHT3X_COMMANDS = {
  fetchData: 0xe000,
  break: 0x3093,
  softReset: 0x30a2,
  heaterOn: 0x306d,
  heaterOff: 0x3066,
  readStatus: 0xf32d,
  clearStatus: 0x3041,
  readSerialNumber: 0x3780,
  accelerated: 0x2b32,
} as const;

/** Single-shot commands and their typical duration (ms): Linux waits 15, 6 and 4 ms. */
const SINGLE_SHOT: ReadonlyMap<number, { ms: number; stretch: boolean }> = new Map([
  [0x2400, { ms: 12.5, stretch: false }],
  [0x240b, { ms: 4.5, stretch: false }],
  [0x2416, { ms: 2.5, stretch: false }],
  [0x2c06, { ms: 12.5, stretch: true }],
  [0x2c0d, { ms: 4.5, stretch: true }],
  [0x2c10, { ms: 2.5, stretch: true }],
]);

/** Periodic commands: MSB → period (ms), with the three repeatability LSBs each takes. */
const PERIODIC: ReadonlyMap<number, { periodMs: number; lsbs: readonly number[] }> = new Map([
  [0x20, { periodMs: 2000, lsbs: [0x32, 0x24, 0x2f] }],
  [0x21, { periodMs: 1000, lsbs: [0x30, 0x26, 0x2d] }],
  [0x22, { periodMs: 500, lsbs: [0x36, 0x20, 0x2b] }],
  [0x23, { periodMs: 250, lsbs: [0x34, 0x22, 0x29] }],
  [0x27, { periodMs: 100, lsbs: [0x37, 0x21, 0x2a] }],
]);

/** Alert limits: read command, write command, power-on value (RH 7 MSBs, T 9 LSBs). */
const LIMITS = [
  { read: 0xe11f, write: 0x611d, powerOn: 0xcd33 }, // high set: 80 %RH, 60 °C
  { read: 0xe114, write: 0x6116, powerOn: 0xc92d }, // high clear: 79 %RH, 58 °C
  { read: 0xe102, write: 0x6100, powerOn: 0x3466 }, // low set: 20 %RH, -10 °C
  { read: 0xe109, write: 0x610b, powerOn: 0x3869 }, // low clear: 22 %RH, -9 °C
] as const;
const [HIGH_SET, HIGH_CLEAR, LOW_SET, LOW_CLEAR] = [0, 1, 2, 3] as const;

/** Status register bits. */
export const SHT3X_STATUS = {
  alertPending: 0x8000,
  heater: 0x2000,
  humidityAlert: 0x0800,
  temperatureAlert: 0x0400,
  reset: 0x0010,
  commandFailed: 0x0002,
  writeChecksumFailed: 0x0001,
} as const;
const CLEARED_BY_CLEAR_STATUS =
  SHT3X_STATUS.alertPending |
  SHT3X_STATUS.humidityAlert |
  SHT3X_STATUS.temperatureAlert |
  SHT3X_STATUS.reset;

export const SHT3X_RANGE = {
  temperature: { min: -40, max: 125 },
  humidity: { min: 0, max: 100 },
} as const;

const DEFAULT_SERIAL = 0x1a2b3c4d;

/** Raw 16-bit readings for °C and %RH (datasheet: T = -45 + 175 S/65535, RH = 100 S/65535). */
export const encodeSht3xTemperature = (celsius: number) =>
  Math.min(0xffff, Math.max(0, Math.round(((celsius + 45) * 0xffff) / 175)));
export const encodeSht3xHumidity = (percent: number) =>
  Math.min(0xffff, Math.max(0, Math.round((percent * 0xffff) / 100)));

/** Words as sent on the wire: each MSB first, followed by its CRC-8. */
export function sensirionWords(words: readonly number[]): number[] {
  return words.flatMap((word) => {
    const bytes = [(word >> 8) & 0xff, word & 0xff];
    return [...bytes, crc8(bytes, SENSIRION_CRC8)];
  });
}

/**
 * The chip, as in the SHT3x-DIS datasheet and as Linux's sht3x driver uses it:
 * - every command is a 2-byte write; data words the chip sends are followed by their CRC-8; a
 *   limit write carries a word and its CRC, refused (status bit 0) when the CRC is wrong;
 * - `sht3x_probe` clears the status (0x3041), reads the four alert limits (6-byte reads of a
 *   word and CRC: the chip sends 0xff past its data) and the serial number (0x3780);
 * - single shot without clock stretching (Linux's 0x2400 with a 15 ms wait): the read header is
 *   NACKed until the measurement is done (12.5, 4.5 or 2.5 ms by repeatability); with clock
 *   stretching the chip holds SCL, which here is an immediate answer; the result is read once;
 * - periodic mode (`update_interval`): measurements every 2000..100 ms, read with 0xE000; a
 *   fetch with no new measurement NACKs; single-shot commands are refused until a break
 *   (0x3093); soft reset (0x30A2) restores power-on state;
 * - alerts: T and RH compared with the limits at every measurement (set at or past a set limit,
 *   cleared back past the clear limit), shown in the status register (`temp1_alarm` reads bit 10,
 *   `humidity1_alarm` bit 11); the heater bit is kept, but heats nothing.
 */
export class Sht3xChip implements I2cDeviceModel {
  readonly humidityChannel: boolean;
  readonly #clock: HostClock;
  temperature: number;
  humidity: number;
  #status = SHT3X_STATUS.alertPending | SHT3X_STATUS.reset;
  readonly #limits: number[] = LIMITS.map((limit) => limit.powerOn);
  #serial: number;
  /** Bytes of the write message in progress. */
  #command: number[] = [];
  #writing = false;
  /** What the next read returns, and when a single-shot measurement becomes readable. */
  #response: number[] | null = null;
  #readyAt = 0;
  #periodic: { periodMs: number; since: number; fetched: number } | null = null;
  #readPosition = 0;

  constructor(
    clock: HostClock,
    options: { temperature: number; humidity: number; humidityChannel: boolean; serial: number },
  ) {
    this.#clock = clock;
    this.temperature = options.temperature;
    this.humidity = options.humidity;
    this.humidityChannel = options.humidityChannel;
    this.#serial = options.serial;
  }

  get status(): number {
    return this.#status;
  }

  get periodMs(): number {
    return this.#periodic?.periodMs ?? 0;
  }

  start(read: boolean): boolean {
    this.#finishWrite();
    this.#writing = !read;
    this.#readPosition = 0;
    if (!read) return true;
    if (this.#response === null || this.#clock.now() < this.#readyAt) return false;
    return true;
  }

  write(data: Uint8Array): boolean {
    if (!this.#writing) return false;
    this.#command.push(...data);
    return true;
  }

  read(into: Uint8Array): void {
    const response = this.#response ?? [];
    for (let i = 0; i < into.length; i++) into[i] = response[this.#readPosition++] ?? 0xff;
  }

  stop(): void {
    this.#finishWrite();
    // A response is read once: a measurement, status or limit word is gone after its read.
    if (this.#readPosition > 0) this.#response = null;
    this.#readPosition = 0;
    this.#writing = false;
  }

  #finishWrite(): void {
    if (this.#command.length === 0) return;
    const bytes = this.#command;
    this.#command = [];
    this.#execute(bytes);
  }

  #execute(bytes: readonly number[]): void {
    const [msb = 0, lsb = 0] = bytes;
    const command = (msb << 8) | lsb;
    const ok = bytes.length >= 2 && this.#run(command, bytes.slice(2));
    this.#status = ok
      ? this.#status & ~SHT3X_STATUS.commandFailed
      : this.#status | SHT3X_STATUS.commandFailed;
  }

  /** Runs one command; false when the chip does not process it. */
  #run(command: number, data: readonly number[]): boolean {
    const single = SINGLE_SHOT.get(command);
    if (single) {
      if (this.#periodic) return false;
      this.#measure();
      this.#readyAt = this.#clock.now() + (single.stretch ? 0 : single.ms);
      return true;
    }
    const periodic = PERIODIC.get(command >> 8);
    if (periodic?.lsbs.includes(command & 0xff) || command === SHT3X_COMMANDS.accelerated) {
      const periodMs = periodic?.periodMs ?? 250;
      this.#periodic = { periodMs, since: this.#clock.now(), fetched: 0 };
      this.#response = null;
      return true;
    }
    const limit = LIMITS.findIndex((l) => l.read === command || l.write === command);
    if (limit >= 0) return this.#limitCommand(limit, command, data);
    this.#readyAt = 0;
    switch (command) {
      case SHT3X_COMMANDS.fetchData:
        return this.#fetch();
      case SHT3X_COMMANDS.break:
        this.#periodic = null;
        return true;
      case SHT3X_COMMANDS.softReset:
        this.#reset();
        return true;
      case SHT3X_COMMANDS.heaterOn:
        this.#status |= SHT3X_STATUS.heater;
        return true;
      case SHT3X_COMMANDS.heaterOff:
        this.#status &= ~SHT3X_STATUS.heater;
        return true;
      case SHT3X_COMMANDS.readStatus:
        this.#response = sensirionWords([this.#status]);
        return true;
      case SHT3X_COMMANDS.clearStatus:
        this.#status &= ~CLEARED_BY_CLEAR_STATUS;
        return true;
      case SHT3X_COMMANDS.readSerialNumber:
        this.#response = sensirionWords([this.#serial >>> 16, this.#serial & 0xffff]);
        return true;
      default:
        return false;
    }
  }

  #limitCommand(index: number, command: number, data: readonly number[]): boolean {
    if (command === LIMITS[index]?.read) {
      this.#readyAt = 0;
      this.#response = sensirionWords([this.#limits[index] ?? 0]);
      return true;
    }
    const [msb = 0, lsb = 0, crc] = data;
    const valid = data.length >= 3 && crc8([msb, lsb], SENSIRION_CRC8) === crc;
    this.#status = valid
      ? this.#status & ~SHT3X_STATUS.writeChecksumFailed
      : this.#status | SHT3X_STATUS.writeChecksumFailed;
    if (valid) this.#limits[index] = (msb << 8) | lsb;
    return valid;
  }

  /** Periodic mode: the latest measurement, if one was taken since the last fetch. */
  #fetch(): boolean {
    const periodic = this.#periodic;
    if (!periodic) {
      this.#response = null;
      return false;
    }
    const taken = Math.floor((this.#clock.now() - periodic.since) / periodic.periodMs);
    if (taken > periodic.fetched) {
      periodic.fetched = taken;
      this.#measure();
    } else this.#response = null;
    return true;
  }

  /** Takes a measurement into the response and updates the alerts. */
  #measure(): void {
    const t = encodeSht3xTemperature(this.temperature);
    const rh = encodeSht3xHumidity(this.humidity);
    this.#response = sensirionWords(this.humidityChannel ? [t, rh] : [t]);
    this.#updateAlerts(t, rh);
  }

  #updateAlerts(t: number, rh: number): void {
    const limit = (i: number) => this.#limits[i] ?? 0;
    // Limits hold T's 9 MSBs in bits 8:0 and RH's 7 MSBs in bits 15:9.
    const tOf = (word: number) => (word & 0x1ff) << 7;
    const rhOf = (word: number) => word & 0xfe00;
    const track = (bit: number, value: number, of: (word: number) => number) => {
      const active = (this.#status & bit) !== 0;
      const outside = value >= of(limit(HIGH_SET)) || value <= of(limit(LOW_SET));
      const inside = value < of(limit(HIGH_CLEAR)) && value > of(limit(LOW_CLEAR));
      if (!active && outside) this.#status |= bit | SHT3X_STATUS.alertPending;
      else if (active && inside) this.#status &= ~bit;
    };
    track(SHT3X_STATUS.temperatureAlert, t, tOf);
    if (this.humidityChannel) track(SHT3X_STATUS.humidityAlert, rh, rhOf);
  }

  #reset(): void {
    this.#status = SHT3X_STATUS.alertPending | SHT3X_STATUS.reset;
    LIMITS.forEach((limit, i) => {
      this.#limits[i] = limit.powerOn;
    });
    this.#periodic = null;
    this.#response = null;
  }

  saveState(): Record<string, unknown> {
    return {
      temperature: this.temperature,
      humidity: this.humidity,
      status: this.#status,
      limits: [...this.#limits],
      // A periodic mode goes on; its phase restarts in the successor (a fetch may wait a period).
      periodMs: this.periodMs,
    };
  }

  restoreState(state: unknown, name: string): void {
    const word = { type: "integer", min: 0, max: 0xffff } as const;
    const schema = {
      type: "object",
      required: ["temperature", "humidity", "status", "limits", "periodMs"],
      properties: {
        temperature: { type: "number", ...SHT3X_RANGE.temperature },
        humidity: { type: "number", ...SHT3X_RANGE.humidity },
        status: word,
        limits: { type: "array", items: word, maxItems: LIMITS.length },
        periodMs: { type: "integer", min: 0, max: 2000 },
      },
    } as const;
    const saved = validateState(schema, state, name);
    this.temperature = saved.temperature ?? this.temperature;
    this.humidity = saved.humidity ?? this.humidity;
    this.#status = saved.status ?? this.#status;
    (saved.limits ?? []).forEach((value, i) => {
      this.#limits[i] = value;
    });
    const periodMs = saved.periodMs ?? 0;
    this.#periodic = periodMs > 0 ? { periodMs, since: this.#clock.now(), fetched: 0 } : null;
    this.#response = null;
  }
}

const temperatureOption = {
  type: "number",
  ...SHT3X_RANGE.temperature,
  description: "initial temperature in °C (default 25)",
} as const;
const humidityOption = {
  type: "number",
  ...SHT3X_RANGE.humidity,
  description: "initial relative humidity in % (default 50)",
} as const;
const serialNumberOption = {
  type: "integer",
  min: 0,
  max: 0xffffffff,
  description: "what the serial number command returns (default 0x1a2b3c4d)",
} as const;

function sht3xModel(name: string, humidityChannel: boolean, clock: HostClock): ModelDefinition {
  const schema: ObjectSchema = {
    type: "object",
    properties: humidityChannel
      ? {
          temperature: temperatureOption,
          humidity: humidityOption,
          serialNumber: serialNumberOption,
        }
      : { temperature: temperatureOption, serialNumber: serialNumberOption },
  };
  return chipModel({
    name,
    linuxDriver: "hwmon sht3x",
    description: humidityChannel
      ? "Sensirion SHT3x humidity and temperature sensor (CRC-8, single shot and periodic)"
      : "Sensirion STS3x temperature sensor (SHT3x commands, temperature only)",
    options: schema,
    create: (options) => {
      const o = options as {
        temperature?: number;
        humidity?: number;
        serialNumber?: number;
      };
      return new Sht3xChip(clock, {
        temperature: o.temperature ?? 25,
        humidity: o.humidity ?? 50,
        humidityChannel,
        serial: o.serialNumber ?? DEFAULT_SERIAL,
      });
    },
    target: (chip) => chip,
    properties: (chip) => ({
      temperature: numberProperty(
        "temperature in °C (-40..125)",
        () => chip.temperature,
        (v) => {
          chip.temperature = v;
        },
        SHT3X_RANGE.temperature,
      ),
      ...(humidityChannel && {
        humidity: numberProperty(
          "relative humidity in % (0..100)",
          () => chip.humidity,
          (v) => {
            chip.humidity = v;
          },
          SHT3X_RANGE.humidity,
        ),
      }),
      status: { description: "status register", get: () => chip.status },
    }),
  });
}

/** Linux's sht3x names: sht3x and sts3x, with an injectable host clock (tests pass a fake one). */
export function sht3xModels(clock: HostClock = systemClock): ModelDefinition[] {
  return [sht3xModel("sht3x", true, clock), sht3xModel("sts3x", false, clock)];
}
