/**
 * MessageChannel: vhost-user framing over one nonblocking stream socket, driven by readiness events.
 * Reads exactly the 12-byte header, then exactly `size` payload bytes (never more: a longer read could
 * swallow the next message and its fds), collects the fds that arrived with the message, and hands
 * complete messages to one handler, strictly one at a time (an async handler pauses reading). Every fd
 * the handler does not take is closed. Sends whole messages with their fds. Backpressure: while a
 * message waits for room in the socket, nothing more is read from it, so a peer that does not read
 * what it is sent cannot make the process hold more than a fixed amount for it; one that leaves
 * messages unread past a deadline, or past that amount, is disconnected.
 * Must not: interpret payloads (codec.ts) or hold protocol state (backend.ts, frontend.ts).
 * @module
 */

import { CodedError } from "../errors.js";
import { type Logger, silentLogger } from "../log.js";
import { hasCode } from "../sys/errors.js";
import { closeFd } from "../sys/fd.js";
import { FdWatcher } from "../sys/fd-watcher.js";
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

/**
 * Most bytes of unsent messages one channel holds. Reading stops as soon as a message waits, so in
 * practice this holds the replies to one request; it is room for 15 of the largest messages.
 */
export const MAX_UNSENT_BYTES = 64 * 1024;
/**
 * How long unsent messages may wait for the peer to make room. QEMU reads every reply as soon as it
 * is sent, and replies are small: only a peer that does not read at all fills the socket.
 */
export const SEND_DEADLINE_MS = 10_000;

export type ChannelErrorCode =
  | "EUNSENT_LIMIT" // the peer let more than MAX_UNSENT_BYTES of messages pile up
  | "EUNSENT_DEADLINE" // the peer did not read what it was sent within the deadline
  | "EPEER_TEXT"; // the peer sent a line of text, not a message (the message is that line)

/** Longest text line read from a peer that sends one instead of a message. */
export const MAX_PEER_TEXT_BYTES = 1024;

/** Printable ASCII: what a text line is made of, and no valid header's 12 bytes are. */
function isPrintable(bytes: Uint8Array): boolean {
  return bytes.every((byte) => byte >= 0x20 && byte <= 0x7e);
}

/**
 * Why a channel dropped its peer: for not reading, or for sending text (a CloseReason of kind
 * "protocol").
 */
export class ChannelError extends CodedError<ChannelErrorCode> {}

export interface ChannelOptions {
  /** Most bytes of unsent messages before the peer is disconnected (default MAX_UNSENT_BYTES). */
  readonly maxUnsentBytes?: number;
  /** How long unsent messages may wait for room (default SEND_DEADLINE_MS). */
  readonly sendDeadlineMs?: number;
}

export class MessageChannel {
  private readonly stream: UnixStream;
  private readonly watcher: FdWatcher;
  private readonly handlers: ChannelHandlers;
  private readonly logger: Logger;
  private readonly headerBuf = new Uint8Array(HEADER_SIZE);
  private pendingFds: number[] = [];
  private state: ReadState = { phase: "header", filled: 0 };
  private readonly maxUnsentBytes: number;
  private readonly sendDeadlineMs: number;
  /** Messages the socket could not take yet, oldest first; reading waits until they are sent. */
  private outgoing: { bytes: Uint8Array; fds: readonly number[] }[] = [];
  private unsentBytes = 0;
  /** Runs while `outgoing` waits: the peer must make room before it fires. */
  private sendDeadline: NodeJS.Timeout | null = null;
  private busy = false;
  private closed = false;
  /** A release waits for the message boundary (release). */
  private releasing: { resolve(fd: number): void; reject(error: Error): void } | null = null;

