/**
 * BackendConnection: the vhost-user back-end state machine for one front-end connection. It owns the
 * negotiated features, the guest memory mappings, the vrings (kick/call/err fds, queue state) and
 * drives the device's queue processing. Every request is handled in one flat dispatcher with the
 * NEED_REPLY ack done in one place; a protocol violation breaks the connection for good.
 * Must not: know any device class (the device comes in through VhostUserDevice), touch socket framing
 * (connection.ts) or parse bytes (codec.ts).
 * @module
 */

import { type Logger, silentLogger } from "../log.js";
import { EventFd } from "../sys/eventfd.js";
import { FdWatcher } from "../sys/fd-watcher.js";
import { Mapping } from "../sys/mapping.js";
import { fileSeals, SEAL } from "../sys/memfd.js";
import {
  VIRTIO_F_NOTIFY_ON_EMPTY,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from "../virtio/features.js";
import { GuestMemory, type RegionBacking } from "../virtio/guest-memory.js";
import { checkPackedQueueSize, PackedQueue, packedRingSizes } from "../virtio/packed-queue.js";
import { VirtqueueError } from "../virtio/queue.js";
import { SplitQueue, splitRingSizes, USED_IDX } from "../virtio/split-queue.js";
import {
  CodecError,
  decodeRequest,
  encodeConfig,
  encodeU64,
  encodeVringState,
  hasReplyPayload,
  type MemRegion,
  type Payload,
  payloadAs,
  REPLY_FLAGS,
  type VringAddr,
} from "./codec.js";
import {
  type CloseReason,
  closeOwnedFd,
  type Message,
  type MessageChannel,
  type MessageFds,
} from "./connection.js";
import type { VhostUserDevice } from "./device.js";
import {
  HeaderFlag,
  MAX_MEM_SLOTS,
  ProtocolFeature,
  protocolBit,
  Request,
  requestName,
  VHOST_USER_F_PROTOCOL_FEATURES,
} from "./protocol.js";

const PROTOCOL_FEATURES_BIT = 1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES);

/** Transport features the back-end implements on top of the device's own bits. */
export const TRANSPORT_FEATURES =
  VIRTIO_F_VERSION_1 |
  VIRTIO_F_NOTIFY_ON_EMPTY |
  VIRTIO_F_RING_INDIRECT_DESC |
  VIRTIO_F_RING_EVENT_IDX |
  VIRTIO_F_RING_PACKED |
  PROTOCOL_FEATURES_BIT;

export interface BackendOptions {
  logger?: Logger;
  /**
   * Offer CONFIGURE_MEM_SLOTS (ADD/REM_MEM_REG). Off by default: QEMU 7.2 sends no memory at all to a
   * back-end that reconnects after such a negotiation, so restarts would hang the guest.
   */
  offerMemSlots?: boolean;
  /** GET_MAX_MEM_SLOTS answer (default 32). */
  maxMemSlots?: number;
  /**
   * Map guest memory whose fd is not sealed against shrinking (F_SEAL_SHRINK). Off by default: a
   * peer that shrinks such a file under our mapping makes the next access raise SIGBUS, which ends
   * the whole process and every other peer's service with it.
   */
  allowUnsealedMemory?: boolean;
}

export type BackendErrorCode =
  | "UNSUPPORTED" // request not implemented: error reply, connection kept
  | "EINVAL" // request refused: error reply, connection kept
  | "EPROTO"; // protocol violation: the connection is closed

export class BackendError extends Error {
  readonly code: BackendErrorCode;
  constructor(code: BackendErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BackendError";
    this.code = code;
  }
}

/** A reply payload (GET_* requests) with the fds it carries. */
interface Reply {
  readonly payload: Uint8Array;
}

interface MappedRegion {
  readonly region: MemRegion;
  readonly mapping: Mapping;
}

/** Per-ring state from the vring messages, plus the running queue. */
class Vring {
  readonly index: number;
  size = 0;
  addr: VringAddr | null = null;
  /**
   * Next avail index to process: SET_VRING_BASE in, GET_VRING_BASE out. Packed rings: avail index |
   * wrap << 15 in the low half, used index | wrap << 15 in the high half (see createQueue).
   */
  base = 0;
  kick: EventFd | null = null;
  call: EventFd | null = null;
  err: EventFd | null = null;
  /** SET_VRING_ENABLE state; only consulted once PROTOCOL_FEATURES is negotiated. */
  enabled = false;
  /** A kick fd arrived and no GET_VRING_BASE stopped the ring since. */
  started = false;
  /** The driver broke the ring: stays stopped until the next start. */
  broken = false;
  queue: SplitQueue | PackedQueue | null = null;
  watcher: FdWatcher | null = null;
  /** The next pass of a device that yielded (its budget spent with chains left in the ring). */
  nextPass: NodeJS.Immediate | null = null;

