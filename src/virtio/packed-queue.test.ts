import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  assertVirtqueueError,
  DATA_GPA,
  GAP_GPA,
  HIGH_REGION,
  popChain,
  type QueuePair,
  type QueueSetupOptions,
  queueOp,
  RING_GPA,
  request,
  runQueueOps,
  setupQueuePair,
  TABLE_GPA,
} from "../../test/helpers/virtqueue.js";
import { DriverPackedQueue, type RawPackedDescriptorFields } from "./driver-packed-queue.js";
import type { DriverBuffer } from "./driver-split-queue.js";
import { createArrayGuestMemory } from "./guest-memory.js";
import {
  availFlags,
  checkPackedQueueSize,
  isAvailable,
  isUsed,
  PACKED_DESC_FLAGS,
  PackedQueue,
  packedNeedEvent,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  recoverUsedPosition,
  usedFlags,
  VRING_PACKED_DESC_F_AVAIL,
  VRING_PACKED_DESC_F_USED,
  WRAP_BIT,
} from "./packed-queue.js";
import { CHAIN_ERROR, type ChainErrorKind, type DescriptorChain, VirtqueueError } from "./queue.js";
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from "./split-queue.js";

type Setup = QueuePair<DriverPackedQueue, PackedQueue>;

function setup(options: QueueSetupOptions = {}): Setup {
  return setupQueuePair(options, (memory, size, common) => {
    const driver = new DriverPackedQueue(memory, RING_GPA, size, { eventIdx: common.eventIdx });
    // A fresh ring, as QEMU starts it: both wrap counters 1.
    const device = new PackedQueue(memory, size, driver.addresses, {
      ...common,
      lastAvailIndex: WRAP_BIT,
    });
    return { driver, device };
  });
}

const asDescriptors = (buffers: readonly DriverBuffer[]) =>
  buffers.map(({ gpa, len, writable }) => ({ addr: gpa, len, writable }));

describe("PackedQueue round trips", () => {
  it("pops what the driver added and returns it through the ring", () => {
    const { memory, driver, device } = setup();
    memory.write(DATA_GPA, new TextEncoder().encode("hello, device!!!"));
    const id = driver.add(request);
    assert.equal(id, 0);
    const chain = popChain(device);
    assert.deepEqual(chain, { head: 0, descriptors: asDescriptors(request), error: null });
    assert.equal(device.pop(), null);
    assert.equal(device.inFlight, 1);
    assert.equal(device.lastAvailIndex, WRAP_BIT | 2);
    memory.writeU32(DATA_GPA + 0x100, 42);
    device.pushUsed(chain, 4);
    assert.equal(device.inFlight, 0);
    // One used element, and the used position skips both slots of the chain.
    assert.equal(device.usedIndex, WRAP_BIT | 2);
    assert.equal(driver.numFree, 6);
    assert.deepEqual(driver.getUsed(), { head: 0, len: 4 });
    assert.equal(driver.getUsed(), null);
    assert.equal(driver.numFree, 8);
    assert.equal(memory.readU32(DATA_GPA + 0x100), 42);
  });

  it("flattens an indirect table into the chain, one ring slot", () => {
    const { driver, device } = setup();
    const buffers = [...request, { gpa: HIGH_REGION, len: 1, writable: true }];
    const id = driver.add(buffers, { indirect: true, indirectGpa: TABLE_GPA });
    assert.equal(driver.numFree, 7);
    const chain = popChain(device);
    assert.equal(chain.head, id);
    assert.equal(chain.error, null);
    assert.deepEqual(chain.descriptors, asDescriptors(buffers));
    assert.equal(device.lastAvailIndex, WRAP_BIT | 1);
    device.pushUsed(chain, 0);
    assert.deepEqual(driver.getUsed(), { head: id, len: 0 });
    assert.equal(driver.numFree, 8);
  });

  it("reads an indirect table that crosses a window edge", () => {
    const { driver, device } = setup();
    const tableGpa = 0x10000 - 16;
    const id = driver.add(request, { indirect: true, indirectGpa: tableGpa });
    const chain = popChain(device);
    assert.equal(chain.head, id);
    assert.deepEqual(chain.descriptors, asDescriptors(request));
  });

  it("completes chains out of order and writes used elements in used-position order", () => {
    const { driver, device } = setup();
    const a = driver.add(request)!;
    const b = driver.add([request[0]!])!;
    const chainA = popChain(device);
    const chainB = popChain(device);
    device.pushUsed(chainB, 1);
    device.pushUsed(chainA, 2);
    assert.deepEqual(driver.getUsed(), { head: b, len: 1 });
    assert.deepEqual(driver.getUsed(), { head: a, len: 2 });
    assert.equal(driver.numFree, 8);
    assert.equal(device.usedIndex, device.lastAvailIndex);
  });

  it("walks chains across the ring end and flips both wrap counters, for many laps and sizes", () => {
    for (const size of [1, 2, 3, 4, 5, 7, 8, 13, 64, 255, 256, 1000, 1024]) {
      const { driver, device } = setup({ size });
      const length = Math.min(3, size);
      const buffers = [request[0]!, request[0]!, request[1]!].slice(3 - length);
      let wrapsSeen = 0;
      let lastWrap = true;
      const rounds = Math.max(40, (3 * size) / length + 3);
      for (let round = 0; round < rounds; round++) {
        const id = driver.add(buffers);
        assert.notEqual(id, null, `size ${size} round ${round}`);
        const chain = popChain(device);
        assert.equal(chain.head, id);
        assert.equal(chain.error, null);
        assert.deepEqual(chain.descriptors, asDescriptors(buffers));
        assert.equal(device.pop(), null);
        device.pushUsed(chain, round);
        assert.deepEqual(driver.getUsed(), { head: id, len: round });
        const wrap = (device.lastAvailIndex & WRAP_BIT) !== 0;
        if (wrap !== lastWrap) wrapsSeen++;
        lastWrap = wrap;
        assert.equal(device.usedIndex, device.lastAvailIndex);
        assert.equal(driver.lastUsedIndex, device.usedIndex);
      }
      assert.ok(wrapsSeen >= 2, `size ${size}: ${wrapsSeen} wraps`);
      assert.equal(driver.numFree, size);
    }
  });

  it("rewinds popped chains so they are popped again, across the wrap", () => {
    const { driver, device } = setup({ size: 3 });
    // Move the positions to slot 2 so the next chains straddle the ring end.
    const first = driver.add(request)!;
    device.pushUsed(popChain(device), 0);
    assert.deepEqual(driver.getUsed(), { head: first, len: 0 });
    const a = driver.add(request)!;
    const b = driver.add([request[0]!])!;
    const chainA = popChain(device);
    const chainB = popChain(device);
    assert.equal(device.lastAvailIndex, 2);
    device.rewind(2);
    assert.equal(device.inFlight, 0);
    assert.equal(device.lastAvailIndex, WRAP_BIT | 2);
    assert.deepEqual(popChain(device), chainA);
    assert.deepEqual(popChain(device), chainB);
    assertVirtqueueError(() => device.rewind(3), "EINVAL");
    device.rewind(1);
    const again = popChain(device);
    assert.equal(again.head, b);
    device.pushUsed(again, 0);
    const last = device.pop();
    assert.equal(last, null);
    assert.equal(a, chainA.head);
  });

  it("refuses to push a chain that is not in flight", () => {
    const { driver, device } = setup();
    driver.add(request);
    const chain = popChain(device);
    assertVirtqueueError(() => device.pushUsed({ ...chain }, 0), "EINVAL");
    device.pushUsed(chain, 0);
    assertVirtqueueError(() => device.pushUsed(chain, 0), "EINVAL");
    driver.add(request);
    const next = popChain(device);
    assertVirtqueueError(() => device.pushUsed(next, -1), "EINVAL");
    assertVirtqueueError(() => device.pushUsed(next, 2 ** 32), "EINVAL");
  });
});

