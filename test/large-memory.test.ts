// Integration: guest RAM larger than a Node ArrayBuffer can cover. A sparse 16 GiB memfd region is
// mapped by the real daemon, and the driver's buffers sit above 4 GiB, straddling the 6 GiB edge
// where one of the daemon's 1 GiB windows ends and its overlap takes over.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { RequestStatus } from "../src/i2c/protocol.js";
import { type DaemonProcess, makeTempDir, startDaemon, withDaemonLog } from "./helpers/daemon.js";

const GiB = 2 ** 30;

describe("daemon with 16 GiB of guest RAM", () => {
  const dir = makeTempDir();
  const socket = `${dir.path}/vi2c.sock`;
  let daemon: DaemonProcess;
  let vm: I2cGuest;

  before(async () => {
    daemon = await startDaemon(["-s", socket, "-l", "sim:0x50=24c02"], [`${socket}0`]);
    vm = await I2cGuest.connect(`${socket}0`, {
      ram: [{ guestPhysAddr: 0, size: 16 * GiB }],
      bufferGpa: 6 * GiB - 100,
    });
  });

  after(async () => {
    await vm?.close();
    await daemon?.stop();
    dir.remove();
  });

  it("carries transfers whose buffers lie above 4 GiB and across a window edge", async () => {
    try {
      const pattern = Uint8Array.from({ length: 8 }, (_, i) => 0xa0 + i);
      const written = await vm.driver.transfer([
        { addr: 0x50, write: Uint8Array.of(0x20, ...pattern) },
      ]);
      assert.equal(written.ok, true);
      for (let round = 0; round < 8; round++) {
        const result = await vm.driver.transfer([
          { addr: 0x50, write: Uint8Array.of(0x20) },
          { addr: 0x50, read: 8 },
        ]);
        assert.deepEqual(result.statuses, [RequestStatus.OK, RequestStatus.OK]);
        assert.deepEqual([...(result.reads[0] ?? [])], [...pattern]);
      }
    } catch (error) {
      throw withDaemonLog(error, daemon);
    }
  });
});
