/**
 * Measures the cost of one BackingStore commit (pwrite + fdatasync) on this machine's disk:
 * `node dist/bench/backing-store.js [dir] [count]`. Not a test; prints µs per commit.
 * @module
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openBacking } from "../src/i2c/backing-store.js";

const dir = mkdtempSync(join(process.argv[2] ?? tmpdir(), "backing-bench-"));
const count = Number(process.argv[3] ?? 2000);
try {
  const store = openBacking(join(dir, "bench.bin"), 256, new Uint8Array(256));
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    store.bytes[i & 0xff] = i & 0xff;
    store.commit(i & 0xff, 1);
  }
  const elapsedUs = Number(process.hrtime.bigint() - started) / 1000;
  store.close();
  console.log(
    `${count} single-byte commits in ${dir}: ${(elapsedUs / count).toFixed(1)} µs/commit`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
