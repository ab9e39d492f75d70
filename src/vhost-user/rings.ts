/**
 * The data plane of one front-end connection: guest memory mappings, the vrings (kick/call/err fds,
 * queue state) and the device's queue processing. BackendConnection decides what the front-end may
 * do (validation, protocol state) and tells a RingControl what to change; LocalRings carries it out
 * in the thread it lives in, waiting for kicks through a RingScheduler: libuv on the main thread
 * (uvScheduler), a blocking epoll loop in a data-plane thread (data-plane-thread.ts).
 * Must not: speak the vhost-user protocol (backend.ts) or know any device class.
 * @module
 */

import { type Logger, silentLogger } from "../log.js";
import { EventFd } from "../sys/eventfd.js";
import { closeFdQuietly } from "../sys/fd.js";
import { FdWatcher } from "../sys/fd-watcher.js";
import { Mapping } from "../sys/mapping.js";
import { fileSeals, SEAL } from "../sys/memfd.js";
import {
  VIRTIO_F_NOTIFY_ON_EMPTY,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
} from "../virtio/features.js";
import { GuestMemory, type RegionBacking } from "../virtio/guest-memory.js";
import {
  PACKED_DESC_FLAGS,
  PackedQueue,
  packedRingSizes,
  recoverUsedPosition,
} from "../virtio/packed-queue.js";
import { VirtqueueError } from "../virtio/queue.js";
import { DESCRIPTOR_SIZE } from "../virtio/queue-base.js";
import { SplitQueue, splitRingSizes, USED_IDX } from "../virtio/split-queue.js";
import type { MemRegion, VringAddr } from "./codec.js";
import type { VhostUserDevice } from "./device.js";
import { BackendError } from "./errors.js";
import { POSITION_LOG_BYTES } from "./journal.js";
import { MAX_MEM_SLOTS, VHOST_USER_F_PROTOCOL_FEATURES } from "./protocol.js";
import type { RingsState } from "./state.js";

const PROTOCOL_FEATURES_BIT = 1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES);

/** Which eventfd of a vring a SET_VRING_KICK/CALL/ERR gives. */
export type VringFdKind = "kick" | "call" | "err";

/**
 * What the back-end asks of a connection's rings, already validated (indexes in range, sizes the
 * device takes). Every method may complete later (a data-plane thread answers by message): the
 * back-end waits for each before it reads the next request. fds passed in are the callee's.
 * Failures are BackendErrors (EINVAL: the request is refused; EPROTO: the connection must close).
 */
export interface RingControl {
  /** Every negotiated virtio feature bit (transport bits included); also tells the device. */
  setFeatures(features: bigint): void | Promise<void>;
  setMemTable(regions: readonly MemRegion[], fds: readonly number[]): void | Promise<void>;
  addMemRegion(region: MemRegion, fd: number): void | Promise<void>;
  removeMemRegion(region: MemRegion): void | Promise<void>;
  setVringSize(index: number, size: number): void | Promise<void>;
  setVringAddr(addr: VringAddr): void | Promise<void>;
  setVringBase(index: number, base: number): void | Promise<void>;
  setVringFd(index: number, kind: VringFdKind, fd: number): void | Promise<void>;
  setVringEnabled(index: number, enabled: boolean): void | Promise<void>;
  /** Stops the ring, waits for its chains in flight, returns the base (GET_VRING_BASE). */
  getVringBase(index: number): number | Promise<number>;
  /** Every ring stopped and forgotten, the device reset (RESET_OWNER, status 0). */
  reset(): void | Promise<void>;
  /**
   * For a handover to another process: stops every ring, waits for the chains in flight, and gives
   * up the state with its fds (open, now the caller's). The rings are closed after it, the device
   * reset; nothing the front-end shares is touched (no used element, no notification).
   */
  handOver(): RingsState | Promise<RingsState>;
  /**
   * Packed rings log their used position in the first POSITION_LOG_BYTES of this file (the journal,
   * journal.ts), one 32-bit word per vring, so a restart after a crash can recover it. The rings own
   * the fd.
   */
  setPositionLog(fd: number): void | Promise<void>;
  /**
   * The ring's position is not known (a restart after a crash): when it starts, it goes on from the
   * used position the ring shows (split: used->idx; packed: the position log and the descriptor
   * flags), so chains taken but not completed before the crash run again. Devices that complete
   * chains in the order they took them (every virtio-i2c device: the spec says so) lose none.
   */
  recoverVringBase(index: number): void | Promise<void>;
  /** The connection is gone: rings stopped, fds closed, memory unmapped, the device reset. */
  close(): void;
}

