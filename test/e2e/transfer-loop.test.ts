// The host's reading of the transfer loop's console (no guest needed): counts, acknowledged writes,
// what counts as lost, and the stall around an event.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TransferLog } from "./transfer-loop.js";

/** A TransferLog whose clock the test sets before each chunk. */
function clocked(): { log: TransferLog; feed: (at: number, text: string) => void } {
  let now = 0;
  const log = new TransferLog(() => now);
  return {
    log,
    feed: (at, text) => {
      now = at;
      log.onConsole(text);
    },
  };
}

describe("TransferLog", () => {
  it("counts transfers from lines that may arrive split anywhere", () => {
    const { log, feed } = clocked();
    feed(0, "@@LOOP-RUNNING@@\nK 0 0xff\nA 0 0 1\nR");
    feed(1, " 0\nA 1 1 8\nM 1 0x07\nF read 2 Error: ti");
    feed(2, "meout\nF write 3 3 22 Error\nF flag 4 Error\n");
    assert.equal(log.ok, 5);
    assert.equal(log.acked, 2);
    assert.equal(log.mismatched, 1);
    assert.equal(log.failed, 3);
    assert.deepEqual(log.failures, [
      "M 1 0x07",
      "F read 2 Error: timeout",
      "F write 3 3 22 Error",
      "F flag 4 Error",
    ]);
  });

  it("finds the acknowledged writes missing from what was read, and leaves out bytes a failed write may have changed", () => {
    const { log, feed } = clocked();
    const initial = Uint8Array.of(0xa0, 0xa1, 0xa2, 0xa3, 0xa4);
    feed(0, "A 0 0 1\nA 1 1 2\nA 2 2 3\nA 3 0 4\nF write 4 3 5 Error\n");
    // Address 0 holds its first write, not its last: a lost write. 3 may hold 0xa3 or 5.
    const check = log.checkWrites(initial, Uint8Array.of(1, 2, 3, 5, 0xa4));
    assert.deepEqual(check, { acked: 4, lost: 1, lostAt: [0], compared: 4, differing: 1 });
    // A dump covers only what it read; an untouched byte that changed differs but is no lost write.
    feed(1, "D 0 0x04 0x02\nD 4 0x00\n");
    assert.deepEqual(log.checkWrites(initial, log.dumped), {
      acked: 4,
      lost: 0,
      lostAt: [],
      compared: 3,
      differing: 1,
    });
  });

  it("takes the stall around an event as the longest gap between successful transfers that overlaps it", () => {
    const { log, feed } = clocked();
    for (const [at, line] of [
      [0, "A 0 0 1"],
      [10, "R 0"],
      [20, "A 1 1 8"],
      [500, "R 1"],
      [510, "F read 2 x"],
      [900, "K 2 0xff"],
      [910, "A 2 2 15"],
      [920, "R 2"],
    ] as const) {
      feed(at, `${line}\n`);
    }
    assert.equal(log.stall({ start: 100, end: 150 }), 480);
    assert.equal(log.stall({ start: 100, end: 600 }), 480);
    assert.equal(log.stall({ start: 600, end: 700 }), 400);
    assert.equal(log.stall({ start: 950, end: 990 }), 0);
    assert.equal(log.typicalGap([{ start: 100, end: 700 }]), 10);
    assert.equal(log.lastOkAt, 920);
  });

  it("resolves scriptEnded when the guest's end marker arrives", async () => {
    const { log, feed } = clocked();
    let ended = false;
    void log.scriptEnded.then(() => {
      ended = true;
    });
    feed(0, "RESULT loop writes=1\n");
    await Promise.resolve();
    assert.equal(ended, false);
    feed(1, "@@GUEST-SCRIPT-END status=0@@\n");
    await log.scriptEnded;
  });
});
