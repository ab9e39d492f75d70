// Trace lines: i2ctransfer syntax that parses back to the same transfer, results, reads, reasons.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { TransferRecord } from "../i2c/observer.js";
import {
  formatTraceLine,
  formatTransfer,
  parseTraceLine,
  parseTransfer,
  TRACE_BYTES_SHOWN,
  TRACE_LINE_MAX_BYTES,
  TRACE_REASON_MAX_CHARS,
} from "./format.js";

const START = Date.UTC(2024, 0, 2, 3, 4, 5, 678);

function record(overrides: Partial<TransferRecord>): TransferRecord {
  return {
    guest: 0,
    bus: "sim",
    messages: [],
    data: [],
    result: "ok",
    failedIndex: 0,
    reason: null,
    injected: [],
    startTime: START,
    durationUs: 42,
    ...overrides,
  };
}

describe("formatTraceLine", () => {
  it("writes an EEPROM read as i2ctransfer arguments with the read data after =>", () => {
    const line = formatTraceLine(
      record({
        guest: 1,
        messages: [
          { addr: 0x50, read: false, length: 1 },
          { addr: 0x50, read: true, length: 4 },
        ],
        data: [Uint8Array.of(0x00), Uint8Array.of(0xde, 0xad, 0xbe, 0xef)],
        failedIndex: 2,
      }),
    );
    assert.equal(
      line,
      "2024-01-02T03:04:05.678Z socket1 sim 42us ok w1@0x50 0x00 r4@0x50 => 0xde 0xad 0xbe 0xef",
    );
  });

  it("names the failed message from 1 and gives the reason of an error", () => {
    const line = formatTraceLine(
      record({
        bus: null,
        messages: [
          { addr: 0x50, read: false, length: 1 },
          { addr: 0x51, read: true, length: 2 },
        ],
        data: [new Uint8Array(), new Uint8Array()],
        result: "error",
        failedIndex: 1,
        reason: "address 0x51 not listed\nsecond line",
        durationUs: 0,
      }),
    );
    assert.equal(
      line,
      "2024-01-02T03:04:05.678Z socket0 - 0us error:2 w1@0x50 r2@0x51 # address 0x51 not listed second line",
    );
  });

  it("shows a NACK without read data for the read that did not complete", () => {
    const line = formatTraceLine(
      record({
        messages: [
          { addr: 0x48, read: false, length: 1 },
          { addr: 0x48, read: true, length: 2 },
        ],
        data: [Uint8Array.of(7), new Uint8Array()],
        result: "nack",
        failedIndex: 1,
      }),
    );
    assert.match(line, / nack:2 w1@0x48 0x07 r2@0x48$/);
  });

  it("names the faults injected into the transfer, and reads them back", () => {
    const line = formatTraceLine(
      record({
        messages: [{ addr: 0x48, read: false, length: 1 }],
        data: [Uint8Array.of(0)],
        result: "nack",
        failedIndex: 0,
        injected: [{ index: 0, fault: "0x48: nack every=3" }],
      }),
    );
    assert.match(line, / nack:1 w1@0x48 0x00 \[injected 0x48: nack every=3\]$/);
    assert.equal(parseTraceLine(line).injected, "0x48: nack every=3");
    assert.equal(
      parseTraceLine(
        formatTraceLine(
          record({
            messages: [{ addr: 1, read: true, length: 0 }],
            data: [new Uint8Array()],
            failedIndex: 1,
          }),
        ),
      ).injected,
      null,
    );
  });
});

