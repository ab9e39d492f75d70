import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { ModelBench, modelError } from "../../../test/helpers/model-bench.js";
import { findModel } from "../model.js";
import {
  BMP280_DEFAULT_CALIBRATION as CAL,
  compensateHumidity,
  compensatePressure,
  compensateTemperature,
  rawReadings,
} from "./bmp280.js";

const ADDR = 0x76;
const u16le = (b: number[], i: number) => (b[i] ?? 0) | ((b[i + 1] ?? 0) << 8);
const s16le = (b: number[], i: number) => (u16le(b, i) << 16) >> 16;

/** bmp280_probe + bmp280_chip_config / bme280_chip_config: ID, reset, calibration, normal mode. */
function probed(name: "bmp280" | "bme280", options: Record<string, unknown> = {}) {
  const bench = new ModelBench(findModel(name), ADDR, options);
  assert.equal(bench.readByte(0xd0), name === "bmp280" ? 0x58 : 0x60);
  bench.write(0xe0, 0xb6);
  const tp = bench.readBytes(0x88, 24);
  const calibration = {
    T1: u16le(tp, 0),
    T2: s16le(tp, 2),
    T3: s16le(tp, 4),
    P1: u16le(tp, 6),
    P2: s16le(tp, 8),
    P3: s16le(tp, 10),
    P4: s16le(tp, 12),
    P5: s16le(tp, 14),
    P6: s16le(tp, 16),
    P7: s16le(tp, 18),
    P8: s16le(tp, 20),
    P9: s16le(tp, 22),
    H1: 0,
    H2: 0,
    H3: 0,
    H4: 0,
    H5: 0,
    H6: 0,
  };
  if (name === "bme280") {
    // bme280_read_calib
    const e = bench.readBytes(0xe1, 7);
    Object.assign(calibration, {
      H1: bench.readByte(0xa1),
      H2: s16le(e, 0),
      H3: e[2],
      H4: ((((e[3] ?? 0) << 4) | ((e[4] ?? 0) & 0x0f)) << 20) >> 20,
      H5: ((((e[5] ?? 0) << 4) | ((e[4] ?? 0) >> 4)) << 20) >> 20,
      H6: ((e[6] ?? 0) << 24) >> 24,
    });
    bench.write(0xf2, 0x01); // humidity x1
  }
  bench.write(0xf4, (0x02 << 5) | (0x05 << 2) | 0x03); // T x2, P x16, normal
  bench.write(0xf5, 0x02 << 2); // filter 4
  /** What Linux reports: m°C, Pa, m%RH; null when the channel reads as skipped. */
  const read = () => {
    const d = bench.readBytes(0xf7, 8);
    const adcP = ((d[0] ?? 0) << 12) | ((d[1] ?? 0) << 4) | ((d[2] ?? 0) >> 4);
    const adcT = ((d[3] ?? 0) << 12) | ((d[4] ?? 0) << 4) | ((d[5] ?? 0) >> 4);
    const adcH = ((d[6] ?? 0) << 8) | (d[7] ?? 0);
    if (adcT === 0x80000) return null;
    const { tFine, centi } = compensateTemperature(adcT, calibration);
    return {
      milliCelsius: centi * 10,
      pascal: adcP === 0x80000 ? null : Number(compensatePressure(adcP, tFine, calibration)) / 256,
      milliPercent:
        adcH === 0x8000
          ? null
          : Math.trunc((compensateHumidity(adcH, tFine, calibration) * 1000) / 1024),
    };
  };
  return { bench, calibration, read };
}

