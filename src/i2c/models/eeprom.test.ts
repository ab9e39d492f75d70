import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { r, w } from "../../../test/helpers/i2c-messages.js";
import { createModel, findModel, ModelError, modelContext, type SimDevice } from "../model.js";
import { SimBus, simTargets } from "../sim-bus.js";
import { EEPROM_GEOMETRIES, type EepromGeometry, eepromModel } from "./eeprom.js";

const ADDR = 0x50;

/**
 * A chip without its write cycle (tests of memory and pointer rules run transfers back to back,
 * which a chip in its cycle would NACK); the cycle has its own tests below.
 */
function setup(name = "24c02", options: Record<string, unknown> = {}, baseDir?: string) {
  const context = modelContext(
    baseDir === undefined ? { address: ADDR } : { address: ADDR, baseDir },
  );
  const device: SimDevice = findModel(name).create({ writeCycleMs: 0, ...options }, context);
  const bus = new SimBus(simTargets(new Map([[ADDR, device]])));
  const pointer = () => device.properties?.pointer?.get();
  const memory = () => {
    assert.ok(device.memory);
    return device.memory.read(0, device.memory.size);
  };
  /** Random read: 1-byte word address on a block target, or 2-byte address. */
  const readAt = (offset: number, len: number, wide = false) => {
    const msg = r(ADDR, len);
    const select = wide
      ? w(ADDR, offset >> 8, offset & 0xff)
      : w(ADDR + (offset >> 8), offset & 0xff);
    const readMsg = wide ? msg : { ...msg, addr: ADDR + (offset >> 8) };
    assert.equal(bus.transfer([select, readMsg]), 2);
    return [...readMsg.buf];
  };
  return { device, bus, readAt, pointer, memory };
}