/** How the rings wait for kicks and schedule the next pass of a device that yielded. */
export interface RingScheduler {
  /** Calls `onReadable` whenever `fd` is readable (level-triggered) until the watch is closed. */
  watch(fd: number, onReadable: () => void): { close(): void };
  /** Runs `fn` once, after what is ready now (other rings, the control plane) was served. */
  later(fn: () => void): { cancel(): void };
  /**
   * A device left work waiting for a Promise: the thread's event loop must run after what is ready
   * now (a thread that blocks in epoll otherwise waits until its next wake-up). Absent: the loop
   * turns anyway.
   */
  turnLoop?(): void;
}

/** The main thread's scheduler: libuv poll handles and setImmediate. */
export const uvScheduler: RingScheduler = {
  watch(fd, onReadable) {
    const watcher = new FdWatcher(fd, onReadable);
    watcher.start();
    return watcher;
  },
  later(fn) {
    const immediate = setImmediate(fn);
    return { cancel: () => clearImmediate(immediate) };
  },
};

export interface LocalRingsOptions {
  logger?: Logger;
  scheduler?: RingScheduler;
  /** Most memory regions held at once (ADD_MEM_REG beyond it is refused). Default MAX_MEM_SLOTS. */
  maxMemSlots?: number;
  /**
   * Map guest memory whose fd is not sealed against shrinking (F_SEAL_SHRINK). Off by default: a
   * peer that shrinks such a file under our mapping makes the next access raise SIGBUS, which ends
   * the whole process and every other peer's service with it.
   */
  allowUnsealedMemory?: boolean;
}

interface MappedRegion {
  readonly region: MemRegion;
  readonly mapping: Mapping;
  /** Kept open for a handover; closed with the mapping. */
  readonly fd: number;
}

function unmapRegion(m: MappedRegion): void {
  m.mapping.close();
  closeFdQuietly(m.fd);
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
  watch: { close(): void } | null = null;
  /** The next pass of a device that yielded (its budget spent with chains left in the ring). */
  nextPass: { cancel(): void } | null = null;
  /** The base is to be recovered from the ring when it starts (recoverVringBase). */
  recover = false;

  constructor(index: number) {
    this.index = index;
  }
}

/** RingControl carried out in the calling thread. */
export class LocalRings implements RingControl {
  readonly #device: VhostUserDevice;
  readonly #logger: Logger;
  readonly #scheduler: RingScheduler;
  readonly #options: LocalRingsOptions;
  readonly #vrings: Vring[];
  #regions: MappedRegion[] = [];
  #memory: GuestMemory | null = null;
  #features = 0n;
  #closed = false;
  /** The position log (setPositionLog): the journal's first page, and a view of it. */
  #positionLog: Mapping | null = null;
  #positionLogView: DataView | null = null;

  constructor(device: VhostUserDevice, options: LocalRingsOptions = {}) {
    this.#device = device;
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
    this.#scheduler = options.scheduler ?? uvScheduler;
    this.#vrings = Array.from({ length: device.numQueues }, (_, i) => new Vring(i));
  }

