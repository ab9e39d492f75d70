/**
 * Control socket: a Unix stream socket (mode 0600) where operators read and change emulated devices
 * while the guest runs. One command per line, one reply line per command, many clients at once.
 * Owns the listening socket, its file and the client connections; runs each command against the
 * DeviceDirectory its source returns at that moment (so it follows configuration reloads), and
 * `stats` against the transfer counters it is given. Must not: block the event loop, let a client
 * crash the daemon or grow memory without bound, or know any model (it sees only SimDevice
 * properties and memory).
 * @module
 */

import { chmodSync, unlinkSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import type { DeviceDirectory, DirectoryEntry } from "../config/devices.js";
import { type Logger, silentLogger } from "../log.js";
import { hasCode } from "../sys/errors.js";
import { claimSocketPath, ServerError } from "../vhost-user/server.js";
import {
  type Command,
  type CommandResult,
  ControlError,
  type DeviceRef,
  formatAddress,
  formatDeviceRef,
  formatError,
  formatHex,
  formatOk,
  HELP_TEXT,
  MAX_LINE_BYTES,
  parseLine,
} from "./protocol.js";

export interface ControlServerOptions {
  logger?: Logger;
  /** Most clients connected at once (default 64); more are refused. */
  maxClients?: number;
  /** The `stats` reply (transfer counters); without it `stats` answers ENOSTATS. */
  stats?: StatsSource;
}

/** A JSON-ready snapshot of the transfer counters, taken when `stats` is asked. */
export type StatsSource = () => unknown;

/** The emulated devices to serve, asked again for every command (the daemon's current configuration). */
export type DirectorySource = () => DeviceDirectory;

/** One entry of the `list` reply. */
export interface DeviceSummary {
  /** What commands may call it: the bare address when no other device has it, else `guest:address`. */
  readonly name: string;
  readonly address: string;
  /** The guests (socket indexes) that see this device. */
  readonly guests: readonly number[];
  readonly model: string;
  readonly properties: Record<string, number | string | boolean>;
  readonly memorySize: number | null;
}

/** `1:0x48` for an entry: its first guest qualifies it. */
function qualifiedName(entry: DirectoryEntry): string {
  return formatDeviceRef({ addr: entry.address, guest: entry.sockets[0] ?? 0 });
}

/** The shortest name that picks `entry` out of `directory`. */
function nameOf(directory: DeviceDirectory, entry: DirectoryEntry): string {
  const alone = directory.every((other) => other === entry || other.address !== entry.address);
  return alone ? formatAddress(entry.address) : qualifiedName(entry);
}

function describeGuests(sockets: readonly number[]): string {
  return `guest${sockets.length === 1 ? "" : "s"} ${sockets.join(",")}`;
}

/** The one device `ref` names. Throws ENODEV, or EAMBIGUOUS listing the qualified names. */
function lookup(directory: DeviceDirectory, ref: DeviceRef): DirectoryEntry {
  const { addr, guest } = ref;
  const found = directory.filter(
    (entry) => entry.address === addr && (guest === undefined || entry.sockets.includes(guest)),
  );
  const [only, ...others] = found;
  if (only === undefined) {
    throw new ControlError(
      "ENODEV",
      guest === undefined
        ? `no emulated device at ${formatAddress(addr)}`
        : `guest ${guest} has no emulated device at ${formatAddress(addr)}`,
    );
  }
  if (others.length > 0) {
    const names = found.map(
      (entry) => `${qualifiedName(entry)} (${entry.model}, ${describeGuests(entry.sockets)})`,
    );
    throw new ControlError(
      "EAMBIGUOUS",
      `${formatAddress(addr)} names ${found.length} emulated devices, one per guest list; name one as <guest>:<address>: ${names.join(", ")}`,
    );
  }
  return only;
}

function property(directory: DeviceDirectory, ref: DeviceRef, name: string) {
  const properties = lookup(directory, ref).device.properties ?? {};
  const found = Object.hasOwn(properties, name) ? properties[name] : undefined;
  if (found === undefined) {
    const known = Object.keys(properties);
    throw new ControlError(
      "ENOPROP",
      `${formatDeviceRef(ref)} has no property "${name}" (known: ${known.length ? known.join(", ") : "none"})`,
    );
  }
  return found;
}

function memoryRange(directory: DeviceDirectory, ref: DeviceRef, offset: number, length: number) {
  const memory = lookup(directory, ref).device.memory;
  if (memory === undefined) {
    throw new ControlError("ENOMEM", `${formatDeviceRef(ref)} has no memory`);
  }
  if (offset + length > memory.size) {
    throw new ControlError(
      "ERANGE",
      `${length} byte(s) at offset ${offset} exceed the ${memory.size}-byte memory of ${formatDeviceRef(ref)}`,
    );
  }
  return memory;
}

/** Runs model code: a ModelError (or any error naming a code) is the model refusing, EINVAL. */
function callModel<T>(what: string, call: () => T): T {
  try {
    return call();
  } catch (error) {
    if (error instanceof ControlError) throw error;
    const message = error instanceof Error ? error.message : String(error);
    const refused = error instanceof Error && "code" in error;
    throw new ControlError(refused ? "EINVAL" : "EMODEL", `${what}: ${message}`);
  }
}

function summarize(directory: DeviceDirectory): DeviceSummary[] {
  return directory.map((entry) => {
    const properties: Record<string, number | string | boolean> = {};
    for (const [name, prop] of Object.entries(entry.device.properties ?? {})) {
      properties[name] = callModel(`${name}.get`, () => prop.get());
    }
    return {
      name: nameOf(directory, entry),
      address: formatAddress(entry.address),
      guests: entry.sockets,
      model: entry.model,
      properties,
      memorySize: entry.device.memory?.size ?? null,
    };
  });
}

/**
 * Runs one command against the directory. Throws ControlError for anything the client should hear
 * about; logs every state change at info.
 */
export function executeCommand(
  directory: DeviceDirectory,
  command: Command,
  logger: Logger,
  stats?: StatsSource,
): CommandResult {
  switch (command.cmd) {
    case "help":
      return { text: HELP_TEXT, value: HELP_TEXT };
    case "stats": {
      if (stats === undefined) {
        throw new ControlError("ENOSTATS", "this daemon keeps no transfer counters");
      }
      const value = stats();
      return { text: JSON.stringify(value), value };
    }
    case "list": {
      const list = summarize(directory);
      return { text: JSON.stringify(list), value: list };
    }
    case "get": {
      const prop = property(directory, command, command.property);
      const value = callModel(command.property, () => prop.get());
      return { text: String(value), value };
    }
    case "set": {
      const prop = property(directory, command, command.property);
      const setter = prop.set;
      if (setter === undefined) {
        throw new ControlError("EREADONLY", `property "${command.property}" is read-only`);
      }
      callModel(`cannot set ${command.property}`, () => setter.call(prop, command.value));
      const value = callModel(command.property, () => prop.get());
      logger.info(`control set ${formatDeviceRef(command)} ${command.property}=${String(value)}`);
      return { text: String(value), value };
    }
    case "read": {
      const { offset, length } = command;
      const memory = memoryRange(directory, command, offset, length);
      const bytes = callModel("read", () => memory.read(offset, length));
      const hex = formatHex(bytes);
      return { text: hex, value: hex };
    }
    case "write": {
      const { offset, data } = command;
      const memory = memoryRange(directory, command, offset, data.length);
      callModel("write", () => memory.write(offset, data));
      logger.info(
        `control write ${formatDeviceRef(command)} offset=${offset} length=${data.length}`,
      );
      return { text: String(data.length), value: data.length };
    }
  }
}

/** Parses and runs one line; returns the reply line (with newline), or null for a blank line. */
export function handleLine(
  directory: DeviceDirectory,
  line: string,
  logger: Logger,
  stats?: StatsSource,
): string | null {
  const parsed = parseLine(line);
  if (parsed === null) return null;
  const { format, command } = parsed;
  if (command instanceof ControlError) return formatError(command, format);
  try {
    return formatOk(executeCommand(directory, command, logger, stats), format);
  } catch (error) {
    if (error instanceof ControlError) {
      if (error.code === "EMODEL") logger.warn("model failed", { error: error.message });
      return formatError(error, format);
    }
    throw error;
  }
}

/** handleLine that never throws: a bug is answered and logged, never a daemon crash. */
function answerLine(
  directory: DirectorySource,
  line: string,
  logger: Logger,
  stats?: StatsSource,
): string | null {
  try {
    return handleLine(directory(), line, logger, stats);
  } catch (error) {
    logger.error("control command failed", { error: String(error) });
    return formatError(new ControlError("EMODEL", "internal error"), "text");
  }
}

/** One client: splits its bytes into lines, answers each, pauses while its replies are unread. */
function serveClient(
  socket: Socket,
  directory: DirectorySource,
  logger: Logger,
  stats?: StatsSource,
): void {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const reply = (line: string) => {
    // Backpressure: a client that sends but never reads stops being read instead of filling memory.
    if (!socket.write(line)) {
      socket.pause();
      socket.once("drain", () => socket.resume());
    }
  };
  socket.on("data", (chunk: Buffer) => {
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(0x0a, start);
      if (newline < 0) break;
      const piece = chunk.subarray(start, newline);
      start = newline + 1;
      if (pendingBytes + piece.length > MAX_LINE_BYTES) {
        tooLong();
        return;
      }
      const line = Buffer.concat([...pending, piece]).toString("utf8");
      pending = [];
      pendingBytes = 0;
      const answer = answerLine(directory, line, logger, stats);
      if (answer !== null) reply(answer);
      if (socket.destroyed) return;
    }
    const rest = chunk.subarray(start);
    if (pendingBytes + rest.length > MAX_LINE_BYTES) {
      tooLong();
      return;
    }
    if (rest.length > 0) {
      pending.push(rest);
      pendingBytes += rest.length;
    }
  });
  const tooLong = () => {
    logger.warn("control client sent a line over the limit; disconnecting", {
      limit: MAX_LINE_BYTES,
    });
    socket.end(
      formatError(new ControlError("ETOOLONG", `line longer than ${MAX_LINE_BYTES} bytes`), "text"),
    );
    socket.removeAllListeners("data");
    pending = [];
    pendingBytes = 0;
  };
  // An unfinished last line is dropped: the client went away before sending its newline.
  socket.on("end", () => socket.end());
  socket.on("error", (error) => logger.debug("control client error", { error: error.message }));
}

