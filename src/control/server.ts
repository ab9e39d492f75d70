/**
 * Control socket: a Unix stream socket (mode 0600 unless configured) where operators read and change emulated devices
 * while the guest runs. One command per line, one reply line per command, many clients at once.
 * Owns the listening socket, its file and the client connections; runs each command against the
 * DeviceDirectory its source returns at that moment (so it follows configuration reloads), and
 * `stats` against the transfer counters it is given. Must not: block the event loop, let a client
 * crash the daemon or grow memory without bound, or know any model (it sees only SimDevice
 * properties and memory).
 * @module
 */

import { createServer, type Server, type Socket } from "node:net";
import type { DeviceDirectory, DirectoryEntry } from "../config/devices.js";
import { type Logger, rateLimitedLogger, silentLogger } from "../log.js";
import { sysCall } from "../sys/errors.js";
import { native } from "../sys/native.js";
import { socketPeerCredentials } from "../sys/peer-credentials.js";
import { SocketFile, type SocketFileAccess, SocketFileError } from "../sys/socket-file.js";
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
  /**
   * Most clients connected at once (default 64). When full, the operator (the daemon's uid or
   * root) takes the place of the longest-idle client; anyone else is refused.
   */
  maxClients?: number;
  /** The `stats` reply (transfer counters); without it `stats` answers ENOSTATS. */
  stats?: StatsSource;
  /** A client that completes no command for this long is disconnected (default 30 s). */
  idleTimeoutMs?: number;
  /** The uid of a connection's peer, null when unknown. Default: SO_PEERCRED. */
  peerUid?: (socket: Socket) => number | null;
  /** Mode and group of the socket file (default 0600: the daemon's user only). */
  access?: SocketFileAccess;
}

/** Owner only: anyone connected can change what the guests see. */
const DEFAULT_ACCESS: SocketFileAccess = { mode: 0o600 };

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

/** Clients connected at once by default; when full, see ControlServer's priority rule. */
const DEFAULT_MAX_CLIENTS = 64;
/** A client that completes no command for this long is disconnected (idle, or not reading). */
const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

/**
 * One client: splits its bytes into lines and answers each, in order. Memory per client is bounded:
 * once the socket's write buffer is full (its high-water mark, 16 KiB, plus at most one reply), the
 * rest of the bytes already received are kept unparsed and the socket is paused, so no reply is
 * built for a client that does not read them; the one `drain` listener carries on. A client that
 * completes no command within the idle timeout (it went quiet, or it stopped reading its replies)
 * is disconnected.
 */
class ControlConnection {
  readonly socket: Socket;
  /** The peer's uid (SO_PEERCRED), null when unknown. */
  readonly uid: number | null;
  /** The daemon's own uid or root: such a client may take the place of another when full. */
  readonly privileged: boolean;
  /** When the client last completed a command (or connected): the longest idle is dropped first. */
  lastActive: number;
  readonly #directory: DirectorySource;
  readonly #logger: Logger;
  readonly #stats: StatsSource | undefined;
  readonly #idleTimer: NodeJS.Timeout;
  /** Bytes received and not parsed yet: the first from #offset. */
  readonly #chunks: Buffer[] = [];
  #offset = 0;
  /** The start of a line whose newline has not arrived. */
  #partial: Buffer[] = [];
  #partialBytes = 0;
  /** Replies wait in the socket's buffer: nothing is parsed until it drains. */
  #blocked = false;
  /** The client shut down its side: the connection ends once every line it sent is answered. */
  #inputEnded = false;

