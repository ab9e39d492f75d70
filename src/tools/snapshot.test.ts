import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseConfigText } from "../config/file.js";
import type { I2cMessage } from "../i2c/bus.js";
import { findModel, modelContext } from "../i2c/model.js";
import { EEPROM_GEOMETRIES } from "../i2c/models/eeprom.js";
import { SimBus, simTargets } from "../i2c/sim-bus.js";
import type { SnapshotEntry } from "./snapshot.js";
import * as snapshot from "./snapshot.js";

const noAdapters = {
  resolveAdapter(name: string): number {
    throw new Error(`no adapter ${name}`);
  },
};

/** The entry as vhost-device-i2c --config reads it, built into the chip it describes. */
function served(json: string) {
  const [device] = parseConfigText(json, "/tmp/snapshot.json", noAdapters);
  assert.ok(device?.kind === "sim" && typeof device.model === "string");
  const chip = findModel(device.model).create(
    device.options,
    modelContext({ address: device.address }),
  );
  const bus = new SimBus(simTargets(new Map([[device.address, chip]])));
  const read = (addr: number, pointer: number[], length: number): number[] => {
    const msg: I2cMessage = { addr, read: true, buf: new Uint8Array(length) };
    bus.transfer([{ addr, read: false, buf: Uint8Array.from(pointer) }, msg]);
    return [...msg.buf];
  };
  const write = (addr: number, bytes: number[]) =>
    bus.transfer([{ addr, read: false, buf: Uint8Array.from(bytes) }]);
  return { device, read, write };
}

