/**
 * Where vhost-user connections come from. VhostUserServer listens on a socket path, or serves a
 * listening socket inherited from a service manager (socket activation, --socket-fd), one front-end at
 * a time (one socket = one guest), and serves each connection with a fresh device and BackendConnection;
 * VhostUserClient connects to a path the VMM listens on, retrying until it appears and reconnecting
 * after the peer goes away. Each instance is independent, so one process can serve many sockets.
 * A listening socket drops a connection that has not finished the vhost-user set-up within a deadline,
 * so a silent peer cannot hold its one slot. Every line a peer can cause is rate-limited per socket:
 * the connected front-end's lines share one budget, other connections' (refused, failed) another.
 * Must not: know any device class or protocol detail beyond starting a BackendConnection.
 * @module
 */

import { EventEmitter } from "node:events";
import { lstatSync, statSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";
import { CodedError } from "../errors.js";
import { type Logger, rateLimitedLogger, silentLogger } from "../log.js";
import { hasCode } from "../sys/errors.js";
import { FdWatcher } from "../sys/fd-watcher.js";
import { adoptInheritedListener } from "../sys/service-manager.js";
import { UnixListener, UnixStream } from "../sys/unix-socket.js";
import { BackendConnection, type BackendOptions } from "./backend.js";
import { MessageChannel } from "./connection.js";
import type { VhostUserDeviceFactory } from "./device.js";

export type ServerErrorCode =
  | "ENOENT" // the socket's parent directory does not exist
  | "EADDRINUSE" // a live process serves the socket path
  | "EEXIST" // the path exists and is not a socket: never removed
  | "ELISTEN"; // bind/listen failed for another reason (see cause)

export class ServerError extends CodedError<ServerErrorCode> {
  readonly path: string;
  constructor(code: ServerErrorCode, path: string, message: string, options?: ErrorOptions) {
    super(code, message, options);
    this.path = path;
  }
}

export interface SessionOptions {
  logger?: Logger;
  backend?: Omit<BackendOptions, "logger">;
  /**
   * Listening sockets only: how long a front-end has, from connecting, to finish the vhost-user set-up
   * (BackendConnection.handshakeDone) before it is dropped. 0: no limit. Default
   * DEFAULT_HANDSHAKE_TIMEOUT_MS. Client mode never drops the VMM it connected to: QEMU cannot always
   * take a back-end back.
   */
  handshakeTimeoutMs?: number;
}

/**
 * QEMU sends its whole set-up within milliseconds of connecting (it realizes the device before the
 * guest runs, paused or not); the rest is room for a host under heavy load.
 */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 20_000;

interface SessionEvents {
  /** A front-end connected; its BackendConnection serves it. */
  connect: [backend: BackendConnection];
  /** The front-end's connection ended (the server keeps listening / the client retries). */
  disconnect: [];
}

/** One connection: a fresh device and back-end over a message channel. */
interface Session {
  readonly backend: BackendConnection;
  readonly channel: MessageChannel;
}

/**
 * A logger for lines a socket's peers can cause, rate-limited per `source`, except trace: with
 * `--log-level trace` the operator asks for every request the front-end sends (the protocol trace),
 * and a thinned-out trace would hide what it is there to show.
 */
function peerLogger(logger: Logger, source: string): Logger {
  const limited = rateLimitedLogger(logger, source);
  return {
    ...limited,
    trace: (message, fields) => logger.trace(message, fields),
    child: (sub) => peerLogger(logger.child(sub), `${source}/${sub}`),
  };
}

/** Shared by server and client: starts a session on a connected stream. */
abstract class SessionHost extends EventEmitter<SessionEvents> {
  protected readonly socketIndex: number;
  protected readonly factory: VhostUserDeviceFactory;
  protected readonly logger: Logger;
  /** Lines the connected front-end (and its rings) can cause: the socket's session budget. */
  protected readonly sessionLog: Logger;
  /** Lines other peers can cause (refused connections, failed accepts): a budget of their own. */
  protected readonly othersLog: Logger;
  protected readonly options: SessionOptions;
  protected session: Session | null = null;
  protected closed = false;
  private readonly handshakeTimeoutMs: number;
  private handshakeTimer: NodeJS.Timeout | null = null;

  constructor(
    socketIndex: number,
    factory: VhostUserDeviceFactory,
    options: SessionOptions,
    handshakeTimeoutMs: number,
  ) {
    super();
    this.socketIndex = socketIndex;
    this.factory = factory;
    this.options = options;
    this.logger = options.logger ?? silentLogger;
    this.sessionLog = peerLogger(this.logger, `socket${socketIndex}/front-end`);
    this.othersLog = peerLogger(this.logger, `socket${socketIndex}/connections`);
    this.handshakeTimeoutMs = handshakeTimeoutMs;
  }

  /** True while a front-end is connected. */
  get connected(): boolean {
    return this.session !== null;
  }

  protected startSession(stream: UnixStream): void {
    let backend: BackendConnection;
    try {
      backend = new BackendConnection(this.factory(this.socketIndex), {
        ...this.options.backend,
        logger: this.sessionLog,
      });
    } catch (error) {
      this.sessionLog.error("cannot create the device for a connection", { error: String(error) });
      stream.close();
      this.sessionEnded();
      return;
    }
    const channel = new MessageChannel(
      stream,
      {
        onMessage: (message) => backend.handle(message),
        onClose: (reason) => {
          this.clearHandshakeTimer();
          backend.disconnect(reason);
          this.session = null;
          this.emit("disconnect");
          this.sessionEnded();
        },
      },
      this.sessionLog,
    );
    backend.attach(channel);
    this.session = { backend, channel };
    this.sessionLog.info("front-end connected");
    if (this.handshakeTimeoutMs > 0 && !channel.isClosed) {
      this.handshakeTimer = setTimeout(() => this.handshakeExpired(), this.handshakeTimeoutMs);
    }
    this.emit("connect", backend);
  }

  protected endSession(): void {
    this.clearHandshakeTimer();
    this.session?.channel.close("shutting down");
    this.session = null;
  }

  /** The set-up deadline passed: a front-end that has not finished it gives the slot back. */
  private handshakeExpired(): void {
    this.handshakeTimer = null;
    const session = this.session;
    if (session === null || session.backend.handshakeDone) return;
    this.sessionLog.warn("dropping a front-end that did not finish the vhost-user set-up in time", {
      seconds: this.handshakeTimeoutMs / 1000,
    });
    session.channel.close("set-up deadline passed");
  }

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
  }

  /** Hook: what to do once a session is over (client mode reconnects). */
  protected abstract sessionEnded(): void;
}

