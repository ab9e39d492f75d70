/**
 * Microchip MCP4725 12-bit DAC with EEPROM: fast-mode and register writes, the EEPROM write with
 * its RDY/BSY cycle, power-down modes, and the 5-byte status read. The output voltage it drives is
 * a read-only property. Owns only the chip's behaviour; must not know about buses, virtio or the
 * configuration format.
 * @module
 */

import type { I2cDeviceModel, ModelDefinition } from "../model.js";
import { chipModel } from "./chip-model.js";
import { type HostClock, systemClock } from "./clock.js";
import { validateState } from "./options.js";

/** EEPROM write cycle (datasheet: 25 ms typical, 50 ms maximum; Linux polls every 20 ms). */
export const MCP4725_EEPROM_WRITE_MS = 25;
const READY = 0x80;
const POWER_ON_RESET = 0x40;
/** Resistor to ground per power-down mode (1 kΩ, 100 kΩ, 500 kΩ): the output drives nothing. */
const POWER_DOWN_NAMES = ["normal", "1 kΩ to GND", "100 kΩ to GND", "500 kΩ to GND"];

/**
 * The chip, as in the MCP4725 datasheet and as Linux's mcp4725 driver uses it:
 * - a write's first byte says what follows: C2..C1 = 00 is a fast write (PD1 PD0 D11..D8, then
 *   D7..D0; pairs repeat), C2..C0 = 010 writes the DAC register and 011 also the EEPROM (then
 *   D11..D4, D3..D0 in the high nibble; triplets repeat);
 * - a read returns RDY/BSY, POR, PD1 PD0, the DAC code (12 bits, left-justified in 2 bytes) and
 *   the EEPROM (PD1 PD0 and D11..D8, then D7..D0); reading on repeats the 5 bytes' last one;
 * - `mcp4725_probe` reads the status to learn the power-down mode and DAC code;
 *   `mcp4725_set_value` does a fast write; `mcp4725_store_eeprom` writes 0x60 (DAC and EEPROM)
 *   and polls RDY/BSY: the EEPROM write takes 25 ms, during which RDY/BSY reads 0 and further
 *   EEPROM writes are ignored;
 * - at power-on the DAC register and power-down bits load from the EEPROM and POR reads 1.
 */
export class Mcp4725Chip implements I2cDeviceModel {
  readonly #clock: HostClock;
  readonly vdd: number;
  code: number;
  powerDown: number;
  eepromCode: number;
  eepromPowerDown: number;
  #eepromBusyUntil = 0;
  /** Bytes of the write message so far, and where the status read stands. */
  #pending: number[] = [];
  #readIndex = 0;
  #writing = false;

  constructor(clock: HostClock, vdd: number, eeprom: { code: number; powerDown: number }) {
    this.#clock = clock;
    this.vdd = vdd;
    this.eepromCode = eeprom.code;
    this.eepromPowerDown = eeprom.powerDown;
    this.code = eeprom.code;
    this.powerDown = eeprom.powerDown;
  }

  /** The output voltage: VDD × code / 4096, or 0 V (pulled to ground) when powered down. */
  get output(): number {
    return this.powerDown === 0 ? (this.vdd * this.code) / 4096 : 0;
  }

  get eepromBusy(): boolean {
    return this.#clock.now() < this.#eepromBusyUntil;
  }

  start(read: boolean): boolean {
    this.#writing = !read;
    this.#pending = [];
    this.#readIndex = 0;
    return true;
  }

  write(data: Uint8Array): boolean {
    if (!this.#writing) return false;
    for (const byte of data) {
      this.#pending.push(byte);
      this.#take();
    }
    return true;
  }

  /** Acts on the bytes so far once they make a whole fast write (2) or register write (3). */
  #take(): void {
    const [first = 0, second = 0, third = 0] = this.#pending;
    const fast = (first & 0xc0) === 0;
    if (fast && this.#pending.length === 2) {
      this.powerDown = (first >> 4) & 3;
      this.code = ((first & 0x0f) << 8) | second;
      this.#pending = [];
    } else if (!fast && this.#pending.length === 3) {
      const command = (first >> 5) & 7;
      const powerDown = (first >> 1) & 3;
      const code = (second << 4) | (third >> 4);
      if (command === 2 || command === 3) {
        this.code = code;
        this.powerDown = powerDown;
      }
      if (command === 3 && !this.eepromBusy) {
        this.eepromCode = code;
        this.eepromPowerDown = powerDown;
        this.#eepromBusyUntil = this.#clock.now() + MCP4725_EEPROM_WRITE_MS;
      }
      this.#pending = [];
    }
  }

  read(into: Uint8Array): void {
    const status = (this.eepromBusy ? 0 : READY) | POWER_ON_RESET | (this.powerDown << 1);
    const bytes = [
      status,
      this.code >> 4,
      (this.code & 0x0f) << 4,
      (this.eepromPowerDown << 5) | (this.eepromCode >> 8),
      this.eepromCode & 0xff,
    ];
    for (let i = 0; i < into.length; i++) {
      into[i] = bytes[Math.min(this.#readIndex++, bytes.length - 1)] ?? 0;
    }
  }

  stop(): void {
    this.#pending = [];
    this.#writing = false;
  }

  saveState(): Record<string, number> {
    return {
      code: this.code,
      powerDown: this.powerDown,
      eepromCode: this.eepromCode,
      eepromPowerDown: this.eepromPowerDown,
    };
  }

  /** An EEPROM write in progress is taken as done: the successor starts well after 25 ms. */
  restoreState(state: unknown): void {
    const code = { type: "integer", min: 0, max: 0xfff } as const;
    const powerDown = { type: "integer", min: 0, max: 3 } as const;
    const schema = {
      type: "object",
      required: ["code", "powerDown", "eepromCode", "eepromPowerDown"],
      properties: { code, powerDown, eepromCode: code, eepromPowerDown: powerDown },
    } as const;
    const saved = validateState(schema, state, "mcp4725");
    this.code = saved.code ?? 0;
    this.powerDown = saved.powerDown ?? 0;
    this.eepromCode = saved.eepromCode ?? 0;
    this.eepromPowerDown = saved.eepromPowerDown ?? 0;
  }
}

const schema = {
  type: "object",
  properties: {
    vdd: {
      type: "number",
      min: 2.7,
      max: 5.5,
      description: "supply (reference) voltage in V (default 3.3)",
    },
    eeprom: {
      type: "integer",
      min: 0,
      max: 0xfff,
      description: "DAC code in the EEPROM, loaded at power-on (default 0, the factory value)",
    },
  },
} as const;

/** The MCP4725 ModelDefinition with an injectable host clock (tests pass a fake one). */
export function mcp4725Model(clock: HostClock = systemClock): ModelDefinition {
  return chipModel({
    name: "mcp4725",
    linuxDriver: "iio mcp4725",
    description: "Microchip MCP4725 12-bit DAC with EEPROM (output voltage as a property)",
    options: schema,
    create: (o) => new Mcp4725Chip(clock, o.vdd ?? 3.3, { code: o.eeprom ?? 0, powerDown: 0 }),
    target: (chip) => chip,
    properties: (chip) => ({
      output: {
        description: "output voltage in V (0 when powered down)",
        get: () => chip.output,
      },
      code: { description: "DAC register code (0..4095)", get: () => chip.code },
      powerDown: {
        description: "power-down mode: normal, or the resistor pulling the output to ground",
        get: () => POWER_DOWN_NAMES[chip.powerDown] ?? "normal",
      },
      eeprom: { description: "DAC code stored in the EEPROM", get: () => chip.eepromCode },
    }),
  });
}
