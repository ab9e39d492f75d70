/**
 * BlockingWait: waits, blocking the calling thread, until one of a fixed set of fds is readable
 * (poll(2)). For frontends that have nothing else to do meanwhile (the benchmark's closed loop, as a
 * C frontend would wait); the daemon never uses it, since its event loop must never block.
 * Must not read or drain the fds: the caller knows what they are.
 * @module
 */

import { SysArgumentError, toSysError } from "./errors.js";
import { native } from "./native.js";

/** poll(2) takes at most this many fds from us (the addon's bound). */
export const MAX_WAIT_FDS = 1024;

export class BlockingWait {
  readonly #fds: Int32Array;
  /** ready[i] is 1 after `wait` when fds[i] is readable or hung up. */
  readonly ready: Uint8Array;

  constructor(fds: readonly number[]) {
    if (fds.length === 0 || fds.length > MAX_WAIT_FDS) {
      throw new SysArgumentError(`a blocking wait takes 1..${MAX_WAIT_FDS} fds, got ${fds.length}`);
    }
    for (const fd of fds) {
      if (!Number.isInteger(fd) || fd < 0) throw new SysArgumentError(`invalid fd ${fd}`);
    }
    this.#fds = Int32Array.from(fds);
    this.ready = new Uint8Array(fds.length);
  }

  /**
   * Blocks until at least one fd is readable (then `ready` says which) or `timeoutMs` passed
   * (-1: no deadline). Returns how many are ready, 0 on timeout. A closed fd throws EBADF.
   */
  wait(timeoutMs: number): number {
    if (!Number.isInteger(timeoutMs) || timeoutMs < -1) {
      throw new SysArgumentError(`timeout ${timeoutMs} ms is not an integer >= -1`);
    }
    try {
      return native().waitReadable(this.#fds, this.ready, timeoutMs);
    } catch (error) {
      throw toSysError(error, "poll"); // no closure per wait: this runs once per completion batch
    }
  }
}
