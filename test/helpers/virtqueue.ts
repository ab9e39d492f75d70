/**
 * Test set-up shared by the split and packed queue tests: the guest memory layout, a driver/device pair
 * on it with a notification counter, chain and error assertions, and the random operations the property
 * tests run. Used only by tests; it holds no assertions of its own about either ring layout.
 * @module
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import type { AddOptions, DriverBuffer, UsedElement } from "../../src/virtio/driver-split-queue.js";
import {
  createArrayGuestMemory,
  type GuestMemory,
  type GuestMemoryOptions,
} from "../../src/virtio/guest-memory.js";
import { type DescriptorChain, type DeviceQueue, VirtqueueError } from "../../src/virtio/queue.js";
import type { QueueNotificationOptions } from "../../src/virtio/queue-base.js";

/** Rings fit any window (overlap 32 KiB); buffers still cross window edges. */
export const WINDOWS: GuestMemoryOptions = { windowSize: 0x10000, windowOverlap: 0x8000 };
export const RING_GPA = 0;
export const TABLE_GPA = 0x20000;
export const DATA_GPA = 0x30000;
/** Between the second region and HIGH_REGION: not guest memory. */
export const GAP_GPA = 0x50000;
export const HIGH_REGION = 0x100000;

export interface QueuePair<Driver, Device> {
  memory: GuestMemory;
  driver: Driver;
  device: Device;
  notifications: () => number;
}

export interface QueueSetupOptions {
  size?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  notifyOnEmpty?: boolean;
  maxChainLength?: number;
}

/**
 * Two touching regions at 0 and one at HIGH_REGION, a driver and a device built on them by `build`, and a
 * counter of the device's notifications. Defaults: size 8, no EVENT_IDX, INDIRECT, no NOTIFY_ON_EMPTY.
 */
export function setupQueuePair<Driver, Device>(
  options: QueueSetupOptions,
  build: (
    memory: GuestMemory,
    size: number,
    common: QueueNotificationOptions,
  ) => { driver: Driver; device: Device },
): QueuePair<Driver, Device> {
  const memory = createArrayGuestMemory(
    [
      { guestPhysAddr: 0, size: 0x40000 },
      { guestPhysAddr: 0x40000, size: 0x10000 },
      { guestPhysAddr: HIGH_REGION, size: 0x10000 },
    ],
    WINDOWS,
  );
  let count = 0;
  const { driver, device } = build(memory, options.size ?? 8, {
    eventIdx: options.eventIdx ?? false,
    indirect: options.indirect ?? true,
    notifyOnEmpty: options.notifyOnEmpty ?? false,
    ...(options.maxChainLength === undefined ? {} : { maxChainLength: options.maxChainLength }),
    notify: () => {
      count++;
    },
  });
  return { memory, driver, device, notifications: () => count };
}

export function popChain(device: DeviceQueue): DescriptorChain {
  const chain = device.pop();
  assert.ok(chain, "expected a chain");
  return chain;
}

export function assertVirtqueueError(fn: () => unknown, code: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof VirtqueueError, `expected VirtqueueError, got ${String(error)}`);
    assert.equal(error.code, code);
    return true;
  });
}

/** A typical request: one readable buffer, then one writable. */
export const request: DriverBuffer[] = [
  { gpa: DATA_GPA, len: 16, writable: false },
  { gpa: DATA_GPA + 0x100, len: 8, writable: true },
];

/** One step of a property test driving a driver/device pair. */
export type QueueOp =
  | { kind: "add"; count: number; writableFrom: number; indirect: boolean }
  | { kind: "pop" }
  | { kind: "push"; pick: number }
  | { kind: "rewind"; count: number }
  | { kind: "getUsed" };