  constructor(index: number) {
    this.index = index;
  }
}

export class BackendConnection {
  private readonly device: VhostUserDevice;
  private readonly logger: Logger;
  private readonly options: BackendOptions;
  private channel: MessageChannel | null = null;
  private readonly vrings: Vring[];
  private regions: MappedRegion[] = [];
  private memory: GuestMemory | null = null;
  private ackedFeatures = 0n;
  private ackedProtocolFeatures = 0n;
  private status = 0;
  private backendReqFd: EventFd | null = null;
  private ownerSet = false;
  /** Set on a protocol violation or disconnect: nothing is processed after it. */
  private broken = false;
  private released = false;

  constructor(device: VhostUserDevice, options: BackendOptions = {}) {
    this.device = device;
    this.options = options;
    this.logger = options.logger ?? silentLogger;
    this.vrings = Array.from({ length: device.numQueues }, (_, i) => new Vring(i));
  }

  /** Binds the connection to its channel; the channel's handlers call `handle` and `disconnect`. */
  attach(channel: MessageChannel): void {
    this.channel = channel;
  }

  get isBroken(): boolean {
    return this.broken;
  }

  /**
   * True once the front-end made itself the owner (SET_OWNER: every VMM sends it while it sets the
   * device up, before it waits for the guest, which may take as long as it likes) or gave a ring its
   * kick fd (a front-end that reconnects may skip SET_OWNER). A connection without either is not
   * serving a guest yet.
   */
  get handshakeDone(): boolean {
    return this.ownerSet || this.vrings.some((vring) => vring.kick !== null);
  }

  /** Protocol features the front-end acked (REPLY_ACK is honoured whether or not it is here). */
  get negotiatedProtocolFeatures(): bigint {
    return this.ackedProtocolFeatures;
  }

  /** Virtio features offered in GET_FEATURES. */
  get offeredFeatures(): bigint {
    return this.device.features | TRANSPORT_FEATURES;
  }

  /** Protocol features offered in GET_PROTOCOL_FEATURES. */
  get offeredProtocolFeatures(): bigint {
    let bits: number[] = [ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.STATUS];
    if (this.device.getConfig) bits = [...bits, ProtocolFeature.CONFIG];
    if (this.options.offerMemSlots) bits = [...bits, ProtocolFeature.CONFIGURE_MEM_SLOTS];
    return bits.reduce((mask, bit) => mask | protocolBit(bit), 0n);
  }

  /** Handles one message (MessageChannel's onMessage). A promise pauses the channel until it settles. */
  handle(message: Message): void | Promise<void> {
    if (this.broken) return;
    const { header } = message;
    const needReply = (header.flags & HeaderFlag.NEED_REPLY) !== 0;
    if (this.logger.enabled("trace")) {
      this.logger.trace("request", {
        request: requestName(header.request),
        size: header.size,
        fds: message.fds.count,
        needReply,
      });
    }
    let payload: Payload;
    try {
      payload = decodeRequest(header, message.payload, message.fds.count);
    } catch (error) {
      this.fail(error);
      return;
    }
    let result: Reply | undefined | Promise<Reply | undefined>;
    try {
      result = this.dispatch(header.request, payload, message.fds);
    } catch (error) {
      this.finish(header.request, needReply, error);
      return;
    }
    if (result instanceof Promise) {
      return result.then(
        (reply) => this.finish(header.request, needReply, undefined, reply),
        (error: unknown) => this.finish(header.request, needReply, error),
      );
    }
    this.finish(header.request, needReply, undefined, result);
  }

