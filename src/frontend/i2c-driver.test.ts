// Tests for I2cDriver against a device-side SplitQueue on the same memory: the chains it builds
// (layout, flags, indirect tables), the single kick, and how results come back through the call fd.
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { OutHdr, RequestFlag, RequestStatus } from "../i2c/protocol.js";
import { EventFd } from "../sys/eventfd.js";
import { DriverSplitQueue } from "../virtio/driver-split-queue.js";
import { createArrayGuestMemory, type GuestMemory } from "../virtio/guest-memory.js";
import type { DescriptorChain } from "../virtio/queue.js";
import { SplitQueue } from "../virtio/split-queue.js";
import { I2cDriver, I2cDriverError, type I2cDriverOptions } from "./i2c-driver.js";

interface Rig {
  memory: GuestMemory;
  device: SplitQueue;
  driver: I2cDriver;
  kick: EventFd;
  call: EventFd;
}

const open: EventFd[] = [];
afterEach(() => {
  for (const fd of open.splice(0)) fd.close();
});

function rig(options: I2cDriverOptions & { size?: number; eventIdx?: boolean } = {}): Rig {
  const size = options.size ?? 8;
  const eventIdx = options.eventIdx ?? false;
  const memory = createArrayGuestMemory([{ guestPhysAddr: 0, size: 0x40000 }]);
  const ring = new DriverSplitQueue(memory, 0, size, { eventIdx });
  let next = 0x1000;
  const alloc = (bytes: number, align = 16) => {
    const gpa = Math.ceil(next / align) * align;
    next = gpa + bytes;
    return gpa;
  };
  const kick = EventFd.create();
  const call = EventFd.create();
  open.push(kick, call);
  const device = new SplitQueue(memory, size, ring.addresses, {
    eventIdx,
    indirect: options.indirect ?? false,
    lastAvailIndex: 0,
    notify: () => call.write(1),
  });
  const driver = new I2cDriver({ driver: ring, kick, call }, { memory, alloc }, options);
  return { memory, device, driver, kick, call };
}

function popAll(queue: SplitQueue): DescriptorChain[] {
  const chains: DescriptorChain[] = [];
  for (let c = queue.pop(); c; c = queue.pop()) chains.push(c);
  return chains;
}

function header(
  memory: GuestMemory,
  chain: DescriptorChain,
): { addr: number; pad: number; flags: number } {
  const first = chain.descriptors[0];
  assert.ok(first);
  assert.equal(first.len, OutHdr.SIZE);
  assert.equal(first.writable, false);
  const bytes = new Uint8Array(OutHdr.SIZE);
  memory.read(first.addr, bytes);
  const dv = new DataView(bytes.buffer);
  return { addr: dv.getUint16(0, true), pad: dv.getUint16(2, true), flags: dv.getUint32(4, true) };
}

/** Plays the device: status per chain, read data filled with `fill`, then one notification. */
function complete(rigged: Rig, chains: DescriptorChain[], statuses: number[], fill = 0xa5): void {
  chains.forEach((chain, i) => {
    const status = chain.descriptors.at(-1);
    assert.ok(status);
    const data = chain.descriptors.length === 3 ? chain.descriptors[1] : undefined;
    let written = 1;
    if (data?.writable) {
      rigged.memory.write(data.addr, new Uint8Array(data.len).fill(fill));
      written += data.len;
    }
    rigged.memory.write(status.addr, Uint8Array.of(statuses[i] ?? RequestStatus.OK));
    rigged.device.pushUsed(chain, written);
  });
  rigged.device.notify();
}

