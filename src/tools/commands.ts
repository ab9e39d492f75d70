/**
 * The vi2c commands: detect, dump, get, set, transfer, info, run on an I2C transport with i2c-tools
 * 4.3 behaviour (probe rules, confirmation prompts on stderr, messages) and exit statuses: 0 done or
 * aborted at the prompt, 1 a transfer or backend failed, 2 a usage error. Output goes through an
 * injected {@link CommandIo}, so tests run commands without a terminal. Must not open sockets itself
 * (vi2c.ts hands it a session) nor parse argv (args.ts does).
 * @module
 */

import type { I2cOp } from "../frontend/i2c-driver.js";
import { EEPROM_GEOMETRIES } from "../i2c/models/eeprom.js";
import type { Command, DumpMode, GetMode, RegisterRange } from "./args.js";
import {
  type DetectCell,
  formatBlock,
  formatByteDump,
  formatDetectGrid,
  formatFunctionality,
  formatTransferMessages,
  formatValue,
  formatWordDump,
} from "./format.js";
import { type I2cTransport, SmbusDevice, virtioI2cFunctionality } from "./smbus.js";
import {
  blockReads,
  eepromEntry,
  eepromReads,
  formatRegisters,
  type RegisterSnapshot,
  readingRuns,
  registerFileEntry,
  registersIn,
  type SnapshotEntry,
  snapshotJson,
} from "./snapshot.js";

export const ExitStatus = { OK: 0, FAILED: 1, USAGE: 2 } as const;

/** What a command writes to and asks of the user. */
export interface CommandIo {
  out(text: string): void;
  err(text: string): void;
  /** Reads the answer to "Continue?"; `defaultYes` applies to an empty answer. */
  confirm(defaultYes: boolean): boolean;
}

/** The bus a command runs on: a transport plus what was negotiated. */
export interface CommandBus extends I2cTransport {
  /** Shown where i2c-tools name /dev/i2c-N. */
  readonly name: string;
  /** VIRTIO_I2C_F_ZERO_LENGTH_REQUEST negotiated: quick writes are possible. */
  readonly zeroLength: boolean;
}

type BusCommand = Exclude<Command, { name: "help" } | { name: "version" } | { name: "info" }>;

const WARNING = "WARNING! This program can confuse your I2C bus, cause data loss and worse!\n";
/** Linux's SMBus emulation turns a short I2C transfer into -EIO; i2c-tools print that code. */
const EIO_RETURN_CODE = -5;

function hex2(value: number): string {
  return value.toString(16).padStart(2, "0");
}

function askToContinue(io: CommandIo, defaultYes: boolean): boolean {
  io.err(`Continue? [${defaultYes ? "Y/n" : "y/N"}] `);
  if (io.confirm(defaultYes)) return true;
  io.err("Aborting on user request.\n");
  return false;
}

/** Runs one bus command; resolves with the exit status. */
export function runCommand(command: BusCommand, bus: CommandBus, io: CommandIo): Promise<number> {
  switch (command.name) {
    case "detect":
      return detect(command, bus, io);
    case "dump":
      return dump(command, bus, io);
    case "get":
      return get(command, bus, io);
    case "set":
      return set(command, bus, io);
    case "transfer":
      return transfer(command, bus, io);
    case "snapshot":
      return snapshot(command, bus, io);
  }
}

/** i2cdetect's choice in auto mode: read byte where quick write is known to corrupt chips. */
export function detectProbeFor(addr: number): "quick" | "read" {
  return (addr >= 0x30 && addr <= 0x37) || (addr >= 0x50 && addr <= 0x5f) ? "read" : "quick";
}

