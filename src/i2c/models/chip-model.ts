/**
 * The ModelDefinition around one chip object that answers on one address and keeps its own state:
 * what most built-in models are. Must not know about any particular chip.
 * @module
 */

import type { DeviceProperty, I2cDeviceModel, ModelDefinition, SimDevice } from "../model.js";
import { type ObjectSchema, type OptionValue, validateOptions } from "./options.js";

/** What a chip gives its model: its state as plain data and back. */
export interface StatefulChip {
  saveState(): Record<string, unknown>;
  /** `name` is the model's, for the messages. */
  restoreState(state: unknown, name: string): void;
}

/**
 * A ModelDefinition whose `create` validates the options, builds the chip, and gives its target,
 * its properties and its state.
 */
export function chipModel<const S extends ObjectSchema, C extends StatefulChip>(spec: {
  readonly name: string;
  readonly description: string;
  readonly linuxDriver: string;
  readonly options: S;
  create(options: OptionValue<S>): C;
  target(chip: C): I2cDeviceModel;
  properties(chip: C): Record<string, DeviceProperty>;
}): ModelDefinition {
  const { name } = spec;
  return {
    name,
    description: spec.description,
    linuxDriver: spec.linuxDriver,
    options: spec.options,
    create(options): SimDevice {
      const chip = spec.create(validateOptions(spec.options, options, name));
      return {
        targets: [spec.target(chip)],
        properties: spec.properties(chip),
        saveState: () => chip.saveState(),
        restoreState: (state) => chip.restoreState(state, name),
      };
    },
  };
}
