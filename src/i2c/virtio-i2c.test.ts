import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NO_WRITE_CYCLE } from "../../test/helpers/eeprom.js";
import type { ModelDriver } from "../../test/helpers/virtqueue.js";
import { createLogger } from "../log.js";
import { DriverPackedQueue } from "../virtio/driver-packed-queue.js";
import { DriverSplitQueue } from "../virtio/driver-split-queue.js";
import { VIRTIO_F_RING_INDIRECT_DESC } from "../virtio/features.js";
import { createArrayGuestMemory } from "../virtio/guest-memory.js";
import { PackedQueue, WRAP_BIT } from "../virtio/packed-queue.js";
import { SplitQueue } from "../virtio/split-queue.js";
import { AddressMap, type I2cBus, type I2cMessage } from "./bus.js";
import { createModel, findModel, type I2cDeviceModel, modelContext } from "./model.js";
import { RequestFlag, RequestStatus, VIRTIO_I2C_F_ZERO_LENGTH_REQUEST } from "./protocol.js";
import { SimBus, simTargets } from "./sim-bus.js";
import { VirtioI2cDevice } from "./virtio-i2c.js";

interface Msg {
  addr: number;
  read?: boolean;
  /** Write data. */
  data?: number[];
  /** Read length. */
  len?: number;
}

interface Submitted {
  head: number;
  statusGpa: number;
  bufGpa: number;
  len: number;
}

const DATA_BASE = 0x10000;

/**
 * Submits requests the way Linux i2c-virtio does: one chain per message, FAIL_NEXT on all but the
 * last; Guest on a split ring, PackedGuest on a packed one.
 */
abstract class TestGuest {
  readonly memory = createArrayGuestMemory([{ guestPhysAddr: 0, size: 0x100000 }]);
  abstract readonly driver: ModelDriver;
  abstract readonly queue: SplitQueue | PackedQueue;
  notifications = 0;
  #next = DATA_BASE;

  /** The device queue's options: `indirect` = VIRTIO_F_RING_INDIRECT_DESC negotiated. */
  protected queueOptions(indirect: boolean) {
    return {
      eventIdx: false,
      indirect,
      notify: () => {
        this.notifications++;
      },
    };
  }

  alloc(len: number): number {
    const gpa = this.#next;
    this.#next += Math.ceil(Math.max(len, 1) / 16) * 16;
    return gpa;
  }

  header(addr: number, flags: number, rawAddr = addr << 1): number {
    const gpa = this.alloc(8);
    const bytes = new Uint8Array(8);
    const dv = new DataView(bytes.buffer);
    dv.setUint16(0, rawAddr, true);
    dv.setUint32(4, flags, true);
    this.memory.write(gpa, bytes);
    return gpa;
  }

  /** One transfer; `last` false leaves FAIL_NEXT on the final message (an unfinished group). */
  submit(msgs: Msg[], options: { indirect?: boolean; last?: boolean } = {}): Submitted[] {
    const indirect = options.indirect ?? true;
    return msgs.map((m, i) => {
      const isLast = i === msgs.length - 1 && options.last !== false;
      const flags = (isLast ? 0 : RequestFlag.FAIL_NEXT) | (m.read ? RequestFlag.M_RD : 0);
      const hdr = this.header(m.addr, flags);
      const len = m.read ? (m.len ?? 0) : (m.data?.length ?? 0);
      const bufGpa = this.alloc(len);
      if (!m.read && m.data) this.memory.write(bufGpa, Uint8Array.from(m.data));
      const statusGpa = this.alloc(1);
      this.memory.write(statusGpa, Uint8Array.of(0xee)); // neither OK nor ERR: shows "not written"
      const buffers = [{ gpa: hdr, len: 8, writable: false }];
      if (len > 0) buffers.push({ gpa: bufGpa, len, writable: m.read === true });
      buffers.push({ gpa: statusGpa, len: 1, writable: true });
      const head = this.driver.add(buffers, { indirect, indirectGpa: this.alloc(16 * 3) });
      assert.notEqual(head, null, "ring full");
      return { head: head as number, statusGpa, bufGpa, len };
    });
  }

  status(s: Submitted): number {
    const b = new Uint8Array(1);
    this.memory.read(s.statusGpa, b);
    return b[0] as number;
  }

  data(s: Submitted): number[] {
    const b = new Uint8Array(s.len);
    this.memory.read(s.bufGpa, b);
    return [...b];
  }

  /** Used elements in ring order. */
  used(): { head: number; len: number }[] {
    const out: { head: number; len: number }[] = [];
    for (let e = this.driver.getUsed(); e; e = this.driver.getUsed()) out.push(e);
    return out;
  }
}

