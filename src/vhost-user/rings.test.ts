import assert from "node:assert/strict";
import { readSync } from "node:fs";
import { afterEach, describe, it } from "node:test";
import { EchoDevice } from "../../test/helpers/echo-device.js";
import { isOpen, sameFile } from "../../test/helpers/fds.js";
import { scaled } from "../../test/helpers/time.js";
import { createLogger } from "../log.js";
import { EventFd } from "../sys/eventfd.js";
import { closeFd, dupFd } from "../sys/fd.js";
import { createMemfd } from "../sys/memfd.js";
import { DriverPackedQueue } from "../virtio/driver-packed-queue.js";
import { DriverSplitQueue } from "../virtio/driver-split-queue.js";
import { VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1 } from "../virtio/features.js";
import { WRAP_BIT } from "../virtio/packed-queue.js";
import { BackendConnection } from "./backend.js";
import type { VringAddr } from "./codec.js";
import { GuestRam } from "./frontend.js";
import { POSITION_LOG_BYTES } from "./journal.js";
import { VHOST_USER_F_PROTOCOL_FEATURES } from "./protocol.js";
import { LocalRings } from "./rings.js";
import type { RingsState } from "./state.js";

const SIZE = 16;
/** Each chain the guest adds: one readable and one writable buffer, two ring slots. */
const CHAIN_BYTES = 4;

function logged() {
  const lines: string[] = [];
  return { lines, logger: createLogger("info", { write: (line) => lines.push(line) }) };
}

