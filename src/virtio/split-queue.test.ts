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
import { DriverSplitQueue, type RawDescriptorFields } from "./driver-split-queue.js";
import { ArrayBufferBacking, createArrayGuestMemory, GuestMemory } from "./guest-memory.js";
import { CHAIN_ERROR, type ChainErrorKind, type DescriptorChain, VirtqueueError } from "./queue.js";
import {
  checkQueueSize,
  SplitQueue,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  vringNeedEvent,
} from "./split-queue.js";

type Setup = QueuePair<DriverSplitQueue, SplitQueue>;

interface SetupOptions extends QueueSetupOptions {
  initialIndex?: number;
}

function setup(options: SetupOptions = {}): Setup {
  const initialIndex = options.initialIndex ?? 0;
  return setupQueuePair(options, (memory, size, common) => {
    const driver = new DriverSplitQueue(memory, RING_GPA, size, {
      eventIdx: common.eventIdx,
      initialIndex,
    });
    const device = new SplitQueue(memory, size, driver.addresses, {
      ...common,
      lastAvailIndex: initialIndex,
    });
    return { driver, device };
  });
}

describe("SplitQueue round trips", () => {
  it("pops what the driver added and returns it through the used ring", () => {
    const { memory, driver, device } = setup();
    memory.write(DATA_GPA, new TextEncoder().encode("hello, device!!!"));
    const head = driver.add(request);
    assert.equal(head, 0);
    const chain = popChain(device);
    assert.deepEqual(chain, {
      head: 0,
      descriptors: [
        { addr: DATA_GPA, len: 16, writable: false },
        { addr: DATA_GPA + 0x100, len: 8, writable: true },
      ],
      error: null,
    });
    assert.equal(device.pop(), null);
    assert.equal(device.inFlight, 1);
    memory.writeU32(DATA_GPA + 0x100, 42);
    device.pushUsed(chain, 4);
    assert.equal(device.inFlight, 0);
    assert.equal(device.usedIndex, 1);
    assert.equal(driver.numFree, 6);
    assert.deepEqual(driver.getUsed(), { head: 0, len: 4 });
    assert.equal(driver.getUsed(), null);
    assert.equal(driver.numFree, 8);
    assert.equal(memory.readU32(DATA_GPA + 0x100), 42);
  });

  it("reuses a chain object once it was pushed, never while it is in flight", () => {
    const { driver, device } = setup();
    driver.add(request);
    driver.add([request[0]!]);
    const first = popChain(device);
    const second = popChain(device);
    assert.notEqual(first, second);
    assert.notEqual(first.descriptors[0], second.descriptors[0]);
    device.pushUsed(first, 0);
    // Pushed twice by mistake: still only one pool entry, so two pops never share an object.
    device.pushUsed(first, 0);
    driver.add([request[1]!]);
    driver.add(request);
    const third = popChain(device);
    const fourth = popChain(device);
    assert.equal(third, first);
    assert.notEqual(fourth, third);
    assert.notEqual(fourth, second);
    assert.deepEqual(third.descriptors, [{ addr: DATA_GPA + 0x100, len: 8, writable: true }]);
    assert.equal(second.descriptors.length, 1);
    assert.equal(fourth.descriptors.length, 2);
  });

  it("flattens an indirect table into the chain", () => {
    const { driver, device } = setup();
    const buffers = [...request, { gpa: HIGH_REGION, len: 1, writable: true }];
    const head = driver.add(buffers, { indirect: true, indirectGpa: TABLE_GPA });
    assert.equal(driver.numFree, 7);
    const chain = popChain(device);
    assert.equal(chain.head, head);
    assert.equal(chain.error, null);
    assert.deepEqual(
      chain.descriptors,
      buffers.map(({ gpa, len, writable }) => ({ addr: gpa, len, writable })),
    );
    device.pushUsed(chain, 0);
    assert.deepEqual(driver.getUsed(), { head, len: 0 });
    assert.equal(driver.numFree, 8);
  });

  it("accepts a buffer that crosses windows and touching regions", () => {
    const { driver, device } = setup();
    driver.add([{ gpa: 0x3fff0, len: 0x20, writable: true }]);
    assert.equal(popChain(device).error, null);
  });

  for (const size of [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]) {
    it(`fills and drains a queue of size ${size} twice`, () => {
      const { driver, device } = setup({ size });
      for (let round = 0; round < 2; round++) {
        const heads = new Set<number>();
        for (let i = 0; i < size; i++) {
          const head = driver.add([{ gpa: DATA_GPA + i, len: 1, writable: i % 2 === 0 }]);
          assert.ok(head !== null);
          heads.add(head);
        }
        assert.equal(driver.add([{ gpa: DATA_GPA, len: 1, writable: false }]), null);
        const chains: DescriptorChain[] = [];
        for (let chain = device.pop(); chain !== null; chain = device.pop()) chains.push(chain);
        assert.equal(chains.length, size);
        assert.ok(chains.every((chain) => chain.error === null && heads.has(chain.head)));
        for (const chain of chains.reverse()) device.pushUsed(chain, 1);
        for (const chain of chains)
          assert.deepEqual(driver.getUsed(), { head: chain.head, len: 1 });
        assert.equal(driver.numFree, size);
      }
    });
  }

  it("follows the 16-bit indices across their wrap", () => {
    const { driver, device } = setup({ size: 4, initialIndex: 65533 });
    for (let round = 0; round < 12; round++) {
      const first = driver.add([{ gpa: DATA_GPA, len: 4, writable: false }]);
      const second = driver.add([{ gpa: DATA_GPA, len: 4, writable: true }]);
      const a = popChain(device);
      const b = popChain(device);
      assert.deepEqual([a.head, b.head], [first, second]);
      device.pushUsed(b, 2);
      device.pushUsed(a, 1);
      assert.deepEqual(driver.getUsed(), { head: second, len: 2 });
      assert.deepEqual(driver.getUsed(), { head: first, len: 1 });
    }
    assert.equal(device.lastAvailIndex, (65533 + 24) & 0xffff);
    assert.equal(device.usedIndex, device.lastAvailIndex);
    assert.equal(driver.availIndex, device.lastAvailIndex);
  });

  it("rewinds popped chains so they are popped again", () => {
    const { driver, device } = setup();
    const heads = [0, 1, 2].map(() => driver.add([{ gpa: DATA_GPA, len: 1, writable: false }]));
    const popped = [popChain(device), popChain(device), popChain(device)];
    assert.deepEqual(
      popped.map((chain) => chain.head),
      heads,
    );
    device.rewind(2);
    assert.equal(device.inFlight, 1);
    assert.equal(device.lastAvailIndex, 1);
    assert.deepEqual(popChain(device).head, heads[1]);
    assertVirtqueueError(() => device.rewind(3), "EINVAL");
    assertVirtqueueError(() => device.rewind(-1), "EINVAL");
  });
});

