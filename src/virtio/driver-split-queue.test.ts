import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DriverSplitQueue } from "./driver-split-queue.js";
import { createArrayGuestMemory } from "./guest-memory.js";
import { VirtqueueError } from "./queue.js";
import {
  availEventOffset,
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
