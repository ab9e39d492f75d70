/**
 * Socket files at paths the daemon is given: creating a listening socket there, finding out who
 * serves an existing one, connecting to one, and removing only the file the daemon made.
 *
 * The socket's directory is walked once as a TrustedDirectory (nobody but root or the daemon's user
 * can add, rename or remove its entries, or it is sticky) and held open; every later step names one
 * entry of that fd, never the path again. A new socket is bound inside a private directory (0700,
 * made by the daemon beside the target), given its mode and group there, where nobody else can reach
 * or replace it, and only then renamed into place without replacing anything: the file appears at
 * its path already listening and already with its final permissions, whatever the umask. Its dev/ino
 * is remembered, and at the end the path is removed only while it is still that inode. A file
 * already at the path is removed only when it is a socket nobody listens on (a connect is refused),
 * and only while it is still the inode that was probed.
 * Must not: choose modes, groups or peers, log, or decide what a refusal means to the caller.
 * @module
 */

import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { CodedError } from "../errors.js";
import { hasCode, sysCall } from "./errors.js";
import { closeFd } from "./fd.js";
import { native } from "./native.js";
import {
  creationFailure,
  type FileStat,
  fstatFd,
  isPathFailure,
  octal,
  openParent,
  sameFile,
  type TrustedDirectory,
  type TrustOptions,
  UntrustedPathError,
} from "./trusted-dir.js";
import { UnixStream } from "./unix-socket.js";

export type SocketFileErrorCode =
  | "ENOENT" // the socket's directory does not exist (or a component of its path is not a directory)
  | "EPATH" // the directory cannot be reached, or refuses a new file (procfs, read-only, full)
  | "EUNSAFE" // the directory (or one above it) can be changed by someone not trusted
  | "EADDRINUSE" // a live process serves the path
  | "EEXIST" // the path exists and is not a socket: never removed
  | "EPERM" // the group could not be given (the daemon's user is not a member)
  | "ELISTEN"; // bind/listen or the probe failed for another reason (see cause)

export class SocketFileError extends CodedError<SocketFileErrorCode> {
  readonly path: string;
  constructor(code: SocketFileErrorCode, path: string, message: string, options?: ErrorOptions) {
    super(code, message, options);
    this.path = path;
  }
}

/** Permissions of a socket file the daemon creates. */
export interface SocketFileAccess {
  /** Permission bits (e.g. 0o600). */
  readonly mode: number;
  /** Group of the file; undefined leaves the daemon's. The daemon's user must be a member. */
  readonly gid?: number | undefined;
}

/** The name the socket has inside its private directory, before it is renamed into place. */
const STAGED_NAME = "s";
/** Private directory names tried before giving up (each is random: a clash means a squatter). */
const STAGING_ATTEMPTS = 8;
/** Renames tried when the path keeps being taken between the probe and the rename. */
const PUBLISH_ATTEMPTS = 3;
/** sockaddr_un.sun_path holds 108 bytes with the NUL. */
const MAX_SOCKET_ADDRESS_BYTES = 107;
const PROC_FD = "/proc/self/fd";

let procFdAvailable: boolean | undefined;

/**
 * The address bind/connect use for entry `name` of `dir`: through /proc/self/fd, so the kernel reaches
 * the entry through the directory fd and no path is walked again by name; the directory's checked
 * path when /proc is not mounted or the address would not fit sun_path.
 */
function socketAddress(dir: TrustedDirectory, name: string): string {
  procFdAvailable ??= existsSync(PROC_FD);
  const viaFd = `${PROC_FD}/${dir.fd}/${name}`;
  if (procFdAvailable && Buffer.byteLength(viaFd) <= MAX_SOCKET_ADDRESS_BYTES) return viaFd;
  return dir.path === "/" ? `/${name}` : `${dir.path}/${name}`;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The checked directory of `path` and the socket's name in it; `action` ("create socket",
 * "connect to") starts a failure's message. Throws SocketFileError: ENOENT when the directory is
 * missing (or a component is not a directory), EUNSAFE when it (or one above it) is not trusted,
 * EPATH when it cannot be reached, ELISTEN for any other failure.
 */
