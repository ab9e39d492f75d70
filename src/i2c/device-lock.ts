/**
 * DeviceLock: the advisory lock that keeps two daemons (or two guests of one daemon) from driving one
 * host device (adapter + host address) at once. One lock file per device in the lock directory,
 * `i2c-<adapter>-0x<addr>.lock`, held with flock(2): exclusive for a device of one guest, shared for a
 * device configured `shared`. The kernel drops the lock when the process dies, so a crash leaves
 * nothing stale.
 * The lock directory decides who can take part, so it must belong to the daemon's user (or root) and
 * be writable and searchable by nobody else: whoever can create entries there could plant a link
 * where a lock file goes, or remove a held lock file so that the next daemon locks a fresh inode; and
 * whoever can open a lock file can hold it and keep the daemon from starting. It is reached through
 * checked directories only (src/sys/trusted-dir.ts) and created 0700 when missing. Lock files are
 * opened without following links, checked on the fd (a regular file of ours with one link) before
 * anything is written, kept 0600, and after flock the inode at the name must still be the one locked.
 * Must not: open adapters or decide which devices are shared (the configuration does).
 * @module
 */

import { ftruncateSync, readFileSync, writeSync } from "node:fs";
import { resolve } from "node:path";
import { CodedError } from "../errors.js";
import { closeFd } from "../sys/fd.js";
import { LOCK_EX, LOCK_NB, LOCK_SH, native } from "../sys/native.js";
import {
  type CheckedFile,
  type FileStat,
  fstatFd,
  octal,
  openParent,
  sameFile,
  type TrustedDirectory,
  UntrustedPathError,
} from "../sys/trusted-dir.js";
import { hex } from "./bus.js";

/**
 * Where lock files live for a daemon started as root, and for one whose service manager provides the
 * directory (the shipped systemd unit: one directory shared by every instance, so two VMs' daemons
 * never drive one host device).
 */
export const SYSTEM_LOCK_DIR = "/run/vhost-device-i2c/locks";
/** Below $XDG_RUNTIME_DIR for a daemon started by another user in a login session. */
const USER_LOCK_SUBDIR = "vhost-device-i2c/locks";
/** Environment variable that moves the lock directory (it gets the same checks as the option). */
export const LOCK_DIR_ENV = "VHOST_DEVICE_I2C_LOCK_DIR";

/** A lock directory the daemon creates: only its user can reach the lock files. */
const LOCK_DIR_MODE = 0o700;
/** Missing parents of the lock directory (e.g. /run/vhost-device-i2c, which also holds sockets). */
const LOCK_PARENT_MODE = 0o755;
/** Lock files: only the daemon's user can open them, so nobody else can hold one. */
const LOCK_FILE_MODE = 0o600;
/** Lock directory bits that let other users create entries (even sticky) or reach the lock files. */
const LOCK_DIR_FORBIDDEN_BITS = 0o027;
/** A lock file replaced this many times between open and flock is given up on. */
const MAX_LOCK_ATTEMPTS = 8;

export type DeviceLockErrorCode =
  /** Another process (or another guest of this one) holds the device. */
  | "I2C_DEVICE_LOCKED"
  /** The lock directory or file is refused, or cannot be created or opened. */
  | "I2C_LOCK_FAILED";

export class DeviceLockError extends CodedError<DeviceLockErrorCode> {
  readonly adapter: number;
  readonly addr: number;
  /** Pids holding the lock, when the kernel says (from /proc/locks). */
  readonly holders: readonly number[];
  constructor(
    code: DeviceLockErrorCode,
    message: string,
    device: { adapter: number; addr: number },
    holders: readonly number[] = [],
    cause?: unknown,
  ) {
    super(code, message, { cause });
    this.adapter = device.adapter;
    this.addr = device.addr;
    this.holders = holders;
  }
}

/**
 * The lock directory: the option, else the environment variable, else $XDG_RUNTIME_DIR's for a
 * daemon not started as root in a login session, else {@link SYSTEM_LOCK_DIR}. Every choice gets the
 * checks of {@link DeviceLock.acquire}.
 */
export function lockDirectory(
  env: NodeJS.ProcessEnv,
  option?: string,
  euid: number = process.geteuid?.() ?? 0,
): string {
  if (option !== undefined) return option;
  const fromEnv = env[LOCK_DIR_ENV];
  if (fromEnv) return fromEnv;
  const runtime = env.XDG_RUNTIME_DIR;
  if (euid !== 0 && runtime?.startsWith("/")) return `${runtime}/${USER_LOCK_SUBDIR}`;
  return SYSTEM_LOCK_DIR;
}

export function lockFileName(adapter: number, addr: number): string {
  return `i2c-${adapter}-${hex(addr)}.lock`;
}

/** Pids holding a lock on the file with inode `ino`, from /proc/locks ([] when unknown). */
export function lockHolders(ino: number, procLocks = "/proc/locks"): number[] {
  let text: string;
  try {
    text = readFileSync(procLocks, "utf8");
  } catch {
    return [];
  }
  const pids = new Set<number>();
  for (const line of text.split("\n")) {
    // "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF"; blocked waiters carry "->" and are skipped.
    const fields = line.trim().split(/\s+/);
    if (fields[1] !== "FLOCK" || fields.includes("->")) continue;
    const inode = fields[5]?.split(":")[2];
    const pid = Number(fields[4]);
    if (inode === String(ino) && Number.isSafeInteger(pid)) pids.add(pid);
  }
  return [...pids];
}

/**
 * Opens the lock directory through checked directories, creating it (0700, parents 0755) when
 * missing, and refuses it unless root or the daemon's user owns it and nobody else can write to it
 * or search it. A sticky directory is not enough here: another user could still create lock files
 * (or links) before the daemon does. Throws UntrustedPathError or SysError.
 */
