/**
 * I2cDriver: the guest side of virtio-i2c, submitting transfers the way Linux's i2c-virtio driver
 * does, on a running driver-side queue (a vhost-user frontend's FrontendQueue): one chain per I2C
 * message (out_hdr {le16 addr << 1, le16 0, le32 flags} [+ buffer] + 1-byte status), FAIL_NEXT on
 * every message but the last, M_RD on reads, 2 descriptors for zero-length messages, an indirect
 * table per chain when INDIRECT_DESC is negotiated, every chain added before ONE kick; then it waits
 * for the call eventfd and reports per-message status and read data.
 * Lower-level calls (submit/wait, raw chains) let tests keep several transfers in flight or send
 * malformed chains; held transfers (submitHeld) give the benchmark's closed loop chains it reuses. I2cGuest bundles it with the vhost-user frontend booted the way QEMU 7.2 boots
 * vhost-user-i2c-pci (demo, integration tests). Must not encode vhost-user messages itself (the
 * frontend does) nor know any back-end internals.
 * @module
 */

import { CodedError } from "../errors.js";
import {
  OutHdr,
  RequestFlag,
  RequestStatus,
  VIRTIO_I2C_F_ZERO_LENGTH_REQUEST,
} from "../i2c/protocol.js";
import { EventFd } from "../sys/eventfd.js";
import type { UnixStream } from "../sys/unix-socket.js";
import {
  closeQueues,
  type DriverRing,
  type FrontendQueue,
  GuestRam,
  type GuestRamLayout,
  type Negotiated,
  realize,
  startQueues,
  stopQueues,
  VhostUserFrontend,
  waitForCall,
} from "../vhost-user/frontend.js";
import { ProtocolFeature, protocolBit } from "../vhost-user/protocol.js";
import type { DriverBuffer } from "../virtio/driver-split-queue.js";
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
} from "../virtio/features.js";
import type { GuestMemory } from "../virtio/guest-memory.js";

/** One I2C message: write these bytes, or read this many (0 = zero-length probe). */
export type I2cOp =
  | { readonly addr: number; readonly write: Uint8Array }
  | { readonly addr: number; readonly read: number };

export interface TransferResult {
  /** Every message succeeded. */
  readonly ok: boolean;
  /** Leading messages with status OK (what Linux's master_xfer returns). */
  readonly okCount: number;
  /**
   * Per message: the status byte the device wrote (0 OK, 1 ERR), or null when the message could not
   * be queued (ring full), as Linux counts it failed.
   */
  readonly statuses: readonly (number | null)[];
  /** Per read message, in order: the bytes read when it is among the leading OK messages, else empty. */
  readonly reads: readonly Uint8Array[];
}

/** What the driver needs of a started queue (FrontendQueue from the vhost-user frontend fits). */
export interface DriverQueue {
  readonly driver: DriverRing;
  readonly kick: EventFd;
  readonly call: EventFd;
}

/** Guest memory and a place to carve the driver's buffers from (GuestRam fits). */
export interface DriverMemory {
  readonly memory: GuestMemory;
  alloc(size: number, align?: number): number;
}

export interface I2cDriverOptions {
  /** VIRTIO_F_RING_INDIRECT_DESC negotiated: each chain takes one ring slot. */
  readonly indirect?: boolean;
  /** Largest message data per chain (default 4096). */
  readonly maxMessageLength?: number;
  /** Deadline of one wait for the device (default 5000 ms). */
  readonly timeoutMs?: number;
}

export type I2cDriverErrorCode = "ETIMEDOUT" | "EINVAL" | "EBADRING";

export class I2cDriverError extends CodedError<I2cDriverErrorCode> {}

/** A chain handed to the device; `usedLen` is set once the device returned it. */
export interface SubmittedChain {
  readonly head: number;
  usedLen: number | null;
}

/** A transfer in flight: the chains queued for it (maybe fewer than its messages). */
export interface Submission {
  readonly ops: readonly I2cOp[];
  readonly chains: readonly SubmittedChain[];
}

