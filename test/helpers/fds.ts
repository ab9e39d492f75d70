/**
 * Checks on fds for tests that hand them around: whether one is still open, and whether two name
 * the same open file (a copy made by dup, SCM_RIGHTS or the fd store).
 * @module
 */

import { fstatSync } from "node:fs";

/** Whether `fd` is open in this process. */
export function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch (error) {
    if ((error as { code?: string }).code === "EBADF") return false;
    throw error;
  }
}

/** Whether `a` and `b` are the same file (device and inode). */
export function sameFile(a: number, b: number): boolean {
  const x = fstatSync(a);
  const y = fstatSync(b);
  return x.dev === y.dev && x.ino === y.ino;
}
