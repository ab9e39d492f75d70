/**
 * The `inputs` option and property of GPIO expanders: the levels something outside drives onto the
 * pins, bit n = pin n, for a chip of 8 or 16 pins. Must not know about any particular chip.
 * @module
 */

import type { DeviceProperty } from "../model.js";
import { integerProperty } from "./properties.js";

/** Pins of a chip with 1 or 2 eight-pin ports. */
export const pinsOf = (ports: 1 | 2): 8 | 16 => (ports === 1 ? 8 : 16);

/** All pins high: nothing outside pulls any pin low. */
export const allPinsHigh = (pins: 8 | 16) => 2 ** pins - 1;

const hex = (value: number) => `0x${value.toString(16)}`;

/** The option schema of `inputs` for `pins` pins. */
export function inputsOption(pins: 8 | 16) {
  return {
    type: "integer",
    min: 0,
    max: allPinsHigh(pins),
    description: `levels driven onto the pins from outside, bit n = pin n (default ${hex(allPinsHigh(pins))}: nothing pulls low)`,
  } as const;
}

/** The `inputs` property: decimal or 0x-hex text, refused past the pins. */
export function inputsProperty(
  pins: 8 | 16,
  get: () => number,
  set: (levels: number) => void,
): DeviceProperty {
  const max = allPinsHigh(pins);
  return integerProperty(
    `levels driven onto the pins from outside, bit n = pin n (0..${hex(max)})`,
    get,
    set,
    { min: 0, max },
  );
}
