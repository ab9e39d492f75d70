import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  I2C_FUNC_SMBUS_PROC_CALL,
  I2C_FUNC_SMBUS_QUICK,
  I2C_FUNC_SMBUS_READ_BYTE,
  I2C_FUNC_SMBUS_READ_BYTE_DATA,
  I2C_FUNC_SMBUS_READ_I2C_BLOCK,
  I2C_FUNC_SMBUS_READ_WORD_DATA,
  I2C_FUNC_SMBUS_WRITE_BYTE,
  I2C_FUNC_SMBUS_WRITE_BYTE_DATA,
  I2C_FUNC_SMBUS_WRITE_I2C_BLOCK,
  I2C_FUNC_SMBUS_WRITE_WORD_DATA,
  I2C_SMBUS_BYTE,
  I2C_SMBUS_BYTE_DATA,
  I2C_SMBUS_DATA_SIZE,
  I2C_SMBUS_I2C_BLOCK_DATA,
  I2C_SMBUS_PROC_CALL,
  I2C_SMBUS_QUICK,
  I2C_SMBUS_READ,
  I2C_SMBUS_WORD_DATA,
  I2C_SMBUS_WRITE,
} from "../sys/i2c-dev.js";
import type { I2cMessage } from "./bus.js";
import {
  copySmbusResult,
  describeShape,
  mapToSmbus,
  type SmbusCommand,
  type SmbusKind,
} from "./smbus.js";

const ALL_SMBUS =
  I2C_FUNC_SMBUS_QUICK |
  I2C_FUNC_SMBUS_READ_BYTE |
  I2C_FUNC_SMBUS_WRITE_BYTE |
  I2C_FUNC_SMBUS_READ_BYTE_DATA |
  I2C_FUNC_SMBUS_WRITE_BYTE_DATA |
  I2C_FUNC_SMBUS_READ_WORD_DATA |
  I2C_FUNC_SMBUS_WRITE_WORD_DATA |
  I2C_FUNC_SMBUS_PROC_CALL |
  I2C_FUNC_SMBUS_READ_I2C_BLOCK |
  I2C_FUNC_SMBUS_WRITE_I2C_BLOCK;

const ADDR = 0x50;

const w = (...bytes: number[]): I2cMessage => ({
  addr: ADDR,
  read: false,
  buf: Uint8Array.from(bytes),
});
const r = (len: number, addr = ADDR): I2cMessage => ({
  addr,
  read: true,
  buf: new Uint8Array(len),
});
const seq = (n: number, from = 0x10) => Array.from({ length: n }, (_, i) => (from + i) & 0xff);

/** The bus traffic an SMBus command produces (as i2c-core emulates it), one entry per message. */
function wireOf(cmd: SmbusCommand): { read: boolean; bytes: number[] | number }[] {
  const d = cmd.data;
  const word = new Uint16Array(d.slice(0, 2).buffer)[0]!; // the kernel reads data->word in host order
  const isRead = cmd.readWrite === I2C_SMBUS_READ;
  switch (cmd.size) {
    case I2C_SMBUS_QUICK:
      return [{ read: isRead, bytes: isRead ? 0 : [] }];
    case I2C_SMBUS_BYTE:
      return isRead ? [{ read: true, bytes: 1 }] : [{ read: false, bytes: [cmd.command] }];
    case I2C_SMBUS_BYTE_DATA:
      return isRead
        ? [
            { read: false, bytes: [cmd.command] },
            { read: true, bytes: 1 },
          ]
        : [{ read: false, bytes: [cmd.command, d[0]!] }];
    case I2C_SMBUS_WORD_DATA:
      return isRead
        ? [
            { read: false, bytes: [cmd.command] },
            { read: true, bytes: 2 },
          ]
        : [{ read: false, bytes: [cmd.command, word & 0xff, word >> 8] }];
    case I2C_SMBUS_PROC_CALL:
      return [
        { read: false, bytes: [cmd.command, word & 0xff, word >> 8] },
        { read: true, bytes: 2 },
      ];
    case I2C_SMBUS_I2C_BLOCK_DATA:
      return isRead
        ? [
            { read: false, bytes: [cmd.command] },
            { read: true, bytes: d[0]! },
          ]
        : [{ read: false, bytes: [cmd.command, ...d.subarray(1, 1 + d[0]!)] }];
    default:
      throw new Error(`unexpected size ${cmd.size}`);
  }
}

function wireOfTransfer(
  msgs: readonly I2cMessage[],
): { read: boolean; bytes: number[] | number }[] {
  return msgs.map((m) => ({ read: m.read, bytes: m.read ? m.buf.length : [...m.buf] }));
}

