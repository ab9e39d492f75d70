// Integration: host adapter faults through the real daemon, with the LD_PRELOAD fake /dev/i2c-N
// (test/fake-i2c) changed while the daemon runs (FakeI2c.update: the fake re-reads its file). Each
// errno becomes ERR for that transfer and a log line; an unplugged adapter fails transfers without
// being touched and works again once re-plugged, without a restart; an address a kernel driver
// takes at run time is refused until it is released; warnings are rate-limited; a
// failing adapter holds up neither another guest on emulated devices nor the daemon.
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { I2cGuest, type TransferResult } from "../src/frontend/i2c-driver.js";
import { RequestStatus } from "../src/i2c/protocol.js";
import { FakeI2c, fakeUnavailableReason } from "./fake-i2c/fake.js";
import { memoryEepromArgs } from "./helpers/configured-daemon.js";
import { type DaemonProcess, makeTempDir, WAIT_MS, withDaemon } from "./helpers/daemon.js";
import { fakeSysfsEnv } from "./helpers/fake-sysfs.js";
import { scaled } from "./helpers/time.js";

const skip = fakeUnavailableReason() ?? false;
const ADAPTER = "adapter 3 funcs=i2c|emul\ndevice 3 0x50\n";
const readOne = [
  { addr: 0x50, write: Uint8Array.of(0) },
  { addr: 0x50, read: 1 },
] as const;

