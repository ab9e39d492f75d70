// The shipped systemd units (contrib/systemd): the paths they give the daemon agree with its defaults
// (one lock directory shared by every instance, passing the daemon's own checks; the VMM's socket
// outside the directories systemd hands to the service's user), what a restart the VM does not notice
// needs (the fd store, sized for the fds a connection keeps; Restart=always but not after a
// configuration error; the handover signal and its systemctl command), and, where systemd-analyze is
// installed, they verify cleanly and their exposure stays low. PID 1 is not necessarily systemd
// where the tests run, so the units are checked offline and never started.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parseCommandLine } from "../src/cli/args.js";
import { HANDOVER_SIGNAL } from "../src/cli/daemon.js";
import { lockDirectory, SYSTEM_LOCK_DIR } from "../src/i2c/device-lock.js";
import { MAX_MEM_SLOTS } from "../src/vhost-user/protocol.js";
import { MAIN_JS, makeTempDir } from "./helpers/daemon.js";

const UNITS = fileURLToPath(new URL("../../contrib/systemd/", import.meta.url));
const SERVICE = join(UNITS, "vhost-device-i2c@.service");
const SOCKET = join(UNITS, "vhost-device-i2c@.socket");
const README = join(UNITS, "README.md");
const REPO = fileURLToPath(new URL("../../", import.meta.url));
const SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze";
const SYSTEMCTL = "/usr/bin/systemctl";
/**
 * The most fds one VMM connection keeps in the fd store: its socket, its state and ring-position
 * memfds, a memfd per guest memory region (MAX_MEM_SLOTS with CONFIGURE_MEM_SLOTS), and the one
 * queue's kick, call and error eventfds.
 */
const STORED_FDS_PER_CONNECTION = 1 + 2 + MAX_MEM_SLOTS + 3;
/** Connections the fd store must hold at the worst: well beyond one VM's sockets. */
const STORED_CONNECTIONS = 100;
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

/** The first ```sh block after the line starting with `heading`. */
function fencedBlockAfter(path: string, heading: string): string {
  const text = readFileSync(path, "utf8");
  const from = text.indexOf(`\n${heading}`);
  assert.ok(from >= 0, `${path} has ${heading}`);
  const match = /\n```sh\n([\s\S]*?)\n```/.exec(text.slice(from));
  assert.ok(match?.[1], `${path}: a sh block after ${heading}`);
  return match[1];
}

