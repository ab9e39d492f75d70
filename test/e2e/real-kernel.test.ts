/**
 * Real kernel behind /dev/i2c-N: the daemon runs INSIDE the guest (the `realkernel` image variant,
 * `guest/build.sh --variant realkernel`), on q35's ICH9 SMBus controller driven by Linux's i2c-i801,
 * where QEMU puts 8 SMBus EEPROMs at 0x50-0x57. Node and the built project come from the host's root,
 * mounted read-only over virtio-9p and entered with chroot (the guest's /dev, /sys, /proc bound in,
 * tmpfs on /tmp and /run). The project's own front-end, vi2c, drives the daemon in the guest; its
 * dump must equal i2cdump's on the same real adapter.
 * Skips by name without QEMU or a built variant image.
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { findGuestImages } from "../helpers/guest.js";
import {
  assertScriptCompleted,
  result,
  runGuest,
  TEST_TIMEOUT_MS,
  withScratch,
} from "./harness.js";

const VARIANT = "realkernel";
const images = findGuestImages(VARIANT);
/** The dist/ directory this test runs from: the same path inside the chroot (the host's root). */
const DIST = fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");

/** Mounts the host's root on /host and prepares it for chroot; defines $H for commands in it. */
const CHROOT_SETUP = `
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose host /host
for d in dev sys proc; do mount --bind /$d /host/$d; done
mount -t tmpfs tmpfs /host/tmp
mount -t tmpfs tmpfs /host/run
in_host() { chroot /host "$@"; }
`;

const VIRTFS = [
  "-virtfs",
  "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
];

describe("real kernel: the daemon inside the guest on i2c-i801", {
  skip: images
    ? false
    : `no guest image for --variant ${VARIANT}: run guest/build.sh --variant ${VARIANT}`,
  timeout: TEST_TIMEOUT_MS,
}, () => {
  it("vi2c dump through the daemon equals i2cdump on the adapter (QEMU's SMBus EEPROM at 0x50)", async () => {
    assert.ok(images);
    await withScratch(async (_dir, evidence) => {
      const script = `${CHROOT_SETUP}
i801=$(i2cdetect -l | awk -F'\\t' '/SMBus I801 adapter/ { sub("i2c-", "", $1); print $1; exit }')
echo "RESULT i801 $i801"
echo "RESULT i801name $(cat /sys/bus/i2c/devices/i2c-$i801/name)"
i2cset -y "$i801" 0x50 0x10 0xa5 b
i2cdump -y "$i801" 0x50 b > /tmp/direct.txt
echo "RESULT direct_md5 $(md5sum < /tmp/direct.txt | cut -d' ' -f1)"
in_host /usr/bin/node ${DIST}/src/cli/main.js -s /tmp/v.sock -l "$i801:0x50" > /tmp/daemon.log 2>&1 &
n=0; while [ ! -S /host/tmp/v.sock0 ] && [ $n -lt 240 ]; do sleep 0.5; n=$((n+1)); done
in_host /usr/bin/node ${DIST}/src/tools/vi2c.js --timeout 30000 dump -y /tmp/v.sock0 0x50 b > /host/tmp/vi2c.txt
echo "RESULT vi2c_rc $?"
echo "RESULT vi2c_md5 $(md5sum < /host/tmp/vi2c.txt | cut -d' ' -f1)"
`;
      const run = await runGuest(evidence, "real-kernel", {
        ...images,
        script,
        memoryMiB: 1024,
        timeoutMs: 300_000,
        qemuArgs: VIRTFS,
      });
      assertScriptCompleted(run, "real-kernel");
      assert.match(result(run, "i801name"), /^SMBus I801 adapter at [0-9a-f]{4}$/);
      assert.equal(result(run, "vi2c_rc"), "0");
      assert.equal(result(run, "vi2c_md5"), result(run, "direct_md5"));
    });
  });
});
