/**
 * Command-line parsing for the daemon: argv → a validated {@link CliCommand}. Pure: no I/O, no
 * process exit, no logging; adapter names are resolved through the injected lookup. Messages and exit
 * codes are decided by main.ts, which turns a {@link UsageError} into exit status 2.
 * Options follow rust-vmm's vhost-device-i2c (`-s` socket prefix, `-c` count, `-l` device list);
 * `--config FILE` adds devices from a JSON file (read by src/config/file.ts, not here) and
 * `vhost-device-i2c control PATH CMD...` is the control-socket client.
 * @module
 */

import { parseArgs } from "node:util";
import { type DeviceGroup, parseDeviceList } from "../i2c/device-list.js";
import { MODEL_NAMES } from "../i2c/model.js";
import { isLogLevel, LOG_LEVELS, type LogLevel } from "../log.js";

/** Most sockets one daemon serves: each needs fds and a connection state. */
export const MAX_SOCKET_COUNT = 64;

export interface DaemonConfig {
  /** Prefix given with -s; the daemon serves `${socketPath}${i}` for i in 0..socketCount-1. */
  readonly socketPath: string;
  readonly socketCount: number;
  /** The socket files, in order: socketPaths[i] belongs to socket index i. */
  readonly socketPaths: readonly string[];
  /** The -l text as given (for logs); "" when -l was not given. */
  readonly deviceListText: string;
  /** The parsed -l groups; empty when -l was not given (then --config lists the devices). */
  readonly deviceGroups: readonly DeviceGroup[];
  /** --config FILE as given: a JSON device configuration, loaded at start-up. */
  readonly configFile: string | undefined;
  /** --control-socket PATH: where the run-time control socket listens. */
  readonly controlSocket: string | undefined;
  readonly logLevel: LogLevel;
  /** Connect to sockets the VMM listens on instead of listening ourselves. */
  readonly clientMode: boolean;
  /** --trace (`-`, stdout) or --trace-file FILE: one line per transfer (docs/OBSERVABILITY.md). */
  readonly trace?: string;
  /** --pcap FILE: every message as a LINKTYPE_I2C_LINUX record. */
  readonly pcap?: string;
  /** --pcap-max-size: bytes per capture file before it rotates to FILE.1. */
  readonly pcapMaxSize?: number;
  /** --socket-mode: permission bits for every socket the daemon creates (e.g. 0o660). */
  readonly socketMode: number | undefined;
  /** --socket-group: group (name or number) given to every socket the daemon creates. */
  readonly socketGroup: string | undefined;
  /** --lock-dir: where host-device lock files live (default: env, then /run/lock/...). */
  readonly lockDir: string | undefined;
}

export type CliCommand =
  | { readonly kind: "help" }
  | { readonly kind: "version" }
  | { readonly kind: "run"; readonly config: DaemonConfig }
  /** `control PATH CMD...`: send one command to a running daemon's control socket. */
  | { readonly kind: "control"; readonly socketPath: string; readonly words: readonly string[] };

/** The first argument that selects the control-socket client instead of the daemon. */
export const CONTROL_SUBCOMMAND = "control";

export type UsageErrorCode =
  | "USAGE_BAD_TRACE"
  | "USAGE_UNKNOWN_OPTION"
  | "USAGE_UNEXPECTED_ARGUMENT"
  | "USAGE_MISSING_VALUE"
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
  | "USAGE_BAD_LOCK_DIR";

/** The command line cannot be run. `message` is meant for the user as is. */
export class UsageError extends Error {
  readonly code: UsageErrorCode;
  constructor(code: UsageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UsageError";
    this.code = code;
  }
}

export interface ParseDeps {
  /** Adapter name (as in /sys/bus/i2c/devices/i2c-N/name) → adapter number; throws when not exactly one. */
  readonly resolveAdapter: (name: string) => number;
}

