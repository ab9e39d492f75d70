/**
 * Fault tolerance of the real daemon (`-c 3`, emulated 24c02) against misbehaving front-ends:
 * - a guest that never reads its used ring, a front-end stalled in the middle of a message, one that
 *   connects and never speaks, a guest that opens a transfer and never finishes it: the other socket
 *   keeps full service meanwhile (every transfer completes; no timing asserted beyond a deadline);
 * - 1000 front-ends killed with transfers in flight (most in-process, their socket closed abruptly with
 *   chains queued; some real child processes killed with SIGKILL): afterwards the daemon holds the
 *   same fds and mappings as before, and its RSS grew by at most a small slack.
 * Talks to the daemon only through its sockets, signals and /proc.
 * @module
 */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { RequestFlag, RequestStatus } from "../src/i2c/protocol.js";
import { UnixStream } from "../src/sys/unix-socket.js";
import { encodeHeader } from "../src/vhost-user/codec.js";
import { HeaderFlag, Request } from "../src/vhost-user/protocol.js";
import {
  assertServes,
  assertTransfer,
  EEPROM_ADDR,
  settledFootprint,
  startThreeSocketDaemon,
  type ThreeSocketDaemon,
  whenSocketFree,
} from "./fuzz/harness.js";
import { itWithDaemonLog, waitUntil, withTimeout } from "./helpers/daemon.js";

const FRONTEND_JS = fileURLToPath(new URL("./robustness-frontend.js", import.meta.url));
/** Generous: only a daemon that stopped serving misses it. */
const DEADLINE_MS = 30_000;

/** Transfers on the healthy socket while the others misbehave: all must complete. */
async function serveMany(path: string, count: number): Promise<void> {
  const guest = await whenSocketFree(() => I2cGuest.connect(path));
  try {
    for (let i = 0; i < count; i++) await assertTransfer(guest, i, 0xe0);
  } finally {
    await guest.close();
  }
}

describe("misbehaving front-ends do not take service from the others", () => {
  let daemon: ThreeSocketDaemon;

  before(async () => {
    daemon = await startThreeSocketDaemon();
  });

  after(async () => {
    await daemon?.stop();
  });

  /** `it` whose failure carries the daemon's stderr. */
  const check = itWithDaemonLog(() => daemon.daemon);

  check("a guest that never reads its used ring, a half message, a silent front-end", async () => {
    const [stuckPath, stalledPath, healthyPath] = daemon.paths as [string, string, string];
    // Socket 0: fills its ring, kicks, never collects a used entry nor waits for a call.
    const deaf = await I2cGuest.connect(stuckPath, { queueSize: 8 });
    deaf.queues[0]!.driver.disableCallbacks();
    let queued = 0;
    for (;;) {
      const submission = deaf.driver.submit([
        { addr: EEPROM_ADDR, write: Uint8Array.of(0x10, queued & 0xff) },
      ]);
      if (submission.chains.length === 0) break;
      queued++;
    }
    deaf.driver.kick();
    assert.ok(queued > 0);
    // Socket 1: a SET_MEM_TABLE header promising 72 bytes, and 20 of them.
    const stalled = UnixStream.connect(stalledPath);
    const header = encodeHeader({
      request: Request.SET_MEM_TABLE,
      flags: HeaderFlag.VERSION,
      size: 72,
    });
    stalled.send(Uint8Array.of(...header, ...new Uint8Array(20)));
    try {
      await withTimeout(serveMany(healthyPath, 200), DEADLINE_MS, "200 transfers on socket 2");
      // Then socket 1 holds a front-end that connected and never says anything.
      stalled.close();
      const silent = await whenSocketFree(async () => {
        const stream = UnixStream.connect(stalledPath);
        return stream;
      });
      try {
        await withTimeout(serveMany(healthyPath, 200), DEADLINE_MS, "200 more on socket 2");
      } finally {
        silent.close();
      }
    } finally {
      stalled.close();
      await deaf.close();
    }
    assert.equal(daemon.daemon.hasExited, false);
  });

  check(
    "a transfer opened with FAIL_NEXT and never finished stalls nothing; finishing it completes it",
    async () => {
      // Regression: the daemon used to spin forever on a ring holding only the start of a transfer.
      const [openPath, , healthyPath] = daemon.paths as [string, string, string];
      const guest = await whenSocketFree(() => I2cGuest.connect(openPath));
      try {
        // First message of a write+read: out_hdr with FAIL_NEXT ("more of this transfer follows").
        const ram = guest.ram;
        const hdr = ram.alloc(16);
        const data = ram.alloc(16);
        const status = ram.alloc(16);
        const header = new DataView(new ArrayBuffer(8));
        header.setUint16(0, EEPROM_ADDR << 1, true);
        header.setUint32(4, RequestFlag.FAIL_NEXT, true);
        ram.memory.write(hdr, new Uint8Array(header.buffer));
        ram.memory.write(data, Uint8Array.of(0x00));
        ram.memory.write(status, Uint8Array.of(0xee));
        const first = guest.driver.submitRaw([
          { gpa: hdr, len: 8, writable: false },
          { gpa: data, len: 1, writable: false },
          { gpa: status, len: 1, writable: true },
        ]);
        guest.driver.kick();
        await withTimeout(
          serveMany(healthyPath, 50),
          DEADLINE_MS,
          "socket 2 while socket 0 holds half a transfer",
        );
        assert.equal(first.usedLen, null, "the opened transfer waits for its rest");
        // The rest arrives: the whole transfer runs.
        const rest = guest.driver.submit([{ addr: EEPROM_ADDR, read: 1 }]);
        const read = await guest.driver.wait(rest);
        await guest.driver.waitFor([first]);
        const statusByte = new Uint8Array(1);
        ram.memory.read(status, statusByte);
        assert.equal(statusByte[0], RequestStatus.OK);
        assert.deepEqual(read.statuses, [RequestStatus.OK]);
      } finally {
        await guest.close();
      }
    },
  );
});