/** The control socket of a running daemon. */
export class ControlServer {
  readonly path: string;
  readonly #server: Server;
  readonly #clients = new Set<Socket>();
  readonly #logger: Logger;
  readonly #stats: StatsSource | undefined;
  #closed = false;

  private constructor(path: string, server: Server, logger: Logger, stats?: StatsSource) {
    this.path = path;
    this.#server = server;
    this.#logger = logger;
    this.#stats = stats;
  }

  /**
   * Listens on `path` (created with mode 0600), serving the devices `directory` returns at each
   * command. Synchronous like the vhost-user servers: throws
   * ServerError (ENOENT, EEXIST, EADDRINUSE, ELISTEN) before returning if the path cannot be used.
   */
  static listen(
    path: string,
    directory: DirectorySource,
    options: ControlServerOptions = {},
  ): ControlServer {
    const logger = options.logger ?? silentLogger;
    claimSocketPath(path);
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: false });
    server.maxConnections = options.maxClients ?? 64;
    const control = new ControlServer(path, server, logger, options.stats);
    server.on("connection", (socket) => control.#accept(socket, directory));
    server.on("drop", () => logger.warn("control socket: too many clients, one refused"));
    server.on("error", (error) => logger.error("control socket failed", { error: error.message }));
    // Node binds a path synchronously; the umask makes the file 0600 from the first instant.
    const umask = process.umask(0o177);
    try {
      server.listen(path);
    } finally {
      process.umask(umask);
    }
    if (!server.listening) {
      server.close();
      throw new ServerError("ELISTEN", path, `cannot listen on ${path}`);
    }
    chmodSync(path, 0o600);
    logger.info("control socket listening", { path });
    return control;
  }

  /** Clients connected now. */
  get clientCount(): number {
    return this.#clients.size;
  }

  /** Stops listening, disconnects every client and removes the socket file. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const socket of this.#clients) socket.destroy();
    this.#clients.clear();
    try {
      unlinkSync(this.path);
    } catch (error) {
      if (!hasCode(error, "ENOENT")) {
        this.#logger.warn("cannot remove control socket", { error: String(error) });
      }
    }
  }

  #accept(socket: Socket, directory: DirectorySource): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    this.#clients.add(socket);
    socket.on("close", () => this.#clients.delete(socket));
    serveClient(socket, directory, this.#logger, this.#stats);
  }
}
