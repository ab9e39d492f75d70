/**
 * Paths the daemon does not own, opened the way OpenSSH's StrictModes and systemd open them: a
 * path is walked one component at a time from "/" through directory fds, every directory on the way
 * must be owned by root, the daemon's user or an owner the caller names, and writable by nobody
 * else (a sticky directory such as /tmp is allowed: others cannot rename or remove what is not
 * theirs there). A symbolic link is followed only when it sits in such a directory, so nobody else
 * can have planted it. Entries are then opened relative to the directory fd, never through a link
 * and never by name twice, and checked on the fd before anything is read or written.
 * Must not: decide which paths are used or what a refusal means to the caller.
 * @module
 */

import { constants, fchmodSync, readSync } from "node:fs";
import { CodedError } from "../errors.js";
import { hasCode, SysError, sysCall } from "./errors.js";
import { closeFd } from "./fd.js";
import { native, type RawStat } from "./native.js";

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFSOCK = 0o140000;
const S_ISVTX = 0o1000;
/** Links followed in one walk before it is refused, as the kernel's own limit. */
const MAX_LINKS = 40;

/** Why a path or a file is refused: `code` says which rule, `path` names what was looked at. */
export class UntrustedPathError extends CodedError<
  "EUNSAFE_OWNER" | "EUNSAFE_MODE" | "EUNSAFE_TYPE" | "EUNSAFE_LINKS" | "EUNSAFE_NAME"
> {
  readonly path: string;
  constructor(code: UntrustedPathError["code"], path: string, why: string) {
    super(code, `${path}: ${why}`);
    this.path = path;
  }
}

/** What fstat(2) says of a file, with its type decoded. */
export interface FileStat {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly nlink: number;
  readonly dev: number;
  readonly ino: number;
  readonly size: number;
  readonly isDirectory: boolean;
  readonly isRegular: boolean;
  readonly isSymlink: boolean;
  readonly isSocket: boolean;
}

/** The identity of a file: the same dev and ino mean the same inode. */
export interface FileIdentity {
  readonly dev: number;
  readonly ino: number;
}

