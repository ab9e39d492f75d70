// Integration: host adapters through the real daemon, with the LD_PRELOAD fake /dev/i2c-N
// (test/fake-i2c) loaded into the daemon process and a fake sysfs tree for adapter names. The fake's
// log proves what reached the "host" and, as much, what never did.
import assert from "node:assert/strict";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { I2cGuest, type I2cGuestOptions } from "../src/frontend/i2c-driver.js";
import { RequestStatus } from "../src/i2c/protocol.js";
import { FakeI2c, fakeUnavailableReason } from "./fake-i2c/fake.js";
import { DaemonProcess, makeTempDir, withDaemon } from "./helpers/daemon.js";
import { fakeSysfsEnv } from "./helpers/fake-sysfs.js";

const ADAPTER_NAME = "Fake SMBus adapter at 3f00";
const skip = fakeUnavailableReason() ?? false;

describe("host adapter through the daemon (LD_PRELOAD fake)", { skip }, () => {
  const dir = makeTempDir();
  const sysfs = `${dir.path}/sys`;
  let fake: FakeI2c;

  before(async () => {
    mkdirSync(`${sysfs}/bus/i2c/devices/i2c-3`, { recursive: true });
    writeFileSync(`${sysfs}/bus/i2c/devices/i2c-3/name`, `${ADAPTER_NAME}\n`);
    // The client the busy address belongs to, as the kernel shows a bound one.
    mkdirSync(`${sysfs}/bus/i2c/drivers/ee1004`, { recursive: true });
    mkdirSync(`${sysfs}/bus/i2c/devices/3-0036`);
    writeFileSync(`${sysfs}/bus/i2c/devices/3-0036/name`, "ee1004\n");
    symlinkSync("../../drivers/ee1004", `${sysfs}/bus/i2c/devices/3-0036/driver`);
    fake = await FakeI2c.create(
      [
        "adapter 3 funcs=i2c|emul",
        "device 3 0x50",
        "device 3 0x51 pattern=0x51",
        "busy 3 0x36",
        // An adapter that stops an I2C_RDWR after 4 messages, as i2c-virtio on a full queue does.
        "adapter 4 funcs=i2c|emul",
        "device 4 0x50",
        "rdwr_max 4 4",
      ].join("\n"),
    );
  });
  after(async () => {
    await fake?.cleanup();
    dir.remove();
  });

  const env = () => ({ ...fake.env({}), ...fakeSysfsEnv(sysfs) });

  async function withHostDaemon(
    list: string,
    body: (vm: I2cGuest) => Promise<void>,
    guest: I2cGuestOptions = {},
  ): Promise<void> {
    const prefix = `${dir.path}/host.sock`;
    await withDaemon(
      ["-s", prefix, "-l", list, "--log-level", "debug"],
      [`${prefix}0`],
      async () => {
        await fake.clearLog();
        const vm = await I2cGuest.connect(`${prefix}0`, guest);
        try {
          await body(vm);
        } finally {
          await vm.close();
        }
      },
      { env: env() },
    );
  }

  it('-l "3:0x50": a write+read transfer reaches the fake adapter', async () => {
    await withHostDaemon("3:0x50", async (vm) => {
      const result = await vm.driver.transfer([
        { addr: 0x50, write: Uint8Array.of(0x10) },
        { addr: 0x50, read: 4 },
      ]);
      assert.equal(result.ok, true);
      assert.deepEqual([...(result.reads[0] ?? [])], [0x10, 0x11, 0x12, 0x13]);
      const log = await fake.readLog();
      const rdwr = log.filter((e) => e.op === "rdwr");
      assert.deepEqual(
        rdwr.map((e) => [e.adapter, e.addr, e.dir, e.data, e.result]),
        [
          [3, 0x50, "w", [0x10], "ok"],
          [3, 0x50, "r", [0x10, 0x11, 0x12, 0x13], "ok"],
        ],
      );
      assert.equal(rdwr[0]?.seq, rdwr[1]?.seq, "one I2C_RDWR call: repeated START, one STOP");
    });
  });

  it("accepts the adapter by its sysfs name, spaces included", async () => {
    await withHostDaemon(`${ADAPTER_NAME}:0x50`, async (vm) => {
      const result = await vm.driver.transfer([{ addr: 0x50, write: Uint8Array.of(0x20, 0xab) }]);
      assert.equal(result.ok, true);
      const log = await fake.readLog();
      assert.ok(
        log.some((e) => e.adapter === 3 && e.addr === 0x50 && e.dir === "w" && e.data[1] === 0xab),
        JSON.stringify(log),
      );
    });
  });

  it("never lets an unlisted address on the same adapter reach the fake", async () => {
    await withHostDaemon("3:0x50", async (vm) => {
      const alone = await vm.driver.transfer([{ addr: 0x51, read: 1 }]);
      assert.deepEqual(alone.statuses, [RequestStatus.ERR]);
      const probe = await vm.driver.transfer([{ addr: 0x51, write: new Uint8Array(0) }]);
      assert.equal(probe.ok, false);
      const second = await vm.driver.transfer([
        { addr: 0x50, write: Uint8Array.of(0) },
        { addr: 0x51, read: 1 },
      ]);
      assert.equal(second.okCount, 0);
      const listed = await vm.driver.transfer([{ addr: 0x50, read: 1 }]);
      assert.equal(listed.ok, true, "the listed address still works");
      const log = await fake.readLog();
      assert.deepEqual(
        log.filter((e) => e.addr === 0x51),
        [],
        "0x51 never reached the adapter",
      );
      assert.equal(log.filter((e) => e.op === "rdwr").length, 1, "only the listed transfer ran");
    });
  });

  it("an I2C_RDWR the adapter stops early: the messages it carried out succeed, the rest fail", async () => {
    await withHostDaemon(
      "4:0x50",
      async (vm) => {
        const result = await vm.driver.transfer([
          { addr: 0x50, write: Uint8Array.of(0x10) },
          { addr: 0x50, read: 1 },
          { addr: 0x50, write: Uint8Array.of(0x20) },
          { addr: 0x50, read: 1 },
          { addr: 0x50, write: Uint8Array.of(0x30) },
          { addr: 0x50, read: 1 },
        ]);
        assert.equal(result.okCount, 4);
        assert.deepEqual(
          result.reads.slice(0, 2).map((r) => [...(r ?? [])]),
          [[0x10], [0x20]],
        );
        assert.deepEqual(result.statuses, [0, 0, 0, 0, 1, 1]);
        const log = await fake.readLog();
        assert.equal(log.filter((e) => e.op === "rdwr").length, 4, "the adapter saw 4 messages");
      },
      { queueSize: 16 },
    );
  });

  it("refuses to start when a kernel driver owns a listed address (exit 2, names it)", async () => {
    const daemon = new DaemonProcess(["-s", `${dir.path}/busy.sock`, "-l", "3:0x50:0x36"], {
      env: env(),
    });
    assert.deepEqual(await daemon.waitForExit(), { code: 2, signal: null });
    assert.match(
      daemon.stderr,
      new RegExp(
        `address 0x36 on /dev/i2c-3 is in use by the kernel driver ee1004 \\(device ee1004 at ${sysfs}/bus/i2c/devices/3-0036\\); unbind it \\(echo 3-0036 > ${sysfs}/bus/i2c/drivers/ee1004/unbind\\)`,
      ),
    );
  });

  it("refuses an adapter that does not exist (exit 2)", async () => {
    const daemon = new DaemonProcess(["-s", `${dir.path}/none.sock`, "-l", "9:0x50"], {
      env: env(),
    });
    assert.deepEqual(await daemon.waitForExit(), { code: 2, signal: null });
    assert.match(daemon.stderr, /\/dev\/i2c-9 does not exist/);
  });
});
