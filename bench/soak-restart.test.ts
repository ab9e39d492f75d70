// Tests for the restart soak's schedule and verdict (bench/soak-restart.ts); the soak itself boots a
// real guest and runs by hand.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatFigures, passed, type RestartSoakFigures, restartSchedule } from "./soak-restart.js";

const clean: RestartSoakFigures = {
  qemu: "QEMU emulator version 7.2.22",
  mode: "server",
  planned: { handovers: 2, crashes: 0 },
  done: [
    { kind: "handover", from: 1, to: 2, signalledAt: 0, doneAt: 900, stallMs: 1000 },
    { kind: "handover", from: 2, to: 3, signalledAt: 2000, doneAt: 2800, stallMs: 850 },
  ],
  transfersOk: 40,
  transfersFailed: 0,
  readsWrong: 0,
  failures: [],
  readBack: { acked: 18, lost: 0, lostAt: [], compared: 18, differing: 0 },
  backingFile: { acked: 18, lost: 0, lostAt: [], compared: 4096, differing: 0 },
  typicalGapMs: 60,
  connections: { connected: 1, resumed: 2, disconnected: 0 },
  qemuSaid: [],
  guestSeconds: 9.5,
  aborted: null,
};

describe("restart soak", () => {
  it("spreads the crashes among the handovers", () => {
    const schedule = restartSchedule(20, 5);
    assert.equal(schedule.length, 25);
    const crashes = schedule.flatMap((kind, index) => (kind === "crash" ? [index] : []));
    assert.deepEqual(crashes, [2, 7, 12, 17, 22]);
    assert.deepEqual(restartSchedule(3, 0), ["handover", "handover", "handover"]);
    assert.deepEqual(restartSchedule(0, 2), ["crash", "crash"]);
  });

  it("passes only with every restart done, nothing failed or lost, QEMU quiet and no hang", () => {
    assert.equal(passed(clean), true);
    const lines = formatFigures(clean);
    assert.ok(lines.includes("handovers done: 2 of 2"));
    assert.ok(lines.includes("acknowledged writes: 18; lost: 0"));
    assert.ok(lines.includes("  handovers: longest 1000 ms, median 1000 ms; each: 1000 850"));
    assert.equal(lines.at(-1), "verdict: PASS");
    const lost = { acked: 18, lost: 1, lostAt: [7], compared: 4096, differing: 1 };
    for (const bad of [
      { done: clean.done.slice(1) },
      { transfersFailed: 1 },
      { readsWrong: 1 },
      { backingFile: lost },
      { readBack: null },
      { qemuSaid: ["vhost lost connection"] },
      { guestSeconds: null },
      { aborted: "no transfer for 60 s" },
    ] satisfies Partial<RestartSoakFigures>[]) {
      const figures = { ...clean, ...bad };
      assert.equal(passed(figures), false, JSON.stringify(bad));
      assert.equal(formatFigures(figures).at(-1), "verdict: FAIL");
    }
  });
});
