/**
 * Real guest, real daemon: the Linux i2c-virtio driver in a QEMU (TCG) guest drives the daemon's
 * emulated bus through i2c-tools. Covers the adapter and the address scan, a byte-exact i2cdump
 * against a host-side reference, combined write+read (repeated START), i2cset/i2cget round trips
 * (also into a backing file on the host), unlisted addresses, alone and as the second message of
 * a transfer, and the same EEPROM checks over a packed virtqueue (packed=on: QEMU 7.2 asks for it;
 * QEMU 10 always gets it, the daemon offering it) and over a split one (daemon --packed-ring off).
 * Skips by name without QEMU or a built guest image (guest/build.sh).
 * Must not reach into the daemon's modules.
 */

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { it } from "node:test";
import { memoryEepromArgs, writeConfig } from "../helpers/configured-daemon.js";
import type { DaemonProcess } from "../helpers/daemon.js";
import { memoryEeprom } from "../helpers/eeprom.js";
import type { GuestRun } from "../helpers/guest.js";
import {
  describeOrSkip,
  eepromFillScript,
  eepromPattern,
  type GuestBench,
  guestSuite,
  hex,
  i2cdumpByteMode,
  md5,
  result,
  stopDaemonCleanly,
  TEST_TIMEOUT_MS,
  vhostUserI2cArgsWith,
  withGuestBench,
  writeBackedEepromConfig,
} from "./harness.js";

const { skip, images } = guestSuite();

const EEPROM_SIZE = 256;
const EEPROM_PAGE = 8;

/** Addresses shown by an `i2cdetect -y` grid (cells that are not "--" or blank). */
function detectedAddresses(grid: string): string[] {
  const found: string[] = [];
  for (const line of grid.split("\n")) {
    const row = /^([0-7]0):((?: {1,3}\S\S| {3})+)\s*$/.exec(line);
    if (!row?.[1] || !row[2]) continue;
    const cells = row[2].match(/.{3}/g) ?? [];
    cells.forEach((cell, column) => {
      const text = cell.trim();
      if (text && text !== "--") found.push(`${text}@${row[1]?.[0]}${column.toString(16)}`);
    });
  }
  return found;
}

/** VIRTIO_F_RING_PACKED (bit 34). */
const RING_PACKED = 1n << 34n;

/** The virtio features the daemon logged as negotiated (needs --log-level debug). */
function negotiatedFeatures(daemon: DaemonProcess): bigint {
  const negotiated = /features negotiated features=(0x[0-9a-f]+)/.exec(daemon.stderr)?.[1];
  assert.ok(negotiated, "the daemon logged no feature negotiation");
  return BigInt(negotiated);
}

/** The guest's output between its `@@NAME-BEGIN` and `@@NAME-END` lines. */
function section(output: string, name: string): string {
  const beginLine = `@@${name}-BEGIN\n`;
  const begin = output.indexOf(beginLine);
  const end = output.indexOf(`@@${name}-END`);
  if (begin < 0 || end < begin) throw new Error(`the guest printed no ${name} section`);
  return output.slice(begin + beginLine.length, end);
}

/**
 * The guest half of the EEPROM checks: optional fill, a full byte-mode i2cdump (its md5 and text),
 * a combined write+read at 0x40, then i2cset/i2cget of `probe` at `probeOffset`.
 */
function eepromScript(fill: Uint8Array | null, probeOffset: number, probe: number): string {
  return [
    fill ? eepromFillScript(0x50, fill, EEPROM_PAGE) : "",
    "i2cdump -y 0 0x50 b > /tmp/dump",
    'echo "RESULT dump_status $?"',
    'echo "RESULT dump_md5 $(md5sum < /tmp/dump | cut -d" " -f1)"',
    "echo @@DUMP-BEGIN; cat /tmp/dump; echo @@DUMP-END",
    'echo "RESULT combined $(i2ctransfer -y 0 w1@0x50 0x40 r8@0x50)"',
    `i2cset -y 0 0x50 ${hex(probeOffset)} ${hex(probe)}`,
    'echo "RESULT set_status $?"',
    `echo "RESULT get $(i2cget -y 0 0x50 ${hex(probeOffset)})"`,
  ].join("\n");
}

/**
 * Fills the EEPROM at 0x50 (a 24c02 without write cycle) of a daemon (started with `daemonArgs` added) with the
 * pattern of `seed` from the guest, then runs and checks `eepromScript`; returns the stopped daemon.
 */
async function guestFilledEepromCheck(
  bench: GuestBench,
  seed: number,
  probeOffset: number,
  probe: number,
  options: { daemonArgs?: readonly string[]; qemuArgs?: readonly string[] } = {},
): Promise<DaemonProcess> {
  // Page writes back to back, then reads: memory without the chip's write cycle.
  const daemon = await bench.startDaemon([
    ...memoryEepromArgs(bench.dir),
    ...(options.daemonArgs ?? []),
  ]);
  const pattern = eepromPattern(EEPROM_SIZE, seed);
  const run = await bench.boot(eepromScript(pattern, probeOffset, probe), options);
  assertEepromRun(run, pattern, probe);
  await stopDaemonCleanly(daemon);
  return daemon;
}

/** Host-side checks of `eepromScript`'s output for an EEPROM that held `contents` when dumped. */
function assertEepromRun(run: GuestRun, contents: Uint8Array, probe: number): void {
  assert.equal(result(run, "dump_status"), "0", "i2cdump failed");
  const expected = i2cdumpByteMode(contents);
  // The text first, so a mismatch shows a diff; then the md5 the guest computed over the same text.
  assert.equal(section(run.scriptOutput ?? "", "DUMP"), expected);
  assert.equal(result(run, "dump_md5"), md5(expected));
  const combined = [...contents.subarray(0x40, 0x48)].map(hex).join(" ");
  assert.equal(result(run, "combined"), combined, "w1@0x50 0x40 r8@0x50 returned other bytes");
  assert.equal(result(run, "set_status"), "0", "i2cset failed");
  assert.equal(result(run, "get"), hex(probe), "i2cget did not read back what i2cset wrote");
}