/**
 * A transfer whose chains a caller collects and hands out again itself (the closed loop): written
 * once by `submitHeld`, given back with `releaseHeld`.
 */
export interface HeldTransfer {
  /** Message order. */
  readonly chains: readonly SubmittedChain[];
  /** Guest address of each message's status byte, message order. */
  readonly statusGpas: readonly number[];
}

/** Per-chain scratch memory: out_hdr, status byte, indirect table (3 entries), then data. */
const SLOT = { HDR: 0, STATUS: 8, TABLE: 16, DATA: 64 } as const;
/** The device did not write a status (distinct from OK and ERR). */
export const NO_STATUS = 0xff;
const NO_STATUS_BYTE = Uint8Array.of(NO_STATUS);

interface ChainRecord extends SubmittedChain {
  readonly slot: number | null;
  /** Message chains keep their slot after use until `wait` has read the status and data. */
  readonly keepSlot: boolean;
}

export class I2cDriver {
  readonly #queue: DriverQueue;
  readonly #memory: GuestMemory;
  readonly #indirect: boolean;
  readonly #maxLength: number;
  readonly #timeoutMs: number;
  readonly #slotBase: number;
  readonly #slotSize: number;
  readonly #freeSlots: number[] = [];
  readonly #zeros: Uint8Array;
  readonly #inFlight = new Map<number, ChainRecord>();
  #callWait: Promise<unknown> | null = null;

  constructor(queue: DriverQueue, memory: DriverMemory, options: I2cDriverOptions = {}) {
    this.#queue = queue;
    this.#memory = memory.memory;
    this.#indirect = options.indirect ?? false;
    this.#maxLength = options.maxMessageLength ?? 4096;
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#slotSize = SLOT.DATA + Math.ceil(this.#maxLength / 16) * 16;
    this.#zeros = new Uint8Array(this.#maxLength);
    const slots = queue.driver.size;
    this.#slotBase = memory.alloc(this.#slotSize * slots, 16);
    for (let i = slots - 1; i >= 0; i--) this.#freeSlots.push(i);
  }

  /** Chains handed to the device and not yet collected. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** The queue this driver runs on. */
  get queue(): DriverQueue {
    return this.#queue;
  }

  /** Whether `count` more transfers of `ops` fit the ring and the driver's buffers right now. */
  canHold(ops: readonly I2cOp[], count: number): boolean {
    let entries = 0;
    for (const op of ops) {
      const length = "read" in op ? op.read : op.write.length;
      entries += this.#indirect ? 1 : length > 0 ? 3 : 2;
    }
    return (
      entries * count <= this.#queue.driver.numFree && ops.length * count <= this.#freeSlots.length
    );
  }

