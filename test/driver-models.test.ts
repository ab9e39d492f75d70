// Integration: the chips Linux drivers bind to (tmp102, ds3231, pca9555, ina226, sht3x, bme280,
// pmbus) served by the real daemon from a config file, read the way their drivers read them, with
// their physical inputs changed over the control socket: the config options and `set` reach them.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ControlClient } from "../src/control/client.js";
import type { I2cGuest } from "../src/frontend/i2c-driver.js";
import { crc8, SENSIRION_CRC8, SMBUS_PEC } from "../src/i2c/models/crc8.js";
import { transferOk, withGuest, writeConfig } from "./helpers/configured-daemon.js";
import { makeTempDir } from "./helpers/daemon.js";

const dir = makeTempDir("vdi2c-driver-models-");
after(() => dir.remove());

const TMP102 = 0x48;
const DS3231 = 0x68;
const PCA9555 = 0x20;
const INA226 = 0x40;
const SHT3X = 0x44;
const BME280 = 0x76;
const PMBUS = 0x10;

let config = "";
before(() => {
  config = writeConfig(dir.path, [
    { bus: "sim", address: TMP102, model: "tmp102", options: { temperature: 30 } },
    {
      bus: "sim",
      address: DS3231,
      model: "ds3231",
      options: { time: "2125-06-01T12:00:00Z", temperature: 22.25 },
    },
    { bus: "sim", address: PCA9555, model: "pca9555", options: { inputs: 0xa55a } },
    { bus: "sim", address: INA226, model: "ina226", options: { current: 1.5, busVoltage: 12 } },
    { bus: "sim", address: SHT3X, model: "sht3x", options: { temperature: 23.5, humidity: 41.2 } },
    { bus: "sim", address: BME280, model: "bme280", options: { pressure: 95000 } },
    { bus: "sim", address: PMBUS, model: "pmbus", options: { vin: 12.25 } },
  ]);
});

async function withChips(body: (guest: I2cGuest, control: ControlClient) => Promise<void>) {
  const socket = join(dir.path, "control.sock");
  await withGuest(dir.path, ["--config", config, "--control-socket", socket], async (guest) => {
    const control = await ControlClient.connect(socket);
    try {
      await body(guest, control);
    } finally {
      control.close();
    }
  });
}

async function set(control: ControlClient, address: number, property: string, value: string) {
  const reply = await control.command(["set", `0x${address.toString(16)}`, property, value]);
  assert.equal(reply.ok, true, JSON.stringify(reply));
}

async function readAt(guest: I2cGuest, addr: number, command: readonly number[], length: number) {
  const [read] = await transferOk(guest, [
    { addr, write: Uint8Array.from(command) },
    { addr, read: length },
  ]);
  return [...(read ?? [])];
}

const word = (bytes: number[], at = 0) => ((bytes[at] ?? 0) << 8) | (bytes[at + 1] ?? 0);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("driver-bound models through the daemon", () => {
  it("config options and control-socket `set` reach every chip", async () => {
    await withChips(async (guest, control) => {
      // tmp102: 30 °C in 12-bit normal mode, then 13-bit extended mode as tmp102_probe sets it.
      assert.equal(word(await readAt(guest, TMP102, [0x01], 2)), 0x60a0);
      assert.equal(word(await readAt(guest, TMP102, [0x00], 2)), 0x1e00);
      await transferOk(guest, [{ addr: TMP102, write: Uint8Array.of(0x01, 0x62, 0xb0) }]);
      await set(control, TMP102, "temperature", "-12.5");
      assert.equal(word(await readAt(guest, TMP102, [0x00], 2)), 0xf9c1);

      // ds3231: the configured time in the 22nd century (month bit 7), its temperature.
      const time = await readAt(guest, DS3231, [0x00], 7);
      assert.deepEqual(time.slice(1, 7), [0x00, 0x12, time[3], 0x01, 0x86, 0x25]);
      assert.deepEqual(await readAt(guest, DS3231, [0x11], 2), [22, 0x40]);
      await set(control, DS3231, "temperature", "-3.75");
      assert.deepEqual(await readAt(guest, DS3231, [0x11], 2), [0xfc, 0x40]);

      // pca9555: both input ports in one read, then the outside changes.
      assert.deepEqual(await readAt(guest, PCA9555, [0x00], 2), [0x5a, 0xa5]);
      await set(control, PCA9555, "inputs", "0x0ff0");
      assert.deepEqual(await readAt(guest, PCA9555, [0x00], 2), [0xf0, 0x0f]);

      // ina226: ina2xx_init's configuration and calibration, then 1.5 A → 2 A at 12 V.
      await transferOk(guest, [{ addr: INA226, write: Uint8Array.of(0x00, 0x45, 0x27) }]);
      await transferOk(guest, [{ addr: INA226, write: Uint8Array.of(0x05, 0x08, 0x00) }]);
      assert.equal(word(await readAt(guest, INA226, [0x04], 2)), 6000); // 250 µA steps
      await set(control, INA226, "current", "2");
      assert.equal(word(await readAt(guest, INA226, [0x04], 2)), 8000);
      assert.equal(word(await readAt(guest, INA226, [0xfe], 2)), 0x5449);

      // sht3x: single shot (Linux's 0x2400), read 15 ms later, words checked by CRC.
      await set(control, SHT3X, "humidity", "80");
      await transferOk(guest, [{ addr: SHT3X, write: Uint8Array.of(0x24, 0x00) }]);
      await sleep(20);
      const [measured] = await transferOk(guest, [{ addr: SHT3X, read: 6 }]);
      const bytes = [...(measured ?? [])];
      assert.equal(bytes[2], crc8(bytes.slice(0, 2), SENSIRION_CRC8));
      assert.equal(bytes[5], crc8(bytes.slice(3, 5), SENSIRION_CRC8));
      assert.equal(Math.round(((175 * word(bytes, 0)) / 65535 - 45) * 10), 235);
      assert.equal(Math.round((100 * word(bytes, 3)) / 65535), 80);

      // bme280: chip ID, then normal mode gives measured (non-skipped) readings.
      assert.deepEqual(await readAt(guest, BME280, [0xd0], 1), [0x60]);
      await transferOk(guest, [{ addr: BME280, write: Uint8Array.of(0xf2, 0x01) }]);
      await transferOk(guest, [{ addr: BME280, write: Uint8Array.of(0xf4, 0x57) }]);
      const data = await readAt(guest, BME280, [0xf7], 8);
      assert.notDeepEqual(data.slice(0, 3), [0x80, 0x00, 0x00]);
      assert.notDeepEqual(data.slice(6, 8), [0x80, 0x00]);

      // pmbus: READ_VIN as a word with PEC, as Linux reads once CAPABILITY has PEC.
      const vin = await readAt(guest, PMBUS, [0x88], 3);
      const pmbusW = PMBUS << 1;
      assert.equal(vin[2], crc8([pmbusW, 0x88, pmbusW | 1, vin[0] ?? 0, vin[1] ?? 0], SMBUS_PEC));
      await set(control, PMBUS, "vin", "5");
      const five = await readAt(guest, PMBUS, [0x88], 2);
      assert.notDeepEqual(five, vin.slice(0, 2));
      const got = await control.command(["get", `0x${PMBUS.toString(16)}`, "vin"]);
      assert.ok(got.ok && got.payload === "5", JSON.stringify(got));
    });
  });
});