describe("SplitQueue construction", () => {
  it("accepts only power-of-two sizes up to 32768", () => {
    for (const size of [1, 2, 1024, 32768]) checkQueueSize(size);
    for (const size of [0, 3, 6, 65536, 1.5, -4]) {
      assertVirtqueueError(() => checkQueueSize(size), "EINVAL");
    }
    const { memory } = setup();
    const options = { eventIdx: false, indirect: false, lastAvailIndex: 0, notify: () => {} };
    assertVirtqueueError(
      () => new SplitQueue(memory, 3, { desc: 0, avail: 0x100, used: 0x200 }, options),
      "EINVAL",
    );
  });

  it("checks alignment and that the rings lie in guest memory", () => {
    const { memory } = setup();
    const options = { eventIdx: true, indirect: false, lastAvailIndex: 0, notify: () => {} };
    const make = (desc: number, avail: number, used: number) =>
      new SplitQueue(memory, 8, { desc, avail, used }, options);
    make(0x1000, 0x1080, 0x10a4);
    assertVirtqueueError(() => make(0x1008, 0x1080, 0x10a4), "EINVAL");
    assertVirtqueueError(() => make(0x1000, 0x1081, 0x10a4), "EINVAL");
    assertVirtqueueError(() => make(0x1000, 0x1080, 0x10a2), "EINVAL");
    assertVirtqueueError(() => make(GAP_GPA, 0x1080, 0x10a4), "EFAULT");
    assertVirtqueueError(() => make(0x1000, 0x4fff0, 0x10a4), "EFAULT");
    assertVirtqueueError(() => make(0x1000, 0x1080, HIGH_REGION + 0xfffc), "EFAULT");
    assertVirtqueueError(
      () =>
        new SplitQueue(
          memory,
          8,
          { desc: 0, avail: 0x80, used: 0xa4 },
          { ...options, lastAvailIndex: 65536 },
        ),
      "EINVAL",
    );
  });

  it("remaps to new memory and keeps the old one when the rings are missing", () => {
    const { driver, device } = setup();
    driver.add(request);
    assertVirtqueueError(
      () => device.remap(createArrayGuestMemory([{ guestPhysAddr: 0x1000, size: 0x1000 }])),
      "EFAULT",
    );
    const old = device.memory;
    assert.equal(popChain(device).error, null);
    // The same bytes, now seen as one region with other windows.
    const copy = createArrayGuestMemory([{ guestPhysAddr: 0, size: 0x50000 }]);
    const bytes = new Uint8Array(0x50000);
    old.read(0, bytes);
    copy.write(0, bytes);
    device.remap(copy);
    assert.equal(device.memory, copy);
    device.pushUsed({ head: 0, descriptors: [], error: null }, 3);
    assert.equal(copy.readU16(driver.addresses.used + 2), 1);
  });
});

