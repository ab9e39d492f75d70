/**
 * VhostUserFrontend: the VMM side of vhost-user, for tests, benchmarks and the probe tool. One typed
 * method per request, replies matched in order with a timeout so nothing waits forever, plus
 * `sendRaw` for malformed input. GuestRam builds guest memory on memfds shared by fd, and
 * `realize`/`startQueues`/`stopQueues` replay the message sequences QEMU 7.2 sends.
 * Must not: know any device class; it shares the codec with the back-end and nothing else.
 * @module
 */

import { CodedError } from "../errors.js";
import { type Logger, silentLogger } from "../log.js";
import { EventFd } from "../sys/eventfd.js";
import { closeFd } from "../sys/fd.js";
import { FdWatcher } from "../sys/fd-watcher.js";
import { Mapping } from "../sys/mapping.js";
import { createMemfd, GUEST_RAM_SEALS } from "../sys/memfd.js";
import { UnixStream } from "../sys/unix-socket.js";
import { DriverPackedQueue } from "../virtio/driver-packed-queue.js";
import { DriverSplitQueue } from "../virtio/driver-split-queue.js";
import {
  VIRTIO_F_NOTIFY_ON_EMPTY,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_PACKED,
} from "../virtio/features.js";
import { GuestMemory } from "../virtio/guest-memory.js";
import {
  type DeviceConfig,
  decodeReply,
  encodeConfig,
  encodeMemRegion,
  encodeMemTable,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  type MemRegion,
  type Payload,
  payloadAs,
  requestFlags,
  type VringAddr,
} from "./codec.js";
import { ChannelError, type CloseReason, type Message, MessageChannel } from "./connection.js";
import {
  DeviceStatus,
  HeaderFlag,
  ProtocolFeature,
  protocolBit,
  Request,
  requestName,
  VHOST_USER_F_PROTOCOL_FEATURES,
} from "./protocol.js";

export type FrontendErrorCode =
  | "ETIMEDOUT" // no reply in time (the connection is then closed)
  | "ECONNRESET" // the back-end closed the connection
  | "EREFUSED" // the back-end closed the connection with a line of text saying why
  | "ENACK" // the back-end acked NEED_REPLY with a failure status
  | "EPROTO"; // a reply that does not match the request

export class FrontendError extends CodedError<FrontendErrorCode> {}

export interface FrontendOptions {
  /** How long a reply may take (default 5000 ms). */
  timeoutMs?: number;
  logger?: Logger;
}

interface PendingReply {
  readonly request: number;
  readonly resolve: (payload: Payload) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** Per-request NEED_REPLY override; by default only memory-table requests ask, as QEMU does. */
export interface SendOptions {
  needReply?: boolean;
}

const PROTOCOL_FEATURES_BIT = 1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES);

export class VhostUserFrontend {
  private readonly channel: MessageChannel;
  private readonly timeoutMs: number;
  private readonly pending: PendingReply[] = [];
  private closeReason: CloseReason | null = null;
  private readonly closeWaiters: ((reason: CloseReason) => void)[] = [];
  /**
   * Ask for acks on SET_MEM_TABLE / ADD_MEM_REG. Set by setProtocolFeatures when REPLY_ACK is acked;
   * tests set it directly to replay a reconnect that never negotiated it (QEMU 7.2 does that).
   */
  replyAck = false;

  private constructor(stream: UnixStream, options: FrontendOptions) {
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.channel = new MessageChannel(
      stream,
      { onMessage: (message) => this.onReply(message), onClose: (reason) => this.onClose(reason) },
      options.logger ?? silentLogger,
    );
  }

  /** Connects to a back-end listening on `path`. */
  static connect(path: string, options: FrontendOptions = {}): VhostUserFrontend {
    return new VhostUserFrontend(UnixStream.connect(path), options);
  }

  /** Speaks over an already connected stream (socketpair tests, client mode tests). */
  static over(stream: UnixStream, options: FrontendOptions = {}): VhostUserFrontend {
    return new VhostUserFrontend(stream, options);
  }

  get closed(): boolean {
    return this.closeReason !== null;
  }

