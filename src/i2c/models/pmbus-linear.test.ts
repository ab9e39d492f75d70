import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  decodeLinear11,
  decodeLinear16,
  encodeLinear11,
  encodeLinear16,
  voutModeExponent,
} from "./pmbus-linear.js";

describe("PMBus LINEAR11 / LINEAR16", () => {
  it("encodes with the most precise exponent", () => {
    assert.equal(encodeLinear11(12), 0xd300); // 768 × 2^-6
    assert.equal(decodeLinear11(0xd300), 12);
    assert.equal(decodeLinear11(encodeLinear11(-0.25)), -0.25);
    assert.equal(decodeLinear11(0x0001), 1);
    assert.equal(decodeLinear11(0x07ff), -1); // exponent 0, mantissa -1
    assert.equal(encodeLinear11(-0.25), 0xa400); // -1024 × 2^-12
  });

  it("round trips within half a mantissa step", () => {
    fc.assert(
      fc.property(fc.double({ min: -1e6, max: 1e6, noNaN: true }), (value) => {
        const back = decodeLinear11(encodeLinear11(value));
        const step = 2 ** Math.max(-16, Math.ceil(Math.log2(Math.abs(value) / 1023 || 2 ** -16)));
        assert.ok(Math.abs(back - value) <= step / 2 + 1e-12, `${value} → ${back}`);
      }),
    );
  });

  it("LINEAR16 at VOUT_MODE 0x17 (exponent -9)", () => {
    assert.equal(voutModeExponent(0x17), -9);
    assert.equal(encodeLinear16(1.2, -9), 614);
    assert.equal(decodeLinear16(614, -9), 1.19921875);
  });
});