  /**
   * Queues `ops` like `submit` (no kick) for a caller that collects the chains itself
   * (ring.getUsedInto), hands them out again unchanged (ring.republish) and finally gives them back
   * with `releaseHeld`: until then this driver does not track them. EINVAL when they do not all fit.
   */
  submitHeld(ops: readonly I2cOp[]): HeldTransfer {
    if (!this.canHold(ops, 1)) {
      throw new I2cDriverError("EINVAL", `the ring has no room for ${ops.length} more message(s)`);
    }
    const { chains } = this.submit(ops, { kick: false });
    const statusGpas: number[] = [];
    for (const chain of chains as readonly ChainRecord[]) {
      this.#inFlight.delete(chain.head);
      statusGpas.push(this.#slotGpa(chain.slot ?? 0) + SLOT.STATUS);
    }
    return { chains, statusGpas };
  }

  /** Frees a held transfer's ring chains and buffers; every chain must be held (collected). */
  releaseHeld(transfer: HeldTransfer): void {
    for (const chain of transfer.chains) {
      this.#queue.driver.release(chain.head);
      this.#release(chain as ChainRecord);
    }
  }

  /** Runs one transfer: submit, one kick, wait for every queued chain, report. */
  async transfer(ops: readonly I2cOp[]): Promise<TransferResult> {
    return this.wait(this.submit(ops));
  }

  /**
   * Queues one chain per message (stopping at the first that does not fit, as Linux does), then
   * kicks once if the device wants it (`kick: false` leaves the kick to the caller).
   */
  submit(ops: readonly I2cOp[], options: { kick?: boolean } = {}): Submission {
    if (ops.length === 0)
      throw new I2cDriverError("EINVAL", "a transfer needs at least one message");
    for (const op of ops) this.#checkOp(op);
    const chains: ChainRecord[] = [];
    for (const [i, op] of ops.entries()) {
      const chain = this.#addMessage(op, i < ops.length - 1);
      if (chain === null) break;
      chains.push(chain);
    }
    if (options.kick ?? true) this.kickIfNeeded();
    return { ops, chains };
  }

  /**
   * Adds a chain of arbitrary buffers (tests: malformed chains). Published, not kicked. The caller
   * owns the buffers' memory; `waitFor` reports the used length.
   */
  submitRaw(
    buffers: readonly DriverBuffer[],
    options: { indirect?: boolean } = {},
  ): SubmittedChain {
    const indirect = options.indirect ?? false;
    let slot: number | null = null;
    if (indirect) {
      if (buffers.length > 3) {
        throw new I2cDriverError("EINVAL", "raw indirect chains hold at most 3 buffers");
      }
      slot = this.#freeSlots.pop() ?? null;
      if (slot === null) throw new I2cDriverError("EINVAL", "no free slot for an indirect table");
    }
    const head = this.#queue.driver.add(
      buffers,
      slot === null ? {} : { indirect: true, indirectGpa: this.#slotGpa(slot) + SLOT.TABLE },
    );
    if (head === null) {
      if (slot !== null) this.#freeSlots.push(slot);
      throw new I2cDriverError("EINVAL", "the ring has no room for this chain");
    }
    const record: ChainRecord = { head, slot, usedLen: null, keepSlot: false };
    this.#inFlight.set(head, record);
    return record;
  }

  /** Kicks when the device asked for it (notification suppression / EVENT_IDX), as virtqueue_kick. */
  kickIfNeeded(): void {
    if (this.#queue.driver.needsKick()) this.#queue.kick.write(1);
  }

  /** Kicks unconditionally. */
  kick(): void {
    this.#queue.kick.write(1);
  }

  /** Waits until every chain of `submission` is used, then reports statuses and read data. */
  async wait(submission: Submission): Promise<TransferResult> {
    await this.waitFor(submission.chains);
    return this.complete(submission);
  }

  /** Whether every chain of `submission` came back (after `collect`). */
  isDone(submission: Submission): boolean {
    for (const chain of submission.chains) if (chain.usedLen === null) return false;
    return true;
  }

  /** Reports a used submission's statuses and read data and frees its slots (`isDone` must hold). */
  complete(submission: Submission): TransferResult {
    const statuses: (number | null)[] = [];
    const reads: Uint8Array[] = [];
    let okCount = 0;
    let leading = true;
    submission.ops.forEach((op, i) => {
      const chain = submission.chains[i] as ChainRecord | undefined;
      const status = chain === undefined ? null : this.#statusOf(chain);
      statuses.push(status);
      // As the spec asks of drivers: after the first failure the rest of the transfer failed too.
      leading = leading && status === RequestStatus.OK;
      if (leading) okCount++;
      if ("read" in op) {
        reads.push(leading && chain ? this.#readData(chain, op.read) : new Uint8Array(0));
      }
    });
    for (const chain of submission.chains) this.#release(chain as ChainRecord);
    return { ok: okCount === submission.ops.length, okCount, statuses, reads };
  }

  /** Waits until each chain has come back through the used ring (deadline: timeoutMs). */
  async waitFor(chains: readonly SubmittedChain[]): Promise<void> {
    const deadline = Date.now() + this.#timeoutMs;
    const done = () => chains.every((c) => c.usedLen !== null);
    for (;;) {
      this.collect();
      if (done()) return;
      // Ask for an interrupt, then look again: used entries may have landed in between.
      if (this.#queue.driver.enableCallbacks()) continue;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new I2cDriverError(
          "ETIMEDOUT",
          `the device did not return ${chains.filter((c) => c.usedLen === null).length} chain(s) within ${this.#timeoutMs} ms`,
        );
      }
      await this.#nextCall(left);
    }
  }

  /** Takes every used entry off the ring and marks its chain done. */
  collect(): void {
    for (;;) {
      let used: ReturnType<DriverRing["getUsed"]>;
      try {
        used = this.#queue.driver.getUsed();
      } catch (err) {
        throw new I2cDriverError("EBADRING", `bad used ring: ${String(err)}`, { cause: err });
      }
      if (used === null) return;
      const record = this.#inFlight.get(used.head);
      if (record === undefined) {
        throw new I2cDriverError("EBADRING", `used head ${used.head} was not submitted here`);
      }
      record.usedLen = used.len;
      this.#inFlight.delete(used.head);
      if (record.slot !== null && !record.keepSlot) this.#freeSlots.push(record.slot);
    }
  }

  /** One shared wait on the call eventfd, whoever asks (several transfers may wait at once). */
  #nextCall(timeoutMs: number): Promise<unknown> {
    if (this.#callWait === null) {
      const waiting = waitForCall(this.#queue.call, timeoutMs).finally(() => {
        if (this.#callWait === waiting) this.#callWait = null;
      });
      this.#callWait = waiting;
    }
    return this.#callWait;
  }

  #checkOp(op: I2cOp): void {
    if (!Number.isInteger(op.addr) || op.addr < 0 || op.addr > 0x7f) {
      throw new I2cDriverError("EINVAL", `address ${op.addr} is not a 7-bit address`);
    }
    const length = "read" in op ? op.read : op.write.length;
    if (!Number.isInteger(length) || length < 0 || length > this.#maxLength) {
      throw new I2cDriverError("EINVAL", `message length ${length} is not 0..${this.#maxLength}`);
    }
  }

