/**
 * What real-time-clock chips share: BCD digits, a calendar clock that is the host clock plus an
 * offset (or frozen while the chip's oscillator is stopped) with a free-running day-of-week
 * counter, the DS-style 12/24-hour hours register, the ISO 8601 `time` property, and a latch that
 * gives a transfer one snapshot of the time registers and sets the clock from them at STOP.
 * Must not know about any particular chip's register map.
 * @module
 */

import type { DeviceProperty, ModelDefinition } from "../model.js";
import { chipModel, type StatefulChip } from "./chip-model.js";
import type { HostClock } from "./clock.js";
import { MODEL_ERROR_CODES, ModelError } from "./model-error.js";
import type { ObjectSchema, OptionValue } from "./options.js";
import { RegisterFile } from "./registers.js";

/** Binary 0..99 to two BCD digits. */
export const toBcd = (n: number) => ((n / 10) | 0) * 16 + (n % 10);
/** Two BCD digits to binary (no validation: a bad digit counts as its value, as on the chips). */
export const fromBcd = (b: number) => (b >> 4) * 10 + (b & 0x0f);

const SECOND_MS = 1000;
const DAY_MS = 86_400_000;
/** Days since 1970-01-01 (a Thursday), for the free-running day-of-week counter. */
const dayNumber = (ms: number) => Math.floor(ms / DAY_MS);
/** Milliseconds a Date can hold either side of the epoch. */
const DATE_RANGE_MS = 8.64e15;
const msState = { type: "number", min: -DATE_RANGE_MS, max: DATE_RANGE_MS } as const;

/** Calendar fields of a clock time (UTC): month 1..12, hour 0..23. */
export interface CalendarTime {
  readonly year: number;
  readonly month: number;
  readonly date: number;
  readonly hour: number;
  readonly minute: number;
  readonly second: number;
}

export function calendarTime(ms: number): CalendarTime {
  const t = new Date(ms);
  return {
    year: t.getUTCFullYear(),
    month: t.getUTCMonth() + 1,
    date: t.getUTCDate(),
    hour: t.getUTCHours(),
    minute: t.getUTCMinutes(),
    second: t.getUTCSeconds(),
  };
}

/** Milliseconds (UTC) of calendar fields; out-of-range fields roll over as in Date. */
export function calendarMs(t: CalendarTime): number {
  return Date.UTC(t.year, t.month - 1, t.date, t.hour, t.minute, t.second);
}

const HOUR_12 = 0x40;
const HOUR_PM = 0x20;

/** The DS13xx/DS3231 hours register: 24-hour BCD, or bit 6 set with bit 5 PM and 1..12. */
export function encodeHours(hour: number, twelveHour: boolean): number {
  if (!twelveHour) return toBcd(hour);
  return HOUR_12 | (hour >= 12 ? HOUR_PM : 0) | toBcd(hour % 12 === 0 ? 12 : hour % 12);
}

/** Hour 0..23 of a DS-style hours register, and whether it was in 12-hour mode. */
export function decodeHours(register: number): { hour: number; twelveHour: boolean } {
  if (register & HOUR_12) {
    const hour = (fromBcd(register & 0x1f) % 12) + (register & HOUR_PM ? 12 : 0);
    return { hour, twelveHour: true };
  }
  return { hour: fromBcd(register & 0x3f), twelveHour: false };
}

/** The part of a saved state that RtcClock.save returns. */
export const rtcClockStateProperties = {
  offsetMs: msState,
  haltedAt: msState,
  weekdayBias: { type: "integer", min: 0, max: 6 },
} as const;

/** State schemas of a chip's register pointer (`registers` of them) and its clock. */
export const rtcStateProperties = (registers: number) =>
  ({
    pointer: { type: "integer", min: 0, max: registers - 1 },
    ...rtcClockStateProperties,
  }) as const;

/**
 * A chip's calendar clock: host time plus an offset while running, a frozen time while halted
 * (an oscillator stopped by CH, STOP or the like), and a day-of-week counter 0..6 that advances at
 * midnight from whatever the guest set, as the chips' counters do (they never check the date).
 */
export class RtcClock {
  readonly #host: HostClock;
  #offsetMs = 0;
  #frozenMs: number | null = null;
  /** Counter minus the day number, modulo 7. */
  #weekdayBias: number;

