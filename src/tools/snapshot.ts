/**
 * `vi2c snapshot`, the pure half: which registers to read (and which never to touch), and the
 * config-file device entry that reproduces what was read: a `register-file` entry for a register
 * chip, a 24Cxx entry with `initial` for an EEPROM. The entries are exactly what `--config` takes
 * (src/config/file.ts, the models' option schemas). Must not run transfers (commands.ts does) nor
 * touch files (vi2c.ts does).
 * @module
 */

import { SIM_BUS } from "../i2c/device-list.js";
import type { EepromGeometry } from "../i2c/models/eeprom.js";
import { type RegisterRange, SMBUS_BLOCK_MAX, type SnapshotMode } from "./args.js";

/**
 * Bytes per EEPROM read: an I2C block, as Linux's at24 reads on an SMBus-only adapter, so a snapshot
 * works through a backend whose host adapter has no plain I2C (i2c-i801).
 */
export const EEPROM_READ_CHUNK = SMBUS_BLOCK_MAX;

/** A config-file device entry for an emulated chip. */
export interface SnapshotEntry {
  readonly bus: string;
  readonly address: string;
  readonly model: string;
  readonly options: Readonly<Record<string, unknown>>;
}

function hex2(value: number): string {
  return `0x${value.toString(16).padStart(2, "0")}`;
}

function inRanges(reg: number, ranges: readonly RegisterRange[]): boolean {
  return ranges.some((range) => reg >= range.first && reg <= range.last);
}

/** The registers first..last without the skipped ones, as runs of consecutive registers. */
export function readingRuns(
  first: number,
  last: number,
  skip: readonly RegisterRange[],
): RegisterRange[] {
  const runs: RegisterRange[] = [];
  let start: number | null = null;
  for (let reg = first; reg <= last + 1; reg++) {
    const readable = reg <= last && !inRanges(reg, skip);
    if (readable && start === null) start = reg;
    if (!readable && start !== null) {
      runs.push({ first: start, last: reg - 1 });
      start = null;
    }
  }
  return runs;
}

/** I2C block reads covering `runs`, none longer than 32 bytes nor past the end of its run. */
export function blockReads(runs: readonly RegisterRange[]): { reg: number; length: number }[] {
  const reads: { reg: number; length: number }[] = [];
  for (const run of runs) {
    for (let reg = run.first; reg <= run.last; reg += SMBUS_BLOCK_MAX) {
      reads.push({ reg, length: Math.min(SMBUS_BLOCK_MAX, run.last - reg + 1) });
    }
  }
  return reads;
}

/** One sequential EEPROM read: write the word address to `addr`, then read `length` bytes. */
export interface EepromRead {
  readonly addr: number;
  readonly wordAddress: Uint8Array;
  /** Where the bytes go in the memory image. */
  readonly offset: number;
  readonly length: number;
}

/**
 * The reads that cover a whole EEPROM the way its datasheet addresses it: a 16-bit big-endian word
 * address on 24c32 and larger; on smaller parts an 8-bit one, with each 256-byte block of a 24c04,
 * 24c08 or 24c16 at the next chip address.
 */
export function eepromReads(geometry: EepromGeometry, addr: number): EepromRead[] {
  const reads: EepromRead[] = [];
  for (let offset = 0; offset < geometry.size; offset += EEPROM_READ_CHUNK) {
    const length = Math.min(EEPROM_READ_CHUNK, geometry.size - offset);
    if (geometry.addressBytes === 2) {
      reads.push({ addr, wordAddress: Uint8Array.of(offset >> 8, offset & 0xff), offset, length });
    } else {
      const wordAddress = Uint8Array.of(offset & 0xff);
      reads.push({ addr: addr + (offset >> 8), wordAddress, offset, length });
    }
  }
  return reads;
}

