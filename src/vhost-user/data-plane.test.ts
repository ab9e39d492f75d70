import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { threadId } from "node:worker_threads";
import { EchoDevice } from "../../test/helpers/echo-device.js";
import { createLogger } from "../log.js";
import { hasCode } from "../sys/errors.js";
import { EventFd } from "../sys/eventfd.js";
import { fileSeals } from "../sys/memfd.js";
import {
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from "../virtio/features.js";
import { DataPlane } from "./data-plane.js";
import {
  closeQueues,
  GuestRam,
  realize,
  startQueues,
  stopQueues,
  VhostUserFrontend,
  waitForCall,
} from "./frontend.js";
import { VhostUserServer } from "./server.js";

const dir = mkdtempSync(join(tmpdir(), "vhost-user-data-plane-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const HOST = new URL("../../test/helpers/echo-host.js", import.meta.url);
const INFO = new EchoDevice();

function capture(): { lines: string[]; logger: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, logger: createLogger("info", { write: (line) => lines.push(line) }) };
}

async function echoThrough(plane: DataPlane, features: bigint): Promise<number[]> {
  const path = join(dir, `s${Math.random().toString(36).slice(2)}.sock`);
  const server = VhostUserServer.listen(path, 0, (socket) => plane.device(socket, INFO));
  const ram = new GuestRam();
  const frontend = VhostUserFrontend.connect(path);
  try {
    const negotiated = await realize(frontend, {});
    const queues = await startQueues(frontend, ram, {
      negotiated,
      features: features & negotiated.features,
      queueSize: 8,
    });
    const q = queues[0]!;
    const lengths: number[] = [];
    for (const text of ["one", "three", "fifteen"]) {
      const data = new TextEncoder().encode(text);
      const out = ram.alloc(data.length);
      const into = ram.alloc(data.length);
      ram.memory.write(out, data);
      const head = q.driver.add([
        { gpa: out, len: data.length, writable: false },
        { gpa: into, len: data.length, writable: true },
      ]);
      q.kick.write(1);
      for (;;) {
        const used = q.driver.getUsed();
        if (used !== null) {
          assert.equal(used.head, head);
          const back = new Uint8Array(used.len);
          ram.memory.read(into, back);
          assert.equal(new TextDecoder().decode(back), text);
          lengths.push(used.len);
          break;
        }
        await waitForCall(q.call);
      }
    }
    assert.deepEqual(await stopQueues(frontend, queues, features), [
      features & VIRTIO_F_RING_PACKED ? 0x8006_8006 : 3,
    ]);
    closeQueues(queues);
    return lengths;
  } finally {
    frontend.close();
    server.close();
    ram.close();
  }
}

describe("DataPlane", () => {
  it("runs a connection's rings in its thread: split and packed rings echo, GET_VRING_BASE stops them", async () => {
    const { lines, logger } = capture();
    const plane = await DataPlane.start({ hostModule: HOST, hostInit: null, logger });
    try {
      const base = VIRTIO_F_VERSION_1 | VIRTIO_F_RING_EVENT_IDX | 1n;
      assert.deepEqual(await echoThrough(plane, base), [3, 5, 7]);
      assert.deepEqual(await echoThrough(plane, base | VIRTIO_F_RING_PACKED), [3, 5, 7]);
      assert.equal(await plane.request("connections"), 2);
      assert.notEqual(
        await plane.request("threadId"),
        threadId,
        "the devices run in another thread",
      );
      assert.ok(
        lines.some((line) => /device made/.test(line)),
        "the thread's log lines arrive",
      );
    } finally {
      assert.equal(await plane.stop(2000), true);
    }
    assert.equal(plane.running, false);
  });

  it("answers async host requests, passes events on and reports failures by message", async () => {
    const events: unknown[] = [];
    const plane = await DataPlane.start({
      hostModule: HOST,
      hostInit: null,
      logger: capture().logger,
      onEvent: (event) => events.push(event),
    });
    try {
      assert.equal(await plane.request("later"), "late");
      await plane.request("event");
      assert.deepEqual(events, [{ made: 0 }]);
      await assert.rejects(plane.request("nonsense"), /unknown request nonsense/);
    } finally {
      await plane.stop(2000);
    }
    await assert.rejects(plane.request("connections"), /has ended/);
  });

  it("rejects start when the host cannot be built", async () => {
    await assert.rejects(
      DataPlane.start({ hostModule: HOST, hostInit: "fail", logger: capture().logger }),
      /the host cannot be built/,
    );
  });

  it("closes the fds of ring requests for a connection whose device could not be made", async () => {
    const plane = await DataPlane.start({
      hostModule: HOST,
      hostInit: null,
      logger: capture().logger,
    });
    try {
      const rings = plane.device(7, INFO).rings;
      const kick = EventFd.create();
      const fd = kick.fd;
      await assert.rejects(Promise.resolve(rings.setVringFd(0, "kick", fd)), /no such connection/);
      assert.throws(
        () => fileSeals(fd),
        (error: unknown) => hasCode(error, "EBADF"),
      );
    } finally {
      await plane.stop(2000);
    }
  });
});
