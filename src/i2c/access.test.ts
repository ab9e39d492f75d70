import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { GuardedBus, READ_ONLY_MAX_POINTER_BYTES, readOnlyViolation } from "./access.js";
import type { I2cBus, I2cMessage } from "./bus.js";

const RO = new Set([0x50]);
const w = (addr: number, ...bytes: number[]): I2cMessage => ({
  addr,
  read: false,
  buf: Uint8Array.from(bytes),
});
const r = (addr: number, length: number): I2cMessage => ({
  addr,
  read: true,
  buf: new Uint8Array(length),
});

/** An inner bus that records every transfer it is given. */
function recordingBus(kind: "sync" | "async"): I2cBus & { seen: I2cMessage[][] } {
  const seen: I2cMessage[][] = [];
  return {
    name: "inner",
    seen,
    transfer(msgs) {
      seen.push([...msgs]);
      return kind === "sync" ? msgs.length : Promise.resolve(msgs.length);
    },
    close() {},
  };
}

describe("readOnlyViolation", () => {
  it("allows reads, and a 1- or 2-byte register address followed by a read of the same device", () => {
    for (const msgs of [
      [r(0x50, 4)],
      [r(0x50, 0)],
      [w(0x50, 0x10), r(0x50, 8)],
      [w(0x50, 0x00, 0x10), r(0x50, 1)],
      [w(0x50, 0x10), r(0x50, 1), w(0x50, 0x20), r(0x50, 1)],
      [w(0x51, 1, 2, 3, 4), r(0x50, 1)], // 0x51 is writable
    ]) {
      assert.equal(readOnlyViolation(msgs, RO), null, JSON.stringify(msgs));
    }
  });

  it("refuses every other write to a read-only device", () => {
    const cases: [I2cMessage[], RegExp][] = [
      [[w(0x50, 0x10, 0xaa)], /not followed by a read/],
      [[w(0x50, 0x10)], /not followed by a read/],
      [[w(0x50)], /zero-length write/],
      [[w(0x50), r(0x50, 1)], /zero-length write/],
      [[w(0x50, 0x10, 0x20, 0x30), r(0x50, 1)], /write of 3 bytes/],
      [[w(0x50, 0x10), w(0x50, 0x10), r(0x50, 1)], /not followed by a read/],
      [[w(0x50, 0x10), r(0x51, 1)], /not followed by a read of it/],
      [[r(0x50, 1), w(0x50, 0x10, 0xaa)], /not followed by a read/],
    ];
    for (const [msgs, reason] of cases) assert.match(readOnlyViolation(msgs, RO) ?? "", reason);
  });

  it("property: a transfer with a write to a read-only device passes only in the allowed shape", () => {
    const message = fc.record({
      addr: fc.constantFrom(0x50, 0x51),
      read: fc.boolean(),
      buf: fc.uint8Array({ maxLength: 4 }),
    });
    fc.assert(
      fc.property(fc.array(message, { minLength: 1, maxLength: 4 }), (msgs) => {
        const allowed = msgs.every((m, i) => {
          if (m.read || m.addr !== 0x50) return true;
          const next = msgs[i + 1];
          return (
            m.buf.length >= 1 &&
            m.buf.length <= READ_ONLY_MAX_POINTER_BYTES &&
            next?.read === true &&
            next.addr === 0x50
          );
        });
        assert.equal(readOnlyViolation(msgs, RO) === null, allowed);
      }),
    );
  });
});

describe("GuardedBus", () => {
  it("a refused transfer never reaches the inner bus; an allowed one does, unchanged", async () => {
    const inner = recordingBus("async");
    const bus = new GuardedBus(inner, { readOnly: [0x50] });
    assert.equal(await bus.transfer([w(0x50, 0x10, 0xaa)]), 0);
    assert.equal(await bus.transfer([w(0x50)]), 0);
    assert.equal(inner.seen.length, 0);
    const allowed = [w(0x50, 0x10), r(0x50, 2)];
    assert.equal(await bus.transfer(allowed), 2);
    assert.equal(await bus.transfer([w(0x51, 1, 2, 3)]), 1);
    assert.deepEqual(inner.seen, [allowed, [w(0x51, 1, 2, 3)]]);
    assert.equal(bus.name, "inner");
  });

  it("stays asynchronous for an asynchronous bus, synchronous once the inner bus was", () => {
    const asyncBus = new GuardedBus(recordingBus("async"), { readOnly: [0x50] });
    assert.ok(asyncBus.transfer([w(0x50)]) instanceof Promise);
    const syncBus = new GuardedBus(recordingBus("sync"), { readOnly: [0x50] });
    assert.ok(syncBus.transfer([w(0x50)]) instanceof Promise, "unknown yet: the safe answer");
    assert.equal(syncBus.transfer([r(0x50, 1)]), 1);
    assert.equal(syncBus.transfer([w(0x50)]), 0);
  });

  it("abort fails transfers still running and refuses later ones", async () => {
    let finish: (n: number) => void = () => {};
    const inner: I2cBus = {
      name: "slow",
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
      transfer: () => Promise.reject(new Error("EIO")),
      close() {},
    });
    assert.equal(await bus.transfer([r(0x50, 1)]), 0);
    assert.equal(bus.inFlight, 0);
  });
});
