/**
 * Command-line parsing for the daemon: argv → a validated {@link CliCommand}. Pure: no I/O, no
 * process exit, no logging (relative paths are compared as resolved against the working directory);
 * adapter names are resolved through the injected lookup. Messages and exit
 * codes are decided by main.ts, which turns a {@link UsageError} into exit status 2.
 * Options follow rust-vmm's vhost-device-i2c (`-s` socket prefix, `-c` count, `-l` device list);
 * `--config FILE` adds devices from a JSON file (read by src/config/file.ts, not here) and
 * `vhost-device-i2c control PATH CMD...` is the control-socket client. Listening sockets may come
 * from a service manager instead of -s: `--socket-fd FD` (repeatable) or LISTEN_FDS, which main.ts
 * reads from the environment and passes in. Also owns the help text as data ({@link HELP}): `--help`,
 * the man page and the README's options table (src/cli/help.ts, scripts/man.mjs) all render it.
 * @module
 */

import { resolve as resolvePath } from "node:path";
import { parseArgs } from "node:util";
import { USAGE as CONTROL_USAGE } from "../control/protocol.js";
import { CodedError } from "../errors.js";
import { type DeviceGroup, parseDeviceList } from "../i2c/device-list.js";
import { MODEL_NAMES } from "../i2c/model.js";
import {
  isLogFormat,
  isLogLevel,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFormat,
  type LogLevel,
} from "../log.js";
import { DEFAULT_MAX_FILES, MAX_FILES_LIMIT } from "../trace/rotating-file.js";
import { detailed, type HelpDocument, term } from "./help.js";

/** Most sockets one daemon serves: each needs ~10 fds (listener, connection, eventfds, memory) and a connection state. */
export const MAX_SOCKET_COUNT = 256;

export interface DaemonConfig {
  /** Prefix given with -s; the daemon serves `${socketPath}${i}` for i in 0..socketCount-1. "" with socketFds. */
  readonly socketPath: string;
  readonly socketCount: number;
  /** The socket files, in order: socketPaths[i] belongs to socket index i ("fd:N" for socketFds). */
  readonly socketPaths: readonly string[];
  /**
   * Inherited listening sockets (--socket-fd, or LISTEN_FDS from a service manager), in order:
   * socketFds[i] serves socket index i. Absent when the daemon creates its sockets (-s).
   */
  readonly socketFds?: readonly number[];
  /** --log-format: plain text lines (default) or one JSON object per line. */
  readonly logFormat: LogFormat;
  /** The -l text as given (for logs); "" when -l was not given. */
  readonly deviceListText: string;
  /** The parsed -l groups; empty when -l was not given (then --config lists the devices). */
  readonly deviceGroups: readonly DeviceGroup[];
  /** --config FILE as given: a JSON device configuration, loaded at start-up. */
  readonly configFile: string | undefined;
  /** --scenario FILE as given: a timeline of property changes and faults (src/control/scenario.ts). */
  readonly scenarioFile?: string;
  /** --control-socket PATH: where the run-time control socket listens. */
  readonly controlSocket: string | undefined;
  /** --control-idle-timeout: ms after which a control client that completed no command is dropped. */
  readonly controlIdleTimeoutMs?: number;
  readonly logLevel: LogLevel;
  /** Connect to sockets the VMM listens on instead of listening ourselves. */
  readonly clientMode: boolean;
  /** --trace (`-`, stdout) or --trace-file FILE: one line per transfer (docs/OBSERVABILITY.md). */
  readonly trace?: string;
  /** --pcap FILE: every message as a LINKTYPE_I2C_LINUX record. */
  readonly pcap?: string;
  /** --pcap-max-size: bytes per capture file before it rotates to FILE.1 (default 64 MiB). */
  readonly pcapMaxSize?: number;
  /** --pcap-max-files: capture files kept, the current one included (default 2). */
  readonly pcapMaxFiles?: number;
  /** --trace-max-size: bytes per --trace-file file before it rotates to FILE.1 (default 64 MiB). */
  readonly traceMaxSize?: number;
  /** --trace-max-files: trace files kept, the current one included (default 2). */
  readonly traceMaxFiles?: number;
  /** --socket-mode: permission bits of the vhost-user sockets the daemon creates (e.g. 0o660). */
  readonly socketMode: number | undefined;
  /** --socket-group: group (name or number) of the vhost-user sockets the daemon creates. */
  readonly socketGroup: string | undefined;
  /** --control-socket-mode: permission bits of the control socket (default 0600). */
  readonly controlSocketMode: number | undefined;
  /** --control-socket-group: group (name or number) of the control socket. */
  readonly controlSocketGroup: string | undefined;
  /** --allow-peer-uid (repeatable): users (names or numbers) admitted as the VMM. */
  readonly allowPeerUids: readonly string[];
  /** --allow-peer-gid (repeatable): groups (names or numbers) whose members are admitted as the VMM. */
  readonly allowPeerGids: readonly string[];
  /** --client-unsafe-path: connect even through a link or an untrusted directory. */
  readonly clientUnsafePath: boolean;
  /** --lock-dir: where host-device lock files live (default: src/i2c/device-lock.ts lockDirectory). */
  readonly lockDir: string | undefined;
  /** --handshake-timeout in ms (0: no limit); absent: the server's default. Listening sockets only. */
  readonly handshakeTimeoutMs?: number;
  /** --allow-unsealed-memory: map guest memory fds that are not sealed against shrinking. */
  readonly allowUnsealedMemory: boolean;
  /** --packed-ring on|off: offer VIRTIO_F_RING_PACKED to the VMM (default on). */
  readonly packedRing: boolean;
  /**
   * --fd-store: keep every connection's fds and state in the service manager's fd store
   * ($NOTIFY_SOCKET, FDSTORE=1), so a restart after a crash resumes the guests.
   */
  readonly fdStore: boolean;
  /**
   * --user (name or uid) and --group (name or gid): who a daemon started as root becomes once its
   * adapters, locks, sockets and files are open (src/cli/privileges.ts). Absent: it stays who it is.
   */
  readonly runAs?: { readonly user: string; readonly group: string | undefined };
}

