/**
 * Control socket: a Unix stream socket (mode 0600 unless configured) where operators read and change emulated devices
 * while the guest runs. One command per line, one reply line per command, many clients at once.
 * Owns the listening socket, its file and the client connections; runs each command against the
 * chips' directory at that moment (so it follows configuration reloads) through ChipAccess, whose
 * every operation is asynchronous (the chips may live in another thread), and `stats` against the
 * transfer counters it is given. A command not answered within the reply timeout is answered
 * ETIMEDOUT. Must not: block the event loop, let a client crash the daemon, hang, or grow memory
 * without bound, or know any model (it sees only chip descriptions, property values and memory).
 * @module
 */

import { createServer, type Server, type Socket } from "node:net";
import { type FaultStatus, formatFault } from "../i2c/faults.js";
import { type Logger, rateLimitedLogger, silentLogger } from "../log.js";
import { closeFd, dupFd } from "../sys/fd.js";
import { socketPeerCredentials } from "../sys/peer-credentials.js";
import { SocketFile, type SocketFileAccess, SocketFileError } from "../sys/socket-file.js";
import {
  type ChipAccess,
  type ChipDescription,
  type ChipDirectory,
  checkMemoryRange,
  checkWritable,
  describedProperty,
  type PropertyValue,
} from "./chips.js";
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
  type ParsedLine,
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
  /**
   * A command whose chips (or stats) have not answered after this long is answered ETIMEDOUT, and
   * the client's next command is served (default 5 s).
   */
  replyTimeoutMs?: number;
  /** The uid of a connection's peer, null when unknown. Default: SO_PEERCRED. */
  peerUid?: (socket: Socket) => number | null;
  /** Mode and group of the socket file (default 0600: the daemon's user only). */
  access?: SocketFileAccess;
}

/** Owner only: anyone connected can change what the guests see. */
const DEFAULT_ACCESS: SocketFileAccess = { mode: 0o600 };

/**
 * A JSON-ready snapshot of the transfer counters, taken when `stats` is asked: the value, or a
 * Promise of it when the counters live in another thread.
 */
export type StatsSource = () => unknown;

/** One entry of the `list` reply. */
export interface DeviceSummary {
  /** What commands may call it: the bare address when no other device has it, else `guest:address`. */
  readonly name: string;
  readonly address: string;
  /** The guests (socket indexes) that see this device. */
  readonly guests: readonly number[];
  readonly model: string;
  readonly properties: Readonly<Record<string, PropertyValue>>;
  readonly memorySize: number | null;
}

/** `1:0x48` for a chip: its first guest qualifies it. */
function qualifiedName(chip: ChipDescription): string {
  return formatDeviceRef({ addr: chip.address, guest: chip.sockets[0] ?? 0 });
}

/** The shortest name that picks `chip` out of `directory`. */
function nameOf(directory: ChipDirectory, chip: ChipDescription): string {
  const alone = directory.every((other) => other === chip || other.address !== chip.address);
  return alone ? formatAddress(chip.address) : qualifiedName(chip);
}

function describeGuests(sockets: readonly number[]): string {
  return `guest${sockets.length === 1 ? "" : "s"} ${sockets.join(",")}`;
}

/** The one chip `ref` names. Throws ENODEV, or EAMBIGUOUS listing the qualified names. */
export function lookup(directory: ChipDirectory, ref: DeviceRef): ChipDescription {
  const { addr, guest } = ref;
  const found = directory.filter(
    (chip) => chip.address === addr && (guest === undefined || chip.sockets.includes(guest)),
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
      (chip) => `${qualifiedName(chip)} (${chip.model}, ${describeGuests(chip.sockets)})`,
    );
    throw new ControlError(
      "EAMBIGUOUS",
      `${formatAddress(addr)} names ${found.length} emulated devices, one per guest list; name one as <guest>:<address>: ${names.join(", ")}`,
    );
  }
  return only;
}

/** Every chip with its property values; a failure is the first in directory order. */
async function summarize(chips: ChipAccess): Promise<DeviceSummary[]> {
  const directory = await chips.directory();
  const values = await Promise.allSettled(
    directory.map((chip) =>
      chip.properties.length === 0 ? Promise.resolve({}) : chips.propertyValues(chip.id),
    ),
  );
  return directory.map((chip, i) => {
    const settled = values[i];
    if (settled?.status !== "fulfilled") throw settled?.reason;
    return {
      name: nameOf(directory, chip),
      address: formatAddress(chip.address),
      guests: chip.sockets,
      model: chip.model,
      properties: settled.value,
      memorySize: chip.memorySize,
    };
  });
}

/**
 * Runs one command against the chips. Rejects with a ControlError for anything the client should
 * hear about; logs every state change at info.
 */
