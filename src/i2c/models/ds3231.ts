/**
 * DS3231 temperature-compensated real-time clock: BCD time registers with the century bit, two
 * alarms, control and status (oscillator-stop flag), aging offset and the temperature sensor the
 * chip compensates with. The time is the host clock plus an offset the guest sets by writing the
 * time registers; the temperature and the oscillator-stop flag are settable at run time.
 * Owns only the chip's behaviour; must not know about buses, virtio or the configuration format.
 * @module
 */

import type { ModelDefinition } from "../model.js";
import { type HostClock, systemClock } from "./clock.js";
import { encodeLeftJustified, fromTwosComplement } from "./fixed-point.js";
import { byteState as byte, validateState } from "./options.js";
import { booleanProperty, numberProperty } from "./properties.js";
import type { RegisterFile } from "./registers.js";
import {
  alarmReached,
  calendarMs,
  calendarTime,
  decodeHours,
  encodeHours,
  fromBcd,
  latchedRegisterFile,
  RtcClock,
  rtcModel,
  rtcStateProperties,
  type TimeLatch,
  timeOptionSchema,
  toBcd,
} from "./rtc-clock.js";

/** Register map (the pointer wraps from the last, 0x12, to 0x00). */
export const DS3231_REGISTERS = {
  seconds: 0x00,
  month: 0x05,
  year: 0x06,
  alarm1: 0x07,
  alarm2: 0x0b,
  control: 0x0e,
  status: 0x0f,
  aging: 0x10,
  temperatureMsb: 0x11,
  temperatureLsb: 0x12,
  count: 0x13,
} as const;
const TIME_REGISTERS = 7;
const ALARM_REGISTERS = DS3231_REGISTERS.control - DS3231_REGISTERS.alarm1;

const CENTURY = 0x80; // month register
/** Control at power-on: RS2, RS1, INTCN; the oscillator enabled (EOSC# 0). */
export const DS3231_POWER_ON_CONTROL = 0x1c;
const CONVERT_TEMPERATURE = 0x20; // CONV: done at once, so it reads 0
export const DS3231_STATUS = { oscillatorStopped: 0x80, en32kHz: 0x08, alarm2: 0x02, alarm1: 0x01 };
/** Status bits that only a write of 0 changes (the chip sets them). */
const CLEAR_ONLY_STATUS =
  DS3231_STATUS.oscillatorStopped | DS3231_STATUS.alarm2 | DS3231_STATUS.alarm1;

/** Counter bias making the day-of-week register 1 on Mondays until the guest sets it (as DS1307). */
const MONDAY_FIRST = 3;
const YEARS = { min: 2000, max: 2199 } as const;
/** Operating range (°C) of the sensor. */
export const DS3231_TEMPERATURE_RANGE = { min: -40, max: 85 } as const;

/** °C as the 10-bit temperature register pair holds it: integer MSB, quarter degrees in bits 7:6. */
export const encodeDs3231Temperature = (celsius: number) => encodeLeftJustified(celsius, 10, 2);

const schema = {
  type: "object",
  properties: {
    time: timeOptionSchema,
    temperature: {
      type: "number",
      min: DS3231_TEMPERATURE_RANGE.min,
      max: DS3231_TEMPERATURE_RANGE.max,
      description: "initial temperature in °C (default 25)",
    },
    oscillatorStopped: {
      type: "boolean",
      description:
        "start with OSF set, as after a first power-up or a flat battery (default false)",
    },
  },
} as const;

/**
 * What a successor needs (SimDevice.saveState): pointer, clock, 12-hour mode, the alarm, control,
 * status and aging registers, and the temperature.
 */
const stateSchema = {
  type: "object",
  required: ["pointer", "offsetMs", "weekdayBias", "twelveHour", "alarms", "control", "status"],
  properties: {
    ...rtcStateProperties(DS3231_REGISTERS.count),
    twelveHour: { type: "boolean" },
    alarms: { type: "array", items: byte, maxItems: ALARM_REGISTERS },
    control: byte,
    status: byte,
    aging: byte,
    temperature: {
      type: "number",
      min: DS3231_TEMPERATURE_RANGE.min,
      max: DS3231_TEMPERATURE_RANGE.max,
    },
  },
} as const;

