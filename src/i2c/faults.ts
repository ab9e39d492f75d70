/**
 * Fault injection and clock stretching for devices on a bus, as one guest sees them: fault specs
 * (parsed from the config file's objects or the control socket's words, formatted back for trace
 * lines and listings), the per-guest state of one device's faults (triggers, seeded generators,
 * counters), the per-chip set of those states (ChipFaults), and FaultBus, the I2cBus layer that
 * applies them to the messages of each transfer before and after the inner bus runs them.
 * Models stay unaware: a fault acts on bus events (address phase, data bytes, completion time),
 * never inside a model. Must not: know about virtio, guest memory, the control socket or the
 * configuration file format (callers hand it plain objects or words).
 * @module
 */

import { CodedError } from "../errors.js";
import { hex, type I2cBus, type I2cMessage } from "./bus.js";
import { parseInteger } from "./models/options.js";

/**
 * What a fault does to a transfer that addresses its device:
 * - `nack`: the device does not acknowledge its address (the transfer stops there, as `-ENXIO`/`-EIO`
 *   in a Linux guest);
 * - `disappear`: the same, meant to last until cleared (a removed chip; `clear` brings it back);
 * - `nack-after`: the device acknowledges `bytes` data bytes of a write, then NACKs the next one (the
 *   bytes before it reach the device);
 * - `corrupt`: byte `byte` (from 0) of each read message from the device is XORed with `xor`, or
 *   replaced by `value` (a CRC or PEC byte is a byte like any other: name its position);
 * - `stall`: the transfer completes `ms` milliseconds later (the guest's transfer takes that long;
 *   other guests and the control socket go on meanwhile).
 */
export type FaultEffect =
  | { readonly fault: "nack" }
  | { readonly fault: "disappear" }
  | { readonly fault: "nack-after"; readonly bytes: number }
  | {
      readonly fault: "corrupt";
      readonly byte: number;
      /** Exactly one of xor and value. */
      readonly xor?: number;
      readonly value?: number;
    }
  | { readonly fault: "stall"; readonly ms: number };

export type FaultKind = FaultEffect["fault"];

/**
 * When a fault fires, counted over the transfers it could act on (for `nack-after`, those with a
 * longer write to its device; for `corrupt`, those with a longer read; for the others, every transfer
 * that addresses the device). Without `every` or `probability` it fires on each of them.
 */
export interface FaultTrigger {
  /** Fires this many times, then is removed (1: once). */
  readonly count?: number;
  /** Fires on every Nth transfer (N, 2N, ...). */
  readonly every?: number;
  /** Fires with this probability (0..1], drawn from a generator seeded with `seed`. */
  readonly probability?: number;
  /** Seed of the `probability` generator (default 1): the same seed gives the same sequence. */
  readonly seed?: number;
}

export type FaultSpec = FaultEffect & FaultTrigger;

/** Clock stretching: how long the device holds SCL low, added to each transfer that addresses it. */
export interface Stretch {
  readonly usPerTransfer: number;
  /** Per data byte moved to or from the device. */
  readonly usPerByte: number;
}

export type FaultErrorCode = "I2C_BAD_FAULT";

/** A fault spec that cannot be used; the message names the field and what it accepts. */
export class FaultError extends CodedError<FaultErrorCode> {}

const EFFECT_FIELDS: Readonly<Record<FaultKind, readonly string[]>> = {
  nack: [],
  disappear: [],
  "nack-after": ["bytes"],
  corrupt: ["byte", "xor", "value"],
  stall: ["ms"],
};
const TRIGGER_FIELDS = ["count", "every", "probability", "seed"] as const;

/** Longest stall: a guest driver's timeout is far shorter; longer would only pin a transfer. */
export const MAX_STALL_MS = 60_000;
/** Most stretching per transfer or per byte (10 ms): real chips stretch microseconds. */
export const MAX_STRETCH_US = 10_000;

/** Seed of a `probability` fault that gives none. */
const DEFAULT_SEED = 1;

export const FAULT_KINDS: readonly FaultKind[] = Object.keys(EFFECT_FIELDS) as FaultKind[];

function isFaultKind(word: unknown): word is FaultKind {
  return typeof word === "string" && Object.hasOwn(EFFECT_FIELDS, word);
}

function bad(message: string): FaultError {
  return new FaultError("I2C_BAD_FAULT", message);
}

