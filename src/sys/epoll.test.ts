import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { describe, it } from "node:test";
import { Worker } from "node:worker_threads";
import { notAnAdapterCode } from "../../test/helpers/emulation.js";
import type { EpollWorkerReport } from "../../test/helpers/epoll-worker.js";
import { EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, Epoll } from "./epoll.js";
import { SysArgumentError, SysError } from "./errors.js";
import { EventFd } from "./eventfd.js";
import { native } from "./native.js";

/** ENOTTY, the errno of an I2C ioctl on /dev/null; ENOSYS under qemu-user (test/helpers/emulation.ts). */
const NOT_AN_ADAPTER = notAnAdapterCode();

/** An Epoll and eventfds, closed after `body` whatever happens. */
function withEpoll(count: number, body: (epoll: Epoll, fds: EventFd[]) => void): void {
  const epoll = Epoll.create(8);
  const fds = Array.from({ length: count }, () => EventFd.create());
  try {
    body(epoll, fds);
  } finally {
    for (const fd of fds) fd.close();
    epoll.close();
  }
}

/** [data, events] of every entry of the last wait. */
function entries(epoll: Epoll): Array<[number, number]> {
  const seen: Array<[number, number]> = [];
  for (let i = 0; i < epoll.count; i++) seen.push([epoll.data(i), epoll.events(i)]);
  return seen.sort((a, b) => a[0] - b[0]);
}

