import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  popChain,
  RING_GPA,
  request,
  setupQueuePair,
  TABLE_GPA,
} from "../../test/helpers/virtqueue.js";
import { DriverPackedQueue } from "./driver-packed-queue.js";
import { DriverSplitQueue } from "./driver-split-queue.js";
import { createArrayGuestMemory } from "./guest-memory.js";
import { PackedQueue, WRAP_BIT } from "./packed-queue.js";
import { VirtqueueError } from "./queue.js";
import {
  availEventOffset,
  SplitQueue,
  usedEventOffset,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
} from "./split-queue.js";

function memory() {
  return createArrayGuestMemory([{ guestPhysAddr: 0x10000, size: 0x20000 }]);
}

function assertVirtqueueError(fn: () => unknown, code: string): void {
  assert.throws(fn, (error: unknown) => error instanceof VirtqueueError && error.code === code);
}

/** Reads descriptor `index` of the table at `tableGpa` as plain fields. */
function descriptorAt(driver: DriverSplitQueue, gpa: number) {
  const m = driver.memory;
  return {
    addr: m.readU64(gpa),
    len: m.readU32(gpa + 8),
    flags: m.readU16(gpa + 12),
    next: m.readU16(gpa + 14),
  };
}

describe("DriverSplitQueue layout", () => {
  it("puts avail right after the table and aligns used", () => {
    const driver = new DriverSplitQueue(memory(), 0x10000, 8, { eventIdx: true });
    assert.deepEqual(driver.addresses, { desc: 0x10000, avail: 0x10080, used: 0x10098 });
    assert.equal(driver.byteLength, 0x98 + 4 + 64 + 2);
    assert.equal(DriverSplitQueue.byteLength(8, { eventIdx: true }), driver.byteLength);
    const legacy = new DriverSplitQueue(memory(), 0x10000, 8, { usedAlign: 4096 });
    assert.equal(legacy.addresses.used, 0x11000);
    assert.equal(new DriverSplitQueue(memory(), 0x10000, 1).addresses.used, 0x10018);
  });

  it("starts both indices at the initial index and rejects bad parameters", () => {
    const m = memory();
    m.write(0x10000, new Uint8Array(0x200).fill(0xff));
    const driver = new DriverSplitQueue(m, 0x10000, 4, { eventIdx: true, initialIndex: 65530 });
    assert.equal(m.readU16(driver.addresses.avail + 2), 65530);
    assert.equal(m.readU16(driver.addresses.used + 2), 65530);
    assert.equal(m.readU16(driver.addresses.avail), 0, "flags cleared");
    assert.equal(m.readU16(driver.addresses.avail + usedEventOffset(4)), 65530);
    assert.equal(driver.numFree, 4);
    assertVirtqueueError(() => new DriverSplitQueue(m, 0x10008, 4), "EINVAL");
    assertVirtqueueError(() => new DriverSplitQueue(m, 0x10000, 6), "EINVAL");
    assertVirtqueueError(() => new DriverSplitQueue(m, 0x10000, 4, { usedAlign: 2 }), "EINVAL");
    assertVirtqueueError(
      () => new DriverSplitQueue(m, 0x10000, 4, { initialIndex: 65536 }),
      "EINVAL",
    );
    assertVirtqueueError(() => new DriverSplitQueue(m, 0x2ff00, 32), "EFAULT");
  });
});