function openSocketDirectory(
  path: string,
  action: string,
  options: TrustOptions = {},
): { dir: TrustedDirectory; name: string } {
  try {
    return openParent(path, options);
  } catch (error) {
    if (error instanceof UntrustedPathError) {
      throw new SocketFileError(
        "EUNSAFE",
        path,
        `refusing the socket directory of ${path}: ${error.message}`,
        { cause: error },
      );
    }
    // The message names the component that is missing, not a directory or out of reach.
    const code =
      hasCode(error, "ENOENT") || hasCode(error, "ENOTDIR")
        ? "ENOENT"
        : isPathFailure(error)
          ? "EPATH"
          : "ELISTEN";
    throw new SocketFileError(code, path, `cannot ${action} ${path}: ${message(error)}`, {
      cause: error,
    });
  }
}

/** What a connect to an existing socket file says about it. */
/**
 * Pending connections a socket holds: the kernel caps it at net.core.somaxconn. A peer the mode lets
 * connect but the peer policy refuses is accepted and closed at once; a deep queue keeps such a
 * connect flood from filling it before the daemon's next accept, which would make the VMM's own
 * connect fail with EAGAIN.
 */
const LISTEN_BACKLOG = 4096;

type ProbeResult = "listening" | "backlog-full" | "refused" | "gone";

/**
 * One nonblocking connect to entry `name`. A Unix stream connect never waits: it succeeds, fails
 * with ECONNREFUSED (nobody listens) or, when the listener's backlog is full, EAGAIN at once. So
 * the probe has no deadline to keep and a listener that never accepts cannot stall it.
 */
function probe(dir: TrustedDirectory, name: string, path: string): ProbeResult {
  try {
    UnixStream.connect(socketAddress(dir, name)).close();
    return "listening";
  } catch (error) {
    if (hasCode(error, "EAGAIN")) return "backlog-full";
    if (hasCode(error, "ECONNREFUSED")) return "refused";
    if (hasCode(error, "ENOENT")) return "gone";
    throw new SocketFileError("ELISTEN", path, `cannot probe ${path}: ${message(error)}`, {
      cause: error,
    });
  }
}

/**
 * Makes entry `name` free: nothing there, or a socket nobody listens on, which is removed (only
 * while it is still the inode probed). Throws SocketFileError EEXIST (not a socket) or EADDRINUSE.
 */
function claim(dir: TrustedDirectory, name: string, path: string): void {
  const entry = dir.stat(name);
  if (entry === null) return;
  if (!entry.isSocket) {
    throw new SocketFileError("EEXIST", path, `${path} exists and is not a socket`);
  }
  switch (probe(dir, name, path)) {
    case "listening":
      throw new SocketFileError(
        "EADDRINUSE",
        path,
        `${path} is in use: served by a running process`,
      );
    case "backlog-full":
      throw new SocketFileError(
        "EADDRINUSE",
        path,
        `${path} is in use: served by a running process that accepts no connection (its backlog is full)`,
      );
    case "refused":
      dir.unlinkIfSame(name, entry);
      return;
    case "gone":
      return;
  }
}

/** A fresh private directory (0700, ours) beside the target, for binding the socket in. */
function makeStagingDirectory(dir: TrustedDirectory, name: string, path: string): TrustedDirectory {
  for (let attempt = 1; ; attempt++) {
    const stagingName = `.${name}.${randomBytes(6).toString("hex")}`;
    try {
      sysCall("mkdirat", () => native().mkdirAt(dir.fd, stagingName, 0o700));
    } catch (error) {
      if (hasCode(error, "EEXIST") && attempt < STAGING_ATTEMPTS) continue;
      // The first entry made in the directory: where a directory that takes no files says so.
      const refusal = creationFailure(dir.path, error);
      if (refusal === null) throw error;
      throw new SocketFileError("EPATH", path, `cannot create socket ${path}: ${refusal.message}`, {
        cause: error,
      });
    }
    try {
      const staging = dir.openDirectory(stagingName);
      const stat = fstatFd(staging.fd);
      if ((stat.mode & 0o077) !== 0) {
        staging.close();
        throw new UntrustedPathError("EUNSAFE_MODE", staging.path, `mode ${octal(stat.mode)}`);
      }
      return staging;
    } catch (error) {
      removeDirectoryEntry(dir, stagingName);
      throw error;
    }
  }
}