describeOrSkip("guest on the emulated bus", { skip, timeout: TEST_TIMEOUT_MS }, () => {
  it("lists the i2c_virtio adapter; a quick-write scan shows exactly the configured addresses; unlisted addresses NACK, also as a second message", async () => {
    await withGuestBench(images, async (bench) => {
      const eeproms = [memoryEeprom("24c02", 0x50), memoryEeprom("24c02", 0x53)];
      const daemon = await bench.startDaemon([
        "--config",
        writeConfig(bench.dir, eeproms),
        "--log-level",
        "debug",
      ]);
      const run = await bench.boot(
        [
          "echo @@ADAPTERS-BEGIN; i2cdetect -l; echo @@ADAPTERS-END",
          // Default mode: quick write for every address except 0x30-0x37 and 0x50-0x5f (read byte).
          "echo @@SCAN-BEGIN; i2cdetect -y 0; echo @@SCAN-END",
          "echo @@SECOND-BEGIN; i2ctransfer -y 0 w1@0x50 0x00 r1@0x51; echo status=$?; echo @@SECOND-END",
          "echo @@ALONE-BEGIN; i2cget -y 0 0x51 0x00; echo status=$?; echo @@ALONE-END",
          // The listed device still answers after the refusals.
          'echo "RESULT after $(i2ctransfer -y 0 w1@0x50 0x00 r1@0x50)"',
        ].join("\n"),
      );
      const output = run.scriptOutput ?? "";

      assert.match(section(output, "ADAPTERS"), /^i2c-0\s+i2c\s+i2c_virtio at virtio bus \d+/m);
      assert.deepEqual(detectedAddresses(section(output, "SCAN")), ["50@50", "53@53"]);

      // w1@0x50 then r1@0x51 in one transfer: the guest sees a short transfer, and no data.
      const second = section(output, "SECOND");
      assert.match(second, /only [01]\/2 messages were sent/);
      assert.doesNotMatch(second, /^0x[0-9a-f]{2}$/m);
      const alone = section(output, "ALONE");
      assert.match(alone, /Error: Read failed/);
      assert.match(alone, /status=[1-9]/);
      assert.equal(result(run, "after"), "0xff");

      await stopDaemonCleanly(daemon);
      // Every transfer naming 0x51 was refused before any bus saw it.
      const lines51 = daemon.stderr.split("\n").filter((line) => /transfer .*@0x51/.test(line));
      assert.ok(lines51.length >= 2, "the daemon logged no transfer to 0x51 at all");
      for (const line of lines51) assert.match(line, /address 0x51 not listed/);
    });
  });

  it("i2cdump of a guest-filled EEPROM equals the host's reference; combined write+read; i2cset/i2cget", async () => {
    await withGuestBench(images, async (bench) => {
      await guestFilledEepromCheck(bench, 0x5b, 0x7e, 0x3c);
    });
  });

  it("a packed virtqueue (vhost-user-i2c-pci,packed=on): guest fill, i2cdump reference, repeated START, i2cset/i2cget", async () => {
    await withGuestBench(images, async (bench) => {
      const daemon = await guestFilledEepromCheck(bench, 0x3e, 0x05, 0xe1, {
        daemonArgs: ["--log-level", "debug"],
        qemuArgs: vhostUserI2cArgsWith(bench.socket, "packed=on"),
      });
      // The guest really drove a packed ring: VIRTIO_F_RING_PACKED was negotiated.
      const negotiated = negotiatedFeatures(daemon);
      assert.notEqual(
        negotiated & RING_PACKED,
        0n,
        `features 0x${negotiated.toString(16)} lack RING_PACKED`,
      );
    });
  });

  it("a split virtqueue whatever the QEMU (daemon --packed-ring off): guest fill, i2cdump reference, repeated START, i2cset/i2cget", async () => {
    await withGuestBench(images, async (bench) => {
      // QEMU 10 would otherwise always give the guest a packed ring, since the daemon offers it.
      const daemon = await guestFilledEepromCheck(bench, 0x71, 0x33, 0x0f, {
        daemonArgs: ["--packed-ring", "off", "--log-level", "debug"],
      });
      const negotiated = negotiatedFeatures(daemon);
      assert.equal(
        negotiated & RING_PACKED,
        0n,
        `features 0x${negotiated.toString(16)} have RING_PACKED`,
      );
    });
  });

  it("a file-backed EEPROM: the guest's i2cdump matches the file, and i2cset lands in it", async (t) => {
    await withGuestBench(images, async (bench) => {
      const contents = eepromPattern(EEPROM_SIZE, 0xc4);
      const { configFile, backing } = writeBackedEepromConfig(bench.dir, contents);
      const args = ["--config", configFile];
      if (await bench.skippedUnlessAccepted(t, args)) return;
      writeFileSync(backing, contents);
      const daemon = await bench.startDaemon(args);
      const run = await bench.boot(eepromScript(null, 0x91, 0xa7));
      assertEepromRun(run, contents, 0xa7);
      await stopDaemonCleanly(daemon);
      const expected = Uint8Array.from(contents);
      expected[0x91] = 0xa7;
      assert.deepEqual(new Uint8Array(readFileSync(backing)), expected);
    });
  });
});
