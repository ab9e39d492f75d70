/**
 * Turns virtio-i2c descriptor chains into requests and requests into transfers (groups closed by a
 * request without FAIL_NEXT). Reads only the out_hdr from guest memory; never writes guest memory,
 * never touches a bus and never pushes to the used ring (virtio-i2c.ts does).
 *
 * The chain is read as two byte streams, as virtio 1.x asks (no assumption about descriptor framing):
 * device-readable = out_hdr (8) [+ write data], device-writable = [read buffer +] status (1).
 * @module
 */

import type { GuestMemory } from "../virtio/guest-memory.js";
import type { Descriptor, DescriptorChain } from "../virtio/queue.js";
import { IN_HDR_SIZE, KNOWN_FLAGS, OutHdr, RequestFlag } from "./protocol.js";

/** A byte range of guest memory. */
export interface Segment {
  readonly addr: number;
  readonly len: number;
}

/** Longest message an I2C host adapter takes (struct i2c_msg has a u16 length). */
export const MAX_MESSAGE_LENGTH = 0xffff;

/**
 * Most data bytes one transfer (a FAIL_NEXT group) may carry. A transfer runs whole, in one turn of
 * the event loop for emulated devices, so its size bounds how long one guest holds up the others.
 * Linux's i2c-dev takes at most 42 messages of at most 8192 bytes per I2C_RDWR (344064 bytes); this
 * also lets through eight messages of the 65535-byte maximum.
 */
export const MAX_TRANSFER_LENGTH = 512 * 1024;

/** Stable prefixes of `I2cRequest.error`: `"<kind>: <details>"`. */
export const REQUEST_ERROR = {
  malformedChain: "malformed chain",
  shortHeader: "out_hdr shorter than 8 bytes",
  noStatus: "no device-writable status byte",
  headerUnreadable: "out_hdr not readable",
  reservedFlags: "reserved flag bits set",
  badAddress: "10-bit or odd address",
  readWithData: "read request with device-readable data",
  writeWithWritableBuffer: "write request with device-writable buffer",
  tooLong: "message longer than 65535 bytes",
} as const;

export interface I2cRequest {
  readonly chain: DescriptorChain;
  /** 7-bit guest address (0 when the header could not be read). */
  readonly addr: number;
  readonly read: boolean;
  /** FAIL_NEXT as sent; false when the header could not be read, so such a request ends its group. */
  readonly failNext: boolean;
  /** Message data: device-readable for writes, device-writable for reads. Empty for zero-length. */
  readonly buffer: readonly Segment[];
  readonly length: number;
  /** Guest address of the status byte: the last device-writable byte, when there is one. */
  readonly status: number | null;
  /** Why the request cannot be carried out, or null. */
  readonly error: string | null;
}

/** The first `bytes` bytes of `segments`, and the rest. */
function splitSegments(segments: readonly Segment[], bytes: number): [Segment[], Segment[]] {
  const head: Segment[] = [];
  const tail: Segment[] = [];
  let left = bytes;
  for (const s of segments) {
    if (left >= s.len) {
      head.push({ addr: s.addr, len: s.len });
      left -= s.len;
    } else if (left > 0) {
      head.push({ addr: s.addr, len: left });
      tail.push({ addr: s.addr + left, len: s.len - left });
      left = 0;
    } else {
      tail.push({ addr: s.addr, len: s.len });
    }
  }
  return [head, tail];
}

const totalLength = (segments: readonly Segment[]) => segments.reduce((sum, s) => sum + s.len, 0);

/** Copies guest bytes from `segments` into `into` (which must be exactly their total length). */
export function gather(memory: GuestMemory, segments: readonly Segment[], into: Uint8Array): void {
  let offset = 0;
  for (const s of segments) {
    memory.read(s.addr, into.subarray(offset, offset + s.len));
    offset += s.len;
  }
}

/** Copies `from` (exactly the segments' total length) into guest memory over `segments`. */
export function scatter(memory: GuestMemory, segments: readonly Segment[], from: Uint8Array): void {
  let offset = 0;
  for (const s of segments) {
    memory.write(s.addr, from.subarray(offset, offset + s.len));
    offset += s.len;
  }
}

