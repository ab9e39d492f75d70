// Expected texts follow i2c-tools 4.3's printf formats (i2cdetect.c, i2cdump.c, i2ctransfer.c),
// trailing blanks included.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
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

const BYTE_HEADER = "     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f    0123456789abcdef\n";

describe("formatDetectGrid", () => {
  it("prints i2cdetect's grid: addresses, --, UU, blanks outside the range", () => {
    const cells = new Map<number, DetectCell>();
    for (let a = 0x08; a <= 0x77; a++) cells.set(a, "absent");
    cells.set(0x50, "present");
    cells.set(0x1a, "busy");
    assert.equal(
      formatDetectGrid(cells),
      "     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f\n" +
        "00:                         -- -- -- -- -- -- -- -- \n" +
        "10: -- -- -- -- -- -- -- -- -- -- UU -- -- -- -- -- \n" +
        "20: -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- \n" +
        "30: -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- \n" +
        "40: -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- \n" +
        "50: 50 -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- \n" +
        "60: -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- \n" +
        "70: -- -- -- -- -- -- -- --                         \n",
    );
  });
});

describe("formatFunctionality", () => {
  it("prints i2cdetect -F's table", () => {
    const text = formatFunctionality("/run/vi2c.sock0", (name) => name !== "SMBus Block Read");
    const lines = text.split("\n");
    assert.equal(lines[0], "Functionalities implemented by /run/vi2c.sock0:");
    assert.equal(lines[1], "I2C                              yes");
    assert.equal(lines[11], "SMBus Block Read                 no");
    assert.equal(lines[15], "I2C Block Read                   yes");
    assert.equal(lines.length, 17);
  });
});

describe("formatByteDump", () => {
  it("prints a full row with its text column (. for 00/ff, ? for control and high bytes)", () => {
    const block: (number | null)[] = new Array(256).fill(0xff);
    const row = [0x48, 0x69, 0x00, 0x1f, 0x7f, 0x80, 0x20, 0x7e, 0x41, null, 0, 0, 0, 0, 0, 0];
    row.forEach((b, i) => {
      block[0x20 + i] = b;
    });
    const text = formatByteDump(block, 0x20, 0x2f);
    assert.equal(
      text,
      `${BYTE_HEADER}20: 48 69 00 1f 7f 80 20 7e 41 XX 00 00 00 00 00 00    Hi.??? ~AX......\n`,
    );
  });

  it("leaves registers outside the range blank and skips rows outside it", () => {
    const block = Array.from({ length: 256 }, (_, i) => i);
    const text = formatByteDump(block, 0x1e, 0x21);
    assert.equal(
      text,
      BYTE_HEADER +
        `10: ${"   ".repeat(14)}1e 1f    ${" ".repeat(14)}??\n` +
        `20: 20 21 ${"   ".repeat(14)}    !${" ".repeat(14)}\n`,
    );
  });

  it("prints word pairs in W mode", () => {
    const block: (number | null)[] = new Array(256).fill(null);
    block[0] = 0x34;
    block[1] = 0x12;
    const text = formatByteDump(block, 0x00, 0x03, true);
    assert.equal(
      text,
      `${BYTE_HEADER}00: 34 12 XX XX ${"   ".repeat(12)}   4?XX${" ".repeat(12)}\n`,
    );
  });
});

describe("formatWordDump", () => {
  it("prints i2cdump's word table with XXXX for failed reads", () => {
    const words: (number | null)[] = new Array(256).fill(null);
    words[0x08] = 0xff41;
    words[0x09] = 0x1234;
    assert.equal(
      formatWordDump(words, 0x08, 0x0a),
      `     0,8  1,9  2,a  3,b  4,c  5,d  6,e  7,f\n08: ff41 1234 XXXX ${"     ".repeat(5)}\n`,
    );
  });
});

describe("formatValue / formatBlock", () => {
  it("prints bytes with 2 digits, words with 4, blocks space-separated", () => {
    assert.equal(formatValue(0x5, false), "0x05");
    assert.equal(formatValue(0x5, true), "0x0005");
    assert.equal(formatBlock(Uint8Array.of(1, 0xab)), "0x01 0xab\n");
  });
});

describe("formatTransferMessages", () => {
  const messages = [
    { addr: 0x50, read: false as const, data: Uint8Array.of(0x00, 0x10) },
    { addr: 0x50, read: true as const, length: 2 },
    { addr: 0x20, read: false as const, data: new Uint8Array(0) },
  ];
  const reads = [undefined, Uint8Array.of(0xde, 0xad), undefined];

  it("prints only read data by default, as i2ctransfer", () => {
    assert.equal(
      formatTransferMessages(messages, reads, { header: false, readData: true, writeData: false }),
      "0xde 0xad\n",
    );
  });

  it("prints headers and all data with -v, and headers plus write data when confirming", () => {
    assert.equal(
      formatTransferMessages(messages, reads, { header: true, readData: true, writeData: true }),
      "msg 0: addr 0x50, write, len 2, buf 0x00 0x10\n" +
        "msg 1: addr 0x50, read, len 2, buf 0xde 0xad\n" +
        "msg 2: addr 0x20, write, len 0\n",
    );
    assert.equal(
      formatTransferMessages(messages, [], { header: true, readData: false, writeData: true }),
      "msg 0: addr 0x50, write, len 2, buf 0x00 0x10\n" +
        "msg 1: addr 0x50, read, len 2\n" +
        "msg 2: addr 0x20, write, len 0\n",
    );
  });
});