  /** The channel closed: stop rings, close every fd, unmap memory, reset the device. Idempotent. */
  disconnect(reason?: CloseReason): void {
    if (this.released) return;
    this.released = true;
    if (reason !== undefined && reason.kind !== "local") {
      const detail = reason.kind === "eof" ? "peer closed" : reason.error.message;
      this.logger.info("front-end disconnected", { reason: reason.kind, detail });
    }
    this.broken = true;
    this.resetRings();
    this.unmapMemory();
    this.backendReqFd?.close();
    this.backendReqFd = null;
    this.safely("device reset", () => this.device.reset());
    this.channel?.close("backend disconnected");
  }

  /** The one place replies and NEED_REPLY acks are sent, and failures classified. */
  private finish(request: number, needReply: boolean, error: unknown, reply?: Reply): void {
    if (this.broken) return;
    if (error !== undefined) {
      if (!(error instanceof BackendError) || error.code === "EPROTO") {
        this.fail(error);
        return;
      }
      this.logger.warn("request failed", { request: requestName(request), error: error.message });
    }
    if (reply !== undefined) {
      this.channel?.send(request, REPLY_FLAGS, reply.payload);
      return;
    }
    // A GET_* reply is itself the answer; everything else acks NEED_REPLY even without REPLY_ACK
    // (QEMU 7.2 keeps setting it on a reconnected session that never negotiated it).
    if (needReply || (error !== undefined && hasReplyPayload(request))) {
      this.channel?.send(request, REPLY_FLAGS, encodeU64(error === undefined ? 0n : 1n));
    }
  }

  private fail(error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    const code =
      error instanceof CodecError || error instanceof BackendError ? error.code : "INTERNAL";
    this.logger.error("protocol error, closing the connection", { code, error: message });
    this.disconnect();
  }