export async function executeCommand(
  chips: ChipAccess,
  command: Command,
  logger: Logger,
  stats?: StatsSource,
): Promise<CommandResult> {
  switch (command.cmd) {
    case "help":
      return { text: HELP_TEXT, value: HELP_TEXT };
    case "stats": {
      if (stats === undefined) {
        throw new ControlError("ENOSTATS", "this daemon keeps no transfer counters");
      }
      const value = await stats();
      return { text: JSON.stringify(value), value };
    }
    case "list": {
      const list = await summarize(chips);
      return { text: JSON.stringify(list), value: list };
    }
    case "get": {
      const chip = lookup(await chips.directory(), command);
      describedProperty(chip, formatDeviceRef(command), command.property);
      const value = await chips.getProperty(chip.id, command.property);
      return { text: String(value), value };
    }
    case "set": {
      const chip = lookup(await chips.directory(), command);
      checkWritable(describedProperty(chip, formatDeviceRef(command), command.property));
      const value = await chips.setProperty(chip.id, command.property, command.value);
      logger.info(`control set ${formatDeviceRef(command)} ${command.property}=${String(value)}`);
      return { text: String(value), value };
    }
    case "read": {
      const { offset, length } = command;
      const chip = lookup(await chips.directory(), command);
      checkMemoryRange(chip, formatDeviceRef(command), offset, length);
      const hex = formatHex(await chips.readMemory(chip.id, offset, length));
      return { text: hex, value: hex };
    }
    case "write": {
      const { offset, data } = command;
      const chip = lookup(await chips.directory(), command);
      checkMemoryRange(chip, formatDeviceRef(command), offset, data.length);
      await chips.writeMemory(chip.id, offset, data);
      logger.info(
        `control write ${formatDeviceRef(command)} offset=${offset} length=${data.length}`,
      );
      return { text: String(data.length), value: data.length };
    }
    case "fault": {
      const chip = lookup(await chips.directory(), command);
      const ref = formatDeviceRef(command);
      // A qualified address scopes the fault to that guest; a bare one to every guest of the chip.
      const guests = command.guest === undefined ? chip.sockets : [command.guest];
      if (command.fault === "clear") {
        const removed = await chips.clearFaults(chip.id, guests);
        logger.info(`control fault ${ref} clear (${removed} removed)`);
        return { text: String(removed), value: removed };
      }
      await chips.setFault(chip.id, guests, command.fault);
      const text = formatFault(command.fault);
      logger.info(`control fault ${ref} ${text} (${describeGuests(guests)})`);
      return { text, value: text };
    }
    case "faults": {
      const list = await listFaults(chips);
      return { text: JSON.stringify(list), value: list };
    }
  }
}

/** One entry of the `faults` reply: a chip as one guest sees it. */
export interface FaultSummary {
  /** What commands may call it for that guest: `guest:address` when the chip has several guests. */
  readonly name: string;
  readonly guest: number;
  readonly model: string;
  readonly faults: readonly FaultStatus[];
  readonly injected: number;
}

/** Every chip and guest with a fault set or injected so far, in directory then socket order. */
async function listFaults(chips: ChipAccess): Promise<FaultSummary[]> {
  const directory = await chips.directory();
  const perChip = await Promise.all(directory.map((chip) => chips.listFaults(chip.id)));
  return directory.flatMap((chip, i) =>
    (perChip[i] ?? [])
      .filter(({ faults, injected }) => faults.length > 0 || injected > 0)
      .map(({ guest, faults, injected }) => ({
        name:
          chip.sockets.length === 1
            ? nameOf(directory, chip)
            : formatDeviceRef({ addr: chip.address, guest }),
        guest,
        model: chip.model,
        faults,
        injected,
      })),
  );
}

/** What a command runs with besides the chips. */
interface CommandContext {
  readonly logger: Logger;
  readonly stats?: StatsSource | undefined;
  /** Without it, a command waits for its answer however long it takes. */
  readonly replyTimeoutMs?: number | undefined;
}

/** `work`, or ETIMEDOUT once `ms` have passed (a late answer is dropped). */
function withinTime<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new ControlError(
            "ETIMEDOUT",
            `no answer from the devices within ${ms} ms; the command may still take effect`,
          ),
        ),
      ms,
    );
    // A pending command does not keep the process alive.
    timer.unref();
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/** The reply line (with newline) to one parsed line. */
async function replyTo(
  chips: ChipAccess,
  parsed: ParsedLine,
  context: CommandContext,
): Promise<string> {
  const { format, command } = parsed;
  if (command instanceof ControlError) return formatError(command, format);
  const { logger, stats, replyTimeoutMs } = context;
  try {
    const work = executeCommand(chips, command, logger, stats);
    const result = await (replyTimeoutMs === undefined ? work : withinTime(work, replyTimeoutMs));
    return formatOk(result, format);
  } catch (error) {
    if (error instanceof ControlError) {
      if (error.code === "EMODEL") logger.warn("model failed", { error: error.message });
      return formatError(error, format);
    }
    throw error;
  }
}

