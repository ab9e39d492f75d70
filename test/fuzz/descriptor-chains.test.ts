/**
 * Property: whatever descriptor chains a guest writes into its memory, on a split or a packed ring, the
 * daemon (real process, real socket, memfd guest RAM of two regions with a gap between them):
 * - stays alive and serves a well-formed transfer on a new connection to the same socket;
 * - writes nothing outside the used ring and the device-writable buffers it was given (all other
 *   guest memory is filled with a guard pattern and compared byte for byte);
 * - returns every chain it took from the avail ring exactly once (taken = what GET_VRING_BASE says
 *   it consumed; a ring broken by an avail index jump is simply taken up to the jump).
 * Chains mix valid requests with descriptor loops, out-of-range next indices, indirect tables inside
 * indirect tables, table lengths that are not a multiple of 16, lengths past a region's end, buffers
 * in the gap between regions or past 2^53, zero lengths, readable-after-writable, huge avail index
 * jumps and head ids past the queue size; queue sizes include packed sizes that are not a power of two.
 * Some cases add one indirect table that many ring entries share (a request linked end to end: a
 * header, 1-byte data entries, a status byte), longer than the queue size, up to the largest table
 * there is (32768 entries) and one past it, in a third memory region.
 * The ring is filled before the queue starts, so the daemon processes it while handling the start
 * messages and a GET_FEATURES reply is a barrier. Budget: see harness.ts (FUZZ_RUNS).
 * @module
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { QEMU_FEATURES } from "../../src/frontend/i2c-driver.js";
import { OutHdr, RequestFlag } from "../../src/i2c/protocol.js";
import { EventFd } from "../../src/sys/eventfd.js";
import {
  type FrontendQueue,
  GuestRam,
  realize,
  startQueues,
  VhostUserFrontend,
} from "../../src/vhost-user/frontend.js";
import { DriverPackedQueue } from "../../src/virtio/driver-packed-queue.js";
import { DriverSplitQueue } from "../../src/virtio/driver-split-queue.js";
import {
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
} from "../../src/virtio/features.js";
import { isUsed, PACKED_DESC_ID, packedRingSizes } from "../../src/virtio/packed-queue.js";
import {
  AVAIL_RING,
  DESCRIPTOR_SIZE,
  splitRingSizes,
  USED_ELEM_SIZE,
  USED_IDX,
  USED_RING,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
} from "../../src/virtio/split-queue.js";
import {
  assertServes,
  EEPROM_ADDR,
  fuzzParameters,
  startThreeSocketDaemon,
  type ThreeSocketDaemon,
  whenSocketFree,
} from "./harness.js";

// Guest RAM: region A [0, 256 KiB) with the ring at 0, a gap, region B [1 MiB, 1.25 MiB), and region
// C [2 MiB, 2.5 MiB + 4 KiB) for the shared table.
const REGION_SIZE = 0x40000;
const REGION_B = 0x100000;
const REGION_C = 0x200000;
const REGION_C_SIZE = 0x81000;
/** Every region, all filled with the guard pattern and compared after the case. */
const REGIONS: readonly (readonly [number, number])[] = [
  [0, REGION_SIZE],
  [REGION_B, REGION_SIZE],
  [REGION_C, REGION_C_SIZE],
];
/** The shared table (in C) and the header, data and status its entries point at (in A). */
const SHARED_TABLE = REGION_C;
const SHARED_SLOT = 0x3f000;
const GAP = 0x80000;
const GUARD = 0xa5;
/** Per chain: its buffers in A and B, its indirect tables in A (nested one at +0x200). */
const slotA = (chain: number) => 0x4000 + chain * 0x800;
const slotB = (chain: number) => REGION_B + chain * 0x800;
const tableAt = (chain: number, depth: number) => 0x20000 + chain * 0x400 + depth * 0x200;
const MAX_CHAINS = 24;
/** Chains that are only a descriptor to the shared table, at most (slots above stay in A and B). */
const MAX_SHARING_CHAINS = 16;

