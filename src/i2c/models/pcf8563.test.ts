import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock, ModelBench, modelError } from "../../../test/helpers/model-bench.js";
import { findModel } from "../model.js";
import { pcf8563Model } from "./pcf8563.js";

const ADDR = 0x51;
const CONTROL2 = 0x01;
const SECONDS = 0x02;
const ALARM = 0x09;

function setup(options: Record<string, unknown> = {}, clock = new FakeClock()) {
  return { bench: new ModelBench(pcf8563Model(clock), ADDR, options), clock };
}

/** pcf8563_write_block_data: one 2-byte transfer (register, value) per register. */
function writeEach(bench: ModelBench, reg: number, values: number[]) {
  values.forEach((value, i) => {
    bench.write(reg + i, value);
  });
}

describe("PCF8563", () => {
  it("is registered under Linux's device name", () => {
    assert.equal(findModel("pcf8563").name, "pcf8563");
  });

  it("pcf8563_get_datetime's 9-byte read: control, then Friday 2024-05-17 13:45:30 (weekday 5)", () => {
    const { bench } = setup();
    assert.deepEqual(bench.readBytes(0, 9), [0x08, 0x00, 0x30, 0x45, 0x13, 0x17, 5, 0x05, 0x24]);
  });

  it("power-on values: alarms disabled, CLKOUT on, timer 1/60 Hz; the pointer wraps at 0x0f", () => {
    const { bench } = setup();
    assert.deepEqual(bench.readBytes(ALARM, 7), [0x80, 0x80, 0x80, 0x80, 0x80, 0x03, 0x00]);
    assert.deepEqual(bench.readBytes(0x0f, 2), [0x00, 0x08]);
  });

  it("VL set: the driver refuses the time; set_datetime clears it", () => {
    const { bench } = setup({ voltageLow: true });
    assert.equal(bench.readBytes(0, 9)[SECONDS], 0xb0);
    // pcf8563_set_datetime: 2031-01-02 03:04:05, weekday 4, C clear (20xx), one transfer per register
    writeEach(bench, SECONDS, [0x05, 0x04, 0x03, 0x02, 4, 0x01, 0x31]);
    assert.equal(bench.get("voltageLow"), false);
    assert.equal(bench.get("time"), "2031-01-02T03:04:05.000Z");
    bench.set("voltageLow", "true");
    assert.equal(bench.readByte(SECONDS) & 0x80, 0x80);
  });

  it("C set means 19xx; 1999 rolls into 2000 with C cleared", () => {
    const { bench, clock } = setup();
    bench.write(SECONDS, 0x59, 0x59, 0x23, 0x31, 5, 0x80 | 0x12, 0x99);
    assert.equal(bench.get("time"), "1999-12-31T23:59:59.000Z");
    clock.advance(1000);
    assert.deepEqual(bench.readBytes(SECONDS, 7), [0x00, 0x00, 0x00, 0x01, 6, 0x01, 0x00]);
    assert.throws(
      () => bench.set("time", "2100-01-01T00:00:00Z"),
      modelError("I2C_MODEL_BAD_VALUE"),
    );
  });

  it("STOP halts the clock; clearing it resumes from the frozen time", () => {
    const { bench, clock } = setup();
    bench.write(0, 0x28);
    clock.advance(10_000);
    assert.equal(bench.readByte(SECONDS), 0x30);
    assert.equal(bench.get("halted"), true);
    bench.write(0, 0x08);
    clock.advance(2000);
    assert.equal(bench.readByte(SECONDS), 0x32);
  });

  it("alarm: AF is set at the matching minute; only the guest clears it (pcf8563_set_alarm_mode)", () => {
    const { bench, clock } = setup();
    // pcf8563_rtc_set_alarm: 13:47 on any day (day and weekday disabled), then AIE
    writeEach(bench, ALARM, [0x47, 0x13, 0x80, 0x80]);
    bench.write(CONTROL2, 0x02);
    clock.advance(60_000); // 13:46:30
    assert.equal(bench.readByte(CONTROL2), 0x02);
    clock.advance(60_000); // 13:47:30
    assert.equal(bench.readByte(CONTROL2), 0x0a);
    assert.equal(bench.get("alarm"), true);
    bench.write(CONTROL2, 0x0a | 0xe0);
    assert.equal(bench.readByte(CONTROL2), 0x0a, "writing 1 keeps AF; bits 7..5 read 0");
    bench.write(CONTROL2, 0x02);
    assert.equal(bench.readByte(CONTROL2), 0x02);
    clock.advance(24 * 3_600_000); // a day later the same minute has come again
    assert.equal(bench.readByte(CONTROL2), 0x0a);
  });

  it("a successor given the saved state answers as the saved chip", () => {
    const clock = new FakeClock();
    const { bench: saved } = setup({}, clock);
    const { bench: fresh } = setup({}, clock);
    saved.write(SECONDS, 0x00, 0x10, 0x08, 0x29, 0x04, 0x02, 0x24);
    saved.write(ALARM, 0x30, 0x80, 0x80, 0x80, 0x81, 0x82, 0x40);
    saved.set("voltageLow", "true");
    saved.write(0x05);
    saved.handOverTo(fresh);
    clock.advance(90_000);
    assert.deepEqual(fresh.readNow(1), saved.readNow(1), "pointer");
    assert.deepEqual(fresh.readBytes(0, 16), saved.readBytes(0, 16));
    assert.equal(fresh.get("time"), "2024-02-29T08:11:30.000Z");
  });

  it("refuses a state it cannot take and changes nothing", () => {
    const { bench } = setup();
    const good = bench.savedState() as Record<string, unknown>;
    for (const state of [null, {}, { ...good, pointer: 16 }, { ...good, voltageLow: "no" }]) {
      assert.throws(() => bench.device.restoreState?.(state), modelError("I2C_MODEL_BAD_STATE"));
    }
    assert.deepEqual(bench.readBytes(SECONDS, 3), [0x30, 0x45, 0x13]);
  });
});