describe("PackedQueue construction", () => {
  it("accepts any size in 1..32768, power of two or not", () => {
    for (const size of [1, 3, 5, 100, 1023, 32768]) checkPackedQueueSize(size);
    for (const size of [0, -1, 1.5, 32769]) {
      assertVirtqueueError(() => checkPackedQueueSize(size), "EINVAL");
    }
  });

  it("checks alignment, positions and that the areas lie in guest memory", () => {
    const { memory, driver } = setup();
    const make = (addresses: { desc: number; driver: number; device: number }, base = WRAP_BIT) =>
      new PackedQueue(memory, 8, addresses, {
        eventIdx: false,
        indirect: false,
        lastAvailIndex: base,
        notify: () => undefined,
      });
    make(driver.addresses);
    assertVirtqueueError(() => make({ ...driver.addresses, desc: 8 }), "EINVAL");
    assertVirtqueueError(() => make({ ...driver.addresses, driver: 2 }), "EINVAL");
    assertVirtqueueError(() => make({ ...driver.addresses, device: 0x8002 }), "EINVAL");
    assertVirtqueueError(() => make({ ...driver.addresses, desc: GAP_GPA - 64 }), "EFAULT");
    assertVirtqueueError(() => make({ ...driver.addresses, device: GAP_GPA }), "EFAULT");
    assertVirtqueueError(() => make(driver.addresses, 8), "EINVAL");
    assertVirtqueueError(() => make(driver.addresses, 0x10000), "EINVAL");
  });

  it("starts from the base: avail and used positions with their wrap counters", () => {
    const { memory, driver } = setup({ size: 4 });
    // Let the driver run three slots ahead, then give the device a base at that point.
    const id = driver.add([request[0]!, request[0]!, request[0]!])!;
    const device = new PackedQueue(memory, 4, driver.addresses, {
      eventIdx: false,
      indirect: false,
      lastAvailIndex: WRAP_BIT,
      usedIndex: WRAP_BIT,
      notify: () => undefined,
    });
    const chain = popChain(device);
    assert.equal(chain.head, id);
    assert.equal(device.vringBase, (WRAP_BIT | 3 | (WRAP_BIT << 16)) >>> 0);
    device.pushUsed(chain, 0);
    assert.equal(device.vringBase, (WRAP_BIT | 3 | ((WRAP_BIT | 3) << 16)) >>> 0);
  });

  it("remaps to new memory and keeps the old one when the rings are missing", () => {
    const { memory, driver, device } = setup();
    const elsewhere = createArrayGuestMemory([{ guestPhysAddr: 0x200000, size: 0x1000 }]);
    assertVirtqueueError(() => device.remap(elsewhere), "EFAULT");
    assert.equal(device.memory, memory);
    driver.add(request);
    const same = createArrayGuestMemory([{ guestPhysAddr: 0, size: 0x1000 }]);
    device.remap(same);
    assert.equal(device.memory, same);
    // The new memory has no descriptor: nothing available there.
    assert.equal(device.pop(), null);
  });
});