/** The function bit the kernel checks for a command. */
function requiredFunc(cmd: SmbusCommand): number {
  const isRead = cmd.readWrite === I2C_SMBUS_READ;
  switch (cmd.size) {
    case I2C_SMBUS_QUICK:
      return I2C_FUNC_SMBUS_QUICK;
    case I2C_SMBUS_BYTE:
      return isRead ? I2C_FUNC_SMBUS_READ_BYTE : I2C_FUNC_SMBUS_WRITE_BYTE;
    case I2C_SMBUS_BYTE_DATA:
      return isRead ? I2C_FUNC_SMBUS_READ_BYTE_DATA : I2C_FUNC_SMBUS_WRITE_BYTE_DATA;
    case I2C_SMBUS_WORD_DATA:
      return isRead ? I2C_FUNC_SMBUS_READ_WORD_DATA : I2C_FUNC_SMBUS_WRITE_WORD_DATA;
    case I2C_SMBUS_PROC_CALL:
      return I2C_FUNC_SMBUS_PROC_CALL;
    default:
      return isRead ? I2C_FUNC_SMBUS_READ_I2C_BLOCK : I2C_FUNC_SMBUS_WRITE_I2C_BLOCK;
  }
}

interface MappingCase {
  name: string;
  msgs: I2cMessage[];
  kind: SmbusKind;
  readWrite: number;
  size: number;
  command: number;
  data?: number[];
}

const mappings: MappingCase[] = [
  {
    name: "w0",
    msgs: [w()],
    kind: "quick-write",
    readWrite: I2C_SMBUS_WRITE,
    size: I2C_SMBUS_QUICK,
    command: 0,
  },
  {
    name: "r0",
    msgs: [r(0)],
    kind: "quick-read",
    readWrite: I2C_SMBUS_READ,
    size: I2C_SMBUS_QUICK,
    command: 0,
  },
  {
    name: "r1",
    msgs: [r(1)],
    kind: "receive-byte",
    readWrite: I2C_SMBUS_READ,
    size: I2C_SMBUS_BYTE,
    command: 0,
  },
  {
    name: "w1",
    msgs: [w(0x42)],
    kind: "send-byte",
    readWrite: I2C_SMBUS_WRITE,
    size: I2C_SMBUS_BYTE,
    command: 0x42,
  },
  {
    name: "w2",
    msgs: [w(0x10, 0xaa)],
    kind: "write-byte-data",
    readWrite: I2C_SMBUS_WRITE,
    size: I2C_SMBUS_BYTE_DATA,
    command: 0x10,
    data: [0xaa],
  },
  {
    name: "w3",
    msgs: [w(0x10, 0x34, 0x12)],
    kind: "write-word-data",
    readWrite: I2C_SMBUS_WRITE,
    size: I2C_SMBUS_WORD_DATA,
    command: 0x10,
  },
  {
    name: "w4",
    msgs: [w(0x10, 1, 2, 3)],
    kind: "i2c-block-write",
    readWrite: I2C_SMBUS_WRITE,
    size: I2C_SMBUS_I2C_BLOCK_DATA,
    command: 0x10,
    data: [3, 1, 2, 3],
  },
  {
    name: "w33",
    msgs: [w(0x00, ...seq(32))],
    kind: "i2c-block-write",
    readWrite: I2C_SMBUS_WRITE,
    size: I2C_SMBUS_I2C_BLOCK_DATA,
    command: 0,
    data: [32, ...seq(32)],
  },
  {
    name: "w1 r1",
    msgs: [w(0x20), r(1)],
    kind: "read-byte-data",
    readWrite: I2C_SMBUS_READ,
    size: I2C_SMBUS_BYTE_DATA,
    command: 0x20,
  },
  {
    name: "w1 r2",
    msgs: [w(0x20), r(2)],
    kind: "read-word-data",
    readWrite: I2C_SMBUS_READ,
    size: I2C_SMBUS_WORD_DATA,
    command: 0x20,
  },
  {
    name: "w1 r3",
    msgs: [w(0x20), r(3)],
    kind: "i2c-block-read",
    readWrite: I2C_SMBUS_READ,
    size: I2C_SMBUS_I2C_BLOCK_DATA,
    command: 0x20,
    data: [3],
  },
  {
    name: "w1 r32",
    msgs: [w(0x20), r(32)],
    kind: "i2c-block-read",
    readWrite: I2C_SMBUS_READ,
    size: I2C_SMBUS_I2C_BLOCK_DATA,
    command: 0x20,
    data: [32],
  },
  {
    name: "w3 r2",
    msgs: [w(0x30, 0xcd, 0xab), r(2)],
    kind: "process-call",
    readWrite: I2C_SMBUS_WRITE,
    size: I2C_SMBUS_PROC_CALL,
    command: 0x30,
  },
];

