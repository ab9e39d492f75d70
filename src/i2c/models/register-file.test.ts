import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { I2cMessage } from "../bus.js";
import { findModel, ModelError, modelContext } from "../model.js";
import { SimBus, simTargets } from "../sim-bus.js";

const ADDR = 0x20;
const w = (...bytes: number[]): I2cMessage => ({
  addr: ADDR,
  read: false,
  buf: Uint8Array.from(bytes),
});
const r = (len: number): I2cMessage => ({ addr: ADDR, read: true, buf: new Uint8Array(len) });

function setup(options: Record<string, unknown>) {
  const device = findModel("register-file").create(options, modelContext({ address: ADDR }));
  const bus = new SimBus(simTargets(new Map([[ADDR, device]])));
  const read = (address: number[], len: number) => {
    const msg = r(len);
    assert.equal(bus.transfer([w(...address), msg]), 2);
    return [...msg.buf];
  };
  return { device, bus, read };
}

const badOptions = (pattern: RegExp) => (e: unknown) =>
  e instanceof ModelError && e.code === "I2C_MODEL_BAD_OPTIONS" && pattern.test(e.message);

describe("register-file", () => {
  it("8-bit registers with auto-increment, initial values and a default", () => {
    const { bus, read } = setup({ size: 4, default: 0xee, registers: { "0x01": 0x11, "3": 0x33 } });
    assert.deepEqual(read([0], 5), [0xee, 0x11, 0xee, 0x33, 0xee], "wraps after the last register");
    bus.transfer([w(2, 0x22, 0x44)]);
    assert.deepEqual(read([2], 2), [0x22, 0x44]);
  });

  it("16-bit big-endian registers go out whole; little-endian on request", () => {
    assert.deepEqual(
      setup({ registerSize: 2, size: 2, registers: { "1": 0x1234 } }).read([1], 2),
      [0x12, 0x34],
    );
    const le = setup({ registerSize: 2, size: 2, littleEndian: true, registers: { "1": 0x1234 } });
    assert.deepEqual(le.read([1], 2), [0x34, 0x12]);
    le.bus.transfer([w(0, 0xcd, 0xab)]);
    assert.deepEqual([...(le.device.memory?.read(0, 2) ?? [])], [0xcd, 0xab]);
    assert.deepEqual(le.read([0], 4), [0xcd, 0xab, 0x34, 0x12]);
  });

  it("32-bit registers and 2-byte register addresses", () => {
    const { bus, read } = setup({
      addressWidth: 2,
      registerSize: 4,
      size: 0x200,
      registers: { "0x1ff": 0xdeadbeef },
    });
    assert.deepEqual(read([0x01, 0xff], 4), [0xde, 0xad, 0xbe, 0xef]);
    bus.transfer([w(0x01, 0x00, 1, 2, 3, 4)]);
    assert.deepEqual(read([0x01, 0x00], 4), [1, 2, 3, 4]);
  });

  it("read-only registers ignore writes; a partial register write is dropped", () => {
    const { bus, read } = setup({
      registerSize: 2,
      size: 4,
      registers: { "0": 0xabcd },
      readOnly: [0],
    });
    bus.transfer([w(0, 0x00, 0x00, 0x55, 0x66, 0x77)]);
    assert.deepEqual(read([0], 6), [0xab, 0xcd, 0x55, 0x66, 0x00, 0x00]);
  });

  it("refuses bad options with the key path", () => {
    assert.throws(() => setup({ registerSize: 3 }), badOptions(/options\.registerSize/));
    assert.throws(
      () => setup({ registerSize: 8 }),
      badOptions(/options\.registerSize: expected an integer from 1 to 4/),
    );
    assert.throws(
      () => setup({ size: 4, registers: { "0x10": 1 } }),
      badOptions(/options\.registers\.0x10/),
    );
    assert.throws(
      () => setup({ registers: { foo: 1 } }),
      badOptions(/options\.registers\.foo: expected a key that is a register address/),
    );
    assert.throws(
      () => setup({ registers: { "1": 0x100 } }),
      badOptions(/options\.registers\.1: a value that fits 1 byte/),
    );
    assert.throws(
      () => setup({ readOnly: [1, "2"] }),
      badOptions(/options\.readOnly\[1\]: expected an integer/),
    );
    assert.throws(() => setup({ size: 300 }), badOptions(/options\.size: at most 256 registers/));
  });
});

describe("register-file saveState / restoreState", () => {
  const badState = (e: unknown) => e instanceof ModelError && e.code === "I2C_MODEL_BAD_STATE";
  const options = { addressWidth: 2, registerSize: 2, size: 8, registers: { "1": 0x1234 } };

  it("a fresh chip given the state answers as the saved one", () => {
    const saved = setup(options);
    const fresh = setup(options);
    assert.equal(saved.bus.transfer([w(0, 3, 0xbe, 0xef)]), 1);
    saved.device.memory?.write(14, Uint8Array.of(0x55, 0x66)); // register 7, over the control socket
    assert.equal(saved.bus.transfer([w(0, 5)]), 1); // the pointer
    assert.ok(saved.device.saveState);
    fresh.device.restoreState?.(JSON.parse(JSON.stringify(saved.device.saveState())));
    const pointed = (chip: typeof saved) => {
      const msg = r(6); // registers 5, 6, 7 from the pointer
      assert.equal(chip.bus.transfer([msg]), 1);
      return [...msg.buf];
    };
    assert.deepEqual(pointed(fresh), pointed(saved));
    assert.deepEqual(fresh.read([0, 0], 16), saved.read([0, 0], 16));
    assert.deepEqual(fresh.read([0, 3], 2), [0xbe, 0xef]);
  });

  it("refuses a state it cannot take and changes nothing", () => {
    const { device, read } = setup(options);
    const image = "00".repeat(16);
    for (const state of [
      "",
      { pointer: 0 },
      { pointer: 8, memory: image },
      { pointer: 0, memory: "00".repeat(15) },
      { pointer: 0, memory: image, registers: {} },
    ]) {
      assert.throws(() => device.restoreState?.(state), badState, JSON.stringify(state));
    }
    assert.deepEqual(read([0, 0], 4), [0, 0, 0x12, 0x34]);
  });
});