  setFeatures(features: bigint): void {
    this.#features = features;
    this.#device.setFeatures(features);
    for (const vring of this.#vrings) this.#updateRing(vring);
  }

  // -------------------------------------------------------------------------------------------
  // Memory

  setMemTable(regions: readonly MemRegion[], fds: readonly number[]): void {
    const mapped: MappedRegion[] = [];
    let next = 0;
    try {
      for (; next < regions.length; next++) {
        mapped.push(this.#mapRegion(regions[next] as MemRegion, fds[next] as number));
      }
      this.#replaceMemory(mapped);
    } catch (error) {
      for (const m of mapped) unmapRegion(m);
      for (let i = next + 1; i < fds.length; i++) closeFdQuietly(fds[i] as number);
      throw asRequestFailure(error, "SET_MEM_TABLE");
    }
    for (let i = regions.length; i < fds.length; i++) closeFdQuietly(fds[i] as number);
    const old = this.#regions;
    this.#regions = mapped;
    for (const m of old) unmapRegion(m);
  }

  addMemRegion(region: MemRegion, fd: number): void {
    if (this.#regions.length >= (this.#options.maxMemSlots ?? MAX_MEM_SLOTS)) {
      closeFdQuietly(fd);
      throw new BackendError("EINVAL", "ADD_MEM_REG: no free memory slot");
    }
    let added: MappedRegion | undefined;
    try {
      added = this.#mapRegion(region, fd);
      this.#replaceMemory([...this.#regions, added]);
    } catch (error) {
      if (added !== undefined) unmapRegion(added);
      throw asRequestFailure(error, "ADD_MEM_REG");
    }
    this.#regions = [...this.#regions, added];
  }

  removeMemRegion(region: MemRegion): void {
    const victim = this.#regions.find(
      (m) =>
        m.region.guestPhysAddr === region.guestPhysAddr &&
        m.region.userAddr === region.userAddr &&
        m.region.size === region.size,
    );
    if (victim === undefined) throw new BackendError("EINVAL", "REM_MEM_REG: no such region");
    const kept = this.#regions.filter((m) => m !== victim);
    this.#replaceMemory(kept);
    this.#regions = kept;
    unmapRegion(victim);
  }

  /**
   * Maps `size + mmap_offset` bytes from file offset 0 (as libvhost-user does); the fd stays open
   * with the mapping (a handover passes it on), and is closed when the mapping fails.
   * The seal is checked before the size: seals are never removed, so a file sealed against shrinking
   * keeps the size Mapping.map checks for as long as we map it.
   */
  #mapRegion(region: MemRegion, fd: number): MappedRegion {
    try {
      if (!this.#options.allowUnsealedMemory && (fileSeals(fd) & SEAL.SHRINK) === 0) {
        throw new BackendError(
          "EINVAL",
          `guest memory at 0x${region.guestPhysAddr.toString(16)}: its fd is not sealed against shrinking (F_SEAL_SHRINK; QEMU: memory-backend-memfd, seal=on)`,
        );
      }
      return { region, mapping: Mapping.map(fd, 0, region.mmapOffset + region.size, true), fd };
    } catch (error) {
      closeFdQuietly(fd);
      throw error;
    }
  }

