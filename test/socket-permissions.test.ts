// Integration: who can reach the daemon's sockets. --socket-mode and --socket-group set the vhost-user
// sockets' permissions from the moment they appear, whatever the umask, and never open the control
// socket (it has --control-socket-mode/--control-socket-group); each front-end is checked against a
// peer policy (SO_PEERCRED) and named in the log; a socket directory others can change is refused.
// The other local user is a real process of uid/gid 1234 (test/helpers/unprivileged.ts).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import {
  DaemonProcess,
  MAIN_JS,
  makeTempDir,
  waitUntil,
  withDaemon,
  withDaemonLog,
} from "./helpers/daemon.js";
import {
  ATTACKER_GID,
  ATTACKER_UID,
  asAttacker,
  attackerNode,
  attackerPath,
  jsonLines,
  spawnNodeAsAttacker,
  unprivilegedUnavailableReason,
} from "./helpers/unprivileged.js";

const PEER_GUEST = fileURLToPath(new URL("./helpers/peer-guest.js", import.meta.url));
const skip = unprivilegedUnavailableReason() ?? false;

/** The guest script run as uid 1234 against `socket`: what it could do. */
async function attackerGuest(socket: string, connections = 1): Promise<Record<string, unknown>> {
  const { done } = spawnNodeAsAttacker([PEER_GUEST, socket, String(connections)]);
  const result = await done;
  const [line] = jsonLines(result.stdout);
  if (line === undefined) throw new Error(`peer guest printed nothing: ${result.stderr}`);
  return line;
}

/** `vhost-device-i2c control <socket> <words>` run as uid 1234. */
function attackerControl(socket: string, ...words: string[]) {
  const [command, ...prefix] = asAttacker();
  return spawnSync(
    command as string,
    [...prefix, attackerNode(), attackerPath(MAIN_JS), "control", socket, ...words],
    { encoding: "utf8" },
  );
}

/** The first bytes of the 24c02 at 0x50, read by root through the control socket. */
function eepromStart(control: string): string {
  const result = spawnSync(
    process.execPath,
    [MAIN_JS, "control", control, "read", "0x50", "0", "5"],
    {
      encoding: "utf8",
    },
  );
  assert.equal(result.status, 0, result.stderr);
  return result.stdout.trim();
}

