/**
 * DS1307 real-time clock: BCD time registers (seconds with clock halt, minutes, hours in 12/24-hour
 * mode, day of week, date, month, year), control register, 56 bytes of RAM (optionally backed by a
 * file). The time is the host clock plus an offset the guest sets by writing the time registers.
 * Owns only the chip's behaviour; must not know about buses, virtio or the configuration format.
 * @module
 */

import type { BackingStore, ModelDefinition, SimDevice } from "../model.js";
import {
  checkSavedMemory,
  DirtyRange,
  memoryStateSchema,
  openModelStore,
  savedMemory,
  storeMemory,
} from "./memory.js";
import { MODEL_ERROR_CODES, ModelError } from "./model-error.js";
import { type OptionValue, validateOptions, validateState } from "./options.js";
import { booleanProperty } from "./properties.js";
import { RegisterFile } from "./registers.js";

/** Register map. */
export const DS1307_REGISTERS = {
  seconds: 0x00,
  minutes: 0x01,
  hours: 0x02,
  day: 0x03,
  date: 0x04,
  month: 0x05,
  year: 0x06,
  control: 0x07,
  ramStart: 0x08,
  count: 0x40,
} as const;
const TIME_REGISTERS = 7;
export const DS1307_RAM_SIZE = DS1307_REGISTERS.count - DS1307_REGISTERS.ramStart;

const CLOCK_HALT = 0x80;
const HOUR_12 = 0x40;
const HOUR_PM = 0x20;
const CONTROL_MASK = 0x93; // OUT, SQWE, RS1, RS0
const SECOND_MS = 1000;
const DAY_MS = 86_400_000;

const toBcd = (n: number) => ((n / 10) | 0) * 16 + (n % 10);
const fromBcd = (b: number) => (b >> 4) * 10 + (b & 0x0f);

/** Time registers 0..6 for `ms` (UTC), in 12- or 24-hour mode, with `weekday` 1..7. */
function encodeTime(ms: number, twelveHour: boolean, weekday: number, halted: boolean): number[] {
  const t = new Date(ms);
  const hour = t.getUTCHours();
  const hours = twelveHour
    ? HOUR_12 | (hour >= 12 ? HOUR_PM : 0) | toBcd(hour % 12 === 0 ? 12 : hour % 12)
    : toBcd(hour);
  return [
    (halted ? CLOCK_HALT : 0) | toBcd(t.getUTCSeconds()),
    toBcd(t.getUTCMinutes()),
    hours,
    weekday,
    toBcd(t.getUTCDate()),
    toBcd(t.getUTCMonth() + 1),
    toBcd(t.getUTCFullYear() % 100),
  ];
}

/** Milliseconds (UTC, whole second) for time registers 0..6; out-of-range fields roll over like Date. */
function decodeTime(regs: readonly number[]): number {
  const at = (i: number) => regs[i] ?? 0;
  const hoursReg = at(2);
  let hour: number;
  if (hoursReg & HOUR_12) {
    const h12 = fromBcd(hoursReg & 0x1f) % 12;
    hour = h12 + (hoursReg & HOUR_PM ? 12 : 0);
  } else {
    hour = fromBcd(hoursReg & 0x3f);
  }
  return Date.UTC(
    2000 + fromBcd(at(6)),
    fromBcd(at(5) & 0x1f) - 1,
    fromBcd(at(4) & 0x3f),
    hour,
    fromBcd(at(1) & 0x7f),
    fromBcd(at(0) & 0x7f),
  );
}

/** Days since 1970-01-01 (a Thursday), for the free-running day-of-week counter. */
const dayNumber = (ms: number) => Math.floor(ms / DAY_MS);

/** Milliseconds a Date can hold either side of the epoch. */
const DATE_RANGE_MS = 8.64e15;
const msState = { type: "number", min: -DATE_RANGE_MS, max: DATE_RANGE_MS } as const;

/**
 * What a successor needs (SimDevice.saveState): the register pointer, the clock as an offset from
 * the host clock (the successor's is the same) or the time it was halted at, the 12-hour mode, the
 * day-of-week counter, the control register, and the RAM unless a backing file holds it. A time
 * write never spans a saved state: the state is taken between transfers.
 */
const stateSchema = {
  type: "object",
  required: ["pointer", "offsetMs", "twelveHour", "weekdayBias", "control"],
  properties: {
    pointer: { type: "integer", min: 0, max: DS1307_REGISTERS.count - 1 },
    offsetMs: msState,
    haltedAt: msState,
    twelveHour: { type: "boolean" },
    weekdayBias: { type: "integer", min: 0, max: 6 },
    control: { type: "integer", min: 0, max: CONTROL_MASK },
    memory: memoryStateSchema(DS1307_RAM_SIZE),
  },
} as const;
type Ds1307State = OptionValue<typeof stateSchema>;