type Target =
  | "header"
  | "data"
  | "dataB"
  | "status"
  | "gap"
  | "pastEndA"
  | "pastEndB"
  | "huge"
  | "wild";

interface DescSpec {
  readonly target: Target;
  /** null: the target's natural length. */
  readonly len: number | null;
  readonly write: boolean;
  /** "chain": NEXT to the following descriptor; "stop": no NEXT; "random": NEXT to `randomNext`. */
  readonly next: "chain" | "stop" | "random";
  readonly randomNext: number;
  /** An indirect descriptor: the table's entries (may nest). */
  readonly table: readonly DescSpec[] | null;
  /** Added to the table length (not a multiple of 16, past the table). */
  readonly tableSkew: number;
  /** An indirect descriptor to the case's shared table instead (when it has one). */
  readonly shared: boolean;
  readonly wildAddr: bigint;
}

interface ChainSpec {
  readonly descs: readonly DescSpec[];
  /** The out_hdr written at the header target: a valid one for the EEPROM, or noise. */
  readonly header: { readonly flags: number } | Uint8Array;
  /** Publish this head instead of the chain's own (a head past the queue size, any 16-bit). */
  readonly forgedHead: number | null;
}

const leafDesc = fc.record({
  target: fc.constantFrom<Target>(
    "header",
    "data",
    "data",
    "dataB",
    "status",
    "status",
    "gap",
    "pastEndA",
    "pastEndB",
    "huge",
    "wild",
  ),
  len: fc.oneof(
    { weight: 6, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.constantFrom(0, 1, 7, 8, 9, 0xffff, 0x10000, 0xffff_ffff) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff_ffff }) },
  ),
  write: fc.boolean(),
  next: fc.oneof(
    { weight: 8, arbitrary: fc.constant<"chain">("chain") },
    { weight: 1, arbitrary: fc.constantFrom<"stop" | "random">("stop", "random") },
  ),
  randomNext: fc.integer({ min: 0, max: 0xffff }),
  table: fc.constant(null),
  tableSkew: fc.constant(0),
  shared: fc.constant(false),
  wildAddr: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
});

/** A descriptor that may be indirect, with tables nested up to `depth`. */
const descSpec = (depth: number): fc.Arbitrary<DescSpec> =>
  depth === 0
    ? leafDesc
    : fc.oneof(
        { weight: 5, arbitrary: leafDesc },
        {
          weight: 1,
          arbitrary: fc
            .tuple(
              leafDesc,
              fc.array(descSpec(depth - 1), { minLength: 1, maxLength: 4 }),
              fc.oneof(fc.constant(0), fc.constantFrom(-16, -1, 1, 8, 16, 0x10000)),
            )
            .map(([desc, table, tableSkew]) => ({ ...desc, table, tableSkew })),
        },
        { weight: 1, arbitrary: leafDesc.map((desc) => ({ ...desc, shared: true })) },
      );

const chainSpec: fc.Arbitrary<ChainSpec> = fc.record({
  descs: fc.array(descSpec(2), { minLength: 1, maxLength: 4 }),
  header: fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        flags: fc.constantFrom(0, RequestFlag.M_RD, RequestFlag.FAIL_NEXT, 3, 4, 0xffff_ffff),
      }),
    },
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 8, maxLength: 8 }) },
  ),
  forgedHead: fc.oneof(
    { weight: 12, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
  ),
});

/** A well-formed request, so every batch also carries work that must succeed or fail cleanly. */
const wellFormed = (read: boolean): ChainSpec => ({
  descs: [
    { ...baseDesc, target: "header", write: false },
    { ...baseDesc, target: "data", write: read },
    { ...baseDesc, target: "status", write: true, next: "stop" },
  ],
  header: { flags: read ? RequestFlag.M_RD : 0 },
  forgedHead: null,
});
/** A chain of one descriptor: the shared table (a plain buffer when the case has none). */
const sharingChain: ChainSpec = {
  descs: [
    {
      target: "data",
      len: null,
      write: false,
      next: "stop",
      randomNext: 0,
      table: null,
      tableSkew: 0,
      shared: true,
      wildAddr: 0n,
    },
  ],
  header: { flags: 0 },
  forgedHead: null,
};
const baseDesc: DescSpec = {
  target: "data",
  len: null,
  write: false,
  next: "chain",
  randomNext: 0,
  table: null,
  tableSkew: 0,
  shared: false,
  wildAddr: 0n,
};

