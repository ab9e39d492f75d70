import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { I2cMessage } from "../bus.js";
import { findModel, ModelError, modelContext } from "../model.js";
import { SimBus, simTargets } from "../sim-bus.js";
import { decodeLm75Temperature, encodeLm75Temperature } from "./lm75.js";

const ADDR = 0x48;
const w = (...bytes: number[]): I2cMessage => ({
  addr: ADDR,
  read: false,
  buf: Uint8Array.from(bytes),
});
const r = (len: number): I2cMessage => ({ addr: ADDR, read: true, buf: new Uint8Array(len) });

function setup(
  name: "lm75" | "lm75a" | "tmp75" | "tmp275" = "lm75",
  options: Record<string, unknown> = {},
) {
  const device = findModel(name).create(options, modelContext({ address: ADDR }));
  const bus = new SimBus(simTargets(new Map([[ADDR, device]])));
  const prop = (key: string) => {
    const p = device.properties?.[key];
    assert.ok(p, key);
    return p;
  };
  /** SMBus read word data as `i2cget -y 0 0x48 REG w` does it: bytes in wire order. */
  const readReg = (reg: number, len = 2) => {
    const msg = r(len);
    assert.equal(bus.transfer([w(reg), msg]), 2);
    return [...msg.buf];
  };
  return { device, bus, prop, readReg };
}

describe("LM75 temperature encoding", () => {
  it("encodes the datasheet examples for 9 and 11 bits", () => {
    const cases: [number, 9 | 11, number][] = [
      [125, 9, 0x7d00],
      [25, 9, 0x1900],
      [0.5, 9, 0x0080],
      [0, 9, 0x0000],
      [-0.5, 9, 0xff80],
      [-25, 9, 0xe700],
      [-55, 9, 0xc900],
      [0.125, 11, 0x0020],
      [-0.125, 11, 0xffe0],
      [-25.125, 11, 0xe6e0],
      [-55, 11, 0xc900],
      [126, 9, 0x7d00],
      [-60, 11, 0xc900],
    ];
    for (const [celsius, bits, register] of cases) {
      assert.equal(encodeLm75Temperature(celsius, bits), register, `${celsius} °C at ${bits} bits`);
    }
  });

  it("decode(encode(t)) is t rounded to the resolution, within the range", () => {
    fc.assert(
      fc.property(
        fc.double({ min: -55, max: 125, noNaN: true }),
        fc.constantFrom(9 as const, 11 as const),
        (t, bits) => {
          const step = 2 ** (8 - bits);
          const back = decodeLm75Temperature(encodeLm75Temperature(t, bits), bits);
          assert.ok(Math.abs(back - t) <= step / 2 + 1e-9, `${t} → ${back}`);
          assert.equal(back / step, Math.round(back / step));
        },
      ),
    );
  });
});