const OPTIONS = {
  "socket-path": { type: "string", short: "s" },
  "socket-count": { type: "string", short: "c" },
  "device-list": { type: "string", short: "l" },
  config: { type: "string" },
  "control-socket": { type: "string" },
  "log-level": { type: "string" },
  client: { type: "boolean" },
  trace: { type: "boolean" },
  "trace-file": { type: "string" },
  pcap: { type: "string" },
  "pcap-max-size": { type: "string" },
  "socket-mode": { type: "string" },
  "socket-group": { type: "string" },
  "lock-dir": { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/** Longest socket path that fits sockaddr_un.sun_path (108 bytes with the NUL). */
const MAX_SOCKET_PATH_BYTES = 107;

const PARSE_ARGS_CODES: Readonly<Record<string, UsageErrorCode>> = {
  ERR_PARSE_ARGS_UNKNOWN_OPTION: "USAGE_UNKNOWN_OPTION",
  ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL: "USAGE_UNEXPECTED_ARGUMENT",
  ERR_PARSE_ARGS_INVALID_OPTION_VALUE: "USAGE_MISSING_VALUE",
};

export function parseCommandLine(argv: readonly string[], deps: ParseDeps): CliCommand {
  if (argv[0] === CONTROL_SUBCOMMAND) return parseControlCommand(argv.slice(1));
  let parsed: ReturnType<typeof parseArgsStrict>;
  try {
    parsed = parseArgsStrict(argv);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const usageCode = typeof code === "string" ? PARSE_ARGS_CODES[code] : undefined;
    if (usageCode) throw new UsageError(usageCode, (err as Error).message, { cause: err });
    throw err;
  }
  const { values, tokens } = parsed;

  const seen = new Set<string>();
  for (const token of tokens) {
    if (token.kind !== "option") continue;
    if (seen.has(token.name)) {
      throw new UsageError(
        "USAGE_REPEATED_OPTION",
        `option --${token.name} is given more than once`,
      );
    }
    seen.add(token.name);
  }

  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };

  const socketPath = values["socket-path"];
  if (socketPath === undefined) {
    throw new UsageError("USAGE_MISSING_OPTION", "missing --socket-path (-s)");
  }
  const deviceListText = values["device-list"];
  const configFile = values.config;
  if (deviceListText === undefined && configFile === undefined) {
    throw new UsageError("USAGE_MISSING_OPTION", "missing --device-list (-l) or --config");
  }
  if (configFile === "") throw new UsageError("USAGE_BAD_CONFIG_PATH", "--config is empty");
  const controlSocket = values["control-socket"];
  if (controlSocket !== undefined) checkSocketPath(controlSocket, "--control-socket");
  const socketCount = parseSocketCount(values["socket-count"]);
  const socketPaths = socketPathsFor(socketPath, socketCount);
  const logLevel = parseLogLevel(values["log-level"]);

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

  return {
    kind: "run",
    config: {
      socketPath,
      socketCount,
      socketPaths,
      deviceListText: deviceListText ?? "",
      deviceGroups,
      configFile,
      controlSocket,
      logLevel,
      clientMode: values.client === true,
      ...observeOptions(values),
      socketMode: parseSocketMode(values["socket-mode"]),
      socketGroup: parseSocketGroup(values["socket-group"]),
      lockDir: parseLockDir(values["lock-dir"]),
    },
  };
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

function parseArgsStrict(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    options: OPTIONS,
    strict: true,
    allowPositionals: false,
    tokens: true,
  });
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

function parseSocketMode(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^0?[0-7]{3}$/.test(text)) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_MODE",
      `invalid --socket-mode "${text}": expected octal permission bits such as 0660`,
    );
  }
  const mode = Number.parseInt(text, 8);
  if ((mode & 0o600) !== 0o600) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_MODE",
      `invalid --socket-mode "${text}": the owner needs read and write (0600) to use the socket`,
    );
  }
  return mode;
}

function parseSocketGroup(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  if (text === "" || /[:\s]/.test(text)) {
    throw new UsageError(
      "USAGE_BAD_SOCKET_GROUP",
      `invalid --socket-group "${text}": expected a group name or number`,
    );
  }
  return text;
}

function parseLockDir(text: string | undefined): string | undefined {
  if (text === "" || text?.includes("\0")) {
    throw new UsageError("USAGE_BAD_LOCK_DIR", "--lock-dir is empty or contains a NUL byte");
  }
  return text;
}