/**
 * The chip, as in the DS3231 datasheet and as Linux's rtc-ds1307 driver (type ds_3231) uses it:
 * - `ds1307_probe` reads control and status (0x0e, 0x0f), clears EOSC# and, when OSF is set,
 *   clears it and warns "SET TIME!"; then reads the 7 time registers and rewrites a 12-hour
 *   hours register in 24-hour mode;
 * - `ds1307_get_time`/`ds1307_set_time` read and write registers 0..6 in one transfer; bit 7 of
 *   the month register is the century (years 2100..2199);
 * - `ds3231_hwmon_read_temp` reads 0x11..0x12: a 10-bit two's-complement temperature;
 * - time registers read as one snapshot per transfer and set the clock at STOP, as on the DS1307;
 *   on Vcc the oscillator always runs (EOSC# only stops it on battery), so the clock never halts;
 * - OSF, A2F and A1F are only cleared by the guest (writing 1 keeps them); CONV converts at once
 *   and a new temperature shows at once (the chip converts every 64 s: no driver waits for it);
 * - alarm 1 (seconds to day/date, masks A1M1..A1M4) and alarm 2 (minutes, seconds 00) raise A1F
 *   and A2F when the clock reaches a time matching their unmasked fields (there is no INT line).
 */
export class Ds3231Chip {
  readonly target: RegisterFile;
  readonly clock: RtcClock;
  readonly #latch: TimeLatch;
  #twelveHour = false;
  readonly #alarms = new Array<number>(ALARM_REGISTERS).fill(0);
  #control = DS3231_POWER_ON_CONTROL;
  #status = DS3231_STATUS.en32kHz;
  #aging = 0;
  temperature: number;
  /** The clock time the alarms were last checked up to. */
  #alarmCheckedAt: number;

