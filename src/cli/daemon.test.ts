// Tests for the daemon wiring in-process: sockets served and removed, start-up failures mapped to
// DaemonError codes, and nothing left open when start-up fails half-way.
import assert from "node:assert/strict";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { silentLogger } from "../log.js";
import { type DaemonConfig, parseCommandLine } from "./args.js";
import { DaemonError, startDaemon } from "./daemon.js";

const dir = mkdtempSync(join(tmpdir(), "vdi2c-daemon-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function config(...argv: string[]): DaemonConfig {
  const command = parseCommandLine(argv, {
    resolveAdapter: () => {
      throw new Error("no adapters in this test");
    },
  });
  assert.equal(command.kind, "run");
  return command.config;
}

async function startError(cfg: DaemonConfig): Promise<DaemonError> {
  try {
    (await startDaemon(cfg, silentLogger)).close();
  } catch (err) {
    assert.ok(err instanceof DaemonError, String(err));
    return err;
  }
  assert.fail("startDaemon should have failed");
}

const isSocket = (path: string) => existsSync(path) && statSync(path).isSocket();

describe("startDaemon", async () => {
  it("listens on every socket and removes the files on close (twice is fine)", async () => {
    const prefix = join(dir, "ok.sock");
    const daemon = await startDaemon(
      config("-s", prefix, "-c", "3", "-l", "sim:0x50=24c02"),
      silentLogger,
    );
    for (const i of [0, 1, 2]) assert.ok(isSocket(`${prefix}${i}`));
    daemon.close();
    daemon.close();
    for (const i of [0, 1, 2]) assert.equal(existsSync(`${prefix}${i}`), false);
  });

  it("reports a missing socket directory as a configuration error", async () => {
    const err = await startError(config("-s", join(dir, "nope", "x.sock"), "-l", "sim:0x50=24c02"));
    assert.equal(err.code, "SOCKET_DIR_MISSING");
    assert.equal(err.isConfigError, true);
  });

  it("reports a socket served by someone else as SOCKET_IN_USE (a configuration error, like a locked device)", async () => {
    const prefix = join(dir, "busy.sock");
    const first = await startDaemon(config("-s", prefix, "-l", "sim:0x50=24c02"), silentLogger);
    try {
      const err = await startError(config("-s", prefix, "-l", "sim:0x50=24c02"));
      assert.equal(err.code, "SOCKET_IN_USE");
      assert.equal(err.isConfigError, true);
      assert.ok(isSocket(`${prefix}0`), "the first daemon's socket is left alone");
    } finally {
      first.close();
    }
  });

  it("reports a socket directory others can write to as SOCKET_DIR_UNSAFE (a configuration error)", async () => {
    const open = join(dir, "open");
    mkdirSync(open);
    chmodSync(open, 0o777);
    for (const args of [
      ["-s", join(open, "v.sock")],
      ["-s", join(dir, "ok.sock"), "--control-socket", join(open, "c.ctl")],
      ["--client", "-s", join(open, "vmm.sock")],
    ]) {
      const err = await startError(config(...args, "-l", "sim:0x50=24c02"));
      assert.equal(err.code, "SOCKET_DIR_UNSAFE");
      assert.equal(err.isConfigError, true);
      assert.match(err.message, /mode 0777/);
    }
    assert.equal(existsSync(join(dir, "ok.sock0")), false, "the socket made first was removed");
  });

  it("reports an unknown --socket-group or --allow-peer-uid name as SOCKET_PERMISSIONS", async () => {
    const names = [
      ["--socket-group", "no-such-group-vdi2c"],
      ["--allow-peer-uid", "no-such-user-vdi2c"],
    ];
    for (const option of names) {
      const err = await startError(
        config("-s", join(dir, "perm.sock"), "-l", "sim:0x50=24c02", ...option),
      );
      assert.equal(err.code, "SOCKET_PERMISSIONS");
      assert.ok(err.message.includes(option[0] as string), err.message);
    }
  });

  it("closes what it opened when a later socket fails", async () => {
    const prefix = join(dir, "half.sock");
    writeFileSync(`${prefix}1`, "in the way");
    const err = await startError(config("-s", prefix, "-c", "2", "-l", "sim:0x50=24c02"));
    assert.equal(err.code, "SOCKET_PATH_TAKEN");
    assert.equal(existsSync(`${prefix}0`), false, "socket 0 was closed and removed");
  });

  it("reports a host adapter that does not exist as a configuration error", async () => {
    const err = await startError(config("-s", join(dir, "host.sock"), "-l", "1048575:0x50"));
    assert.equal(err.code, "I2C_ADAPTER_MISSING");
    assert.equal(err.isConfigError, true);
    assert.equal(existsSync(join(dir, "host.sock0")), false);
  });
});