/** Runs `attempt` every 100 ms until it returns true; fails after WAIT_MS. */
async function retryUntil(attempt: () => Promise<boolean>, what: string): Promise<void> {
  const end = Date.now() + scaled(WAIT_MS);
  while (!(await attempt())) {
    if (Date.now() > end)
      throw new Error(`timed out after ${scaled(WAIT_MS)} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe("host adapter faults through the daemon (LD_PRELOAD fake)", { skip }, () => {
  const dir = makeTempDir();
  const sysfs = `${dir.path}/sys`;
  let fake: FakeI2c;

  before(async () => {
    mkdirSync(`${sysfs}/bus/i2c/devices/i2c-3`, { recursive: true });
    writeFileSync(`${sysfs}/bus/i2c/devices/i2c-3/name`, "Fake adapter\n");
    fake = await FakeI2c.create(ADAPTER);
  });
  after(async () => {
    await fake?.cleanup();
    dir.remove();
  });

  async function withFaultDaemon(
    args: readonly string[],
    sockets: number,
    body: (daemon: DaemonProcess, vms: I2cGuest[]) => Promise<void>,
  ): Promise<void> {
    await fake.update(ADAPTER);
    const prefix = `${dir.path}/fault.sock`;
    const paths = Array.from({ length: sockets }, (_, i) => `${prefix}${i}`);
    await withDaemon(
      ["-s", prefix, "-c", String(sockets), ...args],
      paths,
      async (daemon) => {
        await fake.clearLog();
        const vms: I2cGuest[] = [];
        try {
          // A ring of 16 lets one guest keep many transfers queued at once (QEMU's default is 4).
          for (const path of paths) vms.push(await I2cGuest.connect(path, { queueSize: 16 }));
          await body(daemon, vms);
        } finally {
          for (const vm of vms) await vm.close();
        }
      },
      { env: { ...fake.env({}), ...fakeSysfsEnv(sysfs) } },
    );
  }

  const errStatus = (result: TransferResult) => {
    assert.equal(result.ok, false);
    assert.equal(result.statuses[0], RequestStatus.ERR);
  };

  for (const [code, level] of [
    ["EIO", "WARN"],
    ["ETIMEDOUT", "WARN"],
    ["ENXIO", "DEBUG"],
    ["EREMOTEIO", "DEBUG"],
  ] as const) {
    it(`${code} on the adapter: ERR for that transfer, a ${level} line, the next transfer works`, async () => {
      await withFaultDaemon(["-l", "3:0x50", "--log-level", "debug"], 1, async (daemon, [vm]) => {
        await fake.update(`${ADAPTER}error 3 0x50 ${code}\n`);
        errStatus(await vm!.driver.transfer(readOne));
        await daemon.waitForLog(
          new RegExp(`${level} \\[[^\\]]*\\] transfer failed .*code=${code}`),
        );
        const log = await fake.readLog();
        assert.ok(
          log.some((e) => e.op === "rdwr" && e.result === code),
          "the error came from the adapter",
        );
        await fake.update(ADAPTER);
        const next = await vm!.driver.transfer(readOne);
        assert.equal(next.ok, true, "the daemon carries on");
        assert.deepEqual([...next.reads[0]!], [0]);
      });
    });
  }

  it("unplug: ERR without touching the dead fd; re-plug: transfers work again, same daemon", async () => {
    await withFaultDaemon(["-l", "3:0x50", "--log-level", "debug"], 1, async (daemon, [vm]) => {
      assert.equal((await vm!.driver.transfer(readOne)).ok, true);
      await fake.update(`${ADAPTER}unplug 3 ENODEV\n`);
      errStatus(await vm!.driver.transfer(readOne));
      await daemon.waitForLog(/WARN \[[^\]]*\] adapter i2c-3 gone.*code=ENODEV/);
      for (let i = 0; i < 20; i++) errStatus(await vm!.driver.transfer(readOne));
      const whileDown = await fake.readLog();
      assert.equal(
        whileDown.filter((e) => e.op === "nodev").length,
        1,
        "only the transfer that found the adapter gone reached its fd",
      );
      assert.ok(
        whileDown.filter((e) => e.op === "open").every((e) => e.result === "ENODEV"),
        "reopen attempts only, each refused",
      );

      await fake.update(ADAPTER);
      // The reopen waits for its interval: keep the guest trying, as a driver would.
      await retryUntil(
        async () => (await vm!.driver.transfer(readOne)).ok,
        "a transfer after the re-plug",
      );
      await daemon.waitForLog(/INFO \[[^\]]*\] adapter i2c-3 back/);
      const log = await fake.readLog();
      const slaveChecks = log.filter((e) => e.op === "slave" && e.addr === 0x50);
      assert.ok(slaveChecks.length >= 1, "the listed address was checked again on reopen");
    });
  });

  it("driver unbound (removal waits for open fds, which keep working): the idle daemon lets go within seconds, ERR while gone, back after", async () => {
    await withFaultDaemon(["-l", "3:0x50", "--log-level", "debug"], 1, async (daemon, [vm]) => {
      assert.equal((await vm!.driver.transfer(readOne)).ok, true);
      await fake.update(`${ADAPTER}removing 3\n`);
      // No transfer: only the daemon's own look for the node can find that it went.
      await daemon.waitForLog(/WARN \[[^\]]*\] adapter i2c-3 gone.*code=ENOENT/);
      await retryUntil(
        async () => (await fake.readLog()).some((e) => e.op === "close"),
        "the daemon to close its fd, which lets the removal finish",
      );
      const rdwr = async () => (await fake.readLog()).filter((e) => e.op === "rdwr").length;
      const before = await rdwr();
      errStatus(await vm!.driver.transfer(readOne));
      assert.equal(await rdwr(), before, "nothing reached the adapter while it is gone");
      await fake.update(ADAPTER);
      await retryUntil(
        async () => (await vm!.driver.transfer(readOne)).ok,
        "a transfer after the adapter is bound again",
      );
      await daemon.waitForLog(/INFO \[[^\]]*\] adapter i2c-3 back/);
    });
  });

  it("a kernel driver bound at run time: transfers to its address fail (none reaches the bus) until it is unbound", async () => {
    await withFaultDaemon(["-l", "3:0x50", "--log-level", "info"], 1, async (daemon, [vm]) => {
      assert.equal((await vm!.driver.transfer(readOne)).ok, true);
      await fake.update(`${ADAPTER}busy 3 0x50\n`);
      // The addresses are checked again at most every 2 s, when a transfer starts.
      await retryUntil(
        async () => !(await vm!.driver.transfer(readOne)).ok,
        "a transfer refused once the driver is bound",
      );
      await daemon.waitForLog(
        /WARN \[[^\]]*\] address 0x50 on \/dev\/i2c-3 is now in use by a kernel driver/,
      );
      await fake.clearLog();
      for (let i = 0; i < 30; i++) errStatus(await vm!.driver.transfer(readOne));
      assert.deepEqual(
        (await fake.readLog()).filter((e) => e.op !== "slave"),
        [],
        "no transfer reached the bus while the driver owns the address",
      );
      await daemon.waitForLog(/WARN \[[^\]]*\] transfer refused: a kernel driver owns .*addr=0x50/);
      const refusals = daemon.stderr.match(/transfer refused: a kernel driver owns/g)?.length ?? 0;
      assert.ok(refusals <= 20, `${refusals} refusal warnings for 30+ refused transfers`);

      await fake.update(ADAPTER);
      await retryUntil(
        async () => (await vm!.driver.transfer(readOne)).ok,
        "a transfer once the driver is unbound",
      );
      await daemon.waitForLog(/INFO \[[^\]]*\] address 0x50 on \/dev\/i2c-3 is free again/);
    });
  });

  it("rate-limits the warnings of a failing adapter and reports what it left out", async () => {
    await withFaultDaemon(["-l", "3:0x50", "--log-level", "info"], 1, async (daemon, [vm]) => {
      await fake.update(`${ADAPTER}error 3 0x50 EIO\n`);
      const burst = 60;
      for (let i = 0; i < burst; i++) errStatus(await vm!.driver.transfer(readOne));
      const warned = () => daemon.stderr.match(/WARN \[[^\]]*\] transfer failed/g)?.length ?? 0;
      assert.ok(warned() < burst, `${warned()} warnings for ${burst} failures`);
      // A failure in a later second first reports the count left out.
      await retryUntil(async () => {
        errStatus(await vm!.driver.transfer(readOne));
        return /failed transfers not logged .*suppressed=[1-9]/.test(daemon.stderr);
      }, "the suppressed-lines summary");
    });
  });

  it("a guest hammering a slow failing adapter holds up neither another guest nor the daemon", async () => {
    const perTransferMs = 100;
    await withFaultDaemon(
      ["-l", "3:0x50", ...memoryEepromArgs(dir.path, "24c02", 0x60), "--log-level", "info"],
      2,
      async (_daemon, [hammer, other]) => {
        await fake.update(`${ADAPTER}error 3 0x50 EIO\ndelay_us 3 ${perTransferMs * 1000}\n`);
        const hammering = 16;
        const submissions = Array.from({ length: hammering }, () =>
          hammer!.driver.submit([{ addr: 0x50, read: 1 }]),
        );
        const failing = Promise.all(submissions.map((s) => hammer!.driver.wait(s)));

        for (let i = 0; i < 20; i++) {
          const write = await other!.driver.transfer([{ addr: 0x60, write: Uint8Array.of(i, i) }]);
          assert.equal(write.ok, true);
          const read = await other!.driver.transfer([
            { addr: 0x60, write: Uint8Array.of(i) },
            { addr: 0x60, read: 1 },
          ]);
          assert.deepEqual([...read.reads[0]!], [i]);
        }
        const reachedAdapter = (await fake.readLog()).filter((e) => e.op === "rdwr").length;
        assert.ok(
          reachedAdapter < hammering,
          `the other guest finished while the adapter had run ${reachedAdapter} of ${hammering}`,
        );
        for (const result of await failing) errStatus(result);
      },
    );
  });
});
