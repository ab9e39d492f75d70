/**
 * A test "VM": the in-repo vhost-user frontend playing QEMU 7.2 (realize, then the DRIVER_OK start
 * burst, in the observed order) with memfd guest RAM and eventfds, plus an I2cDriver on the started
 * queue playing the guest's i2c-virtio driver. Shared by the integration tests and the demo's checks.
 * Must not reach into the daemon: it only speaks vhost-user over the socket.
 * @module
 */

import { I2cDriver } from "../../src/frontend/i2c-driver.js";
import { VIRTIO_I2C_F_ZERO_LENGTH_REQUEST } from "../../src/i2c/protocol.js";
import { EventFd } from "../../src/sys/eventfd.js";
import type { UnixStream } from "../../src/sys/unix-socket.js";
import {
  closeQueues,
  type FrontendQueue,
  GuestRam,
  type Negotiated,
  realize,
  startQueues,
  stopQueues,
  VhostUserFrontend,
} from "../../src/vhost-user/frontend.js";
import { ProtocolFeature, protocolBit } from "../../src/vhost-user/protocol.js";
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
} from "../../src/virtio/features.js";

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

export interface VmmOptions {
  /** Protocol features to ack at realize (default none: run (a)). */
  protocolFeatures?: bigint;
  /** Virtio features for SET_FEATURES (default QEMU_FEATURES). */
  features?: bigint;
  /** Ring size (QEMU: 4). */
  queueSize?: number;
  /** Guest RAM size (default 1 MiB). */
  ramSize?: number;
  /** Reply and call deadline (default 5000 ms). */
  timeoutMs?: number;
}

/** The frontend, guest RAM and queue of one connected "VM", and the guest driver on it. */
export class Vmm {
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
  static async connect(path: string, options: VmmOptions = {}): Promise<Vmm> {
    const frontend = VhostUserFrontend.connect(path, { timeoutMs: options.timeoutMs ?? 5000 });
    return Vmm.#boot(frontend, options);
  }

  /** Runs QEMU's realize + start sequence over an accepted stream (client-mode tests). */
  static async over(stream: UnixStream, options: VmmOptions = {}): Promise<Vmm> {
    const frontend = VhostUserFrontend.over(stream, { timeoutMs: options.timeoutMs ?? 5000 });
    return Vmm.#boot(frontend, options);
  }

  static async #boot(frontend: VhostUserFrontend, options: VmmOptions): Promise<Vmm> {
    const ram = new GuestRam([{ guestPhysAddr: 0, size: options.ramSize ?? 1 << 20 }]);
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
      const queues = await startQueues(frontend, ram, {
        negotiated,
        features,
        queueSize: options.queueSize ?? 4,
      });
      const queue = queues[0];
      if (queue === undefined) throw new Error("no queue started");
      const driver = new I2cDriver(queue, ram, {
        indirect: (features & VIRTIO_F_RING_INDIRECT_DESC) !== 0n,
        timeoutMs: options.timeoutMs ?? 5000,
      });
      return new Vmm(frontend, ram, negotiated, features, queues, driver, realizeFds);
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
  async restartOn(frontend: VhostUserFrontend): Promise<Vmm> {
    frontend.replyAck =
      (this.negotiated.protocolFeatures & protocolBit(ProtocolFeature.REPLY_ACK)) !== 0n;
    await startQueues(frontend, this.ram, {
      negotiated: this.negotiated,
      features: this.features,
      queues: this.queues,
      queueSize: this.queues[0]?.driver.size ?? 4,
    });
    return new Vmm(
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
