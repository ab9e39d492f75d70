/**
 * EchoDevice: a small generic vhost-user device for tests, benchmarks and probes of the vhost-user
 * layer. Each chain's readable bytes are copied into its writable buffers, in order. It records what
 * the back-end asked of it so tests can assert on it, and can hold chains in flight to exercise
 * GET_VRING_BASE waiting for `whenIdle`. It knows nothing of any real device class.
 * @module
 */

import type { QueuePass, VhostUserDevice } from "../../src/vhost-user/device.js";
import type { DescriptorChain, DeviceQueue } from "../../src/virtio/queue.js";

/** Virtio feature bit numbers the echo device uses. */
export const ECHO_FEATURE_BIT = 0;
const VIRTIO_F_VERSION_1 = 32n;

export interface EchoDeviceOptions {
  numQueues?: number;
  maxQueueSize?: number;
  /** Keep popped chains in flight until `release()` (default: complete at once). */
  holdChains?: boolean;
  /** Config space served by GET_CONFIG; absent = the device has no getConfig. */
  config?: Uint8Array;
  /** Chains taken per processQueue pass before it yields (default: all there are). */
  chainsPerPass?: number;
}

interface HeldChain {
  readonly queue: DeviceQueue;
  readonly chain: DescriptorChain;
}

export class EchoDevice implements VhostUserDevice {
  readonly numQueues: number;
  readonly maxQueueSize: number;
  readonly features = 1n << BigInt(ECHO_FEATURE_BIT);
  readonly requiredFeatures = 1n << VIRTIO_F_VERSION_1;
  readonly getConfig?: (offset: number, size: number) => Uint8Array;

  /** Observations for tests. */
  readonly negotiated: bigint[] = [];
  readonly processed: number[] = [];
  resets = 0;
  chainsCompleted = 0;
  holdChains: boolean;
  readonly chainsPerPass: number;

  private readonly held: HeldChain[][];
  private readonly idleWaiters: (() => void)[][];

  constructor(options: EchoDeviceOptions = {}) {
    this.numQueues = options.numQueues ?? 1;
    this.maxQueueSize = options.maxQueueSize ?? 256;
    this.holdChains = options.holdChains ?? false;
    this.chainsPerPass = options.chainsPerPass ?? Number.POSITIVE_INFINITY;
    this.held = Array.from({ length: this.numQueues }, () => []);
    this.idleWaiters = Array.from({ length: this.numQueues }, () => []);
    const config = options.config;
    if (config !== undefined) {
      this.getConfig = (offset, size) => {
        if (offset + size > config.byteLength) throw new RangeError("config read out of range");
        return config.slice(offset, offset + size);
      };
    }
  }

  setFeatures(features: bigint): void {
    this.negotiated.push(features);
  }

  processQueue(index: number, queue: DeviceQueue): QueuePass {
    this.processed.push(index);
    let taken = 0;
    let pass: QueuePass = "drained";
    for (let chain = queue.pop(); chain !== null; chain = queue.pop()) {
      if (this.holdChains) this.held[index]?.push({ queue, chain });
      else this.complete(queue, chain);
      if (++taken === this.chainsPerPass) {
        pass = "yield";
        break;
      }
    }
    queue.notify();
    return pass;
  }

  /** Completes every held chain of every queue (holdChains mode). */
  release(): void {
    for (const [index, chains] of this.held.entries()) {
      const touched = new Set<DeviceQueue>();
      for (const { queue, chain } of chains.splice(0)) {
        this.complete(queue, chain);
        touched.add(queue);
      }
      for (const queue of touched) queue.notify();
      for (const wake of this.idleWaiters[index]?.splice(0) ?? []) wake();
    }
  }

  /** Chains currently held in flight on queue `index`. */
  heldCount(index: number): number {
    return this.held[index]?.length ?? 0;
  }

  whenIdle(index: number): Promise<void> {
    if (this.heldCount(index) === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters[index]?.push(resolve));
  }

  reset(): void {
    this.resets++;
    for (const chains of this.held) chains.length = 0;
    for (const waiters of this.idleWaiters) for (const wake of waiters.splice(0)) wake();
  }

  private complete(queue: DeviceQueue, chain: DescriptorChain): void {
    let written = 0;
    if (chain.error === null) {
      const readable = chain.descriptors.filter((d) => !d.writable);
      const input = new Uint8Array(readable.reduce((n, d) => n + d.len, 0));
      let at = 0;
      for (const d of readable) {
        queue.memory.read(d.addr, input.subarray(at, at + d.len));
        at += d.len;
      }
      for (const d of chain.descriptors) {
        if (!d.writable || written >= input.byteLength) continue;
        const part = input.subarray(written, written + d.len);
        queue.memory.write(d.addr, part);
        written += part.byteLength;
      }
    }
    queue.pushUsed(chain, written);
    this.chainsCompleted++;
  }
}