describe("1000 front-ends killed with transfers in flight leak nothing", () => {
  let daemon: ThreeSocketDaemon;

  before(async () => {
    daemon = await startThreeSocketDaemon();
  });

  after(async () => {
    await daemon?.stop();
  });

  /** In-process: chains queued and kicked, then the socket closed without a word. */
  async function abruptClose(path: string, round: number): Promise<void> {
    const guest = await whenSocketFree(() => I2cGuest.connect(path, { queueSize: 16 }));
    for (let i = 0; i < 4; i++) {
      guest.driver.submit([{ addr: EEPROM_ADDR, write: Uint8Array.of(0x60 + i, round & 0xff) }], {
        kick: false,
      });
    }
    guest.driver.kick();
    await guest.close();
  }

  /** A child process running transfers, killed with SIGKILL once it is busy. */
  async function killedChild(path: string): Promise<void> {
    const child = spawn(process.execPath, [FRONTEND_JS, path], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
    });
    const exited = new Promise((resolve) => child.on("close", resolve));
    try {
      await waitUntil(
        () => output.includes("busy\n") || child.exitCode !== null,
        "child busy",
        DEADLINE_MS,
      );
      assert.ok(output.includes("busy\n"), `the child front-end ran transfers: ${output}`);
    } finally {
      child.kill("SIGKILL");
      await exited;
    }
  }

  it("keeps fds and mappings flat and RSS within a small slack", async () => {
    const path = daemon.paths[0]!;
    const KILLS = 1000;
    const CHILD_EVERY = 100; // 10 real SIGKILLed processes; spawning 1000 would not fit the CI budget
    // Warm-up: code compiled, pools and the V8 heap grown to their working size.
    const WARM_UP = 100;
    for (let i = 0; i < WARM_UP; i++) await abruptClose(path, i);
    await killedChild(path);
    await assertServes(path);
    const baseline = await settledFootprint(daemon.daemon, daemon.paths);
    const started = Date.now();
    for (let i = 0; i < KILLS; i++) {
      if (i % CHILD_EVERY === 0) await killedChild(path);
      else await abruptClose(path, i);
    }
    const seconds = (Date.now() - started) / 1000;
    await assertServes(path);
    const afterKills = await settledFootprint(daemon.daemon, daemon.paths);
    console.log(
      `kills=${KILLS} (${KILLS / CHILD_EVERY} SIGKILLed processes) in ${seconds.toFixed(1)} s; ` +
        `fds ${baseline.fds} -> ${afterKills.fds}; maps ${baseline.maps} -> ${afterKills.maps}; ` +
        `RSS ${baseline.rssKiB} -> ${afterKills.rssKiB} KiB`,
    );
    assert.equal(afterKills.fds, baseline.fds, "no fd leaked");
    // Slack: V8 grows its heap in separately mapped pages as it sees more allocation; a leaked guest
    // RAM mapping per kill would add about 1000 lines.
    const MAPS_SLACK = 64;
    assert.ok(
      afterKills.maps <= baseline.maps + MAPS_SLACK,
      `no mapping leaked (${baseline.maps} -> ${afterKills.maps})`,
    );
    // Slack: V8 sizes its heap by allocation history and frees lazily, and malloc keeps freed arenas.
    // This bound catches heap leaks of 16 KiB or more per kill.
    const RSS_SLACK_KIB = 16 * 1024;
    assert.ok(
      afterKills.rssKiB <= baseline.rssKiB + RSS_SLACK_KIB,
      `RSS ${baseline.rssKiB} -> ${afterKills.rssKiB} KiB`,
    );
    assert.equal(daemon.daemon.hasExited, false);
  });
});