const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "eeprom-test-"));
  dirs.push(dir);
  return dir;
};
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe("EEPROM 24c02", () => {
  it("starts erased (0xff) with the pointer at 0", () => {
    const { pointer, readAt } = setup();
    assert.equal(pointer(), 0);
    assert.deepEqual(readAt(0, 4), [0xff, 0xff, 0xff, 0xff]);
  });

  it("write then repeated-START read is a random read", () => {
    const { bus, readAt } = setup();
    assert.equal(bus.transfer([w(ADDR, 0x10, 1, 2, 3)]), 1);
    assert.deepEqual(readAt(0x10, 3), [1, 2, 3]);
    assert.deepEqual(readAt(0x11, 1), [2]);
  });

  it("the pointer persists between transfers (current-address read)", () => {
    const { bus, pointer } = setup();
    bus.transfer([w(ADDR, 0x20, 0xaa, 0xbb)]);
    bus.transfer([w(ADDR, 0x20)]);
    assert.equal(pointer(), 0x20);
    const first = r(ADDR, 1);
    const second = r(ADDR, 1);
    bus.transfer([first]);
    bus.transfer([second]);
    assert.deepEqual([first.buf[0], second.buf[0]], [0xaa, 0xbb]);
    assert.equal(pointer(), 0x22);
  });

  it("writes wrap around inside the current 8-byte page", () => {
    const { bus, readAt } = setup();
    bus.transfer([w(ADDR, 0x0e, 1, 2, 3, 4)]);
    assert.deepEqual(readAt(0x08, 8), [3, 4, 0xff, 0xff, 0xff, 0xff, 1, 2]);
    assert.deepEqual(readAt(0x10, 1), [0xff], "the next page is untouched");
  });

  it("reads roll over from the end of memory to address 0", () => {
    const { bus, readAt } = setup();
    bus.transfer([w(ADDR, 0x00, 0x42)]);
    bus.transfer([w(ADDR, 0xff, 0x24)]);
    assert.deepEqual(readAt(0xff, 2), [0x24, 0x42]);
  });

  it("written bytes are committed at STOP, and a repeated START before STOP discards them", () => {
    const { bus, readAt, memory } = setup();
    const msg = r(ADDR, 1);
    assert.equal(bus.transfer([w(ADDR, 0x30, 9), w(ADDR, 0x30), msg]), 3);
    assert.deepEqual([...msg.buf], [0xff]);
    assert.equal(memory()[0x30], 0xff);
    assert.deepEqual(readAt(0x30, 1), [0xff]);
  });

  it("a zero-length write (quick probe) is ACKed and changes nothing", () => {
    const { bus, pointer } = setup();
    bus.transfer([w(ADDR, 0x05)]);
    assert.equal(bus.transfer([w(ADDR)]), 1);
    assert.equal(pointer(), 0x05);
  });

  it("takes initial contents as hex or bytes and keeps the rest erased", () => {
    assert.deepEqual(setup("24c02", { initial: "0102" }).readAt(0, 3), [1, 2, 0xff]);
    assert.deepEqual(setup("24c02", { initial: Uint8Array.of(7) }).readAt(0, 2), [7, 0xff]);
  });

  it("readOnly (WP) acknowledges writes, moves the pointer and keeps the memory", () => {
    const { bus, readAt, pointer } = setup("24c02", { readOnly: true, initial: "aa" });
    assert.equal(bus.transfer([w(ADDR, 0x00, 1, 2)]), 1);
    assert.equal(pointer(), 2);
    assert.deepEqual(readAt(0, 2), [0xaa, 0xff]);
  });

  it("memory writes from the operator are visible to the guest", () => {
    const { device, readAt } = setup();
    device.memory?.write(0x40, Uint8Array.of(5, 6));
    assert.deepEqual(readAt(0x40, 2), [5, 6]);
    assert.throws(
      () => device.memory?.read(0xff, 2),
      (e: unknown) => e instanceof ModelError && e.code === "I2C_MODEL_OUT_OF_RANGE",
    );
  });

  it("matches a flat memory reference for any sequence of page writes and reads", () => {
    const op = fc.oneof(
      fc.record({
        kind: fc.constant("write" as const),
        offset: fc.nat(255),
        data: fc.uint8Array({ maxLength: 12 }),
      }),
      fc.record({ kind: fc.constant("read" as const), offset: fc.nat(255), len: fc.nat(300) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 20 }), (ops) => {
        const { bus, readAt } = setup();
        const reference = new Uint8Array(256).fill(0xff);
        for (const o of ops) {
          if (o.kind === "write") {
            bus.transfer([w(ADDR, o.offset, ...o.data)]);
            const page = o.offset & ~7;
            o.data.forEach((byte, i) => {
              reference[page | ((o.offset + i) & 7)] = byte;
            });
          } else {
            const expected = Array.from(
              { length: o.len },
              (_, i) => reference[(o.offset + i) & 255],
            );
            assert.deepEqual(readAt(o.offset, o.len), expected);
          }
        }
      }),
    );
  });
});

