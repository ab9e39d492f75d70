// Integration: the persistence guarantee of backed emulated memories through the real daemon. A write
// the guest saw acknowledged survives `kill -9` of the daemon right after the ack; a missing backing
// file is created from `initial`; a backing file of the wrong size stops start-up (exit 2, file named).
import assert from "node:assert/strict";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { transferOk, withGuest, writeConfig } from "./helpers/configured-daemon.js";
import { DaemonProcess, makeTempDir, startDaemon, withDaemonLog } from "./helpers/daemon.js";

const dir = makeTempDir("vdi2c-persistence-");
after(() => dir.remove());

const EEPROM = 0x50;
const SIZE_24C32 = 4096;

/** A config with one 24c32 at 0x50 backed by `backing` (relative to the config's directory). */
function backedConfig(backing: string, initial?: string): string {
  const options = initial === undefined ? { backing } : { backing, initial };
  return writeConfig(dir.path, [{ bus: "sim", address: "0x50", model: "24c32", options }]);
}

/** 24c32: two address bytes, big-endian, then data. */
const addressed = (offset: number, data: readonly number[] = []) =>
  Uint8Array.of(offset >> 8, offset & 0xff, ...data);

describe("backed 24c32 through the daemon", () => {
  it("keeps an acknowledged write across kill -9 and a restart", async () => {
    const config = backedConfig("kill9.bin");
    const prefix = join(dir.path, "kill.sock");
    const data = [0xde, 0xad, 0xbe, 0xef, 0x01, 0x02];
    const offset = 0x0123;

    const first = await startDaemon(["-s", prefix, "--config", config], [`${prefix}0`]);
    try {
      const guest = await I2cGuest.connect(`${prefix}0`);
      try {
        await transferOk(guest, [{ addr: EEPROM, write: addressed(offset, data) }]);
        // Acknowledged: kill the daemon before anything else can happen.
        first.child.kill("SIGKILL");
        const status = await first.waitForExit();
        assert.equal(status.signal, "SIGKILL");
      } finally {
        await guest.close();
      }
    } catch (err) {
      throw withDaemonLog(err, first);
    } finally {
      if (!first.hasExited) first.child.kill("SIGKILL");
      await first.exited;
    }

    // The old socket file is stale after kill -9; the daemon replaces it.
    await withGuest(dir.path, ["--config", config], async (guest) => {
      const [read] = await transferOk(guest, [
        { addr: EEPROM, write: addressed(offset) },
        { addr: EEPROM, read: data.length },
      ]);
      assert.deepEqual([...(read ?? [])], data);
    });
    assert.deepEqual(
      [...readFileSync(join(dir.path, "kill9.bin")).subarray(offset, offset + 6)],
      data,
    );
  });

  it("creates a missing backing file from initial, erased (0xff) past it", async () => {
    const config = backedConfig("fresh.bin", "0a0b0c");
    await withGuest(dir.path, ["--config", config], async (guest) => {
      const [read] = await transferOk(guest, [
        { addr: EEPROM, write: addressed(0) },
        { addr: EEPROM, read: 4 },
      ]);
      assert.deepEqual([...(read ?? [])], [0x0a, 0x0b, 0x0c, 0xff]);
    });
    const file = readFileSync(join(dir.path, "fresh.bin"));
    assert.equal(file.length, SIZE_24C32);
    assert.deepEqual([...file.subarray(0, 4)], [0x0a, 0x0b, 0x0c, 0xff]);
  });

  it("refuses to start on a backing file of the wrong size, naming it, and leaves it alone", async () => {
    const backing = join(dir.path, "short.bin");
    writeFileSync(backing, new Uint8Array(100));
    const config = backedConfig("short.bin");
    const daemon = new DaemonProcess(["-s", join(dir.path, "short.sock"), "--config", config]);
    const status = await daemon.waitForExit();
    assert.equal(status.code, 2, daemon.stderr);
    assert.ok(daemon.stderr.includes(backing), daemon.stderr);
    assert.equal(statSync(backing).size, 100, "the file is not truncated");
  });
});