/** An integer in [min, max] from a JSON number or text ("0x10"). */
function integerField(
  fields: Readonly<Record<string, unknown>>,
  key: string,
  min: number,
  max: number,
): number {
  const raw = fields[key];
  const value =
    typeof raw === "number" ? raw : typeof raw === "string" ? parseInteger(raw) : Number.NaN;
  if (value === null || !Number.isInteger(value) || value < min || value > max) {
    throw bad(`"${key}" must be an integer ${min}..${max}, not ${JSON.stringify(raw)}`);
  }
  return value;
}

function probabilityField(fields: Readonly<Record<string, unknown>>): number {
  const raw = fields.probability;
  const value =
    typeof raw === "number"
      ? raw
      : typeof raw === "string" && raw.trim() !== ""
        ? Number(raw)
        : Number.NaN;
  if (!(value > 0 && value <= 1)) {
    throw bad(`"probability" must be a number in (0, 1], not ${JSON.stringify(raw)}`);
  }
  return value;
}

/**
 * Checks a fault given as an object (`{"fault": "nack", "every": 3}`; numbers as JSON numbers or
 * text). Throws FaultError.
 */
export function parseFaultSpec(fields: Readonly<Record<string, unknown>>): FaultSpec {
  const kind = fields.fault;
  if (!isFaultKind(kind)) {
    throw bad(`"fault" must be one of ${FAULT_KINDS.join(", ")}, not ${JSON.stringify(kind)}`);
  }
  const allowed = ["fault", ...EFFECT_FIELDS[kind], ...TRIGGER_FIELDS];
  for (const key of Object.keys(fields)) {
    if (!allowed.includes(key)) {
      throw bad(`"${key}" is not a field of a ${kind} fault (fields: ${allowed.join(", ")})`);
    }
  }
  const has = (key: string) => fields[key] !== undefined;
  const trigger: { count?: number; every?: number; probability?: number; seed?: number } = {};
  if (has("count")) trigger.count = integerField(fields, "count", 1, 2 ** 31);
  if (has("every")) trigger.every = integerField(fields, "every", 1, 2 ** 31);
  if (has("probability")) trigger.probability = probabilityField(fields);
  if (has("seed")) trigger.seed = integerField(fields, "seed", 0, 2 ** 32 - 1);
  if (trigger.every !== undefined && trigger.probability !== undefined) {
    throw bad(`give "every" or "probability", not both`);
  }
  if (trigger.seed !== undefined && trigger.probability === undefined) {
    throw bad(`"seed" seeds "probability": give both`);
  }
  switch (kind) {
    case "nack":
    case "disappear":
      return { fault: kind, ...trigger };
    case "nack-after":
      return { fault: kind, bytes: integerField(fields, "bytes", 0, 0xffff), ...trigger };
    case "stall":
      return { fault: kind, ms: integerField(fields, "ms", 1, MAX_STALL_MS), ...trigger };
    case "corrupt": {
      const byte = has("byte") ? integerField(fields, "byte", 0, 0xffff) : 0;
      if (has("xor") && has("value")) throw bad(`give "xor" or "value", not both`);
      if (has("value")) {
        return { fault: kind, byte, value: integerField(fields, "value", 0, 0xff), ...trigger };
      }
      // Without either, every bit of the byte flips: the most visible corruption.
      const xor = has("xor") ? integerField(fields, "xor", 1, 0xff) : 0xff;
      return { fault: kind, byte, xor, ...trigger };
    }
  }
}

/**
 * Checks clock stretching given as an object: `{"usPerTransfer": 100, "usPerByte": 10}` (either may
 * be left out: 0). Throws FaultError.
 */
export function parseStretch(fields: Readonly<Record<string, unknown>>): Stretch {
  const keys = ["usPerTransfer", "usPerByte"];
  for (const key of Object.keys(fields)) {
    if (!keys.includes(key))
      throw bad(`"${key}" is not a stretch field (fields: ${keys.join(", ")})`);
  }
  const field = (key: string) =>
    fields[key] === undefined ? 0 : integerField(fields, key, 0, MAX_STRETCH_US);
  return { usPerTransfer: field("usPerTransfer"), usPerByte: field("usPerByte") };
}

/**
 * Checks a fault given as words, the control socket's form: the kind, then `key=value` fields, e.g.
 * `nack every=3`, `corrupt byte=2 xor=0x01`, `stall ms=50 count=1`. Throws FaultError.
 */
