/**
 * Guest memory must be sealed against shrinking, through the real daemon (`-c 2`, emulated 24c02): a
 * VMM whose memfd has no F_SEAL_SHRINK is refused, so shrinking that memfd afterwards cannot make
 * the daemon touch a page past the end of the file (SIGBUS, which would end every guest's service);
 * the other socket keeps working. `--allow-unsealed-memory` maps such memory again (and with it
 * accepts that risk). Talks to the daemon only through its sockets and its stderr.
 * @module
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { I2cGuest, QEMU_PROTOCOL_FEATURES_B } from "../src/frontend/i2c-driver.js";
import { resizeFd } from "../src/sys/memfd.js";
import { assertTransfer, EEPROM_ADDR, whenSocketFree } from "./fuzz/harness.js";
import { memoryEepromArgs } from "./helpers/configured-daemon.js";
import { type DaemonProcess, makeTempDir, withDaemon } from "./helpers/daemon.js";

const UNSEALED = [{ guestPhysAddr: 0, size: 1 << 20, sealed: false }] as const;

async function withTwoSockets(
  extraArgs: readonly string[],
  body: (daemon: DaemonProcess, paths: readonly [string, string]) => Promise<void>,
): Promise<void> {
  const dir = makeTempDir("vdi2c-seal-");
  const prefix = `${dir.path}/vi2c.sock`;
  const paths = [`${prefix}0`, `${prefix}1`] as const;
  try {
    await withDaemon(
      ["-s", prefix, "-c", "2", ...memoryEepromArgs(dir.path, "24c02", EEPROM_ADDR), ...extraArgs],
      paths,
      (daemon) => body(daemon, paths),
    );
  } finally {
    dir.remove();
  }
}

async function assertServes(path: string, marker: number): Promise<void> {
  const guest = await whenSocketFree(() => I2cGuest.connect(path));
  try {
    await assertTransfer(guest, marker);
  } finally {
    await guest.close();
  }
}

describe("guest memory without F_SEAL_SHRINK", () => {
  it("is refused: a VMM that shrinks it after the memory table does not take the daemon down", async () => {
    await withTwoSockets([], async (daemon, [vmmPath, otherPath]) => {
      await assertServes(otherPath, 0x11);
      // Socket 0 plays a VMM without REPLY_ACK (nothing tells it the table was refused): it queues
      // a request, shrinks its guest RAM to nothing, then kicks.
      const vmm = await I2cGuest.connect(vmmPath, { ram: UNSEALED });
      try {
        vmm.driver.submit([{ addr: EEPROM_ADDR, read: 1 }], { kick: false });
        for (const { fd } of vmm.ram.regions) resizeFd(fd, 0);
        vmm.driver.kick();
        await new Promise((resolve) => setTimeout(resolve, 500));
        assert.equal(daemon.hasExited, false, "the daemon is alive");
        assert.match(daemon.stderr, /not sealed against shrinking/);
        await assertServes(otherPath, 0x22);
      } finally {
        vmm.frontend.close();
        vmm.ram.close();
      }
      // With REPLY_ACK the VMM hears of the refusal.
      await assert.rejects(
        I2cGuest.connect(vmmPath, { ram: UNSEALED, protocolFeatures: QEMU_PROTOCOL_FEATURES_B }),
        { code: "ENACK" },
      );
      await assertServes(vmmPath, 0x33);
    });
  });

  it("is mapped with --allow-unsealed-memory", async () => {
    await withTwoSockets(["--allow-unsealed-memory"], async (_daemon, [vmmPath]) => {
      const vmm = await I2cGuest.connect(vmmPath, {
        ram: UNSEALED,
        protocolFeatures: QEMU_PROTOCOL_FEATURES_B,
      });
      try {
        await assertTransfer(vmm, 0x44);
      } finally {
        await vmm.close();
      }
    });
  });
});
