/**
 * BackendConnection: the vhost-user back-end state machine for one front-end connection. It owns the
 * negotiated features and the protocol state, checks every request, and tells the connection's rings
 * (RingControl: memory mappings, vrings, queue processing; rings.ts) what to change: in this thread
 * for a VhostUserDevice, in a data-plane thread for a RemoteDevice. Every request is handled in one
 * flat dispatcher with the NEED_REPLY ack done in one place; a protocol violation breaks the
 * connection for good.
 * Must not: know any device class (the device comes in through VhostUserDevice or RemoteDevice),
 * touch socket framing (connection.ts), parse bytes (codec.ts) or map memory (rings.ts).
 * @module
 */

import { type Logger, silentLogger } from "../log.js";
import { EventFd } from "../sys/eventfd.js";
import { closeFdQuietly } from "../sys/fd.js";
import {
  VIRTIO_F_NOTIFY_ON_EMPTY,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from "../virtio/features.js";
import { checkPackedQueueSize } from "../virtio/packed-queue.js";
import {
  CodecError,
  decodeRequest,
  encodeConfig,
  encodeU64,
  encodeVringState,
  hasReplyPayload,
  type Payload,
  payloadAs,
  REPLY_FLAGS,
  type VringAddr,
} from "./codec.js";
import type { CloseReason, Message, MessageChannel, MessageFds } from "./connection.js";
import type { RemoteDevice, VhostUserDevice, VhostUserDeviceInfo } from "./device.js";
import { BackendError } from "./errors.js";
import type { ConnectionJournal } from "./journal.js";
import {
  HeaderFlag,
  MAX_MEM_SLOTS,
  ProtocolFeature,
  protocolBit,
  Request,
  requestName,
  VHOST_USER_F_PROTOCOL_FEATURES,
} from "./protocol.js";
import { LocalRings, type RingControl, type VringFdKind } from "./rings.js";
import type { ConnectionState, RingsState } from "./state.js";

export { BackendError, type BackendErrorCode } from "./errors.js";

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
  /**
   * The connection's journal in the service manager's fd store (--fd-store): every change the
   * front-end makes is recorded there once it succeeded, before the reply, so a restart after a
   * crash resumes the connection. The back-end closes it with the connection.
   */
  journal?: ConnectionJournal;
  /**
   * Offer VIRTIO_F_RING_PACKED (default true). QEMU 10 gives the guest exactly the offered features,
   * so a Linux guest then always runs a packed ring; false leaves it the split ring. QEMU 7.2 acks
   * what its command line says whatever is offered: packed=on there becomes a SET_FEATURES with a
   * bit not offered, which is refused.
   */
  offerPackedRing?: boolean;
}

/** A reply payload (GET_* requests) with the fds it carries. */
interface Reply {
  readonly payload: Uint8Array;
}

export class BackendConnection {
  private readonly device: VhostUserDeviceInfo;
  private readonly rings: RingControl;
  private readonly logger: Logger;
  private readonly options: BackendOptions;
  private channel: MessageChannel | null = null;
  private ackedFeatures = 0n;
  private ackedProtocolFeatures = 0n;
  private status = 0;
  private backendReqFd: EventFd | null = null;
  private ownerSet = false;
  /** A ring was given its kick fd (a front-end that reconnects may skip SET_OWNER). */
  private kickGiven = false;
  /** Set on a protocol violation or disconnect: nothing is processed after it. */
  private broken = false;
  private released = false;
  /** A restore in progress: messages wait for it. */
  private restoring: Promise<void> | null = null;
  private readonly journal: ConnectionJournal | null;
  /** What the request being handled changed, for the journal once it has succeeded. */
  private toRecord: ((journal: ConnectionJournal) => void) | null = null;

