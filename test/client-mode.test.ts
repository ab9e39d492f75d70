// Integration: --client mode. The test plays QEMU with `-chardev socket,...,server=on`: it listens,
// the daemon connects (retrying until the socket exists), the test closes and listens again, the
// daemon reconnects and is served QEMU 7.2's reconnect burst (REFERENCE 5.3 (d)) with a request the
// guest queued while no back-end was connected already in the avail ring.
// Then who the daemon connects to: an impostor of another user (uid 1234) listening at the VMM's
// path, or a link it planted there, gets no vhost-user message and no access to the host device (the
// LD_PRELOAD fake adapter's log shows nothing reached the bus), while the real VMM still works; a
// directory another user can change is refused; a listener that never accepts freezes nothing.
import assert from "node:assert/strict";
import { chmodSync, chownSync, mkdirSync, rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { ControlClient } from "../src/control/client.js";
import { I2cGuest, QEMU_PROTOCOL_FEATURES_B } from "../src/frontend/i2c-driver.js";
import { UnixListener, UnixStream } from "../src/sys/unix-socket.js";
import { VhostUserFrontend } from "../src/vhost-user/frontend.js";
import { FakeI2c, fakeUnavailableReason } from "./fake-i2c/fake.js";
import {
  DaemonProcess,
  makeTempDir,
  waitUntil,
  withDaemonLog,
  withTimeout,
} from "./helpers/daemon.js";
import {
  ATTACKER_GID,
  ATTACKER_UID,
  jsonLines,
  runAsAttacker,
  spawnNodeAsAttacker,
  unprivilegedUnavailableReason,
} from "./helpers/unprivileged.js";

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
      // The guest can be served before the last line of the burst reaches the test's pipe.
      await waitUntil(
        () => requestsSeen(daemon.stderr.slice(secondConnection)).length >= 11,
        "the reconnect burst in the daemon's log",
      );
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

const IMPOSTOR = fileURLToPath(new URL("./helpers/impostor-vmm.js", import.meta.url));

/** The impostor VMM (uid 1234) listening at `path` for `waitMs`; resolves with what it saw. */
async function impostorAt(path: string, waitMs: number): Promise<Record<string, unknown>> {
  const { done } = spawnNodeAsAttacker([IMPOSTOR, path, String(waitMs)]);
  const result = await done;
  const lines = jsonLines(result.stdout);
  if (lines.length === 0) throw new Error(`impostor printed nothing: ${result.stderr}`);
  return Object.assign({}, ...lines) as Record<string, unknown>;
}

/** Stops `daemon` (SIGTERM, status 0 expected) after `body`, with its log on failure. */
async function withClientDaemon(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  body: (daemon: DaemonProcess) => Promise<void>,
): Promise<void> {
  const daemon = new DaemonProcess(["--client", ...args], { env });
  try {
    await daemon.waitForLog("serving devices=");
    await body(daemon);
    assert.deepEqual(await daemon.stop(), { code: 0, signal: null });
  } catch (err) {
    throw withDaemonLog(err, daemon);
  } finally {
    if (!daemon.hasExited) {
      daemon.child.kill("SIGKILL");
      await daemon.exited;
    }
  }
}

const unavailable = fakeUnavailableReason() ?? unprivilegedUnavailableReason();

describe("vhost-device-i2c --client: who it connects to", { skip: unavailable ?? false }, () => {
  const base = makeTempDir();
  chmodSync(base.path, 0o755);
  /** Sticky and world-writable, like /tmp: anyone may create a socket or a link here. */
  const pub = `${base.path}/pub`;
  let fake: FakeI2c;

  before(async () => {
    mkdirSync(pub);
    chmodSync(pub, 0o1777);
    fake = await FakeI2c.create(["adapter 0 funcs=i2c|emul", "device 0 0x50"].join("\n"));
  });
  after(async () => {
    await fake?.cleanup();
    base.remove();
  });

  /** The real VMM (root, this test) listening at `path`: one write and read-back through the daemon. */
  async function realVmmWorks(path: string): Promise<void> {
    const listener = UnixListener.listen(path);
    try {
      const vm = await I2cGuest.over(await acceptOne(listener, "the daemon's connection"), {
        protocolFeatures: QEMU_PROTOCOL_FEATURES_B,
      });
      try {
        const write = await vm.driver.transfer([{ addr: 0x50, write: Uint8Array.of(0x10, 0x5a) }]);
        assert.equal(write.ok, true);
      } finally {
        await vm.close();
      }
    } finally {
      listener.close();
      rmSync(path);
    }
    const log = await fake.readLog();
    assert.ok(
      log.some((entry) => entry.dir === "w" && entry.data.join(",") === "16,90"),
      "the real VMM's write reached the bus",
    );
  }

  it("an impostor of another user listening at the VMM path gets no vhost-user message and no host-device access; the real VMM then works", async () => {
    const path = `${pub}/qemu.sock0`;
    await withClientDaemon(
      ["-s", `${pub}/qemu.sock`, "-l", "0:0x50", "--log-level", "debug"],
      fake.env({}),
      async (daemon) => {
        await fake.clearLog(); // the adapter check at start-up is logged too
        const impostor = await impostorAt(path, 5000);
        assert.equal(impostor.connected, true, "the daemon did connect to the impostor's socket");
        assert.equal(impostor.handshake, false, "but answered nothing");
        assert.match(
          daemon.stderr,
          new RegExp(
            `refusing a VMM the peer policy does not admit.* uid=${ATTACKER_UID} gid=${ATTACKER_GID}`,
          ),
        );
        assert.equal(daemon.stderr.includes("front-end connected"), false);
        assert.deepEqual(await fake.readLog(), [], "nothing reached the bus");
        await realVmmWorks(path);
        assert.match(daemon.stderr, /front-end connected pid=\d+ uid=0 gid=0/);
      },
    );
  });

  it("does not follow a link another user planted at the VMM path", async () => {
    const own = `${base.path}/impostor-own`;
    mkdirSync(own, { mode: 0o755 });
    chownSync(own, ATTACKER_UID, ATTACKER_GID);
    const path = `${pub}/linked.sock0`;
    runAsAttacker(`ln -s ${own}/real.sock ${path}`);
    await withClientDaemon(
      ["-s", `${pub}/linked.sock`, "-l", "0:0x50", "--log-level", "debug"],
      fake.env({}),
      async (daemon) => {
        await fake.clearLog();
        const impostor = await impostorAt(`${own}/real.sock`, 1500);
        assert.equal(impostor.connected, false, "the daemon never connected through the link");
        assert.match(daemon.stderr, /refusing the VMM socket path.*symbolic link/);
        assert.deepEqual(await fake.readLog(), []);
        rmSync(path);
        await realVmmWorks(path);
      },
    );
  });

  it("refuses a VMM directory another user can change at start-up (exit 2); --client-unsafe-path connects there but still refuses the impostor", async () => {
    const open = `${base.path}/open`;
    mkdirSync(open);
    chmodSync(open, 0o777);
    const refused = new DaemonProcess(["--client", "-s", `${open}/q.sock`, "-l", "0:0x50"], {
      env: fake.env({}),
    });
    try {
      assert.equal((await refused.waitForExit()).code, 2, refused.stderr);
      assert.ok(refused.stderr.includes(open), refused.stderr);
      assert.match(refused.stderr, /mode 0777/);
    } finally {
      await refused.stop();
    }

    await withClientDaemon(
      ["-s", `${open}/q.sock`, "-l", "0:0x50", "--client-unsafe-path"],
      fake.env({}),
      async (daemon) => {
        await fake.clearLog();
        const impostor = await impostorAt(`${open}/q.sock0`, 5000);
        assert.equal(impostor.connected, true);
        assert.equal(impostor.handshake, false);
        assert.match(daemon.stderr, /refusing a VMM the peer policy does not admit/);
        assert.deepEqual(await fake.readLog(), []);
      },
    );
  });

  it("--allow-peer-uid names the VMM's user: it may own the socket's directory and is served", async () => {
    const vmmDir = `${base.path}/vmm-user`;
    mkdirSync(vmmDir, { mode: 0o755 });
    chownSync(vmmDir, ATTACKER_UID, ATTACKER_GID);
    const refused = new DaemonProcess(["--client", "-s", `${vmmDir}/q.sock`, "-l", "0:0x50"], {
      env: fake.env({}),
    });
    try {
      assert.equal((await refused.waitForExit()).code, 2, refused.stderr);
      assert.match(refused.stderr, /owned by uid 1234/);
    } finally {
      await refused.stop();
    }

    await withClientDaemon(
      ["-s", `${vmmDir}/q.sock`, "-l", "0:0x50", "--allow-peer-uid", String(ATTACKER_UID)],
      fake.env({}),
      async (daemon) => {
        const vmm = await impostorAt(`${vmmDir}/q.sock0`, 5000);
        assert.deepEqual(
          { connected: vmm.connected, handshake: vmm.handshake, transferOk: vmm.transferOk },
          { connected: true, handshake: true, transferOk: true },
        );
        assert.match(daemon.stderr, new RegExp(`front-end connected pid=\\d+ uid=${ATTACKER_UID}`));
      },
    );
  });

  it("a VMM socket whose listener never accepts freezes nothing: the control socket answers meanwhile", async () => {
    const path = `${pub}/jam.sock0`;
    const control = `${base.path}/jam.ctl`;
    const listener = UnixListener.listen(path, 0);
    const filler = UnixStream.connect(path); // the one pending slot: a blocking connect would sleep
    try {
      await withClientDaemon(
        [
          "-s",
          `${pub}/jam.sock`,
          "-l",
          "sim:0x50=24c02",
          "--control-socket",
          control,
          "--log-level",
          "debug",
        ],
        {},
        async (daemon) => {
          await daemon.waitForLog("VMM socket not accepting (backlog full), retrying");
          await daemon.waitForLog("control socket listening");
          const client = await ControlClient.connect(control);
          try {
            assert.match(await withTimeout(client.request("list"), 2000, "control reply"), /^ok /);
          } finally {
            client.close();
          }
        },
      );
    } finally {
      filler.close();
      listener.close();
      rmSync(path);
    }
  });
});
