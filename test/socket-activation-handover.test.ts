// Socket activation with systemd's own code, then a SIGUSR2 handover: the daemon runs under
// systemd-socket-activate (which binds the socket, waits for the first connection and execs the
// daemon in its place with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES), a front-end playing QEMU connects,
// the daemon hands over to a successor: the transfers go on through the same connection against a
// new pid, $NOTIFY_SOCKET hears MAINPID=<successor> and its READY=1, the listening socket still
// accepts a new front-end, and the socket file, the activator's, is never removed by the daemon.
// The EEPROM has a backing file: what the guest wrote is still there after the handover. Then the
// same under FdStoreSupervisor (test/helpers), which follows MAINPID= and restarts the daemon on its
// listening socket when the successor is killed. An EEPROM without a backing file keeps what the
// guest wrote across the handover too: the chips' states travel with the connections.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { DatagramSocket } from "../src/sys/service-manager.js";
import { memoryEepromArgs, transferOk, writeConfig } from "./helpers/configured-daemon.js";
import { isSocket, MAIN_JS, makeTempDir, waitUntil } from "./helpers/daemon.js";
import { memoryEeprom } from "./helpers/eeprom.js";
import { FdStoreSupervisor } from "./helpers/fd-store-supervisor.js";

const SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate";
const EEPROM = 0x50;

const dir = makeTempDir("vdi2c-activate-");
after(() => dir.remove());

/**
 * The daemon's arguments: a 24c02 without write cycle whose contents live in `backing` (in the
 * test's directory).
 */
function daemonArgs(backing: string): string[] {
  const devices = [memoryEeprom("24c02", EEPROM, { backing })];
  return ["--config", writeConfig(dir.path, devices, `${backing}.json`), "--log-level", "debug"];
}

/** SIGKILL to every process of the group led by `pid` (the daemon and any successor it started). */
function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // Gone already.
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Writes `value` at `offset` of the 24c02 and reads it back. */
async function roundTrip(guest: I2cGuest, offset: number, value: number): Promise<void> {
  await transferOk(guest, [{ addr: EEPROM, write: Uint8Array.of(offset, value) }]);
  const [read] = await transferOk(guest, [
    { addr: EEPROM, write: Uint8Array.of(offset) },
    { addr: EEPROM, read: 1 },
  ]);
  assert.deepEqual([...(read ?? [])], [value], `offset ${offset}`);
}

/** The successor pid the daemon logged at its `count`-th handover (0-based). */
async function handedOverTo(log: () => string, count = 0): Promise<number> {
  let pid = 0;
  await waitUntil(() => {
    const match = [...log().matchAll(/handed over: the successor serves every socket pid=(\d+)/g)][
      count
    ];
    if (match === undefined) return false;
    pid = Number(match[1]);
    return true;
  }, "the handover");
  return pid;
}

/** Every datagram received on `socket` so far, appended to `into`. */
function drainNotifications(socket: DatagramSocket, into: string[]): string[] {
  for (let datagram = socket.receive(); datagram !== null; datagram = socket.receive()) {
    into.push(new TextDecoder().decode(datagram));
  }
  return into;
}

describe("socket activation by systemd-socket-activate, then a SIGUSR2 handover", {
  skip: existsSync(SOCKET_ACTIVATE) ? false : `${SOCKET_ACTIVATE} is not installed`,
}, () => {
  it("keeps the connection and the activator's socket; the new pid serves and accepts", async () => {
    const path = join(dir.path, "vm1.sock");
    const notify = DatagramSocket.bind(join(dir.path, "notify"));
    const notifications: string[] = [];
    const activator: ChildProcess = spawn(
      SOCKET_ACTIVATE,
      [
        "-l",
        path,
        "--fdname=vm1",
        "-E",
        `NOTIFY_SOCKET=${notify.path}`,
        "--",
        process.execPath,
        MAIN_JS,
        ...daemonArgs("activated.bin"),
      ],
      // A process group of its own: the successors the daemon starts are in it, for the cleanup.
      { stdio: ["ignore", "pipe", "pipe"], detached: true },
    );
    let stderr = "";
    activator.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    const log = () => stderr;
    const first = activator.pid as number;
    const guests: I2cGuest[] = [];
    try {
      await waitUntil(() => isSocket(path), "the activator's socket");
      // The first connection makes the activator exec the daemon in its own process.
      const guest = await I2cGuest.connect(path);
      guests.push(guest);
      await roundTrip(guest, 0x10, 0x5a);
      assert.match(readFileSync(`/proc/${first}/cmdline`, "utf8"), /main\.js/);
      assert.match(stderr, /serving sockets passed by the service manager fds=3 names=vm1/);
      await waitUntil(
        () => drainNotifications(notify, notifications).some((n) => /^READY=1$/m.test(n)),
        "READY=1",
      );

      process.kill(first, "SIGUSR2");
      // A transfer sent while the handover runs waits for the successor.
      await roundTrip(guest, 0x11, 0xa5);
      const successor = await handedOverTo(log);
      assert.notEqual(successor, first);
      await waitUntil(() => !alive(first), "the predecessor to exit");
      for (let offset = 0x12; offset < 0x18; offset++) await roundTrip(guest, offset, offset);
      await roundTrip(guest, 0x10, 0x5b);
      assert.equal(stderr.match(/front-end connected/g)?.length, 1, "one connection, never redone");
      assert.match(stderr, /front-end resumed/);
      assert.doesNotMatch(stderr, /front-end disconnected/);
      assert.ok(isSocket(path), "the socket file stays through the handover");

      // systemd learns the new main process before it serves, then hears it is ready.
      await waitUntil(() => {
        const all = drainNotifications(notify, notifications).join("\n---\n");
        return (
          all.includes(`MAINPID=${successor}`) &&
          all.split(`MAINPID=${successor}`)[1]?.includes("READY=1") === true
        );
      }, `MAINPID=${successor} then READY=1`);
      assert.ok(
        !notifications.some((n) => /^STOPPING=1$/m.test(n)),
        "the predecessor does not say it stops: systemd would stop the service",
      );

      // The successor's listening socket accepts: the same VM reconnects, another front-end too.
      await guest.close();
      guests.length = 0;
      await waitUntil(() => /front-end disconnected/.test(stderr), "the disconnect");
      const again = await I2cGuest.connect(path);
      guests.push(again);
      const [read] = await transferOk(again, [
        { addr: EEPROM, write: Uint8Array.of(0x10) },
        { addr: EEPROM, read: 8 },
      ]);
      assert.deepEqual([...(read ?? [])], [0x5b, 0xa5, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17]);
      assert.equal(stderr.match(/front-end connected/g)?.length, 2);
      await again.close();
      guests.length = 0;

      process.kill(successor, "SIGTERM");
      await waitUntil(() => !alive(successor), "the successor to stop");
      assert.ok(isSocket(path), "the daemon never removes a socket it inherited");
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      error.message += `\n--- daemon stderr ---\n${stderr}--- notifications ---\n${notifications.join("\n---\n")}\n`;
      throw error;
    } finally {
      for (const guest of guests) await guest.close();
      killGroup(first);
      notify.close();
    }
  });
});

