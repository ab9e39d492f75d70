/**
 * What a socket peer can cost the real daemon, and what it cannot:
 * - a VMM that sends requests and never reads a reply: the daemon stops reading it, its RSS stays
 *   flat, the peer is disconnected once its replies have waited past the deadline, and the other
 *   socket keeps serving meanwhile;
 * - a connection that stays silent, or stalls before the vhost-user set-up is done, is dropped after
 *   --handshake-timeout, and then a real front-end is served; one that finished the set-up may wait
 *   as long as it likes (a guest that has not loaded its driver);
 * - a loop of connects to a socket that already has its front-end writes a bounded number of
 *   "refusing" lines, the rest counted in `stats` (`logSuppressed`), and does not silence the
 *   connected front-end's own lines.
 * Talks to the daemon only through its sockets, its log and /proc.
 * @module
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe } from "node:test";
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { promisify } from "node:util";
import { ControlClient } from "../src/control/client.js";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { native } from "../src/sys/native.js";
import { UnixStream } from "../src/sys/unix-socket.js";
import { encodeHeader } from "../src/vhost-user/codec.js";
import { FrontendError, VhostUserFrontend } from "../src/vhost-user/frontend.js";
import { HeaderFlag, Request } from "../src/vhost-user/protocol.js";
import { assertServes, assertTransfer, footprint, whenSocketFree } from "./fuzz/harness.js";
import { memoryEepromArgs } from "./helpers/configured-daemon.js";
import {
  type DaemonProcess,
  itWithDaemonLog,
  MAIN_JS,
  makeTempDir,
  startDaemon,
  waitUntil,
} from "./helpers/daemon.js";

const dir = makeTempDir("vdi2c-peer-");
after(() => dir.remove());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts `-c count` on a 24c02 without write cycle with `extra` options; `stop()` also checks exit status 0. */
async function startOn(
  name: string,
  count: number,
  extra: readonly string[] = [],
): Promise<{ daemon: DaemonProcess; paths: string[]; stop(): Promise<void> }> {
  const prefix = `${dir.path}/${name}.sock`;
  const paths = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
  const daemon = await startDaemon(
    ["-s", prefix, "-c", String(count), ...memoryEepromArgs(dir.path), ...extra],
    paths,
  );
  return {
    daemon,
    paths,
    async stop() {
      const status = await daemon.stop();
      assert.deepEqual(status, { code: 0, signal: null }, "SIGTERM exits 0");
    },
  };
}

/** Every GET_FEATURES the peer sends: a bare 12-byte header. */
const GET_FEATURES = encodeHeader({
  request: Request.GET_FEATURES,
  flags: HeaderFlag.VERSION,
  size: 0,
});

/**
 * A VMM that writes GET_FEATURES headers as fast as its socket takes them and never reads a reply.
 * Partial writes keep their place in the batch, so the daemon always sees whole headers.
 */
async function floodWithoutReading(
  path: string,
  stop: () => boolean,
): Promise<{ sentBytes: number; hangUp: string | null }> {
  const stream = UnixStream.connect(path);
  const batch = new Uint8Array(GET_FEATURES.length * 4096);
  for (let at = 0; at < batch.length; at += GET_FEATURES.length) batch.set(GET_FEATURES, at);
  let offset = 0;
  let sentBytes = 0;
  try {
    while (!stop()) {
      let n: number;
      try {
        n = native().sendMsg(stream.fd, batch, offset, batch.length - offset, []);
      } catch (error) {
        return { sentBytes, hangUp: (error as { code?: string }).code ?? String(error) };
      }
      if (n < 0) {
        await sleep(1); // the socket is full: the daemon is not reading
        continue;
      }
      sentBytes += n;
      offset = (offset + n) % batch.length;
      await yieldToLoop();
    }
    return { sentBytes, hangUp: null };
  } finally {
    stream.close();
  }
}

