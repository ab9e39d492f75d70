/**
 * FdWatcher: readiness of one fd on the event loop (libuv poll, level-triggered), so a callback
 * runs while the fd has data (or, when asked, while it can take more). Callers drain the fd in the
 * callback, or it fires again at once. One watcher per fd: libuv allows one poll handle per fd.
 * Must not: read, write or close the watched fd; it belongs to the caller.
 * @module
 */

import { constants } from "node:os";
import { closedError, SysError, sysCall } from "./errors.js";
import { native, POLL_READABLE, POLL_WRITABLE, type PollHandle } from "./native.js";

const ERRNO_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(constants.errno).map(([name, value]) => [value, name]),
);

/**
 * libuv reports failures as negative errno values on Linux; EBADF is also how it reports POLLERR, an
 * error condition on an open fd (for a socket: the peer reset the connection).
 */
function pollError(status: number): SysError {
  const errno = -status;
  const code = ERRNO_NAMES.get(errno) ?? `E${errno}`;
  const what =
    code === "EBADF"
      ? "the fd reports an error condition (a socket: the peer reset it)"
      : "fd watch failed";
  return new SysError(code, "uv_poll", `${what} (${code})`, { errno });
}

export class FdWatcher {
  #handle: PollHandle | null;
  /** The readiness watched now (POLL_READABLE | POLL_WRITABLE bits); 0 when stopped. */
  #events = 0;

  /**
   * Watches `fd` for readability (start) or, with `onWritable`, for either readiness (watch).
   * `onError` receives a failed watch (the watcher is stopped); without it, the error is thrown as
   * an uncaught exception.
   */
  constructor(
    fd: number,
    onReadable: () => void,
    onError?: (error: SysError) => void,
    onWritable?: () => void,
  ) {
    this.#handle = sysCall("uv_poll_init", () =>
      native().pollCreate(fd, (status, events) => {
        if (status < 0) {
          this.stop();
          const error = pollError(status);
          if (onError === undefined) throw error;
          onError(error);
          return;
        }
        // Writable first: room for output may be what lets the caller read again. Each check sees
        // the interest as the previous callback left it.
        if ((events & this.#events & POLL_WRITABLE) !== 0) onWritable?.();
        if ((events & this.#events & POLL_READABLE) !== 0) onReadable();
      }),
    );
  }

  get active(): boolean {
    return this.#events !== 0;
  }

  get closed(): boolean {
    return this.#handle === null;
  }

  /** Watches for readability only. */
  start(): void {
    this.watch(true, false);
  }

  stop(): void {
    const handle = this.#handle;
    if (handle === null || this.#events === 0) return;
    this.#events = 0;
    native().pollStop(handle);
  }

  /** Watches for the readiness asked for (neither: stopped); a no-op when it is already watched. */
  watch(readable: boolean, writable: boolean): void {
    const events = (readable ? POLL_READABLE : 0) | (writable ? POLL_WRITABLE : 0);
    if (events === 0) {
      this.stop();
      return;
    }
    const handle = this.#checkOpen("uv_poll_start");
    if (events === this.#events) return;
    sysCall("uv_poll_start", () => native().pollStart(handle, events));
    this.#events = events;
  }

  /** Stops watching and releases the poll handle; safe to call twice. */
  close(): void {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    this.#events = 0;
    native().pollClose(handle);
  }

  #checkOpen(syscall: string): PollHandle {
    if (this.#handle === null) throw closedError(syscall);
    return this.#handle;
  }
}
