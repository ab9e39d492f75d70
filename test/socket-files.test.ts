// Integration: the life of the daemon's socket files. At exit the daemon removes only the inode it
// created, in the directory it created it in: another daemon's socket now at the same path stays, and
// so does a file the path names after its parent was swapped for a link. At start-up an existing
// socket whose listener never accepts (its backlog full) is reported as in use at once, and stop
// signals keep working.
import assert from "node:assert/strict";
import {
  mkdirSync,
  readdirSync,
  renameSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { after, describe, it } from "node:test";
import { ControlClient } from "../src/control/client.js";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { UnixListener, UnixStream } from "../src/sys/unix-socket.js";
import {
  DaemonProcess,
  exists,
  isSocket,
  makeTempDir,
  startDaemon,
  withDaemonLog,
} from "./helpers/daemon.js";

/** A listener with backlog 0 whose one pending slot is taken: a blocking connect would wait forever. */
function jam(path: string): { close(): void } {
  const listener = UnixListener.listen(path, 0);
  const filler = UnixStream.connect(path);
  return {
    close() {
      filler.close();
      listener.close();
      unlinkSync(path);
    },
  };
}

async function stopped(daemon: DaemonProcess): Promise<void> {
  const status = await daemon.stop();
  assert.deepEqual(status, { code: 0, signal: null }, daemon.stderr);
}

describe("socket files", () => {
  const dir = makeTempDir();
  after(() => dir.remove());

  it("at exit leaves the sockets another daemon now serves at the same paths", async () => {
    const prefix = `${dir.path}/overlap.sock`;
    const control = `${dir.path}/overlap.ctl`;
    const args = ["-s", prefix, "-l", "sim:0x50=24c02", "--control-socket", control];
    const first = await startDaemon(args, [`${prefix}0`, control]);
    let second: DaemonProcess | null = null;
    try {
      // A restart overlap: the files are replaced while the first daemon still runs.
      unlinkSync(`${prefix}0`);
      unlinkSync(control);
      second = await startDaemon(args, [`${prefix}0`, control]);
      await stopped(first);
      assert.ok(isSocket(`${prefix}0`), "the second daemon's vhost-user socket is still there");
      assert.ok(isSocket(control), "the second daemon's control socket is still there");
      const vm = await I2cGuest.connect(`${prefix}0`);
      try {
        assert.equal((await vm.driver.transfer([{ addr: 0x50, read: 1 }])).ok, true);
      } finally {
        await vm.close();
      }
      const client = await ControlClient.connect(control);
      try {
        assert.match(await client.request("list"), /^ok /);
      } finally {
        client.close();
      }
      await stopped(second);
      assert.equal(exists(`${prefix}0`), false, "the second daemon removes its own socket");
      assert.equal(exists(control), false);
    } catch (err) {
      throw withDaemonLog(err, second ?? first);
    } finally {
      for (const daemon of [first, second]) {
        if (daemon !== null && !daemon.hasExited) daemon.child.kill("SIGKILL");
      }
    }
  });

  it("at exit removes nothing through a parent directory swapped for a link", async () => {
    const served = `${dir.path}/vmdir`;
    const elsewhere = `${dir.path}/rootonly`;
    mkdirSync(served, { mode: 0o755 });
    mkdirSync(elsewhere, { mode: 0o700 });
    writeFileSync(`${elsewhere}/v.sock0`, "a file the daemon never made");
    writeFileSync(`${elsewhere}/c.ctl`, "another one");
    const daemon = await startDaemon(
      ["-s", `${served}/v.sock`, "-l", "sim:0x50=24c02", "--control-socket", `${served}/c.ctl`],
      [`${served}/v.sock0`, `${served}/c.ctl`],
    );
    try {
      renameSync(served, `${served}.old`);
      symlinkSync(elsewhere, served);
      await stopped(daemon);
      assert.ok(statSync(`${elsewhere}/v.sock0`).isFile(), "the file behind the link stays");
      assert.ok(statSync(`${elsewhere}/c.ctl`).isFile());
      assert.deepEqual(readdirSync(`${served}.old`), [], "the daemon's own sockets are removed");
    } catch (err) {
      throw withDaemonLog(err, daemon);
    } finally {
      if (!daemon.hasExited) daemon.child.kill("SIGKILL");
    }
  });

  it("reports a socket whose listener never accepts as in use at once (vhost-user and control socket)", async () => {
    for (const which of ["vhost-user", "control"] as const) {
      const prefix = `${dir.path}/jam-${which}.sock`;
      const control = `${dir.path}/jam-${which}.ctl`;
      const jammed = jam(which === "vhost-user" ? `${prefix}0` : control);
      const daemon = new DaemonProcess([
        "-s",
        prefix,
        "-l",
        "sim:0x50=24c02",
        "--control-socket",
        control,
      ]);
      try {
        const status = await daemon.waitForExit(2000);
        // Exit 2, like a locked device: the path must change or the other process must stop.
        assert.deepEqual(status, { code: 2, signal: null }, daemon.stderr);
        const path = which === "vhost-user" ? `${prefix}0` : control;
        assert.ok(daemon.stderr.includes(`${path} is in use`), daemon.stderr);
        assert.match(daemon.stderr, /backlog is full/);
        const option = which === "vhost-user" ? "--socket-path" : "--control-socket";
        assert.ok(daemon.stderr.includes(`choose another ${option})`), daemon.stderr);
      } finally {
        if (!daemon.hasExited) daemon.child.kill("SIGKILL");
        await daemon.exited;
        jammed.close();
      }
    }
  });

  it("stops on SIGTERM sent while it starts on a path whose listener never accepts", async () => {
    const prefix = `${dir.path}/jam-term.sock`;
    const jammed = jam(`${prefix}0`);
    const daemon = new DaemonProcess(["-s", prefix, "-l", "sim:0x50=24c02"]);
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      daemon.child.kill("SIGTERM");
      const status = await daemon.waitForExit(2000);
      assert.notEqual(status.signal, "SIGKILL");
    } finally {
      if (!daemon.hasExited) daemon.child.kill("SIGKILL");
      await daemon.exited;
      jammed.close();
    }
  });
});