  constructor(
    socket: Socket,
    peer: { uid: number | null; privileged: boolean },
    directory: DirectorySource,
    logger: Logger,
    options: { stats: StatsSource | undefined; idleTimeoutMs: number },
  ) {
    this.socket = socket;
    this.uid = peer.uid;
    this.privileged = peer.privileged;
    this.lastActive = performance.now();
    this.#directory = directory;
    this.#logger = logger;
    this.#stats = options.stats;
    this.#idleTimer = setTimeout(() => this.#timedOut(), options.idleTimeoutMs);
    this.#idleTimer.unref();
    socket.on("data", (chunk: Buffer) => {
      this.#chunks.push(chunk);
      this.#parse();
    });
    socket.on("drain", () => {
      this.#blocked = false;
      this.#parse();
    });
    socket.on("end", () => {
      this.#inputEnded = true;
      this.#parse();
    });
    socket.on("close", () => clearTimeout(this.#idleTimer));
    socket.on("error", (error) => logger.debug("control client error", { error: error.message }));
  }

  /** Disconnects at once (eviction, shutdown). */
  destroy(): void {
    clearTimeout(this.#idleTimer);
    this.socket.destroy();
  }

  /** Answers the complete lines received, in order, until the write buffer is full. */
  #parse(): void {
    while (!this.#blocked && !this.socket.destroyed) {
      const chunk = this.#chunks[0];
      if (chunk === undefined) break;
      const newline = chunk.indexOf(0x0a, this.#offset);
      const piece = chunk.subarray(this.#offset, newline < 0 ? chunk.length : newline);
      if (this.#partialBytes + piece.length > MAX_LINE_BYTES) {
        this.#tooLong();
        return;
      }
      if (newline < 0 || newline + 1 === chunk.length) {
        this.#chunks.shift();
        this.#offset = 0;
      } else {
        this.#offset = newline + 1;
      }
      if (newline < 0) {
        if (piece.length > 0) {
          this.#partial.push(piece);
          this.#partialBytes += piece.length;
        }
        continue;
      }
      const line = this.#partial.length === 0 ? piece : Buffer.concat([...this.#partial, piece]);
      this.#partial = [];
      this.#partialBytes = 0;
      const answer = answerLine(this.#directory, line.toString("utf8"), this.#logger, this.#stats);
      if (answer === null) continue;
      this.lastActive = performance.now();
      this.#idleTimer.refresh();
      // Backpressure: a client that sends but never reads stops being read instead of filling memory.
      if (!this.socket.write(answer)) this.#blocked = true;
    }
    if (this.#blocked) this.socket.pause();
    else if (this.#inputEnded) {
      // An unfinished last line is dropped: the client went away before sending its newline.
      if (this.#chunks.length === 0) this.socket.end();
    } else if (this.socket.isPaused()) this.socket.resume();
  }

  #tooLong(): void {
    this.#logger.warn("control client sent a line over the limit; disconnecting", {
      uid: this.uid,
      limit: MAX_LINE_BYTES,
    });
    this.#drop();
    this.socket.end(
      formatError(new ControlError("ETOOLONG", `line longer than ${MAX_LINE_BYTES} bytes`), "text"),
    );
  }

  #timedOut(): void {
    const reason = this.#blocked
      ? "control client does not read its replies; disconnecting"
      : "control client idle; disconnecting";
    this.#logger.info(reason, { uid: this.uid });
    this.#drop();
    this.socket.destroy();
  }

  /** Nothing more is read or parsed from this client. */
  #drop(): void {
    clearTimeout(this.#idleTimer);
    this.socket.removeAllListeners("data");
    this.socket.removeAllListeners("drain");
    this.#chunks.length = 0;
    this.#partial = [];
    this.#partialBytes = 0;
  }
}

/**
 * The control socket of a running daemon. At most `maxClients` clients at once; when full, a
 * connection from the daemon's own uid or root (the operator) takes the place of the longest-idle
 * client, another uid's first if there is one, and any other connection is refused. So clients of
 * other uids (when the socket's mode lets them in) can never lock the operator out.
 */
export class ControlServer {
  readonly path: string;
  readonly #server: Server;
  readonly #file: SocketFile;
  readonly #clients = new Set<ControlConnection>();
  readonly #logger: Logger;
  readonly #stats: StatsSource | undefined;
  readonly #maxClients: number;
  readonly #idleTimeoutMs: number;
  readonly #peerUid: (socket: Socket) => number | null;
  /** Per peer uid, the rate-limited logger for the lines its clients cause. */
  readonly #peerLoggers = new Map<number | null, Logger>();
  #closed = false;

  private constructor(
    path: string,
    server: Server,
    file: SocketFile,
    options: ControlServerOptions,
  ) {
    this.path = path;
    this.#server = server;
    this.#file = file;
    this.#logger = options.logger ?? silentLogger;
    this.#stats = options.stats;
    this.#maxClients = options.maxClients ?? DEFAULT_MAX_CLIENTS;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.#peerUid = options.peerUid ?? ((socket) => socketPeerCredentials(socket)?.uid ?? null);
  }

  /**
   * Listens on `path` (created with `options.access`, default 0600, as src/sys/socket-file.ts
   * creates socket files), serving the devices `directory` returns at each command. Synchronous like
   * the vhost-user servers: throws SocketFileError (ENOENT, EUNSAFE, EEXIST, EADDRINUSE, EPERM,
   * ELISTEN) before returning if the path cannot be used.
   */
  static listen(
    path: string,
    directory: DirectorySource,
    options: ControlServerOptions = {},
  ): ControlServer {
    const logger = options.logger ?? silentLogger;
    const { fd, file } = SocketFile.listen(path, options.access ?? DEFAULT_ACCESS);
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: false });
    const control = new ControlServer(path, server, file, options);
    server.on("connection", (socket) => control.#accept(socket, directory));
    server.on("error", (error) => logger.error("control socket failed", { error: error.message }));
    // Node serves the listening fd; it never binds or removes the file itself.
    server.listen({ fd });
    if (!server.listening) {
      server.close();
      sysCall("close", () => native().close(fd));
      file.remove();
      throw new SocketFileError("ELISTEN", path, `cannot listen on ${path}`);
    }
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
    for (const client of this.#clients) client.destroy();
    this.#clients.clear();
    try {
      if (!this.#file.remove()) {
        this.#logger.info(
          "control socket file not removed: it is gone or another one took its place",
          {
            path: this.path,
          },
        );
      }
    } catch (error) {
      this.#logger.warn("cannot remove control socket", { error: String(error) });
    }
  }

  #accept(socket: Socket, directory: DirectorySource): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    const uid = this.#peerUid(socket);
    const privileged = uid !== null && (uid === 0 || uid === process.getuid?.());
    const logger = this.#loggerFor(uid);
    if (this.#clients.size >= this.#maxClients && !this.#makeRoom(privileged, uid, logger)) {
      logger.warn("control socket: too many clients, one refused", {
        uid,
        limit: this.#maxClients,
      });
      socket.destroy();
      return;
    }
    const client = new ControlConnection(socket, { uid, privileged }, directory, logger, {
      stats: this.#stats,
      idleTimeoutMs: this.#idleTimeoutMs,
    });
    this.#clients.add(client);
    socket.on("close", () => this.#clients.delete(client));
  }

  /**
   * Full: an operator's connection (privileged) takes the place of the longest-idle client, of
   * another uid first. Returns whether there is room now.
   */
  #makeRoom(privileged: boolean, uid: number | null, logger: Logger): boolean {
    if (!privileged) return false;
    let victim: ControlConnection | undefined;
    for (const client of this.#clients) {
      const better =
        victim === undefined ||
        (victim.privileged && !client.privileged) ||
        (victim.privileged === client.privileged && client.lastActive < victim.lastActive);
      if (better) victim = client;
    }
    if (victim === undefined) return false;
    logger.warn("control socket full: dropping the longest-idle client for the operator", {
      uid,
      dropped: victim.uid,
    });
    this.#clients.delete(victim);
    victim.destroy();
    return true;
  }

  /** One rate limit per peer uid: a flooding uid does not silence the lines of another. */
  #loggerFor(uid: number | null): Logger {
    let logger = this.#peerLoggers.get(uid);
    if (logger === undefined) {
      logger = rateLimitedLogger(this.#logger, `control/uid${uid ?? "-unknown"}`);
      this.#peerLoggers.set(uid, logger);
    }
    return logger;
  }
}
