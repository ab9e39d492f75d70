// Integration: --socket-mode and --socket-group set on every socket the daemon creates (the vhost-user
// sockets and the control socket) before any peer can connect, so only the VMM's user can reach them.
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { after, describe, it } from "node:test";
import { DaemonProcess, makeTempDir, waitUntil, withDaemon } from "./helpers/daemon.js";

describe("socket permissions", () => {
  const dir = makeTempDir();
  after(() => dir.remove());

  it("applies --socket-mode and --socket-group to the vhost-user and control sockets", async () => {
    const prefix = `${dir.path}/perm.sock`;
    const control = `${dir.path}/control.sock`;
    const gid = process.getgid?.() ?? 0;
    await withDaemon(
      [
        "-s",
        prefix,
        "-c",
        "2",
        "-l",
        "sim:0x50=24c02",
        "--socket-mode",
        "0640",
        "--socket-group",
        String(gid),
        "--control-socket",
        control,
      ],
      [`${prefix}0`, `${prefix}1`],
      async (daemon) => {
        await waitUntil(() => daemon.stderr.includes("control socket listening"), "control socket");
        for (const path of [`${prefix}0`, `${prefix}1`, control]) {
          const stat = statSync(path);
          assert.equal(stat.mode & 0o777, 0o640, `${path} mode`);
          assert.equal(stat.gid, gid, `${path} group`);
        }
      },
    );
  });

  it("refuses a group that does not exist (exit 2, names it)", async () => {
    const daemon = new DaemonProcess([
      "-s",
      `${dir.path}/nogroup.sock`,
      "-l",
      "sim:0x50=24c02",
      "--socket-group",
      "no-such-group-vdi2c",
    ]);
    const status = await daemon.exited;
    assert.equal(status.code, 2, daemon.stderr);
    assert.match(daemon.stderr, /no-such-group-vdi2c/);
  });
});
