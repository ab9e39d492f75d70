/**
 * Control-socket protocol: parses one command line (text, or a JSON object) into a Command and formats
 * one reply line. Pure: no sockets, no devices, no logging (server.ts executes commands, client.ts
 * sends them). Must not: let a reply span lines, or accept numbers it cannot represent exactly.
 * @module
 */

import { CodedError } from "../errors.js";
import { FaultError, type FaultSpec, parseFaultWords } from "../i2c/faults.js";

/** Longest accepted command line in bytes (without its newline); longer lines end the connection. */
export const MAX_LINE_BYTES = 64 * 1024;
/** Most bytes one `read` or `write` may move. */
export const MAX_DATA_BYTES = 4096;

/**
 * Which emulated device a command names: its base guest address, and optionally the guest (socket
 * index) that sees it, written `1:0x48`. Without the guest it must be the only device at `addr`.
 */
export interface DeviceRef {
  readonly addr: number;
  readonly guest?: number;
}

export type Command =
  | { readonly cmd: "help" }
  | { readonly cmd: "list" }
  | { readonly cmd: "stats" }
  | (DeviceRef & { readonly cmd: "get"; readonly property: string })
  | (DeviceRef & { readonly cmd: "set"; readonly property: string; readonly value: string })
  | (DeviceRef & { readonly cmd: "read"; readonly offset: number; readonly length: number })
  | (DeviceRef & { readonly cmd: "write"; readonly offset: number; readonly data: Uint8Array })
  /** Sets a fault on the device (for the guest given, else every guest that sees it), or clears them. */
  | (DeviceRef & { readonly cmd: "fault"; readonly fault: FaultSpec | "clear" })
  | { readonly cmd: "faults" };

export type CommandName = Command["cmd"];

/** Stable error codes on the wire (`error <code> <message>`). */
export type ControlErrorCode =
  | "EUSAGE" // the line is not a valid command
  | "ETOOLONG" // the line exceeds MAX_LINE_BYTES
  | "ENODEV" // no emulated device at that address (for that guest)
  | "EAMBIGUOUS" // several guests have their own device at that address: qualify it
  | "ENOPROP" // the device has no such property
  | "EREADONLY" // the property cannot be set
  | "ENOMEM" // the device has no memory
  | "ERANGE" // offset/length outside the device memory
  | "EINVAL" // the model refused the value
  | "EMODEL" // the model failed unexpectedly
  | "ENOSTATS" // this daemon keeps no transfer counters
  | "ETIMEDOUT"; // the devices (or counters) did not answer within the reply timeout

export class ControlError extends CodedError<ControlErrorCode> {}

/** What a command produced: a text payload, plus a structured value for JSON replies. */
export interface CommandResult {
  readonly text: string;
  readonly value: unknown;
}

export const USAGE: Readonly<Record<CommandName, string>> = {
  help: "help",
  list: "list",
  stats: "stats",
  get: "get <addr> <property>",
  set: "set <addr> <property> <value>",
  read: "read <addr> <offset> <length>",
  write: "write <addr> <offset> <hex>",
  fault: "fault <addr> <kind> [<key>=<value>...] | fault <addr> clear",
  faults: "faults",
};

export const HELP_TEXT = `commands: ${Object.values(USAGE).join("; ")} (numbers decimal or 0x hex; <addr> is a guest address, or <guest>:<address> such as 1:0x48 for the device guest 1 sees; read/write at most ${MAX_DATA_BYTES} bytes)`;

/** How the line was written: the reply uses the same form. */
export type LineFormat = "text" | "json";

export interface ParsedLine {
  readonly format: LineFormat;
  /** The command, or why the line is not one. */
  readonly command: Command | ControlError;
}

/** Decimal or 0x hex, non-negative, exactly representable; null otherwise. */
export function parseNumber(word: string): number | null {
  if (!/^(?:0x[0-9a-f]+|[0-9]+)$/i.test(word)) return null;
  const value = Number(word);
  return Number.isSafeInteger(value) ? value : null;
}

/** Lowercase hex, two digits per byte, nothing between. */
export function formatHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

/** Hex digits in pairs (case-insensitive), or null. */
export function parseHex(text: string): Uint8Array | null {
  if (text.length % 2 !== 0 || !/^[0-9a-f]*$/i.test(text)) return null;
  return new Uint8Array(Buffer.from(text, "hex"));
}

