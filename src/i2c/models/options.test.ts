import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ModelError } from "./model-error.js";
import {
  checkOptions,
  type OptionSchema,
  parseHexBytes,
  parseInteger,
  validateOptions,
  validateState,
} from "./options.js";

const schema = {
  type: "object",
  required: ["mode"],
  properties: {
    mode: { type: "string", enum: ["fast", "slow"] },
    rate: { type: "integer", min: 1, max: 10 },
    gain: { type: "number" },
    name: { type: "string", pattern: /[a-z]+/, patternText: "lower-case letters" },
    on: { type: "boolean" },
    data: { type: "hex-bytes", maxLength: 3 },
    list: { type: "array", items: { type: "integer", min: 0 }, maxItems: 2 },
    nested: { type: "object", properties: { depth: { type: "integer" } } },
  },
} as const satisfies OptionSchema;

describe("validateOptions", () => {
  it("accepts valid options and normalises hex strings to bytes", () => {
    const o = validateOptions(
      schema,
      { mode: "fast", rate: 3, data: "0a 0B", list: [1], nested: { depth: 2 } },
      "chip",
    );
    assert.equal(o.mode, "fast");
    assert.deepEqual(o.data, Uint8Array.of(10, 11));
    assert.equal(o.nested?.depth, 2);
  });

  it("names each failing key path and what was expected", () => {
    const issues = checkOptions(schema, {
      rate: 11,
      gain: "x",
      name: "ABC",
      on: 1,
      data: "abc",
      list: [1, -1, 2],
      nested: { depth: 1.5, deep: true },
      extra: 1,
    });
    const byPath = Object.fromEntries(issues.map((i) => [i.path, `${i.expected} / ${i.found}`]));
    assert.deepEqual(byPath, {
      "options.mode": "a value / missing",
      "options.rate": "an integer from 1 to 10 / number 11",
      "options.gain": 'a number / string "x"',
      "options.name": 'a string that is lower-case letters / string "ABC"',
      "options.on": "true or false / number 1",
      "options.data": 'bytes as a hex string like "00ff10" (at most 3) / string "abc"',
      "options.list": "an array of at most 2 items / an array of 3",
      "options.nested.depth": "an integer / number 1.5",
      "options.nested.deep": "no such option (known: depth) / boolean true",
      "options.extra":
        "no such option (known: mode, rate, gain, name, on, data, list, nested) / number 1",
    });
  });

  it("throws ModelError I2C_MODEL_BAD_OPTIONS with the subject and issues", () => {
    assert.throws(
      () => validateOptions(schema, { mode: "medium" }, "chip"),
      (e: unknown) =>
        e instanceof ModelError &&
        e.code === "I2C_MODEL_BAD_OPTIONS" &&
        e.message === 'chip: options.mode: expected one of "fast", "slow", found string "medium"' &&
        e.issues.length === 1,
    );
    assert.throws(() => validateOptions(schema, [], "chip"), /expected an object/);
  });

  it("treats missing options as an empty object", () => {
    assert.deepEqual(validateOptions({ type: "object", properties: {} }, undefined, "chip"), {});
  });
});

describe("validateState", () => {
  const state = {
    type: "object",
    required: ["pointer"],
    properties: { pointer: { type: "integer", min: 0, max: 7 }, memory: { type: "hex-bytes" } },
  } as const;

  it("normalises a state the schema takes (hex text becomes bytes)", () => {
    assert.deepEqual(validateState(state, { pointer: 3, memory: "0a0b" }, "chip"), {
      pointer: 3,
      memory: Uint8Array.of(0x0a, 0x0b),
    });
  });

  it("throws ModelError I2C_MODEL_BAD_STATE naming state paths; a missing state is refused", () => {
    assert.throws(
      () => validateState(state, { pointer: 8 }, "chip"),
      (e: unknown) =>
        e instanceof ModelError &&
        e.code === "I2C_MODEL_BAD_STATE" &&
        e.message === "chip: state.pointer: expected an integer from 0 to 7, found number 8" &&
        e.issues.length === 1,
    );
    assert.throws(() => validateState(state, undefined, "chip"), /state: expected an object/);
    assert.throws(() => validateState(state, {}, "chip"), /state\.pointer: expected a value/);
  });
});

describe("parseHexBytes / parseInteger", () => {
  it("parses hex in the accepted spellings and refuses the rest", () => {
    assert.deepEqual(parseHexBytes("0x00ff10"), Uint8Array.of(0, 0xff, 0x10));
    assert.deepEqual(parseHexBytes("00:ff 10"), Uint8Array.of(0, 0xff, 0x10));
    assert.deepEqual(parseHexBytes(""), new Uint8Array(0));
    assert.equal(parseHexBytes("0f0"), null);
    assert.equal(parseHexBytes("zz"), null);
  });

  it("parses decimal, hex and binary integers", () => {
    assert.equal(parseInteger("0x1f"), 31);
    assert.equal(parseInteger("-12"), -12);
    assert.equal(parseInteger("0b101"), 5);
    assert.equal(parseInteger("1.5"), null);
    assert.equal(parseInteger(""), null);
  });
});
