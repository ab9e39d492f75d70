/**
 * `--pcap FILE`: every message of every transfer as a pcap record of link type LINKTYPE_I2C_LINUX
 * (209), for Wireshark/tshark. Owns the record encoding (pure functions) and the capture: a
 * RotatingFile (size and count capped, 64 MiB x 2 files by default; opened without following links
 * in a trusted directory), each new file starting with the pcap header. A transfer's records are
 * encoded only when the write queue has room for them; what does not fit is dropped and counted
 * rather than stalling a guest.
 *
 * Record payload: 5-byte pseudo-header (byte 0: bus number in bits 0-6, bit 7 = event; bytes 1-4:
 * big-endian i2c_msg flags, I2C_M_RD = 1), then the address byte (addr << 1 | R/W), then the data.
 * Bus number = the guest's socket index. A failed transfer ends with the failed message (address
 * byte only) followed by an event record with I2C_EVENT_ERR_FAIL set.
 * Must not: keep references to guest memory (records are copied when encoded).
 * @module
 */

import { CodedError } from "../errors.js";
import type { TransferRecord } from "../i2c/observer.js";
import { RotatingFile } from "./rotating-file.js";

export const LINKTYPE_I2C_LINUX = 209;
/** Classic pcap, microsecond timestamps, written little-endian. */
export const PCAP_MAGIC = 0xa1b2c3d4;
export const PCAP_HEADER_SIZE = 24;
export const PCAP_RECORD_HEADER_SIZE = 16;
export const I2C_PSEUDO_HEADER_SIZE = 5;
/** Longest record: pseudo-header + address byte + a 65535-byte message, rounded up. */
export const PCAP_SNAPLEN = 0x20000;
export const I2C_M_RD = 0x0001;
/** Event bit: undiagnosed failure (the dissector's I2C_EVENT_ERR_FAIL). */
export const I2C_EVENT_ERR_FAIL = 1 << 22;
/** Bus numbers have 7 bits in the pseudo-header. */
export const MAX_PCAP_BUS = 0x7f;
/** Smallest size limit: the header and one address-only record. */
const MIN_FILE_SIZE = PCAP_HEADER_SIZE + PCAP_RECORD_HEADER_SIZE + I2C_PSEUDO_HEADER_SIZE + 1;

/** The 24-byte pcap file header. */
export function pcapFileHeader(): Uint8Array {
  const header = new Uint8Array(PCAP_HEADER_SIZE);
  const dv = new DataView(header.buffer);
  dv.setUint32(0, PCAP_MAGIC, true);
  dv.setUint16(4, 2, true); // version 2.4
  dv.setUint16(6, 4, true);
  // bytes 8-15: thiszone and sigfigs, both 0
  dv.setUint32(16, PCAP_SNAPLEN, true);
  dv.setUint32(20, LINKTYPE_I2C_LINUX, true);
  return header;
}

/** Writes one record at `offset` of `out` and returns the offset after it. */
function putRecord(
  out: DataView,
  offset: number,
  timeMs: number,
  bus: number,
  event: boolean,
  flags: number,
  addressByte: number | null,
  data: Uint8Array,
): number {
  const length = I2C_PSEUDO_HEADER_SIZE + (addressByte === null ? 0 : 1) + data.length;
  const seconds = Math.floor(timeMs / 1000);
  out.setUint32(offset, seconds, true);
  out.setUint32(offset + 4, Math.min(999_999, Math.floor((timeMs - seconds * 1000) * 1000)), true);
  out.setUint32(offset + 8, length, true);
  out.setUint32(offset + 12, length, true);
  let at = offset + PCAP_RECORD_HEADER_SIZE;
  out.setUint8(at, (bus & MAX_PCAP_BUS) | (event ? 0x80 : 0));
  out.setUint32(at + 1, flags >>> 0, false);
  at += I2C_PSEUDO_HEADER_SIZE;
  if (addressByte !== null) out.setUint8(at++, addressByte);
  new Uint8Array(out.buffer, out.byteOffset + at, data.length).set(data);
  return at + data.length;
}

const NO_DATA = new Uint8Array(0);

/** Messages of a transfer that are written with their data. */
function completedMessages(record: TransferRecord): number {
  // A refused transfer never reached a bus: only its offending message and the event are shown.
  return record.bus === null ? 0 : Math.min(record.failedIndex, record.messages.length);
}

