/**
 * `npm run demo`: the whole path end to end without hardware or a VM. Starts the real daemon
 * (dist/src/cli/main.js, same Node binary) on an emulated 24c02 EEPROM at 0x50 in a temp dir, connects
 * the in-repo frontend exactly as QEMU 7.2 does (vhost-user handshake, memfd guest RAM, eventfds),
 * then acts as the guest's i2c-virtio driver: scans the bus like `i2cdetect`, writes a message and
 * reads it back, dumps the EEPROM like `i2cdump`, and stops the daemon. Exit status 0 only when every
 * step did what it should. Must not reach into the daemon's modules: it talks to it over the socket.
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { I2cGuest } from "../frontend/i2c-driver.js";

const EEPROM_ADDR = 0x50;
const EEPROM_SIZE = 256;
/** 24c02 page: one write may not cross it. */
const PAGE_SIZE = 8;
const MESSAGE = "Hello from the guest, via vhost-user!";
const MESSAGE_OFFSET = 0x20;
/** Addresses i2cdetect scans by default. */
const SCAN_FIRST = 0x08;
const SCAN_LAST = 0x77;
const START_TIMEOUT_MS = 10_000;

const MAIN_JS = fileURLToPath(new URL("./main.js", import.meta.url));

function hex2(value: number): string {
  return value.toString(16).padStart(2, "0");
}

function say(line = ""): void {
  process.stdout.write(`${line}\n`);
}

class DemoFailure extends Error {}

function check(condition: boolean, what: string): void {
  if (!condition) throw new DemoFailure(what);
}

/** Starts the daemon and resolves once it logs that it listens on `socket`. */
function startDaemon(args: readonly string[], socket: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [MAIN_JS, ...args], {
    stdio: ["ignore", "inherit", "pipe"],
  });
  let pending = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new DemoFailure(`the daemon did not listen on ${socket} within ${START_TIMEOUT_MS} ms`),
      );
    }, START_TIMEOUT_MS);
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        say(`  daemon | ${line}`);
        if (line.includes(`listening path=${socket}`)) {
          clearTimeout(timer);
          resolve(child);
        }
      }
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new DemoFailure(`the daemon exited early (code ${code}, signal ${signal})`));
    });
  });
}

function stopDaemon(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve(child.exitCode);
      return;
    }
    const timer = setTimeout(() => child.kill("SIGKILL"), START_TIMEOUT_MS);
    child.removeAllListeners("exit");
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    child.kill("SIGTERM");
  });
}

/** i2cdetect: a zero-length write to each address; "--" = nobody answered. */
async function scan(guest: I2cGuest): Promise<number[]> {
  const found: number[] = [];
  say("     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f");
  for (let row = 0; row < 0x80; row += 16) {
    let line = `${hex2(row)}: `;
    for (let addr = row; addr < row + 16; addr++) {
      if (addr < SCAN_FIRST || addr > SCAN_LAST) {
        line += "   ";
        continue;
      }
      const probe = await guest.driver.transfer([{ addr, write: new Uint8Array(0) }]);
      if (probe.ok) found.push(addr);
      line += probe.ok ? `${hex2(addr)} ` : "-- ";
    }
    say(line.trimEnd());
  }
  return found;
}

/** Page writes, as at24 does: never across an 8-byte page. */
async function writeEeprom(guest: I2cGuest, offset: number, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const at = offset + done;
    const chunk = data.subarray(
      done,
      done + Math.min(PAGE_SIZE - (at % PAGE_SIZE), data.length - done),
    );
    const result = await guest.driver.transfer([
      { addr: EEPROM_ADDR, write: Uint8Array.of(at, ...chunk) },
    ]);
    check(result.ok, `page write at 0x${hex2(at)} failed (statuses ${result.statuses.join(",")})`);
    done += chunk.length;
  }
}

