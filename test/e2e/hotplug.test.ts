/**
 * Real guest, real daemon, PCIe hot-plug: while the guest runs transfers in a loop on its first
 * adapter, a second vhost-user-i2c-pci is plugged over QMP (chardev-add to the daemon's socket 1 +
 * device_add behind a pcie-root-port), used, unplugged (device_del until DEVICE_DELETED,
 * chardev-remove), plugged again and unplugged again. The first adapter's loop must not see one
 * failed transfer, and the daemon's socket 1 must take the second connection as it took the first.
 * Skips by name without QEMU or a built guest image (guest/build.sh).
 * Must not reach into the daemon's modules.
 */

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { memoryEeprom } from "../helpers/eeprom.js";
import { vhostUserI2cArgs } from "../helpers/guest.js";
import { QmpClient, qmpArgs } from "../helpers/qmp.js";
import {
  ConsoleWatch,
  consoleOrExit,
  countLines,
  describeOrSkip,
  eepromPattern,
  guestSuite,
  hex,
  result,
  stopDaemonCleanly,
  TEST_TIMEOUT_MS,
  withGuestBench,
} from "./harness.js";

const { skip, images } = guestSuite();

/** The root port the second adapter is plugged behind, and the QMP ids of its chardev and device. */
const ROOT_PORT = "rp1";
const CHARDEV = "c1";
const DEVICE = "i2c1";

/**
 * The guest: a background loop of i2cset + i2cget on adapter 0 (counting iterations and failures),
 * then, at each host step, waiting for /dev/i2c-1 to appear or go and using the adapter behind it.
 */
const HOTPLUG_SCRIPT = `
wait_for() {
  tries=0
  until eval "$1"; do
    tries=$((tries + 1))
    if [ $tries -ge $(($2 * 10)) ]; then echo "gave up waiting for: $1"; exit 1; fi
    sleep 0.1
  done
}
count() { cat /tmp/loop.count 2>/dev/null || echo 0; }
(
  n=0
  fail=0
  while [ ! -e /tmp/stop ]; do
    value=$(printf 0x%02x $((n % 256)))
    i2cset -y 0 0x50 0x10 $value || fail=$((fail + 1))
    [ "$(i2cget -y 0 0x50 0x10)" = $value ] || fail=$((fail + 1))
    n=$((n + 1))
    echo $n > /tmp/loop.count
  done
  echo "$n $fail" > /tmp/loop.result
) > /tmp/loop.log 2>&1 &
loop=$!
wait_for '[ $(count) -ge 3 ]' 30
echo "@@LOOP-RUNNING@@"

wait_for '[ -e /dev/i2c-1 ]' 30
echo "RESULT loop_at_add $(count)"
echo "RESULT added_name $(cat /sys/bus/i2c/devices/i2c-1/name)"
echo "RESULT added_read $(i2ctransfer -y 1 w1@0x50 0x00 r16@0x50)"
i2cset -y 1 0x50 0x80 0x5a
echo "RESULT added_set $?"
echo "@@SECOND-USED@@"

wait_for '[ ! -e /dev/i2c-1 ]' 30
echo "RESULT loop_at_remove $(count)"
echo "@@SECOND-GONE@@"

wait_for '[ -e /dev/i2c-1 ]' 30
echo "RESULT readded_get $(i2cget -y 1 0x50 0x80)"
echo "@@SECOND-USED-AGAIN@@"

wait_for '[ ! -e /dev/i2c-1 ]' 30
echo "RESULT loop_at_second_remove $(count)"
touch /tmp/stop
wait $loop
echo "RESULT loop $(cat /tmp/loop.result)"
echo "RESULT loop_errors $(grep -c . /tmp/loop.log)"
`;

/** Plugs the second adapter: a chardev to the daemon's `socket`, then the device on the root port. */
async function plug(qmp: QmpClient, socket: string): Promise<void> {
  await qmp.execute("chardev-add", {
    id: CHARDEV,
    backend: {
      type: "socket",
      data: { addr: { type: "unix", data: { path: socket } }, server: false },
    },
  });
  await qmp.execute("device_add", {
    driver: "vhost-user-i2c-pci",
    chardev: CHARDEV,
    bus: ROOT_PORT,
    id: DEVICE,
  });
}

