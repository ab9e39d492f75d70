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
import { type LogFields, type Logger, rateLimitedLogger, silentLogger } from "../log.js";
import { hasCode } from "../sys/errors.js";
import { closeFd, closeFdQuietly } from "../sys/fd.js";
import { FdWatcher } from "../sys/fd-watcher.js";
import type { PeerCredentials } from "../sys/peer-credentials.js";
import { type PeerIds, PeerPolicy, peerFields } from "../sys/peer-policy.js";
import { adoptInheritedListener } from "../sys/service-manager.js";
import {
  boundSocketFile,
  checkSocketDirectory,
  connectSocketFile,
  SocketFile,
  type SocketFileAccess,
  SocketFileError,
} from "../sys/socket-file.js";
import { UnixListener, UnixStream } from "../sys/unix-socket.js";
import { BackendConnection, type BackendOptions } from "./backend.js";
import { MessageChannel } from "./connection.js";
import type { VhostUserDeviceFactory } from "./device.js";
import { ConnectionJournal, type FdStore } from "./journal.js";
import { type ConnectionState, fdsOfState } from "./state.js";

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
  /**
   * Peers admitted besides root and the daemon's user (and, for a server, whom the socket file's
   * owner and group bits admit; for a client, the owner of the socket's directory).
   */
  peers?: PeerIds;
  /**
   * Keep each connection's journal and fds in the service manager's fd store (--fd-store), so a
   * restart after a crash resumes it (journal.ts).
   */
  fdStore?: FdStore;
  /**
   * Listening sockets only: the line a front-end the peer policy admits is sent when it is refused
   * because another front-end is connected, from the reason (e.g. "/run/x.sock0 already serves a
   * front-end (pid 12); one front-end per socket"); the caller adds who it is and what to do about
   * it. Default: "vhost-user back-end refused the connection: REASON".
   */
  busyNotice?: (reason: string) => string;
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
  /** The front-end's pid, as the kernel recorded it when it connected. */
  readonly peerPid: number;
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

  /**
   * Gives the connected front-end up for a handover: reading stops between two messages, the rings
   * stop once their chains in flight are done, and the socket and the state come back with every fd
   * open. Null when no front-end is connected, or when it left meanwhile.
   */
  async handOverSession(): Promise<ConnectionState | null> {
    const session = this.session;
    if (session === null) return null;
    this.clearHandshakeTimer();
    let socket: number;
    try {
      socket = await session.channel.release();
    } catch {
      return null;
    }
    this.session = null;
    try {
      const state = await session.backend.handOver();
      return { ...state, socket, socketIndex: this.socketIndex };
    } catch (error) {
      this.sessionLog.error("cannot hand the front-end over: disconnecting it", {
        error: String(error),
      });
      closeFd(socket);
      return null;
    }
  }

  /**
   * Serves a front-end handed over by a predecessor (or by this process, after a handover that
   * failed): its socket and rings resume where they stood. A state the rings refuse closes that
   * connection alone (the front-end sees a disconnect).
   */
  protected resumeSession(state: ConnectionState): void {
    let stream: UnixStream;
    let peer: PeerCredentials;
    try {
      stream = UnixStream.adopt(state.socket);
      peer = stream.peerCredentials();
    } catch (error) {
      this.sessionLog.error("cannot resume a front-end handed over", { error: String(error) });
      closeFdQuietly(state.socket);
      closeStateFds(state);
      this.sessionEnded();
      return;
    }
    this.startSession(stream, peer, state);
  }

  protected startSession(
    stream: UnixStream,
    peer: PeerCredentials,
    resumed?: ConnectionState,
  ): void {
    let backend: BackendConnection;
    let journal: ConnectionJournal | undefined;
    try {
      const device = this.factory(this.socketIndex);
      journal = this.journalFor(stream, device.numQueues, resumed);
      backend = new BackendConnection(device, {
        ...this.options.backend,
        logger: this.sessionLog,
        ...(journal !== undefined && { journal }),
      });
    } catch (error) {
      journal?.close();
      this.sessionLog.error("cannot create the device for a connection", { error: String(error) });
      stream.close();
      if (resumed !== undefined) closeStateFds(resumed);
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
    this.session = { backend, channel, peerPid: peer.pid };
    if (resumed !== undefined) {
      this.sessionLog.info("front-end resumed", peerFields(peer));
      backend.restore(resumed).catch((error: unknown) => {
        this.sessionLog.error("the state handed over does not fit: disconnecting the front-end", {
          error: error instanceof Error ? error.message : String(error),
        });
        channel.close("state handed over refused");
      });
      this.emit("connect", backend);
      return;
    }
    this.sessionLog.info("front-end connected", peerFields(peer));
    if (this.handshakeTimeoutMs > 0 && !channel.isClosed) {
      this.handshakeTimer = setTimeout(() => this.handshakeExpired(), this.handshakeTimeoutMs);
    }
    this.emit("connect", backend);
  }

  /**
   * The connection's journal when the fd store is in use: the one it had (handed over or restored),
   * or a new one. A journal that came along while the store is not used is closed.
   */
  private journalFor(
    stream: UnixStream,
    numQueues: number,
    resumed: ConnectionState | undefined,
  ): ConnectionJournal | undefined {
    const store = this.options.fdStore;
    if (resumed?.journal != null && store === undefined) closeFdQuietly(resumed.journal.fd);
    if (store === undefined) return undefined;
    if (resumed?.journal != null) return ConnectionJournal.adopt(store, resumed, numQueues);
    const journal = ConnectionJournal.create(store, this.socketIndex, stream.fd, numQueues);
    if (resumed !== undefined) journal.record(resumed);
    return journal;
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

function defaultBusyNotice(reason: string): string {
  return `vhost-user back-end refused the connection: ${reason}`;
}

/** Most bytes read and dropped from a refused peer before its connection is closed. */
const REFUSED_DRAIN_BYTES = 64 * 1024;

/**
 * Tells a refused peer why in one text line, then closes its connection. A vhost-user front-end
 * reads the line where it expects a reply header: this project's reports it, QEMU reports a bad
 * header (either beats a bare reset). What the peer sent already (its first request) is read and
 * dropped first: closing a Unix socket with unread data makes the peer's next read fail with
 * ECONNRESET. Only peers the policy admits get a line: a peer refused by the policy learns nothing.
 */
function refuseWithNotice(stream: UnixStream, line: string): void {
  try {
    stream.send(Buffer.from(`${line}\n`));
    const scratch = new Uint8Array(4096);
    const fds: number[] = [];
    for (let drained = 0; drained < REFUSED_DRAIN_BYTES; ) {
      const n = stream.recv(scratch, 0, scratch.length, fds);
      for (const fd of fds.splice(0)) closeFdQuietly(fd);
      if (n <= 0) break;
      drained += n;
    }
  } catch {
    // The peer is gone or does not read: it misses the line, nothing else.
  } finally {
    stream.close();
  }
}

/** A listening socket the server accepts on: one it bound, or one it inherited. */
interface Listener {
  readonly fd: number;
  accept(): UnixStream | null;
  close(): void;
  release(): number;
}

/** A server's listening socket (and front-end) as one process hands them to the next. */
export interface ListenerHandover {
  /** The socket file ("fd:N" for one a service manager passed). */
  readonly path: string;
  readonly listener: number;
  /** The daemon created the file (the last owner removes it). */
  readonly ownsFile: boolean;
  readonly connection: ConnectionState | null;
}

export interface ServerOptions extends SessionOptions {
  /** Mode and group of the socket file created by `listen` (default 0600, the daemon's group). */
  access?: SocketFileAccess;
}

/** The socket file a server created: 0600, the daemon's group, unless told otherwise. */
const DEFAULT_ACCESS: SocketFileAccess = { mode: 0o600 };

/** Server mode: listen on `path`, serve one front-end at a time, keep listening after it leaves. */
export class VhostUserServer extends SessionHost {
  /** The socket file, or "fd:N" for an inherited socket (whose file belongs to the service manager). */
  readonly path: string;
  /** Who may be the front-end: checked on every accepted connection. */
  readonly peers: PeerPolicy;
  private readonly listener: Listener;
  /** The file `listen` created (removed at close while it is still ours); null when inherited. */
  private readonly file: SocketFile | null;
  private readonly watcher: FdWatcher;

  private constructor(
    path: string,
    listener: Listener,
    file: SocketFile | null,
    peers: PeerPolicy,
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
    this.file = file;
    this.peers = peers;
    this.watcher = new FdWatcher(
      listener.fd,
      () => this.acceptPending(),
      (error) => this.logger.error("listening socket failed", { error: error.message }),
    );
    this.watcher.start();
  }

  /**
   * Listens on `path`, created with `options.access` (src/sys/socket-file.ts: private directory,
   * then renamed into place). A stale socket file (nobody accepting) is replaced; a live one is not
   * stolen. Throws SocketFileError (ENOENT, EUNSAFE, EEXIST, EADDRINUSE, EPERM, ELISTEN).
   */
  static listen(
    path: string,
    socketIndex: number,
    factory: VhostUserDeviceFactory,
    options: ServerOptions = {},
  ): VhostUserServer {
    const { fd, file } = SocketFile.listen(path, options.access ?? DEFAULT_ACCESS);
    const listener = UnixListener.adopt(fd, path);
    try {
      const peers = PeerPolicy.forSocketFile(file.stat, options.peers);
      (options.logger ?? silentLogger).info("listening", { path });
      return new VhostUserServer(path, listener, file, peers, socketIndex, factory, options);
    } catch (error) {
      listener.close();
      file.remove();
      throw error;
    }
  }

  /**
   * Serves the listening Unix stream socket `fd` handed over by a service manager (or --socket-fd).
   * Takes ownership of the fd; its socket file is never removed. Its owner and group bits (read
   * from the file it is bound to, when that sits in a trusted directory) admit peers as for a file
   * the daemon creates. Throws ServiceManagerError when `fd` is not a listening Unix stream socket.
   */
  static adopt(
    fd: number,
    socketIndex: number,
    factory: VhostUserDeviceFactory,
    options: SessionOptions = {},
  ): VhostUserServer {
    const listener = adoptInheritedListener(fd);
    const path = `fd:${fd}`;
    const peers = PeerPolicy.forSocketFile(boundSocketFile(fd), options.peers);
    (options.logger ?? silentLogger).info("listening on an inherited socket", { fd });
    return new VhostUserServer(path, listener, null, peers, socketIndex, factory, options);
  }

  /**
   * Serves a listening socket handed over by a predecessor, with the front-end it had (if any).
   * `ownsFile`: the predecessor created the socket file, so this server removes it at the end.
   */
  static resume(
    handed: ListenerHandover,
    socketIndex: number,
    factory: VhostUserDeviceFactory,
    options: ServerOptions = {},
  ): VhostUserServer {
    const listener = UnixListener.adopt(handed.listener, handed.path);
    try {
      const file = handed.ownsFile ? SocketFile.existing(handed.path) : null;
      const peers = PeerPolicy.forSocketFile(
        file?.stat ?? boundSocketFile(listener.fd),
        options.peers,
      );
      (options.logger ?? silentLogger).info("listening on a socket handed over", {
        path: handed.path,
      });
      const server = new VhostUserServer(
        handed.path,
        listener,
        file,
        peers,
        socketIndex,
        factory,
        options,
      );
      if (handed.connection !== null) server.resumeSession(handed.connection);
      return server;
    } catch (error) {
      listener.close();
      if (handed.connection !== null)
        for (const fd of fdsOfState(handed.connection)) closeFdQuietly(fd);
      throw error;
    }
  }

  /** The listening socket (to keep a copy in the service manager's fd store). */
  get listenerFd(): number {
    return this.listener.fd;
  }

  /**
   * Gives everything up for a handover: accepting stops, the front-end (if any) is handed over, and
   * the listening socket comes back open with its file left in place.
   */
  async handOver(): Promise<ListenerHandover> {
    if (this.closed) throw new Error("the server is closed");
    this.closed = true;
    this.watcher.close();
    const connection = await this.handOverSession();
    this.file?.forget();
    return {
      path: this.path,
      listener: this.listener.release(),
      ownsFile: this.file !== null,
      connection,
    };
  }

  /** Stops listening, drops the connection and removes the socket file it created. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
    this.listener.close();
    this.endSession();
    try {
      if (this.file !== null && !this.file.remove()) {
        this.logger.info("socket file not removed: it is gone or another one took its place", {
          path: this.path,
        });
      }
    } catch (error) {
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
      const peer = this.admit(stream);
      if (peer === null) continue;
      if (this.session !== null || this.closed) {
        // One socket serves one guest: a second front-end would share its device state.
        this.othersLog.warn("refusing a second connection: a front-end is already connected", {
          path: this.path,
        });
        const pid = this.session === null ? "" : ` (pid ${this.session.peerPid})`;
        const reason = `${this.path} already serves a front-end${pid}; one front-end per socket`;
        const notice = this.options.busyNotice ?? defaultBusyNotice;
        refuseWithNotice(stream, notice(reason));
        continue;
      }
      this.startSession(stream, peer);
    }
  }

  /** The peer of `stream` when the policy admits it; else the stream is closed and null returned. */
  private admit(stream: UnixStream): PeerCredentials | null {
    let peer: PeerCredentials;
    try {
      peer = stream.peerCredentials();
    } catch (error) {
      this.othersLog.warn("refusing a front-end whose credentials cannot be read", {
        error: String(error),
      });
      stream.close();
      return null;
    }
    if (this.peers.admits(peer)) return peer;
    this.othersLog.warn("refusing a front-end the peer policy does not admit", {
      path: this.path,
      ...peerFields(peer),
      allowed: this.peers.describe(),
    });
    stream.close();
    return null;
  }
}

export interface ClientOptions extends SessionOptions {
  /** Delay between connection attempts and before reconnecting (default 1000 ms). */
  retryMs?: number;
  /**
   * Connect by name even when the socket's directory can be changed by others or the path is a
   * symbolic link. The peer check still applies.
   */
  unsafePath?: boolean;
  /** A connection handed over by a predecessor: served at once instead of connecting. */
  resumed?: ConnectionState;
}

/**
 * Client mode: connect to a VMM listening on `path`; retry until it is there; reconnect after.
 * The path is trusted only when its directory is (owners: root, the daemon's user and the peer
 * uids given) and it is a socket, not a link; the VMM must be root, the daemon's user, the owner of
 * that directory, or one of the peers given. Anything else is disconnected before a message is
 * exchanged and tried again later.
 */
export class VhostUserClient extends SessionHost {
  readonly path: string;
  private readonly retryMs: number;
  private readonly unsafePath: boolean;
  private timer: NodeJS.Timeout | null = null;
  /** What the last refusal was about: a refusal repeated every retry is logged once at warn. */
  private lastRefusal = "";

  /**
   * Throws SocketFileError EUNSAFE when the socket's directory exists and is not trusted (unless
   * `options.unsafePath`); a missing directory or socket is waited for.
   */
  constructor(
    path: string,
    socketIndex: number,
    factory: VhostUserDeviceFactory,
    options: ClientOptions = {},
  ) {
    super(socketIndex, factory, options, 0);
    this.path = path;
    this.retryMs = options.retryMs ?? 1000;
    this.unsafePath = options.unsafePath === true;
    if (!this.unsafePath) checkSocketDirectory(path, { owners: options.peers?.uids ?? [] });
    if (options.resumed !== undefined) this.resumeSession(options.resumed);
    else this.attempt();
  }

  /** Stops connecting and hands the connected VMM over (null when not connected). */
  async handOver(): Promise<ConnectionState | null> {
    if (this.closed) throw new Error("the client is closed");
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    return this.handOverSession();
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
    let connection: { stream: UnixStream; peers: PeerPolicy };
    try {
      connection = this.connect();
    } catch (error) {
      this.notConnected(error);
      this.schedule();
      return;
    }
    const { stream, peers } = connection;
    let peer: PeerCredentials;
    try {
      peer = stream.peerCredentials();
    } catch (error) {
      stream.close();
      this.refuse("credentials", "cannot read the VMM's credentials: disconnected, retrying", {
        error: String(error),
      });
      this.schedule();
      return;
    }
    if (!peers.admits(peer)) {
      stream.close();
      this.refuse(
        `peer ${peer.uid}:${peer.gid}`,
        "refusing a VMM the peer policy does not admit: disconnected, retrying",
        { path: this.path, ...peerFields(peer), allowed: peers.describe() },
      );
      this.schedule();
      return;
    }
    this.lastRefusal = "";
    this.startSession(stream, peer);
  }

  /** One connection attempt (never blocks): the stream and who may be at its other end. */
  private connect(): { stream: UnixStream; peers: PeerPolicy } {
    const extra = this.options.peers ?? {};
    if (this.unsafePath) {
      return { stream: UnixStream.connect(this.path), peers: PeerPolicy.forDirectory(null, extra) };
    }
    const { stream, directory } = connectSocketFile(this.path, { owners: extra.uids ?? [] });
    return { stream, peers: PeerPolicy.forDirectory(directory, extra) };
  }

  /** Logs a failed attempt: not there yet (debug), or refused (a warning, once per reason). */
  private notConnected(error: unknown): void {
    if (error instanceof SocketFileError && error.code === "EUNSAFE") {
      this.refuse(error.message, "refusing the VMM socket path, retrying", {
        error: error.message,
      });
      return;
    }
    const cause = error instanceof SocketFileError ? error.cause : error;
    const busy = hasCode(cause, "EAGAIN");
    this.logger.debug(
      busy ? "VMM socket not accepting (backlog full), retrying" : "VMM socket not ready, retrying",
      {
        path: this.path,
        error: String(error),
      },
    );
  }

  private refuse(reason: string, message: string, fields: LogFields): void {
    if (reason === this.lastRefusal) {
      this.othersLog.debug(message, fields);
      return;
    }
    this.lastRefusal = reason;
    this.othersLog.warn(message, fields);
  }
}

/** The fds of a connection that will not be served, but its socket (the caller's stream holds it). */
function closeStateFds(state: ConnectionState): void {
  for (const fd of fdsOfState(state).slice(1)) closeFdQuietly(fd);
}