describe("SplitQueue notifications without EVENT_IDX", () => {
  it("signals once per batch of used buffers unless the driver set NO_INTERRUPT", () => {
    const { driver, device, notifications } = setup();
    driver.add(request);
    driver.add(request);
    device.notify();
    assert.equal(notifications(), 0, "nothing pushed yet");
    device.pushUsed(popChain(device), 0);
    device.notify();
    device.notify();
    assert.equal(notifications(), 1);
    driver.disableCallbacks();
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 1);
    assert.equal(driver.enableCallbacks(), true, "used buffers arrived while disabled");
    driver.add(request);
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 2);
  });

  it("with NOTIFY_ON_EMPTY signals when the queue runs dry despite NO_INTERRUPT", () => {
    const { driver, device, notifications } = setup({ notifyOnEmpty: true });
    driver.disableCallbacks();
    driver.add(request);
    driver.add(request);
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 0, "one buffer still available");
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 1);
  });

  it("sets NO_NOTIFY while disabled and reports buffers added meanwhile on enable", () => {
    const { driver, device } = setup();
    device.disableNotifications();
    driver.add(request);
    assert.equal(driver.needsKick(), false);
    assert.equal(device.enableNotifications(), true);
    popChain(device);
    assert.equal(device.enableNotifications(), false);
    driver.add(request);
    assert.equal(driver.needsKick(), true);
    assert.equal(driver.needsKick(), false, "nothing added since the last kick");
  });
});

describe("SplitQueue notifications with EVENT_IDX", () => {
  it("vringNeedEvent signals iff the event index was crossed, modulo 2^16", () => {
    assert.equal(vringNeedEvent(0, 1, 0), true);
    assert.equal(vringNeedEvent(0, 2, 1), false);
    assert.equal(vringNeedEvent(5, 6, 3), true);
    assert.equal(vringNeedEvent(6, 6, 3), false);
    assert.equal(vringNeedEvent(65535, 1, 65534), true);
    assert.equal(vringNeedEvent(0, 1, 65535), true);
    assert.equal(vringNeedEvent(2, 1, 65535), false);
  });

  it("signals when used_event is crossed and stays quiet until the driver catches up", () => {
    const { driver, device, notifications } = setup({ eventIdx: true });
    for (let i = 0; i < 4; i++) driver.add(request);
    const chains = [0, 1, 2, 3].map(() => popChain(device));
    device.pushUsed(chains[0]!, 0);
    device.notify();
    assert.equal(notifications(), 1);
    device.pushUsed(chains[1]!, 0);
    device.notify();
    assert.equal(notifications(), 1, "driver has not consumed up to used_event yet");
    assert.ok(driver.getUsed());
    assert.ok(driver.getUsed());
    device.pushUsed(chains[2]!, 0);
    device.notify();
    assert.equal(notifications(), 2);
    driver.getUsed();
    driver.disableCallbacks();
    device.pushUsed(chains[3]!, 0);
    device.notify();
    assert.equal(notifications(), 2, "callbacks disabled");
    assert.equal(driver.enableCallbacks(), true);
  });

  it("signals the first time after construction whatever used_event says", () => {
    const { driver, device, notifications } = setup({ eventIdx: true });
    driver.add(request);
    driver.disableCallbacks();
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 1);
    driver.add(request);
    device.pushUsed(popChain(device), 0);
    device.notify();
    assert.equal(notifications(), 1);
  });

  it("asks for a kick through avail_event and leaves it alone while disabled", () => {
    const { driver, device } = setup({ eventIdx: true });
    assert.equal(device.enableNotifications(), false);
    driver.add(request);
    assert.equal(driver.needsKick(), true);
    device.disableNotifications();
    driver.add(request);
    assert.equal(driver.needsKick(), false, "avail_event already passed");
    popChain(device);
    popChain(device);
    driver.add(request);
    assert.equal(device.enableNotifications(), true, "added before avail_event moved");
    popChain(device);
    assert.equal(device.enableNotifications(), false);
    driver.add(request);
    driver.add(request);
    assert.equal(driver.needsKick(), true);
  });
});

