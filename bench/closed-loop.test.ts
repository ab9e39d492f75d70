// Tests for runClosedLoop against the real daemon process over real sockets (the loop blocks the
// thread, so the device must live in another process): split and packed rings, indirect tables on
// and off, EVENT_IDX off, depth 1 and 8, two guests at once, an unlisted address, a daemon that
// stops answering. Results are checked afterwards through the ordinary I2cDriver.transfer.
import assert from "node:assert/strict";
import { after, before, describe } from "node:test";
import { I2cGuest, type I2cOp, QEMU_FEATURES } from "../src/frontend/i2c-driver.js";
import { RequestStatus } from "../src/i2c/protocol.js";
import {
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
} from "../src/virtio/features.js";
import { memoryEepromArgs } from "../test/helpers/configured-daemon.js";
import {
  type DaemonProcess,
  itWithDaemonLog,
  makeTempDir,
  startDaemon,
} from "../test/helpers/daemon.js";
import { runClosedLoop } from "./closed-loop.js";

const QUEUE_SIZE = 64;
const PATTERN = Uint8Array.of(0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88);
const REGISTER_READ: readonly I2cOp[] = [
  { addr: 0x50, write: Uint8Array.of(0x00) },
  { addr: 0x50, read: PATTERN.length },
];

const RINGS: readonly { name: string; features: bigint }[] = [
  { name: "split, indirect", features: QEMU_FEATURES },
  { name: "split, direct", features: QEMU_FEATURES & ~VIRTIO_F_RING_INDIRECT_DESC },
  {
    name: "split, direct, no EVENT_IDX",
    features: QEMU_FEATURES & ~(VIRTIO_F_RING_INDIRECT_DESC | VIRTIO_F_RING_EVENT_IDX),
  },
  { name: "packed, indirect", features: QEMU_FEATURES | VIRTIO_F_RING_PACKED },
  {
    name: "packed, direct",
    features: (QEMU_FEATURES | VIRTIO_F_RING_PACKED) & ~VIRTIO_F_RING_INDIRECT_DESC,
  },
];

/** Every chain is back with its driver and the queue still carries ordinary transfers. */
async function assertReadsPattern(guest: I2cGuest): Promise<void> {
  assert.equal(guest.driver.inFlight, 0);
  assert.equal(guest.queues[0]?.driver.numFree, QUEUE_SIZE);
  const result = await guest.driver.transfer(REGISTER_READ);
  assert.deepEqual(result.statuses, [RequestStatus.OK, RequestStatus.OK]);
  assert.deepEqual([...(result.reads[0] ?? [])], [...PATTERN]);
}

