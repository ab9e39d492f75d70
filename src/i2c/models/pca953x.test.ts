import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ModelBench, modelError } from "../../../test/helpers/model-bench.js";
import { findModel } from "../model.js";

const ADDR = 0x20;
const bench16 = (name = "pca9555", options: Record<string, unknown> = {}) =>
  new ModelBench(findModel(name), ADDR, options);

describe("PCA9555 / TCA6416", () => {
  for (const name of ["pca9555", "tca6416"]) {
    it(`${name}: power-on inputs (all pins in), outputs 0xffff, polarity 0, configuration 0xffff`, () => {
      const bench = bench16(name, { inputs: 0xa55a });
      assert.deepEqual(bench.readBytes(0, 2), [0x5a, 0xa5]);
      assert.deepEqual(bench.readBytes(2, 2), [0xff, 0xff]);
      assert.deepEqual(bench.readBytes(4, 2), [0x00, 0x00]);
      assert.deepEqual(bench.readBytes(6, 2), [0xff, 0xff]);
    });
  }

  it("reads and writes go back and forth within a register pair", () => {
    const bench = bench16();
    bench.write(2, 0x12, 0x34, 0x56);
    assert.deepEqual(bench.readBytes(2, 2), [0x56, 0x34]);
    assert.deepEqual(bench.readBytes(3, 3), [0x34, 0x56, 0x34]);
    assert.deepEqual(bench.readNow(2), [0x56, 0x34], "the pointer stays in the pair");
  });

  it("device_pca95xx_init clears polarity; outputs drive their pins, inputs follow `inputs`", () => {
    const bench = bench16("pca9555", { inputs: 0x0000 });
    bench.write(4, 0x00, 0x00); // pca953x_write_regs(invert): both ports
    // gpio 0..3 and 8 as outputs (pca953x_gpio_direction_output writes output, then direction)
    bench.write(2, 0xf5, 0xfe);
    bench.write(6, 0xf0, 0xfe);
    assert.deepEqual(bench.readBytes(0, 2), [0x05, 0x00]);
    bench.set("inputs", "0xff00");
    assert.deepEqual(bench.readBytes(0, 2), [0x05, 0xfe], "pin 8 is an output driven low");
    assert.equal(bench.get("pins"), 0xfe05);
    bench.write(0, 0x00, 0x00);
    assert.deepEqual(bench.readBytes(0, 2), [0x05, 0xfe], "input registers are read-only");
  });

  it("polarity inversion flips what the input registers read", () => {
    const bench = bench16("tca6416", { inputs: 0x00ff });
    bench.write(4, 0x0f, 0x80);
    assert.deepEqual(bench.readBytes(0, 2), [0xf0, 0x80]);
  });

  it("INT: an input change since the last read of its port, cleared by reading it", () => {
    const bench = bench16();
    bench.readBytes(0, 2);
    assert.equal(bench.get("interrupt"), false);
    bench.set("inputs", "0xfffe");
    assert.equal(bench.get("interrupt"), true);
    bench.readBytes(0, 2);
    assert.equal(bench.get("interrupt"), false);
    bench.write(6, 0xfe); // pin 0 an output: its level is no input change
    bench.set("inputs", "0xffff");
    assert.equal(bench.get("interrupt"), false);
  });

  it("refuses inputs past 16 bits", () => {
    assert.throws(() => bench16().set("inputs", "0x10000"), modelError("I2C_MODEL_BAD_VALUE"));
    assert.throws(() => bench16("pca9555", { inputs: -1 }), modelError("I2C_MODEL_BAD_OPTIONS"));
  });

  it("a successor given the saved state answers as the saved chip", () => {
    const saved = bench16();
    const fresh = bench16();
    saved.write(2, 0x0f, 0xf0);
    saved.write(4, 0x01, 0x02);
    saved.write(6, 0x00, 0xff);
    saved.set("inputs", "0x1234");
    saved.write(5);
    saved.handOverTo(fresh);
    assert.deepEqual(fresh.readNow(3), saved.readNow(3), "pointer");
    for (const reg of [0, 2, 4, 6])
      assert.deepEqual(fresh.readBytes(reg, 2), saved.readBytes(reg, 2));
    assert.equal(fresh.get("interrupt"), saved.get("interrupt"));
  });

  it("refuses a state it cannot take", () => {
    const bench = bench16();
    const good = bench.savedState() as Record<string, unknown>;
    for (const state of [null, {}, { ...good, output: 0x10000 }, { ...good, pointer: 8 }]) {
      assert.throws(() => bench.device.restoreState?.(state), modelError("I2C_MODEL_BAD_STATE"));
    }
  });
});

describe("PCA9554 / TCA6408 (8-bit)", () => {
  it("four registers; reading on repeats the addressed one", () => {
    const bench = new ModelBench(findModel("pca9554"), ADDR, { inputs: 0x3c });
    assert.deepEqual(bench.readBytes(0, 2), [0x3c, 0x3c]);
    assert.deepEqual(bench.readBytes(1, 1), [0xff]);
    bench.write(3, 0x0f, 0x00);
    assert.equal(bench.readByte(3), 0x00, "the second byte went to the same register");
    bench.write(1, 0xa5);
    assert.equal(bench.readByte(0), 0xa5);
    assert.equal(findModel("tca6408").name, "tca6408");
  });
});
