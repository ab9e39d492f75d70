import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ModelBench, modelError } from "../../../test/helpers/model-bench.js";
import { findModel } from "../model.js";

const ADDR = 0x40;
const CONFIG = 0;
const SHUNT = 1;
const BUS = 2;
const POWER = 3;
const CURRENT = 4;
const CALIBRATION = 5;
const MASK = 6;
const LIMIT = 7;

const s16 = (v: number) => (v << 16) >> 16;

/** What Linux's ina2xx_get_value makes of the registers, for `ina2xx_config[chip]` and 10 mΩ. */
const driver = {
  ina219: { shuntDiv: 100, busShift: 3, busLsbUv: 4000, currentLsbUa: 1000, powerLsbUw: 20_000 },
  ina226: { shuntDiv: 400, busShift: 0, busLsbUv: 1250, currentLsbUa: 250, powerLsbUw: 6250 },
} as const;

/** ina2xx_init: configuration default, then calibration. */
function probed(name: "ina219" | "ina226", options: Record<string, unknown> = {}) {
  const bench = new ModelBench(findModel(name), ADDR, options);
  bench.writeWordBE(CONFIG, name === "ina219" ? 0x399f : 0x4527);
  bench.writeWordBE(CALIBRATION, name === "ina219" ? 4096 : 2048);
  const d = driver[name];
  const read = {
    shuntMilliVolts: () => Math.round(s16(bench.readWordBE(SHUNT)) / d.shuntDiv),
    busMilliVolts: () => ((bench.readWordBE(BUS) >> d.busShift) * d.busLsbUv) / 1000,
    currentMilliAmps: () => (s16(bench.readWordBE(CURRENT)) * d.currentLsbUa) / 1000,
    powerMicroWatts: () => bench.readWordBE(POWER) * d.powerLsbUw,
  };
  return { bench, read };
}