  /** Resolves when the connection ends (the back-end closed it, or `close()`). */
  whenClosed(): Promise<CloseReason> {
    if (this.closeReason !== null) return Promise.resolve(this.closeReason);
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  close(): void {
    this.channel.close("frontend closed");
  }

  // ------------------------------------------------------------------------------------------
  // Requests

  async getFeatures(): Promise<bigint> {
    return payloadAs(await this.request(Request.GET_FEATURES, new Uint8Array(0)), "u64");
  }

  setFeatures(features: bigint, options?: SendOptions): Promise<void> {
    return this.command(Request.SET_FEATURES, encodeU64(features), [], options);
  }

  async getProtocolFeatures(): Promise<bigint> {
    return payloadAs(await this.request(Request.GET_PROTOCOL_FEATURES, new Uint8Array(0)), "u64");
  }

  async setProtocolFeatures(features: bigint, options?: SendOptions): Promise<void> {
    await this.command(Request.SET_PROTOCOL_FEATURES, encodeU64(features), [], options);
    this.replyAck = (features & protocolBit(ProtocolFeature.REPLY_ACK)) !== 0n;
  }

  setOwner(options?: SendOptions): Promise<void> {
    return this.command(Request.SET_OWNER, new Uint8Array(0), [], options);
  }

  resetOwner(options?: SendOptions): Promise<void> {
    return this.command(Request.RESET_OWNER, new Uint8Array(0), [], options);
  }

  /** SET_MEM_TABLE with one fd per region (the fds stay the caller's). */
  setMemTable(
    regions: readonly { region: MemRegion; fd: number }[],
    options?: SendOptions,
  ): Promise<void> {
    const payload = encodeMemTable(regions.map((r) => r.region));
    return this.command(
      Request.SET_MEM_TABLE,
      payload,
      regions.map((r) => r.fd),
      this.memOptions(options),
    );
  }

  addMemReg(region: MemRegion, fd: number, options?: SendOptions): Promise<void> {
    return this.command(
      Request.ADD_MEM_REG,
      encodeMemRegion(region),
      [fd],
      this.memOptions(options),
    );
  }

  remMemReg(region: MemRegion, options?: SendOptions): Promise<void> {
    return this.command(Request.REM_MEM_REG, encodeMemRegion(region), [], this.memOptions(options));
  }

  async getMaxMemSlots(): Promise<number> {
    return Number(
      payloadAs(await this.request(Request.GET_MAX_MEM_SLOTS, new Uint8Array(0)), "u64"),
    );
  }

  async getQueueNum(): Promise<number> {
    return Number(payloadAs(await this.request(Request.GET_QUEUE_NUM, new Uint8Array(0)), "u64"));
  }

  setVringNum(index: number, num: number, options?: SendOptions): Promise<void> {
    return this.command(Request.SET_VRING_NUM, encodeVringState({ index, num }), [], options);
  }

  setVringBase(index: number, num: number, options?: SendOptions): Promise<void> {
    return this.command(Request.SET_VRING_BASE, encodeVringState({ index, num }), [], options);
  }

  setVringAddr(addr: VringAddr, options?: SendOptions): Promise<void> {
    return this.command(Request.SET_VRING_ADDR, encodeVringAddr(addr), [], options);
  }

  /** SET_VRING_KICK with the eventfd's fd, or with bit 8 (no fd) when `fd` is null. */
  setVringKick(index: number, fd: number | null, options?: SendOptions): Promise<void> {
    return this.vringFd(Request.SET_VRING_KICK, index, fd, options);
  }

  setVringCall(index: number, fd: number | null, options?: SendOptions): Promise<void> {
    return this.vringFd(Request.SET_VRING_CALL, index, fd, options);
  }

  setVringErr(index: number, fd: number | null, options?: SendOptions): Promise<void> {
    return this.vringFd(Request.SET_VRING_ERR, index, fd, options);
  }

  setVringEnable(index: number, enable: boolean, options?: SendOptions): Promise<void> {
    return this.command(
      Request.SET_VRING_ENABLE,
      encodeVringState({ index, num: enable ? 1 : 0 }),
      [],
      options,
    );
  }

  /** Stops the ring; resolves with the back-end's next avail index. */
  async getVringBase(index: number): Promise<number> {
    const reply = await this.request(Request.GET_VRING_BASE, encodeVringState({ index, num: 0 }));
    return payloadAs(reply, "vringState").num;
  }

  async getStatus(): Promise<number> {
    return Number(payloadAs(await this.request(Request.GET_STATUS, new Uint8Array(0)), "u64"));
  }

  setStatus(status: number, options?: SendOptions): Promise<void> {
    return this.command(Request.SET_STATUS, encodeU64(status), [], options);
  }

  async getConfig(offset: number, size: number): Promise<DeviceConfig> {
    const payload = encodeConfig({ offset, flags: 0, payload: new Uint8Array(size) });
    return payloadAs(await this.request(Request.GET_CONFIG, payload), "config");
  }

  /**
   * Sends anything, for malformed-input tests. With `expectReply`, resolves with the reply's raw
   * decoded payload (as `decodeReply` reads it for that request code); otherwise resolves at once.
   */
  sendRaw(
    request: number,
    flags: number,
    payload: Uint8Array,
    fds: readonly number[] = [],
    expectReply = false,
  ): Promise<Payload | null> {
    if (!expectReply) {
      this.channel.send(request, flags, payload, fds);
      return Promise.resolve(null);
    }
    return this.exchange(request, flags, payload, fds);
  }

  // ------------------------------------------------------------------------------------------
  // Plumbing

  private memOptions(options?: SendOptions): SendOptions {
    return { needReply: options?.needReply ?? this.replyAck };
  }

  private vringFd(
    request: number,
    index: number,
    fd: number | null,
    options?: SendOptions,
  ): Promise<void> {
    const payload = encodeVringFd({ index, noFd: fd === null });
    return this.command(request, payload, fd === null ? [] : [fd], options);
  }

  /** A GET_* request: its reply is the answer. */
  private request(request: number, payload: Uint8Array): Promise<Payload> {
    return this.exchange(request, requestFlags(false), payload, []);
  }

  /** A SET request: waits for the ack only when NEED_REPLY is set; a nonzero ack rejects (ENACK). */
  private async command(
    request: number,
    payload: Uint8Array,
    fds: readonly number[],
    options?: SendOptions,
  ): Promise<void> {
    const needReply = options?.needReply ?? false;
    if (!needReply) {
      if (this.closed) throw this.closedError();
      this.channel.send(request, requestFlags(false), payload, fds);
      return;
    }
    const status = payloadAs(await this.exchange(request, requestFlags(true), payload, fds), "u64");
    if (status !== 0n) {
      throw new FrontendError("ENACK", `${requestName(request)} failed: status ${status}`);
    }
  }

  private exchange(
    request: number,
    flags: number,
    payload: Uint8Array,
    fds: readonly number[],
  ): Promise<Payload> {
    if (this.closed) return Promise.reject(this.closedError());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new FrontendError("ETIMEDOUT", `no reply to ${requestName(request)}`));
        this.channel.close("reply timeout");
      }, this.timeoutMs);
      this.pending.push({ request, resolve, reject, timer });
      this.channel.send(request, flags, payload, fds);
    });
  }

  private onReply(message: Message): void {
    const { header } = message;
    const waiting = this.pending.shift();
    if (
      waiting === undefined ||
      (header.flags & HeaderFlag.REPLY) === 0 ||
      header.request !== waiting.request
    ) {
      const expected = waiting === undefined ? "nothing" : requestName(waiting.request);
      const error = new FrontendError(
        "EPROTO",
        `got ${requestName(header.request)}, expected ${expected}`,
      );
      if (waiting !== undefined) {
        clearTimeout(waiting.timer);
        waiting.reject(error);
      }
      throw error;
    }
    clearTimeout(waiting.timer);
    try {
      waiting.resolve(decodeReply(header.request, message.payload));
    } catch (error) {
      waiting.reject(error as Error);
    }
  }

  private onClose(reason: CloseReason): void {
    this.closeReason = reason;
    for (const waiting of this.pending.splice(0)) {
      clearTimeout(waiting.timer);
      waiting.reject(this.closedError());
    }
    for (const wake of this.closeWaiters.splice(0)) wake(reason);
  }

  private closedError(): FrontendError {
    const reason = this.closeReason;
    if (
      reason?.kind === "protocol" &&
      reason.error instanceof ChannelError &&
      reason.error.code === "EPEER_TEXT"
    ) {
      return new FrontendError("EREFUSED", reason.error.message, { cause: reason.error });
    }
    return new FrontendError("ECONNRESET", "the connection to the back-end is closed");
  }
}