describe("PackedQueue notifications without EVENT_IDX", () => {
  it("signals once per batch unless the driver disabled interrupts", () => {
    const { driver, device, notifications } = setup();
    driver.add(request);
    driver.add(request);
    device.pushUsed(popChain(device), 0);
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 1);
    device.notify();
    assert.equal(notifications(), 1, "nothing used since the last notify");
    driver.disableCallbacks();
    driver.add(request);
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 1);
    assert.equal(driver.enableCallbacks(), true, "a used element is waiting");
    driver.add(request);
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 2);
  });

  it("with NOTIFY_ON_EMPTY signals when the queue runs dry despite DISABLE", () => {
    const { driver, device, notifications } = setup({ notifyOnEmpty: true });
    driver.disableCallbacks();
    driver.add(request);
    driver.add(request);
    const a = popChain(device);
    device.pushUsed(a, 0);
    device.notify();
    assert.equal(notifications(), 0, "one chain still in the ring");
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 1);
  });

  it("disables kicks through the device event flags and reports buffers added meanwhile", () => {
    const { driver, device } = setup();
    device.disableNotifications();
    assert.equal(driver.deviceEventSuppression().flags, RING_EVENT_FLAGS_DISABLE);
    driver.add(request);
    assert.equal(driver.needsKick(), false);
    assert.equal(device.enableNotifications(), true);
    assert.equal(driver.deviceEventSuppression().flags, RING_EVENT_FLAGS_ENABLE);
    device.pushUsed(popChain(device), 0);
    assert.equal(device.enableNotifications(), false);
    driver.add(request);
    assert.equal(driver.needsKick(), true);
    assert.equal(driver.needsKick(), false, "nothing added since the last decision");
  });
});

describe("PackedQueue notifications with EVENT_IDX", () => {
  it("packedNeedEvent signals iff off_wrap was passed, across the wrap", () => {
    const at = (index: number, wrap: boolean) => ({ index, wrap });
    // Size 8, moved from 2 to 5 in lap 1: events 2, 3, 4 passed; 5 not.
    assert.equal(packedNeedEvent(WRAP_BIT | 2, at(5, true), 3, 8), true);
    assert.equal(packedNeedEvent(WRAP_BIT | 4, at(5, true), 3, 8), true);
    assert.equal(packedNeedEvent(WRAP_BIT | 5, at(5, true), 3, 8), false);
    assert.equal(packedNeedEvent(WRAP_BIT | 1, at(5, true), 3, 8), false);
    // Moved from 6 (lap 1) to 1 (lap 0): events 6, 7 of lap 1 and 0 of lap 0 passed.
    assert.equal(packedNeedEvent(WRAP_BIT | 6, at(1, false), 3, 8), true);
    assert.equal(packedNeedEvent(WRAP_BIT | 7, at(1, false), 3, 8), true);
    assert.equal(packedNeedEvent(0, at(1, false), 3, 8), true);
    assert.equal(packedNeedEvent(1, at(1, false), 3, 8), false);
    assert.equal(packedNeedEvent(WRAP_BIT | 5, at(1, false), 3, 8), false);
    assert.equal(packedNeedEvent(WRAP_BIT | 5, at(1, false), 8, 8), true, "a whole ring");
  });

  it("signals when off_wrap is passed and stays quiet until the driver catches up", () => {
    const { driver, device, notifications } = setup({ eventIdx: true });
    // First decision after construction signals whatever off_wrap says.
    driver.setDriverEvent(WRAP_BIT | 7, RING_EVENT_FLAGS_DESC);
    driver.add([request[0]!]);
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 1);
    // The driver wants to hear about slot 3 only.
    driver.setDriverEvent(WRAP_BIT | 3, RING_EVENT_FLAGS_DESC);
    for (let i = 0; i < 2; i++) {
      driver.add([request[0]!]);
      device.pushUsed(popChain(device), 0);
      device.notify();
    }
    assert.equal(notifications(), 1, "slots 1 and 2 used");
    driver.add([request[0]!]);
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 2, "slot 3 used");
    driver.add([request[0]!]);
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 2);
  });

  it("follows the driver's own off_wrap updates through getUsed and enableCallbacks", () => {
    const { driver, device, notifications } = setup({ eventIdx: true, size: 3 });
    let expected = 0;
    for (let round = 0; round < 10; round++) {
      assert.equal(driver.enableCallbacks(), false);
      driver.add([request[0]!]);
      device.pushUsed(popChain(device), round);
      device.notify();
      expected++;
      assert.equal(notifications(), expected, `round ${round}`);
      assert.deepEqual(driver.getUsed()?.len, round);
    }
  });

  it("asks for a kick through off_wrap and DESC, and DISABLE while disabled", () => {
    const { driver, device } = setup({ eventIdx: true, size: 4 });
    device.disableNotifications();
    assert.equal(driver.deviceEventSuppression().flags, RING_EVENT_FLAGS_DISABLE);
    driver.add([request[0]!]);
    assert.equal(driver.needsKick(), false);
    assert.equal(device.enableNotifications(), true);
    device.pushUsed(popChain(device), 0);
    assert.equal(device.enableNotifications(), false);
    assert.deepEqual(driver.deviceEventSuppression(), {
      offWrap: WRAP_BIT | 1,
      flags: RING_EVENT_FLAGS_DESC,
    });
    driver.add([request[0]!, request[0]!]);
    assert.equal(driver.needsKick(), true, "slot 1 made available");
    driver.add([request[0]!]);
    assert.equal(driver.needsKick(), false, "the device has not caught up");
  });
});

