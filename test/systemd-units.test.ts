// The shipped systemd units (contrib/systemd): the paths they give the daemon agree with its defaults
// (one lock directory shared by every instance, passing the daemon's own checks; the VMM's socket
// outside the directories systemd hands to the service's user), and, where systemd-analyze is
// installed, they verify cleanly and their exposure stays low. PID 1 is not necessarily systemd
// where the tests run, so the units are checked offline and never started.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { lockDirectory, SYSTEM_LOCK_DIR } from "../src/i2c/device-lock.js";
import { makeTempDir } from "./helpers/daemon.js";

const UNITS = fileURLToPath(new URL("../../contrib/systemd/", import.meta.url));
const SERVICE = join(UNITS, "vhost-device-i2c@.service");
const SOCKET = join(UNITS, "vhost-device-i2c@.socket");
const SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze";
/** `systemd-analyze security` exposure the service must stay below (0 = locked down, 10 = none). */
const MAX_EXPOSURE = 1.5;

/** Every `Key=value` of a unit file, by section; repeated keys keep every value in order. */
function readUnit(path: string): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  let section = "";
  for (const raw of readFileSync(path, "utf8").split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("[")) {
      section = line.slice(1, -1);
      continue;
    }
    const eq = line.indexOf("=");
    const key = `${section}.${line.slice(0, eq)}`;
    keys.set(key, [...(keys.get(key) ?? []), line.slice(eq + 1)]);
  }
  return keys;
}

function one(unit: Map<string, string[]>, key: string): string {
  const values = unit.get(key);
  assert.equal(values?.length, 1, `${key}: ${JSON.stringify(values)}`);
  return values?.[0] as string;
}

describe("contrib/systemd units", () => {
  const service = readUnit(SERVICE);
  const socket = readUnit(SOCKET);
  const instance = (text: string) => text.replaceAll("%i", "vm1");
  const runtimeDirs = one(service, "Service.RuntimeDirectory")
    .split(/\s+/)
    .map((dir) => `/run/${instance(dir)}`);

  it("every instance locks in the daemon's default lock directory, which the unit provides and the daemon accepts", () => {
    const execStart = one(service, "Service.ExecStart");
    assert.doesNotMatch(execStart, /--lock-dir|VHOST_DEVICE_I2C_LOCK_DIR/, "the default is used");
    assert.equal(service.get("Service.Environment"), undefined);
    // The service's user is not root and has no login session: the daemon picks the system directory.
    assert.equal(lockDirectory({}, undefined, 61_184), SYSTEM_LOCK_DIR);
    assert.ok(runtimeDirs.includes(SYSTEM_LOCK_DIR), `${runtimeDirs} holds ${SYSTEM_LOCK_DIR}`);
    assert.doesNotMatch(SYSTEM_LOCK_DIR, /%i|vm1/, "one directory for every instance");
    // One user for every instance (the lock directory is owned by it), kept between instances.
    assert.equal(one(service, "Service.DynamicUser"), "yes");
    assert.match(one(service, "Service.User"), /^[a-z][a-z0-9-]*$/, "no per-instance user");
    assert.equal(one(service, "Service.RuntimeDirectoryPreserve"), "yes");
    // The mode passes the daemon's lock-directory check (owner only; group may read, not write).
    const mode = Number.parseInt(one(service, "Service.RuntimeDirectoryMode"), 8);
    assert.equal(mode & 0o027, 0, `RuntimeDirectoryMode ${mode.toString(8)}`);
    assert.equal(one(service, "Service.UMask"), "0077");
  });

  it("each instance writes only in its own directory and the lock directory; the VMM's socket is outside both", () => {
    assert.deepEqual(runtimeDirs, ["/run/vhost-device-i2c/vm1", SYSTEM_LOCK_DIR]);
    const listen = instance(one(socket, "Socket.ListenStream"));
    assert.equal(listen, "/run/vhost-device-i2c/vm1.sock");
    for (const dir of runtimeDirs) {
      assert.ok(!listen.startsWith(`${dir}/`), `${listen} is not inside ${dir}`);
    }
    assert.equal(one(service, "Service.ProtectSystem"), "strict");
    assert.equal(service.get("Service.ReadWritePaths"), undefined);
    // Only the VMMs' group reaches the socket, and the daemons are not in it.
    assert.equal(one(socket, "Socket.SocketMode"), "0660");
    const socketGroup = one(socket, "Socket.SocketGroup");
    const groups = (service.get("Service.SupplementaryGroups") ?? []).join(" ").split(/\s+/);
    assert.ok(!groups.includes(socketGroup), `the daemons are not in ${socketGroup}`);
    assert.equal(one(service, "Service.DeviceAllow"), "char-i2c rw");
    assert.equal(one(service, "Service.DevicePolicy"), "closed");
  });

  const analyze = existsSync(SYSTEMD_ANALYZE) ? false : `${SYSTEMD_ANALYZE} is not installed`;
  const dir = makeTempDir("vdi2c-units-");
  after(() => dir.remove());

  it("systemd-analyze verify finds nothing to say about the units", { skip: analyze }, () => {
    // Instantiated copies; ExecStart points at a program that exists here (verify checks it).
    for (const [from, to] of [
      [SOCKET, "vhost-device-i2c@vm1.socket"],
      [SERVICE, "vhost-device-i2c@vm1.service"],
    ] as const) {
      writeFileSync(
        join(dir.path, to),
        readFileSync(from, "utf8").replaceAll("/usr/bin/vhost-device-i2c", "/bin/true"),
      );
    }
    const result = spawnSync(
      SYSTEMD_ANALYZE,
      ["verify", "--man=no", "vhost-device-i2c@vm1.socket", "vhost-device-i2c@vm1.service"],
      { cwd: dir.path, encoding: "utf8" },
    );
    assert.equal(result.status, 0, result.stderr);
    assert.equal(`${result.stdout}${result.stderr}`, "");
  });

  it(`systemd-analyze security --offline=yes: exposure below ${MAX_EXPOSURE}`, {
    skip: analyze,
  }, () => {
    copyFileSync(SERVICE, join(dir.path, "vhost-device-i2c@.service"));
    const result = spawnSync(
      SYSTEMD_ANALYZE,
      ["security", "--offline=yes", "--no-pager", "./vhost-device-i2c@.service"],
      { cwd: dir.path, encoding: "utf8" },
    );
    const level = /Overall exposure level for [^:]+: ([0-9.]+)/.exec(result.stdout);
    assert.ok(level, `${result.stdout}${result.stderr}`);
    assert.ok(Number(level[1]) < MAX_EXPOSURE, result.stdout);
  });
});