export type CliCommand =
  | { readonly kind: "help" }
  | { readonly kind: "version" }
  /** --print-capabilities: the vhost-user backend capabilities as JSON on stdout. */
  | { readonly kind: "capabilities" }
  | { readonly kind: "run"; readonly config: DaemonConfig }
  /** `control PATH CMD...`: send one command to a running daemon's control socket. */
  | { readonly kind: "control"; readonly socketPath: string; readonly words: readonly string[] }
  /** `demo`: the daemon on an emulated bus, driven by vi2c (src/cli/demo.ts). */
  | { readonly kind: "demo" };

/** The first argument that selects the control-socket client instead of the daemon. */
export const CONTROL_SUBCOMMAND = "control";
/** The first argument that runs the demo instead of the daemon. */
export const DEMO_SUBCOMMAND = "demo";

export type UsageErrorCode =
  | "USAGE_BAD_TRACE"
  | "USAGE_UNKNOWN_OPTION"
  | "USAGE_UNEXPECTED_ARGUMENT"
  | "USAGE_MISSING_VALUE"
  | "USAGE_UNEXPECTED_VALUE"
  | "USAGE_REPEATED_OPTION"
  | "USAGE_MISSING_OPTION"
  | "USAGE_BAD_SOCKET_PATH"
  | "USAGE_BAD_SOCKET_COUNT"
  | "USAGE_BAD_LOG_LEVEL"
  | "USAGE_BAD_DEVICE_LIST"
  | "USAGE_BAD_CONFIG_PATH"
  | "USAGE_BAD_CONTROL_COMMAND"
  | "USAGE_BAD_SOCKET_MODE"
  | "USAGE_BAD_SOCKET_GROUP"
  | "USAGE_BAD_PEER"
  | "USAGE_BAD_LOCK_DIR"
  | "USAGE_BAD_USER"
  | "USAGE_BAD_SOCKET_FD"
  | "USAGE_SOCKET_CONFLICT"
  | "USAGE_BAD_LOG_FORMAT"
  | "USAGE_BAD_CONTROL_IDLE_TIMEOUT"
  | "USAGE_BAD_HANDSHAKE_TIMEOUT"
  | "USAGE_BAD_PACKED_RING";

/** The command line cannot be run. `message` is meant for the user as is. */
export class UsageError extends CodedError<UsageErrorCode> {}

export interface ParseDeps {
  /** Adapter name (as in /sys/bus/i2c/devices/i2c-N/name) → adapter number; throws when not exactly one. */
  readonly resolveAdapter: (name: string) => number;
  /** Listening sockets passed by socket activation (LISTEN_FDS), used when neither -s nor --socket-fd is given. */
  readonly inheritedFds?: readonly number[];
}

