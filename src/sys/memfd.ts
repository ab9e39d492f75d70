/**
 * memfd helpers: anonymous shared memory files, the guest RAM of the frontend and of tests.
 * Must not: map the memory (Mapping does) or keep the fd; the caller owns and closes it.
 * @module
 */

import { SysArgumentError, sysCall } from "./errors.js";
import { native } from "./native.js";

/** A new memfd (close-on-exec) of `size` bytes, sparse until written. Returns the fd. */
export function createMemfd(size: number, name = "vhost-device-i2c"): number {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new SysArgumentError(`memfd size must be a non-negative integer, got ${size}`);
  }
  const binding = native();
  const fd = sysCall("memfd_create", () => binding.memfdCreate(name));
  try {
    sysCall("ftruncate", () => binding.ftruncate(fd, size));
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