describe("SplitQueue malformed chains", () => {
  interface Case {
    name: string;
    kind: ChainErrorKind;
    indirect?: boolean;
    build(driver: DriverSplitQueue): number;
  }
  const buffer = (flags = 0, next = 0, len = 8, addr: number | bigint = DATA_GPA) => ({
    addr,
    len,
    flags,
    next,
  });
  const indirectTo = (
    len: number,
    addr: number | bigint = TABLE_GPA,
    flags = VRING_DESC_F_INDIRECT,
  ) => buffer(flags, 0, len, addr);
  /** A chain of the single descriptor `index`. */
  const at = (index: number, fields: RawDescriptorFields) => (d: DriverSplitQueue) => {
    d.writeDescriptor(index, fields);
    return index;
  };
  const cases: Case[] = [
    { name: "head past the table", kind: CHAIN_ERROR.headOutOfRange, build: () => 8 },
    { name: "head 65535", kind: CHAIN_ERROR.headOutOfRange, build: () => 65535 },
    {
      name: "next past the table",
      kind: CHAIN_ERROR.nextOutOfRange,
      build: at(0, buffer(VRING_DESC_F_NEXT, 8)),
    },
    {
      name: "a loop",
      kind: CHAIN_ERROR.loop,
      build: (d) => {
        d.writeDescriptor(3, buffer(VRING_DESC_F_NEXT, 4));
        d.writeDescriptor(4, buffer(VRING_DESC_F_NEXT, 3));
        return 3;
      },
    },
    {
      name: "a descriptor pointing at itself",
      kind: CHAIN_ERROR.loop,
      build: at(7, buffer(VRING_DESC_F_NEXT, 7)),
    },
    {
      name: "a loop inside an indirect table",
      kind: CHAIN_ERROR.loop,
      build: (d) => {
        d.writeDescriptorAt(TABLE_GPA, buffer(VRING_DESC_F_NEXT, 1));
        d.writeDescriptorAt(TABLE_GPA + 16, buffer(VRING_DESC_F_NEXT, 0));
        d.writeDescriptor(0, indirectTo(32));
        return 0;
      },
    },
    {
      name: "next past an indirect table",
      kind: CHAIN_ERROR.nextOutOfRange,
      build: (d) => {
        d.writeDescriptorAt(TABLE_GPA, buffer(VRING_DESC_F_NEXT, 1));
        d.writeDescriptor(0, indirectTo(16));
        return 0;
      },
    },
    {
      name: "indirect without the feature",
      kind: CHAIN_ERROR.indirectNotNegotiated,
      indirect: false,
      build: (d) => {
        d.writeDescriptorAt(TABLE_GPA, buffer());
        d.writeDescriptor(0, indirectTo(16));
        return 0;
      },
    },
    {
      name: "indirect inside indirect",
      kind: CHAIN_ERROR.nestedIndirect,
      build: (d) => {
        d.writeDescriptorAt(TABLE_GPA, indirectTo(16, TABLE_GPA + 0x100));
        d.writeDescriptorAt(TABLE_GPA + 0x100, buffer());
        d.writeDescriptor(0, indirectTo(16));
        return 0;
      },
    },
    {
      name: "indirect with NEXT",
      kind: CHAIN_ERROR.indirectWithNext,
      build: (d) => {
        d.writeDescriptorAt(TABLE_GPA, buffer());
        d.writeDescriptor(1, buffer());
        d.writeDescriptor(0, indirectTo(16, TABLE_GPA, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT));
        return 0;
      },
    },
    {
      name: "an empty indirect table",
      kind: CHAIN_ERROR.indirectBadLength,
      build: at(0, indirectTo(0)),
    },
    {
      name: "an indirect length not a multiple of 16",
      kind: CHAIN_ERROR.indirectBadLength,
      build: at(0, indirectTo(24)),
    },
    {
      name: "an indirect table of more than 32768 entries",
      kind: CHAIN_ERROR.indirectBadLength,
      build: at(0, indirectTo(16 * 32769)),
    },
    {
      name: "an indirect table in the gap",
      kind: CHAIN_ERROR.indirectOutsideMemory,
      build: at(0, indirectTo(16, GAP_GPA)),
    },
    {
      name: "an indirect table address past 2^53",
      kind: CHAIN_ERROR.indirectOutsideMemory,
      build: at(0, indirectTo(16, 1n << 60n)),
    },
    {
      name: "an indirect table running off the end of memory",
      kind: CHAIN_ERROR.indirectOutsideMemory,
      build: at(0, indirectTo(32, HIGH_REGION + 0xfff0)),
    },
    {
      name: "a zero-length buffer",
      kind: CHAIN_ERROR.zeroLength,
      build: (d) => {
        d.writeDescriptor(0, buffer(VRING_DESC_F_NEXT, 1));
        d.writeDescriptor(1, buffer(0, 0, 0));
        return 0;
      },
    },
    {
      name: "a readable buffer after a writable one",
      kind: CHAIN_ERROR.readableAfterWritable,
      build: (d) => {
        d.writeDescriptor(0, buffer(VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1));
        d.writeDescriptor(1, buffer());
        return 0;
      },
    },
    {
      name: "a buffer in the gap",
      kind: CHAIN_ERROR.bufferOutsideMemory,
      build: at(0, buffer(0, 0, 8, GAP_GPA)),
    },
    {
      name: "a buffer running past the last region",
      kind: CHAIN_ERROR.bufferOutsideMemory,
      build: at(0, buffer(0, 0, 0x10001, HIGH_REGION)),
    },
    {
      name: "a buffer address past 2^53",
      kind: CHAIN_ERROR.bufferOutsideMemory,
      build: at(0, buffer(0, 0, 8, 0xffff_ffff_ffff_fff0n)),
    },
    {
      name: "a maximal length buffer",
      kind: CHAIN_ERROR.bufferOutsideMemory,
      build: at(0, buffer(0, 0, 0xffffffff, 0)),
    },
  ];

  for (const testCase of cases) {
    it(`returns a chain with an error for ${testCase.name}, and it can be used`, () => {
      const { driver, device } = setup({ indirect: testCase.indirect ?? true });
      const head = testCase.build(driver);
      driver.publish(head);
      // A well-formed chain after it, in a descriptor no case uses (add() would reuse theirs).
      driver.writeDescriptor(5, buffer());
      driver.publish(5);
      const chain = popChain(device);
      assert.equal(chain.head, head);
      assert.ok(chain.error?.startsWith(`${testCase.kind}: `), `error was ${chain.error}`);
      device.pushUsed(chain, 0);
      assert.deepEqual(driver.takeUsed(), { head, len: 0 });
      const next = popChain(device);
      assert.deepEqual(next, {
        head: 5,
        descriptors: [{ addr: DATA_GPA, len: 8, writable: false }],
        error: null,
      });
      device.pushUsed(next, 0);
      assert.deepEqual(driver.takeUsed(), { head: next.head, len: 0 });
      assert.equal(device.inFlight, 0);
    });
  }

  it("reports a chain longer than 2^32 bytes", () => {
    // A queue large enough that 4097 descriptors are within the chain length limit (its size).
    const memory = createArrayGuestMemory([{ guestPhysAddr: 0, size: 0x200000 }]);
    const driver = new DriverSplitQueue(memory, 0, 8192);
    const device = new SplitQueue(memory, 8192, driver.addresses, {
      eventIdx: false,
      indirect: true,
      lastAvailIndex: 0,
      notify: () => {},
    });
    const table = 0x100000;
    for (const count of [4096, 4097]) {
      for (let i = 0; i < count; i++) {
        driver.writeDescriptorAt(table + 16 * i, buffer(VRING_DESC_F_NEXT, i + 1, 0x100000, 0));
      }
      driver.writeDescriptorAt(table + 16 * (count - 1), buffer(0, 0, 0x100000, 0));
      driver.writeDescriptor(0, indirectTo(16 * count, table));
      driver.publish(0);
      const chain = popChain(device);
      if (count === 4096) assert.equal(chain.error, null);
      else
        assert.ok(
          chain.error?.startsWith(`${CHAIN_ERROR.totalTooLong}: `),
          `error was ${chain.error}`,
        );
      device.pushUsed(chain, 0);
    }
  });

  it("throws EBADRING for an avail index more than the queue size ahead, and keeps throwing", () => {
    const { driver, device } = setup();
    driver.add(request);
    driver.setAvailIndex((device.lastAvailIndex + 9) & 0xffff);
    assertVirtqueueError(() => device.pop(), "EBADRING");
    driver.setAvailIndex(1);
    assertVirtqueueError(() => device.pop(), "EBADRING");
    assert.equal(device.broken, true);
    assert.equal(device.enableNotifications(), false);
  });

  it("accepts an avail index exactly the queue size ahead", () => {
    const { driver, device } = setup({ initialIndex: 65534 });
    for (let i = 0; i < 8; i++) driver.writeDescriptor(i, buffer());
    for (let i = 0; i < 8; i++) driver.setAvailEntry(65534 + i, i);
    driver.setAvailIndex((65534 + 8) & 0xffff);
    for (let i = 0; i < 8; i++) assert.equal(popChain(device).head, i);
    assert.equal(device.pop(), null);
  });
});