/** `0x48` as device lists write it. */
export function formatAddress(addr: number): string {
  return `0x${addr.toString(16).padStart(2, "0")}`;
}

/** `0x48`, or `1:0x48` when the guest is given. */
export function formatDeviceRef(ref: DeviceRef): string {
  const address = formatAddress(ref.addr);
  return ref.guest === undefined ? address : `${ref.guest}:${address}`;
}

function usage(cmd: CommandName, detail?: string): ControlError {
  return new ControlError("EUSAGE", `${detail ? `${detail}; ` : ""}usage: ${USAGE[cmd]}`);
}

function isCommandName(word: string): word is CommandName {
  return Object.hasOwn(USAGE, word);
}

function numberArg(cmd: CommandName, what: string, word: string): number {
  const value = parseNumber(word);
  if (value === null) throw usage(cmd, `${what} "${word}" is not a number`);
  return value;
}

/** `0x48` or `<guest>:0x48`. */
function deviceArg(cmd: CommandName, word: string): DeviceRef {
  const colon = word.indexOf(":");
  if (colon < 0) return { addr: numberArg(cmd, "address", word) };
  const guest = parseNumber(word.slice(0, colon));
  const addr = parseNumber(word.slice(colon + 1));
  if (guest === null || addr === null) {
    throw usage(cmd, `address "${word}" is neither a number nor <guest>:<address>`);
  }
  return { guest, addr };
}

function lengthArg(cmd: CommandName, word: string): number {
  const length = numberArg(cmd, "length", word);
  if (length === 0 || length > MAX_DATA_BYTES) {
    throw usage(cmd, `length must be 1..${MAX_DATA_BYTES}`);
  }
  return length;
}

function hexArg(cmd: CommandName, word: string): Uint8Array {
  const data = parseHex(word);
  if (data === null) throw usage(cmd, "data must be hex digits in pairs");
  if (data.length === 0 || data.length > MAX_DATA_BYTES) {
    throw usage(cmd, `data must be 1..${MAX_DATA_BYTES} bytes`);
  }
  return data;
}

/** `fault <addr> clear`, or `fault <addr> <kind> [<key>=<value>...]` (src/i2c/faults.ts). */
function faultCommand(args: readonly string[]): Command {
  const [addr, ...spec] = args;
  if (addr === undefined || spec.length === 0) {
    throw usage("fault", `expected an address and a fault, got ${args.length} argument(s)`);
  }
  if (spec.length === 1 && spec[0] === "clear")
    return { cmd: "fault", ...deviceArg("fault", addr), fault: "clear" };
  try {
    return { cmd: "fault", ...deviceArg("fault", addr), fault: parseFaultWords(spec) };
  } catch (error) {
    if (error instanceof FaultError) throw usage("fault", error.message);
    throw error;
  }
}

/** Parses the words of a text command (the CLI passes its argv words here too). */
export function parseWords(words: readonly string[]): Command {
  const [name, ...args] = words;
  if (name === undefined) throw new ControlError("EUSAGE", `empty command; ${HELP_TEXT}`);
  const cmd = name.toLowerCase();
  if (!isCommandName(cmd)) {
    throw new ControlError("EUSAGE", `unknown command "${name}"; ${HELP_TEXT}`);
  }
  if (cmd === "fault") return faultCommand(args);
  const arity = USAGE[cmd].split(" ").length - 1;
  if (args.length !== arity) throw usage(cmd, `expected ${arity} argument(s), got ${args.length}`);
  const [a = "", b = "", c = ""] = args;
  switch (cmd) {
    case "help":
    case "list":
    case "stats":
    case "faults":
      return { cmd };
    case "get":
      return { cmd, ...deviceArg(cmd, a), property: b };
    case "set":
      return { cmd, ...deviceArg(cmd, a), property: b, value: c };
    case "read":
      return {
        cmd,
        ...deviceArg(cmd, a),
        offset: numberArg(cmd, "offset", b),
        length: lengthArg(cmd, c),
      };
    case "write":
      return {
        cmd,
        ...deviceArg(cmd, a),
        offset: numberArg(cmd, "offset", b),
        data: hexArg(cmd, c),
      };
  }
}

