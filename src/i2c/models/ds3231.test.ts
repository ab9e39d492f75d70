import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock, ModelBench, modelError } from "../../../test/helpers/model-bench.js";
import { findModel } from "../model.js";
import { ds3231Model } from "./ds3231.js";

const ADDR = 0x68;
const CONTROL = 0x0e;
const STATUS = 0x0f;

function setup(options: Record<string, unknown> = {}, clock = new FakeClock()) {
  return { bench: new ModelBench(ds3231Model(clock), ADDR, options), clock };
}

/** ds3231_hwmon_read_temp: (s16)(msb << 8 | lsb) >> 6, times 250 m°C. */
const driverMilliCelsius = ([msb = 0, lsb = 0]: number[]) =>
  ((((msb << 8) | lsb) << 16) >> 22) * 250;

describe("DS3231", () => {
  it("is registered under Linux's device name", () => {
    assert.equal(findModel("ds3231").name, "ds3231");
  });

  it("reads the host time in BCD (Friday 2024-05-17 13:45:30), control 0x1c, status EN32kHz", () => {
    const { bench } = setup();
    assert.deepEqual(bench.readBytes(0, 7), [0x30, 0x45, 0x13, 5, 0x17, 0x05, 0x24]);
    assert.equal(bench.readByte(CONTROL), 0x1c);
    assert.equal(bench.readByte(STATUS), 0x08);
  });

  it("probes as ds1307_probe does: control and status in one read, OSF cleared by writing 0", () => {
    const { bench } = setup({ oscillatorStopped: true });
    assert.deepEqual(bench.readBytes(CONTROL, 2), [0x1c, 0x88]);
    bench.write(CONTROL, 0x1c & ~0x80);
    bench.write(STATUS, 0x88 & ~0x80);
    assert.equal(bench.readByte(STATUS), 0x08);
    assert.equal(bench.device.properties?.oscillatorStopped?.get(), false);
  });

  it("OSF, A2F and A1F are cleared by the guest, never set; the operator can set OSF", () => {
    const { bench } = setup();
    bench.write(STATUS, 0x83);
    assert.equal(bench.readByte(STATUS), 0x00, "writing 1 sets nothing; EN32kHz written 0");
    bench.set("oscillatorStopped", "true");
    assert.equal(bench.readByte(STATUS), 0x80);
  });

  it("set_time in 2125: the century bit in the month register; the clock runs on", () => {
    const { bench, clock } = setup();
    // ds1307_set_time: tm_year 225 → year register 0x25, month | 0x80
    bench.write(0, 0x59, 0x59, 0x23, 0x04, 0x31, 0x12 | 0x80, 0x25);
    assert.equal(bench.get("time"), "2125-12-31T23:59:59.000Z");
    clock.advance(1000);
    assert.deepEqual(bench.readBytes(0, 7), [0x00, 0x00, 0x00, 0x05, 0x01, 0x01 | 0x80, 0x26]);
    bench.set("time", "2099-12-31T23:59:59Z");
    clock.advance(1000);
    assert.deepEqual(bench.readBytes(4, 3), [0x01, 0x81, 0x00], "2099 rolls into century 1");
    assert.throws(
      () => bench.set("time", "2200-01-01T00:00:00Z"),
      modelError("I2C_MODEL_BAD_VALUE"),
    );
  });

  it("12-hour mode as written, converted back as ds1307_probe does", () => {
    const { bench } = setup();
    bench.write(2, 0x40 | 0x20 | 0x01); // 1 PM
    assert.equal(bench.readByte(2), 0x61);
    assert.equal(bench.get("time"), "2024-05-17T13:45:30.000Z");
    bench.write(2, 0x13);
    assert.equal(bench.readByte(2), 0x13);
  });

  it("temperature: 10 bits at 0x11..0x12 as ds3231_hwmon_read_temp reads them", () => {
    const { bench } = setup({ temperature: 21.75 });
    assert.deepEqual(bench.readBytes(0x11, 2), [0x15, 0xc0]);
    assert.equal(driverMilliCelsius(bench.readBytes(0x11, 2)), 21750);
    bench.set("temperature", "-12.25");
    assert.equal(driverMilliCelsius(bench.readBytes(0x11, 2)), -12250);
    bench.write(0x11, 0x00, 0x00);
    assert.equal(driverMilliCelsius(bench.readBytes(0x11, 2)), -12250, "read-only");
    assert.throws(() => bench.set("temperature", "90"), modelError("I2C_MODEL_BAD_VALUE"));
  });

  it("alarm and aging registers hold what is written; CONV reads 0; the pointer wraps at 0x12", () => {
    const { bench } = setup({ temperature: 25.25 });
    bench.write(0x07, 1, 2, 3, 4, 5, 6, 7);
    assert.deepEqual(bench.readBytes(0x07, 7), [1, 2, 3, 4, 5, 6, 7]);
    bench.write(CONTROL, 0x3c);
    assert.equal(bench.readByte(CONTROL), 0x1c);
    bench.write(0x10, 0xf6);
    assert.equal(bench.get("aging"), -10);
    assert.deepEqual(bench.readBytes(0x12, 2), [0x40, 0x30], "0x12 then 0x00 (seconds)");
  });

  it("a successor given the saved state answers as the saved chip", () => {
    const clock = new FakeClock();
    const { bench: saved } = setup({ oscillatorStopped: true }, clock);
    const { bench: fresh } = setup({}, clock);
    saved.write(0, 0x00, 0x30, 0x40 | 0x11, 0x02, 0x29, 0x02 | 0x80, 0x28); // 2128-02-29 11:30 AM
    saved.write(0x07, 9, 8, 7, 6, 5, 4, 3, 0x05);
    saved.write(0x10, 0x7f);
    saved.set("temperature", "30.5");
    saved.write(0x03);
    saved.handOverTo(fresh);
    clock.advance(61_000);
    assert.deepEqual(fresh.readNow(1), saved.readNow(1), "pointer");
    assert.deepEqual(fresh.readBytes(0, 0x13), saved.readBytes(0, 0x13));
    assert.equal(fresh.get("time"), "2128-02-29T11:31:01.000Z");
  });

  it("refuses a state it cannot take and changes nothing", () => {
    const { bench } = setup();
    const good = bench.savedState() as Record<string, unknown>;
    for (const state of [
      null,
      {},
      { ...good, pointer: 0x13 },
      { ...good, alarms: [1, 2, 3, 4, 5, 6, 7, 8] },
    ]) {
      assert.throws(() => bench.device.restoreState?.(state), modelError("I2C_MODEL_BAD_STATE"));
    }
    assert.deepEqual(bench.readBytes(0, 3), [0x30, 0x45, 0x13]);
  });
});

