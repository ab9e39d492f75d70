import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  ArrayBufferBacking,
  createArrayGuestMemory,
  emptyWindow,
  GuestMemory,
  GuestMemoryError,
  type MemoryRegionInfo,
} from "./guest-memory.js";

const SMALL_WINDOWS = { windowSize: 4096, windowOverlap: 256 };

function assertCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof GuestMemoryError, `expected GuestMemoryError, got ${String(error)}`);
    assert.equal(error.code, code);
    return true;
  });
}

function memoryWith(infos: readonly MemoryRegionInfo[], options = SMALL_WINDOWS) {
  const backings = infos.map((info) => new ArrayBufferBacking(info.size));
  const memory = new GuestMemory(
    infos.map((info, i) => ({ info, backing: backings[i]! })),
    options,
  );
  return { memory, backings };
}

/** Two regions touching at 0x10000, a hole, then a third region; small windows. */
function gappyMemory() {
  return memoryWith([
    { guestPhysAddr: 0x1000, size: 0xf000, userAddr: 0x7f0000001000 },
    { guestPhysAddr: 0x10000, size: 0x3000, userAddr: 0x500000000 },
    { guestPhysAddr: 0x20000, size: 0x2000, userAddr: 0x600000000 },
  ]);
}

describe("GuestMemory constructor", () => {
  it("rejects empty, overlapping, non-integral and too large regions with EINVAL", () => {
    const backing = () => new ArrayBufferBacking(16);
    const make = (...infos: MemoryRegionInfo[]) =>
      new GuestMemory(infos.map((info) => ({ info, backing: backing() })));
    assertCode(() => make({ guestPhysAddr: 0, size: 0, userAddr: 0 }), "EINVAL");
    assertCode(() => make({ guestPhysAddr: 0.5, size: 16, userAddr: 0 }), "EINVAL");
    assertCode(() => make({ guestPhysAddr: -16, size: 16, userAddr: 0 }), "EINVAL");
    assertCode(() => make({ guestPhysAddr: 2 ** 53, size: 16, userAddr: 0 }), "EINVAL");
    assertCode(() => make({ guestPhysAddr: 2 ** 53 - 8, size: 16, userAddr: 0 }), "EINVAL");
    assertCode(() => make({ guestPhysAddr: 0, size: 16, userAddr: 2 ** 53 - 8 }), "EINVAL");
    assertCode(() => make({ guestPhysAddr: 0, size: Number.NaN, userAddr: 0 }), "EINVAL");
    assertCode(
      () =>
        make(
          { guestPhysAddr: 0, size: 16, userAddr: 0 },
          { guestPhysAddr: 15, size: 16, userAddr: 100 },
        ),
      "EINVAL",
    );
    assertCode(
      () =>
        make(
          { guestPhysAddr: 0, size: 16, userAddr: 0 },
          { guestPhysAddr: 100, size: 16, userAddr: 8 },
        ),
      "EINVAL",
    );
    assertCode(() => new GuestMemory([], { windowSize: 0 }), "EINVAL");
    assertCode(() => new GuestMemory([], { windowOverlap: -1 }), "EINVAL");
  });

  it("accepts touching regions and one ending exactly at 2^53", () => {
    const { memory } = memoryWith([
      { guestPhysAddr: 0, size: 16, userAddr: 16 },
      { guestPhysAddr: 16, size: 16, userAddr: 0 },
      { guestPhysAddr: 2 ** 53 - 16, size: 16, userAddr: 64 },
    ]);
    assert.equal(memory.regions.length, 3);
    memory.writeU32(2 ** 53 - 4, 0xdeadbeef);
    assert.equal(memory.readU32(2 ** 53 - 4), 0xdeadbeef);
    assertCode(() => memory.readU32(2 ** 53 - 3), "EFAULT");
  });

  it("finds every one of 509 regions given in any order", () => {
    const infos = Array.from({ length: 509 }, (_, i) => ({
      guestPhysAddr: ((i * 7919) % 509) * 0x2000,
      size: 0x1000,
      userAddr: 0x100000 + i * 0x1000,
    }));
    const { memory } = memoryWith(infos);
    for (const [i, info] of infos.entries()) memory.writeU16(info.guestPhysAddr + 0xffe, i);
    for (const [i, info] of infos.entries()) {
      assert.equal(memory.readU16(info.guestPhysAddr + 0xffe), i);
      assertCode(() => memory.readU16(info.guestPhysAddr + 0x1000), "EFAULT");
      assert.equal(memory.uvaToGpa(info.userAddr + 3, 5), info.guestPhysAddr + 3);
    }
  });
});

