/**
 * NXP PCF8563 real-time clock: two control/status registers (STOP halts the clock; alarm flag),
 * BCD time registers with the voltage-low (VL) bit and the century bit, a minute alarm, CLKOUT and
 * timer registers. The time is the host clock plus an offset the guest sets by writing the time
 * registers; VL is settable at run time to act out a flat battery.
 * Owns only the chip's behaviour; must not know about buses, virtio or the configuration format.
 * @module
 */

import type { ModelDefinition } from "../model.js";
import { type HostClock, systemClock } from "./clock.js";
import { byteState as byte, validateState } from "./options.js";
import { booleanProperty } from "./properties.js";
import type { RegisterFile } from "./registers.js";
import {
  alarmReached,
  calendarMs,
  calendarTime,
  fromBcd,
  latchedRegisterFile,
  RtcClock,
  rtcModel,
  rtcStateProperties,
  type TimeLatch,
  timeOptionSchema,
  toBcd,
} from "./rtc-clock.js";

/** Register map (the pointer wraps from 0x0f to 0x00). */
export const PCF8563_REGISTERS = {
  control1: 0x00,
  control2: 0x01,
  seconds: 0x02,
  months: 0x07,
  years: 0x08,
  alarm: 0x09,
  clkout: 0x0d,
  timerControl: 0x0e,
  timer: 0x0f,
  count: 0x10,
} as const;
const TIME_FIRST = PCF8563_REGISTERS.seconds;
const TIME_REGISTERS = 7;
const ALARM_REGISTERS = 4;

const STOP = 0x20; // control 1
const CONTROL1_MASK = 0xa8; // TEST1, STOP, TESTC
const CONTROL1_POWER_ON = 0x08;
export const PCF8563_CONTROL2 = { alarmFlag: 0x08, timerFlag: 0x04 } as const;
const CONTROL2_MASK = 0x1f; // bits 7..5 read 0
const CLEAR_ONLY_FLAGS = PCF8563_CONTROL2.alarmFlag | PCF8563_CONTROL2.timerFlag;
const VOLTAGE_LOW = 0x80; // seconds register
const CENTURY_1900 = 0x80; // months register: C set means 19xx (datasheet; Linux guesses the polarity)
const ALARM_DISABLED = 0x80; // AE in each alarm register
/** Valid bits of each time register, seconds to years. */
const TIME_MASKS = [0x7f, 0x7f, 0x3f, 0x3f, 0x07, 0x9f, 0xff];
/** Power-on values of the registers after the time ones (datasheet Table 5). */
const POWER_ON_ALARM = ALARM_DISABLED;
const CLKOUT_POWER_ON = 0x80; // FE: 32.768 kHz on
const CLKOUT_MASK = 0x83;
const TIMER_CONTROL_POWER_ON = 0x03; // 1/60 Hz
const TIMER_CONTROL_MASK = 0x83;

/** Counter bias making the weekday register 0 on Sundays, as Linux writes tm_wday. */
const SUNDAY_FIRST = 4;
const YEARS = { min: 1900, max: 2099 } as const;

const schema = {
  type: "object",
  properties: {
    time: timeOptionSchema,
    voltageLow: {
      type: "boolean",
      description: "start with VL set: the time is not to be trusted (default false)",
    },
  },
} as const;

/** What a successor needs (SimDevice.saveState): pointer, clock, VL and the other registers. */
const stateSchema = {
  type: "object",
  required: ["pointer", "offsetMs", "weekdayBias", "voltageLow", "control1", "control2", "alarm"],
  properties: {
    ...rtcStateProperties(PCF8563_REGISTERS.count),
    voltageLow: { type: "boolean" },
    control1: byte,
    control2: byte,
    alarm: { type: "array", items: byte, maxItems: ALARM_REGISTERS },
    clkout: byte,
    timerControl: byte,
    timer: byte,
  },
} as const;

/**
 * The chip, as in the PCF8563 datasheet and as Linux's rtc-pcf8563 driver uses it:
 * - registers auto-increment from the address a write's first byte sets, wrapping at 0x0f;
 * - `pcf8563_get_datetime` reads 9 bytes from 0x00 in one transfer and refuses the time
 *   (-EINVAL) while VL (seconds bit 7) is set; `pcf8563_set_datetime` writes the time
 *   registers, which clears VL; C (months bit 7) set means 19xx: Linux guesses that polarity from
 *   the year it reads, so the model keeps the datasheet's;
 * - `pcf8563_probe` writes the timer control (1/60 Hz) and reads control 2 for a pending alarm;
 * - time registers read as one snapshot per transfer and set the clock at STOP, so a driver
 *   that writes them one transfer each sets them one field at a time, as on the chip;
 * - STOP (control 1 bit 5) halts the clock until cleared; hours count 0..23 only; the weekday
 *   register counts 0..6 at midnight from whatever the guest wrote;
 * - AF is set when the clock reaches a minute that matches every alarm field enabled (AE = 0),
 *   and only the guest clears it (writing 1 keeps it), as TF; the countdown timer does not run.
 */