describe("BMP280 / BME280 compensation", () => {
  it("the datasheet's example: adc_T 519888 → 25.08 °C, adc_P 415148 → 100653.27 Pa", () => {
    const t = compensateTemperature(519888, CAL);
    assert.deepEqual(t, { tFine: 128422, centi: 2508 });
    // The integer formula lands within 0.02 Pa of the datasheet's floating-point 100653.27 Pa.
    const pascal = Number(compensatePressure(415148, t.tFine, CAL)) / 256;
    assert.ok(Math.abs(pascal - 100653.27) < 0.02, `${pascal}`);
  });

  it("raw readings the model makes compensate back to the physical values", () => {
    fc.assert(
      fc.property(
        fc.double({ min: -40, max: 85, noNaN: true }),
        fc.double({ min: 30000, max: 110000, noNaN: true }),
        fc.double({ min: 0, max: 100, noNaN: true }),
        (temperature, pressure, humidity) => {
          const raw = rawReadings({ temperature, pressure, humidity }, CAL);
          const t = compensateTemperature(raw.temperature, CAL);
          assert.ok(Math.abs(t.centi / 100 - temperature) <= 0.011, `T ${temperature}`);
          const pa = Number(compensatePressure(raw.pressure, t.tFine, CAL)) / 256;
          // one 20-bit ADC step is up to 0.2 Pa (85 °C, 300 hPa): the nearest is within half of it
          assert.ok(Math.abs(pa - pressure) <= 0.1, `P ${pressure} → ${pa}`);
          const rh = compensateHumidity(raw.humidity, t.tFine, CAL) / 1024;
          assert.ok(Math.abs(rh - humidity) <= 0.01, `RH ${humidity} → ${rh}`);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe("BMP280 / BME280 chip", () => {
  it("bmp280: probed and configured as Linux does, reads back the physical values", () => {
    const { bench, read } = probed("bmp280", { temperature: 21.5, pressure: 98765 });
    assert.equal(read()?.milliCelsius, 21500);
    assert.ok(Math.abs((read()?.pascal ?? 0) - 98765) < 0.1);
    bench.set("temperature", "-12.34");
    bench.set("pressure", "101325");
    assert.equal(read()?.milliCelsius, -12340);
    assert.ok(Math.abs((read()?.pascal ?? 0) - 101325) < 0.1);
    assert.equal(bench.device.properties?.humidity, undefined);
  });

  it("bme280: humidity from the H calibration read as bme280_read_calib does", () => {
    const { bench, calibration, read } = probed("bme280", { humidity: 63.2 });
    assert.deepEqual(
      [
        calibration.H1,
        calibration.H2,
        calibration.H3,
        calibration.H4,
        calibration.H5,
        calibration.H6,
      ],
      [CAL.H1, CAL.H2, CAL.H3, CAL.H4, CAL.H5, CAL.H6],
    );
    assert.ok(Math.abs((read()?.milliPercent ?? 0) - 63200) <= 10);
    bench.set("humidity", "5");
    assert.ok(Math.abs((read()?.milliPercent ?? 0) - 5000) <= 10);
  });

  it("after reset and before a measurement the data registers read as skipped", () => {
    const bench = new ModelBench(findModel("bme280"), ADDR);
    assert.deepEqual(bench.readBytes(0xf7, 8), [0x80, 0, 0, 0x80, 0, 0, 0x80, 0]);
    bench.write(0xf4, (1 << 5) | 0x03); // temperature only: pressure skipped
    const d = bench.readBytes(0xf7, 8);
    assert.deepEqual(d.slice(0, 3), [0x80, 0, 0]);
    assert.notDeepEqual(d.slice(3, 6), [0x80, 0, 0]);
    assert.deepEqual(d.slice(6), [0x80, 0], "ctrl_hum 0: humidity skipped");
  });

  it("forced mode measures once and returns to sleep", () => {
    const bench = new ModelBench(findModel("bmp280"), ADDR, { temperature: 10 });
    bench.write(0xf4, (1 << 5) | (1 << 2) | 0x01);
    assert.equal(bench.readByte(0xf4) & 3, 0);
    const before = bench.readBytes(0xfa, 3);
    bench.set("temperature", "30");
    assert.deepEqual(bench.readBytes(0xfa, 3), before, "asleep: no new measurement");
  });

  it("calibration, ID and data registers are read-only; reserved config bit 1 reads 0", () => {
    const bench = new ModelBench(findModel("bmp280"), ADDR);
    bench.write(0x88, 0, 0);
    assert.equal(u16le(bench.readBytes(0x88, 2), 0), CAL.T1);
    bench.write(0xd0, 0);
    assert.equal(bench.readByte(0xd0), 0x58);
    bench.write(0xf5, 0xff);
    assert.equal(bench.readByte(0xf5), 0xfd);
  });

  it("refuses values outside the sensor's range", () => {
    const bench = new ModelBench(findModel("bme280"), ADDR);
    assert.throws(() => bench.set("pressure", "200000"), modelError("I2C_MODEL_BAD_VALUE"));
    assert.throws(() => bench.set("temperature", "90"), modelError("I2C_MODEL_BAD_VALUE"));
  });

  it("a successor given the saved state answers as the saved chip", () => {
    const { bench: saved } = probed("bme280", { temperature: 30, pressure: 95000, humidity: 20 });
    const fresh = new ModelBench(findModel("bme280"), ADDR);
    saved.write(0xd0);
    saved.handOverTo(fresh);
    assert.deepEqual(fresh.readNow(1), saved.readNow(1), "pointer");
    assert.deepEqual(fresh.readBytes(0xf2, 13), saved.readBytes(0xf2, 13));
    assert.throws(() => fresh.device.restoreState?.({}), modelError("I2C_MODEL_BAD_STATE"));
  });
});

describe("BMP280 options", () => {
  it("the BMP280 takes no humidity option; the BME280 does", () => {
    assert.throws(
      () => new ModelBench(findModel("bmp280"), ADDR, { humidity: 40 }),
      modelError("I2C_MODEL_BAD_OPTIONS"),
    );
    assert.equal(new ModelBench(findModel("bme280"), ADDR, { humidity: 40 }).get("humidity"), 40);
  });
});
