import assert from "node:assert/strict";
import { readSync, writeSync } from "node:fs";
import { afterEach, describe, it } from "node:test";
import { isOpen, sameFile } from "../../test/helpers/fds.js";
import { EventFd } from "../sys/eventfd.js";
import { closeFd, dupFd } from "../sys/fd.js";
import { createMemfd } from "../sys/memfd.js";
import type { MemRegion, VringAddr } from "./codec.js";
import {
  ConnectionJournal,
  type FdStore,
  isJournalName,
  POSITION_LOG_BYTES,
  type ProtocolState,
  readJournal,
  STORE_NAME_PREFIX,
  storePrefixOf,
} from "./journal.js";
import { type ConnectionState, StateError } from "./state.js";

/**
 * The journal's layout as its module describes it: after the position log a header (slot, length),
 * and two 64 KiB state slots from the next page on.
 */
const HEADER_OFFSET = POSITION_LOG_BYTES;
const SLOT_OFFSET = POSITION_LOG_BYTES + 4096;
const SLOT_BYTES = 64 * 1024;

/** fds a test made, closed after it; none is given to code that closes it. */
let made: number[] = [];
const memfd = () => {
  const fd = createMemfd(4096, "guest-ram");
  made.push(fd);
  return fd;
};
const eventfd = () => {
  const fd = EventFd.create().release();
  made.push(fd);
  return fd;
};

/**
 * The service manager's fd store: it keeps its own copy of each fd stored (as systemd does) and
 * records every call.
 */
class FakeStore implements FdStore {
  readonly calls: string[] = [];
  /** Every fd given to store, in order. */
  readonly storedFds: number[] = [];
  /** The fd given with each store call, by name. */
  readonly given = new Map<string, number>();
  /** The store's copies, by name: what a restart gets back. */
  readonly held = new Map<string, number>();
  failOn: string | null = null;

  store(name: string, fd: number): void {
    if (this.failOn !== null && name.endsWith(this.failOn)) throw new Error("store refused");
    this.calls.push(`store ${name}`);
    this.storedFds.push(fd);
    this.given.set(name, fd);
    const old = this.held.get(name);
    if (old !== undefined) closeFd(old);
    this.held.set(name, dupFd(fd));
  }

  remove(name: string): void {
    this.calls.push(`remove ${name}`);
    const old = this.held.get(name);
    if (old !== undefined) closeFd(old);
    this.held.delete(name);
    this.given.delete(name);
  }

  /** The calls since the last look, with the journal's prefix taken out of the names. */
  take(prefix: string): string[] {
    return this.calls.splice(0).map((call) => call.replace(`${prefix}.`, ""));
  }

  close(): void {
    for (const fd of this.held.values()) closeFd(fd);
    this.held.clear();
  }
}

const stores: FakeStore[] = [];
const journals: ConnectionJournal[] = [];
afterEach(() => {
  for (const journal of journals.splice(0)) journal.close();
  for (const store of stores.splice(0)) store.close();
  for (const fd of made) closeFd(fd);
  made = [];
});
function fakeStore(): FakeStore {
  const store = new FakeStore();
  stores.push(store);
  return store;
}

const PROTOCOL: ProtocolState = {
  features: (1n << 32n) | (1n << 30n) | 1n,
  protocolFeatures: 0x8201n,
  status: 0x0b,
  ownerSet: true,
  backendReqFd: null,
};

const REGIONS: MemRegion[] = [
  { guestPhysAddr: 0, size: 0x10_0000, userAddr: 0x7f00_0000_0000, mmapOffset: 0 },
  { guestPhysAddr: 0x1_0000_0000, size: 0x10_0000, userAddr: 0x7f00_4000_0000, mmapOffset: 4096 },
];
const MEM0 = "mem-0-7f0000000000";
const MEM1 = "mem-100000000-7f0040000000";