export function parseFaultWords(words: readonly string[]): FaultSpec {
  const [kind, ...rest] = words;
  const fields: Record<string, string> = { fault: kind ?? "" };
  for (const word of rest) {
    const eq = word.indexOf("=");
    if (eq <= 0) throw bad(`"${word}" is not key=value`);
    const key = word.slice(0, eq);
    if (Object.hasOwn(fields, key)) throw bad(`"${key}" given twice`);
    fields[key] = word.slice(eq + 1);
  }
  return parseFaultSpec(fields);
}

/** The words form of a spec, fields in a fixed order: `corrupt byte=2 xor=0x01 every=3`. */
export function formatFault(spec: FaultSpec): string {
  const words: string[] = [spec.fault];
  const add = (key: string, value: number | undefined, asHex = false) => {
    if (value !== undefined) words.push(`${key}=${asHex ? hex(value) : String(value)}`);
  };
  switch (spec.fault) {
    case "nack-after":
      add("bytes", spec.bytes);
      break;
    case "corrupt":
      add("byte", spec.byte);
      add("xor", spec.xor, true);
      add("value", spec.value, true);
      break;
    case "stall":
      add("ms", spec.ms);
      break;
  }
  add("count", spec.count);
  add("every", spec.every);
  add("probability", spec.probability);
  add("seed", spec.probability === undefined ? undefined : (spec.seed ?? DEFAULT_SEED));
  return words.join(" ");
}

/**
 * A seeded generator of numbers in [0, 1) (mulberry32: small, fast, and the same on every platform,
 * so a seed reproduces a run anywhere).
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** A fault as listings show it: its spec, how often it fired, and the firings left (null: no end). */
export interface FaultStatus {
  /** formatFault of the spec. */
  readonly fault: string;
  readonly injected: number;
  readonly left: number | null;
}

/** One fault set on one device for one guest: its trigger's state. */
export class ActiveFault {
  readonly spec: FaultSpec;
  readonly label: string;
  readonly #random: (() => number) | null;
  /** Transfers it could act on so far. */
  #seen = 0;
  #injected = 0;

  constructor(spec: FaultSpec) {
    this.spec = spec;
    this.label = formatFault(spec);
    this.#random = spec.probability === undefined ? null : seededRandom(spec.seed ?? DEFAULT_SEED);
  }

  /** How many times it fired. */
  get injected(): number {
    return this.#injected;
  }

  get expired(): boolean {
    return this.spec.count !== undefined && this.#injected >= this.spec.count;
  }

  /** Called once per transfer it could act on: whether it fires in this one. */
  fires(): boolean {
    if (this.expired) return false;
    this.#seen++;
    const { every, probability } = this.spec;
    // The generator advances on every transfer it is asked about, so the sequence depends only on
    // the seed and the transfers, not on what else fired.
    const fired =
      every !== undefined
        ? this.#seen % every === 0
        : this.#random === null || this.#random() < (probability ?? 1);
    if (fired) this.#injected++;
    return fired;
  }

  status(): FaultStatus {
    const { count } = this.spec;
    return {
      fault: this.label,
      injected: this.injected,
      left: count === undefined ? null : count - this.injected,
    };
  }
}

/**
 * One device's faults and clock stretching as one guest sees it. Faults of a guest never touch
 * another guest's transfers, even on a chip they share.
 */
export class DeviceFaults {
  /** Guest address of the device (its base address), for trace lines. */
  readonly address: number;
  readonly stretch: Stretch | null;
  #faults: ActiveFault[] = [];
  /** Firings of faults since removed (expired or cleared), so counts never go back. */
  #injectedBefore = 0;

  constructor(address: number, stretch: Stretch | null = null, faults: readonly FaultSpec[] = []) {
    this.address = address;
    this.stretch = stretch;
    for (const spec of faults) this.add(spec);
  }

  add(spec: FaultSpec): void {
    this.#faults.push(new ActiveFault(spec));
  }

