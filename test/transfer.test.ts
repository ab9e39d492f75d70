// Integration: transfers through the real daemon process on an emulated 24c02 EEPROM, driven the way
// the Linux i2c-virtio driver drives QEMU's vhost-user-i2c queue. Every scenario runs once per ring
// layout: split, and packed (VIRTIO_F_RING_PACKED, as QEMU's packed=on gives a Linux guest): write+read,
// laps of the ring, zero-length probes, an unlisted address, a malformed chain, transfers in flight
// together, debug logging, and a stop/start with the vring base and a reconnect of a new connection
// to the same ring.
import assert from "node:assert/strict";
import { after, before, describe } from "node:test";
import { I2cGuest, QEMU_FEATURES } from "../src/frontend/i2c-driver.js";
import { RequestStatus } from "../src/i2c/protocol.js";
import { VhostUserFrontend } from "../src/vhost-user/frontend.js";
import { DriverPackedQueue } from "../src/virtio/driver-packed-queue.js";
import { DriverSplitQueue } from "../src/virtio/driver-split-queue.js";
import { VIRTIO_F_RING_PACKED } from "../src/virtio/features.js";
import { memoryEepromArgs } from "./helpers/configured-daemon.js";
import { type DaemonProcess, itWithDaemonLog, makeTempDir, startDaemon } from "./helpers/daemon.js";

interface RingLayout {
  readonly name: "split" | "packed";
  /** SET_FEATURES as QEMU 7.2 sends it for this layout. */
  readonly features: bigint;
  /** How the daemon logs those features. */
  readonly featuresLogged: RegExp;
  readonly driverQueue: typeof DriverSplitQueue | typeof DriverPackedQueue;
  /** GET_VRING_BASE once every chain the driver made available was consumed. */
  readonly stoppedBase: (availIndex: number) => number;
}

const LAYOUTS: readonly RingLayout[] = [
  {
    name: "split",
    features: QEMU_FEATURES,
    featuresLogged: /features negotiated.*0x170000001/,
    driverQueue: DriverSplitQueue,
    // The avail index the device reached.
    stoppedBase: (availIndex) => availIndex,
  },
  {
    name: "packed",
    features: QEMU_FEATURES | VIRTIO_F_RING_PACKED,
    featuresLogged: /features negotiated.*0x570000001/,
    driverQueue: DriverPackedQueue,
    // QEMU's stop: GET_VRING_BASE carries the avail position low and the used position high.
    stoppedBase: (availIndex) => ((availIndex << 16) | availIndex) >>> 0,
  },
];

for (const layout of LAYOUTS) {
  describe(`daemon transfers on a ${layout.name} ring (a 24c02 at 0x50 without write cycle)`, () => {
    const dir = makeTempDir();
    const socket = `${dir.path}/vi2c.sock`;
    let daemon: DaemonProcess;
    let vm: I2cGuest;

    before(async () => {
      daemon = await startDaemon(
        ["-s", socket, ...memoryEepromArgs(dir.path), "--log-level", "debug"],
        [`${socket}0`],
      );
      vm = await I2cGuest.connect(`${socket}0`, { features: layout.features });
    });

    after(async () => {
      await vm?.close();
      const status = await daemon?.stop();
      dir.remove();
      assert.deepEqual(status, { code: 0, signal: null });
    });
    /** `it` whose failure carries the daemon's stderr. */
    const check = itWithDaemonLog(() => daemon);

    check(
      `is offered RING_PACKED, acks its features and runs on a ${layout.name} ring`,
      async () => {
        assert.equal(vm.negotiated.features & VIRTIO_F_RING_PACKED, VIRTIO_F_RING_PACKED);
        assert.ok(vm.queues[0]?.driver instanceof layout.driverQueue);
        await daemon.waitForLog(layout.featuresLogged);
      },
    );

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
        assert.equal(
          (await vm.driver.transfer([{ addr: 0x50, write: new Uint8Array(0) }])).ok,
          true,
        );
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

    check(
      `reconnects: a new connection continues the same ${layout.name} ring from its base`,
      async () => {
        const ring = vm.queues[0]?.driver;
        assert.ok(ring instanceof layout.driverQueue);
        const [base] = await vm.stop();
        assert.equal(base, layout.stoppedBase(ring.availIndex));
        await vm.disconnect();
        // One front-end at a time: a connection made before the daemon saw the old one end is refused.
        await daemon.waitForLog(/waiting for the next front-end/);
        const frontend = VhostUserFrontend.connect(`${socket}0`);
        vm = await vm.restartOn(frontend);
        const result = await vm.driver.transfer([
          { addr: 0x50, write: Uint8Array.of(0x10) },
          { addr: 0x50, read: 4 },
        ]);
        assert.equal(result.ok, true);
        assert.deepEqual([...(result.reads[0] ?? [])], [1, 2, 3, 4]);
      },
    );
  });
}
