/**
 * Which tests prove each built-in model: its unit test (registers the driver relies on, through
 * ModelBench) and the guest tests in which its upstream Linux driver binds to it. README's model
 * table shows them ("Proven by", rendered by scripts/man.mjs); test/docs.test.ts checks that every
 * test named here exists and configures the model, so a test renamed, removed or no longer using
 * the model fails there. Data only.
 * @module
 */

import type { ModelProof } from "./model-table.js";

const unit = (name: string): ModelProof => ({ file: `src/i2c/models/${name}.test.ts` });
const driverModels = (test: string): ModelProof => ({
  file: "test/e2e/driver-models.test.ts",
  test,
});
const drivers = (test: string): ModelProof => ({ file: "test/e2e/drivers.test.ts", test });

const SENSORS = driverModels("hwmon and iio sensors");
const CLOCKS_AND_PINS = driverModels("rtc and gpio");
const FAULTS = driverModels("faults");

const EEPROMS = [
  "24c01",
  "24c04",
  "24c08",
  "24c16",
  "24c32",
  "24c64",
  "24c128",
  "24c256",
  "24c512",
];

/** Each built-in model's proofs, unit test first. */
export const MODEL_PROOFS: Readonly<Record<string, readonly ModelProof[]>> = {
  ...Object.fromEntries(EEPROMS.map((name) => [name, [unit("eeprom"), SENSORS]])),
  "24c02": [unit("eeprom"), drivers("at24 binds"), FAULTS],
  lm75: [unit("lm75"), drivers("lm75 binds"), FAULTS],
  lm75a: [unit("lm75"), FAULTS],
  tmp75: [unit("lm75"), SENSORS],
  tmp275: [unit("lm75"), SENSORS],
  tmp102: [unit("tmp102"), SENSORS],
  ds1307: [unit("ds1307"), drivers("rtc-ds1307 binds")],
  ds3231: [unit("ds3231"), CLOCKS_AND_PINS, FAULTS],
  pcf8563: [unit("pcf8563"), CLOCKS_AND_PINS],
  pca9555: [unit("pca953x"), CLOCKS_AND_PINS],
  tca6416: [unit("pca953x"), CLOCKS_AND_PINS],
  pca9554: [unit("pca953x"), CLOCKS_AND_PINS],
  tca6408: [unit("pca953x"), CLOCKS_AND_PINS],
  pcf8574: [unit("pcf857x"), CLOCKS_AND_PINS],
  pcf8574a: [unit("pcf857x"), CLOCKS_AND_PINS],
  pcf8575: [unit("pcf857x"), CLOCKS_AND_PINS],
  ina219: [unit("ina2xx"), SENSORS],
  ina220: [unit("ina2xx"), SENSORS],
  ina226: [unit("ina2xx"), SENSORS],
  sht3x: [unit("sht3x"), SENSORS],
  sts3x: [unit("sht3x"), SENSORS],
  bmp280: [unit("bmp280"), SENSORS],
  bme280: [unit("bmp280"), SENSORS],
  ads1015: [unit("ads1015"), SENSORS],
  ads1115: [unit("ads1015"), SENSORS],
  mcp4725: [unit("mcp4725"), SENSORS],
  pmbus: [unit("pmbus"), SENSORS],
  "register-file": [unit("register-file")],
};

/** The proofs of model `name` (none for a model not listed: the check then fails). */
export const modelProofs = (name: string): readonly ModelProof[] => MODEL_PROOFS[name] ?? [];