/** Sets the address pointer and reads, in one combined transfer (repeated START). */
async function readEeprom(guest: I2cGuest, offset: number, length: number): Promise<Uint8Array> {
  const result = await guest.driver.transfer([
    { addr: EEPROM_ADDR, write: Uint8Array.of(offset) },
    { addr: EEPROM_ADDR, read: length },
  ]);
  check(result.ok, `read of ${length} bytes at 0x${hex2(offset)} failed`);
  return result.reads[0] ?? new Uint8Array(0);
}

/** i2cdump-style table: 16 rows of 16 bytes, then the printable characters. */
async function dump(guest: I2cGuest): Promise<Uint8Array> {
  const contents = new Uint8Array(EEPROM_SIZE);
  say("     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f    0123456789abcdef");
  for (let row = 0; row < EEPROM_SIZE; row += 16) {
    const bytes = await readEeprom(guest, row, 16);
    contents.set(bytes, row);
    const hexPart = [...bytes].map(hex2).join(" ");
    const text = [...bytes]
      .map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : "."))
      .join("");
    say(`${hex2(row)}: ${hexPart}    ${text}`);
  }
  return contents;
}

async function demo(dir: string): Promise<void> {
  const prefix = join(dir, "vi2c.sock");
  const socket = `${prefix}0`;
  const args = ["-s", prefix, "-l", `sim:0x${hex2(EEPROM_ADDR)}=24c02`];
  say("== vhost-device-i2c demo: an emulated 24c02 EEPROM, driven like a Linux guest would ==");
  say();
  say(`Starting the daemon: vhost-device-i2c ${args.join(" ")}`);
  const daemon = await startDaemon(args, socket);
  let guest: I2cGuest | null = null;
  let daemonStatus: number | null = null;
  try {
    guest = await I2cGuest.connect(socket);
    say();
    say(`Connected to ${socket} as QEMU 7.2 does (vhost-user-i2c-pci):`);
    say(`  features 0x${guest.features.toString(16)}, one 4-entry virtqueue, memfd guest RAM`);

    say();
    say("Scanning the bus (i2cdetect -y: a zero-length write to every address):");
    const found = await scan(guest);
    check(
      found.length === 1 && found[0] === EEPROM_ADDR,
      `expected only 0x${hex2(EEPROM_ADDR)} on the bus, found [${found.map(hex2).join(", ")}]`,
    );

    say();
    say(`Writing "${MESSAGE}" at 0x${hex2(MESSAGE_OFFSET)} (8-byte page writes)...`);
    const message = new TextEncoder().encode(MESSAGE);
    await writeEeprom(guest, MESSAGE_OFFSET, message);
    const back = await readEeprom(guest, MESSAGE_OFFSET, message.length);
    const backText = new TextDecoder().decode(back);
    say(`Read back with one write+read transfer: "${backText}"`);
    check(backText === MESSAGE, "the data read back differs from what was written");

    say();
    say(`EEPROM contents (i2cdump -y <bus> 0x${hex2(EEPROM_ADDR)}):`);
    const contents = await dump(guest);
    check(
      new TextDecoder().decode(
        contents.subarray(MESSAGE_OFFSET, MESSAGE_OFFSET + message.length),
      ) === MESSAGE,
      "the dump does not show the message",
    );

    say();
    say("An address not in the device list is refused before it reaches any bus:");
    const refused = await guest.driver.transfer([{ addr: 0x51, read: 1 }]);
    say(`  read from 0x51 -> ${refused.ok ? "OK (unexpected)" : "error status, as a NACK"}`);
    check(!refused.ok, "a transfer to an unlisted address succeeded");

    await guest.stop();
  } finally {
    if (guest) await guest.close();
    say();
    say("Stopping the daemon (SIGTERM)...");
    daemonStatus = await stopDaemon(daemon);
    say(`The daemon exited with status ${daemonStatus}.`);
  }
  check(daemonStatus === 0, `the daemon exited with status ${daemonStatus}`);
  say();
  say("Demo finished: every step worked.");
}

const dir = mkdtempSync(join(tmpdir(), "vhost-device-i2c-demo-"));
try {
  await demo(dir);
  process.exitCode = 0;
} catch (err) {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
