// Running under a service manager, as systemd would start it: listening sockets inherited as fds 3..
// (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, or --socket-fd), READY=1 on $NOTIFY_SOCKET once serving,
// --log-format json, --print-capabilities. The daemon is the real CLI; the VM is I2cGuest.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  closeSync,
  fstatSync,
  openSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { DatagramSocket } from "../src/sys/service-manager.js";
import { UnixListener } from "../src/sys/unix-socket.js";
import { memoryEepromArgs, transferOk } from "./helpers/configured-daemon.js";
import { MAIN_JS, makeTempDir, WAIT_MS, waitUntil, withTimeout } from "./helpers/daemon.js";
import {
  ATTACKER_GID,
  ATTACKER_UID,
  jsonLines,
  spawnNodeAsAttacker,
  unprivilegedUnavailableReason,
} from "./helpers/unprivileged.js";

const PEER_GUEST = fileURLToPath(new URL("./helpers/peer-guest.js", import.meta.url));

interface Managed {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly stderr: () => string;
  readonly stdout: () => string;
}

/**
 * Starts the daemon the way a service manager does: `fds` become the child's fds 3, 4, ... and, with
 * `activation`, LISTEN_PID is the daemon's own pid (set by the shell that execs it, so it is exact).
 */
function startManaged(
  args: readonly string[],
  fds: readonly number[],
  env: Readonly<Record<string, string>>,
  activation: { names?: string } | null,
  stderrFd?: number,
): Managed {
  const listenEnv =
    activation === null
      ? ""
      : `LISTEN_PID=$$ LISTEN_FDS=${fds.length} ${activation.names === undefined ? "" : `LISTEN_FDNAMES=${activation.names} `}`;
  const child = spawn(
    "/bin/sh",
    ["-c", `${listenEnv}exec "$0" "$@"`, process.execPath, MAIN_JS, ...args],
    { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", stderrFd ?? "pipe", ...fds] },
  );
  let stderr = "";
  let stdout = "";
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  const exited = new Promise<number | null>((resolve) =>
    child.on("close", (code) => resolve(code)),
  );
  return { child, exited, stderr: () => stderr, stdout: () => stdout };
}

async function stopManaged(daemon: Managed): Promise<number | null> {
  daemon.child.kill("SIGTERM");
  return withTimeout(daemon.exited, WAIT_MS, `daemon exit; stderr:\n${daemon.stderr()}`);
}

/** Waits for the next datagram on `socket`; fails early when the daemon exits first. */
async function nextDatagram(socket: DatagramSocket, daemon: Managed): Promise<string> {
  let received: Uint8Array | null = null;
  let exited = false;
  void daemon.exited.then(() => {
    exited = true;
  });
  await waitUntil(() => {
    received = socket.receive();
    if (received === null && exited) throw new Error(`daemon exited:\n${daemon.stderr()}`);
    return received !== null;
  }, "a notification datagram");
  return new TextDecoder().decode(received ?? new Uint8Array());
}

/** One transfer through `path`: write offset 0, then read it back from the emulated 24c02. */
async function eepromRoundTrip(path: string, value: number): Promise<void> {
  const guest = await I2cGuest.connect(path);
  try {
    await transferOk(guest, [{ addr: 0x50, write: Uint8Array.of(0x00, value) }]);
    const [read] = await transferOk(guest, [
      { addr: 0x50, write: Uint8Array.of(0x00) },
      { addr: 0x50, read: 1 },
    ]);
    assert.deepEqual([...(read ?? [])], [value]);
  } finally {
    await guest.close();
  }
}

describe("socket activation and readiness", () => {
  let dir: ReturnType<typeof makeTempDir>;
  before(() => {
    dir = makeTempDir("vdi2c-service-");
  });
  after(() => dir.remove());

  it("serves the socket passed as fd 3 with LISTEN_FDS and sends READY=1 once it does", async () => {
    const path = join(dir.path, "activated.sock");
    const listener = UnixListener.listen(path);
    const notify = DatagramSocket.bind(join(dir.path, "notify"));
    const daemon = startManaged(
      memoryEepromArgs(dir.path),
      [listener.fd],
      { NOTIFY_SOCKET: notify.path },
      { names: "vm1" },
    );
    // The daemon has its own copy now; ours must not accept its connections.
    listener.close();
    try {
      const state = await nextDatagram(notify, daemon);
      assert.match(state, /^READY=1$/m);
      assert.match(state, /^STATUS=serving 1 socket\(s\)$/m);
      await eepromRoundTrip(path, 0x5a);
      assert.match(
        daemon.stderr(),
        /serving sockets passed by the service manager fds=3 names=vm1/,
      );
      assert.equal(await stopManaged(daemon), 0);
      assert.match(await nextDatagram(notify, daemon), /^STOPPING=1$/m);
    } finally {
      daemon.child.kill("SIGKILL");
      notify.close();
    }
  });

  it("serves several inherited sockets in order, and an abstract NOTIFY_SOCKET works", async () => {
    const paths = [join(dir.path, "a.sock"), join(dir.path, "b.sock")];
    const listeners = paths.map((path) => UnixListener.listen(path));
    const abstractName = `@vdi2c-notify-${process.pid}`;
    const notify = DatagramSocket.bind(abstractName);
    const daemon = startManaged(
      memoryEepromArgs(dir.path),
      listeners.map((l) => l.fd),
      { NOTIFY_SOCKET: abstractName },
      {},
    );
    for (const listener of listeners) listener.close();
    try {
      assert.match(await nextDatagram(notify, daemon), /^STATUS=serving 2 socket\(s\)$/m);
      await eepromRoundTrip(paths[1] ?? "", 0x11);
      await eepromRoundTrip(paths[0] ?? "", 0x22);
      assert.match(daemon.stderr(), /INFO \[socket0\] listening on an inherited socket fd=3\n/);
      assert.match(daemon.stderr(), /INFO \[socket1\] listening on an inherited socket fd=4\n/);
      assert.equal(await stopManaged(daemon), 0);
    } finally {
      daemon.child.kill("SIGKILL");
      notify.close();
    }
  });

  it("--socket-fd serves an fd without LISTEN_FDS; LISTEN_FDS for another pid is ignored", async () => {
    const path = join(dir.path, "explicit.sock");
    const listener = UnixListener.listen(path);
    const daemon = startManaged(
      ["--socket-fd", "3", ...memoryEepromArgs(dir.path), "--log-format", "json"],
      [listener.fd],
      // Inherited from a parent: not ours, so it must not count.
      { LISTEN_FDS: "5", LISTEN_PID: "1" },
      null,
    );
    listener.close();
    try {
      await waitUntil(() => daemon.stderr().includes('"serving"'), "the serving log line");
      await eepromRoundTrip(path, 0x33);
      assert.equal(await stopManaged(daemon), 0);
      const lines = daemon.stderr().trimEnd().split("\n");
      assert.ok(lines.length >= 3, daemon.stderr());
      for (const line of lines) {
        const record = JSON.parse(line);
        assert.ok(["error", "warn", "info", "debug", "trace"].includes(record.level), line);
        assert.equal(typeof record.message, "string");
        assert.equal(typeof record.context, "string");
        assert.equal(typeof record.fields, "object");
        assert.ok(!Number.isNaN(Date.parse(record.time)), line);
      }
      const inherited = lines.map((l) => JSON.parse(l)).find((r) => r.context === "socket0");
      assert.deepEqual(inherited?.fields, { fd: 3 });
    } finally {
      daemon.child.kill("SIGKILL");
    }
  });

  it("refuses an inherited fd that is not a listening socket (exit 2, says why)", async () => {
    const file = join(dir.path, "not-a-socket");
    writeFileSync(file, "");
    const fd = openSync(file, "r");
    const daemon = startManaged(memoryEepromArgs(dir.path), [fd], {}, {});
    closeSync(fd);
    try {
      assert.equal(await withTimeout(daemon.exited, WAIT_MS, "daemon exit"), 2);
      assert.match(daemon.stderr(), /fd 3 is not a socket/);
    } finally {
      daemon.child.kill("SIGKILL");
    }
  });

  it("journald: each plain line starts with its syslog priority when stderr is the journal stream", async () => {
    const path = join(dir.path, "journal.sock");
    const logFile = join(dir.path, "journal.log");
    const listener = UnixListener.listen(path);
    const notify = DatagramSocket.bind(join(dir.path, "notify-journal"));
    const logFd = openSync(logFile, "w");
    const { dev, ino } = fstatSync(logFd);
    // stderr is the log file, named by JOURNAL_STREAM as systemd names the journal's stream.
    const daemon = startManaged(
      ["--socket-fd", "3", ...memoryEepromArgs(dir.path)],
      [listener.fd],
      { NOTIFY_SOCKET: notify.path, JOURNAL_STREAM: `${dev}:${ino}` },
      null,
      logFd,
    );
    closeSync(logFd);
    listener.close();
    try {
      await nextDatagram(notify, daemon);
      assert.equal(await stopManaged(daemon), 0);
      const lines = readFileSync(logFile, "utf8").trimEnd().split("\n");
      assert.ok(lines.length >= 3);
      for (const line of lines) assert.match(line, /^<[3-7]>(ERROR|WARN|INFO|DEBUG|TRACE) /);
      assert.ok(lines.includes("<6>INFO [socket0] listening on an inherited socket fd=3"));
    } finally {
      daemon.child.kill("SIGKILL");
      notify.close();
    }
  });
});

describe("front-ends on an inherited socket", {
  skip: unprivilegedUnavailableReason() ?? false,
}, () => {
  let dir: ReturnType<typeof makeTempDir>;
  before(() => {
    dir = makeTempDir("vdi2c-service-peers-");
    chmodSync(dir.path, 0o755);
  });
  after(() => dir.remove());

  /** A daemon serving a listener made as a socket unit would (mode, group), and a guest of uid 1234. */
  async function attackerOn(
    mode: number,
    gid: number,
  ): Promise<{ attempt: Record<string, unknown>; log: string }> {
    const path = join(dir.path, `inherited-${mode.toString(8)}-${gid}.sock`);
    const listener = UnixListener.listen(path);
    chownSync(path, 0, gid);
    chmodSync(path, mode);
    const daemon = startManaged(
      ["--socket-fd", "3", ...memoryEepromArgs(dir.path)],
      [listener.fd],
      {},
      null,
    );
    listener.close();
    try {
      await waitUntil(() => daemon.stderr().includes("serving devices="), "the serving log line");
      const { done } = spawnNodeAsAttacker([PEER_GUEST, path]);
      const [attempt = {}] = jsonLines((await done).stdout);
      assert.equal(await stopManaged(daemon), 0);
      return { attempt, log: daemon.stderr() };
    } finally {
      daemon.child.kill("SIGKILL");
    }
  }

  it("admits the group its file's mode admits (SocketGroup=), and refuses others its mode would let in", async () => {
    const member = await attackerOn(0o660, ATTACKER_GID);
    assert.deepEqual(member.attempt, { handshake: true, transferOk: true }, member.log);
    assert.match(member.log, new RegExp(`front-end connected pid=\\d+ uid=${ATTACKER_UID}`));

    const other = await attackerOn(0o666, 0);
    assert.equal(other.attempt.handshake, false, other.log);
    assert.match(other.log, new RegExp(`policy does not admit .*uid=${ATTACKER_UID}`));
  });
});

describe("--print-capabilities", () => {
  it("prints the vhost-user backend capabilities as JSON and exits 0", () => {
    const result = spawnSync(process.execPath, [MAIN_JS, "--print-capabilities"], {
      encoding: "utf8",
    });
    assert.equal(result.status, 0, result.stderr);
    const capabilities = JSON.parse(result.stdout);
    assert.equal(capabilities.type, "i2c");
    assert.ok(Array.isArray(capabilities.features));
    assert.ok(capabilities.features.includes("socket-fd"));
  });
});