// ------------------------------------------------------------------------------------------------
// Guest memory on memfds

/** Where the front-end pretends to have mapped guest RAM (a QEMU-like virtual address). */
const USER_ADDR_BASE = 0x7f00_0000_0000;

export interface GuestRamLayout {
  guestPhysAddr: number;
  size: number;
  /** Bytes of the memfd before the region (exercises mmap_offset). Page multiple. Default 0. */
  mmapOffset?: number;
  /**
   * Seal the memfd as QEMU's memory-backend-memfd does by default (GUEST_RAM_SEALS), so a back-end
   * that requires F_SEAL_SHRINK accepts it. Default true; false plays a VMM with unsealed RAM.
   */
  sealed?: boolean;
}

/** Guest RAM the back-end maps by fd, and the front-end's own view of it (for the driver side). */
export class GuestRam {
  readonly memory: GuestMemory;
  readonly regions: readonly { region: MemRegion; fd: number }[];
  private readonly mappings: Mapping[];
  private next: number;

  constructor(layout: readonly GuestRamLayout[] = [{ guestPhysAddr: 0, size: 1 << 20 }]) {
    const regions: { region: MemRegion; fd: number }[] = [];
    const mappings: Mapping[] = [];
    try {
      for (const l of layout) {
        const mmapOffset = l.mmapOffset ?? 0;
        const fd = createMemfd(mmapOffset + l.size, "guest-ram", {
          seals: l.sealed === false ? 0 : GUEST_RAM_SEALS,
        });
        regions.push({
          fd,
          region: {
            guestPhysAddr: l.guestPhysAddr,
            size: l.size,
            userAddr: USER_ADDR_BASE + l.guestPhysAddr,
            mmapOffset,
          },
        });
        mappings.push(Mapping.map(fd, 0, mmapOffset + l.size, true));
      }
      this.memory = new GuestMemory(
        regions.map(({ region }, i) => ({
          info: {
            guestPhysAddr: region.guestPhysAddr,
            size: region.size,
            userAddr: region.userAddr,
          },
          backing: {
            view: (offset: number, length: number) =>
              mappings[i]!.view(region.mmapOffset + offset, length),
            close: () => mappings[i]!.close(),
          },
        })),
      );
    } catch (error) {
      for (const m of mappings) m.close();
      for (const r of regions) closeFd(r.fd);
      throw error;
    }
    this.regions = regions;
    this.mappings = mappings;
    this.next = regions[0]?.region.guestPhysAddr ?? 0;
  }

