/**
 * vi2c command-line parsing: argv → a validated {@link Invocation}. Pure: no I/O, no exit. Arguments
 * follow i2c-tools 4.3 (i2cdetect, i2cdump, i2cget, i2cset, i2ctransfer) with the I2CBUS argument
 * replaced by the backend's socket path (or `--socket PATH`), numbers read as C's strtol(…, 0) reads
 * them, and the same checks and messages. Must not talk to a backend: vi2c.ts runs the result.
 * @module
 */

import { CodedError } from "../errors.js";
import { EEPROM_GEOMETRIES } from "../i2c/models/eeprom.js";

/** I2C_RDRW_IOCTL_MAX_MSGS: i2ctransfer's message limit. */
export const MAX_TRANSFER_MESSAGES = 42;
/** I2C_SMBUS_BLOCK_MAX: longest SMBus / I2C block. */
export const SMBUS_BLOCK_MAX = 32;
/** Largest i2ctransfer message length (u16 len). */
export const MAX_MESSAGE_LENGTH = 0xffff;

export const DEFAULT_TIMEOUT_MS = 5000;
/** Ring size: room for 42 messages even without indirect descriptors (3 descriptors each). */
export const DEFAULT_QUEUE_SIZE = 128;

export type CommandName = "detect" | "dump" | "get" | "set" | "transfer" | "info" | "snapshot";
export const COMMAND_NAMES: readonly CommandName[] = [
  "detect",
  "dump",
  "get",
  "set",
  "transfer",
  "info",
  "snapshot",
];

export interface GlobalOptions {
  readonly socket: string;
  /** Use a packed ring when the backend offers VIRTIO_F_RING_PACKED. */
  readonly packed: boolean;
  readonly timeoutMs: number;
  readonly queueSize: number;
}

export type DetectMode = "auto" | "quick" | "read" | "func";
export type DumpMode = "b" | "w" | "W" | "c" | "i";
export type GetMode = "b" | "w" | "c" | "s" | "i";
export type SetMode = "c" | "b" | "w" | "s" | "i";
/** How snapshot reads registers: i2cdump's byte, word and I2C block modes. */
export type SnapshotMode = "b" | "w" | "i";

/** Registers first..last inclusive. */
export interface RegisterRange {
  readonly first: number;
  readonly last: number;
}

/** The registers i2cdump's `-r FIRST-LAST` names (all 256 without it). */
export interface ProbedRegisters extends RegisterRange {
  /** `-r` was given: the prompt says the range is limited. */
  readonly rangeGiven: boolean;
}

/** One i2ctransfer message: `data` for writes (length = data.length), `length` for reads. */
export type TransferMessage =
  | { readonly addr: number; readonly read: false; readonly data: Uint8Array }
  | { readonly addr: number; readonly read: true; readonly length: number };

export type Command =
  | { readonly name: "help"; readonly topic: CommandName | null }
  /** `--version` / `-V`: print the package version. */
  | { readonly name: "version" }
  | { readonly name: "info" }
  | {
      readonly name: "detect";
      readonly yes: boolean;
      readonly mode: DetectMode;
      readonly first: number;
      readonly last: number;
    }
  | ({
      readonly name: "dump";
      readonly yes: boolean;
      readonly addr: number;
      readonly mode: DumpMode;
      /** No MODE argument: i2cdump says so on stderr. */
      readonly modeDefaulted: boolean;
    } & ProbedRegisters)
  | {
      readonly name: "get";
      readonly yes: boolean;
      readonly addr: number;
      /** Data address; null reads the current address (receive byte). */
      readonly reg: number | null;
      readonly mode: GetMode;
      readonly length: number;
    }
  | {
      readonly name: "set";
      readonly yes: boolean;
      readonly addr: number;
      readonly reg: number;
      readonly mode: SetMode;
      /** One value for c/b/w (c: the data address itself), the block for i/s. */
      readonly values: readonly number[];
      readonly mask: number | null;
      readonly readback: boolean;
    }
  | {
      readonly name: "transfer";
      readonly yes: boolean;
      readonly verbose: boolean;
      readonly messages: readonly TransferMessage[];
    }
  | ({
      readonly name: "snapshot";
      readonly yes: boolean;
      readonly addr: number;
      readonly mode: SnapshotMode;
      /** Registers never touched (`--skip`): clear-on-read, FIFOs, anything with side effects. */
      readonly skip: readonly RegisterRange[];
      /** Registers the entry marks read-only (`--read-only`). */
      readonly readOnly: readonly RegisterRange[];
      /** A 24Cxx EEPROM model (`--as`): read its whole memory and write a model entry. */
      readonly as: string | null;
      /** The device entry alone (`--entry`) instead of a whole config file. */
      readonly entryOnly: boolean;
      /** Where the JSON goes (`-o`); null: stdout. */
      readonly output: string | null;
    } & ProbedRegisters);