  /** Installs a new GuestMemory over `mapped` and moves running queues onto it. */
  #replaceMemory(mapped: readonly MappedRegion[]): void {
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
    this.#memory = memory;
    for (const vring of this.#vrings) {
      const queue = vring.queue;
      if (queue === null) continue;
      if (memory === null) {
        vring.base = vringBase(queue);
        this.#stopQueue(vring);
        continue;
      }
      try {
        // The same queue object moves, so chains in flight complete into the new mappings.
        queue.remap(memory);
      } catch (error) {
        this.#logger.error("vring not in the new memory table", {
          index: vring.index,
          error: String(error),
        });
        vring.broken = true;
        this.#stopQueue(vring);
      }
    }
    for (const vring of this.#vrings) this.#updateRing(vring);
  }

  #unmapMemory(): void {
    this.#memory = null;
    for (const m of this.#regions) unmapRegion(m);
    this.#regions = [];
  }

  // -------------------------------------------------------------------------------------------
  // Vrings

  #vring(index: number): Vring {
    const vring = this.#vrings[index];
    if (vring === undefined) throw new BackendError("EPROTO", `vring index ${index} out of range`);
    return vring;
  }

  setVringSize(index: number, size: number): void {
    this.#vring(index).size = size;
  }

  setVringAddr(addr: VringAddr): void {
    this.#vring(addr.index).addr = addr;
  }

  setVringBase(index: number, base: number): void {
    const vring = this.#vring(index);
    vring.base = base;
    vring.recover = false;
  }

  recoverVringBase(index: number): void {
    this.#vring(index).recover = true;
  }

  setPositionLog(fd: number): void {
    try {
      const mapping = Mapping.map(fd, 0, POSITION_LOG_BYTES, true);
      this.#positionLog?.close();
      this.#positionLog = mapping;
      this.#positionLogView = new DataView(mapping.view(0, POSITION_LOG_BYTES));
    } finally {
      closeFdQuietly(fd);
    }
  }

  /** The position log word of `vring` (null without a log). */
  #usedLog(vring: Vring): { view: DataView; offset: number } | null {
    const view = this.#positionLogView;
    if (view === null || (vring.index + 1) * 4 > POSITION_LOG_BYTES) return null;
    return { view, offset: vring.index * 4 };
  }

  setVringFd(index: number, kind: VringFdKind, fd: number): void {
    const vring = this.#vring(index);
    const eventFd = EventFd.adopt(fd);
    if (kind === "call") {
      vring.call?.close();
      vring.call = eventFd;
      return;
    }
    if (kind === "err") {
      vring.err?.close();
      vring.err = eventFd;
      return;
    }
    // SET_VRING_KICK starts the ring (spec: "ring is started ... after receiving SET_VRING_KICK").
    this.#stopQueue(vring);
    vring.kick?.close();
    vring.kick = eventFd;
    vring.started = true;
    vring.broken = false;
    this.#updateRing(vring);
  }

  setVringEnabled(index: number, enabled: boolean): void {
    const vring = this.#vring(index);
    vring.enabled = enabled;
    this.#updateRing(vring);
  }

  async getVringBase(index: number): Promise<number> {
    const vring = this.#vring(index);
    // Stop the ring first so no kick adds work, then let in-flight chains complete.
    if (vring.queue !== null) vring.base = vringBase(vring.queue);
    vring.started = false;
    this.#stopWatching(vring);
    await this.#device.whenIdle(index);
    if (vring.queue !== null) vring.base = vringBase(vring.queue);
    this.#stopQueue(vring);
    vring.kick?.close();
    vring.kick = null;
    return vring.base;
  }

  reset(): void {
    this.#resetRings();
    this.#features = 0n;
    this.#safely("device reset", () => this.#device.reset());
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#teardown();
  }

  /** Rings stopped and their fds closed, memory and the position log unmapped, the device reset. */
  #teardown(): void {
    this.#resetRings();
    this.#unmapMemory();
    this.#positionLog?.close();
    this.#positionLog = null;
    this.#positionLogView = null;
    this.#safely("device reset", () => this.#device.reset());
  }

  async handOver(): Promise<RingsState> {
    if (this.#closed) throw new BackendError("EINVAL", "the rings are closed");
    // No kick and no scheduled pass from here on; chains in flight finish into the rings.
    this.#closed = true;
    for (const vring of this.#vrings) this.#stopWatching(vring);
    await Promise.all(this.#vrings.map((vring) => this.#device.whenIdle(vring.index)));
    const vrings = this.#vrings.map((vring) => {
      if (vring.queue !== null) vring.base = vringBase(vring.queue);
      // A broken ring stays stopped until the front-end starts it again: it goes without its kick.
      const started = vring.started && !vring.broken;
      const state = {
        index: vring.index,
        size: vring.size,
        addr: vring.addr,
        base: vring.base,
        enabled: vring.enabled,
        kick: started ? (vring.kick?.release() ?? null) : null,
        call: vring.call?.release() ?? null,
        err: vring.err?.release() ?? null,
      };
      return state;
    });
    // The memory fds go with the state: unmapped here, not closed.
    const regions = this.#regions.map((m) => {
      m.mapping.close();
      return { region: m.region, fd: m.fd };
    });
    this.#regions = [];
    this.#teardown();
    return { features: this.#features, regions, vrings };
  }

  /** RING_PACKED negotiated: packed rings. */
  get #packed(): boolean {
    return (this.#features & VIRTIO_F_RING_PACKED) !== 0n;
  }

  /** Whether the ring may be processed: started, fully described, memory mapped, enabled. */
  #isRunnable(vring: Vring): boolean {
    const enabled = (this.#features & PROTOCOL_FEATURES_BIT) === 0n || vring.enabled;
    return (
      !this.#closed &&
      vring.started &&
      !vring.broken &&
      enabled &&
      vring.kick !== null &&
      vring.addr !== null &&
      vring.size > 0 &&
      this.#memory !== null
    );
  }

  /** Brings the ring's queue and kick watch in line with its state; processes it when it comes up. */
  #updateRing(vring: Vring): void {
    if (!this.#isRunnable(vring)) {
      this.#stopWatching(vring);
      return;
    }
    if (vring.queue === null) {
      try {
        const recovered = vring.recover;
        vring.queue = this.#createQueue(vring);
        vring.recover = false;
        if (recovered) {
          this.#logger.info("vring resumed where the ring stands", {
            index: vring.index,
            base: vringBase(vring.queue),
          });
          // The process before may have completed chains without telling the driver.
          this.#signal(vring);
        }
      } catch (error) {
        vring.broken = true;
        this.#logger.error("cannot start vring", { index: vring.index, error: String(error) });
        return;
      }
    }
    if (vring.watch === null && vring.kick !== null) {
      const kick = vring.kick;
      vring.watch = this.#scheduler.watch(kick.fd, () => {
        try {
          kick.read();
        } catch (error) {
          // Not an eventfd after all (a pipe with a partial word, a socket): stop listening to it.
          this.#logger.error("kick fd unreadable, vring stopped", {
            index: vring.index,
            error: String(error),
          });
          vring.broken = true;
          this.#stopWatching(vring);
          return;
        }
        this.#processRing(vring);
      });
    }
    // A kick may have been sent before the ring came up (e.g. before SET_VRING_ENABLE): look now.
    this.#processRing(vring);
  }

  #createQueue(vring: Vring): SplitQueue | PackedQueue {
    const memory = this.#memory as GuestMemory;
    const addr = vring.addr as VringAddr;
    const size = vring.size;
    const eventIdx = (this.#features & VIRTIO_F_RING_EVENT_IDX) !== 0n;
    if (this.#packed) return this.#createPackedQueue(vring, memory, addr, eventIdx);
    const sizes = splitRingSizes(size, eventIdx);
    // Ring addresses are front-end virtual addresses; translate now, since memory may come last.
    const addresses = {
      desc: memory.uvaToGpa(addr.descUser, sizes.desc),
      avail: memory.uvaToGpa(addr.availUser, sizes.avail),
      used: memory.uvaToGpa(addr.usedUser, sizes.used),
    };
    const usedIndex = memory.readU16(addresses.used + USED_IDX);
    return new SplitQueue(memory, size, addresses, {
      eventIdx,
      indirect: (this.#features & VIRTIO_F_RING_INDIRECT_DESC) !== 0n,
      notifyOnEmpty: (this.#features & VIRTIO_F_NOTIFY_ON_EMPTY) !== 0n,
      maxChainLength: this.#device.maxChainLength,
      // Recovering: the chains taken and not completed run again (devices complete in order).
      lastAvailIndex: vring.recover ? usedIndex : vring.base,
      // Continue from the used index the ring holds (it equals the base unless chains were lost).
      usedIndex,
      notify: () => this.#signal(vring),
    });
  }

  /**
   * A packed ring: SET_VRING_ADDR's desc/avail/used are the descriptor ring, the driver area (driver
   * event suppression) and the device area. The base's low half is the avail position; its high half
   * the used position (QEMU 7.2 starts with 0x80008000). A high half of 0 means a front-end that sends
   * the avail position only: at a clean stop nothing is in flight, so the used position is the same.
   */
  #createPackedQueue(
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
    let avail = vring.base & 0xffff;
    let used = vring.base >>> 16;
    const usedLog = this.#usedLog(vring);
    if (vring.recover) {
      if (usedLog === null) {
        throw new BackendError(
          "EINVAL",
          "a packed ring's position cannot be recovered without its log",
        );
      }
      // Chains taken and not completed run again (devices complete in order).
      used = recoverUsedPosition(usedLog.view.getUint32(usedLog.offset, true), vring.size, (i) =>
        memory.readU16(addresses.desc + i * DESCRIPTOR_SIZE + PACKED_DESC_FLAGS),
      );
      avail = used;
    }
    return new PackedQueue(memory, vring.size, addresses, {
      eventIdx,
      indirect: (this.#features & VIRTIO_F_RING_INDIRECT_DESC) !== 0n,
      notifyOnEmpty: (this.#features & VIRTIO_F_NOTIFY_ON_EMPTY) !== 0n,
      maxChainLength: this.#device.maxChainLength,
      lastAvailIndex: avail,
      usedIndex: used === 0 ? avail : used,
      ...(usedLog !== null && { usedLog }),
      notify: () => this.#signal(vring),
    });
  }

  #signal(vring: Vring): void {
    try {
      vring.call?.write(1);
    } catch (error) {
      this.#logger.warn("call eventfd write failed", { index: vring.index, error: String(error) });
    }
  }

  #processRing(vring: Vring): void {
    const queue = vring.queue;
    if (queue === null || !this.#isRunnable(vring)) return;
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
        if (this.#device.processQueue(vring.index, queue) === "yield") {
          // Its budget is spent: other rings and the control plane run before its next pass.
          // Notifications stay off meanwhile, since that pass looks at the ring anyway.
          vring.nextPass = this.#scheduler.later(() => {
            vring.nextPass = null;
            this.#processRing(vring);
          });
          return;
        }
        const tookSome = vringBase(queue) !== before;
        if (!queue.enableNotifications()) break;
        if (tookSome) stayEnabled = false;
        else if (stayEnabled) break;
        else stayEnabled = true;
      }
      if (this.#device.isIdle?.(vring.index) === false) this.#scheduler.turnLoop?.();
    } catch (error) {
      const why = error instanceof VirtqueueError ? "broken ring" : "device failure";
      this.#logger.error(`vring stopped: ${why}`, { index: vring.index, error: String(error) });
      vring.broken = true;
      this.#stopWatching(vring);
    }
  }

  #stopWatching(vring: Vring): void {
    vring.watch?.close();
    vring.watch = null;
    vring.nextPass?.cancel();
    vring.nextPass = null;
  }

  #stopQueue(vring: Vring): void {
    this.#stopWatching(vring);
    vring.queue = null;
  }

  #resetRings(): void {
    for (const vring of this.#vrings) {
      this.#stopQueue(vring);
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

  #safely(what: string, fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.#logger.error(`${what} failed`, { error: String(error) });
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

function asRequestFailure(error: unknown, what: string): BackendError {
  if (error instanceof BackendError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new BackendError("EINVAL", `${what}: ${message}`, { cause: error });
}
