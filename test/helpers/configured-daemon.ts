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
import { type DaemonProcess, WAIT_MS, withDaemon } from "./daemon.js";
import { MEMORY_EEPROM_ADDR, memoryEeprom } from "./eeprom.js";
import { scaled } from "./time.js";

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

/**
 * Queues every transfer of `transfers` on the ring and kicks once: the daemon runs them back to back
 * in one pass, with no round trip to the guest between them (what a driver does that queues a
 * read right behind a write). Returns their results in order.
 */
export async function transfersInOnePass(
  guest: I2cGuest,
  transfers: readonly (readonly I2cOp[])[],
): Promise<TransferResult[]> {
  const submissions = transfers.map((ops) => guest.driver.submit(ops, { kick: false }));
  guest.driver.kickIfNeeded();
  return Promise.all(submissions.map((submission) => guest.driver.wait(submission)));
}

/**
 * transferOk, retried while the transfer fails (an EEPROM in its write cycle NACKs its address, as
 * at24 retries for up to 25 ms); fails when it still does after WAIT_MS (scaled).
 */
export async function transferOkWithin(
  guest: I2cGuest,
  ops: readonly I2cOp[],
): Promise<Uint8Array[]> {
  const end = Date.now() + scaled(WAIT_MS);
  for (;;) {
    const result = await guest.driver.transfer(ops);
    if (result.ok) return [...result.reads];
    if (Date.now() > end) {
      throw new Error(
        `transfer still failing after ${scaled(WAIT_MS)} ms: ${JSON.stringify(result.statuses)}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}