  /**
   * A VhostUserDevice runs its queues in this thread (LocalRings); a RemoteDevice brings the rings
   * that run them elsewhere.
   */
  constructor(device: VhostUserDevice | RemoteDevice, options: BackendOptions = {}) {
    this.device = device;
    this.options = options;
    this.logger = options.logger ?? silentLogger;
    this.rings =
      "rings" in device
        ? device.rings
        : new LocalRings(device, {
            logger: this.logger,
            ...(options.maxMemSlots !== undefined && { maxMemSlots: options.maxMemSlots }),
            ...(options.allowUnsealedMemory !== undefined && {
              allowUnsealedMemory: options.allowUnsealedMemory,
            }),
          });
    this.journal = options.journal ?? null;
    if (this.journal !== null) {
      // Packed rings log their used position in the journal's first page (a restart reads it).
      const logged = this.rings.setPositionLog(this.journal.positionLogFd());
      if (logged instanceof Promise) {
        logged.catch((error: unknown) =>
          this.logger.error("the rings keep no position log", { error: String(error) }),
        );
      }
    }
  }

  /**
   * Takes over a connection another process handed over (or this one, after a handover that failed):
   * the protocol state as it was, and the rings rebuilt through the same RingControl calls the
   * front-end's messages made. Messages that arrive meanwhile wait for it. Rejects (fds closed)
   * when the rings refuse the state; the caller then closes the connection.
   */
  restore(state: Omit<ConnectionState, "socket" | "socketIndex">): Promise<void> {
    const restoring = this.#restore(state);
    this.restoring = restoring.then(
      () => {
        this.restoring = null;
      },
      () => {
        // Nothing more is served on a connection whose state was refused.
        this.broken = true;
      },
    );
    return restoring;
  }

