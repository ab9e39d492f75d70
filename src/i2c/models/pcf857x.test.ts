import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ModelBench, modelError } from "../../../test/helpers/model-bench.js";
import { findModel } from "../model.js";

const ADDR = 0x20;
const bench = (name: string, options: Record<string, unknown> = {}) =>
  new ModelBench(findModel(name), ADDR, options);

describe("PCF8574 / PCF8575", () => {
  it("pcf8574: latch all ones at power-on; a pin reads high unless latch or outside pulls it low", () => {
    const chip = bench("pcf8574", { inputs: 0xf0 });
    assert.deepEqual(chip.readNow(1), [0xf0]);
    chip.transfer(chip.w(0xcf));
    assert.deepEqual(chip.readNow(2), [0xc0, 0xc0], "every byte samples the one port");
    assert.equal(chip.get("latch"), 0xcf);
    chip.set("inputs", "0xff");
    assert.deepEqual(chip.readNow(1), [0xcf]);
  });

  it("pcf8575: bytes alternate P0, P1 (i2c_write_le16 / i2c_read_le16)", () => {
    const chip = bench("pcf8575");
    chip.transfer(chip.w(0x34, 0x12));
    assert.equal(chip.get("latch"), 0x1234);
    assert.deepEqual(chip.readNow(2), [0x34, 0x12]);
    assert.deepEqual(chip.readNow(3), [0x34, 0x12, 0x34]);
    chip.set("inputs", "0x00ff");
    assert.deepEqual(chip.readNow(2), [0x34, 0x00]);
  });

  it("probe writes all ones (n_latch 0): every pin an input", () => {
    const chip = bench("pcf8575", { inputs: 0xabcd });
    chip.transfer(chip.w(0x00, 0x00));
    chip.transfer(chip.w(0xff, 0xff));
    assert.deepEqual(chip.readNow(2), [0xcd, 0xab]);
  });

  it("INT: asserted when the pins change, cleared by a read or a write", () => {
    const chip = bench("pcf8574a");
    assert.equal(chip.get("interrupt"), false);
    chip.set("inputs", "0x7f");
    assert.equal(chip.get("interrupt"), true);
    chip.readNow(1);
    assert.equal(chip.get("interrupt"), false);
    chip.set("inputs", "0xff");
    chip.transfer(chip.w(0xff));
    assert.equal(chip.get("interrupt"), false);
  });

  it("refuses inputs past the port width", () => {
    assert.throws(() => bench("pcf8574").set("inputs", "256"), modelError("I2C_MODEL_BAD_VALUE"));
    assert.throws(() => bench("pcf8575", { inputs: 0x10000 }), modelError("I2C_MODEL_BAD_OPTIONS"));
  });

  it("a successor given the saved state answers as the saved chip; bad states are refused", () => {
    const saved = bench("pcf8575");
    const fresh = bench("pcf8575");
    saved.transfer(saved.w(0x0f, 0xf0));
    saved.set("inputs", "0x5aa5");
    saved.handOverTo(fresh);
    assert.equal(fresh.get("interrupt"), true);
    assert.deepEqual(fresh.readNow(2), saved.readNow(2));
    assert.equal(fresh.get("latch"), 0xf00f);
    for (const state of [null, { latch: 1 }, { latch: 0x10000, inputs: 0, seen: 0 }]) {
      assert.throws(() => fresh.device.restoreState?.(state), modelError("I2C_MODEL_BAD_STATE"));
    }
  });
});
