/**
 * What GPIO expanders share: the `inputs` option and property (the levels something outside drives
 * onto the pins, bit n = pin n, for a chip of 8 or 16 pins), the saved pin word and the
 * ModelDefinition around a chip. Must not know about any particular chip.
 * @module
 */

import type { DeviceProperty, I2cDeviceModel, ModelDefinition } from "../model.js";
import { chipModel, type StatefulChip } from "./chip-model.js";
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

/** The state schema of a value with one bit a pin, for a chip of `ports` ports. */
export const pinWordState = (ports: 1 | 2) =>
  ({ type: "integer", min: 0, max: allPinsHigh(pinsOf(ports)) }) as const;

/** What an expander chip gives its model: the levels driven onto its pins, and its state. */
export interface ExpanderChip extends StatefulChip {
  inputs: number;
}

/**
 * The ModelDefinition of an expander with `ports` eight-pin ports: the `inputs` option (all pins
 * high by default) and property ahead of the chip's own properties.
 */
export function expanderModel<C extends ExpanderChip>(spec: {
  readonly name: string;
  readonly ports: 1 | 2;
  readonly description: string;
  readonly linuxDriver: string;
  create(ports: 1 | 2, inputs: number): C;
  target(chip: C): I2cDeviceModel;
  properties(chip: C): Record<string, DeviceProperty>;
}): ModelDefinition {
  const { ports } = spec;
  const pins = pinsOf(ports);
  return chipModel({
    name: spec.name,
    description: spec.description,
    linuxDriver: spec.linuxDriver,
    options: {
      type: "object",
      properties: {
        inputs: inputsOption(pins),
      },
    },
    create: (o) => spec.create(ports, o.inputs ?? allPinsHigh(pins)),
    target: spec.target,
    properties: (chip) => ({
      inputs: inputsProperty(
        pins,
        () => chip.inputs,
        (v) => {
          chip.inputs = v;
        },
      ),
      ...spec.properties(chip),
    }),
  });
}