/** Every option the daemon takes; each is documented in {@link HELP}'s options. */
export const OPTIONS = {
  "socket-path": { type: "string", short: "s" },
  "socket-count": { type: "string", short: "c" },
  "device-list": { type: "string", short: "l" },
  config: { type: "string" },
  scenario: { type: "string" },
  "control-socket": { type: "string" },
  "control-idle-timeout": { type: "string" },
  "log-level": { type: "string" },
  client: { type: "boolean" },
  trace: { type: "boolean" },
  "trace-file": { type: "string" },
  pcap: { type: "string" },
  "pcap-max-size": { type: "string" },
  "pcap-max-files": { type: "string" },
  "trace-max-size": { type: "string" },
  "trace-max-files": { type: "string" },
  "socket-mode": { type: "string" },
  "socket-group": { type: "string" },
  "control-socket-mode": { type: "string" },
  "control-socket-group": { type: "string" },
  "allow-peer-uid": { type: "string", multiple: true },
  "allow-peer-gid": { type: "string", multiple: true },
  "client-unsafe-path": { type: "boolean" },
  "lock-dir": { type: "string" },
  user: { type: "string" },
  group: { type: "string" },
  "socket-fd": { type: "string", multiple: true },
  "log-format": { type: "string" },
  "handshake-timeout": { type: "string" },
  "allow-unsealed-memory": { type: "boolean" },
  "fd-store": { type: "boolean" },
  "packed-ring": { type: "string" },
  "print-capabilities": { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/** Longest socket path that fits sockaddr_un.sun_path (108 bytes with the NUL). */
const MAX_SOCKET_PATH_BYTES = 107;

export function parseCommandLine(argv: readonly string[], deps: ParseDeps): CliCommand {
  if (argv[0] === CONTROL_SUBCOMMAND) return parseControlCommand(argv.slice(1));
  if (argv[0] === DEMO_SUBCOMMAND) return parseDemoCommand(argv.slice(1));
  const values = readOptions(argv);

  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  if (values["print-capabilities"]) return { kind: "capabilities" };

  const sockets = socketSource(values, deps.inheritedFds);
  const deviceListText = values["device-list"];
  const configFile = values.config;
  if (deviceListText === undefined && configFile === undefined) {
    throw new UsageError("USAGE_MISSING_OPTION", "missing --device-list (-l) or --config");
  }
  if (configFile === "") throw new UsageError("USAGE_BAD_CONFIG_PATH", "--config is empty");
  const controlSocket = values["control-socket"];
  if (controlSocket !== undefined) checkSocketPath(controlSocket, "--control-socket");
  const controlIdleTimeoutMs = parseControlIdleTimeout(
    values["control-idle-timeout"],
    controlSocket !== undefined,
  );
  for (const option of ["control-socket-mode", "control-socket-group"] as const) {
    if (values[option] !== undefined && controlSocket === undefined) {
      throw new UsageError("USAGE_MISSING_OPTION", `--${option} needs --control-socket`);
    }
  }
  if (values["client-unsafe-path"] && !values.client) {
    throw new UsageError("USAGE_MISSING_OPTION", "--client-unsafe-path needs --client");
  }
  const logLevel = parseLogLevel(values["log-level"]);
  const logFormat = parseLogFormat(values["log-format"]);

  let deviceGroups: DeviceGroup[] = [];
  try {
    if (deviceListText !== undefined) {
      deviceGroups = parseDeviceList(deviceListText, deps.resolveAdapter);
    }
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new UsageError(
      "USAGE_BAD_DEVICE_LIST",
      `invalid --device-list "${deviceListText}": ${reason}`,
      {
        cause: err,
      },
    );
  }

  const config: DaemonConfig = {
    ...sockets,
    logFormat,
    deviceListText: deviceListText ?? "",
    deviceGroups,
    configFile,
    ...(values.scenario !== undefined && { scenarioFile: values.scenario }),
    controlSocket,
    ...(controlIdleTimeoutMs !== undefined && { controlIdleTimeoutMs }),
    logLevel,
    clientMode: values.client === true,
    ...observeOptions(values),
    socketMode: parseSocketMode(values["socket-mode"], "--socket-mode"),
    socketGroup: parseSocketGroup(values["socket-group"], "--socket-group"),
    controlSocketMode: parseSocketMode(values["control-socket-mode"], "--control-socket-mode"),
    controlSocketGroup: parseSocketGroup(values["control-socket-group"], "--control-socket-group"),
    allowPeerUids: parsePeerIds(values["allow-peer-uid"], "--allow-peer-uid"),
    allowPeerGids: parsePeerIds(values["allow-peer-gid"], "--allow-peer-gid"),
    clientUnsafePath: values["client-unsafe-path"] === true,
    lockDir: parseLockDir(values["lock-dir"]),
    ...handshakeTimeout(values["handshake-timeout"], values.client === true),
    allowUnsealedMemory: values["allow-unsealed-memory"] === true,
    fdStore: values["fd-store"] === true,
    packedRing: parsePackedRing(values["packed-ring"]),
    ...parseRunAs(values.user, values.group),
  };
  checkOwnPathsDistinct(ownPaths(config));
  return { kind: "run", config };
}

/** A file the daemon creates (or, with --client, connects to), and the option that names it. */
interface OwnPath {
  readonly what: string;
  readonly path: string;
}

/** FILE, FILE.1, ...: the names an output rotating through `files` files takes (src/trace/rotating-file.ts). */
function rotatedPaths(what: string, path: string, files: number): OwnPath[] {
  return Array.from({ length: files }, (_, k) =>
    k === 0 ? { what, path } : { what: `${what}'s rotated file`, path: `${path}.${k}` },
  );
}

/** Every path the daemon itself serves or writes: its sockets, the control socket, trace and capture files. */
function ownPaths(config: DaemonConfig): OwnPath[] {
  const paths: OwnPath[] = [];
  if (config.socketFds === undefined) {
    paths.push(...config.socketPaths.map((path) => ({ what: "the vhost-user socket", path })));
  }
  if (config.controlSocket !== undefined) {
    paths.push({ what: "--control-socket", path: config.controlSocket });
  }
  if (config.trace !== undefined && config.trace !== "-") {
    paths.push(
      ...rotatedPaths("--trace-file", config.trace, config.traceMaxFiles ?? DEFAULT_MAX_FILES),
    );
  }
  if (config.pcap !== undefined) {
    paths.push(...rotatedPaths("--pcap", config.pcap, config.pcapMaxFiles ?? DEFAULT_MAX_FILES));
  }
  return paths;
}

/**
 * Two of the daemon's own paths may not name one file (a control socket bound over a vhost-user
 * socket, a trace written into the capture): refused before anything is bound or created. Paths are
 * compared absolute, resolved against the working directory as the daemon will use them.
 */
function checkOwnPathsDistinct(paths: readonly OwnPath[]): void {
  const seen = new Map<string, OwnPath>();
  for (const own of paths) {
    const absolute = resolvePath(own.path);
    const first = seen.get(absolute);
    if (first !== undefined) {
      throw new UsageError(
        "USAGE_SOCKET_CONFLICT",
        `${own.what} "${own.path}" is the same file as ${first.what} "${first.path}": give each its own path`,
      );
    }
    seen.set(absolute, own);
  }
}

function parseControlCommand(rest: readonly string[]): CliCommand {
  const [socketPath, ...words] = rest;
  if (socketPath === "--help" || socketPath === "-h") return { kind: "help" };
  if (socketPath === undefined || words.length === 0) {
    throw new UsageError(
      "USAGE_BAD_CONTROL_COMMAND",
      `usage: ${CONTROL_SUBCOMMAND} <control-socket-path> <command> [arguments...] (e.g. "list")`,
    );
  }
  checkSocketPath(socketPath, "the control socket path");
  return { kind: "control", socketPath, words };
}

function parseDemoCommand(rest: readonly string[]): CliCommand {
  if (rest.length > 0) {
    throw new UsageError("USAGE_UNEXPECTED_ARGUMENT", `${DEMO_SUBCOMMAND} takes no arguments`);
  }
  return { kind: "demo" };
}

type OptionTable = typeof OPTIONS;
type OptionName = keyof OptionTable;

/** The options given: a flag's true, a value, or the values of a repeatable option in order. */
type OptionValues = {
  -readonly [K in OptionName]?: OptionTable[K] extends { readonly multiple: true }
    ? string[]
    : OptionTable[K]["type"] extends "string"
      ? string
      : boolean;
};

function isOptionName(name: string): name is OptionName {
  return Object.hasOwn(OPTIONS, name);
}

/**
 * Reads argv with clap's spellings (the Rust daemon's parser): `-s PATH`, `-sPATH`, `-s=PATH`,
 * `--socket-path PATH` and `--socket-path=PATH`. A separate value may start with "-" only as a
 * negative number (`-c -1`, refused later by the option's own check); any other word starting with
 * "-" is taken for the next option, so the value is missing (`--socket-path=-x` gives one). node:util
 * parseArgs only splits the words (strict off): every refusal is ours and names the option.
 */
function readOptions(argv: readonly string[]): OptionValues {
  const { tokens } = parseArgs({
    args: [...argv],
    options: OPTIONS,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const values: Partial<Record<OptionName, string | string[] | boolean>> = {};
  for (const token of tokens) {
    if (token.kind === "positional") {
      throw new UsageError(
        "USAGE_UNEXPECTED_ARGUMENT",
        `unexpected argument "${token.value}": the daemon takes options only`,
      );
    }
    if (token.kind !== "option") continue; // "--": what follows comes as positionals
    const { name } = token;
    if (!isOptionName(name)) {
      const word = argv[token.index] ?? token.rawName;
      const within = word === token.rawName ? "" : ` (in "${word}")`;
      throw new UsageError("USAGE_UNKNOWN_OPTION", `unknown option "${token.rawName}"${within}`);
    }
    const spec: { readonly type: string; readonly multiple?: boolean } = OPTIONS[name];
    if (values[name] !== undefined && spec.multiple !== true) {
      throw new UsageError("USAGE_REPEATED_OPTION", `option --${name} is given more than once`);
    }
    if (spec.type === "boolean") {
      if (token.value !== undefined) {
        throw new UsageError(
          "USAGE_UNEXPECTED_VALUE",
          `--${name} takes no value (given "${token.value}")`,
        );
      }
      values[name] = true;
      continue;
    }
    const value = optionValue(name, token);
    const previous = values[name];
    values[name] = spec.multiple ? [...(Array.isArray(previous) ? previous : []), value] : value;
  }
  return values as OptionValues;
}

/** The value of one option token, as clap reads it (see {@link readOptions}). */
function optionValue(
  name: OptionName,
  token: { rawName: string; value?: string | undefined; inlineValue?: boolean | undefined },
): string {
  const { value, rawName } = token;
  const short = !rawName.startsWith("--");
  if (value === undefined) throw new UsageError("USAGE_MISSING_VALUE", `--${name} needs a value`);
  if (token.inlineValue) return short && value.startsWith("=") ? value.slice(1) : value;
  if (value.startsWith("-") && !/^-[0-9]/.test(value)) {
    throw new UsageError(
      "USAGE_MISSING_VALUE",
      `--${name} needs a value, not the option "${value}" (write --${name}=${value} for a value starting with "-")`,
    );
  }
  return value;
}

type SocketSource = Pick<DaemonConfig, "socketPath" | "socketCount" | "socketPaths" | "socketFds">;

/**
 * Where the sockets come from: -s (created), --socket-fd (inherited, explicit) or, when neither is
 * given, the service manager's LISTEN_FDS. A count from -c must match the fds given.
 */
function socketSource(
  values: {
    "socket-path"?: string | undefined;
    "socket-count"?: string | undefined;
    "socket-fd"?: string[] | undefined;
    client?: boolean | undefined;
    "socket-mode"?: string | undefined;
    "socket-group"?: string | undefined;
  },
  inherited: readonly number[] | undefined,
): SocketSource {
  const socketPath = values["socket-path"];
  const fdTexts = values["socket-fd"];
  if (socketPath !== undefined && fdTexts !== undefined) {
    throw new UsageError(
      "USAGE_SOCKET_CONFLICT",
      "--socket-path and --socket-fd exclude each other: the daemon either creates its sockets or is given them",
    );
  }
  if (socketPath !== undefined) {
    const socketCount = parseSocketCount(values["socket-count"]);
    return { socketPath, socketCount, socketPaths: socketPathsFor(socketPath, socketCount) };
  }
  const fds = fdTexts?.map(parseSocketFd) ?? inherited;
  if (fds === undefined || fds.length === 0) {
    throw new UsageError(
      "USAGE_MISSING_OPTION",
      "missing --socket-path (-s) (or --socket-fd, or sockets passed by the service manager)",
    );
  }
  if (new Set(fds).size !== fds.length) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_FD",
      `--socket-fd: an fd is given twice (${fds.join(", ")})`,
    );
  }
  if (fds.length > MAX_SOCKET_COUNT) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_COUNT",
      `${fds.length} sockets given: at most ${MAX_SOCKET_COUNT}`,
    );
  }
  const countText = values["socket-count"];
  if (countText !== undefined && parseSocketCount(countText) !== fds.length) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_COUNT",
      `--socket-count ${countText} does not match the ${fds.length} socket(s) given as fds`,
    );
  }
  for (const option of ["client", "socket-mode", "socket-group"] as const) {
    if (values[option] !== undefined) {
      throw new UsageError(
        "USAGE_SOCKET_CONFLICT",
        `--${option} applies to sockets the daemon creates, not to inherited ones (set SocketMode=/SocketGroup= in the socket unit)`,
      );
    }
  }
  return {
    socketPath: "",
    socketCount: fds.length,
    socketPaths: fds.map((fd) => `fd:${fd}`),
    socketFds: fds,
  };
}

