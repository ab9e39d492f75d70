// Integration: the race against a socket file's mode and group. Another user (uid 1234) who can
// write in the socket's directory runs an inotify racer (test/socket-race/racer.c): as soon as the
// socket appears it is moved away and a link to a root-only file takes its place, so a daemon that
// set the mode or group by name afterwards would change that file. The daemon refuses such a
// directory before creating anything, and nothing it does reaches the file, run after run.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { REPO_ROOT } from "./fake-i2c/fake.js";
import { DaemonProcess, makeTempDir, waitUntil } from "./helpers/daemon.js";
import {
  runAsAttacker,
  spawnAsAttacker,
  unprivilegedUnavailableReason,
} from "./helpers/unprivileged.js";

const RACER_SOURCE = join(REPO_ROOT, "test", "socket-race", "racer.c");
const RUNS = 5;

function ccUnavailableReason(): string | null {
  return spawnSync("cc", ["--version"]).status === 0
    ? null
    : "no C compiler (cc) to build the racer";
}

const skip = unprivilegedUnavailableReason() ?? ccUnavailableReason() ?? false;

describe("socket file race (another user swaps the socket for a link)", { skip }, () => {
  const dir = makeTempDir();
  after(() => dir.remove());

  it("never changes the mode of the file a planted link points to", async () => {
    chmodSync(dir.path, 0o755);
    const racer = `${dir.path}/racer`;
    const built = spawnSync("cc", ["-O2", "-o", racer, RACER_SOURCE], { encoding: "utf8" });
    assert.equal(built.status, 0, built.stderr);
    // The victims: a root-only file the vhost-user socket's --socket-mode would open to all, and one
    // the control socket's 0600 would close.
    const secret = `${dir.path}/secret`;
    const shared = `${dir.path}/shared`;
    writeFileSync(secret, "root only");
    chmodSync(secret, 0o600);
    writeFileSync(shared, "readable by all");
    chmodSync(shared, 0o644);

    // Like /tmp: anyone may make a directory here (e.g. before the admin's `mkdir -p`).
    const pub = `${dir.path}/pub`;
    mkdirSync(pub);
    chmodSync(pub, 0o1777);

    for (let run = 0; run < RUNS; run++) {
      const playground = `${pub}/vmdir${run}`;
      runAsAttacker(`mkdir -m 0777 ${playground}`);
      for (const [name, victim, args] of [
        ["v.sock0", secret, ["-s", `${playground}/v.sock`, "--socket-mode", "0666"]],
        [
          "c.ctl",
          shared,
          ["-s", `${dir.path}/fine${run}.sock`, "--control-socket", `${playground}/c.ctl`],
        ],
      ] as const) {
        const racing = spawnAsAttacker([racer, playground, name, victim, "5"]);
        await waitUntil(() => racing.stdout().includes("watching"), "the racer's watch");
        const daemon = new DaemonProcess([...args, "-l", "sim:0x50=24c02"]);
        const status = await Promise.race([
          daemon.exited,
          daemon.waitForLog("serving devices=").then(() => daemon.stop()),
        ]);
        racing.child.kill();
        await racing.done;
        assert.equal(statSync(secret).mode & 0o7777, 0o600, `run ${run}: ${daemon.stderr}`);
        assert.equal(statSync(shared).mode & 0o7777, 0o644, `run ${run}: ${daemon.stderr}`);
        assert.equal(status.code, 2, `run ${run}: the directory is refused\n${daemon.stderr}`);
        assert.equal(existsSync(`${playground}/${name}`), false);
      }
    }
  });
});
