/**
 * In-process micro-benchmark of the daemon's hot path for emulated devices: no socket, no daemon
 * process. Guest RAM is a memfd mapped as the daemon maps it; the device side is the daemon's own
 * (device queue, VirtioI2cDevice, guarded SimBus with a 24c02 built from `-l sim:0x50=24c02`) with
 * the features QEMU acks (EVENT_IDX, INDIRECT_DESC). Each transfer is the bench shape: write the 1-byte
 * register address, read 8 bytes, as two indirect chains of 3 descriptors (the first with FAIL_NEXT),
 * published together and handled by one processQueue pass, as after one kick.
 *
 *   node dist/bench/hot-path.js [--transfers N] [--packed]
 *
 * Prints ns per transfer and young-generation GCs per 100k transfers (the allocation figure). The
 * driver side here allocates nothing per transfer, so every GC counted is the device's. Prints
 * numbers only, never passes or fails on them.
 * @module
 */

import { constants, PerformanceObserver } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { buildBuses, devicesFromGroups } from "../src/config/devices.js";
import { QEMU_FEATURES } from "../src/frontend/i2c-driver.js";
import { parseDeviceList } from "../src/i2c/device-list.js";
import { OutHdr, RequestFlag, RequestStatus } from "../src/i2c/protocol.js";
import { VirtioI2cDevice } from "../src/i2c/virtio-i2c.js";
import { silentLogger } from "../src/log.js";
import { Mapping } from "../src/sys/mapping.js";
import { createMemfd, GUEST_RAM_SEALS } from "../src/sys/memfd.js";
import { native } from "../src/sys/native.js";
import { DriverPackedQueue } from "../src/virtio/driver-packed-queue.js";
import { type DriverBuffer, DriverSplitQueue } from "../src/virtio/driver-split-queue.js";
import { GuestMemory } from "../src/virtio/guest-memory.js";
import {
  availFlags,
  PACKED_DESC_FLAGS,
  PACKED_DESC_ID,
  PACKED_DESC_LEN,
  PackedQueue,
  WRAP_BIT,
} from "../src/virtio/packed-queue.js";
import type { DeviceQueue } from "../src/virtio/queue.js";
import {
  DESCRIPTOR_SIZE,
  RingArea,
  SplitQueue,
  splitRingSizes,
  usedEventOffset,
  VRING_DESC_F_INDIRECT,
} from "../src/virtio/split-queue.js";

const { values: options } = parseArgs({
  options: {
    transfers: { type: "string", default: "500000" },
    packed: { type: "boolean", default: false },
  },
});

const TRANSFERS = Number(options.transfers);
if (!Number.isSafeInteger(TRANSFERS) || TRANSFERS < 1) {
  throw new Error(`--transfers must be a positive integer, got ${options.transfers}`);
}
const WARMUP_TRANSFERS = Math.min(50_000, TRANSFERS);
const QUEUE_SIZE = 32;
const RAM_SIZE = 1 << 20;
const RING_GPA = 0;
/** Per chain: its indirect table, out_hdr, data buffer and status byte, 16-aligned. */
const CHAIN_AREA_GPA = 0x10000;
const CHAIN_AREA_SIZE = 0x100;
const TABLE = 0;
const HEADER = 0x40;
const DATA = 0x50;
const STATUS = 0x60;
const EEPROM_ADDR = 0x50;
const READ_LENGTH = 8;

interface ChainShape {
  readonly flags: number;
  /** Device-readable data (write) or device-writable buffer (read) length. */
  readonly dataLength: number;
  readonly read: boolean;
}

/** Write register 0 (FAIL_NEXT: the read belongs to the same transfer), then read 8 bytes. */
const TRANSFER_SHAPE: readonly ChainShape[] = [
  { flags: RequestFlag.FAIL_NEXT, dataLength: 1, read: false },
  { flags: RequestFlag.M_RD, dataLength: READ_LENGTH, read: true },
];

/** What the loop needs of a driver-side ring: make every chain available again, count used ones. */
interface BenchDriver {
  readonly queue: DeviceQueue;
  /** Makes the transfer's chains available (as the guest's driver does, before one kick). */
  publishAll(): void;
  /** Chains the device has returned so far, as a running count. */
  usedCount(): number;
}