describe("INA219 / INA226", () => {
  it("power-on values: INA219 config 0x399f, INA226 0x4127 and its IDs; calibration 0", () => {
    const ina219 = new ModelBench(findModel("ina219"), ADDR);
    assert.equal(ina219.readWordBE(CONFIG), 0x399f);
    assert.equal(ina219.readWordBE(CALIBRATION), 0);
    const ina226 = new ModelBench(findModel("ina226"), ADDR);
    assert.equal(ina226.readWordBE(CONFIG), 0x4127);
    assert.equal(ina226.readWordBE(0xfe), 0x5449);
    assert.equal(ina226.readWordBE(0xff), 0x2260);
  });

  it("current and power read 0 until calibrated (ina2xx_read_reg then re-initialises)", () => {
    const bench = new ModelBench(findModel("ina226"), ADDR, { current: 2, busVoltage: 5 });
    assert.equal(bench.readWordBE(CURRENT), 0);
    assert.equal(bench.readWordBE(POWER), 0);
    assert.notEqual(bench.readWordBE(SHUNT), 0, "the ADCs run without calibration");
  });

  it("ina220: the INA219's registers, at power-on and after the driver's init (one ina2xx config)", () => {
    const options = { current: 0.5, busVoltage: 3.3 };
    const ina219 = new ModelBench(findModel("ina219"), ADDR, options);
    const ina220 = new ModelBench(findModel("ina220"), ADDR, options);
    const registers = [CONFIG, SHUNT, BUS, POWER, CURRENT, CALIBRATION];
    const values = (bench: ModelBench) => registers.map((register) => bench.readWordBE(register));
    assert.deepEqual(values(ina220), values(ina219));
    for (const bench of [ina219, ina220]) {
      bench.writeWordBE(CONFIG, 0x399f);
      bench.writeWordBE(CALIBRATION, 4096);
    }
    assert.deepEqual(values(ina220), values(ina219));
    assert.notEqual(ina220.readWordBE(CURRENT), 0);
  });

  for (const name of ["ina219", "ina226"] as const) {
    it(`${name}: 1.5 A at 12 V through 10 mΩ read as Linux computes it`, () => {
      const { bench, read } = probed(name, { current: 1.5, busVoltage: 12 });
      assert.equal(read.shuntMilliVolts(), 15);
      assert.equal(read.busMilliVolts(), 12000);
      assert.equal(read.currentMilliAmps(), 1500);
      assert.equal(read.powerMicroWatts(), 18_000_000);
      bench.set("current", "-0.25");
      bench.set("busVoltage", "3.3");
      assert.equal(read.currentMilliAmps(), -250);
      assert.equal(read.busMilliVolts(), 3300);
      // |current| * bus / 5000 (20000), truncated: 820 and 825 mW for the 825 mW flowing
      assert.equal(read.powerMicroWatts(), name === "ina219" ? 820_000 : 825_000);
    });
  }

  it("the shunt resistor scales the shunt voltage (the driver's shunt_resistor must match)", () => {
    const { read } = probed("ina226", { shuntResistor: 0.002, current: 10, busVoltage: 1 });
    assert.equal(read.shuntMilliVolts(), 20);
  });

  it("INA219: the PGA range clamps the shunt voltage; OVF flags a current that does not fit", () => {
    const { bench } = probed("ina219", { current: 5 }); // 50 mV
    bench.writeWordBE(CONFIG, 0x399f & ~0x1800); // PG /1: ±40 mV
    assert.equal(s16(bench.readWordBE(SHUNT)), 4000);
    bench.writeWordBE(CONFIG, 0x399f);
    bench.writeWordBE(CALIBRATION, 0xfffe);
    assert.equal(bench.readWordBE(BUS) & 1, 1, "OVF");
    assert.equal(s16(bench.readWordBE(CURRENT)), 32767);
  });

  it("INA219: CNVR is cleared by reading the power register; triggered mode converts per write", () => {
    const { bench } = probed("ina219", { current: 1, busVoltage: 5 });
    bench.writeWordBE(CONFIG, 0x399b); // shunt and bus, triggered
    assert.equal(bench.readWordBE(BUS) & 2, 2);
    bench.readWordBE(POWER);
    assert.equal(bench.readWordBE(BUS) & 2, 0);
    bench.set("busVoltage", "10");
    assert.equal(bench.readWordBE(BUS) >> 3, 1250, "no conversion until triggered: 5 V");
    bench.writeWordBE(CONFIG, 0x399b);
    assert.equal(bench.readWordBE(BUS) >> 3, 2500);
  });

  it("INA226: bus-over alert against the limit, AFF latched with LEN until mask/enable is read", () => {
    const { bench } = probed("ina226", { busVoltage: 5 });
    bench.writeWordBE(LIMIT, 4800); // 6 V in 1.25 mV LSBs
    bench.writeWordBE(MASK, 0x2000 | 0x0001); // BOL, latched
    assert.equal(bench.readWordBE(MASK) & 0x10, 0);
    bench.set("busVoltage", "7");
    bench.set("busVoltage", "5");
    assert.equal(bench.readWordBE(MASK) & 0x10, 0x10, "latched");
    assert.equal(bench.readWordBE(MASK) & 0x10, 0, "read clears it");
    bench.writeWordBE(MASK, 0x2000); // transparent
    bench.set("busVoltage", "7");
    assert.equal(bench.readWordBE(MASK) & 0x10, 0x10);
  });

  it("RST restores the power-on values; read-only registers ignore writes", () => {
    const { bench } = probed("ina226", { current: 1 });
    bench.writeWordBE(SHUNT, 0);
    bench.writeWordBE(0xfe, 0);
    assert.notEqual(bench.readWordBE(SHUNT), 0);
    assert.equal(bench.readWordBE(0xfe), 0x5449);
    bench.writeWordBE(CONFIG, 0x8000);
    assert.equal(bench.readWordBE(CONFIG), 0x4127);
    assert.equal(bench.readWordBE(CALIBRATION), 0);
  });

  it("refuses inputs the chip cannot take", () => {
    const bench = new ModelBench(findModel("ina219"), ADDR);
    assert.throws(() => bench.set("busVoltage", "30"), modelError("I2C_MODEL_BAD_VALUE"));
    assert.throws(
      () => new ModelBench(findModel("ina226"), ADDR, { shuntResistor: 0 }),
      modelError("I2C_MODEL_BAD_OPTIONS"),
    );
  });

  it("a successor given the saved state answers as the saved chip", () => {
    const { bench: saved } = probed("ina226", { current: 0.75, busVoltage: 24 });
    const fresh = new ModelBench(findModel("ina226"), ADDR, { current: 0.75, busVoltage: 24 });
    saved.writeWordBE(LIMIT, 100);
    saved.writeWordBE(MASK, 0x8001);
    saved.write(CURRENT);
    saved.handOverTo(fresh);
    assert.deepEqual(fresh.readNow(2), saved.readNow(2));
    for (const reg of [CONFIG, SHUNT, BUS, POWER, CURRENT, CALIBRATION, MASK, LIMIT]) {
      assert.equal(fresh.readWordBE(reg), saved.readWordBE(reg), `register ${reg}`);
    }
    assert.throws(() => fresh.device.restoreState?.({}), modelError("I2C_MODEL_BAD_STATE"));
  });
});