  constructor(
    host: HostClock,
    options: {
      time?: number | undefined;
      temperature?: number | undefined;
      oscillatorStopped?: boolean | undefined;
    },
  ) {
    this.clock = new RtcClock(host, MONDAY_FIRST, options.time);
    this.temperature = options.temperature ?? 25;
    if (options.oscillatorStopped) this.#status |= DS3231_STATUS.oscillatorStopped;
    this.#alarmCheckedAt = this.clock.time;
    ({ latch: this.#latch, target: this.target } = latchedRegisterFile(DS3231_REGISTERS.count, {
      capture: () => this.#timeRegisters(),
      commit: (regs) => this.#setTime(regs),
      read: (reg) => this.#readRegister(reg),
      write: (reg, value) => this.#writeRegister(reg, value),
      start: () => this.#checkAlarms(),
    }));
  }

  /** The clock jumped (an operator set it): no alarm fires for the time jumped over. */
  skipAlarms(): void {
    this.#alarmCheckedAt = this.clock.time;
  }

  /** Raises A1F/A2F for alarm times the clock reached since the last check. */
  #checkAlarms(): void {
    const now = this.clock.time;
    const from = this.#alarmCheckedAt;
    this.#alarmCheckedAt = now;
    const [s1 = 0, m1 = 0, h1 = 0, d1 = 0, m2 = 0, h2 = 0, d2 = 0] = this.#alarms;
    if (this.#alarmMatched(from, now, s1, [m1, h1, d1])) this.#status |= DS3231_STATUS.alarm1;
    if (this.#alarmMatched(from, now, 0, [m2, h2, d2])) this.#status |= DS3231_STATUS.alarm2;
  }

  /**
   * Whether an alarm's time came in (from, now]: `seconds` is alarm 1's seconds register (A1M1 in
   * bit 7: every second) or 0 for alarm 2; minutes, hours and day/date each count unless their bit
   * 7 masks them; day/date bit 6 chooses the day-of-week register over the date.
   */
  #alarmMatched(
    from: number,
    now: number,
    seconds: number,
    [minutes, hours, dayDate]: number[],
  ): boolean {
    const masked = (reg = 0) => (reg & 0x80) !== 0;
    const matches = (ms: number) => {
      const t = calendarTime(ms);
      return (
        (masked(minutes) || fromBcd((minutes ?? 0) & 0x7f) === t.minute) &&
        (masked(hours) || decodeHours((hours ?? 0) & 0x7f).hour === t.hour) &&
        (masked(dayDate) ||
          ((dayDate ?? 0) & 0x40
            ? ((dayDate ?? 0) & 0x0f) === this.clock.weekday(ms) + 1
            : fromBcd((dayDate ?? 0) & 0x3f) === t.date))
      );
    };
    if (!masked(seconds)) return alarmReached(from, now, fromBcd(seconds & 0x7f), matches);
    // Once per second (all of alarm 1's masks set): any second boundary passed.
    return Math.floor(now / 1000) > Math.floor(from / 1000);
  }

  /** OSF: the oscillator stopped at some point, so the time is not to be trusted. */
  get oscillatorStopped(): boolean {
    return (this.#status & DS3231_STATUS.oscillatorStopped) !== 0;
  }

  set oscillatorStopped(stopped: boolean) {
    this.#status = stopped
      ? this.#status | DS3231_STATUS.oscillatorStopped
      : this.#status & ~DS3231_STATUS.oscillatorStopped;
  }

  get aging(): number {
    return fromTwosComplement(this.#aging, 8);
  }

  saveState(): Record<string, unknown> {
    return {
      pointer: this.target.pointer.value,
      ...this.clock.save(),
      twelveHour: this.#twelveHour,
      alarms: [...this.#alarms],
      control: this.#control,
      status: this.#status,
      aging: this.#aging,
      temperature: this.temperature,
    };
  }

  restoreState(state: unknown): void {
    const saved = validateState(stateSchema, state, "ds3231");
    this.target.pointer.value = saved.pointer ?? 0;
    this.clock.restore(saved);
    this.#twelveHour = saved.twelveHour ?? false;
    this.#alarms.fill(0);
    (saved.alarms ?? []).forEach((value, i) => {
      this.#alarms[i] = value;
    });
    this.#control = saved.control ?? DS3231_POWER_ON_CONTROL;
    this.#status = (saved.status ?? 0) & (CLEAR_ONLY_STATUS | DS3231_STATUS.en32kHz);
    this.#aging = saved.aging ?? 0;
    this.temperature = saved.temperature ?? 25;
    this.#alarmCheckedAt = this.clock.time;
  }

  #timeRegisters(): number[] {
    const time = this.clock.time;
    const t = calendarTime(time);
    return [
      toBcd(t.second),
      toBcd(t.minute),
      encodeHours(t.hour, this.#twelveHour),
      this.clock.weekday(time) + 1,
      toBcd(t.date),
      (t.year >= 2100 ? CENTURY : 0) | toBcd(t.month),
      toBcd(t.year % 100),
    ];
  }

  #setTime(regs: readonly number[]): void {
    const at = (i: number) => regs[i] ?? 0;
    const { hour, twelveHour } = decodeHours(at(2));
    this.#twelveHour = twelveHour;
    const month = at(DS3231_REGISTERS.month);
    const time = calendarMs({
      year: 2000 + (month & CENTURY ? 100 : 0) + fromBcd(at(DS3231_REGISTERS.year)),
      month: fromBcd(month & 0x1f),
      date: fromBcd(at(4) & 0x3f),
      hour,
      minute: fromBcd(at(1) & 0x7f),
      second: fromBcd(at(0) & 0x7f),
    });
    this.clock.set(time, ((at(3) & 0x07) + 6) % 7); // 3 bits; 0 counts as 7
    this.#alarmCheckedAt = this.clock.time; // a new time raises no alarm for the time skipped
  }

  #readRegister(reg: number): number {
    if (reg < TIME_REGISTERS) return this.#latch.get(reg);
    if (reg < DS3231_REGISTERS.control) return this.#alarms[reg - DS3231_REGISTERS.alarm1] ?? 0;
    const temperature = encodeDs3231Temperature(this.temperature);
    switch (reg) {
      case DS3231_REGISTERS.control:
        return this.#control;
      case DS3231_REGISTERS.status:
        return this.#status;
      case DS3231_REGISTERS.aging:
        return this.#aging;
      case DS3231_REGISTERS.temperatureMsb:
        return temperature >> 8;
      default:
        return temperature & 0xc0;
    }
  }

  #writeRegister(reg: number, value: number): void {
    if (reg < TIME_REGISTERS) this.#latch.set(reg, value);
    else if (reg < DS3231_REGISTERS.control) this.#alarms[reg - DS3231_REGISTERS.alarm1] = value;
    else if (reg === DS3231_REGISTERS.control) this.#control = value & ~CONVERT_TEMPERATURE;
    else if (reg === DS3231_REGISTERS.status) {
      const cleared = this.#status & value & CLEAR_ONLY_STATUS;
      this.#status = cleared | (value & DS3231_STATUS.en32kHz);
    } else if (reg === DS3231_REGISTERS.aging) this.#aging = value;
    // the temperature registers are read-only
  }
}

/** The DS3231 ModelDefinition with an injectable host clock (tests pass a fake one). */
export function ds3231Model(clock: HostClock = systemClock): ModelDefinition {
  return rtcModel({
    name: "ds3231",
    linuxDriver: "rtc rtc-ds1307",
    chip: "DS3231",
    description:
      "DS3231 real-time clock with century bit, alarm registers and temperature sensor (time = host clock + guest-set offset)",
    options: schema,
    years: YEARS,
    create: (o, time) => new Ds3231Chip(clock, { ...o, time }),
    properties: (chip) => ({
      temperature: numberProperty(
        "die temperature in °C (-40..85, 0.25 °C steps in the register)",
        () => chip.temperature,
        (v) => {
          chip.temperature = v;
        },
        DS3231_TEMPERATURE_RANGE,
      ),
      oscillatorStopped: booleanProperty(
        "OSF: the oscillator stopped (set it to act out a flat battery)",
        () => chip.oscillatorStopped,
        (v) => {
          chip.oscillatorStopped = v;
        },
      ),
      aging: { description: "aging offset the guest wrote (signed)", get: () => chip.aging },
    }),
  });
}
