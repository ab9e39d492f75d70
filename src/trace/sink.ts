/**
 * AsyncFdSink: writes chunks to a file descriptor off the event loop (fs.write on the thread pool),
 * one write at a time, chunks queued meanwhile batched into the next write. The queue is bounded:
 * a chunk that does not fit is dropped and counted, so a slow disk or a stalled reader of stdout
 * never stalls a guest. Must not: block the event loop per chunk, grow without bound, or throw from
 * write() (a failed fd is reported once through onError and everything after it dropped).
 * @module
 */

import { closeSync, write, writeSync } from "node:fs";

export interface AsyncFdSinkOptions {
  /** Most bytes queued or being written at once (default 4 MiB). */
  readonly maxBuffered?: number;
  /** Write at explicit offsets from this position (regular files), else at the fd's own position. */
  readonly position?: number | null;
  /** Close the fd when the sink closes (false for stdout). */
  readonly ownsFd?: boolean;
  /** The first write error (the sink then drops everything). */
  readonly onError?: (error: Error) => void;
}

export interface SinkCounters {
  /** Bytes the kernel took. */
  readonly bytesWritten: number;
  /** Chunks refused: queue full, sink failed or closed. */
  readonly dropped: number;
}

export const DEFAULT_MAX_BUFFERED = 4 * 1024 * 1024;

/** Where encoded chunks go (a sink, or a file that rotates through sinks); drops are counted. */
export interface ChunkOutput {
  /** Queues `chunk` (kept by reference: do not reuse it). False when it was dropped. */
  write(chunk: Uint8Array): boolean;
  /**
   * Queues the chunk `build` returns, calling it only when a chunk of `maxBytes` would be taken now:
   * what would be dropped is never built. `build` must return at most `maxBytes`.
   */
  writeBuilt(maxBytes: number, build: () => Uint8Array): boolean;
  readonly counters: { readonly dropped: number };
  /** Writes what is queued and closes (shutdown). */
  closeSync(): void;
}
/** Retry delay when a nonblocking pipe is full. */
const EAGAIN_RETRY_MS = 10;

export class AsyncFdSink implements ChunkOutput {
  readonly #fd: number;
  readonly #maxBuffered: number;
  readonly #ownsFd: boolean;
  readonly #onError: (error: Error) => void;
  #position: number | null;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #inFlightBytes = 0;
  #writing = false;
  #scheduled = false;
  #failed = false;
  /** False once end() or closeSync() was called: new chunks are dropped. */
  #accepting = true;
  /** closeSync() wrote the rest itself: in-flight completion only closes the fd. */
  #finished = false;
  #fdClosed = false;
  #onClosed: (() => void) | undefined;
  #bytesWritten = 0;
  #dropped = 0;

  constructor(fd: number, options: AsyncFdSinkOptions = {}) {
    this.#fd = fd;
    this.#maxBuffered = options.maxBuffered ?? DEFAULT_MAX_BUFFERED;
    this.#position = options.position ?? null;
    this.#ownsFd = options.ownsFd ?? true;
    this.#onError = options.onError ?? (() => undefined);
  }

  get counters(): SinkCounters {
    return { bytesWritten: this.#bytesWritten, dropped: this.#dropped };
  }

  /** Bytes queued or being written. */
  get buffered(): number {
    return this.#pendingBytes + this.#inFlightBytes;
  }

  /** True when a chunk of `bytes` would be queued now. */
  hasRoom(bytes: number): boolean {
    return this.#accepting && !this.#failed && this.buffered + bytes <= this.#maxBuffered;
  }

  writeBuilt(maxBytes: number, build: () => Uint8Array): boolean {
    if (!this.hasRoom(maxBytes)) {
      this.#dropped++;
      return false;
    }
    return this.write(build());
  }

  write(chunk: Uint8Array): boolean {
    if (!this.hasRoom(chunk.length)) {
      this.#dropped++;
      return false;
    }
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    if (!this.#writing && !this.#scheduled) {
      // Batch everything queued during this turn of the event loop into one write.
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.#flush();
      });
    }
    return true;
  }

  /** Takes no more chunks; writes what is queued in the background, then closes the fd. */
  end(onClosed?: () => void): void {
    if (!this.#accepting) return;
    this.#accepting = false;
    this.#onClosed = onClosed;
    if (!this.#writing && !this.#scheduled) this.#flush();
  }

  /**
   * Writes what is still queued synchronously (shutdown) and closes the fd once no write is in
   * flight. With explicit positions the order on disk is exact; on a stream (stdout) a write still
   * in flight may land after these bytes.
   */
  closeSync(): void {
    if (this.#finished) return;
    this.#accepting = false;
    this.#finished = true;
    const rest = this.#takePending();
    if (rest.length > 0 && !this.#failed) {
      try {
        const base = this.#position === null ? null : this.#position + this.#inFlightBytes;
        let done = 0;
        while (done < rest.length) {
          const at = base === null ? null : base + done;
          done += writeSync(this.#fd, rest, done, rest.length - done, at);
        }
        this.#bytesWritten += done;
      } catch (error) {
        this.#fail(error);
      }
    }
    if (!this.#writing) this.#closeFd();
  }

  #takePending(): Buffer {
    const chunk = Buffer.concat(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    return chunk;
  }

  #flush(): void {
    if (this.#writing || this.#finished) return;
    if (this.#pendingBytes === 0 || this.#failed) {
      if (!this.#accepting) this.#closeFd();
      return;
    }
    const chunk = this.#takePending();
    this.#writing = true;
    this.#inFlightBytes = chunk.length;
    this.#writeFrom(chunk, 0);
  }

  #writeFrom(chunk: Buffer, offset: number): void {
    const position = this.#position === null ? null : this.#position + offset;
    write(this.#fd, chunk, offset, chunk.length - offset, position, (error, written) => {
      if (error?.code === "EAGAIN") {
        setTimeout(() => this.#writeFrom(chunk, offset), EAGAIN_RETRY_MS);
        return;
      }
      if (error) {
        this.#fail(error);
      } else {
        this.#bytesWritten += written;
        if (offset + written < chunk.length) {
          this.#writeFrom(chunk, offset + written);
          return;
        }
      }
      if (this.#position !== null) this.#position += chunk.length;
      this.#writing = false;
      this.#inFlightBytes = 0;
      if (this.#finished) this.#closeFd();
      else this.#flush();
    });
  }

  #fail(error: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#dropped += this.#pending.length;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#onError(error instanceof Error ? error : new Error(String(error)));
  }

  #closeFd(): void {
    if (this.#fdClosed) return;
    this.#fdClosed = true;
    if (this.#ownsFd) {
      try {
        closeSync(this.#fd);
      } catch {
        // already closed: nothing left to release
      }
    }
    this.#onClosed?.();
  }
}
