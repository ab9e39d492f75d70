/**
 * What a vhost-user device provides to the device-agnostic back-end: features, queue count and size,
 * queue processing, and optionally its config space. A device never touches the socket, the memory
 * table or eventfds; the back-end (backend.ts) and the rings (rings.ts) own all of those.
 * @module
 */

import type { DeviceQueue } from "../virtio/queue.js";
import type { RingControl } from "./rings.js";

/**
 * How a processQueue pass ended. "drained": the device took what it could (the ring is empty, or
 * what is left waits for the driver). "yield": its per-pass work budget is spent and chains are
 * left in the ring; the back-end runs the next pass on a later turn of the event loop, so other
 * sockets and the control socket are served in between.
 */
export type QueuePass = "drained" | "yield";

/** What the protocol side needs of a device, wherever its queues run. */
export interface VhostUserDeviceInfo {
  readonly numQueues: number;
  readonly maxQueueSize: number;
  /**
   * Longest descriptor chain the device takes (buffer descriptors, indirect tables flattened);
   * longer chains reach it as malformed. Default: the queue size (the spec's limit).
   */
  readonly maxChainLength?: number;
  /** Device feature bits offered; the back-end adds the transport bits it implements. */
  readonly features: bigint;
  /** SET_FEATURES without all of these is refused. */
  readonly requiredFeatures: bigint;
  getConfig?(offset: number, size: number): Uint8Array;
}

/** A device whose queues run in the thread of its connection (LocalRings). */
export interface VhostUserDevice extends VhostUserDeviceInfo {
  /** Every negotiated bit, transport bits included (ring layout matters to devices that count slots). */
  setFeatures(features: bigint): void;
  /** Pop, handle, push used, notify. Called on a kick and when a ring becomes runnable. */
  processQueue(index: number, queue: DeviceQueue): QueuePass;
  /**
   * False while a chain of queue `index` waits for asynchronous work (a Promise): a thread that runs
   * the rings then lets its event loop turn, so that work can complete. Absent: never waits.
   */
  isIdle?(index: number): boolean;
  /** Resolves when no chain of queue `index` is in flight (GET_VRING_BASE waits for it). */
  whenIdle(index: number): Promise<void>;
  /** The connection is gone or the driver reset the device. */
  reset(): void;
}

/**
 * A device whose queues run elsewhere (a data-plane thread): the connection drives them through
 * `rings`, which the device's thread carries out.
 */
export interface RemoteDevice extends VhostUserDeviceInfo {
  readonly rings: RingControl;
}

/** A fresh device per connection; `socketIndex` tells the sockets of one daemon apart. */
export type VhostUserDeviceFactory = (socketIndex: number) => VhostUserDevice | RemoteDevice;
