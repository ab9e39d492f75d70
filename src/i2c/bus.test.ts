import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AddressMap, AddressMapError, hex, type I2cBus } from "./bus.js";

const fakeBus = (name: string): I2cBus => ({
  name,
  synchronous: true,
  transfer: () => 0,
  close: () => undefined,
});

describe("AddressMap", () => {
  it("maps each guest address to its bus, with the host address equal to it", () => {
    const a = fakeBus("i2c-1");
    const b = fakeBus("sim");
    const map = new AddressMap([
      { bus: a, addrs: [0x20, 0x21] },
      { bus: b, addrs: [0x50] },
    ]);
    assert.equal(map.lookup(0x20)?.bus, a);
    assert.equal(map.lookup(0x21)?.hostAddr, 0x21);
    assert.equal(map.lookup(0x50)?.bus, b);
    assert.equal(map.lookup(0x22), undefined);
    assert.equal(map.size, 3);
    assert.deepEqual(map.buses(), [a, b]);
    assert.deepEqual(map.addresses(), [0x20, 0x21, 0x50]);
  });

  it("remaps: guest 0x42 leads to host 0x52; guest space is what must be unique", () => {
    const a = fakeBus("i2c-0");
    const b = fakeBus("i2c-1");
    const map = new AddressMap([
      { bus: a, addrs: [0x42, 0x50], hostAddrs: [0x52, 0x50] },
      { bus: b, addrs: [0x52] },
    ]);
    assert.deepEqual(map.lookup(0x42), { bus: a, hostAddr: 0x52 });
    assert.deepEqual(map.lookup(0x52), { bus: b, hostAddr: 0x52 });
    assert.equal(map.lookup(0x51), undefined);
    assert.deepEqual(map.addresses(), [0x42, 0x50, 0x52]);
    assert.throws(
      () =>
        new AddressMap([
          { bus: a, addrs: [0x42], hostAddrs: [0x52] },
          { bus: b, addrs: [0x42] },
        ]),
      (e: unknown) => e instanceof AddressMapError && e.code === "I2C_DUPLICATE_ADDRESS",
    );
    for (const bad of [
      { bus: a, addrs: [0x42], hostAddrs: [0x80] },
      { bus: a, addrs: [0x42], hostAddrs: [] },
    ]) {
      assert.throws(
        () => new AddressMap([bad]),
        (e: unknown) => e instanceof AddressMapError && e.code === "I2C_BAD_ADDRESS",
      );
    }
  });

  it("refuses an address listed twice, on the same or on another bus", () => {
    const a = fakeBus("i2c-1");
    const b = fakeBus("i2c-2");
    for (const groups of [
      [{ bus: a, addrs: [4, 4] }],
      [
        { bus: a, addrs: [4] },
        { bus: b, addrs: [5, 4] },
      ],
    ]) {
      assert.throws(
        () => new AddressMap(groups),
        (e: unknown) =>
          e instanceof AddressMapError &&
          e.code === "I2C_DUPLICATE_ADDRESS" &&
          /0x04/.test(e.message),
      );
    }
  });

  it("refuses addresses outside 0..0x7f", () => {
    for (const addr of [-1, 0x80, 1.5, Number.NaN]) {
      assert.throws(
        () => new AddressMap([{ bus: fakeBus("x"), addrs: [addr] }]),
        (e: unknown) => e instanceof AddressMapError && e.code === "I2C_BAD_ADDRESS",
      );
    }
  });

  it("hex() pads to two digits", () => {
    assert.equal(hex(4), "0x04");
    assert.equal(hex(0x7f), "0x7f");
  });
});