describe("formatTraceLine bounds", () => {
  it("shows the first bytes of a long message and counts the rest, for writes and reads", () => {
    const long = new Uint8Array(1000).map((_, i) => i & 0xff);
    const line = formatTraceLine(
      record({
        messages: [
          { addr: 0x50, read: false, length: 1000 },
          { addr: 0x50, read: true, length: 1000 },
        ],
        data: [long, long],
        failedIndex: 2,
      }),
    );
    const shown = Array.from(
      long.subarray(0, TRACE_BYTES_SHOWN),
      (b) => `0x${b.toString(16).padStart(2, "0")}`,
    ).join(" ");
    const rest = `…(+${1000 - TRACE_BYTES_SHOWN} bytes)`;
    assert.ok(line.endsWith(` w1000@0x50 ${shown} ${rest} r1000@0x50 => ${shown} ${rest}`), line);
    const parsed = parseTraceLine(line);
    assert.deepEqual(parsed.messages[0]?.data, long.subarray(0, TRACE_BYTES_SHOWN));
    assert.equal(parsed.messages[0]?.length, 1000);
    assert.deepEqual(parsed.reads, [long.subarray(0, TRACE_BYTES_SHOWN)]);
  });

  it("leaves out the messages past the line's cap, counted, and cuts a long reason", () => {
    const count = 4096;
    const messages = Array.from({ length: count }, () => ({
      addr: 0x50,
      read: false,
      length: 0xffff,
    }));
    const data = messages.map(() => new Uint8Array(0xffff).fill(0xaa));
    const line = formatTraceLine(
      record({
        bus: "sim",
        messages,
        data,
        result: "error",
        failedIndex: 0,
        reason: `bus failed: ${"x".repeat(10_000)}`,
      }),
    );
    assert.ok(Buffer.byteLength(line) <= TRACE_LINE_MAX_BYTES, `${Buffer.byteLength(line)} bytes`);
    const parsed = parseTraceLine(line);
    assert.ok(parsed.messages.length > 10);
    assert.equal(parsed.messages.length + parsed.messagesOmitted, count);
    assert.match(
      line,
      new RegExp(` …\\(\\+${parsed.messagesOmitted} messages\\) # bus failed: x+$`),
    );
    assert.equal(parsed.reason?.length, TRACE_REASON_MAX_CHARS);
    assert.equal(parsed.failedIndex, 0);
  });

  it("an ok transfer with messages left out still names every message as done", () => {
    const messages = Array.from({ length: 2000 }, () => ({ addr: 0x48, read: true, length: 64 }));
    const data = messages.map(() => new Uint8Array(64).fill(1));
    const parsed = parseTraceLine(
      formatTraceLine(record({ messages, data, result: "ok", failedIndex: 2000 })),
    );
    assert.equal(parsed.failedIndex, 2000);
    assert.equal(parsed.reads.length, parsed.messages.length);
  });
});

describe("parseTransfer", () => {
  it("reads i2ctransfer arguments, reusing the previous address when it is left out", () => {
    assert.deepEqual(parseTransfer("w2@0x50 0x00 0x10 r16 w0@80"), [
      { addr: 0x50, read: false, length: 2, data: Uint8Array.of(0, 0x10) },
      { addr: 0x50, read: true, length: 16, data: new Uint8Array() },
      { addr: 0x50, read: false, length: 0, data: new Uint8Array() },
    ]);
  });

  it("refuses what i2ctransfer would refuse", () => {
    for (const bad of [
      "",
      "x1@0x50",
      "w1@0x50",
      "r1",
      "w1@0x80 0",
      "w1@0x50 0x100",
      "r70000@0x50",
      "w70@0x50 0x00 …(+69 bytes)",
    ]) {
      assert.throws(() => parseTransfer(bad), { code: "TRACE_BAD_SYNTAX" }, bad);
    }
  });
});

const messageArb = fc.record({
  addr: fc.integer({ min: 0, max: 0x7f }),
  read: fc.boolean(),
  data: fc.uint8Array({ maxLength: 8 }),
});

describe("trace line round trip", () => {
  it("any transfer and result parse back to the same messages, data, reads and result", () => {
    fc.assert(
      fc.property(
        fc.array(messageArb, { minLength: 1, maxLength: 5 }),
        fc.nat(),
        fc.constantFrom("ok", "nack", "error"),
        fc.nat({ max: 63 }),
        fc.nat({ max: 10_000_000 }),
        (msgs, failSeed, result, guest, durationUs) => {
          const failedIndex = result === "ok" ? msgs.length : failSeed % msgs.length;
          const messages = msgs.map((m) => ({ addr: m.addr, read: m.read, length: m.data.length }));
          const data = msgs.map((m, i) => (m.read && i >= failedIndex ? new Uint8Array() : m.data));
          const rec = record({
            guest,
            messages,
            data,
            result,
            failedIndex,
            durationUs,
            reason: result === "error" ? "bus failed: EIO" : null,
          });
          const parsed = parseTraceLine(formatTraceLine(rec));
          assert.equal(parsed.guest, guest);
          assert.equal(parsed.bus, "sim");
          assert.equal(parsed.durationUs, durationUs);
          assert.equal(parsed.result, result);
          assert.equal(parsed.failedIndex, failedIndex);
          assert.equal(parsed.reason, rec.reason);
          assert.deepEqual(
            parsed.messages,
            msgs.map((m) => ({
              addr: m.addr,
              read: m.read,
              length: m.data.length,
              data: m.read ? new Uint8Array() : m.data,
            })),
          );
          const reads = msgs.filter((m, i) => m.read && i < failedIndex).map((m) => m.data);
          assert.deepEqual(parsed.reads, reads);
          // The transfer part alone is valid i2ctransfer input for the same messages.
          assert.deepEqual(parseTransfer(formatTransfer(messages, data)), parsed.messages);
        },
      ),
    );
  });
});