export interface Invocation {
  readonly options: GlobalOptions;
  readonly command: Command;
}

/** A command line vi2c refuses; the CLI prints the message, the command's usage, and exits 2. */
export class UsageError extends CodedError<"EUSAGE"> {
  /** Whose usage to print (null: the general one). */
  readonly topic: CommandName | null;
  constructor(message: string, topic: CommandName | null = null) {
    super("EUSAGE", message);
    this.topic = topic;
  }
}

// ------------------------------------------------------------------------------------------------
// Numbers the way C's strtol(text, &end, 0) reads them

/**
 * Reads a leading integer as strtol(…, 0) does: optional blanks and sign, `0x` hex, `0` octal, else
 * decimal. Returns the value and the unread rest, or null when no digit was read (end == start).
 */
export function readCInteger(text: string): { value: number; rest: string } | null {
  const match = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)/.exec(text);
  if (match === null) return null;
  const sign = match[1] === "-" ? -1 : 1;
  const digits = match[2] ?? "";
  let value: number;
  if (/^0[xX]/.test(digits)) value = Number.parseInt(digits.slice(2), 16);
  else if (digits.length > 1 && digits.startsWith("0")) value = Number.parseInt(digits.slice(1), 8);
  else value = Number.parseInt(digits, 10);
  return { value: sign * value, rest: text.slice(match[0].length) };
}

/** A whole argument as one C integer; null when anything is left over or nothing was read. */
export function parseCInteger(text: string): number | null {
  const read = readCInteger(text);
  return read === null || read.rest !== "" ? null : read.value;
}

/** parse_i2c_address: 0x08-0x77, or 0x00-0x7f with -a. */
export function parseChipAddress(text: string, allAddresses: boolean, topic: CommandName): number {
  const value = parseCInteger(text);
  if (value === null) throw new UsageError("Error: Chip address is not a number!", topic);
  const [min, max] = allAddresses ? [0x00, 0x7f] : [0x08, 0x77];
  if (value < min || value > max) {
    throw new UsageError(`Error: Chip address out of range (${hex2(min)}-${hex2(max)})!`, topic);
  }
  return value;
}

function hex2(value: number): string {
  return `0x${value.toString(16).padStart(2, "0")}`;
}

function parseDataAddress(text: string, topic: CommandName): number {
  const value = parseCInteger(text);
  if (value === null || value < 0 || value > 0xff) {
    throw new UsageError("Error: Data address invalid!", topic);
  }
  return value;
}

// ------------------------------------------------------------------------------------------------
// Splitting argv

interface SplitArgs {
  /** Single-letter flags in order (`-ya` gives y, a). */
  readonly flags: string[];
  /** Values of flags that take one (`-m MASK`, `-r RANGE`). */
  readonly flagValues: Map<string, string>;
  readonly positionals: string[];
}

