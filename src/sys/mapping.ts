/**
 * Mapping: one shared mmap of a file range (a guest memory region) and ArrayBuffer views into it.
 * unmap() detaches every view first, so a stale view reads as length 0 instead of faulting.
 * Implements the RegionBacking shape (view + close) of src/virtio/guest-memory.ts structurally.
 * Must not: translate guest addresses or own the fd (the fd may be closed once mapped).
 * @module
 */

import { closedError, SysArgumentError, SysError, sysCall } from "./errors.js";
import { type MappingHandle, native } from "./native.js";

export class Mapping {
  #handle: MappingHandle | null;
  readonly length: number;
  readonly writable: boolean;

  private constructor(handle: MappingHandle, length: number, writable: boolean) {
    this.#handle = handle;
    this.length = length;
    this.writable = writable;
  }

  /** Maps `length` bytes of `fd` from `offset` (page aligned), shared with every other mapper. */
  static map(fd: number, offset: number, length: number, writable: boolean): Mapping {
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new SysArgumentError(`mapping offset must be a non-negative integer, got ${offset}`);
    }
    if (!Number.isSafeInteger(length) || length < 1) {
      throw new SysArgumentError(`mapping length must be a positive integer, got ${length}`);
    }
    checkFileCovers(fd, offset + length);
    const handle = sysCall("mmap", () => native().mmap(fd, offset, length, writable));
    return new Mapping(handle, length, writable);
  }

  get closed(): boolean {
    return this.#handle === null;
  }

  /** An ArrayBuffer over [offset, offset + length) of the mapping, without copying. */
  view(offset: number, length: number): ArrayBuffer {
    const handle = this.#handle;
    if (handle === null) throw closedError("mappingView");
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0 ||
      offset + length > this.length
    ) {
      throw new SysArgumentError(
        `view [${offset}, +${length}) is outside the mapping of ${this.length} bytes`,
      );
    }
    return sysCall("mappingView", () => native().mappingView(handle, offset, length));
  }

  /** Detaches every view, then unmaps; safe to call twice. */
  unmap(): void {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    sysCall("munmap", () => native().munmap(handle));
  }

  close(): void {
    this.unmap();
  }
}

const S_IFREG = 0o100000;

/**
 * Refuses to map a regular file (memfd, tmpfs, hugetlbfs) beyond its end: touching such a page raises
 * SIGBUS and would kill the process, and the size comes from a peer we do not trust.
 */
function checkFileCovers(fd: number, end: number): void {
  const [type, size] = sysCall("fstat", () => native().fdInfo(fd));
  if (type === S_IFREG && size < end) {
    throw new SysError(
      "ERANGE",
      "mmap",
      `mmap failed: the file has ${size} bytes, the mapping needs ${end} (ERANGE)`,
    );
  }
}