/** How many entries the shared table has, relative to the queue size or to the limits. */
type SharedLength = "size" | "size+1" | "double" | "device+1" | "largest" | "pastLargest";

interface RingCase {
  readonly packed: boolean;
  readonly size: number;
  readonly indirect: boolean;
  readonly eventIdx: boolean;
  readonly chains: readonly ChainSpec[];
  /** The shared table, or none (then `shared` descriptors are plain buffers). */
  readonly sharedTable: SharedLength | null;
  /** Split only: avail.idx written after publishing (null: as published). */
  readonly availJump: number | null;
}

const ringCase = (packed: boolean): fc.Arbitrary<RingCase> =>
  fc.record({
    packed: fc.constant(packed),
    size: packed
      ? fc.constantFrom(1, 2, 3, 5, 7, 12, 16, 33, 64)
      : fc.constantFrom(1, 2, 4, 8, 16, 32, 64, 256),
    indirect: fc.oneof(
      { weight: 4, arbitrary: fc.constant(true) },
      { weight: 1, arbitrary: fc.constant(false) },
    ),
    eventIdx: fc.boolean(),
    // Sometimes the last chain opens a transfer whose rest never comes (FAIL_NEXT): the daemon must
    // neither spin on it nor lose it. Chains that are only a descriptor to the shared table come
    // after the first one (when the case has no shared table, they are one plain buffer).
    chains: fc
      .tuple(
        fc.array(chainSpec, { maxLength: MAX_CHAINS - 3 }),
        fc.integer({ min: 0, max: MAX_SHARING_CHAINS }),
        fc.boolean(),
        fc.boolean(),
      )
      .map(([chains, sharing, read, openEnd]) => [
        wellFormed(false),
        ...Array.from({ length: sharing }, () => sharingChain),
        ...chains,
        wellFormed(read),
        ...(openEnd ? [{ ...wellFormed(false), header: { flags: RequestFlag.FAIL_NEXT } }] : []),
      ]),
    sharedTable: fc.oneof(
      { weight: 3, arbitrary: fc.constant(null) },
      {
        weight: 2,
        arbitrary: fc.constantFrom<SharedLength>(
          "size",
          "size+1",
          "double",
          "device+1",
          "largest",
          "pastLargest",
        ),
      },
    ),
    availJump: packed
      ? fc.constant(null)
      : fc.oneof(
          { weight: 8, arbitrary: fc.constant(null) },
          { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
        ),
  });

/** Entries of the shared table of a case (null: none). */
function sharedEntries(testCase: RingCase): number | null {
  const { size } = testCase;
  switch (testCase.sharedTable) {
    case null:
      return null;
    case "size":
      return size;
    case "size+1":
      return size + 1;
    case "double":
      return 2 * size;
    case "device+1":
      return 17;
    case "largest":
      return 32768;
    case "pastLargest":
      return 32769;
  }
}

/**
 * Writes the shared table (split or packed layout, in one copy): a write request linked end to end,
 * out_hdr, 1-byte data entries, then the status byte (at least two entries). Returns its length.
 */
function writeSharedTable(
  ram: GuestRam,
  packed: boolean,
  entries: number,
  allowance: WriteAllowance,
): number {
  const hdr = new DataView(new ArrayBuffer(OutHdr.SIZE));
  hdr.setUint16(OutHdr.ADDR_OFFSET, EEPROM_ADDR << 1, true);
  ram.memory.write(SHARED_SLOT, new Uint8Array(hdr.buffer));
  // The first data byte is an EEPROM offset: away from what other tests read back.
  ram.memory.write(SHARED_SLOT + 0x10, Uint8Array.of(0xc0));
  const status = SHARED_SLOT + 0x100;
  allowance.add(BigInt(status), 1);
  const count = Math.max(2, entries);
  const table = new DataView(new ArrayBuffer(DESCRIPTOR_SIZE * count));
  for (let i = 0; i < count; i++) {
    const at = DESCRIPTOR_SIZE * i;
    const last = i === count - 1;
    table.setBigUint64(
      at,
      BigInt(i === 0 ? SHARED_SLOT : last ? status : SHARED_SLOT + 0x10),
      true,
    );
    table.setUint32(at + 8, i === 0 ? OutHdr.SIZE : 1, true);
    const flags = last ? VRING_DESC_F_WRITE : VRING_DESC_F_NEXT;
    // Split: flags, then next. Packed: the id, then flags (NEXT means nothing in a packed table).
    table.setUint16(at + 12, packed ? 0 : flags, true);
    table.setUint16(at + 14, packed ? flags : last ? 0 : i + 1, true);
  }
  ram.memory.write(SHARED_TABLE, new Uint8Array(table.buffer));
  return DESCRIPTOR_SIZE * count;
}

/** Where a descriptor points and how long it is, for chain `chain`. */
function place(spec: DescSpec, chain: number): { addr: bigint; len: number } {
  const natural: Record<Target, [bigint, number]> = {
    header: [BigInt(slotA(chain)), OutHdr.SIZE],
    data: [BigInt(slotA(chain) + 0x10), 16],
    dataB: [BigInt(slotB(chain)), 32],
    status: [BigInt(slotA(chain) + 0x100), 1],
    gap: [BigInt(GAP + chain * 0x100), 8],
    pastEndA: [BigInt(REGION_SIZE - 4), 16],
    pastEndB: [BigInt(REGION_B + REGION_SIZE - 2), 8],
    huge: [2n ** 53n + BigInt(chain), 8],
    // Anywhere but the ring itself: a status byte the guest aims at its own ring is its own business.
    wild: [spec.wildAddr < 0x4000n ? spec.wildAddr + 0x4000n : spec.wildAddr, 8],
  };
  const [addr, len] = natural[spec.target];
  return { addr, len: spec.len ?? len };
}

/** Byte ranges the daemon may write: device-writable buffers given to it, and its ring areas. */
class WriteAllowance {
  readonly ranges: [number, number][] = [];
  add(addr: bigint, len: number): void {
    if (addr < 2n ** 53n) this.ranges.push([Number(addr), Number(addr) + len]);
  }
  allows(gpa: number): boolean {
    return this.ranges.some(([start, end]) => gpa >= start && gpa < end);
  }
}

/** Writes an indirect table's entries (split or packed layout) and returns the table length. */
function writeTable(
  ring: DriverSplitQueue | DriverPackedQueue,
  entries: readonly DescSpec[],
  chain: number,
  depth: number,
  allowance: WriteAllowance,
  shared: number | null,
): number {
  const gpa = tableAt(chain, depth);
  entries.forEach((entry, i) => {
    let { addr, len } = place(entry, chain);
    let flags = entry.write ? VRING_DESC_F_WRITE : 0;
    if (entry.shared && shared !== null) {
      // The shared table from inside a table: nested, so refused.
      addr = BigInt(SHARED_TABLE);
      len = shared;
      flags |= VRING_DESC_F_INDIRECT;
    } else if (entry.table !== null && depth < 1) {
      addr = BigInt(tableAt(chain, depth + 1));
      len = writeTable(ring, entry.table, chain, depth + 1, allowance, shared) + entry.tableSkew;
      flags |= VRING_DESC_F_INDIRECT;
    } else if (entry.write) {
      allowance.add(addr, len);
    }
    const last = i === entries.length - 1;
    let next = i + 1;
    if (entry.next === "random") next = entry.randomNext;
    if (entry.next === "random" || (entry.next === "chain" && !last)) flags |= VRING_DESC_F_NEXT;
    if (ring instanceof DriverSplitQueue) {
      ring.writeDescriptorAt(gpa + DESCRIPTOR_SIZE * i, {
        addr,
        len: len >>> 0,
        flags,
        next: next & 0xffff,
      });
    } else {
      ring.writeDescriptorAt(gpa + DESCRIPTOR_SIZE * i, {
        addr,
        len: len >>> 0,
        id: next & 0xffff,
        flags,
      });
    }
  });
  return DESCRIPTOR_SIZE * entries.length;
}

/**
 * Resolves a ring-level descriptor: an indirect one gets its table written; a shared one points at
 * the shared table (`shared`: its length in bytes, null when the case has none).
 */
function ringDescriptor(
  ring: DriverSplitQueue | DriverPackedQueue,
  spec: DescSpec,
  chain: number,
  allowance: WriteAllowance,
  shared: number | null,
): { addr: bigint; len: number; flags: number } {
  if (spec.shared && shared !== null) {
    return { addr: BigInt(SHARED_TABLE), len: shared, flags: VRING_DESC_F_INDIRECT };
  }
  if (spec.table !== null) {
    const len = writeTable(ring, spec.table, chain, 0, allowance, shared) + spec.tableSkew;
    const flags = VRING_DESC_F_INDIRECT | (spec.write ? VRING_DESC_F_WRITE : 0);
    return { addr: BigInt(tableAt(chain, 0)), len: Math.max(0, len) >>> 0, flags };
  }
  const { addr, len } = place(spec, chain);
  if (spec.write) allowance.add(addr, len);
  return { addr, len: len >>> 0, flags: spec.write ? VRING_DESC_F_WRITE : 0 };
}

function writeHeader(ram: GuestRam, spec: ChainSpec, chain: number): void {
  if (spec.header instanceof Uint8Array) {
    ram.memory.write(slotA(chain), spec.header);
    return;
  }
  const hdr = new DataView(new ArrayBuffer(OutHdr.SIZE));
  hdr.setUint16(OutHdr.ADDR_OFFSET, EEPROM_ADDR << 1, true);
  hdr.setUint32(OutHdr.FLAGS_OFFSET, spec.header.flags, true);
  ram.memory.write(slotA(chain), new Uint8Array(hdr.buffer));
  // The first data byte is an EEPROM offset: keep writes away from what other tests read back.
  ram.memory.write(slotA(chain) + 0x10, Uint8Array.of(0x80 + chain));
}

/** What the driver published: split heads in avail order, or packed chains (slot flags and ids). */
interface Published {
  readonly splitPublished: number;
  readonly packedSlots: { next: boolean; id: number }[];
}

/** Writes the case's shared table when it has one; its length in bytes, or null. */
function placeSharedTable(
  testCase: RingCase,
  ram: GuestRam,
  allowance: WriteAllowance,
): number | null {
  const entries = sharedEntries(testCase);
  return entries === null ? null : writeSharedTable(ram, testCase.packed, entries, allowance);
}

function fillSplit(
  ring: DriverSplitQueue,
  testCase: RingCase,
  ram: GuestRam,
  allowance: WriteAllowance,
): Published {
  let nextIndex = 0;
  let published = 0;
  const shared = placeSharedTable(testCase, ram, allowance);
  testCase.chains.forEach((spec, chain) => {
    writeHeader(ram, spec, chain);
    // Descriptors take table slots in turn; past the table size they wrap and overwrite (on purpose).
    const indices = spec.descs.map(() => nextIndex++ % ring.size);
    spec.descs.forEach((desc, i) => {
      const { addr, len, flags } = ringDescriptor(ring, desc, chain, allowance, shared);
      const last = i === spec.descs.length - 1;
      let next = indices[i + 1] ?? 0;
      let allFlags = flags;
      if (desc.next === "random") next = desc.randomNext % (ring.size + 4);
      if (desc.next === "random" || (desc.next === "chain" && !last)) allFlags |= VRING_DESC_F_NEXT;
      ring.writeDescriptor(indices[0 + i]!, { addr, len, flags: allFlags, next });
    });
    ring.publish(spec.forgedHead ?? indices[0]!);
    published++;
  });
  if (testCase.availJump !== null) ring.setAvailIndex(testCase.availJump);
  return { splitPublished: published, packedSlots: [] };
}

function fillPacked(
  ring: DriverPackedQueue,
  testCase: RingCase,
  ram: GuestRam,
  allowance: WriteAllowance,
): Published {
  const slots: { next: boolean; id: number }[] = [];
  const shared = placeSharedTable(testCase, ram, allowance);
  // The chains that fit the ring; NEXT past the last of them would read slots never published.
  let fitting = 0;
  for (let used = 0; fitting < testCase.chains.length; fitting++) {
    used += testCase.chains[fitting]!.descs.length;
    if (used > ring.size) break;
  }
  for (const [chain, spec] of testCase.chains.slice(0, fitting).entries()) {
    writeHeader(ram, spec, chain);
    const lastChain = chain === fitting - 1;
    const descriptors = spec.descs.map((desc, i) => {
      const { addr, len, flags } = ringDescriptor(ring, desc, chain, allowance, shared);
      const lastDesc = i === spec.descs.length - 1;
      // NEXT on a chain's last descriptor runs into the next chain; never past what was published.
      const next = lastDesc ? desc.next === "random" && !lastChain : desc.next !== "stop";
      // Ids are unique per chain; a chain's id is the one on its last descriptor.
      const id = lastDesc ? chain : desc.randomNext;
      slots.push({ next, id });
      return { addr, len, id, flags: flags | (next ? VRING_DESC_F_NEXT : 0) };
    });
    ring.publishChain(descriptors);
  }
  return { splitPublished: 0, packedSlots: slots };
}

/** Checks the used ring against what GET_VRING_BASE says was taken. */
function checkReturned(ring: DriverSplitQueue, ram: GuestRam, base: number): void {
  const { avail, used } = ring.addresses;
  const taken = base & 0xffff;
  const usedIdx = ram.memory.readU16(used + USED_IDX);
  assert.equal(usedIdx, taken, "every chain taken from the avail ring is in the used ring, once");
  const expected: number[] = [];
  const returned: number[] = [];
  for (let i = 0; i < taken; i++) {
    expected.push(ram.memory.readU16(avail + AVAIL_RING + 2 * (i & (ring.size - 1))));
    returned.push(ram.memory.readU32(used + USED_RING + USED_ELEM_SIZE * (i & (ring.size - 1))));
  }
  assert.deepEqual(returned.sort(), expected.sort(), "used heads are the heads taken");
}

/** Packed: the daemon takes whole chains (NEXT links slots); each comes back at its first slot. */
function checkReturnedPacked(
  ring: DriverPackedQueue,
  ram: GuestRam,
  base: number,
  published: Published,
): void {
  const availPosition = base & 0xffff;
  const consumed = (availPosition & 0x7fff) + ((availPosition & 0x8000) === 0 ? ring.size : 0);
  // The device's grouping: a chain ends at the first slot without NEXT.
  const groups: { start: number; id: number }[] = [];
  let start = 0;
  let takenEnd = 0;
  published.packedSlots.forEach((slot, i) => {
    if (!slot.next) {
      if (i < consumed) {
        groups.push({ start, id: slot.id });
        takenEnd = i + 1;
      }
      start = i + 1;
    }
  });
  assert.equal(consumed, takenEnd, "the daemon took whole published chains, nothing past them");
  for (const group of groups) {
    const at = ring.addresses.desc + DESCRIPTOR_SIZE * group.start;
    const flags = ram.memory.readU16(at + 14);
    assert.ok(
      isUsed(flags, true),
      `chain at slot ${group.start} returned (flags 0x${flags.toString(16)})`,
    );
    assert.equal(ram.memory.readU16(at + PACKED_DESC_ID), group.id, "used id is the chain's id");
  }
}

/** Fills every region with the guard pattern. */
function fillGuard(ram: GuestRam): void {
  for (const [gpa, size] of REGIONS) ram.memory.write(gpa, new Uint8Array(size).fill(GUARD));
}

function snapshot(ram: GuestRam): Uint8Array[] {
  return REGIONS.map(([gpa, size]) => {
    const copy = new Uint8Array(size);
    ram.memory.read(gpa, copy);
    return copy;
  });
}

function checkGuard(before: Uint8Array[], after: Uint8Array[], allowance: WriteAllowance): void {
  REGIONS.forEach(([base, size], r) => {
    const a = before[r]!;
    const b = after[r]!;
    for (let i = 0; i < size; i++) {
      if (a[i] !== b[i] && !allowance.allows(base + i)) {
        assert.fail(
          `daemon wrote guest memory at 0x${(base + i).toString(16)} (not a writable buffer nor the used ring)`,
        );
      }
    }
  });
}

async function runCase(path: string, testCase: RingCase): Promise<void> {
  const { frontend, negotiated } = await whenSocketFree(async () => {
    const connection = VhostUserFrontend.connect(path);
    try {
      return { frontend: connection, negotiated: await realize(connection) };
    } catch (error) {
      connection.close();
      throw error;
    }
  });
  const ram = new GuestRam(REGIONS.map(([guestPhysAddr, size]) => ({ guestPhysAddr, size })));
  const kick = EventFd.create();
  const call = EventFd.create();
  try {
    fillGuard(ram);
    const allowance = new WriteAllowance();
    let ring: DriverSplitQueue | DriverPackedQueue;
    let published: Published;
    if (testCase.packed) {
      const packedRing = new DriverPackedQueue(ram.memory, 0, testCase.size, {
        eventIdx: testCase.eventIdx,
      });
      const sizes = packedRingSizes(testCase.size);
      // The device writes used descriptors over the descriptor ring, and its event suppression area.
      allowance.add(0n, sizes.desc);
      allowance.add(BigInt(packedRing.addresses.device), sizes.device);
      published = fillPacked(packedRing, testCase, ram, allowance);
      ring = packedRing;
    } else {
      const splitRing = new DriverSplitQueue(ram.memory, 0, testCase.size, {
        eventIdx: testCase.eventIdx,
      });
      allowance.add(
        BigInt(splitRing.addresses.used),
        splitRingSizes(testCase.size, testCase.eventIdx).used,
      );
      published = fillSplit(splitRing, testCase, ram, allowance);
      ring = splitRing;
    }
    const before = snapshot(ram);

    let features = QEMU_FEATURES | (testCase.packed ? VIRTIO_F_RING_PACKED : 0n);
    if (!testCase.indirect) features &= ~VIRTIO_F_RING_INDIRECT_DESC;
    if (!testCase.eventIdx) features &= ~VIRTIO_F_RING_EVENT_IDX;
    const queue: FrontendQueue = { index: 0, driver: ring, kick, call };
    // Restarting on our ring: the daemon sees the chains as soon as the ring is enabled.
    await startQueues(frontend, ram, {
      negotiated,
      features,
      queueSize: testCase.size,
      queues: [queue],
    });
    await frontend.getFeatures(); // barrier: the ring was processed while the start was handled
    const base = await frontend.getVringBase(0);
    const after = snapshot(ram);
    if (ring instanceof DriverPackedQueue) checkReturnedPacked(ring, ram, base, published);
    else checkReturned(ring, ram, base);
    checkGuard(before, after, allowance);
  } finally {
    frontend.close();
    await frontend.whenClosed();
    kick.close();
    call.close();
    ram.close();
  }
}

describe("fuzzing descriptor chains in guest memory against the real daemon", () => {
  let daemon: ThreeSocketDaemon;

  before(async () => {
    daemon = await startThreeSocketDaemon();
  });

  after(async () => {
    await daemon?.stop();
  });

  for (const packed of [false, true]) {
    const kind = packed ? "packed" : "split";
    const path = () => daemon.paths[packed ? 1 : 0]!;
    it(`${kind} ring: no crash, no stray write, every taken chain returned once, serves afterwards`, async () => {
      await fc.assert(
        fc.asyncProperty(ringCase(packed), async (testCase) => {
          await runCase(path(), testCase);
          assert.equal(daemon.daemon.hasExited, false, "the daemon is alive");
          await assertServes(path());
        }),
        fuzzParameters(600),
      );
      await assertServes(daemon.paths[2]!);
    });
  }
});