  private dispatch(
    request: number,
    payload: Payload,
    fds: MessageFds,
  ): Reply | undefined | Promise<Reply | undefined> {
    switch (request) {
      case Request.GET_FEATURES:
        return { payload: encodeU64(this.offeredFeatures) };
      case Request.SET_FEATURES:
        return this.setFeatures(payloadAs(payload, "u64"));
      case Request.GET_PROTOCOL_FEATURES:
        return { payload: encodeU64(this.offeredProtocolFeatures) };
      case Request.SET_PROTOCOL_FEATURES:
        return this.setProtocolFeatures(payloadAs(payload, "u64"));
      case Request.SET_OWNER:
        this.ownerSet = true;
        return undefined;
      case Request.RESET_OWNER:
      case Request.RESET_DEVICE:
        this.resetDevice();
        return undefined;
      case Request.GET_QUEUE_NUM:
        return { payload: encodeU64(this.device.numQueues) };
      case Request.GET_MAX_MEM_SLOTS:
        return { payload: encodeU64(this.options.maxMemSlots ?? MAX_MEM_SLOTS) };
      case Request.SET_MEM_TABLE:
        this.setMemTable(payloadAs(payload, "memTable"), fds);
        return undefined;
      case Request.ADD_MEM_REG:
        this.addMemRegion(payloadAs(payload, "memRegion"), fds.take(0));
        return undefined;
      case Request.REM_MEM_REG:
        this.removeMemRegion(payloadAs(payload, "memRegion"));
        return undefined;
      case Request.SET_VRING_NUM:
        return this.setVringNum(payloadAs(payload, "vringState"));
      case Request.SET_VRING_ADDR:
        return this.setVringAddr(payloadAs(payload, "vringAddr"));
      case Request.SET_VRING_BASE: {
        const { index, num } = payloadAs(payload, "vringState");
        if (num > 0xffff && !this.packed)
          throw new BackendError("EPROTO", `vring base ${num} is not a 16-bit index`);
        this.vring(index).base = num;
        return undefined;
      }
      case Request.GET_VRING_BASE:
        return this.getVringBase(payloadAs(payload, "vringState").index);
      case Request.SET_VRING_KICK:
      case Request.SET_VRING_CALL:
      case Request.SET_VRING_ERR:
        this.setVringFd(request, payloadAs(payload, "vringFd"), fds);
        return undefined;
      case Request.SET_VRING_ENABLE: {
        const { index, num } = payloadAs(payload, "vringState");
        if (num > 1) throw new BackendError("EPROTO", `SET_VRING_ENABLE with ${num}`);
        const vring = this.vring(index);
        vring.enabled = num === 1;
        this.updateRing(vring);
        return undefined;
      }
      case Request.GET_STATUS:
        return { payload: encodeU64(this.status) };
      case Request.SET_STATUS:
        return this.setStatus(payloadAs(payload, "u64"));
      case Request.GET_CONFIG:
        return this.getConfig(payloadAs(payload, "config"));
      case Request.SET_BACKEND_REQ_FD:
        this.backendReqFd?.close();
        this.backendReqFd = EventFd.adopt(fds.take(0));
        return undefined;
      default:
        throw new BackendError("UNSUPPORTED", `${requestName(request)} is not supported`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Features and status

  private setFeatures(features: bigint): undefined {
    const unknown = features & ~this.offeredFeatures;
    if (unknown !== 0n) {
      // Spec: the front-end MUST NOT accept a feature the device did not offer.
      throw new BackendError(
        "EPROTO",
        `SET_FEATURES with bits not offered: 0x${unknown.toString(16)}`,
      );
    }
    const missing = this.device.requiredFeatures & ~features;
    if (missing !== 0n) {
      throw new BackendError(
        "EPROTO",
        `SET_FEATURES lacks required bits 0x${missing.toString(16)}`,
      );
    }
    this.ackedFeatures = features;
    this.device.setFeatures(features);
    this.logger.debug("features negotiated", { features: `0x${features.toString(16)}` });
    for (const vring of this.vrings) this.updateRing(vring);
    return undefined;
  }

  private setProtocolFeatures(features: bigint): undefined {
    const unknown = features & ~this.offeredProtocolFeatures;
    if (unknown !== 0n) {
      throw new BackendError("EPROTO", `protocol features not offered: 0x${unknown.toString(16)}`);
    }
    this.ackedProtocolFeatures = features;
    return undefined;
  }

  private setStatus(value: bigint): undefined {
    if (value > 0xffn) throw new BackendError("EINVAL", `device status 0x${value.toString(16)}`);
    this.status = Number(value);
    if (this.status === 0) this.resetDevice();
    return undefined;
  }

  private getConfig(request: { offset: number; size: number; flags: number }): Reply {
    const getConfig = this.device.getConfig?.bind(this.device);
    let bytes: Uint8Array = new Uint8Array(0);
    if (getConfig) {
      try {
        bytes = getConfig(request.offset, request.size);
      } catch (error) {
        this.logger.warn("GET_CONFIG failed", { error: String(error) });
      }
    }
    if (bytes.byteLength !== request.size) bytes = new Uint8Array(0);
    // An empty config payload tells the front-end the read failed.
    return {
      payload: encodeConfig({ offset: request.offset, flags: request.flags, payload: bytes }),
    };
  }

  private resetDevice(): void {
    this.resetRings();
    this.ackedFeatures = 0n;
    this.status = 0;
    this.safely("device reset", () => this.device.reset());
  }

  // -------------------------------------------------------------------------------------------
  // Memory

  private setMemTable(regions: readonly MemRegion[], fds: MessageFds): void {
    const mapped: MappedRegion[] = [];
    try {
      for (const [i, region] of regions.entries()) {
        mapped.push(this.mapRegion(region, fds.take(i)));
      }
      this.replaceMemory(mapped);
    } catch (error) {
      for (const m of mapped) m.mapping.close();
      throw asRequestFailure(error, "SET_MEM_TABLE");
    }
    const old = this.regions;
    this.regions = mapped;
    for (const m of old) m.mapping.close();
  }

  private addMemRegion(region: MemRegion, fd: number): void {
    if (this.regions.length >= (this.options.maxMemSlots ?? MAX_MEM_SLOTS)) {
      closeQuietly(fd);
      throw new BackendError("EINVAL", "ADD_MEM_REG: no free memory slot");
    }
    let added: MappedRegion | undefined;
    try {
      added = this.mapRegion(region, fd);
      this.replaceMemory([...this.regions, added]);
    } catch (error) {
      added?.mapping.close();
      throw asRequestFailure(error, "ADD_MEM_REG");
    }
    this.regions = [...this.regions, added];
  }

  private removeMemRegion(region: MemRegion): void {
    const victim = this.regions.find(
      (m) =>
        m.region.guestPhysAddr === region.guestPhysAddr &&
        m.region.userAddr === region.userAddr &&
        m.region.size === region.size,
    );
    if (victim === undefined) throw new BackendError("EINVAL", "REM_MEM_REG: no such region");
    const kept = this.regions.filter((m) => m !== victim);
    this.replaceMemory(kept);
    this.regions = kept;
    victim.mapping.close();
  }

  /**
   * Maps `size + mmap_offset` bytes from file offset 0 (as libvhost-user does) and closes the fd.
   * The seal is checked before the size: seals are never removed, so a file sealed against shrinking
   * keeps the size Mapping.map checks for as long as we map it.
   */
  private mapRegion(region: MemRegion, fd: number): MappedRegion {
    try {
      if (!this.options.allowUnsealedMemory && (fileSeals(fd) & SEAL.SHRINK) === 0) {
        throw new BackendError(
          "EINVAL",
          `guest memory at 0x${region.guestPhysAddr.toString(16)}: its fd is not sealed against shrinking (F_SEAL_SHRINK; QEMU: memory-backend-memfd, seal=on)`,
        );
      }
      return { region, mapping: Mapping.map(fd, 0, region.mmapOffset + region.size, true) };
    } finally {
      closeQuietly(fd);
    }
  }

  /** Installs a new GuestMemory over `mapped` and moves running queues onto it. */
  private replaceMemory(mapped: readonly MappedRegion[]): void {
    const memory =
      mapped.length === 0
        ? null
        : new GuestMemory(
            mapped.map((m) => ({
              info: {
                guestPhysAddr: m.region.guestPhysAddr,
                size: m.region.size,
                userAddr: m.region.userAddr,
              },
              backing: regionBacking(m),
            })),
          );
    this.memory = memory;
    for (const vring of this.vrings) {
      const queue = vring.queue;
      if (queue === null) continue;
      if (memory === null) {
        vring.base = vringBase(queue);
        this.stopQueue(vring);
        continue;
      }
      try {
        // The same queue object moves, so chains in flight complete into the new mappings.
        queue.remap(memory);
      } catch (error) {
        this.logger.error("vring not in the new memory table", {
          index: vring.index,
          error: String(error),
        });
        vring.broken = true;
        this.stopQueue(vring);
      }
    }
    for (const vring of this.vrings) this.updateRing(vring);
  }

  private unmapMemory(): void {
    this.memory = null;
    for (const m of this.regions) m.mapping.close();
    this.regions = [];
  }

  // -------------------------------------------------------------------------------------------
  // Vrings

  private vring(index: number): Vring {
    const vring = this.vrings[index];
    if (vring === undefined) {
      throw new BackendError(
        "EPROTO",
        `vring index ${index} out of range (${this.vrings.length} queues)`,
      );
    }
    return vring;
  }

  /** RING_PACKED negotiated: packed rings, any queue size, 32-bit vring bases. */
  private get packed(): boolean {
    return (this.ackedFeatures & VIRTIO_F_RING_PACKED) !== 0n;
  }

  private setVringNum({ index, num }: { index: number; num: number }): undefined {
    const vring = this.vring(index);
    if (this.packed) {
      // Packed rings need not be a power of two.
      try {
        checkPackedQueueSize(num);
      } catch {
        throw new BackendError("EPROTO", `vring ${index} size ${num}: not a packed queue size`);
      }
      if (num > this.device.maxQueueSize) {
        throw new BackendError(
          "EPROTO",
          `vring ${index} size ${num}: more than ${this.device.maxQueueSize}`,
        );
      }
    } else if (num === 0 || num > this.device.maxQueueSize || (num & (num - 1)) !== 0) {
      throw new BackendError(
        "EPROTO",
        `vring ${index} size ${num}: not a power of two up to ${this.device.maxQueueSize}`,
      );
    }
    vring.size = num;
    return undefined;
  }

  private setVringAddr(addr: VringAddr): undefined {
    this.vring(addr.index).addr = addr;
    return undefined;
  }

  private setVringFd(
    request: number,
    value: { index: number; noFd: boolean },
    fds: MessageFds,
  ): void {
    const vring = this.vring(value.index);
    if (value.noFd) {
      throw new BackendError(
        "UNSUPPORTED",
        `${requestName(request)} without an fd (polling) is not supported`,
      );
    }
    const eventFd = EventFd.adopt(fds.take(0));
    if (request === Request.SET_VRING_CALL) {
      vring.call?.close();
      vring.call = eventFd;
      return;
    }
    if (request === Request.SET_VRING_ERR) {
      vring.err?.close();
      vring.err = eventFd;
      return;
    }
    // SET_VRING_KICK starts the ring (spec: "ring is started ... after receiving SET_VRING_KICK").
    this.stopQueue(vring);
    vring.kick?.close();
    vring.kick = eventFd;
    vring.started = true;
    vring.broken = false;
    this.updateRing(vring);
  }

  private async getVringBase(index: number): Promise<Reply> {
    const vring = this.vring(index);
    // Stop the ring first so no kick adds work, then let in-flight chains complete.
    if (vring.queue !== null) vring.base = vringBase(vring.queue);
    vring.started = false;
    this.stopWatching(vring);
    await this.device.whenIdle(index);
    if (vring.queue !== null) vring.base = vringBase(vring.queue);
    this.stopQueue(vring);
    vring.kick?.close();
    vring.kick = null;
    return { payload: encodeVringState({ index, num: vring.base }) };
  }

  /** Whether the ring may be processed: started, fully described, memory mapped, enabled. */
  private isRunnable(vring: Vring): boolean {
    const enabled = (this.ackedFeatures & PROTOCOL_FEATURES_BIT) === 0n || vring.enabled;
    return (
      vring.started &&
      !vring.broken &&
      enabled &&
      vring.kick !== null &&
      vring.addr !== null &&
      vring.size > 0 &&
      this.memory !== null
    );
  }

  /** Brings the ring's queue and kick watch in line with its state; processes it when it comes up. */
  private updateRing(vring: Vring): void {
    if (!this.isRunnable(vring)) {
      this.stopWatching(vring);
      return;
    }
    if (vring.queue === null) {
      try {
        vring.queue = this.createQueue(vring);
      } catch (error) {
        vring.broken = true;
        this.logger.error("cannot start vring", { index: vring.index, error: String(error) });
        return;
      }
    }
    if (vring.watcher === null && vring.kick !== null) {
      const kick = vring.kick;
      vring.watcher = new FdWatcher(kick.fd, () => {
        try {
          kick.read();
        } catch (error) {
          // Not an eventfd after all (a pipe with a partial word, a socket): stop listening to it.
          this.logger.error("kick fd unreadable, vring stopped", {
            index: vring.index,
            error: String(error),
          });
          vring.broken = true;
          this.stopWatching(vring);
          return;
        }
        this.processRing(vring);
      });
      vring.watcher.start();
    }
    // A kick may have been sent before the ring came up (e.g. before SET_VRING_ENABLE): look now.
    this.processRing(vring);
  }

  private createQueue(vring: Vring): SplitQueue | PackedQueue {
    const memory = this.memory!;
    const addr = vring.addr!;
    const size = vring.size;
    const eventIdx = (this.ackedFeatures & VIRTIO_F_RING_EVENT_IDX) !== 0n;
    if (this.packed) return this.createPackedQueue(vring, memory, addr, eventIdx);
    const sizes = splitRingSizes(size, eventIdx);
    // Ring addresses are front-end virtual addresses; translate now, since memory may come last.
    const addresses = {
      desc: memory.uvaToGpa(addr.descUser, sizes.desc),
      avail: memory.uvaToGpa(addr.availUser, sizes.avail),
      used: memory.uvaToGpa(addr.usedUser, sizes.used),
    };
    return new SplitQueue(memory, size, addresses, {
      eventIdx,
      indirect: (this.ackedFeatures & VIRTIO_F_RING_INDIRECT_DESC) !== 0n,
      notifyOnEmpty: (this.ackedFeatures & VIRTIO_F_NOTIFY_ON_EMPTY) !== 0n,
      maxChainLength: this.device.maxChainLength,
      lastAvailIndex: vring.base,
      // Continue from the used index the ring holds (it equals the base unless chains were lost).
      usedIndex: memory.readU16(addresses.used + USED_IDX),
      notify: () => this.signal(vring),
    });
  }

  /**
   * A packed ring: SET_VRING_ADDR's desc/avail/used are the descriptor ring, the driver area (driver
   * event suppression) and the device area. The base's low half is the avail position; its high half
   * the used position (QEMU 7.2 starts with 0x80008000). A high half of 0 means a front-end that sends
   * the avail position only: at a clean stop nothing is in flight, so the used position is the same.
   */
  private createPackedQueue(
    vring: Vring,
    memory: GuestMemory,
    addr: VringAddr,
    eventIdx: boolean,
  ): PackedQueue {
    const sizes = packedRingSizes(vring.size);
    const addresses = {
      desc: memory.uvaToGpa(addr.descUser, sizes.desc),
      driver: memory.uvaToGpa(addr.availUser, sizes.driver),
      device: memory.uvaToGpa(addr.usedUser, sizes.device),
    };
    const avail = vring.base & 0xffff;
    const used = vring.base >>> 16;
    return new PackedQueue(memory, vring.size, addresses, {
      eventIdx,
      indirect: (this.ackedFeatures & VIRTIO_F_RING_INDIRECT_DESC) !== 0n,
      notifyOnEmpty: (this.ackedFeatures & VIRTIO_F_NOTIFY_ON_EMPTY) !== 0n,
      maxChainLength: this.device.maxChainLength,
      lastAvailIndex: avail,
      usedIndex: used === 0 ? avail : used,
      notify: () => this.signal(vring),
    });
  }

  private signal(vring: Vring): void {
    try {
      vring.call?.write(1);
    } catch (error) {
      this.logger.warn("call eventfd write failed", { index: vring.index, error: String(error) });
    }
  }

  private processRing(vring: Vring): void {
    const queue = vring.queue;
    if (queue === null || this.broken || !this.isRunnable(vring)) return;
    // A device that yielded gets its next pass on its own turn; a kick meanwhile adds nothing.
    if (vring.nextPass !== null) return;
    try {
      // A device may leave chains in the ring (the start of a transfer whose rest is not there yet):
      // looping while they are available would spin forever. After a pass that took nothing, one more
      // pass runs with notifications on, so a chain added meanwhile kicks; then we wait for that kick.
      let stayEnabled = false;
      for (;;) {
        if (!stayEnabled) queue.disableNotifications();
        const before = vringBase(queue);
        if (this.device.processQueue(vring.index, queue) === "yield") {
          // Its budget is spent: other sockets and the control socket run before its next pass.
          // Notifications stay off meanwhile, since that pass looks at the ring anyway.
          vring.nextPass = setImmediate(() => {
            vring.nextPass = null;
            this.processRing(vring);
          });
          return;
        }
        const tookSome = vringBase(queue) !== before;
        if (!queue.enableNotifications()) break;
        if (tookSome) stayEnabled = false;
        else if (stayEnabled) break;
        else stayEnabled = true;
      }
    } catch (error) {
      const why = error instanceof VirtqueueError ? "broken ring" : "device failure";
      this.logger.error(`vring stopped: ${why}`, { index: vring.index, error: String(error) });
      vring.broken = true;
      this.stopWatching(vring);
    }
  }

  private stopWatching(vring: Vring): void {
    vring.watcher?.close();
    vring.watcher = null;
    if (vring.nextPass !== null) clearImmediate(vring.nextPass);
    vring.nextPass = null;
  }

  private stopQueue(vring: Vring): void {
    this.stopWatching(vring);
    vring.queue = null;
  }

  private resetRings(): void {
    for (const vring of this.vrings) {
      this.stopQueue(vring);
      vring.kick?.close();
      vring.call?.close();
      vring.err?.close();
      vring.kick = vring.call = vring.err = null;
      vring.started = false;
      vring.broken = false;
      vring.enabled = false;
      vring.addr = null;
      vring.size = 0;
      vring.base = 0;
    }
  }

  private safely(what: string, fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.logger.error(`${what} failed`, { error: String(error) });
    }
  }
}

/** What GET_VRING_BASE reports for a queue: the split avail index, or both packed positions. */
function vringBase(queue: SplitQueue | PackedQueue): number {
  return queue instanceof PackedQueue ? queue.vringBase : queue.lastAvailIndex;
}

/** The region as GuestMemory sees it: a view starting at mmap_offset; the mapping is closed by us. */
function regionBacking(m: MappedRegion): RegionBacking {
  return {
    view: (offset, length) => m.mapping.view(m.region.mmapOffset + offset, length),
    close: () => undefined,
  };
}

function closeQuietly(fd: number): void {
  try {
    closeOwnedFd(fd);
  } catch {
    // Already closed or invalid: nothing left to release.
  }
}

function asRequestFailure(error: unknown, what: string): BackendError {
  if (error instanceof BackendError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new BackendError("EINVAL", `${what}: ${message}`, { cause: error });
}
