/**
 * Real guest, real daemon: Linux chip drivers bind to the daemon's emulated devices through the
 * virtio-i2c adapter and work: at24 (nvmem `eeprom` file, also over a backing file on the host),
 * lm75 (hwmon temperature, changed at run time through the control socket) and rtc-ds1307
 * (hwclock against host time, a written date read back). Tests whose model or option the daemon in
 * the tree does not accept yet skip with the daemon's own message. Skips by name without QEMU or a
 * built guest image (guest/build.sh). Must not reach into the daemon's modules.
 */

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import {
  ackPollLine,
  ConsoleWatch,
  consoleOrExit,
  controlCommand,
  describeOrSkip,
  eepromFillScript,
  eepromPattern,
  type GuestBench,
  guestSuite,
  hex,
  odHexCommand,
  parseOdHex,
  result,
  stopDaemonCleanly,
  TEST_TIMEOUT_MS,
  withGuestBench,
  writeBackedEepromConfig,
} from "./harness.js";

const { skip, images } = guestSuite();

const NEW_DEVICE = "/sys/bus/i2c/devices/i2c-0/new_device";
const DELETE_DEVICE = "/sys/bus/i2c/devices/i2c-0/delete_device";
const AT24_NVMEM = "/sys/bus/i2c/devices/0-0050/eeprom";
/** What the guest writes through the nvmem file, at this offset. */
const NVMEM_WRITE = { offset: 0x10, bytes: [0x53, 0x54, 0x00, 0xfe] } as const;

/**
 * Binds at24 to the 24c02 at 0x50 (filled first through i2c-dev when `fill` is given), reads the
 * nvmem file, writes NVMEM_WRITE through it, unbinds and reads those bytes back through i2c-dev.
 * Returns the EEPROM contents the guest saw before and after its write.
 */
async function at24Check(
  bench: GuestBench,
  fill: Uint8Array | null,
): Promise<{ before: Uint8Array; after: Uint8Array; raw: string }> {
  const octal = NVMEM_WRITE.bytes.map((byte) => `\\${byte.toString(8).padStart(3, "0")}`).join("");
  const run = await bench.boot(
    [
      // The chip has its 5 ms write cycle: the fill waits for it after each page, as datasheets advise.
      fill ? eepromFillScript(0x50, fill, 8, 0, { ackPolling: true }) : "",
      ...bindScript("24c02", 0x50),
      `echo "RESULT before $(${odHexCommand(AT24_NVMEM)})"`,
      `printf '${octal}' | dd of=${AT24_NVMEM} bs=1 seek=${NVMEM_WRITE.offset} conv=notrunc 2>/dev/null`,
      'echo "RESULT write_status $?"',
      `echo "RESULT after $(${odHexCommand(AT24_NVMEM)})"`,
      `echo 0x50 > ${DELETE_DEVICE}`,
      ackPollLine(0x50),
      `echo "RESULT raw $(i2ctransfer -y 0 w1@0x50 ${hex(NVMEM_WRITE.offset)} r${NVMEM_WRITE.bytes.length}@0x50)"`,
    ].join("\n"),
  );
  assert.equal(result(run, "driver"), "at24", "at24 did not bind to 0-0050");
  assert.equal(result(run, "write_status"), "0", "writing the nvmem file failed");
  return {
    before: parseOdHex(result(run, "before")),
    after: parseOdHex(result(run, "after")),
    raw: result(run, "raw"),
  };
}

/** `contents` with NVMEM_WRITE applied. */
function withNvmemWrite(contents: Uint8Array): Uint8Array {
  const expected = Uint8Array.from(contents);
  expected.set(NVMEM_WRITE.bytes, NVMEM_WRITE.offset);
  return expected;
}

/** The guest-side lines binding `driver` to the device at `address` and printing its driver's name. */
function bindScript(driver: string, address: number): string[] {
  const device = `0-00${address.toString(16)}`;
  return [
    `echo ${driver} ${hex(address)} > ${NEW_DEVICE}`,
    `echo "RESULT driver $(basename $(readlink /sys/bus/i2c/devices/${device}/driver))"`,
  ];
}

