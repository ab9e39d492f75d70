/**
 * DeviceLock: the advisory lock that keeps two daemons (or two guests of one daemon) from driving one
 * host device (adapter + host address) at once. One lock file per device in the lock directory,
 * `i2c-<adapter>-0x<addr>.lock`, held with flock(2): exclusive for a device of one guest, shared for a
 * device configured `shared`. The kernel drops the lock when the process dies, so a crash leaves
 * nothing stale. Must not: open adapters or decide which devices are shared (the configuration does).
 * @module
 */

import {
  closeSync,
  constants,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { CodedError } from "../errors.js";
import { hasCode } from "../sys/errors.js";
import { LOCK_EX, LOCK_NB, LOCK_SH, native } from "../sys/native.js";
import { hex } from "./bus.js";

/** Where lock files live unless the option or environment variable says otherwise. */
export const DEFAULT_LOCK_DIR = "/run/lock/vhost-device-i2c";
/** Environment variable that moves the lock directory (tests, non-root runs). */
export const LOCK_DIR_ENV = "VHOST_DEVICE_I2C_LOCK_DIR";

export type DeviceLockErrorCode =
  /** Another process (or another guest of this one) holds the device. */
  | "I2C_DEVICE_LOCKED"
  /** The lock directory or file cannot be created or opened. */
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

/** The lock directory: the option, else the environment variable, else the default. */
export function lockDirectory(env: NodeJS.ProcessEnv, option?: string): string {
  return option ?? (env[LOCK_DIR_ENV] || DEFAULT_LOCK_DIR);
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
   * Takes the lock of host device `addr` on adapter `adapter` in `dir` (created if missing), without
   * waiting. Throws DeviceLockError I2C_DEVICE_LOCKED naming the holders when it is held in a
   * conflicting mode.
   */
  static acquire(dir: string, adapter: number, addr: number, shared: boolean): DeviceLock {
    const device = { adapter, addr };
    const what = `host device ${hex(addr)} on /dev/i2c-${adapter}`;
    const path = join(dir, lockFileName(adapter, addr));
    let fd: number;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o775 });
      fd = openLockFile(path);
    } catch (err) {
      throw new DeviceLockError(
        "I2C_LOCK_FAILED",
        `cannot lock ${what}: ${path}: ${String(err)} (choose a writable --lock-dir)`,
        device,
        [],
        err,
      );
    }
    let taken: boolean;
    try {
      taken = native().flock(fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB);
    } catch (err) {
      closeSync(fd);
      throw new DeviceLockError(
        "I2C_LOCK_FAILED",
        `cannot lock ${path}: ${String(err)}`,
        device,
        [],
        err,
      );
    }
    if (!taken) {
      const holders = lockHolders(fstatSync(fd).ino).filter((pid) => pid !== process.pid);
      closeSync(fd);
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
    if (!shared) writePid(fd);
    return new DeviceLock(path, fd, shared);
  }

  /** Releases the lock (closing the fd drops it). Idempotent. */
  release(): void {
    if (this.#fd === null) return;
    closeSync(this.#fd);
    this.#fd = null;
  }
}

/** Opens (creating) the lock file; read-only is enough for flock when another user created it. */
function openLockFile(path: string): number {
  try {
    return openSync(path, constants.O_RDWR | constants.O_CREAT, 0o664);
  } catch (err) {
    if (hasCode(err, "EACCES")) return openSync(path, "r");
    throw err;
  }
}

/** The holder's pid in the file, for people looking at the directory. */
function writePid(fd: number): void {
  try {
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`, 0);
  } catch {
    // read-only lock file: the lock still holds, /proc/locks still names us
  }
}