/** The status location of any chain, even a malformed one: the last byte of a writable last descriptor. */
function statusOf(descriptors: readonly Descriptor[]): number | null {
  const last = descriptors.at(-1);
  return last?.writable && last.len > 0 ? last.addr + last.len - 1 : null;
}

const NO_SEGMENTS: readonly Segment[] = [];
const NO_CHAIN: DescriptorChain = { head: 0, descriptors: [], error: null };

/**
 * An I2cRequest that `parse` fills in place, so a device can keep a pool of them instead of building
 * objects per message. A record (and its `buffer`) is valid until it is parsed again.
 */
export class RequestRecord implements I2cRequest {
  chain: DescriptorChain = NO_CHAIN;
  addr = 0;
  read = false;
  failNext = false;
  buffer: readonly Segment[] = NO_SEGMENTS;
  length = 0;
  status: number | null = null;
  error: string | null = null;
  /** The one data segment of a common-shape request, reused by every parse. */
  readonly #data: { addr: number; len: number } = { addr: 0, len: 0 };
  readonly #dataSegments: readonly Segment[] = [this.#data];

  /** Parses `chain` into this record. Never throws: anything wrong is reported in `error`. */
  parse(chain: DescriptorChain, memory: GuestMemory): this {
    if (!this.#parseCommonShape(chain, memory)) Object.assign(this, parseOtherShape(chain, memory));
    return this;
  }

  /**
   * The shape Linux always sends (out_hdr alone in the first descriptor, at most one data descriptor,
   * a 1-byte status last), parsed without temporary objects; false for any other shape (the general
   * path reads those). Header checks are the general path's: their failures go there too.
   */
  #parseCommonShape(chain: DescriptorChain, memory: GuestMemory): boolean {
    const descriptors = chain.descriptors;
    const count = descriptors.length;
    if (chain.error !== null || count < 2 || count > 3) return false;
    const hdr = descriptors[0] as Descriptor;
    const status = descriptors[count - 1] as Descriptor;
    if (hdr.writable || hdr.len !== OutHdr.SIZE || !status.writable || status.len !== IN_HDR_SIZE) {
      return false;
    }
    if (!memory.isBacked(hdr.addr, OutHdr.SIZE)) return false;
    const rawAddr = memory.readU16(hdr.addr + OutHdr.ADDR_OFFSET);
    const flags = memory.readU32(hdr.addr + OutHdr.FLAGS_OFFSET);
    if ((flags & ~KNOWN_FLAGS) !== 0 || (rawAddr & 1) !== 0 || rawAddr > 0xff) return false;
    const read = (flags & RequestFlag.M_RD) !== 0;
    const data = count === 3 ? (descriptors[1] as Descriptor) : null;
    // A read's buffer is device-writable, a write's device-readable; anything else: general path.
    if (data !== null && (data.writable !== read || data.len > MAX_MESSAGE_LENGTH)) return false;
    this.chain = chain;
    this.addr = rawAddr >> 1;
    this.read = read;
    this.failNext = (flags & RequestFlag.FAIL_NEXT) !== 0;
    if (data === null) {
      this.buffer = NO_SEGMENTS;
      this.length = 0;
    } else {
      this.#data.addr = data.addr;
      this.#data.len = data.len;
      this.buffer = this.#dataSegments;
      this.length = data.len;
    }
    this.status = status.addr;
    this.error = null;
    return true;
  }
}

/** Parses one chain. Never throws: anything wrong is reported in `error`. */
export function parseRequest(chain: DescriptorChain, memory: GuestMemory): I2cRequest {
  return new RequestRecord().parse(chain, memory);
}