describe("GuestMemory.slice", () => {
  it("returns a view aliasing guest memory when the range is in one window", () => {
    const { memory } = gappyMemory();
    const bytes = memory.slice(0x1010, 4);
    assert.ok(bytes);
    bytes.set([1, 2, 3, 4]);
    assert.equal(memory.readU32(0x1010), 0x04030201);
  });

  it("keeps any range up to the overlap in one window", () => {
    const { memory } = gappyMemory();
    fc.assert(
      fc.property(
        fc.integer({ min: 0x1000, max: 0xffff }),
        fc.integer({ min: 1, max: 256 }),
        (gpa, len) => {
          fc.pre(gpa + len <= 0x10000);
          assert.ok(memory.slice(gpa, len) !== null);
        },
      ),
    );
  });

  it("returns null across windows and across touching regions", () => {
    const { memory } = gappyMemory();
    // Region 0 starts at 0x1000: window 0 covers offsets [0, 4096 + 256).
    assert.ok(memory.slice(0x1000, 4096 + 256) !== null);
    assert.equal(memory.slice(0x1000, 4096 + 257), null);
    assert.equal(memory.slice(0xfff0, 0x20), null);
    assert.equal(memory.slice(0x1000, 0x12000), null);
  });

  it("throws EFAULT when any byte is outside guest memory", () => {
    const { memory } = gappyMemory();
    assertCode(() => memory.slice(0xfff, 1), "EFAULT");
    assertCode(() => memory.slice(0xfff, 2), "EFAULT");
    assert.ok(memory.slice(0x12fff, 1));
    assertCode(() => memory.slice(0x13000, 1), "EFAULT");
    assertCode(() => memory.slice(0x12fff, 2), "EFAULT");
    assertCode(() => memory.slice(0x1000, 0x12001), "EFAULT");
    assertCode(() => memory.slice(0x1ffff, 2), "EFAULT");
    assert.ok(memory.slice(0x21fff, 1));
    assertCode(() => memory.slice(0x21fff, 2), "EFAULT");
  });

  it("throws EFAULT for negative, fractional and overflowing arguments", () => {
    const { memory } = gappyMemory();
    for (const [gpa, len] of [
      [-1, 1],
      [0x1000, -1],
      [4096.5, 1],
      [0x1000, 1.5],
      [Number.NaN, 1],
      [0x1000, Number.POSITIVE_INFINITY],
      [0x1000, 2 ** 53],
      [2 ** 53 - 1, 2],
    ] as const) {
      assertCode(() => memory.slice(gpa, len), "EFAULT");
    }
  });
});