export interface Ds1307Clock {
  /** Host time in milliseconds since the epoch (Date.now by default; tests inject a fake). */
  now(): number;
}

/**
 * The chip, as in the DS1307 datasheet:
 * - a write's first byte sets the register pointer; bytes go to consecutive registers; the
 *   pointer wraps from 0x3f to 0x00 and persists between transfers;
 * - time registers read as one snapshot taken at the START of a transfer;
 * - writes to registers 0..6 set the time when the transfer STOPs (unwritten fields keep the
 *   snapshot's value); the hours register's 12/24-hour bit chooses the mode the chip reports in;
 * - CH (seconds bit 7) stops the clock; clearing it resumes from the frozen time;
 * - the day-of-week register counts 1..7 at midnight, starting from whatever the guest wrote.
 */
export class Ds1307Chip {
  readonly target: RegisterFile;
  readonly #now: () => number;
  readonly #store: BackingStore;
  readonly #ramDirty = new DirtyRange();
  /** Clock time = host time + offset while running; the frozen clock time while halted. */
  #offsetMs = 0;
  #frozenMs: number | null = null;
  #twelveHour = false;
  /** Day-of-week register minus 1 minus the day number, modulo 7; 3 makes Monday 1 (ISO 8601). */
  #weekdayBias = 3;
  #control = 0;
  /** Time registers as latched at the first START of the transfer, with the guest's writes over them. */
  #snapshot: number[] | null = null;
  #timeWritten = false;

  constructor(clock: Ds1307Clock, store: BackingStore, startTime?: number, halted = false) {
    this.#now = () => clock.now();
    this.#store = store;
    if (startTime !== undefined) this.#offsetMs = startTime - this.#now();
    if (halted) this.#frozenMs = this.clockTime;
    this.target = new RegisterFile(
      { count: DS1307_REGISTERS.count },
      {
        start: () => this.#latch(),
        read: (reg) => this.#readRegister(reg),
        write: (reg, value) => this.#writeRegister(reg, value),
        stop: () => this.#stop(),
      },
    );
  }

  /** The clock's current time in ms since the epoch (UTC), whole and fractional seconds. */
  get clockTime(): number {
    return this.#frozenMs ?? this.#now() + this.#offsetMs;
  }

  /** Sets the clock (keeps halted/running). The sub-second phase restarts, as on a seconds write. */
  setTime(ms: number): void {
    const whole = Math.floor(ms / SECOND_MS) * SECOND_MS;
    const weekday = this.#weekday(this.clockTime);
    if (this.#frozenMs !== null) this.#frozenMs = whole;
    else this.#offsetMs = whole - this.#now();
    this.#setWeekday(weekday, whole);
  }

  get halted(): boolean {
    return this.#frozenMs !== null;
  }

  set halted(halt: boolean) {
    if (halt === this.halted) return;
    if (halt) this.#frozenMs = this.clockTime;
    else {
      this.#offsetMs = (this.#frozenMs ?? 0) - this.#now();
      this.#frozenMs = null;
    }
  }

  /** True when the guest last wrote the hours register in 12-hour mode. */
  get twelveHour(): boolean {
    return this.#twelveHour;
  }

  /** Its clock and registers as plain data (the RAM is the store's: see the model). */
  saveState(): Record<string, number | boolean> {
    return {
      pointer: this.target.pointer.value,
      offsetMs: this.#offsetMs,
      ...(this.#frozenMs !== null && { haltedAt: this.#frozenMs }),
      twelveHour: this.#twelveHour,
      weekdayBias: this.#weekdayBias,
      control: this.#control,
    };
  }

  /** Takes a state `saveState` returned, validated by the model beforehand. */
  restoreState(saved: Ds1307State): void {
    this.target.pointer.value = saved.pointer ?? 0;
    this.#offsetMs = saved.offsetMs ?? 0;
    this.#frozenMs = saved.haltedAt ?? null;
    this.#twelveHour = saved.twelveHour ?? false;
    this.#weekdayBias = saved.weekdayBias ?? 3;
    this.#control = (saved.control ?? 0) & CONTROL_MASK;
  }

  #weekday(ms: number): number {
    return ((dayNumber(ms) + this.#weekdayBias) % 7) + 1;
  }

  #setWeekday(weekday: number, ms: number): void {
    this.#weekdayBias = (((weekday - 1 - dayNumber(ms)) % 7) + 7) % 7;
  }

  #latch(): void {
    if (this.#snapshot) return; // one snapshot per transfer
    const time = this.clockTime;
    this.#snapshot = encodeTime(time, this.#twelveHour, this.#weekday(time), this.halted);
  }

  #readRegister(reg: number): number {
    if (reg < TIME_REGISTERS) return this.#snapshot?.[reg] ?? 0;
    if (reg === DS1307_REGISTERS.control) return this.#control;
    return this.#store.bytes[reg - DS1307_REGISTERS.ramStart] ?? 0;
  }

  #writeRegister(reg: number, value: number): void {
    if (reg < TIME_REGISTERS) {
      if (this.#snapshot) this.#snapshot[reg] = value;
      this.#timeWritten = true;
    } else if (reg === DS1307_REGISTERS.control) {
      this.#control = value & CONTROL_MASK;
    } else {
      const offset = reg - DS1307_REGISTERS.ramStart;
      this.#store.bytes[offset] = value;
      this.#ramDirty.mark(offset);
    }
  }

  #stop(): void {
    const snapshot = this.#snapshot;
    this.#snapshot = null;
    if (this.#timeWritten && snapshot) {
      this.#timeWritten = false;
      const seconds = snapshot[0] ?? 0;
      this.#twelveHour = ((snapshot[2] ?? 0) & HOUR_12) !== 0;
      const time = decodeTime(snapshot);
      const weekday = ((((snapshot[3] ?? 1) & 0x07) + 6) % 7) + 1; // 3 bits; 0 counts as 7
      if (seconds & CLOCK_HALT) this.#frozenMs = time;
      else {
        this.#frozenMs = null;
        this.#offsetMs = time - this.#now();
      }
      this.#setWeekday(weekday, time);
    }
    this.#ramDirty.commit(this.#store);
  }
}

