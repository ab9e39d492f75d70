/**
 * Example user device model: a PCF8574-style 8-bit quasi-bidirectional I/O expander, written only
 * against the package's public API (src/index.ts; installed users import "vhost-device-i2c").
 * The chip has no registers: a written byte sets the output latch, a read returns the pin levels.
 * A pin whose latch bit is 1 is weakly pulled up and reads what drives it from outside (the
 * `inputs` property, settable at run time on the control socket); a latch bit of 0 pulls the pin low.
 * Both survive a handover to a successor daemon (saveState/restoreState).
 * Must not reach into the daemon's internals. (The daemon's own `pcf8574`, `pcf8574a` and `pcf8575`
 * models, src/i2c/models/pcf857x.ts, add the 16-bit chip and the INT line.)
 * @module
 */

import {
  defineModel,
  type I2cDeviceModel,
  ModelError,
  parseInteger,
  validateState,
} from "../src/index.js";

/** What the outside world drives onto the pins; also the power-on latch (all pins high). */
const ALL_HIGH = 0xff;

class Pcf8574 implements I2cDeviceModel {
  latch = ALL_HIGH;
  inputs: number;

  constructor(inputs: number) {
    this.inputs = inputs;
  }

  /** Pin levels: a pin is high only when neither the latch nor the outside pulls it low. */
  get pins(): number {
    return this.latch & this.inputs;
  }

  start(_read: boolean): boolean {
    return true;
  }

  write(data: Uint8Array): boolean {
    // Every byte goes to the latch in turn; the last one stays.
    const last = data.at(-1);
    if (last !== undefined) this.latch = last;
    return true;
  }

  read(into: Uint8Array): void {
    into.fill(this.pins);
  }

  stop(): void {}
}

function parseByte(text: string): number {
  const value = parseInteger(text);
  if (value === null || value < 0 || value > 0xff) {
    throw new ModelError(
      "I2C_MODEL_BAD_VALUE",
      `expected a byte 0..255 (or 0x00..0xff), got "${text}"`,
    );
  }
  return value;
}

/** What the guest and the operator change: all a successor daemon needs to go on. */
const stateSchema = {
  type: "object",
  required: ["latch", "inputs"],
  properties: {
    latch: { type: "integer", min: 0, max: 0xff },
    inputs: { type: "integer", min: 0, max: 0xff },
  },
} as const;

export default defineModel({
  name: "pcf8574",
  description: "8-bit I/O expander: write sets the output latch, read returns the pin levels",
  linuxDriver: "gpio gpio-pcf857x",
  options: {
    type: "object",
    properties: {
      inputs: {
        type: "integer",
        min: 0,
        max: 0xff,
        description: "levels driven onto the pins from outside (default 0xff: nothing pulls low)",
      },
    },
  },
  create(options) {
    const chip = new Pcf8574(options.inputs ?? ALL_HIGH);
    return {
      targets: [chip],
      properties: {
        inputs: {
          description: "levels driven onto the pins from outside (0..255)",
          get: () => chip.inputs,
          set: (value) => {
            chip.inputs = parseByte(value);
          },
        },
        latch: { description: "output latch last written by the guest", get: () => chip.latch },
        pins: { description: "pin levels the guest reads", get: () => chip.pins },
      },
      saveState: () => ({ latch: chip.latch, inputs: chip.inputs }),
      restoreState(state) {
        // Checked whole before anything changes: a refused state leaves the chip as created.
        const saved = validateState(stateSchema, state, "pcf8574");
        chip.latch = saved.latch ?? ALL_HIGH;
        chip.inputs = saved.inputs ?? ALL_HIGH;
      },
    };
  },
});