/**
 * Separates a command's short flags from its positionals. Flags may come anywhere (as getopt lets
 * them), except that `--` ends them; for i2ctransfer, flags end at the first positional, since its
 * data bytes are free-form.
 */
function splitCommandArgs(
  args: readonly string[],
  allowed: string,
  withValue: string,
  topic: CommandName,
  flagsFirstOnly: boolean,
): SplitArgs {
  const flags: string[] = [];
  const flagValues = new Map<string, string>();
  const positionals: string[] = [];
  let flagsOver = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    if (flagsOver || !/^-[A-Za-z]/.test(arg)) {
      if (arg === "--" && !flagsOver) {
        flagsOver = true;
        continue;
      }
      positionals.push(arg);
      if (flagsFirstOnly) flagsOver = true;
      continue;
    }
    for (let k = 1; k < arg.length; k++) {
      const flag = arg[k] ?? "";
      if (!allowed.includes(flag) && !withValue.includes(flag)) {
        throw new UsageError(`Error: Unsupported option "-${flag}"!`, topic);
      }
      if (withValue.includes(flag)) {
        const inline = arg.slice(k + 1);
        const value = inline !== "" ? inline : args[++i];
        if (value === undefined)
          throw new UsageError(`Error: Option -${flag} needs a value!`, topic);
        flagValues.set(flag, value);
        flags.push(flag);
        break;
      }
      flags.push(flag);
    }
  }
  return { flags, flagValues, positionals };
}

/**
 * Parses a whole vi2c command line (without `node` and the script). Global options: `--socket PATH`
 * (`--socket=PATH`), `--packed`, `--timeout MS`, `--queue-size N`, anywhere; without `--socket`, the
 * socket is the first positional, either before the command (`vi2c SOCK get …`) or where i2c-tools
 * take the bus (`vi2c get -y SOCK 0x50`).
 */
export function parseInvocation(argv: readonly string[]): Invocation {
  let socket: string | null = null;
  let packed = false;
  let timeoutMs = DEFAULT_TIMEOUT_MS;
  let queueSize = DEFAULT_QUEUE_SIZE;
  const rest: string[] = [];
  const commandLong: [string, string][] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    const [name, inline] = arg.startsWith("--") ? splitLong(arg) : [arg, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new UsageError(`Error: ${name} needs a value!`);
      return v;
    };
    if (name === "--socket") socket = value();
    else if (name === "--packed") packed = true;
    else if (name === "--timeout") timeoutMs = positiveInteger(value(), "--timeout", 1, 3_600_000);
    else if (name === "--queue-size") {
      queueSize = positiveInteger(value(), "--queue-size", 1, 32768);
      if ((queueSize & (queueSize - 1)) !== 0)
        throw new UsageError("Error: --queue-size must be a power of two!");
    } else if (name === "--help" || name === "-h") return helpInvocation(rest);
    else if (name === "--version" || name === "-V") return versionInvocation();
    else if (COMMAND_LONG_OPTIONS.has(name)) {
      const takesValue = COMMAND_LONG_OPTIONS.get(name) === true;
      if (!takesValue && inline !== undefined)
        throw new UsageError(`Error: ${name} takes no value!`);
      commandLong.push([name, takesValue ? value() : ""]);
    } else if (arg === "--") {
      rest.push(...argv.slice(i));
      break;
    } else if (arg.startsWith("--")) throw new UsageError(`Error: Unsupported option "${arg}"!`);
    else rest.push(arg);
  }

  const isCommand = (arg: string | undefined) =>
    (COMMAND_NAMES as readonly string[]).includes(arg ?? "");
  let commandIndex: number;
  if (rest[0] === "help") return helpInvocation(rest.slice(1));
  if (isCommand(rest[0])) commandIndex = 0;
  else if (socket === null && rest.length > 1 && isCommand(rest[1])) {
    socket = rest[0] ?? null;
    commandIndex = 1;
  } else {
    throw new UsageError(
      rest.length === 0 ? "Error: No command given!" : `Error: Unknown command "${rest[0]}"!`,
    );
  }
  const name = rest[commandIndex] as CommandName;
  const args = rest.slice(commandIndex + 1);
  const needSocket = (positionals: string[]): string[] => {
    if (socket !== null) return positionals;
    const first = positionals[0];
    if (first === undefined) throw new UsageError("Error: No socket specified!", name);
    socket = first;
    return positionals.slice(1);
  };
  const stray = commandLong.find(
    ([option]) => !(COMMAND_LONG_OPTION_OWNERS[name] ?? []).includes(option),
  );
  if (stray !== undefined) throw new UsageError(`Error: Unsupported option "${stray[0]}"!`, name);
  const command = parseCommand(name, args, needSocket, new Map(commandLong));
  if (socket === null) throw new UsageError("Error: No socket specified!", name);
  return { options: { socket, packed, timeoutMs, queueSize }, command };
}

