/**
 * ModelError: the one error class of the emulated-device layer (model lookup, option validation,
 * property and memory access, backing files, saved states). Owns the stable codes; must not format for a CLI.
 * @module
 */

import { CodedError } from "../../errors.js";

/** Stable error codes. Check `error.code`, never the message. */
export const MODEL_ERROR_CODES = {
  /** No model of that name (`findModel`, `createModel`). */
  unknownModel: "I2C_UNKNOWN_MODEL",
  /** Options do not match the model's schema; `issues` lists each problem. */
  badOptions: "I2C_MODEL_BAD_OPTIONS",
  /** A property value or memory write that the device cannot take. */
  badValue: "I2C_MODEL_BAD_VALUE",
  /** A property without a setter. */
  readOnlyProperty: "I2C_MODEL_READ_ONLY",
  /** A memory access outside the device's memory. */
  outOfRange: "I2C_MODEL_OUT_OF_RANGE",
  /** An existing backing file whose size is not the device's memory size (never truncated). */
  backingSize: "I2C_BACKING_SIZE",
  /** A backing file could not be created, opened, written or synced (`cause` holds the errno error). */
  backingIo: "I2C_BACKING_IO",
  /** A saved state (SimDevice.restoreState) the chip cannot take; `issues` lists each problem. */
  badState: "I2C_MODEL_BAD_STATE",
} as const;

export type ModelErrorCode = (typeof MODEL_ERROR_CODES)[keyof typeof MODEL_ERROR_CODES];

/** One problem found by option validation: where (`options.registers.0x10`) and what was expected. */
export interface OptionIssue {
  readonly path: string;
  readonly expected: string;
  /** Short rendering of the value found ("300", "string \"abc\"", "missing"). */
  readonly found: string;
}

/**
 * Error thrown by models, the registry, option validation and backing stores.
 *
 * @example
 * ```ts
 * try { findModel("24c03"); } catch (e) {
 *   if (e instanceof ModelError && e.code === "I2C_UNKNOWN_MODEL") console.error(e.message);
 * }
 * ```
 */
export class ModelError extends CodedError<ModelErrorCode> {
  /** Option or state problems, for codes I2C_MODEL_BAD_OPTIONS and I2C_MODEL_BAD_STATE (else empty). */
  readonly issues: readonly OptionIssue[];

  constructor(
    code: ModelErrorCode,
    message: string,
    options: { cause?: unknown; issues?: readonly OptionIssue[] } = {},
  ) {
    super(code, message, options.cause === undefined ? undefined : { cause: options.cause });
    this.issues = options.issues ?? [];
  }
}
