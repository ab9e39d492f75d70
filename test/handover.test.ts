// Integration: SIGUSR2 hands every connection over to a successor process. A front-end playing QEMU
// (real socket, memfd guest RAM, eventfds) keeps its one connection: it never reconnects and sends
// no message, its transfers go on against the successor (another pid), which serves the rings from
// where they stood, split and packed, with a backed EEPROM whose every acknowledged write is read
// back. A successor that cannot start leaves the daemon serving on.
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { I2cGuest, QEMU_FEATURES, QEMU_PROTOCOL_FEATURES_B } from "../src/frontend/i2c-driver.js";
import { VIRTIO_F_RING_PACKED } from "../src/virtio/features.js";
import { writeConfig } from "./helpers/configured-daemon.js";
import { DaemonProcess, makeTempDir, withDaemonLog } from "./helpers/daemon.js";
import { HandoverChain, processGone } from "./helpers/handover-chain.js";

const dir = makeTempDir();
after(() => dir.remove());

const EEPROM = 0x50;

const addressed = (offset: number, data: readonly number[] = []) =>
  Uint8Array.of(offset >> 8, offset & 0xff, ...data);

for (const ring of ["split", "packed"] as const) {
  describe(`SIGUSR2 handover (${ring} ring)`, () => {
    it("hands the connection to a successor: no reconnect, no message, transfers go on", async () => {
      const config = writeConfig(
        dir.path,
        [{ bus: "sim", address: "0x50", model: "24c32", options: { backing: `${ring}.bin` } }],
        `${ring}.json`,
      );
      const prefix = join(dir.path, `${ring}.sock`);
      const daemon = new DaemonProcess(["-s", prefix, "--config", config, "--log-level", "debug"]);
      const chain = new HandoverChain(daemon);
      let guest: I2cGuest | null = null;
      try {
        await daemon.waitForListening([`${prefix}0`]);
        guest = await I2cGuest.connect(`${prefix}0`, {
          protocolFeatures: QEMU_PROTOCOL_FEATURES_B,
          features: ring === "packed" ? QEMU_FEATURES | VIRTIO_F_RING_PACKED : QEMU_FEATURES,
        });
        const written: number[] = [];
        let offset = 0;
        const writeSome = async (count: number) => {
          for (let i = 0; i < count; i++, offset += 4) {
            const data = [offset & 0xff, (offset >> 8) & 0xff, 0x5a, written.length & 0xff];
            const result = await guest!.driver.transfer([
              { addr: EEPROM, write: addressed(offset, data) },
            ]);
            assert.equal(result.ok, true, `write at ${offset}`);
            written.push(...data);
          }
        };
        await writeSome(5);
        for (let round = 0; round < 3; round++) {
          const handing = chain.handOver();
          // Transfers sent while the handover runs wait for the successor.
          await writeSome(3);
          const { from, to } = await handing;
          assert.notEqual(to, from);
          await writeSome(3);
        }
        assert.equal(new Set(chain.pids).size, 4);
        const [read] = (
          await guest.driver.transfer([
            { addr: EEPROM, write: addressed(0) },
            { addr: EEPROM, read: written.length },
          ])
        ).reads;
        assert.deepEqual([...(read ?? [])], written);
        assert.equal(daemon.stderr.match(/front-end connected/g)?.length, 1, daemon.stderr);
        assert.equal(daemon.stderr.match(/front-end resumed/g)?.length, 3, daemon.stderr);
        assert.doesNotMatch(daemon.stderr, /front-end disconnected/);
        await guest.close();
        guest = null;
        await chain.stop();
        assert.deepEqual(
          [...readFileSync(join(dir.path, `${ring}.bin`)).subarray(0, written.length)],
          written,
        );
      } catch (err) {
        throw withDaemonLog(err, daemon);
      } finally {
        await guest?.close();
        await chain.kill();
      }
    });
  });
}

describe("a successor that cannot start", () => {
  it("leaves the daemon serving the same connection; a later SIGUSR2 succeeds", async () => {
    const config = writeConfig(
      dir.path,
      [{ bus: "sim", address: "0x50", model: "24c32", options: { backing: "rollback.bin" } }],
      "rollback.json",
    );
    const good = readFileSync(config, "utf8");
    const prefix = join(dir.path, "rollback.sock");
    const daemon = new DaemonProcess(["-s", prefix, "--config", config]);
    const chain = new HandoverChain(daemon);
    let guest: I2cGuest | null = null;
    try {
      await daemon.waitForListening([`${prefix}0`]);
      guest = await I2cGuest.connect(`${prefix}0`, { protocolFeatures: QEMU_PROTOCOL_FEATURES_B });
      const write = async (offset: number, value: number) => {
        const result = await guest!.driver.transfer([
          { addr: EEPROM, write: addressed(offset, [value]) },
        ]);
        assert.equal(result.ok, true, `write at ${offset}`);
      };
      await write(0, 1);
      // The successor reads the configuration again: one that does not parse stops it (exit 2).
      writeFileSync(config, "{ not json");
      process.kill(daemon.pid, "SIGUSR2");
      await daemon.waitForLog(/handover failed: serving on reason=.*exited \(status 2\)/);
      await write(1, 2);
      assert.ok(!processGone(daemon.pid));
      assert.ok(existsSync(`${prefix}0`), "the socket file stays");
      writeFileSync(config, good);
      await chain.handOver();
      await write(2, 3);
      const [read] = (
        await guest.driver.transfer([
          { addr: EEPROM, write: addressed(0) },
          { addr: EEPROM, read: 3 },
        ])
      ).reads;
      assert.deepEqual([...(read ?? [])], [1, 2, 3]);
      assert.equal(daemon.stderr.match(/front-end connected/g)?.length, 1, daemon.stderr);
      await guest.close();
      guest = null;
      await chain.stop();
      assert.ok(!existsSync(`${prefix}0`), "the last owner removes the socket file");
    } catch (err) {
      throw withDaemonLog(err, daemon);
    } finally {
      await guest?.close();
      await chain.kill();
    }
  });
});