/** Long options of commands (snapshot's), taken anywhere as the global ones are: name → takes a value. */
const COMMAND_LONG_OPTIONS: ReadonlyMap<string, boolean> = new Map([
  ["--skip", true],
  ["--read-only", true],
  ["--as", true],
  ["--output", true],
  ["--entry", false],
]);
const COMMAND_LONG_OPTION_OWNERS: Partial<Record<CommandName, readonly string[]>> = {
  snapshot: [...COMMAND_LONG_OPTIONS.keys()],
};

function splitLong(arg: string): [string, string | undefined] {
  const eq = arg.indexOf("=");
  return eq < 0 ? [arg, undefined] : [arg.slice(0, eq), arg.slice(eq + 1)];
}

function positiveInteger(text: string, what: string, min: number, max: number): number {
  const value = /^[0-9]+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`Error: ${what} must be an integer from ${min} to ${max}!`);
  }
  return value;
}

/** Options of a command that talks to no backend (help, version). */
const NO_BACKEND: GlobalOptions = {
  socket: "",
  packed: false,
  timeoutMs: DEFAULT_TIMEOUT_MS,
  queueSize: DEFAULT_QUEUE_SIZE,
};

function helpInvocation(rest: readonly string[]): Invocation {
  const topic = rest.find((a) => (COMMAND_NAMES as readonly string[]).includes(a)) ?? null;
  return { options: NO_BACKEND, command: { name: "help", topic: topic as CommandName | null } };
}

function versionInvocation(): Invocation {
  return { options: NO_BACKEND, command: { name: "version" } };
}

function parseCommand(
  name: CommandName,
  args: readonly string[],
  takeSocket: (positionals: string[]) => string[],
  longOptions: ReadonlyMap<string, string>,
): Command {
  switch (name) {
    case "info": {
      const { positionals } = splitCommandArgs(args, "", "", name, false);
      if (takeSocket(positionals).length > 0)
        throw new UsageError("Error: Too many arguments!", name);
      return { name };
    }
    case "detect":
      return parseDetect(args, takeSocket);
    case "dump":
      return parseDump(args, takeSocket);
    case "get":
      return parseGet(args, takeSocket);
    case "set":
      return parseSet(args, takeSocket);
    case "transfer":
      return parseTransfer(args, takeSocket);
    case "snapshot":
      return parseSnapshot(args, takeSocket, longOptions);
  }
}

// ------------------------------------------------------------------------------------------------
// Per command, as the matching i2c-tools program

