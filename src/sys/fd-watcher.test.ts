// Tests for FdWatcher on real eventfds and the real event loop (no timers: ordering only).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { SysError } from "./errors.js";
import { EventFd } from "./eventfd.js";
import { FdWatcher } from "./fd-watcher.js";
import { UnixStream } from "./unix-socket.js";

/** Resolves once `efd` was seen readable by a fresh watcher: the loop has polled since now. */
function pollRound(): Promise<void> {
  const efd = EventFd.create();
  return new Promise((resolve) => {
    const watcher = new FdWatcher(efd.fd, () => {
      efd.read();
      watcher.close();
      efd.close();
      resolve();
    });
    watcher.start();
    efd.write();
  });
}

describe("FdWatcher", () => {
  it("calls back when the fd becomes readable", async () => {
    const efd = EventFd.create();
    const seen = await new Promise<number>((resolve) => {
      const watcher = new FdWatcher(efd.fd, () => {
        watcher.close();
        resolve(efd.read());
      });
      watcher.start();
      efd.write(7);
    });
    efd.close();
    assert.equal(seen, 7);
  });

  it("fires again while the fd is not drained (level-triggered)", async () => {
    const efd = EventFd.create();
    let calls = 0;
    await new Promise<void>((resolve) => {
      const watcher = new FdWatcher(efd.fd, () => {
        calls++;
        if (calls === 3) {
          efd.read();
          watcher.close();
          resolve();
        }
      });
      watcher.start();
      efd.write();
    });
    efd.close();
    assert.equal(calls, 3);
  });

  it("stops firing after stop() and resumes after start()", async () => {
    const efd = EventFd.create();
    let calls = 0;
    let fired: () => void = () => {};
    const nextCall = () => new Promise<void>((resolve) => (fired = resolve));
    const watcher = new FdWatcher(efd.fd, () => {
      calls++;
      efd.read();
      fired();
    });
    watcher.start();
    let called = nextCall();
    efd.write();
    await called;
    assert.equal(calls, 1);

    watcher.stop();
    assert.equal(watcher.active, false);
    efd.write();
    await pollRound();
    await pollRound();
    assert.equal(calls, 1, "a stopped watcher must not fire");

    called = nextCall();
    watcher.start();
    await called;
    assert.equal(calls, 2, "the pending count is reported once restarted");
    watcher.close();
    watcher.close();
    efd.close();
  });

  it("watch(false, true) calls back once a full socket can take data again, and not before", async () => {
    const [writer, reader] = UnixStream.pair();
    const chunk = new Uint8Array(4096);
    for (;;) {
      try {
        writer.send(chunk);
      } catch (error) {
        assert.equal((error as SysError).code, "EAGAIN");
        break;
      }
    }
    let writable = 0;
    let readable = 0;
    let fired: () => void = () => {};
    const watcher = new FdWatcher(
      writer.fd,
      () => readable++,
      undefined,
      () => {
        writable++;
        watcher.stop();
        fired();
      },
    );
    watcher.watch(false, true);
    assert.equal(watcher.active, true);
    await pollRound();
    await pollRound();
    assert.equal(writable, 0, "a full socket is not writable");
    const drained = new Promise<void>((resolve) => (fired = resolve));
    const into = new Uint8Array(1 << 20);
    while (reader.recv(into, 0, into.length, []) > 0) {}
    await drained;
    assert.equal(writable, 1);
    assert.equal(readable, 0, "readability was not asked for");
    watcher.close();
    writer.close();
    reader.close();
  });

  it("refuses start() after close() with EBADF", () => {
    const efd = EventFd.create();
    const watcher = new FdWatcher(efd.fd, () => {});
    watcher.close();
    assert.throws(() => watcher.start(), { code: "EBADF" });
    watcher.stop();
    efd.close();
  });

  it("throws a SysError for an fd that does not exist", () => {
    assert.throws(
      () => new FdWatcher(999_999, () => {}),
      (error: unknown) => error instanceof SysError && error.code === "EBADF",
    );
  });

  it("surfaces an exception thrown by the callback as an uncaught exception", () => {
    const moduleUrl = new URL("./fd-watcher.js", import.meta.url).href;
    const eventfdUrl = new URL("./eventfd.js", import.meta.url).href;
    const script = `
      const { FdWatcher } = await import(${JSON.stringify(moduleUrl)});
      const { EventFd } = await import(${JSON.stringify(eventfdUrl)});
      const efd = EventFd.create();
      const watcher = new FdWatcher(efd.fd, () => { throw new Error("boom from callback"); });
      process.on("uncaughtException", (error) => {
        console.log("caught:" + error.message);
        watcher.close();
        efd.close();
      });
      watcher.start();
      efd.write();
    `;
    const result = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
      cwd: fileURLToPath(new URL(".", import.meta.url)),
      encoding: "utf8",
    });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /caught:boom from callback/);
  });
});
