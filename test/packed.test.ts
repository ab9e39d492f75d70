// Integration: the transfer tests in packed-ring mode (VIRTIO_F_RING_PACKED, as QEMU's packed=on gives a
// Linux guest) through the real daemon process on an emulated 24c02 EEPROM: write+read, zero-length
// probes, an unlisted address, a malformed chain, a stop/start with the packed vring base and a
// reconnect of a new connection to the same ring.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { I2cGuest, QEMU_FEATURES } from "../src/frontend/i2c-driver.js";
import { RequestStatus } from "../src/i2c/protocol.js";
import { VhostUserFrontend } from "../src/vhost-user/frontend.js";
import { DriverPackedQueue } from "../src/virtio/driver-packed-queue.js";
import { VIRTIO_F_RING_PACKED } from "../src/virtio/features.js";
import { type DaemonProcess, makeTempDir, startDaemon, withDaemonLog } from "./helpers/daemon.js";

/** SET_FEATURES as QEMU 7.2 sends it with packed=on (0x570000001). */
const PACKED_FEATURES = QEMU_FEATURES | VIRTIO_F_RING_PACKED;

describe("daemon transfers on a packed ring (sim:0x50=24c02)", () => {
  const dir = makeTempDir();
  const socket = `${dir.path}/vi2c.sock`;
  let daemon: DaemonProcess;
  let vm: I2cGuest;

  before(async () => {
    daemon = await startDaemon(
      ["-s", socket, "-l", "sim:0x50=24c02", "--log-level", "debug"],
      [`${socket}0`],
    );
    vm = await I2cGuest.connect(`${socket}0`, { features: PACKED_FEATURES });
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

  check("negotiates RING_PACKED and runs the guest on a packed ring", async () => {
    assert.equal(vm.negotiated.features & VIRTIO_F_RING_PACKED, VIRTIO_F_RING_PACKED);
    assert.ok(vm.queues[0]?.driver instanceof DriverPackedQueue);
    await daemon.waitForLog(/features negotiated.*0x570000001/);
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

  check("keeps working across many laps of the 4-entry ring", async () => {
    for (let i = 0; i < 20; i++) {
      // One write (one slot), then write+read (two): the ring positions drift across the laps.
      assert.equal(
        (await vm.driver.transfer([{ addr: 0x50, write: Uint8Array.of(0x30, i) }])).ok,
        true,
      );
      const result = await vm.driver.transfer([
        { addr: 0x50, write: Uint8Array.of(0x30) },
        { addr: 0x50, read: 1 },
      ]);
      assert.equal(result.ok, true, `round ${i}`);
      assert.deepEqual([...(result.reads[0] ?? [])], [i]);
    }
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

  check("reconnects: a new connection continues the same packed ring from its base", async () => {
    const ring = vm.queues[0]?.driver;
    assert.ok(ring instanceof DriverPackedQueue);
    // QEMU's stop: GET_VRING_BASE carries the avail position low and the used position high.
    const [base] = await vm.stop();
    assert.equal(base, ((ring.availIndex << 16) | ring.availIndex) >>> 0);
    await vm.disconnect();
    const frontend = VhostUserFrontend.connect(`${socket}0`);
    vm = await vm.restartOn(frontend);
    const result = await vm.driver.transfer([
      { addr: 0x50, write: Uint8Array.of(0x10) },
      { addr: 0x50, read: 4 },
    ]);
    assert.equal(result.ok, true);
    assert.deepEqual([...(result.reads[0] ?? [])], [1, 2, 3, 4]);
  });
});