function openLockDirectory(path: string): TrustedDirectory {
  const { dir: parent, name } = openParent(resolve(path), { create: LOCK_PARENT_MODE });
  let dir: TrustedDirectory;
  try {
    // Checked before the general rules of openDirectory, whose advice ("or sticky") is not enough
    // here; the fd is checked again below.
    const existing = parent.stat(name);
    if (existing?.isDirectory) checkLockDirectory(resolve(parent.path, name), existing);
    dir = parent.openDirectory(name, { create: LOCK_DIR_MODE });
  } finally {
    parent.close();
  }
  try {
    checkLockDirectory(dir.path, fstatFd(dir.fd));
    return dir;
  } catch (error) {
    dir.close();
    throw error;
  }
}

function checkLockDirectory(path: string, stat: FileStat): void {
  const euid = process.geteuid?.() ?? 0;
  if (stat.uid !== 0 && stat.uid !== euid) {
    throw new UntrustedPathError(
      "EUNSAFE_OWNER",
      path,
      `owned by uid ${stat.uid}: a lock directory must belong to root or the daemon's user (uid ${euid})`,
    );
  }
  if ((stat.mode & LOCK_DIR_FORBIDDEN_BITS) !== 0) {
    throw new UntrustedPathError(
      "EUNSAFE_MODE",
      path,
      `mode ${octal(stat.mode)}: a lock directory must be writable by its owner only and not reachable by other users (0700 or 0750), or others can create, remove or hold its lock files`,
    );
  }
}

/** What went wrong with `path`: refusals name the path they looked at, syscall failures do not. */
function failureAt(path: string, error: unknown): string {
  if (error instanceof UntrustedPathError) return error.message;
  return `${path}: ${error instanceof Error ? error.message : String(error)}`;
}

export class DeviceLock {
  readonly path: string;
  readonly shared: boolean;
  #fd: number | null;

  private constructor(path: string, fd: number, shared: boolean) {
    this.path = path;
    this.#fd = fd;
    this.shared = shared;
  }

  /**
   * Takes the lock of host device `addr` on adapter `adapter` in the lock directory `dir` (created if
   * missing, see {@link openLockDirectory}), without waiting. Throws DeviceLockError
   * I2C_DEVICE_LOCKED naming the holders when it is held in a conflicting mode, I2C_LOCK_FAILED when
   * the directory or the lock file is refused or cannot be opened.
   */
  static acquire(dir: string, adapter: number, addr: number, shared: boolean): DeviceLock {
    const device = { adapter, addr };
    const what = `host device ${hex(addr)} on /dev/i2c-${adapter}`;
    let lockDir: TrustedDirectory;
    try {
      lockDir = openLockDirectory(dir);
    } catch (err) {
      throw new DeviceLockError(
        "I2C_LOCK_FAILED",
        `cannot lock ${what}: lock directory ${failureAt(dir, err)} (choose a --lock-dir that belongs to the daemon's user, mode 0700)`,
        device,
        [],
        err,
      );
    }
    try {
      return DeviceLock.#lockIn(lockDir, lockFileName(adapter, addr), shared, device, what);
    } finally {
      lockDir.close();
    }
  }

  /**
   * Opens, locks and checks the lock file `name` of `dir`; starts again when the file at the name is no
   * longer the one locked (it was replaced between open and flock: a lock on the old inode excludes
   * nobody who opens the name now).
   */
  static #lockIn(
    dir: TrustedDirectory,
    name: string,
    shared: boolean,
    device: { adapter: number; addr: number },
    what: string,
  ): DeviceLock {
    const path = `${dir.path}/${name}`;
    const failed = (reason: string, cause?: unknown) =>
      new DeviceLockError("I2C_LOCK_FAILED", `cannot lock ${what}: ${reason}`, device, [], cause);
    for (let attempt = 1; attempt <= MAX_LOCK_ATTEMPTS; attempt++) {
      let file: CheckedFile;
      try {
        // O_NOFOLLOW, a regular file owned by us with one link, narrowed to 0600; nothing written yet.
        file = dir.openFile(name, { access: "readwrite", create: "either", mode: LOCK_FILE_MODE });
      } catch (err) {
        throw failed(`lock file ${failureAt(path, err)}`, err);
      }
      let current: FileStat | null;
      try {
        if (!native().flock(file.fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB)) {
          const holders = lockHolders(file.stat.ino).filter((pid) => pid !== process.pid);
          const by =
            holders.length > 0
              ? `process ${holders.join(", ")}`
              : "another guest of this daemon or another process";
          throw new DeviceLockError(
            "I2C_DEVICE_LOCKED",
            `${what} is in use by ${by} (lock ${path}); stop it, or mark the device "shared" in both configurations`,
            device,
            holders,
          );
        }
        current = dir.stat(name);
      } catch (err) {
        closeFd(file.fd);
        if (err instanceof DeviceLockError) throw err;
        throw failed(failureAt(path, err), err);
      }
      if (current !== null && sameFile(current, file.stat)) {
        if (!shared) writePid(file.fd);
        return new DeviceLock(path, file.fd, shared);
      }
      closeFd(file.fd);
    }
    throw failed(`${path} was replaced ${MAX_LOCK_ATTEMPTS} times while it was being locked`);
  }

  /** Releases the lock (closing the fd drops it). Idempotent. */
  release(): void {
    if (this.#fd === null) return;
    const fd = this.#fd;
    this.#fd = null;
    closeFd(fd);
  }
}

/** The holder's pid in the file, for people looking at the directory (the lock is the flock). */
function writePid(fd: number): void {
  try {
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`, 0);
  } catch {
    // a full file system: the lock still holds and /proc/locks still names us
  }
}
