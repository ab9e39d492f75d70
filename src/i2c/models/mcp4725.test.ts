import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock, ModelBench, modelError } from "../../../test/helpers/model-bench.js";
import { findModel } from "../model.js";
import { mcp4725Model } from "./mcp4725.js";

const ADDR = 0x60;

function setup(options: Record<string, unknown> = {}) {
  const clock = new FakeClock();
  return { bench: new ModelBench(mcp4725Model(clock), ADDR, options), clock };
}

describe("MCP4725", () => {
  it("is registered under Linux's device name", () => {
    assert.equal(findModel("mcp4725").name, "mcp4725");
  });

  it("power-on: DAC loaded from the EEPROM; mcp4725_probe's status read", () => {
    const { bench } = setup({ eeprom: 0x9ab });
    const status = bench.readNow(5);
    assert.deepEqual(status, [0xc0, 0x9a, 0xb0, 0x09, 0xab]);
    assert.equal(((status[0] ?? 0) >> 1) & 3, 0, "not powered down");
  });

  it("mcp4725_set_value: fast write; the output is VDD × code / 4096", () => {
    const { bench } = setup({ vdd: 4.096 });
    bench.transfer(bench.w(0x0c, 0x80));
    assert.equal(bench.get("code"), 0xc80);
    assert.equal(bench.get("output"), 3.2);
    assert.deepEqual(bench.readNow(3), [0xc0, 0xc8, 0x00]);
    bench.transfer(bench.w(0x01, 0x00, 0x02, 0x00)); // pairs repeat: the last one stays
    assert.equal(bench.get("code"), 0x200);
  });

  it("power-down (mcp4725_store_powerdown): output pulled to ground, mode in the status", () => {
    const { bench } = setup({ eeprom: 0x800 });
    bench.transfer(bench.w(0x20, 0x00)); // mode 2: 100 kΩ
    assert.equal(bench.get("output"), 0);
    assert.equal(bench.get("powerDown"), "100 kΩ to GND");
    assert.equal(((bench.readNow(1)[0] ?? 0) >> 1) & 3, 2);
  });

  it("mcp4725_store_eeprom: 0x60 write, RDY/BSY 0 for 25 ms, then the EEPROM holds it", () => {
    const { bench, clock } = setup();
    bench.transfer(bench.w(0x60, 0x12, 0x30));
    assert.equal(bench.get("code"), 0x123);
    assert.equal((bench.readNow(1)[0] ?? 0) & 0x80, 0, "busy");
    bench.transfer(bench.w(0x60, 0xff, 0xf0));
    clock.advance(20);
    assert.equal((bench.readNow(1)[0] ?? 0) & 0x80, 0);
    clock.advance(5);
    const status = bench.readNow(5);
    assert.equal((status[0] ?? 0) & 0x80, 0x80);
    assert.deepEqual(status.slice(3), [0x01, 0x23], "the write during the cycle was not stored");
    assert.equal(bench.get("code"), 0xfff, "but it did set the DAC register");
  });

  it("refuses options the chip cannot take", () => {
    assert.throws(() => setup({ eeprom: 0x1000 }), modelError("I2C_MODEL_BAD_OPTIONS"));
  });

  it("a successor keeps the DAC, power-down and EEPROM", () => {
    const { bench: saved } = setup();
    const { bench: fresh } = setup();
    saved.transfer(saved.w(0x66, 0xab, 0xc0)); // DAC and EEPROM, power-down 3
    saved.handOverTo(fresh);
    assert.deepEqual(fresh.readNow(5).slice(1), saved.readNow(5).slice(1));
    assert.equal(fresh.get("powerDown"), "500 kΩ to GND");
    assert.throws(
      () => fresh.device.restoreState?.({ code: 1 }),
      modelError("I2C_MODEL_BAD_STATE"),
    );
  });
});
