/**
 * Where vhost-user connections come from. VhostUserServer listens on a socket path, or serves a
 * listening socket inherited from a service manager (socket activation, --socket-fd), one front-end at
 * a time (one socket = one guest), and serves each connection with a fresh device and BackendConnection;
 * VhostUserClient connects to a path the VMM listens on, retrying until it appears and reconnecting
 * after the peer goes away. Each instance is independent, so one process can serve many sockets.
 * Must not: know any device class or protocol detail beyond starting a BackendConnection.
 * @module
 */

import { EventEmitter } from "node:events";
import { lstatSync, statSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";
import { CodedError } from "../errors.js";
import { type Logger, silentLogger } from "../log.js";
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
}

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

/** Shared by server and client: starts a session on a connected stream. */
abstract class SessionHost extends EventEmitter<SessionEvents> {
  protected readonly socketIndex: number;
  protected readonly factory: VhostUserDeviceFactory;
  protected readonly logger: Logger;
  protected readonly options: SessionOptions;
  protected session: Session | null = null;
  protected closed = false;

  constructor(socketIndex: number, factory: VhostUserDeviceFactory, options: SessionOptions) {
    super();
    this.socketIndex = socketIndex;
    this.factory = factory;
    this.options = options;
    this.logger = options.logger ?? silentLogger;
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
        logger: this.logger,
      });
    } catch (error) {
      this.logger.error("cannot create the device for a connection", { error: String(error) });
      stream.close();
      this.sessionEnded();
      return;
    }
    const channel = new MessageChannel(
      stream,
      {
        onMessage: (message) => backend.handle(message),
        onClose: (reason) => {
          backend.disconnect(reason);
          this.session = null;
          this.emit("disconnect");
          this.sessionEnded();
        },
      },
      this.logger,
    );
    backend.attach(channel);
    this.session = { backend, channel };
    this.logger.info("front-end connected");
    this.emit("connect", backend);
  }

  protected endSession(): void {
    this.session?.channel.close("shutting down");
    this.session = null;
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
    super(socketIndex, factory, options);
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
    if (!this.closed) this.logger.info("waiting for the next front-end", { path: this.path });
  }

  private acceptPending(): void {
    for (;;) {
      let stream: UnixStream | null;
      try {
        stream = this.listener.accept();
      } catch (error) {
        this.logger.warn("accept failed", { error: String(error) });
        return;
      }
      if (stream === null) return;
      if (this.session !== null || this.closed) {
        // One socket serves one guest: a second front-end would share its device state.
        this.logger.warn("refusing a second connection: a front-end is already connected", {
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
    super(socketIndex, factory, options);
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
      this.logger.debug("VMM socket not ready, retrying", {
        path: this.path,
        error: String(error),
      });
      this.schedule();
      return;
    }
    this.startSession(stream);
  }
}