async function detect(
  command: Extract<Command, { name: "detect" }>,
  bus: CommandBus,
  io: CommandIo,
): Promise<number> {
  const has = virtioI2cFunctionality(bus.zeroLength);
  if (command.mode === "func") {
    io.out(formatFunctionality(bus.name, has));
    return ExitStatus.OK;
  }
  const canQuick = has("SMBus Quick Command");
  if (command.mode === "quick" && !canQuick) {
    io.err("Error: Can't use SMBus Quick Write command on this bus\n");
    return ExitStatus.FAILED;
  }
  if (command.mode === "auto" && !canQuick) {
    io.err("Warning: Can't use SMBus Quick Write command, will skip some addresses\n");
  }
  if (!command.yes) {
    const how =
      command.mode === "quick"
        ? " using quick write commands"
        : command.mode === "read"
          ? " using receive byte commands"
          : "";
    io.err(`${WARNING}I will probe file ${bus.name}${how}.\n`);
    io.err(`I will probe address range 0x${hex2(command.first)}-0x${hex2(command.last)}.\n`);
    if (!askToContinue(io, true)) return ExitStatus.OK;
  }
  const cells = new Map<number, DetectCell>();
  for (let addr = command.first; addr <= command.last; addr++) {
    const probe = command.mode === "auto" ? detectProbeFor(addr) : command.mode;
    if (probe === "quick" && !canQuick) continue;
    const chip = new SmbusDevice(bus, addr);
    const answered = probe === "quick" ? await chip.quickWrite() : (await chip.readByte()) !== null;
    cells.set(addr, answered ? "present" : "absent");
  }
  io.out(formatDetectGrid(cells));
  return ExitStatus.OK;
}

const DUMP_MODE_NAMES: Readonly<Record<DumpMode, string>> = {
  b: "byte",
  w: "word",
  W: "word",
  c: "byte consecutive read",
  i: "i2c block",
};

async function dump(
  command: Extract<Command, { name: "dump" }>,
  bus: CommandBus,
  io: CommandIo,
): Promise<number> {
  const { first, last, mode } = command;
  if (!command.yes) {
    let text = `${WARNING}I will probe file ${bus.name}, address 0x${command.addr.toString(16)}, mode ${DUMP_MODE_NAMES[mode]}\n`;
    if (mode === "W") text += "Only probing even register addresses.\n";
    if (command.rangeGiven) text += `Probe range limited to 0x${hex2(first)}-0x${hex2(last)}.\n`;
    io.err(text);
    if (!askToContinue(io, true)) return ExitStatus.OK;
  }
  const chip = new SmbusDevice(bus, command.addr);
  const block: (number | null)[] = new Array(256).fill(null);
  switch (mode) {
    case "w": {
      const words: (number | null)[] = new Array(256).fill(null);
      await readEach([{ first, last }], (reg) => chip.readWordData(reg), words);
      io.out(formatWordDump(words, first, last));
      return ExitStatus.OK;
    }
    case "W":
      for (let reg = first; reg <= last; reg += 2) {
        const word = await chip.readWordData(reg);
        block[reg] = word === null ? null : word & 0xff;
        block[reg + 1] = word === null ? null : word >> 8;
      }
      io.out(formatByteDump(block, first, last, true));
      return ExitStatus.OK;
    case "i":
      // As i2cdump: 32-byte I2C block reads from `first` until `last` is covered.
      for (let reg = first; reg <= last; reg += 32) {
        const data = await chip.readI2cBlock(reg, 32);
        if (data === null) {
          io.err(`Error: Block read failed, return code ${EIO_RETURN_CODE}\n`);
          return ExitStatus.FAILED;
        }
        data.forEach((byte, k) => {
          if (reg + k < 256) block[reg + k] = byte;
        });
      }
      break;
    case "c":
      if (!(await chip.writeByte(first))) {
        io.err(`Error: Write start address failed, return code ${EIO_RETURN_CODE}\n`);
        return ExitStatus.FAILED;
      }
      for (let reg = first; reg <= last; reg++) block[reg] = await chip.readByte();
      break;
    case "b":
      await readEach([{ first, last }], (reg) => chip.readByteData(reg), block);
      break;
  }
  io.out(formatByteDump(block, first, last));
  return ExitStatus.OK;
}

/** One read per register of `runs`, in order, into `into[reg]` (null: the read failed). */
async function readEach(
  runs: readonly RegisterRange[],
  read: (reg: number) => Promise<number | null>,
  into: (number | null | undefined)[],
): Promise<void> {
  for (const run of runs)
    for (let reg = run.first; reg <= run.last; reg++) into[reg] = await read(reg);
}