  /** `weekdayBias` 3 makes Monday 0, 4 makes Sunday 0. */
  constructor(host: HostClock, weekdayBias: number, start?: number, halted = false) {
    this.#host = host;
    this.#weekdayBias = weekdayBias;
    if (start !== undefined) this.#offsetMs = start - host.now();
    if (halted) this.#frozenMs = this.time;
  }

  /** The clock's current time in ms since the epoch (UTC), whole and fractional seconds. */
  get time(): number {
    return this.#frozenMs ?? this.#host.now() + this.#offsetMs;
  }

  /** The day-of-week counter (0..6) at the clock's time `ms`. */
  weekday(ms = this.time): number {
    return (((dayNumber(ms) + this.#weekdayBias) % 7) + 7) % 7;
  }

  /**
   * Sets the clock to the whole second of `ms` (keeps halted/running): the sub-second phase
   * restarts, as a write of the seconds register does. The day-of-week counter keeps counting from
   * where it was unless `weekday` (0..6) is given.
   */
  set(ms: number, weekday = this.weekday()): void {
    const whole = Math.floor(ms / SECOND_MS) * SECOND_MS;
    if (this.#frozenMs !== null) this.#frozenMs = whole;
    else this.#offsetMs = whole - this.#host.now();
    this.#weekdayBias = (((weekday - dayNumber(whole)) % 7) + 7) % 7;
  }

  get halted(): boolean {
    return this.#frozenMs !== null;
  }

  set halted(halt: boolean) {
    if (halt === this.halted) return;
    if (halt) this.#frozenMs = this.time;
    else {
      this.#offsetMs = (this.#frozenMs ?? 0) - this.#host.now();
      this.#frozenMs = null;
    }
  }

  /** What a successor needs: the offset from the host clock (the successor's is the same). */
  save(): { offsetMs: number; haltedAt?: number; weekdayBias: number } {
    return {
      offsetMs: this.#offsetMs,
      ...(this.#frozenMs !== null && { haltedAt: this.#frozenMs }),
      weekdayBias: this.#weekdayBias,
    };
  }

  /** Takes what `save` returned, validated by the model (rtcClockStateProperties). */
  restore(saved: { offsetMs?: number; haltedAt?: number; weekdayBias?: number }): void {
    this.#offsetMs = saved.offsetMs ?? 0;
    this.#frozenMs = saved.haltedAt ?? null;
    this.#weekdayBias = saved.weekdayBias ?? this.#weekdayBias;
  }
}

/**
 * One snapshot of a chip's time registers per transfer: taken at the first START (so a multi-byte
 * read never sees a carry between bytes), written over by the guest, and handed to `commit` at
 * STOP when the guest wrote any of them (unwritten fields keep the snapshot's value).
 */
export class TimeLatch {
  readonly #capture: () => number[];
  readonly #commit: (registers: readonly number[]) => void;
  #snapshot: number[] | null = null;
  #written = false;

  constructor(capture: () => number[], commit: (registers: readonly number[]) => void) {
    this.#capture = capture;
    this.#commit = commit;
  }

  /** START: latches unless this transfer already has a snapshot. */
  start(): void {
    this.#snapshot ??= this.#capture();
  }

  get(index: number): number {
    return this.#snapshot?.[index] ?? 0;
  }

  set(index: number, value: number): void {
    if (this.#snapshot) this.#snapshot[index] = value;
    this.#written = true;
  }

  /** STOP: commits the guest's writes, if any, and forgets the snapshot. */
  stop(): void {
    const snapshot = this.#snapshot;
    const written = this.#written;
    this.#snapshot = null;
    this.#written = false;
    if (written && snapshot) this.#commit(snapshot);
  }
}

/**
 * A chip's register file with a TimeLatch over its time registers: `capture` and `commit` as for
 * TimeLatch; `start` runs before the latch takes its snapshot, `stop` after it commits.
 */
export function latchedRegisterFile(
  count: number,
  hooks: {
    capture(): number[];
    commit(registers: readonly number[]): void;
    read(reg: number): number;
    write(reg: number, value: number): void;
    start?(): void;
    stop?(): void;
  },
): { latch: TimeLatch; target: RegisterFile } {
  const latch = new TimeLatch(hooks.capture, hooks.commit);
  const target = new RegisterFile(
    { count },
    {
      start: () => {
        hooks.start?.();
        latch.start();
      },
      read: hooks.read,
      write: hooks.write,
      stop: () => {
        latch.stop();
        hooks.stop?.();
      },
    },
  );
  return { latch, target };
}

const ISO_TIME = /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?/;

/** The `time` option of the RTC models: an ISO 8601 time. */
export const timeOptionSchema = {
  type: "string",
  pattern: ISO_TIME,
  patternText: 'an ISO 8601 time like "2024-05-01T12:00:00Z"',
  description: "initial clock time (default: the host clock)",
} as const;

/** Parses an ISO 8601 time the chip can count (`years` inclusive); throws I2C_MODEL_BAD_VALUE. */
export function parseRtcTime(
  text: string,
  chip: string,
  years: { min: number; max: number },
): number {
  const ms = Date.parse(text);
  if (!Number.isFinite(ms)) {
    throw new ModelError(
      MODEL_ERROR_CODES.badValue,
      `expected an ISO 8601 time, got ${JSON.stringify(text)}`,
    );
  }
  const year = new Date(ms).getUTCFullYear();
  if (year < years.min || year > years.max) {
    throw new ModelError(
      MODEL_ERROR_CODES.badValue,
      `the ${chip} counts years ${years.min}..${years.max}, got ${text}`,
    );
  }
  return ms;
}

/**
 * The `time` property: ISO 8601 UTC, whole seconds; set takes any ISO 8601 time in `years`, and then
 * calls `onSet` (a chip's alarms skip the time jumped over).
 */
export function timeProperty(
  clock: RtcClock,
  chip: string,
  years: { min: number; max: number },
  onSet?: () => void,
): DeviceProperty {
  return {
    description: `clock time, ISO 8601 UTC (set: any ISO 8601 time in ${years.min}..${years.max})`,
    get: () => new Date(Math.floor(clock.time / SECOND_MS) * SECOND_MS).toISOString(),
    set: (text) => {
      clock.set(parseRtcTime(text, chip, years));
      onSet?.();
    },
  };
}

const MINUTE_MS = 60_000;
/** Longest span an alarm is checked over: every pattern RTC alarms allow recurs within a month. */
const ALARM_SCAN_MS = 31 * 86_400_000;

/**
 * Whether `matches` holds at some time `second` seconds into a minute in (fromMs, toMs] of clock
 * time: how an alarm that compares minute-or-coarser fields finds out it fired since it was last
 * checked. Looks at most a month back.
 */
export function alarmReached(
  fromMs: number,
  toMs: number,
  second: number,
  matches: (ms: number) => boolean,
): boolean {
  const offset = second * SECOND_MS;
  const from = Math.max(fromMs, toMs - ALARM_SCAN_MS);
  let t = Math.floor((from - offset) / MINUTE_MS) * MINUTE_MS + offset;
  if (t <= from) t += MINUTE_MS;
  for (; t <= toMs; t += MINUTE_MS) if (matches(t)) return true;
  return false;
}

/** What an RTC chip without memory gives its model: the target, the clock, its alarms and state. */
export interface RtcChip extends StatefulChip {
  readonly target: RegisterFile;
  readonly clock: RtcClock;
  /** The clock jumped (an operator set it): no alarm fires for the time jumped over. */
  skipAlarms(): void;
}

/**
 * The ModelDefinition of an RTC chip without memory: parses the `time` option (`timeOptionSchema`)
 * within `years`, and gives the `time` property (setting it skips the alarms) ahead of the chip's
 * own properties.
 */
export function rtcModel<
  const S extends ObjectSchema & {
    readonly properties: { readonly time: typeof timeOptionSchema };
  },
  C extends RtcChip,
>(spec: {
  readonly name: string;
  /** The chip as messages name it ("DS3231"). */
  readonly chip: string;
  readonly description: string;
  readonly linuxDriver: string;
  readonly options: S;
  readonly years: { min: number; max: number };
  create(options: OptionValue<S>, time: number | undefined): C;
  properties(chip: C): Record<string, DeviceProperty>;
}): ModelDefinition {
  return chipModel({
    name: spec.name,
    description: spec.description,
    linuxDriver: spec.linuxDriver,
    options: spec.options,
    create: (o) => {
      const text = (o as { time?: string }).time;
      return spec.create(
        o,
        text === undefined ? undefined : parseRtcTime(text, spec.chip, spec.years),
      );
    },
    target: (chip) => chip.target,
    properties: (chip) => ({
      time: timeProperty(chip.clock, spec.chip, spec.years, () => chip.skipAlarms()),
      ...spec.properties(chip),
    }),
  });
}
