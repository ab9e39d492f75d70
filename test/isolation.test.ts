// Integration: device sets through the real daemon. Two guests with lists of their own ("sockets" in
// the config file) are two device sets, each served by its own data-plane thread: guest A's adapter
// takes 50 ms per message (the LD_PRELOAD fake's delay_us: a clock-stretching chip) and A keeps it
// busy, while guest B's transfers, on another adapter and on an emulated chip, go through as if A
// were idle. The check is what had run on A's adapter when B was done (the fake's log), never a
// duration: B's 40 transfers behind A's would need A's adapter to run 40 times.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { FakeI2c, fakeUnavailableReason } from "./fake-i2c/fake.js";
import { exists, makeTempDir, startDaemon, withDaemon, withDaemonLog } from "./helpers/daemon.js";
import { memoryEeprom } from "./helpers/eeprom.js";

const STALL_US = 50_000;

describe("device sets: a stalled device set holds up no other", {
  skip: fakeUnavailableReason() ?? false,
}, () => {
  const dir = makeTempDir();
  let fake: FakeI2c;
  before(async () => {
    fake = await FakeI2c.create(
      [
        "adapter 3 funcs=i2c|emul",
        "device 3 0x50",
        `delay_us 3 ${STALL_US}`,
        "adapter 4 funcs=i2c|emul",
        "device 4 0x51",
      ].join("\n"),
    );
  });
  after(async () => {
    await fake?.cleanup();
    dir.remove();
  });

  it("guest B on its own set runs 40 transfers while guest A's stalled adapter runs a few", async () => {
    const config = `${dir.path}/sets.json`;
    writeFileSync(
      config,
      JSON.stringify({
        sockets: {
          "0": { devices: [{ bus: 3, address: "0x50" }] },
          "1": {
            devices: [{ bus: 4, address: "0x51" }, memoryEeprom("24c02", 0x60)],
          },
        },
      }),
    );
    const prefix = `${dir.path}/iso.sock`;
    await withDaemon(
      ["-s", prefix, "-c", "2", "--config", config],
      [`${prefix}0`, `${prefix}1`],
      async (daemon) => {
        await daemon.waitForLog(/serving .*threads=2/);
        // A ring of 16 lets guest A keep all of its transfers queued at once.
        const a = await I2cGuest.connect(`${prefix}0`, { queueSize: 16 });
        const b = await I2cGuest.connect(`${prefix}1`);
        try {
          await fake.clearLog();
          // A keeps its adapter busy: 8 transfers queued, each 2 messages of 50 ms.
          const stalled = Array.from({ length: 8 }, () =>
            a.driver.submit([
              { addr: 0x50, write: Uint8Array.of(0) },
              { addr: 0x50, read: 1 },
            ]),
          );
          const aDone = Promise.all(stalled.map((s) => a.driver.wait(s)));
          for (let i = 0; i < 20; i++) {
            const host = await b.driver.transfer([
              { addr: 0x51, write: Uint8Array.of(i) },
              { addr: 0x51, read: 1 },
            ]);
            assert.equal(host.ok, true);
            const sim = await b.driver.transfer([{ addr: 0x60, write: Uint8Array.of(i, i) }]);
            assert.equal(sim.ok, true);
          }
          const log = await fake.readLog();
          // The fake logs each message: 2 per transfer.
          const onA = log.filter((e) => e.op === "rdwr" && e.adapter === 3).length / 2;
          const onB = log.filter((e) => e.op === "rdwr" && e.adapter === 4).length / 2;
          assert.equal(onB, 20, "every host transfer of B reached its adapter");
          assert.ok(onA < 8, `B finished while A's adapter had run ${onA} of its 8 transfers`);
          for (const result of await aDone) assert.equal(result.ok, true);
        } finally {
          await a.close();
          await b.close();
        }
      },
      { env: { ...fake.env({}), VHOST_DEVICE_I2C_LOCK_DIR: `${dir.path}/locks` } },
    );
  });
});

describe("device sets are fixed at start", () => {
  const dir = makeTempDir();
  after(() => dir.remove());

  it("a reload that would group the sockets otherwise is refused; the current lists stay", async () => {
    const config = `${dir.path}/sets.json`;
    const eeprom = (address: string) => ({ bus: "sim", address, model: "24c02" });
    writeFileSync(config, JSON.stringify({ devices: [eeprom("0x50")] }));
    const prefix = `${dir.path}/fixed.sock`;
    await withDaemon(
      ["-s", prefix, "-c", "2", "--config", config],
      [`${prefix}0`, `${prefix}1`],
      async (daemon) => {
        await daemon.waitForLog(/serving .*threads=1/);
        // Socket 1 would get a list of its own: a second device set.
        writeFileSync(
          config,
          JSON.stringify({
            devices: [eeprom("0x50")],
            sockets: { "1": { devices: [eeprom("0x51")] } },
          }),
        );
        daemon.child.kill("SIGHUP");
        await daemon.waitForLog(
          /reload failed, keeping the current configuration .*groups the sockets into other device sets \(\{0\} \{1\} instead of \{0,1\}.*restart the daemon/,
        );
        const vm = await I2cGuest.connect(`${prefix}1`);
        try {
          assert.equal((await vm.driver.transfer([{ addr: 0x50, read: 1 }])).ok, true);
          assert.equal((await vm.driver.transfer([{ addr: 0x51, read: 1 }])).ok, false);
        } finally {
          await vm.close();
        }
      },
    );
  });
});

describe("a data-plane thread that dies", () => {
  const dir = makeTempDir();
  after(() => dir.remove());

  it("stops the daemon: every socket closed and removed, exit 1 naming the set and the error", async () => {
    // A user model with a bug that surfaces later, in its thread: an uncaught error in a timer.
    const module = join(dir.path, "faulty.mjs");
    writeFileSync(
      module,
      `import { defineModel } from "vhost-device-i2c";
export default defineModel({
  name: "faulty",
  description: "answers, then throws from a timer",
  options: { type: "object", properties: {} },
  create() {
    setTimeout(() => { throw new Error("model bug in a timer"); }, 300);
    return { targets: [{ start: () => true, write: () => true, read: (into) => into.fill(0), stop() {} }] };
  },
});
`,
    );
    const config = join(dir.path, "faulty.json");
    writeFileSync(
      config,
      JSON.stringify({
        sockets: {
          "0": { devices: [{ bus: "sim", address: "0x20", module: "./faulty.mjs" }] },
          "1": { devices: [{ bus: "sim", address: "0x50", model: "24c02" }] },
        },
      }),
    );
    const prefix = join(dir.path, "dies.sock");
    const daemon = await startDaemon(
      ["-s", prefix, "-c", "2", "--config", config],
      [`${prefix}0`, `${prefix}1`],
    );
    try {
      const status = await daemon.waitForExit();
      assert.equal(status.code, 1, daemon.stderr);
      assert.match(
        daemon.stderr,
        /the data-plane thread of device set 0 ended: .*model bug in a timer/,
      );
      assert.equal(exists(`${prefix}0`), false);
      assert.equal(exists(`${prefix}1`), false, "the other set's socket closed too");
    } catch (err) {
      throw withDaemonLog(err, daemon);
    } finally {
      if (!daemon.hasExited) daemon.child.kill("SIGKILL");
    }
  });
});