async function snapshot(
  command: Extract<Command, { name: "snapshot" }>,
  bus: CommandBus,
  io: CommandIo,
): Promise<number> {
  const { addr, mode, first, last } = command;
  const geometry = EEPROM_GEOMETRIES.find((g) => g.name === command.as) ?? null;
  const skipped = registersIn(command.skip, first, last);
  if (!command.yes) {
    let text = `${WARNING}I will probe file ${bus.name}, address 0x${addr.toString(16)}, `;
    if (geometry !== null)
      text += `reading it as a ${geometry.name} EEPROM (${geometry.size} bytes)\n`;
    else text += `mode ${DUMP_MODE_NAMES[mode]}\n`;
    if (command.rangeGiven) text += `Probe range limited to 0x${hex2(first)}-0x${hex2(last)}.\n`;
    if (skipped.length > 0) text += `Will not touch registers ${formatRegisters(skipped)}.\n`;
    io.err(text);
    if (!askToContinue(io, true)) return ExitStatus.OK;
  }
  let entry: SnapshotEntry;
  if (geometry !== null) {
    const memory = new Uint8Array(geometry.size);
    for (const read of eepromReads(geometry, addr)) {
      const result = await bus.transfer([
        { addr: read.addr, write: read.wordAddress },
        { addr: read.addr, read: read.length },
      ]);
      const data = result.reads[0];
      if (!result.ok || data === undefined) {
        io.err(`Error: Read of ${read.length} bytes at 0x${read.offset.toString(16)} failed\n`);
        return ExitStatus.FAILED;
      }
      memory.set(data, read.offset);
    }
    entry = eepromEntry(geometry.name, addr, memory);
    io.err(`Read ${geometry.size} bytes of the ${geometry.name} at 0x${hex2(addr)}.\n`);
  } else {
    const chip = new SmbusDevice(bus, addr);
    const runs = readingRuns(first, last, command.skip);
    const values: (number | null | undefined)[] = new Array(256);
    if (mode === "b") await readEach(runs, (reg) => chip.readByteData(reg), values);
    else if (mode === "w") await readEach(runs, (reg) => chip.readWordData(reg), values);
    else {
      for (const { reg, length } of blockReads(runs)) {
        const data = await chip.readI2cBlock(reg, length);
        for (let k = 0; k < length; k++) values[reg + k] = data?.[k] ?? null;
      }
    }
    const taken = registerFileEntry({ addr, mode, last, values, readOnly: command.readOnly });
    entry = taken.entry;
    io.err(snapshotSummary(taken, values, skipped, mode === "w"));
  }
  io.out(snapshotJson(entry, command.entryOnly));
  return ExitStatus.OK;
}

/** What a register snapshot holds, for stderr: counts, the default, and what it could not read. */
function snapshotSummary(
  taken: RegisterSnapshot,
  values: readonly (number | null | undefined)[],
  skipped: readonly number[],
  word: boolean,
): string {
  const read = values.filter((value) => value !== undefined && value !== null).length;
  let text = `Read ${read} registers: ${taken.listed} listed, the others ${formatValue(taken.defaultValue, word)} (the default).\n`;
  if (skipped.length > 0) {
    text += `Not read (--skip), left at the default: ${formatRegisters(skipped)}\n`;
  }
  if (taken.absent.length > 0) {
    text += `No answer, left at the default: ${formatRegisters(taken.absent)}\n`;
  }
  return text;
}

const GET_MODE_NAMES: Readonly<Record<Exclude<GetMode, "i">, string>> = {
  b: "read byte data",
  w: "read word data",
  c: "write byte/read byte",
  s: "read SMBus block data",
};

async function get(
  command: Extract<Command, { name: "get" }>,
  bus: CommandBus,
  io: CommandIo,
): Promise<number> {
  const { reg, mode } = command;
  if (mode === "s") {
    // Not in Linux's SMBus emulation, so a guest on virtio-i2c cannot do it either.
    io.err("Error: Adapter does not have SMBus block read capability\n");
    return ExitStatus.FAILED;
  }
  if (!command.yes) {
    let text = `${WARNING}I will read from device file ${bus.name}, chip address 0x${hex2(command.addr)}, `;
    text += reg === null ? "current data\naddress" : `data address\n0x${hex2(reg)}`;
    if (mode === "i") {
      text += `, ${command.length} ${command.length > 1 ? "bytes" : "byte"} using read I2C block data.\n`;
    } else {
      text += `, using ${reg === null ? "read byte" : GET_MODE_NAMES[mode]}.\n`;
    }
    io.err(text);
    if (!askToContinue(io, true)) return ExitStatus.OK;
  }
  const chip = new SmbusDevice(bus, command.addr);
  let value: number | null;
  if (mode === "i") {
    const data = await chip.readI2cBlock(reg ?? 0, command.length);
    if (data === null) return readFailed(io);
    io.out(formatBlock(data));
    return ExitStatus.OK;
  }
  if (mode === "c") {
    if (reg !== null && !(await chip.writeByte(reg))) io.err("Warning - write failed\n");
    value = await chip.readByte();
  } else if (mode === "w") {
    value = await chip.readWordData(reg ?? 0);
  } else {
    value = await chip.readByteData(reg ?? 0);
  }
  if (value === null) return readFailed(io);
  io.out(`${formatValue(value, mode === "w")}\n`);
  return ExitStatus.OK;
}