describeOrSkip("guest chip drivers on the emulated bus", { skip, timeout: TEST_TIMEOUT_MS }, () => {
  it("at24 binds; its nvmem eeprom file shows the device contents; a write through it reaches the device", async () => {
    await withGuestBench(images, async (bench) => {
      const daemon = await bench.startDaemon(["-l", "sim:0x50=24c02"]);
      const pattern = eepromPattern(256, 0x2d);
      const seen = await at24Check(bench, pattern);
      assert.deepEqual(seen.before, pattern);
      assert.deepEqual(seen.after, withNvmemWrite(pattern));
      assert.equal(seen.raw, NVMEM_WRITE.bytes.map(hex).join(" "));
      await stopDaemonCleanly(daemon);
    });
  });

  it("at24 over a file-backed EEPROM: nvmem equals the backing file, and its write lands in the file", async (t) => {
    await withGuestBench(images, async (bench) => {
      const contents = eepromPattern(256, 0x99);
      const { configFile, backing } = writeBackedEepromConfig(bench.dir, contents);
      const args = ["--config", configFile];
      if (await bench.skippedUnlessAccepted(t, args)) return;
      writeFileSync(backing, contents);
      const daemon = await bench.startDaemon(args);
      const seen = await at24Check(bench, null);
      assert.deepEqual(seen.before, contents);
      assert.deepEqual(seen.after, withNvmemWrite(contents));
      await stopDaemonCleanly(daemon);
      assert.deepEqual(new Uint8Array(readFileSync(backing)), withNvmemWrite(contents));
    });
  });

  it("lm75 binds; hwmon temp1_input follows the temperature set on the host, also at run time", async (t) => {
    await withGuestBench(images, async (bench) => {
      const control = join(bench.dir, "control.sock");
      const args = ["-l", "sim:0x48=lm75", "--control-socket", control];
      if (await bench.skippedUnlessAccepted(t, args)) return;
      const daemon = await bench.startDaemon(args);
      // The control socket comes up on its own schedule, not with the vhost-user sockets.
      await daemon.waitForLog(`control socket listening path=${control}\n`);
      await controlCommand(control, "set 0x48 temperature 22.5");
      const watch = new ConsoleWatch();
      const guest = bench.boot(
        [
          ...bindScript("lm75", 0x48),
          "hwmon=$(ls -d /sys/bus/i2c/devices/0-0048/hwmon/hwmon* | head -n 1)",
          'echo "RESULT initial $(cat $hwmon/temp1_input)"',
          "echo @@SET-TEMPERATURE@@",
          // The driver caches a reading for its sample time; poll until the new value shows.
          "polls=0",
          'while [ $polls -lt 100 ]; do t=$(cat $hwmon/temp1_input); [ "$t" = 31500 ] && break; polls=$((polls + 1)); sleep 0.2; done',
          'echo "RESULT changed $t"',
        ].join("\n"),
        { onConsole: watch.onConsole },
      );
      await consoleOrExit(watch, "@@SET-TEMPERATURE@@", guest);
      await controlCommand(control, "set 0x48 temperature 31.5");
      const run = await guest;
      assert.equal(result(run, "driver"), "lm75");
      assert.equal(result(run, "initial"), "22500");
      assert.equal(result(run, "changed"), "31500", "the run-time change never reached the guest");
      await stopDaemonCleanly(daemon);
    });
  });

  it("rtc-ds1307 binds; hwclock reads host time; a date written with hwclock -w reads back", async (t) => {
    await withGuestBench(images, async (bench) => {
      const args = ["-l", "sim:0x68=ds1307"];
      if (await bench.skippedUnlessAccepted(t, args)) return;
      const daemon = await bench.startDaemon(args);
      const written = Date.UTC(2031, 1, 3, 4, 5, 6) / 1000;
      const watch = new ConsoleWatch();
      let hostSecondsAtRead = Number.NaN;
      const guest = bench.boot(
        [
          ...bindScript("ds1307", 0x68),
          // The guest clock starts at 1970 (no RTC at boot): -s copies the chip's time into it.
          "hwclock -s -u -f /dev/rtc0",
          'echo "RESULT read_status $?"',
          'echo "RESULT rtc_epoch $(date +%s)"',
          'date -u -s "2031-02-03 04:05:06" > /dev/null',
          "hwclock -w -u -f /dev/rtc0",
          'echo "RESULT write_status $?"',
          "date -u -s 1980-01-01 > /dev/null",
          "hwclock -s -u -f /dev/rtc0",
          'echo "RESULT rtc_epoch_after $(date +%s)"',
        ].join("\n"),
        { onConsole: watch.onConsole },
      );
      // The host's clock when the guest's reading reaches the console.
      void watch.seen("RESULT rtc_epoch ").then(() => {
        hostSecondsAtRead = Date.now() / 1000;
      });
      const run = await guest;
      assert.equal(result(run, "driver"), "rtc-ds1307");
      assert.equal(result(run, "read_status"), "0", "hwclock could not read /dev/rtc0");
      const drift = Math.abs(Number(result(run, "rtc_epoch")) - hostSecondsAtRead);
      assert.ok(drift <= 2, `RTC is ${drift.toFixed(1)} s away from host time`);
      assert.equal(result(run, "write_status"), "0", "hwclock -w failed");
      const after = Number(result(run, "rtc_epoch_after"));
      assert.ok(
        after >= written && after <= written + 5,
        `read back ${new Date(after * 1000).toISOString()}, wrote 2031-02-03T04:05:06Z`,
      );
      await stopDaemonCleanly(daemon);
    });
  });
});
