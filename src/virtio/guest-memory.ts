/**
 * Guest memory: the regions a VMM shares with us, translation of guest-physical (GPA) and frontend-virtual
 * (user) addresses, and bounds-checked access to them. Every byte the daemon reads from or writes to guest
 * RAM goes through this class. It knows nothing of virtqueues, vhost-user or I2C, and it never maps memory
 * itself: a region's bytes come from a `RegionBacking` (an mmap in production, an ArrayBuffer in tests).
 * @module
 */

/** Where a region's bytes come from. `Mapping` (src/sys) implements it; tests use `ArrayBufferBacking`. */
export interface RegionBacking {
  /**
   * Bytes [offset, offset + length) of the region, without copying. A `Uint8Array` result lets a plain
   * ArrayBuffer stand for a region seen through several overlapping windows.
   */
  view(offset: number, length: number): ArrayBuffer | Uint8Array;
  close(): void;
}

export interface MemoryRegionInfo {
  guestPhysAddr: number;
  size: number;
  userAddr: number;
}

export type GuestMemoryErrorCode = "EINVAL" | "EFAULT" | "ERANGE";

export class GuestMemoryError extends Error {
  readonly code: GuestMemoryErrorCode;

  constructor(code: GuestMemoryErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "GuestMemoryError";
    this.code = code;
  }
}

export interface GuestMemoryOptions {
  /** Bytes per window (default 1 GiB). Tests use small windows to reach the spanning paths. */
  windowSize?: number;
  /** Bytes by which consecutive windows overlap (default 1 MiB): objects up to this size fit one window. */
  windowOverlap?: number;
}

export const DEFAULT_WINDOW_SIZE = 2 ** 30;
export const DEFAULT_WINDOW_OVERLAP = 2 ** 20;
/** Exclusive upper bound of every address and size: past it, `number` loses integer precision. */
export const ADDRESS_LIMIT = 2 ** 53;

interface Window {
  /** Region-relative offset of the window's first byte. */
  readonly start: number;
  readonly end: number;
  readonly bytes: Uint8Array;
  readonly dv: DataView;
}

interface Region {
  readonly info: MemoryRegionInfo;
  readonly backing: RegionBacking;
  readonly start: number;
  readonly end: number;
  /** Created on first use and kept: one DataView and one Uint8Array per window, never per access. */
  readonly windows: (Window | undefined)[];
}

const EMPTY = new Uint8Array(0);

/**
 * Where locate() found a range: the cached bytes and DataView of the window holding it, and the range's
 * offset in them. The caller owns the object and reuses it, so finding a range allocates nothing.
 */
export interface MemoryWindow {
  bytes: Uint8Array;
  dv: DataView;
  offset: number;
}

/** A MemoryWindow to pass to locate(), pointing nowhere yet. */
export function emptyWindow(): MemoryWindow {
  return { bytes: EMPTY, dv: new DataView(EMPTY.buffer), offset: 0 };
}

function isAddress(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

function checkRegionInfo(info: MemoryRegionInfo, index: number): void {
  const { guestPhysAddr, size, userAddr } = info;
  if (!isAddress(guestPhysAddr) || !isAddress(size) || !isAddress(userAddr)) {
    throw new GuestMemoryError(
      "EINVAL",
      `region ${index}: addresses and size must be integers < 2^53`,
    );
  }
  if (size === 0) throw new GuestMemoryError("EINVAL", `region ${index}: empty`);
  if (guestPhysAddr + size > ADDRESS_LIMIT || userAddr + size > ADDRESS_LIMIT) {
    throw new GuestMemoryError("EINVAL", `region ${index}: ends past 2^53`);
  }
}

/** Throws EINVAL when two of the ranges [start, start + size) overlap. */
function checkNoOverlap(
  infos: readonly MemoryRegionInfo[],
  key: "guestPhysAddr" | "userAddr",
): void {
  const sorted = [...infos].sort((a, b) => a[key] - b[key]);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (prev[key] + prev.size > cur[key]) {
      throw new GuestMemoryError(
        "EINVAL",
        `regions overlap in ${key === "guestPhysAddr" ? "guest-physical" : "user"} address space at 0x${cur[key].toString(16)}`,
      );
    }
  }
}

/** Copies up to this many bytes go byte by byte: cheaper than creating a subarray for set(). */
const SMALL_COPY = 16;