export const queueOp: fc.Arbitrary<QueueOp> = fc.oneof(
  fc.record({
    kind: fc.constant("add" as const),
    count: fc.integer({ min: 1, max: 5 }),
    writableFrom: fc.integer({ min: 0, max: 5 }),
    indirect: fc.boolean(),
  }),
  fc.record({ kind: fc.constant("pop" as const) }),
  fc.record({ kind: fc.constant("push" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant("rewind" as const), count: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ kind: fc.constant("getUsed" as const) }),
);

/** What runQueueOps needs of a driver queue (split or packed). */
export interface ModelDriver {
  add(buffers: readonly DriverBuffer[], options?: AddOptions): number | null;
  getUsed(): UsedElement | null;
  readonly numFree: number;
}

/** What runQueueOps needs of a device queue: DeviceQueue and its ring positions. */
export interface ModelDevice extends DeviceQueue {
  readonly usedIndex: number;
  readonly lastAvailIndex: number;
}

/**
 * Runs `ops` against a driver/device pair of `size` (a fresh one), checking that every popped chain is
 * what the driver added and takes the ring slots it was given (1 indirect, else one per buffer), then
 * drains the ring and checks that every chain came back exactly once with its id and length, and that
 * every descriptor is free again.
 */
export function runQueueOps(
  driver: ModelDriver,
  device: ModelDevice,
  size: number,
  ops: readonly QueueOp[],
): void {
  const tableSlots = Array.from({ length: size }, (_, i) => TABLE_GPA + 0x100 * i);
  const tableOfHead = new Map<number, number>();
  /** What the driver added, by head, until it comes back. */
  const outstanding = new Map<number, { addr: number; len: number; writable: boolean }[]>();
  const inFlight: DescriptorChain[] = [];
  let rewindable = 0;
  let pushed = 0;
  let returned = 0;
  const checkPopped = (chain: DescriptorChain) => {
    assert.equal(chain.error, null);
    assert.deepEqual(chain.descriptors, outstanding.get(chain.head));
  };
  const collect = () => {
    for (let used = driver.getUsed(); used !== null; used = driver.getUsed()) {
      assert.ok(outstanding.delete(used.head), `head ${used.head} came back twice`);
      assert.equal(used.len, used.head * 3);
      const slot = tableOfHead.get(used.head);
      if (slot !== undefined) tableSlots.push(slot);
      tableOfHead.delete(used.head);
      returned++;
    }
  };
  const push = (index: number) => {
    const [chain] = inFlight.splice(index, 1);
    device.pushUsed(chain!, chain!.head * 3);
    pushed++;
    rewindable = 0;
  };
  for (const step of ops) {
    if (step.kind === "add") {
      // No chain longer than the queue size, indirect or not (the spec's limit on drivers).
      const buffers = Array.from({ length: Math.min(step.count, size) }, (_, i) => ({
        gpa: DATA_GPA + 0x40 * i,
        len: 1 + i,
        writable: i >= step.writableFrom,
      }));
      const slot = step.indirect ? tableSlots.pop() : undefined;
      const head = driver.add(buffers, { indirect: slot !== undefined, indirectGpa: slot });
      if (head === null) {
        if (slot !== undefined) tableSlots.push(slot);
        continue;
      }
      if (slot !== undefined) tableOfHead.set(head, slot);
      outstanding.set(
        head,
        buffers.map(({ gpa, len, writable }) => ({ addr: gpa, len, writable })),
      );
    } else if (step.kind === "pop") {
      const chain = device.pop();
      if (chain === null) continue;
      checkPopped(chain);
      inFlight.push(chain);
      rewindable++;
    } else if (step.kind === "push") {
      if (inFlight.length > 0) push(step.pick % inFlight.length);
    } else if (step.kind === "rewind") {
      const count = Math.min(step.count, rewindable);
      device.rewind(count);
      inFlight.splice(inFlight.length - count, count);
      rewindable -= count;
    } else {
      collect();
    }
    assert.equal(device.inFlight, inFlight.length);
    let slots = 0;
    for (const chain of inFlight) {
      const given = tableOfHead.has(chain.head) ? 1 : chain.descriptors.length;
      assert.equal(device.ringSlots(chain), given);
      slots += given;
    }
    assert.equal(device.inFlightSlots, slots);
  }
  for (let chain = device.pop(); chain !== null; chain = device.pop()) {
    checkPopped(chain);
    inFlight.push(chain);
  }
  while (inFlight.length > 0) push(0);
  assert.equal(device.inFlightSlots, 0);
  collect();
  assert.equal(outstanding.size, 0);
  assert.equal(returned, pushed);
  assert.equal(driver.numFree, size);
  assert.equal(device.usedIndex, device.lastAvailIndex);
}
