/**
 * vhost-user message codec: header and payload encode/decode, with the per-request syntax rules
 * (exact payload size, how many fds a request may carry, 64-bit values that must fit a JS number).
 * Pure functions over bytes: no sockets, no fds opened or closed, no protocol state (backend.ts).
 * Both sides use it: the back-end decodes requests and encodes replies, the front-end the reverse.
 * @module
 */

import { CodedError } from "../errors.js";
import {
  CONFIG_HEADER_SIZE,
  HEADER_SIZE,
  HeaderFlag,
  INFLIGHT_SIZE,
  LOG_SIZE,
  MAX_CONFIG_SIZE,
  MAX_MEM_TABLE_REGIONS,
  MEM_REGION_SIZE,
  MEM_TABLE_HEADER_SIZE,
  Request,
  type RequestCode,
  requestName,
  SINGLE_MEM_REGION_SIZE,
  U64_SIZE,
  VRING_ADDR_SIZE,
  VRING_INDEX_MASK,
  VRING_NOFD_MASK,
  VRING_STATE_SIZE,
} from "./protocol.js";

export type CodecErrorCode =
  | "BAD_VERSION" // header version bits are not 1
  | "BAD_SIZE" // payload size does not match the request
  | "BAD_FDS" // wrong number of fds for the request
  | "BAD_VALUE"; // a field is out of range (count, overflow, >= 2^53)

/** A malformed message: the peer broke the protocol, the connection cannot continue. */
export class CodecError extends CodedError<CodecErrorCode> {}

export interface MessageHeader {
  readonly request: number;
  readonly flags: number;
  readonly size: number;
}

export interface VringState {
  readonly index: number;
  readonly num: number;
}

export interface VringAddr {
  readonly index: number;
  readonly flags: number;
  /** Front-end virtual addresses of the three ring parts. */
  readonly descUser: number;
  readonly usedUser: number;
  readonly availUser: number;
  /** Guest-physical address for dirty logging; unused here, so kept unvalidated. */
  readonly log: bigint;
}

export interface MemRegion {
  readonly guestPhysAddr: number;
  readonly size: number;
  readonly userAddr: number;
  readonly mmapOffset: number;
}

export interface DeviceConfig {
  readonly offset: number;
  readonly size: number;
  readonly flags: number;
  readonly payload: Uint8Array;
}

export interface InflightDesc {
  readonly mmapSize: number;
  readonly mmapOffset: number;
  readonly numQueues: number;
  readonly queueSize: number;
}

export interface LogDesc {
  readonly mmapSize: number;
  readonly mmapOffset: number;
}

/** Payload of SET_VRING_KICK / CALL / ERR. */
export interface VringFdPayload {
  readonly index: number;
  /** Bit 8: no fd attached (the ring is polled / not signalled). */
  readonly noFd: boolean;
}

/** A decoded payload, tagged by its layout. */
export type Payload =
  | { readonly kind: "empty"; readonly value: null }
  | { readonly kind: "u64"; readonly value: bigint }
  | { readonly kind: "vringFd"; readonly value: VringFdPayload }
  | { readonly kind: "vringState"; readonly value: VringState }
  | { readonly kind: "vringAddr"; readonly value: VringAddr }
  | { readonly kind: "memTable"; readonly value: readonly MemRegion[] }
  | { readonly kind: "memRegion"; readonly value: MemRegion }
  | { readonly kind: "config"; readonly value: DeviceConfig }
  | { readonly kind: "inflight"; readonly value: InflightDesc }
  | { readonly kind: "log"; readonly value: LogDesc }
  | { readonly kind: "raw"; readonly value: Uint8Array };

export type PayloadKind = Payload["kind"];
export type PayloadOf<K extends PayloadKind> = Extract<Payload, { kind: K }>["value"];

/** How many fds a request carries: a fixed count, at most one, one per region, or one unless bit 8. */
type FdRule = 0 | 1 | "optional" | "perRegion" | "vringFd";

interface RequestRule {
  readonly payload: PayloadKind;
  readonly fds: FdRule;
}

