/**
 * Backing files for emulated device memories: open or create a file of an exact size, and commit
 * byte ranges write-through (pwrite + fdatasync) so an acknowledged guest write survives a crash.
 * The file's directory is reached through a TrustedDirectory (every directory on the way writable by
 * root or the daemon's user only, or sticky); the file is opened relative to it without following a
 * link, without side effects on a device node (O_NOCTTY|O_NONBLOCK), and checked on the fd before a
 * byte is read or written: a regular file the daemon's user owns, with one link, narrowed to 0600
 * (a guest's data is nobody else's to read). A missing file is created atomically: a temp file made
 * O_EXCL 0600 in the same directory, filled, synced, renamed into place without replacing anything
 * (RENAME_NOREPLACE), directory synced. An existing file of the wrong size is refused, never
 * truncated or grown.
 * Must not know about I2C, models or the configuration format.
 *
 * Cost (measured on the development VM, ext4 on a virtio disk, 2000 single-byte commits): about
 * 100-150 µs per commit, nearly all fdatasync; one guest write transfer (e.g. a page write) is one
 * commit, so write-through costs far less than a real EEPROM's 5 ms write cycle.
 * Re-measure with `node dist/bench/backing-store.js [dir]`.
 * @module
 */

import { randomBytes } from "node:crypto";
import { fdatasyncSync, fsyncSync, readSync, writeSync } from "node:fs";
import { resolve } from "node:path";
import { hasCode } from "../sys/errors.js";
import { closeFd } from "../sys/fd.js";
import {
  type CheckedFile,
  fstatFd,
  openParent,
  type TrustedDirectory,
} from "../sys/trusted-dir.js";
import type { BackingStore } from "./model.js";
import { MODEL_ERROR_CODES, ModelError } from "./models/model-error.js";

/** Mode of backing files: what a guest stored is for the daemon's user only. */
export const BACKING_FILE_MODE = 0o600;
/** Creations tried while another file keeps appearing and disappearing at the name. */
const CREATE_ATTEMPTS = 3;

function ioError(path: string, what: string, cause: unknown): ModelError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new ModelError(MODEL_ERROR_CODES.backingIo, `backing file ${path}: ${what}: ${detail}`, {
    cause,
  });
}

function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.length) {
    done += writeSync(fd, bytes, done, bytes.length - done, position + done);
  }
}

/**
 * Creates `name` in `dir` holding `content`: written under a temp name, synced, then renamed into
 * place unless something appeared there meanwhile (null then: open that one instead). The returned
 * fd is the file's own (never reopened by name).
 */
function createFile(dir: TrustedDirectory, name: string, content: Uint8Array): CheckedFile | null {
  const temp = `.${name}.${randomBytes(6).toString("hex")}`;
  const file = dir.openFile(temp, {
    access: "readwrite",
    create: "exclusive",
    mode: BACKING_FILE_MODE,
  });
  try {
    writeAll(file.fd, content, 0);
    fsyncSync(file.fd);
    dir.rename(temp, dir, name, true);
  } catch (err) {
    closeFd(file.fd);
    dir.unlinkIfSame(temp, file.stat);
    if (hasCode(err, "EEXIST")) return null;
    throw err;
  }
  fsyncSync(dir.fd);
  return { ...file, stat: fstatFd(file.fd) };
}

function readAll(fd: number, into: Uint8Array): void {
  let done = 0;
  while (done < into.length) {
    const n = readSync(fd, into, done, into.length - done, done);
    if (n === 0) throw new Error("file shrank while reading");
    done += n;
  }
}

/**
 * Opens the backing file at `path` (relative to `baseDir`, default the current directory) holding
 * exactly `size` bytes. A missing file is created from `initial` (padded with 0xff, an erased chip).
 * Throws ModelError "I2C_BACKING_SIZE" when the file exists with another size, "I2C_BACKING_IO"
 * when it cannot be created, opened or read, or is refused (a link, not the daemon's own regular
 * file with one link, or a directory on the way others can write to), with nothing read or written.
 *
 * @example
 * ```ts
 * const store = openBacking("eeprom.bin", 256, new Uint8Array(256).fill(0xff));
 * store.bytes[0x10] = 0x42;
 * store.commit(0x10, 1); // on disk when this returns
 * store.close();
 * ```
 */