describe("DriverSplitQueue.add", () => {
  it("links a direct chain through free descriptors and publishes it", () => {
    const driver = new DriverSplitQueue(memory(), 0x10000, 4);
    const head = driver.add([
      { gpa: 0x20000, len: 8, writable: false },
      { gpa: 0x20100, len: 1, writable: true },
    ]);
    assert.equal(head, 0);
    assert.deepEqual(descriptorAt(driver, 0x10000), {
      addr: 0x20000,
      len: 8,
      flags: VRING_DESC_F_NEXT,
      next: 1,
    });
    assert.deepEqual(descriptorAt(driver, 0x10010), {
      addr: 0x20100,
      len: 1,
      flags: VRING_DESC_F_WRITE,
      next: 0,
    });
    const m = driver.memory;
    assert.equal(m.readU16(driver.addresses.avail + 4), 0);
    assert.equal(m.readU16(driver.addresses.avail + 2), 1);
    assert.equal(driver.availIndex, 1);
    assert.equal(driver.numFree, 2);
  });

  it("uses one descriptor for an indirect table and returns null when full", () => {
    const driver = new DriverSplitQueue(memory(), 0x10000, 2);
    const buffers = [
      { gpa: 0x20000, len: 8, writable: false },
      { gpa: 0x20100, len: 2, writable: true },
      { gpa: 0x20200, len: 2, writable: true },
    ];
    assert.equal(driver.add(buffers), null, "three descriptors do not fit in two");
    const head = driver.add(buffers, { indirect: true, indirectGpa: 0x21000 });
    assert.equal(head, 0);
    assert.deepEqual(descriptorAt(driver, 0x10000), {
      addr: 0x21000,
      len: 48,
      flags: VRING_DESC_F_INDIRECT,
      next: 0,
    });
    assert.deepEqual(descriptorAt(driver, 0x21010), {
      addr: 0x20100,
      len: 2,
      flags: VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
      next: 2,
    });
    assert.equal(driver.numFree, 1);
    assertVirtqueueError(() => driver.add(buffers, { indirect: true }), "EINVAL");
    assertVirtqueueError(
      () => driver.add(buffers, { indirect: true, indirectGpa: 0x21004 }),
      "EINVAL",
    );
    assertVirtqueueError(() => driver.add([]), "EINVAL");
    assertVirtqueueError(() => driver.add([{ gpa: -1, len: 1, writable: false }]), "EINVAL");
    assert.equal(driver.numFree, 1, "failed adds take nothing");
  });
});

describe("DriverSplitQueue used ring", () => {
  it("frees a chain's descriptors when its head comes back and rejects unknown ids", () => {
    const driver = new DriverSplitQueue(memory(), 0x10000, 4);
    driver.add([
      { gpa: 0x20000, len: 8, writable: false },
      { gpa: 0x20000, len: 8, writable: true },
    ]);
    const m = driver.memory;
    const used = driver.addresses.used;
    m.writeU32(used + 4, 0);
    m.writeU32(used + 8, 5);
    m.writeU16(used + 2, 1);
    assert.equal(driver.deviceUsedIndex, 1);
    assert.deepEqual(driver.getUsed(), { head: 0, len: 5 });
    assert.equal(driver.numFree, 4);
    assert.equal(driver.getUsed(), null);
    m.writeU32(used + 12, 0);
    m.writeU16(used + 2, 2);
    assertVirtqueueError(() => driver.getUsed(), "EBADRING");
    m.writeU32(used + 20, 9);
    m.writeU16(used + 2, 3);
    assertVirtqueueError(() => driver.getUsed(), "EBADRING");
  });

  it("steers interrupts with avail.flags, or used_event with EVENT_IDX", () => {
    const plain = new DriverSplitQueue(memory(), 0x10000, 4);
    plain.disableCallbacks();
    assert.equal(plain.memory.readU16(plain.addresses.avail), 1);
    assert.equal(plain.enableCallbacks(), false);
    assert.equal(plain.memory.readU16(plain.addresses.avail), 0);

    const event = new DriverSplitQueue(memory(), 0x10000, 4, { eventIdx: true, initialIndex: 0 });
    const usedEvent = event.addresses.avail + usedEventOffset(4);
    event.disableCallbacks();
    assert.equal(event.memory.readU16(usedEvent), 65535);
    assert.equal(event.enableCallbacks(), false);
    assert.equal(event.memory.readU16(usedEvent), 0);
  });

  it("kicks only when the device asked for it", () => {
    const driver = new DriverSplitQueue(memory(), 0x10000, 4, { eventIdx: true });
    const availEvent = driver.addresses.used + availEventOffset(4);
    const buffer = [{ gpa: 0x20000, len: 1, writable: false }];
    driver.memory.writeU16(availEvent, 1);
    driver.add(buffer);
    assert.equal(driver.needsKick(), false, "avail_event 1 not reached by index 1");
    driver.add(buffer);
    assert.equal(driver.needsKick(), true);
  });
});

