/**
 * Fixed-point and two's-complement codecs that sensor registers share: a signed reading in N bits,
 * left-justified in a 16-bit register (LM75, TMP102, ADS1115 style). Must not know about any
 * particular chip.
 * @module
 */

/** `value` (an integer) clamped to what `bits` bits of two's complement hold. */
export function clampSigned(value: number, bits: number): number {
  const max = 2 ** (bits - 1) - 1;
  return Math.min(max, Math.max(-max - 1, value));
}

/** The `bits`-bit two's-complement pattern of an integer already in range. */
export function toTwosComplement(value: number, bits: number): number {
  return value < 0 ? value + 2 ** bits : value;
}

/** The signed integer a `bits`-bit two's-complement pattern holds (higher bits ignored). */
export function fromTwosComplement(pattern: number, bits: number): number {
  const field = pattern % 2 ** bits;
  return field >= 2 ** (bits - 1) ? field - 2 ** bits : field;
}

/**
 * `value` as a `bits`-bit two's-complement field with `fractionBits` fraction bits, left-justified in
 * a 16-bit register (the low `16 - bits` bits 0): rounded to the step, clamped to the field.
 *
 * @example
 * ```ts
 * encodeLeftJustified(25, 9, 1);      // 0x1900 (LM75)
 * encodeLeftJustified(-0.0625, 12, 4); // 0xfff0 (TMP102 normal mode)
 * ```
 */
export function encodeLeftJustified(value: number, bits: number, fractionBits: number): number {
  const steps = clampSigned(Math.round(value * 2 ** fractionBits), bits);
  return toTwosComplement(steps, bits) * 2 ** (16 - bits);
}

/** The value a left-justified 16-bit register holds (bits below the field ignored). */
export function decodeLeftJustified(register: number, bits: number, fractionBits: number): number {
  const field = Math.floor((register & 0xffff) / 2 ** (16 - bits));
  return fromTwosComplement(field, bits) / 2 ** fractionBits;
}
