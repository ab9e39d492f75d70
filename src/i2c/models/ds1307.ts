/**
 * DS1307 real-time clock: BCD time registers (seconds with clock halt, minutes, hours in 12/24-hour
 * mode, day of week, date, month, year), control register, 56 bytes of RAM (optionally backed by a
 * file). The time is the host clock plus an offset the guest sets by writing the time registers.
 * Owns only the chip's behaviour; must not know about buses, virtio or the configuration format.
 * @module
 */

import type { BackingStore, ModelDefinition, SimDevice } from "../model.js";
import { type HostClock, systemClock } from "./clock.js";
import {
  checkSavedMemory,
  DirtyRange,
  memoryStateSchema,
  openModelStore,
  savedMemory,
  storeMemory,
} from "./memory.js";
import { type OptionValue, validateOptions, validateState } from "./options.js";
import { booleanProperty } from "./properties.js";
import type { RegisterFile } from "./registers.js";
import {
  calendarMs,
  calendarTime,
  decodeHours,
  encodeHours,
  fromBcd,
  latchedRegisterFile,
  parseRtcTime,
  RtcClock,
  rtcStateProperties,
  type TimeLatch,
  timeOptionSchema,
  timeProperty,
  toBcd,
} from "./rtc-clock.js";

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
const CONTROL_MASK = 0x93; // OUT, SQWE, RS1, RS0
/** Counter bias making the day-of-week register 1 on Mondays (ISO 8601) until the guest sets it. */
const MONDAY_FIRST = 3;
const YEARS = { min: 2000, max: 2099 } as const;

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
    ...rtcStateProperties(DS1307_REGISTERS.count),
    twelveHour: { type: "boolean" },
    control: { type: "integer", min: 0, max: CONTROL_MASK },
    memory: memoryStateSchema(DS1307_RAM_SIZE),
  },
} as const;
type Ds1307State = OptionValue<typeof stateSchema>;

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
  readonly clock: RtcClock;
  readonly #store: BackingStore;
  readonly #ramDirty = new DirtyRange();
  readonly #latch: TimeLatch;
  #twelveHour = false;
  #control = 0;

  constructor(host: HostClock, store: BackingStore, startTime?: number, halted = false) {
    this.clock = new RtcClock(host, MONDAY_FIRST, startTime, halted);
    this.#store = store;
    ({ latch: this.#latch, target: this.target } = latchedRegisterFile(DS1307_REGISTERS.count, {
      capture: () => this.#timeRegisters(),
      commit: (regs) => this.#setTime(regs),
      read: (reg) => this.#readRegister(reg),
      write: (reg, value) => this.#writeRegister(reg, value),
      stop: () => this.#ramDirty.commit(this.#store),
    }));
  }

  /** True when the guest last wrote the hours register in 12-hour mode. */
  get twelveHour(): boolean {
    return this.#twelveHour;
  }

  /** Its clock and registers as plain data (the RAM is the store's: see the model). */
  saveState(): Record<string, number | boolean> {
    return {
      pointer: this.target.pointer.value,
      ...this.clock.save(),
      twelveHour: this.#twelveHour,
      control: this.#control,
    };
  }

  /** Takes a state `saveState` returned, validated by the model beforehand. */
  restoreState(saved: Ds1307State): void {
    this.target.pointer.value = saved.pointer ?? 0;
    this.clock.restore(saved);
    this.#twelveHour = saved.twelveHour ?? false;
    this.#control = (saved.control ?? 0) & CONTROL_MASK;
  }

  /** Time registers 0..6 now: BCD, the day-of-week counter as 1..7, CH when halted. */
  #timeRegisters(): number[] {
    const time = this.clock.time;
    const t = calendarTime(time);
    return [
      (this.clock.halted ? CLOCK_HALT : 0) | toBcd(t.second),
      toBcd(t.minute),
      encodeHours(t.hour, this.#twelveHour),
      this.clock.weekday(time) + 1,
      toBcd(t.date),
      toBcd(t.month),
      toBcd(t.year % 100),
    ];
  }

  /** The guest wrote time registers: set the clock from them (out-of-range fields roll over). */
  #setTime(regs: readonly number[]): void {
    const at = (i: number) => regs[i] ?? 0;
    const { hour, twelveHour } = decodeHours(at(2));
    this.#twelveHour = twelveHour;
    const time = calendarMs({
      year: 2000 + fromBcd(at(6)),
      month: fromBcd(at(5) & 0x1f),
      date: fromBcd(at(4) & 0x3f),
      hour,
      minute: fromBcd(at(1) & 0x7f),
      second: fromBcd(at(0) & 0x7f),
    });
    this.clock.halted = (at(0) & CLOCK_HALT) !== 0;
    this.clock.set(time, ((at(3) & 0x07) + 6) % 7); // 3 bits; 0 counts as 7
  }

  #readRegister(reg: number): number {
    if (reg < TIME_REGISTERS) return this.#latch.get(reg);
    if (reg === DS1307_REGISTERS.control) return this.#control;
    return this.#store.bytes[reg - DS1307_REGISTERS.ramStart] ?? 0;
  }

  #writeRegister(reg: number, value: number): void {
    if (reg < TIME_REGISTERS) this.#latch.set(reg, value);
    else if (reg === DS1307_REGISTERS.control) this.#control = value & CONTROL_MASK;
    else {
      const offset = reg - DS1307_REGISTERS.ramStart;
      this.#store.bytes[offset] = value;
      this.#ramDirty.mark(offset);
    }
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
    time: timeOptionSchema,
    halted: { type: "boolean", description: "start with the clock halted (CH bit set)" },
  },
} as const;

/** The DS1307 ModelDefinition with an injectable host clock (tests pass a fake one). */
export function ds1307Model(clock: HostClock = systemClock): ModelDefinition {
  return {
    name: "ds1307",
    linuxDriver: "rtc rtc-ds1307",
    description:
      "DS1307 real-time clock with 56 bytes of RAM (time = host clock + guest-set offset)",
    options: schema,
    create(options, context): SimDevice {
      const o = validateOptions(schema, options, "ds1307");
      const startTime = o.time === undefined ? undefined : parseRtcTime(o.time, "DS1307", YEARS);
      const store = openModelStore(context, o.backing, DS1307_RAM_SIZE, o.initial, 0x00);
      const chip = new Ds1307Chip(clock, store, startTime, o.halted ?? false);
      const backed = o.backing !== undefined;
      return {
        targets: [chip.target],
        memory: storeMemory(store),
        properties: {
          time: timeProperty(chip.clock, "DS1307", YEARS),
          halted: booleanProperty(
            "clock halted (CH bit)",
            () => chip.clock.halted,
            (v) => {
              chip.clock.halted = v;
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