function removeDirectoryEntry(dir: TrustedDirectory, name: string): void {
  try {
    sysCall("unlinkat", () => native().unlinkAt(dir.fd, name, true));
  } catch {
    // already gone, or not empty: nothing of ours to clean up then
  }
}

/** Removes the private directory and whatever of ours is still in it; never throws. */
function removeStaging(dir: TrustedDirectory, staging: TrustedDirectory): void {
  try {
    sysCall("unlinkat", () => native().unlinkAt(staging.fd, STAGED_NAME, false));
  } catch {
    // renamed into place already (the usual case)
  }
  try {
    const identity = fstatFd(staging.fd);
    dir.unlinkIfSame(staging.path.slice(staging.path.lastIndexOf("/") + 1), identity);
  } catch {
    // left behind: an empty 0700 directory of ours, harmless
  } finally {
    staging.close();
  }
}

/**
 * Gives the staged socket its mode and group. The private directory is the daemon's alone, so no
 * link can stand in the socket's place there, and the mode is set exactly, whatever the umask.
 */
function setAccess(staging: TrustedDirectory, access: SocketFileAccess, path: string): FileStat {
  const bound = staging.stat(STAGED_NAME);
  if (bound === null || !bound.isSocket) {
    throw new SocketFileError("ELISTEN", path, `the socket bound for ${path} is not there`);
  }
  if (access.gid !== undefined) {
    try {
      staging.chown(STAGED_NAME, -1, access.gid);
    } catch (error) {
      throw new SocketFileError(
        "EPERM",
        path,
        `cannot give ${path} the group ${access.gid}: ${message(error)} (the daemon's user must be a member of the group)`,
        { cause: error },
      );
    }
  }
  sysCall("fchmodat", () => native().chmodAt(staging.fd, STAGED_NAME, access.mode));
  const stat = staging.stat(STAGED_NAME);
  if (stat === null || !sameFile(stat, bound) || (stat.mode & 0o7777) !== access.mode) {
    throw new SocketFileError("ELISTEN", path, `the socket bound for ${path} changed under us`);
  }
  return stat;
}

/** Renames the staged socket to `name`, never over another file (RENAME_NOREPLACE). */
function publish(staging: TrustedDirectory, dir: TrustedDirectory, name: string, path: string) {
  for (let attempt = 1; ; attempt++) {
    claim(dir, name, path);
    try {
      staging.rename(STAGED_NAME, dir, name, true);
      return;
    } catch (error) {
      if (!hasCode(error, "EEXIST")) {
        throw new SocketFileError(
          "ELISTEN",
          path,
          `cannot put the socket at ${path}: ${message(error)}`,
          {
            cause: error,
          },
        );
      }
      if (attempt === PUBLISH_ATTEMPTS) {
        throw new SocketFileError(
          "EADDRINUSE",
          path,
          `${path} is in use: another process keeps creating it`,
        );
      }
    }
  }
}

/** A listening socket's fd (the caller owns it) and its file. */
export interface ListeningSocketFile {
  readonly fd: number;
  readonly file: SocketFile;
}

/** A socket file the daemon created: removed at the end only while it is still the same inode. */
export class SocketFile {
  /** The path as given. */
  readonly path: string;
  /** The file as created: owner, group, mode and identity. */
  readonly stat: FileStat;
  #dir: TrustedDirectory | null;
  readonly #name: string;

  private constructor(path: string, dir: TrustedDirectory, name: string, stat: FileStat) {
    this.path = path;
    this.#dir = dir;
    this.#name = name;
    this.stat = stat;
  }

  /**
   * Creates a listening Unix stream socket at `path` with `access` (see the module comment); a stale
   * socket file (nobody listening) is replaced. Throws SocketFileError: ENOENT (no directory),
   * EPATH (the directory cannot be reached or takes no new file),
   * EUNSAFE (untrusted directory), EEXIST (not a socket), EADDRINUSE (served by a live process),
   * EPERM (group), ELISTEN.
   */
  static listen(
    path: string,
    access: SocketFileAccess,
    backlog = LISTEN_BACKLOG,
  ): ListeningSocketFile {
    const { dir, name } = openSocketDirectory(path, "create socket");
    try {
      const staging = makeStagingDirectory(dir, name, path);
      try {
        const fd = sysCall("bind", () =>
          native().socketListen(socketAddress(staging, STAGED_NAME), backlog),
        );
        try {
          const stat = setAccess(staging, access, path);
          publish(staging, dir, name, path);
          return { fd, file: new SocketFile(path, dir, name, stat) };
        } catch (error) {
          closeFd(fd);
          throw error;
        }
      } finally {
        removeStaging(dir, staging);
      }
    } catch (error) {
      dir.close();
      if (error instanceof SocketFileError) throw error;
      throw new SocketFileError("ELISTEN", path, `cannot listen on ${path}: ${message(error)}`, {
        cause: error,
      });
    }
  }