/** Longest --control-idle-timeout, in seconds (a day). */
const MAX_CONTROL_IDLE_TIMEOUT_S = 86_400;

/** --control-idle-timeout <seconds> (fractions allowed) in ms; only with --control-socket. */
function parseControlIdleTimeout(text: string | undefined, hasControlSocket: boolean) {
  if (text === undefined) return undefined;
  if (!hasControlSocket) {
    throw new UsageError(
      "USAGE_BAD_CONTROL_IDLE_TIMEOUT",
      "--control-idle-timeout needs --control-socket",
    );
  }
  const seconds = /^[0-9]+(?:\.[0-9]+)?$/.test(text) ? Number(text) : Number.NaN;
  if (!(seconds > 0 && seconds <= MAX_CONTROL_IDLE_TIMEOUT_S)) {
    throw new UsageError(
      "USAGE_BAD_CONTROL_IDLE_TIMEOUT",
      `--control-idle-timeout "${text}" is not a number of seconds above 0 and up to ${MAX_CONTROL_IDLE_TIMEOUT_S}`,
    );
  }
  return Math.ceil(seconds * 1000);
}

/** Lowest fd accepted: 0-2 are stdin, stdout and stderr. */
const FIRST_SOCKET_FD = 3;

function parseSocketFd(text: string): number {
  const fd = /^[0-9]+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(fd) || fd < FIRST_SOCKET_FD || fd > 0x7fffffff) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_FD",
      `invalid --socket-fd "${text}": expected an open listening socket's fd number (${FIRST_SOCKET_FD} or more)`,
    );
  }
  return fd;
}

function parseLogFormat(text: string | undefined): LogFormat {
  if (text === undefined) return "plain";
  if (!isLogFormat(text)) {
    throw new UsageError(
      "USAGE_BAD_LOG_FORMAT",
      `invalid --log-format "${text}": expected one of ${LOG_FORMATS.join(", ")}`,
    );
  }
  return text;
}

