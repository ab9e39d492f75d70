/**
 * Real guest, host-adapter path: the daemon serves a device of a host adapter (the LD_PRELOAD fake
 * /dev/i2c-3, test/fake-i2c) at host address 0x52 to the guest at 0x42 (`-l "3:0x52@0x42"`, QEMU's
 * old `host-i2cdev,address=0x42,hostaddr=0x52`). The guest's `i2cdump` must equal, byte for byte,
 * the real `i2cdump` run on the host against an identical fake adapter, and the fake's log must show
 * that the daemon never addressed anything but 0x52 on the host.
 * Skips by name without QEMU, a built guest image, the fake or the host's i2cdump (i2c-tools).
 * Must not reach into the daemon's modules.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { promisify } from "node:util";
import { FakeI2c, fakeUnavailableReason } from "../fake-i2c/fake.js";
import { fakeSysfsEnv } from "../helpers/fake-sysfs.js";
import {
  describeOrSkip,
  eepromPattern,
  guestSuite,
  hostToolSkip,
  md5,
  odHexCommand,
  parseOdHex,
  result,
  stopDaemonCleanly,
  TEST_TIMEOUT_MS,
  withGuestBench,
} from "./harness.js";

const { skip: guestSkip, images } = guestSuite();
const skip =
  guestSkip || (fakeUnavailableReason() ?? false) || hostToolSkip("i2cdump", "i2c-tools", "-V");

const ADAPTER = 3;
const HOST_ADDRESS = 0x52;
const GUEST_ADDRESS = 0x42;
/** Every byte value once, in a scrambled order: a dump shifted or mis-addressed cannot match. */
const CONTENTS = eepromPattern(256, 0x3c);

/** The fake's configuration: one plain I2C adapter with the device at its host address. */
function fakeConfig(hexFile: string): string {
  return [
    `adapter ${ADAPTER} funcs=i2c|emul`,
    `device ${ADAPTER} 0x${HOST_ADDRESS.toString(16)} hexfile=${hexFile}`,
  ].join("\n");
}

/** `i2cdump -y 3 0x52` on the host, preloaded with a fake of its own reading the same contents. */
async function hostDump(hexFile: string): Promise<string> {
  const fake = await FakeI2c.create(fakeConfig(hexFile));
  try {
    const { stdout } = await promisify(execFile)(
      "i2cdump",
      ["-y", String(ADAPTER), `0x${HOST_ADDRESS.toString(16)}`],
      { env: fake.env(), encoding: "latin1", timeout: 30_000 },
    );
    const reads = (await fake.readLog()).filter((entry) => entry.dir === "r");
    assert.equal(reads.length, 256, "the host's i2cdump did not read 256 bytes from the fake");
    return stdout;
  } finally {
    await fake.cleanup();
  }
}

/**
 * The guest: the scan's cells (one word per address 0x08-0x77, "--" for none), then a default-mode
 * i2cdump of the guest address, its md5 and its bytes as hex (a console line cannot garble them).
 */
const GUEST_SCRIPT = [
  `echo "RESULT scan $(i2cdetect -y 0 | tail -n +2 | cut -c 5- | tr -s ' \\n' '  ')"`,
  `i2cdump -y 0 0x${GUEST_ADDRESS.toString(16)} > /tmp/dump`,
  'echo "RESULT dump_status $?"',
  'echo "RESULT dump_md5 $(md5sum < /tmp/dump | cut -d" " -f1)"',
  `echo "RESULT dump_hex $(${odHexCommand("/tmp/dump")})"`,
].join("\n");

describeOrSkip("guest on a host adapter", { skip, timeout: TEST_TIMEOUT_MS }, () => {
  it('host 0x52 shown at 0x42 (-l "3:0x52@0x42"): the guest scans only 0x42, its i2cdump md5 equals the host\'s, the host bus sees only 0x52', async () => {
    await withGuestBench(images, async ({ dir, startDaemon, boot }) => {
      const hexFile = join(dir, "device-0x52.hex");
      writeFileSync(hexFile, `${[...CONTENTS].map((byte) => byte.toString(16)).join(" ")}\n`);
      const expected = await hostDump(hexFile);
      assert.equal(expected.split("\n").length, 18, `unexpected host i2cdump output:\n${expected}`);

      const fake = await FakeI2c.create(fakeConfig(hexFile));
      try {
        // An empty sysfs: the daemon must not look at the machine's real adapters.
        const sysfs = join(dir, "sys");
        mkdirSync(sysfs);
        const mapping = `${ADAPTER}:0x${HOST_ADDRESS.toString(16)}@0x${GUEST_ADDRESS.toString(16)}`;
        const daemon = await startDaemon(["-l", mapping, "--log-level", "debug"], {
          env: { ...fake.env({}), ...fakeSysfsEnv(sysfs) },
        });
        const run = await boot(GUEST_SCRIPT);

        const cells = result(run, "scan").trim().split(" ");
        assert.equal(cells.length, 0x78 - 0x08, "the guest's i2cdetect grid was not read whole");
        assert.deepEqual(
          cells.filter((cell) => cell !== "--"),
          [GUEST_ADDRESS.toString(16)],
          "the guest's scan shows other addresses than 0x42",
        );

        assert.equal(result(run, "dump_status"), "0", "i2cdump failed in the guest");
        // The text first, so a mismatch shows a diff; then the md5 the guest computed itself.
        const guestDump = Buffer.from(parseOdHex(result(run, "dump_hex"))).toString("latin1");
        assert.equal(guestDump, expected, "the guest's i2cdump differs from the host's");
        assert.equal(result(run, "dump_md5"), md5(Buffer.from(expected, "latin1")));

        await stopDaemonCleanly(daemon);
        const log = await fake.readLog();
        const reads = log.filter((entry) => entry.dir === "r" && entry.result === "ok");
        assert.ok(reads.length >= 256, `only ${reads.length} reads reached the host device`);
        const elsewhere = log.filter(
          (entry) => entry.adapter !== ADAPTER || entry.addr !== HOST_ADDRESS,
        );
        assert.deepEqual(elsewhere, [], "the daemon addressed something other than 3:0x52");
      } finally {
        await fake.cleanup();
      }
    });
  });
});