  /**
   * The socket file at `path` that a predecessor created and handed over with its listening socket:
   * removed at the end under the same rule. Throws SocketFileError ENOENT when no socket is there.
   */
  static existing(path: string): SocketFile {
    const { dir, name } = openSocketDirectory(path, "reuse socket");
    const stat = dir.stat(name);
    if (stat === null || !stat.isSocket) {
      dir.close();
      throw new SocketFileError("ENOENT", path, `${path} is no longer a socket file`);
    }
    return new SocketFile(path, dir, name, stat);
  }

  /** Gives the file up without removing it (its socket goes on in another process). */
  forget(): void {
    this.#dir?.close();
    this.#dir = null;
  }

  /**
   * Removes the file if it is still the inode created (a file someone else put at the path stays)
   * and releases the directory. Returns whether it was removed; later calls return false.
   */
  remove(): boolean {
    const dir = this.#dir;
    if (dir === null) return false;
    this.#dir = null;
    try {
      return dir.unlinkIfSame(this.#name, this.stat);
    } finally {
      dir.close();
    }
  }
}

/**
 * The file an inherited listening socket is bound to, as it is now (its owner, group and mode), or
 * null when the socket has no path (abstract or unbound), or its directory is not trusted, or no
 * socket is there. A service manager made it; only its permissions are read.
 */
export function boundSocketFile(fd: number): FileStat | null {
  const path = sysCall("getsockname", () => native().socketName(fd));
  if (path === "" || path.startsWith("@")) return null;
  let opened: { dir: TrustedDirectory; name: string };
  try {
    opened = openParent(path);
  } catch {
    return null;
  }
  try {
    const stat = opened.dir.stat(opened.name);
    return stat?.isSocket ? stat : null;
  } finally {
    opened.dir.close();
  }
}

/** A connection to a socket file, and the directory it was found in as it was then. */
export interface SocketFileConnection {
  readonly stream: UnixStream;
  readonly directory: FileStat;
}

/**
 * Connects to the socket at `path`, whose directory must be trusted (`options.owners` adds trusted
 * owners) and which must be a socket, not a link. Throws SocketFileError: ENOENT (directory or
 * socket missing), EUNSAFE (untrusted directory, or a link or other file at the path), ELISTEN
 * (connect failed: the SysError, e.g. ECONNREFUSED or EAGAIN, is the cause).
 */
export function connectSocketFile(path: string, options: TrustOptions = {}): SocketFileConnection {
  const { dir, name } = openSocketDirectory(path, "connect to", options);
  try {
    const entry = dir.stat(name);
    if (entry === null) throw new SocketFileError("ENOENT", path, `${path} does not exist`);
    if (!entry.isSocket) {
      const what = entry.isSymlink ? "a symbolic link" : "not a socket";
      throw new SocketFileError("EUNSAFE", path, `refusing ${path}: ${what}`);
    }
    let stream: UnixStream;
    try {
      stream = UnixStream.connect(socketAddress(dir, name));
    } catch (error) {
      throw new SocketFileError("ELISTEN", path, `cannot connect to ${path}: ${message(error)}`, {
        cause: error,
      });
    }
    return { stream, directory: fstatFd(dir.fd) };
  } finally {
    dir.close();
  }
}

/**
 * Checks that the directory of `path` is trusted, when it exists. Throws SocketFileError EUNSAFE;
 * a missing directory is not an error here (it may appear later).
 */
export function checkSocketDirectory(path: string, options: TrustOptions = {}): void {
  try {
    openSocketDirectory(path, "connect to", options).dir.close();
  } catch (error) {
    if (error instanceof SocketFileError && error.code === "ENOENT") return;
    throw error;
  }
}
