/**
 * CRC-8 (MSB first, no reflection, no final XOR) as sensors and SMBus use it: Sensirion's word
 * checksum (polynomial 0x31, initial 0xff) and SMBus packet error checking (polynomial 0x07,
 * initial 0x00). Must not know about any particular chip.
 * @module
 */

export interface Crc8Parameters {
  readonly polynomial: number;
  readonly initial: number;
}

/** Sensirion SHT3x/SHT4x/SGP: CRC-8/NRSC-5, over each 16-bit word. */
export const SENSIRION_CRC8: Crc8Parameters = { polynomial: 0x31, initial: 0xff };
/** SMBus PEC: CRC-8/SMBUS, over the whole transaction including address bytes. */
export const SMBUS_PEC: Crc8Parameters = { polynomial: 0x07, initial: 0x00 };

/**
 * CRC-8 of `bytes`, continuing from `crc` (default: the parameters' initial value).
 *
 * @example
 * ```ts
 * crc8(Uint8Array.of(0xbe, 0xef), SENSIRION_CRC8); // 0x92 (Sensirion datasheet example)
 * ```
 */
export function crc8(
  bytes: Iterable<number>,
  parameters: Crc8Parameters,
  crc = parameters.initial,
): number {
  let value = crc;
  for (const byte of bytes) {
    value ^= byte;
    for (let bit = 0; bit < 8; bit++) {
      value = value & 0x80 ? ((value << 1) ^ parameters.polynomial) & 0xff : (value << 1) & 0xff;
    }
  }
  return value;
}