const ADDR: VringAddr = {
  index: 0,
  flags: 0,
  descUser: 0x7f00_0000_1000,
  usedUser: 0x7f00_0000_2000,
  availUser: 0x7f00_0000_1800,
  log: 0x1234_5678_9abc_def0n,
};

/** A journal of a connection on socket 3 with two queues, and the store it keeps its fds in. */
function journalOf(numQueues = 2) {
  const store = fakeStore();
  const socket = eventfd();
  const journal = ConnectionJournal.create(store, 3, socket, numQueues);
  journals.push(journal);
  const prefix = journal.prefix;
  const journalFd = store.given.get(`${prefix}.journal`) as number;
  return {
    store,
    socket,
    journal,
    prefix,
    journalFd,
    /** What a restart reads: the journal through the store's copies of the fds. */
    read: (stored: ReadonlyMap<string, number> = store.held) =>
      readJournal(store.held.get(`${prefix}.journal`) as number, stored),
    /** The store's copy of the fd stored under `role`. */
    held: (role: string) => store.held.get(`${prefix}.${role}`),
  };
}

/** Records a running ring 0 and guest memory, then commits. */
function recordRunning(journal: ConnectionJournal, protocol: ProtocolState = PROTOCOL) {
  const fds = { mem0: memfd(), mem1: memfd(), kick: eventfd(), call: eventfd(), err: eventfd() };
  journal.setRingFeatures(PROTOCOL.features);
  journal.setMemTable(REGIONS, [fds.mem0, fds.mem1]);
  journal.setVringSize(0, 256);
  journal.setVringAddr(ADDR);
  journal.setVringFd(0, "kick", fds.kick);
  journal.setVringFd(0, "call", fds.call);
  journal.setVringFd(0, "err", fds.err);
  journal.setVringEnabled(0, true);
  journal.commit(protocol);
  return fds;
}

function assertStateError(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof StateError, `expected a StateError, got ${String(error)}`);
    assert.equal(error.code, "BAD_STATE");
    assert.match(error.message, message);
    return true;
  });
}

function header(fd: number): { slot: number; length: number } {
  const bytes = Buffer.alloc(8);
  readSync(fd, bytes, 0, 8, HEADER_OFFSET);
  return { slot: bytes.readUInt32LE(0), length: bytes.readUInt32LE(4) };
}

function writeAt(fd: number, bytes: Uint8Array, position: number): void {
  assert.equal(writeSync(fd, bytes, 0, bytes.length, position), bytes.length);
}

const slotOffset = (slot: number) => SLOT_OFFSET + slot * SLOT_BYTES;