function parseSocketCount(text: string | undefined): number {
  if (text === undefined) return 1;
  const count = /^[0-9]+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(count) || count < 1 || count > MAX_SOCKET_COUNT) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_COUNT",
      `invalid --socket-count "${text}": expected a whole number from 1 to ${MAX_SOCKET_COUNT}`,
    );
  }
  return count;
}

function socketPathsFor(prefix: string, count: number): string[] {
  if (prefix === "") throw new UsageError("USAGE_BAD_SOCKET_PATH", "--socket-path is empty");
  if (prefix.includes("\0")) {
    throw new UsageError("USAGE_BAD_SOCKET_PATH", "--socket-path contains a NUL byte");
  }
  if (prefix.endsWith("/")) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_PATH",
      `--socket-path "${prefix}" names a directory; give a file name prefix (sockets are <prefix>0, <prefix>1, ...)`,
    );
  }
  const paths = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
  checkSocketPath(paths.at(-1) ?? prefix, "socket path");
  return paths;
}

/** A Unix socket path must be non-empty, NUL-free and fit sun_path. `what` names it in messages. */
function checkSocketPath(path: string, what: string): void {
  if (path === "") throw new UsageError("USAGE_BAD_SOCKET_PATH", `${what} is empty`);
  if (path.includes("\0")) {
    throw new UsageError("USAGE_BAD_SOCKET_PATH", `${what} contains a NUL byte`);
  }
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_PATH",
      `${what} "${path}" is longer than ${MAX_SOCKET_PATH_BYTES} bytes (Unix socket limit)`,
    );
  }
}

function parseSocketMode(text: string | undefined, option: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^0?[0-7]{3}$/.test(text)) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_MODE",
      `invalid ${option} "${text}": expected octal permission bits such as 0660`,
    );
  }
  const mode = Number.parseInt(text, 8);
  if ((mode & 0o600) !== 0o600) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_MODE",
      `invalid ${option} "${text}": the owner needs read and write (0600) to use the socket`,
    );
  }
  return mode;
}

/** A user or group name or number, as /etc/passwd and /etc/group spell them. */
function isIdText(text: string): boolean {
  return text !== "" && !/[:\s]/.test(text);
}

function parseSocketGroup(text: string | undefined, option: string): string | undefined {
  if (text === undefined) return undefined;
  if (!isIdText(text)) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_GROUP",
      `invalid ${option} "${text}": expected a group name or number`,
    );
  }
  return text;
}

/** --packed-ring on|off (default on). */
function parsePackedRing(text: string | undefined): boolean {
  if (text === undefined || text === "on") return true;
  if (text === "off") return false;
  throw new UsageError(
    "USAGE_BAD_PACKED_RING",
    `invalid --packed-ring "${text}": expected on or off`,
  );
}

/** Longest timer Node can set (2^31 - 1 ms, about 24 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** --handshake-timeout <seconds>, decimals allowed; 0 means no limit. */
function handshakeTimeout(
  text: string | undefined,
  clientMode: boolean,
): { handshakeTimeoutMs?: number } {
  if (text === undefined) return {};
  const ms = /^[0-9]+(\.[0-9]+)?$/.test(text) ? Math.round(Number(text) * 1000) : Number.NaN;
  if (!(ms <= MAX_TIMER_MS)) {
    throw new UsageError(
      "USAGE_BAD_HANDSHAKE_TIMEOUT",
      `invalid --handshake-timeout "${text}": expected seconds (e.g. 20 or 0.5; 0 = no limit)`,
    );
  }
  if (clientMode) {
    throw new UsageError(
      "USAGE_BAD_HANDSHAKE_TIMEOUT",
      "--handshake-timeout applies to sockets the daemon listens on, not to --client",
    );
  }
  return { handshakeTimeoutMs: ms };
}

function parsePeerIds(texts: readonly string[] | undefined, option: string): string[] {
  for (const text of texts ?? []) {
    if (!isIdText(text)) {
      throw new UsageError(
        "USAGE_BAD_PEER",
        `invalid ${option} "${text}": expected a name or number`,
      );
    }
  }
  return [...(texts ?? [])];
}

function parseLockDir(text: string | undefined): string | undefined {
  if (text === "" || text?.includes("\0")) {
    throw new UsageError("USAGE_BAD_LOCK_DIR", "--lock-dir is empty or contains a NUL byte");
  }
  return text;
}

/** --user and --group: names or numbers, checked against the user database when the daemon starts. */
function parseRunAs(
  user: string | undefined,
  group: string | undefined,
): { runAs?: DaemonConfig["runAs"] } {
  for (const [option, text] of [
    ["--user", user],
    ["--group", group],
  ] as const) {
    if (text !== undefined && (text === "" || /[:\s\0]/.test(text))) {
      throw new UsageError(
        "USAGE_BAD_USER",
        `invalid ${option} "${text}": expected a name or number`,
      );
    }
  }
  if (user === undefined) {
    if (group === undefined) return {};
    throw new UsageError(
      "USAGE_BAD_USER",
      "--group needs --user: the daemon changes group only when it gives up root",
    );
  }
  return { runAs: { user, group } };
}

const SIZE_UNITS: Readonly<Record<string, number>> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** A size in bytes with an optional K/M/G suffix, greater than 0; undefined when not given. */
function parseOutputSize(
  text: string | undefined,
  option: string,
  needs: string,
): number | undefined {
  if (text === undefined) return undefined;
  const size = /^([0-9]+)([kmg]?)$/i.exec(text);
  const bytes = size ? Number(size[1]) * (SIZE_UNITS[(size[2] ?? "").toLowerCase()] ?? 1) : 0;
  if (!(bytes > 0 && Number.isSafeInteger(bytes))) {
    throw new UsageError(
      "USAGE_BAD_TRACE",
      `invalid ${option} "${text}": a size in bytes greater than 0 (K, M, G suffixes) with ${needs}`,
    );
  }
  return bytes;
}