describe("PackedQueue malformed chains", () => {
  interface Case {
    name: string;
    kind: ChainErrorKind;
    indirect?: boolean;
    /** The chain as the driver writes it into the ring. */
    chain: RawPackedDescriptorFields[];
    table?: RawPackedDescriptorFields[];
  }
  const buf = (flags = 0, len = 8, addr: number | bigint = DATA_GPA, id = 5) => ({
    addr,
    len,
    id,
    flags,
  });
  const indirectTo = (len: number, addr: number | bigint = TABLE_GPA, flags = 0) =>
    buf(VRING_DESC_F_INDIRECT | flags, len, addr);
  const cases: Case[] = [
    {
      name: "indirect without the feature",
      kind: CHAIN_ERROR.indirectNotNegotiated,
      indirect: false,
      chain: [indirectTo(16)],
      table: [buf()],
    },
    {
      name: "indirect inside indirect",
      kind: CHAIN_ERROR.nestedIndirect,
      chain: [indirectTo(32)],
      table: [buf(), indirectTo(16, TABLE_GPA + 0x100)],
    },
    {
      name: "indirect with NEXT",
      kind: CHAIN_ERROR.indirectWithNext,
      chain: [indirectTo(16, TABLE_GPA, VRING_DESC_F_NEXT), buf()],
      table: [buf()],
    },
    { name: "indirect length 0", kind: CHAIN_ERROR.indirectBadLength, chain: [indirectTo(0)] },
    { name: "indirect length 17", kind: CHAIN_ERROR.indirectBadLength, chain: [indirectTo(17)] },
    {
      name: "indirect table outside memory",
      kind: CHAIN_ERROR.indirectOutsideMemory,
      chain: [indirectTo(32, GAP_GPA - 16)],
    },
    {
      name: "indirect table past 2^53",
      kind: CHAIN_ERROR.indirectOutsideMemory,
      chain: [indirectTo(16, 1n << 60n)],
    },
    { name: "zero-length buffer", kind: CHAIN_ERROR.zeroLength, chain: [buf(0, 0)] },
    {
      name: "zero-length buffer in a table",
      kind: CHAIN_ERROR.zeroLength,
      chain: [indirectTo(32)],
      table: [buf(), buf(VRING_DESC_F_WRITE, 0)],
    },
    {
      name: "readable after writable",
      kind: CHAIN_ERROR.readableAfterWritable,
      chain: [buf(VRING_DESC_F_WRITE | VRING_DESC_F_NEXT), buf()],
    },
    {
      name: "readable after writable in a table",
      kind: CHAIN_ERROR.readableAfterWritable,
      chain: [indirectTo(32)],
      table: [buf(VRING_DESC_F_WRITE), buf()],
    },
    {
      name: "buffer outside memory",
      kind: CHAIN_ERROR.bufferOutsideMemory,
      chain: [buf(0, 0x100, GAP_GPA - 0x10)],
    },
    {
      name: "buffer past 2^53",
      kind: CHAIN_ERROR.bufferOutsideMemory,
      chain: [buf(0, 8, 1n << 63n)],
    },
    {
      name: "a chain with NEXT on every slot",
      kind: CHAIN_ERROR.loop,
      chain: Array.from({ length: 8 }, () => buf(VRING_DESC_F_NEXT)),
    },
  ];

  for (const c of cases) {
    it(`reports ${c.name} as "${c.kind}", skips the chain and still returns it`, () => {
      const { driver, device } = setup({ indirect: c.indirect ?? true });
      for (const [i, fields] of (c.table ?? []).entries())
        driver.writeDescriptorAt(TABLE_GPA + 16 * i, fields);
      driver.publishChain(c.chain);
      const chain = popChain(device);
      assert.ok(chain.error?.startsWith(`${c.kind}: `), `got ${chain.error}`);
      assert.equal(chain.head, c.chain[c.chain.length - 1]!.id);
      // The device skipped the whole chain: what follows is popped cleanly (unless the ring is full).
      const next = driver.add([request[0]!]);
      if (c.chain.length < 8) {
        const after = popChain(device);
        assert.equal(after.head, next);
        assert.equal(after.error, null);
        device.pushUsed(after, 0);
      }
      device.pushUsed(chain, 0);
      const used = [driver.getUsed(), driver.getUsed()].filter((u) => u !== null);
      assert.ok(used.some((u) => u.head === chain.head));
    });
  }

  it("reports a chain longer than 2^32 bytes", () => {
    // A queue large enough that 4097 descriptors are within the chain length limit (its size).
    const memory = createArrayGuestMemory([{ guestPhysAddr: 0, size: 0x200000 }]);
    const driver = new DriverPackedQueue(memory, 0, 8192);
    const device = new PackedQueue(memory, 8192, driver.addresses, {
      eventIdx: false,
      indirect: true,
      lastAvailIndex: WRAP_BIT,
      notify: () => {},
    });
    const table = 0x100000;
    for (const count of [4096, 4097]) {
      for (let i = 0; i < count; i++) driver.writeDescriptorAt(table + 16 * i, buf(0, 0x100000, 0));
      driver.publishChain([indirectTo(16 * count, table)]);
      const chain = popChain(device);
      if (count === 4096) assert.equal(chain.error, null);
      else assert.ok(chain.error?.startsWith(`${CHAIN_ERROR.totalTooLong}: `), `${chain.error}`);
      device.pushUsed(chain, 0);
    }
  });

  it("takes the buffer id from the last descriptor of the chain", () => {
    const { driver, device } = setup();
    driver.publishChain([buf(VRING_DESC_F_NEXT, 8, DATA_GPA, 1), buf(0, 8, DATA_GPA, 6)]);
    assert.equal(popChain(device).head, 6);
  });

  it("throws EBADRING when the driver republishes a slot in flight, and keeps throwing", () => {
    const { driver, device } = setup({ size: 2 });
    driver.add([request[0]!]);
    driver.add([request[0]!]);
    popChain(device);
    popChain(device);
    // Every slot is the device's; a driver that flips the flags again breaks the ring.
    driver.writeDescriptor(0, buf(VRING_PACKED_DESC_F_USED, 8, DATA_GPA, 9));
    assertVirtqueueError(() => device.pop(), "EBADRING");
    assertVirtqueueError(() => device.pop(), "EBADRING");
    assert.equal(device.broken, true);
    assert.equal(device.enableNotifications(), false);
  });

  it("ignores a used or never-written descriptor at the avail position", () => {
    const { driver, device } = setup();
    driver.writeDescriptor(0, buf(VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED));
    assert.equal(device.pop(), null);
    driver.writeDescriptor(0, buf(0));
    assert.equal(device.pop(), null);
  });
});

