/**
 * `--trace` lines: one per transfer, the transfer itself in i2ctransfer syntax so it can be pasted
 * back (`i2ctransfer -y 1 w1@0x50 0x00 r2@0x50`), and a parser for that syntax and for whole lines.
 * Pure: no I/O (the sink writes the lines), no clock (times come from the record).
 *
 * Line: `<ISO time> socket<N> <bus|-> <µs>us <result> <transfer>[ => <read data>][ [injected <faults>]][ # <reason>]`
 * - result `ok`, `nack:<n>` or `error:<n>`, n = the failed message counted from 1 as i2ctransfer does;
 * - read data: the bytes of each completed read, in order, reads separated by ` | `, `-` for r0;
 * - injected: the faults src/i2c/faults.ts injected, `<device>: <fault>` joined by `; `;
 * - reason: why an `error` happened (unlisted address, malformed request, bus failure).
 * A line costs a bounded amount whatever the guest sends: at most TRACE_BYTES_SHOWN bytes of each
 * message are shown, then `…(+M bytes)`; messages that would take the line past
 * TRACE_LINE_MAX_BYTES are left out, counted as `…(+K messages)` after the last one shown; a reason
 * is cut at TRACE_REASON_MAX_CHARS. The parser reads these marks back.
 * Must not: print anything a guest controls unescaped (reasons are made one line), or build text
 * in proportion to the bytes of a transfer.
 * @module
 */

import { CodedError } from "../errors.js";
import type { ObservedMessage, TransferRecord, TransferResult } from "../i2c/observer.js";

export type TraceErrorCode = "TRACE_BAD_SYNTAX";

export class TraceError extends CodedError<TraceErrorCode> {}

/** One message in i2ctransfer syntax; `data` holds the bytes of a write. */
export interface TransferSpecMessage {
  readonly addr: number;
  readonly read: boolean;
  readonly length: number;
  readonly data: Uint8Array;
}

/** Bytes of one message (written or read) shown in a trace line; the rest is counted. */
export const TRACE_BYTES_SHOWN = 64;
/** Longest trace line in UTF-8 bytes, without its newline. */
export const TRACE_LINE_MAX_BYTES = 16 * 1024;
/** Longest reason shown. */
export const TRACE_REASON_MAX_CHARS = 256;
/** Room kept for the `…(+K messages)` mark. */
const OMITTED_MARK_BYTES = 32;

/** A trace line read back. */
export interface TraceLine {
  readonly time: string;
  readonly guest: number;
  readonly bus: string | null;
  readonly durationUs: number;
  readonly result: TransferResult;
  /** Failed message counted from 0 (messages.length when ok). */
  readonly failedIndex: number;
  /** The messages shown; a write's `data` holds the bytes shown (TRACE_BYTES_SHOWN at most). */
  readonly messages: readonly TransferSpecMessage[];
  /** Messages of the transfer left out of the line (after the ones shown). */
  readonly messagesOmitted: number;
  /** The bytes shown of each completed read message, in order. */
  readonly reads: readonly Uint8Array[];
  readonly reason: string | null;
  /** The injected faults, as shown (`0x48: nack every=3; ...`); null when none was. */
  readonly injected: string | null;
}

const EMPTY = new Uint8Array(0);

const byteText = (byte: number) => `0x${byte.toString(16).padStart(2, "0")}`;

const omittedBytesMark = (count: number) => `…(+${count} bytes)`;
const OMITTED_BYTES = /^…\(\+([0-9]+) bytes\)$/;

/** The words of a transfer or of read data, a `…(+M bytes)` mark counting as one. */
function words(text: string): string[] {
  return text.trim().match(/…\(\+[0-9]+ bytes\)|\S+/g) ?? [];
}
const OMITTED_MESSAGES = / …\(\+([0-9]+) messages\)$/;

/** " 0x00" ... " 0xff": a trace line shows thousands of bytes a second. */
const SPACED_BYTE_TEXTS = Array.from({ length: 256 }, (_, byte) => ` ${byteText(byte)}`);