describe("GuestMemory read and write", () => {
  it("copy across windows and touching regions, and fault without a partial copy", () => {
    const { memory } = gappyMemory();
    const data = Uint8Array.from({ length: 0x9000 }, (_, i) => (i * 31 + 7) & 0xff);
    memory.write(0xa000, data);
    const back = new Uint8Array(data.length);
    memory.read(0xa000, back);
    assert.deepEqual(back, data);
    const before = new Uint8Array(0x100);
    memory.read(0x12f00, before);
    assertCode(() => memory.write(0x12f00, new Uint8Array(0x101).fill(0xee)), "EFAULT");
    const after = new Uint8Array(0x100);
    memory.read(0x12f00, after);
    assert.deepEqual(after, before);
  });

  it("behave like one flat byte array over the regions (random ranges)", () => {
    const layout = [
      { start: 0x0, size: 0x3000 },
      { start: 0x3000, size: 0x1800 },
      { start: 0x5000, size: 0x2100 },
    ];
    const limit = 0x8000;
    // An empty range still needs its address in guest memory.
    const backed = (gpa: number, len: number) => {
      for (let a = gpa; a < gpa + Math.max(len, 1); a++) {
        if (!layout.some((r) => a >= r.start && a < r.start + r.size)) return false;
      }
      return true;
    };
    const access = fc.record({
      gpa: fc.integer({ min: 0, max: limit }),
      len: fc.integer({ min: 0, max: 0x2000 }),
      seed: fc.integer({ min: 0, max: 255 }),
      write: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(access, { maxLength: 20 }), (accesses) => {
        const memory = createArrayGuestMemory(
          layout.map((r) => ({ guestPhysAddr: r.start, size: r.size })),
          { windowSize: 1024, windowOverlap: 64 },
        );
        const model = new Uint8Array(limit + 0x2000);
        for (const { gpa, len, seed, write } of accesses) {
          const ok = backed(gpa, len);
          const buffer = Uint8Array.from({ length: len }, (_, i) => (seed + i) & 0xff);
          const run = () => (write ? memory.write(gpa, buffer) : memory.read(gpa, buffer));
          assert.equal(memory.isBacked(gpa, len), ok);
          if (!ok) {
            assertCode(run, "EFAULT");
            continue;
          }
          run();
          if (write) model.set(buffer, gpa);
          else assert.deepEqual(buffer, model.subarray(gpa, gpa + len));
          const slice = memory.slice(gpa, len);
          if (slice !== null) assert.deepEqual(slice, model.subarray(gpa, gpa + len));
        }
      }),
    );
  });
});

describe("GuestMemory scalars", () => {
  it("are little-endian and work across window and region boundaries", () => {
    const { memory } = memoryWith(
      [
        { guestPhysAddr: 0, size: 0x2002, userAddr: 0 },
        { guestPhysAddr: 0x2002, size: 0x1000, userAddr: 0x10000 },
      ],
      { windowSize: 0x1000, windowOverlap: 0 },
    );
    for (const gpa of [0x10, 0xfff, 0xffd, 0x2000, 0x2001, 0x1fff]) {
      memory.writeU32(gpa, 0x12345678);
      assert.equal(memory.readU32(gpa), 0x12345678);
      assert.equal(memory.readU16(gpa), 0x5678);
      const bytes = new Uint8Array(4);
      memory.read(gpa, bytes);
      assert.deepEqual([...bytes], [0x78, 0x56, 0x34, 0x12]);
      memory.writeU16(gpa + 1, 0xabcd);
      assert.equal(memory.readU32(gpa), 0x12abcd78);
    }
    memory.write(0x1ffc, Uint8Array.of(1, 2, 3, 4, 5, 6, 0x1f, 0));
    assert.equal(memory.readU64(0x1ffc), 0x1f060504030201);
  });

  it("readU64 reports ERANGE at 2^53 and above", () => {
    const memory = createArrayGuestMemory([{ guestPhysAddr: 0, size: 64 }]);
    memory.write(0, Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0));
    assert.equal(memory.readU64(0), 2 ** 53 - 1);
    memory.write(8, Uint8Array.of(0, 0, 0, 0, 0, 0, 0x20, 0));
    assertCode(() => memory.readU64(8), "ERANGE");
  });

  it("check bounds and values", () => {
    const memory = createArrayGuestMemory([{ guestPhysAddr: 0x100, size: 0x100 }]);
    assertCode(() => memory.readU16(0xff), "EFAULT");
    assertCode(() => memory.readU32(0x1fd), "EFAULT");
    assertCode(() => memory.readU64(0x1f9), "EFAULT");
    assertCode(() => memory.writeU16(0x1ff, 0), "EFAULT");
    assertCode(() => memory.writeU32(0x1fd, 0), "EFAULT");
    assertCode(() => memory.writeU16(0x100, 0x10000), "EINVAL");
    assertCode(() => memory.writeU32(0x100, -1), "EINVAL");
    assertCode(() => memory.writeU32(0x100, 1.5), "EINVAL");
  });
});