function parseDetect(
  args: readonly string[],
  takeSocket: (positionals: string[]) => string[],
): Command {
  const topic = "detect";
  const split = splitCommandArgs(args, "yaqrF", "", topic, false);
  let mode: DetectMode = "auto";
  let first = 0x08;
  let last = 0x77;
  for (const flag of split.flags) {
    const wanted: DetectMode | null =
      flag === "q" ? "quick" : flag === "r" ? "read" : flag === "F" ? "func" : null;
    if (wanted !== null) {
      if (mode !== "auto" && mode !== wanted)
        throw new UsageError("Error: Different modes specified!", topic);
      mode = wanted;
    }
    if (flag === "a") {
      first = 0x00;
      last = 0x7f;
    }
  }
  const positionals = takeSocket(split.positionals);
  if (positionals.length === 2 && mode !== "func") {
    const range = [first, last] as const;
    first = detectBound(positionals[0] ?? "", "FIRST", range);
    last = detectBound(positionals[1] ?? "", "LAST", [first, range[1]]);
  } else if (positionals.length !== 0) {
    throw new UsageError("Error: Wrong number of arguments!", topic);
  }
  return { name: topic, yes: split.flags.includes("y"), mode, first, last };
}

function detectBound(text: string, what: string, [min, max]: readonly [number, number]): number {
  const value = parseCInteger(text);
  if (value === null) throw new UsageError(`Error: ${what} argument not a number!`, "detect");
  if (value < min || value > max) {
    throw new UsageError(
      `Error: ${what} argument out of range (${hex2(min)}-${hex2(max)})!`,
      "detect",
    );
  }
  return value;
}

function parseDump(
  args: readonly string[],
  takeSocket: (positionals: string[]) => string[],
): Command {
  const topic = "dump";
  const split = splitCommandArgs(args, "yaf", "r", topic, false);
  const positionals = takeSocket(split.positionals);
  if (positionals.length === 0) throw new UsageError("Error: No address specified!", topic);
  if (positionals.length > 2) {
    throw new UsageError("Error: Banks (BANK, BANKREG) are not supported!", topic);
  }
  const addr = parseChipAddress(positionals[0] ?? "", split.flags.includes("a"), topic);
  const modeText = positionals[1];
  let mode: DumpMode = "b";
  if (modeText !== undefined) {
    if (modeText.length > 1 && modeText[1] === "p") {
      throw new UsageError("Error: PEC is not supported on virtio-i2c!", topic);
    }
    if (modeText.startsWith("s")) {
      throw new UsageError(
        "SMBus block mode is no longer supported, please use i2cget instead",
        topic,
      );
    }
    const letter = modeText === "i" ? "i" : modeText[0];
    if (letter === undefined || !["b", "w", "W", "c", "i"].includes(letter)) {
      throw new UsageError("Error: Invalid mode!", topic);
    }
    mode = letter as DumpMode;
  }
  const range = split.flagValues.get("r");
  const { first, last } = probeRange(range, topic);
  if (range !== undefined) {
    if (mode === "W" && (first % 2 !== 0 || last % 2 === 0)) {
      throw new UsageError("Error: Range parameter not compatible with selected mode!", topic);
    }
  }
  return {
    name: topic,
    yes: split.flags.includes("y"),
    addr,
    mode,
    modeDefaulted: modeText === undefined,
    first,
    last,
    rangeGiven: range !== undefined,
  };
}

/** i2cdump's `-r FIRST-LAST` (0x00-0xff when not given). */
function probeRange(text: string | undefined, topic: CommandName): RegisterRange {
  if (text === undefined) return { first: 0x00, last: 0xff };
  const range = readRegisterRange(text, false);
  if (range === null) throw new UsageError("Error: Invalid range parameter!", topic);
  return range;
}

/**
 * `FIRST-LAST` as i2cdump reads it (C integers, 0x00-0xff, FIRST <= LAST), or with `single` a lone
 * register as well; null when the text is not one.
 */
function readRegisterRange(text: string, single: boolean): RegisterRange | null {
  const start = readCInteger(text);
  if (start === null || start.value < 0 || start.value > 0xff) return null;
  if (single && start.rest === "") return { first: start.value, last: start.value };
  if (!start.rest.startsWith("-")) return null;
  const end = parseCInteger(start.rest.slice(1));
  if (end === null || end < start.value || end > 0xff) return null;
  return { first: start.value, last: end };
}

