/**
 * MessageChannel: vhost-user framing over one nonblocking stream socket, driven by readiness events.
 * Reads exactly the 12-byte header, then exactly `size` payload bytes (never more: a longer read could
 * swallow the next message and its fds), collects the fds that arrived with the message, and hands
 * complete messages to one handler, strictly one at a time (an async handler pauses reading). Every fd
 * the handler does not take is closed. Sends whole messages with their fds.
 * Must not: interpret payloads (codec.ts) or hold protocol state (backend.ts, frontend.ts).
 * @module
 */

import { type Logger, silentLogger } from "../log.js";
import { hasCode, sysCall } from "../sys/errors.js";
import { FdWatcher } from "../sys/fd-watcher.js";
import { native } from "../sys/native.js";
import type { UnixStream } from "../sys/unix-socket.js";
import { CodecError, decodeHeader, encodeMessage, type MessageHeader } from "./codec.js";
import { HEADER_SIZE, MAX_FDS, MAX_PAYLOAD_SIZE } from "./protocol.js";

/** The fds that arrived with one message. Take the ones you keep; the rest are closed after handling. */
export class MessageFds {
  private readonly fds: (number | null)[];

  constructor(fds: readonly number[]) {
    this.fds = [...fds];
  }

  get count(): number {
    return this.fds.length;
  }

  /** Takes ownership of fd `index` (the caller now closes it). */
  take(index = 0): number {
    const fd = this.fds[index];
    if (fd === undefined || fd === null) throw new RangeError(`fd ${index} not present or taken`);
    this.fds[index] = null;
    return fd;
  }

  /** The fds nobody took; empties the set. */
  drain(): number[] {
    const left = this.fds.filter((fd): fd is number => fd !== null);
    this.fds.fill(null);
    return left;
  }
}

export interface Message {
  readonly header: MessageHeader;
  readonly payload: Uint8Array;
  readonly fds: MessageFds;
}

export type CloseReason =
  | { readonly kind: "eof" }
  | { readonly kind: "local"; readonly why: string }
  | { readonly kind: "protocol"; readonly error: Error }
  | { readonly kind: "io"; readonly error: Error };

export interface ChannelHandlers {
  /** One complete message. A returned promise pauses reading until it settles. */
  onMessage(message: Message): void | Promise<void>;
  /** Called once, when the channel closed for any reason. */
  onClose(reason: CloseReason): void;
}

type ReadState =
  | { readonly phase: "header"; filled: number }
  | {
      readonly phase: "payload";
      readonly header: MessageHeader;
      readonly payload: Uint8Array;
      filled: number;
    };

/** Closes a plain fd this layer owns (a received fd nobody took, a memfd). */
export function closeOwnedFd(fd: number): void {
  sysCall("close", () => native().close(fd));
}

/** How long a reply waits before retrying when the peer's socket buffer is full. */
const SEND_RETRY_MS = 1;

export class MessageChannel {
  private readonly stream: UnixStream;
  private readonly watcher: FdWatcher;
  private readonly handlers: ChannelHandlers;
  private readonly logger: Logger;
  private readonly headerBuf = new Uint8Array(HEADER_SIZE);
  private pendingFds: number[] = [];
  private state: ReadState = { phase: "header", filled: 0 };
  private outgoing: { bytes: Uint8Array; fds: readonly number[] }[] = [];
  private retryTimer: NodeJS.Timeout | null = null;
  private busy = false;
  private closed = false;