describe("a VMM that never reads its replies", () => {
  let daemon: Awaited<ReturnType<typeof startOn>>;
  const check = itWithDaemonLog(() => daemon.daemon);
  before(async () => {
    daemon = await startOn("noread", 2);
  });
  after(async () => {
    await daemon?.stop();
  });

  check(
    "is read no further, keeps RSS flat, is disconnected after the send deadline; -c 2's other socket serves meanwhile",
    async () => {
      const [floodPath, healthyPath] = daemon.paths as [string, string];
      const healthy = await I2cGuest.connect(healthyPath);
      try {
        await assertTransfer(healthy, 1); // warm-up: the healthy session's memory is in the baseline
        const baselineKiB = footprint(daemon.daemon.pid).rssKiB;
        // Fails fast without backpressure: the reply queue grows by about 100 MiB/s.
        const ABORT_KIB = 256 * 1024;
        // The send deadline is 10 s; past this the peer was not disconnected.
        const GIVE_UP_MS = 25_000;
        let peakKiB = baselineKiB;
        let done = false;
        const started = Date.now();
        const sampler = setInterval(() => {
          peakKiB = Math.max(peakKiB, footprint(daemon.daemon.pid).rssKiB);
          if (peakKiB - baselineKiB > ABORT_KIB || Date.now() - started > GIVE_UP_MS) done = true;
        }, 100);
        let served = 0;
        let serveError: unknown = null;
        const flood = floodWithoutReading(floodPath, () => done).finally(() => {
          done = true;
        });
        try {
          while (!done) {
            try {
              await assertTransfer(healthy, served & 0xff, 0xe0);
            } catch (error) {
              serveError = error;
              break;
            }
            served++;
            await sleep(20);
          }
        } finally {
          done = true;
          clearInterval(sampler);
        }
        const { sentBytes, hangUp } = await flood;
        const seconds = (Date.now() - started) / 1000;
        console.log(
          `flood: ${(sentBytes / 1e6).toFixed(2)} MB of requests in ${seconds.toFixed(1)} s, ` +
            `RSS ${baselineKiB} -> peak ${peakKiB} KiB, ${served} transfers on the other socket, ` +
            `hang-up ${hangUp}`,
        );
        assert.ok(
          peakKiB - baselineKiB < 48 * 1024,
          `RSS grew by ${peakKiB - baselineKiB} KiB while the peer flooded`,
        );
        assert.notEqual(hangUp, null, "the daemon disconnected the peer");
        assert.ok(seconds >= 9, `disconnected after the 10 s deadline, not before (${seconds} s)`);
        assert.ok(
          sentBytes < 16 * 1024 * 1024,
          `the daemon stopped reading: the peer could send only ${sentBytes} bytes`,
        );
        // The peer sees the hang-up before the daemon's line about it reaches the test's pipe.
        await waitUntil(
          () =>
            /\[socket0\] front-end disconnected reason=protocol detail="the peer does not read: \d+ bytes unsent after 10000 ms"/.test(
              daemon.daemon.stderr,
            ),
          "the disconnect to be logged",
        );
        assert.equal(serveError, null, "every transfer on the other socket completed");
        assert.ok(served >= 50, `the other socket kept serving (${served} transfers)`);
      } finally {
        await healthy.close();
      }
      await assertServes(floodPath); // the slot is free again
      assert.equal(daemon.daemon.hasExited, false);
    },
  );
});

/** Resolves when the daemon closed `stream` (EOF or reset); never reads a message. */
async function hungUp(stream: UnixStream, ms: number): Promise<void> {
  const buf = new Uint8Array(64);
  await waitUntil(
    () => {
      try {
        return stream.recv(buf, 0, buf.length, []) === 0;
      } catch (error) {
        if ((error as { code?: string }).code === "ECONNRESET") return true;
        throw error;
      }
    },
    "the daemon to hang up",
    ms,
  );
}

describe("--handshake-timeout: a connection that does not finish the vhost-user set-up", () => {
  let daemon: Awaited<ReturnType<typeof startOn>>;
  const check = itWithDaemonLog(() => daemon.daemon);
  before(async () => {
    daemon = await startOn("squat", 1, ["--handshake-timeout", "1"]);
  });
  after(async () => {
    await daemon?.stop();
  });

  check(
    "silent from the start: dropped after the deadline, then a real front-end is served",
    async () => {
      const path = daemon.paths[0]!;
      const squatter = UnixStream.connect(path);
      try {
        const started = Date.now();
        await waitUntil(() => daemon.daemon.stderr.includes("front-end connected"), "the squat");
        await assert.rejects(
          I2cGuest.connect(path),
          (error: unknown) => error instanceof FrontendError && error.code === "EREFUSED",
          "the real front-end is refused while the squatter holds the socket",
        );
        await hungUp(squatter, 5_000);
        const waited = Date.now() - started;
        assert.ok(waited >= 900, `dropped after the deadline, not before (${waited} ms)`);
        assert.match(
          daemon.daemon.stderr,
          /WARN \[socket0\] dropping a front-end that did not finish the vhost-user set-up in time seconds=1\n/,
        );
      } finally {
        squatter.close();
      }
      await assertServes(path);
    },
  );

  check("stalled in the middle of the set-up (features asked, no SET_OWNER): dropped", async () => {
    const path = daemon.paths[0]!;
    const stalled = await whenSocketFree(async () => {
      const frontend = VhostUserFrontend.connect(path);
      try {
        await frontend.getFeatures();
        await frontend.getProtocolFeatures();
        return frontend;
      } catch (error) {
        frontend.close();
        throw error;
      }
    });
    try {
      const reason = await Promise.race([stalled.whenClosed(), sleep(5_000).then(() => null)]);
      assert.equal(reason?.kind, "eof", "the daemon hung up on the stalled front-end");
    } finally {
      stalled.close();
    }
    await assertServes(path);
  });

  check("a front-end that finished the set-up may then wait past the deadline", async () => {
    const path = daemon.paths[0]!;
    // Like QEMU after realize, before the guest's driver starts the ring: nothing for a while.
    const frontend = await whenSocketFree(async () => {
      const connected = VhostUserFrontend.connect(path);
      try {
        await connected.getFeatures();
        await connected.setOwner();
        return connected;
      } catch (error) {
        connected.close();
        throw error;
      }
    });
    try {
      await sleep(2_500);
      assert.equal(frontend.closed, false, "still connected after 2.5 deadlines");
      assert.ok((await frontend.getFeatures()) > 0n, "and still answered");
    } finally {
      frontend.close();
    }
  });
});

