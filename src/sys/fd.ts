/**
 * closeFd and dupFd: closes an fd the caller owns, whoever opened it (the addon, a peer over SCM_RIGHTS). Node's
 * fs.closeSync is not used for them: in a worker thread it warns about fds fs did not open itself.
 * @module
 */

import { sysCall } from "./errors.js";
import { native } from "./native.js";

export function closeFd(fd: number): void {
  sysCall("close", () => native().close(fd));
}

/** closeFd for an fd that may be closed already (a cleanup path): failures are ignored. */
export function closeFdQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // Already closed or invalid: nothing left to release.
  }
}

/** A second fd (close-on-exec) for the open file of `fd`: one owner can keep it as another closes. */
export function dupFd(fd: number): number {
  return sysCall("fcntl", () => native().dup(fd));
}
