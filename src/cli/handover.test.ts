import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { isOpen } from "../../test/helpers/fds.js";
import { EventFd } from "../sys/eventfd.js";
import { closeFd } from "../sys/fd.js";
import { createMemfd } from "../sys/memfd.js";
import { type ConnectionState, encodeState, fdsOfState, StateError } from "../vhost-user/state.js";
import { decodeManifest, HandoverError } from "./handover.js";

/** fds a test made and still owns at its end. */
let made: number[] = [];
afterEach(() => {
  for (const fd of made) if (isOpen(fd)) closeFd(fd);
  made = [];
});
const eventfd = () => {
  const fd = EventFd.create().release();
  made.push(fd);
  return fd;
};

/** A connection with a socket, a memory region and a ring with kick and call: four fds. */
function connection(socketIndex: number): ConnectionState {
  const memory = createMemfd(4096, "guest-ram");
  made.push(memory);
  return {
    socketIndex,
    socket: eventfd(),
    features: 1n << 32n,
    protocolFeatures: 0n,
    status: 0,
    ownerSet: true,
    backendReqFd: null,
    journal: null,
    rings: {
      features: 1n << 32n,
      regions: [
        {
          region: { guestPhysAddr: 0, size: 4096, userAddr: 0x7f00_0000_0000, mmapOffset: 0 },
          fd: memory,
        },
      ],
      vrings: [
        {
          index: 0,
          size: 8,
          addr: null,
          base: 3,
          enabled: true,
          kick: eventfd(),
          call: eventfd(),
          err: null,
        },
      ],
    },
  };
}

/**
 * A manifest as a predecessor writes it: fds named by their position in `fds`. Socket 0 serves with
 * a connection, socket 1 serves with a connection whose state `spoil` may break, socket 2 is a
 * client's with a connection, and the control socket.
 */
function manifest(spoil: (state: Record<string, unknown>) => void = () => {}) {
  const fds: number[] = [];
  const place = (fd: number) => fds.push(fd) - 1;
  const encoded = (state: ConnectionState, edit?: (raw: Record<string, unknown>) => void) => {
    const raw = JSON.parse(encodeState(state)) as Record<string, unknown>;
    edit?.(raw);
    return { fds: fdsOfState(state).map(place), state: JSON.stringify(raw) };
  };
  const states = [connection(0), connection(1), connection(2)] as const;
  const listeners = [eventfd(), eventfd()] as const;
  const control = eventfd();
  const sockets = [
    {
      index: 0,
      kind: "server",
      path: "/run/vdi2c/0.sock",
      listener: place(listeners[0]),
      ownsFile: true,
      connection: encoded(states[0]),
    },
    {
      index: 1,
      kind: "server",
      path: "/run/vdi2c/1.sock",
      listener: place(listeners[1]),
      ownsFile: false,
      connection: encoded(states[1], spoil),
    },
    { index: 2, kind: "client", path: "/run/vm/2.sock", connection: encoded(states[2]) },
  ];
  const raw = {
    version: 1,
    sockets,
    control: { path: "/run/vdi2c/control", listener: place(control) },
  };
  return { raw, fds, states, listeners, control };
}

function decode(text: string, fds: readonly number[]) {
  const bad: [number, StateError][] = [];
  const handover = decodeManifest(text, fds, (index, error) => bad.push([index, error]));
  return { handover, bad };
}