  #slotGpa(slot: number): number {
    return this.#slotBase + slot * this.#slotSize;
  }

  /** Writes and adds one message's chain; null when the ring (or the slot pool) is full. */
  #addMessage(op: I2cOp, failNext: boolean): ChainRecord | null {
    const slot = this.#freeSlots.pop();
    if (slot === undefined) return null;
    const base = this.#slotGpa(slot);
    const read = "read" in op;
    const length = read ? op.read : op.write.length;
    const memory = this.#memory;
    memory.writeU16(base + SLOT.HDR + OutHdr.ADDR_OFFSET, op.addr << 1);
    memory.writeU16(base + SLOT.HDR + OutHdr.PADDING_OFFSET, 0);
    memory.writeU32(
      base + SLOT.HDR + OutHdr.FLAGS_OFFSET,
      (failNext ? RequestFlag.FAIL_NEXT : 0) | (read ? RequestFlag.M_RD : 0),
    );
    memory.write(base + SLOT.STATUS, NO_STATUS_BYTE);
    if (!read && length > 0) memory.write(base + SLOT.DATA, op.write);
    // Cleared, so read data that the device did not write shows as zeros.
    if (read && length > 0) memory.write(base + SLOT.DATA, this.#zeros.subarray(0, length));

    const buffers: DriverBuffer[] = [{ gpa: base + SLOT.HDR, len: OutHdr.SIZE, writable: false }];
    if (length > 0) buffers.push({ gpa: base + SLOT.DATA, len: length, writable: read });
    buffers.push({ gpa: base + SLOT.STATUS, len: 1, writable: true });
    const head = this.#queue.driver.add(
      buffers,
      this.#indirect ? { indirect: true, indirectGpa: base + SLOT.TABLE } : {},
    );
    if (head === null) {
      this.#freeSlots.push(slot);
      return null;
    }
    const record: ChainRecord = { head, slot, usedLen: null, keepSlot: true };
    this.#inFlight.set(head, record);
    return record;
  }

  #statusOf(chain: ChainRecord): number {
    if (chain.slot === null) return NO_STATUS;
    const byte = new Uint8Array(1);
    this.#memory.read(this.#slotGpa(chain.slot) + SLOT.STATUS, byte);
    return byte[0] ?? NO_STATUS;
  }

  #readData(chain: ChainRecord, length: number): Uint8Array {
    const data = new Uint8Array(length);
    if (chain.slot !== null && length > 0)
      this.#memory.read(this.#slotGpa(chain.slot) + SLOT.DATA, data);
    return data;
  }

  /** Frees a message chain's slot once its result was read. */
  #release(chain: ChainRecord): void {
    if (chain.slot !== null && chain.keepSlot) this.#freeSlots.push(chain.slot);
  }
}

