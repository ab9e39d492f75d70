/**
 * FdWatcher: readiness of one fd on the event loop (libuv poll, level-triggered), so a callback
 * runs while the fd has data. Callers drain the fd in the callback, or it fires again at once.
 * Must not: read, write or close the watched fd; it belongs to the caller.
 * @module
 */

import { constants } from "node:os";
import { closedError, SysError, sysCall } from "./errors.js";
import { native, POLL_READABLE, type PollHandle } from "./native.js";

const ERRNO_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(constants.errno).map(([name, value]) => [value, name]),
);

/** libuv reports failures as negative errno values on Linux. */
function pollError(status: number): SysError {
  const errno = -status;
  const code = ERRNO_NAMES.get(errno) ?? `E${errno}`;
  return new SysError(code, "uv_poll", `fd watch failed (${code})`, { errno });
}

export class FdWatcher {
  #handle: PollHandle | null;
  #active = false;

  /**
   * Watches `fd` for readability. `onError` receives a failed watch (the watcher is stopped);
   * without it, the error is thrown as an uncaught exception.
   */
  constructor(fd: number, onReadable: () => void, onError?: (error: SysError) => void) {
    this.#handle = sysCall("uv_poll_init", () =>
      native().pollCreate(fd, (status, events) => {
        if (status < 0) {
          this.stop();
          const error = pollError(status);
          if (onError === undefined) throw error;
          onError(error);
          return;
        }
        if ((events & POLL_READABLE) !== 0 && this.#active) onReadable();
      }),
    );
  }

  get active(): boolean {
    return this.#active;
  }

  get closed(): boolean {
    return this.#handle === null;
  }

  start(): void {
    const handle = this.#checkOpen("uv_poll_start");
    if (this.#active) return;
    sysCall("uv_poll_start", () => native().pollStart(handle, POLL_READABLE));
    this.#active = true;
  }

  stop(): void {
    const handle = this.#handle;
    if (handle === null || !this.#active) return;
    this.#active = false;
    native().pollStop(handle);
  }

  /** Stops watching and releases the poll handle; safe to call twice. */
  close(): void {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    this.#active = false;
    native().pollClose(handle);
  }

  #checkOpen(syscall: string): PollHandle {
    if (this.#handle === null) throw closedError(syscall);
    return this.#handle;
  }
}