const schema = {
  type: "object",
  properties: {
    backing: { type: "string", description: "file holding the 56 bytes of RAM" },
    initial: {
      type: "hex-bytes",
      maxLength: DS1307_RAM_SIZE,
      description: "RAM content when no file exists",
    },
    time: {
      type: "string",
      pattern: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?/,
      patternText: 'an ISO 8601 time like "2024-05-01T12:00:00Z"',
      description: "initial clock time (default: the host clock)",
    },
    halted: { type: "boolean", description: "start with the clock halted (CH bit set)" },
  },
} as const;

function parseTime(text: string): number {
  const ms = Date.parse(text);
  if (!Number.isFinite(ms)) {
    throw new ModelError(
      MODEL_ERROR_CODES.badValue,
      `expected an ISO 8601 time, got ${JSON.stringify(text)}`,
    );
  }
  const year = new Date(ms).getUTCFullYear();
  if (year < 2000 || year > 2099) {
    throw new ModelError(
      MODEL_ERROR_CODES.badValue,
      `the DS1307 counts years 2000..2099, got ${text}`,
    );
  }
  return ms;
}

/** The DS1307 ModelDefinition with an injectable host clock (tests pass a fake one). */
export function ds1307Model(clock: Ds1307Clock = { now: Date.now }): ModelDefinition {
  return {
    name: "ds1307",
    description:
      "DS1307 real-time clock with 56 bytes of RAM (time = host clock + guest-set offset)",
    options: schema,
    create(options, context): SimDevice {
      const o = validateOptions(schema, options, "ds1307");
      const startTime = o.time === undefined ? undefined : parseTime(o.time);
      const store = openModelStore(context, o.backing, DS1307_RAM_SIZE, o.initial, 0x00);
      const chip = new Ds1307Chip(clock, store, startTime, o.halted ?? false);
      const backed = o.backing !== undefined;
      return {
        targets: [chip.target],
        memory: storeMemory(store),
        properties: {
          time: {
            description: "clock time, ISO 8601 UTC (set: any ISO 8601 time in 2000..2099)",
            get: () => new Date(Math.floor(chip.clockTime / SECOND_MS) * SECOND_MS).toISOString(),
            set: (text) => chip.setTime(parseTime(text)),
          },
          halted: booleanProperty(
            "clock halted (CH bit)",
            () => chip.halted,
            (v) => {
              chip.halted = v;
            },
          ),
        },
        close: () => store.close(),
        saveState: () => ({ ...chip.saveState(), ...savedMemory(store, backed) }),
        restoreState(state) {
          const saved = validateState(stateSchema, state, "ds1307");
          const putMemory = checkSavedMemory(saved.memory, store, backed, "ds1307");
          putMemory();
          chip.restoreState(saved);
        },
      };
    },
  };
}
