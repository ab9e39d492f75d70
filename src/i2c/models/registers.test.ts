import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { RegisterFile, RegisterPointer } from "./registers.js";

describe("RegisterPointer", () => {
  it("auto-increments and wraps at the end", () => {
    const p = new RegisterPointer(3);
    p.value = 2;
    assert.deepEqual([p.next(), p.next(), p.next()], [2, 0, 1]);
    p.value = 7;
    assert.equal(p.value, 1);
    assert.throws(() => new RegisterPointer(0), RangeError);
  });

  it("stays in range for any sequence of sets and steps", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.array(fc.integer({ min: -1, max: 1000 })),
        (count, ops) => {
          const p = new RegisterPointer(count);
          for (const op of ops) {
            if (op < 0) p.next();
            else p.value = op;
            assert.ok(p.value >= 0 && p.value < count);
          }
        },
      ),
    );
  });
});

describe("RegisterFile", () => {
  function chip(options: ConstructorParameters<typeof RegisterFile>[0]) {
    const regs = new Map<number, number>();
    const events: string[] = [];
    const file = new RegisterFile(options, {
      read: (reg) => regs.get(reg) ?? 0,
      write: (reg, value) => {
        regs.set(reg, value);
        events.push(`w${reg}=${value.toString(16)}`);
      },
      start: (read) => events.push(read ? "S-r" : "S-w"),
      stop: () => events.push("P"),
    });
    return { file, regs, events };
  }

  it("address byte then data; whole registers only; hooks in order", () => {
    const { file, events } = chip({ count: 4, width: 2 });
    file.start(false);
    file.write(Uint8Array.of(1, 0xab, 0xcd, 0xef));
    file.stop();
    assert.deepEqual(events, ["S-w", "w1=abcd", "P"]);
    assert.equal(file.pointer.value, 2);
  });

  it("reads a register value once per register (SMBus word reads are consistent)", () => {
    let reads = 0;
    const file = new RegisterFile(
      { count: 2, width: 2 },
      { read: () => ++reads * 0x0101, write: () => {} },
    );
    file.start(true);
    const out = new Uint8Array(4);
    file.read(out.subarray(0, 1));
    file.read(out.subarray(1, 4));
    assert.deepEqual([...out], [1, 1, 2, 2]);
  });

  it("refuses data in a read message", () => {
    const { file } = chip({ count: 1 });
    file.start(true);
    assert.equal(file.write(Uint8Array.of(1)), false);
  });
});

describe("RegisterFile nextRegister", () => {
  it("moves the pointer where the chip does: within a pair, for reads and writes", () => {
    const values = [10, 11, 12, 13];
    const file = new RegisterFile(
      { count: 4, nextRegister: (reg) => reg ^ 1 },
      {
        read: (reg) => values[reg] ?? 0,
        write: (reg, value) => {
          values[reg] = value;
        },
      },
    );
    file.start(false);
    file.write(Uint8Array.of(2, 0x22, 0x33, 0x44));
    file.stop();
    assert.deepEqual(values, [10, 11, 0x44, 0x33]);
    file.start(true);
    const into = new Uint8Array(3);
    file.read(into);
    file.stop();
    assert.deepEqual([...into], [0x33, 0x44, 0x33], "the pointer stays in the pair");
  });
});