export class Pcf8563Chip {
  readonly target: RegisterFile;
  readonly clock: RtcClock;
  readonly #latch: TimeLatch;
  voltageLow: boolean;
  #control1 = CONTROL1_POWER_ON;
  #control2 = 0;
  readonly #alarm = new Array<number>(ALARM_REGISTERS).fill(POWER_ON_ALARM);
  #clkout = CLKOUT_POWER_ON;
  #timerControl = TIMER_CONTROL_POWER_ON;
  #timer = 0;
  /** The clock time the alarm was last checked up to. */
  #alarmCheckedAt: number;

  constructor(
    host: HostClock,
    options: { time?: number | undefined; voltageLow?: boolean | undefined },
  ) {
    this.clock = new RtcClock(host, SUNDAY_FIRST, options.time);
    this.voltageLow = options.voltageLow ?? false;
    this.#alarmCheckedAt = this.clock.time;
    ({ latch: this.#latch, target: this.target } = latchedRegisterFile(PCF8563_REGISTERS.count, {
      capture: () => this.#timeRegisters(),
      commit: (regs) => this.#setTime(regs),
      read: (reg) => this.#readRegister(reg),
      write: (reg, value) => this.#writeRegister(reg, value),
      start: () => this.#checkAlarm(),
    }));
  }

  /** AF: the alarm matched since the guest last cleared it. */
  get alarmFlag(): boolean {
    this.#checkAlarm();
    return (this.#control2 & PCF8563_CONTROL2.alarmFlag) !== 0;
  }

  saveState(): Record<string, unknown> {
    this.#checkAlarm();
    return {
      pointer: this.target.pointer.value,
      ...this.clock.save(),
      voltageLow: this.voltageLow,
      control1: this.#control1,
      control2: this.#control2,
      alarm: [...this.#alarm],
      clkout: this.#clkout,
      timerControl: this.#timerControl,
      timer: this.#timer,
    };
  }

  restoreState(state: unknown): void {
    const saved = validateState(stateSchema, state, "pcf8563");
    this.target.pointer.value = saved.pointer ?? 0;
    this.clock.restore(saved);
    this.voltageLow = saved.voltageLow ?? false;
    this.#control1 = (saved.control1 ?? CONTROL1_POWER_ON) & CONTROL1_MASK;
    this.#control2 = (saved.control2 ?? 0) & CONTROL2_MASK;
    this.#alarm.fill(POWER_ON_ALARM);
    (saved.alarm ?? []).forEach((value, i) => {
      this.#alarm[i] = value;
    });
    this.#clkout = (saved.clkout ?? CLKOUT_POWER_ON) & CLKOUT_MASK;
    this.#timerControl = (saved.timerControl ?? TIMER_CONTROL_POWER_ON) & TIMER_CONTROL_MASK;
    this.#timer = saved.timer ?? 0;
    this.#alarmCheckedAt = this.clock.time;
  }

  /** The clock jumped (an operator set it): no alarm fires for the time jumped over. */
  skipAlarms(): void {
    this.#alarmCheckedAt = this.clock.time;
  }

  /** Sets AF if the clock reached a minute matching every enabled alarm field since the last check. */
  #checkAlarm(): void {
    const now = this.clock.time;
    const from = this.#alarmCheckedAt;
    this.#alarmCheckedAt = now;
    const fields = this.#alarm.map((reg) => (reg & ALARM_DISABLED ? null : reg));
    if (fields.every((f) => f === null)) return;
    const [minute, hour, date, weekday] = fields;
    const matches = (ms: number) => {
      const t = calendarTime(ms);
      return (
        (minute == null || fromBcd(minute & 0x7f) === t.minute) &&
        (hour == null || fromBcd(hour & 0x3f) === t.hour) &&
        (date == null || fromBcd(date & 0x3f) === t.date) &&
        (weekday == null || (weekday & 0x07) === this.clock.weekday(ms))
      );
    };
    if (alarmReached(from, now, 0, matches)) this.#control2 |= PCF8563_CONTROL2.alarmFlag;
  }

  #timeRegisters(): number[] {
    const time = this.clock.time;
    const t = calendarTime(time);
    return [
      (this.voltageLow ? VOLTAGE_LOW : 0) | toBcd(t.second),
      toBcd(t.minute),
      toBcd(t.hour),
      toBcd(t.date),
      this.clock.weekday(time),
      (t.year < 2000 ? CENTURY_1900 : 0) | toBcd(t.month),
      toBcd(t.year % 100),
    ];
  }

  #setTime(regs: readonly number[]): void {
    const at = (i: number) => (regs[i] ?? 0) & (TIME_MASKS[i] ?? 0xff);
    const months = at(PCF8563_REGISTERS.months - TIME_FIRST);
    this.voltageLow = (at(0) & VOLTAGE_LOW) !== 0;
    const time = calendarMs({
      year:
        (months & CENTURY_1900 ? 1900 : 2000) + fromBcd(at(PCF8563_REGISTERS.years - TIME_FIRST)),
      month: fromBcd(months & 0x1f),
      date: fromBcd(at(3)),
      hour: fromBcd(at(2)),
      minute: fromBcd(at(1)),
      second: fromBcd(at(0) & 0x7f),
    });
    this.clock.set(time, at(4) % 7);
    this.#alarmCheckedAt = this.clock.time; // a new time raises no alarm for the minutes skipped
  }

  #readRegister(reg: number): number {
    if (reg >= TIME_FIRST && reg < TIME_FIRST + TIME_REGISTERS) {
      return this.#latch.get(reg - TIME_FIRST);
    }
    if (reg >= PCF8563_REGISTERS.alarm && reg < PCF8563_REGISTERS.clkout) {
      return this.#alarm[reg - PCF8563_REGISTERS.alarm] ?? 0;
    }
    switch (reg) {
      case PCF8563_REGISTERS.control1:
        return this.#control1;
      case PCF8563_REGISTERS.control2:
        return this.#control2;
      case PCF8563_REGISTERS.clkout:
        return this.#clkout;
      case PCF8563_REGISTERS.timerControl:
        return this.#timerControl;
      default:
        return this.#timer;
    }
  }

  #writeRegister(reg: number, value: number): void {
    if (reg >= TIME_FIRST && reg < TIME_FIRST + TIME_REGISTERS) {
      this.#latch.set(reg - TIME_FIRST, value);
    } else if (reg >= PCF8563_REGISTERS.alarm && reg < PCF8563_REGISTERS.clkout) {
      this.#alarm[reg - PCF8563_REGISTERS.alarm] = value;
    } else if (reg === PCF8563_REGISTERS.control1) {
      this.#control1 = value & CONTROL1_MASK;
      this.clock.halted = (value & STOP) !== 0;
    } else if (reg === PCF8563_REGISTERS.control2) {
      const flags = this.#control2 & value & CLEAR_ONLY_FLAGS;
      this.#control2 = flags | (value & CONTROL2_MASK & ~CLEAR_ONLY_FLAGS);
    } else if (reg === PCF8563_REGISTERS.clkout) this.#clkout = value & CLKOUT_MASK;
    else if (reg === PCF8563_REGISTERS.timerControl)
      this.#timerControl = value & TIMER_CONTROL_MASK;
    else this.#timer = value;
  }
}

/** The PCF8563 ModelDefinition with an injectable host clock (tests pass a fake one). */
export function pcf8563Model(clock: HostClock = systemClock): ModelDefinition {
  return rtcModel({
    name: "pcf8563",
    linuxDriver: "rtc rtc-pcf8563",
    chip: "PCF8563",
    description:
      "PCF8563 real-time clock with VL and century bits and a minute alarm (time = host clock + guest-set offset)",
    options: schema,
    years: YEARS,
    create: (o, time) => new Pcf8563Chip(clock, { ...o, time }),
    properties: (chip) => ({
      voltageLow: booleanProperty(
        "VL: the supply dropped, the time is not to be trusted (set it to act out a flat battery)",
        () => chip.voltageLow,
        (v) => {
          chip.voltageLow = v;
        },
      ),
      halted: { description: "clock stopped by the STOP bit", get: () => chip.clock.halted },
      alarm: {
        description: "AF: the alarm matched (the guest clears it)",
        get: () => chip.alarmFlag,
      },
    }),
  });
}
