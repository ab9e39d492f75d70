// Integration: transfers through the real daemon process on an emulated 24c02 EEPROM, driven the way
// the Linux i2c-virtio driver drives QEMU's vhost-user-i2c queue.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { RequestStatus } from "../src/i2c/protocol.js";
import { type DaemonProcess, makeTempDir, startDaemon, withDaemonLog } from "./helpers/daemon.js";

describe("daemon transfers on sim:0x50=24c02", () => {
  const dir = makeTempDir();
  const socket = `${dir.path}/vi2c.sock`;
  let daemon: DaemonProcess;
  let vm: I2cGuest;

  before(async () => {
    daemon = await startDaemon(
      ["-s", socket, "-l", "sim:0x50=24c02", "--log-level", "debug"],
      [`${socket}0`],
    );
    vm = await I2cGuest.connect(`${socket}0`);
  });

  after(async () => {
    await vm?.close();
    const status = await daemon?.stop();
    dir.remove();
    assert.deepEqual(status, { code: 0, signal: null });
  });

  /** Runs `body`; a failure carries the daemon's stderr. */
  const check = (name: string, body: () => Promise<void>) =>
    it(name, async () => {
      try {
        await body();
      } catch (err) {
        throw withDaemonLog(err, daemon);
      }
    });

  check("writes bytes, then reads them back in one combined write+read transfer", async () => {
    const written = await vm.driver.transfer([
      { addr: 0x50, write: Uint8Array.of(0x10, 1, 2, 3, 4) },
    ]);
    assert.equal(written.ok, true);
    const result = await vm.driver.transfer([
      { addr: 0x50, write: Uint8Array.of(0x10) },
      { addr: 0x50, read: 4 },
    ]);
    assert.deepEqual(result.statuses, [RequestStatus.OK, RequestStatus.OK]);
    assert.deepEqual([...(result.reads[0] ?? [])], [1, 2, 3, 4]);
  });

  check(
    "answers a zero-length probe at a present address and fails it at an absent one",
    async () => {
      assert.equal((await vm.driver.transfer([{ addr: 0x50, write: new Uint8Array(0) }])).ok, true);
      assert.equal((await vm.driver.transfer([{ addr: 0x50, read: 0 }])).ok, true);
      const absent = await vm.driver.transfer([{ addr: 0x51, write: new Uint8Array(0) }]);
      assert.deepEqual(absent.statuses, [RequestStatus.ERR]);
    },
  );

  check("rejects an unlisted address, also as the second message of a transfer", async () => {
    await vm.driver.transfer([{ addr: 0x50, write: Uint8Array.of(0x20, 0xaa) }]);
    const alone = await vm.driver.transfer([{ addr: 0x23, read: 1 }]);
    assert.equal(alone.ok, false);
    assert.equal(alone.statuses[0], RequestStatus.ERR);
    const second = await vm.driver.transfer([
      { addr: 0x50, write: Uint8Array.of(0x20) },
      { addr: 0x23, read: 1 },
    ]);
    assert.equal(second.okCount, 0, "the whole transfer is refused before it reaches the bus");
    assert.deepEqual(second.statuses, [RequestStatus.ERR, RequestStatus.ERR]);
    await daemon.waitForLog(/address 0x23 not listed/);
  });

  check("returns ERR for a malformed chain and serves the next good transfer", async () => {
    const ram = vm.ram;
    const shortHeader = ram.alloc(16);
    const status = ram.alloc(16);
    ram.memory.write(status, Uint8Array.of(0xee));
    const chain = vm.driver.submitRaw([
      { gpa: shortHeader, len: 4, writable: false },
      { gpa: status, len: 1, writable: true },
    ]);
    vm.driver.kick();
    await vm.driver.waitFor([chain]);
    const byte = new Uint8Array(1);
    ram.memory.read(status, byte);
    assert.equal(byte[0], RequestStatus.ERR);
    const next = await vm.driver.transfer([
      { addr: 0x50, write: Uint8Array.of(0x10) },
      { addr: 0x50, read: 2 },
    ]);
    assert.equal(next.ok, true);
    assert.deepEqual([...(next.reads[0] ?? [])], [1, 2]);
  });

  check("keeps several transfers in flight at once and completes each", async () => {
    const first = vm.driver.submit([{ addr: 0x50, write: Uint8Array.of(0x40, 9) }], {
      kick: false,
    });
    const second = vm.driver.submit([{ addr: 0x51, read: 0 }], { kick: false });
    vm.driver.kick();
    const [a, b] = await Promise.all([vm.driver.wait(first), vm.driver.wait(second)]);
    assert.equal(a.ok, true);
    assert.equal(b.ok, false);
  });

  check("logs each transfer at debug level", async () => {
    await vm.driver.transfer([{ addr: 0x50, write: Uint8Array.of(0x7e) }]);
    await daemon.waitForLog("transfer w1@0x50 0x7e result=1/1");
  });
});