describe("socket permissions", { skip }, () => {
  const dir = makeTempDir();
  // The other user must reach the sockets inside (their own modes decide the rest).
  chmodSync(dir.path, 0o755);
  after(() => dir.remove());

  it("applies --socket-mode/--socket-group to the vhost-user sockets only: the control socket stays 0600 and the group cannot use it", async () => {
    const prefix = `${dir.path}/perm.sock`;
    const control = `${dir.path}/control.sock`;
    await withDaemon(
      [
        "-s",
        prefix,
        "-c",
        "2",
        "-l",
        "sim:0x50=24c02",
        "--socket-mode",
        "0660",
        "--socket-group",
        String(ATTACKER_GID),
        "--control-socket",
        control,
      ],
      [`${prefix}0`, `${prefix}1`, control],
      async () => {
        for (const path of [`${prefix}0`, `${prefix}1`]) {
          const stat = statSync(path);
          assert.equal(stat.mode & 0o777, 0o660, `${path} mode`);
          assert.equal(stat.gid, ATTACKER_GID, `${path} group`);
        }
        const stat = statSync(control);
        assert.equal(stat.mode & 0o777, 0o600, "the control socket keeps its own mode");
        assert.equal(stat.gid, process.getegid?.(), "and the daemon's group");

        const before = eepromStart(control);
        const write = attackerControl(control, "write", "0x50", "0", "6f776e6564");
        assert.notEqual(
          write.status,
          0,
          "a member of --socket-group cannot use the control socket",
        );
        assert.equal(eepromStart(control), before, "the EEPROM was not rewritten");
        // The group the vhost-user sockets were given may use them (mode and peer policy agree).
        assert.deepEqual(await attackerGuest(`${prefix}0`), { handshake: true, transferOk: true });
      },
    );
  });

  it("--control-socket-mode/--control-socket-group open the control socket to a group, and only it", async () => {
    const prefix = `${dir.path}/ctlgroup.sock`;
    const control = `${dir.path}/ctlgroup.ctl`;
    await withDaemon(
      [
        "-s",
        prefix,
        "-l",
        "sim:0x50=24c02",
        "--control-socket",
        control,
        "--control-socket-group",
        String(ATTACKER_GID),
      ],
      [`${prefix}0`, control],
      async () => {
        const stat = statSync(control);
        assert.equal(stat.mode & 0o777, 0o660, "a group without a mode gives 0660");
        assert.equal(stat.gid, ATTACKER_GID);
        assert.equal(statSync(`${prefix}0`).mode & 0o777, 0o600, "vhost-user socket untouched");
        const list = attackerControl(control, "list");
        assert.equal(list.status, 0, list.stderr);
      },
    );
  });

  it("creates every socket 0600 under umask 000, so another user cannot connect", async () => {
    const prefix = `${dir.path}/umask.sock`;
    const control = `${dir.path}/umask.ctl`;
    const previous = process.umask(0);
    let daemon: DaemonProcess;
    try {
      daemon = new DaemonProcess([
        "-s",
        prefix,
        "-l",
        "sim:0x50=24c02",
        "--control-socket",
        control,
      ]);
    } finally {
      process.umask(previous);
    }
    try {
      await daemon.waitForListening([`${prefix}0`, control]);
      assert.equal(statSync(`${prefix}0`).mode & 0o777, 0o600);
      assert.equal(statSync(control).mode & 0o777, 0o600);
      const attempt = await attackerGuest(`${prefix}0`);
      assert.equal(attempt.handshake, false);
      assert.match(String(attempt.error), /EACCES/);
      assert.equal(daemon.stderr.includes("front-end connected"), false);
    } catch (err) {
      throw withDaemonLog(err, daemon);
    } finally {
      await daemon.stop();
    }
  });

  it("refuses a front-end the peer policy does not admit even when the mode lets it connect, logs who it was, and stays rate-limited under a flood", async () => {
    const prefix = `${dir.path}/policy.sock`;
    await withDaemon(
      ["-s", prefix, "-l", "sim:0x50=24c02", "--socket-mode", "0666"],
      [`${prefix}0`],
      async (daemon) => {
        const attempt = await attackerGuest(`${prefix}0`, 200);
        assert.equal(attempt.handshake, false, "uid 1234 got no vhost-user reply");
        // A bare close: a peer the policy refuses is told nothing (not even that it was refused).
        assert.match(String(attempt.error), /the connection to the back-end is closed/);
        const refusals = daemon.stderr.match(
          /refusing a front-end the peer policy does not admit/g,
        );
        assert.ok(refusals !== null && refusals.length >= 1);
        assert.ok(refusals.length <= 25, `${refusals.length} refusal lines for 200 connections`);
        assert.match(
          daemon.stderr,
          new RegExp(`policy does not admit .*uid=${ATTACKER_UID} gid=${ATTACKER_GID}`),
        );
        assert.equal(daemon.stderr.includes("front-end connected"), false);

        // The real VMM (root) is served, and named.
        const vm = await I2cGuest.connect(`${prefix}0`);
        try {
          assert.equal((await vm.driver.transfer([{ addr: 0x50, read: 1 }])).ok, true);
          // Nor, while the VMM is connected, that the socket is busy or who holds it: the line a
          // second admitted front-end gets is for admitted peers only.
          const busy = await attackerGuest(`${prefix}0`);
          assert.equal(busy.handshake, false);
          assert.match(String(busy.error), /the connection to the back-end is closed/);
        } finally {
          await vm.close();
        }
        assert.match(daemon.stderr, /front-end connected pid=\d+ uid=0 gid=0/);
      },
    );
  });

  it("--allow-peer-uid and --allow-peer-gid admit more front-ends", async () => {
    for (const option of [
      ["--allow-peer-uid", String(ATTACKER_UID)],
      ["--allow-peer-gid", String(ATTACKER_GID)],
    ]) {
      const prefix = `${dir.path}/allow${option[0]?.slice(-3)}.sock`;
      await withDaemon(
        ["-s", prefix, "-l", "sim:0x50=24c02", "--socket-mode", "0666", ...option],
        [`${prefix}0`],
        async (daemon) => {
          assert.deepEqual(await attackerGuest(`${prefix}0`), {
            handshake: true,
            transferOk: true,
          });
          await waitUntil(
            () =>
              new RegExp(`front-end connected pid=\\d+ uid=${ATTACKER_UID}`).test(daemon.stderr),
            "the admitted peer named in the log",
          );
        },
      );
    }
  });

  it("refuses a socket directory another user can change (exit 2, names the directory and why)", async () => {
    const open = `${dir.path}/world-writable`;
    mkdirSync(open);
    chmodSync(open, 0o777);
    const owned = `${dir.path}/other-users`;
    mkdirSync(owned, { mode: 0o755 });
    chownSync(owned, ATTACKER_UID, ATTACKER_GID);
    for (const [where, why] of [
      [`${open}/v.sock`, /mode 0777/],
      [`${owned}/v.sock`, /owned by uid 1234/],
    ] as const) {
      for (const args of [
        ["-s", where, "-l", "sim:0x50=24c02"],
        ["-s", `${dir.path}/fine.sock`, "-l", "sim:0x50=24c02", "--control-socket", `${where}0`],
      ]) {
        const daemon = new DaemonProcess(args);
        try {
          const status = await daemon.waitForExit();
          assert.equal(status.code, 2, daemon.stderr);
          assert.ok(daemon.stderr.includes(where.slice(0, where.lastIndexOf("/"))), daemon.stderr);
          assert.match(daemon.stderr, why);
        } finally {
          await daemon.stop();
        }
      }
      assert.deepEqual(readdirSync(where.slice(0, where.lastIndexOf("/"))), []);
    }
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
