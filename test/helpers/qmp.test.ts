/**
 * Tests of the QMP client: against a scripted server (greeting, capabilities, replies in order,
 * errors, events before and after the wait starts, a closed connection), and against a real QEMU
 * without a guest (skips by name when QEMU is missing).
 * Must not start the daemon.
 */

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import { makeTempDir } from "./daemon.js";
import { qemuBinary } from "./guest.js";
import { QmpClient, QmpError, qmpArgs } from "./qmp.js";

/** A QMP server on `path` that answers each command with `answer(command, args)` (a JSON reply without its id). */
async function scriptedServer(
  path: string,
  answer: (command: string, socket: Socket) => Record<string, unknown> | null,
): Promise<{ close(): void; received: string[] }> {
  const received: string[] = [];
  const sockets: Socket[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.setEncoding("utf8");
    socket.write('{"QMP": {"version": {"qemu": {"major": 10}}, "capabilities": []}}\r\n');
    let buffered = "";
    socket.on("data", (chunk: string) => {
      buffered += chunk;
      for (let end = buffered.indexOf("\n"); end >= 0; end = buffered.indexOf("\n")) {
        const request = JSON.parse(buffered.slice(0, end)) as { execute: string; id: number };
        buffered = buffered.slice(end + 1);
        received.push(request.execute);
        const reply = answer(request.execute, socket);
        if (reply) socket.write(`${JSON.stringify({ ...reply, id: request.id })}\r\n`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    received,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

describe("QmpClient", () => {
  it("negotiates capabilities, returns replies and errors, and finds events before and after the wait", async () => {
    const tmp = makeTempDir("vdi2c-qmp-");
    const path = join(tmp.path, "qmp.sock");
    const server = await scriptedServer(path, (command, socket) => {
      if (command === "device_del") {
        // The event may come before or after the reply; here the reply goes first, the event later.
        setTimeout(() => {
          socket.write(
            '{"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/x/virtio-backend"}}\r\n',
          );
          socket.write(
            '{"event": "DEVICE_DELETED", "data": {"device": "x", "path": "/machine/peripheral/x"}}\r\n',
          );
        }, 20);
        return { return: {} };
      }
      if (command === "chardev-remove") {
        return { error: { class: "GenericError", desc: "Chardev 'c9' not found" } };
      }
      if (command === "query-status") {
        socket.write('{"event": "RESUME"}\r\n');
        return { return: { status: "running" } };
      }
      return { return: {} };
    });
    const qmp = await QmpClient.connect(path);
    try {
      assert.deepEqual(await qmp.execute("query-status"), { status: "running" });
      assert.equal((await qmp.waitForEvent("RESUME")).event, "RESUME", "an event already received");
      const since = qmp.events.length;
      await qmp.execute("device_del", { id: "x" });
      const deleted = await qmp.waitForEvent("DEVICE_DELETED", {
        match: (event) => event.data?.device === "x",
        since,
      });
      assert.equal(deleted.data?.path, "/machine/peripheral/x");
      await assert.rejects(
        qmp.waitForEvent("RESUME", { since: qmp.events.length, ms: 50 }),
        /timed out/,
        "an event before `since` counted",
      );
      await assert.rejects(qmp.execute("chardev-remove", { id: "c9" }), (error: unknown) => {
        assert.ok(error instanceof QmpError);
        assert.equal(error.errorClass, "GenericError");
        assert.match(error.message, /chardev-remove: GenericError: Chardev 'c9' not found/);
        return true;
      });
      await assert.rejects(qmp.waitForEvent("SHUTDOWN", { ms: 50 }), /timed out/);
      assert.deepEqual(server.received, [
        "qmp_capabilities",
        "query-status",
        "device_del",
        "chardev-remove",
      ]);
      server.close();
      await assert.rejects(qmp.waitForEvent("SHUTDOWN", { ms: 5_000 }), /closed/);
      await assert.rejects(qmp.execute("query-status"), /closed/);
    } finally {
      qmp.close();
      server.close();
      tmp.remove();
    }
  });
});

const qemuSkip =
  spawnSync(qemuBinary(), ["--version"], { stdio: "ignore" }).status === 0
    ? false
    : `${qemuBinary()} is not installed`;

describe("QmpClient against QEMU", { skip: qemuSkip }, () => {
  it("talks to a QEMU without a guest (machine none) and sees it quit", async () => {
    const tmp = makeTempDir("vdi2c-qmp-qemu-");
    const path = join(tmp.path, "qmp.sock");
    const qemu = spawn(
      qemuBinary(),
      ["-machine", "none", "-nodefaults", "-display", "none", "-S", ...qmpArgs(path)],
      { stdio: "ignore" },
    );
    const exited = new Promise<number | null>((resolve) => qemu.on("exit", resolve));
    const qmp = await QmpClient.connect(path);
    try {
      const version = (await qmp.execute("query-version")) as { qemu: { major: number } };
      assert.ok(version.qemu.major >= 7, JSON.stringify(version));
      await qmp.execute("quit");
      assert.equal((await qmp.waitForEvent("SHUTDOWN")).event, "SHUTDOWN");
      assert.equal(await exited, 0);
    } finally {
      qmp.close();
      qemu.kill("SIGKILL");
      tmp.remove();
    }
  });
});
