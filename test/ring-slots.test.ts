/**
 * Transfers whose rest the driver cannot queue, through the real daemon process (an emulated 24c512)
 * on QEMU's 4-entry ring, split and packed, with INDIRECT_DESC negotiated: a guest that sends direct
 * chains anyway (Linux does when it cannot allocate an indirect table) fills the ring with the first
 * messages of a FAIL_NEXT group, or leaves fewer slots than its next message takes. It then waits for
 * the messages it queued; the daemon runs what there is rather than wait for a rest that can never
 * come.
 * Talks to the daemon only through its socket.
 * @module
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { I2cGuest, QEMU_FEATURES, type SubmittedChain } from "../src/frontend/i2c-driver.js";
import { RequestFlag, RequestStatus } from "../src/i2c/protocol.js";
import type { DriverBuffer } from "../src/virtio/driver-split-queue.js";
import { VIRTIO_F_RING_PACKED } from "../src/virtio/features.js";
import { memoryEepromArgs } from "./helpers/configured-daemon.js";
import { makeTempDir, withDaemon } from "./helpers/daemon.js";
import { scaled } from "./helpers/time.js";

const EEPROM = 0x50;
/** The ring QEMU gives vhost-user-i2c. */
const RING = 4;
/** How long the guest waits for its chains: a daemon that waits for the rest never answers. */
const WAIT_MS = 3000;

const LAYOUTS = [
  ["split", QEMU_FEATURES],
  ["packed", QEMU_FEATURES | VIRTIO_F_RING_PACKED],
] as const;

/** Runs `body` with a guest on a daemon serving a 24c512 at 0x50 (no write cycle: plain memory). */
async function withGuest(features: bigint, body: (guest: I2cGuest) => Promise<void>) {
  const dir = makeTempDir("vdi2c-slots-");
  const prefix = `${dir.path}/vi2c.sock`;
  const path = `${prefix}0`;
  try {
    await withDaemon(
      ["-s", prefix, ...memoryEepromArgs(dir.path, "24c512", EEPROM)],
      [path],
      async () => {
        const guest = await I2cGuest.connect(path, {
          features,
          queueSize: RING,
          timeoutMs: scaled(WAIT_MS),
        });
        try {
          await body(guest);
        } finally {
          await guest.close();
        }
      },
    );
  } finally {
    dir.remove();
  }
}

/**
 * Queues one direct chain of a write to the EEPROM with FAIL_NEXT set (more messages to follow):
 * out_hdr, the data (none: a zero-length write, two descriptors), the status byte.
 */
function queueWrite(
  guest: I2cGuest,
  data: readonly number[],
): { chain: SubmittedChain; status: number } {
  const memory = guest.ram.memory;
  const hdr = guest.ram.alloc(8, 16);
  memory.writeU16(hdr, EEPROM << 1);
  memory.writeU16(hdr + 2, 0);
  memory.writeU32(hdr + 4, RequestFlag.FAIL_NEXT);
  const buffers: DriverBuffer[] = [{ gpa: hdr, len: 8, writable: false }];
  if (data.length > 0) {
    const gpa = guest.ram.alloc(data.length, 16);
    memory.write(gpa, Uint8Array.from(data));
    buffers.push({ gpa, len: data.length, writable: false });
  }
  const status = guest.ram.alloc(1, 16);
  memory.write(status, Uint8Array.of(0xee));
  buffers.push({ gpa: status, len: 1, writable: true });
  return { chain: guest.driver.submitRaw(buffers), status };
}

function statusAt(guest: I2cGuest, gpa: number): number {
  const byte = new Uint8Array(1);
  guest.ram.memory.read(gpa, byte);
  return byte[0] as number;
}

/** The guest still runs ordinary transfers: a write of one byte, then a read of it. */
async function assertServes(guest: I2cGuest, marker: number): Promise<void> {
  const wrote = await guest.driver.transfer([
    { addr: EEPROM, write: Uint8Array.of(0, 0x40, marker) },
  ]);
  assert.equal(wrote.ok, true);
  const read = await guest.driver.transfer([
    { addr: EEPROM, write: Uint8Array.of(0, 0x40) },
    { addr: EEPROM, read: 1 },
  ]);
  assert.deepEqual([...(read.reads[0] ?? [])], [marker]);
}

for (const [layout, features] of LAYOUTS) {
  describe(`unfinished FAIL_NEXT groups on a ${layout} ring of ${RING}`, () => {
    it("two zero-length writes of two direct descriptors each fill the ring: both come back", async () => {
      await withGuest(features, async (guest) => {
        const queued = [queueWrite(guest, []), queueWrite(guest, [])];
        assert.equal(guest.queues[0]?.driver.numFree, 0, "the ring is full");
        guest.driver.kick();
        await guest.driver.waitFor(queued.map((q) => q.chain));
        for (const { chain, status } of queued) {
          assert.equal(chain.usedLen, 1);
          assert.equal(statusAt(guest, status), RequestStatus.OK);
        }
        await assertServes(guest, 0x3c);
      });
    });

    it("a write of three direct descriptors leaves one slot, too few for the next message: it comes back alone", async () => {
      await withGuest(features, async (guest) => {
        // The register pointer of a write+read (i2cget): the read's three descriptors do not fit.
        const { chain, status } = queueWrite(guest, [0x00, 0x40]);
        assert.equal(guest.queues[0]?.driver.numFree, 1);
        guest.driver.kick();
        await guest.driver.waitFor([chain]);
        assert.equal(chain.usedLen, 1);
        assert.equal(statusAt(guest, status), RequestStatus.OK);
        await assertServes(guest, 0xc3);
      });
    });
  });
}
