import assert from "node:assert/strict";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { EchoDevice } from "../../test/helpers/echo-device.js";
import { FdWatcher } from "../sys/fd-watcher.js";
import { SocketFileError } from "../sys/socket-file.js";
import { UnixListener, type UnixStream } from "../sys/unix-socket.js";
import { TRANSPORT_FEATURES } from "./backend.js";
import { VhostUserFrontend } from "./frontend.js";
import { VhostUserClient, VhostUserServer } from "./server.js";

const dir = mkdtempSync(join(tmpdir(), "vhost-user-server-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const factory = () => new EchoDevice();
const OFFERED = 1n | TRANSPORT_FEATURES;

function assertServerError(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => err instanceof SocketFileError && err.code === code);
}

/** The VMM side of client mode: accepts one connection on `listener`. */
function acceptOne(listener: UnixListener): Promise<UnixStream> {
  return new Promise((resolve) => {
    const watcher = new FdWatcher(listener.fd, () => {
      const stream = listener.accept();
      if (stream === null) return;
      watcher.close();
      resolve(stream);
    });
    watcher.start();
  });
}

describe("VhostUserServer.listen", () => {
  it("replaces a stale socket file nobody listens on", async () => {
    const path = join(dir, "stale.sock");
    UnixListener.listen(path).close(); // leaves the file behind
    assert.ok(existsSync(path));
    const server = VhostUserServer.listen(path, 0, factory);
    try {
      assert.equal(await VhostUserFrontend.connect(path).getFeatures(), OFFERED);
    } finally {
      server.close();
    }
    assert.equal(existsSync(path), false, "close() removes the socket file");
  });

  it("does not steal a socket a live process serves", async () => {
    const path = join(dir, "live.sock");
    const owner = VhostUserServer.listen(path, 0, factory);
    try {
      const probed = once(owner, "disconnect");
      assertServerError(() => VhostUserServer.listen(path, 1, factory), "EADDRINUSE");
      // The owner still serves once the probe connection came and went.
      await probed;
      const frontend = VhostUserFrontend.connect(path);
      assert.equal(await frontend.getFeatures(), OFFERED);
      frontend.close();
    } finally {
      owner.close();
    }
  });

  it("fails with ENOENT when the parent directory is missing, EEXIST on a non-socket file", () => {
    assertServerError(
      () => VhostUserServer.listen(join(dir, "nope", "s.sock"), 0, factory),
      "ENOENT",
    );
    const file = join(dir, "regular");
    writeFileSync(file, "keep me");
    assertServerError(() => VhostUserServer.listen(file, 0, factory), "EEXIST");
    assert.ok(existsSync(file));
  });

  it("refuses a second concurrent connection and keeps serving the first", async () => {
    const path = join(dir, "one.sock");
    const server = VhostUserServer.listen(path, 0, factory);
    try {
      const first = VhostUserFrontend.connect(path);
      await first.getFeatures();
      const second = VhostUserFrontend.connect(path);
      await assert.rejects(second.getFeatures(), {
        code: "EREFUSED",
        message: `vhost-user back-end refused the connection: ${path} already serves a front-end (pid ${process.pid}); one front-end per socket`,
      });
      assert.equal(await first.getFeatures(), OFFERED);
      first.close();
    } finally {
      server.close();
    }
  });

  it("serves many sockets independently from one process", async () => {
    const servers = [0, 1, 2].map((i) =>
      VhostUserServer.listen(join(dir, `multi${i}.sock`), i, factory),
    );
    try {
      const frontends = servers.map((s) => VhostUserFrontend.connect(s.path));
      for (const f of frontends) assert.equal(await f.getFeatures(), OFFERED);
      for (const f of frontends) f.close();
    } finally {
      for (const s of servers) s.close();
    }
  });
});

describe("VhostUserClient", () => {
  it("connects when the VMM's socket appears later, and reconnects after the VMM restarts", async () => {
    const path = join(dir, "vmm.sock");
    const client = new VhostUserClient(path, 0, factory, { retryMs: 10 });
    try {
      // Let a few attempts fail before the VMM starts listening.
      await new Promise((resolve) => setTimeout(resolve, 30));
      assert.equal(client.connected, false);
      let listener = UnixListener.listen(path);
      const connected = once(client, "connect");
      let vmm = VhostUserFrontend.over(await acceptOne(listener));
      await connected;
      assert.equal(await vmm.getFeatures(), OFFERED);

      // The VMM goes away entirely, then comes back on the same path.
      const gone = once(client, "disconnect");
      vmm.close();
      listener.close();
      unlinkSync(path);
      await gone;
      listener = UnixListener.listen(path);
      vmm = VhostUserFrontend.over(await acceptOne(listener));
      assert.equal(await vmm.getFeatures(), OFFERED);
      vmm.close();
      listener.close();
    } finally {
      client.close();
    }
  });
});
