import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type ConnectionState,
  decodeState,
  encodeState,
  fdsOfState,
  STATE_VERSION,
  StateError,
} from "./state.js";

/** Every field in use: a back-end request fd, a journal, two regions, rings with and without fds. */
const STATE: ConnectionState = {
  socketIndex: 2,
  socket: 10,
  features: 0xffff_ffff_ffff_ffffn,
  protocolFeatures: 0x1_0000_8201n,
  status: 0x0f,
  ownerSet: true,
  backendReqFd: 11,
  journal: { prefix: "vdi2c-s2-0badcafe", fd: 12 },
  rings: {
    features: (1n << 63n) | (1n << 34n) | 1n,
    regions: [
      {
        region: { guestPhysAddr: 0, size: 0x8000_0000, userAddr: 0x7f00_0000_0000, mmapOffset: 0 },
        fd: 13,
      },
      {
        region: {
          guestPhysAddr: 0x1_0000_0000,
          size: 0x4000_0000,
          userAddr: 0x7f80_0000_0000,
          mmapOffset: 0x8000_0000,
        },
        fd: 14,
      },
    ],
    vrings: [
      {
        index: 0,
        size: 256,
        addr: {
          index: 0,
          flags: 1,
          descUser: 0x7f00_0000_1000,
          usedUser: 0x7f00_0000_3000,
          availUser: 0x7f00_0000_2000,
          // Above 2^53: only a bigint holds it.
          log: 0xfedc_ba98_7654_3210n,
        },
        base: 0x8003_8005,
        enabled: true,
        kick: 15,
        call: 16,
        err: 17,
      },
      // A ring whose position is recovered after a crash, never started: no address, no kick.
      {
        index: 1,
        size: 0,
        addr: null,
        base: null,
        enabled: false,
        kick: null,
        call: 18,
        err: null,
      },
    ],
  },
};

/** The state with every fd number replaced by `map(fd)`. */
function renumbered(state: ConnectionState, map: (fd: number) => number): ConnectionState {
  const opt = (fd: number | null) => (fd === null ? null : map(fd));
  return {
    ...state,
    socket: map(state.socket),
    backendReqFd: opt(state.backendReqFd),
    journal: state.journal === null ? null : { ...state.journal, fd: map(state.journal.fd) },
    rings: {
      ...state.rings,
      regions: state.rings.regions.map((r) => ({ ...r, fd: map(r.fd) })),
      vrings: state.rings.vrings.map((v) => ({
        ...v,
        kick: opt(v.kick),
        call: opt(v.call),
        err: opt(v.err),
      })),
    },
  };
}

/** The fds a receiver got for STATE: its own numbers, in the order they travel. */
const RECEIVED = fdsOfState(STATE).map((_, i) => 100 + i);

/** Marks a field to remove (withField). */
const GONE = Symbol("gone");

/** STATE encoded, with the field at the dotted `path` set to `value` (or removed), encoded again. */
function withField(path: string, value: unknown): string {
  const raw = JSON.parse(encodeState(STATE)) as Record<string, unknown>;
  const keys = path.split(".");
  const last = keys.pop() as string;
  let at = raw;
  for (const key of keys) at = at[key] as Record<string, unknown>;
  if (value === GONE) delete at[last];
  else at[last] = value;
  return JSON.stringify(raw);
}

function assertBadState(text: string, fds: readonly number[], message: RegExp): void {
  assert.throws(
    () => decodeState(text, fds),
    (error: unknown) => {
      assert.ok(error instanceof StateError, `expected a StateError, got ${String(error)}`);
      assert.equal(error.code, "BAD_STATE");
      assert.match(error.message, message);
      return true;
    },
  );
}