for (const ring of RINGS) {
  describe(`runClosedLoop on a ${ring.name} ring (real daemon, a 24c02 at 0x50 without write cycle)`, () => {
    const dir = makeTempDir();
    const prefix = `${dir.path}/vi2c.sock`;
    let daemon: DaemonProcess;
    const guests: I2cGuest[] = [];

    before(async () => {
      daemon = await startDaemon(
        ["-s", prefix, "-c", "2", ...memoryEepromArgs(dir.path)],
        [`${prefix}0`, `${prefix}1`],
      );
      for (const path of [`${prefix}0`, `${prefix}1`]) {
        const guest = await I2cGuest.connect(path, {
          features: ring.features,
          queueSize: QUEUE_SIZE,
        });
        guests.push(guest);
        const written = await guest.driver.transfer([
          { addr: 0x50, write: Uint8Array.of(0x00, ...PATTERN) },
        ]);
        assert.equal(written.ok, true);
      }
    });

    after(async () => {
      for (const guest of guests) await guest.close();
      const status = await daemon?.stop();
      dir.remove();
      assert.deepEqual(status, { code: 0, signal: null });
    });
    const check = itWithDaemonLog(() => daemon);
    const guest = (i: number): I2cGuest => {
      const g = guests[i];
      assert.ok(g);
      return g;
    };

    for (const depth of [1, 8]) {
      check(
        `completes exactly the count asked at depth ${depth}, recording each latency`,
        async () => {
          const latenciesUs = new Float64Array(1000);
          const result = runClosedLoop([{ name: "vm0", driver: guest(0).driver }], REGISTER_READ, {
            depth,
            count: 300,
            latenciesUs,
          });
          assert.equal(result.completed, 300);
          assert.equal(result.failed, 0);
          assert.equal(result.recorded, 300);
          assert.deepEqual(result.completedPerGuest, [300]);
          assert.ok(latenciesUs.subarray(0, 300).every((us) => us > 0));
          assert.equal(latenciesUs[300], 0, "nothing recorded past the completions");
          await assertReadsPattern(guest(0));
        },
      );
    }

    check("drives two guests from one wait, each at depth 8", async () => {
      const result = runClosedLoop(
        [
          { name: "vm0", driver: guest(0).driver },
          { name: "vm1", driver: guest(1).driver },
        ],
        REGISTER_READ,
        { depth: 8, count: 1000 },
      );
      assert.equal(result.completed, 1000);
      assert.equal(result.failed, 0);
      assert.equal(result.completedPerGuest.length, 2);
      assert.equal((result.completedPerGuest[0] ?? 0) + (result.completedPerGuest[1] ?? 0), 1000);
      assert.ok(
        result.completedPerGuest.every((n) => n >= 8),
        "each guest completed its own",
      );
      await assertReadsPattern(guest(0));
      await assertReadsPattern(guest(1));
    });

    check("counts transfers to an unlisted address as failed", async () => {
      const unlisted: readonly I2cOp[] = [
        { addr: 0x51, write: Uint8Array.of(0x00) },
        { addr: 0x51, read: 8 },
      ];
      const result = runClosedLoop([{ name: "vm0", driver: guest(0).driver }], unlisted, {
        depth: 4,
        count: 40,
      });
      assert.deepEqual([result.completed, result.failed], [40, 40]);
      await assertReadsPattern(guest(0));
    });

    check("stops submitting after durationMs and still collects what is in flight", async () => {
      const result = runClosedLoop([{ name: "vm1", driver: guest(1).driver }], REGISTER_READ, {
        depth: 8,
        durationMs: 50,
      });
      assert.ok(result.completed >= 8);
      assert.equal(result.failed, 0);
      await assertReadsPattern(guest(1));
    });
  });
}

describe("runClosedLoop when the daemon stops answering", () => {
  const dir = makeTempDir();
  const prefix = `${dir.path}/vi2c.sock`;
  let daemon: DaemonProcess;
  let vm: I2cGuest | undefined;

  before(async () => {
    daemon = await startDaemon(["-s", prefix, ...memoryEepromArgs(dir.path)], [`${prefix}0`]);
    vm = await I2cGuest.connect(`${prefix}0`, { queueSize: QUEUE_SIZE });
  });

  after(async () => {
    daemon?.child.kill("SIGCONT");
    await vm?.close();
    await daemon?.stop();
    dir.remove();
  });
  const check = itWithDaemonLog(() => daemon);

  check("throws ETIMEDOUT naming the guest instead of hanging", async () => {
    assert.ok(vm);
    daemon.child.kill("SIGSTOP");
    assert.throws(
      () =>
        runClosedLoop([{ name: "stopped-vm", driver: vm!.driver }], REGISTER_READ, {
          depth: 2,
          count: 10,
          timeoutMs: 300,
        }),
      (error: unknown) =>
        error instanceof Error &&
        (error as { code?: string }).code === "ETIMEDOUT" &&
        error.message.includes("stopped-vm"),
    );
  });

  check("refuses a depth the ring cannot hold, before queueing anything", async () => {
    assert.ok(vm);
    assert.throws(
      () =>
        runClosedLoop([{ name: "vm", driver: vm!.driver }], REGISTER_READ, {
          depth: QUEUE_SIZE,
          count: 1,
        }),
      (error: unknown) => (error as { code?: string }).code === "EINVAL",
    );
  });
});