describe("LM75 chip", () => {
  it("reads the temperature MSB first, 9-bit for lm75 and 11-bit for lm75a", () => {
    assert.deepEqual(setup("lm75", { temperature: 21.375 }).readReg(0), [0x15, 0x80]);
    assert.deepEqual(setup("lm75a", { temperature: 21.375 }).readReg(0), [0x15, 0x60]);
  });

  it("negative temperatures: -0.5, -25 and -55 °C", () => {
    const { prop, readReg } = setup("lm75");
    for (const [t, bytes] of [
      ["-0.5", [0xff, 0x80]],
      ["-25", [0xe7, 0x00]],
      ["-55", [0xc9, 0x00]],
    ] as const) {
      prop("temperature").set?.(t);
      assert.deepEqual(readReg(0), bytes, t);
      assert.equal(prop("temperature").get(), Number(t));
    }
  });

  it("refuses temperatures outside -55..125 and quantises the rest", () => {
    const { prop, readReg } = setup("lm75a");
    for (const outside of ["200", "125.5", "-80"]) {
      assert.throws(
        () => prop("temperature").set?.(outside),
        (e: unknown) => e instanceof ModelError && e.code === "I2C_MODEL_BAD_VALUE",
      );
    }
    prop("temperature").set?.("-55");
    assert.deepEqual(readReg(0), [0xc9, 0x00]);
    prop("temperature").set?.("20.06");
    assert.equal(prop("temperature").get(), 20.0);
    assert.throws(
      () => prop("temperature").set?.("warm"),
      (e: unknown) => e instanceof ModelError && e.code === "I2C_MODEL_BAD_VALUE",
    );
  });

  it("T_HYST defaults to 75 °C and T_OS to 80 °C; writes keep 9 bits", () => {
    const { bus, prop, readReg } = setup();
    assert.deepEqual(readReg(2), [0x4b, 0x00]);
    assert.deepEqual(readReg(3), [0x50, 0x00]);
    assert.equal(bus.transfer([w(3, 0xe7, 0xff)]), 1);
    assert.deepEqual(readReg(3), [0xe7, 0x80]);
    assert.equal(prop("tos").get(), -24.5);
    prop("thyst").set?.("-10.5");
    assert.deepEqual(readReg(2), [0xf5, 0x00 | 0x80]);
  });

  it("the temperature register is read-only", () => {
    const { bus, readReg } = setup("lm75", { temperature: 30 });
    assert.equal(bus.transfer([w(0, 0x10, 0x00)]), 1);
    assert.deepEqual(readReg(0), [0x1e, 0x00]);
  });

  it("reading past a register repeats it; the 8-bit config repeats its byte", () => {
    const { bus, readReg } = setup("lm75", { temperature: 25 });
    assert.deepEqual(readReg(0, 5), [0x19, 0x00, 0x19, 0x00, 0x19]);
    bus.transfer([w(1, 0x1a)]);
    assert.deepEqual(readReg(1, 3), [0x1a, 0x1a, 0x1a]);
  });

  it("a 1-byte write only sets the pointer, which persists between transfers", () => {
    const { bus } = setup("lm75", { temperature: 25 });
    assert.equal(bus.transfer([w(3)]), 1);
    const first = r(2);
    const again = r(2);
    bus.transfer([first]);
    bus.transfer([again]);
    assert.deepEqual([...first.buf], [0x50, 0x00]);
    assert.deepEqual([...again.buf], [0x50, 0x00]);
  });

  it("configuration keeps bits 0-4; in shutdown the temperature register holds its last value", () => {
    const { bus, prop, readReg } = setup("lm75", { temperature: 25 });
    bus.transfer([w(1, 0xff)]);
    assert.deepEqual(readReg(1, 1), [0x1f]);
    assert.equal(prop("config").get(), 0x1f);
    prop("temperature").set?.("40");
    assert.deepEqual(readReg(0), [0x19, 0x00], "shut down: no new conversion");
    prop("config").set?.("0x00");
    assert.deepEqual(readReg(0), [0x28, 0x00]);
  });

  it("only the 2 low pointer bits select a register", () => {
    const { readReg } = setup("lm75");
    assert.deepEqual(readReg(0x07), [0x50, 0x00]);
  });

  it("refuses an out-of-range initial temperature naming the key", () => {
    assert.throws(
      () => setup("lm75", { temperature: 130 }),
      (e: unknown) =>
        e instanceof ModelError &&
        e.code === "I2C_MODEL_BAD_OPTIONS" &&
        /options\.temperature: expected a number from -55 to 125, found number 130/.test(e.message),
    );
  });
});

describe("LM75 saveState / restoreState", () => {
  const badState = (e: unknown) => e instanceof ModelError && e.code === "I2C_MODEL_BAD_STATE";

  for (const name of ["lm75", "lm75a"] as const) {
    it(`${name}: a fresh chip given the state answers as the saved one`, () => {
      const saved = setup(name);
      const fresh = setup(name);
      saved.prop("temperature").set?.("31.625");
      saved.prop("thyst").set?.("40.5");
      assert.equal(saved.bus.transfer([w(3, 0x7f, 0x80)]), 1); // T_OS 127.5 °C: past what `tos` takes
      assert.equal(saved.bus.transfer([w(1, 0x19)]), 1); // shutdown, fault queue
      saved.prop("temperature").set?.("-20"); // measured, not converted while shut down
      assert.equal(saved.bus.transfer([w(2)]), 1); // pointer at T_HYST
      assert.ok(saved.device.saveState);
      fresh.device.restoreState?.(JSON.parse(JSON.stringify(saved.device.saveState())));
      const pointed = (chip: typeof saved) => {
        const msg = r(2); // no pointer write: the register the pointer names
        assert.equal(chip.bus.transfer([msg]), 1);
        return [...msg.buf];
      };
      assert.deepEqual(pointed(fresh), pointed(saved));
      for (const reg of [0, 1, 2, 3]) assert.deepEqual(fresh.readReg(reg), saved.readReg(reg));
      for (const key of ["temperature", "config", "thyst", "tos"]) {
        assert.equal(fresh.prop(key).get(), saved.prop(key).get(), key);
      }
      assert.equal(fresh.bus.transfer([w(1, 0x00)]), 1); // out of shutdown: converts again
      assert.equal(saved.bus.transfer([w(1, 0x00)]), 1);
      assert.deepEqual(fresh.readReg(0), saved.readReg(0));
    });
  }

  it("refuses a state it cannot take and changes nothing", () => {
    const { device, prop, readReg } = setup("lm75", { temperature: 22 });
    assert.ok(device.saveState);
    const good = device.saveState() as Record<string, unknown>;
    for (const state of [
      null,
      [],
      {},
      { ...good, temperature: 126 },
      { ...good, frozen: "20" },
      { ...good, pointer: 4 },
      { ...good, config: 0x20 },
      { ...good, tos: 0x10000 },
      { ...good, extra: true },
    ]) {
      assert.throws(() => device.restoreState?.(state), badState, JSON.stringify(state));
    }
    assert.equal(prop("temperature").get(), 22);
    assert.deepEqual(readReg(0), [0x16, 0x00]);
  });
});