export class GuestMemory {
  readonly regions: readonly MemoryRegionInfo[];
  private readonly sorted: readonly Region[];
  private readonly windowSize: number;
  private readonly windowOverlap: number;
  private lastHit: Region | undefined;
  private closed = false;
  /** Scratch for scalar accesses that straddle a window or region boundary. */
  private readonly scratch = new Uint8Array(8);
  private readonly scratchView = new DataView(this.scratch.buffer);
  private scalarOffset = 0;
  private scratchPending = false;
  /** slice()'s locate() result. */
  private readonly found = emptyWindow();

  constructor(
    regions: readonly { info: MemoryRegionInfo; backing: RegionBacking }[],
    options: GuestMemoryOptions = {},
  ) {
    const windowSize = options.windowSize ?? DEFAULT_WINDOW_SIZE;
    const windowOverlap = options.windowOverlap ?? DEFAULT_WINDOW_OVERLAP;
    if (!Number.isSafeInteger(windowSize) || windowSize <= 0) {
      throw new GuestMemoryError("EINVAL", "windowSize must be a positive integer");
    }
    if (!Number.isSafeInteger(windowOverlap) || windowOverlap < 0) {
      throw new GuestMemoryError("EINVAL", "windowOverlap must be a non-negative integer");
    }
    this.windowSize = windowSize;
    this.windowOverlap = windowOverlap;
    const infos = regions.map(({ info }, index) => {
      checkRegionInfo(info, index);
      return Object.freeze({ ...info });
    });
    checkNoOverlap(infos, "guestPhysAddr");
    checkNoOverlap(infos, "userAddr");
    this.regions = Object.freeze(infos);
    this.sorted = regions
      .map(({ backing }, index): Region => {
        const info = infos[index]!;
        return {
          info,
          backing,
          start: info.guestPhysAddr,
          end: info.guestPhysAddr + info.size,
          windows: [],
        };
      })
      .sort((a, b) => a.start - b.start);
  }

  uvaToGpa(uva: number, length: number): number {
    if (!isAddress(uva) || !isAddress(length) || uva + length > ADDRESS_LIMIT) {
      throw new GuestMemoryError("EFAULT", "user address range is not a valid range");
    }
    for (const region of this.sorted) {
      const offset = uva - region.info.userAddr;
      if (offset >= 0 && offset < region.info.size && offset + length <= region.info.size) {
        return region.start + offset;
      }
    }
    throw new GuestMemoryError(
      "EFAULT",
      `user address range 0x${uva.toString(16)}+${length} is not inside one region`,
    );
  }

  slice(gpa: number, len: number): Uint8Array | null {
    if (len === 0) {
      // Checked like any range, but no window is mapped for it.
      this.checkRange(gpa, len);
      this.regionAt(gpa);
      return EMPTY;
    }
    const found = this.found;
    if (!this.locate(gpa, len, found)) return null;
    return found.bytes.subarray(found.offset, found.offset + len);
  }

  /**
   * Points `into` at [gpa, gpa + len) and returns true when the range lies in one region window;
   * false when it does not (it spans windows or regions). Throws GuestMemoryError "EFAULT" when any
   * byte is outside every region, as slice does. Allocates nothing: the hot paths address guest
   * memory through the window's cached views and an offset.
   */
  locate(gpa: number, len: number, into: MemoryWindow): boolean {
    this.checkRange(gpa, len);
    const region = this.regionAt(gpa);
    const offset = gpa - region.start;
    if (offset + len > region.info.size) {
      this.checkBackedFrom(region, gpa + len);
      return false;
    }
    const window = this.windowFor(region, offset);
    if (offset + len > window.end) return false;
    into.bytes = window.bytes;
    into.dv = window.dv;
    into.offset = offset - window.start;
    return true;
  }

  /** True when every byte of [gpa, gpa + len) lies in guest memory. Never throws, never allocates. */
  isBacked(gpa: number, len: number): boolean {
    if (!isAddress(gpa) || !isAddress(len) || gpa + len > ADDRESS_LIMIT) return false;
    const region = this.findRegion(gpa);
    return region !== undefined && this.backedUntil(region, gpa + len);
  }

  read(gpa: number, into: Uint8Array): void {
    this.copy(gpa, into, false);
  }

  write(gpa: number, from: Uint8Array): void {
    this.copy(gpa, from, true);
  }

  readU16(gpa: number): number {
    return this.scalar(gpa, 2, false).getUint16(this.scalarOffset, true);
  }

  readU32(gpa: number): number {
    return this.scalar(gpa, 4, false).getUint32(this.scalarOffset, true);
  }

