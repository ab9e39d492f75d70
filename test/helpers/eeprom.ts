/**
 * An emulated 24Cxx EEPROM used as plain memory: without its internal write cycle (tWR), so data
 * written is read back, or written again, in the very next transfer. The models default to the
 * datasheets' 5 ms cycle, during which the chip NACKs its address, as real hardware does; tests about
 * something else (rings, handover, isolation, traces, fuzzing) take this kit instead of waiting.
 * Tests about the EEPROM itself keep the default and show the cycle. No daemon here (unit tests use
 * it too): configured-daemon.ts gives the daemon arguments.
 * @module
 */

import { hex } from "../../src/i2c/bus.js";

/** Model options that turn the write cycle off (`writeCycleMs: 0`). */
export const NO_WRITE_CYCLE = { writeCycleMs: 0 } as const;

/** Where the memory EEPROM sits unless a test says otherwise (where a 24Cxx answers on a PC). */
export const MEMORY_EEPROM_ADDR = 0x50;

/**
 * A config-file device entry: `model` at `address` on the sim bus, without a write cycle, with
 * `options` (e.g. a backing file) besides.
 */
export function memoryEeprom(
  model = "24c02",
  address = MEMORY_EEPROM_ADDR,
  options: Readonly<Record<string, unknown>> = {},
): { bus: "sim"; address: string; model: string; options: Record<string, unknown> } {
  return { bus: "sim", address: hex(address), model, options: { ...options, ...NO_WRITE_CYCLE } };
}