function readFailed(io: CommandIo): number {
  io.err("Error: Read failed\n");
  return ExitStatus.FAILED;
}

async function set(
  command: Extract<Command, { name: "set" }>,
  bus: CommandBus,
  io: CommandIo,
): Promise<number> {
  const { reg, mode, values } = command;
  const word = mode === "w";
  const block = mode === "i" || mode === "s";
  const chip = new SmbusDevice(bus, command.addr);
  if (!command.yes) {
    let text = `${WARNING}I will write to device file ${bus.name}, chip address 0x${hex2(command.addr)}, `;
    if (mode === "c") text += `data address\n0x${hex2(reg)}, no data.\n`;
    else if (block) {
      text += `data address\n0x${hex2(reg)}, data ${values.map((v) => `0x${hex2(v)}`).join(" ")}, mode ${mode === "i" ? "I2C block data" : "SMBus block data"}.\n`;
    } else {
      text += `data address\n0x${hex2(reg)}, ${command.mask === null ? "" : "masked "}data ${formatValue(values[0] ?? 0, word)}, mode ${word ? "word" : "byte"}.\n`;
    }
    io.err(text);
    if (!askToContinue(io, true)) return ExitStatus.OK;
  }
  const readBack = (): Promise<number | null> =>
    mode === "c" ? chip.readByte() : word ? chip.readWordData(reg) : chip.readByteData(reg);
  let value = values[0] ?? 0;
  if (command.mask !== null) {
    const old = await readBack();
    if (old === null) {
      io.err("Error: Failed to read old value\n");
      return ExitStatus.FAILED;
    }
    value = (value & command.mask) | (old & ~command.mask);
    if (!command.yes) {
      io.err(
        `Old value ${formatValue(old, word)}, write mask ${formatValue(command.mask, word)}, will write ${formatValue(value, word)}\n`,
      );
      if (!askToContinue(io, true)) return ExitStatus.OK;
    }
  }
  let written: boolean;
  if (mode === "c") written = await chip.writeByte(value);
  else if (mode === "w") written = await chip.writeWordData(reg, value);
  else if (mode === "i") written = await chip.writeI2cBlock(reg, values);
  else if (mode === "s") written = await chip.writeBlockData(reg, values);
  else written = await chip.writeByteData(reg, value);
  if (!written) {
    io.err("Error: Write failed\n");
    return ExitStatus.FAILED;
  }
  if (!command.readback || block) return ExitStatus.OK;
  const read = await readBack();
  if (read === null) io.out("Warning - readback failed\n");
  else if (read !== value) {
    io.out(
      `Warning - data mismatch - wrote ${formatValue(value, word)}, read back ${formatValue(read, word)}\n`,
    );
  } else io.out(`Value ${formatValue(value, word)} written, readback matched\n`);
  return ExitStatus.OK;
}

async function transfer(
  command: Extract<Command, { name: "transfer" }>,
  bus: CommandBus,
  io: CommandIo,
): Promise<number> {
  const { messages } = command;
  if (!command.yes) {
    io.err(`${WARNING}I will send the following messages to device file ${bus.name}:\n`);
    io.err(
      formatTransferMessages(messages, [], { header: true, readData: false, writeData: true }),
    );
    if (!askToContinue(io, false)) return ExitStatus.OK;
  }
  const ops: I2cOp[] = messages.map((m) =>
    m.read ? { addr: m.addr, read: m.length } : { addr: m.addr, write: m.data },
  );
  const result = await bus.transfer(ops);
  const readData: (Uint8Array | undefined)[] = [];
  let readIndex = 0;
  for (const message of messages) {
    readData.push(message.read ? result.reads[readIndex++] : undefined);
  }
  if (result.okCount < messages.length) {
    io.err(`Warning: only ${result.okCount}/${messages.length} messages were sent\n`);
  }
  io.out(
    formatTransferMessages(messages.slice(0, result.okCount), readData, {
      header: command.verbose,
      readData: true,
      writeData: command.verbose,
    }),
  );
  return result.ok ? ExitStatus.OK : ExitStatus.FAILED;
}
