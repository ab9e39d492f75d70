/**
 * ConfigError: the device configuration (the -l list, the --config file, a user model module) cannot
 * be run. Every message names where the problem is (file and key path, or -l entry), what was expected
 * and what was found, so a user can fix it without reading code. Must not print or exit: main.ts does.
 * @module
 */

import { CodedError } from "../errors.js";

export type ConfigErrorCode =
  /** The config file cannot be read. */
  | "CONFIG_UNREADABLE"
  /**
   * The config file, an `initial.file` or a model module, or a directory above it, could be changed
   * by someone other than root and the daemon's user (or is a link such a directory does not hold).
   */
  | "CONFIG_UNSAFE_PATH"
  /** The config file is not JSON. */
  | "CONFIG_BAD_JSON"
  /** A key is missing, unknown or holds the wrong kind of value. */
  | "CONFIG_INVALID"
  /** A bus name does not match exactly one host adapter. */
  | "CONFIG_ADAPTER_NOT_FOUND"
  /** Two devices claim one guest address. */
  | "CONFIG_DUPLICATE_ADDRESS"
  /** A device is given to two guests without "shared": true in both, or shared ones differ. */
  | "CONFIG_SHARED_CONFLICT"
  /** A device's addresses run past 0x7f. */
  | "CONFIG_ADDRESS_RANGE"
  /** No built-in model has that name. */
  | "CONFIG_UNKNOWN_MODEL"
  /** The model's option schema refused the options. */
  | "CONFIG_BAD_OPTIONS"
  /** The model refused to create the device (e.g. a backing file of the wrong size). */
  | "CONFIG_DEVICE_FAILED"
  /** A user model module cannot be imported. */
  | "MODULE_LOAD_FAILED"
  /** A user model module's default export is not a ModelDefinition. */
  | "MODULE_BAD_EXPORT";

export class ConfigError extends CodedError<ConfigErrorCode> {}

/** A short description of a JSON-ish value for "found ..." in messages. */
export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array of ${value.length}`;
  switch (typeof value) {
    case "string": {
      const text = JSON.stringify(value);
      return text.length > 42 ? `${text.slice(0, 40)}..." (a string)` : `${text} (a string)`;
    }
    case "number":
    case "boolean":
      return `${String(value)} (a ${typeof value})`;
    case "undefined":
      return "nothing";
    case "object":
      return "an object";
    default:
      return `a ${typeof value}`;
  }
}

/** The message of any thrown value. */
export function reasonOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