/** A comma list of registers and ranges (`0x10-0x1f,0x40`), as `--skip` and `--read-only` take. */
export function parseRegisterList(text: string, option: string): RegisterRange[] {
  const ranges = text.split(",").map((item) => readRegisterRange(item.trim(), true));
  if (text.trim() === "" || ranges.some((range) => range === null)) {
    throw new UsageError(
      `Error: Invalid ${option} list (registers and ranges like 0x10-0x1f,0x40)!`,
      "snapshot",
    );
  }
  return ranges as RegisterRange[];
}

const EEPROM_NAMES = EEPROM_GEOMETRIES.map((geometry) => geometry.name);

function parseSnapshot(
  args: readonly string[],
  takeSocket: (positionals: string[]) => string[],
  longOptions: ReadonlyMap<string, string>,
): Command {
  const topic = "snapshot";
  const split = splitCommandArgs(args, "ya", "ro", topic, false);
  const positionals = takeSocket(split.positionals);
  if (positionals.length === 0) throw new UsageError("Error: No address specified!", topic);
  if (positionals.length > 2) throw new UsageError("Error: Too many arguments!", topic);
  const addr = parseChipAddress(positionals[0] ?? "", split.flags.includes("a"), topic);
  const modeText = positionals[1];
  if (modeText !== undefined && !["b", "w", "i"].includes(modeText)) {
    throw new UsageError("Error: Invalid mode (b, w or i)!", topic);
  }
  const range = split.flagValues.get("r");
  const { first, last } = probeRange(range, topic);
  const skipText = longOptions.get("--skip");
  const readOnlyText = longOptions.get("--read-only");
  const as = longOptions.get("--as") ?? null;
  if (as !== null) {
    if (!EEPROM_NAMES.includes(as)) {
      throw new UsageError(`Error: --as takes an EEPROM model: ${EEPROM_NAMES.join(", ")}!`, topic);
    }
    const clash = [
      ["MODE", modeText],
      ["-r", range],
      ["--skip", skipText],
      ["--read-only", readOnlyText],
    ].find(([, given]) => given !== undefined);
    if (clash !== undefined) {
      throw new UsageError(
        `Error: ${clash[0]} does not go with --as (an EEPROM is read whole)!`,
        topic,
      );
    }
  }
  const output = split.flagValues.get("o") ?? longOptions.get("--output") ?? null;
  if (output === "") throw new UsageError("Error: -o needs a file name!", topic);
  return {
    name: topic,
    yes: split.flags.includes("y"),
    addr,
    mode: (modeText ?? "b") as SnapshotMode,
    first,
    last,
    rangeGiven: range !== undefined,
    skip: skipText === undefined ? [] : parseRegisterList(skipText, "--skip"),
    readOnly: readOnlyText === undefined ? [] : parseRegisterList(readOnlyText, "--read-only"),
    as,
    entryOnly: longOptions.has("--entry"),
    output,
  };
}

function parseGet(
  args: readonly string[],
  takeSocket: (positionals: string[]) => string[],
): Command {
  const topic = "get";
  const split = splitCommandArgs(args, "yaf", "", topic, false);
  const positionals = takeSocket(split.positionals);
  const [addrText, regText, modeText, lengthText] = positionals;
  if (addrText === undefined) throw new UsageError("Error: No address specified!", topic);
  if (positionals.length > 4) throw new UsageError("Error: Too many arguments!", topic);
  const addr = parseChipAddress(addrText, split.flags.includes("a"), topic);
  const reg = regText === undefined ? null : parseDataAddress(regText, topic);
  let mode: GetMode = reg === null ? "c" : "b";
  if (modeText !== undefined) {
    const letter = modeText[0];
    if (letter === undefined || !["b", "w", "c", "s", "i"].includes(letter)) {
      throw new UsageError("Error: Invalid mode!", topic);
    }
    if (modeText[1] === "p")
      throw new UsageError("Error: PEC is not supported on virtio-i2c!", topic);
    mode = letter as GetMode;
  }
  let length = SMBUS_BLOCK_MAX;
  if (lengthText !== undefined) {
    if (mode !== "i") throw new UsageError("Error: Length only valid for I2C block data!", topic);
    const value = parseCInteger(lengthText);
    if (value === null || value < 1 || value > SMBUS_BLOCK_MAX) {
      throw new UsageError("Error: Length invalid!", topic);
    }
    length = value;
  }
  return { name: topic, yes: split.flags.includes("y"), addr, reg, mode, length };
}