// Requests without a well-known fixed layout keep their bytes raw (bounded by the framing limit):
// the back-end does not implement them and only needs to answer "unsupported".
const REQUEST_RULES: Readonly<Record<RequestCode, RequestRule>> = {
  [Request.GET_FEATURES]: { payload: "empty", fds: 0 },
  [Request.SET_FEATURES]: { payload: "u64", fds: 0 },
  [Request.SET_OWNER]: { payload: "empty", fds: 0 },
  [Request.RESET_OWNER]: { payload: "empty", fds: 0 },
  [Request.SET_MEM_TABLE]: { payload: "memTable", fds: "perRegion" },
  [Request.SET_LOG_BASE]: { payload: "log", fds: 1 },
  [Request.SET_LOG_FD]: { payload: "empty", fds: 1 },
  [Request.SET_VRING_NUM]: { payload: "vringState", fds: 0 },
  [Request.SET_VRING_ADDR]: { payload: "vringAddr", fds: 0 },
  [Request.SET_VRING_BASE]: { payload: "vringState", fds: 0 },
  [Request.GET_VRING_BASE]: { payload: "vringState", fds: 0 },
  [Request.SET_VRING_KICK]: { payload: "vringFd", fds: "vringFd" },
  [Request.SET_VRING_CALL]: { payload: "vringFd", fds: "vringFd" },
  [Request.SET_VRING_ERR]: { payload: "vringFd", fds: "vringFd" },
  [Request.GET_PROTOCOL_FEATURES]: { payload: "empty", fds: 0 },
  [Request.SET_PROTOCOL_FEATURES]: { payload: "u64", fds: 0 },
  [Request.GET_QUEUE_NUM]: { payload: "empty", fds: 0 },
  [Request.SET_VRING_ENABLE]: { payload: "vringState", fds: 0 },
  [Request.SEND_RARP]: { payload: "u64", fds: 0 },
  [Request.NET_SET_MTU]: { payload: "u64", fds: 0 },
  [Request.SET_BACKEND_REQ_FD]: { payload: "empty", fds: 1 },
  [Request.IOTLB_MSG]: { payload: "raw", fds: 0 },
  [Request.SET_VRING_ENDIAN]: { payload: "vringState", fds: 0 },
  [Request.GET_CONFIG]: { payload: "config", fds: 0 },
  [Request.SET_CONFIG]: { payload: "config", fds: 0 },
  [Request.CREATE_CRYPTO_SESSION]: { payload: "raw", fds: 0 },
  [Request.CLOSE_CRYPTO_SESSION]: { payload: "raw", fds: 0 },
  [Request.POSTCOPY_ADVISE]: { payload: "empty", fds: 0 },
  [Request.POSTCOPY_LISTEN]: { payload: "empty", fds: 0 },
  [Request.POSTCOPY_END]: { payload: "empty", fds: 0 },
  [Request.GET_INFLIGHT_FD]: { payload: "inflight", fds: 0 },
  [Request.SET_INFLIGHT_FD]: { payload: "inflight", fds: 1 },
  [Request.GPU_SET_SOCKET]: { payload: "empty", fds: 1 },
  [Request.RESET_DEVICE]: { payload: "empty", fds: 0 },
  [Request.VRING_KICK]: { payload: "vringState", fds: 0 },
  [Request.GET_MAX_MEM_SLOTS]: { payload: "empty", fds: 0 },
  [Request.ADD_MEM_REG]: { payload: "memRegion", fds: 1 },
  // The spec says the region is found by its addresses; older front-ends still attach its fd.
  [Request.REM_MEM_REG]: { payload: "memRegion", fds: "optional" },
  [Request.SET_STATUS]: { payload: "u64", fds: 0 },
  [Request.GET_STATUS]: { payload: "empty", fds: 0 },
  [Request.GET_SHARED_OBJECT]: { payload: "raw", fds: 0 },
  [Request.SET_DEVICE_STATE_FD]: { payload: "raw", fds: 1 },
  [Request.CHECK_DEVICE_STATE]: { payload: "empty", fds: 0 },
};