/** Bytes encodeTransfer returns for `record`, known before anything is allocated. */
export function encodedSize(record: TransferRecord): number {
  const count = completedMessages(record);
  let size = 0;
  for (let i = 0; i < count; i++) {
    size += PCAP_RECORD_HEADER_SIZE + I2C_PSEUDO_HEADER_SIZE + 1 + (record.data[i]?.length ?? 0);
  }
  if (record.result !== "ok") {
    if (record.messages[record.failedIndex]) {
      size += PCAP_RECORD_HEADER_SIZE + I2C_PSEUDO_HEADER_SIZE + 1;
    }
    size += PCAP_RECORD_HEADER_SIZE + I2C_PSEUDO_HEADER_SIZE;
  }
  return size;
}

/**
 * The records of one transfer, in one buffer: each completed message with its data; on failure the
 * failed message (address byte only) and an ERR_FAIL event. Messages after the failed one never
 * happened and are not written.
 */
export function encodeTransfer(record: TransferRecord, bus: number): Uint8Array {
  const { messages, data } = record;
  const failed = record.result !== "ok";
  const count = completedMessages(record);
  const failedMessage = failed ? messages[record.failedIndex] : undefined;
  const out = new Uint8Array(encodedSize(record));
  const dv = new DataView(out.buffer);
  let offset = 0;
  const time = record.startTime;
  for (let i = 0; i < count; i++) {
    const m = messages[i];
    if (!m) continue;
    const flags = m.read ? I2C_M_RD : 0;
    const bytes = data[i] ?? NO_DATA;
    offset = putRecord(dv, offset, time, bus, false, flags, (m.addr << 1) | flags, bytes);
  }
  if (failedMessage) {
    const flags = failedMessage.read ? I2C_M_RD : 0;
    offset = putRecord(
      dv,
      offset,
      time,
      bus,
      false,
      flags,
      (failedMessage.addr << 1) | flags,
      NO_DATA,
    );
  }
  if (failed) {
    putRecord(
      dv,
      offset,
      time + record.durationUs / 1000,
      bus,
      true,
      I2C_EVENT_ERR_FAIL,
      null,
      NO_DATA,
    );
  }
  return out;
}

export interface PcapWriterOptions {
  /** Largest size of one capture file in bytes (default 64 MiB). */
  readonly maxFileSize?: number;
  /** Capture files kept, the current one included (default 2: FILE and FILE.1). */
  readonly maxFiles?: number;
  /** At the limit: start a new FILE (the old one becomes FILE.1, ...), or stop capturing. */
  readonly onLimit?: "rotate" | "stop";
  /** Bound of the write queue. */
  readonly maxBuffered?: number;
  readonly onError?: (error: Error) => void;
}

export interface PcapCounters {
  readonly path: string;
  /** Transfers captured (their records queued for writing). */
  readonly transfers: number;
  /** Transfers not captured: queue full, write error, or stopped at the size limit. */
  readonly dropped: number;
  readonly rotations: number;
  /** True once the capture stopped: at the size limit (onLimit "stop") or a failed rotation. */
  readonly stopped: boolean;
  /** Bytes in the current file, queued ones included. */
  readonly fileSize: number;
}

export type PcapErrorCode = "PCAP_BAD_LIMIT";

export class PcapError extends CodedError<PcapErrorCode> {}

/** A capture being written. `open` is synchronous (start-up); everything after it is not. */
export class PcapWriter {
  readonly path: string;
  readonly #file: RotatingFile;
  #transfers = 0;

  private constructor(file: RotatingFile) {
    this.#file = file;
    this.path = file.path;
  }

  /**
   * Creates `path` (an existing file of the daemon's own is checked, then emptied) and writes the
   * pcap header. Throws PcapError for a size limit below one record, UntrustedPathError or SysError
   * when the file cannot be opened safely (see RotatingFile.open).
   */
  static open(path: string, options: PcapWriterOptions = {}): PcapWriter {
    if (options.maxFileSize !== undefined && options.maxFileSize < MIN_FILE_SIZE) {
      throw new PcapError(
        "PCAP_BAD_LIMIT",
        `pcap size limit ${options.maxFileSize} is too small (at least ${MIN_FILE_SIZE} bytes)`,
      );
    }
    return new PcapWriter(
      RotatingFile.open(path, {
        existing: "truncate",
        header: pcapFileHeader(),
        ...options,
      }),
    );
  }

  get counters(): PcapCounters {
    const file = this.#file.counters;
    return {
      path: this.path,
      transfers: this.#transfers,
      dropped: file.dropped,
      rotations: file.rotations,
      stopped: file.stopped,
      fileSize: file.fileSize,
    };
  }

  /** Captures one transfer of guest `bus` (its socket index). */
  write(record: TransferRecord, bus: number): void {
    if (this.#file.writeBuilt(encodedSize(record), () => encodeTransfer(record, bus))) {
      this.#transfers++;
    }
  }

  /** Writes what is queued, also for files rotated away and still being written, and closes them. */
  closeSync(): void {
    this.#file.closeSync();
  }
}