describe("ConnectionJournal", () => {
  it("create stores the journal and the socket under the connection's prefix, and writes a state", () => {
    const { store, socket, prefix, journalFd, read, held } = journalOf();
    assert.match(prefix, new RegExp(`^${STORE_NAME_PREFIX}s3-[0-9a-f]{8}$`));
    assert.deepEqual(store.take(prefix), ["store journal", "store sock"]);
    assert.equal(store.given.get(`${prefix}.sock`), socket);
    assert.notEqual(journalFd, socket);
    const state = read();
    assert.deepEqual(state, {
      socketIndex: 3,
      socket: held("sock"),
      features: 0n,
      protocolFeatures: 0n,
      status: 0,
      ownerSet: false,
      backendReqFd: null,
      journal: { prefix, fd: held("journal") },
      rings: {
        features: 0n,
        regions: [],
        vrings: [0, 1].map((index) => ({
          index,
          size: 0,
          addr: null,
          base: null,
          enabled: false,
          kick: null,
          call: null,
          err: null,
        })),
      },
    });
  });

  it("commit stores each new fd under its role, and readJournal gives the state back by name", () => {
    const { store, journal, prefix, read, held } = journalOf();
    store.take(prefix);
    const backendReq = eventfd();
    const fds = recordRunning(journal, { ...PROTOCOL, backendReqFd: backendReq });
    assert.deepEqual(store.take(prefix), [
      "store breq",
      `store ${MEM0}`,
      `store ${MEM1}`,
      "store kick0",
      "store call0",
      "store err0",
    ]);
    assert.equal(store.given.get(`${prefix}.call0`), fds.call);
    assert.equal(store.given.get(`${prefix}.${MEM1}`), fds.mem1);
    const state = read();
    assert.deepEqual(state, {
      socketIndex: 3,
      socket: held("sock"),
      ...PROTOCOL,
      backendReqFd: held("breq"),
      journal: { prefix, fd: held("journal") },
      rings: {
        features: PROTOCOL.features,
        regions: [
          { region: REGIONS[0], fd: held(MEM0) },
          { region: REGIONS[1], fd: held(MEM1) },
        ],
        vrings: [
          {
            index: 0,
            size: 256,
            addr: ADDR,
            base: null,
            enabled: true,
            kick: held("kick0"),
            call: held("call0"),
            err: held("err0"),
          },
          {
            index: 1,
            size: 0,
            addr: null,
            base: null,
            enabled: false,
            kick: null,
            call: null,
            err: null,
          },
        ],
      },
    });
    // The store's copies are the same files.
    assert.ok(sameFile(state.rings.regions[1]!.fd, fds.mem1));
    assert.ok(!sameFile(state.rings.regions[1]!.fd, fds.mem0));
  });

  it("regions of one file are stored once (as the service manager keeps them), each read back with an fd of its own", () => {
    const { store, journal, prefix, read, held } = journalOf();
    store.take(prefix);
    const ram = memfd();
    // QEMU sends the one memfd again for the region above the PCI hole: a second fd, one file.
    const again = dupFd(ram);
    made.push(again);
    journal.setMemTable(REGIONS, [ram, again]);
    journal.commit(PROTOCOL);
    assert.deepEqual(store.take(prefix), [`store ${MEM0}`]);
    const state = read();
    const [low, high] = state.rings.regions;
    assert.equal(low?.fd, held(MEM0));
    assert.notEqual(high?.fd, low?.fd, "a copy of its own (closed apart)");
    assert.ok(sameFile(high?.fd as number, ram));
    made.push(high?.fd as number);
    // Without the shared name, the state could not be read back.
    store.remove(`${prefix}.${MEM0}`);
    assertStateError(() => read(), /was not passed back/);
  });

  it("commit with nothing changed stores nothing and writes the state again", () => {
    const { store, journal, prefix, journalFd } = journalOf();
    recordRunning(journal);
    store.take(prefix);
    const before = header(journalFd).slot;
    journal.commit({ ...PROTOCOL, status: 0x0f });
    assert.deepEqual(store.take(prefix), []);
    assert.equal(header(journalFd).slot, 1 - before, "the other slot");
  });

  it("commit removes a replaced fd before it stores the new one, and drops what went away", () => {
    const { store, journal, prefix, read, held } = journalOf();
    const fds = recordRunning(journal, { ...PROTOCOL, backendReqFd: eventfd() });
    store.take(prefix);
    const call = eventfd();
    journal.setVringFd(0, "call", call);
    journal.commit(PROTOCOL);
    assert.deepEqual(store.take(prefix), ["remove breq", "remove call0", "store call0"]);
    assert.equal(store.given.get(`${prefix}.call0`), call);
    journal.removeMemRegion(REGIONS[0]!);
    journal.stopVring(0);
    journal.commit(PROTOCOL);
    assert.deepEqual(store.take(prefix), [`remove ${MEM0}`, "remove kick0"]);
    const state = read();
    assert.deepEqual(state.rings.regions, [{ region: REGIONS[1], fd: held(MEM1) }]);
    assert.equal(state.rings.vrings[0]!.kick, null);
    assert.equal(state.backendReqFd, null);
    // The new call fd came back: a write to ours is read from the store's copy.
    const ours = EventFd.adopt(dupFd(call));
    ours.write(5);
    ours.close();
    const copy = EventFd.adopt(dupFd(state.rings.vrings[0]!.call as number));
    assert.equal(copy.read(), 5);
    copy.close();
    assert.ok(isOpen(fds.call), "the journal closes no fd it was told of");
  });

  it("resetRings forgets every ring's fds and layout; the memory stays", () => {
    const { store, journal, prefix, read } = journalOf();
    recordRunning(journal);
    store.take(prefix);
    journal.resetRings();
    journal.commit(PROTOCOL);
    assert.deepEqual(store.take(prefix), ["remove kick0", "remove call0", "remove err0"]);
    const state = read();
    assert.equal(state.rings.features, 0n);
    assert.equal(state.rings.regions.length, 2);
    assert.deepEqual(state.rings.vrings[0], {
      index: 0,
      size: 0,
      addr: null,
      base: null,
      enabled: false,
      kick: null,
      call: null,
      err: null,
    });
  });

  it("record takes a whole connection, every vring base left to recovery", () => {
    const { store, journal, prefix, read, held } = journalOf();
    store.take(prefix);
    const [mem, call] = [memfd(), eventfd()];
    journal.record({
      socketIndex: 3,
      socket: -1,
      ...PROTOCOL,
      journal: null,
      rings: {
        features: PROTOCOL.features,
        regions: [{ region: REGIONS[0]!, fd: mem }],
        vrings: [
          {
            index: 0,
            size: 8,
            addr: ADDR,
            base: 0x8003_8003,
            enabled: true,
            kick: null,
            call,
            err: null,
          },
          {
            index: 1,
            size: 8,
            addr: null,
            base: 5,
            enabled: false,
            kick: null,
            call: null,
            err: null,
          },
          // A ring the journal has no room for is left out.
          {
            index: 2,
            size: 8,
            addr: null,
            base: 1,
            enabled: false,
            kick: null,
            call: null,
            err: null,
          },
        ],
      },
    });
    assert.deepEqual(store.take(prefix), [`store ${MEM0}`, "store call0"]);
    const state = read();
    assert.deepEqual(
      state.rings.vrings.map((v) => [v.index, v.size, v.base]),
      [
        [0, 8, null],
        [1, 8, null],
      ],
    );
    assert.equal(state.rings.vrings[0]!.call, held("call0"));
    assert.equal(state.socket, held("sock"), "the journal's own socket, not the state's");
  });

  it("refuses a vring index out of range", () => {
    const { journal } = journalOf(1);
    assert.throws(() => journal.setVringSize(1, 8), RangeError);
    assert.throws(() => journal.setVringAddr({ ...ADDR, index: 4 }), RangeError);
  });

  it("positionLogFd is a copy of the journal fd: the same file, closed apart", () => {
    const { journal, journalFd } = journalOf();
    const log = journal.positionLogFd();
    made.push(log);
    assert.notEqual(log, journalFd);
    assert.ok(sameFile(log, journalFd));
  });

  describe("torn writes", () => {
    it("garbage in the slot the header names is a StateError", () => {
      const { journal, journalFd, read } = journalOf();
      recordRunning(journal);
      const { slot } = header(journalFd);
      writeAt(journalFd, Buffer.from("\x00garbage"), slotOffset(slot));
      assertStateError(read, /the journal's state is not JSON/);
    });

    it("a header flipped to a slot whose write was cut short is a StateError", () => {
      const { journal, journalFd, read } = journalOf();
      recordRunning(journal);
      const { slot, length } = header(journalFd);
      const whole = Buffer.alloc(length);
      readSync(journalFd, whole, 0, length, slotOffset(slot));
      // Half of the state in the other slot, the rest zeros; the header names it with the full length.
      const torn = Buffer.alloc(length);
      whole.copy(torn, 0, 0, length >> 1);
      writeAt(journalFd, torn, slotOffset(1 - slot));
      const flipped = Buffer.alloc(8);
      flipped.writeUInt32LE(1 - slot, 0);
      flipped.writeUInt32LE(length, 4);
      writeAt(journalFd, flipped, HEADER_OFFSET);
      assertStateError(read, /the journal's state is not JSON/);
    });

    it("a header naming no slot, or no length, or more than a slot is a StateError", () => {
      for (const [slot, length] of [
        [2, 100],
        [0, 0],
        [1, SLOT_BYTES + 1],
      ] as const) {
        const { journalFd, read } = journalOf();
        const bad = Buffer.alloc(8);
        bad.writeUInt32LE(slot, 0);
        bad.writeUInt32LE(length, 4);
        writeAt(journalFd, bad, HEADER_OFFSET);
        assertStateError(read, /the journal has no state/);
      }
    });

    it("a state without its fd names, or naming an fd not passed back, is a StateError", () => {
      const { journal, journalFd, prefix, store, read } = journalOf();
      recordRunning(journal);
      const missing = new Map(store.held);
      missing.delete(`${prefix}.call0`);
      assertStateError(
        () => read(missing),
        new RegExp(`the fd "${prefix}\\.call0" of the journal was not passed back`),
      );
      const { slot } = header(journalFd);
      const noNames = Buffer.from(JSON.stringify({ state: "{}" }));
      writeAt(journalFd, noNames, slotOffset(slot));
      const fitted = Buffer.alloc(8);
      fitted.writeUInt32LE(slot, 0);
      fitted.writeUInt32LE(noNames.length, 4);
      writeAt(journalFd, fitted, HEADER_OFFSET);
      assertStateError(read, /the journal's state has no fd names/);
    });

    it("a state that does not decode is a StateError from decodeState", () => {
      const { journalFd, read } = journalOf();
      const { slot } = header(journalFd);
      const bad = Buffer.from(JSON.stringify({ names: [], state: '{"version":99}' }));
      writeAt(journalFd, bad, slotOffset(slot));
      const fitted = Buffer.alloc(8);
      fitted.writeUInt32LE(slot, 0);
      fitted.writeUInt32LE(bad.length, 4);
      writeAt(journalFd, fitted, HEADER_OFFSET);
      assertStateError(read, /state version 99 is not 1/);
    });

    it("each commit writes the slot not in use and then flips the header: the older slot may be torn", () => {
      const { journal, journalFd, read } = journalOf();
      const first = header(journalFd).slot;
      recordRunning(journal);
      assert.equal(header(journalFd).slot, 1 - first);
      journal.commit({ ...PROTOCOL, status: 0x0f });
      assert.equal(header(journalFd).slot, first);
      // A write into the older slot cut short by a crash: the header still names the newer one.
      writeAt(journalFd, Buffer.alloc(SLOT_BYTES, 0x7b), slotOffset(1 - first));
      const state = read();
      assert.equal(state.status, 0x0f, "the latest commit");
      assert.equal(state.rings.vrings[0]!.size, 256);
    });
  });

  it("close removes every name it stored and closes the journal; it does nothing after", () => {
    const { store, journal, prefix, journalFd } = journalOf();
    const fds = recordRunning(journal, { ...PROTOCOL, backendReqFd: eventfd() });
    const stored = [...store.held.keys()];
    store.take(prefix);
    journal.close();
    assert.deepEqual(store.calls.map((call) => call.replace(/^remove /, "")).sort(), stored.sort());
    assert.equal(store.held.size, 0);
    assert.equal(isOpen(journalFd), false, "the journal fd is closed");
    assert.ok(isOpen(fds.call) && isOpen(fds.mem0), "the connection's own fds are not");
    store.take(prefix);
    journal.close();
    journal.setVringEnabled(0, false);
    journal.commit(PROTOCOL);
    assert.deepEqual(store.take(prefix), []);
  });

  it("close goes on when the store is gone", () => {
    const { store, journal, journalFd } = journalOf();
    recordRunning(journal);
    store.remove = () => {
      throw new Error("no service manager");
    };
    journal.close();
    assert.equal(isOpen(journalFd), false);
  });

  it("create drops what it stored and closes the journal when the store refuses", () => {
    const store = fakeStore();
    store.failOn = ".sock";
    assert.throws(() => ConnectionJournal.create(store, 0, eventfd(), 1), /store refused/);
    const [stored, removed, ...rest] = store.calls;
    assert.match(stored ?? "", /^store vdi2c-s0-[0-9a-f]{8}\.journal$/);
    assert.equal(removed, stored?.replace("store", "remove"));
    assert.deepEqual(rest, []);
    assert.equal(store.held.size, 0, "the store holds nothing");
    assert.equal(isOpen(store.storedFds[0]!), false, "the journal fd is closed");
  });

  it("release hands the journal fd over and keeps every name in the store", () => {
    const { store, journal, prefix, journalFd } = journalOf();
    recordRunning(journal);
    store.take(prefix);
    assert.deepEqual(journal.release(), { prefix, fd: journalFd });
    journal.close();
    journal.setVringEnabled(0, false);
    journal.commit(PROTOCOL);
    assert.deepEqual(store.take(prefix), []);
    assert.equal(store.held.size, 7);
    assert.ok(isOpen(journalFd), "the successor's now");
    made.push(journalFd);
  });

  it("adopt takes a journal whose fds are stored: a commit stores nothing already there", () => {
    for (const commits of [0, 1]) {
      const { store, journal, prefix, journalFd } = journalOf();
      recordRunning(journal);
      for (let i = 0; i < commits; i++) journal.commit(PROTOCOL);
      const { fd } = journal.release();
      const before = header(fd).slot;
      // The successor's fds: other numbers for the same files (the store's copies, duplicated).
      const received = new Map<string, number>();
      for (const [name, copy] of store.held) {
        const fd = dupFd(copy);
        // The journal's copy is the adopted journal's to close.
        if (name !== `${prefix}.journal`) made.push(fd);
        received.set(name, fd);
      }
      const state: ConnectionState = readJournal(received.get(`${prefix}.journal`)!, received);
      store.take(prefix);
      const adopted = ConnectionJournal.adopt(store, state, 2);
      assert.equal(adopted.prefix, prefix);
      adopted.commit(PROTOCOL);
      assert.deepEqual(store.take(prefix), [], `after ${commits} commits`);
      assert.equal(header(journalFd).slot, 1 - before, "the slot in use is not overwritten");
      const call = eventfd();
      adopted.setVringFd(0, "call", call);
      adopted.commit(PROTOCOL);
      assert.deepEqual(store.take(prefix), ["remove call0", "store call0"]);
      adopted.close();
      assert.equal(isOpen(state.journal!.fd), false, "the adopted journal fd is closed with it");
      assert.equal(store.held.size, 0);
      closeFd(fd);
    }
  });

  it("adopt refuses a connection without a journal", () => {
    const { store, read } = journalOf();
    const state = { ...read(), journal: null };
    assertStateError(() => ConnectionJournal.adopt(store, state, 2), /keeps no journal/);
  });
});

describe("store names", () => {
  it("tells a journal's name and a connection's prefix", () => {
    assert.equal(isJournalName(`${STORE_NAME_PREFIX}s0-00ff00ff.journal`), true);
    assert.equal(isJournalName(`${STORE_NAME_PREFIX}s0-00ff00ff.sock`), false);
    assert.equal(isJournalName("other.journal"), false);
    assert.equal(
      storePrefixOf(`${STORE_NAME_PREFIX}s1-0a0b0c0d.call3`),
      `${STORE_NAME_PREFIX}s1-0a0b0c0d`,
    );
    assert.equal(storePrefixOf("plain"), "plain");
  });
});
