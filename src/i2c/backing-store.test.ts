import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { memoryBacking, openBacking } from "./backing-store.js";
import { ModelError } from "./models/model-error.js";

const dir = mkdtempSync(join(tmpdir(), "backing-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => `store-${n++}.bin`;

describe("openBacking", () => {
  it("creates a missing file from initial (padded with 0xff) and leaves no temp file", () => {
    const name = fresh();
    const store = openBacking(name, 8, Uint8Array.of(1, 2, 3), dir);
    assert.deepEqual([...store.bytes], [1, 2, 3, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert.deepEqual([...readFileSync(join(dir, name))], [...store.bytes]);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.startsWith(".")),
      [],
    );
    assert.equal(statSync(join(dir, name)).mode & 0o777, 0o600, "a guest's data is the daemon's");
    store.close();
    store.close(); // idempotent
  });

  it("reopens an existing file with its content, ignoring initial", () => {
    const name = fresh();
    writeFileSync(join(dir, name), Uint8Array.of(9, 8, 7, 6));
    const store = openBacking(join(dir, name), 4, new Uint8Array(4));
    assert.deepEqual([...store.bytes], [9, 8, 7, 6]);
    store.close();
  });

  it("refuses a file of the wrong size, naming the file and both sizes, and never truncates it", () => {
    const name = fresh();
    writeFileSync(join(dir, name), new Uint8Array(5));
    assert.throws(
      () => openBacking(name, 4, new Uint8Array(4), dir),
      (e: unknown) =>
        e instanceof ModelError &&
        e.code === "I2C_BACKING_SIZE" &&
        e.message.includes(join(dir, name)) &&
        /5 bytes.*needs 4/.test(e.message),
    );
    assert.equal(readFileSync(join(dir, name)).length, 5);
  });

  it("narrows an existing file with wider modes to 0600", () => {
    const name = fresh();
    writeFileSync(join(dir, name), new Uint8Array(4), { mode: 0o644 });
    chmodSync(join(dir, name), 0o666);
    openBacking(name, 4, new Uint8Array(4), dir).close();
    assert.equal(statSync(join(dir, name)).mode & 0o777, 0o600);
  });

  it("refuses a link, a hard link, a FIFO and an open directory before reading or writing", () => {
    const victim = join(dir, fresh());
    writeFileSync(victim, "secret!!", { mode: 0o600 });
    const refusedWith = (path: string, code: RegExp) =>
      assert.throws(
        () => openBacking(path, 8, new Uint8Array(8).fill(1), dir),
        (e: unknown) =>
          e instanceof ModelError &&
          e.code === "I2C_BACKING_IO" &&
          code.test(String((e.cause as { code?: string })?.code)),
      );
    const link = join(dir, fresh());
    symlinkSync(victim, link);
    refusedWith(link, /^ELOOP$/);
    const dangling = join(dir, fresh());
    symlinkSync(join(dir, "nowhere.bin"), dangling);
    refusedWith(dangling, /^ELOOP$/);
    assert.equal(existsSync(join(dir, "nowhere.bin")), false, "nothing created through it");
    const hard = join(dir, fresh());
    linkSync(victim, hard);
    refusedWith(hard, /^EUNSAFE_LINKS$/);
    const fifo = join(dir, fresh());
    assert.equal(spawnSync("mkfifo", [fifo]).status, 0);
    refusedWith(fifo, /^EUNSAFE_TYPE$/);
    const open = join(dir, "open");
    mkdirSync(open);
    chmodSync(open, 0o777);
    refusedWith(join(open, "x.bin"), /^EUNSAFE_MODE$/);
    assert.equal(existsSync(join(open, "x.bin")), false);
    assert.equal(readFileSync(victim, "utf8"), "secret!!");
  });

  it("reports an unusable path with I2C_BACKING_IO", () => {
    assert.throws(
      () => openBacking(join(dir, "no-such-dir", "x.bin"), 4, new Uint8Array(4)),
      (e: unknown) =>
        e instanceof ModelError && e.code === "I2C_BACKING_IO" && e.cause !== undefined,
    );
  });

  it("commit makes the range durable: a reopen sees exactly the committed bytes", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ offset: fc.nat(31), data: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
          {
            maxLength: 8,
          },
        ),
        (writes) => {
          const name = fresh();
          const store = openBacking(name, 32, new Uint8Array(32), dir);
          const expected = new Uint8Array(32);
          for (const { offset, data } of writes) {
            const part = data.subarray(0, 32 - offset);
            store.bytes.set(part, offset);
            expected.set(part, offset);
            store.commit(offset, part.length);
          }
          store.bytes[0] = (expected[0] ?? 0) ^ 0xff; // changed but never committed
          const again = openBacking(name, 32, new Uint8Array(32), dir);
          assert.deepEqual([...again.bytes], [...expected]);
          store.close();
          again.close();
        },
      ),
      { numRuns: 30 },
    );
  });

  it("refuses a commit outside the memory or after close", () => {
    const store = openBacking(fresh(), 4, new Uint8Array(4), dir);
    assert.throws(() => store.commit(3, 2), { code: "I2C_MODEL_OUT_OF_RANGE" });
    store.close();
    assert.throws(() => store.commit(0, 1), { code: "I2C_BACKING_IO" });
  });
});

describe("memoryBacking", () => {
  it("holds the bytes and checks commit ranges", () => {
    const store = memoryBacking(new Uint8Array(2));
    store.commit(0, 2);
    assert.throws(() => store.commit(1, 2), { code: "I2C_MODEL_OUT_OF_RANGE" });
  });
});