describe("socket activation and handover under FdStoreSupervisor", () => {
  it("follows MAINPID= to the successor; a killed successor restarts on the same listening socket", async () => {
    const path = join(dir.path, "kit.sock");
    const supervisor = FdStoreSupervisor.start({
      command: [process.execPath, MAIN_JS, ...daemonArgs("supervised.bin")],
      dir: dir.path,
      listen: [{ path, name: "vm1" }],
    });
    const guests: I2cGuest[] = [];
    try {
      const first = await supervisor.waitFor("ready");
      const guest = await I2cGuest.connect(path);
      guests.push(guest);
      await roundTrip(guest, 0x20, 0x01);

      supervisor.kill("SIGUSR2");
      await roundTrip(guest, 0x21, 0x02);
      const change = await supervisor.waitFor("mainpid");
      assert.equal(change.previous, first.pid);
      await supervisor.waitFor("ready", { where: (event) => event.pid === change.pid });
      const old = await supervisor.waitFor("exited", { where: (event) => event.pid === first.pid });
      assert.equal(old.main, false);
      await roundTrip(guest, 0x22, 0x03);
      assert.equal(supervisor.events.filter((event) => event.kind === "started").length, 1);
      assert.equal(supervisor.mainPid, change.pid);

      // Without --fd-store a crash loses the connection: the restarted daemon serves new ones.
      const mark = supervisor.mark();
      supervisor.kill("SIGKILL");
      const restarted = await supervisor.waitFor("started", { since: mark });
      assert.deepEqual(restarted.fdNames, ["vm1"]);
      await supervisor.waitFor("ready", { since: mark, where: (e) => e.pid === restarted.pid });
      await guest.close();
      guests.length = 0;
      const again = await I2cGuest.connect(path);
      guests.push(again);
      await roundTrip(again, 0x23, 0x04);
      const [read] = await transferOk(again, [
        { addr: EEPROM, write: Uint8Array.of(0x20) },
        { addr: EEPROM, read: 3 },
      ]);
      assert.deepEqual([...(read ?? [])], [0x01, 0x02, 0x03], "the backing file kept every write");
      await again.close();
      guests.length = 0;
      assert.deepEqual(await supervisor.stop(), { code: 0, signal: null });
    } catch (err) {
      throw supervisor.withLog(err);
    } finally {
      for (const guest of guests) await guest.close();
      await supervisor.stop();
    }
  });
});

describe("the state of an emulated chip across a handover", () => {
  it("an EEPROM without a backing file keeps what the guest wrote", async () => {
    const path = join(dir.path, "unbacked.sock");
    const supervisor = FdStoreSupervisor.start({
      command: [process.execPath, MAIN_JS, ...memoryEepromArgs(dir.path), "--log-level", "debug"],
      dir: dir.path,
      listen: [{ path, name: "vm1" }],
    });
    let guest: I2cGuest | null = null;
    try {
      await supervisor.waitFor("ready");
      guest = await I2cGuest.connect(path);
      await roundTrip(guest, 0x30, 0x5a);
      supervisor.kill("SIGUSR2");
      const change = await supervisor.waitFor("mainpid");
      await supervisor.waitFor("ready", { where: (event) => event.pid === change.pid });
      const [read] = await transferOk(guest, [
        { addr: EEPROM, write: Uint8Array.of(0x30) },
        { addr: EEPROM, read: 1 },
      ]);
      assert.deepEqual([...(read ?? [])], [0x5a]);
    } catch (err) {
      throw supervisor.withLog(err);
    } finally {
      await guest?.close();
      await supervisor.stop();
    }
  });
});
