/**
 * The list of built-in models (the registry in src/i2c/model.ts serves it by name).
 * Must not hold model logic.
 * @module
 */

import type { ModelDefinition } from "../model.js";
import { eepromModels } from "./eeprom.js";

/** Every built-in ModelDefinition, in the order `list` shows them. */
export const builtinModels: readonly ModelDefinition[] = [...eepromModels];
