import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  DeviceLock,
  DeviceLockError,
  LOCK_DIR_ENV,
  lockDirectory,
  lockFileName,
  lockHolders,
  SYSTEM_LOCK_DIR,
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
  it("creates the directory (0700) and a lock file (0600) per adapter and address, holding our pid", () => {
    const dir = freshDir();
    const lock = DeviceLock.acquire(dir, 3, 0x52, false);
    assert.equal(lock.path, join(dir, "i2c-3-0x52.lock"));
    assert.equal(readFileSync(lock.path, "utf8"), `${process.pid}\n`);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(lock.path).mode & 0o777, 0o600);
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

  it("narrows an existing lock file of ours to 0600 and keeps no other bits", () => {
    const dir = freshDir();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, lockFileName(3, 0x52));
    writeFileSync(file, "old\n", { mode: 0o666 });
    chmodSync(file, 0o666);
    DeviceLock.acquire(dir, 3, 0x52, false).release();
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(readFileSync(file, "utf8"), `${process.pid}\n`);
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

/** Asserts that `fn` fails with I2C_LOCK_FAILED and a message matching `reason`. */
function isRefused(fn: () => unknown, reason: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DeviceLockError, String(e));
    assert.equal(e.code, "I2C_LOCK_FAILED");
    assert.match(e.message, reason);
    return true;
  });
}

describe("DeviceLock refuses what others could have prepared", () => {
  const OTHER_UID = 1234;

  it("a lock directory that others can write to, even sticky, or search", () => {
    for (const mode of [0o777, 0o1777, 0o770, 0o1770, 0o755, 0o701]) {
      const dir = freshDir();
      mkdirSync(dir, { recursive: true });
      chmodSync(dir, mode);
      isRefused(
        () => DeviceLock.acquire(dir, 3, 0x52, false),
        new RegExp(
          `lock directory ${dir}: mode 0?${mode.toString(8)}: a lock directory must be writable by its owner only`,
        ),
      );
      assert.equal(existsSync(join(dir, lockFileName(3, 0x52))), false, "no lock file created");
    }
    const grouped = freshDir();
    mkdirSync(grouped, { recursive: true });
    chmodSync(grouped, 0o750);
    DeviceLock.acquire(grouped, 3, 0x52, false).release();
  });

  it("a lock directory owned by another user", () => {
    const dir = freshDir();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chownSync(dir, OTHER_UID, OTHER_UID);
    isRefused(
      () => DeviceLock.acquire(dir, 3, 0x52, false),
      new RegExp(`lock directory ${dir}: owned by uid ${OTHER_UID}`),
    );
  });

  it("a link at the lock file's name: refused, the target untouched, a dangling one creates nothing", () => {
    const dir = freshDir();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const victim = join(root, "victim");
    writeFileSync(victim, "precious\n", { mode: 0o600 });
    const link = join(dir, lockFileName(3, 0x52));
    symlinkSync(victim, link);
    lchownSync(link, OTHER_UID, OTHER_UID);
    isRefused(() => DeviceLock.acquire(dir, 3, 0x52, false), /ELOOP/);
    assert.equal(readFileSync(victim, "utf8"), "precious\n");
    assert.equal(statSync(victim).mode & 0o777, 0o600);
    const missing = join(root, "never-created");
    rmSync(link);
    symlinkSync(missing, link);
    isRefused(() => DeviceLock.acquire(dir, 3, 0x52, false), /ELOOP/);
    assert.equal(existsSync(missing), false);
    assert.ok(lstatSync(link).isSymbolicLink());
  });

  it("a lock file with a second hard link, or owned by another user", () => {
    const dir = freshDir();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, lockFileName(3, 0x52));
    const elsewhere = join(root, "hard-linked");
    writeFileSync(elsewhere, "keep\n", { mode: 0o600 });
    linkSync(elsewhere, file);
    isRefused(() => DeviceLock.acquire(dir, 3, 0x52, false), /2 hard links/);
    assert.equal(readFileSync(elsewhere, "utf8"), "keep\n");
    rmSync(file);
    writeFileSync(file, "", { mode: 0o600 });
    chownSync(file, OTHER_UID, OTHER_UID);
    isRefused(
      () => DeviceLock.acquire(dir, 3, 0x52, false),
      new RegExp(`owned by uid ${OTHER_UID}`),
    );
  });
});

describe("lock directory and holders", () => {
  it("option, then environment, then the user's runtime directory (not root), then the system one", () => {
    assert.equal(lockDirectory({}, "/x"), "/x");
    assert.equal(lockDirectory({ [LOCK_DIR_ENV]: "/env" }, "/x"), "/x");
    assert.equal(lockDirectory({ [LOCK_DIR_ENV]: "/env" }), "/env");
    const session = { XDG_RUNTIME_DIR: "/run/user/1000" };
    assert.equal(lockDirectory(session, undefined, 1000), "/run/user/1000/vhost-device-i2c/locks");
    assert.equal(lockDirectory(session, undefined, 0), SYSTEM_LOCK_DIR);
    assert.equal(lockDirectory({ XDG_RUNTIME_DIR: "relative" }, undefined, 1000), SYSTEM_LOCK_DIR);
    assert.equal(lockDirectory({}, undefined, 61000), SYSTEM_LOCK_DIR);
    assert.equal(SYSTEM_LOCK_DIR, "/run/vhost-device-i2c/locks");
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
