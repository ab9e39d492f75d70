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
        return this.resetDevice();
      case Request.GET_QUEUE_NUM:
        return { payload: encodeU64(this.device.numQueues) };
      case Request.GET_MAX_MEM_SLOTS:
        return { payload: encodeU64(this.options.maxMemSlots ?? MAX_MEM_SLOTS) };
      case Request.SET_MEM_TABLE: {
        const regions = payloadAs(payload, "memTable");
        const taken = regions.map((_, i) => fds.take(i));
        return done(this.rings.setMemTable(regions, taken));
      }
      case Request.ADD_MEM_REG:
        return done(this.rings.addMemRegion(payloadAs(payload, "memRegion"), fds.take(0)));
      case Request.REM_MEM_REG:
        return done(this.rings.removeMemRegion(payloadAs(payload, "memRegion")));
      case Request.SET_VRING_NUM:
        return this.setVringNum(payloadAs(payload, "vringState"));
      case Request.SET_VRING_ADDR: {
        const addr: VringAddr = payloadAs(payload, "vringAddr");
        this.checkVring(addr.index);
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
    return done(this.rings.setVringFd(value.index, kind, fds.take(0)));
  }

  private async getVringBase(index: number): Promise<Reply> {
    this.checkVring(index);
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

/** A RingControl result as a dispatch result: nothing to reply, maybe later. */
function done(result: void | Promise<void>): undefined | Promise<undefined> {
  return result instanceof Promise ? result.then(() => undefined) : undefined;
}