  /** The front-end virtual address of a guest-physical one (what SET_VRING_ADDR carries). */
  userAddr(gpa: number): number {
    const hit = this.regions.find(
      ({ region }) => gpa >= region.guestPhysAddr && gpa < region.guestPhysAddr + region.size,
    );
    if (hit === undefined) throw new RangeError(`gpa 0x${gpa.toString(16)} is not in guest RAM`);
    return hit.region.userAddr + (gpa - hit.region.guestPhysAddr);
  }

  /** Reserves `size` bytes at the allocation cursor (rings, buffers), inside one region. */
  alloc(size: number, align = 16): number {
    const gpa = Math.ceil(this.next / align) * align;
    const holder = this.regions.find(
      ({ region }) =>
        gpa >= region.guestPhysAddr && gpa + size <= region.guestPhysAddr + region.size,
    );
    if (holder === undefined) throw new RangeError("guest RAM exhausted");
    this.next = gpa + size;
    return gpa;
  }

  /** Moves the allocation cursor: later allocations start at `gpa` (e.g. buffers above 4 GiB). */
  allocateFrom(gpa: number): void {
    this.next = gpa;
  }

  close(): void {
    this.memory.close();
    for (const m of this.mappings) m.close();
    for (const { fd } of this.regions) closeFd(fd);
  }
}

