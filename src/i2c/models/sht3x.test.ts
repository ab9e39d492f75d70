import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock, ModelBench, modelError } from "../../../test/helpers/model-bench.js";
import { crc8, SENSIRION_CRC8 } from "./crc8.js";
import { sht3xModels } from "./sht3x.js";

const ADDR = 0x44;

function setup(options: Record<string, unknown> = {}, name = "sht3x", clock = new FakeClock()) {
  const definition = sht3xModels(clock).find((m) => m.name === name);
  assert.ok(definition);
  const bench = new ModelBench(definition, ADDR, options);
  /** i2c_master_send of a command (and data), as its own transfer. */
  const send = (...bytes: number[]) => bench.transfer(bench.w(...bytes)) === 1;
  /** i2c_master_recv: undefined when the read header is NACKed. */
  const recv = (length: number) => {
    const msg = bench.r(length);
    return bench.transfer(msg) === 1 ? [...msg.buf] : undefined;
  };
  return { bench, clock, send, recv };
}

/** sht3x_extract_temperature / sht3x_extract_humidity (m°C, m%RH). */
const milliCelsius = (raw: number) => ((21875 * raw) >> 13) - 45000;
const milliPercent = (raw: number) => (12500 * raw) >> 13;
const word = (bytes: number[], at: number) => ((bytes[at] ?? 0) << 8) | (bytes[at + 1] ?? 0);
const crcOk = (bytes: number[], at: number) =>
  crc8(bytes.slice(at, at + 2), SENSIRION_CRC8) === bytes[at + 2];

