// pcap: file header, LINKTYPE_I2C_LINUX records byte by byte, failed transfers, size limit (rotate, stop).
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import type { TransferRecord } from "../i2c/observer.js";
import {
  encodedSize,
  encodeTransfer,
  I2C_EVENT_ERR_FAIL,
  LINKTYPE_I2C_LINUX,
  PCAP_HEADER_SIZE,
  PcapWriter,
  pcapFileHeader,
} from "./pcap.js";

const START = 1_700_000_000_123.456; // ms: 1700000000 s + 123456 µs

function record(overrides: Partial<TransferRecord>): TransferRecord {
  return {
    guest: 3,
    bus: "sim",
    messages: [
      { addr: 0x50, read: false, length: 1 },
      { addr: 0x50, read: true, length: 2 },
    ],
    data: [Uint8Array.of(0x10), Uint8Array.of(0xab, 0xcd)],
    result: "ok",
    failedIndex: 2,
    reason: null,
    injected: [],
    startTime: START,
    durationUs: 250,
    ...overrides,
  };
}

/** Splits a capture body into records: [timestamp sec, usec, payload]. */
function records(bytes: Uint8Array): { sec: number; usec: number; payload: number[] }[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: { sec: number; usec: number; payload: number[] }[] = [];
  for (let at = 0; at < bytes.length; ) {
    const incl = dv.getUint32(at + 8, true);
    assert.equal(dv.getUint32(at + 12, true), incl, "orig_len = incl_len");
    out.push({
      sec: dv.getUint32(at, true),
      usec: dv.getUint32(at + 4, true),
      payload: [...bytes.subarray(at + 16, at + 16 + incl)],
    });
    at += 16 + incl;
  }
  return out;
}

describe("pcapFileHeader", () => {
  it("is classic little-endian pcap 2.4 with link type 209", () => {
    assert.deepEqual(
      [...pcapFileHeader()],
      [
        0xd4,
        0xc3,
        0xb2,
        0xa1,
        2,
        0,
        4,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0x00,
        0x00,
        0x02,
        0x00,
        LINKTYPE_I2C_LINUX,
        0,
        0,
        0,
      ],
    );
  });
});

describe("encodeTransfer", () => {
  it("writes one record per message: pseudo-header, address byte with R/W, data", () => {
    const parsed = records(encodeTransfer(record({}), 3));
    assert.deepEqual(parsed, [
      { sec: 1_700_000_000, usec: 123_456, payload: [3, 0, 0, 0, 0, 0xa0, 0x10] },
      { sec: 1_700_000_000, usec: 123_456, payload: [3, 0, 0, 0, 1, 0xa1, 0xab, 0xcd] },
    ]);
  });

  it("ends a NACKed transfer with the failed message (address only) and an ERR_FAIL event", () => {
    const nack = record({
      result: "nack",
      failedIndex: 1,
      data: [Uint8Array.of(0x10), new Uint8Array()],
    });
    const parsed = records(encodeTransfer(nack, 5));
    assert.equal(parsed.length, 3);
    assert.deepEqual(parsed[0]?.payload, [5, 0, 0, 0, 0, 0xa0, 0x10]);
    assert.deepEqual(parsed[1]?.payload, [5, 0, 0, 0, 1, 0xa1]);
    assert.deepEqual(parsed[2]?.payload, [0x80 | 5, 0x00, 0x40, 0x00, 0x00]);
    assert.equal(I2C_EVENT_ERR_FAIL, 0x00400000);
    assert.equal(parsed[2]?.usec, 123_706, "event at start + duration");
  });

  it("shows a refused transfer as its offending message and an event, nothing before it", () => {
    const refused = record({
      bus: null,
      result: "error",
      failedIndex: 0,
      reason: "address 0x50 not listed",
      data: [new Uint8Array(), new Uint8Array()],
      durationUs: 0,
    });
    const parsed = records(encodeTransfer(refused, 0));
    assert.deepEqual(
      parsed.map((r) => r.payload),
      [
        [0, 0, 0, 0, 0, 0xa0],
        [0x80, 0x00, 0x40, 0x00, 0x00],
      ],
    );
  });

  it("says its size before encoding (the writer checks room with it)", () => {
    for (const rec of [
      record({}),
      record({ result: "nack", failedIndex: 1, data: [Uint8Array.of(1), new Uint8Array()] }),
      record({ bus: null, result: "error", failedIndex: 0, reason: "refused" }),
    ]) {
      assert.equal(encodedSize(rec), encodeTransfer(rec, 0).length);
    }
  });

  it("keeps bus numbers to 7 bits", () => {
    assert.equal(encodeTransfer(record({}), 0x85)[16], 0x05);
  });
});