/** A number of files in 1..MAX_FILES_LIMIT; undefined when not given. */
function parseOutputFiles(
  text: string | undefined,
  option: string,
  needs: string,
): number | undefined {
  if (text === undefined) return undefined;
  const count = /^[0-9]{1,3}$/.test(text) ? Number(text) : 0;
  if (count < 1 || count > MAX_FILES_LIMIT) {
    throw new UsageError(
      "USAGE_BAD_TRACE",
      `invalid ${option} "${text}": a number of files from 1 to ${MAX_FILES_LIMIT} with ${needs}`,
    );
  }
  return count;
}

/** --trace/--trace-file, --pcap and their size and file-count limits, present only when given. */
function observeOptions(values: {
  trace?: boolean | undefined;
  "trace-file"?: string | undefined;
  "trace-max-size"?: string | undefined;
  "trace-max-files"?: string | undefined;
  pcap?: string | undefined;
  "pcap-max-size"?: string | undefined;
  "pcap-max-files"?: string | undefined;
}): Pick<
  DaemonConfig,
  "trace" | "traceMaxSize" | "traceMaxFiles" | "pcap" | "pcapMaxSize" | "pcapMaxFiles"
> {
  const file = values["trace-file"];
  if (file !== undefined && (file === "" || values.trace)) {
    throw new UsageError("USAGE_BAD_TRACE", "--trace-file needs a file name and replaces --trace");
  }
  if (values.pcap === "") throw new UsageError("USAGE_BAD_TRACE", "--pcap is empty");
  // A limit without its file would be silently ignored: refuse it as an invalid value instead.
  const withPcap = (text: string | undefined) =>
    text !== undefined && values.pcap === undefined ? "" : text;
  const withTraceFile = (text: string | undefined) =>
    text !== undefined && file === undefined ? "" : text;
  const pcapMaxSize = parseOutputSize(
    withPcap(values["pcap-max-size"]),
    "--pcap-max-size",
    "--pcap",
  );
  const pcapMaxFiles = parseOutputFiles(
    withPcap(values["pcap-max-files"]),
    "--pcap-max-files",
    "--pcap",
  );
  const traceMaxSize = parseOutputSize(
    withTraceFile(values["trace-max-size"]),
    "--trace-max-size",
    "--trace-file",
  );
  const traceMaxFiles = parseOutputFiles(
    withTraceFile(values["trace-max-files"]),
    "--trace-max-files",
    "--trace-file",
  );
  const trace = file ?? (values.trace ? "-" : undefined);
  return {
    ...(trace !== undefined && { trace }),
    ...(traceMaxSize !== undefined && { traceMaxSize }),
    ...(traceMaxFiles !== undefined && { traceMaxFiles }),
    ...(values.pcap !== undefined && { pcap: values.pcap }),
    ...(pcapMaxSize !== undefined && { pcapMaxSize }),
    ...(pcapMaxFiles !== undefined && { pcapMaxFiles }),
  };
}

function parseLogLevel(text: string | undefined): LogLevel {
  if (text === undefined) return "info";
  if (!isLogLevel(text)) {
    throw new UsageError(
      "USAGE_BAD_LOG_LEVEL",
      `invalid --log-level "${text}": expected one of ${LOG_LEVELS.join(", ")}`,
    );
  }
  return text;
}

/**
 * What `--print-capabilities` prints (vhost-user "backend program conventions": a JSON object with
 * the backend type and its optional features, each a command-line capability).
 */
export const CAPABILITIES = {
  type: "i2c",
  features: ["socket-fd", "client", "config", "control-socket", "trace", "pcap", "log-format"],
} as const;

