// Integration: --client mode. The test plays QEMU with `-chardev socket,...,server=on`: it listens,
// the daemon connects (retrying until the socket exists), the test closes and listens again, the
// daemon reconnects and is served QEMU 7.2's reconnect burst (REFERENCE 5.3 (d)) with a request the
// guest queued while no back-end was connected already in the avail ring.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, describe, it } from "node:test";
import { I2cGuest, QEMU_PROTOCOL_FEATURES_B } from "../src/frontend/i2c-driver.js";
import { UnixListener, type UnixStream } from "../src/sys/unix-socket.js";
import { VhostUserFrontend } from "../src/vhost-user/frontend.js";
import { DaemonProcess, makeTempDir, waitUntil, withDaemonLog } from "./helpers/daemon.js";

const dir = makeTempDir();
after(() => dir.remove());

/** Waits for the daemon to connect to `listener`. */
async function acceptOne(listener: UnixListener, what: string): Promise<UnixStream> {
  let stream: UnixStream | null = null;
  await waitUntil(() => {
    stream = listener.accept();
    return stream !== null;
  }, what);
  if (stream === null) throw new Error(`no connection: ${what}`);
  return stream;
}

function requestsSeen(stderr: string): string[] {
  return [...stderr.matchAll(/^TRACE \[socket0\] request request=(\w+)/gm)].map((m) => m[1] ?? "");
}

describe("vhost-device-i2c --client", () => {
  it("connects once the VMM listens, and reconnects with QEMU's reconnect burst", async () => {
    const prefix = `${dir.path}/vmm.sock`;
    const path = `${prefix}0`;
    // The daemon starts first: nothing listens yet, it must keep retrying.
    const daemon = new DaemonProcess([
      "--client",
      "-s",
      prefix,
      "-l",
      "sim:0x50=24c02",
      "--log-level",
      "trace",
    ]);
    let listener: UnixListener | null = null;
    let vm: I2cGuest | null = null;
    try {
      await daemon.waitForLog(`connecting to the VMM path=${path}`);
      listener = UnixListener.listen(path);
      vm = await I2cGuest.over(await acceptOne(listener, "the daemon's first connection"), {
        protocolFeatures: QEMU_PROTOCOL_FEATURES_B,
      });
      const first = await vm.driver.transfer([{ addr: 0x50, write: Uint8Array.of(0x30, 0x77) }]);
      assert.equal(first.ok, true);

      // The VMM side goes away: connection and listening socket closed, socket file removed.
      await vm.disconnect();
      listener.close();
      rmSync(path);
      // The daemon notices and retries against the missing socket.
      const retriesBefore = daemon.stderr.split("VMM socket not ready").length;
      await waitUntil(
        () => daemon.stderr.split("VMM socket not ready").length > retriesBefore,
        "the daemon retrying after the VMM went away",
      );
      // Meanwhile the guest queues a transfer: its kick reaches no back-end.
      const pending = vm.driver.submit([
        { addr: 0x50, write: Uint8Array.of(0x30) },
        { addr: 0x50, read: 1 },
      ]);

      listener = UnixListener.listen(path);
      const frontend = VhostUserFrontend.over(
        await acceptOne(listener, "the daemon's reconnection"),
      );
      vm = await vm.restartOn(frontend);
      const replayed = await vm.driver.wait(pending);
      assert.equal(replayed.ok, true, "the request queued while disconnected is served on enable");
      assert.deepEqual([...(replayed.reads[0] ?? [])], [0x77]);
      const next = await vm.driver.transfer([{ addr: 0x50, read: 1 }]);
      assert.equal(next.ok, true);

      const secondConnection = daemon.stderr.lastIndexOf("front-end connected");
      assert.ok(secondConnection > daemon.stderr.indexOf("front-end connected"));
      const reconnectLog = daemon.stderr.slice(secondConnection);
      const burst = requestsSeen(reconnectLog);
      assert.deepEqual(burst, [
        "SET_VRING_CALL",
        "SET_FEATURES",
        "GET_STATUS",
        "SET_STATUS",
        "SET_MEM_TABLE",
        "SET_VRING_NUM",
        "SET_VRING_BASE",
        "SET_VRING_ADDR",
        "SET_VRING_KICK",
        "SET_VRING_ENABLE",
        "SET_VRING_CALL",
      ]);
      assert.match(
        reconnectLog,
        /request=SET_MEM_TABLE size=\d+ fds=1 needReply=true/,
        "NEED_REPLY honoured on a connection that never saw SET_PROTOCOL_FEATURES",
      );

      await vm.close();
      vm = null;
      daemon.child.kill("SIGTERM");
      assert.deepEqual(await daemon.waitForExit(), { code: 0, signal: null });
    } catch (err) {
      throw withDaemonLog(err, daemon);
    } finally {
      if (vm) await vm.close();
      listener?.close();
      if (!daemon.hasExited) {
        daemon.child.kill("SIGKILL");
        await daemon.exited;
      }
    }
  });
});