/** A JSON field as a command word: numbers in decimal, strings as written. */
function jsonWord(object: Record<string, unknown>, key: string): string | undefined {
  const value = object[key];
  // Fractions stay fractions ("31.5"), so addresses and offsets refuse them like typed ones.
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return value;
  if (value === undefined) return undefined;
  return JSON.stringify(value);
}

const JSON_FIELDS: Readonly<Record<CommandName, readonly string[]>> = {
  help: [],
  list: [],
  stats: [],
  get: ["addr", "property"],
  set: ["addr", "property", "value"],
  read: ["addr", "offset", "length"],
  write: ["addr", "offset", "data"],
  // "fault" and its own fields (every, count, ...) follow: see parseJsonCommand.
  fault: ["addr", "fault"],
  faults: [],
};

function parseJsonCommand(line: string): Command {
  let object: unknown;
  try {
    object = JSON.parse(line);
  } catch {
    throw new ControlError("EUSAGE", "invalid JSON");
  }
  if (typeof object !== "object" || object === null || Array.isArray(object)) {
    throw new ControlError("EUSAGE", "a JSON command is an object");
  }
  const record = object as Record<string, unknown>;
  const cmd = record.cmd;
  if (typeof cmd !== "string" || !isCommandName(cmd)) {
    throw new ControlError("EUSAGE", `"cmd" must be one of ${Object.keys(USAGE).join(", ")}`);
  }
  const words: string[] = [cmd];
  for (const key of JSON_FIELDS[cmd]) {
    const word = jsonWord(record, key);
    if (word === undefined) throw usage(cmd, `missing "${key}"`);
    // A "guest" field qualifies the address like the text form "1:0x48".
    const guest = key === "addr" ? jsonWord(record, "guest") : undefined;
    words.push(guest === undefined ? word : `${guest}:${word}`);
  }
  if (cmd === "fault") {
    // The fault's own fields become key=value words, as typed after `fault <addr> <kind>`.
    for (const key of Object.keys(record)) {
      if (key === "cmd" || key === "guest" || JSON_FIELDS.fault.includes(key)) continue;
      words.push(`${key}=${jsonWord(record, key)}`);
    }
  }
  return parseWords(words);
}

/**
 * Parses one line (without its newline; a trailing CR is ignored). A line starting with `{` is a JSON
 * command, anything else words separated by blanks. Returns null for a blank line (no reply).
 */
export function parseLine(line: string): ParsedLine | null {
  const trimmed = line.trim();
  if (trimmed === "") return null;
  const format: LineFormat = trimmed.startsWith("{") ? "json" : "text";
  try {
    const command =
      format === "json" ? parseJsonCommand(trimmed) : parseWords(trimmed.split(/[ \t]+/));
    return { format, command };
  } catch (error) {
    if (error instanceof ControlError) return { format, command: error };
    throw error;
  }
}

/** One line of text: control characters (newlines above all) become spaces. */
function oneLine(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: replacing them is the point
  return text.replace(/[\u0000-\u001f\u007f]+/g, " ");
}

/** `ok <payload>` / `{"ok":true,"result":...}`, newline included. */
export function formatOk(result: CommandResult, format: LineFormat): string {
  if (format === "json") return `${JSON.stringify({ ok: true, result: result.value })}\n`;
  return result.text === "" ? "ok\n" : `ok ${oneLine(result.text)}\n`;
}

/** `error <code> <message>` / `{"ok":false,"code":...,"message":...}`, newline included. */
export function formatError(error: ControlError, format: LineFormat): string {
  if (format === "json") {
    return `${JSON.stringify({ ok: false, code: error.code, message: error.message })}\n`;
  }
  return `error ${error.code} ${oneLine(error.message)}\n`;
}

export type Reply =
  | { readonly ok: true; readonly payload: string }
  | { readonly ok: false; readonly code: string; readonly message: string };

/** Splits a text reply line (client side). Anything else is reported as a protocol error. */
export function parseReply(line: string): Reply {
  if (line === "ok") return { ok: true, payload: "" };
  if (line.startsWith("ok ")) return { ok: true, payload: line.slice(3) };
  const match = /^error (\S+) ?(.*)$/.exec(line);
  if (match) return { ok: false, code: match[1] ?? "", message: match[2] ?? "" };
  return { ok: false, code: "EPROTO", message: `unexpected reply: ${line.slice(0, 200)}` };
}
