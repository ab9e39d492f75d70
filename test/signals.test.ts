// Integration: signals through the real daemon. SIGTERM with a slow host transfer in flight (the
// fake's delay_us): the transfer is failed after the grace period, its chain goes back with ERR,
// the daemon exits 0 and removes its socket. SIGHUP reloads --config for new connections only; a
// broken config on reload is logged and ignored.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { RequestStatus } from "../src/i2c/protocol.js";
import { FakeI2c, fakeUnavailableReason } from "./fake-i2c/fake.js";
import { exists, makeTempDir, startDaemon, withDaemon, withDaemonLog } from "./helpers/daemon.js";

describe("SIGTERM with a slow host transfer in flight", {
  skip: fakeUnavailableReason() ?? false,
}, () => {
  const dir = makeTempDir();
  let fake: FakeI2c;
  before(async () => {
    // 5 s per message: far past the 2 s grace period.
    fake = await FakeI2c.create(
      ["adapter 3 funcs=i2c|emul", "device 3 0x50", "delay_us 3 5000000"].join("\n"),
    );
  });
  after(async () => {
    await fake?.cleanup();
    dir.remove();
  });

  it("fails the transfer with ERR, returns its chain, exits 0 and removes the socket", async () => {
    const prefix = `${dir.path}/slow.sock`;
    const daemon = await startDaemon(["-s", prefix, "-l", "3:0x50"], [`${prefix}0`], {
      env: { ...fake.env({}), VHOST_DEVICE_I2C_LOCK_DIR: `${dir.path}/locks` },
    });
    try {
      const vm = await I2cGuest.connect(`${prefix}0`);
      const pending = vm.driver.transfer([{ addr: 0x50, read: 1 }]);
      // The fake logs a message once it is done, so nothing shows it in flight: give the
      // transfer time to reach the adapter (the outcome does not depend on this pause).
      await new Promise((resolve) => setTimeout(resolve, 300));
      daemon.child.kill("SIGTERM");
      const result = await pending;
      assert.deepEqual(result.statuses, [RequestStatus.ERR]);
      assert.deepEqual(await daemon.waitForExit(), { code: 0, signal: null });
      assert.equal(exists(`${prefix}0`), false);
      assert.match(daemon.stderr, /failing them/);
      await vm.close();
    } catch (err) {
      throw withDaemonLog(err, daemon);
    } finally {
      if (!daemon.hasExited) daemon.child.kill("SIGKILL");
    }
  });
});

describe("SIGHUP reloads the config file", () => {
  const dir = makeTempDir();
  after(() => dir.remove());

  it("new connections get the new list, existing ones keep theirs; a bad file is ignored", async () => {
    const config = `${dir.path}/devices.json`;
    const list = (address: string) =>
      JSON.stringify({ devices: [{ bus: "sim", address, model: "24c02" }] });
    writeFileSync(config, list("0x50"));
    const prefix = `${dir.path}/hup.sock`;
    const reads = async (vm: I2cGuest) =>
      Promise.all(
        [0x50, 0x51].map(async (addr) => (await vm.driver.transfer([{ addr, read: 1 }])).ok),
      );
    await withDaemon(
      ["-s", prefix, "-c", "2", "--config", config],
      [`${prefix}0`, `${prefix}1`],
      async (daemon) => {
        const before = await I2cGuest.connect(`${prefix}0`);
        writeFileSync(config, list("0x51"));
        daemon.child.kill("SIGHUP");
        await daemon.waitForLog("reloaded the configuration");
        const afterReload = await I2cGuest.connect(`${prefix}1`);
        assert.deepEqual(await reads(before), [true, false], "the old connection keeps 0x50");
        assert.deepEqual(await reads(afterReload), [false, true], "a new connection gets 0x51");
        await before.close();

        writeFileSync(config, "{ not json");
        daemon.child.kill("SIGHUP");
        await daemon.waitForLog("reload failed, keeping the current configuration");
        await afterReload.close();
        const again = await I2cGuest.connect(`${prefix}0`);
        assert.deepEqual(await reads(again), [false, true], "the last good configuration stays");
        await again.close();
      },
    );
  });
});
