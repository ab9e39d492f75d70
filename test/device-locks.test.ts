// Integration: host-device locks against another local user (uid 1234), through the real daemon with
// the LD_PRELOAD fake adapter. The lock directory must be the daemon's own (writable and searchable
// by nobody else), lock files are never followed through links nor opened by others, and a lock file
// replaced while the daemon locks it is locked again at its name.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  lchownSync,
  mkdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { lockFileName, lockHolders } from "../src/i2c/device-lock.js";
import { FAKE_LIBRARY, FakeI2c, fakeUnavailableReason, REPO_ROOT } from "./fake-i2c/fake.js";
import { DaemonProcess, makeTempDir, withDaemon } from "./helpers/daemon.js";
import {
  ATTACKER_GID,
  ATTACKER_UID,
  asAttacker,
  runAsAttacker,
  unprivilegedUnavailableReason,
} from "./helpers/unprivileged.js";

const LOCK_SWAP_LIBRARY = join(REPO_ROOT, "test", "fake-i2c", "liblockswap.so");
const LOCK_NAME = lockFileName(3, 0x50);
const VICTIM_TEXT = "precious root data\n";
const skip = fakeUnavailableReason() ?? unprivilegedUnavailableReason() ?? false;

describe("host-device locks against another local user (LD_PRELOAD fake)", { skip }, () => {
  const dir = makeTempDir();
  let fake: FakeI2c;
  let n = 0;
  /** Root-only files standing in for /etc/shadow and /etc/nologin. */
  const rootOnly = `${dir.path}/rootonly`;
  const victim = `${rootOnly}/victim`;

  before(async () => {
    chmodSync(dir.path, 0o755); // the attacker must reach the directories made for it below
    mkdirSync(rootOnly, { mode: 0o700 });
    writeFileSync(victim, VICTIM_TEXT, { mode: 0o600 });
    fake = await FakeI2c.create(["adapter 3 funcs=i2c|emul", "device 3 0x50"].join("\n"));
  });
  after(async () => {
    await fake?.cleanup();
    dir.remove();
  });

  const victimUnchanged = () => {
    assert.equal(readFileSync(victim, "utf8"), VICTIM_TEXT);
    const stat = statSync(victim);
    assert.deepEqual([stat.mode & 0o777, stat.uid, stat.nlink], [0o600, 0, 1]);
  };

  /** The stderr of a daemon that must refuse to start (exit 2); stopped if it starts after all. */
  async function refusal(daemon: DaemonProcess): Promise<string> {
    try {
      assert.deepEqual(await daemon.waitForExit(), { code: 2, signal: null }, daemon.stderr);
    } finally {
      if (!daemon.hasExited) await daemon.stop();
    }
    return daemon.stderr;
  }

  /** Starts a daemon serving host device 0x50 on the fake /dev/i2c-3; expects it to refuse (exit 2). */
  async function refusedStart(
    lockArgs: readonly string[],
    env: Record<string, string> = {},
  ): Promise<string> {
    const daemon = new DaemonProcess(
      ["-s", `${dir.path}/refused${n++}.sock`, "-l", "3:0x50", ...lockArgs],
      { env: { ...fake.env({}), ...env } },
    );
    return refusal(daemon);
  }

  it("refuses a lock directory another user owns or can write (0777, or sticky 1777 like /run/lock), also from the environment; a planted link's target is untouched (exit 2)", async () => {
    const pub = `${dir.path}/pub`;
    mkdirSync(pub);
    chmodSync(pub, 0o1777);
    // The user prepares the lock directory before the daemon first starts, with a link in it.
    runAsAttacker(`mkdir -m 0777 ${pub}/lk && ln -s ${victim} ${pub}/lk/${LOCK_NAME}`);
    const owned = await refusedStart(["--lock-dir", `${pub}/lk`]);
    assert.match(
      owned,
      new RegExp(
        `cannot lock host device 0x50 on /dev/i2c-3: lock directory ${pub}/lk: owned by uid ${ATTACKER_UID}`,
      ),
    );
    victimUnchanged();

    // A world-writable sticky directory (root's, like /run/lock) with the user's link in it.
    runAsAttacker(`ln -s ${victim} ${pub}/${LOCK_NAME}`);
    const sticky = await refusedStart([], { VHOST_DEVICE_I2C_LOCK_DIR: pub });
    assert.match(
      sticky,
      new RegExp(
        `lock directory ${pub}: mode 1777: a lock directory must be writable by its owner only`,
      ),
    );
    victimUnchanged();

    // Root's directory left 0777: the user plants a dangling link to a file root would create.
    const open = `${dir.path}/open`;
    mkdirSync(open);
    chmodSync(open, 0o777);
    const nologin = `${rootOnly}/nologin`;
    runAsAttacker(`ln -s ${nologin} ${open}/${LOCK_NAME}`);
    const wide = await refusedStart(["--lock-dir", open]);
    assert.match(wide, new RegExp(`lock directory ${open}: mode 0777`));
    assert.equal(existsSync(nologin), false, "nothing created through the dangling link");
  });

  it("never follows a link at a lock file's name, even in its own directory: nothing written, nothing created (exit 2)", async () => {
    const own = `${dir.path}/own`;
    mkdirSync(own, { mode: 0o700 });
    const link = `${own}/${LOCK_NAME}`;
    symlinkSync(victim, link);
    lchownSync(link, ATTACKER_UID, ATTACKER_GID);
    const stderr = await refusedStart(["--lock-dir", own]);
    assert.match(
      stderr,
      new RegExp(`cannot lock host device 0x50 on /dev/i2c-3: lock file ${link}: .*ELOOP`),
    );
    victimUnchanged();

    const dangling = `${dir.path}/own2`;
    mkdirSync(dangling, { mode: 0o700 });
    const target = `${rootOnly}/created-through-link`;
    symlinkSync(target, `${dangling}/${LOCK_NAME}`);
    await refusedStart(["--lock-dir", dangling]);
    assert.equal(existsSync(target), false, "nothing created through the dangling link");
  });

  it("another user cannot open a lock file (EACCES), so cannot hold it and keep the daemon from starting", async () => {
    // The user may even search the directory (group 1234, 0750): the lock files themselves are 0600.
    const locks = `${dir.path}/grouplocks`;
    mkdirSync(locks, { mode: 0o750 });
    chownSync(locks, 0, ATTACKER_GID);
    const file = `${locks}/${LOCK_NAME}`;
    const start = () =>
      withDaemon(
        ["-s", `${dir.path}/held${n++}.sock`, "-l", "3:0x50", "--lock-dir", locks],
        [`${dir.path}/held${n - 1}.sock0`],
        async () => {
          const stat = statSync(file);
          assert.deepEqual([stat.mode & 0o777, stat.uid], [0o600, 0], "lock file 0600, root's");
        },
        { env: fake.env({}) },
      );
    await start();
    const [command, ...args] = asAttacker([ATTACKER_GID]);
    const attempt = spawnSync(command as string, [...args, "flock", "-s", "-n", file, "true"], {
      encoding: "utf8",
    });
    assert.notEqual(attempt.status, 0, "the user could take the lock");
    assert.match(attempt.stderr, /Permission denied/);
    await start(); // nothing held it: the daemon starts again
  });

  it("a lock file replaced between open and flock: the daemon locks the file now at the name, and a second daemon is refused", async () => {
    const locks = `${dir.path}/swapped`;
    const swapLog = `${dir.path}/swap.log`;
    const sock = `${dir.path}/swap.sock`;
    await withDaemon(
      ["-s", sock, "-l", "3:0x50", "--lock-dir", locks],
      [`${sock}0`],
      async (holder) => {
        const swap = /^swapped (\S+) old=(\d+) new=(\d+)$/m.exec(readFileSync(swapLog, "utf8"));
        assert.ok(swap, "the preload replaced the lock file");
        assert.equal(swap[1], `${locks}/${LOCK_NAME}`);
        const atName = statSync(`${locks}/${LOCK_NAME}`).ino;
        assert.equal(atName, Number(swap[3]));
        assert.deepEqual(
          lockHolders(atName),
          [holder.pid],
          "the daemon holds the inode at the name",
        );
        assert.deepEqual(lockHolders(Number(swap[2])), [], "and not the replaced one");
        const second = new DaemonProcess(
          ["-s", `${dir.path}/swap2.sock`, "-l", "3:0x50", "--lock-dir", locks],
          {
            env: fake.env({}),
          },
        );
        assert.match(await refusal(second), new RegExp(`in use by process ${holder.pid}`));
      },
      {
        env: {
          ...fake.env({}),
          LD_PRELOAD: `${FAKE_LIBRARY}:${LOCK_SWAP_LIBRARY}`,
          LOCK_SWAP_LOG: swapLog,
        },
      },
    );
  });
});
