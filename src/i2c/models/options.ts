/**
 * OptionSchema: the small typed schema that describes a model's options (and its saved state), and
 * the validator that checks (and normalises) options or a state against it with precise, path-naming
 * errors. Every model uses it; no model hand-writes option or state checks. Must not know about any
 * particular model, files or the CLI.
 * @module
 */

import { MODEL_ERROR_CODES, ModelError, type OptionIssue } from "./model-error.js";

/** A number; `integer` also refuses fractions. Bounds are inclusive. */
export interface NumberSchema {
  readonly type: "number" | "integer";
  readonly min?: number;
  readonly max?: number;
  readonly description?: string;
}
/** A string, optionally one of `enum` or matching `pattern` (whole string). */
export interface StringSchema {
  readonly type: "string";
  readonly enum?: readonly string[];
  readonly pattern?: RegExp;
  /** Words for the error message when `pattern` does not match ("an ISO 8601 date"). */
  readonly patternText?: string;
  readonly description?: string;
}
export interface BooleanSchema {
  readonly type: "boolean";
  readonly description?: string;
}
/**
 * Bytes, given as a Uint8Array or a hex string ("00ff10", "00 ff 10", "0x00ff10"); validates to a
 * Uint8Array. (`{"file": path}` in a config file is resolved into bytes by the configuration layer.)
 */
export interface HexBytesSchema {
  readonly type: "hex-bytes";
  readonly maxLength?: number;
  readonly description?: string;
}
/**
 * An object. Keys in `properties` are known; other keys are refused unless `additional` gives their
 * schema (then `keyPattern`, if set, restricts their names, e.g. register addresses).
 */
export interface ObjectSchema {
  readonly type: "object";
  readonly properties?: Readonly<Record<string, OptionSchema>>;
  readonly required?: readonly string[];
  readonly additional?: OptionSchema;
  readonly keyPattern?: RegExp;
  readonly keyPatternText?: string;
  readonly description?: string;
}
export interface ArraySchema {
  readonly type: "array";
  readonly items: OptionSchema;
  readonly maxItems?: number;
  readonly description?: string;
}

/**
 * A model's option schema.
 *
 * @example
 * ```ts
 * const schema = {
 *   type: "object",
 *   properties: {
 *     temperature: { type: "number", min: -55, max: 125 },
 *     backing: { type: "string" },
 *   },
 * } as const satisfies OptionSchema;
 * const options = validateOptions(schema, { temperature: 21.5 }, "lm75"); // typed: { temperature?: number; ... }
 * ```
 */
export type OptionSchema =
  | NumberSchema
  | StringSchema
  | BooleanSchema
  | HexBytesSchema
  | ObjectSchema
  | ArraySchema;

/** The TypeScript type a schema validates to (object keys are optional; models apply defaults). */
export type OptionValue<S> = S extends NumberSchema
  ? number
  : S extends StringSchema
    ? S extends { readonly enum: readonly (infer E)[] }
      ? E
      : string
    : S extends BooleanSchema
      ? boolean
      : S extends HexBytesSchema
        ? Uint8Array
        : S extends ArraySchema
          ? OptionValue<S["items"]>[]
          : S extends ObjectSchema
            ? ObjectValue<S>
            : never;

type ObjectValue<S extends ObjectSchema> = (S extends {
  readonly properties: infer P extends Readonly<Record<string, OptionSchema>>;
}
  ? { [K in keyof P]?: OptionValue<P[K]> }
  : unknown) &
  (S extends { readonly additional: infer A extends OptionSchema }
    ? Record<string, OptionValue<A>>
    : unknown);

function describeFound(value: unknown): string {
  if (value === undefined) return "missing";
  if (value === null) return "null";
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === "string") {
    const shown = value.length > 40 ? `${value.slice(0, 40)}...` : value;
    return `string ${JSON.stringify(shown)}`;
  }
  if (typeof value === "object") return "an object";
  return `${typeof value} ${String(value)}`;
}

