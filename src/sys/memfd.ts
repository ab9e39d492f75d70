/**
 * memfd helpers: anonymous shared memory files (the guest RAM of the frontend and of tests) and file
 * seals, which the back-end reads to know that a peer's guest RAM cannot shrink under its mappings.
 * Must not: map the memory (Mapping does) or keep the fd; the caller owns and closes it.
 * @module
 */

import { SysArgumentError, sysCall } from "./errors.js";
import { native } from "./native.js";

/** fcntl(2) file seals (F_SEAL_*). */
export const SEAL = {
  /** No further seals can be added. */
  SEAL: 0x1,
  /** The file cannot shrink: a mapping of it can never lie past its end (SIGBUS). */
  SHRINK: 0x2,
  GROW: 0x4,
  WRITE: 0x8,
} as const;

/**
 * The seals QEMU's memory-backend-memfd puts on guest RAM by default (seal=on): the size is fixed for
 * good. Our own frontend seals its guest RAM the same way.
 */
export const GUEST_RAM_SEALS = SEAL.SHRINK | SEAL.GROW | SEAL.SEAL;

export interface MemfdOptions {
  /** F_SEAL_* bits added once the size is set (default none: the memfd stays resizable). */
  readonly seals?: number;
}

/** A new memfd (close-on-exec, sealable) of `size` bytes, sparse until written. Returns the fd. */
export function createMemfd(
  size: number,
  name = "vhost-device-i2c",
  options: MemfdOptions = {},
): number {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new SysArgumentError(`memfd size must be a non-negative integer, got ${size}`);
  }
  const binding = native();
  const fd = sysCall("memfd_create", () => binding.memfdCreate(name));
  try {
    sysCall("ftruncate", () => binding.ftruncate(fd, size));
    if (options.seals) addSeals(fd, options.seals);
  } catch (error) {
    binding.close(fd);
    throw error;
  }
  return fd;
}

/** Changes a memfd's (or any file's) size. */
export function resizeFd(fd: number, size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new SysArgumentError(`size must be a non-negative integer, got ${size}`);
  }
  sysCall("ftruncate", () => native().ftruncate(fd, size));
}

/** The file's seals (SEAL bits); 0 for a file that cannot have seals (not a memfd or shmem file). */
export function fileSeals(fd: number): number {
  return sysCall("fcntl", () => native().fileSeals(fd));
}

/** Adds seals (SEAL bits) to a sealable file; EPERM once SEAL.SEAL is set. */
export function addSeals(fd: number, seals: number): void {
  if (!Number.isInteger(seals) || seals < 0 || seals > 0x7fffffff) {
    throw new SysArgumentError(`seals must be F_SEAL_* bits, got ${seals}`);
  }
  sysCall("fcntl", () => native().addSeals(fd, seals));
}