describe("I2cDriver.submit", () => {
  it("builds one chain per message like Linux: hdr + buffer + status, FAIL_NEXT on all but the last", () => {
    const r = rig();
    r.driver.submit([
      { addr: 0x50, write: Uint8Array.of(0x10) },
      { addr: 0x50, read: 4 },
    ]);
    const chains = popAll(r.device);
    assert.equal(chains.length, 2);
    const [w, rd] = chains;
    assert.ok(w && rd);
    assert.deepEqual(header(r.memory, w), {
      addr: 0x50 << 1,
      pad: 0,
      flags: RequestFlag.FAIL_NEXT,
    });
    assert.deepEqual(header(r.memory, rd), { addr: 0x50 << 1, pad: 0, flags: RequestFlag.M_RD });
    assert.deepEqual(
      w.descriptors.map((d) => [d.len, d.writable]),
      [
        [8, false],
        [1, false],
        [1, true],
      ],
    );
    const data = new Uint8Array(1);
    r.memory.read(w.descriptors[1]?.addr ?? -1, data);
    assert.deepEqual([...data], [0x10]);
    assert.deepEqual(
      rd.descriptors.map((d) => [d.len, d.writable]),
      [
        [8, false],
        [4, true],
        [1, true],
      ],
    );
  });

  it("sends zero-length messages as two descriptors (M_RD for a read probe)", () => {
    const r = rig();
    r.driver.submit([{ addr: 0x21, write: new Uint8Array(0) }]);
    r.driver.submit([{ addr: 0x22, read: 0 }]);
    const [w, rd] = popAll(r.device);
    assert.ok(w && rd);
    assert.equal(w.descriptors.length, 2);
    assert.equal(rd.descriptors.length, 2);
    assert.equal(header(r.memory, w).flags, 0);
    assert.equal(header(r.memory, rd).flags, RequestFlag.M_RD);
  });

  it("kicks once per transfer, after every chain is in the avail ring", () => {
    const r = rig();
    r.driver.submit([
      { addr: 0x50, write: Uint8Array.of(0) },
      { addr: 0x50, read: 2 },
      { addr: 0x51, read: 0 },
    ]);
    assert.equal(r.kick.read(), 1);
    assert.equal(popAll(r.device).length, 3);
  });

  it("leaves the kick to the caller with kick: false", () => {
    const r = rig();
    r.driver.submit([{ addr: 0x50, read: 1 }], { kick: false });
    assert.equal(r.kick.read(), 0);
    r.driver.kick();
    assert.equal(r.kick.read(), 1);
  });

  it("uses one ring slot per message through an indirect table when negotiated", () => {
    // Direct, the two messages would need 6 descriptors of the 4; no chain is longer than the ring.
    const r = rig({ indirect: true, size: 4 });
    const submission = r.driver.submit([
      { addr: 0x50, write: Uint8Array.of(1, 2) },
      { addr: 0x50, read: 3 },
    ]);
    assert.equal(submission.chains.length, 2);
    const chains = popAll(r.device);
    assert.deepEqual(
      chains.map((c) => c.descriptors.length),
      [3, 3],
    );
  });

  it("queues only what fits and reports the rest as not queued (ring full)", async () => {
    const r = rig({ size: 4 });
    const submission = r.driver.submit([
      { addr: 0x50, write: Uint8Array.of(0) },
      { addr: 0x50, read: 1 },
    ]);
    assert.equal(submission.chains.length, 1, "3 + 3 descriptors do not fit a 4-entry ring");
    const chains = popAll(r.device);
    assert.equal(header(r.memory, chains[0] as DescriptorChain).flags, RequestFlag.FAIL_NEXT);
    complete(r, chains, [RequestStatus.OK]);
    const result = await r.driver.wait(submission);
    assert.deepEqual(result.statuses, [RequestStatus.OK, null]);
    assert.equal(result.okCount, 1);
    assert.equal(result.ok, false);
  });

  it("refuses addresses beyond 7 bits and messages longer than its buffers", () => {
    const r = rig({ maxMessageLength: 16 });
    assert.throws(() => r.driver.submit([{ addr: 0x80, read: 1 }]), I2cDriverError);
    assert.throws(() => r.driver.submit([{ addr: 0x50, read: 17 }]), I2cDriverError);
    assert.throws(() => r.driver.submit([]), I2cDriverError);
  });
});

describe("I2cDriver.wait", () => {
  it("returns statuses, leading OK count and read data once the device signals", async () => {
    const r = rig();
    const submission = r.driver.submit([
      { addr: 0x50, write: Uint8Array.of(0) },
      { addr: 0x50, read: 3 },
    ]);
    const waiting = r.driver.wait(submission);
    complete(r, popAll(r.device), [RequestStatus.OK, RequestStatus.OK], 0x42);
    const result = await waiting;
    assert.equal(result.ok, true);
    assert.equal(result.okCount, 2);
    assert.deepEqual(
      result.reads.map((d) => [...d]),
      [[0x42, 0x42, 0x42]],
    );
    assert.equal(r.driver.inFlight, 0);
  });

  it("counts only leading successes and drops data of failed reads", async () => {
    const r = rig();
    const submission = r.driver.submit([
      { addr: 0x50, write: Uint8Array.of(0) },
      { addr: 0x50, read: 2 },
    ]);
    complete(r, popAll(r.device), [RequestStatus.ERR, RequestStatus.OK]);
    const result = await r.driver.wait(submission);
    assert.equal(result.okCount, 0);
    assert.deepEqual(result.statuses, [RequestStatus.ERR, RequestStatus.OK]);
    assert.equal(result.reads[0]?.length, 0);
  });

  it("keeps several transfers in flight and completes each from the shared used ring", async () => {
    const r = rig({ indirect: true, size: 8, eventIdx: true });
    const first = r.driver.submit([{ addr: 0x50, read: 1 }]);
    const second = r.driver.submit([{ addr: 0x51, read: 1 }]);
    const both = Promise.all([r.driver.wait(first), r.driver.wait(second)]);
    const chains = popAll(r.device);
    complete(r, chains.slice(1), [RequestStatus.OK], 2);
    complete(r, chains.slice(0, 1), [RequestStatus.ERR]);
    const [a, b] = await both;
    assert.equal(a.ok, false);
    assert.equal(b.ok, true);
    assert.deepEqual([...(b.reads[0] ?? [])], [2]);
  });

  it("reuses its buffers: many more transfers than ring entries", async () => {
    const r = rig({ size: 4, indirect: true });
    for (let i = 0; i < 20; i++) {
      const submission = r.driver.submit([{ addr: 0x50, read: 1 }]);
      complete(r, popAll(r.device), [RequestStatus.OK], i);
      const result = await r.driver.wait(submission);
      assert.deepEqual([...(result.reads[0] ?? [])], [i]);
    }
  });

  it("times out instead of waiting forever when the device never answers", async () => {
    const r = rig({ timeoutMs: 50 });
    const submission = r.driver.submit([{ addr: 0x50, read: 1 }]);
    await assert.rejects(r.driver.wait(submission), { code: "ETIMEDOUT" });
  });
});

describe("I2cDriver.submitRaw", () => {
  it("publishes arbitrary chains and reports the used length", async () => {
    const r = rig();
    const status = 0x3000;
    const chain = r.driver.submitRaw([{ gpa: status, len: 1, writable: true }]);
    r.driver.kick();
    const [popped] = popAll(r.device);
    assert.ok(popped);
    assert.equal(popped.descriptors.length, 1);
    r.device.pushUsed(popped, 0);
    r.device.notify();
    await r.driver.waitFor([chain]);
    assert.equal(chain.usedLen, 0);
  });
});