function parseSet(
  args: readonly string[],
  takeSocket: (positionals: string[]) => string[],
): Command {
  const topic = "set";
  const split = splitCommandArgs(args, "yafr", "m", topic, false);
  const positionals = takeSocket(split.positionals);
  if (positionals.length < 2) throw new UsageError("Error: Not enough arguments!", topic);
  const addr = parseChipAddress(positionals[0] ?? "", split.flags.includes("a"), topic);
  const reg = parseDataAddress(positionals[1] ?? "", topic);
  const rest = positionals.slice(2);
  let mode: SetMode;
  let valueTexts: string[];
  if (rest.length === 0) {
    mode = "c";
    valueTexts = [];
  } else if (rest.length === 1) {
    mode = rest[0] === "c" || rest[0] === "cp" ? "c" : "b";
    if (rest[0] === "cp") throw new UsageError("Error: PEC is not supported on virtio-i2c!", topic);
    valueTexts = mode === "c" ? [] : rest;
  } else {
    const modeText = rest[rest.length - 1] ?? "";
    const letter = modeText[0] ?? "";
    if (modeText.length > 2 || (modeText.length === 2 && modeText[1] !== "p")) {
      throw new UsageError(`Error: Invalid mode '${modeText}'!`, topic);
    }
    if (!["b", "w", "s", "i"].includes(letter)) {
      throw new UsageError(`Error: Invalid mode '${modeText}'!`, topic);
    }
    if (modeText[1] === "p")
      throw new UsageError("Error: PEC is not supported on virtio-i2c!", topic);
    mode = letter as SetMode;
    valueTexts = rest.slice(0, -1);
    if (mode === "s" || mode === "i") {
      if (split.flagValues.has("m")) {
        throw new UsageError("Error: Mask not supported for block writes!", topic);
      }
      if (valueTexts.length > SMBUS_BLOCK_MAX)
        throw new UsageError("Error: Too many arguments!", topic);
    } else if (valueTexts.length !== 1) {
      throw new UsageError("Error: Too many arguments!", topic);
    }
  }
  const max = mode === "w" ? 0xffff : 0xff;
  const values =
    mode === "c"
      ? [reg]
      : valueTexts.map((text) => {
          const value = parseCInteger(text);
          if (value === null || value < 0)
            throw new UsageError("Error: Data value invalid!", topic);
          if (value > max) throw new UsageError("Error: Data value out of range!", topic);
          return value;
        });
  let mask: number | null = null;
  const maskText = split.flagValues.get("m");
  if (maskText !== undefined) {
    const value = parseCInteger(maskText);
    if (value === null || value === 0)
      throw new UsageError("Error: Data value mask invalid!", topic);
    if (value < 0 || value > max) {
      throw new UsageError("Error: Data value mask out of range!", topic);
    }
    mask = value;
  }
  return {
    name: topic,
    yes: split.flags.includes("y"),
    addr,
    reg,
    mode,
    values,
    mask,
    readback: split.flags.includes("r"),
  };
}

function parseTransfer(
  args: readonly string[],
  takeSocket: (positionals: string[]) => string[],
): Command {
  const topic = "transfer";
  const split = splitCommandArgs(args, "yvfa", "", topic, true);
  const descs = takeSocket(split.positionals);
  return {
    name: topic,
    yes: split.flags.includes("y"),
    verbose: split.flags.includes("v"),
    messages: parseTransferMessages(descs, split.flags.includes("a")),
  };
}