/** Any chain that is not of the common shape: read as two byte streams, every malformation reported. */
function parseOtherShape(chain: DescriptorChain, memory: GuestMemory): I2cRequest {
  const status = statusOf(chain.descriptors);
  const bad = (
    kind: string,
    details: string,
    header?: { addr: number; read: boolean; failNext: boolean },
  ) =>
    ({
      chain,
      addr: header?.addr ?? 0,
      read: header?.read ?? false,
      failNext: header?.failNext ?? false,
      buffer: [],
      length: 0,
      status,
      error: `${kind}: ${details}`,
    }) satisfies I2cRequest;

  if (chain.error !== null) return bad(REQUEST_ERROR.malformedChain, chain.error);
  const readable = chain.descriptors.filter((d) => !d.writable);
  const writable = chain.descriptors.filter((d) => d.writable);
  const readableLength = totalLength(readable);
  const writableLength = totalLength(writable);
  if (readableLength < OutHdr.SIZE) {
    return bad(REQUEST_ERROR.shortHeader, `${readableLength} device-readable bytes`);
  }
  if (writableLength < IN_HDR_SIZE) return bad(REQUEST_ERROR.noStatus, "no writable descriptor");

  const [headerSegments, writeData] = splitSegments(readable, OutHdr.SIZE);
  const headerBytes = new Uint8Array(OutHdr.SIZE);
  try {
    gather(memory, headerSegments, headerBytes);
  } catch (err) {
    return bad(REQUEST_ERROR.headerUnreadable, err instanceof Error ? err.message : String(err));
  }
  const dv = new DataView(headerBytes.buffer);
  const rawAddr = dv.getUint16(OutHdr.ADDR_OFFSET, true);
  const flags = dv.getUint32(OutHdr.FLAGS_OFFSET, true);
  const header = {
    addr: rawAddr >> 1,
    read: (flags & RequestFlag.M_RD) !== 0,
    failNext: (flags & RequestFlag.FAIL_NEXT) !== 0,
  };
  if ((flags & ~KNOWN_FLAGS) !== 0) {
    return bad(REQUEST_ERROR.reservedFlags, `flags 0x${flags.toString(16)}`, header);
  }
  // 7-bit addresses are addr7 << 1; anything above 0xff or with bit 0 set is 10-bit or invalid.
  if ((rawAddr & 1) !== 0 || rawAddr > 0xff) {
    return bad(REQUEST_ERROR.badAddress, `addr field 0x${rawAddr.toString(16)}`, header);
  }

  const [readBuffer] = splitSegments(writable, writableLength - IN_HDR_SIZE);
  const writeLength = readableLength - OutHdr.SIZE;
  const readLength = writableLength - IN_HDR_SIZE;
  if (header.read && writeLength > 0) {
    return bad(REQUEST_ERROR.readWithData, `${writeLength} bytes`, header);
  }
  if (!header.read && readLength > 0) {
    return bad(REQUEST_ERROR.writeWithWritableBuffer, `${readLength} bytes`, header);
  }
  const buffer = header.read ? readBuffer : writeData;
  const length = header.read ? readLength : writeLength;
  if (length > MAX_MESSAGE_LENGTH) return bad(REQUEST_ERROR.tooLong, `${length} bytes`, header);
  return { chain, ...header, buffer, length, status, error: null };
}

/**
 * The end (exclusive) of the transfer that starts at `requests[start]`: just past the first request
 * from there without FAIL_NEXT, looking at the first `count` requests only; -1 when none closes it yet.
 * A request whose header could not be read has failNext = false, so it closes its group.
 */
export function transferEnd(requests: readonly I2cRequest[], start: number, count: number): number {
  for (let i = start; i < count; i++) {
    if (!(requests[i] as I2cRequest).failNext) return i + 1;
  }
  return -1;
}

/**
 * Splits requests into transfers: consecutive requests up to and including one without FAIL_NEXT.
 * Requests after the last complete transfer are returned as `partial` (their group is not complete
 * yet). Any bad request fails its whole group (decided by the device).
 */
export function groupRequests(requests: readonly I2cRequest[]): {
  transfers: I2cRequest[][];
  partial: I2cRequest[];
} {
  const transfers: I2cRequest[][] = [];
  let start = 0;
  for (let end = transferEnd(requests, 0, requests.length); end > 0; ) {
    transfers.push(requests.slice(start, end));
    start = end;
    end = transferEnd(requests, start, requests.length);
  }
  return { transfers, partial: requests.slice(start) };
}
