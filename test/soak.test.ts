/**
 * Short soak (20k transfers through the real daemon, see bench/soak.ts): fd count exactly flat, RSS
 * within a generous bound. The full million runs by hand: `node dist/bench/soak.js`.
 * @module
 */

import assert from "node:assert/strict";
import { it } from "node:test";
import { runSoak } from "../bench/soak.js";

it("20k transfers through the full path keep the daemon's fds and RSS flat", async () => {
  const result = await runSoak(20_000);
  console.log(
    `soak: ${result.transfers} transfers in ${result.seconds.toFixed(1)} s ` +
      `(${Math.round(result.perSecond)}/s); RSS ${result.start.rssKiB} -> ${result.end.rssKiB} KiB; ` +
      `fds ${result.start.fds} -> ${result.end.fds}`,
  );
  assert.ok(result.transfers >= 20_000);
  assert.equal(result.end.fds, result.start.fds, "no fd per transfer");
  assert.equal(
    result.end.maps <= result.start.maps + 64,
    true,
    "mappings flat (V8 heap pages aside)",
  );
  // V8 grows and trims its heap lazily; a leak of even 1 KiB per transfer would be 20 MiB.
  assert.ok(
    result.end.rssKiB <= result.start.rssKiB + 16 * 1024,
    `RSS ${result.start.rssKiB} -> ${result.end.rssKiB} KiB`,
  );
});
