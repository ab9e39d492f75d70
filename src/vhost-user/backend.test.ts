import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { EchoDevice, type EchoDeviceOptions } from "../../test/helpers/echo-device.js";
import { EventFd } from "../sys/eventfd.js";
import { DriverPackedQueue } from "../virtio/driver-packed-queue.js";
import { DriverSplitQueue } from "../virtio/driver-split-queue.js";
import {
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from "../virtio/features.js";
import { TRANSPORT_FEATURES } from "./backend.js";
import { encodeU64, payloadAs, requestFlags } from "./codec.js";
import {
  closeQueues,
  type FrontendQueue,
  GuestRam,
  type GuestRamLayout,
  type Negotiated,
  realize,
  startQueues,
  stopQueues,
  VhostUserFrontend,
  waitForCall,
} from "./frontend.js";
import { ProtocolFeature, protocolBit, Request } from "./protocol.js";
import { VhostUserServer } from "./server.js";

const dir = mkdtempSync(join(tmpdir(), "vhost-user-backend-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let socketCount = 0;

const PROTOCOL_FEATURES_BIT = 1n << 30n;
/** What QEMU 7.2 acks for i2c: VERSION_1 | bit 30 | EVENT_IDX | INDIRECT_DESC | the device bit. */
const QEMU_FEATURES =
  VIRTIO_F_VERSION_1 |
  PROTOCOL_FEATURES_BIT |
  VIRTIO_F_RING_EVENT_IDX |
  VIRTIO_F_RING_INDIRECT_DESC |
  1n;
const SEQUENCE_B =
  protocolBit(ProtocolFeature.MQ) |
  protocolBit(ProtocolFeature.REPLY_ACK) |
  protocolBit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  protocolBit(ProtocolFeature.STATUS);

interface Harness {
  server: VhostUserServer;
  path: string;
  devices: EchoDevice[];
  device(): EchoDevice;
  connect(): VhostUserFrontend;
  close(): void;
}

function serve(
  deviceOptions: EchoDeviceOptions = {},
  offerMemSlots = false,
  allowUnsealedMemory = false,
  offerPackedRing = true,
): Harness {
  const path = join(dir, `s${socketCount++}.sock`);
  const devices: EchoDevice[] = [];
  const server = VhostUserServer.listen(
    path,
    0,
    () => {
      const device = new EchoDevice(deviceOptions);
      devices.push(device);
      return device;
    },
    { backend: { offerMemSlots, allowUnsealedMemory, offerPackedRing } },
  );
  const frontends: VhostUserFrontend[] = [];
  return {
    server,
    path,
    devices,
    device: () => devices[devices.length - 1]!,
    connect: () => {
      const f = VhostUserFrontend.connect(path);
      frontends.push(f);
      return f;
    },
    close: () => {
      for (const f of frontends) f.close();
      server.close();
    },
  };
}

/** Sends `data` through the echo device on queue `q`; resolves with what came back. */
async function echo(
  ram: GuestRam,
  q: FrontendQueue,
  data: Uint8Array,
  outGpa?: number,
  inGpa?: number,
) {
  const out = outGpa ?? ram.alloc(data.byteLength);
  const into = inGpa ?? ram.alloc(data.byteLength);
  ram.memory.write(out, data);
  ram.memory.write(into, new Uint8Array(data.byteLength));
  const head = q.driver.add([
    { gpa: out, len: data.byteLength, writable: false },
    { gpa: into, len: data.byteLength, writable: true },
  ]);
  assert.notEqual(head, null);
  q.kick.write(1);
  for (;;) {
    const used = q.driver.getUsed();
    if (used !== null) {
      assert.equal(used.head, head);
      const back = new Uint8Array(used.len);
      ram.memory.read(into, back);
      return back;
    }
    await waitForCall(q.call);
  }
}

const bytes = (text: string) => new TextEncoder().encode(text);

async function startSession(
  h: Harness,
  ram: GuestRam,
  protocolFeatures = 0n,
  ring: { features?: bigint; queueSize?: number } = {},
): Promise<{
  frontend: VhostUserFrontend;
  negotiated: Negotiated;
  queues: readonly FrontendQueue[];
}> {
  const frontend = h.connect();
  const negotiated = await realize(frontend, { protocolFeatures });
  // Realize ends with SET_VRING_CALL(A), SET_VRING_ERR on throwaway eventfds.
  const early = [EventFd.create(), EventFd.create()];
  await frontend.setVringCall(0, early[0]!.fd);
  await frontend.setVringErr(0, early[1]!.fd);
  for (const e of early) e.close();
  const queues = await startQueues(frontend, ram, {
    negotiated,
    features: (ring.features ?? QEMU_FEATURES) & negotiated.features,
    queueSize: ring.queueSize ?? 4,
  });
  return { frontend, negotiated, queues };
}

function openFdCount(): number {
  return readdirSync("/proc/self/fd").length;
}

describe("BackendConnection with QEMU 7.2 sequences", () => {
  it("(a) without protocol features: negotiates, echoes, and GET_VRING_BASE returns lastAvail", async () => {
    const h = serve();
    const ram = new GuestRam();
    try {
      const { frontend, negotiated, queues } = await startSession(h, ram);
      assert.equal(negotiated.features, 1n | TRANSPORT_FEATURES);
      assert.equal(negotiated.protocolFeatures, 0n);
      const q = queues[0]!;
      for (const text of ["one", "two", "three"])
        assert.deepEqual(await echo(ram, q, bytes(text)), bytes(text));
      assert.deepEqual(h.device().negotiated, [QEMU_FEATURES & negotiated.features]);
      assert.deepEqual(await stopQueues(frontend, queues, QEMU_FEATURES), [3]);
      closeQueues(queues);
    } finally {
      h.close();
      ram.close();
    }
  });

  it("(b) with MQ|REPLY_ACK|CONFIGURE_MEM_SLOTS|STATUS: queue num, mem slots, ADD_MEM_REG acked", async () => {
    const h = serve({}, true);
    const ram = new GuestRam([
      { guestPhysAddr: 0, size: 1 << 20 },
      { guestPhysAddr: 0x1_0000_0000, size: 1 << 20, mmapOffset: 8192 },
    ]);
    try {
      const { frontend, negotiated, queues } = await startSession(h, ram, SEQUENCE_B);
      assert.equal(negotiated.protocolFeatures, SEQUENCE_B);
      assert.equal(negotiated.queueNum, 1);
      assert.equal(negotiated.maxMemSlots, 32);
      assert.equal(frontend.replyAck, true);
      assert.equal(await frontend.getStatus(), 8);
      // A buffer in the second region, which the back-end maps at its mmap_offset.
      const high = 0x1_0000_0000;
      assert.deepEqual(await echo(ram, queues[0]!, bytes("high"), high, high + 64), bytes("high"));
      assert.deepEqual(await stopQueues(frontend, queues, QEMU_FEATURES), [1]);
      closeQueues(queues);
    } finally {
      h.close();
      ram.close();
    }
  });

  it("offers MQ|REPLY_ACK|STATUS, and CONFIGURE_MEM_SLOTS only when asked", async () => {
    for (const [offer, expected] of [
      [false, 0x10009n],
      [true, 0x18009n],
    ] as const) {
      const h = serve({}, offer);
      try {
        assert.equal(await h.connect().getProtocolFeatures(), expected);
      } finally {
        h.close();
      }
    }
  });

  it("(d) reconnect: a new back-end takes SET_VRING_CALL first, no SET_OWNER, NEED_REPLY without REPLY_ACK", async () => {
    const h = serve();
    const ram = new GuestRam();
    try {
      const first = await startSession(
        h,
        ram,
        SEQUENCE_B & ~protocolBit(ProtocolFeature.CONFIGURE_MEM_SLOTS),
      );
      const q = first.queues[0]!;
      assert.deepEqual(await echo(ram, q, bytes("before")), bytes("before"));
      const gone = once(h.server, "disconnect");
      first.frontend.close();
      await gone;
      // The guest queues a request while no back-end is there: its kick is lost.
      const pendingOut = ram.alloc(5);
      const pendingIn = ram.alloc(5);
      ram.memory.write(pendingOut, bytes("queued"));
      const pendingHead = q.driver.add([
        { gpa: pendingOut, len: 5, writable: false },
        { gpa: pendingIn, len: 5, writable: true },
      ]);
      const second = h.connect();
      second.replyAck = true; // kept from the old connection, never negotiated on this one
      await startQueues(second, ram, {
        negotiated: first.negotiated,
        features: QEMU_FEATURES,
        queues: first.queues,
      });
      assert.equal(h.devices.length, 2);
      // The request queued while disconnected completes at SET_VRING_ENABLE.
      let used = q.driver.getUsed();
      while (used === null) {
        await waitForCall(q.call);
        used = q.driver.getUsed();
      }
      assert.deepEqual(used, { head: pendingHead, len: 5 });
      assert.deepEqual(await echo(ram, q, bytes("after")), bytes("after"));
      assert.deepEqual(await stopQueues(second, first.queues, QEMU_FEATURES), [3]);
      closeQueues(first.queues);
    } finally {
      h.close();
      ram.close();
    }
  });
});

describe("BackendConnection with packed rings (RING_PACKED)", () => {
  const PACKED_FEATURES = QEMU_FEATURES | VIRTIO_F_RING_PACKED;
  /** QEMU 7.2's fresh packed base: avail and used positions 0 with wrap counters 1. */
  const FRESH_BASE = 0x80008000;

  it("offers RING_PACKED, echoes through a packed ring and reports both positions at GET_VRING_BASE", async () => {
    const h = serve();
    const ram = new GuestRam();
    try {
      const { frontend, negotiated, queues } = await startSession(h, ram, 0n, {
        features: PACKED_FEATURES,
      });
      assert.equal(negotiated.features & VIRTIO_F_RING_PACKED, VIRTIO_F_RING_PACKED);
      const q = queues[0]!;
      assert.ok(q.driver instanceof DriverPackedQueue);
      // Six round trips of two slots on a ring of four: both wrap counters flip, then flip back.
      for (const text of ["one", "two", "three", "four", "five", "six"])
        assert.deepEqual(await echo(ram, q, bytes(text)), bytes(text));
      assert.deepEqual(h.device().negotiated, [PACKED_FEATURES]);
      // 12 slots = 3 laps of 4: index 0, wrap counter 0.
      assert.deepEqual(await stopQueues(frontend, queues, PACKED_FEATURES), [0]);
      closeQueues(queues);
    } finally {
      h.close();
      ram.close();
    }
  });

  it("takes a non-power-of-two size and a base with both halves, and carries them across a restart", async () => {
    const h = serve();
    const ram = new GuestRam();
    try {
      const { frontend, negotiated, queues } = await startSession(h, ram, 0n, {
        features: PACKED_FEATURES,
        queueSize: 3,
      });
      const q = queues[0]!;
      for (const text of ["ab", "cd"])
        assert.deepEqual(await echo(ram, q, bytes(text)), bytes(text));
      // Four slots on a ring of three: index 1, wrap counter 0, in both halves.
      assert.deepEqual(await stopQueues(frontend, queues, PACKED_FEATURES), [0x00010001]);
      // A restart on the same ring (QEMU after a stop): the base is where the driver's ring is.
      await startQueues(frontend, ram, {
        negotiated,
        features: PACKED_FEATURES,
        queues,
        queueSize: 3,
      });
      assert.deepEqual(await echo(ram, q, bytes("ef")), bytes("ef"));
      assert.deepEqual(await stopQueues(frontend, queues, PACKED_FEATURES), [FRESH_BASE]);
      closeQueues(queues);
    } finally {
      h.close();
      ram.close();
    }
  });

  it("reconnect: a new back-end continues a packed ring from the base, including a request queued meanwhile", async () => {
    const h = serve();
    const ram = new GuestRam();
    try {
      const first = await startSession(h, ram, 0n, { features: PACKED_FEATURES });
      const q = first.queues[0]!;
      assert.deepEqual(await echo(ram, q, bytes("before")), bytes("before"));
      const gone = once(h.server, "disconnect");
      first.frontend.close();
      await gone;
      const pendingOut = ram.alloc(6);
      const pendingIn = ram.alloc(6);
      ram.memory.write(pendingOut, bytes("queued"));
      const pendingId = q.driver.add([
        { gpa: pendingOut, len: 6, writable: false },
        { gpa: pendingIn, len: 6, writable: true },
      ]);
      const second = h.connect();
      await startQueues(second, ram, {
        negotiated: first.negotiated,
        features: PACKED_FEATURES,
        queues: first.queues,
      });
      let used = q.driver.getUsed();
      while (used === null) {
        await waitForCall(q.call);
        used = q.driver.getUsed();
      }
      assert.deepEqual(used, { head: pendingId, len: 6 });
      assert.deepEqual(await echo(ram, q, bytes("after")), bytes("after"));
      // Six slots on a ring of four: index 2, wrap counter 0.
      assert.deepEqual(await stopQueues(second, first.queues, PACKED_FEATURES), [0x00020002]);
      closeQueues(first.queues);
    } finally {
      h.close();
      ram.close();
    }
  });

  it("takes any packed size up to the device's maximum and a 32-bit base; split rings do not", async () => {
    const h = serve({ maxQueueSize: 8 });
    try {
      const attempt = async (features: bigint, send: (f: VhostUserFrontend) => Promise<void>) => {
        // One front-end at a time: a connect before the last one is gone would be refused for that.
        if (h.server.connected) await once(h.server, "disconnect");
        const frontend = h.connect();
        try {
          await frontend.setFeatures(features);
          await send(frontend);
        } finally {
          frontend.close();
        }
      };
      await attempt(PACKED_FEATURES, async (f) => {
        await f.setVringNum(0, 5, { needReply: true });
        await f.setVringBase(0, FRESH_BASE, { needReply: true });
      });
      const refused = { code: "ECONNRESET" };
      await assert.rejects(
        attempt(PACKED_FEATURES, (f) => f.setVringNum(0, 9, { needReply: true })),
        refused,
      );
      await assert.rejects(
        attempt(PACKED_FEATURES, (f) => f.setVringNum(0, 0, { needReply: true })),
        refused,
      );
      await assert.rejects(
        attempt(QEMU_FEATURES, (f) => f.setVringNum(0, 5, { needReply: true })),
        refused,
      );
      await assert.rejects(
        attempt(QEMU_FEATURES, (f) => f.setVringBase(0, FRESH_BASE, { needReply: true })),
        refused,
      );
    } finally {
      h.close();
    }
  });
});

describe("BackendConnection error handling", () => {
  it("answers an unknown request with NEED_REPLY with an error and keeps the connection", async () => {
    const h = serve();
    try {
      const frontend = h.connect();
      const reply = await frontend.sendRaw(99, requestFlags(true), new Uint8Array(4), [], true);
      assert.notEqual(payloadAs(reply!, "u64"), 0n);
      const unsupported = await frontend.sendRaw(
        Request.SET_VRING_ENDIAN,
        requestFlags(true),
        new Uint8Array(8),
        [],
        true,
      );
      assert.notEqual(payloadAs(unsupported!, "u64"), 0n);
      assert.equal(await frontend.getFeatures(), 1n | TRANSPORT_FEATURES);
    } finally {
      h.close();
    }
  });

  it("acks NEED_REPLY with 0 even when REPLY_ACK was never negotiated", async () => {
    const h = serve();
    try {
      const frontend = h.connect();
      await frontend.setOwner({ needReply: true });
      await frontend.setVringNum(0, 4, { needReply: true });
    } finally {
      h.close();
    }
  });

  it("closes a connection on a wrong payload size while another socket keeps working", async () => {
    const bad = serve();
    const good = serve();
    try {
      const victim = bad.connect();
      const other = good.connect();
      await other.getFeatures();
      await victim.sendRaw(Request.SET_FEATURES, requestFlags(false), new Uint8Array(4));
      const reason = await victim.whenClosed();
      assert.equal(reason.kind, "eof");
      assert.equal(await other.getFeatures(), 1n | TRANSPORT_FEATURES);
      // The socket itself survives: the next front-end is served.
      assert.equal(await bad.connect().getFeatures(), 1n | TRANSPORT_FEATURES);
    } finally {
      bad.close();
      good.close();
    }
  });

  it("closes a connection on a wrong fd count", async () => {
    const h = serve();
    const e = EventFd.create();
    try {
      const frontend = h.connect();
      await frontend.sendRaw(Request.SET_OWNER, requestFlags(false), new Uint8Array(0), [e.fd]);
      assert.equal((await frontend.whenClosed()).kind, "eof");
    } finally {
      e.close();
      h.close();
    }
  });

  it("refuses SET_FEATURES with a bit not offered or without the device's required bits", async () => {
    for (const features of [
      QEMU_FEATURES | VIRTIO_F_IN_ORDER,
      QEMU_FEATURES & ~VIRTIO_F_VERSION_1,
    ]) {
      const h = serve();
      try {
        const frontend = h.connect();
        await frontend.setFeatures(features);
        assert.equal((await frontend.whenClosed()).kind, "eof");
        assert.deepEqual(h.device().negotiated, []);
      } finally {
        h.close();
      }
    }
  });

  it("stops a queue whose avail index jumps past the ring size, and keeps the connection", async () => {
    const h = serve();
    const ram = new GuestRam();
    try {
      const { frontend, queues } = await startSession(h, ram);
      const q = queues[0]!;
      assert.ok(q.driver instanceof DriverSplitQueue);
      q.driver.setAvailIndex(100);
      q.kick.write(1);
      // The connection still answers; GET_VRING_BASE reports nothing consumed.
      assert.equal(await frontend.getFeatures(), 1n | TRANSPORT_FEATURES);
      assert.deepEqual(await stopQueues(frontend, queues, QEMU_FEATURES), [0]);
      closeQueues(queues);
    } finally {
      h.close();
      ram.close();
    }
  });
});

describe("BackendConnection vrings", () => {
  it("processes a kick that arrived before SET_VRING_ENABLE when the ring is enabled", async () => {
    const h = serve();
    const ram = new GuestRam();
    const kick = EventFd.create();
    const call = EventFd.create();
    try {
      const frontend = h.connect();
      const negotiated = await realize(frontend);
      const driver = new DriverSplitQueue(
        ram.memory,
        ram.alloc(DriverSplitQueue.byteLength(4), 4096),
        4,
      );
      await frontend.setVringCall(0, call.fd);
      await frontend.setFeatures(QEMU_FEATURES & negotiated.features & ~VIRTIO_F_RING_EVENT_IDX);
      await frontend.setMemTable(ram.regions);
      await frontend.setVringNum(0, 4);
      await frontend.setVringBase(0, 0);
      const { desc, avail, used } = driver.addresses;
      await frontend.setVringAddr({
        index: 0,
        flags: 0,
        descUser: ram.userAddr(desc),
        usedUser: ram.userAddr(used),
        availUser: ram.userAddr(avail),
        log: 0n,
      });
      await frontend.setVringKick(0, kick.fd);
      const out = ram.alloc(4);
      const into = ram.alloc(4);
      ram.memory.write(out, bytes("kick"));
      const head = driver.add([
        { gpa: out, len: 4, writable: false },
        { gpa: into, len: 4, writable: true },
      ]);
      kick.write(1);
      // A synchronous round trip: the kick has been seen (or not) by the time the reply comes.
      await frontend.getFeatures();
      assert.equal(driver.getUsed(), null, "a disabled ring must not be processed");
      await frontend.setVringEnable(0, true);
      await waitForCall(call);
      assert.deepEqual(driver.getUsed(), { head, len: 4 });
    } finally {
      kick.close();
      call.close();
      h.close();
      ram.close();
    }
  });

  it("GET_VRING_BASE waits for chains in flight and holds back later messages until it replies", async () => {
    const h = serve({ holdChains: true });
    const ram = new GuestRam();
    try {
      const { frontend, queues } = await startSession(h, ram);
      const q = queues[0]!;
      for (const text of ["a", "b"]) {
        q.driver.add([
          { gpa: ram.alloc(1), len: 1, writable: false },
          { gpa: ram.alloc(1), len: 1, writable: true },
        ]);
        assert.ok(text);
      }
      q.kick.write(1);
      await frontend.getFeatures();
      const device = h.device();
      assert.equal(device.heldCount(0), 2);
      const order: string[] = [];
      await frontend.setVringEnable(0, false);
      const base = frontend.getVringBase(0).then((n) => {
        order.push("base");
        return n;
      });
      const features = frontend.getFeatures().then(() => order.push("features"));
      // Let the back-end receive both requests; neither may be answered while chains are held.
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(order, []);
      device.release();
      assert.equal(await base, 2);
      await features;
      assert.deepEqual(order, ["base", "features"]);
      assert.equal(q.driver.getUsed()?.len, 1);
      closeQueues(queues);
    } finally {
      h.close();
      ram.close();
    }
  });

  it("SET_MEM_TABLE replaced while running: the next request uses the new mapping", async () => {
    const h = serve();
    const layout: GuestRamLayout[] = [
      { guestPhysAddr: 0, size: 1 << 20 },
      { guestPhysAddr: 0x4000_0000, size: 1 << 20, mmapOffset: 4096 },
    ];
    const ram = new GuestRam(layout);
    try {
      const { frontend, queues } = await startSession(h, ram);
      const q = queues[0]!;
      const high = 0x4000_0000;
      assert.deepEqual(await echo(ram, q, bytes("both"), high, high + 16), bytes("both"));
      // Only the first region now: a buffer in the second is outside guest memory (chain error, 0 bytes).
      await frontend.setMemTable([ram.regions[0]!], { needReply: true });
      assert.deepEqual(await echo(ram, q, bytes("gone"), high, high + 16), new Uint8Array(0));
      assert.deepEqual(await echo(ram, q, bytes("low")), bytes("low"));
      // Both again, in the other order.
      await frontend.setMemTable([ram.regions[1]!, ram.regions[0]!], { needReply: true });
      assert.deepEqual(await echo(ram, q, bytes("back"), high, high + 16), bytes("back"));
      closeQueues(queues);
    } finally {
      h.close();
      ram.close();
    }
  });

  it("refuses guest memory that is not sealed against shrinking, unless allowed", async () => {
    for (const allowed of [false, true]) {
      const h = serve({}, true, allowed);
      const unsealed = new GuestRam([{ guestPhysAddr: 0, size: 1 << 20, sealed: false }]);
      const sealed = new GuestRam();
      try {
        const frontend = h.connect();
        await realize(frontend, { protocolFeatures: SEQUENCE_B });
        const table = frontend.setMemTable(unsealed.regions, { needReply: true });
        const added = frontend.addMemReg(unsealed.regions[0]!.region, unsealed.regions[0]!.fd, {
          needReply: true,
        });
        if (allowed) {
          await table;
          await added.catch(() => undefined); // the same region twice: refused for overlap
        } else {
          await assert.rejects(table, { code: "ENACK" });
          await assert.rejects(added, { code: "ENACK" });
        }
        // The connection stays: a sealed table is taken.
        await frontend.setMemTable(sealed.regions, { needReply: true });
        assert.equal(await frontend.getQueueNum(), 1);
      } finally {
        h.close();
        unsealed.close();
        sealed.close();
      }
    }
  });

  it("a device that yields gets its next pass on a later turn, after other work", async () => {
    const h = serve({ chainsPerPass: 2 });
    const ram = new GuestRam();
    try {
      const { queues } = await startSession(h, ram, 0n, { queueSize: 16 });
      const q = queues[0]!;
      const device = h.device();
      const passes = device.processed.length;
      for (let i = 0; i < 6; i++) {
        const head = q.driver.add([
          { gpa: ram.alloc(1), len: 1, writable: false },
          { gpa: ram.alloc(1), len: 1, writable: true },
        ]);
        assert.notEqual(head, null);
      }
      q.kick.write(1);
      // Other work gets in between: the ring is not drained in the turn that saw the kick.
      let returned = 0;
      const turns: number[] = [];
      while (returned < 6 && turns.length < 1000) {
        await new Promise((resolve) => setImmediate(resolve));
        for (let used = q.driver.getUsed(); used !== null; used = q.driver.getUsed()) returned++;
        turns.push(returned);
      }
      assert.ok(
        turns.some((n) => n > 0 && n < 6),
        `returned per turn: ${turns.join(",")}`,
      );
      assert.ok(device.processed.length - passes >= 3, "at least three passes of two chains");
      assert.equal(device.chainsCompleted, 6);
      closeQueues(queues);
    } finally {
      h.close();
      ram.close();
    }
  });

  it("answers GET_CONFIG from the device, and advertises CONFIG only when the device has one", async () => {
    const config = new Uint8Array([1, 2, 3, 4]);
    const h = serve({ config });
    try {
      const frontend = h.connect();
      assert.equal(
        (await frontend.getProtocolFeatures()) & protocolBit(ProtocolFeature.CONFIG),
        protocolBit(ProtocolFeature.CONFIG),
      );
      assert.deepEqual((await frontend.getConfig(1, 2)).payload, new Uint8Array([2, 3]));
      assert.equal((await frontend.getConfig(2, 8)).size, 0, "out of range reads come back empty");
    } finally {
      h.close();
    }
  });
});

describe("VhostUserServer lifecycle", () => {
  it("serves 100 connect/disconnect cycles on one socket without leaking fds", async () => {
    const h = serve();
    const ram = new GuestRam();
    try {
      const cycle = async () => {
        const { frontend, queues } = await startSession(h, ram);
        assert.deepEqual(await echo(ram, queues[0]!, bytes("x")), bytes("x"));
        const gone = once(h.server, "disconnect");
        frontend.close();
        await gone;
        closeQueues(queues);
      };
      await cycle();
      const before = openFdCount();
      for (let i = 0; i < 99; i++) await cycle();
      assert.equal(openFdCount(), before);
      assert.equal(h.devices.length, 100);
      assert.ok(h.devices.every((d) => d.resets >= 1));
    } finally {
      h.close();
      ram.close();
    }
  });

  it("closes a broken connection's fds too", async () => {
    const h = serve();
    const ram = new GuestRam();
    try {
      const before = openFdCount();
      const { frontend, queues } = await startSession(h, ram);
      const gone = once(h.server, "disconnect");
      await frontend.sendRaw(
        Request.SET_VRING_NUM,
        requestFlags(false),
        encodeU64(0n).subarray(0, 3),
      );
      await gone;
      await frontend.whenClosed();
      closeQueues(queues);
      assert.equal(openFdCount(), before);
    } finally {
      h.close();
      ram.close();
    }
  });
});

describe("offerPackedRing", () => {
  it("false: GET_FEATURES lacks RING_PACKED, a split ring runs, and SET_FEATURES with RING_PACKED is refused", async () => {
    const h = serve({}, false, false, false);
    const ram = new GuestRam();
    try {
      const { frontend, negotiated, queues } = await startSession(h, ram);
      assert.equal(negotiated.features, (1n | TRANSPORT_FEATURES) & ~VIRTIO_F_RING_PACKED);
      const q = queues[0]!;
      assert.ok(q.driver instanceof DriverSplitQueue);
      assert.deepEqual(await echo(ram, q, bytes("split")), bytes("split"));
      assert.deepEqual(await stopQueues(frontend, queues, QEMU_FEATURES), [1]);
      closeQueues(queues);
    } finally {
      h.close();
      ram.close();
    }
    // What QEMU 7.2 sends for vhost-user-i2c-pci,packed=on whatever the back-end offered.
    const refusing = serve({}, false, false, false);
    try {
      const frontend = refusing.connect();
      await frontend.setFeatures(QEMU_FEATURES | VIRTIO_F_RING_PACKED);
      assert.equal((await frontend.whenClosed()).kind, "eof");
      assert.deepEqual(refusing.device().negotiated, []);
    } finally {
      refusing.close();
    }
  });

  it("true (the default): GET_FEATURES offers RING_PACKED", async () => {
    const h = serve();
    try {
      const features = await h.connect().getFeatures();
      assert.notEqual(features & VIRTIO_F_RING_PACKED, 0n);
    } finally {
      h.close();
    }
  });
});