  /** Takes ownership of `stream` and starts reading from it. */
  constructor(stream: UnixStream, handlers: ChannelHandlers, logger: Logger = silentLogger) {
    this.stream = stream;
    this.handlers = handlers;
    this.logger = logger;
    this.watcher = new FdWatcher(
      stream.fd,
      () => this.readAvailable(),
      (error) => this.shutdown({ kind: "io", error }),
    );
    this.watcher.start();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Queues one message; fds go with its first byte. The caller keeps owning the fds (sendmsg
   * duplicates them into the peer). Silently dropped once closed.
   */
  send(request: number, flags: number, payload: Uint8Array, fds: readonly number[] = []): void {
    if (this.closed) return;
    this.outgoing.push({ bytes: encodeMessage(request, flags, payload), fds });
    this.flush();
  }

  close(why = "closed locally"): void {
    this.shutdown({ kind: "local", why });
  }

  private flush(): void {
    if (this.retryTimer !== null) return;
    while (!this.closed && this.outgoing.length > 0) {
      const out = this.outgoing[0]!;
      try {
        this.stream.send(out.bytes, out.fds);
      } catch (error) {
        if (hasCode(error, "EAGAIN")) {
          // Nothing was sent: the peer is slow to read. Try again shortly, keeping the order.
          this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            this.flush();
          }, SEND_RETRY_MS);
          return;
        }
        this.shutdown({ kind: "io", error: error as Error });
        return;
      }
      this.outgoing.shift();
    }
  }

  /** Reads until the socket has nothing more, a handler goes async, or the channel closes. */
  private readAvailable(): void {
    while (!this.closed && !this.busy) {
      let n: number;
      const want = this.wantedBytes();
      try {
        // Fds belong to the message being read, whichever of its reads they came with.
        n = this.stream.recv(want.buf, want.offset, want.length, this.pendingFds);
      } catch (error) {
        this.shutdown({ kind: "io", error: error as Error });
        return;
      }
      if (n < 0) return;
      if (n === 0) {
        this.shutdown({ kind: "eof" });
        return;
      }
      if (this.pendingFds.length > MAX_FDS) {
        this.shutdown({
          kind: "protocol",
          error: new CodecError("BAD_FDS", `${this.pendingFds.length} fds in one message`),
        });
        return;
      }
      this.advance(n);
    }
  }

  private wantedBytes(): { buf: Uint8Array; offset: number; length: number } {
    const s = this.state;
    if (s.phase === "header") {
      return { buf: this.headerBuf, offset: s.filled, length: HEADER_SIZE - s.filled };
    }
    return { buf: s.payload, offset: s.filled, length: s.payload.byteLength - s.filled };
  }

  private advance(n: number): void {
    const s = this.state;
    s.filled += n;
    if (s.phase === "header") {
      if (s.filled < HEADER_SIZE) return;
      let header: MessageHeader;
      try {
        header = decodeHeader(this.headerBuf);
        if (header.size > MAX_PAYLOAD_SIZE) {
          throw new CodecError(
            "BAD_SIZE",
            `payload of ${header.size} bytes exceeds ${MAX_PAYLOAD_SIZE}`,
          );
        }
      } catch (error) {
        this.shutdown({ kind: "protocol", error: error as Error });
        return;
      }
      this.state = { phase: "payload", header, payload: new Uint8Array(header.size), filled: 0 };
      if (header.size > 0) return;
    } else if (s.filled < s.payload.byteLength) {
      return;
    }
    const done = this.state as Extract<ReadState, { phase: "payload" }>;
    this.state = { phase: "header", filled: 0 };
    const fds = new MessageFds(this.pendingFds);
    this.pendingFds = [];
    this.dispatch({ header: done.header, payload: done.payload, fds });
  }

  private dispatch(message: Message): void {
    let result: void | Promise<void>;
    try {
      result = this.handlers.onMessage(message);
    } catch (error) {
      this.closeFds(message.fds.drain());
      this.shutdown({ kind: "protocol", error: error as Error });
      return;
    }
    if (!(result instanceof Promise)) {
      this.closeFds(message.fds.drain());
      return;
    }
    // One message at a time: stop reading until this one is done.
    this.busy = true;
    this.watcher.stop();
    result.then(
      () => this.resume(message),
      (error: unknown) => {
        this.resume(message);
        this.shutdown({ kind: "protocol", error: error as Error });
      },
    );
  }

  private resume(message: Message): void {
    this.closeFds(message.fds.drain());
    this.busy = false;
    if (this.closed) return;
    this.watcher.start();
    // Level-triggered: anything already queued fires the watcher again.
  }

  private closeFds(fds: readonly number[]): void {
    for (const fd of fds) {
      try {
        closeOwnedFd(fd);
      } catch (error) {
        this.logger.warn("closing a received fd failed", { fd, error: String(error) });
      }
    }
  }

  private shutdown(reason: CloseReason): void {
    if (this.closed) return;
    this.closed = true;
    this.closeFds(this.pendingFds);
    this.pendingFds = [];
    this.outgoing = [];
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.watcher.close();
    try {
      this.stream.close();
    } catch (error) {
      this.logger.warn("closing the socket failed", { error: String(error) });
    }
    this.handlers.onClose(reason);
  }
}