/**
 * i2ctransfer's message syntax: `{r|w}LENGTH[@ADDRESS]` (address: the previous one when omitted),
 * each write followed by LENGTH data bytes, where the last byte given may end in `=` (repeat), `+`
 * (count up), `-` (count down) or `p` (i2ctransfer's pseudo-random sequence) to fill the rest.
 */
export function parseTransferMessages(
  args: readonly string[],
  allAddresses: boolean,
): TransferMessage[] {
  const topic = "transfer";
  const messages: TransferMessage[] = [];
  let address = -1;
  let pending: { addr: number; data: Uint8Array; filled: number } | null = null;
  const faulty = (message: string, arg: string): UsageError =>
    new UsageError(`${message}\nError: faulty argument is '${arg}'`, topic);
  for (const arg of args) {
    if (messages.length >= MAX_TRANSFER_MESSAGES) {
      throw new UsageError(`Error: Too many messages (max: ${MAX_TRANSFER_MESSAGES})`, topic);
    }
    if (pending === null) {
      const direction = arg[0];
      if (direction !== "r" && direction !== "w") throw faulty("Error: Invalid direction", arg);
      const read = direction === "r";
      let rest = arg.slice(1);
      if (rest.startsWith("?")) {
        throw faulty(
          read
            ? "Error: variable length reads (?) are not possible on virtio-i2c"
            : "Error: variable length not allowed with write",
          arg,
        );
      }
      const length = readCInteger(rest);
      if (length === null || length.value < 0 || length.value > MAX_MESSAGE_LENGTH) {
        throw faulty("Error: Length invalid", arg);
      }
      rest = length.rest;
      if (rest !== "") {
        if (!rest.startsWith("@")) throw faulty("Error: Unknown separator after length", arg);
        try {
          address = parseChipAddress(rest.slice(1), allAddresses, topic);
        } catch (error) {
          throw faulty((error as Error).message, arg);
        }
      } else if (address < 0) {
        throw faulty("Error: No address given", arg);
      }
      if (read) messages.push({ addr: address, read: true, length: length.value });
      else if (length.value === 0)
        messages.push({ addr: address, read: false, data: new Uint8Array(0) });
      else pending = { addr: address, data: new Uint8Array(length.value), filled: 0 };
      continue;
    }
    const byte = readCInteger(arg);
    if (byte === null || byte.value < 0 || byte.value > 0xff) {
      throw faulty("Error: Invalid data byte", arg);
    }
    const suffix = byte.rest;
    if (suffix !== "" && !["=", "+", "-", "p"].includes(suffix[0] ?? "")) {
      throw faulty("Error: Invalid data byte suffix", arg);
    }
    let value = byte.value;
    while (pending.filled < pending.data.length) {
      pending.data[pending.filled++] = value;
      if (suffix === "") break;
      value = nextFillByte(value, suffix[0] ?? "=");
    }
    if (pending.filled === pending.data.length) {
      messages.push({ addr: pending.addr, read: false, data: pending.data });
      pending = null;
    }
  }
  if (pending !== null || messages.length === 0)
    throw new UsageError("Error: Incomplete message", topic);
  return messages;
}

/** The next byte of a `=`/`+`/`-`/`p` fill, as i2ctransfer computes it (8-bit arithmetic). */
export function nextFillByte(value: number, suffix: string): number {
  switch (suffix) {
    case "+":
      return (value + 1) & 0xff;
    case "-":
      return (value - 1) & 0xff;
    case "p": {
      // i2ctransfer's pseudo-random sequence: xor 27, add 13, rotate left by one (8 bits).
      const mixed = ((value ^ 27) + 13) & 0xff;
      return ((mixed << 1) | (mixed >> 7)) & 0xff;
    }
    default:
      return value;
  }
}
