import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock, ModelBench, modelError } from "../../../test/helpers/model-bench.js";
import { findModel } from "../model.js";
import { decodeTmp102Temperature, encodeTmp102Temperature, tmp102Model } from "./tmp102.js";

const ADDR = 0x48;
const TEMP = 0;
const CONFIG = 1;
const TLOW = 2;
const THIGH = 3;

/** A TMP102 whose power-on conversion is done (the driver waits 35 ms before its first read). */
function setup(options: Record<string, unknown> = {}, clock = new FakeClock()) {
  const bench = new ModelBench(tmp102Model(clock), ADDR, options);
  clock.advance(35);
  return { bench, clock };
}

/** Linux's tmp102_reg_to_mC: the register as s16, bit 0 dropped, /128 (13-bit extended format). */
const regToMilliCelsius = (reg: number) => Math.trunc(((((reg << 16) >> 16) & ~1) * 1000) / 128);

describe("TMP102", () => {
  it("is registered under Linux's device name", () => {
    assert.equal(findModel("tmp102").name, "tmp102");
  });

  it("encodes the datasheet's 12-bit and 13-bit examples", () => {
    for (const [celsius, normal, extended] of [
      [128, 0x7ff0, 0x4001],
      [127.9375, 0x7ff0, 0x3ff9],
      [25, 0x1900, 0x0c81],
      [0.0625, 0x0010, 0x0009],
      [0, 0x0000, 0x0001],
      [-0.25, 0xffc0, 0xffe1],
      [-25, 0xe700, 0xf381],
      [-55, 0xc900, 0xe481],
      [150, 0x7ff0, 0x4b01],
    ] as const) {
      if (celsius <= 127.9375)
        assert.equal(encodeTmp102Temperature(celsius, false), normal, `${celsius}`);
      assert.equal(encodeTmp102Temperature(celsius, true), extended, `${celsius} EM`);
      assert.equal(decodeTmp102Temperature(extended, true), celsius);
    }
  });

  it("powers on with configuration 0x60A0, T_LOW 75 °C and T_HIGH 80 °C", () => {
    const { bench } = setup();
    assert.equal(bench.readWordBE(CONFIG), 0x60a0);
    assert.equal(bench.readWordBE(TLOW), 0x4b00);
    assert.equal(bench.readWordBE(THIGH), 0x5000);
    assert.equal(bench.readWordBE(TEMP), 0x1900, "25 °C, 12-bit");
  });

  it("reads 0 until the power-on conversion is done (26 ms)", () => {
    const clock = new FakeClock();
    const bench = new ModelBench(tmp102Model(clock), ADDR, { temperature: 30 });
    assert.equal(bench.readWordBE(TEMP), 0x0000);
    clock.advance(26);
    assert.equal(bench.readWordBE(TEMP), 0x1e00);
  });

  it("probes as tmp102_probe does: R1:R0 read 11, TM/EM/CR1 stick, SD/OS/CR0 cleared", () => {
    const { bench } = setup({ temperature: -25 });
    const TMP102_CONFREG_MASK = 0x9ff0;
    const probed = bench.readWordBE(CONFIG);
    assert.equal(probed & ~TMP102_CONFREG_MASK, 0x6000);
    bench.writeWordBE(CONFIG, (probed & ~(0x0100 | 0x8000 | 0x0040)) | 0x0200 | 0x0010 | 0x0080);
    assert.equal(bench.readWordBE(CONFIG), 0x62b0);
    // Extended mode: 13 bits, bit 0 set; the driver's formula gives millidegrees.
    assert.equal(bench.readWordBE(TEMP), 0xf381);
    assert.equal(regToMilliCelsius(bench.readWordBE(TEMP)), -25000);
    bench.set("temperature", "131.5");
    assert.equal(regToMilliCelsius(bench.readWordBE(TEMP)), 131500);
  });

  it("R1:R0, AL and the low nibble are read-only; the temperature register too", () => {
    const { bench } = setup();
    bench.writeWordBE(CONFIG, 0x000f);
    assert.equal(bench.readWordBE(CONFIG), 0x60a0 & ~0x0080, "CR1 cleared, the rest kept");
    bench.writeWordBE(TEMP, 0x1234);
    assert.equal(bench.readWordBE(TEMP), 0x1900);
  });

  it("limits keep 12 bits in normal mode, 13 in extended (tmp102_mC_to_reg)", () => {
    const { bench } = setup();
    bench.writeWordBE(THIGH, 0x1234);
    assert.equal(bench.readWordBE(THIGH), 0x1230);
    bench.writeWordBE(CONFIG, 0x60b0);
    bench.writeWordBE(THIGH, Math.trunc((70000 * 128) / 1000)); // 70 °C as the driver writes it
    assert.equal(regToMilliCelsius(bench.readWordBE(THIGH)), 70000);
  });

  it("alert: comparator from T_HIGH up until below T_LOW, AL low when active with POL = 0", () => {
    const { bench } = setup();
    const al = () => (bench.readWordBE(CONFIG) & 0x0020) !== 0;
    assert.equal(al(), true);
    bench.set("temperature", "80");
    assert.equal(al(), false);
    assert.equal(bench.get("alert"), true);
    bench.set("temperature", "75");
    assert.equal(al(), false, "hysteresis: still active above T_LOW");
    bench.set("temperature", "74.9375");
    assert.equal(al(), true);
    bench.write(CONFIG, 0x64, 0xa0); // POL = 1 inverts AL
    assert.equal(al(), false);
  });

  it("shutdown freezes the register; one-shot converts once in 26 ms, OS reads 1 when done", () => {
    const { bench, clock } = setup({ temperature: 20 });
    bench.writeWordBE(CONFIG, 0x61a0);
    bench.set("temperature", "40");
    clock.advance(100);
    assert.equal(bench.readWordBE(TEMP), 0x1400, "no conversion while shut down");
    bench.writeWordBE(CONFIG, 0xe1a0);
    assert.equal(bench.readWordBE(CONFIG) & 0x8000, 0, "converting: OS reads 0");
    assert.equal(bench.readWordBE(TEMP), 0x1400);
    clock.advance(26);
    assert.equal(bench.readWordBE(CONFIG) & 0x8000, 0x8000);
    assert.equal(bench.readWordBE(TEMP), 0x2800);
    bench.set("temperature", "50");
    assert.equal(bench.readWordBE(TEMP), 0x2800, "back in shutdown after the one conversion");
    bench.writeWordBE(CONFIG, 0x60a0); // tmp102_resume: leaving shutdown converts in 26 ms
    assert.equal(bench.readWordBE(TEMP), 0x2800);
    clock.advance(26);
    assert.equal(bench.readWordBE(TEMP), 0x3200);
  });

  it("refuses temperatures outside -55..150", () => {
    const { bench } = setup();
    for (const bad of ["151", "-56", "hot"]) {
      assert.throws(() => bench.set("temperature", bad), modelError("I2C_MODEL_BAD_VALUE"));
    }
    assert.throws(
      () => new ModelBench(tmp102Model(), ADDR, { temperature: 200 }),
      modelError("I2C_MODEL_BAD_OPTIONS"),
    );
  });

  it("a successor given the saved state answers as the saved chip", () => {
    const clock = new FakeClock();
    const { bench: saved } = setup({}, clock);
    const { bench: fresh } = setup({}, clock);
    saved.writeWordBE(CONFIG, 0x62b0);
    saved.writeWordBE(TLOW, 0x0c80);
    saved.set("temperature", "101.25");
    saved.writeWordBE(THIGH, 0x0c80); // alert active now
    saved.write(TLOW); // pointer at T_LOW
    saved.handOverTo(fresh);
    assert.deepEqual(fresh.readNow(2), saved.readNow(2));
    for (const reg of [TEMP, CONFIG, TLOW, THIGH]) {
      assert.equal(fresh.readWordBE(reg), saved.readWordBE(reg), `register ${reg}`);
    }
    assert.equal(fresh.get("temperature"), 101.25);
    assert.equal(fresh.get("alert"), true);
  });

  it("refuses a state it cannot take and changes nothing", () => {
    const { bench } = setup({ temperature: 22 });
    const good = bench.savedState() as Record<string, unknown>;
    for (const state of [
      null,
      {},
      { ...good, pointer: 4 },
      { ...good, temperature: 151 },
      { ...good, extra: 1 },
    ]) {
      assert.throws(() => bench.device.restoreState?.(state), modelError("I2C_MODEL_BAD_STATE"));
    }
    assert.equal(bench.readWordBE(TEMP), 0x1600);
  });
});