describe("EEPROM family geometry", () => {
  it("has the at24 sizes, pages and word-address widths", () => {
    const table = Object.fromEntries(
      EEPROM_GEOMETRIES.map((g) => [g.name, [g.size, g.pageSize, g.addressBytes]]),
    );
    assert.deepEqual(table, {
      "24c01": [128, 8, 1],
      "24c02": [256, 8, 1],
      "24c04": [512, 16, 1],
      "24c08": [1024, 16, 1],
      "24c16": [2048, 16, 1],
      "24c32": [4096, 32, 2],
      "24c64": [8192, 32, 2],
      "24c128": [16384, 64, 2],
      "24c256": [32768, 64, 2],
      "24c512": [65536, 128, 2],
    });
  });

  it("24c01 wraps its 7-bit address: 0x80 is 0x00, reads roll over at 128", () => {
    const { bus, readAt } = setup("24c01");
    bus.transfer([w(ADDR, 0x80, 0x11)]);
    assert.deepEqual(readAt(0x00, 1), [0x11]);
    bus.transfer([w(ADDR, 0x7f, 0x22)]);
    bus.transfer([w(ADDR, 0x7f)]);
    const msg = r(ADDR, 2);
    bus.transfer([msg]);
    assert.deepEqual([...msg.buf], [0x22, 0x11]);
  });

  it("24c04/08/16 answer on 2/4/8 addresses; the address offset selects the 256-byte block", () => {
    for (const [name, blocks] of [
      ["24c04", 2],
      ["24c08", 4],
      ["24c16", 8],
    ] as const) {
      const { device, bus, memory } = setup(name);
      assert.equal(device.targets.length, blocks, name);
      for (let b = 0; b < blocks; b++) bus.transfer([w(ADDR + b, 0x10, b + 1)]);
      const mem = memory();
      for (let b = 0; b < blocks; b++)
        assert.equal(mem[b * 256 + 0x10], b + 1, `${name} block ${b}`);
      assert.equal(bus.transfer([w(ADDR + blocks, 0)]), 0, `${name}: no target past its blocks`);
    }
  });

  it("24c16: one pointer shared by all targets; sequential reads cross blocks and roll over", () => {
    const { bus, pointer, readAt } = setup("24c16");
    bus.transfer([w(ADDR + 7, 0xff, 0x77)]);
    assert.equal(pointer(), 0x7f0, "page wrap inside the last page");
    bus.transfer([w(ADDR + 1, 0x00, 0x88)]);
    bus.transfer([w(ADDR, 0x00, 0x99)]);
    assert.deepEqual(readAt(0x7ff, 3), [0x77, 0x99, 0xff]);
    bus.transfer([w(ADDR + 0, 0xff)]);
    const msg = r(ADDR + 5, 2); // current-address read on another target uses the shared pointer
    bus.transfer([msg]);
    assert.deepEqual([...msg.buf], [0xff, 0x88]);
  });

  it("24c32 and up take a 16-bit big-endian word address", () => {
    for (const name of ["24c32", "24c64", "24c128", "24c256", "24c512"]) {
      const { bus, readAt, memory, device } = setup(name);
      const size = device.memory?.size ?? 0;
      const offset = size - 3;
      bus.transfer([w(ADDR, offset >> 8, offset & 0xff, 0xab)]);
      assert.equal(memory()[offset], 0xab, name);
      assert.deepEqual(readAt(offset, 1, true), [0xab], name);
      assert.deepEqual(readAt(size - 1, 2, true).slice(1), [0xff], `${name} rolls over`);
    }
  });

  it("24c512 page write wraps inside its 128-byte page", () => {
    const { bus, memory } = setup("24c512");
    bus.transfer([w(ADDR, 0x01, 0x7f, 1, 2)]);
    const mem = memory();
    assert.deepEqual([mem[0x17f], mem[0x100], mem[0x180]], [1, 2, 0xff]);
  });
});

describe("EEPROM backing file", () => {
  it("creates the file from initial, writes through at STOP, and reopens with the content", () => {
    const dir = tempDir();
    const first = setup("24c02", { backing: "eeprom.bin", initial: "0102" }, dir);
    assert.deepEqual([...readFileSync(join(dir, "eeprom.bin")).subarray(0, 3)], [1, 2, 0xff]);
    first.bus.transfer([w(ADDR, 0x10, 0xde, 0xad)]);
    assert.deepEqual([...readFileSync(join(dir, "eeprom.bin")).subarray(0x10, 0x12)], [0xde, 0xad]);
    first.device.close?.();
    const second = setup("24c02", { backing: "eeprom.bin", initial: "ffff" }, dir);
    assert.deepEqual(second.readAt(0, 2), [1, 2], "an existing file wins over initial");
    assert.deepEqual(second.readAt(0x10, 2), [0xde, 0xad]);
    second.device.close?.();
  });

  it("refuses a file of another size with I2C_BACKING_SIZE", () => {
    const dir = tempDir();
    setup("24c02", { backing: "x.bin" }, dir).device.close?.();
    assert.throws(
      () => setup("24c04", { backing: "x.bin" }, dir),
      (e: unknown) => e instanceof ModelError && e.code === "I2C_BACKING_SIZE",
    );
  });
});