describe("PackedQueue chain length limit", () => {
  const entry = (id = 0) => ({ addr: DATA_GPA, len: 8, id, flags: 0 });
  const indirect = (count: number, id: number) => ({
    addr: TABLE_GPA,
    len: 16 * count,
    id,
    flags: VRING_DESC_F_INDIRECT,
  });
  const writeTable = (driver: DriverPackedQueue, count: number) => {
    for (let i = 0; i < count; i++) driver.writeDescriptorAt(TABLE_GPA + 16 * i, entry());
  };

  it("takes a table of queue-size entries and refuses one more, ring descriptors included", () => {
    const { driver, device } = setup({ size: 8 });
    writeTable(driver, 9);
    driver.publishChain([indirect(8, 1)]);
    const whole = popChain(device);
    assert.equal(whole.error, null);
    assert.equal(whole.descriptors.length, 8);
    device.pushUsed(whole, 0);
    driver.publishChain([indirect(9, 2)]);
    const long = popChain(device);
    assert.equal(long.error, `${CHAIN_ERROR.tooManyDescriptors}: more than 8 (table of 9)`);
    assert.equal(long.descriptors.length, 0, "a table too long is refused unread");
    device.pushUsed(long, 0);
    driver.publishChain([{ ...entry(), flags: VRING_DESC_F_NEXT }, indirect(8, 3)]);
    assert.equal(
      popChain(device).error,
      `${CHAIN_ERROR.tooManyDescriptors}: more than 8 (table of 8)`,
    );
  });

  it("refuses a chain past the device's limit, and direct chains past it too", () => {
    const { driver, device } = setup({ size: 8, maxChainLength: 3 });
    writeTable(driver, 4);
    driver.publishChain([indirect(4, 1)]);
    const long = popChain(device);
    assert.ok(long.error?.startsWith(`${CHAIN_ERROR.tooManyDescriptors}: `), `${long.error}`);
    device.pushUsed(long, 0);
    const next = { ...entry(), flags: VRING_DESC_F_NEXT };
    driver.publishChain([next, next, next, entry(2)]);
    const direct = popChain(device);
    assert.equal(direct.error, `${CHAIN_ERROR.tooManyDescriptors}: more than 3`);
    assert.equal(direct.head, 2, "skipped to the chain's end: the id of its last slot");
    device.pushUsed(direct, 0);
    assert.equal(device.pop(), null);
  });
});

describe("PackedQueue properties", () => {
  it("device and driver agree: every chain comes back once with its id, every slot is freed", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 17 }),
        fc.boolean(),
        fc.array(queueOp, { maxLength: 150 }),
        (size, eventIdx, ops) => {
          const { driver, device } = setup({ size, eventIdx });
          runQueueOps(driver, device, size, ops);
          assert.equal(driver.lastUsedIndex, device.usedIndex);
        },
      ),
    );
  });

  it("never misses a kick: after enableNotifications, a driver told not to kick left nothing behind", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 9 }),
        fc.boolean(),
        fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 80 }),
        (size, eventIdx, adds) => {
          const { driver, device } = setup({ size, eventIdx });
          for (const count of adds) {
            // Device: done with the ring, notifications back on; driver adds, then decides.
            const pendingAtEnable = device.enableNotifications();
            assert.equal(pendingAtEnable, false);
            for (let i = 0; i < count; i++) driver.add([request[0]!]);
            const kicked = driver.needsKick();
            if (count > 0 && driver.numFree < size) assert.ok(kicked, "added work without a kick");
            device.disableNotifications();
            for (let chain = device.pop(); chain !== null; chain = device.pop()) {
              device.pushUsed(chain, 1);
            }
            while (driver.getUsed() !== null);
          }
        },
      ),
    );
  });

  it("survives random descriptor rings and tables: chain errors or EBADRING, nothing else", () => {
    const u64 = fc.oneof(
      fc.integer({ min: 0, max: 0x40000 }).map(BigInt),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    );
    const descriptor = fc.record({
      addr: u64,
      len: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.constantFrom(16, 32, 0xffffffff)),
      id: fc.integer({ min: 0, max: 0xffff }),
      flags: fc.integer({ min: 0, max: 0xffff }),
    });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 9 }),
        fc.boolean(),
        fc.array(descriptor, { minLength: 9, maxLength: 9 }),
        fc.array(descriptor, { maxLength: 8 }),
        (size, indirect, ring, table) => {
          const { driver, device } = setup({ size, indirect });
          for (const [i, fields] of table.entries())
            driver.writeDescriptorAt(TABLE_GPA + 16 * i, fields);
          for (const [i, fields] of ring.slice(0, size).entries())
            driver.writeDescriptor(i, fields);
          const popped: DescriptorChain[] = [];
          try {
            for (let chain = device.pop(); chain !== null; chain = device.pop()) {
              popped.push(chain);
              if (popped.length > size) assert.fail("more chains than slots");
            }
          } catch (error) {
            assert.ok(error instanceof VirtqueueError && error.code === "EBADRING", String(error));
          }
          for (const chain of popped) device.pushUsed(chain, 0);
          assert.equal(device.inFlight, 0);
        },
      ),
    );
  });
});