describe("GuestMemory.view", () => {
  it("returns a DataView and offset inside one window, EFAULT otherwise", () => {
    const { memory } = gappyMemory();
    const { dv, offset } = memory.view(0x1104, 8);
    dv.setUint32(offset, 0xcafe, true);
    assert.equal(memory.readU32(0x1104), 0xcafe);
    assertCode(() => memory.view(0x1000, 4096 + 257), "EFAULT");
    assertCode(() => memory.view(0xfffe, 4), "EFAULT");
    assertCode(() => memory.view(0x13000, 1), "EFAULT");
  });
});

describe("GuestMemory.locate", () => {
  it("points the caller's window at a range in one window, as slice sees it", () => {
    const { memory } = gappyMemory();
    const found = emptyWindow();
    fc.assert(
      fc.property(
        fc.integer({ min: 0x1000, max: 0x12fff }),
        fc.integer({ min: 1, max: 600 }),
        (gpa, len) => {
          fc.pre(gpa + len <= 0x13000);
          const slice = memory.slice(gpa, len);
          assert.equal(memory.locate(gpa, len, found), slice !== null);
          if (slice === null) return;
          assert.equal(found.bytes.buffer, slice.buffer);
          assert.equal(found.bytes.byteOffset + found.offset, slice.byteOffset);
          assert.equal(found.dv.buffer, slice.buffer);
          assert.equal(found.dv.byteOffset + found.offset, slice.byteOffset);
        },
      ),
    );
  });

  it("returns false across windows and regions, throws EFAULT outside guest memory", () => {
    const { memory } = gappyMemory();
    const found = emptyWindow();
    assert.equal(memory.locate(0x1000, 4096 + 257, found), false);
    assert.equal(memory.locate(0xfff0, 0x20, found), false);
    assertCode(() => memory.locate(0xfff, 2, found), "EFAULT");
    assertCode(() => memory.locate(0x12fff, 2, found), "EFAULT");
    assertCode(() => memory.locate(-1, 1, found), "EFAULT");
  });
});

describe("GuestMemory windows", () => {
  it("are created on first use, once, and never past the region", () => {
    const { memory, backings } = memoryWith(
      [{ guestPhysAddr: 0, size: 10000, userAddr: 0 }],
      SMALL_WINDOWS,
    );
    const backing = backings[0]!;
    assert.deepEqual(backing.viewRequests, []);
    memory.readU32(9000);
    memory.readU32(8200);
    memory.slice(8192, 100);
    assert.deepEqual(backing.viewRequests, [{ offset: 8192, length: 10000 - 8192 }]);
    memory.read(0, new Uint8Array(10000));
    assert.deepEqual(backing.viewRequests.slice(1), [
      { offset: 0, length: 4096 + 256 },
      { offset: 4096, length: 4096 + 256 },
    ]);
  });
});

describe("GuestMemory.uvaToGpa", () => {
  it("translates ranges inside one region and rejects the rest with EFAULT", () => {
    const { memory } = gappyMemory();
    assert.equal(memory.uvaToGpa(0x7f0000001000, 0xf000), 0x1000);
    assert.equal(memory.uvaToGpa(0x500000010, 0x10), 0x10010);
    assert.equal(memory.uvaToGpa(0x600001fff, 1), 0x21fff);
    assertCode(() => memory.uvaToGpa(0x600001fff, 2), "EFAULT");
    assertCode(() => memory.uvaToGpa(0x7f0000000fff, 1), "EFAULT");
    assertCode(() => memory.uvaToGpa(-1, 1), "EFAULT");
    assertCode(() => memory.uvaToGpa(0x500000000, 2 ** 53), "EFAULT");
  });
});

describe("GuestMemory.close", () => {
  it("closes every backing once and makes later accesses fault", () => {
    const closed: number[] = [];
    const memory = new GuestMemory(
      [0, 1].map((i) => ({
        info: { guestPhysAddr: i * 0x1000, size: 0x1000, userAddr: i * 0x1000 },
        backing: {
          view: (_o: number, length: number) => new ArrayBuffer(length),
          close: () => closed.push(i),
        },
      })),
    );
    memory.readU32(0x1000);
    memory.close();
    memory.close();
    assert.deepEqual(closed, [0, 1]);
    assertCode(() => memory.readU32(0x1000), "EFAULT");
    assertCode(() => memory.slice(0, 1), "EFAULT");
  });
});