/** Waits for `done`, polling; fails after `ms`. */
async function until(done: () => boolean, what: string, ms = 2000): Promise<void> {
  const end = Date.now() + scaled(ms);
  while (!done()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

const turns = async (count = 5) => {
  for (let i = 0; i < count; i++) await new Promise((resolve) => setImmediate(resolve));
};

/** What each test closes at its end. */
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

/** A guest with one ring (split or packed) on its RAM, its kick and call, and its chains. */
function guest(packed: boolean) {
  const ram = new GuestRam();
  const kick = EventFd.create();
  const call = EventFd.create();
  cleanups.push(() => {
    ram.close();
    kick.close();
    call.close();
  });
  let driver: DriverSplitQueue | DriverPackedQueue;
  let areas: { desc: number; avail: number; used: number };
  if (packed) {
    const ring = new DriverPackedQueue(
      ram.memory,
      ram.alloc(DriverPackedQueue.byteLength(SIZE), 4096),
      SIZE,
    );
    areas = {
      desc: ring.addresses.desc,
      avail: ring.addresses.driver,
      used: ring.addresses.device,
    };
    driver = ring;
  } else {
    const ring = new DriverSplitQueue(
      ram.memory,
      ram.alloc(DriverSplitQueue.byteLength(SIZE, { eventIdx: false }), 4096),
      SIZE,
      { eventIdx: false },
    );
    areas = ring.addresses;
    driver = ring;
  }
  const addr: VringAddr = {
    index: 0,
    flags: 0,
    descUser: ram.userAddr(areas.desc),
    availUser: ram.userAddr(areas.avail),
    usedUser: ram.userAddr(areas.used),
    log: 0n,
  };
  const features =
    VIRTIO_F_VERSION_1 |
    (1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES)) |
    (packed ? VIRTIO_F_RING_PACKED : 0n);
  /** Heads added and not used yet. */
  const outstanding = new Set<number>();
  return {
    ram,
    kick,
    call,
    driver,
    addr,
    features,
    /** The base a front-end sends for a fresh ring. */
    freshBase: packed ? (WRAP_BIT | (WRAP_BIT << 16)) >>> 0 : 0,
    /** Adds `count` chains and kicks. */
    add(count: number): void {
      for (let i = 0; i < count; i++) {
        const out = ram.alloc(CHAIN_BYTES);
        const into = ram.alloc(CHAIN_BYTES);
        const head = driver.add([
          { gpa: out, len: CHAIN_BYTES, writable: false },
          { gpa: into, len: CHAIN_BYTES, writable: true },
        ]);
        assert.notEqual(head, null);
        outstanding.add(head as number);
      }
      kick.write(1);
    },
    /** Heads used since the last look; each must be outstanding (used once). */
    collect(): number[] {
      const heads: number[] = [];
      for (let used = driver.getUsed(); used !== null; used = driver.getUsed()) {
        assert.ok(outstanding.delete(used.head), `head ${used.head} used twice or never added`);
        assert.equal(used.len, CHAIN_BYTES);
        heads.push(used.head);
      }
      return heads;
    },
    get outstanding(): number {
      return outstanding.size;
    },
    /** Collects what is used; true once nothing added is outstanding. */
    drained(): boolean {
      this.collect();
      return outstanding.size === 0;
    },
  };
}
type Guest = ReturnType<typeof guest>;

/** New rings for `device`, closed after the test (a second close is harmless). */
function ringsFor(device: EchoDevice, logger = logged().logger): LocalRings {
  const rings = new LocalRings(device, { logger });
  cleanups.push(() => rings.close());
  return rings;
}

/**
 * What the front-end tells the rings to start the guest's ring (the rings get copies of its fds):
 * from `base`, or recovering it from the ring.
 */
function start(rings: LocalRings, g: Guest, base: number | "recover"): void {
  rings.setFeatures(g.features);
  rings.setMemTable(
    g.ram.regions.map(({ region }) => region),
    g.ram.regions.map(({ fd }) => dupFd(fd)),
  );
  rings.setVringSize(0, SIZE);
  rings.setVringAddr(g.addr);
  if (base === "recover") rings.recoverVringBase(0);
  else rings.setVringBase(0, base);
  rings.setVringFd(0, "call", dupFd(g.call.fd));
  rings.setVringEnabled(0, true);
  rings.setVringFd(0, "kick", dupFd(g.kick.fd));
}

/** A 4 KiB memfd standing for the journal's first page (the position log). */
function positionLog(): number {
  const fd = createMemfd(POSITION_LOG_BYTES, "journal");
  cleanups.push(() => closeFd(fd));
  return fd;
}

function logWordAt(fd: number, index: number): number {
  const bytes = Buffer.alloc(4);
  readSync(fd, bytes, 0, 4, index * 4);
  return bytes.readUInt32LE(0);
}

/** Every fd of a handed-over rings state. */
function fdsOf(state: RingsState): number[] {
  const fds = state.regions.map(({ fd }) => fd);
  for (const v of state.vrings)
    for (const fd of [v.kick, v.call, v.err]) if (fd !== null) fds.push(fd);
  return fds;
}

/** Whether a write to `ours` is read from `theirs`: the same eventfd. */
function sameEventFd(ours: EventFd, theirs: number): boolean {
  const copy = EventFd.adopt(dupFd(theirs));
  try {
    ours.read();
    copy.write(3);
    return ours.read() === 3;
  } finally {
    copy.close();
  }
}

for (const packed of [false, true]) {
  const ring = packed ? "packed" : "split";
  /** The base after `slots` ring slots were taken and used (nothing in flight). */
  const baseAfter = (slots: number) => {
    if (!packed) return slots / 2;
    const position = (slots % SIZE) | (Math.floor(slots / SIZE) % 2 === 0 ? WRAP_BIT : 0);
    return (position | (position << 16)) >>> 0;
  };

  describe(`LocalRings.handOver, ${ring} ring`, () => {
    it("waits for the chains in flight, then gives up base, memory and fds, all open", async () => {
      const g = guest(packed);
      const device = new EchoDevice({ holdChains: true });
      const rings = ringsFor(device);
      start(rings, g, g.freshBase);
      const err = EventFd.create();
      cleanups.push(() => err.close());
      rings.setVringFd(0, "err", dupFd(err.fd));
      g.add(3);
      await until(() => device.heldCount(0) === 3, "three chains in flight");
      let state: RingsState | null = null;
      const handing = rings.handOver().then((s) => {
        state = s;
      });
      await turns();
      assert.equal(state, null, "the chains in flight are not done");
      // A kick meanwhile is not served: the rings no longer watch it.
      const passes = device.processed.length;
      g.add(1);
      await turns();
      assert.equal(device.processed.length, passes);
      device.release();
      await handing;
      const handed = state as unknown as RingsState;
      cleanups.push(() => {
        for (const fd of fdsOf(handed)) closeFd(fd);
      });
      assert.equal(g.collect().length, 3, "the chains in flight finished into the ring");
      assert.equal(handed.features, g.features);
      assert.deepEqual(
        handed.regions.map(({ region }) => region),
        g.ram.regions.map(({ region }) => region),
      );
      assert.ok(sameFile(handed.regions[0]!.fd, g.ram.regions[0]!.fd));
      const vring = handed.vrings[0]!;
      assert.deepEqual(
        { ...vring, kick: null, call: null, err: null },
        {
          index: 0,
          size: SIZE,
          addr: g.addr,
          base: baseAfter(6),
          enabled: true,
          kick: null,
          call: null,
          err: null,
        },
      );
      for (const fd of fdsOf(handed)) assert.ok(isOpen(fd), `fd ${fd} is open`);
      assert.ok(sameEventFd(g.kick, vring.kick!), "the kick fd");
      assert.ok(sameEventFd(g.call, vring.call!), "the call fd");
      assert.ok(sameEventFd(err, vring.err!), "the err fd");
      assert.equal(device.resets, 1, "the device is reset");
      // Nothing more: no pass, no used element, no call.
      g.call.read();
      g.kick.write(1);
      await turns();
      assert.equal(device.processed.length, passes);
      assert.deepEqual(g.collect(), []);
      assert.equal(g.call.read(), 0);
      await assert.rejects(
        Promise.resolve().then(() => rings.handOver()),
        /closed/,
      );
    });

    it("the state restored into new rings resumes at the same position", async () => {
      const g = guest(packed);
      const first = new EchoDevice();
      const rings = ringsFor(first);
      start(rings, g, g.freshBase);
      // Enough chains to take the ring past its end.
      for (let round = 0; round < 5; round++) {
        g.add(2);
        await until(() => g.drained(), "two chains used");
      }
      const handed = await rings.handOver();
      assert.equal(handed.vrings[0]!.base, baseAfter(20));
      // Chains the guest adds meanwhile wait in the ring for the successor.
      g.add(3);
      const second = new EchoDevice();
      const backend = new BackendConnection(second, { logger: logged().logger });
      cleanups.push(() => backend.disconnect());
      await backend.restore({
        features: g.features,
        protocolFeatures: 0n,
        status: 0,
        ownerSet: true,
        backendReqFd: null,
        rings: handed,
        journal: null,
      });
      await until(() => g.drained(), "the chains added meanwhile");
      assert.equal(second.chainsCompleted, 3, "nothing done before is run again");
      g.add(2);
      await until(() => g.drained(), "chains after the restore");
      const again = await backend.handOver();
      cleanups.push(() => {
        for (const fd of fdsOf(again.rings)) closeFd(fd);
      });
      assert.equal(again.rings.vrings[0]!.base, baseAfter(30));
    });
  });
}

describe("LocalRings.recoverVringBase", () => {
  /** Runs two chains to completion and takes two more that a "crash" leaves in flight. */
  async function crashWithTwoInFlight(g: Guest, log?: number): Promise<void> {
    const device = new EchoDevice({ holdChains: true });
    const rings = ringsFor(device);
    if (log !== undefined) rings.setPositionLog(dupFd(log));
    start(rings, g, g.freshBase);
    g.add(2);
    await until(() => device.heldCount(0) === 2, "two chains taken");
    device.release();
    await until(() => g.drained(), "two chains used");
    g.add(2);
    await until(() => device.heldCount(0) === 2, "two more taken");
    // The process dies: nothing more reaches the ring.
    rings.close();
  }

  it("split: starts from used->idx, so chains taken and not completed run again", async () => {
    const g = guest(false);
    await crashWithTwoInFlight(g);
    const device = new EchoDevice();
    const { lines, logger } = logged();
    const rings = ringsFor(device, logger);
    g.call.read();
    start(rings, g, "recover");
    await until(() => g.drained(), "the chains in flight, run again");
    assert.equal(device.chainsCompleted, 2);
    assert.ok(lines.some((line) => /vring resumed where the ring stands/.test(line)));
    assert.equal(await rings.getVringBase(0), 4);
  });

  it("split: signals the driver when it resumes, even with nothing to do", async () => {
    const g = guest(false);
    const rings = ringsFor(new EchoDevice());
    g.call.read();
    start(rings, g, "recover");
    assert.ok(g.call.read() > 0, "a completion the predecessor did not signal is seen");
  });

  it("setVringBase after recoverVringBase: the base given wins", async () => {
    const g = guest(false);
    await crashWithTwoInFlight(g);
    const device = new EchoDevice();
    const rings = ringsFor(device);
    rings.recoverVringBase(0);
    start(rings, g, 4);
    await turns();
    assert.equal(device.chainsCompleted, 0, "chains 3 and 4 are taken as done");
    assert.equal(g.outstanding, 2);
  });

  it("packed: starts from the logged used position", async () => {
    const g = guest(true);
    const log = positionLog();
    await crashWithTwoInFlight(g, log);
    // Two chains of two slots used: the last element went from slot 2 to slot 4, lap 1.
    assert.equal(logWordAt(log, 0), (WRAP_BIT | 2 | ((WRAP_BIT | 4) << 16)) >>> 0);
    assert.equal(logWordAt(log, 1), 0, "vring 1's word is untouched");
    const device = new EchoDevice();
    const { lines, logger } = logged();
    const rings = ringsFor(device, logger);
    rings.setPositionLog(dupFd(log));
    start(rings, g, "recover");
    await until(() => g.drained(), "the chains in flight, run again");
    assert.equal(device.chainsCompleted, 2);
    assert.ok(lines.some((line) => /vring resumed where the ring stands/.test(line)));
    const position = WRAP_BIT | 8;
    assert.equal(await rings.getVringBase(0), (position | (position << 16)) >>> 0);
    assert.equal(logWordAt(log, 0), (WRAP_BIT | 6 | (position << 16)) >>> 0);
  });

  it("packed without a position log: the vring is broken, and it says why", async () => {
    const g = guest(true);
    await crashWithTwoInFlight(g);
    const device = new EchoDevice();
    const { lines, logger } = logged();
    const rings = ringsFor(device, logger);
    start(rings, g, "recover");
    g.kick.write(1);
    await turns();
    assert.equal(device.processed.length, 0, "the ring is not served");
    assert.equal(g.outstanding, 2);
    assert.ok(
      lines.some(
        (line) =>
          /cannot start vring/.test(line) && /cannot be recovered without its log/.test(line),
      ),
      lines.join("\n"),
    );
  });
});
