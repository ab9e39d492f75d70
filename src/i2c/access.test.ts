import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { r, w } from "../../test/helpers/i2c-messages.js";
import { GuardedBus, type PointerBytes, readOnlyViolation } from "./access.js";
import type { I2cBus, I2cMessage } from "./bus.js";

/** 0x50: read-only with an 8-bit register pointer; 0x57: read-only with a 16-bit word pointer. */
const RO = new Map<number, PointerBytes>([
  [0x50, 1],
  [0x57, 2],
]);
const RO_50 = new Map<number, PointerBytes>([[0x50, 1]]);

/** An inner bus that records every transfer it is given. */
function recordingBus(kind: "sync" | "async"): I2cBus & { seen: I2cMessage[][] } {
  const seen: I2cMessage[][] = [];
  return {
    name: "inner",
    synchronous: kind === "sync",
    seen,
    transfer(msgs) {
      seen.push([...msgs]);
      return kind === "sync" ? msgs.length : Promise.resolve(msgs.length);
    },
    close() {},
  };
}

describe("readOnlyViolation", () => {
  it("allows reads, and exactly the device's register pointer followed by a read of it", () => {
    for (const msgs of [
      [r(0x50, 4)],
      [r(0x50, 0)],
      [w(0x50, 0x10), r(0x50, 8)],
      [w(0x57, 0x00, 0x10), r(0x57, 1)],
      [w(0x50, 0x10), r(0x50, 1), w(0x50, 0x20), r(0x50, 1)],
      [w(0x51, 1, 2, 3, 4), r(0x50, 1)], // 0x51 is writable
    ]) {
      assert.equal(readOnlyViolation(msgs, RO), null, JSON.stringify(msgs));
    }
  });

  it("refuses every other write to a read-only device", () => {
    const cases: [I2cMessage[], RegExp][] = [
      [
        [w(0x50, 0x10, 0xaa)],
        /write of 2 bytes to read-only 0x50, whose register pointer is 1 byte/,
      ],
      [[w(0x50, 0x10)], /not followed by a read/],
      [[w(0x50)], /zero-length write/],
      [[w(0x50), r(0x50, 1)], /zero-length write/],
      [[w(0x50, 0x10, 0x20, 0x30), r(0x50, 1)], /write of 3 bytes/],
      [[w(0x50, 0x10), w(0x50, 0x10), r(0x50, 1)], /not followed by a read/],
      [[w(0x50, 0x10), r(0x51, 1)], /not followed by a read of it/],
      [[r(0x50, 1), w(0x50, 0x10, 0xaa)], /write of 2 bytes/],
      [
        [w(0x57, 0x00), r(0x57, 1)],
        /write of 1 byte to read-only 0x57, whose register pointer is 2 bytes/,
      ],
      [[w(0x57, 0x00, 0x10, 0xaa), r(0x57, 1)], /write of 3 bytes/],
      [[w(0x57, 0x00, 0x10)], /not followed by a read/],
    ];
    for (const [msgs, reason] of cases) assert.match(readOnlyViolation(msgs, RO) ?? "", reason);
  });

  it("a register address plus a data byte before a read is refused on an 8-bit-register device", () => {
    // The chip latches [reg, val] as a register write when the bytes are acknowledged; the repeated
    // start before the read does not undo it. Several such pairs fit in one transfer.
    assert.match(readOnlyViolation([w(0x50, 0x10, 0xab), r(0x50, 1)], RO) ?? "", /write of 2/);
    const chained = [0x20, 0x21, 0x22, 0x23].flatMap((reg) => [w(0x50, reg, 0x5a), r(0x50, 1)]);
    assert.match(readOnlyViolation(chained, RO) ?? "", /write of 2/);
  });

  it("property: a transfer with a write to a read-only device passes only in the allowed shape", () => {
    const message = fc.record({
      addr: fc.constantFrom(0x50, 0x51, 0x57),
      read: fc.boolean(),
      buf: fc.uint8Array({ maxLength: 4 }),
    });
    fc.assert(
      fc.property(fc.array(message, { minLength: 1, maxLength: 4 }), (msgs) => {
        const allowed = msgs.every((m, i) => {
          const pointerBytes = RO.get(m.addr);
          if (m.read || pointerBytes === undefined) return true;
          const next = msgs[i + 1];
          return m.buf.length === pointerBytes && next?.read === true && next.addr === m.addr;
        });
        assert.equal(readOnlyViolation(msgs, RO) === null, allowed);
      }),
    );
  });
});

describe("GuardedBus", () => {
  it("a refused transfer never reaches the inner bus; an allowed one does, unchanged", async () => {
    const inner = recordingBus("async");
    const bus = new GuardedBus(inner, { readOnly: RO_50 });
    assert.equal(await bus.transfer([w(0x50, 0x10, 0xaa)]), 0);
    assert.equal(await bus.transfer([w(0x50)]), 0);
    assert.equal(inner.seen.length, 0);
    const allowed = [w(0x50, 0x10), r(0x50, 2)];
    assert.equal(await bus.transfer(allowed), 2);
    assert.equal(await bus.transfer([w(0x51, 1, 2, 3)]), 1);
    assert.deepEqual(inner.seen, [allowed, [w(0x51, 1, 2, 3)]]);
    assert.equal(bus.name, "inner");
  });

  it("declares the inner bus's synchrony and refuses in its manner, also after abort", () => {
    const asyncBus = new GuardedBus(recordingBus("async"), { readOnly: RO_50 });
    assert.equal(asyncBus.synchronous, false);
    assert.ok(asyncBus.transfer([w(0x50)]) instanceof Promise);
    asyncBus.abort();
    assert.ok(asyncBus.transfer([r(0x50, 1)]) instanceof Promise);
    const syncBus = new GuardedBus(recordingBus("sync"), { readOnly: RO_50 });
    assert.equal(syncBus.synchronous, true);
    assert.equal(syncBus.transfer([w(0x50)]), 0, "a first refusal answers at once");
    assert.equal(syncBus.transfer([r(0x50, 1)]), 1);
    assert.equal(syncBus.transfer([w(0x50)]), 0);
    syncBus.abort();
    assert.equal(syncBus.transfer([r(0x50, 1)]), 0);
  });

  it("abort fails transfers still running and refuses later ones", async () => {
    let finish: (n: number) => void = () => {};
    const inner: I2cBus = {
      name: "slow",
      synchronous: false,
      transfer: () =>
        new Promise<number>((resolve) => {
          finish = resolve;
        }),
      close() {},
    };
    const bus = new GuardedBus(inner);
    const running = bus.transfer([r(0x50, 1)]);
    assert.equal(bus.inFlight, 1);
    bus.abort();
    assert.equal(await running, 0);
    assert.equal(bus.inFlight, 0);
    finish(1); // the late result is dropped
    assert.equal(await bus.transfer([r(0x50, 1)]), 0);
  });

  it("a rejecting inner bus becomes 0", async () => {
    const bus = new GuardedBus({
      name: "bad",
      synchronous: false,
      transfer: () => Promise.reject(new Error("EIO")),
      close() {},
    });
    assert.equal(await bus.transfer([r(0x50, 1)]), 0);
    assert.equal(bus.inFlight, 0);
  });
});