/** Parses and runs one line; resolves with the reply line (with newline), or null for a blank line. */
export async function handleLine(
  chips: ChipAccess,
  line: string,
  logger: Logger,
  stats?: StatsSource,
): Promise<string | null> {
  const parsed = parseLine(line);
  return parsed === null ? null : replyTo(chips, parsed, { logger, stats });
}

/** replyTo that never rejects: a fault is answered and logged, never a daemon crash. */
async function answerLine(
  chips: ChipAccess,
  parsed: ParsedLine,
  context: CommandContext,
): Promise<string> {
  try {
    return await replyTo(chips, parsed, context);
  } catch (error) {
    context.logger.error("control command failed", { error: String(error) });
    return formatError(new ControlError("EMODEL", "internal error"), "text");
  }
}

/** Clients connected at once by default; when full, see ControlServer's priority rule. */
const DEFAULT_MAX_CLIENTS = 64;
/** A client that completes no command for this long is disconnected (idle, or not reading). */
const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
/** A command not answered within this long is answered ETIMEDOUT (the chips' thread is stuck or gone). */
const DEFAULT_REPLY_TIMEOUT_MS = 5_000;

/**
 * One client: splits its bytes into lines and answers each, one at a time and in order (a command
 * sees what the one before it did; a slow answer holds up this client only). Memory per client is
 * bounded: while a command waits for its answer, or once the socket's write buffer is full (its
 * high-water mark, 16 KiB, plus at most one reply), the rest of the bytes already received are kept
 * unparsed and the socket is paused, so no reply is built for a client that does not read them; the
 * answer or the one `drain` listener carries on. A client that completes no command within the idle
 * timeout (it went quiet, or it stopped reading its replies) is disconnected.
 */
class ControlConnection {
  readonly socket: Socket;
  /** The peer's uid (SO_PEERCRED), null when unknown. */
  readonly uid: number | null;
  /** The daemon's own uid or root: such a client may take the place of another when full. */
  readonly privileged: boolean;
  /** When the client last completed a command (or connected): the longest idle is dropped first. */
  lastActive: number;
  readonly #chips: ChipAccess;
  readonly #context: CommandContext;
  readonly #idleTimer: NodeJS.Timeout;
  /** Bytes received and not parsed yet: the first from #offset. */
  readonly #chunks: Buffer[] = [];
  #offset = 0;
  /** The start of a line whose newline has not arrived. */
  #partial: Buffer[] = [];
  #partialBytes = 0;
  /** Replies wait in the socket's buffer: nothing is parsed until it drains. */
  #blocked = false;
  /** A command waits for its answer: nothing more is parsed until it is written. */
  #answering = false;
  /** The client shut down its side: the connection ends once every line it sent is answered. */
  #inputEnded = false;

  constructor(
    socket: Socket,
    peer: { uid: number | null; privileged: boolean },
    chips: ChipAccess,
    context: CommandContext & { readonly idleTimeoutMs: number },
  ) {
    this.socket = socket;
    this.uid = peer.uid;
    this.privileged = peer.privileged;
    this.lastActive = performance.now();
    this.#chips = chips;
    this.#context = context;
    this.#idleTimer = setTimeout(() => this.#timedOut(), context.idleTimeoutMs);
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
    socket.on("error", (error) =>
      context.logger.debug("control client error", { error: error.message }),
    );
  }