describe("mapToSmbus on an adapter with every SMBus function", () => {
  for (const c of mappings) {
    it(`maps ${c.name} to ${c.kind}`, () => {
      const cmd = mapToSmbus(c.msgs, ALL_SMBUS);
      assert.ok(cmd, "expected a command");
      assert.equal(cmd.kind, c.kind);
      assert.equal(cmd.addr, ADDR);
      assert.equal(cmd.readWrite, c.readWrite);
      assert.equal(cmd.size, c.size);
      assert.equal(cmd.command, c.command);
      assert.equal(cmd.data.length, I2C_SMBUS_DATA_SIZE);
      if (c.data) assert.deepEqual([...cmd.data.subarray(0, c.data.length)], c.data);
      assert.deepEqual(wireOf(cmd), wireOfTransfer(c.msgs));
    });
  }

  it("stores words in host byte order, low byte first on the wire", () => {
    const cmd = mapToSmbus([w(0x10, 0x34, 0x12)], ALL_SMBUS);
    assert.ok(cmd);
    const expected = new Uint8Array(new Uint16Array([0x1234]).buffer);
    assert.deepEqual([...cmd.data.subarray(0, 2)], [...expected]);
  });
});

interface MissingCase {
  name: string;
  msgs: I2cMessage[];
  missing: number;
  fallback: SmbusKind | null;
}

const missingBits: MissingCase[] = [
  { name: "w0", msgs: [w()], missing: I2C_FUNC_SMBUS_QUICK, fallback: null },
  { name: "r0", msgs: [r(0)], missing: I2C_FUNC_SMBUS_QUICK, fallback: null },
  { name: "r1", msgs: [r(1)], missing: I2C_FUNC_SMBUS_READ_BYTE, fallback: null },
  { name: "w1", msgs: [w(1)], missing: I2C_FUNC_SMBUS_WRITE_BYTE, fallback: null },
  {
    name: "w2",
    msgs: [w(1, 2)],
    missing: I2C_FUNC_SMBUS_WRITE_BYTE_DATA,
    fallback: "i2c-block-write",
  },
  {
    name: "w2",
    msgs: [w(1, 2)],
    missing: I2C_FUNC_SMBUS_WRITE_BYTE_DATA | I2C_FUNC_SMBUS_WRITE_I2C_BLOCK,
    fallback: null,
  },
  {
    name: "w3",
    msgs: [w(1, 2, 3)],
    missing: I2C_FUNC_SMBUS_WRITE_WORD_DATA,
    fallback: "i2c-block-write",
  },
  {
    name: "w3",
    msgs: [w(1, 2, 3)],
    missing: I2C_FUNC_SMBUS_WRITE_WORD_DATA | I2C_FUNC_SMBUS_WRITE_I2C_BLOCK,
    fallback: null,
  },
  { name: "w4", msgs: [w(1, 2, 3, 4)], missing: I2C_FUNC_SMBUS_WRITE_I2C_BLOCK, fallback: null },
  {
    name: "w1 r1",
    msgs: [w(1), r(1)],
    missing: I2C_FUNC_SMBUS_READ_BYTE_DATA,
    fallback: "i2c-block-read",
  },
  {
    name: "w1 r1",
    msgs: [w(1), r(1)],
    missing: I2C_FUNC_SMBUS_READ_BYTE_DATA | I2C_FUNC_SMBUS_READ_I2C_BLOCK,
    fallback: null,
  },
  {
    name: "w1 r2",
    msgs: [w(1), r(2)],
    missing: I2C_FUNC_SMBUS_READ_WORD_DATA,
    fallback: "i2c-block-read",
  },
  {
    name: "w1 r2",
    msgs: [w(1), r(2)],
    missing: I2C_FUNC_SMBUS_READ_WORD_DATA | I2C_FUNC_SMBUS_READ_I2C_BLOCK,
    fallback: null,
  },
  { name: "w1 r3", msgs: [w(1), r(3)], missing: I2C_FUNC_SMBUS_READ_I2C_BLOCK, fallback: null },
  { name: "w3 r2", msgs: [w(1, 2, 3), r(2)], missing: I2C_FUNC_SMBUS_PROC_CALL, fallback: null },
];

describe("mapToSmbus when the adapter lacks a function", () => {
  for (const c of missingBits) {
    const outcome = c.fallback ?? "nothing";
    it(`maps ${c.name} without 0x${c.missing.toString(16)} to ${outcome}`, () => {
      const cmd = mapToSmbus(c.msgs, ALL_SMBUS & ~c.missing);
      assert.equal(cmd?.kind ?? null, c.fallback);
      if (cmd) assert.deepEqual(wireOf(cmd), wireOfTransfer(c.msgs));
    });
  }
});

