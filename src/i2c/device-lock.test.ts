import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  DEFAULT_LOCK_DIR,
  DeviceLock,
  DeviceLockError,
  LOCK_DIR_ENV,
  lockDirectory,
  lockFileName,
  lockHolders,
} from "./device-lock.js";

const root = mkdtempSync(join(tmpdir(), "vdi2c-lock-"));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;
const freshDir = () => join(root, `d${dirs++}`, "nested");

function isLocked(fn: () => unknown, holders?: readonly number[]) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DeviceLockError, String(e));
    assert.equal(e.code, "I2C_DEVICE_LOCKED");
    assert.match(e.message, /host device 0x52 on \/dev\/i2c-3 is in use/);
    if (holders) assert.deepEqual(e.holders, holders);
    return true;
  });
}

describe("DeviceLock", () => {
  it("creates the directory and a lock file per adapter and address, holding our pid", () => {
    const dir = freshDir();
    const lock = DeviceLock.acquire(dir, 3, 0x52, false);
    assert.equal(lock.path, join(dir, "i2c-3-0x52.lock"));
    assert.equal(readFileSync(lock.path, "utf8"), `${process.pid}\n`);
    lock.release();
    lock.release();
  });

  it("exclusive excludes everything; shared admits shared; release frees it", () => {
    const dir = freshDir();
    const first = DeviceLock.acquire(dir, 3, 0x52, false);
    isLocked(() => DeviceLock.acquire(dir, 3, 0x52, false));
    isLocked(() => DeviceLock.acquire(dir, 3, 0x52, true));
    const other = DeviceLock.acquire(dir, 3, 0x53, false); // another address is another device
    first.release();
    other.release();
    const a = DeviceLock.acquire(dir, 3, 0x52, true);
    const b = DeviceLock.acquire(dir, 3, 0x52, true);
    isLocked(() => DeviceLock.acquire(dir, 3, 0x52, false));
    a.release();
    b.release();
    DeviceLock.acquire(dir, 3, 0x52, false).release();
  });

  it("names the other process that holds the lock", async () => {
    const dir = freshDir();
    const module = fileURLToPath(new URL("./device-lock.js", import.meta.url));
    const child = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const { DeviceLock } = await import(${JSON.stringify(module)});
         DeviceLock.acquire(${JSON.stringify(dir)}, 3, 0x52, false);
         process.stdout.write("locked\\n");
         process.stdin.resume();`,
      ],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", () => resolve());
        child.on("exit", (code) => reject(new Error(`child exited ${code}`)));
      });
      isLocked(() => DeviceLock.acquire(dir, 3, 0x52, false), [child.pid ?? -1]);
    } finally {
      child.stdin.end();
      await new Promise((resolve) => child.on("close", resolve));
    }
    DeviceLock.acquire(dir, 3, 0x52, false).release(); // the kernel dropped it with the process
  });

  it("reports a directory it cannot create", () => {
    const file = join(root, "plain-file");
    writeFileSync(file, "");
    assert.throws(
      () => DeviceLock.acquire(join(file, "sub"), 3, 0x52, false),
      (e: unknown) => e instanceof DeviceLockError && e.code === "I2C_LOCK_FAILED",
    );
  });
});

describe("lock directory and holders", () => {
  it("option, then environment, then the default", () => {
    assert.equal(lockDirectory({}, "/x"), "/x");
    assert.equal(lockDirectory({ [LOCK_DIR_ENV]: "/env" }, "/x"), "/x");
    assert.equal(lockDirectory({ [LOCK_DIR_ENV]: "/env" }), "/env");
    assert.equal(lockDirectory({}), DEFAULT_LOCK_DIR);
    assert.equal(lockFileName(12, 0x5), "i2c-12-0x05.lock");
  });

  it("parses /proc/locks lines for one inode, skipping blocked waiters and other kinds", () => {
    const file = join(root, "locks");
    writeFileSync(
      file,
      [
        "1: FLOCK  ADVISORY  WRITE 4242 08:01:777 0 EOF",
        "1: -> FLOCK  ADVISORY  WRITE 5555 08:01:777 0 EOF",
        "2: POSIX  ADVISORY  WRITE 6666 08:01:777 0 EOF",
        "3: FLOCK  ADVISORY  READ 4343 08:01:778 0 EOF",
        "4: FLOCK  ADVISORY  READ 4444 08:01:777 0 EOF",
      ].join("\n"),
    );
    assert.deepEqual(lockHolders(777, file), [4242, 4444]);
    assert.deepEqual(lockHolders(777, join(root, "missing")), []);
  });
});
