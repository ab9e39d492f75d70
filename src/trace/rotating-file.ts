/**
 * RotatingFile: a file the daemon fills from guest traffic (`--pcap`, `--trace-file`), capped in
 * size and in number of files. Its directory is reached and held through a TrustedDirectory (one
 * others can write to is refused, unless sticky); the file is opened relative to that directory fd,
 * never through a link: a new file with O_EXCL, an existing one checked on its fd (a regular file
 * the daemon's user owns, one link) before it is truncated or appended to, and narrowed to 0600. At
 * the size cap the next file is created under a fresh temporary name (O_EXCL), the older files move
 * up one name (FILE → FILE.1 → ..., the oldest dropped) and the new file is renamed onto FILE: only
 * renames in the held directory, so whatever anyone puts at a name meanwhile is replaced, never
 * opened or written through. Writes go through AsyncFdSinks (bounded, off the event loop).
 * Must not: open anything by a path, or throw from write() (a failed rotation stops the file and is
 * reported once through onError).
 * @module
 */

import { randomBytes } from "node:crypto";
import { closeSync } from "node:fs";
import { hasCode } from "../sys/errors.js";
import {
  type CheckedFile,
  type FileIdentity,
  openParent,
  sameFile,
  type TrustedDirectory,
} from "../sys/trusted-dir.js";
import { AsyncFdSink, type ChunkOutput, DEFAULT_MAX_BUFFERED } from "./sink.js";

/** Default size cap of one file: 64 MiB. */
export const DEFAULT_MAX_FILE_SIZE = 64 * 1024 * 1024;
/** Default number of files kept, the one being written included (FILE and FILE.1). */
export const DEFAULT_MAX_FILES = 2;
/** Most files one output may keep. */
export const MAX_FILES_LIMIT = 100;
/** Guest traffic is readable by the daemon's user only; a wider existing file is narrowed to it. */
export const OUTPUT_FILE_MODE = 0o600;
/** Attempts at opening the first file while the name appears or disappears under us. */
const OPEN_ATTEMPTS = 3;

export interface RotatingFileOptions {
  /** What to do with a file already at the path: empty it (pcap) or add to it (trace). */
  readonly existing: "truncate" | "append";
  /** Largest size of one file in bytes (default 64 MiB). */
  readonly maxFileSize?: number;
  /** Files kept, the current one included (default 2: FILE and FILE.1); 1 starts FILE afresh. */
  readonly maxFiles?: number;
  /** At the size cap: start a new file (default), or stop writing. */
  readonly onLimit?: "rotate" | "stop";
  /** Written at the start of every new or emptied file (the pcap file header). */
  readonly header?: Uint8Array;
  /** Most bytes queued at once, over every sink still writing (default 4 MiB). */
  readonly maxBuffered?: number;
  /** A write or rotation failed: the file is stopped. */
  readonly onError?: (error: Error) => void;
}

export interface RotatingFileCounters {
  readonly path: string;
  /** Bytes in the current file, queued ones included. */
  readonly fileSize: number;
  readonly rotations: number;
  /** Chunks not written: queue full, over the size cap, stopped, or a write error. */
  readonly dropped: number;
  /** True once the file stopped: at the cap with onLimit "stop", or after a failed rotation. */
  readonly stopped: boolean;
}

const NO_HEADER = new Uint8Array(0);

export class RotatingFile implements ChunkOutput {
  readonly path: string;
  readonly #dir: TrustedDirectory;
  readonly #name: string;
  readonly #maxFileSize: number;
  readonly #keep: number;
  readonly #onLimit: "rotate" | "stop";
  readonly #header: Uint8Array;
  readonly #maxBuffered: number;
  readonly #onError: (error: Error) => void;
  #sink: AsyncFdSink;
  /** The inode being written: only it is ever renamed or removed at FILE. */
  #identity: FileIdentity;
  #fileSize = 0;
  /** Sinks of rotated files still writing their queue (closeSync finishes them). */
  readonly #ending = new Set<AsyncFdSink>();
  /** Drops counted here, and by the sinks that ended. */
  #dropped = 0;
  #rotations = 0;
  #stopped = false;