function chainGpa(index: number): number {
  return CHAIN_AREA_GPA + CHAIN_AREA_SIZE * index;
}

/** Writes each chain's out_hdr and write data once: the transfer never changes. */
function layOutChains(memory: GuestMemory): void {
  TRANSFER_SHAPE.forEach((shape, i) => {
    const base = chainGpa(i);
    memory.writeU16(base + HEADER + OutHdr.ADDR_OFFSET, EEPROM_ADDR << 1);
    memory.writeU32(base + HEADER + OutHdr.FLAGS_OFFSET, shape.flags);
    if (!shape.read) memory.write(base + DATA, new Uint8Array(shape.dataLength));
  });
}

/** The buffers of chain `index`: out_hdr, data, status. */
function chainBuffers(index: number): DriverBuffer[] {
  const base = chainGpa(index);
  const shape = TRANSFER_SHAPE[index] as ChainShape;
  return [
    { gpa: base + HEADER, len: OutHdr.SIZE, writable: false },
    { gpa: base + DATA, len: shape.dataLength, writable: shape.read },
    { gpa: base + STATUS, len: 1, writable: true },
  ];
}

/**
 * Adds every chain once through the driver queue (which writes the indirect tables) and returns the
 * heads or buffer ids: the loop only makes the same chains available again.
 */
function addChains(driver: DriverSplitQueue | DriverPackedQueue): number[] {
  return TRANSFER_SHAPE.map((_, i) => {
    const head = driver.add(chainBuffers(i), { indirect: true, indirectGpa: chainGpa(i) + TABLE });
    if (head === null) throw new Error("ring full");
    return head;
  });
}

const deviceOptions = { eventIdx: true, indirect: true, notifyOnEmpty: false };

function splitDriver(memory: GuestMemory, onNotify: () => void): BenchDriver {
  const driver = new DriverSplitQueue(memory, RING_GPA, QUEUE_SIZE, { eventIdx: true });
  const heads = addChains(driver);
  // add() published them once; the loop republishes, so the device starts past them.
  const queue = new SplitQueue(memory, QUEUE_SIZE, driver.addresses, {
    ...deviceOptions,
    lastAvailIndex: driver.availIndex,
    // As the daemon does: continue from the used index the ring holds.
    usedIndex: driver.deviceUsedIndex,
    notify: onNotify,
  });
  // The driver consumes every used entry at once and wants an interrupt for the next (as Linux's
  // virtqueue_enable_cb): used_event follows used.idx. DriverSplitQueue does that only in takeUsed,
  // which builds an object per entry.
  const avail = new RingArea(
    memory,
    driver.addresses.avail,
    splitRingSizes(QUEUE_SIZE, true).avail,
    "avail",
  );
  let used = 0;
  let lastUsedIdx = driver.deviceUsedIndex;
  return {
    queue,
    publishAll() {
      avail.store16(usedEventOffset(QUEUE_SIZE), driver.deviceUsedIndex);
      for (const head of heads) driver.publish(head);
    },
    usedCount() {
      const now = driver.deviceUsedIndex;
      used += (now - lastUsedIdx) & 0xffff;
      lastUsedIdx = now;
      return used;
    },
  };
}

/**
 * The packed ring's driver: DriverPackedQueue lays the ring out, and the loop writes each chain's one
 * indirect descriptor itself (publishChain builds objects per call, which would count against the
 * device). Every chain takes one slot and the device uses them in order.
 */