class Guest extends TestGuest {
  readonly driver: DriverSplitQueue;
  readonly queue: SplitQueue;

  constructor(size = 64, indirect = true) {
    super();
    this.driver = new DriverSplitQueue(this.memory, 0, size);
    this.queue = new SplitQueue(this.memory, size, this.driver.addresses, {
      ...this.queueOptions(indirect),
      lastAvailIndex: 0,
    });
  }
}

class PackedGuest extends TestGuest {
  readonly driver: DriverPackedQueue;
  readonly queue: PackedQueue;

  constructor(size = 64, indirect = true) {
    super();
    this.driver = new DriverPackedQueue(this.memory, 0, size);
    this.queue = new PackedQueue(this.memory, size, this.driver.addresses, {
      ...this.queueOptions(indirect),
      lastAvailIndex: WRAP_BIT,
    });
  }
}

const FEATURES = VIRTIO_I2C_F_ZERO_LENGTH_REQUEST | VIRTIO_F_RING_INDIRECT_DESC;

function makeDevice(
  groups: { bus: I2cBus; addrs: number[] }[],
  logger = createLogger("error", { write: () => 0 }),
) {
  const device = new VirtioI2cDevice(new AddressMap(groups), logger);
  device.setFeatures(FEATURES);
  return device;
}

/** A bus that records what reached it and succeeds on every message (reads give 0x5a). */
class RecordingBus implements I2cBus {
  readonly calls: { addr: number; read: boolean; data: number[] }[][] = [];
  readonly name: string;
  readonly synchronous = true;
  constructor(name: string) {
    this.name = name;
  }
  transfer(msgs: readonly I2cMessage[]): number {
    this.calls.push(msgs.map((m) => ({ addr: m.addr, read: m.read, data: [...m.buf] })));
    for (const m of msgs) if (m.read) m.buf.fill(0x5a);
    return msgs.length;
  }
  close(): void {}
}

/** An asynchronous bus whose transfers complete when the test says so, in any order it likes. */
class DeferredBus implements I2cBus {
  readonly name = "deferred";
  readonly synchronous = false;
  readonly pending: { msgs: readonly I2cMessage[]; resolve: (n: number) => void }[] = [];
  active = 0;
  maxActive = 0;
  transfer(msgs: readonly I2cMessage[]): Promise<number> {
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    return new Promise((resolve) => {
      this.pending.push({
        msgs,
        resolve: (n) => {
          this.active--;
          resolve(n);
        },
      });
    });
  }
  close(): void {}
}