function rangeText(schema: NumberSchema): string {
  const what = schema.type === "integer" ? "an integer" : "a number";
  const { min, max } = schema;
  if (min !== undefined && max !== undefined) return `${what} from ${min} to ${max}`;
  if (min !== undefined) return `${what} >= ${min}`;
  if (max !== undefined) return `${what} <= ${max}`;
  return what;
}

const HEX_TEXT = /^(?:0x)?((?:[0-9a-fA-F]{2}[\s:]*)*)$/;

/** Parses "00ff10", "00 ff 10", "00:ff:10" or "0x00ff10"; null when it is not hex bytes. */
export function parseHexBytes(text: string): Uint8Array | null {
  const match = HEX_TEXT.exec(text.trim());
  const digits = match?.[1]?.replace(/[\s:]/g, "");
  if (digits === undefined) return null;
  const bytes = new Uint8Array(digits.length / 2);
  for (let i = 0; i < bytes.length; i++)
    bytes[i] = Number.parseInt(digits.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" &&
  value !== null &&
  !Array.isArray(value) &&
  !(value instanceof Uint8Array);

/** Walks one value; pushes issues; returns the normalised value (undefined when invalid). */
function check(schema: OptionSchema, value: unknown, path: string, issues: OptionIssue[]): unknown {
  const fail = (expected: string): undefined => {
    issues.push({ path, expected, found: describeFound(value) });
    return undefined;
  };
  switch (schema.type) {
    case "number":
    case "integer": {
      const ok =
        typeof value === "number" &&
        Number.isFinite(value) &&
        (schema.type === "number" || Number.isInteger(value)) &&
        (schema.min === undefined || value >= schema.min) &&
        (schema.max === undefined || value <= schema.max);
      return ok ? value : fail(rangeText(schema));
    }
    case "string": {
      if (typeof value !== "string") return fail(expectedString(schema));
      if (schema.enum && !schema.enum.includes(value)) return fail(expectedString(schema));
      if (schema.pattern && !wholeMatch(schema.pattern, value)) return fail(expectedString(schema));
      return value;
    }
    case "boolean":
      return typeof value === "boolean" ? value : fail("true or false");
    case "hex-bytes": {
      const limit = schema.maxLength === undefined ? "" : ` (at most ${schema.maxLength})`;
      const expected = `bytes as a hex string like "00ff10"${limit}`;
      const bytes =
        value instanceof Uint8Array
          ? value
          : typeof value === "string"
            ? parseHexBytes(value)
            : null;
      if (!bytes) return fail(expected);
      if (schema.maxLength !== undefined && bytes.length > schema.maxLength) return fail(expected);
      return bytes;
    }
    case "array": {
      const limit = schema.maxItems === undefined ? "" : ` of at most ${schema.maxItems} items`;
      if (!Array.isArray(value)) return fail(`an array${limit}`);
      if (schema.maxItems !== undefined && value.length > schema.maxItems) {
        return fail(`an array${limit}`);
      }
      return value.map((item, i) => check(schema.items, item, `${path}[${i}]`, issues));
    }
    case "object":
      return checkObject(schema, value, path, issues, fail);
  }
}

function wholeMatch(pattern: RegExp, value: string): boolean {
  const match = new RegExp(pattern.source, pattern.flags.replace("g", "")).exec(value);
  return match !== null && match.index === 0 && match[0].length === value.length;
}

function expectedString(schema: StringSchema): string {
  if (schema.enum) return `one of ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}`;
  if (schema.pattern)
    return `a string that is ${schema.patternText ?? `matching ${schema.pattern}`}`;
  return "a string";
}

function checkObject(
  schema: ObjectSchema,
  value: unknown,
  path: string,
  issues: OptionIssue[],
  fail: (expected: string) => undefined,
): unknown {
  if (!isPlainObject(value)) return fail("an object");
  const known = schema.properties ?? {};
  const out: Record<string, unknown> = {};
  for (const key of schema.required ?? []) {
    if (value[key] === undefined)
      issues.push({ path: `${path}.${key}`, expected: "a value", found: "missing" });
  }
  for (const [key, item] of Object.entries(value)) {
    const itemPath = `${path}.${key}`;
    const itemSchema = Object.hasOwn(known, key) ? known[key] : undefined;
    if (itemSchema) {
      if (item !== undefined) out[key] = check(itemSchema, item, itemPath, issues);
      continue;
    }
    if (!schema.additional) {
      const names = Object.keys(known);
      issues.push({
        path: itemPath,
        expected: names.length ? `no such option (known: ${names.join(", ")})` : "no options",
        found: describeFound(item),
      });
      continue;
    }
    if (schema.keyPattern && !wholeMatch(schema.keyPattern, key)) {
      issues.push({
        path: itemPath,
        expected: `a key that is ${schema.keyPatternText ?? `matching ${schema.keyPattern}`}`,
        found: `key ${JSON.stringify(key)}`,
      });
      continue;
    }
    out[key] = check(schema.additional, item, itemPath, issues);
  }
  return out;
}

/** Checks `value` against `schema`; returns every issue found (empty = valid). */
export function checkOptions(
  schema: OptionSchema,
  value: unknown,
  path = "options",
): OptionIssue[] {
  const issues: OptionIssue[] = [];
  check(schema, value, path, issues);
  return issues;
}

/**
 * Validates and normalises options (hex strings become Uint8Array). Throws ModelError with code
 * "I2C_MODEL_BAD_OPTIONS", a message listing each issue ("lm75: options.temperature: expected a
 * number from -55 to 125, found string \"hot\""), and `issues`.
 */
export function validateOptions<S extends OptionSchema>(
  schema: S,
  value: unknown,
  subject: string,
  path = "options",
): OptionValue<S> {
  return validated(
    schema,
    value ?? (schema.type === "object" ? {} : value),
    subject,
    path,
    "badOptions",
  );
}

/**
 * Validates and normalises a saved chip state (SimDevice.restoreState) with the same schemas as
 * options, so a model checks all of it before it changes anything. Throws ModelError with code
 * "I2C_MODEL_BAD_STATE", a message listing each issue ("24c02: state.pointer: expected an integer
 * from 0 to 255, found number 300"), and `issues`. A missing state is refused, not defaulted.
 *
 * @example
 * ```ts
 * const schema = {
 *   type: "object",
 *   required: ["latch"],
 *   properties: { latch: { type: "integer", min: 0, max: 255 } },
 * } as const;
 * restoreState(state: unknown) {
 *   const { latch } = validateState(schema, state, "pcf8574");
 *   chip.latch = latch ?? 0xff;
 * }
 * ```
 */
export function validateState<S extends OptionSchema>(
  schema: S,
  value: unknown,
  subject: string,
): OptionValue<S> {
  return validated(schema, value, subject, "state", "badState");
}

function validated<S extends OptionSchema>(
  schema: S,
  value: unknown,
  subject: string,
  path: string,
  code: "badOptions" | "badState",
): OptionValue<S> {
  const issues: OptionIssue[] = [];
  const normalised = check(schema, value, path, issues);
  if (issues.length > 0) {
    const lines = issues.map((i) => `${i.path}: expected ${i.expected}, found ${i.found}`);
    throw new ModelError(MODEL_ERROR_CODES[code], `${subject}: ${lines.join("; ")}`, { issues });
  }
  return normalised as OptionValue<S>;
}

/** The schema of a saved byte register. */
export const byteState = { type: "integer", min: 0, max: 0xff } as const;

/** Parses an integer written as decimal, hex ("0x10") or binary ("0b101"); null when it is not one. */
export function parseInteger(text: string): number | null {
  const t = text.trim();
  if (!/^-?(?:0x[0-9a-fA-F]+|0b[01]+|0o[0-7]+|\d+)$/.test(t)) return null;
  const negative = t.startsWith("-");
  const n = Number(negative ? t.slice(1) : t);
  return Number.isSafeInteger(n) ? (negative ? -n : n) : null;
}