describe("SHT3x", () => {
  it("probes as sht3x_probe does: clear status, four limits (6-byte reads), serial number", () => {
    const { send, recv } = setup({ serialNumber: 0x01020304 });
    assert.ok(send(0x30, 0x41));
    const expected = [0xcd33, 0xc92d, 0x3466, 0x3869];
    [0xe11f, 0xe114, 0xe102, 0xe109].forEach((command, i) => {
      assert.ok(send(command >> 8, command & 0xff));
      const bytes = recv(6);
      assert.ok(bytes);
      assert.equal(word(bytes, 0), expected[i]);
      assert.ok(crcOk(bytes, 0));
      assert.deepEqual(bytes.slice(3), [0xff, 0xff, 0xff], "0xff past the data");
    });
    // limits_update: temperature limit 60 °C from 0xcd33
    assert.equal(Math.round(milliCelsius((0xcd33 & 0x1ff) << 7) / 1000), 60);
    assert.ok(send(0x37, 0x80));
    const serial = recv(6);
    assert.ok(serial);
    assert.deepEqual([word(serial, 0), word(serial, 3)], [0x0102, 0x0304]);
    assert.ok(crcOk(serial, 0) && crcOk(serial, 3));
  });

  it("single shot without stretching: NACK until 12.5 ms, then T and RH with CRCs, read once", () => {
    const { clock, send, recv } = setup({ temperature: 23.5, humidity: 41.2 });
    assert.ok(send(0x24, 0x00));
    clock.advance(10);
    assert.equal(recv(6), undefined, "still measuring");
    clock.advance(5); // Linux waits 15 ms
    const bytes = recv(6);
    assert.ok(bytes);
    assert.ok(crcOk(bytes, 0) && crcOk(bytes, 3));
    assert.equal(Math.round(milliCelsius(word(bytes, 0)) / 10), 2350);
    assert.equal(Math.round(milliPercent(word(bytes, 3)) / 100), 412);
    assert.equal(recv(6), undefined, "no data until the next measurement");
  });

  it("single shot with clock stretching answers at once; low repeatability takes 2.5 ms", () => {
    const { clock, send, recv } = setup();
    assert.ok(send(0x2c, 0x06));
    assert.ok(recv(6));
    assert.ok(send(0x24, 0x16));
    clock.advance(2);
    assert.equal(recv(6), undefined);
    clock.advance(1);
    assert.ok(recv(6));
  });

  it("periodic mode: fetch returns a new measurement per period, NACKs otherwise; break ends it", () => {
    const { bench, clock, send, recv } = setup({ temperature: 20 });
    assert.ok(send(0x21, 0x30)); // 1 mps, high repeatability
    assert.ok(send(0xe0, 0x00));
    assert.equal(recv(6), undefined, "no measurement yet");
    clock.advance(1000);
    bench.set("temperature", "30");
    assert.ok(send(0xe0, 0x00));
    const bytes = recv(6);
    assert.ok(bytes);
    assert.equal(Math.round(milliCelsius(word(bytes, 0)) / 1000), 30);
    assert.ok(send(0xe0, 0x00));
    assert.equal(recv(6), undefined, "fetched already");
    assert.ok(send(0x24, 0x00));
    assert.equal(
      (bench.get("status") as number) & 0x0002,
      0x0002,
      "single shot refused in periodic mode",
    );
    assert.ok(send(0x30, 0x93));
    assert.ok(send(0x24, 0x00));
    assert.equal((bench.get("status") as number) & 0x0002, 0);
  });

  it("status: power-on alert pending and reset; heater; clear; alarms from the limits", () => {
    const { bench, clock, send, recv } = setup({ temperature: 25 });
    const status = () => {
      assert.ok(send(0xf3, 0x2d));
      const bytes = recv(3);
      assert.ok(bytes && crcOk(bytes, 0));
      return word(bytes, 0);
    };
    assert.equal(status(), 0x8010);
    assert.ok(send(0x30, 0x6d));
    assert.ok(send(0x30, 0x41));
    assert.equal(status(), 0x2000);
    bench.set("temperature", "61");
    assert.ok(send(0x24, 0x00));
    clock.advance(15);
    recv(6);
    assert.equal(status() & 0x8400, 0x8400, "temp1_alarm: bit 10");
    bench.set("temperature", "57");
    assert.ok(send(0x24, 0x00));
    clock.advance(15);
    recv(6);
    assert.equal(status() & 0x0400, 0, "below the clear limit");
  });

  it("limit writes: taken with a good CRC (limit_write), refused with a bad one", () => {
    const { bench, send, recv } = setup();
    const raw = 0x1234;
    const crc = crc8([0x12, 0x34], SENSIRION_CRC8);
    assert.ok(send(0x61, 0x1d, 0x12, 0x34, crc));
    assert.ok(send(0xe1, 0x1f));
    assert.equal(word(recv(3) ?? [], 0), raw);
    assert.ok(send(0x61, 0x1d, 0x56, 0x78, crc));
    assert.equal((bench.get("status") as number) & 0x0003, 0x0003);
    assert.ok(send(0xe1, 0x1f));
    assert.equal(word(recv(3) ?? [], 0), raw, "unchanged");
  });

  it("sts3x: temperature only", () => {
    const { bench, send, recv } = setup({ temperature: -10 }, "sts3x");
    assert.equal(bench.device.properties?.humidity, undefined);
    assert.ok(send(0x2c, 0x06));
    const bytes = recv(6);
    assert.ok(bytes);
    assert.equal(Math.round(milliCelsius(word(bytes, 0)) / 1000), -10);
    assert.deepEqual(bytes.slice(3), [0xff, 0xff, 0xff]);
  });

  it("refuses values outside the sensor's range", () => {
    const { bench } = setup();
    assert.throws(() => bench.set("humidity", "101"), modelError("I2C_MODEL_BAD_VALUE"));
    assert.throws(() => setup({ temperature: 130 }), modelError("I2C_MODEL_BAD_OPTIONS"));
  });

  it("a successor keeps the readings, status, limits and periodic mode", () => {
    const clock = new FakeClock();
    const saved = setup({ temperature: 31, humidity: 70 }, "sht3x", clock);
    const fresh = setup({}, "sht3x", clock);
    saved.send(0x61, 0x00, 0x12, 0x34, crc8([0x12, 0x34], SENSIRION_CRC8));
    saved.send(0x22, 0x36);
    saved.bench.handOverTo(fresh.bench);
    assert.equal(fresh.bench.get("temperature"), 31);
    assert.equal(fresh.bench.get("humidity"), 70);
    assert.equal(fresh.bench.get("status"), saved.bench.get("status"));
    clock.advance(500);
    assert.ok(fresh.send(0xe0, 0x00));
    assert.ok(fresh.recv(6), "periodic mode goes on");
    assert.ok(fresh.send(0x30, 0x93));
    assert.ok(fresh.send(0xe1, 0x02));
    assert.equal(word(fresh.recv(3) ?? [], 0), 0x1234);
    assert.throws(() => fresh.bench.device.restoreState?.({}), modelError("I2C_MODEL_BAD_STATE"));
  });
});
