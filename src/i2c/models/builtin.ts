/**
 * The list of built-in models (the registry in src/i2c/model.ts serves it by name).
 * Must not hold model logic.
 * @module
 */

import type { ModelDefinition } from "../model.js";
import { ads1015Models } from "./ads1015.js";
import { bmp280Models } from "./bmp280.js";
import { ds1307Model } from "./ds1307.js";
import { ds3231Model } from "./ds3231.js";
import { eepromModels } from "./eeprom.js";
import { ina2xxModels } from "./ina2xx.js";
import { lm75Models } from "./lm75.js";
import { mcp4725Model } from "./mcp4725.js";
import { pca953xModels } from "./pca953x.js";
import { pcf857xModels } from "./pcf857x.js";
import { pcf8563Model } from "./pcf8563.js";
import { pmbusModel } from "./pmbus.js";
import { registerFileModel } from "./register-file.js";
import { sht3xModels } from "./sht3x.js";
import { tmp102Model } from "./tmp102.js";

/** Every built-in ModelDefinition, in the order `list` shows them. */
export const builtinModels: readonly ModelDefinition[] = [
  ...eepromModels,
  ...lm75Models,
  tmp102Model(),
  ds1307Model(),
  ds3231Model(),
  pcf8563Model(),
  ...pca953xModels,
  ...pcf857xModels,
  ...ina2xxModels,
  ...sht3xModels(),
  ...bmp280Models,
  ...ads1015Models(),
  mcp4725Model(),
  pmbusModel,
  registerFileModel,
];
