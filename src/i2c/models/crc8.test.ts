import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { crc8, SENSIRION_CRC8, SMBUS_PEC } from "./crc8.js";

describe("crc8", () => {
  it("Sensirion: the datasheet's example 0xBEEF → 0x92", () => {
    assert.equal(crc8([0xbe, 0xef], SENSIRION_CRC8), 0x92);
  });

  it("SMBus PEC: CRC-8/SMBUS check value of '123456789' is 0xf4", () => {
    assert.equal(crc8(Buffer.from("123456789"), SMBUS_PEC), 0xf4);
  });

  it("continues from a previous value", () => {
    const whole = crc8([1, 2, 3, 4], SMBUS_PEC);
    assert.equal(crc8([3, 4], SMBUS_PEC, crc8([1, 2], SMBUS_PEC)), whole);
  });
});
