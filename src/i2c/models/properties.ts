/**
 * DeviceProperty builders shared by the models: parse the operator's text, validate it and throw
 * ModelError "I2C_MODEL_BAD_VALUE" with what was expected. Must not know about any particular chip.
 * @module
 */

import type { DeviceProperty } from "../model.js";
import { MODEL_ERROR_CODES, ModelError } from "./model-error.js";
import { parseInteger } from "./options.js";

function badValue(text: string, expected: string): ModelError {
  return new ModelError(
    MODEL_ERROR_CODES.badValue,
    `expected ${expected}, got ${JSON.stringify(text)}`,
  );
}

/** A number property; `set` takes decimal text (e.g. "-25.5"), refused outside [min, max]. */
export function numberProperty(
  description: string,
  get: () => number,
  set?: (value: number) => void,
  range: { min: number; max: number } = { min: -Infinity, max: Infinity },
): DeviceProperty {
  return {
    description,
    get,
    ...(set && {
      set(text: string) {
        const value = text.trim() === "" ? Number.NaN : Number(text);
        if (!Number.isFinite(value) || value < range.min || value > range.max) {
          const bounds = Number.isFinite(range.min) ? ` from ${range.min} to ${range.max}` : "";
          throw badValue(text, `a number${bounds}`);
        }
        set(value);
      },
    }),
  };
}

/** An integer property; `set` takes decimal or 0x-hex text, refused outside [min, max]. */
export function integerProperty(
  description: string,
  get: () => number,
  set: (value: number) => void,
  range: { min: number; max: number },
): DeviceProperty {
  return {
    description,
    get,
    set(text: string) {
      const value = parseInteger(text);
      if (value === null || value < range.min || value > range.max) {
        throw badValue(text, `an integer from ${range.min} to ${range.max}`);
      }
      set(value);
    },
  };
}

/** A boolean property; `set` takes "true"/"false" (also "1"/"0", "on"/"off"). */
export function booleanProperty(
  description: string,
  get: () => boolean,
  set: (value: boolean) => void,
): DeviceProperty {
  return {
    description,
    get,
    set(text: string) {
      const t = text.trim().toLowerCase();
      if (t === "true" || t === "1" || t === "on") set(true);
      else if (t === "false" || t === "0" || t === "off") set(false);
      else throw badValue(text, "true or false");
    },
  };
}