describe("Epoll", () => {
  it("reports the ready fds with the data they were added with", () => {
    withEpoll(3, (epoll, [a, b, c]) => {
      epoll.add(a!.fd, 10);
      epoll.add(b!.fd, -7);
      epoll.add(c!.fd, 0x7fffffff);
      assert.equal(epoll.wait(0), 0, "nothing written yet");
      b!.write();
      c!.write(5);
      assert.equal(epoll.wait(1000), 2);
      assert.deepEqual(entries(epoll), [
        [-7, EPOLLIN],
        [0x7fffffff, EPOLLIN],
      ]);
      assert.equal(c!.read(), 5);
      assert.equal(epoll.wait(0), 1, "level-triggered: b is still readable");
      assert.deepEqual(entries(epoll), [[-7, EPOLLIN]]);
    });
  });

  it("modify changes the events waited for and the data; remove stops watching", () => {
    withEpoll(1, (epoll, [a]) => {
      epoll.add(a!.fd, 1, EPOLLIN);
      assert.equal(epoll.wait(0), 0);
      epoll.modify(a!.fd, 2, EPOLLOUT);
      assert.equal(epoll.wait(0), 1, "an eventfd is writable");
      assert.deepEqual(entries(epoll), [[2, EPOLLOUT]]);
      epoll.modify(a!.fd, 3, EPOLLIN | EPOLLET);
      a!.write();
      assert.equal(epoll.wait(0), 1);
      assert.deepEqual(entries(epoll), [[3, EPOLLIN]], "EPOLLET never comes back in events");
      assert.equal(epoll.wait(0), 0, "edge-triggered: reported once");
      epoll.remove(a!.fd);
      a!.write();
      assert.equal(epoll.wait(0), 0);
      assert.throws(() => epoll.remove(a!.fd), { code: "ENOENT", syscall: "epoll_ctl" });
      assert.throws(() => epoll.modify(a!.fd, 1, EPOLLIN), { code: "ENOENT" });
    });
  });

  it("returns 0 when a positive timeout passes, after about that long", () => {
    withEpoll(1, (epoll, [a]) => {
      epoll.add(a!.fd, 1);
      const start = performance.now();
      assert.equal(epoll.wait(30), 0);
      const waited = performance.now() - start;
      assert.ok(waited >= 25 && waited < 1000, `waited ${waited} ms`);
      assert.equal(epoll.count, 0);
    });
  });

  it("reports at most its capacity per wait; the rest come with the next one", () => {
    const epoll = Epoll.create(2);
    const fds = Array.from({ length: 5 }, () => EventFd.create(1));
    try {
      for (const [i, fd] of fds.entries()) epoll.add(fd.fd, i);
      assert.equal(epoll.wait(0), 2);
      const first = entries(epoll).map(([data]) => data);
      for (const data of first) fds[data]!.read();
      assert.equal(epoll.wait(0), 2);
      const second = entries(epoll).map(([data]) => data);
      assert.equal(new Set([...first, ...second]).size, 4);
    } finally {
      for (const fd of fds) fd.close();
      epoll.close();
    }
  });

  it("forgets an fd once it is closed, and refuses to remove it (EBADF)", () => {
    withEpoll(2, (epoll, [a, b]) => {
      epoll.add(a!.fd, 1);
      epoll.add(b!.fd, 2);
      a!.write();
      b!.write();
      const closedFd = a!.fd;
      a!.close();
      assert.equal(epoll.wait(0), 1);
      assert.deepEqual(entries(epoll), [[2, EPOLLIN]]);
      assert.throws(() => epoll.remove(closedFd), { code: "EBADF", syscall: "epoll_ctl" });
    });
  });

  it("reports a hang-up of a watched socket as EPOLLHUP", () => {
    const [mine, theirs] = native().socketPair();
    const epoll = Epoll.create();
    try {
      epoll.add(mine, 9, EPOLLIN);
      native().close(theirs);
      assert.equal(epoll.wait(0), 1);
      assert.equal(epoll.data(0), 9);
      assert.ok((epoll.events(0) & EPOLLHUP) !== 0, `events 0x${epoll.events(0).toString(16)}`);
    } finally {
      native().close(mine);
      epoll.close();
    }
  });

  it("ends a wait interrupted by a signal with 0 instead of an EINTR error", async () => {
    let signals = 0;
    const onSignal = (): void => {
      signals++;
    };
    process.on("SIGUSR2", onSignal);
    try {
      await withEpollAsync(async (epoll) => {
        const sender = spawn("sh", ["-c", `sleep 0.1; kill -USR2 ${process.pid}`]);
        const start = performance.now();
        const count = epoll.wait(5000);
        const waited = performance.now() - start;
        await once(sender, "exit");
        assert.equal(count, 0);
        assert.ok(waited < 4000, `the signal ended the wait (waited ${waited} ms)`);
        await new Promise((resolve) => setImmediate(resolve));
        assert.equal(signals, 1);
      });
    } finally {
      process.off("SIGUSR2", onSignal);
    }
  });

  it("checks its arguments and refuses every call after close", () => {
    assert.throws(() => Epoll.create(0), SysArgumentError);
    assert.throws(() => Epoll.create(513), SysArgumentError);
    withEpoll(1, (epoll, [a]) => {
      assert.throws(() => epoll.add(a!.fd, 2 ** 31), SysArgumentError);
      assert.throws(() => epoll.add(a!.fd, 1.5), SysArgumentError);
      assert.throws(() => epoll.add(-1, 1), SysArgumentError);
      assert.throws(() => epoll.add(a!.fd, 1, 2 ** 32), SysArgumentError);
      assert.throws(() => epoll.wait(-2), SysArgumentError);
      assert.throws(() => epoll.wait(0.5), SysArgumentError);
      assert.equal(epoll.wait(0), 0);
      assert.throws(() => epoll.data(0), SysArgumentError);
      epoll.close();
      epoll.close();
      assert.equal(epoll.fd, -1);
      assert.throws(
        () => epoll.wait(0),
        (e: unknown) => e instanceof SysError && e.code === "EBADF",
      );
      assert.throws(() => epoll.add(a!.fd, 1), { code: "EBADF", syscall: "epoll_ctl" });
    });
  });
});