describe("SplitQueue chain length limit", () => {
  const link = (i: number, last: boolean) => ({
    addr: DATA_GPA,
    len: 8,
    flags: last ? 0 : VRING_DESC_F_NEXT,
    next: last ? 0 : i + 1,
  });
  /** An indirect table of `count` linked entries at TABLE_GPA. */
  const writeTable = (driver: DriverSplitQueue, count: number) => {
    for (let i = 0; i < count; i++) {
      driver.writeDescriptorAt(TABLE_GPA + 16 * i, link(i, i === count - 1));
    }
  };
  const indirect = { addr: TABLE_GPA, flags: VRING_DESC_F_INDIRECT, next: 0 };

  it("takes a chain of queue-size descriptors and refuses one more, indirect entries included", () => {
    const { driver, device } = setup({ size: 8 });
    writeTable(driver, 8);
    driver.writeDescriptor(0, { ...indirect, len: 16 * 8 });
    driver.publish(0);
    const whole = popChain(device);
    assert.equal(whole.error, null);
    assert.equal(whole.descriptors.length, 8);
    device.pushUsed(whole, 0);
    // One ring descriptor before a table of 8: 9 in the chain.
    driver.writeDescriptor(1, { addr: DATA_GPA, len: 8, flags: VRING_DESC_F_NEXT, next: 2 });
    driver.writeDescriptor(2, { ...indirect, len: 16 * 8 });
    driver.publish(1);
    const long = popChain(device);
    assert.equal(long.error, `${CHAIN_ERROR.tooManyDescriptors}: more than 8`);
    assert.equal(long.descriptors.length, 8);
    device.pushUsed(long, 0);
  });

  it("refuses a chain past the device's limit after walking only that far", () => {
    const { driver, device } = setup({ size: 8, maxChainLength: 3 });
    writeTable(driver, 4);
    driver.writeDescriptor(0, { ...indirect, len: 16 * 4 });
    driver.publish(0);
    const long = popChain(device);
    assert.equal(long.error, `${CHAIN_ERROR.tooManyDescriptors}: more than 3`);
    assert.equal(long.descriptors.length, 3);
  });

  it("walks a table every ring entry shares only up to the limit per chain", () => {
    // The largest table there is, linked end to end, and every avail entry pointing at it.
    const memory = createArrayGuestMemory([{ guestPhysAddr: 0, size: 0x100000 }]);
    const driver = new DriverSplitQueue(memory, 0, 64);
    const device = new SplitQueue(memory, 64, driver.addresses, {
      eventIdx: false,
      indirect: true,
      lastAvailIndex: 0,
      maxChainLength: 16,
      notify: () => {},
    });
    const table = 0x80000;
    for (let i = 0; i < 32768; i++) {
      driver.writeDescriptorAt(table + 16 * i, { ...link(i, i === 32767), addr: 0x1000 });
    }
    for (let head = 0; head < 64; head++) {
      driver.writeDescriptor(head, {
        addr: table,
        len: 16 * 32768,
        flags: VRING_DESC_F_INDIRECT,
        next: 0,
      });
      driver.publish(head);
    }
    for (let head = 0; head < 64; head++) {
      const chain = popChain(device);
      assert.equal(chain.error, `${CHAIN_ERROR.tooManyDescriptors}: more than 16`);
      assert.equal(chain.descriptors.length, 16);
    }
    assert.equal(device.pop(), null);
  });

  it("refuses a limit that is not a positive integer", () => {
    for (const maxChainLength of [0, -1, 1.5]) {
      assertVirtqueueError(() => setup({ maxChainLength }), "EINVAL");
    }
  });

  it("throws EBADRING when an entry is published while every chain is in flight", () => {
    const { driver, device } = setup({ size: 4 });
    for (let i = 0; i < 4; i++) assert.notEqual(driver.add([request[0]!]), null);
    for (let i = 0; i < 4; i++) popChain(device);
    // The driver owns no free head, yet publishes one more.
    driver.publish(0);
    assertVirtqueueError(() => device.pop(), "EBADRING");
    assert.equal(device.broken, true);
  });
});