describe("EEPROM options", () => {
  it("refuses bad options with I2C_MODEL_BAD_OPTIONS naming the key", () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ readOnly: "yes" }, /options\.readOnly: expected true or false/],
      [{ initial: "xyz" }, /options\.initial: expected bytes as a hex string/],
      [{ initial: "00".repeat(257) }, /at most 256/],
      [
        { backng: "a.bin" },
        /options\.backng: expected no such option \(known: backing, initial, readOnly, writeCycleMs\)/,
      ],
    ];
    for (const [options, message] of cases) {
      assert.throws(
        () => setup("24c02", options),
        (e: unknown) =>
          e instanceof ModelError && e.code === "I2C_MODEL_BAD_OPTIONS" && message.test(e.message),
        JSON.stringify(options),
      );
    }
  });
});

describe("createModel (legacy)", () => {
  it("creates a 24c02 by name with contents", () => {
    const model = createModel("24c02", { contents: Uint8Array.of(0x12) });
    const bus = new SimBus(new Map([[ADDR, model]]));
    const msg = r(ADDR, 2);
    assert.equal(bus.transfer([w(ADDR, 0), msg]), 2);
    assert.deepEqual([...msg.buf], [0x12, 0xff]);
  });

  it("refuses unknown names with code I2C_UNKNOWN_MODEL and lists the known ones", () => {
    assert.throws(
      () => createModel("24c99"),
      (e: unknown) =>
        e instanceof ModelError && e.code === "I2C_UNKNOWN_MODEL" && /24c02/.test(e.message),
    );
    assert.throws(() => createModel("toString"), ModelError);
  });
});

/** What a handover carries: the saved state through JSON. */
const carried = (device: SimDevice): unknown => {
  assert.ok(device.saveState);
  return JSON.parse(JSON.stringify(device.saveState()));
};
const badState = (e: unknown) => e instanceof ModelError && e.code === "I2C_MODEL_BAD_STATE";

describe("EEPROM saveState / restoreState", () => {
  for (const name of ["24c02", "24c16", "24c32"]) {
    it(`${name}: a fresh chip given the state reads and writes on as the saved one`, () => {
      const wide = name === "24c32";
      const saved = setup(name);
      const fresh = setup(name);
      const size = saved.device.memory?.size ?? 0;
      saved.device.memory?.write(size - 2, Uint8Array.of(0xa1, 0xa2)); // over the control socket
      const offset = size / 2 + 5;
      const select = wide ? [offset >> 8, offset & 0xff] : [offset & 0xff];
      assert.equal(saved.bus.transfer([w(ADDR + (wide ? 0 : offset >> 8), ...select, 7, 8)]), 1);
      saved.readAt(offset - 1, 2, wide); // the pointer stops past the bytes read
      fresh.device.restoreState?.(carried(saved.device));
      assert.deepEqual(fresh.memory(), saved.memory());
      assert.equal(fresh.pointer(), saved.pointer());
      const next = (chip: typeof saved) => {
        const msg = r(ADDR, 3); // current-address read: from the pointer
        assert.equal(chip.bus.transfer([msg]), 1);
        return [...msg.buf];
      };
      assert.deepEqual(next(fresh), next(saved));
      assert.deepEqual(next(fresh), [0xff, 0xff, 0xff]);
    });
  }

  it("with a backing file: the memory is the file's, the pointer the state's", () => {
    const dir = tempDir();
    const saved = setup("24c02", { backing: "e.bin" }, dir);
    saved.bus.transfer([w(ADDR, 0x40, 1, 2, 3)]);
    const state = carried(saved.device);
    assert.deepEqual(state, { pointer: 0x43 }, "no memory: the file holds it");
    saved.device.close?.();
    const fresh = setup("24c02", { backing: "e.bin" }, dir);
    fresh.device.restoreState?.(state);
    assert.equal(fresh.pointer(), 0x43);
    assert.deepEqual(fresh.readAt(0x40, 3), [1, 2, 3]);
    assert.throws(
      () => fresh.device.restoreState?.({ pointer: 0, memory: "ff".repeat(256) }),
      badState,
      "memory from a state never goes over the file",
    );
    fresh.device.close?.();
  });

  it("refuses a state it cannot take and changes nothing", () => {
    const { device, pointer, memory } = setup("24c02");
    const full = "00".repeat(256);
    for (const state of [
      undefined,
      "pointer",
      {},
      { memory: full },
      { pointer: 256, memory: full },
      { pointer: 0.5, memory: full },
      { pointer: 0 }, // no memory, and no file holds it
      { pointer: 0, memory: "00".repeat(255) },
      { pointer: 0, memory: "zz".repeat(256) },
      { pointer: 0, memory: full, page: [] },
    ]) {
      assert.throws(() => device.restoreState?.(state), badState, JSON.stringify(state));
    }
    assert.equal(pointer(), 0);
    assert.deepEqual(memory(), new Uint8Array(256).fill(0xff));
  });
});