describe("encodeState / decodeState", () => {
  it("lists fds socket first, then back-end request fd, journal, regions, vring kick/call/err", () => {
    assert.deepEqual(fdsOfState(STATE), [10, 11, 12, 13, 14, 15, 16, 17, 18]);
  });

  it("round-trips every field, fds renumbered by their position in the list", () => {
    const text = encodeState(STATE);
    const decoded = decodeState(text, RECEIVED);
    assert.deepEqual(
      decoded,
      renumbered(STATE, (fd) => 100 + fdsOfState(STATE).indexOf(fd)),
    );
    assert.equal(decoded.rings.vrings[0]!.addr!.log, 0xfedc_ba98_7654_3210n);
    assert.equal(decoded.features, 0xffff_ffff_ffff_ffffn);
    assert.equal(decoded.rings.vrings[1]!.base, null);
    // The encoding names positions, never the sender's fd numbers.
    const raw = JSON.parse(text);
    assert.equal(raw.version, STATE_VERSION);
    assert.equal(raw.socket, 0);
    assert.equal(raw.journal.fd, 2);
    assert.deepEqual(
      raw.rings.vrings.map((v: Record<string, unknown>) => [v.kick, v.call, v.err]),
      [
        [5, 6, 7],
        [null, 8, null],
      ],
    );
  });

  it("round-trips a connection without a back-end request fd, journal, memory or rings", () => {
    const bare: ConnectionState = {
      socketIndex: 0,
      socket: 7,
      features: 0n,
      protocolFeatures: 0n,
      status: 0,
      ownerSet: false,
      backendReqFd: null,
      journal: null,
      rings: { features: 0n, regions: [], vrings: [] },
    };
    assert.deepEqual(fdsOfState(bare), [7]);
    assert.deepEqual(decodeState(encodeState(bare), [42]), { ...bare, socket: 42 });
  });

  describe("refuses a malformed state with a StateError naming what is wrong", () => {
    /** Each: the field changed, its new value, what the message says. */
    type Case = readonly [path: string, value: unknown, message: RegExp];
    const refuses = (cases: readonly Case[]) => {
      for (const [path, value, message] of cases) {
        assertBadState(withField(path, value), RECEIVED, message);
      }
    };

    it("not JSON", () => {
      assertBadState("{", RECEIVED, /state is not JSON/);
      assertBadState("", RECEIVED, /state is not JSON/);
    });

    it("not an object, or a part that is not one", () => {
      assertBadState("[]", RECEIVED, /^state is not an object/);
      assertBadState("null", RECEIVED, /^state is not an object/);
      refuses([
        ["rings", "rings", /state\.rings is not an object/],
        ["rings.vrings.1", 3, /state\.rings\.vrings\[1\] is not an object/],
        ["rings.regions.0", null, /state\.rings\.regions\[0\] is not an object/],
        ["rings.vrings.0.addr", [], /state\.rings\.vrings\[0\]\.addr is not an object/],
        ["journal", GONE, /state\.journal is not an object/],
      ]);
    });

    it("another version", () => {
      refuses([
        [
          "version",
          STATE_VERSION + 1,
          new RegExp(`state version ${STATE_VERSION + 1} is not ${STATE_VERSION}`),
        ],
        ["version", GONE, /state\.version is not an integer/],
      ]);
    });

    it("an integer missing, negative, fractional, unsafe, of another type or over its range", () => {
      refuses([
        ["socketIndex", GONE, /state\.socketIndex is not an integer/],
        ["socketIndex", -1, /state\.socketIndex is not an integer/],
        ["socketIndex", 2 ** 53, /state\.socketIndex is not an integer/],
        ["socketIndex", "2", /state\.socketIndex is not an integer/],
        ["status", 0x100, /state\.status is not an integer from 0 to 255/],
        ["status", 1.5, /state\.status is not an integer/],
        ["rings.regions.1.size", -4096, /state\.rings\.regions\[1\]\.size is not an integer/],
        [
          "rings.regions.0.mmapOffset",
          GONE,
          /state\.rings\.regions\[0\]\.mmapOffset is not an integer/,
        ],
        [
          "rings.vrings.0.size",
          0x8001,
          /state\.rings\.vrings\[0\]\.size is not an integer from 0 to 32768/,
        ],
        [
          "rings.vrings.0.index",
          0x10000,
          /state\.rings\.vrings\[0\]\.index is not an integer from 0 to 65535/,
        ],
        [
          "rings.vrings.0.base",
          2 ** 32,
          /state\.rings\.vrings\[0\]\.base is not an integer from 0 to 4294967295/,
        ],
        ["rings.vrings.1.base", GONE, /state\.rings\.vrings\[1\]\.base is not an integer/],
        [
          "rings.vrings.0.addr.flags",
          2 ** 32,
          /state\.rings\.vrings\[0\]\.addr\.flags is not an integer/,
        ],
        [
          "rings.vrings.0.addr.descUser",
          null,
          /state\.rings\.vrings\[0\]\.addr\.descUser is not an integer/,
        ],
      ]);
    });

    it("a 64-bit number that is not lower-case hex of 1 to 16 digits", () => {
      refuses([
        ["features", 5, /state\.features is not a 64-bit hex number/],
        ["features", "0x5", /state\.features is not a 64-bit hex number/],
        ["features", "", /state\.features is not a 64-bit hex number/],
        [
          "protocolFeatures",
          "1ffffffffffffffff",
          /state\.protocolFeatures is not a 64-bit hex number/,
        ],
        ["rings.features", "-1", /state\.rings\.features is not a 64-bit hex number/],
        [
          "rings.vrings.0.addr.log",
          "FEDC",
          /state\.rings\.vrings\[0\]\.addr\.log is not a 64-bit hex number/,
        ],
      ]);
    });

    it("a flag, a name or a list of another type", () => {
      refuses([
        ["ownerSet", 1, /state\.ownerSet is not true or false/],
        [
          "rings.vrings.1.enabled",
          "false",
          /state\.rings\.vrings\[1\]\.enabled is not true or false/,
        ],
        ["journal.prefix", "", /state\.journal\.prefix is not a name/],
        ["journal.prefix", 7, /state\.journal\.prefix is not a name/],
        ["rings.regions", {}, /state\.rings\.regions is not a list/],
        ["rings.vrings", GONE, /state\.rings\.vrings is not a list/],
      ]);
    });

    it("an fd position that is missing, not a position or out of range", () => {
      refuses([
        ["socket", null, /state\.socket is not an fd position/],
        ["socket", -1, /state\.socket is not an fd position/],
        ["socket", 0.5, /state\.socket is not an fd position/],
        ["socket", 9, /state\.socket is not one of the 9 fds that came/],
        ["backendReqFd", GONE, /state\.backendReqFd is not an fd position/],
        ["journal.fd", null, /state\.journal\.fd is not an fd position/],
        [
          "rings.regions.0.fd",
          1000,
          /state\.rings\.regions\[0\]\.fd is not one of the 9 fds that came/,
        ],
        ["rings.vrings.1.err", "8", /state\.rings\.vrings\[1\]\.err is not an fd position/],
        ["rings.vrings.1.kick", GONE, /state\.rings\.vrings\[1\]\.kick is not an fd position/],
      ]);
    });

    it("one fd named twice", () => {
      refuses([
        // vring 1's call (position 8) named as its err too.
        ["rings.vrings.1.err", 8, /state\.rings\.vrings\[1\]\.err: fd used twice/],
        // The socket (position 0) as the back-end request fd.
        ["backendReqFd", 0, /state\.backendReqFd: fd used twice/],
      ]);
    });

    it("more fds than it names, or fewer", () => {
      assertBadState(encodeState(STATE), [...RECEIVED, 200], /state names 9 fds, 10 came with it/);
      // One fewer: the last one named is missing.
      assertBadState(
        encodeState(STATE),
        RECEIVED.slice(0, -1),
        /state\.rings\.vrings\[1\]\.call is not one of the 8 fds that came/,
      );
      // A ring that no longer names its call fd leaves one nobody takes.
      refuses([["rings.vrings.1.call", null, /state names 8 fds, 9 came with it/]]);
    });
  });
});