describe("PackedQueue used descriptors", () => {
  it("writes flags last with the used wrap counter and WRITE when data was written", () => {
    const { memory, driver, device } = setup({ size: 1 });
    for (const [round, wrap] of [
      [0, true],
      [1, false],
      [2, true],
    ] as const) {
      driver.add([request[0]!]);
      device.pushUsed(popChain(device), round);
      const flags = memory.readU16(RING_GPA + PACKED_DESC_FLAGS);
      const usedBits = VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED;
      assert.equal(flags & usedBits, wrap ? usedBits : 0);
      assert.equal((flags & VRING_DESC_F_WRITE) !== 0, round > 0);
      assert.equal(driver.getUsed()?.len, round);
    }
  });
});

describe("PackedQueue.ringSlots", () => {
  it("counts the ring descriptors a chain used: one for an indirect one", () => {
    const { driver, device } = setup();
    const buffers = [...request, { gpa: DATA_GPA + 0x200, len: 4, writable: true }];
    driver.add(buffers);
    driver.add(buffers, { indirect: true, indirectGpa: TABLE_GPA });
    const direct = popChain(device);
    const indirect = popChain(device);
    assert.equal(direct.descriptors.length, 3);
    assert.equal(indirect.descriptors.length, 3);
    assert.equal(device.ringSlots(direct), 3);
    assert.equal(device.ringSlots(indirect), 1);
    assert.equal(driver.numFree, 8 - 3 - 1, "what the driver gave up");
    assert.equal(device.inFlightSlots, 4);
    device.rewind(1);
    assert.equal(device.inFlightSlots, 3);
    assertVirtqueueError(() => device.ringSlots(indirect), "EINVAL");
    device.pushUsed(direct, 0);
    assertVirtqueueError(() => device.ringSlots(direct), "EINVAL");
    assert.equal(device.ringSlots(popChain(device)), 1, "popped again after the rewind");
  });
});

/**
 * A position log word that lets a test look at the ring each time the queue writes the word, and
 * can "crash" the queue right after a write (the element it announces is then never written).
 */
class WatchedLog extends DataView<ArrayBuffer> {
  /** Every word written, in order. */
  readonly words: number[] = [];
  onWrite: ((word: number) => void) | null = null;
  crashOnWrite = false;

  constructor() {
    super(new ArrayBuffer(16));
  }

  override setUint32(offset: number, value: number, littleEndian?: boolean): void {
    this.onWrite?.(value);
    super.setUint32(offset, value, littleEndian);
    this.words.push(value);
    if (this.crashOnWrite) throw new Error("crash");
  }
}

const LOG_OFFSET = 4;
const logWord = (from: number, to: number) => (from | (to << 16)) >>> 0;

/** A fresh pair whose device logs its used position in a WatchedLog; restart builds a new device. */
function loggedSetup(size: number) {
  const log = new WatchedLog();
  const usedLog = { view: log, offset: LOG_OFFSET };
  const pair = setupQueuePair({ size }, (memory, size, common) => {
    const driver = new DriverPackedQueue(memory, RING_GPA, size, { eventIdx: common.eventIdx });
    const device = new PackedQueue(memory, size, driver.addresses, {
      ...common,
      lastAvailIndex: WRAP_BIT,
      usedLog,
    });
    return { driver, device };
  });
  const flagsAt = (index: number) =>
    pair.memory.readU16(pair.driver.addresses.desc + 16 * index + PACKED_DESC_FLAGS);
  return {
    ...pair,
    log,
    flagsAt,
    word: () => log.getUint32(LOG_OFFSET, true),
    /** The used position a restart recovers from the log and the ring. */
    recover: () => recoverUsedPosition(log.getUint32(LOG_OFFSET, true), size, flagsAt),
    /** The device a restart builds: both positions at `position`, the same log. */
    restart: (position: number) =>
      new PackedQueue(pair.memory, size, pair.driver.addresses, {
        eventIdx: false,
        indirect: true,
        lastAvailIndex: position,
        usedIndex: position,
        usedLog,
        notify: () => undefined,
      }),
  };
}

/** `count` one-slot buffers: a chain taking `count` ring slots. */
const chainOf = (count: number): DriverBuffer[] =>
  Array.from({ length: count }, (_, i) => ({ gpa: DATA_GPA + 0x40 * i, len: 8, writable: i > 0 }));

/** Heads the driver added and has not seen used yet; `collect` fails on a head seen twice. */
function outstandingChains(driver: DriverPackedQueue) {
  const outstanding = new Set<number>();
  return {
    add(buffers: readonly DriverBuffer[]): number {
      const head = driver.add(buffers);
      assert.notEqual(head, null, "the ring has room");
      outstanding.add(head as number);
      return head as number;
    },
    collect(): number[] {
      const heads: number[] = [];
      for (let used = driver.getUsed(); used !== null; used = driver.getUsed()) {
        assert.ok(outstanding.delete(used.head), `head ${used.head} used twice or never added`);
        heads.push(used.head);
      }
      return heads;
    },
    get size() {
      return outstanding.size;
    },
  };
}