export function sameFile(a: FileIdentity, b: FileIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

function decodeStat([mode, uid, gid, nlink, dev, ino, size]: RawStat): FileStat {
  const type = mode & S_IFMT;
  return {
    mode,
    uid,
    gid,
    nlink,
    dev,
    ino,
    size,
    isDirectory: type === S_IFDIR,
    isRegular: type === S_IFREG,
    isSymlink: type === S_IFLNK,
    isSocket: type === S_IFSOCK,
  };
}

export function fstatFd(fd: number): FileStat {
  return decodeStat(sysCall("fstat", () => native().fstat(fd)));
}

/** The uid files created by this process get: the one that must own what it writes. */
function effectiveUid(): number {
  return process.geteuid?.() ?? 0;
}

export interface TrustOptions {
  /**
   * Owners trusted besides root and the daemon's own user (e.g. the VMM's user for the directory
   * of the socket a client-mode daemon connects to).
   */
  readonly owners?: readonly number[];
}

function trustedOwner(uid: number, options: TrustOptions): boolean {
  return uid === 0 || uid === effectiveUid() || (options.owners?.includes(uid) ?? false);
}

/** Refuses a directory that someone other than a trusted owner could change. */
function checkDirectory(path: string, stat: FileStat, options: TrustOptions): void {
  if (!stat.isDirectory) throw new UntrustedPathError("EUNSAFE_TYPE", path, "not a directory");
  if (!trustedOwner(stat.uid, options)) {
    throw new UntrustedPathError(
      "EUNSAFE_OWNER",
      path,
      `owned by uid ${stat.uid}, not by root or the daemon's user (uid ${effectiveUid()}); anyone who owns a directory on the path can replace what the daemon finds there`,
    );
  }
  if ((stat.mode & 0o022) !== 0 && (stat.mode & S_ISVTX) === 0) {
    throw new UntrustedPathError(
      "EUNSAFE_MODE",
      path,
      `mode ${octal(stat.mode)} lets others than its owner create, rename and remove entries (make it writable by its owner only, or sticky)`,
    );
  }
}

export function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

/** One path component: a file name, never "", ".", ".." or anything with a "/". */
function checkName(name: string, where: string): void {
  if (name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0")) {
    throw new UntrustedPathError("EUNSAFE_NAME", `${where}/${name}`, "not a plain file name");
  }
}

function joinPath(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

function openDirFd(dirFd: number, name: string): number {
  return sysCall("openat", () => native().openAt(dirFd, name, DIR_FLAGS, 0));
}

/** The directory `name` of `dirFd`, at `path`; a failure says what is wrong with `path`. */
function openSubdirectory(dirFd: number, path: string, name: string): number {
  try {
    return openDirFd(dirFd, name);
  } catch (error) {
    throw pathFailure(path, error) ?? error;
  }
}

/** Why `path` cannot be used, by errno: "<path> <words> (CODE)". */
const PATH_FAILURES: Readonly<Record<string, string>> = {
  ENOENT: "does not exist",
  ENOTDIR: "is not a directory",
  EISDIR: "is a directory",
  EACCES: "cannot be reached by the daemon's user: permission denied",
  ENAMETOOLONG: "is too long",
  ELOOP: "has too many symbolic links",
};

/**
 * Why directory `dir`, which exists, refuses a new entry, by errno. Pseudo-filesystems answer
 * ENOENT (/proc) or EPERM (/sys) to mkdir and create: the directory is there, creation is not.
 */
const CREATE_FAILURES: Readonly<Record<string, string>> = {
  ENOENT: "does not allow creating files",
  EPERM: "does not allow creating files",
  EOPNOTSUPP: "does not allow creating files",
  EACCES: "is not writable by the daemon's user: permission denied",
  EROFS: "is on a read-only filesystem",
  ENOSPC: "has no space left on its filesystem",
  EDQUOT: "is over its disk quota",
  ENAMETOOLONG: "cannot hold a name that long",
};

/** `error` (a failed syscall) restated in the words of `table` about `subject`; null if none fit. */
function reworded(
  error: unknown,
  subject: string,
  table: Readonly<Record<string, string>>,
): SysError | null {
  if (!(error instanceof SysError)) return null;
  const words = table[error.code];
  if (words === undefined) return null;
  return new SysError(error.code, error.syscall, `${subject} ${words} (${error.code})`, {
    errno: error.errno,
    cause: error,
  });
}

/** Whether `error` is a failure of a path by its errno: one pathFailure or creationFailure words. */
export function isPathFailure(error: unknown): boolean {
  return (
    error instanceof SysError &&
    (PATH_FAILURES[error.code] !== undefined || CREATE_FAILURES[error.code] !== undefined)
  );
}

/** A syscall on `path` failed: the SysError that says what is wrong with the path, or null. */
export function pathFailure(path: string, error: unknown): SysError | null {
  return reworded(error, path, PATH_FAILURES);
}

/**
 * Creating an entry in the existing directory `dir` failed: the SysError that says why the
 * directory refused, or null when the failure is not about the directory.
 */
export function creationFailure(dir: string, error: unknown): SysError | null {
  return reworded(error, dir, CREATE_FAILURES);
}

export interface OpenDirectoryOptions extends TrustOptions {
  /** Create missing directories with this mode (like `mkdir -p`; each is checked after). */
  readonly create?: number;
}

export interface OpenFileOptions {
  /** "read" (default), "write" or "readwrite". */
  readonly access?: "read" | "write" | "readwrite";
  /**
   * "never" (default): the file must exist. "exclusive": it must not (O_EXCL). "either": open it
   * if it exists, else create it.
   */
  readonly create?: "never" | "exclusive" | "either";
  /** Mode of a created file; an existing file with wider bits is narrowed to it on its fd. */
  readonly mode?: number;
  /** Emptied after the checks passed, never before. */
  readonly truncate?: boolean;
  readonly append?: boolean;
}

/** An open file that passed the checks: its fd (the caller closes it) and what fstat said. */
export interface CheckedFile {
  readonly fd: number;
  readonly stat: FileStat;
  readonly path: string;
}

/**
 * A directory reached through trusted directories only, held open as an fd: every operation
 * names one entry of it.
 */
export class TrustedDirectory {
  readonly path: string;
  #fd: number;
  readonly #options: TrustOptions;

  private constructor(path: string, fd: number, options: TrustOptions) {
    this.path = path;
    this.#fd = fd;
    this.#options = options;
  }

  /**
   * Walks `path` (absolute, or relative to the working directory) from "/": every directory on it
   * must be trusted (see the module comment), links are followed only inside trusted directories.
   * Throws UntrustedPathError for a refusal, SysError for a failing syscall (ENOENT when missing
   * and `create` is not given).
   */
  static open(path: string, options: OpenDirectoryOptions = {}): TrustedDirectory {
    const absolute = path.startsWith("/") ? path : `${process.cwd()}/${path}`;
    let fd = openDirFd(-100, "/");
    let where = "/";
    try {
      checkDirectory(where, fstatFd(fd), options);
      const pending = absolute.split("/").filter((c) => c !== "" && c !== ".");
      let links = 0;
      while (pending.length > 0) {
        const name = pending.shift() as string;
        const entry = statPath(fd, joinPath(where, name), name);
        if (entry?.isSymlink) {
          // The link sits in a directory checked above: only a trusted owner could have put it there.
          if (++links > MAX_LINKS) {
            throw new UntrustedPathError("EUNSAFE_LINKS", absolute, "too many symbolic links");
          }
          const target = sysCall("readlinkat", () => native().readlinkAt(fd, name));
          pending.unshift(...target.split("/").filter((c) => c !== "" && c !== "."));
          if (target.startsWith("/")) {
            closeFd(fd);
            fd = openDirFd(-100, "/");
            where = "/";
          }
          continue;
        }
        if (entry === null) {
          if (options.create === undefined) {
            throw new SysError(
              "ENOENT",
              "openat",
              `${joinPath(where, name)} does not exist (ENOENT)`,
              {
                errno: 2,
              },
            );
          }
          makeDirectory(fd, where, name, options.create);
          // Re-read: whatever is there now (ours, or something that raced us) is checked below.
          pending.unshift(name);
          continue;
        }
        const next = openSubdirectory(fd, joinPath(where, name), name);
        closeFd(fd);
        fd = next;
        where = name === ".." ? parentOf(where) : joinPath(where, name);
        checkDirectory(where, fstatFd(fd), options);
      }
      return new TrustedDirectory(where, fd, options);
    } catch (error) {
      closeFd(fd);
      throw error;
    }
  }

  get fd(): number {
    if (this.#fd < 0) throw new Error(`directory ${this.path} is closed`);
    return this.#fd;
  }

  /** The entry `name` without following a link; null when there is none. */
  stat(name: string): FileStat | null {
    checkName(name, this.path);
    return statEntry(this.fd, name);
  }

  /** A subdirectory, checked like every directory of `open`. */
  openDirectory(name: string, options: { create?: number } = {}): TrustedDirectory {
    checkName(name, this.path);
    if (options.create !== undefined) makeDirectory(this.fd, this.path, name, options.create);
    const path = joinPath(this.path, name);
    const fd = openSubdirectory(this.fd, path, name);
    try {
      checkDirectory(path, fstatFd(fd), this.#options);
    } catch (error) {
      closeFd(fd);
      throw error;
    }
    return new TrustedDirectory(path, fd, this.#options);
  }

  /**
   * Opens the regular file `name` without following a link, without becoming its controlling
   * terminal and without blocking on a FIFO or device, then checks it on the fd before anything
   * is read, written or truncated: a regular file; for writing, owned by the daemon's user with
   * one link (no hard link to a file elsewhere); for reading, owned by a trusted owner and
   * writable by nobody else. A wider mode than `mode` is narrowed on the fd.
   */
  openFile(name: string, options: OpenFileOptions = {}): CheckedFile {
    checkName(name, this.path);
    const path = joinPath(this.path, name);
    const access = options.access ?? "read";
    let flags =
      (access === "read"
        ? constants.O_RDONLY
        : access === "write"
          ? constants.O_WRONLY
          : constants.O_RDWR) |
      constants.O_NOFOLLOW |
      constants.O_NOCTTY |
      constants.O_NONBLOCK;
    const create = options.create ?? "never";
    if (create !== "never") flags |= constants.O_CREAT;
    if (create === "exclusive") flags |= constants.O_EXCL;
    if (options.append) flags |= constants.O_APPEND;
    const mode = options.mode ?? 0o600;
    let fd: number;
    try {
      fd = sysCall("openat", () => native().openAt(this.fd, name, flags, mode));
    } catch (error) {
      // O_NOFOLLOW met a link at the name: the same code, with a message that says so.
      if (hasCode(error, "ELOOP")) {
        throw new SysError(
          "ELOOP",
          "openat",
          `${path}: is a symbolic link; files are opened here only without following links (ELOOP)`,
          { errno: (error as SysError).errno ?? 40, cause: error },
        );
      }
      if (create === "never" || this.stat(name) !== null) throw pathFailure(path, error) ?? error;
      // The caller names the file it creates (this one may be a temporary name).
      throw creationFailure(this.path, error) ?? error;
    }
    try {
      const stat = fstatFd(fd);
      checkFile(path, stat, access !== "read", this.#options);
      if ((stat.mode & 0o777 & ~mode) !== 0) fchmodSync(fd, stat.mode & mode & 0o777);
      if (options.truncate) sysCall("ftruncate", () => native().ftruncate(fd, 0));
      return { fd, stat: fstatFd(fd), path };
    } catch (error) {
      closeFd(fd);
      throw error;
    }
  }

  /** Reads a whole file opened as in `openFile` (read access), at most `maxBytes`. */
  readFile(name: string, maxBytes = 64 * 1024 * 1024): Buffer {
    const file = this.openFile(name);
    try {
      if (file.stat.size > maxBytes) {
        throw new UntrustedPathError(
          "EUNSAFE_TYPE",
          file.path,
          `larger than ${maxBytes} bytes (${file.stat.size})`,
        );
      }
      const data = Buffer.alloc(file.stat.size);
      let done = 0;
      while (done < data.length) {
        const n = readSync(file.fd, data, done, data.length - done, done);
        if (n === 0) break;
        done += n;
      }
      return data.subarray(0, done);
    } finally {
      closeFd(file.fd);
    }
  }

  /**
   * Removes `name` only when it is still the inode the daemon made (`identity`), so a file put in
   * its place by someone else is left alone. Returns whether it was removed.
   */
  unlinkIfSame(name: string, identity: FileIdentity): boolean {
    const entry = this.stat(name);
    if (entry === null || !sameFile(entry, identity)) return false;
    try {
      sysCall("unlinkat", () => native().unlinkAt(this.fd, name, entry.isDirectory));
      return true;
    } catch (error) {
      if (hasCode(error, "ENOENT")) return false;
      throw error;
    }
  }

  /** Renames an entry of this directory into `to` (another trusted directory, or this one). */
  rename(from: string, to: TrustedDirectory, toName: string, noReplace: boolean): void {
    checkName(from, this.path);
    checkName(toName, to.path);
    sysCall("renameat2", () => native().renameAt(this.fd, from, to.fd, toName, noReplace));
  }

  /** Sets the owner of an entry without following a link (-1 keeps an id). */
  chown(name: string, uid: number, gid: number): void {
    checkName(name, this.path);
    sysCall("fchownat", () => native().chownAt(this.fd, name, uid, gid));
  }

  close(): void {
    if (this.#fd >= 0) closeFd(this.#fd);
    this.#fd = -1;
  }
}

/**
 * mkdir of `name` in the directory `dirFd` (at `dirPath`), one component: an entry already there is
 * left for the caller to check; any other failure is final (never retried, so a filesystem that
 * refuses creation, such as /proc, fails at once rather than looping).
 */
function makeDirectory(dirFd: number, dirPath: string, name: string, mode: number): void {
  try {
    sysCall("mkdirat", () => native().mkdirAt(dirFd, name, mode));
  } catch (error) {
    if (hasCode(error, "EEXIST")) return;
    const refusal = creationFailure(dirPath, error);
    if (refusal === null) throw error;
    throw new SysError(
      refusal.code,
      refusal.syscall,
      `cannot create directory ${joinPath(dirPath, name)}: ${refusal.message}`,
      { errno: refusal.errno, cause: error },
    );
  }
}

/** statEntry of a component of a path being walked: a failure says what is wrong with `path`. */
function statPath(dirFd: number, path: string, name: string): FileStat | null {
  try {
    return statEntry(dirFd, name);
  } catch (error) {
    throw pathFailure(path, error) ?? error;
  }
}

function statEntry(dirFd: number, name: string): FileStat | null {
  try {
    return decodeStat(sysCall("fstatat", () => native().statAt(dirFd, name)));
  } catch (error) {
    if (hasCode(error, "ENOENT")) return null;
    throw error;
  }
}

function parentOf(path: string): string {
  const cut = path.lastIndexOf("/");
  return cut <= 0 ? "/" : path.slice(0, cut);
}

function checkFile(path: string, stat: FileStat, writing: boolean, options: TrustOptions): void {
  if (!stat.isRegular) throw new UntrustedPathError("EUNSAFE_TYPE", path, "not a regular file");
  if (writing) {
    if (stat.uid !== effectiveUid()) {
      throw new UntrustedPathError(
        "EUNSAFE_OWNER",
        path,
        `owned by uid ${stat.uid}; the daemon writes only files its own user (uid ${effectiveUid()}) owns`,
      );
    }
    if (stat.nlink !== 1) {
      throw new UntrustedPathError(
        "EUNSAFE_LINKS",
        path,
        `has ${stat.nlink} hard links; the daemon writes only files with one`,
      );
    }
    return;
  }
  if (!trustedOwner(stat.uid, options)) {
    throw new UntrustedPathError(
      "EUNSAFE_OWNER",
      path,
      `owned by uid ${stat.uid}, not by root or the daemon's user (uid ${effectiveUid()})`,
    );
  }
  if ((stat.mode & 0o022) !== 0) {
    throw new UntrustedPathError(
      "EUNSAFE_MODE",
      path,
      `mode ${octal(stat.mode)} lets others than its owner change it`,
    );
  }
}

/**
 * The directory holding `path` (checked) and the last component's name, for creating or opening
 * one entry. Throws UntrustedPathError when the path ends in "/", "." or "..".
 */
export function openParent(
  path: string,
  options: OpenDirectoryOptions = {},
): { dir: TrustedDirectory; name: string } {
  const cut = path.lastIndexOf("/");
  const dirPath = cut < 0 ? "." : cut === 0 ? "/" : path.slice(0, cut);
  const name = path.slice(cut + 1);
  checkName(name, dirPath);
  return { dir: TrustedDirectory.open(dirPath, options), name };
}

/** Reads a file the daemon does not own (configuration, initial contents) under the rules above. */
export function readTrustedFile(path: string, options: TrustOptions = {}): Buffer {
  const { dir, name } = openParent(path, options);
  try {
    return dir.readFile(name);
  } finally {
    dir.close();
  }
}