// ------------------------------------------------------------------------------------------------
// A whole "VM": frontend + guest RAM + started queue + driver

/** SET_FEATURES as QEMU 7.2 sends it for vhost-user-i2c-pci (0x170000001). */
export const QEMU_FEATURES =
  VIRTIO_F_VERSION_1 |
  VHOST_USER_F_PROTOCOL_FEATURES |
  VIRTIO_F_RING_EVENT_IDX |
  VIRTIO_F_RING_INDIRECT_DESC |
  VIRTIO_I2C_F_ZERO_LENGTH_REQUEST;

/** Protocol features of the observed run (b): MQ | REPLY_ACK | CONFIGURE_MEM_SLOTS | STATUS. */
export const QEMU_PROTOCOL_FEATURES_B =
  protocolBit(ProtocolFeature.MQ) |
  protocolBit(ProtocolFeature.REPLY_ACK) |
  protocolBit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  protocolBit(ProtocolFeature.STATUS);

export interface I2cQueueOptions {
  readonly negotiated: Negotiated;
  /** The virtio features to ack with SET_FEATURES. */
  readonly features: bigint;
  readonly queueSize: number;
  readonly timeoutMs: number;
  /** Where the driver's message buffers start in guest RAM (default: right after the rings). */
  readonly bufferGpa?: number | undefined;
}

/**
 * Acks `features`, starts the request queue in `ram` and puts an I2cDriver on it (one indirect
 * table per chain when INDIRECT_DESC is acked). The caller closes what it opened on failure.
 */
export async function startI2cQueue(
  frontend: VhostUserFrontend,
  ram: GuestRam,
  options: I2cQueueOptions,
): Promise<{ queues: readonly FrontendQueue[]; driver: I2cDriver }> {
  const { features } = options;
  const queues = await startQueues(frontend, ram, {
    negotiated: options.negotiated,
    features,
    queueSize: options.queueSize,
  });
  const queue = queues[0];
  if (queue === undefined) throw new Error("no request queue was started");
  if (options.bufferGpa !== undefined) ram.allocateFrom(options.bufferGpa);
  const driver = new I2cDriver(queue, ram, {
    indirect: (features & VIRTIO_F_RING_INDIRECT_DESC) !== 0n,
    timeoutMs: options.timeoutMs,
  });
  return { queues, driver };
}

export interface I2cGuestOptions {
  /** Protocol features to ack at realize (default none: run (a)). */
  protocolFeatures?: bigint;
  /** Virtio features for SET_FEATURES (default QEMU_FEATURES). */
  features?: bigint;
  /** Ring size (QEMU: 4). */
  queueSize?: number;
  /** Guest RAM size (default 1 MiB). */
  ramSize?: number;
  /** Guest RAM regions instead of one region of `ramSize` at 0 (rings go at the start of the first). */
  ram?: readonly GuestRamLayout[];
  /** Where the driver's message buffers go (default: after the rings). */
  bufferGpa?: number;
  /** Reply and call deadline (default 5000 ms). */
  timeoutMs?: number;
}

/**
 * A "VM" as far as a vhost-user-i2c back-end can tell: the frontend playing QEMU 7.2 (realize, then the
 * DRIVER_OK start burst, in the observed order) with memfd guest RAM and eventfds, and an I2cDriver on
 * the started queue playing the guest's i2c-virtio driver. Used by the demo and the integration tests.
 */
export class I2cGuest {
  readonly frontend: VhostUserFrontend;
  readonly ram: GuestRam;
  readonly negotiated: Negotiated;
  readonly features: bigint;
  readonly queues: readonly FrontendQueue[];
  readonly driver: I2cDriver;
  /** The realize-time call and err eventfds (QEMU's "A"). */
  readonly #realizeFds: EventFd[];

