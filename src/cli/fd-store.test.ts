import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { isOpen } from "../../test/helpers/fds.js";
import { EventFd } from "../sys/eventfd.js";
import { closeFdQuietly } from "../sys/fd.js";
import { createMemfd } from "../sys/memfd.js";
import { ConnectionJournal, type FdStore } from "../vhost-user/journal.js";
import { type DaemonConfig, parseCommandLine } from "./args.js";
import { handoverFromStore, splitInherited } from "./fd-store.js";

let made: number[] = [];
afterEach(() => {
  for (const fd of made) closeFdQuietly(fd);
  made = [];
});
const eventfd = () => {
  const fd = EventFd.create().release();
  made.push(fd);
  return fd;
};

function config(args: readonly string[]): DaemonConfig {
  const command = parseCommandLine([...args, "-l", "sim:0x50=24c02"], {
    resolveAdapter: () => 0,
  });
  assert.equal(command.kind, "run");
  return (command as { config: DaemonConfig }).config;
}

/** A store that keeps what it is given by name, as a restart gets it back. */
function store(): FdStore & { readonly names: Map<string, number>; removed: string[] } {
  const names = new Map<string, number>();
  const removed: string[] = [];
  return {
    names,
    removed,
    store: (name, fd) => {
      names.set(name, fd);
    },
    remove: (name) => {
      removed.push(name);
      names.delete(name);
    },
  };
}

describe("splitInherited", () => {
  it("tells the daemon's stored fds from socket activation's", () => {
    const split = splitInherited({
      fds: [3, 4, 5, 6],
      names: ["vm1", "vdi2c-listen0", "vdi2c-s0-1.sock", "other"],
    });
    assert.deepEqual(split.activation, { fds: [3, 6], names: ["vm1", "other"] });
    assert.deepEqual(split.stored, {
      entries: [
        { name: "vdi2c-listen0", fd: 4 },
        { name: "vdi2c-s0-1.sock", fd: 5 },
      ],
    });
    assert.deepEqual(splitInherited(null), { activation: null, stored: null });
    // Without names every fd is socket activation's.
    assert.deepEqual(splitInherited({ fds: [3], names: [] }), {
      activation: { fds: [3], names: [] },
      stored: null,
    });
  });
});

describe("handoverFromStore", () => {
  it("resumes a journaled connection on its stored listening socket; drops what nothing uses", () => {
    const kept = store();
    const socket = eventfd();
    const journal = ConnectionJournal.create(kept, 0, socket, 1);
    journal.commit({
      features: 0n,
      protocolFeatures: 0n,
      status: 0,
      ownerSet: true,
      backendReqFd: null,
    });
    const listener = eventfd();
    const stray = eventfd();
    const copy = eventfd();
    const entries = [
      ...[...kept.names].map(([name, fd]) => ({ name, fd })),
      { name: "vdi2c-listen0", fd: listener },
      { name: "vdi2c-s9-dead.kick0", fd: stray },
      { name: "vdi2c-listen0", fd: copy },
    ];
    const handover = handoverFromStore({ entries }, config(["-s", "/tmp/x.sock"]), kept, () =>
      assert.fail("no bad state here"),
    );
    assert.equal(handover.sockets.length, 1);
    const [socket0] = handover.sockets;
    assert.equal(socket0?.kind, "server");
    if (socket0?.kind !== "server") return;
    assert.equal(socket0.server.listener, listener);
    assert.equal(socket0.server.ownsFile, true);
    assert.equal(socket0.server.path, "/tmp/x.sock0");
    assert.equal(socket0.server.connection?.socket, socket);
    assert.deepEqual(kept.removed, ["vdi2c-s9-dead.kick0"]);
    assert.ok(!isOpen(stray), "a stray fd is closed");
    assert.ok(!isOpen(copy), "a second fd under one name is closed, the store keeps its own");
    assert.ok(isOpen(listener));
    journal.release();
    made.push(socket0.server.connection?.journal?.fd as number);
  });

  it("a journal that cannot be read: onBadState, and every fd of that connection leaves the store", () => {
    const kept = store();
    const journalFd = createMemfd(8192);
    made.push(journalFd);
    const socket = eventfd();
    const bad: string[] = [];
    const handover = handoverFromStore(
      {
        entries: [
          { name: "vdi2c-s0-ab.journal", fd: journalFd },
          { name: "vdi2c-s0-ab.sock", fd: socket },
        ],
      },
      config(["-s", "/tmp/x.sock"]),
      kept,
      (connection) => bad.push(connection),
    );
    assert.deepEqual(bad, ["vdi2c-s0-ab"]);
    // No listening socket came back: the daemon binds anew, nothing to hand over.
    assert.deepEqual(handover.sockets, []);
    assert.deepEqual(kept.removed.sort(), ["vdi2c-s0-ab.journal", "vdi2c-s0-ab.sock"]);
    assert.ok(!isOpen(socket));
    made = made.filter((fd) => fd !== journalFd && fd !== socket);
  });

  it("client mode: a connection resumes as the socket's client, with no listening socket", () => {
    const kept = store();
    const socket = eventfd();
    const journal = ConnectionJournal.create(kept, 0, socket, 1);
    journal.release();
    const handover = handoverFromStore(
      { entries: [...kept.names].map(([name, fd]) => ({ name, fd })) },
      config(["--client", "-s", "/tmp/vmm.sock"]),
      kept,
      () => assert.fail("no bad state here"),
    );
    assert.equal(handover.sockets.length, 1);
    const [client] = handover.sockets;
    assert.equal(client?.kind, "client");
    if (client?.kind !== "client") return;
    assert.equal(client.path, "/tmp/vmm.sock0");
    assert.equal(client.connection?.socket, socket);
    made.push(client.connection?.journal?.fd as number);
  });
});
