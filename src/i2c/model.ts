/**
 * Public API for emulated I2C chips (re-exported by the package entry src/index.ts for user modules):
 * the bus-event target interface, the device/property/memory shape operators reach, the saved state
 * a chip hands to a successor process, model definitions with option schemas, and the registry of
 * built-in models.
 * A model sees bus events for its own addresses only; the bus (src/i2c/sim-bus.ts) does the
 * addressing, ordering and error containment. Must not know about virtio, guest memory, host
 * adapters, the configuration file format or the control socket.
 * @module
 */

import { type Logger, silentLogger } from "../log.js";
import { openBacking } from "./backing-store.js";
import { builtinModels } from "./models/builtin.js";
import { MODEL_ERROR_CODES, ModelError } from "./models/model-error.js";
import { type ObjectSchema, type OptionValue, validateOptions } from "./models/options.js";

export { builtinModels } from "./models/builtin.js";
export {
  MODEL_ERROR_CODES,
  ModelError,
  type ModelErrorCode,
  type OptionIssue,
} from "./models/model-error.js";
export {
  type ArraySchema,
  type BooleanSchema,
  checkOptions,
  type HexBytesSchema,
  type NumberSchema,
  type ObjectSchema,
  type OptionSchema,
  type OptionValue,
  parseHexBytes,
  parseInteger,
  type StringSchema,
  validateOptions,
  validateState,
} from "./models/options.js";
export {
  RegisterFile,
  type RegisterFileHooks,
  type RegisterFileOptions,
  RegisterPointer,
} from "./models/registers.js";

/**
 * An emulated I2C target driven by bus events. For each message addressed to the model the bus calls
 * `start(read)`, then `write(data)` or `read(into)` (nothing for zero-length messages), and at the end
 * of the transfer `stop()` once, also when the transfer failed.
 *
 * @example A one-register chip: writes set the register, reads return it.
 * ```ts
 * import { SimBus } from "./sim-bus.js";
 * import type { I2cDeviceModel } from "./model.js";
 *
 * class Register implements I2cDeviceModel {
 *   value = 0;
 *   start(_read: boolean): boolean { return true; }   // ACK both directions
 *   write(data: Uint8Array): boolean {
 *     const last = data.at(-1);
 *     if (last !== undefined) this.value = last;
 *     return true;
 *   }
 *   read(into: Uint8Array): void { into.fill(this.value); }
 *   stop(): void {}
 * }
 *
 * const bus = new SimBus(new Map([[0x20, new Register()]]));
 * const buf = new Uint8Array(1);
 * bus.transfer([{ addr: 0x20, read: false, buf: Uint8Array.of(7) }, { addr: 0x20, read: true, buf }]);
 * // buf[0] === 7
 * ```
 */
export interface I2cDeviceModel {
  /** START or repeated START to this address in the given direction; false = NACK (message fails). */
  start(read: boolean): boolean;
  /** Bytes from the controller; false = NACK (message fails). */
  write(data: Uint8Array): boolean;
  /** Fill `into` with bytes for the controller. */
  read(into: Uint8Array): void;
  /** STOP: end of the transfer (commit writes, reset per-transfer state). */
  stop(): void;
}

/**
 * One chip: its I2C targets and what operators can reach (control socket `get`/`set`/`read`/`write`).
 * `targets[i]` answers on base address + i (a 24c16 has 8 targets sharing one memory and pointer).
 */
export interface SimDevice {
  readonly targets: readonly I2cDeviceModel[];
  /** Named run-time values, e.g. LM75 "temperature" (°C). */
  readonly properties?: Readonly<Record<string, DeviceProperty>>;
  /** The chip's memory (EEPROM array, RTC RAM, register image). */
  readonly memory?: DeviceMemory;
  /** Flush and release backing files. Idempotent. */
  close?(): void;
  /**
   * What a guest or an operator has changed in the chip (memory, registers, pointers, property
   * values, a clock's offset...), as plain data that survives `JSON.stringify` (numbers, strings,
   * booleans, null, arrays and plain objects; bytes as hex text). The daemon calls it between
   * transfers (no START without its STOP) to hand the chip to a successor process (SIGUSR2), which
   * creates the chip from the same options and calls `restoreState`. Leave out memory a backing file
   * holds: the file is what the successor reads. A chip without it starts afresh in a successor
   * (the daemon logs it).
   */
  saveState?(): unknown;
  /**
   * Takes a state `saveState` returned, on a chip just created with the same model, address and
   * options, before it sees any transfer. Checks all of it first (`validateState`) and throws
   * (ModelError "I2C_MODEL_BAD_STATE") without changing anything when it cannot take it: the chip
   * then starts as created (the daemon logs it).
   *
   * @example A latch and a pointer, checked before either is set:
   * ```ts
   * const stateSchema = {
   *   type: "object",
   *   required: ["latch", "pointer"],
   *   properties: {
   *     latch: { type: "integer", min: 0, max: 255 },
   *     pointer: { type: "integer", min: 0, max: 15 },
   *   },
   * } as const;
   * const device: SimDevice = {
   *   targets: [chip],
   *   saveState: () => ({ latch: chip.latch, pointer: chip.regs.pointer.value }),
   *   restoreState(state) {
   *     const saved = validateState(stateSchema, state, "my-chip");
   *     chip.latch = saved.latch ?? 0xff;
   *     chip.regs.pointer.value = saved.pointer ?? 0;
   *   },
   * };
   * ```
   */
  restoreState?(state: unknown): void;
}