// ------------------------------------------------------------------------------------------------
// Call eventfd waiting

/** Resolves with the counter once `call` is signalled; rejects after `timeoutMs` (default 5 s). */
export function waitForCall(call: EventFd, timeoutMs = 5000): Promise<number> {
  const pending = call.read();
  if (pending > 0) return Promise.resolve(pending);
  return new Promise((resolve, reject) => {
    const watcher = new FdWatcher(call.fd, () => {
      const value = call.read();
      if (value === 0) return;
      clearTimeout(timer);
      watcher.close();
      resolve(value);
    });
    const timer = setTimeout(() => {
      watcher.close();
      reject(new FrontendError("ETIMEDOUT", "the back-end did not signal the call eventfd"));
    }, timeoutMs);
    watcher.start();
  });
}

// ------------------------------------------------------------------------------------------------
// QEMU 7.2 message sequences

export interface RealizeOptions {
  /** Protocol features to ack (intersected with what the back-end offers). Default: none, as (a). */
  protocolFeatures?: bigint;
}

export interface Negotiated {
  features: bigint;
  protocolFeatures: bigint;
  queueNum: number | null;
  maxMemSlots: number | null;
}

/** Realize, as QEMU 7.2 does at start: features, protocol features, owner, the early CALL/ERR. */
export async function realize(
  frontend: VhostUserFrontend,
  options: RealizeOptions = {},
): Promise<Negotiated> {
  const features = await frontend.getFeatures();
  let protocolFeatures = 0n;
  let queueNum: number | null = null;
  let maxMemSlots: number | null = null;
  if ((features & PROTOCOL_FEATURES_BIT) !== 0n) {
    const offered = await frontend.getProtocolFeatures();
    protocolFeatures = offered & (options.protocolFeatures ?? 0n);
    await frontend.setProtocolFeatures(protocolFeatures);
    if ((protocolFeatures & protocolBit(ProtocolFeature.MQ)) !== 0n)
      queueNum = await frontend.getQueueNum();
    if ((protocolFeatures & protocolBit(ProtocolFeature.CONFIGURE_MEM_SLOTS)) !== 0n) {
      maxMemSlots = await frontend.getMaxMemSlots();
    }
  }
  await frontend.setOwner();
  await frontend.getFeatures();
  return { features, protocolFeatures, queueNum, maxMemSlots };
}

/** A driver-side ring: split or packed (RING_PACKED), both with the same driver methods. */
export type DriverRing = DriverSplitQueue | DriverPackedQueue;

/** A driver-side ring with its kick and call eventfds. */
export interface FrontendQueue {
  readonly index: number;
  readonly driver: DriverRing;
  readonly kick: EventFd;
  readonly call: EventFd;
}

export interface StartOptions {
  queueSize?: number;
  /** Virtio features for SET_FEATURES; default: everything offered but NOTIFY_ON_EMPTY. */
  features?: bigint;
  /** From realize; decides STATUS / CONFIGURE_MEM_SLOTS / REPLY_ACK behaviour. */
  negotiated: Negotiated;
  /** Restart on existing rings (reconnect): same ring addresses, base = their used index. */
  queues?: readonly FrontendQueue[];
  /** Queues to start when `queues` is not given (default 1). */
  numQueues?: number;
}

/**
 * `vhost_dev_start` as QEMU 7.2 sends it (also on a reconnect): CALL, FEATURES, [STATUS], memory,
 * NUM/BASE/ADDR/KICK, ENABLE, CALL again.
 */
