import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { I2cMessage } from "../bus.js";
import { createModel, ModelError } from "../model.js";
import { SimBus } from "../sim-bus.js";
import { EEPROM_24C02, Eeprom, EepromOptionsError } from "./eeprom.js";

const ADDR = 0x50;
const w = (...bytes: number[]): I2cMessage => ({
  addr: ADDR,
  read: false,
  buf: Uint8Array.from(bytes),
});
const r = (len: number): I2cMessage => ({ addr: ADDR, read: true, buf: new Uint8Array(len) });

function setup(eeprom = new Eeprom()) {
  const bus = new SimBus(new Map([[ADDR, eeprom]]));
  const readAt = (offset: number, len: number) => {
    const msg = r(len);
    assert.equal(bus.transfer([w(offset), msg]), 2);
    return [...msg.buf];
  };
  return { eeprom, bus, readAt };
}

describe("Eeprom (24c02)", () => {
  it("starts erased (0xff) with the pointer at 0", () => {
    const { eeprom, readAt } = setup();
    assert.equal(eeprom.pointer, 0);
    assert.deepEqual(readAt(0, 4), [0xff, 0xff, 0xff, 0xff]);
  });

  it("write then repeated-START read is a random read", () => {
    const { bus, readAt } = setup();
    assert.equal(bus.transfer([w(0x10, 1, 2, 3)]), 1);
    assert.deepEqual(readAt(0x10, 3), [1, 2, 3]);
    assert.deepEqual(readAt(0x11, 1), [2]);
  });

  it("the pointer persists between transfers (current-address read)", () => {
    const { bus, eeprom } = setup();
    bus.transfer([w(0x20, 0xaa, 0xbb)]);
    bus.transfer([w(0x20)]);
    assert.equal(eeprom.pointer, 0x20);
    const first = r(1);
    const second = r(1);
    bus.transfer([first]);
    bus.transfer([second]);
    assert.deepEqual([first.buf[0], second.buf[0]], [0xaa, 0xbb]);
    assert.equal(eeprom.pointer, 0x22);
  });

  it("writes wrap around inside the current 8-byte page", () => {
    const { bus, readAt } = setup();
    bus.transfer([w(0x0e, 1, 2, 3, 4)]);
    assert.deepEqual(readAt(0x08, 8), [3, 4, 0xff, 0xff, 0xff, 0xff, 1, 2]);
    assert.deepEqual(readAt(0x10, 1), [0xff], "the next page is untouched");
  });

  it("reads roll over from the end of memory to address 0", () => {
    const { bus, readAt } = setup();
    bus.transfer([w(0x00, 0x42)]);
    bus.transfer([w(0xff, 0x24)]);
    assert.deepEqual(readAt(0xff, 2), [0x24, 0x42]);
  });

  it("written bytes are committed at STOP, and a repeated START before STOP discards them", () => {
    const { eeprom, bus, readAt } = setup();
    const msg = r(1);
    assert.equal(bus.transfer([w(0x30, 9), w(0x30), msg]), 3);
    assert.deepEqual([...msg.buf], [0xff]);
    assert.equal(eeprom.contents()[0x30], 0xff);
    assert.deepEqual(readAt(0x30, 1), [0xff]);
  });

  it("a zero-length write (quick probe) is ACKed and changes nothing", () => {
    const { eeprom, bus } = setup();
    bus.transfer([w(0x05)]);
    assert.equal(bus.transfer([w()]), 1);
    assert.equal(eeprom.pointer, 0x05);
  });

  it("takes initial contents and keeps the rest erased", () => {
    const { readAt } = setup(new Eeprom({ ...EEPROM_24C02, contents: Uint8Array.of(1, 2) }));
    assert.deepEqual(readAt(0, 3), [1, 2, 0xff]);
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
            bus.transfer([w(o.offset, ...o.data)]);
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

  it("supports two address bytes (big-endian) for larger parts", () => {
    const eeprom = new Eeprom({ size: 4096, pageSize: 32, addressBytes: 2 });
    const bus = new SimBus(new Map([[ADDR, eeprom]]));
    bus.transfer([w(0x0a, 0xbc, 0x77)]);
    assert.equal(eeprom.contents()[0xabc], 0x77);
    const msg = r(1);
    bus.transfer([w(0x0a, 0xbc), msg]);
    assert.equal(msg.buf[0], 0x77);
  });

  it("rejects impossible geometries with a stable code", () => {
    const bad = [
      { size: 300, pageSize: 8, addressBytes: 1 as const },
      { size: 512, pageSize: 8, addressBytes: 1 as const },
      { size: 256, pageSize: 3, addressBytes: 1 as const },
      { size: 256, pageSize: 512, addressBytes: 1 as const },
      { size: 256, pageSize: 8, addressBytes: 3 as unknown as 1 },
      { ...EEPROM_24C02, contents: new Uint8Array(257) },
    ];
    for (const options of bad) {
      assert.throws(
        () => new Eeprom(options),
        (e: unknown) => {
          return e instanceof EepromOptionsError && e.code === "I2C_MODEL_BAD_OPTIONS";
        },
      );
    }
  });
});

describe("createModel", () => {
  it("creates a 24c02 by name", () => {
    const model = createModel("24c02", { contents: Uint8Array.of(0x12) });
    assert.ok(model instanceof Eeprom);
    assert.equal(model.size, 256);
    assert.equal(model.contents()[0], 0x12);
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