describe("PackedQueue used position log", () => {
  it("starts as (start | start << 16) of the used position, at its offset, little-endian", () => {
    const { memory, driver } = setup({ size: 8 });
    const log = new WatchedLog();
    new Uint8Array(log.buffer).fill(0xee);
    new PackedQueue(memory, 8, driver.addresses, {
      eventIdx: false,
      indirect: false,
      lastAvailIndex: WRAP_BIT | 5,
      usedIndex: 3,
      usedLog: { view: log, offset: LOG_OFFSET },
      notify: () => undefined,
    });
    assert.deepEqual(log.words, [logWord(3, 3)]);
    assert.equal(log.getUint32(LOG_OFFSET, true), 0x0003_0003);
    // Nothing else of the log's memory is touched.
    assert.equal(log.getUint32(0, true), 0xeeee_eeee);
    assert.equal(log.getUint32(8, true), 0xeeee_eeee);
    // The default used position is the avail one.
    new PackedQueue(memory, 8, driver.addresses, {
      eventIdx: false,
      indirect: false,
      lastAvailIndex: WRAP_BIT | 6,
      usedLog: { view: log, offset: LOG_OFFSET },
      notify: () => undefined,
    });
    assert.equal(log.getUint32(LOG_OFFSET, true), logWord(WRAP_BIT | 6, WRAP_BIT | 6));
  });

  it("before each used element: (from | to << 16), the element not yet written; across wraps", () => {
    const size = 5;
    const { driver, device, log, flagsAt, word } = loggedSetup(size);
    let wraps = 0;
    for (let round = 0; round < 24; round++) {
      // Chains of 1, 2 and 3 slots: the used position moves by each one's slot count.
      const slots = 1 + (round % 3);
      const head = driver.add(chainOf(slots));
      const chain = popChain(device);
      assert.equal(chain.head, head);
      device.notify();
      assert.equal(log.words.length, 1 + round, "pop and notify write nothing");
      const from = device.usedIndex;
      const fromIndex = from & ~WRAP_BIT;
      const fromWrap = (from & WRAP_BIT) !== 0;
      let seen: number | null = null;
      log.onWrite = (value) => {
        seen = value;
        assert.equal(isUsed(flagsAt(fromIndex), fromWrap), false, "the log is written first");
      };
      device.pushUsed(chain, round);
      log.onWrite = null;
      const to = device.usedIndex;
      assert.equal(seen, logWord(from, to), `round ${round}`);
      assert.equal(word(), logWord(from, to));
      assert.equal(to & ~WRAP_BIT, (fromIndex + slots) % size);
      if ((to & WRAP_BIT) !== (from & WRAP_BIT)) wraps++;
      assert.deepEqual(driver.getUsed(), { head, len: round });
    }
    assert.ok(wraps >= 4, `${wraps} wraps`);
  });

  it("logs the slots of the chain completed, when chains complete out of order", () => {
    const { driver, device, word } = loggedSetup(8);
    driver.add(chainOf(1));
    driver.add(chainOf(3));
    const one = popChain(device);
    const three = popChain(device);
    device.pushUsed(three, 0);
    assert.equal(word(), logWord(WRAP_BIT, WRAP_BIT | 3));
    device.pushUsed(one, 0);
    assert.equal(word(), logWord(WRAP_BIT | 3, WRAP_BIT | 4));
  });
});

describe("recoverUsedPosition", () => {
  const size = 5;
  it("returns the position when the log names no element being written", () => {
    for (const position of [0, 4, WRAP_BIT, WRAP_BIT | 2]) {
      const flagsAt = () => assert.fail("no descriptor needs reading");
      assert.equal(recoverUsedPosition(logWord(position, position), size, flagsAt), position);
    }
  });

  for (const wrap of [true, false]) {
    // An element at slot 3 taking three slots: the used position goes to slot 1 of the next lap.
    const from = 3 | (wrap ? WRAP_BIT : 0);
    const to = 1 | (wrap ? 0 : WRAP_BIT);
    const recover = (flags: number) => {
      const read: number[] = [];
      const position = recoverUsedPosition(logWord(from, to), size, (index) => {
        read.push(index);
        return flags;
      });
      assert.deepEqual(read, [3], "only the slot at `from` is read");
      return position;
    };

    it(`lap ${wrap ? 1 : 0}: the element was written (used in its lap): the position after it`, () => {
      assert.equal(recover(usedFlags(wrap)), to);
      assert.equal(recover(usedFlags(wrap) | VRING_DESC_F_WRITE), to);
    });

    it(`lap ${wrap ? 1 : 0}: the driver made the slot available again in the next lap: after it`, () => {
      assert.equal(recover(availFlags(!wrap)), to);
      assert.equal(recover(availFlags(!wrap) | VRING_DESC_F_NEXT | VRING_DESC_F_WRITE), to);
    });

    it(`lap ${wrap ? 1 : 0}: not written (still available in its lap): the position before it`, () => {
      assert.equal(recover(availFlags(wrap)), from);
      assert.equal(recover(availFlags(wrap) | VRING_DESC_F_NEXT), from);
      // Flags the driver never leaves there mean nothing was written either.
      assert.equal(recover(usedFlags(!wrap)), from);
    });
  }

  it("refuses a logged position outside the ring", () => {
    assertVirtqueueError(() => recoverUsedPosition(logWord(5, 1), size, () => 0), "EINVAL");
    const written = usedFlags(true);
    assertVirtqueueError(
      () => recoverUsedPosition(logWord(WRAP_BIT | 4, WRAP_BIT | 7), size, () => written),
      "EINVAL",
    );
  });
});