describe("PcapWriter", () => {
  const dir = mkdtempSync(join(tmpdir(), "vdi2c-pcap-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("writes the header and every transfer, in order, and flushes on close", () => {
    const path = join(dir, "plain.pcap");
    const writer = PcapWriter.open(path);
    writer.write(record({}), 0);
    writer.write(record({ guest: 1 }), 1);
    writer.closeSync();
    const bytes = readFileSync(path);
    assert.deepEqual([...bytes.subarray(0, PCAP_HEADER_SIZE)], [...pcapFileHeader()]);
    const body = records(bytes.subarray(PCAP_HEADER_SIZE));
    assert.deepEqual(
      body.map((r) => r.payload[0]),
      [0, 0, 1, 1],
    );
    assert.deepEqual(writer.counters.transfers, 2);
  });

  it("rotates at the size limit: FILE.1 holds the older transfers, each file starts with a header", () => {
    const path = join(dir, "rotate.pcap");
    const one = encodeTransfer(record({}), 0).length;
    const writer = PcapWriter.open(path, { maxFileSize: PCAP_HEADER_SIZE + 2 * one });
    for (let i = 0; i < 5; i++)
      writer.write(record({ data: [Uint8Array.of(i), Uint8Array.of(1, 2)] }), 0);
    writer.closeSync();
    assert.equal(writer.counters.rotations, 2);
    const current = readFileSync(path);
    assert.deepEqual([...current.subarray(0, PCAP_HEADER_SIZE)], [...pcapFileHeader()]);
    const writtenBytes = (file: Uint8Array) =>
      records(file.subarray(PCAP_HEADER_SIZE))
        .filter((r) => r.payload[4] === 0)
        .map((r) => r.payload[6]);
    assert.deepEqual(writtenBytes(current), [4]);
    const older = readFileSync(`${path}.1`);
    assert.deepEqual([...older.subarray(0, PCAP_HEADER_SIZE)], [...pcapFileHeader()]);
    assert.deepEqual(writtenBytes(older), [2, 3]);
    assert.equal(existsSync(`${path}.2`), false, "only one older file is kept");
    assert.equal(writer.counters.dropped, 0);
  });

  it("stops at the limit when asked, counting what it dropped", () => {
    const path = join(dir, "stop.pcap");
    const one = encodeTransfer(record({}), 0).length;
    const writer = PcapWriter.open(path, { maxFileSize: PCAP_HEADER_SIZE + one, onLimit: "stop" });
    writer.write(record({}), 0);
    writer.write(record({}), 0);
    writer.write(record({}), 0);
    writer.closeSync();
    assert.equal(readFileSync(path).length, PCAP_HEADER_SIZE + one);
    assert.deepEqual(
      {
        transfers: writer.counters.transfers,
        dropped: writer.counters.dropped,
        stopped: writer.counters.stopped,
      },
      { transfers: 1, dropped: 2, stopped: true },
    );
  });

  it("drops and counts transfers when the write queue is full instead of growing", () => {
    const path = join(dir, "full.pcap");
    const one = encodeTransfer(record({}), 0).length;
    const writer = PcapWriter.open(path, { maxBuffered: PCAP_HEADER_SIZE + one });
    writer.write(record({}), 0);
    writer.write(record({}), 0);
    assert.equal(writer.counters.dropped, 1);
    writer.closeSync();
    assert.equal(readFileSync(path).length, PCAP_HEADER_SIZE + one);
  });

  it("refuses a limit smaller than a header and a record", () => {
    assert.throws(() => PcapWriter.open(join(dir, "tiny.pcap"), { maxFileSize: 30 }), {
      code: "PCAP_BAD_LIMIT",
    });
  });
});