/** A listening socket the server accepts on: one it bound, or one it inherited. */
interface Listener {
  readonly fd: number;
  accept(): UnixStream | null;
  close(): void;
}

/** Server mode: listen on `path`, serve one front-end at a time, keep listening after it leaves. */
export class VhostUserServer extends SessionHost {
  /** The socket file, or "fd:N" for an inherited socket (whose file belongs to the service manager). */
  readonly path: string;
  private readonly listener: Listener;
  private readonly ownsPath: boolean;
  private readonly watcher: FdWatcher;

  private constructor(
    path: string,
    listener: Listener,
    ownsPath: boolean,
    socketIndex: number,
    factory: VhostUserDeviceFactory,
    options: SessionOptions,
  ) {
    super(
      socketIndex,
      factory,
      options,
      options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
    );
    this.path = path;
    this.listener = listener;
    this.ownsPath = ownsPath;
    this.watcher = new FdWatcher(
      listener.fd,
      () => this.acceptPending(),
      (error) => this.logger.error("listening socket failed", { error: error.message }),
    );
    this.watcher.start();
  }

  /**
   * Listens on `path`. A stale socket file (nobody accepting) is replaced; a live one is not stolen
   * (EADDRINUSE); a missing parent directory is ENOENT; any other existing file is EEXIST.
   */
  static listen(
    path: string,
    socketIndex: number,
    factory: VhostUserDeviceFactory,
    options: SessionOptions = {},
  ): VhostUserServer {
    claimSocketPath(path);
    let listener: UnixListener;
    try {
      listener = UnixListener.listen(path);
    } catch (error) {
      const code = hasCode(error, "EADDRINUSE") ? "EADDRINUSE" : "ELISTEN";
      throw new ServerError(code, path, `cannot listen on ${path}: ${String(error)}`, {
        cause: error,
      });
    }
    (options.logger ?? silentLogger).info("listening", { path });
    return new VhostUserServer(path, listener, true, socketIndex, factory, options);
  }