  /** Takes ownership of `stream` and starts reading from it. */
  constructor(
    stream: UnixStream,
    handlers: ChannelHandlers,
    logger: Logger = silentLogger,
    options: ChannelOptions = {},
  ) {
    this.stream = stream;
    this.handlers = handlers;
    this.logger = logger;
    this.maxUnsentBytes = options.maxUnsentBytes ?? MAX_UNSENT_BYTES;
    this.sendDeadlineMs = options.sendDeadlineMs ?? SEND_DEADLINE_MS;
    this.watcher = new FdWatcher(
      stream.fd,
      () => this.readAvailable(),
      (error) => this.shutdown(this.ioFailure(error)),
      () => this.flush(),
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
    const bytes = encodeMessage(request, flags, payload);
    if (this.unsentBytes + bytes.byteLength > this.maxUnsentBytes) {
      const error = new ChannelError(
        "EUNSENT_LIMIT",
        `the peer does not read: ${this.unsentBytes + bytes.byteLength} bytes unsent, over the limit of ${this.maxUnsentBytes}`,
      );
      this.shutdown({ kind: "protocol", error });
      return;
    }
    this.outgoing.push({ bytes, fds });
    this.unsentBytes += bytes.byteLength;
    if (this.outgoing.length === 1) this.flush();
  }

  close(why = "closed locally"): void {
    this.shutdown({ kind: "local", why });
  }

  /**
   * Stops reading at the next message boundary, once no handler runs and everything queued was sent,
   * and gives the socket up (open: a handover passes it on) without calling onClose. What the peer
   * sends meanwhile stays in the socket for the next owner. Rejects when the channel closes first.
   */
  release(): Promise<number> {
    if (this.closed) return Promise.reject(new Error("the channel is closed"));
    if (this.releasing !== null) return Promise.reject(new Error("already being released"));
    const released = new Promise<number>((resolve, reject) => {
      this.releasing = { resolve, reject };
    });
    this.releaseIfIdle();
    return released;
  }

  /** Completes a pending release when the channel stands between two messages with nothing to send. */
  private releaseIfIdle(): boolean {
    const releasing = this.releasing;
    if (releasing === null || this.closed || this.busy || this.outgoing.length > 0) return false;
    if (this.state.phase !== "header" || this.state.filled !== 0 || this.pendingFds.length > 0) {
      return false;
    }
    this.releasing = null;
    this.closed = true;
    this.watcher.close();
    releasing.resolve(this.stream.release());
    return true;
  }

  /** Sends what the socket takes, in order; called on send and whenever the socket has room. */
  private flush(): void {
    while (!this.closed && this.outgoing.length > 0) {
      const out = this.outgoing[0]!;
      try {
        this.stream.send(out.bytes, out.fds);
      } catch (error) {
        if (hasCode(error, "EAGAIN")) {
          // Nothing was sent: the peer is slow to read. Wait for room, reading nothing meanwhile.
          this.sendDeadline ??= setTimeout(() => this.missedSendDeadline(), this.sendDeadlineMs);
          this.updateWatch();
          return;
        }
        this.shutdown(this.ioFailure(error as Error));
        return;
      }
      this.outgoing.shift();
      this.unsentBytes -= out.bytes.byteLength;
    }
    if (this.sendDeadline !== null) {
      clearTimeout(this.sendDeadline);
      this.sendDeadline = null;
      this.updateWatch();
    }
    this.releaseIfIdle();
  }

  private missedSendDeadline(): void {
    this.sendDeadline = null;
    const error = new ChannelError(
      "EUNSENT_DEADLINE",
      `the peer does not read: ${this.unsentBytes} bytes unsent after ${this.sendDeadlineMs} ms`,
    );
    this.shutdown({ kind: "protocol", error });
  }

  /** Reads while nothing waits to be sent and no handler runs; waits for room while output waits. */
  private updateWatch(): void {
    if (this.closed) return;
    const sending = this.outgoing.length > 0;
    this.watcher.watch(!sending && !this.busy, sending);
  }

  /** Reads until the socket has nothing more, a handler goes async, output waits, or it closes. */
  private readAvailable(): void {
    while (!this.closed && !this.busy && this.outgoing.length === 0) {
      if (this.releaseIfIdle()) return;
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
        this.shutdown({ kind: "protocol", error: this.peerText() ?? (error as Error) });
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

  /**
   * Why the socket failed: a peer that closed its end may have said why first, and that line beats
   * "broken pipe" or "reset" (what a send or the poll reports when the peer closed with our last
   * message unread).
   */
  private ioFailure(error: Error): CloseReason {
    const text = this.textBeforeClose();
    return text !== null ? { kind: "protocol", error: text } : { kind: "io", error };
  }

  /** A text line the peer wrote before closing, when nothing of a message was read yet. */
  private textBeforeClose(): ChannelError | null {
    if (this.state.phase !== "header" || this.state.filled !== 0) return null;
    let filled = 0;
    try {
      while (filled < HEADER_SIZE) {
        const n = this.stream.recv(this.headerBuf, filled, HEADER_SIZE - filled, this.pendingFds);
        if (n <= 0) return null;
        filled += n;
      }
    } catch {
      return null;
    }
    return this.peerText();
  }

  /**
   * The header just read as the start of a text line, with the rest of the line that has arrived:
   * a peer that refuses a connection says why in one line (server.ts does), so the user sees the
   * reason rather than "bad header". Null when the header is not printable text.
   */
  private peerText(): ChannelError | null {
    if (!isPrintable(this.headerBuf)) return null;
    const text = new Uint8Array(MAX_PEER_TEXT_BYTES);
    text.set(this.headerBuf);
    let length = HEADER_SIZE;
    try {
      while (length < text.length && !text.subarray(0, length).includes(0x0a)) {
        const n = this.stream.recv(text, length, text.length - length, this.pendingFds);
        if (n <= 0) break;
        length += n;
      }
    } catch {
      // The line is cut where the connection failed.
    }
    const line = Buffer.from(text.subarray(0, length)).toString("latin1").split("\n")[0] ?? "";
    // Only printable characters reach a log or a terminal.
    return new ChannelError("EPEER_TEXT", line.replace(/[^\x20-\x7e]/g, "?"));
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
    this.updateWatch();
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
    if (this.releaseIfIdle()) return;
    // Level-triggered: anything already queued fires the watcher again.
    this.updateWatch();
  }

  private closeFds(fds: readonly number[]): void {
    for (const fd of fds) {
      try {
        closeFd(fd);
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
    this.unsentBytes = 0;
    if (this.sendDeadline !== null) clearTimeout(this.sendDeadline);
    this.sendDeadline = null;
    this.watcher.close();
    try {
      this.stream.close();
    } catch (error) {
      this.logger.warn("closing the socket failed", { error: String(error) });
    }
    this.releasing?.reject(new Error("the channel closed before it could be released"));
    this.releasing = null;
    this.handlers.onClose(reason);
  }
}
