/**
 * EventFd: one eventfd counter (nonblocking, close-on-exec), used for vring kick and call.
 * Must not: watch itself for readiness (FdWatcher does that) or know what the counter means.
 * @module
 */

import { closedError, SysArgumentError, sysCall, toSysError } from "./errors.js";
import { closeFd } from "./fd.js";
import { native } from "./native.js";

/** The largest value one write may add (eventfd counters hold up to 2^64 - 2; JS numbers 2^53). */
const MAX_WRITE = Number.MAX_SAFE_INTEGER;

export class EventFd {
  #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** A new eventfd with the counter at `initval`. */
  static create(initval = 0): EventFd {
    return new EventFd(sysCall("eventfd", () => native().eventfd(initval)));
  }

  /**
   * Takes ownership of an eventfd received from elsewhere (e.g. over SCM_RIGHTS) and makes it
   * nonblocking.
   */
  static adopt(fd: number): EventFd {
    if (!Number.isInteger(fd) || fd < 0) throw new SysArgumentError(`invalid fd ${fd}`);
    // A peer's fd may be blocking: a read on the main thread must never wait.
    sysCall("fcntl", () => native().setNonBlocking(fd));
    return new EventFd(fd);
  }

  /** The fd, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Reads and resets the counter: its value, or 0 when nothing is pending. */
  read(): number {
    const fd = this.#checkOpen("read");
    // Called per kick and per call: no closure (sysCall's) on this path.
    let value: number;
    try {
      value = native().eventfdRead(fd);
    } catch (error) {
      throw toSysError(error, "read");
    }
    return Math.max(value, 0); // -1 means nothing pending
  }

  /** Adds `value` (default 1) to the counter, waking a reader. */
  write(value = 1): void {
    const fd = this.#checkOpen("write");
    if (!Number.isInteger(value) || value < 1 || value > MAX_WRITE) {
      throw new SysArgumentError(`eventfd write value must be a positive integer, got ${value}`);
    }
    try {
      native().eventfdWrite(fd, value);
    } catch (error) {
      throw toSysError(error, "write");
    }
  }

  /** Closes the fd; safe to call twice. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    closeFd(fd);
  }

  /** Gives the fd up without closing it (a handover); -1 when already closed. */
  release(): number {
    const fd = this.#fd;
    this.#fd = -1;
    return fd;
  }

  #checkOpen(syscall: string): number {
    if (this.#fd < 0) throw closedError(syscall);
    return this.#fd;
  }
}