/** Unplugs it: device_del, waits for the guest to let go (DEVICE_DELETED), then chardev-remove. */
async function unplug(qmp: QmpClient): Promise<void> {
  const since = qmp.events.length;
  await qmp.execute("device_del", { id: DEVICE });
  await qmp.waitForEvent("DEVICE_DELETED", {
    match: (event) => event.data?.device === DEVICE,
    since,
    ms: 30_000,
  });
  await qmp.execute("chardev-remove", { id: CHARDEV });
}

describeOrSkip("PCIe hot-plug of a second adapter", { skip, timeout: TEST_TIMEOUT_MS }, () => {
  it("plugged, used, unplugged and plugged again over QMP while the first adapter runs transfers in a loop without a failure", async (t) => {
    await withGuestBench(images, async (bench) => {
      // Socket 0's EEPROM is the loop's; socket 1 has its own, file-backed, so what the guest reads
      // through the plugged adapter can only have come from socket 1.
      const second = eepromPattern(256, 0x2d);
      const backing = join(bench.dir, "second.bin");
      const configFile = join(bench.dir, "devices.json");
      writeFileSync(backing, second);
      // The loop writes and reads back at once: memory without the chip's write cycle.
      const eeprom = memoryEeprom();
      writeFileSync(
        configFile,
        JSON.stringify({
          sockets: {
            0: { devices: [eeprom] },
            1: { devices: [memoryEeprom("24c02", 0x50, { backing: "second.bin" })] },
          },
        }),
      );
      const daemon = await bench.startDaemon(
        ["-c", "2", "--config", configFile, "--log-level", "debug"],
        { sockets: 2 },
      );
      const qmpPath = join(bench.dir, "qmp.sock");
      const watch = new ConsoleWatch();
      const guest = bench.boot(HOTPLUG_SCRIPT, {
        qemuArgs: [
          ...vhostUserI2cArgs(bench.socket),
          "-device",
          `pcie-root-port,id=${ROOT_PORT},chassis=1,slot=1`,
          ...qmpArgs(qmpPath),
        ],
        onConsole: watch.onConsole,
      });
      const qmp = await QmpClient.connect(qmpPath, 30_000);
      try {
        const socket1 = `${bench.prefix}1`;
        await consoleOrExit(watch, "@@LOOP-RUNNING@@", guest);
        await plug(qmp, socket1);
        await consoleOrExit(watch, "@@SECOND-USED@@", guest);
        await unplug(qmp);
        await consoleOrExit(watch, "@@SECOND-GONE@@", guest);
        await plug(qmp, socket1);
        await consoleOrExit(watch, "@@SECOND-USED-AGAIN@@", guest);
        await unplug(qmp);
      } finally {
        qmp.close();
      }
      const run = await guest;

      assert.match(result(run, "added_name"), /^i2c_virtio at virtio bus \d+$/);
      assert.equal(
        result(run, "added_read"),
        [...second.subarray(0, 16)].map(hex).join(" "),
        "the plugged adapter did not reach socket 1's EEPROM",
      );
      assert.equal(result(run, "added_set"), "0");
      assert.equal(result(run, "readded_get"), "0x5a", "socket 1's EEPROM lost the write");
      const [iterations, failures] = result(run, "loop").split(" ").map(Number);
      assert.equal(failures, 0, `the first adapter's loop failed ${failures} times`);
      assert.equal(result(run, "loop_errors"), "0", "the loop printed errors");
      // The loop ran through every step, not only before or after them.
      const counts = ["loop_at_add", "loop_at_remove", "loop_at_second_remove"].map((key) =>
        Number(result(run, key)),
      );
      assert.ok(
        counts.every((value, index) => value > (counts[index - 1] ?? 0)) &&
          (iterations ?? 0) >= (counts[2] ?? 0),
        `loop iterations at add/remove/second remove/end: ${counts.join("/")}/${iterations}`,
      );

      t.diagnostic(
        `first adapter's loop: ${iterations} iterations, ${failures} failures; at add/remove/second remove: ${counts.join("/")}`,
      );
      // Socket 0 once, socket 1 once per plug: the daemon took socket 1 back after the unplug.
      assert.equal(countLines(daemon.stderr, "front-end connected"), 3);
      await stopDaemonCleanly(daemon);
      const expected = Uint8Array.from(second);
      expected[0x80] = 0x5a;
      assert.deepEqual(new Uint8Array(readFileSync(backing)), expected);
    });
  });
});