  /** A 64-bit value as a number; ERANGE when it is 2^53 or more. */
  readU64(gpa: number): number {
    const dv = this.scalar(gpa, 8, false);
    const low = dv.getUint32(this.scalarOffset, true);
    const high = dv.getUint32(this.scalarOffset + 4, true);
    if (high >= 2 ** 21) {
      throw new GuestMemoryError("ERANGE", `64-bit value at 0x${gpa.toString(16)} is 2^53 or more`);
    }
    return high * 2 ** 32 + low;
  }

  writeU16(gpa: number, value: number): void {
    checkValue(value, 0xffff);
    this.scalar(gpa, 2, true).setUint16(this.scalarOffset, value, true);
    this.flushScalar(gpa, 2);
  }

  writeU32(gpa: number, value: number): void {
    checkValue(value, 0xffffffff);
    this.scalar(gpa, 4, true).setUint32(this.scalarOffset, value, true);
    this.flushScalar(gpa, 4);
  }

  view(gpa: number, len: number): { dv: DataView; offset: number } {
    this.checkRange(gpa, len);
    const region = this.regionAt(gpa);
    const offset = gpa - region.start;
    if (offset + len > region.info.size) {
      throw new GuestMemoryError(
        "EFAULT",
        `range 0x${gpa.toString(16)}+${len} is not in one region`,
      );
    }
    const window = this.windowFor(region, offset);
    if (offset + len > window.end) {
      throw new GuestMemoryError("EFAULT", `range 0x${gpa.toString(16)}+${len} spans windows`);
    }
    return { dv: window.dv, offset: offset - window.start };
  }

  /** Closes every backing (unmaps). Later accesses fail with EFAULT. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.lastHit = undefined;
    let firstError: unknown;
    for (const region of this.sorted) {
      region.windows.length = 0;
      try {
        region.backing.close();
      } catch (error) {
        firstError ??= error;
      }
    }
    if (firstError !== undefined) throw firstError;
  }

  private checkRange(gpa: number, len: number): void {
    if (!isAddress(gpa) || !isAddress(len) || gpa + len > ADDRESS_LIMIT) {
      throw new GuestMemoryError("EFAULT", `invalid guest range ${gpa}+${len}`);
    }
  }

  /** The region holding `gpa`, or EFAULT. */
  private regionAt(gpa: number): Region {
    const region = this.findRegion(gpa);
    if (region !== undefined) return region;
    throw new GuestMemoryError(
      "EFAULT",
      `guest address 0x${gpa.toString(16)} is outside guest memory`,
    );
  }

  /** A last-hit cache, then a binary search over the regions sorted by address. */
  private findRegion(gpa: number): Region | undefined {
    const hit = this.lastHit;
    if (hit !== undefined && gpa >= hit.start && gpa < hit.end) return hit;
    if (this.closed) return undefined;
    let low = 0;
    let high = this.sorted.length - 1;
    while (low <= high) {
      const mid = (low + high) >>> 1;
      const region = this.sorted[mid]!;
      if (gpa < region.start) high = mid - 1;
      else if (gpa >= region.end) low = mid + 1;
      else {
        this.lastHit = region;
        return region;
      }
    }
    return undefined;
  }

  /** True when `region` and the regions right after it back every byte up to `end` without a gap. */
  private backedUntil(region: Region | undefined, end: number): boolean {
    while (region !== undefined && region.end < end) region = this.findRegion(region.end);
    return region !== undefined;
  }

  /** EFAULT unless the regions following `region` back every byte up to `end` without a gap. */
  private checkBackedFrom(region: Region, end: number): void {
    if (!this.backedUntil(region, end)) {
      throw new GuestMemoryError("EFAULT", `guest range up to 0x${end.toString(16)} has a hole`);
    }
  }

  /** The window that holds region offset `offset` and reaches furthest past it. */
  private windowFor(region: Region, offset: number): Window {
    const index = Math.floor(offset / this.windowSize);
    const cached = region.windows[index];
    if (cached !== undefined) return cached;
    const start = index * this.windowSize;
    const end = Math.min(start + this.windowSize + this.windowOverlap, region.info.size);
    const raw = region.backing.view(start, end - start);
    const bytes = raw instanceof Uint8Array ? raw : new Uint8Array(raw);
    if (bytes.byteLength !== end - start) {
      throw new GuestMemoryError(
        "EINVAL",
        `backing returned ${bytes.byteLength} bytes for ${end - start}`,
      );
    }
    const window: Window = {
      start,
      end,
      bytes,
      dv: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    };
    region.windows[index] = window;
    return window;
  }