  private constructor(dir: TrustedDirectory, name: string, options: RotatingFileOptions) {
    this.#dir = dir;
    this.#name = name;
    this.path = `${dir.path === "/" ? "" : dir.path}/${name}`;
    this.#maxFileSize = options.maxFileSize ?? DEFAULT_MAX_FILE_SIZE;
    this.#keep = (options.maxFiles ?? DEFAULT_MAX_FILES) - 1;
    this.#onLimit = options.onLimit ?? "rotate";
    this.#header = options.header ?? NO_HEADER;
    this.#maxBuffered = options.maxBuffered ?? DEFAULT_MAX_BUFFERED;
    this.#onError = options.onError ?? (() => undefined);
    if (!Number.isSafeInteger(this.#maxFileSize) || this.#maxFileSize <= this.#header.length) {
      throw new RangeError(`size cap ${this.#maxFileSize} leaves no room after the file header`);
    }
    if (!Number.isInteger(this.#keep) || this.#keep < 0 || this.#keep >= MAX_FILES_LIMIT) {
      throw new RangeError(`file count ${this.#keep + 1} is not in 1..${MAX_FILES_LIMIT}`);
    }
    const file = this.#openFirst(options.existing);
    this.#identity = file.stat;
    const emptied = options.existing === "truncate" || file.stat.size === 0;
    this.#sink = this.#startSink(file.fd, emptied ? 0 : file.stat.size);
  }

  /**
   * Opens (or creates) the file at `path` under the rules of the module comment. Throws
   * UntrustedPathError (an untrusted directory, or a file that is not the daemon's own regular file)
   * or SysError (ELOOP for a link at the name, ENOENT for a missing directory, ...), with nothing
   * written.
   */
  static open(path: string, options: RotatingFileOptions): RotatingFile {
    const { dir, name } = openParent(path);
    try {
      return new RotatingFile(dir, name, options);
    } catch (error) {
      dir.close();
      throw error;
    }
  }

  get counters(): RotatingFileCounters {
    let dropped = this.#dropped + this.#sink.counters.dropped;
    for (const sink of this.#ending) dropped += sink.counters.dropped;
    return {
      path: this.path,
      fileSize: this.#fileSize,
      rotations: this.#rotations,
      dropped,
      stopped: this.#stopped,
    };
  }

  writeBuilt(maxBytes: number, build: () => Uint8Array): boolean {
    if (this.#stopped || this.#buffered() + maxBytes > this.#maxBuffered) {
      this.#dropped++;
      return false;
    }
    return this.write(build());
  }

  write(chunk: Uint8Array): boolean {
    if (this.#stopped || this.#buffered() + chunk.length > this.#maxBuffered) {
      this.#dropped++;
      return false;
    }
    if (this.#fileSize + chunk.length > this.#maxFileSize) {
      if (this.#onLimit === "stop" || this.#header.length + chunk.length > this.#maxFileSize) {
        // Stopped for good, or this one chunk can never fit in a file.
        this.#stopped = this.#onLimit === "stop";
        this.#dropped++;
        return false;
      }
      try {
        this.#rotate();
      } catch (error) {
        // No next file: stop here rather than write on past the cap or throw into the device.
        this.#stopped = true;
        this.#dropped++;
        this.#onError(error instanceof Error ? error : new Error(String(error)));
        return false;
      }
    }
    if (!this.#sink.write(chunk)) return false;
    this.#fileSize += chunk.length;
    return true;
  }

  /** Writes what is queued, also for files rotated away and still being written, and closes all. */
  closeSync(): void {
    // Each ending sink leaves the set (its drops counted here) once its fd is closed.
    for (const sink of [...this.#ending]) sink.closeSync();
    this.#sink.closeSync();
    this.#dir.close();
  }

  #buffered(): number {
    let bytes = this.#sink.buffered;
    for (const sink of this.#ending) bytes += sink.buffered;
    return bytes;
  }

  /** A new file at the name (O_EXCL), else the one there, checked before it is emptied. */
  #openFirst(existing: "truncate" | "append"): CheckedFile {
    for (let attempt = 1; ; attempt++) {
      try {
        if (this.#dir.stat(this.#name) === null) {
          return this.#dir.openFile(this.#name, {
            access: "write",
            create: "exclusive",
            mode: OUTPUT_FILE_MODE,
          });
        }
        return this.#dir.openFile(this.#name, {
          access: "write",
          mode: OUTPUT_FILE_MODE,
          truncate: existing === "truncate",
        });
      } catch (error) {
        // Created or removed between the look and the open: look again, a few times.
        const raced = hasCode(error, "EEXIST") || hasCode(error, "ENOENT");
        if (!raced || attempt === OPEN_ATTEMPTS) throw error;
      }
    }
  }

  #startSink(fd: number, position: number): AsyncFdSink {
    const sink = new AsyncFdSink(fd, {
      position,
      maxBuffered: this.#maxBuffered,
      onError: (error) => {
        this.#stopped = true;
        this.#onError(error);
      },
    });
    this.#fileSize = position;
    if (position === 0 && this.#header.length > 0) {
      sink.write(this.#header);
      this.#fileSize = this.#header.length;
    }
    return sink;
  }

  /** FILE → FILE.1 → ... → FILE.<keep> (the oldest dropped); a new FILE, ours from its creation. */
  #rotate(): void {
    const next = this.#createTemporary();
    try {
      this.#shiftOlder();
      // Renamed over whatever took the name since the shift: replaced, never opened.
      this.#dir.rename(next.name, this.#dir, this.#name, false);
    } catch (error) {
      closeSync(next.file.fd);
      this.#dir.unlinkIfSame(next.name, next.file.stat);
      throw error;
    }
    const old = this.#sink;
    this.#ending.add(old);
    old.end(() => {
      this.#dropped += old.counters.dropped;
      this.#ending.delete(old);
    });
    this.#identity = next.file.stat;
    this.#sink = this.#startSink(next.file.fd, 0);
    this.#rotations++;
  }

