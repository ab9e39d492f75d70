/**
 * Epoll: one epoll instance (close-on-exec) for a thread that may block, such as a data-plane
 * worker: it registers fds with an int32 of its choosing and waits, in the calling thread, until some
 * are ready. Results go to an Int32Array the instance owns, so a wait allocates nothing.
 * Must not: be waited on with a timeout by a thread that runs an event loop (FdWatcher is for that),
 * or read, drain or own the fds it watches.
 * @module
 */

import { checkInt, closedError, SysArgumentError, sysCall, toSysError } from "./errors.js";
import { closeFd } from "./fd.js";
import { native } from "./native.js";

// epoll_event.events bits (linux/eventpoll.h)
export const EPOLLIN = 0x001;
export const EPOLLPRI = 0x002;
export const EPOLLOUT = 0x004;
export const EPOLLERR = 0x008;
export const EPOLLHUP = 0x010;
export const EPOLLRDHUP = 0x2000;
export const EPOLLONESHOT = 0x40000000;
/** Bit 31: as an unsigned value here; it never comes back from a wait. */
export const EPOLLET = 0x80000000;

const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;

/** The addon returns at most this many entries per wait; more stay ready for the next one. */
export const EPOLL_MAX_EVENTS = 512;
const DEFAULT_MAX_EVENTS = 64;
const INT32_MIN = -0x80000000;
const INT32_MAX = 0x7fffffff;

export class Epoll {
  #fd: number;
  /** [data, events] of each ready entry of the last wait. */
  readonly #results: Int32Array;
  #count = 0;

  private constructor(fd: number, maxEvents: number) {
    this.#fd = fd;
    this.#results = new Int32Array(maxEvents * 2);
  }

  /** A new epoll instance whose waits report up to `maxEvents` ready entries each. */
  static create(maxEvents = DEFAULT_MAX_EVENTS): Epoll {
    checkInt(maxEvents, "epoll maxEvents", 1, EPOLL_MAX_EVENTS);
    return new Epoll(
      sysCall("epoll_create1", () => native().epollCreate()),
      maxEvents,
    );
  }

  /** The fd, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Ready entries found by the last wait (0 before the first). */
  get count(): number {
    return this.#count;
  }

  /** Watches `fd` for `events` (EPOLL* bits, level-triggered unless EPOLLET); waits report `data`. */
  add(fd: number, data: number, events = EPOLLIN): void {
    this.#control(EPOLL_CTL_ADD, fd, events, data);
  }

  /** Changes what a watched fd is waited for, and the data its entries carry. */
  modify(fd: number, data: number, events: number): void {
    this.#control(EPOLL_CTL_MOD, fd, events, data);
  }

  /**
   * Stops watching `fd`. Closing an fd removes it by itself once no other fd refers to its file;
   * removing an fd already closed throws EBADF.
   */
  remove(fd: number): void {
    this.#control(EPOLL_CTL_DEL, fd, 0, 0);
  }

  /**
   * Blocks the calling thread until a watched fd is ready or `timeoutMs` passed (-1: no deadline;
   * 0: only look, the one value an event-loop thread may use). Returns how many entries are ready
   * (see data() and events()); 0 on timeout or when a signal came first.
   */
  wait(timeoutMs: number): number {
    const fd = this.#checkOpen("epoll_wait");
    if (!Number.isInteger(timeoutMs) || timeoutMs < -1 || timeoutMs > INT32_MAX) {
      throw new SysArgumentError(`epoll timeout ${timeoutMs} ms is not an integer >= -1`);
    }
    this.#count = 0;
    try {
      // Once per wake-up of a data-plane thread: no closure (sysCall's) here.
      this.#count = native().epollWait(fd, this.#results, timeoutMs);
    } catch (error) {
      throw toSysError(error, "epoll_wait");
    }
    return this.#count;
  }

  /** The data given to add() or modify() for the i-th ready entry of the last wait. */
  data(i: number): number {
    return this.#results[this.#entry(i) * 2]!;
  }

  /** The EPOLL* bits of the i-th ready entry of the last wait (EPOLLIN, EPOLLHUP, ...). */
  events(i: number): number {
    return this.#results[this.#entry(i) * 2 + 1]! >>> 0;
  }

  /** Closes the epoll fd (the watched fds stay open); safe to call twice. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    this.#count = 0;
    closeFd(fd);
  }

  #control(op: number, fd: number, events: number, data: number): void {
    const epfd = this.#checkOpen("epoll_ctl");
    if (!Number.isInteger(fd) || fd < 0) throw new SysArgumentError(`invalid fd ${fd}`);
    // Bit masks built with | are int32 in JS: EPOLLIN | EPOLLET is negative. Either form is fine.
    checkInt(events, "epoll events", INT32_MIN, 0xffffffff);
    checkInt(data, "epoll data", INT32_MIN, INT32_MAX);
    sysCall("epoll_ctl", () => native().epollCtl(epfd, op, fd, events >>> 0, data));
  }

  #entry(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.#count) {
      throw new SysArgumentError(`epoll entry ${i} is not one of the ${this.#count} ready`);
    }
    return i;
  }

  #checkOpen(syscall: string): number {
    if (this.#fd < 0) throw closedError(syscall);
    return this.#fd;
  }
}