describe("SplitQueue properties", () => {
  it("returns every popped chain exactly once with its head, and frees every descriptor", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(1, 2, 4, 8, 16),
        fc.boolean(),
        fc.integer({ min: 0, max: 65535 }),
        fc.array(queueOp, { maxLength: 120 }),
        (size, eventIdx, initialIndex, ops) => {
          const { driver, device } = setup({ size, eventIdx, initialIndex });
          runQueueOps(driver, device, size, ops);
        },
      ),
    );
  });

  it("survives random descriptor tables and avail rings without touching memory outside the regions", () => {
    const REGION = 0x10000;
    const GUARD = 0x1000;
    const EXTRA = 0x1000;
    const u64 = fc.oneof(
      fc.integer({ min: 0, max: 63 }).map((i) => BigInt(EXTRA + 16 * i)),
      fc.integer({ min: 0, max: REGION + 0x100 }).map(BigInt),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    );
    const u32 = fc.oneof(
      fc.integer({ min: 0, max: 0x400 }),
      fc.integer({ min: 0, max: 0xffffffff }),
    );
    const u16Near = (max: number) =>
      fc.oneof(fc.integer({ min: 0, max }), fc.integer({ min: 0, max: 0xffff }));
    const descriptor = fc.record({
      addr: u64,
      len: u32,
      flags: fc.oneof(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 0xffff })),
      next: u16Near(20),
    });
    fc.assert(
      fc.property(
        fc.constantFrom(1, 2, 4, 8, 16),
        fc.boolean(),
        fc.boolean(),
        fc.integer({ min: 0, max: 0xffff }),
        fc.array(descriptor, { minLength: 16, maxLength: 16 }),
        fc.array(descriptor, { maxLength: 64 }),
        fc.array(u16Near(20), { minLength: 16, maxLength: 16 }),
        u16Near(20),
        (size, eventIdx, indirect, lastAvail, table, extra, ring, ahead) => {
          const storage = new Uint8Array(REGION + 2 * GUARD).fill(0xa5);
          const backing = new ArrayBufferBacking(storage.subarray(GUARD, GUARD + REGION));
          backing.bytes.fill(0);
          const memory = new GuestMemory(
            [{ info: { guestPhysAddr: 0, size: REGION, userAddr: 0 }, backing }],
            { windowSize: 0x4000, windowOverlap: 0x1000 },
          );
          const driver = new DriverSplitQueue(memory, 0, size, {
            eventIdx,
            initialIndex: lastAvail,
          });
          // Random descriptors in the table and where random addresses often point (indirect tables).
          for (const [i, d] of table.slice(0, size).entries()) driver.writeDescriptor(i, d);
          for (const [i, d] of extra.entries()) driver.writeDescriptorAt(EXTRA + 16 * i, d);
          for (const [i, head] of ring.slice(0, size).entries()) driver.setAvailEntry(i, head);
          driver.setAvailIndex((lastAvail + ahead) & 0xffff);
          const device = new SplitQueue(memory, size, driver.addresses, {
            eventIdx,
            indirect,
            lastAvailIndex: lastAvail,
            notify: () => {},
          });
          for (let i = 0; i <= size; i++) {
            let chain: DescriptorChain | null;
            try {
              chain = device.pop();
            } catch (error) {
              assert.ok(error instanceof VirtqueueError, `pop threw ${String(error)}`);
              assert.equal(error.code, "EBADRING");
              assert.ok(ahead > size);
              break;
            }
            if (chain === null) break;
            for (const d of chain.descriptors) assert.ok(memory.isBacked(d.addr, d.len));
            device.pushUsed(chain, 0);
            device.notify();
            assert.deepEqual(driver.takeUsed(), { head: chain.head, len: 0 });
          }
          for (const request of backing.viewRequests) {
            assert.ok(request.offset >= 0 && request.offset + request.length <= REGION);
          }
          assert.ok(storage.subarray(0, GUARD).every((b) => b === 0xa5));
          assert.ok(storage.subarray(GUARD + REGION).every((b) => b === 0xa5));
        },
      ),
    );
  });
});

