// The test service manager (fd-store-supervisor.ts) against a small main process (fd-store-sender.ts)
// that stores fds and dies: what a restart passes (order, names, LISTEN_PID, listening sockets first),
// what it drops (FDSTOREREMOVE=1, hang-ups, duplicates, over the limit), MAINPID= hand-overs, the start
// limit and stop(). The daemon's crash tests rely on all of this.
import assert from "node:assert/strict";
import { writeSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { exists, isSocket, makeTempDir } from "./daemon.js";
import type { SenderReport, SenderStep } from "./fd-store-sender.js";
import { FdStoreSupervisor, type FdStoreSupervisorOptions } from "./fd-store-supervisor.js";
import { scaled } from "./time.js";

const SENDER = fileURLToPath(new URL("./fd-store-sender.js", import.meta.url));

const dir = makeTempDir("vdi2c-fdstore-");
after(() => dir.remove());

let runs = 0;

/** A supervisor running the sender with `plan` (step lists per start). */
function supervise(
  plan: readonly (readonly SenderStep[])[],
  options: Partial<FdStoreSupervisorOptions> = {},
): FdStoreSupervisor {
  const counter = join(dir.path, `starts-${runs++}`);
  return FdStoreSupervisor.start({
    command: [process.execPath, SENDER, counter, JSON.stringify(plan)],
    dir: dir.path,
    ...options,
  });
}

/** The report of the sender's run `start` (its own count: a handover successor counts), once printed. */
async function reportOf(supervisor: FdStoreSupervisor, start: number): Promise<SenderReport> {
  let report: SenderReport | undefined;
  const end = Date.now() + scaled(10_000);
  while (report === undefined) {
    report = supervisor.stdout
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as SenderReport)
      .find((candidate) => candidate.start === start);
    if (Date.now() > end) throw new Error(`no report of start ${start}\n${supervisor.describe()}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return report;
}

/** Runs `body`, then stops the supervisor; a failure carries its events and the service's stderr. */
async function using(
  supervisor: FdStoreSupervisor,
  body: (supervisor: FdStoreSupervisor) => Promise<void>,
): Promise<void> {
  try {
    await body(supervisor);
  } catch (err) {
    throw supervisor.withLog(err);
  } finally {
    await supervisor.stop();
  }
}

const READY: SenderStep = { notify: "READY=1\nSTATUS=up" };
const IDLE: SenderStep = { idle: true };

describe("FdStoreSupervisor", () => {
  it("restarts a crashed main process with its stored fds, names and LISTEN_PID; READY, STATUS", async () => {
    const plan: SenderStep[][] = [
      [
        { memfd: "state one", name: "state" },
        { eventfds: 2, name: "kick" },
        READY,
        { kill: "SIGKILL" },
      ],
      [READY, IDLE],
    ];
    await using(supervise(plan, { fdOrder: "arrival" }), async (supervisor) => {
      const first = await reportOf(supervisor, 0);
      assert.equal(first.listenPid, null, "nothing passed on the first start");
      const exited = await supervisor.waitFor("exited");
      assert.deepEqual(
        { main: exited.main, signal: exited.signal, pid: exited.pid },
        { main: true, signal: "SIGKILL", pid: first.pid },
      );
      const second = await reportOf(supervisor, 1);
      assert.equal(second.listenPid, String(second.pid));
      assert.deepEqual(
        second.fds.map(({ fd, name, kind, content }) => ({ fd, name, kind, content })),
        [
          { fd: 3, name: "state", kind: "memfd", content: "state one" },
          { fd: 4, name: "kick", kind: "eventfd", content: undefined },
          { fd: 5, name: "kick", kind: "eventfd", content: undefined },
        ],
      );
      const ready = await supervisor.waitFor("ready", { where: (e) => e.pid === second.pid });
      assert.equal(supervisor.mainPid, second.pid);
      assert.ok(ready.seq > exited.seq);
      assert.equal((await supervisor.waitFor("status")).text, "up");
      const started = await supervisor.waitFor("started", { where: (e) => e.start === 1 });
      assert.deepEqual(started.fdNames, ["state", "kick", "kick"]);
      assert.deepEqual(supervisor.storedNames(), ["state", "kick", "kick"]);
    });
  });

  it("passes stored fds newest first, as systemd does; a clean exit restarts too (Restart=always)", async () => {
    const plan: SenderStep[][] = [
      [{ memfd: "a", name: "first" }, { memfd: "b", name: "second" }, { exit: 0 }],
      [IDLE],
    ];
    await using(supervise(plan), async (supervisor) => {
      const exited = await supervisor.waitFor("exited");
      assert.equal(exited.code, 0);
      const second = await reportOf(supervisor, 1);
      assert.deepEqual(
        second.fds.map((fd) => [fd.name, fd.content]),
        [
          ["second", "b"],
          ["first", "a"],
        ],
      );
    });
  });

  it("passes its listening sockets first, with their names, on every start", async () => {
    const listen = [
      { path: join(dir.path, "vm1.sock"), name: "vm1" },
      { path: join(dir.path, "vm2.sock"), name: "vm2" },
    ];
    const plan: SenderStep[][] = [[{ memfd: "s", name: "state" }, { kill: "SIGTERM" }], [IDLE]];
    await using(supervise(plan, { listen }), async (supervisor) => {
      const first = await reportOf(supervisor, 0);
      assert.deepEqual(
        first.fds.map((fd) => [fd.fd, fd.name, fd.kind]),
        [
          [3, "vm1", "listening socket"],
          [4, "vm2", "listening socket"],
        ],
      );
      assert.equal(first.listenPid, String(first.pid));
      const second = await reportOf(supervisor, 1);
      assert.deepEqual(
        second.fds.map((fd) => [fd.fd, fd.name, fd.kind]),
        [
          [3, "vm1", "listening socket"],
          [4, "vm2", "listening socket"],
          [5, "state", "memfd"],
        ],
      );
      assert.equal((await supervisor.waitFor("exited")).signal, "SIGTERM");
    });
    for (const { path } of listen) assert.ok(!exists(path), `${path} removed on stop`);
  });

  it("lets a test change a stored memfd before the restart", async () => {
    const plan: SenderStep[][] = [[{ memfd: "good", name: "state" }, IDLE], [IDLE]];
    await using(supervise(plan), async (supervisor) => {
      await supervisor.waitFor("stored", { where: (e) => e.name === "state" });
      const [fd] = supervisor.fdsOf("state");
      assert.notEqual(fd, undefined);
      writeSync(fd as number, "bad!", 0);
      supervisor.kill("SIGKILL");
      const second = await reportOf(supervisor, 1);
      assert.equal(second.fds[0]?.content, "bad!");
    });
  });

  it('FDSTOREREMOVE=1 closes every fd of the name; an invalid FDNAME= stores as "stored"', async () => {
    const plan: SenderStep[][] = [
      [
        { eventfds: 3, name: "kick" },
        { memfd: "x", name: "keep" },
        { memfd: "y", name: "bad:name" },
        { remove: "kick" },
        { kill: "SIGKILL" },
      ],
      [IDLE],
    ];
    await using(supervise(plan, { fdOrder: "arrival" }), async (supervisor) => {
      const removed = await supervisor.waitFor("removed");
      assert.deepEqual([removed.name, removed.fds, removed.reason], ["kick", 3, "request"]);
      const second = await reportOf(supervisor, 1);
      assert.deepEqual(
        second.fds.map((fd) => fd.name),
        ["keep", "stored"],
      );
    });
  });

  it("drops a stored socket that hangs up unless FDPOLL=0 came with it", async () => {
    const plan: SenderStep[][] = [
      [
        { socketpair: "polled" },
        { socketpair: "unpolled", poll: false },
        { memfd: "m", name: "memfd" },
        { kill: "SIGKILL" },
      ],
      [IDLE],
    ];
    await using(supervise(plan), async (supervisor) => {
      const hangup = await supervisor.waitFor("removed");
      assert.deepEqual([hangup.name, hangup.reason], ["polled", "hangup"]);
      const second = await reportOf(supervisor, 1);
      assert.deepEqual(second.fds.map((fd) => fd.name).sort(), ["memfd", "unpolled"]);
    });
  });

  it("does not store an open file twice, and refuses fds beyond FileDescriptorStoreMax", async () => {
    const plan: SenderStep[][] = [
      [{ memfd: "m", name: "state" }, { eventfds: 2, name: "kick" }, { kill: "SIGKILL" }],
      [{ again: "state" }, { again: "kick" }, { eventfds: 2, name: "more" }, IDLE],
    ];
    await using(supervise(plan, { fdStoreMax: 4 }), async (supervisor) => {
      await reportOf(supervisor, 1);
      const mark = supervisor.events.findIndex((e) => e.kind === "started" && e.start === 1);
      const again = await supervisor.waitFor("stored", {
        since: mark,
        where: (e) => e.name === "kick",
      });
      assert.deepEqual([again.fds, again.duplicates], [0, 2]);
      const more = await supervisor.waitFor("stored", {
        since: mark,
        where: (e) => e.name === "more",
      });
      assert.equal(more.fds, 1);
      const refused = await supervisor.waitFor("refused");
      assert.equal(refused.fds, 1);
      assert.match(refused.reason, /FileDescriptorStoreMax=4/);
      assert.equal(supervisor.stored().length, 4);
    });
  });

  it("refuses fds sent without FDSTORE=1 and a message with more than 16 fds (the addon's limit); answers BARRIER=1", async () => {
    const plan: SenderStep[][] = [
      [
        { eventfds: 2, name: "bare", bare: true },
        { eventfds: 17, name: "many" },
        { barrier: true },
        IDLE,
      ],
    ];
    await using(supervise(plan), async (supervisor) => {
      const bare = await supervisor.waitFor("refused");
      assert.deepEqual([bare.fds, bare.reason], [2, "fds sent without FDSTORE=1"]);
      const many = await supervisor.waitFor("refused", { since: bare.seq + 1 });
      assert.match(many.reason, /ECTRUNC/);
      await supervisor.waitFor("barrier", { since: many.seq });
      assert.deepEqual(supervisor.stored(), []);
    });
  });

  it("follows MAINPID= to a successor it did not start, and restarts when that one dies", async () => {
    const plan: SenderStep[][] = [
      [{ memfd: "s", name: "state" }, { handover: true }],
      [READY, IDLE],
      [READY, IDLE],
    ];
    await using(supervise(plan), async (supervisor) => {
      const first = await reportOf(supervisor, 0);
      const successor = await reportOf(supervisor, 1);
      const change = await supervisor.waitFor("mainpid");
      assert.deepEqual([change.previous, change.pid], [first.pid, successor.pid]);
      const old = await supervisor.waitFor("exited", { where: (e) => e.pid === first.pid });
      assert.deepEqual([old.main, old.code], [false, 0]);
      await supervisor.waitFor("ready", { where: (e) => e.pid === successor.pid });
      assert.equal(supervisor.events.filter((e) => e.kind === "started").length, 1);

      supervisor.kill("SIGKILL");
      const died = await supervisor.waitFor("exited", { where: (e) => e.pid === successor.pid });
      assert.equal(died.main, true);
      const third = await reportOf(supervisor, 2);
      assert.deepEqual(
        third.fds.map((fd) => [fd.name, fd.content]),
        [["state", "s"]],
      );
      assert.equal(supervisor.mainPid, third.pid);
    });
  });

  it("gives up after StartLimitBurst starts and releases the store", async () => {
    const plan: SenderStep[][] = [[{ memfd: "s", name: "state" }, { exit: 1 }]];
    await using(
      supervise(plan, { restartDelayMs: 10, startLimit: { burst: 3, intervalMs: 60_000 } }),
      async (supervisor) => {
        await supervisor.waitFor("start-limit-hit");
        assert.equal(supervisor.events.filter((e) => e.kind === "started").length, 3);
        const released = await supervisor.waitFor("removed");
        assert.equal(released.reason, "released");
        assert.deepEqual(supervisor.stored(), []);
        assert.equal(supervisor.mainPid, 0);
      },
    );
  });

  it("stop() ends every process of the service with SIGTERM and closes the store", async () => {
    const listen = [{ path: join(dir.path, "stop.sock"), name: "vm" }];
    const supervisor = supervise([[{ memfd: "s", name: "state" }, READY, IDLE]], { listen });
    const report = await reportOf(supervisor, 0);
    await supervisor.waitFor("ready");
    assert.ok(isSocket(listen[0]?.path ?? ""));
    const status = await supervisor.stop();
    assert.deepEqual(status, { code: null, signal: "SIGTERM" });
    assert.throws(() => process.kill(report.pid, 0), { code: "ESRCH" });
    assert.deepEqual(supervisor.stored(), []);
    assert.ok(!exists(supervisor.notifySocket));
    assert.ok(!exists(listen[0]?.path ?? ""));
    assert.equal(supervisor.events.filter((e) => e.kind === "started").length, 1);
  });
});
