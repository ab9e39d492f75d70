// Integration: --user/--group through the real daemon started as root, with the LD_PRELOAD fake
// adapter: once its adapter, lock and socket are open it runs as uid 1234 for good (no capabilities,
// not traceable by that user's other processes) and still serves the guest.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { FakeI2c, fakeUnavailableReason } from "./fake-i2c/fake.js";
import { DaemonProcess, MAIN_JS, makeTempDir, withDaemon } from "./helpers/daemon.js";
import {
  ATTACKER_GID,
  ATTACKER_UID,
  asAttacker,
  attackerNode,
  attackerPath,
  unprivilegedUnavailableReason,
} from "./helpers/unprivileged.js";

const skip = fakeUnavailableReason() ?? unprivilegedUnavailableReason() ?? false;

/** The "Name:\tvalues" lines of /proc/<pid>/status. */
function processStatus(pid: number): Map<string, string> {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  return new Map(
    text
      .split("\n")
      .filter((line) => line.includes(":"))
      .map((line) => {
        const cut = line.indexOf(":");
        return [line.slice(0, cut), line.slice(cut + 1).trim()] as const;
      }),
  );
}

describe("--user/--group: the daemon gives up root after opening (LD_PRELOAD fake)", {
  skip,
}, () => {
  const dir = makeTempDir();
  let fake: FakeI2c;
  before(async () => {
    fake = await FakeI2c.create(["adapter 3 funcs=i2c|emul", "device 3 0x50"].join("\n"));
  });
  after(async () => {
    await fake?.cleanup();
    dir.remove();
  });

  it("runs as uid/gid 1234 with no capabilities and still serves the host device to the guest", async () => {
    const prefix = `${dir.path}/drop.sock`;
    const user = String(ATTACKER_UID);
    await withDaemon(
      ["-s", prefix, "-l", "3:0x50", "--user", user, "--group", String(ATTACKER_GID)],
      [`${prefix}0`],
      async (daemon) => {
        await daemon.waitForLog(`gave up root uid=${ATTACKER_UID} gid=${ATTACKER_GID}`);
        const ps = execFileSync("ps", ["-o", "uid=,gid=", "-p", String(daemon.pid)], {
          encoding: "utf8",
        });
        assert.deepEqual(ps.trim().split(/\s+/), [user, String(ATTACKER_GID)]);
        const status = processStatus(daemon.pid);
        assert.equal(
          status.get("Uid"),
          `${user}\t${user}\t${user}\t${user}`,
          "real, effective, saved, fs",
        );
        const gid = String(ATTACKER_GID);
        assert.equal(status.get("Gid"), `${gid}\t${gid}\t${gid}\t${gid}`);
        assert.equal(status.get("Groups"), gid);
        assert.equal(status.get("CapEff"), "0000000000000000");
        assert.equal(status.get("CapPrm"), "0000000000000000");

        const vm = await I2cGuest.connect(`${prefix}0`);
        try {
          const result = await vm.driver.transfer([
            { addr: 0x50, write: Uint8Array.of(0x10) },
            { addr: 0x50, read: 2 },
          ]);
          assert.equal(result.ok, true, "the adapter opened as root still serves the guest");
          assert.deepEqual([...(result.reads[0] ?? [])], [0x10, 0x11]);
        } finally {
          await vm.close();
        }

        // The fds it opened as root stay out of reach of that user's other processes.
        const [command, ...args] = asAttacker();
        const peek = spawnSync(command as string, [...args, "ls", `/proc/${daemon.pid}/fd`], {
          encoding: "utf8",
        });
        assert.notEqual(peek.status, 0, `uid ${user} listed the daemon's fds: ${peek.stdout}`);
        assert.match(peek.stderr, /Permission denied/);
      },
      { env: fake.env({}) },
    );
  });

  it("refuses --user when not started as root, and an unknown user name, before opening anything (exit 2)", async () => {
    chmodSync(dir.path, 0o755);
    const [command, ...args] = asAttacker();
    const notRoot = spawnSync(
      command as string,
      [
        ...args,
        attackerNode(),
        attackerPath(MAIN_JS),
        "-s",
        `${dir.path}/x.sock`,
        "-l",
        "sim:0x50=24c02",
        "--user",
        "1234",
        "--group",
        "1234",
      ],
      { encoding: "utf8" },
    );
    assert.equal(notRoot.status, 2, notRoot.stderr);
    assert.match(
      notRoot.stderr,
      /--user needs the daemon to start as root \(it runs as uid 1234\)/,
    );

    const unknown = new DaemonProcess([
      "-s",
      `${dir.path}/y.sock`,
      "-l",
      "sim:0x50=24c02",
      "--user",
      "no-such-user-vdi2c",
    ]);
    assert.deepEqual(await unknown.waitForExit(), { code: 2, signal: null });
    assert.match(unknown.stderr, /--user: no user named "no-such-user-vdi2c" in \/etc\/passwd/);
    assert.doesNotMatch(unknown.stderr, /listening/);
  });
});