export const HELP: HelpDocument = {
  name: "vhost-device-i2c",
  summary: "vhost-user backend giving virtual machines a virtio-i2c bus",
  synopsis: [
    "vhost-device-i2c -s <socket-path> (-l <device-list> | --config <file>) [options]",
    "vhost-device-i2c --socket-fd <fd> (-l <device-list> | --config <file>) [options]",
    "vhost-device-i2c control <control-socket> <command> [arguments...]",
    "vhost-device-i2c demo",
    "vhost-device-i2c --print-capabilities | --help | --version",
  ],
  description: [
    "vhost-user backend giving virtual machines a virtio-i2c bus, on host I2C adapters (/dev/i2c-N)",
    "or on emulated devices. A VMM (QEMU's vhost-user-i2c-pci) connects to each socket; one socket",
    "serves one guest, which reaches only the devices listed for it.",
    "`vhost-device-i2c demo` needs no hardware and no VM: it starts the daemon on an emulated bus",
    "(a 24c02 EEPROM, an LM75) in a temporary directory, drives it with vi2c commands, printing",
    "each, and exits 0 when every step worked.",
  ],
  options: [
    detailed(
      term(
        "-s, --socket-path <path>",
        "socket prefix: serves <path>0 ... <path>N-1 (parent directory must exist)",
      ),
      "The directory must, like every directory above it, be writable only by its owner (root or",
      "the daemon's user) or be sticky like /tmp (exit 2 otherwise). A stale socket file is replaced;",
      'a socket another live process serves is left alone (exit 2, "in use", also when its listener',
      "never accepts). A path that cannot hold the socket (a missing directory, not a directory, one",
      "the daemon's user cannot reach or write to, or one that takes no files such as /proc) exits 2",
      "with a message naming the option and what is wrong.",
    ),
    detailed(
      term(
        "-c, --socket-count <n>",
        `number of sockets, one guest each (default 1, at most ${MAX_SOCKET_COUNT})`,
      ),
      'Sockets without their own list in the config file ("sockets") share the default list.',
    ),
    term("-l, --device-list <list>", "the devices the guests may reach (see Device list)"),
    detailed(
      term(
        "--config <file>",
        "more devices from a JSON file (models with options, backing files,",
        "user model modules); may be combined with -l",
      ),
      'See "Emulated devices" in the README. The file, every module and every directory above them',
      "must be writable by root or the daemon's user only.",
    ),
    term(
      "--scenario <file>",
      "play a JSON timeline of property changes and faults on emulated devices,",
      "from the first front-end connection (see docs/CONTROL.md)",
    ),
    term(
      "--socket-fd <fd>",
      "serve an inherited listening Unix socket instead of creating one; repeat",
      "for several sockets (socket index = order given); replaces -s",
    ),
    detailed(
      term(
        "--control-socket <path>",
        "serve run-time control commands on this Unix socket (mode 0600: the",
        "daemon's user only, unless --control-socket-mode/--control-socket-group)",
      ),
      "The commands list devices, get or set properties and read or write memory (docs/CONTROL.md);",
      "--socket-mode and --socket-group never apply to it.",
    ),
    term(
      "--control-idle-timeout <s>",
      "drop a control client that completes no command for this many seconds",
      "(idle, or not reading its replies; default 30, fractions allowed)",
    ),
    detailed(
      term(
        "--client",
        "connect to sockets the VMM listens on (QEMU -chardev ...,server=on),",
        "retrying until they exist and reconnecting after the VMM restarts; the",
        "directory must be writable only by its owner (or sticky) and the VMM must",
        "be root, the daemon's user or that directory's owner (--allow-peer-uid)",
      ),
      "A link at the path is not followed. The VMM is checked with SO_PEERCRED before any message;",
      "another peer is disconnected and tried again later.",
    ),
    detailed(
      term(
        "--socket-mode <mode>",
        "permissions of the vhost-user sockets the daemon creates, octal (default",
        "0600, 0660 with --socket-group); never applied to the control socket",
      ),
      "Exact whatever the umask: each socket is bound in a private directory, given its mode and",
      "group there, and renamed into place.",
    ),
    detailed(
      term(
        "--socket-group <group>",
        "group of the vhost-user sockets the daemon creates (name or number); its",
        "members may connect",
      ),
      "Members by primary or supplementary group. The daemon's user must be a member.",
    ),
    term(
      "--control-socket-mode <mode>",
      "permissions of the control socket, octal (default 0600, 0660 with",
      "--control-socket-group)",
    ),
    term("--control-socket-group <group>", "group of the control socket (name or number)"),
    term(
      "--allow-peer-uid <user>",
      "a user who may be the VMM besides root, the daemon's user and the socket",
      "file's owner (client mode: the owner of the VMM socket's directory), who",
      "may also own that directory; name or number, repeatable",
    ),
    term(
      "--allow-peer-gid <group>",
      "a group whose members may be the VMM besides the socket file's group when",
      "its mode admits the group; name or number, repeatable",
    ),
    term(
      "--client-unsafe-path",
      "with --client: connect even when the VMM socket's directory can be changed",
      "by others or the path is a symbolic link (the VMM is still checked)",
    ),
    detailed(
      term(
        "--lock-dir <dir>",
        "host-device lock files (default $VHOST_DEVICE_I2C_LOCK_DIR, else",
        "/run/vhost-device-i2c/locks, or $XDG_RUNTIME_DIR/vhost-device-i2c/locks when",
        "not started as root); created 0700 if missing; refused unless it belongs to",
        "root or the daemon's user and nobody else can write to it or search it",
      ),
      "Lock files are 0600. The directory is opened (and created) only when a host device is",
      "listed, by the user the daemon serves as (after --user): with emulated devices alone it is not",
      "used, and a bad path there goes unnoticed; with a host device a bad path exits 2 at start.",
    ),
    term(
      "--user <user>",
      "started as root: become this user (name or uid) once host adapters, locks,",
      "sockets and files are open; what is opened later (an adapter after an unplug,",
      "a --client reconnection, a new device on SIGHUP) is opened as that user, or fails",
    ),
    term(
      "--group <group>",
      "with --user: the group to become (name or gid; default the user's primary group;",
      "required with a numeric uid)",
    ),
    detailed(
      term(
        "--handshake-timeout <seconds>",
        "drop a front-end that has not finished the vhost-user set-up (SET_OWNER)",
        "this long after connecting (default 20; 0 = never; not with --client)",
      ),
      "Decimals allowed. QEMU sends SET_OWNER while it creates the device: raise the timeout when",
      "a chardev is added over QMP (chardev-add) and its device only later (device_add).",
    ),
    detailed(
      term("--trace", "one line per transfer on stdout, i2ctransfer syntax (logs stay on stderr)"),
      "Traces and captures: docs/OBSERVABILITY.md.",
    ),
    term(
      "--trace-file <file>",
      "the trace lines appended to <file> instead (mode 0600; its directory must be",
      "writable by root or the daemon's user only, or sticky; links are not followed)",
    ),
    term(
      "--trace-max-size <n>",
      "bytes per trace file (K/M/G suffix, default 64M); then <file> rotates to <file>.1",
    ),
    term("--trace-max-files <n>", "trace files kept, <file> included (1-100, default 2)"),
    term(
      "--pcap <file>",
      "every message as a pcap record for Wireshark (link type 209); the file is",
      "created as --trace-file's is, an existing one of the daemon's user emptied",
    ),
    term(
      "--pcap-max-size <n>",
      "bytes per capture file (K/M/G suffix, default 64M); then <file> rotates to <file>.1",
    ),
    term("--pcap-max-files <n>", "capture files kept, <file> included (1-100, default 2)"),
    detailed(
      term(
        "--log-level <level>",
        `${LOG_LEVELS.join("|")} (default info; debug shows each transfer)`,
      ),
      "trace also shows each vhost-user message. Logs go to stderr. Lines a guest, a VMM or another peer",
      "can cause are limited to 10 per second per source; the next line written says suppressed=N",
      "(or, when none follows within a second, a line of its own), and stats counts them",
      "(logSuppressed).",
    ),
    term(
      "--log-format <format>",
      `${LOG_FORMATS.join("|")}: text lines (default) or one JSON object per line`,
      "(time, level, context, message, fields)",
    ),
    term(
      "--allow-unsealed-memory",
      "accept guest memory that is not sealed against shrinking (F_SEAL_SHRINK;",
      "QEMU's memory-backend-memfd seals by default). Then one VMM that shrinks",
      "its memory file kills the daemon, and every guest's service with it",
    ),
    detailed(
      term(
        "--fd-store",
        "keep every connection's fds and state in the service manager's fd store",
        "(systemd FileDescriptorStoreMax=, via $NOTIFY_SOCKET): restarted after a crash",
        "(Restart=always), the daemon resumes every guest where its rings stand",
      ),
      "Kept: every listening socket and, per connection, its socket, guest memory, eventfds and a",
      'journal (a state memfd). See "Restarting or upgrading the daemon under a running guest" in',
      "the README.",
    ),
    term(
      "--packed-ring <on|off>",
      "offer the packed virtqueue layout (VIRTIO_F_RING_PACKED; default on). QEMU 10",
      "gives the guest exactly what is offered, so a Linux guest then runs a packed",
      "ring; off keeps it on the split ring. QEMU 7.2 asks by its own packed=",
      "property: with off, start it without packed=on (else the connection is refused)",
    ),
    term(
      "--print-capabilities",
      'print the backend capabilities as JSON ({"type":"i2c",...}) and exit',
    ),
    term("-h, --help", "show this help"),
    term("-V, --version", "show the version"),
  ],
  sections: [
    {
      title: "Device list",
      body: [
        'Groups separated by ",", each "<bus>:<device>[:<device>...]".',
        term(
          "<bus>",
          "a host adapter by number (3 means /dev/i2c-3) or by its sysfs name",
          '(/sys/bus/i2c/devices/i2c-N/name), or "sim" for emulated devices',
        ),
        term(
          "<device>",
          "on a host adapter: <addr>, or <host-addr>@<guest-addr> to show it elsewhere;",
          'on "sim": <addr>=<model> (default options, models below);',
          'either may end in "=ro": read-only (reads, and a 1-byte register address right before a',
          'read), or in "=ro16": the same with a 2-byte word address (24c32 and larger EEPROMs)',
        ),
        term("<addr>", "7-bit address, decimal (80) or hexadecimal (0x50)"),
        term("models", MODEL_NAMES.join(", ")),
        "A guest address may appear only once in the whole list and config file; guests reach nothing else.",
        'The list serves every socket that has no list of its own in the config file ("sockets").',
      ],
    },
    {
      title: "Control socket",
      body: [
        "With --control-socket, `vhost-device-i2c control <path> <command>` sends one command:",
        ...Object.values(CONTROL_USAGE).map((usage) => term(usage, controlCommandText(usage))),
      ],
    },
    {
      title: "Signals",
      body: [
        "SIGHUP reloads --config for new connections; SIGTERM/SIGINT finish or fail transfers and stop.",
        "SIGUSR2 hands every socket and connection over to a successor: the installed program,",
        "started with the same arguments, serves on without a disconnect (an upgrade, or a change",
        "SIGHUP cannot apply); transfers in flight finish first. If the successor fails to start,",
        "this process serves on. The VMM notices nothing (QEMU 9.0 and later cannot take a",
        "back-end's reconnect: this is the way to restart under them). Not with --user.",
      ],
    },
    {
      title: "Running as a service",
      body: [
        "Listening sockets passed by a service manager (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES; fds",
        "from 3) are served when neither -s nor --socket-fd is given. Readiness is reported with",
        "READY=1 and STATUS= to $NOTIFY_SOCKET (systemd Type=notify). Logs go to stderr (stdout is",
        "for --trace); under journald each line starts with its syslog priority. Unit files:",
        "contrib/systemd/ in the package.",
      ],
    },
    {
      title: "Exit status",
      body: [
        term("0", "stopped by SIGTERM/SIGINT, or --help, --version, --print-capabilities"),
        term("1", "any other failure"),
        term(
          "2",
          "the command line, device list, config file, a model module or a path cannot be used, or a",
          "host device or socket belongs to another process (locked, in use)",
        ),
      ],
    },
  ],
  examples: [
    {
      command: "vhost-device-i2c -s /tmp/vi2c.sock -l sim:0x50=24c02",
      text: "one emulated 24c02 EEPROM at 0x50, socket /tmp/vi2c.sock0",
    },
    {
      command: "vhost-device-i2c -s /run/vi2c.sock -c 2 -l 6:32:41,7:0x36",
      text: "adapters /dev/i2c-6 (0x20, 0x29) and /dev/i2c-7 (0x36), sockets /run/vi2c.sock0 and 1",
    },
    {
      command: 'vhost-device-i2c -s /run/vi2c.sock -l "SMBus I801 adapter at efa0:0x50:0x51"',
      text: "an adapter given by name",
    },
    {
      command: "vhost-device-i2c --client -s /run/qemu-i2c.sock -l sim:0x50=24c02",
      text: "connect to QEMU's -chardev socket,path=/run/qemu-i2c.sock0,server=on",
    },
    {
      command:
        "vhost-device-i2c -s /run/vi2c.sock -l 6:0x20 --config devices.json --control-socket /run/vi2c.ctl",
      text: "a host adapter plus the devices in devices.json, controllable at run time",
    },
    {
      command:
        'vhost-device-i2c -s /run/vi2c.sock -l "0:0x52@0x42=ro" --socket-mode 0660 --socket-group kvm',
      text: "host 0x52 on /dev/i2c-0 at guest address 0x42, read-only; sockets for group kvm only",
    },
    {
      command: "vhost-device-i2c control /run/vi2c.ctl set 0x48 temperature 42.5",
      text: "change an emulated LM75's temperature while the guest runs",
    },
    {
      command: "vhost-device-i2c control /run/vi2c.ctl stats",
      text: "transfer, byte and error counters and latency histograms per guest and device (JSON)",
    },
    {
      command: "vhost-device-i2c -s /tmp/vi2c.sock -l sim:0x50=24c02 --trace --log-format json",
      text: "trace lines on stdout, JSON log lines on stderr",
    },
    {
      command: "systemctl enable --now vhost-device-i2c@vm1.socket",
      text: "socket activation with contrib/systemd/ (devices in /etc/vhost-device-i2c/vm1.conf)",
    },
  ],
  seeAlso: ["vi2c(1)", "i2ctransfer(8)", "systemd.socket(5)"],
};

function controlCommandText(usage: string): string {
  const name = usage.split(" ")[0] ?? usage;
  const texts: Readonly<Record<string, string>> = {
    help: "the commands the daemon understands",
    list: "every device: guest, address, model or host adapter",
    stats: "counters per guest and device: transfers, bytes, errors, latency histogram (JSON)",
    get: "read a property of an emulated device",
    set: "change a property of an emulated device",
    read: "read bytes from an emulated device's memory",
    write: "write bytes (hex) into an emulated device's memory",
  };
  return texts[name] ?? "";
}