const unmappable: { name: string; msgs: I2cMessage[] }[] = [
  { name: "no messages", msgs: [] },
  { name: "w34 (block longer than 32)", msgs: [w(...seq(34))] },
  { name: "r2", msgs: [r(2)] },
  { name: "r32", msgs: [r(32)] },
  { name: "w1 r33", msgs: [w(1), r(33)] },
  { name: "w1 r0", msgs: [w(1), r(0)] },
  { name: "w0 r1", msgs: [w(), r(1)] },
  { name: "w2 r1", msgs: [w(1, 2), r(1)] },
  { name: "w3 r1", msgs: [w(1, 2, 3), r(1)] },
  { name: "w3 r3", msgs: [w(1, 2, 3), r(3)] },
  { name: "r1 w1", msgs: [r(1), w(1)] },
  { name: "w1 w1", msgs: [w(1), w(2)] },
  { name: "r1 r1", msgs: [r(1), r(1)] },
  { name: "w1 r1 to different addresses", msgs: [w(1), r(1, ADDR + 1)] },
  { name: "three messages", msgs: [w(1), r(1), r(1)] },
];

describe("mapToSmbus refuses transfers without an SMBus form", () => {
  for (const c of unmappable) {
    it(`returns null for ${c.name}`, () => {
      assert.equal(mapToSmbus(c.msgs, 0xffffffff), null);
    });
  }
});

describe("copySmbusResult", () => {
  it("copies a byte into the read message", () => {
    const msgs = [w(5), r(1)];
    const cmd = mapToSmbus(msgs, ALL_SMBUS);
    assert.ok(cmd);
    cmd.data[0] = 0x5a;
    copySmbusResult(cmd, msgs);
    assert.deepEqual([...msgs[1]!.buf], [0x5a]);
  });

  it("copies a receive-byte result into the only message", () => {
    const msgs = [r(1)];
    const cmd = mapToSmbus(msgs, ALL_SMBUS);
    assert.ok(cmd);
    cmd.data[0] = 0x77;
    copySmbusResult(cmd, msgs);
    assert.deepEqual([...msgs[0]!.buf], [0x77]);
  });

  for (const msgs of [
    [w(5), r(2)],
    [w(5, 1, 2), r(2)],
  ]) {
    it(`copies a host-order word low byte first (${describeShape(msgs)})`, () => {
      const cmd = mapToSmbus(msgs, ALL_SMBUS);
      assert.ok(cmd);
      cmd.data.set(new Uint8Array(new Uint16Array([0xbeef]).buffer));
      copySmbusResult(cmd, msgs);
      assert.deepEqual([...msgs[1]!.buf], [0xef, 0xbe]);
    });
  }

  it("copies block bytes after the length byte", () => {
    const msgs = [w(5), r(4)];
    const cmd = mapToSmbus(msgs, ALL_SMBUS);
    assert.ok(cmd);
    cmd.data.set([4, 9, 8, 7, 6, 5]);
    copySmbusResult(cmd, msgs);
    assert.deepEqual([...msgs[1]!.buf], [9, 8, 7, 6]);
  });

  it("leaves write messages alone", () => {
    const msgs = [w(5, 6)];
    const cmd = mapToSmbus(msgs, ALL_SMBUS);
    assert.ok(cmd);
    cmd.data.fill(0xff);
    copySmbusResult(cmd, msgs);
    assert.deepEqual([...msgs[0]!.buf], [5, 6]);
  });
});

describe("mapToSmbus properties", () => {
  const message = fc.record({
    addr: fc.constantFrom(0x50, 0x51),
    read: fc.boolean(),
    buf: fc.uint8Array({ maxLength: 40 }),
  });
  const transfer = fc.array(message, { minLength: 0, maxLength: 3 });
  const funcs = fc.integer({ min: 0, max: 0xffffffff }).map((n) => n >>> 0);

  it("only returns commands the adapter supports that put the same bytes on the wire", () => {
    fc.assert(
      fc.property(transfer, funcs, (msgs, bits) => {
        const cmd = mapToSmbus(msgs, bits);
        if (!cmd) return;
        assert.ok((bits & requiredFunc(cmd)) !== 0, `uses a missing function for ${cmd.kind}`);
        assert.deepEqual(wireOf(cmd), wireOfTransfer(msgs));
        assert.ok(msgs.every((m) => m.addr === cmd.addr));
      }),
    );
  });

  it("never changes the caller's messages", () => {
    fc.assert(
      fc.property(transfer, funcs, (msgs, bits) => {
        const before = msgs.map((m) => [...m.buf]);
        mapToSmbus(msgs, bits);
        assert.deepEqual(
          msgs.map((m) => [...m.buf]),
          before,
        );
      }),
    );
  });
});
