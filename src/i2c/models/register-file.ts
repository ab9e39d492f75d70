/**
 * `register-file`: a generic register chip described entirely by options (address width, register
 * size and byte order, initial values, read-only registers), for the many simple chips that are
 * just registers. Owns only the option mapping; the byte protocol is RegisterFile's.
 * Must not know about buses, virtio or the configuration format.
 * @module
 */

import type { ModelDefinition, SimDevice } from "../model.js";
import {
  checkSavedMemory,
  DirtyRange,
  memoryStateSchema,
  openModelStore,
  savedMemory,
  storeMemory,
} from "./memory.js";
import { MODEL_ERROR_CODES, ModelError } from "./model-error.js";
import { validateOptions, validateState } from "./options.js";
import { RegisterFile } from "./registers.js";

const ADDRESS_KEY = /(0x[0-9a-fA-F]+|\d+)/;
const MAX_REGISTERS = 0x10000;

const schema = {
  type: "object",
  properties: {
    addressWidth: {
      type: "integer",
      min: 1,
      max: 2,
      description: "register address bytes (default 1)",
    },
    registerSize: {
      type: "integer",
      min: 1,
      max: 4,
      description: "bytes per register: 1, 2 or 4 (default 1)",
    },
    littleEndian: {
      type: "boolean",
      description: "register bytes least significant first (default false)",
    },
    size: {
      type: "integer",
      min: 1,
      max: MAX_REGISTERS,
      description: "number of registers (default 256, or 65536 with 2 address bytes)",
    },
    default: {
      type: "integer",
      min: 0,
      max: 0xffffffff,
      description: "value of registers not listed",
    },
    registers: {
      type: "object",
      keyPattern: ADDRESS_KEY,
      keyPatternText: 'a register address like "0x10" or "16"',
      additional: { type: "integer", min: 0, max: 0xffffffff },
      description: "initial values by register address",
    },
    readOnly: {
      type: "array",
      items: { type: "integer", min: 0, max: MAX_REGISTERS - 1 },
      description: "register addresses whose writes are ignored",
    },
    backing: {
      type: "string",
      description: "file holding the register image (size × registerSize bytes)",
    },
  },
} as const;

function badOption(path: string, message: string): ModelError {
  return new ModelError(
    MODEL_ERROR_CODES.badOptions,
    `register-file: options.${path}: ${message}`,
    {
      issues: [{ path: `options.${path}`, expected: message, found: "" }],
    },
  );
}

/** Writes `value` as register `reg` (`width` bytes, in the chosen byte order) into `image`. */
function putRegister(
  image: Uint8Array,
  reg: number,
  width: number,
  value: number,
  littleEndian: boolean,
): void {
  for (let i = 0; i < width; i++) {
    const shift = littleEndian ? i : width - 1 - i;
    image[reg * width + i] = Math.floor(value / 2 ** (8 * shift)) & 0xff;
  }
}

function getRegister(image: Uint8Array, reg: number, width: number, littleEndian: boolean): number {
  let value = 0;
  for (let i = 0; i < width; i++) {
    const shift = littleEndian ? i : width - 1 - i;
    value += (image[reg * width + i] ?? 0) * 2 ** (8 * shift);
  }
  return value;
}

/**
 * The generic register chip. Its memory is the register image: register r occupies bytes
 * [r × registerSize, (r+1) × registerSize) in the order they go on the wire.
 *
 * @example A 16-bit register sensor with an ID at 0x0f:
 * ```json
 * { "address": "0x40", "model": "register-file",
 *   "options": { "registerSize": 2, "size": 16, "registers": { "0x0f": 4660 }, "readOnly": [15] } }
 * ```
 */
export const registerFileModel: ModelDefinition = {
  name: "register-file",
  description:
    "generic register chip: address width, register size, initial values and read-only registers from options",
  options: schema,
  create(options, context): SimDevice {
    const o = validateOptions(schema, options, "register-file");
    const addressBytes = o.addressWidth === 2 ? 2 : 1;
    const width = o.registerSize ?? 1;
    if (width === 3) throw badOption("registerSize", "1, 2 or 4 (found 3)");
    const count = o.size ?? (addressBytes === 2 ? MAX_REGISTERS : 0x100);
    if (count > 2 ** (8 * addressBytes)) {
      throw badOption(
        "size",
        `at most ${2 ** (8 * addressBytes)} registers with ${addressBytes} address byte(s) (found ${count})`,
      );
    }
    const littleEndian = o.littleEndian ?? false;
    const maxValue = 2 ** (8 * width) - 1;
    const checkValue = (path: string, value: number) => {
      if (value > maxValue)
        throw badOption(
          path,
          `a value that fits ${width} byte(s), at most ${maxValue} (found ${value})`,
        );
    };
    const image = new Uint8Array(count * width);
    const fill = o.default ?? 0;
    checkValue("default", fill);
    for (let reg = 0; reg < count; reg++) putRegister(image, reg, width, fill, littleEndian);
    for (const [key, value] of Object.entries(o.registers ?? {})) {
      const reg = Number(key);
      if (reg >= count) throw badOption(`registers.${key}`, `a register below size ${count}`);
      checkValue(`registers.${key}`, value);
      putRegister(image, reg, width, value, littleEndian);
    }
    const readOnly = new Set<number>();
    (o.readOnly ?? []).forEach((reg, i) => {
      if (reg >= count)
        throw badOption(`readOnly[${i}]`, `a register below size ${count} (found ${reg})`);
      readOnly.add(reg);
    });
    const store = openModelStore(context, o.backing, image.length, image);
    const backed = o.backing !== undefined;
    // What a successor needs (SimDevice.saveState): the pointer, and the image unless a file holds it.
    const stateSchema = {
      type: "object",
      required: ["pointer"],
      properties: {
        pointer: { type: "integer", min: 0, max: count - 1 },
        memory: memoryStateSchema(image.length),
      },
    } as const;
    const dirty = new DirtyRange();
    const target = new RegisterFile(
      { count, addressBytes, width: width as 1 | 2 | 4, littleEndian },
      {
        read: (reg) => getRegister(store.bytes, reg, width, littleEndian),
        write: (reg, value) => {
          if (readOnly.has(reg)) return;
          putRegister(store.bytes, reg, width, value, littleEndian);
          dirty.mark(reg * width);
          dirty.mark(reg * width + width - 1);
        },
        stop: () => dirty.commit(store), // one write-through per transfer
      },
    );
    return {
      targets: [target],
      memory: storeMemory(store),
      properties: {
        pointer: { description: "current register pointer", get: () => target.pointer.value },
      },
      close: () => store.close(),
      saveState: () => ({ pointer: target.pointer.value, ...savedMemory(store, backed) }),
      restoreState(state) {
        const saved = validateState(stateSchema, state, "register-file");
        const putMemory = checkSavedMemory(saved.memory, store, backed, "register-file");
        putMemory();
        target.pointer.value = saved.pointer ?? 0;
      },
    };
  },
};