/** A run-time value of a device. */
export interface DeviceProperty {
  readonly description: string;
  get(): number | string | boolean;
  /** Parses and validates the text; throws ModelError ("I2C_MODEL_BAD_VALUE") when it cannot. */
  set?(value: string): void;
}

/** Byte-addressed access to a device's memory. Offsets out of range throw "I2C_MODEL_OUT_OF_RANGE". */
export interface DeviceMemory {
  readonly size: number;
  read(offset: number, length: number): Uint8Array;
  /** Durable before it returns when the memory is backed by a file. */
  write(offset: number, data: Uint8Array): void;
}

/**
 * What a model module exports as `default` (built-in models use the same shape). Callers validate
 * `options` against the schema (`validateOptions`) before `create`; models made with `defineModel`
 * validate again themselves, so `create` is safe to call directly.
 */
export interface ModelDefinition {
  /** "24c32", "lm75", "ds1307", "register-file". */
  readonly name: string;
  readonly description: string;
  /**
   * The upstream Linux driver that binds to the chip under `name` (its I2C device id), as
   * `[subsystem ]module`: "at24", "hwmon lm75", "rtc rtc-ds1307". Absent when none is meant
   * (the guest uses i2c-dev). Documentation: README's model table shows it.
   */
  readonly linuxDriver?: string;
  readonly options?: ObjectSchema;
  create(options: Readonly<Record<string, unknown>>, context: ModelContext): SimDevice;
}

/** What a model gets from the daemon when it is created. */
export interface ModelContext {
  /** Base guest address (targets[i] answers on address + i). */
  readonly address: number;
  readonly logger: Logger;
  /** Relative paths in options resolve here. */
  readonly baseDir: string;
  /** Opens (or creates from `initial`) a file holding `size` bytes; see src/i2c/backing-store.ts. */
  openBacking(path: string, size: number, initial: Uint8Array): BackingStore;
}

/** File-backed bytes with write-through: `commit` is durable (written and fdatasync'ed) on return. */
export interface BackingStore {
  readonly bytes: Uint8Array;
  commit(offset: number, length: number): void;
  close(): void;
}

/**
 * Builds a ModelDefinition whose `create` receives options validated and typed by the schema.
 *
 * @example A user module (`export default defineModel({...})`):
 * ```ts
 * import { defineModel, RegisterFile } from "vhost-device-i2c";
 *
 * export default defineModel({
 *   name: "id-chip",
 *   description: "one read-only ID register",
 *   options: { type: "object", properties: { id: { type: "integer", min: 0, max: 255 } } },
 *   create(options) {
 *     const id = options.id ?? 0x42;
 *     return { targets: [new RegisterFile({ count: 1 }, { read: () => id, write: () => {} })] };
 *   },
 * });
 * ```
 */
export function defineModel<const S extends ObjectSchema>(definition: {
  readonly name: string;
  readonly description: string;
  readonly linuxDriver?: string;
  readonly options: S;
  create(options: OptionValue<S>, context: ModelContext): SimDevice;
}): ModelDefinition {
  const { name, description, linuxDriver, options: schema } = definition;
  return {
    name,
    description,
    ...(linuxDriver !== undefined && { linuxDriver }),
    options: schema,
    create(options, context) {
      return definition.create(validateOptions(schema, options, name), context);
    },
  };
}

const BUILTIN_BY_NAME: ReadonlyMap<string, ModelDefinition> = new Map(
  builtinModels.map((definition) => [definition.name, definition]),
);

/** Names of the built-in models, e.g. for `sim:0x50=24c02` in the device list. */
export const MODEL_NAMES: readonly string[] = [...BUILTIN_BY_NAME.keys()];

/** True when `name` is a built-in model. */
export function isModelName(name: string): boolean {
  return BUILTIN_BY_NAME.has(name);
}

/**
 * The built-in model of that name. Throws ModelError "I2C_UNKNOWN_MODEL" listing the known names.
 *
 * @example
 * ```ts
 * const device = findModel("lm75").create({ temperature: 21.5 }, modelContext({ address: 0x48 }));
 * const bus = new SimBus(simTargets(new Map([[0x48, device]])));
 * ```
 */
export function findModel(name: string): ModelDefinition {
  const definition = BUILTIN_BY_NAME.get(name);
  if (!definition) {
    throw new ModelError(
      MODEL_ERROR_CODES.unknownModel,
      `unknown device model "${name}" (known: ${MODEL_NAMES.join(", ")})`,
    );
  }
  return definition;
}

/**
 * A ModelContext with defaults: silent logger, the current directory as baseDir, backing files
 * opened with `openBacking` relative to baseDir. For tests, tools and embedding.
 */
export function modelContext(
  overrides: Partial<ModelContext> & { readonly address: number },
): ModelContext {
  const baseDir = overrides.baseDir ?? process.cwd();
  return {
    logger: silentLogger,
    baseDir,
    openBacking: (path, size, initial) => openBacking(path, size, initial, baseDir),
    ...overrides,
  };
}

/** Options of the legacy `createModel`. */
export interface ModelOptions {
  /** Initial memory content (shorter content leaves the rest erased). */
  readonly contents?: Uint8Array;
}

/**
 * Legacy helper: the first target of a built-in model with default options (at address 0).
 * Prefer `findModel(name).create(options, context)`, which also gives the other targets,
 * properties and memory.
 */
export function createModel(name: string, options: ModelOptions = {}): I2cDeviceModel {
  const device = findModel(name).create(
    options.contents ? { initial: options.contents } : {},
    modelContext({ address: 0 }),
  );
  const first = device.targets[0];
  if (!first) throw new ModelError(MODEL_ERROR_CODES.badOptions, `model "${name}" has no target`);
  return first;
}
