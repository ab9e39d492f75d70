import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock, ModelBench, modelError } from "../../../test/helpers/model-bench.js";
import { ads1015Models } from "./ads1015.js";

const ADDR = 0x48;
const CONVERSION = 0;
const CONFIG = 1;

function setup(name: "ads1015" | "ads1115", options: Record<string, unknown> = {}) {
  const clock = new FakeClock();
  const definition = ads1015Models(clock).find((m) => m.name === name);
  assert.ok(definition);
  return { bench: new ModelBench(definition, ADDR, options), clock };
}

const s16 = (v: number) => (v << 16) >> 16;
/** Config as ads1015_get_adc_result builds it: MUX channel, PGA, DR, continuous (MODE 0). */
const config = (mux: number, pga: number, dr: number) =>
  (mux << 12) | (pga << 9) | (dr << 5) | 0x0003;

describe("ADS1015 / ADS1115", () => {
  it("power-on: config 0x8583, thresholds 0x8000/0x7fff, conversion 0", () => {
    const { bench } = setup("ads1115", { ain0: 1 });
    assert.equal(bench.readWordBE(CONFIG), 0x8583);
    assert.equal(bench.readWordBE(2), 0x8000);
    assert.equal(bench.readWordBE(3), 0x7fff);
    assert.equal(bench.readWordBE(CONVERSION), 0);
  });

  it("ads1115 continuous: the new channel shows after one conversion at the new rate", () => {
    const { bench, clock } = setup("ads1115", { ain0: 1.024, ain1: 0.5 });
    bench.writeWordBE(CONFIG, config(4, 2, 4)); // AIN0 to GND, ±2.048 V, 128 SPS
    clock.advance(7);
    assert.equal(bench.readWordBE(CONVERSION), 0, "7 ms < 1/128 s: not converted yet");
    clock.advance(1);
    assert.equal(s16(bench.readWordBE(CONVERSION)), 16384, "1.024 V of ±2.048 V");
    bench.set("ain0", "-0.1");
    assert.equal(s16(bench.readWordBE(CONVERSION)), -1600, "continuous: follows the input");
    // The driver switches to AIN1 and waits (1/128 + 1/128) s + 10 %.
    bench.writeWordBE(CONFIG, config(5, 2, 4));
    assert.equal(s16(bench.readWordBE(CONVERSION)), -1600);
    clock.advance(Math.ceil((2 * 1000 * 1.1) / 128));
    assert.equal(s16(bench.readWordBE(CONVERSION)), 8000);
  });

  it("differential inputs and gains; codes clamp at full scale", () => {
    const { bench, clock } = setup("ads1115", { ain0: 3, ain1: 1, ain3: 0.25 });
    bench.writeWordBE(CONFIG, config(0, 1, 7)); // AIN0-AIN1, ±4.096 V
    clock.advance(2);
    assert.equal(s16(bench.readWordBE(CONVERSION)), 16000);
    bench.writeWordBE(CONFIG, config(1, 5, 7)); // AIN0-AIN3, ±0.256 V: 2.75 V clamps
    clock.advance(2);
    assert.equal(s16(bench.readWordBE(CONVERSION)), 32767);
  });

  it("ads1015: 12 bits left-justified, data rates up to 3300 SPS", () => {
    const { bench, clock } = setup("ads1015", { ain2: 1 });
    bench.writeWordBE(CONFIG, config(6, 2, 4)); // 1600 SPS
    clock.advance(1);
    assert.equal(bench.readWordBE(CONVERSION), 1000 << 4);
  });

  it("single shot: OS starts a conversion, reads 0 until done", () => {
    const { bench, clock } = setup("ads1115", { ain3: 2 });
    const single = (7 << 12) | (0 << 9) | (7 << 5) | 0x0100 | 0x0003; // AIN3, ±6.144 V, 860 SPS
    bench.writeWordBE(CONFIG, single | 0x8000);
    assert.equal(bench.readWordBE(CONFIG) & 0x8000, 0);
    clock.advance(2);
    assert.equal(bench.readWordBE(CONFIG) & 0x8000, 0x8000);
    assert.equal(s16(bench.readWordBE(CONVERSION)), Math.round((2 / 6.144) * 32768));
    bench.set("ain3", "0");
    clock.advance(10);
    assert.notEqual(bench.readWordBE(CONVERSION), 0, "no new conversion without OS");
  });

  it("refuses input voltages outside -0.3..5.5 V", () => {
    const { bench } = setup("ads1115");
    assert.throws(() => bench.set("ain1", "6"), modelError("I2C_MODEL_BAD_VALUE"));
  });

  it("a successor given the saved state answers as the saved chip", () => {
    const { bench: saved, clock } = setup("ads1115", { ain1: 1.5 });
    const { bench: fresh } = setup("ads1115");
    saved.writeWordBE(CONFIG, config(5, 1, 3));
    saved.writeWordBE(2, 0x1234);
    clock.advance(100);
    saved.write(CONVERSION);
    saved.handOverTo(fresh);
    assert.deepEqual(fresh.readNow(2), saved.readNow(2));
    for (const reg of [0, 1, 2, 3]) assert.equal(fresh.readWordBE(reg), saved.readWordBE(reg));
    assert.throws(
      () => fresh.device.restoreState?.({ pointer: 9 }),
      modelError("I2C_MODEL_BAD_STATE"),
    );
  });
});
