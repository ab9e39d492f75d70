// Tests for the fake adapter's bus time and the probe that measures it (the benchmark's bus-limited
// reference): a transfer never takes less than its messages' bus time, and a missing adapter fails
// loudly instead of reporting a rate.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { FakeI2c, fakeUnavailableReason, measureBusTime } from "./fake-i2c/fake.js";

const skip = fakeUnavailableReason() ?? false;

describe("fake bus time", { skip }, () => {
  let fake: FakeI2c;
  before(async () => {
    fake = await FakeI2c.create("adapter 3 funcs=i2c\ndevice 3 0x50\ndelay_us 3 1500\n");
  });
  after(() => fake.cleanup());

  it("holds each 2-message transfer at least 2 x delay_us (deadlines, not sleeps that drift)", () => {
    const time = measureBusTime(fake.configPath, 3, 20);
    assert.ok(time.medianUs >= 3000, `median ${time.medianUs} µs`);
    assert.ok(time.p99Us >= time.medianUs);
  });

  it("follows a run-time change of delay_us", async () => {
    await fake.update("adapter 3 funcs=i2c\ndevice 3 0x50\ndelay_us 3 4000\n");
    assert.ok(measureBusTime(fake.configPath, 3, 5).medianUs >= 8000);
  });

  it("fails naming the cause when the adapter does not exist", () => {
    assert.throws(() => measureBusTime(fake.configPath, 9, 5), /bus-time probe failed.*i2c-9/s);
  });
});