  /** Disconnects at once (eviction, shutdown). */
  destroy(): void {
    clearTimeout(this.#idleTimer);
    this.socket.destroy();
  }

  /** Starts answering the complete lines received, in order, until the write buffer is full. */
  #parse(): void {
    while (!this.#blocked && !this.#answering && !this.socket.destroyed) {
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
      const parsed = parseLine(line.toString("utf8"));
      if (parsed === null) continue;
      this.#answering = true;
      void answerLine(this.#chips, parsed, this.#context).then((reply) => this.#answered(reply));
    }
    if (this.#blocked || this.#answering) this.socket.pause();
    else if (this.#inputEnded) {
      // An unfinished last line is dropped: the client went away before sending its newline.
      if (this.#chunks.length === 0) this.socket.end();
    } else if (this.socket.isPaused()) this.socket.resume();
  }

  /** Writes the reply to the command being answered, then carries on with the next line. */
  #answered(reply: string): void {
    this.#answering = false;
    // Disconnected meanwhile (idle timeout, eviction, shutdown): the reply has nowhere to go.
    if (this.socket.destroyed || !this.socket.writable) return;
    this.lastActive = performance.now();
    this.#idleTimer.refresh();
    // Backpressure: a client that sends but never reads stops being read instead of filling memory.
    if (!this.socket.write(reply)) this.#blocked = true;
    this.#parse();
  }

  #tooLong(): void {
    this.#context.logger.warn("control client sent a line over the limit; disconnecting", {
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
    this.#context.logger.info(reason, { uid: this.uid });
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

/** A control socket as one process hands it to the next. */
export interface ControlHandover {
  readonly path: string;
  readonly listener: number;
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
  /** The listening socket (Node serves it; a handover passes a copy on). */
  readonly #fd: number;
  readonly #clients = new Set<ControlConnection>();
  readonly #logger: Logger;
  readonly #stats: StatsSource | undefined;
  readonly #maxClients: number;
  readonly #idleTimeoutMs: number;
  readonly #replyTimeoutMs: number;
  readonly #peerUid: (socket: Socket) => number | null;
  /** Per peer uid, the rate-limited logger for the lines its clients cause. */
  readonly #peerLoggers = new Map<number | null, Logger>();
  #closed = false;

  private constructor(
    path: string,
    server: Server,
    file: SocketFile,
    fd: number,
    options: ControlServerOptions,
  ) {
    this.path = path;
    this.#server = server;
    this.#file = file;
    this.#fd = fd;
    this.#logger = options.logger ?? silentLogger;
    this.#stats = options.stats;
    this.#maxClients = options.maxClients ?? DEFAULT_MAX_CLIENTS;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.#replyTimeoutMs = options.replyTimeoutMs ?? DEFAULT_REPLY_TIMEOUT_MS;
    this.#peerUid = options.peerUid ?? ((socket) => socketPeerCredentials(socket)?.uid ?? null);
  }

  /**
   * Listens on `path` (created with `options.access`, default 0600, as src/sys/socket-file.ts
   * creates socket files), serving the chips `chips` reaches (its directory asked again at each command). Synchronous like
   * the vhost-user servers: throws SocketFileError (ENOENT, EUNSAFE, EEXIST, EADDRINUSE, EPERM,
   * ELISTEN) before returning if the path cannot be used.
   */
  static listen(
    path: string,
    chips: ChipAccess,
    options: ControlServerOptions = {},
  ): ControlServer {
    const { fd, file } = SocketFile.listen(path, options.access ?? DEFAULT_ACCESS);
    return ControlServer.#serve(path, fd, file, chips, options);
  }

  /** Serves the listening socket of a control socket a predecessor handed over, file and all. */
  static resume(
    handed: ControlHandover,
    chips: ChipAccess,
    options: ControlServerOptions = {},
  ): ControlServer {
    let file: SocketFile;
    try {
      file = SocketFile.existing(handed.path);
    } catch (error) {
      closeFd(handed.listener);
      throw error;
    }
    return ControlServer.#serve(handed.path, handed.listener, file, chips, options);
  }

  static #serve(
    path: string,
    fd: number,
    file: SocketFile,
    chips: ChipAccess,
    options: ControlServerOptions,
  ): ControlServer {
    const logger = options.logger ?? silentLogger;
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: false });
    const control = new ControlServer(path, server, file, fd, options);
    server.on("connection", (socket) => control.#accept(socket, chips));
    server.on("error", (error) => logger.error("control socket failed", { error: error.message }));
    // Node serves the listening fd; it never binds or removes the file itself.
    server.listen({ fd });
    if (!server.listening) {
      server.close();
      closeFd(fd);
      file.remove();
      throw new SocketFileError("ELISTEN", path, `cannot listen on ${path}`);
    }
    logger.info("control socket listening", { path });
    return control;
  }

  /** The listening socket (to keep a copy in the service manager's fd store). */
  get listenerFd(): number {
    return this.#fd;
  }

  /** Clients connected now. */
  get clientCount(): number {
    return this.#clients.size;
  }

  /**
   * For a handover: stops serving (clients disconnected) and gives a copy of the listening socket
   * up, its file left in place for the successor.
   */
  handOver(): ControlHandover {
    if (this.#closed) throw new Error("the control socket is closed");
    const listener = dupFd(this.#fd);
    this.#closed = true;
    this.#server.close();
    for (const client of this.#clients) client.destroy();
    this.#clients.clear();
    this.#file.forget();
    return { path: this.path, listener };
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

  #accept(socket: Socket, chips: ChipAccess): void {
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
    const client = new ControlConnection(socket, { uid, privileged }, chips, {
      logger,
      stats: this.#stats,
      idleTimeoutMs: this.#idleTimeoutMs,
      replyTimeoutMs: this.#replyTimeoutMs,
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