  async #restore(state: Omit<ConnectionState, "socket" | "socketIndex">): Promise<void> {
    this.ackedFeatures = state.features;
    this.ackedProtocolFeatures = state.protocolFeatures;
    this.status = state.status;
    this.ownerSet = state.ownerSet;
    if (state.backendReqFd !== null) this.backendReqFd = EventFd.adopt(state.backendReqFd);
    const rings = state.rings;
    let given = 0;
    const fds = fdsOfRings(rings);
    try {
      await this.rings.setFeatures(rings.features);
      // Each call below owns the fds it is given, whatever it does.
      const regionFds = rings.regions.map(({ fd }) => fd);
      given += regionFds.length;
      if (rings.regions.length > 0) {
        await this.rings.setMemTable(
          rings.regions.map(({ region }) => region),
          regionFds,
        );
      }
      for (const vring of rings.vrings) {
        this.checkVring(vring.index);
        if (vring.size > 0) await this.rings.setVringSize(vring.index, vring.size);
        if (vring.addr !== null) await this.rings.setVringAddr(vring.addr);
        // No base: a restart after a crash, where the rings recover it from the ring itself.
        if (vring.base !== null) await this.rings.setVringBase(vring.index, vring.base);
        else await this.rings.recoverVringBase(vring.index);
        for (const kind of ["call", "err"] as const) {
          const fd = vring[kind];
          if (fd === null) continue;
          given++;
          await this.rings.setVringFd(vring.index, kind, fd);
        }
        await this.rings.setVringEnabled(vring.index, vring.enabled);
        if (vring.kick !== null) {
          given++;
          this.kickGiven = true;
          await this.rings.setVringFd(vring.index, "kick", vring.kick);
        }
      }
    } catch (error) {
      for (const fd of fds.slice(given)) closeFdQuietly(fd);
      throw error;
    }
  }

  /**
   * Gives the connection up for a handover: the rings stop once their chains in flight are done and
   * hand their state and fds over; nothing more is processed here, and no fd is closed. The caller
   * has stopped reading the channel.
   */
  async handOver(): Promise<Omit<ConnectionState, "socket" | "socketIndex">> {
    if (this.released) throw new BackendError("EINVAL", "the connection has ended");
    this.released = true;
    this.broken = true;
    const rings: RingsState = await this.rings.handOver();
    const backendReqFd = this.backendReqFd?.release() ?? null;
    this.backendReqFd = null;
    return {
      features: this.ackedFeatures,
      protocolFeatures: this.ackedProtocolFeatures,
      status: this.status,
      ownerSet: this.ownerSet,
      backendReqFd,
      rings,
      journal: this.journal?.release() ?? null,
    };
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
    return this.ownerSet || this.kickGiven;
  }

  /** Protocol features the front-end acked (REPLY_ACK is honoured whether or not it is here). */
  get negotiatedProtocolFeatures(): bigint {
    return this.ackedProtocolFeatures;
  }

  /** Virtio features offered in GET_FEATURES. */
  get offeredFeatures(): bigint {
    const features = this.device.features | TRANSPORT_FEATURES;
    return this.options.offerPackedRing === false ? features & ~VIRTIO_F_RING_PACKED : features;
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
    if (this.restoring !== null) return this.restoring.then(() => this.handle(message));
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
    this.safely("closing the rings", () => this.rings.close());
    this.backendReqFd?.close();
    this.backendReqFd = null;
    this.safely("dropping the journal", () => this.journal?.close());
    this.channel?.close("backend disconnected");
  }

  /** The one place replies and NEED_REPLY acks are sent, and failures classified. */
  private finish(request: number, needReply: boolean, error: unknown, reply?: Reply): void {
    if (this.broken) return;
    const record = this.toRecord;
    this.toRecord = null;
    if (
      error === undefined &&
      this.journal !== null &&
      (record !== null || !hasReplyPayload(request))
    ) {
      this.safely("journaling", () => {
        record?.(this.journal as ConnectionJournal);
        (this.journal as ConnectionJournal).commit({
          features: this.ackedFeatures,
          protocolFeatures: this.ackedProtocolFeatures,
          status: this.status,
          ownerSet: this.ownerSet,
          backendReqFd: this.backendReqFd?.fd ?? null,
        });
      });
    }
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
        return this.resetDevice();
      case Request.GET_QUEUE_NUM:
        return { payload: encodeU64(this.device.numQueues) };
      case Request.GET_MAX_MEM_SLOTS:
        return { payload: encodeU64(this.options.maxMemSlots ?? MAX_MEM_SLOTS) };
      case Request.SET_MEM_TABLE: {
        const regions = payloadAs(payload, "memTable");
        const taken = regions.map((_, i) => fds.take(i));
        this.toRecord = (journal) => journal.setMemTable(regions, taken);
        return done(this.rings.setMemTable(regions, taken));
      }
      case Request.ADD_MEM_REG: {
        const region = payloadAs(payload, "memRegion");
        const fd = fds.take(0);
        this.toRecord = (journal) => journal.addMemRegion(region, fd);
        return done(this.rings.addMemRegion(region, fd));
      }
      case Request.REM_MEM_REG: {
        const region = payloadAs(payload, "memRegion");
        this.toRecord = (journal) => journal.removeMemRegion(region);
        return done(this.rings.removeMemRegion(region));
      }
      case Request.SET_VRING_NUM:
        return this.setVringNum(payloadAs(payload, "vringState"));
      case Request.SET_VRING_ADDR: {
        const addr: VringAddr = payloadAs(payload, "vringAddr");
        this.checkVring(addr.index);
        this.toRecord = (journal) => journal.setVringAddr(addr);
        return done(this.rings.setVringAddr(addr));
      }
      case Request.SET_VRING_BASE: {
        const { index, num } = payloadAs(payload, "vringState");
        if (num > 0xffff && !this.packed)
          throw new BackendError("EPROTO", `vring base ${num} is not a 16-bit index`);
        this.checkVring(index);
        return done(this.rings.setVringBase(index, num));
      }
      case Request.GET_VRING_BASE:
        return this.getVringBase(payloadAs(payload, "vringState").index);
      case Request.SET_VRING_KICK:
      case Request.SET_VRING_CALL:
      case Request.SET_VRING_ERR:
        return this.setVringFd(request, payloadAs(payload, "vringFd"), fds);
      case Request.SET_VRING_ENABLE: {
        const { index, num } = payloadAs(payload, "vringState");
        if (num > 1) throw new BackendError("EPROTO", `SET_VRING_ENABLE with ${num}`);
        this.checkVring(index);
        this.toRecord = (journal) => journal.setVringEnabled(index, num === 1);
        return done(this.rings.setVringEnabled(index, num === 1));
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

  private setFeatures(features: bigint): undefined | Promise<undefined> {
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
    this.logger.debug("features negotiated", { features: `0x${features.toString(16)}` });
    this.toRecord = (journal) => journal.setRingFeatures(features);
    return done(this.rings.setFeatures(features));
  }

  private setProtocolFeatures(features: bigint): undefined {
    const unknown = features & ~this.offeredProtocolFeatures;
    if (unknown !== 0n) {
      throw new BackendError("EPROTO", `protocol features not offered: 0x${unknown.toString(16)}`);
    }
    this.ackedProtocolFeatures = features;
    return undefined;
  }

  private setStatus(value: bigint): undefined | Promise<undefined> {
    if (value > 0xffn) throw new BackendError("EINVAL", `device status 0x${value.toString(16)}`);
    this.status = Number(value);
    if (this.status === 0) return this.resetDevice();
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

  private resetDevice(): undefined | Promise<undefined> {
    this.ackedFeatures = 0n;
    this.status = 0;
    this.kickGiven = false;
    this.toRecord = (journal) => journal.resetRings();
    return done(this.rings.reset());
  }

  // -------------------------------------------------------------------------------------------
  // Vrings

  private checkVring(index: number): void {
    if (index >= this.device.numQueues) {
      throw new BackendError(
        "EPROTO",
        `vring index ${index} out of range (${this.device.numQueues} queues)`,
      );
    }
  }

  /** RING_PACKED negotiated: packed rings, any queue size, 32-bit vring bases. */
  private get packed(): boolean {
    return (this.ackedFeatures & VIRTIO_F_RING_PACKED) !== 0n;
  }

  private setVringNum({
    index,
    num,
  }: {
    index: number;
    num: number;
  }): undefined | Promise<undefined> {
    this.checkVring(index);
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
    this.toRecord = (journal) => journal.setVringSize(index, num);
    return done(this.rings.setVringSize(index, num));
  }

  private setVringFd(
    request: number,
    value: { index: number; noFd: boolean },
    fds: MessageFds,
  ): undefined | Promise<undefined> {
    this.checkVring(value.index);
    if (value.noFd) {
      throw new BackendError(
        "UNSUPPORTED",
        `${requestName(request)} without an fd (polling) is not supported`,
      );
    }
    const kind: VringFdKind =
      request === Request.SET_VRING_KICK
        ? "kick"
        : request === Request.SET_VRING_CALL
          ? "call"
          : "err";
    if (kind === "kick") this.kickGiven = true;
    const fd = fds.take(0);
    this.toRecord = (journal) => journal.setVringFd(value.index, kind, fd);
    return done(this.rings.setVringFd(value.index, kind, fd));
  }

  private async getVringBase(index: number): Promise<Reply> {
    this.checkVring(index);
    this.toRecord = (journal) => journal.stopVring(index);
    const base = await this.rings.getVringBase(index);
    return { payload: encodeVringState({ index, num: base }) };
  }

  private safely(what: string, fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.logger.error(`${what} failed`, { error: String(error) });
    }
  }
}

/** The fds of a rings state in the order restore hands them to the rings. */
function fdsOfRings(rings: RingsState): number[] {
  const fds = rings.regions.map(({ fd }) => fd);
  for (const vring of rings.vrings) {
    for (const fd of [vring.call, vring.err, vring.kick]) if (fd !== null) fds.push(fd);
  }
  return fds;
}

/** A RingControl result as a dispatch result: nothing to reply, maybe later. */
function done(result: void | Promise<void>): undefined | Promise<undefined> {
  return result instanceof Promise ? result.then(() => undefined) : undefined;
}