const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("VirtioI2cDevice", () => {
  it("offers and requires ZERO_LENGTH_REQUEST, one queue of up to 1024", () => {
    const device = makeDevice([]);
    assert.equal(device.features, 1n);
    assert.equal(device.requiredFeatures, 1n);
    assert.equal(device.numQueues, 1);
    assert.equal(device.maxQueueSize, 1024);
    assert.equal(device.maxChainLength, 16);
  });

  for (const indirect of [true, false]) {
    it(`runs a write then a combined write+read on a 24c02 (${indirect ? "indirect" : "direct"} descriptors)`, () => {
      const guest = new Guest();
      // No write cycle: the combined read follows the write at once.
      const eeprom = findModel("24c02").create(NO_WRITE_CYCLE, modelContext({ address: 0x50 }));
      const bus = new SimBus(simTargets(new Map([[0x50, eeprom]])));
      const device = makeDevice([{ bus, addrs: [0x50] }]);
      const write = guest.submit([{ addr: 0x50, data: [0x10, 1, 2, 3] }], { indirect });
      const [addr, read] = guest.submit(
        [
          { addr: 0x50, data: [0x10] },
          { addr: 0x50, read: true, len: 3 },
        ],
        { indirect },
      ) as [Submitted, Submitted];
      device.processQueue(0, guest.queue);
      assert.deepEqual(guest.used(), [
        { head: write[0]?.head, len: 1 },
        { head: addr.head, len: 1 },
        { head: read.head, len: 4 },
      ]);
      assert.equal(guest.status(addr), RequestStatus.OK);
      assert.equal(guest.status(read), RequestStatus.OK);
      assert.deepEqual(guest.data(read), [1, 2, 3]);
      assert.equal(guest.notifications, 1);
      assert.equal(guest.queue.inFlight, 0);
    });
  }

  it("answers zero-length probes: OK where a device is, ERR where none or not listed", () => {
    const guest = new Guest();
    const device = makeDevice([
      { bus: new SimBus(new Map([[0x50, createModel("24c02")]])), addrs: [0x50, 0x51] },
    ]);
    const probes = [0x50, 0x51, 0x52].map((addr) => guest.submit([{ addr }])[0] as Submitted);
    const readProbe = guest.submit([{ addr: 0x50, read: true, len: 0 }])[0] as Submitted;
    device.processQueue(0, guest.queue);
    assert.deepEqual(
      probes.map((p) => guest.status(p)),
      [RequestStatus.OK, RequestStatus.ERR, RequestStatus.ERR],
    );
    assert.equal(guest.status(readProbe), RequestStatus.OK);
    assert.deepEqual(
      guest.used().map((u) => u.len),
      [1, 1, 1, 1],
    );
  });

  it("fails a whole transfer whose second message targets an unlisted address, before any bus sees it", () => {
    const guest = new Guest();
    const bus = new RecordingBus("i2c-1");
    const device = makeDevice([{ bus, addrs: [0x20] }]);
    const reqs = guest.submit([
      { addr: 0x20, data: [1] },
      { addr: 0x21, read: true, len: 2 },
    ]);
    device.processQueue(0, guest.queue);
    assert.deepEqual(bus.calls, []);
    assert.deepEqual(
      reqs.map((r) => guest.status(r)),
      [RequestStatus.ERR, RequestStatus.ERR],
    );
    assert.deepEqual(
      guest.used().map((u) => u.len),
      [1, 1],
    );
  });

  it("refuses a transfer that mixes two buses, and runs the next one", () => {
    const guest = new Guest();
    const a = new RecordingBus("i2c-1");
    const b = new RecordingBus("i2c-2");
    const device = makeDevice([
      { bus: a, addrs: [0x20] },
      { bus: b, addrs: [0x30] },
    ]);
    const mixed = guest.submit([
      { addr: 0x20, data: [1] },
      { addr: 0x30, data: [2] },
    ]);
    const fine = guest.submit([{ addr: 0x30, read: true, len: 2 }]);
    device.processQueue(0, guest.queue);
    assert.deepEqual(a.calls, []);
    assert.deepEqual(b.calls, [[{ addr: 0x30, read: true, data: [0, 0] }]]);
    assert.deepEqual(
      mixed.map((r) => guest.status(r)),
      [RequestStatus.ERR, RequestStatus.ERR],
    );
    assert.equal(guest.status(fine[0] as Submitted), RequestStatus.OK);
    assert.deepEqual(guest.data(fine[0] as Submitted), [0x5a, 0x5a]);
  });

  it("marks the first failed message and all after it ERR", () => {
    const guest = new Guest();
    const device = makeDevice([
      { bus: new SimBus(new Map([[0x50, createModel("24c02")]])), addrs: [0x50, 0x51] },
    ]);
    const reqs = guest.submit([
      { addr: 0x50, data: [0] },
      { addr: 0x51, data: [0] },
      { addr: 0x50, read: true, len: 1 },
    ]);
    device.processQueue(0, guest.queue);
    assert.deepEqual(
      reqs.map((r) => guest.status(r)),
      [RequestStatus.OK, RequestStatus.ERR, RequestStatus.ERR],
    );
    assert.deepEqual(
      guest.used().map((u) => u.len),
      [1, 1, 1],
    );
  });

  it("returns every malformed chain to the used ring, with ERR where the status byte is found", () => {
    const guest = new Guest();
    const bus = new RecordingBus("i2c-1");
    const device = makeDevice([{ bus, addrs: [0x20] }]);
    const st = () => {
      const gpa = guest.alloc(1);
      guest.memory.write(gpa, Uint8Array.of(0xee));
      return { gpa, len: 1, writable: true };
    };
    const hdr = (flags: number, raw?: number) => ({
      gpa: guest.header(0x20, flags, raw),
      len: 8,
      writable: false,
    });
    const cases: {
      name: string;
      buffers: { gpa: number; len: number; writable: boolean }[];
      hasStatus: boolean;
      statusIndex?: number;
    }[] = [
      { name: "short header", buffers: [{ ...hdr(0), len: 7 }, st()], hasStatus: true },
      {
        name: "no status",
        buffers: [hdr(0), { gpa: guest.alloc(2), len: 2, writable: false }],
        hasStatus: false,
      },
      { name: "reserved flag", buffers: [hdr(4), st()], hasStatus: true },
      { name: "odd address", buffers: [hdr(0, 0x41), st()], hasStatus: true },
      { name: "10-bit address", buffers: [hdr(0, 0xf100), st()], hasStatus: true },
      {
        name: "read with readable data",
        buffers: [hdr(RequestFlag.M_RD), { gpa: guest.alloc(2), len: 2, writable: false }, st()],
        hasStatus: true,
      },
      {
        name: "write with writable buffer",
        buffers: [hdr(0), { gpa: guest.alloc(2), len: 2, writable: true }, st()],
        hasStatus: true,
      },
      {
        name: "zero-length descriptor",
        buffers: [hdr(0), { gpa: guest.alloc(1), len: 0, writable: false }, st()],
        hasStatus: false /* the walk stops before the status */,
      },
      {
        name: "outside guest memory",
        buffers: [{ gpa: 0x200000, len: 8, writable: false }, st()],
        hasStatus: false /* the walk stops before the status */,
      },
      {
        name: "status outside guest memory",
        buffers: [hdr(0), { gpa: 0x200000, len: 1, writable: true }],
        hasStatus: false,
      },
      {
        name: "readable after writable",
        buffers: [hdr(0), st(), { gpa: guest.alloc(1), len: 1, writable: false }],
        hasStatus: true,
        statusIndex: 1,
      },
    ];
    const heads = cases.map((c) =>
      guest.driver.add(c.buffers, { indirect: true, indirectGpa: guest.alloc(48) }),
    );
    device.processQueue(0, guest.queue);
    const used = guest.used();
    assert.deepEqual(
      used.map((u) => u.head),
      heads,
    );
    cases.forEach((c, i) => {
      const status = c.buffers.at(c.statusIndex ?? -1) as { gpa: number; writable: boolean };
      const b = new Uint8Array(1);
      if (status.gpa < 0x100000) guest.memory.read(status.gpa, b);
      if (c.hasStatus) {
        assert.equal(b[0], RequestStatus.ERR, c.name);
        assert.equal(used[i]?.len, 1, c.name);
      } else {
        assert.equal(used[i]?.len, 0, c.name);
        if (status.writable && status.gpa < 0x100000)
          assert.equal(b[0], 0xee, `${c.name}: status untouched`);
      }
    });
    assert.deepEqual(bus.calls, []);
    assert.equal(guest.queue.inFlight, 0);
  });

  it("a bad request fails its whole group", () => {
    const guest = new Guest();
    const bus = new RecordingBus("i2c-1");
    const device = makeDevice([{ bus, addrs: [0x20] }]);
    const good = guest.submit([{ addr: 0x20, data: [1] }], { last: false });
    // Second message of the group has a reserved flag bit: the whole group fails.
    const statusGpa = guest.alloc(1);
    guest.driver.add(
      [
        { gpa: guest.header(0x20, 8), len: 8, writable: false },
        { gpa: statusGpa, len: 1, writable: true },
      ],
      { indirect: true, indirectGpa: guest.alloc(48) },
    );
    device.processQueue(0, guest.queue);
    assert.deepEqual(bus.calls, []);
    assert.equal(guest.status(good[0] as Submitted), RequestStatus.ERR);
    assert.equal(guest.used().length, 2);
  });

  it("gives back an unfinished group and completes it once the rest arrives", () => {
    const guest = new Guest();
    const eeprom = createModel("24c02", { contents: Uint8Array.of(9, 8, 7) });
    const device = makeDevice([{ bus: new SimBus(new Map([[0x50, eeprom]])), addrs: [0x50] }]);
    const first = guest.submit([{ addr: 0x50, data: [1] }], { last: false });
    device.processQueue(0, guest.queue);
    assert.deepEqual(guest.used(), []);
    assert.equal(guest.queue.inFlight, 0);
    assert.equal(guest.notifications, 0);
    const second = guest.submit([{ addr: 0x50, read: true, len: 2 }]);
    device.processQueue(0, guest.queue);
    assert.deepEqual(
      guest.used().map((u) => u.head),
      [first[0]?.head, second[0]?.head],
    );
    assert.deepEqual(guest.data(second[0] as Submitted), [8, 7]);
  });

  it("runs an unfinished group that fills the ring, since the rest can never come", () => {
    const guest = new Guest(4);
    const bus = new RecordingBus("i2c-1");
    const device = makeDevice([{ bus, addrs: [0x20] }]);
    const reqs = guest.submit(
      [0, 1, 2, 3].map((n) => ({ addr: 0x20, data: [n] })),
      { last: false },
    );
    device.processQueue(0, guest.queue);
    assert.equal(bus.calls.length, 1);
    assert.equal(bus.calls[0]?.length, 4);
    assert.deepEqual(
      reqs.map((r) => guest.status(r)),
      [0, 0, 0, 0],
    );
  });

  const rings = [
    ["split", (size: number, indirect: boolean) => new Guest(size, indirect)],
    ["packed", (size: number, indirect: boolean) => new PackedGuest(size, indirect)],
  ] as const;
  for (const [ring, makeGuest] of rings) {
    it(`runs an unfinished group of direct chains that fills a ${ring} ring with INDIRECT_DESC negotiated`, () => {
      const guest = makeGuest(8, true);
      const bus = new RecordingBus("i2c-1");
      const device = makeDevice([{ bus, addrs: [0x20] }]);
      // Four zero-length writes of two descriptors each take all 8 slots: the rest cannot come.
      const reqs = guest.submit(
        [0, 1, 2, 3].map(() => ({ addr: 0x20 })),
        { indirect: false, last: false },
      );
      assert.equal(guest.driver.numFree, 0);
      device.processQueue(0, guest.queue);
      assert.equal(bus.calls.length, 1);
      assert.equal(bus.calls[0]?.length, 4);
      assert.deepEqual(
        reqs.map((r) => guest.status(r)),
        [0, 0, 0, 0],
      );
      assert.equal(guest.used().length, 4);
      assert.equal(guest.queue.inFlight, 0);
    });

    for (const indirect of [true, false]) {
      it(`runs an unfinished group when the ${ring} ring has fewer slots left than its last chain took (INDIRECT_DESC ${indirect ? "negotiated" : "not negotiated"})`, () => {
        const guest = makeGuest(4, indirect);
        const bus = new RecordingBus("i2c-1");
        const device = makeDevice([{ bus, addrs: [0x20] }]);
        device.setFeatures(indirect ? FEATURES : FEATURES & ~VIRTIO_F_RING_INDIRECT_DESC);
        // A write of three descriptors leaves one slot: the read of three that would follow
        // (i2cget's register pointer + read) does not fit, and the driver waits for the write.
        const [write] = guest.submit([{ addr: 0x20, data: [0x10] }], {
          indirect: false,
          last: false,
        }) as [Submitted];
        assert.equal(guest.driver.numFree, 1);
        device.processQueue(0, guest.queue);
        assert.deepEqual(bus.calls, [[{ addr: 0x20, read: false, data: [0x10] }]]);
        assert.equal(guest.status(write), RequestStatus.OK);
        assert.equal(guest.used().length, 1);
      });
    }

    it(`gives back an unfinished group of direct chains while the ${ring} ring can take another like its last`, () => {
      const guest = makeGuest(8, true);
      const bus = new RecordingBus("i2c-1");
      const device = makeDevice([{ bus, addrs: [0x20] }]);
      const [write] = guest.submit([{ addr: 0x20, data: [0x10] }], {
        indirect: false,
        last: false,
      }) as [Submitted];
      device.processQueue(0, guest.queue);
      assert.equal(bus.calls.length, 0, "the group waits for its rest");
      assert.deepEqual(guest.used(), []);
      assert.equal(guest.queue.inFlight, 0);
      const [read] = guest.submit([{ addr: 0x20, read: true, len: 2 }], {
        indirect: false,
      }) as [Submitted];
      device.processQueue(0, guest.queue);
      assert.equal(bus.calls.length, 1, "one transfer");
      assert.equal(bus.calls[0]?.length, 2);
      assert.deepEqual(
        guest.used().map((u) => u.head),
        [write.head, read.head],
      );
      assert.deepEqual(guest.data(read), [0x5a, 0x5a]);
    });
  }

  it("fails a transfer whose bus declared itself synchronous but returned a Promise, once, and logs it", async () => {
    const lines: string[] = [];
    const guest = new Guest();
    let settleLate: (done: number) => void = () => {};
    let answers = 0;
    const broken: I2cBus = {
      name: "broken",
      synchronous: true,
      transfer(msgs) {
        answers++;
        if (answers === 1) {
          return new Promise<number>((resolve) => {
            settleLate = resolve;
          });
        }
        if (answers === 2) return Promise.reject(new Error("EIO"));
        for (const m of msgs) if (m.read) m.buf.fill(0x11);
        return msgs.length;
      },
      close() {},
    };
    const device = makeDevice(
      [{ bus: broken, addrs: [0x20] }],
      createLogger("error", { write: (l) => lines.push(l) }),
    );
    const [first] = guest.submit([{ addr: 0x20, read: true, len: 2 }]) as [Submitted];
    const [second] = guest.submit([{ addr: 0x20, data: [1] }]) as [Submitted];
    const [third] = guest.submit([{ addr: 0x20, read: true, len: 2 }]) as [Submitted];
    device.processQueue(0, guest.queue);
    // Each chain back once, at once, in order: no transfer waits behind the broken promises.
    assert.deepEqual(guest.used(), [
      { head: first.head, len: 1 },
      { head: second.head, len: 1 },
      { head: third.head, len: 3 },
    ]);
    assert.deepEqual(
      [first, second, third].map((r) => guest.status(r)),
      [RequestStatus.ERR, RequestStatus.ERR, RequestStatus.OK],
    );
    assert.deepEqual(guest.data(third), [0x11, 0x11]);
    assert.equal(guest.queue.inFlight, 0);
    await device.whenIdle(0);
    assert.equal(lines.length, 2);
    assert.match(lines[0] ?? "", /synchronous contract/);
    // The broken promise settles later: nothing more reaches the used ring.
    settleLate(1);
    await flush();
    assert.deepEqual(guest.used(), []);
    assert.equal(guest.notifications, 1);
  });

  it("completes asynchronous transfers in order, one at a time, even when the bus resolves out of order", async () => {
    const guest = new Guest();
    const slow = new DeferredBus();
    const fast = new RecordingBus("sim");
    const device = makeDevice([
      { bus: slow, addrs: [0x20] },
      { bus: fast, addrs: [0x30] },
    ]);
    const a = guest.submit([{ addr: 0x20, read: true, len: 1 }]);
    const b = guest.submit([{ addr: 0x30, data: [1] }]);
    const c = guest.submit([{ addr: 0x20, data: [2] }]);
    device.processQueue(0, guest.queue);
    let idle = false;
    const idlePromise = device.whenIdle(0).then(() => {
      idle = true;
    });
    assert.equal(slow.pending.length, 1, "later transfers wait for the first");
    assert.deepEqual(fast.calls, [], "a synchronous bus waits behind an asynchronous transfer");
    assert.deepEqual(guest.used(), []);
    const first = slow.pending[0];
    first?.msgs[0]?.buf.fill(0x77);
    first?.resolve(1);
    await flush();
    assert.equal(fast.calls.length, 1);
    assert.equal(slow.pending.length, 2);
    assert.deepEqual(
      guest.used().map((u) => u.head),
      [a[0]?.head, b[0]?.head],
    );
    assert.deepEqual(guest.data(a[0] as Submitted), [0x77]);
    assert.equal(idle, false);
    slow.pending[1]?.resolve(0);
    await idlePromise;
    assert.deepEqual(
      guest.used().map((u) => u.head),
      [c[0]?.head],
    );
    assert.equal(guest.status(c[0] as Submitted), RequestStatus.ERR);
    assert.equal(slow.maxActive, 1);
    assert.equal(guest.notifications, 2);
  });

  it("gives an asynchronous bus private buffers, never views of guest memory", async () => {
    const guest = new Guest();
    const slow = new DeferredBus();
    const device = makeDevice([{ bus: slow, addrs: [0x20] }]);
    const r = guest.submit([{ addr: 0x20, read: true, len: 4 }]);
    device.processQueue(0, guest.queue);
    const msg = slow.pending[0]?.msgs[0];
    msg?.buf.fill(0x33);
    assert.deepEqual(
      guest.data(r[0] as Submitted),
      [0, 0, 0, 0],
      "nothing reaches the guest early",
    );
    slow.pending[0]?.resolve(1);
    await device.whenIdle(0);
    assert.deepEqual(guest.data(r[0] as Submitted), [0x33, 0x33, 0x33, 0x33]);
  });

  it("never lends guest memory to a bus that may go asynchronous, even after it answered at once", async () => {
    const guest = new Guest();
    // An adaptive host bus: answers inline while the adapter is fast, through a Promise otherwise.
    const pending: { msgs: readonly I2cMessage[]; resolve: (n: number) => void }[] = [];
    let inline = true;
    const adaptive: I2cBus = {
      name: "adaptive",
      synchronous: false,
      transfer(msgs) {
        if (inline) {
          for (const m of msgs) if (m.read) m.buf.fill(0x11);
          return msgs.length;
        }
        return new Promise((resolve) => pending.push({ msgs, resolve }));
      },
      close() {},
    };
    const device = makeDevice([{ bus: adaptive, addrs: [0x20] }]);
    const [read] = guest.submit([{ addr: 0x20, read: true, len: 4 }]) as [Submitted];
    device.processQueue(0, guest.queue);
    assert.deepEqual(guest.data(read), [0x11, 0x11, 0x11, 0x11]);
    inline = false;
    guest.driver.publish(read.head);
    device.processQueue(0, guest.queue);
    pending[0]?.msgs[0]?.buf.fill(0x33);
    assert.deepEqual(guest.data(read), [0x11, 0x11, 0x11, 0x11], "nothing reaches the guest early");
    pending[0]?.resolve(1);
    await device.whenIdle(0);
    assert.deepEqual(guest.data(read), [0x33, 0x33, 0x33, 0x33]);
  });

  it("lends guest memory in place to a bus that runs inline now, and fails one that then goes asynchronous", async () => {
    const guest = new Guest();
    const seen: Uint8Array[] = [];
    let inlineNow = true;
    let broken = false;
    const adaptive: I2cBus = {
      name: "adaptive",
      synchronous: false,
      get inlineNow() {
        return inlineNow;
      },
      transfer(msgs) {
        for (const m of msgs) {
          seen.push(m.buf);
          if (m.read) m.buf.fill(0x22);
        }
        return broken ? Promise.resolve(msgs.length) : msgs.length;
      },
      close() {},
    };
    const device = makeDevice([{ bus: adaptive, addrs: [0x20] }]);
    const [read] = guest.submit([{ addr: 0x20, read: true, len: 4 }]) as [Submitted];
    device.processQueue(0, guest.queue);
    assert.deepEqual(guest.data(read), [0x22, 0x22, 0x22, 0x22]);
    // In place: the bus wrote straight into guest memory, so its view and the guest's data are one.
    seen[0]?.fill(0x44);
    assert.deepEqual(guest.data(read), [0x44, 0x44, 0x44, 0x44], "the message was guest memory");

    // It said "inline now" and returned a Promise anyway: the transfer fails at once, ERR.
    broken = true;
    guest.driver.publish(read.head);
    device.processQueue(0, guest.queue);
    assert.equal(guest.status(read), RequestStatus.ERR);
    inlineNow = false;
    await device.whenIdle(0);
  });

  it("lends a reused guest buffer in place again, and never a view of memory the queue has left", () => {
    const guest = new Guest();
    let fill = 0;
    const counting: I2cBus = {
      name: "counting",
      synchronous: true,
      transfer(msgs) {
        fill++;
        for (const m of msgs) if (m.read) m.buf.fill(fill);
        return msgs.length;
      },
      close() {},
    };
    const device = makeDevice([{ bus: counting, addrs: [0x20] }]);
    const [read] = guest.submit([{ addr: 0x20, read: true, len: 4 }]) as [Submitted];
    // A synchronous bus is lent guest memory in place from the first transfer on.
    device.processQueue(0, guest.queue);
    guest.driver.publish(read.head);
    device.processQueue(0, guest.queue);
    assert.deepEqual(guest.data(read), [2, 2, 2, 2]);
    guest.driver.publish(read.head);
    device.processQueue(0, guest.queue);
    assert.deepEqual(guest.data(read), [3, 3, 3, 3], "the same buffer again");
    // The same chain once more, after the queue moved to another memory (SET_MEM_TABLE).
    guest.driver.publish(read.head);
    const moved = createArrayGuestMemory([{ guestPhysAddr: 0, size: 0x100000 }]);
    const bytes = new Uint8Array(0x100000);
    guest.memory.read(0, bytes);
    moved.write(0, bytes);
    guest.queue.remap(moved);
    device.processQueue(0, guest.queue);
    const answer = new Uint8Array(4);
    moved.read(read.bufGpa, answer);
    assert.deepEqual([...answer], [4, 4, 4, 4]);
    assert.deepEqual(guest.data(read), [3, 3, 3, 3], "the old memory is left alone");
  });

  it("drops completions that arrive after a reset", async () => {
    const guest = new Guest();
    const slow = new DeferredBus();
    const device = makeDevice([{ bus: slow, addrs: [0x20] }]);
    guest.submit([{ addr: 0x20, data: [1] }]);
    guest.submit([{ addr: 0x20, data: [2] }]);
    device.processQueue(0, guest.queue);
    const idle = device.whenIdle(0);
    device.reset();
    await idle;
    slow.pending[0]?.resolve(1);
    await flush();
    assert.deepEqual(guest.used(), []);
    assert.equal(slow.pending.length, 1, "the waiting transfer never started");
    await device.whenIdle(0);
  });

  it("a throwing model fails only its own transfer", () => {
    const guest = new Guest();
    const broken: I2cDeviceModel = {
      start: () => true,
      write: () => {
        throw new Error("boom");
      },
      read: () => undefined,
      stop: () => undefined,
    };
    const device = makeDevice([
      {
        bus: new SimBus(
          new Map([
            [0x40, broken],
            [0x50, createModel("24c02")],
          ]),
        ),
        addrs: [0x40, 0x50],
      },
    ]);
    const bad = guest.submit([{ addr: 0x40, data: [1] }]);
    const good = guest.submit([
      { addr: 0x50, data: [0] },
      { addr: 0x50, read: true, len: 1 },
    ]);
    device.processQueue(0, guest.queue);
    assert.equal(guest.status(bad[0] as Submitted), RequestStatus.ERR);
    assert.deepEqual(
      good.map((r) => guest.status(r)),
      [RequestStatus.OK, RequestStatus.OK],
    );
    assert.deepEqual(guest.data(good[1] as Submitted), [0xff]);
  });

  it("yields once a pass took its budget of chains, and takes the rest on the next pass", () => {
    const guest = new Guest(512);
    const bus = new RecordingBus("sim");
    const device = makeDevice([{ bus, addrs: [0x20] }]);
    for (let i = 0; i < 300; i++) guest.submit([{ addr: 0x20, data: [i & 0xff] }]);
    assert.equal(device.processQueue(0, guest.queue), "yield");
    assert.equal(guest.used().length, 256);
    assert.equal(guest.notifications, 1, "what the pass completed is signalled before it yields");
    assert.equal(device.processQueue(0, guest.queue), "drained");
    assert.equal(guest.used().length, 44);
    assert.equal(bus.calls.length, 300);
  });

  it("yields after 256 KiB of message data, between transfers", () => {
    const guest = new Guest();
    const bus = new RecordingBus("sim");
    const device = makeDevice([{ bus, addrs: [0x20] }]);
    const data = new Array<number>(0xffff).fill(0x41);
    for (let i = 0; i < 6; i++) guest.submit([{ addr: 0x20, data }]);
    // 4 messages are 4 bytes short of 256 KiB: the fifth reaches the budget.
    assert.equal(device.processQueue(0, guest.queue), "yield");
    assert.equal(bus.calls.length, 5);
    assert.equal(device.processQueue(0, guest.queue), "drained");
    assert.equal(bus.calls.length, 6);
  });

  it("never cuts a FAIL_NEXT group at the budget: the group runs whole, then the pass yields", () => {
    const guest = new Guest(512);
    const bus = new RecordingBus("sim");
    const device = makeDevice([{ bus, addrs: [0x20] }]);
    for (let i = 0; i < 250; i++) guest.submit([{ addr: 0x20, data: [1] }]);
    const group = guest.submit(Array.from({ length: 10 }, (_, n) => ({ addr: 0x20, data: [n] })));
    guest.submit([{ addr: 0x20, data: [2] }]);
    assert.equal(device.processQueue(0, guest.queue), "yield");
    assert.equal(bus.calls.length, 251);
    assert.equal(bus.calls.at(-1)?.length, 10);
    assert.ok(group.every((r) => guest.status(r) === RequestStatus.OK));
    assert.equal(device.processQueue(0, guest.queue), "drained");
    assert.equal(bus.calls.length, 252);
  });

  it("refuses a transfer of more than 512 KiB before any bus sees it", () => {
    const guest = new Guest();
    const bus = new RecordingBus("sim");
    const device = makeDevice([{ bus, addrs: [0x20] }]);
    const data = new Array<number>(0xffff).fill(0x41);
    const big = guest.submit(Array.from({ length: 9 }, () => ({ addr: 0x20, data })));
    const fine = guest.submit([{ addr: 0x20, data: [1] }]);
    assert.equal(device.processQueue(0, guest.queue), "yield", "its bytes spent the pass budget");
    assert.equal(bus.calls.length, 0);
    device.processQueue(0, guest.queue);
    assert.equal(bus.calls.length, 1);
    assert.ok(big.every((r) => guest.status(r) === RequestStatus.ERR));
    assert.equal(guest.status(fine[0] as Submitted), RequestStatus.OK);
  });

  it("rate-limits the lines a guest causes, and counts what it left out", () => {
    const lines: string[] = [];
    const guest = new Guest(256);
    const device = makeDevice([], createLogger("warn", { write: (l) => lines.push(l) }));
    for (let i = 0; i < 200; i++) {
      const hdr = guest.header(0x50, 0x8000_0000); // a reserved flag bit
      const status = guest.alloc(1);
      guest.driver.add(
        [
          { gpa: hdr, len: 8, writable: false },
          { gpa: status, len: 1, writable: true },
        ],
        { indirect: false },
      );
      device.processQueue(0, guest.queue);
      guest.used();
    }
    assert.ok(lines.length <= 10, `${lines.length} lines`);
    assert.match(lines[0] ?? "", /malformed request/);
  });

  it("logs one debug line per transfer in i2ctransfer syntax, and builds none when debug is off", () => {
    const lines: string[] = [];
    const guest = new Guest();
    const device = makeDevice(
      [{ bus: new SimBus(new Map([[0x50, createModel("24c02")]])), addrs: [0x50] }],
      createLogger("debug", { write: (l) => lines.push(l) }),
    );
    guest.submit([
      { addr: 0x50, data: [0] },
      { addr: 0x50, read: true, len: 8 },
    ]);
    guest.submit([{ addr: 0x51 }]);
    device.processQueue(0, guest.queue);
    assert.equal(lines.length, 2);
    assert.match(lines[0] ?? "", /^DEBUG transfer w1@0x50 0x00 r8@0x50 result=2\/2$/m);
    assert.match(lines[1] ?? "", /transfer w0@0x51 result=.*0x51 not listed/);
  });
});