  /** A file under a name nobody can have chosen before us, created O_EXCL in the directory. */
  #createTemporary(): { name: string; file: CheckedFile } {
    for (let attempt = 1; ; attempt++) {
      const name = `.${this.#name}.${randomBytes(6).toString("hex")}`;
      try {
        const file = this.#dir.openFile(name, {
          access: "write",
          create: "exclusive",
          mode: OUTPUT_FILE_MODE,
        });
        return { name, file };
      } catch (error) {
        if (!hasCode(error, "EEXIST") || attempt === OPEN_ATTEMPTS) throw error;
      }
    }
  }

  /** Moves the older files up one name and the current one to FILE.1 (or removes it: keep 0). */
  #shiftOlder(): void {
    const current = this.#dir.stat(this.#name);
    // Only the inode this writer made becomes FILE.1; anything else found at the name is not kept
    // as an older file (the rename onto FILE replaces it, without opening it).
    const ours = current !== null && sameFile(current, this.#identity);
    if (this.#keep === 0) {
      if (ours) this.#dir.unlinkIfSame(this.#name, this.#identity);
      return;
    }
    for (let k = this.#keep - 1; k >= 1; k--) {
      try {
        this.#dir.rename(`${this.#name}.${k}`, this.#dir, `${this.#name}.${k + 1}`, false);
      } catch (error) {
        if (!hasCode(error, "ENOENT")) throw error;
      }
    }
    if (ours) this.#dir.rename(this.#name, this.#dir, `${this.#name}.1`, false);
  }
}