  /** Removes every fault (a disappeared device comes back); returns how many there were. */
  clear(): number {
    const removed = this.#faults.length;
    for (const fault of this.#faults) this.#injectedBefore += fault.injected;
    this.#faults = [];
    return removed;
  }

  /** The faults still set, in the order they were set. */
  list(): FaultStatus[] {
    return this.faults().map((fault) => fault.status());
  }

  /** Every firing of every fault set on this device for this guest. */
  get injected(): number {
    return this.#faults.reduce((sum, fault) => sum + fault.injected, this.#injectedBefore);
  }

  /** Whether a transfer may be slowed (FaultBus then hands it copies rather than guest memory). */
  get mayDelay(): boolean {
    if (this.stretch !== null) return true;
    for (const fault of this.#faults)
      if (fault.spec.fault === "stall" && !fault.expired) return true;
    return false;
  }

  get armed(): boolean {
    return this.stretch !== null || this.#faults.length > 0;
  }

  /** The faults still set (for FaultBus); expired ones are dropped here, counted in `injected`. */
  faults(): readonly ActiveFault[] {
    if (this.#faults.some((fault) => fault.expired)) {
      for (const fault of this.#faults) if (fault.expired) this.#injectedBefore += fault.injected;
      this.#faults = this.#faults.filter((fault) => !fault.expired);
    }
    return this.#faults;
  }
}

/**
 * The faults of one chip, per guest that sees it: the configured ones (every guest starts with its
 * own copy, so a seeded fault gives each guest the same sequence) and those set at run time.
 */
export class ChipFaults {
  readonly address: number;
  readonly #stretch: Stretch | null;
  readonly #configured: readonly FaultSpec[];
  readonly #guests = new Map<number, DeviceFaults>();

  constructor(
    address: number,
    stretch: Stretch | null = null,
    configured: readonly FaultSpec[] = [],
  ) {
    this.address = address;
    this.#stretch = stretch;
    this.#configured = configured;
  }

  /** The faults guest `guest` meets on this chip (made on first use). */
  forGuest(guest: number): DeviceFaults {
    let faults = this.#guests.get(guest);
    if (faults === undefined) {
      faults = new DeviceFaults(this.address, this.#stretch, this.#configured);
      this.#guests.set(guest, faults);
    }
    return faults;
  }
}

/** Waits `ms` milliseconds without blocking the thread. */
export type Sleep = (ms: number) => Promise<void>;

/**
 * Waits at least `ms` on the monotonic clock: a timer may fire a fraction of a millisecond early
 * against performance.now() (libuv counts whole milliseconds), and a stall must never be shorter than
 * asked.
 */
const sleep: Sleep = (ms) =>
  new Promise((resolve) => {
    const until = performance.now() + ms;
    const check = () => {
      const left = until - performance.now();
      if (left <= 0) resolve();
      else setTimeout(check, left);
    };
    setTimeout(check, ms);
  });

/** What a transfer's faults decided, before the inner bus runs it. */
interface Plan {
  /** Messages handed to the inner bus: a prefix of the transfer, the last one maybe cut short. */
  readonly run: readonly I2cMessage[];
  /** Index of the message a fault NACKed (msgs.length: none). */
  readonly cut: number;
  /** Read messages to corrupt once they completed. */
  readonly corrupt: readonly {
    readonly index: number;
    readonly spec: Extract<FaultSpec, { fault: "corrupt" }>;
  }[];
  readonly delayMs: number;
}

/**
 * An I2cBus layer for one guest: runs each transfer on `inner` with the faults of the devices it
 * addresses applied, and marks each message a fault acted on (I2cMessage.injected). Transfers that
 * address no device with a fault or stretching pass straight through. It may return a Promise (a
 * stall, stretching), so it is never `synchronous`; `inlineNow` says when it runs inline (no device
 * may delay), so guest memory is still used in place in the usual case.
 */
export class FaultBus implements I2cBus {
  readonly inner: I2cBus;
  readonly synchronous = false;
  /** Address on `inner` → the faults this guest meets there (every target of a chip: the same). */
  readonly #devices: ReadonlyMap<number, DeviceFaults>;
  readonly #distinct: readonly DeviceFaults[];
  readonly #sleep: Sleep;
  /** Transfers waiting for their stall or stretching to pass. */
  #waiting = 0;

  constructor(inner: I2cBus, devices: ReadonlyMap<number, DeviceFaults>, wait: Sleep = sleep) {
    this.inner = inner;
    this.#devices = devices;
    this.#distinct = [...new Set(devices.values())];
    this.#sleep = wait;
  }

  get name(): string {
    return this.inner.name;
  }

  // The two checks below run for every transfer: plain loops, no closures to allocate.
  get inlineNow(): boolean {
    if (!this.inner.synchronous && this.inner.inlineNow !== true) return false;
    for (const device of this.#distinct) if (device.mayDelay) return false;
    return true;
  }

  #anyArmed(): boolean {
    for (const device of this.#distinct) if (device.armed) return true;
    return false;
  }

  /**
   * Whether a transfer waits on a timer (a stall, stretching): a thread that blocks in epoll must
   * keep turning its event loop meanwhile, or the timer fires late.
   */
  get waitingOnTimer(): boolean {
    return this.#waiting > 0;
  }

  transfer(msgs: readonly I2cMessage[]): number | Promise<number> {
    if (!this.#anyArmed()) return this.inner.transfer(msgs);
    const plan = this.#plan(msgs);
    const run = () => this.#run(msgs, plan);
    if (plan.delayMs <= 0) return run();
    this.#waiting++;
    return this.#sleep(plan.delayMs)
      .finally(() => {
        this.#waiting--;
      })
      .then(run);
  }

  close(): void {
    this.inner.close();
  }

  /**
   * Decides, message by message, what the faults do: each fault is asked at most once per transfer
   * (on the first message it could act on), and nothing past a NACK is asked.
   */
  #plan(msgs: readonly I2cMessage[]): Plan {
    const decided = new Map<ActiveFault, boolean>();
    const fires = (fault: ActiveFault) => {
      let fired = decided.get(fault);
      if (fired === undefined) {
        fired = fault.fires();
        decided.set(fault, fired);
      }
      return fired;
    };
    const addressed = new Set<DeviceFaults>();
    const corrupt: Plan["corrupt"][number][] = [];
    let delayUs = 0;
    for (let i = 0; i < msgs.length; i++) {
      const msg = msgs[i] as I2cMessage;
      const device = this.#devices.get(msg.addr);
      if (device === undefined) continue;
      const faults = device.faults();
      const marks: string[] = [];
      const mark = (fault: ActiveFault) => marks.push(fault.label);
      let cutShort: I2cMessage | null = null;
      let nacked = false;
      if (!addressed.has(device)) {
        addressed.add(device);
        delayUs += device.stretch?.usPerTransfer ?? 0;
        for (const fault of faults) {
          const { spec } = fault;
          if ((spec.fault === "nack" || spec.fault === "disappear") && fires(fault)) {
            mark(fault);
            nacked = true;
          } else if (spec.fault === "stall" && fires(fault)) {
            mark(fault);
            delayUs += spec.ms * 1000;
          }
        }
      }
      if (!nacked) {
        for (const fault of faults) {
          const { spec } = fault;
          if (spec.fault === "nack-after" && !msg.read && msg.buf.length > spec.bytes) {
            if (fires(fault)) {
              mark(fault);
              cutShort = { addr: msg.addr, read: false, buf: msg.buf.subarray(0, spec.bytes) };
              break;
            }
          } else if (spec.fault === "corrupt" && msg.read && msg.buf.length > spec.byte) {
            if (fires(fault)) {
              mark(fault);
              corrupt.push({ index: i, spec });
            }
          }
        }
      }
      const moved = nacked ? 0 : (cutShort ?? msg).buf.length;
      delayUs += (device.stretch?.usPerByte ?? 0) * moved;
      if (marks.length > 0) msg.injected = `${hex(device.address)}: ${marks.join(", ")}`;
      if (nacked || cutShort !== null) {
        const run = msgs.slice(0, i);
        if (cutShort !== null) run.push(cutShort);
        return { run, cut: i, corrupt, delayMs: delayUs / 1000 };
      }
    }
    return { run: msgs, cut: msgs.length, corrupt, delayMs: delayUs / 1000 };
  }

  #run(msgs: readonly I2cMessage[], plan: Plan): number | Promise<number> {
    const finish = (done: number) => {
      const completed = Math.min(done, plan.cut);
      for (const { index, spec } of plan.corrupt) {
        const buf = (msgs[index] as I2cMessage).buf;
        if (index >= completed) continue;
        buf[spec.byte] = spec.value ?? (buf[spec.byte] ?? 0) ^ (spec.xor ?? 0);
      }
      return completed;
    };
    // A NACK on the first message: no START reached a device, nothing to run.
    if (plan.run.length === 0) return 0;
    const done = this.inner.transfer(plan.run);
    return typeof done === "number" ? finish(done) : done.then(finish);
  }
}