  /**
   * Serves the listening Unix stream socket `fd` handed over by a service manager (or --socket-fd).
   * Takes ownership of the fd; its socket file is never removed. Throws ServiceManagerError when `fd`
   * is not a listening Unix stream socket.
   */
  static adopt(
    fd: number,
    socketIndex: number,
    factory: VhostUserDeviceFactory,
    options: SessionOptions = {},
  ): VhostUserServer {
    const listener = adoptInheritedListener(fd);
    const path = `fd:${fd}`;
    (options.logger ?? silentLogger).info("listening on an inherited socket", { fd });
    return new VhostUserServer(path, listener, false, socketIndex, factory, options);
  }

  /** Stops listening, drops the connection and removes the socket file it created. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
    this.listener.close();
    this.endSession();
    if (!this.ownsPath) return;
    try {
      unlinkSync(this.path);
    } catch (error) {
      if (!hasCode(error, "ENOENT"))
        this.logger.warn("cannot remove socket", { error: String(error) });
    }
  }

  protected sessionEnded(): void {
    if (!this.closed) this.sessionLog.info("waiting for the next front-end", { path: this.path });
  }

  private acceptPending(): void {
    for (;;) {
      let stream: UnixStream | null;
      try {
        stream = this.listener.accept();
      } catch (error) {
        this.othersLog.warn("accept failed", { error: String(error) });
        return;
      }
      if (stream === null) return;
      if (this.session !== null || this.closed) {
        // One socket serves one guest: a second front-end would share its device state.
        this.othersLog.warn("refusing a second connection: a front-end is already connected", {
          path: this.path,
        });
        stream.close();
        continue;
      }
      this.startSession(stream);
    }
  }
}

/**
 * Makes `path` free to listen on: its directory must exist, and a socket file left by a dead process
 * is unlinked. Throws ServerError if the directory is missing (ENOENT), the path is not a socket
 * (EEXIST) or a live process serves it (EADDRINUSE): a live socket is never stolen.
 */
export function claimSocketPath(path: string): void {
  const parent = dirname(path);
  if (!statSync(parent, { throwIfNoEntry: false })?.isDirectory()) {
    throw new ServerError("ENOENT", path, `socket directory ${parent} does not exist`);
  }
  const stat = lstatSync(path, { throwIfNoEntry: false });
  if (stat === undefined) return;
  if (!stat.isSocket()) {
    throw new ServerError("EEXIST", path, `${path} exists and is not a socket`);
  }
  let probe: UnixStream;
  try {
    probe = UnixStream.connect(path);
  } catch (error) {
    if (hasCode(error, "ECONNREFUSED")) {
      unlinkSync(path);
      return;
    }
    throw new ServerError("ELISTEN", path, `cannot probe ${path}: ${String(error)}`, {
      cause: error,
    });
  }
  probe.close();
  throw new ServerError("EADDRINUSE", path, `${path} is served by a running process`);
}

export interface ClientOptions extends SessionOptions {
  /** Delay between connection attempts and before reconnecting (default 1000 ms). */
  retryMs?: number;
}

/** Client mode: connect to a VMM listening on `path`; retry until it is there; reconnect after. */
export class VhostUserClient extends SessionHost {
  readonly path: string;
  private readonly retryMs: number;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    path: string,
    socketIndex: number,
    factory: VhostUserDeviceFactory,
    options: ClientOptions = {},
  ) {
    super(socketIndex, factory, options, 0);
    this.path = path;
    this.retryMs = options.retryMs ?? 1000;
    this.attempt();
  }

  /** Stops retrying and drops the connection. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.endSession();
  }

  protected sessionEnded(): void {
    this.schedule();
  }

  private schedule(): void {
    if (this.closed || this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.attempt();
    }, this.retryMs);
  }

  private attempt(): void {
    if (this.closed || this.session !== null) return;
    let stream: UnixStream;
    try {
      stream = UnixStream.connect(this.path);
    } catch (error) {
      this.othersLog.debug("VMM socket not ready, retrying", {
        path: this.path,
        error: String(error),
      });
      this.schedule();
      return;
    }
    this.startSession(stream);
  }
}