function packedDriver(memory: GuestMemory, onNotify: () => void): BenchDriver {
  const driver = new DriverPackedQueue(memory, RING_GPA, QUEUE_SIZE, { eventIdx: true });
  const ids = addChains(driver);
  const ring = new RingArea(memory, driver.addresses.desc, DESCRIPTOR_SIZE * QUEUE_SIZE, "ring");
  const queue = new PackedQueue(memory, QUEUE_SIZE, driver.addresses, {
    ...deviceOptions,
    lastAvailIndex: driver.availIndex,
    notify: onNotify,
  });
  let nextSlot = driver.availIndex & ~WRAP_BIT;
  let wrap = (driver.availIndex & WRAP_BIT) !== 0;
  let published = 0;
  return {
    queue,
    publishAll() {
      const first = nextSlot;
      const firstWrap = wrap;
      for (let i = 0; i < ids.length; i++) {
        const at = DESCRIPTOR_SIZE * nextSlot;
        ring.setU32(at, chainGpa(i) + TABLE);
        ring.setU32(at + 4, 0);
        ring.setU32(at + PACKED_DESC_LEN, 3 * DESCRIPTOR_SIZE);
        ring.setU16(at + PACKED_DESC_ID, ids[i] as number);
        // The first chain's flags last: they make the whole batch available.
        if (i > 0) ring.store16(at + PACKED_DESC_FLAGS, VRING_DESC_F_INDIRECT | availFlags(wrap));
        nextSlot++;
        if (nextSlot === QUEUE_SIZE) {
          nextSlot = 0;
          wrap = !wrap;
        }
      }
      ring.store16(
        DESCRIPTOR_SIZE * first + PACKED_DESC_FLAGS,
        VRING_DESC_F_INDIRECT | availFlags(firstWrap),
      );
      published += ids.length;
    },
    usedCount() {
      // Nothing in flight on the device side means every published chain is used.
      return published - queue.inFlight;
    },
  };
}

/** One kick's worth of work, the way the backend runs a ring (processRing). */
function processKick(device: VirtioI2cDevice, queue: DeviceQueue): void {
  do {
    queue.disableNotifications();
    device.processQueue(0, queue);
  } while (queue.enableNotifications());
}

function runTransfers(
  count: number,
  driver: BenchDriver,
  device: VirtioI2cDevice,
  memory: GuestMemory,
): void {
  let expected = driver.usedCount();
  for (let t = 0; t < count; t++) {
    driver.publishAll();
    processKick(device, driver.queue);
    expected += TRANSFER_SHAPE.length;
    if (driver.usedCount() !== expected) throw new Error(`transfer ${t}: chains not returned`);
  }
  for (let i = 0; i < TRANSFER_SHAPE.length; i++) {
    const status = memory.slice(chainGpa(i) + STATUS, 1)?.[0];
    if (status !== RequestStatus.OK) throw new Error(`chain ${i}: status ${status}`);
  }
}

async function main(): Promise<void> {
  const fd = createMemfd(RAM_SIZE, "hot-path-bench", { seals: GUEST_RAM_SEALS });
  const mapping = Mapping.map(fd, 0, RAM_SIZE, true);
  native().close(fd);
  const memory = new GuestMemory([
    { info: { guestPhysAddr: 0, size: RAM_SIZE, userAddr: 0x7f0000000000 }, backing: mapping },
  ]);
  layOutChains(memory);
  const configs = devicesFromGroups(
    parseDeviceList(`sim:0x${EEPROM_ADDR.toString(16)}=24c02`, () => {
      throw new Error("no host adapters here");
    }),
  );
  const built = buildBuses(configs, { logger: silentLogger, baseDir: process.cwd() });
  const device = new VirtioI2cDevice(built.addressMap, silentLogger);
  device.setFeatures(QEMU_FEATURES);
  let notifications = 0;
  const onNotify = () => {
    notifications++;
  };
  const driver = options.packed ? packedDriver(memory, onNotify) : splitDriver(memory, onNotify);

  runTransfers(WARMUP_TRANSFERS, driver, device, memory);
  let minorGcs = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const { detail } = entry as { detail?: { kind?: number } };
      if (detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) minorGcs++;
    }
  });
  observer.observe({ entryTypes: ["gc"] });
  notifications = 0;
  const started = process.hrtime.bigint();
  runTransfers(TRANSFERS, driver, device, memory);
  const elapsedNs = Number(process.hrtime.bigint() - started);
  // GC entries are delivered from the event loop: let them arrive before counting.
  await new Promise((resolve) => setTimeout(resolve, 50));
  observer.disconnect();

  const ring = options.packed ? "packed" : "split";
  console.log(
    `${ring}: ${TRANSFERS} transfers, ${(elapsedNs / TRANSFERS).toFixed(0)} ns/transfer, ` +
      `${((minorGcs * 100_000) / TRANSFERS).toFixed(2)} minor GCs/100k transfers, ` +
      `${notifications} notifications`,
  );
  built.close();
  memory.close();
  mapping.close();
}

await main();