async function withEpollAsync(body: (epoll: Epoll) => Promise<void>): Promise<void> {
  const epoll = Epoll.create();
  const idle = EventFd.create();
  try {
    epoll.add(idle.fd, 0);
    await body(epoll);
  } finally {
    idle.close();
    epoll.close();
  }
}

describe("addon epoll calls", () => {
  const binding = native();

  it("epollWait fills [data, events] pairs and checks out and timeoutMs", () => {
    const epfd = binding.epollCreate();
    const efd = binding.eventfd(1);
    try {
      binding.epollCtl(epfd, 1, efd, EPOLLIN, -2);
      const out = new Int32Array(3); // room for one entry: the odd element stays untouched
      out[2] = 99;
      assert.equal(binding.epollWait(epfd, out, 0), 1);
      assert.deepEqual([...out], [-2, EPOLLIN, 99]);
      assert.throws(() => binding.epollWait(epfd, new Int32Array(1), 0), TypeError);
      assert.throws(() => binding.epollWait(epfd, new Uint32Array(2) as never, 0), TypeError);
      assert.throws(() => binding.epollWait(epfd, out, -2), { code: "ERR_OUT_OF_RANGE" });
      assert.throws(() => binding.epollCtl(epfd, 4, efd, EPOLLIN, 0), { code: "ERR_OUT_OF_RANGE" });
      assert.throws(() => binding.epollCtl(epfd, 1, efd, EPOLLIN, 2 ** 31), {
        code: "ERR_OUT_OF_RANGE",
      });
      assert.throws(() => binding.epollCtl(epfd, 1, efd, EPOLLIN, 0), {
        code: "EEXIST",
        errno: 17,
        syscall: "epoll_ctl",
      });
      assert.throws(() => binding.epollWait(efd, out, 0), {
        code: "EINVAL",
        syscall: "epoll_wait",
      });
    } finally {
      binding.close(efd);
      binding.close(epfd);
    }
  });
});

describe("the addon in worker threads", () => {
  const WORKER = new URL("../../test/helpers/epoll-worker.js", import.meta.url);

  it("loads in two workers at once, waits on eventfds there, and survives their termination, again and again", async () => {
    for (let round = 0; round < 3; round++) {
      const ids = [round * 2 + 1, round * 2 + 2];
      const workers = ids.map((id) => new Worker(WORKER, { workerData: { id } }));
      let reports: EpollWorkerReport[] = [];
      let woken = false;
      try {
        reports = (await Promise.all(
          workers.map((worker) => once(worker, "message").then(([report]) => report)),
        )) as EpollWorkerReport[];
        reports.forEach((report, i) => {
          assert.deepEqual(report.ready, [1, ids[i], EPOLLIN]);
          assert.equal(report.counter, 3);
          assert.equal(report.afterDrain, 0);
          assert.equal(report.inlineTransfer, NOT_AN_ADAPTER);
        });
        // Each worker is blocked in epoll_wait(-1): ask for termination, then wake it.
        const exits = workers.map((worker) => once(worker, "exit"));
        const terminated = workers.map((worker) => worker.terminate());
        for (const report of reports) native().eventfdWrite(report.wakeFd, 1);
        woken = true;
        await Promise.all(terminated);
        const codes = (await Promise.all(exits)).map(([code]) => code);
        assert.deepEqual(codes, [1, 1]);
        for (const report of reports) for (const fd of report.fds) native().close(fd);
      } finally {
        const stopping = workers.map((worker) => worker.terminate());
        // After a failed check the workers are still blocked in epoll_wait(-1), where termination
        // cannot reach them: wake them, or this waits forever instead of reporting the failure.
        if (!woken) for (const report of reports) native().eventfdWrite(report.wakeFd, 1);
        await Promise.all(stopping);
      }
    }
    // The main thread's instance is untouched by the workers' teardown.
    const fd = native().eventfd(2);
    assert.equal(native().eventfdRead(fd), 2);
    native().close(fd);
  });
});