describe("EEPROM write cycle (writeCycleMs)", () => {
  const geometry = EEPROM_GEOMETRIES.find((g) => g.name === "24c16");
  assert.ok(geometry);
  /** A 24c16 (8 targets) whose write cycle runs on a clock the test moves. */
  function cycling(writeCycleMs?: number) {
    const clock = { ms: 1000, now: () => clock.ms };
    const options = writeCycleMs === undefined ? {} : { writeCycleMs };
    const device = eepromModel(geometry as EepromGeometry, clock).create(
      options,
      modelContext({ address: ADDR }),
    );
    const bus = new SimBus(simTargets(new Map([[ADDR, device]])));
    const readByte = (target = ADDR) => {
      const msgs = [w(target, 0x00), r(target, 1)];
      return bus.transfer(msgs) === 2 ? msgs[1]?.buf[0] : "nack";
    };
    return { clock, bus, readByte };
  }

  it("NACKs every target of the chip for tWR after a write's STOP, then answers with the new data", () => {
    const { clock, bus, readByte } = cycling(5);
    assert.equal(bus.transfer([w(ADDR, 0x00, 0x42)]), 1);
    assert.equal(readByte(), "nack", "busy right after the STOP");
    assert.equal(readByte(ADDR + 7), "nack", "on every block address");
    clock.ms += 4.9;
    assert.equal(bus.transfer([w(ADDR, 0x00, 0x43)]), 0, "a write during the cycle is NACKed too");
    clock.ms += 0.1;
    assert.equal(readByte(), 0x42, "the cycle is over 5 ms after the STOP");
  });

  it("starts no cycle for a word address alone, nor when it is 0", () => {
    const { bus, readByte } = cycling(5);
    assert.equal(bus.transfer([w(ADDR, 0x10)]), 1);
    assert.equal(readByte(), 0xff);
    const off = cycling(0);
    assert.equal(off.bus.transfer([w(ADDR, 0x00, 0x42)]), 1);
    assert.equal(off.readByte(), 0x42);
  });

  it("runs a 5 ms cycle when the option is left out, as the datasheets' tWR", () => {
    const { clock, bus, readByte } = cycling();
    assert.equal(bus.transfer([w(ADDR, 0x00, 0x42)]), 1);
    clock.ms += 4.9;
    assert.equal(readByte(), "nack");
    clock.ms += 0.1;
    assert.equal(readByte(), 0x42);
  });

  it("refuses a write cycle past 100 ms", () => {
    assert.throws(
      () => findModel("24c02").create({ writeCycleMs: 101 }, modelContext({ address: ADDR })),
      (e: unknown) => e instanceof ModelError && /writeCycleMs/.test(e.message),
    );
  });
});