describe("PackedQueue restart after a crash, at the recovered used position", () => {
  /** Completes every chain the device pops, in order; returns their heads. */
  const drain = (device: PackedQueue): number[] => {
    const heads: number[] = [];
    for (let chain = device.pop(); chain !== null; chain = device.pop()) {
      device.pushUsed(chain, 0);
      heads.push(chain.head);
    }
    return heads;
  };

  it("a crash before any element: chains taken are popped again", () => {
    const { driver, device, recover, restart } = loggedSetup(8);
    const chains = outstandingChains(driver);
    const a = chains.add(chainOf(2));
    const b = chains.add(chainOf(1));
    popChain(device);
    popChain(device);
    const position = recover();
    assert.equal(position, WRAP_BIT);
    assert.deepEqual(drain(restart(position)), [a, b]);
    assert.deepEqual(chains.collect(), [a, b]);
    assert.equal(chains.size, 0);
    assert.equal(driver.numFree, 8);
  });

  it("a crash between the log and the element: that chain and those after it run again", () => {
    const { driver, device, log, recover, restart } = loggedSetup(8);
    const chains = outstandingChains(driver);
    const a = chains.add(chainOf(2));
    const b = chains.add(chainOf(3));
    const c = chains.add(chainOf(1));
    const chainA = popChain(device);
    const chainB = popChain(device);
    popChain(device);
    device.pushUsed(chainA, 0);
    assert.deepEqual(chains.collect(), [a]);
    log.crashOnWrite = true;
    assert.throws(() => device.pushUsed(chainB, 0), /crash/);
    log.crashOnWrite = false;
    const position = recover();
    assert.equal(position, WRAP_BIT | 2, "b's element was never written");
    const again = restart(position);
    assert.deepEqual(drain(again), [b, c]);
    assert.deepEqual(chains.collect(), [b, c]);
    assert.equal(chains.size, 0);
    assert.equal(again.usedIndex, driver.availIndex);
  });

  it("a crash after an element, the driver not looking yet: goes on after it", () => {
    const { driver, device, recover, restart } = loggedSetup(8);
    const chains = outstandingChains(driver);
    const a = chains.add(chainOf(3));
    const b = chains.add(chainOf(2));
    device.pushUsed(popChain(device), 0);
    popChain(device);
    const position = recover();
    assert.equal(position, WRAP_BIT | 3);
    assert.deepEqual(drain(restart(position)), [b]);
    assert.deepEqual(chains.collect(), [a, b]);
    assert.equal(chains.size, 0);
  });

  it("a crash after an element whose slot the driver reused in the next lap: goes on after it", () => {
    const size = 4;
    const { driver, device, flagsAt, recover, restart } = loggedSetup(size);
    const chains = outstandingChains(driver);
    const a = chains.add(chainOf(2));
    device.pushUsed(popChain(device), 0);
    assert.deepEqual(chains.collect(), [a]);
    // Slots 2-3 in lap 1, then 0-1 in lap 0: slot 0, where a's element was written, is available again.
    const b = chains.add(chainOf(2));
    const c = chains.add(chainOf(2));
    assert.equal(isAvailable(flagsAt(0), false), true);
    popChain(device);
    const position = recover();
    assert.equal(position, WRAP_BIT | 2);
    const again = restart(position);
    assert.deepEqual(drain(again), [b, c]);
    assert.deepEqual(chains.collect(), [b, c]);
    assert.equal(chains.size, 0);
    assert.equal(again.usedIndex, 2, "both wrap counters flipped once");
  });

  it("many crashes at random points of a long run: every chain completes exactly once", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 9 }),
        fc.array(
          fc.record({
            add: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 4 }),
            pops: fc.nat(4),
            pushes: fc.nat(4),
            crash: fc.constantFrom("none", "after", "during"),
            collect: fc.boolean(),
          }),
          { minLength: 1, maxLength: 30 },
        ),
        (size, steps) => {
          const s = loggedSetup(size);
          const chains = outstandingChains(s.driver);
          let device = s.device;
          let inFlight: DescriptorChain[] = [];
          for (const step of steps) {
            for (const slots of step.add) {
              if (s.driver.numFree < Math.min(slots, size)) break;
              chains.add(chainOf(Math.min(slots, size)));
            }
            for (let i = 0; i < step.pops; i++) {
              const chain = device.pop();
              if (chain === null) break;
              inFlight.push(chain);
            }
            // In order, as every virtio-i2c device completes them.
            for (let i = 0; i < step.pushes && inFlight.length > 0; i++) {
              const chain = inFlight[0]!;
              if (step.crash === "during" && i === step.pushes - 1) {
                s.log.crashOnWrite = true;
                assert.throws(() => device.pushUsed(chain, 0), /crash/);
                s.log.crashOnWrite = false;
                break;
              }
              device.pushUsed(chain, 0);
              inFlight.shift();
            }
            if (step.collect) chains.collect();
            if (step.crash !== "none") {
              device = s.restart(s.recover());
              inFlight = [];
            }
          }
          for (const chain of inFlight) device.pushUsed(chain, 0);
          drain(device);
          chains.collect();
          assert.equal(chains.size, 0, "every chain came back");
          assert.equal(s.driver.numFree, size);
          assert.equal(device.usedIndex, s.driver.availIndex);
        },
      ),
      { numRuns: 300 },
    );
  });
});