export async function startQueues(
  frontend: VhostUserFrontend,
  ram: GuestRam,
  options: StartOptions,
): Promise<readonly FrontendQueue[]> {
  const { negotiated } = options;
  const size = options.queueSize ?? 4;
  const features = options.features ?? negotiated.features & ~VIRTIO_F_NOTIFY_ON_EMPTY;
  const eventIdx = (features & VIRTIO_F_RING_EVENT_IDX) !== 0n;
  const packed = (features & VIRTIO_F_RING_PACKED) !== 0n;
  const queues =
    options.queues ??
    Array.from({ length: options.numQueues ?? 1 }, (_, index) => ({
      index,
      driver: createDriverRing(ram, size, eventIdx, packed),
      kick: EventFd.create(),
      call: EventFd.create(),
    }));
  for (const q of queues) await frontend.setVringCall(q.index, q.call.fd);
  await frontend.setFeatures(features);
  if ((negotiated.protocolFeatures & protocolBit(ProtocolFeature.STATUS)) !== 0n) {
    const status = await frontend.getStatus();
    if ((status & DeviceStatus.FEATURES_OK) === 0)
      await frontend.setStatus(DeviceStatus.FEATURES_OK);
  }
  if ((negotiated.protocolFeatures & protocolBit(ProtocolFeature.CONFIGURE_MEM_SLOTS)) !== 0n) {
    if (options.queues === undefined) {
      for (const { region, fd } of ram.regions) await frontend.addMemReg(region, fd);
    }
  } else {
    await frontend.setMemTable(ram.regions);
  }
  for (const q of queues) {
    const { desc, avail, used } = ringAreas(q.driver);
    await frontend.setVringNum(q.index, size);
    await frontend.setVringBase(q.index, restartBase(q.driver, options.queues !== undefined));
    await frontend.setVringAddr({
      index: q.index,
      flags: 0,
      descUser: ram.userAddr(desc),
      usedUser: ram.userAddr(used),
      availUser: ram.userAddr(avail),
      log: BigInt(used),
    });
    await frontend.setVringKick(q.index, q.kick.fd);
  }
  if ((features & PROTOCOL_FEATURES_BIT) !== 0n) {
    for (const q of queues) await frontend.setVringEnable(q.index, true);
  }
  for (const q of queues) await frontend.setVringCall(q.index, q.call.fd);
  return queues;
}

function createDriverRing(
  ram: GuestRam,
  size: number,
  eventIdx: boolean,
  packed: boolean,
): DriverRing {
  if (packed) {
    const base = ram.alloc(DriverPackedQueue.byteLength(size), 4096);
    return new DriverPackedQueue(ram.memory, base, size, { eventIdx });
  }
  const base = ram.alloc(DriverSplitQueue.byteLength(size, { eventIdx }), 4096);
  return new DriverSplitQueue(ram.memory, base, size, { eventIdx });
}

/** SET_VRING_ADDR's three areas; a packed ring's driver and device areas go where avail and used do. */
function ringAreas(ring: DriverRing): { desc: number; avail: number; used: number } {
  if (ring instanceof DriverPackedQueue) {
    const { desc, driver, device } = ring.addresses;
    return { desc, avail: driver, used: device };
  }
  return ring.addresses;
}

/**
 * SET_VRING_BASE as QEMU 7.2 sends it. Split: 0 on a fresh ring, the used index on a restart. Packed:
 * `index | wrap << 15` of the avail position in the low half and of the used position in the high half
 * (fresh: 0x80008000); a restart hands the device everything not used yet again, as QEMU does.
 */
function restartBase(ring: DriverRing, restart: boolean): number {
  if (ring instanceof DriverPackedQueue) {
    const used = restart ? ring.deviceUsedIndex : ring.availIndex;
    return (used | (used << 16)) >>> 0;
  }
  return restart ? ring.deviceUsedIndex : 0;
}

/** `vhost_dev_stop`: disable, GET_VRING_BASE (the back-end's next avail index) per queue. */
export async function stopQueues(
  frontend: VhostUserFrontend,
  queues: readonly FrontendQueue[],
  features: bigint,
): Promise<number[]> {
  const bases: number[] = [];
  for (const q of queues) {
    if ((features & PROTOCOL_FEATURES_BIT) !== 0n) await frontend.setVringEnable(q.index, false);
    bases.push(await frontend.getVringBase(q.index));
  }
  return bases;
}

/** Closes the eventfds of started queues. */
export function closeQueues(queues: readonly FrontendQueue[]): void {
  for (const q of queues) {
    q.kick.close();
    q.call.close();
  }
}
