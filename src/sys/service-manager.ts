/**
 * What a service manager (systemd or any that follows its conventions) hands the daemon and expects
 * back: listening sockets inherited through LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES (fds from 3), the
 * readiness datagram to $NOTIFY_SOCKET (sd_notify: "READY=1", "STATUS=..."), and datagram sockets to
 * send and receive such messages (Node has no datagram Unix sockets).
 * Must not: decide when to notify or which socket serves what (the CLI does), nor touch the
 * environment (callers pass it in and decide whether to clear it).
 * @module
 */

import { CodedError } from "../errors.js";
import { closedError, SysArgumentError, SysError, sysCall } from "./errors.js";
import { closeFd } from "./fd.js";
import { native } from "./native.js";
import { UnixListener } from "./unix-socket.js";

/** The first inherited fd: 0-2 are stdio (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;
/** More than this many inherited fds is a broken environment, not a configuration. */
export const MAX_LISTEN_FDS = 1024;

const AF_UNIX = 1;
const SOCK_STREAM = 1;

export type ServiceManagerErrorCode = "BAD_LISTEN_FDS" | "NOT_A_LISTENING_SOCKET";

export class ServiceManagerError extends CodedError<ServiceManagerErrorCode> {}

/** Sockets the service manager passed: fds[i] is named names[i] ("" when unnamed). */
export interface InheritedFds {
  readonly fds: readonly number[];
  readonly names: readonly string[];
}

type Environment = Readonly<Record<string, string | undefined>>;

/**
 * The fds passed by socket activation, or null when none are meant for process `pid` (LISTEN_PID
 * missing or another process's: the variables were inherited from a parent and are not ours).
 * Throws ServiceManagerError when they are ours but malformed.
 */
export function inheritedFds(env: Environment, pid: number): InheritedFds | null {
  const countText = env.LISTEN_FDS;
  if (countText === undefined || env.LISTEN_PID !== String(pid)) return null;
  const count = /^[0-9]+$/.test(countText) ? Number(countText) : Number.NaN;
  if (!Number.isSafeInteger(count) || count > MAX_LISTEN_FDS) {
    throw new ServiceManagerError("BAD_LISTEN_FDS", `LISTEN_FDS="${countText}" is not a count`);
  }
  if (count === 0) return null;
  const names = env.LISTEN_FDNAMES?.split(":") ?? [];
  if (names.length !== 0 && names.length !== count) {
    throw new ServiceManagerError(
      "BAD_LISTEN_FDS",
      `LISTEN_FDNAMES has ${names.length} names for LISTEN_FDS=${count} fds`,
    );
  }
  const fds = Array.from({ length: count }, (_, i) => LISTEN_FDS_START + i);
  return { fds, names: names.length === count ? names : fds.map(() => "") };
}

/** The variables socket activation sets; a daemon removes them so its children do not see them. */
export const LISTEN_ENV_NAMES = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] as const;

/**
 * Takes ownership of an inherited `fd` once it is checked to be a listening Unix stream socket.
 * Throws ServiceManagerError otherwise (a wrong unit file, not a run-time failure).
 */
export function adoptInheritedListener(fd: number): UnixListener {
  if (!Number.isInteger(fd) || fd < 0) throw new SysArgumentError(`invalid fd ${fd}`);
  let info: [number, number, number];
  try {
    info = sysCall("getsockopt", () => native().socketInfo(fd));
  } catch (error) {
    throw new ServiceManagerError(
      "NOT_A_LISTENING_SOCKET",
      `fd ${fd} is not a socket: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  const [domain, type, accepting] = info;
  if (domain !== AF_UNIX || type !== SOCK_STREAM || accepting !== 1) {
    throw new ServiceManagerError(
      "NOT_A_LISTENING_SOCKET",
      `fd ${fd} is not a listening Unix stream socket (use ListenStream= with a path)`,
    );
  }
  return UnixListener.adopt(fd, `fd:${fd}`);
}

/** Sends one datagram to the Unix socket at `path` (a leading "@" names an abstract socket). */
export function sendDatagram(path: string, bytes: Uint8Array): void {
  const sent = sysCall("sendto", () => native().datagramSend(path, bytes));
  if (sent !== bytes.length) {
    throw new SysError("ESHORTSEND", "sendto", `sendto sent ${sent} of ${bytes.length} bytes`);
  }
}

/**
 * Sends `state` (newline-separated VAR=value lines, e.g. "READY=1\nSTATUS=serving") to
 * $NOTIFY_SOCKET. Returns false when no service manager asked for notifications.
 */
export function notifyServiceManager(env: Environment, state: string): boolean {
  const path = env.NOTIFY_SOCKET;
  if (path === undefined || path === "") return false;
  sendDatagram(path, new TextEncoder().encode(state));
  return true;
}

/**
 * Keeps `fd` in the service manager's fd store under `name` (sd_pid_notify_with_fds "FDSTORE=1"):
 * it passes it back in LISTEN_FDS/LISTEN_FDNAMES when the service restarts. Needs $NOTIFY_SOCKET and
 * FileDescriptorStoreMax= on the unit; returns false without $NOTIFY_SOCKET.
 */
export function storeFd(env: Environment, name: string, fd: number): boolean {
  const path = env.NOTIFY_SOCKET;
  if (path === undefined || path === "") return false;
  const bytes = new TextEncoder().encode(`FDSTORE=1\nFDNAME=${checkFdName(name)}`);
  const sent = sysCall("sendmsg", () => native().datagramSend(path, bytes, [fd]));
  if (sent !== bytes.length) {
    throw new SysError("ESHORTSEND", "sendmsg", `sendmsg sent ${sent} of ${bytes.length} bytes`);
  }
  return true;
}

/** Drops every fd stored under `name` (FDSTOREREMOVE=1). */
export function removeStoredFds(env: Environment, name: string): boolean {
  return notifyServiceManager(env, `FDSTOREREMOVE=1\nFDNAME=${checkFdName(name)}`);
}

/** systemd takes names of 1-255 printable ASCII characters without ':' (they join LISTEN_FDNAMES). */
function checkFdName(name: string): string {
  if (!/^[\x21-\x39\x3b-\x7e]{1,255}$/.test(name)) {
    throw new SysArgumentError(`"${name}" cannot name a stored fd`);
  }
  return name;
}

/** The longest datagram `receive` returns whole (sd_notify messages are far shorter). */
const RECEIVE_BUFFER_BYTES = 4096;

/** A bound datagram socket: what a service manager listens on (tests, tools). */
export class DatagramSocket {
  #fd: number;
  readonly path: string;
  readonly #buffer = new Uint8Array(RECEIVE_BUFFER_BYTES);

  private constructor(fd: number, path: string) {
    this.#fd = fd;
    this.path = path;
  }

  /** Binds to `path` ("@name": abstract, no file); nonblocking. */
  static bind(path: string): DatagramSocket {
    return new DatagramSocket(
      sysCall("bind", () => native().datagramBind(path)),
      path,
    );
  }

  /** The fd (for FdWatcher), or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** The next datagram (a copy), or null when none is waiting. */
  receive(): Uint8Array | null {
    const fd = this.#fd;
    if (fd < 0) throw closedError("recv");
    const n = sysCall("recv", () => native().datagramRecv(fd, this.#buffer));
    return n < 0 ? null : this.#buffer.slice(0, n);
  }

  /** Closes the socket; the socket file (if any) stays for the caller to remove. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    closeFd(fd);
  }
}