describe("SplitQueue.ringSlots", () => {
  const write = { gpa: DATA_GPA + 0x200, len: 4, writable: true };

  it("counts the descriptors a chain takes in the table: one for an indirect head, one each otherwise", () => {
    const { driver, device } = setup();
    driver.add([...request, write]);
    driver.add([...request, write], { indirect: true, indirectGpa: TABLE_GPA });
    const direct = popChain(device);
    const indirect = popChain(device);
    assert.equal(direct.descriptors.length, 3);
    assert.equal(indirect.descriptors.length, 3);
    assert.equal(device.ringSlots(direct), 3);
    assert.equal(device.ringSlots(indirect), 1);
    assert.equal(driver.numFree, 8 - 3 - 1, "what the driver gave up");
    assert.equal(device.inFlightSlots, 4);
    device.pushUsed(direct, 0);
    assert.equal(device.inFlightSlots, 1);
    assertVirtqueueError(() => device.ringSlots(direct), "EINVAL");
    assert.equal(device.ringSlots(indirect), 1);
    assertVirtqueueError(
      () => device.ringSlots({ head: 0, descriptors: [], error: null }),
      "EINVAL",
    );
    device.rewind(1);
    assert.equal(device.inFlightSlots, 0, "a rewound chain gives its slots back");
    assertVirtqueueError(() => device.ringSlots(indirect), "EINVAL");
    assert.equal(device.ringSlots(popChain(device)), 1, "popped again");
  });

  it("counts a direct descriptor before an indirect one, and a malformed chain as far as it was read", () => {
    const { driver, device } = setup();
    driver.writeDescriptorAt(TABLE_GPA, {
      addr: DATA_GPA + 0x100,
      len: 8,
      flags: VRING_DESC_F_WRITE,
      next: 0,
    });
    driver.writeDescriptor(0, { addr: DATA_GPA, len: 16, flags: VRING_DESC_F_NEXT, next: 1 });
    driver.writeDescriptor(1, { addr: TABLE_GPA, len: 16, flags: VRING_DESC_F_INDIRECT, next: 0 });
    // A loop through descriptors 3 and 4: the walk reads the whole table's worth of them.
    driver.writeDescriptor(3, { addr: DATA_GPA, len: 8, flags: VRING_DESC_F_NEXT, next: 4 });
    driver.writeDescriptor(4, { addr: DATA_GPA, len: 8, flags: VRING_DESC_F_NEXT, next: 3 });
    for (const head of [0, 3, 8]) driver.publish(head);
    const mixed = popChain(device);
    const loop = popChain(device);
    const pastTable = popChain(device);
    assert.equal(mixed.error, null);
    assert.equal(mixed.descriptors.length, 2);
    assert.equal(device.ringSlots(mixed), 2);
    assert.match(loop.error ?? "", /looping/);
    assert.equal(device.ringSlots(loop), 8);
    assert.match(pastTable.error ?? "", /head out of range/);
    assert.equal(device.ringSlots(pastTable), 1);
  });
});