const SIZE_UNITS: Readonly<Record<string, number>> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** --trace/--trace-file, --pcap and --pcap-max-size, present only when given. */
function observeOptions(values: {
  trace?: boolean | undefined;
  "trace-file"?: string | undefined;
  pcap?: string | undefined;
  "pcap-max-size"?: string | undefined;
}): { trace?: string; pcap?: string; pcapMaxSize?: number } {
  const file = values["trace-file"];
  if (file !== undefined && (file === "" || values.trace)) {
    throw new UsageError("USAGE_BAD_TRACE", "--trace-file needs a file name and replaces --trace");
  }
  if (values.pcap === "") throw new UsageError("USAGE_BAD_TRACE", "--pcap is empty");
  const sizeText = values["pcap-max-size"];
  const size = /^([0-9]+)([kmg]?)$/i.exec(sizeText ?? "");
  if (sizeText !== undefined && (!size || values.pcap === undefined)) {
    throw new UsageError(
      "USAGE_BAD_TRACE",
      `invalid --pcap-max-size "${sizeText}": a size in bytes (K, M, G suffixes) with --pcap`,
    );
  }
  const trace = file ?? (values.trace ? "-" : undefined);
  return {
    ...(trace !== undefined && { trace }),
    ...(values.pcap !== undefined && { pcap: values.pcap }),
    ...(size && {
      pcapMaxSize: Number(size[1]) * (SIZE_UNITS[(size[2] ?? "").toLowerCase()] ?? 1),
    }),
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

export const USAGE = `Usage: vhost-device-i2c -s <socket-path> (-l <device-list> | --config <file>) [options]
       vhost-device-i2c control <control-socket> <command> [arguments...]

vhost-user backend giving virtual machines a virtio-i2c bus, on host I2C adapters (/dev/i2c-N)
or on emulated devices.

Options:
  -s, --socket-path <path>   socket prefix: serves <path>0 ... <path>N-1 (parent directory must exist)
  -c, --socket-count <n>     number of sockets, one guest each (default 1, at most ${MAX_SOCKET_COUNT})
  -l, --device-list <list>   the devices the guests may reach (see below)
      --config <file>        more devices from a JSON file (models with options, backing files,
                             user model modules); may be combined with -l
      --control-socket <path> serve run-time control commands on this Unix socket
      --client               connect to sockets the VMM listens on (QEMU -chardev ...,server=on),
                             retrying until they exist and reconnecting after the VMM restarts
      --socket-mode <mode>   permissions of the sockets the daemon creates, octal (e.g. 0660)
      --socket-group <group> group of the sockets the daemon creates (name or number)
      --lock-dir <dir>       host-device lock files (default $VHOST_DEVICE_I2C_LOCK_DIR, else
                             /run/lock/vhost-device-i2c; created if missing)
      --trace                one line per transfer on stdout, i2ctransfer syntax (logs stay on stderr)
      --trace-file <file>    the trace lines appended to <file> instead
      --pcap <file>          every message as a pcap record for Wireshark (link type 209)
      --pcap-max-size <n>    bytes per capture file (K/M/G suffix); then <file> rotates to <file>.1
      --log-level <level>    ${LOG_LEVELS.join("|")} (default info; debug shows each transfer)
  -h, --help                 show this help
  -V, --version              show the version

Device list: groups separated by ",", each "<bus>:<device>[:<device>...]".
  <bus>    a host adapter by number (3 means /dev/i2c-3) or by its sysfs name
           (/sys/bus/i2c/devices/i2c-N/name), or "sim" for emulated devices
  <device> on a host adapter: <addr>, or <host-addr>@<guest-addr> to show it elsewhere;
           on "sim": <addr>=<model> (default options), models: ${MODEL_NAMES.join(", ")};
           either may end in "=ro": read-only (reads, and a 1-2 byte register address before a read)
  <addr>   7-bit address, decimal (80) or hexadecimal (0x50)
A guest address may appear only once in the whole list and config file; guests reach nothing else.
The list serves every socket that has no list of its own in the config file ("sockets").
SIGHUP reloads --config for new connections; SIGTERM/SIGINT finish or fail transfers and stop.

Control commands: list, get <addr> <property>, set <addr> <property> <value>,
  read <addr> <offset> <length>, write <addr> <offset> <hex>

Examples:
  vhost-device-i2c -s /tmp/vi2c.sock -l sim:0x50=24c02
      one emulated 24c02 EEPROM at 0x50, socket /tmp/vi2c.sock0
  vhost-device-i2c -s /run/vi2c.sock -c 2 -l 6:32:41,7:0x36
      adapters /dev/i2c-6 (0x20, 0x29) and /dev/i2c-7 (0x36), sockets /run/vi2c.sock0 and 1
  vhost-device-i2c -s /run/vi2c.sock -l "SMBus I801 adapter at efa0:0x50:0x51"
      an adapter given by name
  vhost-device-i2c --client -s /run/qemu-i2c.sock -l sim:0x50=24c02
      connect to QEMU's -chardev socket,path=/run/qemu-i2c.sock0,server=on
  vhost-device-i2c -s /run/vi2c.sock -l 6:0x20 --config devices.json --control-socket /run/vi2c.ctl
      a host adapter plus the devices in devices.json, controllable at run time
  vhost-device-i2c -s /run/vi2c.sock -l "0:0x52@0x42=ro" --socket-mode 0660 --socket-group kvm
      host 0x52 on /dev/i2c-0 at guest address 0x42, read-only; sockets for group kvm only
  vhost-device-i2c control /run/vi2c.ctl set 0x48 temperature 42.5
`;