describe("TMP75 / TMP275 (lm75 driver, device_params[tmp75])", () => {
  for (const name of ["tmp75", "tmp275"] as const) {
    it(`${name}: powers on at 9 bits; lm75_probe's set_mask 3 << 5 gives 12 bits`, () => {
      const { bus, readReg } = setup(name, { temperature: 21.3125 });
      assert.deepEqual(readReg(1, 1), [0x00]);
      assert.deepEqual(readReg(0), [0x15, 0x80], "9 bits: 21.5 °C");
      assert.deepEqual(readReg(2), [0x4b, 0x00], "T_LOW 75 °C");
      assert.deepEqual(readReg(3), [0x50, 0x00], "T_HIGH 80 °C");
      assert.equal(bus.transfer([w(1, 0x60)]), 1);
      assert.deepEqual(readReg(0), [0x15, 0x50], "12 bits: 21.3125 °C");
    });
  }

  it("R1:R0 choose 9..12 bits (lm75_update_interval writes them)", () => {
    const { bus, readReg, prop } = setup("tmp75", { temperature: -10.4375 });
    // 0.5, 0.25, 0.125 and 0.0625 °C steps, rounded to the nearest (half up)
    const expected = [-10.5, -10.5, -10.375, -10.4375];
    expected.forEach((celsius, r1r0) => {
      assert.equal(bus.transfer([w(1, r1r0 << 5)]), 1);
      const [msb = 0, lsb = 0] = readReg(0);
      assert.equal(decodeLm75Temperature((msb << 8) | lsb, 12), celsius, `R1:R0 = ${r1r0}`);
    });
    assert.equal(prop("temperature").get(), -10.4375);
  });

  it("limits keep 12 bits; OS reads 0; one-shot in shutdown converts once", () => {
    const { bus, readReg, prop } = setup("tmp75", { temperature: 20 });
    assert.equal(bus.transfer([w(3, 0x12, 0x3f)]), 1);
    assert.deepEqual(readReg(3), [0x12, 0x30]);
    assert.equal(bus.transfer([w(1, 0x61)]), 1); // 12 bits, shutdown
    prop("temperature").set?.("30");
    assert.deepEqual(readReg(0), [0x14, 0x00], "shut down: the last conversion");
    assert.equal(bus.transfer([w(1, 0xe1)]), 1); // OS: one conversion
    assert.deepEqual(readReg(1, 1), [0x61]);
    assert.deepEqual(readReg(0), [0x1e, 0x00]);
    prop("temperature").set?.("35");
    assert.deepEqual(readReg(0), [0x1e, 0x00], "still shut down");
  });

  it("refuses temperatures outside -40..125", () => {
    const { prop } = setup("tmp275");
    assert.throws(
      () => prop("temperature").set?.("-41"),
      (e: unknown) => e instanceof ModelError && e.code === "I2C_MODEL_BAD_VALUE",
    );
  });

  it("a successor keeps the resolution, limits and frozen reading", () => {
    const saved = setup("tmp275", { temperature: 33.0625 });
    const fresh = setup("tmp275");
    assert.equal(saved.bus.transfer([w(1, 0x41)]), 1); // 11 bits, shutdown
    saved.prop("temperature").set?.("-5");
    assert.equal(saved.bus.transfer([w(2, 0x20, 0x10)]), 1);
    fresh.device.restoreState?.(JSON.parse(JSON.stringify(saved.device.saveState?.())));
    for (const reg of [0, 1, 2, 3]) assert.deepEqual(fresh.readReg(reg), saved.readReg(reg));
    assert.deepEqual(
      fresh.readReg(0),
      [0x21, 0x00],
      "converted at 9 bits before the shutdown: 33.0",
    );
  });
});