/** What a GET_* reply carries; every other reply is the u64 REPLY_ACK status. */
const REPLY_PAYLOADS: Partial<Record<RequestCode, PayloadKind>> = {
  [Request.GET_FEATURES]: "u64",
  [Request.GET_PROTOCOL_FEATURES]: "u64",
  [Request.GET_QUEUE_NUM]: "u64",
  [Request.GET_VRING_BASE]: "vringState",
  [Request.GET_CONFIG]: "config",
  [Request.GET_INFLIGHT_FD]: "inflight",
  [Request.GET_MAX_MEM_SLOTS]: "u64",
  [Request.GET_STATUS]: "u64",
};

/** True for requests whose reply is a payload of its own (so it also serves as the NEED_REPLY ack). */
export function hasReplyPayload(request: number): boolean {
  return (REPLY_PAYLOADS as Record<number, PayloadKind | undefined>)[request] !== undefined;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const U64_LIMIT = 1n << 64n;

/** A 64-bit wire value as a number, or a BAD_VALUE error when it would lose precision. */
export function toSafeNumber(value: bigint, what: string): number {
  if (value < 0n || value > MAX_SAFE) {
    throw new CodecError("BAD_VALUE", `${what} 0x${value.toString(16)} does not fit in 53 bits`);
  }
  return Number(value);
}

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// ---------------------------------------------------------------------------------------------
// Header

export function encodeHeader(header: MessageHeader): Uint8Array {
  const bytes = new Uint8Array(HEADER_SIZE);
  const dv = dataView(bytes);
  dv.setUint32(0, header.request, true);
  dv.setUint32(4, header.flags, true);
  dv.setUint32(8, header.size, true);
  return bytes;
}

/** Decodes the 12-byte header; a version other than 1 is a BAD_VERSION error. */
export function decodeHeader(bytes: Uint8Array): MessageHeader {
  if (bytes.byteLength < HEADER_SIZE) {
    throw new CodecError("BAD_SIZE", `header has ${bytes.byteLength} bytes, needs ${HEADER_SIZE}`);
  }
  const dv = dataView(bytes);
  const header = {
    request: dv.getUint32(0, true),
    flags: dv.getUint32(4, true),
    size: dv.getUint32(8, true),
  };
  if ((header.flags & HeaderFlag.VERSION_MASK) !== HeaderFlag.VERSION) {
    throw new CodecError(
      "BAD_VERSION",
      `header flags 0x${header.flags.toString(16)}: version not 1`,
    );
  }
  return header;
}

/** Header + payload in one buffer, ready for one sendmsg. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(HEADER_SIZE + payload.byteLength);
  bytes.set(encodeHeader({ request, flags, size: payload.byteLength }), 0);
  bytes.set(payload, HEADER_SIZE);
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Payload decoders (one per layout)

function expectSize(bytes: Uint8Array, size: number, what: string): void {
  if (bytes.byteLength !== size) {
    throw new CodecError(
      "BAD_SIZE",
      `${what}: payload ${bytes.byteLength} bytes, expected ${size}`,
    );
  }
}

function decodeRegionAt(dv: DataView, offset: number): MemRegion {
  const gpa = dv.getBigUint64(offset, true);
  const size = dv.getBigUint64(offset + 8, true);
  const uva = dv.getBigUint64(offset + 16, true);
  const mmapOffset = dv.getBigUint64(offset + 24, true);
  if (size === 0n) throw new CodecError("BAD_VALUE", "memory region of size 0");
  // Checked in 64-bit arithmetic: every end address must stay a safe JS number.
  for (const [base, what] of [
    [gpa, "guest_phys_addr + size"],
    [uva, "user_addr + size"],
    [mmapOffset, "mmap_offset + size"],
  ] as const) {
    const end = base + size;
    if (end >= U64_LIMIT) throw new CodecError("BAD_VALUE", `${what} overflows 64 bits`);
    toSafeNumber(end, what);
  }
  return {
    guestPhysAddr: Number(gpa),
    size: Number(size),
    userAddr: Number(uva),
    mmapOffset: Number(mmapOffset),
  };
}

function decodeMemTable(bytes: Uint8Array): MemRegion[] {
  if (bytes.byteLength < MEM_TABLE_HEADER_SIZE) {
    throw new CodecError("BAD_SIZE", `memory table of ${bytes.byteLength} bytes`);
  }
  const dv = dataView(bytes);
  const count = dv.getUint32(0, true);
  if (count === 0 || count > MAX_MEM_TABLE_REGIONS) {
    throw new CodecError("BAD_VALUE", `memory table with ${count} regions`);
  }
  // QEMU sends only the filled regions; the C struct is region[8]: both sizes are accepted.
  const exact = MEM_TABLE_HEADER_SIZE + count * MEM_REGION_SIZE;
  const full = MEM_TABLE_HEADER_SIZE + MAX_MEM_TABLE_REGIONS * MEM_REGION_SIZE;
  if (bytes.byteLength !== exact && bytes.byteLength !== full) {
    throw new CodecError(
      "BAD_SIZE",
      `memory table with ${count} regions: ${bytes.byteLength} bytes, expected ${exact} or ${full}`,
    );
  }
  const regions: MemRegion[] = [];
  for (let i = 0; i < count; i++) {
    regions.push(decodeRegionAt(dv, MEM_TABLE_HEADER_SIZE + i * MEM_REGION_SIZE));
  }
  return regions;
}

function decodeConfig(bytes: Uint8Array): DeviceConfig {
  if (bytes.byteLength < CONFIG_HEADER_SIZE) {
    throw new CodecError("BAD_SIZE", `config of ${bytes.byteLength} bytes`);
  }
  const dv = dataView(bytes);
  const offset = dv.getUint32(0, true);
  const size = dv.getUint32(4, true);
  const flags = dv.getUint32(8, true);
  if (size > MAX_CONFIG_SIZE) throw new CodecError("BAD_VALUE", `config size ${size}`);
  expectSize(bytes, CONFIG_HEADER_SIZE + size, "config");
  return { offset, size, flags, payload: bytes.slice(CONFIG_HEADER_SIZE) };
}

function decodePayload(kind: PayloadKind, bytes: Uint8Array, what: string): Payload {
  const dv = dataView(bytes);
  switch (kind) {
    case "empty":
      expectSize(bytes, 0, what);
      return { kind, value: null };
    case "u64":
      expectSize(bytes, U64_SIZE, what);
      return { kind, value: dv.getBigUint64(0, true) };
    case "vringFd": {
      expectSize(bytes, U64_SIZE, what);
      const value = dv.getBigUint64(0, true);
      if ((value & ~BigInt(VRING_INDEX_MASK | VRING_NOFD_MASK)) !== 0n) {
        throw new CodecError("BAD_VALUE", `${what}: unknown bits in 0x${value.toString(16)}`);
      }
      const n = Number(value);
      return { kind, value: { index: n & VRING_INDEX_MASK, noFd: (n & VRING_NOFD_MASK) !== 0 } };
    }
    case "vringState":
      expectSize(bytes, VRING_STATE_SIZE, what);
      return { kind, value: { index: dv.getUint32(0, true), num: dv.getUint32(4, true) } };
    case "vringAddr":
      expectSize(bytes, VRING_ADDR_SIZE, what);
      return {
        kind,
        value: {
          index: dv.getUint32(0, true),
          flags: dv.getUint32(4, true),
          descUser: toSafeNumber(dv.getBigUint64(8, true), "desc_user_addr"),
          usedUser: toSafeNumber(dv.getBigUint64(16, true), "used_user_addr"),
          availUser: toSafeNumber(dv.getBigUint64(24, true), "avail_user_addr"),
          log: dv.getBigUint64(32, true),
        },
      };
    case "memTable":
      return { kind, value: decodeMemTable(bytes) };
    case "memRegion":
      expectSize(bytes, SINGLE_MEM_REGION_SIZE, what);
      return { kind, value: decodeRegionAt(dv, 8) };
    case "config":
      return { kind, value: decodeConfig(bytes) };
    case "inflight":
      expectSize(bytes, INFLIGHT_SIZE, what);
      return {
        kind,
        value: {
          mmapSize: toSafeNumber(dv.getBigUint64(0, true), "inflight mmap_size"),
          mmapOffset: toSafeNumber(dv.getBigUint64(8, true), "inflight mmap_offset"),
          numQueues: dv.getUint16(16, true),
          queueSize: dv.getUint16(18, true),
        },
      };
    case "log":
      expectSize(bytes, LOG_SIZE, what);
      return {
        kind,
        value: {
          mmapSize: toSafeNumber(dv.getBigUint64(0, true), "log mmap_size"),
          mmapOffset: toSafeNumber(dv.getBigUint64(8, true), "log mmap_offset"),
        },
      };
    case "raw":
      return { kind, value: bytes.slice() };
  }
}

function expectedFds(rule: FdRule, payload: Payload): readonly number[] {
  switch (rule) {
    case 0:
      return [0];
    case 1:
      return [1];
    case "optional":
      return [0, 1];
    case "perRegion":
      return [payload.kind === "memTable" ? payload.value.length : 0];
    case "vringFd":
      return [payload.kind === "vringFd" && payload.value.noFd ? 0 : 1];
  }
}

function ruleFor(request: number): RequestRule | undefined {
  return (REQUEST_RULES as Record<number, RequestRule | undefined>)[request];
}

/**
 * Decodes and checks a request payload: exact size for the request, field ranges, fd count.
 * Unknown request codes decode as "raw" (the caller answers "unsupported"; their fds carry no rule).
 * Throws CodecError: the connection must be closed.
 */
export function decodeRequest(
  header: MessageHeader,
  payload: Uint8Array,
  fdCount: number,
): Payload {
  const what = requestName(header.request);
  const rule = ruleFor(header.request);
  if (rule === undefined) return { kind: "raw", value: payload.slice() };
  const decoded = decodePayload(rule.payload, payload, what);
  const allowed = expectedFds(rule.fds, decoded);
  if (!allowed.includes(fdCount)) {
    throw new CodecError("BAD_FDS", `${what}: ${fdCount} fds, expected ${allowed.join(" or ")}`);
  }
  return decoded;
}

/** Decodes a reply for `request`: a GET_* payload, or the u64 ack status of any other request. */
export function decodeReply(request: number, payload: Uint8Array): Payload {
  const kind = (REPLY_PAYLOADS as Record<number, PayloadKind | undefined>)[request] ?? "u64";
  return decodePayload(kind, payload, `${requestName(request)} reply`);
}

/** Narrows a decoded payload to the layout a handler expects (the codec guarantees it per request). */
export function payloadAs<K extends PayloadKind>(payload: Payload, kind: K): PayloadOf<K> {
  if (payload.kind !== kind) {
    throw new CodecError("BAD_VALUE", `payload is ${payload.kind}, expected ${kind}`);
  }
  return payload.value as PayloadOf<K>;
}

// ---------------------------------------------------------------------------------------------
// Payload encoders (front-end requests and back-end replies)

export function encodeU64(value: bigint | number): Uint8Array {
  const bytes = new Uint8Array(U64_SIZE);
  dataView(bytes).setBigUint64(0, BigInt(value), true);
  return bytes;
}

export function encodeVringFd(value: VringFdPayload): Uint8Array {
  return encodeU64((value.index & VRING_INDEX_MASK) | (value.noFd ? VRING_NOFD_MASK : 0));
}

export function encodeVringState(state: VringState): Uint8Array {
  const bytes = new Uint8Array(VRING_STATE_SIZE);
  const dv = dataView(bytes);
  dv.setUint32(0, state.index, true);
  dv.setUint32(4, state.num, true);
  return bytes;
}

export function encodeVringAddr(addr: VringAddr): Uint8Array {
  const bytes = new Uint8Array(VRING_ADDR_SIZE);
  const dv = dataView(bytes);
  dv.setUint32(0, addr.index, true);
  dv.setUint32(4, addr.flags, true);
  dv.setBigUint64(8, BigInt(addr.descUser), true);
  dv.setBigUint64(16, BigInt(addr.usedUser), true);
  dv.setBigUint64(24, BigInt(addr.availUser), true);
  dv.setBigUint64(32, addr.log, true);
  return bytes;
}

function encodeRegionAt(dv: DataView, offset: number, region: MemRegion): void {
  dv.setBigUint64(offset, BigInt(region.guestPhysAddr), true);
  dv.setBigUint64(offset + 8, BigInt(region.size), true);
  dv.setBigUint64(offset + 16, BigInt(region.userAddr), true);
  dv.setBigUint64(offset + 24, BigInt(region.mmapOffset), true);
}

/** SET_MEM_TABLE payload; `padded` sends the whole region[8] array as the C struct declares it. */
export function encodeMemTable(regions: readonly MemRegion[], padded = false): Uint8Array {
  const slots = padded ? MAX_MEM_TABLE_REGIONS : regions.length;
  const bytes = new Uint8Array(MEM_TABLE_HEADER_SIZE + slots * MEM_REGION_SIZE);
  const dv = dataView(bytes);
  dv.setUint32(0, regions.length, true);
  for (const [i, r] of regions.entries()) {
    encodeRegionAt(dv, MEM_TABLE_HEADER_SIZE + i * MEM_REGION_SIZE, r);
  }
  return bytes;
}

/** ADD_MEM_REG / REM_MEM_REG payload: u64 padding, then the region. */
export function encodeMemRegion(region: MemRegion): Uint8Array {
  const bytes = new Uint8Array(SINGLE_MEM_REGION_SIZE);
  encodeRegionAt(dataView(bytes), 8, region);
  return bytes;
}

export function encodeConfig(config: Omit<DeviceConfig, "size">): Uint8Array {
  const bytes = new Uint8Array(CONFIG_HEADER_SIZE + config.payload.byteLength);
  const dv = dataView(bytes);
  dv.setUint32(0, config.offset, true);
  dv.setUint32(4, config.payload.byteLength, true);
  dv.setUint32(8, config.flags, true);
  bytes.set(config.payload, CONFIG_HEADER_SIZE);
  return bytes;
}

export function encodeInflight(desc: InflightDesc): Uint8Array {
  const bytes = new Uint8Array(INFLIGHT_SIZE);
  const dv = dataView(bytes);
  dv.setBigUint64(0, BigInt(desc.mmapSize), true);
  dv.setBigUint64(8, BigInt(desc.mmapOffset), true);
  dv.setUint16(16, desc.numQueues, true);
  dv.setUint16(18, desc.queueSize, true);
  return bytes;
}

export function encodeLog(desc: LogDesc): Uint8Array {
  const bytes = new Uint8Array(LOG_SIZE);
  const dv = dataView(bytes);
  dv.setBigUint64(0, BigInt(desc.mmapSize), true);
  dv.setBigUint64(8, BigInt(desc.mmapOffset), true);
  return bytes;
}

/** Encodes any decoded payload back to bytes (round trips, raw tests). */
export function encodePayload(payload: Payload): Uint8Array {
  switch (payload.kind) {
    case "empty":
      return new Uint8Array(0);
    case "u64":
      return encodeU64(payload.value);
    case "vringFd":
      return encodeVringFd(payload.value);
    case "vringState":
      return encodeVringState(payload.value);
    case "vringAddr":
      return encodeVringAddr(payload.value);
    case "memTable":
      return encodeMemTable(payload.value);
    case "memRegion":
      return encodeMemRegion(payload.value);
    case "config":
      return encodeConfig(payload.value);
    case "inflight":
      return encodeInflight(payload.value);
    case "log":
      return encodeLog(payload.value);
    case "raw":
      return payload.value.slice();
  }
}

/** Flags of a reply to a request: version 1 + REPLY. */
export const REPLY_FLAGS = HeaderFlag.VERSION | HeaderFlag.REPLY;

/** Flags of a request: version 1, plus NEED_REPLY when asked. */
export function requestFlags(needReply: boolean): number {
  return HeaderFlag.VERSION | (needReply ? HeaderFlag.NEED_REPLY : 0);
}
