/**
 * Integration-test helpers for devices given by a config file: write a `--config` JSON file and run a
 * body against the real daemon with one "VM" (I2cGuest, playing QEMU + the Linux driver) connected.
 * Must not reach into the daemon's modules: only its command line, config file and socket.
 * @module
 */

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { I2cGuest, type I2cOp, type TransferResult } from "../../src/frontend/i2c-driver.js";
import { hex } from "../../src/i2c/bus.js";
import { type DaemonProcess, withDaemon } from "./daemon.js";
import { MEMORY_EEPROM_ADDR, memoryEeprom } from "./eeprom.js";

/** Writes `{"devices": devices}` as `name` in `dir`; returns its path. */
export function writeConfig(
  dir: string,
  devices: readonly unknown[],
  name = "devices.json",
): string {
  const path = join(dir, name);
  writeFileSync(path, `${JSON.stringify({ devices }, null, 2)}\n`);
  return path;
}

/**
 * Daemon arguments serving memoryEeprom(model, address) to every socket: `--config` with a file
 * written in `dir`, named after the model and address (what `-l sim:0x50=24c02` serves, minus the
 * write cycle).
 */
export function memoryEepromArgs(
  dir: string,
  model = "24c02",
  address = MEMORY_EEPROM_ADDR,
): string[] {
  const name = `memory-${model}-${hex(address)}.json`;
  return ["--config", writeConfig(dir, [memoryEeprom(model, address)], name)];
}

/**
 * Starts the daemon with `-s <dir>/vi2c.sock` plus `args`, connects a guest to socket 0, runs `body`,
 * then disconnects and stops the daemon (which must exit 0).
 */
export async function withGuest<T>(
  dir: string,
  args: readonly string[],
  body: (guest: I2cGuest, daemon: DaemonProcess) => Promise<T>,
): Promise<T> {
  const prefix = join(dir, "vi2c.sock");
  return withDaemon(["-s", prefix, ...args], [`${prefix}0`], async (daemon) => {
    const guest = await I2cGuest.connect(`${prefix}0`);
    try {
      return await body(guest, daemon);
    } finally {
      await guest.close();
    }
  });
}

/** Runs one transfer and fails unless every message succeeded; returns the bytes of each read. */
export async function transferOk(guest: I2cGuest, ops: readonly I2cOp[]): Promise<Uint8Array[]> {
  const result: TransferResult = await guest.driver.transfer(ops);
  if (!result.ok) {
    throw new Error(`transfer failed: statuses ${JSON.stringify(result.statuses)}`);
  }
  return [...result.reads];
}