export function openBacking(
  path: string,
  size: number,
  initial: Uint8Array,
  baseDir: string = process.cwd(),
): BackingStore {
  const file = resolve(baseDir, path);
  let dir: TrustedDirectory;
  let name: string;
  try {
    ({ dir, name } = openParent(file));
  } catch (err) {
    throw ioError(file, "cannot open its directory", err);
  }
  let opened: CheckedFile;
  try {
    opened = openOrCreate(dir, name, file, size, initial);
  } finally {
    dir.close();
  }
  const bytes = new Uint8Array(size);
  try {
    if (opened.stat.size !== size) {
      throw new ModelError(
        MODEL_ERROR_CODES.backingSize,
        `backing file ${file} holds ${opened.stat.size} bytes, the device needs ${size} (not truncated; fix or remove the file)`,
      );
    }
    readAll(opened.fd, bytes);
  } catch (err) {
    closeFd(opened.fd);
    throw err instanceof ModelError ? err : ioError(file, "cannot read", err);
  }
  return new FileBackingStore(file, opened.fd, bytes);
}

/** The checked file at `name`, created from `initial` when missing. Throws ModelError. */
function openOrCreate(
  dir: TrustedDirectory,
  name: string,
  file: string,
  size: number,
  initial: Uint8Array,
): CheckedFile {
  for (let attempt = 1; ; attempt++) {
    try {
      return dir.openFile(name, { access: "readwrite", mode: BACKING_FILE_MODE });
    } catch (err) {
      if (!hasCode(err, "ENOENT") || attempt > CREATE_ATTEMPTS) {
        throw ioError(file, "cannot open", err);
      }
    }
    const content = new Uint8Array(size).fill(0xff);
    content.set(initial.subarray(0, size));
    try {
      const created = createFile(dir, name, content);
      if (created !== null) return created;
      // Another file took the name while ours was written: open that one (it is checked).
    } catch (err) {
      throw ioError(file, "cannot create", err);
    }
  }
}

class FileBackingStore implements BackingStore {
  readonly bytes: Uint8Array;
  readonly #path: string;
  #fd: number | null;

  constructor(path: string, fd: number, bytes: Uint8Array) {
    this.#path = path;
    this.#fd = fd;
    this.bytes = bytes;
  }

  commit(offset: number, length: number): void {
    checkRange(this.bytes.length, offset, length);
    if (this.#fd === null) throw ioError(this.#path, "cannot commit", new Error("closed"));
    if (length === 0) return;
    try {
      writeAll(this.#fd, this.bytes.subarray(offset, offset + length), offset);
      fdatasyncSync(this.#fd);
    } catch (err) {
      throw ioError(this.#path, "cannot commit", err);
    }
  }

  close(): void {
    if (this.#fd === null) return;
    const fd = this.#fd;
    this.#fd = null;
    closeFd(fd);
  }
}

/** Throws I2C_MODEL_OUT_OF_RANGE unless `[offset, offset+length)` lies within `size` bytes. */
export function checkRange(size: number, offset: number, length: number): void {
  if (
    !Number.isInteger(offset) ||
    !Number.isInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset + length > size
  ) {
    throw new ModelError(
      MODEL_ERROR_CODES.outOfRange,
      `range ${offset}+${length} is outside a memory of ${size} bytes`,
    );
  }
}

/** A BackingStore over plain memory (no file): commit only checks the range. */
export function memoryBacking(bytes: Uint8Array): BackingStore {
  return {
    bytes,
    commit: (offset, length) => checkRange(bytes.length, offset, length),
    close: () => undefined,
  };
}
