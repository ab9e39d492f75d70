// Tests for BusyGuest (bench/busy-guest.ts): the isolation workload's second guest, in a worker.
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { I2cOp } from "../src/frontend/i2c-driver.js";
import { makeTempDir, waitUntil, withDaemon } from "../test/helpers/daemon.js";
import { BusyGuest } from "./busy-guest.js";

const readAt = (addr: number): I2cOp[] => [
  { addr, write: Uint8Array.of(0x00) },
  { addr, read: 8 },
];

/** Runs `body` with a BusyGuest on a daemon serving one emulated 24c02 at 0x50. */
async function withBusyGuest(
  ops: readonly I2cOp[],
  body: (guest: BusyGuest) => Promise<void>,
): Promise<void> {
  const dir = makeTempDir();
  const prefix = join(dir.path, "vi2c.sock");
  try {
    await withDaemon(["-s", prefix, "-l", "sim:0x50=24c02"], [`${prefix}0`], async () => {
      const guest = await BusyGuest.connect(`${prefix}0`, 32, ops);
      try {
        await body(guest);
      } finally {
        await guest.close();
      }
    });
  } finally {
    dir.remove();
  }
}

describe("BusyGuest", () => {
  it("runs transfers while busy and queues none while idle", async () => {
    await withBusyGuest(readAt(0x50), async (guest) => {
      assert.equal(guest.completed, 0, "nothing before busy()");
      guest.busy();
      await waitUntil(() => guest.completed >= 100, "100 transfers while busy", 10_000);
      guest.idle();
      const settled = guest.completed;
      await sleep(200);
      assert.equal(guest.completed, settled, "no transfer completes after idle() returned");
      assert.equal(guest.failed, 0);
      guest.busy();
      await waitUntil(() => guest.completed > settled, "busy again after idle", 10_000);
      guest.idle();
    });
  });

  it("counts transfers the device fails instead of stopping", async () => {
    await withBusyGuest(readAt(0x51), async (guest) => {
      guest.busy();
      await waitUntil(() => guest.failed >= 10, "10 failed transfers", 10_000);
      guest.idle();
      assert.equal(guest.failed, guest.completed, "every transfer to an absent address fails");
    });
  });
});