  private copy(gpa: number, buffer: Uint8Array, toGuest: boolean): void {
    const len = buffer.byteLength;
    this.checkRange(gpa, len);
    if (len === 0) {
      this.regionAt(gpa);
      return;
    }
    const first = this.regionAt(gpa);
    const firstOffset = gpa - first.start;
    if (firstOffset + len <= first.info.size) {
      // Fast path (every ring and request access): one window, no subarray for small copies.
      const window = this.windowFor(first, firstOffset);
      if (firstOffset + len <= window.end) {
        const bytes = window.bytes;
        const at = firstOffset - window.start;
        if (len > SMALL_COPY) {
          if (toGuest) bytes.set(buffer, at);
          else buffer.set(bytes.subarray(at, at + len));
        } else if (toGuest) {
          for (let i = 0; i < len; i++) bytes[at + i] = buffer[i] as number;
        } else {
          for (let i = 0; i < len; i++) buffer[i] = bytes[at + i] as number;
        }
        return;
      }
    }
    // Check the whole range first, so a fault never leaves a partial copy behind.
    if (gpa + len > first.end) this.checkBackedFrom(first, gpa + len);
    let done = 0;
    while (done < len) {
      const region = this.regionAt(gpa + done);
      const offset = gpa + done - region.start;
      const window = this.windowFor(region, offset);
      const count = Math.min(len - done, window.end - offset);
      const at = offset - window.start;
      if (toGuest) window.bytes.set(buffer.subarray(done, done + count), at);
      else buffer.set(window.bytes.subarray(at, at + count), done);
      done += count;
    }
  }

  /**
   * The DataView holding a scalar of `size` bytes at `gpa`, its offset left in `scalarOffset` (no object
   * per access). A scalar straddling a window or region boundary goes through the scratch buffer: filled
   * from guest memory before a read, written back by `flushScalar` after a write.
   */
  private scalar(gpa: number, size: number, forWrite: boolean): DataView {
    this.checkRange(gpa, size);
    const region = this.regionAt(gpa);
    const offset = gpa - region.start;
    if (offset + size <= region.info.size) {
      const window = this.windowFor(region, offset);
      if (offset + size <= window.end) {
        this.scalarOffset = offset - window.start;
        return window.dv;
      }
    }
    this.scalarOffset = 0;
    if (forWrite) this.checkBackedFrom(region, gpa + size);
    else this.read(gpa, this.scratch.subarray(0, size));
    this.scratchPending = forWrite;
    return this.scratchView;
  }

  private flushScalar(gpa: number, size: number): void {
    if (!this.scratchPending) return;
    this.scratchPending = false;
    this.write(gpa, this.scratch.subarray(0, size));
  }
}

function checkValue(value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new GuestMemoryError("EINVAL", `value ${value} does not fit in the field`);
  }
}

/**
 * A region backed by plain memory: for tests and for anything that needs guest memory without the native
 * addon. `bytes` may be a window into a larger buffer (tests surround it with guard bytes).
 */
export class ArrayBufferBacking implements RegionBacking {
  readonly bytes: Uint8Array;
  /** Every view handed out (GuestMemory asks once per window), so tests can check what was touched. */
  readonly viewRequests: { offset: number; length: number }[] = [];
  private closed = false;

  constructor(sizeOrBytes: number | Uint8Array) {
    this.bytes = typeof sizeOrBytes === "number" ? new Uint8Array(sizeOrBytes) : sizeOrBytes;
  }

  view(offset: number, length: number): Uint8Array {
    if (this.closed) throw new GuestMemoryError("EFAULT", "backing is closed");
    if (!isAddress(offset) || !isAddress(length) || offset + length > this.bytes.byteLength) {
      throw new RangeError(
        `view ${offset}+${length} outside a ${this.bytes.byteLength}-byte backing`,
      );
    }
    this.viewRequests.push({ offset, length });
    return this.bytes.subarray(offset, offset + length);
  }

  close(): void {
    this.closed = true;
  }
}

export interface ArrayRegionLayout {
  guestPhysAddr: number;
  size: number;
  /** Defaults to the guest-physical address. */
  userAddr?: number;
}

/** Guest memory whose regions are fresh zeroed ArrayBuffers. */
export function createArrayGuestMemory(
  layout: readonly ArrayRegionLayout[],
  options?: GuestMemoryOptions,
): GuestMemory {
  return new GuestMemory(
    layout.map(({ guestPhysAddr, size, userAddr }) => ({
      info: { guestPhysAddr, size, userAddr: userAddr ?? guestPhysAddr },
      backing: new ArrayBufferBacking(size),
    })),
    options,
  );
}