/** The first TRACE_BYTES_SHOWN bytes, then how many more there are. */
function bytesText(bytes: Uint8Array): string {
  const shown = Math.min(bytes.length, TRACE_BYTES_SHOWN);
  let text = "";
  for (let i = 0; i < shown; i++) text += SPACED_BYTE_TEXTS[bytes[i] as number];
  if (bytes.length > shown) text += ` ${omittedBytesMark(bytes.length - shown)}`;
  return text.slice(1);
}

/** `w1@0x50 0x00`: a message in i2ctransfer syntax, a write with its data. */
function messageText(m: ObservedMessage, bytes: Uint8Array | undefined): string {
  const head = `${m.read ? "r" : "w"}${m.length}@${byteText(m.addr)}`;
  // A refused write shows its length alone: its data was never read from the guest.
  return !m.read && bytes && bytes.length > 0 ? `${head} ${bytesText(bytes)}` : head;
}

/**
 * `w1@0x50 0x00 r16@0x50`: write messages carry their data (as given in `data`, same index; at most
 * TRACE_BYTES_SHOWN bytes each).
 */
export function formatTransfer(
  messages: readonly ObservedMessage[],
  data: readonly Uint8Array[],
): string {
  return messages.map((m, i) => messageText(m, data[i])).join(" ");
}

function resultText(record: TransferRecord): string {
  return record.result === "ok" ? "ok" : `${record.result}:${record.failedIndex + 1}`;
}

/** Whitespace and control characters → one space: a trace line stays one line. */
function oneLine(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: replacing them is the point
  return text.replace(/[\s\u0000-\u001f\u007f]+/g, " ").trim();
}

/**
 * The trace line of one transfer, without its newline: at most TRACE_LINE_MAX_BYTES bytes, built
 * from at most as many messages as fit (the first one always does).
 */
export function formatTraceLine(record: TransferRecord): string {
  const bus =
    record.bus === null ? "-" : oneLine(record.bus.slice(0, 64)).replaceAll(" ", "_") || "-";
  const head = `${new Date(record.startTime).toISOString()} socket${record.guest} ${bus} ${record.durationUs}us ${resultText(record)}`;
  const injected =
    record.injected.length === 0
      ? ""
      : ` [injected ${oneLine(record.injected.map((i) => i.fault).join("; "))}]`;
  const tail =
    injected +
    (record.reason === null
      ? ""
      : ` # ${oneLine(record.reason.slice(0, TRACE_REASON_MAX_CHARS * 2)).slice(0, TRACE_REASON_MAX_CHARS)}`);
  let budget =
    TRACE_LINE_MAX_BYTES - Buffer.byteLength(head) - Buffer.byteLength(tail) - OMITTED_MARK_BYTES;
  const shown: string[] = [];
  const reads: string[] = [];
  for (const [i, m] of record.messages.entries()) {
    const text = messageText(m, record.data[i]);
    const read =
      m.read && i < record.failedIndex ? bytesText(record.data[i] ?? EMPTY) || "-" : null;
    // Separators: " " before a message, " => " or " | " before a read.
    const cost = Buffer.byteLength(text) + 1 + (read === null ? 0 : Buffer.byteLength(read) + 4);
    if (cost > budget && shown.length > 0) break;
    budget -= cost;
    shown.push(text);
    if (read !== null) reads.push(read);
  }
  let line = `${head} ${shown.join(" ")}`;
  const omitted = record.messages.length - shown.length;
  if (omitted > 0) line += ` …(+${omitted} messages)`;
  if (reads.length > 0) line += ` => ${reads.join(" | ")}`;
  return line + tail;
}

function bad(message: string): TraceError {
  return new TraceError("TRACE_BAD_SYNTAX", message);
}

function parseByte(word: string, what: string): number {
  const value = /^(?:0x[0-9a-f]{1,2}|[0-9]{1,3})$/i.test(word) ? Number(word) : Number.NaN;
  if (!(value >= 0 && value <= 0xff)) throw bad(`${what} "${word}" is not a byte`);
  return value;
}