  private constructor(
    frontend: VhostUserFrontend,
    ram: GuestRam,
    negotiated: Negotiated,
    features: bigint,
    queues: readonly FrontendQueue[],
    driver: I2cDriver,
    realizeFds: EventFd[],
  ) {
    this.frontend = frontend;
    this.ram = ram;
    this.negotiated = negotiated;
    this.features = features;
    this.queues = queues;
    this.driver = driver;
    this.#realizeFds = realizeFds;
  }

  /** Connects to a listening daemon and runs QEMU's realize + start sequence. */
  static async connect(path: string, options: I2cGuestOptions = {}): Promise<I2cGuest> {
    const frontend = VhostUserFrontend.connect(path, { timeoutMs: options.timeoutMs ?? 5000 });
    return I2cGuest.#boot(frontend, options);
  }

  /** Runs QEMU's realize + start sequence over an accepted stream (client-mode tests). */
  static async over(stream: UnixStream, options: I2cGuestOptions = {}): Promise<I2cGuest> {
    const frontend = VhostUserFrontend.over(stream, { timeoutMs: options.timeoutMs ?? 5000 });
    return I2cGuest.#boot(frontend, options);
  }

  static async #boot(frontend: VhostUserFrontend, options: I2cGuestOptions): Promise<I2cGuest> {
    const ram = new GuestRam(
      options.ram ?? [{ guestPhysAddr: 0, size: options.ramSize ?? 1 << 20 }],
    );
    const realizeFds: EventFd[] = [];
    try {
      const negotiated = await realize(frontend, {
        protocolFeatures: options.protocolFeatures ?? 0n,
      });
      const callA = EventFd.create();
      const err = EventFd.create();
      realizeFds.push(callA, err);
      await frontend.setVringCall(0, callA.fd);
      await frontend.setVringErr(0, err.fd);
      const features = options.features ?? QEMU_FEATURES;
      const { queues, driver } = await startI2cQueue(frontend, ram, {
        negotiated,
        features,
        queueSize: options.queueSize ?? 4,
        timeoutMs: options.timeoutMs ?? 5000,
        bufferGpa: options.bufferGpa,
      });
      return new I2cGuest(frontend, ram, negotiated, features, queues, driver, realizeFds);
    } catch (error) {
      frontend.close();
      for (const fd of realizeFds) fd.close();
      ram.close();
      throw error;
    }
  }

  /**
   * QEMU 7.2 on a new back-end connection after the old one died (REFERENCE 5.3 (d)): only the start
   * burst, SET_VRING_CALL first, the same rings, SET_VRING_BASE = the used index. The guest (this
   * driver, its ring and RAM) carries on; `frontend` is the new connection.
   */
  async restartOn(frontend: VhostUserFrontend): Promise<I2cGuest> {
    frontend.replyAck =
      (this.negotiated.protocolFeatures & protocolBit(ProtocolFeature.REPLY_ACK)) !== 0n;
    await startQueues(frontend, this.ram, {
      negotiated: this.negotiated,
      features: this.features,
      queues: this.queues,
      queueSize: this.queues[0]?.driver.size ?? 4,
    });
    return new I2cGuest(
      frontend,
      this.ram,
      this.negotiated,
      this.features,
      this.queues,
      this.driver,
      this.#realizeFds,
    );
  }

  /** QEMU's stop: SET_VRING_ENABLE(0), GET_VRING_BASE (the daemon's next avail index). */
  async stop(): Promise<number[]> {
    return stopQueues(this.frontend, this.queues, this.features);
  }

  /** Drops the connection only (the "VM" keeps its RAM and rings for `restartOn`). */
  disconnect(): Promise<unknown> {
    this.frontend.close();
    return this.frontend.whenClosed();
  }

  /** Closes the connection and frees RAM, rings' eventfds and realize fds. */
  async close(): Promise<void> {
    await this.disconnect();
    closeQueues(this.queues);
    for (const fd of this.#realizeFds) fd.close();
    this.ram.close();
  }
}