/** The EEPROM entry: its model and the memory as `initial`, less the erased (0xff) tail. */
export function eepromEntry(model: string, addr: number, memory: Uint8Array): SnapshotEntry {
  let end = memory.length;
  while (end > 0 && memory[end - 1] === 0xff) end--;
  const initial = Buffer.from(memory.subarray(0, end)).toString("hex");
  return { bus: SIM_BUS, address: hex2(addr), model, options: end === 0 ? {} : { initial } };
}

/** What was read from a register chip. */
export interface RegisterReading {
  readonly addr: number;
  readonly mode: SnapshotMode;
  readonly last: number;
  /** By register: the value read, null when the read failed, undefined when not read. */
  readonly values: readonly (number | null | undefined)[];
  readonly readOnly: readonly RegisterRange[];
}

/** The register-file entry, and the registers that did not answer (left at the default). */
export interface RegisterSnapshot {
  readonly entry: SnapshotEntry;
  readonly defaultValue: number;
  /** Registers read with another value than the default: the ones `registers` lists. */
  readonly listed: number;
  readonly absent: readonly number[];
}

/** The value read most often (the smallest of equals), so that `registers` lists the fewest. */
function mostCommon(values: readonly number[]): number {
  const counts = new Map<number, number>();
  for (const value of values) counts.set(value, (counts.get(value) ?? 0) + 1);
  let best = 0;
  let bestCount = 0;
  for (const [value, count] of counts) {
    if (count > bestCount || (count === bestCount && value < best)) {
      best = value;
      bestCount = count;
    }
  }
  return best;
}

/**
 * The `register-file` entry that answers as the chip did: 8-bit register addresses; in word mode
 * 2-byte registers least significant byte first, as an SMBus word read returns them (the values
 * are the ones `vi2c dump … w` prints); `size` ends at the last register read; the most common
 * value is the `default` and the others are listed; `--read-only` registers are `readOnly`.
 */
export function registerFileEntry(reading: RegisterReading): RegisterSnapshot {
  const size = reading.last + 1;
  const read: [number, number][] = [];
  const absent: number[] = [];
  reading.values.forEach((value, reg) => {
    if (reg >= size || value === undefined) return;
    if (value === null) absent.push(reg);
    else read.push([reg, value]);
  });
  const defaultValue = mostCommon(read.map(([, value]) => value));
  const registers: Record<string, number> = {};
  for (const [reg, value] of read) if (value !== defaultValue) registers[hex2(reg)] = value;
  const readOnly: number[] = [];
  for (let reg = 0; reg < size; reg++) if (inRanges(reg, reading.readOnly)) readOnly.push(reg);
  const options = {
    ...(reading.mode === "w" && { registerSize: 2, littleEndian: true }),
    ...(size < 0x100 && { size }),
    default: defaultValue,
    ...(Object.keys(registers).length > 0 && { registers }),
    ...(readOnly.length > 0 && { readOnly }),
  };
  const entry = { bus: SIM_BUS, address: hex2(reading.addr), model: "register-file", options };
  return { entry, defaultValue, listed: Object.keys(registers).length, absent };
}

/** The JSON vi2c writes: a whole config file (`--config` serves it) or, asked, the entry alone. */
export function snapshotJson(entry: SnapshotEntry, entryOnly: boolean): string {
  return `${JSON.stringify(entryOnly ? entry : { devices: [entry] }, null, 2)}\n`;
}

/** Registers as a short list: `0x10-0x1f, 0x40`. */
export function formatRegisters(regs: readonly number[]): string {
  const parts: string[] = [];
  let i = 0;
  while (i < regs.length) {
    const start = regs[i] ?? 0;
    let end = start;
    while (regs[i + 1] === end + 1) {
      end++;
      i++;
    }
    parts.push(start === end ? hex2(start) : `${hex2(start)}-${hex2(end)}`);
    i++;
  }
  return parts.join(", ");
}

/** Every register of `ranges` within first..last, sorted, once each. */
export function registersIn(
  ranges: readonly RegisterRange[],
  first: number,
  last: number,
): number[] {
  const regs: number[] = [];
  for (let reg = first; reg <= last; reg++) if (inRanges(reg, ranges)) regs.push(reg);
  return regs;
}
