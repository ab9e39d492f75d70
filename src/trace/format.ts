/**
 * `--trace` lines: one per transfer, the transfer itself in i2ctransfer syntax so it can be pasted
 * back (`i2ctransfer -y 1 w1@0x50 0x00 r2@0x50`), and a parser for that syntax and for whole lines.
 * Pure: no I/O (the sink writes the lines), no clock (times come from the record).
 *
 * Line: `<ISO time> socket<N> <bus|-> <µs>us <result> <transfer>[ => <read data>][ # <reason>]`
 * - result `ok`, `nack:<n>` or `error:<n>`, n = the failed message counted from 1 as i2ctransfer does;
 * - read data: the bytes of each completed read, in order, reads separated by ` | `, `-` for r0;
 * - reason: why an `error` happened (unlisted address, malformed request, bus failure).
 * Must not: print anything a guest controls unescaped (reasons are made one line).
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

/** A trace line read back. */
export interface TraceLine {
  readonly time: string;
  readonly guest: number;
  readonly bus: string | null;
  readonly durationUs: number;
  readonly result: TransferResult;
  /** Failed message counted from 0 (messages.length when ok). */
  readonly failedIndex: number;
  readonly messages: readonly TransferSpecMessage[];
  /** The bytes of each completed read message, in order. */
  readonly reads: readonly Uint8Array[];
  readonly reason: string | null;
}

const EMPTY = new Uint8Array(0);

const byteText = (byte: number) => `0x${byte.toString(16).padStart(2, "0")}`;

function bytesText(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += text === "" ? byteText(byte) : ` ${byteText(byte)}`;
  return text;
}

/** `w1@0x50 0x00 r16@0x50`: write messages carry their data (as given in `data`, same index). */
export function formatTransfer(
  messages: readonly ObservedMessage[],
  data: readonly Uint8Array[],
): string {
  return messages
    .map((m, i) => {
      const head = `${m.read ? "r" : "w"}${m.length}@${byteText(m.addr)}`;
      const bytes = data[i];
      // A refused write shows its length alone: its data was never read from the guest.
      return !m.read && bytes && bytes.length > 0 ? `${head} ${bytesText(bytes)}` : head;
    })
    .join(" ");
}

function resultText(record: TransferRecord): string {
  return record.result === "ok" ? "ok" : `${record.result}:${record.failedIndex + 1}`;
}

/** Whitespace and control characters → one space: a trace line stays one line. */
function oneLine(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: replacing them is the point
  return text.replace(/[\s\u0000-\u001f\u007f]+/g, " ").trim();
}

/** The trace line of one transfer, without its newline. */
export function formatTraceLine(record: TransferRecord): string {
  const bus = record.bus === null ? "-" : oneLine(record.bus).replaceAll(" ", "_") || "-";
  let line = `${new Date(record.startTime).toISOString()} socket${record.guest} ${bus} ${record.durationUs}us ${resultText(record)}`;
  line += ` ${formatTransfer(record.messages, record.data)}`;
  const reads: string[] = [];
  record.messages.forEach((m, i) => {
    if (m.read && i < record.failedIndex) reads.push(bytesText(record.data[i] ?? EMPTY) || "-");
  });
  if (reads.length > 0) line += ` => ${reads.join(" | ")}`;
  if (record.reason !== null) line += ` # ${oneLine(record.reason)}`;
  return line;
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
  const words = text.trim().split(/\s+/).filter(Boolean);
  const messages: TransferSpecMessage[] = [];
  let addr: number | null = null;
  for (let i = 0; i < words.length; ) {
    const word = words[i++] ?? "";
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
    const absent = dataOptional && (words[i] === undefined || /^[rw][0-9]/i.test(words[i] ?? ""));
    const data = new Uint8Array(read || absent ? 0 : length);
    for (let j = 0; j < data.length; j++) {
      const byte = words[i++];
      if (byte === undefined) throw bad(`${word} needs ${length} data byte(s), got ${j}`);
      data[j] = parseByte(byte, "data byte");
    }
    messages.push({ addr, read, length, data });
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
        : Uint8Array.from(group.split(/\s+/).map((w) => parseByte(w, "read byte"))),
    );
}

/** Reads a trace line back (tests, tools). Throws TraceError. */
export function parseTraceLine(line: string): TraceLine {
  const match =
    /^(\S+) socket([0-9]+) (\S+) ([0-9]+)us (ok|nack:[0-9]+|error:[0-9]+) (.*?)(?: => (.*?))?(?: # (.*))?$/.exec(
      line.trimEnd(),
    );
  if (!match) throw bad(`not a trace line: ${line.slice(0, 200)}`);
  const [, time = "", guest = "", bus = "", duration = "", result = "", transfer = ""] = match;
  const messages = parseTransfer(transfer, true);
  const [kind = "ok", failed] = result.split(":");
  return {
    time,
    guest: Number(guest),
    bus: bus === "-" ? null : bus,
    durationUs: Number(duration),
    result: kind as TransferResult,
    failedIndex: failed === undefined ? messages.length : Number(failed) - 1,
    messages,
    reads: match[7] === undefined ? [] : parseReads(match[7]),
    reason: match[8] ?? null,
  };
}
