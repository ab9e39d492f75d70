/**
 * PMBus numeric formats (PMBus Part II, section 7): LINEAR11 (5-bit exponent, 11-bit mantissa, both
 * two's complement, in one word) and LINEAR16 (an unsigned 16-bit mantissa whose exponent is
 * VOUT_MODE's low 5 bits). Must not know about any particular device.
 * @module
 */

import { clampSigned, fromTwosComplement, toTwosComplement } from "./fixed-point.js";

/**
 * `value` as LINEAR11, with the smallest exponent whose mantissa fits (the most precise); values
 * past what the format holds are clamped.
 *
 * @example
 * ```ts
 * encodeLinear11(12);    // 0xd300: 768 × 2^-6
 * encodeLinear11(-0.25); // 0xa400: -1024 × 2^-12
 * ```
 */
export function encodeLinear11(value: number): number {
  for (let exponent = -16; exponent <= 15; exponent++) {
    const mantissa = Math.round(value / 2 ** exponent);
    if (mantissa >= -1024 && mantissa <= 1023) {
      return (toTwosComplement(exponent, 5) << 11) | toTwosComplement(mantissa, 11);
    }
  }
  const mantissa = clampSigned(Math.round(value / 2 ** 15), 11);
  return (toTwosComplement(15, 5) << 11) | toTwosComplement(mantissa, 11);
}

/** The value a LINEAR11 word holds (as Linux's pmbus_reg2data_linear reads it). */
export function decodeLinear11(word: number): number {
  const exponent = fromTwosComplement(word >> 11, 5);
  const mantissa = fromTwosComplement(word & 0x7ff, 11);
  return mantissa * 2 ** exponent;
}

/** The exponent VOUT_MODE (linear mode, bits 7:5 = 000) gives LINEAR16 values. */
export const voutModeExponent = (voutMode: number) => fromTwosComplement(voutMode & 0x1f, 5);

/** `value` as LINEAR16 at `exponent`, rounded and clamped to 0..0xffff. */
export function encodeLinear16(value: number, exponent: number): number {
  return Math.min(0xffff, Math.max(0, Math.round(value / 2 ** exponent)));
}

export function decodeLinear16(word: number, exponent: number): number {
  return (word & 0xffff) * 2 ** exponent;
}