/** The first indented (4 spaces) code block after the line starting with `lead`. */
function indentedBlockAfter(path: string, lead: string): string {
  const lines = readFileSync(path, "utf8").split("\n");
  const from = lines.findIndex((line) => line.startsWith(lead));
  assert.ok(from >= 0, `${path} has ${lead}`);
  const start = lines.findIndex((line, i) => i > from && line.startsWith("    "));
  const end = lines.findIndex((line, i) => i > start && !line.startsWith("    "));
  return lines
    .slice(start, end)
    .map((line) => line.slice(4))
    .join("\n");
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

  it("a crash restarts the daemon with its fd store, sized for the connections it keeps", () => {
    assert.equal(one(service, "Service.Type"), "notify");
    assert.match(one(service, "Service.ExecStart"), /^\/usr\/bin\/vhost-device-i2c --fd-store /);
    assert.equal(one(service, "Service.Restart"), "always");
    const restartSec = /^([0-9]+)ms$/.exec(one(service, "Service.RestartSec"));
    assert.ok(
      restartSec !== null && Number(restartSec[1]) <= 1000,
      "a guest waits at most a second",
    );
    const max = Number(one(service, "Service.FileDescriptorStoreMax"));
    assert.ok(
      max >= STORED_CONNECTIONS * STORED_FDS_PER_CONNECTION,
      `FileDescriptorStoreMax=${max}`,
    );
  });

  it("a configuration error is not restarted: RestartPreventExitStatus= is the daemon's usage status", () => {
    const usage = spawnSync(process.execPath, [MAIN_JS, "--no-such-option"], { encoding: "utf8" });
    assert.equal(
      String(usage.status),
      one(service, "Service.RestartPreventExitStatus"),
      usage.stderr,
    );
  });

  it(`the upgrade is ${HANDOVER_SIGNAL} to the main process; reload and notifications follow it`, () => {
    // The old main process names its successor (MAINPID=) before it lets go: main-only notification
    // access then hears the successor, and $MAINPID at reload time is the successor.
    assert.equal(one(service, "Service.NotifyAccess"), "main");
    assert.equal(one(service, "Service.ExecReload"), "/bin/kill -HUP $MAINPID");
    const command = `systemctl kill -s ${HANDOVER_SIGNAL} --kill-whom=main vhost-device-i2c@vm1`;
    assert.ok(readFileSync(SERVICE, "utf8").includes(command), `the unit shows: ${command}`);
    assert.ok(readFileSync(README, "utf8").includes(command), `README.md shows: ${command}`);
  });

  it("systemctl knows --kill-whom=", {
    skip: existsSync(SYSTEMCTL) ? false : `no ${SYSTEMCTL}`,
  }, () => {
    const help = spawnSync(SYSTEMCTL, ["--help"], { encoding: "utf8" });
    assert.match(help.stdout, /--kill-whom=/);
  });

  it("ExecStart's arguments parse with the socket unit's fd", () => {
    const args = one(service, "Service.ExecStart")
      .split(/\s+/)
      .slice(1)
      .filter((arg) => arg !== "$OPTIONS")
      .map((arg) => arg.replace(/^\$\{DEVICES\}$/, "sim:0x50=24c02"));
    const command = parseCommandLine(args, {
      resolveAdapter: () => 0,
      inheritedFds: [3],
    });
    assert.equal(command.kind, "run");
  });

  for (const [guide, block] of [
    ["README.md", () => fencedBlockAfter(join(REPO, "README.md"), "## Running as a service")],
    ["contrib/systemd/README.md", () => indentedBlockAfter(README, "Install, as root")],
  ] as const) {
    it(`${guide}'s install commands run as pasted: directories made, ExecStart= found, units reloaded before enabling`, () => {
      const root = makeTempDir("vdi2c-install-root-");
      try {
        // What a systemd machine has before the install; /etc/vhost-device-i2c is not among them.
        for (const dir of ["etc/systemd/system", "usr/lib/sysusers.d", "etc/udev/rules.d", "bin"]) {
          mkdirSync(join(root.path, dir), { recursive: true });
        }
        const calls = join(root.path, "calls");
        for (const tool of [
          "systemctl",
          "systemd-sysusers",
          "udevadm",
          "qemu-system-x86_64",
          "vhost-device-i2c",
        ]) {
          const stub = join(root.path, "bin", tool);
          writeFileSync(stub, `#!/bin/sh\necho "${tool} $*" >> "${calls}"\n`);
          chmodSync(stub, 0o755);
        }
        // Absolute paths the commands write below the fake root; the program paths stay as they are.
        const script = block().replace(/(?<=[\s>])\/(etc|usr\/lib)\//g, `${root.path}/$1/`);
        const run = spawnSync("bash", ["-euo", "pipefail", "-c", script], {
          cwd: REPO,
          encoding: "utf8",
          env: { ...process.env, PATH: `${join(root.path, "bin")}:${process.env.PATH}` },
        });
        assert.equal(run.status, 0, `${script}\n${run.stderr}`);
        const installed = readUnit(join(root.path, "etc/systemd/system/vhost-device-i2c@.service"));
        assert.match(
          one(installed, "Service.ExecStart"),
          new RegExp(`^${join(root.path, "bin")}/vhost-device-i2c --fd-store `),
        );
        assert.ok(existsSync(join(root.path, "etc/systemd/system/vhost-device-i2c@.socket")));
        assert.equal(
          readFileSync(join(root.path, "etc/vhost-device-i2c/vm1.conf"), "utf8"),
          "DEVICES=sim:0x50=24c02\n",
        );
        const systemctl = readFileSync(calls, "utf8")
          .split("\n")
          .filter((line) => line.startsWith("systemctl "));
        assert.deepEqual(systemctl, [
          "systemctl daemon-reload",
          "systemctl enable --now vhost-device-i2c@vm1.socket",
        ]);
      } finally {
        root.remove();
      }
    });
  }

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