// Held chains (the closed loop's reuse): collected without freeing, handed out again unchanged, freed
// last. One scenario for both driver rings, against their device queues.
const HELD_KINDS = [
  {
    name: "split",
    setup: () =>
      setupQueuePair({ size: 4, eventIdx: true }, (m, size, common) => {
        const driver = new DriverSplitQueue(m, RING_GPA, size, { eventIdx: common.eventIdx });
        const device = new SplitQueue(m, size, driver.addresses, { ...common, lastAvailIndex: 0 });
        return { driver, device };
      }),
  },
  {
    name: "packed",
    setup: () =>
      setupQueuePair({ size: 4, eventIdx: true }, (m, size, common) => {
        const driver = new DriverPackedQueue(m, RING_GPA, size, { eventIdx: common.eventIdx });
        const device = new PackedQueue(m, size, driver.addresses, {
          ...common,
          lastAvailIndex: WRAP_BIT,
        });
        return { driver, device };
      }),
  },
] as const;

for (const kind of HELD_KINDS) {
  describe(`${kind.name} driver ring: held chains (getUsedInto, republish, release)`, () => {
    it("hands the same chains out again for many laps, out of order, then frees them", () => {
      const { driver, device } = kind.setup();
      const direct = driver.add(request);
      const indirect = driver.add(request, { indirect: true, indirectGpa: TABLE_GPA });
      assert.ok(direct !== null && indirect !== null);
      const free = driver.numFree;
      const used = { head: -1, len: -1 };
      for (let lap = 0; lap < 10; lap++) {
        const first = popChain(device);
        const second = popChain(device);
        assert.equal(device.pop(), null);
        for (const chain of [first, second]) {
          assert.deepEqual(
            chain.descriptors.map((d) => [d.addr, d.len, d.writable]),
            request.map((b) => [b.gpa, b.len, b.writable]),
            `lap ${lap}`,
          );
        }
        // The later chain first: completion order need not be submission order.
        device.pushUsed(second, 8 + lap);
        device.pushUsed(first, 1);
        const ids: number[] = [];
        while (driver.getUsedInto(used)) ids.push(used.head);
        assert.deepEqual(ids.sort(), [direct, indirect].sort());
        assert.equal(driver.numFree, free, "held chains keep their ring entries");
        assertVirtqueueError(() => driver.republish(99), "EINVAL");
        driver.republish(direct);
        assertVirtqueueError(() => driver.republish(direct), "EINVAL");
        driver.republish(indirect);
      }
      device.pushUsed(popChain(device), 1);
      device.pushUsed(popChain(device), 1);
      assert.ok(driver.getUsedInto(used));
      assert.ok(driver.getUsedInto(used));
      assert.equal(driver.getUsedInto(used), false);
      driver.release(direct);
      assertVirtqueueError(() => driver.release(direct), "EINVAL");
      driver.release(indirect);
      assert.equal(driver.numFree, 4);
      assert.notEqual(driver.add(request), null, "the freed entries are usable again");
      assert.notEqual(driver.add(request), null);
    });
  });
}

describe("DriverSplitQueue.getUsedInto", () => {
  it("throws EBADRING when the device returns a held chain again or an id never added", () => {
    const m = memory();
    const driver = new DriverSplitQueue(m, 0x10000, 4);
    const head = driver.add([{ gpa: 0x20000, len: 1, writable: true }]);
    assert.equal(head, 0);
    const used = driver.addresses.used;
    const pushUsed = (id: number) => {
      const index = m.readU16(used + 2);
      m.writeU32(used + 4 + 8 * (index % 4), id);
      m.writeU32(used + 8 + 8 * (index % 4), 1);
      m.writeU16(used + 2, (index + 1) & 0xffff);
    };
    const element = { head: -1, len: -1 };
    pushUsed(0);
    assert.ok(driver.getUsedInto(element));
    assert.deepEqual(element, { head: 0, len: 1 });
    pushUsed(0);
    assertVirtqueueError(() => driver.getUsedInto(element), "EBADRING");
    pushUsed(3);
    assertVirtqueueError(() => driver.getUsedInto(element), "EBADRING");
  });
});