/**
 * Parses i2ctransfer message arguments: `{r|w}<length>[@<addr>]`, a write followed by its data
 * bytes. The address may be left out after the first message (the previous one is used), as
 * i2ctransfer allows. `dataOptional`: a write may lack its data (trace lines of refused transfers).
 * Throws TraceError.
 */
export function parseTransfer(text: string, dataOptional = false): TransferSpecMessage[] {
  const all = words(text);
  const messages: TransferSpecMessage[] = [];
  let addr: number | null = null;
  for (let i = 0; i < all.length; ) {
    const word = all[i++] ?? "";
    const match = /^([rw])([0-9]+)(?:@(\S+))?$/i.exec(word);
    if (!match)
      throw bad(`"${word}" is not a message (expected r<length>@<addr> or w<length>@<addr>)`);
    const read = (match[1] ?? "").toLowerCase() === "r";
    const length = Number(match[2]);
    if (length > 0xffff) throw bad(`message length ${length} is over 65535`);
    if (match[3] !== undefined) {
      addr = parseByte(match[3], "address");
      if (addr > 0x7f) throw bad(`address ${match[3]} is not 7-bit`);
    }
    if (addr === null) throw bad(`"${word}": the first message needs an address`);
    const absent = dataOptional && (all[i] === undefined || /^[rw][0-9]/i.test(all[i] ?? ""));
    const bytes: number[] = [];
    while (!read && !absent && bytes.length < length) {
      const byte = all[i++];
      const omitted = dataOptional ? OMITTED_BYTES.exec(byte ?? "") : null;
      if (omitted) {
        // A trace line shows the first bytes of a long write and counts the rest.
        if (bytes.length + Number(omitted[1]) !== length) {
          throw bad(`${word}: ${bytes.length} byte(s) shown and ${omitted[1]} left out`);
        }
        break;
      }
      if (byte === undefined)
        throw bad(`${word} needs ${length} data byte(s), got ${bytes.length}`);
      bytes.push(parseByte(byte, "data byte"));
    }
    messages.push({ addr, read, length, data: Uint8Array.from(bytes) });
  }
  if (messages.length === 0) throw bad("no message");
  return messages;
}

function parseReads(text: string): Uint8Array[] {
  return text
    .split("|")
    .map((group) => group.trim())
    .map((group) =>
      group === "-"
        ? new Uint8Array()
        : Uint8Array.from(
            words(group)
              .filter((w) => !OMITTED_BYTES.test(w))
              .map((w) => parseByte(w, "read byte")),
          ),
    );
}

/** Reads a trace line back (tests, tools). Throws TraceError. */
export function parseTraceLine(line: string): TraceLine {
  const match =
    /^(\S+) socket([0-9]+) (\S+) ([0-9]+)us (ok|nack:[0-9]+|error:[0-9]+) (.*?)(?: => (.*?))?(?: \[injected ([^\]]*)\])?(?: # (.*))?$/.exec(
      line.trimEnd(),
    );
  if (!match) throw bad(`not a trace line: ${line.slice(0, 200)}`);
  const [, time = "", guest = "", bus = "", duration = "", result = "", shown = ""] = match;
  const omitted = OMITTED_MESSAGES.exec(shown);
  const transfer = omitted ? shown.slice(0, omitted.index) : shown;
  const messagesOmitted = omitted ? Number(omitted[1]) : 0;
  const messages = parseTransfer(transfer, true);
  const [kind = "ok", failed] = result.split(":");
  return {
    time,
    guest: Number(guest),
    bus: bus === "-" ? null : bus,
    durationUs: Number(duration),
    result: kind as TransferResult,
    failedIndex: failed === undefined ? messages.length + messagesOmitted : Number(failed) - 1,
    messages,
    messagesOmitted,
    reads: match[7] === undefined ? [] : parseReads(match[7]),
    reason: match[9] ?? null,
    injected: match[8] ?? null,
  };
}