describe("snapshot reading plan", () => {
  it("reads first..last without the skipped registers, as runs", () => {
    assert.deepEqual(snapshot.readingRuns(0, 0xff, []), [{ first: 0, last: 0xff }]);
    const skip = [
      { first: 0x10, last: 0x1f },
      { first: 0x40, last: 0x40 },
      { first: 0xf0, last: 0xff },
    ];
    assert.deepEqual(snapshot.readingRuns(0x08, 0xff, skip), [
      { first: 0x08, last: 0x0f },
      { first: 0x20, last: 0x3f },
      { first: 0x41, last: 0xef },
    ]);
    assert.deepEqual(snapshot.readingRuns(0x10, 0x1f, skip), []);
  });

  it("block reads stop at 32 bytes and at the end of each run, never into a skipped register", () => {
    assert.deepEqual(snapshot.blockReads([{ first: 0x00, last: 0x44 }]), [
      { reg: 0x00, length: 32 },
      { reg: 0x20, length: 32 },
      { reg: 0x40, length: 5 },
    ]);
    assert.deepEqual(
      snapshot.blockReads(snapshot.readingRuns(0, 0x2f, [{ first: 0x10, last: 0x10 }])),
      [
        { reg: 0x00, length: 16 },
        { reg: 0x11, length: 31 },
      ],
    );
  });

  it("EEPROM reads address each part as its datasheet does", () => {
    const geometry = (name: string) => {
      const found = EEPROM_GEOMETRIES.find((g) => g.name === name);
      assert.ok(found);
      return found;
    };
    const small = snapshot.eepromReads(geometry("24c02"), 0x50);
    assert.equal(small.length, 8, "I2C blocks of 32 bytes, as at24 reads through SMBus");
    assert.deepEqual(
      small.slice(0, 2).map((r) => [r.addr, [...r.wordAddress], r.offset, r.length]),
      [
        [0x50, [0x00], 0, 32],
        [0x50, [0x20], 32, 32],
      ],
    );
    const blocks = snapshot.eepromReads(geometry("24c16"), 0x50);
    assert.deepEqual(
      blocks.filter((r) => r.offset % 256 === 0).map((r) => r.addr),
      [0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
      "one chip address per 256-byte block",
    );
    const wide = snapshot.eepromReads(geometry("24c32"), 0x50);
    assert.equal(wide.length, 128);
    assert.deepEqual([...(wide[9]?.wordAddress ?? [])], [0x01, 0x20], "16-bit big-endian");
    assert.ok(wide.every((r) => r.addr === 0x50));
    assert.equal(snapshot.eepromReads(geometry("24c01"), 0x50).length, 4);
  });

  it("lists registers compactly and picks the ones in ranges", () => {
    assert.equal(snapshot.formatRegisters([1, 2, 3, 5, 0x10, 0x11]), "0x01-0x03, 0x05, 0x10-0x11");
    assert.equal(snapshot.formatRegisters([]), "");
    assert.deepEqual(snapshot.registersIn([{ first: 2, last: 4 }], 3, 10), [3, 4]);
  });
});

describe("snapshot entries, through the config loader and the model they name", () => {
  it("byte mode: the most common value is the default, the others listed, read-only kept", () => {
    const values: (number | null | undefined)[] = new Array(256).fill(0xff);
    values[0x00] = 0x12;
    values[0x05] = 0x00;
    values[0x06] = 0x00;
    values[0x20] = null;
    values.fill(undefined, 0x10, 0x20);
    const taken = snapshot.registerFileEntry({
      addr: 0x20,
      mode: "b",
      last: 0xff,
      values,
      readOnly: [{ first: 0x00, last: 0x01 }],
    });
    assert.deepEqual(taken.entry, {
      bus: "sim",
      address: "0x20",
      model: "register-file",
      options: {
        default: 0xff,
        registers: { "0x00": 0x12, "0x05": 0, "0x06": 0 },
        readOnly: [0, 1],
      },
    });
    assert.deepEqual([taken.defaultValue, taken.listed, taken.absent], [0xff, 3, [0x20]]);
    const { read, write } = served(snapshot.snapshotJson(taken.entry, false));
    assert.deepEqual(read(0x20, [0x00], 8), [0x12, 0xff, 0xff, 0xff, 0xff, 0, 0, 0xff]);
    write(0x20, [0x00, 0x99, 0x98, 0x97]);
    assert.deepEqual(read(0x20, [0x00], 3), [0x12, 0xff, 0x97], "readOnly registers keep theirs");
  });

  it("word mode: 2-byte little-endian registers answer SMBus word reads with the words read", () => {
    const values: (number | null | undefined)[] = new Array(256);
    values.fill(0x1234, 0, 4);
    values[1] = 0x8000;
    const taken = snapshot.registerFileEntry({
      addr: 0x48,
      mode: "w",
      last: 3,
      values,
      readOnly: [],
    });
    assert.deepEqual(taken.entry.options, {
      registerSize: 2,
      littleEndian: true,
      size: 4,
      default: 0x1234,
      registers: { "0x01": 0x8000 },
    });
    const { read } = served(snapshot.snapshotJson(taken.entry, false));
    assert.deepEqual(read(0x48, [0x01], 2), [0x00, 0x80], "low byte first, as read word data");
    assert.deepEqual(read(0x48, [0x03], 2), [0x34, 0x12]);
  });

  it("an EEPROM entry: the model with its memory as initial, the erased tail left out", () => {
    const memory = new Uint8Array(256).fill(0xff);
    memory.set([0xde, 0xad, 0xff, 0x00], 0x10);
    const entry: SnapshotEntry = snapshot.eepromEntry("24c02", 0x50, memory);
    assert.equal(entry.model, "24c02");
    assert.equal(entry.options.initial, `${"ff".repeat(16)}deadff00`);
    const { read } = served(snapshot.snapshotJson(entry, false));
    assert.deepEqual(read(0x50, [0x0e], 8), [0xff, 0xff, 0xde, 0xad, 0xff, 0x00, 0xff, 0xff]);
    assert.deepEqual(
      snapshot.eepromEntry("24c02", 0x50, new Uint8Array(256).fill(0xff)).options,
      {},
    );
  });

  it("the JSON is a whole config file, or the entry alone", () => {
    const entry = snapshot.eepromEntry("24c01", 0x51, new Uint8Array(128));
    assert.deepEqual(JSON.parse(snapshot.snapshotJson(entry, false)), { devices: [entry] });
    assert.deepEqual(JSON.parse(snapshot.snapshotJson(entry, true)), entry);
    assert.ok(snapshot.snapshotJson(entry, false).endsWith("}\n"));
  });
});
