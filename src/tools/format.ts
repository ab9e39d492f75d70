/**
 * vi2c output, byte for byte as i2c-tools 4.3 prints it: the i2cdetect grid and functionality list,
 * i2cdump's byte and word tables, i2cget / i2cset values, i2ctransfer's message lines. Pure: takes
 * results, returns text (every line ends in "\n"). Must not run transfers or decide exit codes.
 * @module
 */

import type { TransferMessage } from "./args.js";

function hex2(value: number): string {
  return value.toString(16).padStart(2, "0");
}

/** One i2cdetect cell: answered, did not answer, or in use by a driver ("UU"). */
export type DetectCell = "present" | "absent" | "busy";

const DETECT_HEADER = "     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f\n";

/** The i2cdetect grid; addresses without a cell (outside the range, or skipped) stay blank. */
export function formatDetectGrid(cells: ReadonlyMap<number, DetectCell>): string {
  let out = DETECT_HEADER;
  for (let row = 0; row < 128; row += 16) {
    out += `${hex2(row)}: `;
    for (let col = 0; col < 16; col++) {
      const addr = row + col;
      const cell = cells.get(addr);
      out +=
        cell === undefined
          ? "   "
          : cell === "busy"
            ? "UU "
            : cell === "absent"
              ? "-- "
              : `${hex2(addr)} `;
    }
    out += "\n";
  }
  return out;
}

/** What `i2cdetect -F` lists, in its order (i2c-tools 4.3). */
export const FUNCTIONALITY_NAMES = [
  "I2C",
  "SMBus Quick Command",
  "SMBus Send Byte",
  "SMBus Receive Byte",
  "SMBus Write Byte",
  "SMBus Read Byte",
  "SMBus Write Word",
  "SMBus Read Word",
  "SMBus Process Call",
  "SMBus Block Write",
  "SMBus Block Read",
  "SMBus Block Process Call",
  "SMBus PEC",
  "I2C Block Write",
  "I2C Block Read",
] as const;
export type FunctionalityName = (typeof FUNCTIONALITY_NAMES)[number];

/** `i2cdetect -F`: a header naming the bus, then "name yes|no" per functionality. */
export function formatFunctionality(
  busName: string,
  has: (name: FunctionalityName) => boolean,
): string {
  let out = `Functionalities implemented by ${busName}:\n`;
  for (const name of FUNCTIONALITY_NAMES) out += `${name.padEnd(32)} ${has(name) ? "yes" : "no"}\n`;
  return out;
}

/** A byte as i2cdump's text column shows it. */
function dumpChar(value: number | null): string {
  if (value === null) return "X";
  if (value === 0x00 || value === 0xff) return ".";
  if (value < 32 || value >= 127) return "?";
  return String.fromCharCode(value);
}

/**
 * i2cdump's byte table (modes b, c, i, and W with `pairs`): `block[reg]` is the byte read or null
 * for a failed read ("XX"); rows outside first..last are left out, cells outside blank.
 */
export function formatByteDump(
  block: readonly (number | null)[],
  first: number,
  last: number,
  pairs = false,
): string {
  let out = "     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f    0123456789abcdef\n";
  const inRange = (reg: number) => reg >= first && reg <= last;
  for (let row = 0; row < 256; row += 16) {
    if (row / 16 < Math.floor(first / 16)) continue;
    if (row / 16 > Math.floor(last / 16)) break;
    out += `${hex2(row)}: `;
    for (let col = 0; col < 16; col += pairs ? 2 : 1) {
      const reg = row + col;
      const width = pairs ? 2 : 1;
      if (!inRange(reg)) {
        out += "   ".repeat(width);
        continue;
      }
      for (let k = 0; k < width; k++) {
        const value = block[reg + k] ?? null;
        out += value === null ? "XX " : `${hex2(value)} `;
      }
    }
    out += "   ";
    for (let col = 0; col < 16; col++) {
      const reg = row + col;
      out += inRange(reg) ? dumpChar(block[reg] ?? null) : " ";
    }
    out += "\n";
  }
  return out;
}

/** i2cdump's word table (mode w): `words[reg]` is the word at reg, null for "XXXX". */
export function formatWordDump(
  words: readonly (number | null)[],
  first: number,
  last: number,
): string {
  let out = "     0,8  1,9  2,a  3,b  4,c  5,d  6,e  7,f\n";
  for (let row = 0; row < 256; row += 8) {
    if (row / 8 < Math.floor(first / 8)) continue;
    if (row / 8 > Math.floor(last / 8)) break;
    out += `${hex2(row)}: `;
    for (let col = 0; col < 8; col++) {
      const reg = row + col;
      if (reg < first || reg > last) {
        out += "     ";
        continue;
      }
      const word = words[reg] ?? null;
      out += word === null ? "XXXX " : `${word.toString(16).padStart(4, "0")} `;
    }
    out += "\n";
  }
  return out;
}

/** i2cget / i2cset's "0x%0*x": 2 digits for bytes, 4 for words. */
export function formatValue(value: number, word: boolean): string {
  return `0x${value.toString(16).padStart(word ? 4 : 2, "0")}`;
}

/** A block as i2cget prints it: "0x12 0x34 ...". */
export function formatBlock(bytes: Uint8Array): string {
  return `${Array.from(bytes, (b) => `0x${hex2(b)}`).join(" ")}\n`;
}

/** What i2ctransfer prints for a message: header, data, or both. */
export interface PrintFlags {
  readonly header: boolean;
  readonly readData: boolean;
  readonly writeData: boolean;
}

/**
 * i2ctransfer's print_msgs: per message an optional "msg N: addr 0x50, read, len 4" header and,
 * where asked, its bytes. `readData[i]` is the data of message i when it is a read.
 */
export function formatTransferMessages(
  messages: readonly TransferMessage[],
  readData: readonly (Uint8Array | undefined)[],
  flags: PrintFlags,
): string {
  let out = "";
  messages.forEach((message, i) => {
    const bytes = message.read ? (readData[i] ?? new Uint8Array(message.length)) : message.data;
    const printData = message.read ? flags.readData : flags.writeData;
    if (flags.header) {
      out += `msg ${i}: addr 0x${hex2(message.addr)}, ${message.read ? "read" : "write"}, len ${bytes.length}`;
    }
    if (bytes.length > 0 && printData) {
      if (flags.header) out += ", buf ";
      out += formatBlock(bytes);
    } else if (flags.header) {
      out += "\n";
    }
  });
  return out;
}