describe("decodeManifest", () => {
  it("reads every socket, connection and the control socket, fds by position", () => {
    const m = manifest();
    const { handover, bad } = decode(JSON.stringify(m.raw), m.fds);
    assert.deepEqual(bad, []);
    assert.deepEqual(handover, {
      sockets: [
        {
          index: 0,
          kind: "server",
          server: {
            path: "/run/vdi2c/0.sock",
            listener: m.listeners[0],
            ownsFile: true,
            connection: m.states[0],
          },
        },
        {
          index: 1,
          kind: "server",
          server: {
            path: "/run/vdi2c/1.sock",
            listener: m.listeners[1],
            ownsFile: false,
            connection: m.states[1],
          },
        },
        { index: 2, kind: "client", path: "/run/vm/2.sock", connection: m.states[2] },
      ],
      control: { path: "/run/vdi2c/control", listener: m.control },
    });
    for (const fd of m.fds) assert.ok(isOpen(fd));
  });

  it("drops a connection whose state is bad, its fds closed, and hands its socket over", () => {
    for (const spoil of [
      (raw: Record<string, unknown>) => {
        raw.version = 2;
      },
      (raw: Record<string, unknown>) => {
        raw.ownerSet = "yes";
      },
      // The state names fewer fds than came with it.
      (raw: Record<string, unknown>) => {
        (raw.rings as { vrings: { call: unknown }[] }).vrings[0]!.call = null;
      },
    ]) {
      const m = manifest(spoil);
      const { handover, bad } = decode(JSON.stringify(m.raw), m.fds);
      assert.equal(bad.length, 1);
      const [index, error] = bad[0]!;
      assert.equal(index, 1);
      assert.ok(error instanceof StateError);
      assert.equal(error.code, "BAD_STATE");
      const socket = handover.sockets[1];
      assert.deepEqual(socket, {
        index: 1,
        kind: "server",
        server: {
          path: "/run/vdi2c/1.sock",
          listener: m.listeners[1],
          ownsFile: false,
          connection: null,
        },
      });
      for (const fd of fdsOfState(m.states[1])) assert.equal(isOpen(fd), false, `fd ${fd} closed`);
      assert.ok(isOpen(m.listeners[1]), "the listening socket is handed over");
      // The others are untouched.
      assert.deepEqual(
        handover.sockets[0]?.kind === "server" && handover.sockets[0].server.connection,
        m.states[0],
      );
      for (const fd of [...fdsOfState(m.states[0]), ...fdsOfState(m.states[2]), m.control]) {
        assert.ok(isOpen(fd));
      }
    }
  });

  it("drops a client socket's bad connection too", () => {
    const m = manifest();
    const client = m.raw.sockets[2] as { connection: { state: string } };
    client.connection.state = "{";
    const { handover, bad } = decode(JSON.stringify(m.raw), m.fds);
    assert.deepEqual(
      bad.map(([index, error]) => [index, error.message]),
      [[2, bad[0]![1].message]],
    );
    assert.match(bad[0]![1].message, /state is not JSON/);
    assert.deepEqual(handover.sockets[2], {
      index: 2,
      kind: "client",
      path: "/run/vm/2.sock",
      connection: null,
    });
    for (const fd of fdsOfState(m.states[2])) assert.equal(isOpen(fd), false);
  });

  it("throws HandoverError for a manifest it cannot read", () => {
    type Edit = (raw: Record<string, unknown> & { sockets: Record<string, unknown>[] }) => void;
    const cases: [string, Edit, RegExp][] = [
      ["another version", (raw) => (raw.version = 2), /unknown version/],
      ["no sockets", (raw) => delete (raw as Record<string, unknown>).sockets, /unknown version/],
      ["a socket without an index", (raw) => (raw.sockets[0]!.index = -1), /without an index/],
      ["an index not a number", (raw) => (raw.sockets[1]!.index = "1"), /without an index/],
      ["a socket without a path", (raw) => (raw.sockets[0]!.path = ""), /without a path/],
      ["a client without a path", (raw) => delete raw.sockets[2]!.path, /without a path/],
      ["a socket of an unknown kind", (raw) => (raw.sockets[1]!.kind = "other"), /unknown kind/],
      [
        "a listener out of range",
        (raw) => (raw.sockets[0]!.listener = 99),
        /fd position 99 out of range/,
      ],
      [
        "a listener not a position",
        (raw) => (raw.sockets[0]!.listener = "0"),
        /fd position 0 out of range/,
      ],
      [
        "a connection fd out of range",
        (raw) => ((raw.sockets[0]!.connection as { fds: number[] }).fds[1] = -1),
        /fd position -1 out of range/,
      ],
      [
        "a connection without its state",
        (raw) => delete (raw.sockets[1]!.connection as Record<string, unknown>).state,
        /a connection without its state/,
      ],
      [
        "a connection without its fds",
        (raw) => ((raw.sockets[1]!.connection as Record<string, unknown>).fds = 3),
        /a connection without its state/,
      ],
      [
        "a control socket without a path",
        (raw) => ((raw.control as Record<string, unknown>).path = 5),
        /without a path/,
      ],
      [
        "a control listener out of range",
        (raw) => ((raw.control as Record<string, unknown>).listener = 1000),
        /fd position 1000 out of range/,
      ],
    ];
    for (const [what, edit, message] of cases) {
      const m = manifest();
      edit(m.raw as unknown as Parameters<Edit>[0]);
      assert.throws(
        () => decode(JSON.stringify(m.raw), m.fds),
        (error: unknown) => {
          assert.ok(error instanceof HandoverError, `${what}: ${String(error)}`);
          assert.equal(error.code, "BAD_MANIFEST");
          assert.match(error.message, /^handover manifest: /);
          assert.match(error.message, message, what);
          return true;
        },
      );
    }
    for (const text of ["", "{", "[]", "5"]) {
      assert.throws(() => decode(text, []), HandoverError, JSON.stringify(text));
    }
  });

  it("throws HandoverError for a manifest that is null or holds a null socket", () => {
    assert.throws(() => decode("null", []), HandoverError);
    const text = JSON.stringify({ version: 1, sockets: [null], control: null });
    assert.throws(() => decode(text, []), HandoverError);
  });

  it("reads a manifest without a control socket or connections", () => {
    const listener = eventfd();
    const text = JSON.stringify({
      version: 1,
      sockets: [{ index: 0, kind: "server", path: "fd:3", listener: 0, connection: null }],
      control: null,
    });
    assert.deepEqual(decode(text, [listener]).handover, {
      sockets: [
        {
          index: 0,
          kind: "server",
          server: { path: "fd:3", listener, ownsFile: false, connection: null },
        },
      ],
      control: null,
    });
  });
});
