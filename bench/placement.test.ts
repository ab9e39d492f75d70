// Tests for the bench's placements (bench/placement.ts).
import assert from "node:assert/strict";
import { cpus } from "node:os";
import { describe, it } from "node:test";
import { PLACEMENTS, parsePlacements } from "./placement.js";

describe("parsePlacements", () => {
  it("gives the placements of a list in its order", () => {
    const names = cpus().length >= 2 ? "unpinned,one-cpu,two-cpus" : "unpinned,one-cpu";
    assert.deepEqual(
      parsePlacements(names),
      names.split(",").map((name) => PLACEMENTS[name as keyof typeof PLACEMENTS]),
    );
  });

  it("puts daemon and frontend on CPU 0 for one-cpu and on CPUs 0 and 1 for two-cpus", () => {
    assert.deepEqual(PLACEMENTS["one-cpu"], { name: "one-cpu", daemonCpu: 0, frontendCpu: 0 });
    assert.deepEqual(PLACEMENTS["two-cpus"], { name: "two-cpus", daemonCpu: 0, frontendCpu: 1 });
    assert.deepEqual(PLACEMENTS.unpinned, { name: "unpinned", daemonCpu: null, frontendCpu: null });
  });

  it("refuses an unknown name, naming the ones it knows", () => {
    assert.throws(
      () => parsePlacements("one-cpu,cpu0"),
      /unknown placement "cpu0".*one-cpu, two-cpus, unpinned/,
    );
  });
});
