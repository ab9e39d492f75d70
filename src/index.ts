/**
 * Package entry for user device-model modules and embedders: the public model API (interfaces,
 * `defineModel`, option schema and validator, register helpers, errors, built-in models) and the
 * emulated bus (SimBus) to test models on. Must not start a daemon or touch the process.
 *
 * @example A user model module, loaded with `{"model": {"module": "./my-chip.js"}}`:
 * ```ts
 * import { defineModel, RegisterFile } from "vhost-device-i2c";
 *
 * export default defineModel({
 *   name: "my-chip",
 *   description: "one writable register",
 *   options: { type: "object", properties: { value: { type: "integer", min: 0, max: 255 } } },
 *   create(options) {
 *     let value = options.value ?? 0;
 *     const regs = new RegisterFile({ count: 1 }, { read: () => value, write: (_r, v) => { value = v; } });
 *     return { targets: [regs], properties: { value: { description: "register", get: () => value } } };
 *   },
 * });
 * ```
 * @module
 */

export { memoryBacking, openBacking } from "./i2c/backing-store.js";
export type { I2cBus, I2cMessage } from "./i2c/bus.js";
export {
  type ArraySchema,
  type BackingStore,
  type BooleanSchema,
  builtinModels,
  checkOptions,
  type DeviceMemory,
  type DeviceProperty,
  defineModel,
  findModel,
  type HexBytesSchema,
  type I2cDeviceModel,
  isModelName,
  MODEL_ERROR_CODES,
  MODEL_NAMES,
  type ModelContext,
  type ModelDefinition,
  ModelError,
  type ModelErrorCode,
  modelContext,
  type NumberSchema,
  type ObjectSchema,
  type OptionIssue,
  type OptionSchema,
  type OptionValue,
  parseHexBytes,
  parseInteger,
  RegisterFile,
  type RegisterFileHooks,
  type RegisterFileOptions,
  RegisterPointer,
  type SimDevice,
  type StringSchema,
  validateOptions,
  validateState,
} from "./i2c/model.js";
export { SimBus, simTargets } from "./i2c/sim-bus.js";
export type { Logger } from "./log.js";