describe("DS3231 alarms", () => {
  it("alarm 1 on seconds (A1M2..A1M4 masked) and alarm 2 on hour and minute raise A1F and A2F", () => {
    const { bench, clock } = setup(); // 13:45:30
    bench.write(0x07, 0x15, 0x80, 0x80, 0x80); // alarm 1: when seconds are 15
    bench.write(0x0b, 0x47, 0x13, 0x80); // alarm 2: 13:47 on any date
    assert.equal(bench.readByte(STATUS) & 0x03, 0);
    clock.advance(44_000); // 13:46:14
    assert.equal(bench.readByte(STATUS) & 0x03, 0);
    clock.advance(1000); // 13:46:15
    assert.equal(bench.readByte(STATUS) & 0x03, 0x01);
    bench.write(STATUS, 0x08); // ds1337_set_alarm clears A1I/A2I by writing 0
    clock.advance(45_000); // 13:47:00
    assert.equal(bench.readByte(STATUS) & 0x03, 0x02);
  });

  it("day-of-week alarm (DY/DT set) and no alarm for time the operator jumped over", () => {
    const { bench, clock } = setup(); // Friday (5) 13:45:30
    bench.write(0x0b, 0x00, 0x00, 0x40 | 0x06); // alarm 2: Saturday 00:00
    bench.set("time", "2024-05-20T08:00:00Z"); // past Saturday, by the operator
    assert.equal(bench.readByte(STATUS) & 0x02, 0);
    bench.write(0, 0x00, 0x00, 0x00, 0x05, 0x17, 0x05, 0x24); // back to Friday 00:00 by the guest
    clock.advance(86_400_000);
    assert.equal(bench.readByte(STATUS) & 0x02, 0x02);
  });
});