describe("a loop of connects to a socket that has its front-end", () => {
  let daemon: Awaited<ReturnType<typeof startOn>>;
  const check = itWithDaemonLog(() => daemon.daemon);
  const control = `${dir.path}/flood.ctl`;
  before(async () => {
    daemon = await startOn("flood", 1, ["--control-socket", control]);
  });
  after(async () => {
    await daemon?.stop();
  });

  check(
    "writes a bounded number of lines, counts the rest in stats' logSuppressed, and leaves the front-end's own lines alone",
    async () => {
      const path = daemon.paths[0]!;
      const vm = await I2cGuest.connect(path);
      const client = await ControlClient.connect(control);
      try {
        const SECONDS = 2;
        let connects = 0;
        const end = Date.now() + SECONDS * 1000;
        while (Date.now() < end) {
          let stream: UnixStream;
          try {
            stream = UnixStream.connect(path);
          } catch (error) {
            // Connects never block: a full backlog answers EAGAIN until the daemon accepts.
            if ((error as { code?: string }).code !== "EAGAIN") throw error;
            await yieldToLoop();
            continue;
          }
          stream.close();
          connects++;
          if (connects % 64 === 0) await yieldToLoop();
        }
        const refusing = () =>
          daemon.daemon.stderr.split("refusing a second connection").length - 1;
        /** This socket's refusals counted in stats' logSuppressed (0 while there is none). */
        const suppressedRefusals = async (): Promise<number> => {
          const reply = await client.request("stats");
          assert.match(reply, /^ok \{/);
          const stats = JSON.parse(reply.slice(3)) as {
            logSuppressed?: { bySource: Record<string, number> };
          };
          return stats.logSuppressed?.bySource["socket0/connections"] ?? 0;
        };
        // Every refused connect is a line written or a line counted as suppressed.
        let counted = 0;
        const deadline = Date.now() + 10_000;
        for (;;) {
          counted = await suppressedRefusals();
          if (counted + refusing() === connects || Date.now() > deadline) break;
          await sleep(50);
        }
        console.log(
          `${connects} connects in ${SECONDS} s: ${refusing()} lines, ${counted} suppressed`,
        );
        assert.ok(connects > 500, `the loop connected ${connects} times`);
        // 10 lines per second per source, in at most SECONDS + 1 windows.
        assert.ok(refusing() <= 10 * (SECONDS + 1), `${refusing()} "refusing" lines`);
        assert.equal(counted + refusing(), connects, "each refusal is written or counted");
        assert.match(
          daemon.daemon.stderr,
          /refusing a second connection: a front-end is already connected path=\S+ suppressed=\d+\n/,
        );
        // The connected front-end's lines have a budget of their own: its failed request is logged.
        await vm.frontend.setVringKick(0, null);
        await daemon.daemon.waitForLog(/WARN \[socket0\] request failed request=SET_VRING_KICK/);
        // The CLI client shows the same count.
        const { stdout } = await promisify(execFile)(process.execPath, [
          MAIN_JS,
          "control",
          control,
          "stats",
        ]);
        const stats = JSON.parse(stdout) as {
          logSuppressed: { total: number; bySource: Record<string, number> };
        };
        assert.equal(stats.logSuppressed.bySource["socket0/connections"], counted);
        assert.ok(stats.logSuppressed.total >= counted);
      } finally {
        client.close();
        await vm.close();
      }
    },
  );
});
