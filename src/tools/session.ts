/**
 * A vi2c session with one vhost-user-i2c backend: connects with the in-repo frontend, negotiates only
 * what the backend offers and this driver supports (virtio features, protocol features; NEED_REPLY
 * only when REPLY_ACK was negotiated, as the frontend does), starts one ring in shared memfd memory
 * and runs transfers through the in-repo I2cDriver. Works with any vhost-user-i2c backend, not only
 * this project's. Also reads what a backend offers (`vi2c info`). Must not print or parse argv.
 * @module
 */

import {
  type I2cDriver,
  type I2cOp,
  startI2cQueue,
  type TransferResult,
} from "../frontend/i2c-driver.js";
import { VIRTIO_I2C_F_ZERO_LENGTH_REQUEST } from "../i2c/protocol.js";
import {
  closeQueues,
  type FrontendQueue,
  GuestRam,
  type Negotiated,
  realize,
  VhostUserFrontend,
} from "../vhost-user/frontend.js";
import { ProtocolFeature, protocolBit } from "../vhost-user/protocol.js";
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from "../virtio/features.js";
import type { I2cTransport } from "./smbus.js";

/** Virtio features this driver can run with (RING_PACKED only when asked for). */
export const SUPPORTED_FEATURES =
  VIRTIO_F_VERSION_1 |
  VHOST_USER_F_PROTOCOL_FEATURES |
  VIRTIO_F_RING_EVENT_IDX |
  VIRTIO_F_RING_INDIRECT_DESC |
  VIRTIO_F_RING_PACKED |
  VIRTIO_I2C_F_ZERO_LENGTH_REQUEST;

/** Protocol features the in-repo frontend knows how to run. */
export const SUPPORTED_PROTOCOL_FEATURES =
  protocolBit(ProtocolFeature.MQ) |
  protocolBit(ProtocolFeature.REPLY_ACK) |
  protocolBit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  protocolBit(ProtocolFeature.STATUS);

export interface SessionOptions {
  readonly packed: boolean;
  readonly timeoutMs: number;
  readonly queueSize: number;
}

/** The virtio features to ack: offered ∩ supported, packed ring only on request. */
export function chooseFeatures(offered: bigint, packed: boolean): bigint {
  const wanted = packed ? SUPPORTED_FEATURES : SUPPORTED_FEATURES & ~VIRTIO_F_RING_PACKED;
  return offered & wanted;
}

/** Guest RAM: rings plus one data slot per ring entry (the driver's 4 KiB message buffers). */
function ramSizeFor(queueSize: number): number {
  const needed = queueSize * (4096 + 64) + 64 * 1024;
  let size = 1 << 20;
  while (size < needed) size *= 2;
  return size;
}

export class BackendSession implements I2cTransport {
  readonly negotiated: Negotiated;
  /** The virtio features acked with SET_FEATURES. */
  readonly features: bigint;
  readonly #frontend: VhostUserFrontend;
  readonly #ram: GuestRam;
  readonly #queues: readonly FrontendQueue[];
  readonly #driver: I2cDriver;

  private constructor(
    frontend: VhostUserFrontend,
    ram: GuestRam,
    negotiated: Negotiated,
    features: bigint,
    queues: readonly FrontendQueue[],
    driver: I2cDriver,
  ) {
    this.#frontend = frontend;
    this.#ram = ram;
    this.negotiated = negotiated;
    this.features = features;
    this.#queues = queues;
    this.#driver = driver;
  }

  /** Connects to the backend listening on `path` and starts its request queue. */
  static async open(path: string, options: SessionOptions): Promise<BackendSession> {
    const frontend = VhostUserFrontend.connect(path, { timeoutMs: options.timeoutMs });
    let ram: GuestRam | null = null;
    try {
      ram = new GuestRam([{ guestPhysAddr: 0, size: ramSizeFor(options.queueSize) }]);
      const negotiated = await realize(frontend, {
        protocolFeatures: SUPPORTED_PROTOCOL_FEATURES,
      });
      const features = chooseFeatures(negotiated.features, options.packed);
      const { queues, driver } = await startI2cQueue(frontend, ram, {
        negotiated,
        features,
        queueSize: options.queueSize,
        timeoutMs: options.timeoutMs,
      });
      return new BackendSession(frontend, ram, negotiated, features, queues, driver);
    } catch (error) {
      frontend.close();
      ram?.close();
      throw error;
    }
  }

  /** Zero-length messages (quick write) are possible: VIRTIO_I2C_F_ZERO_LENGTH_REQUEST acked. */
  get zeroLength(): boolean {
    return (this.features & VIRTIO_I2C_F_ZERO_LENGTH_REQUEST) !== 0n;
  }

  get packed(): boolean {
    return (this.features & VIRTIO_F_RING_PACKED) !== 0n;
  }

  transfer(ops: readonly I2cOp[]): Promise<TransferResult> {
    return this.#driver.transfer(ops);
  }

  async close(): Promise<void> {
    this.#frontend.close();
    await this.#frontend.whenClosed();
    closeQueues(this.#queues);
    this.#ram.close();
  }
}

/** What a backend offers, as `vi2c info` shows it. */
export interface BackendOffer {
  readonly features: bigint;
  /** null when the backend does not offer VHOST_USER_F_PROTOCOL_FEATURES. */
  readonly protocolFeatures: bigint | null;
  readonly negotiated: Negotiated;
}

/** Asks the backend at `path` what it offers (GET_FEATURES, GET_PROTOCOL_FEATURES, queue count). */
export async function probeBackend(path: string, timeoutMs: number): Promise<BackendOffer> {
  const frontend = VhostUserFrontend.connect(path, { timeoutMs });
  try {
    const features = await frontend.getFeatures();
    const protocolFeatures =
      (features & VHOST_USER_F_PROTOCOL_FEATURES) !== 0n
        ? await frontend.getProtocolFeatures()
        : null;
    const negotiated = await realize(frontend, { protocolFeatures: SUPPORTED_PROTOCOL_FEATURES });
    return { features, protocolFeatures, negotiated };
  } finally {
    frontend.close();
    await frontend.whenClosed();
  }
}

/** Names of the feature bits `vi2c info` knows. */
export const FEATURE_NAMES: ReadonlyMap<number, string> = new Map([
  [0, "VIRTIO_I2C_F_ZERO_LENGTH_REQUEST"],
  [24, "VIRTIO_F_NOTIFY_ON_EMPTY"],
  [27, "VIRTIO_F_ANY_LAYOUT"],
  [28, "VIRTIO_F_RING_INDIRECT_DESC"],
  [29, "VIRTIO_F_RING_EVENT_IDX"],
  [30, "VHOST_USER_F_PROTOCOL_FEATURES"],
  [32, "VIRTIO_F_VERSION_1"],
  [33, "VIRTIO_F_ACCESS_PLATFORM"],
  [34, "VIRTIO_F_RING_PACKED"],
  [35, "VIRTIO_F_IN_ORDER"],
  [36, "VIRTIO_F_ORDER_PLATFORM"],
  [37, "VIRTIO_F_SR_IOV"],
  [38, "VIRTIO_F_NOTIFICATION_DATA"],
  [40, "VIRTIO_F_RING_RESET"],
]);

export const PROTOCOL_FEATURE_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(ProtocolFeature).map(([name, bit]) => [bit, name]),
);
