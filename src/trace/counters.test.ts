// Counters: per guest and per device, bytes of completed messages, errors and NACKs on the failed
// message's device, latency in fixed power-of-two buckets.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { TransferRecord } from "../i2c/observer.js";
import {
  LATENCY_BOUNDS_US,
  LatencyHistogram,
  latencyBucket,
  TransferCounters,
} from "./counters.js";

function record(overrides: Partial<TransferRecord>): TransferRecord {
  return {
    guest: 0,
    bus: "sim",
    messages: [
      { addr: 0x50, read: false, length: 1 },
      { addr: 0x50, read: true, length: 4 },
    ],
    data: [Uint8Array.of(0), Uint8Array.of(1, 2, 3, 4)],
    result: "ok",
    failedIndex: 2,
    reason: null,
    injected: [],
    startTime: 0,
    durationUs: 100,
    ...overrides,
  };
}

describe("latencyBucket", () => {
  it("puts a value in the first bucket whose bound is at least the value", () => {
    assert.equal(latencyBucket(0), 0);
    assert.equal(latencyBucket(1), 0);
    assert.equal(latencyBucket(2), 1);
    assert.equal(latencyBucket(3), 2);
    assert.equal(latencyBucket(1024), 10);
    assert.equal(latencyBucket(1025), 11);
    assert.equal(latencyBucket(10_000_000), LATENCY_BOUNDS_US.length);
  });

  it("every value lies above the previous bound and at most its own (property)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 21 }), (us) => {
        const i = latencyBucket(us);
        const bound = LATENCY_BOUNDS_US[i];
        const previous = LATENCY_BOUNDS_US[i - 1] ?? -1;
        assert.ok(us > previous && (bound === undefined || us <= bound), `${us} in bucket ${i}`);
      }),
    );
  });

  it("the histogram counts, sums and keeps the maximum", () => {
    const h = new LatencyHistogram();
    for (const us of [1, 3, 3, 5000]) h.add(us);
    const s = h.snapshot();
    assert.equal(s.count, 4);
    assert.equal(s.sumUs, 5007);
    assert.equal(s.maxUs, 5000);
    assert.equal(s.counts[0], 1);
    assert.equal(s.counts[2], 2);
    assert.equal(s.counts[13], 1);
    assert.equal(s.counts.length, s.boundsUs.length + 1);
  });
});

describe("TransferCounters injected faults", () => {
  it("counts each message a fault was injected into, on its guest and its device", () => {
    const c = new TransferCounters();
    c.record(
      record({
        result: "nack",
        failedIndex: 0,
        injected: [{ index: 0, fault: "0x50: nack" }],
      }),
    );
    c.record(record({}));
    const { guests, devices } = c.snapshot();
    assert.deepEqual(
      guests.map((g) => g.injectedFaults),
      [1],
    );
    assert.deepEqual(
      devices.map((d) => [d.address, d.injectedFaults]),
      [["0x50", 1]],
    );
  });
});

describe("TransferCounters", () => {
  it("counts per guest and per device: transfers, messages, bytes, errors, NACKs", () => {
    const c = new TransferCounters();
    c.record(record({}));
    c.record(record({ guest: 1 }));
    c.record(
      record({
        guest: 1,
        messages: [
          { addr: 0x50, read: false, length: 2 },
          { addr: 0x48, read: true, length: 2 },
        ],
        data: [Uint8Array.of(1, 2), new Uint8Array()],
        result: "nack",
        failedIndex: 1,
      }),
    );
    c.record(
      record({
        bus: null,
        messages: [{ addr: 0x51, read: true, length: 1 }],
        data: [new Uint8Array()],
        result: "error",
        failedIndex: 0,
        reason: "address 0x51 not listed",
        durationUs: 0,
      }),
    );
    const { guests, devices } = c.snapshot();
    const pick = (x: {
      transfers: number;
      messages: number;
      bytesWritten: number;
      bytesRead: number;
      errors: number;
      nacks: number;
    }) => [x.transfers, x.messages, x.bytesWritten, x.bytesRead, x.errors, x.nacks];
    assert.deepEqual(
      guests.map((g) => [g.guest, ...pick(g), g.latencyUs.count]),
      [
        [0, 2, 2, 1, 4, 1, 0, 1],
        [1, 2, 3, 3, 4, 0, 1, 2],
      ],
    );
    assert.deepEqual(
      devices.map((d) => [d.address, d.bus, ...pick(d), d.latencyUs.count]),
      [
        ["0x48", "sim", 1, 0, 0, 0, 0, 1, 1],
        ["0x50", "sim", 3, 5, 4, 8, 0, 0, 3],
        ["0x51", null, 1, 0, 0, 0, 1, 0, 0],
      ],
    );
  });
});
