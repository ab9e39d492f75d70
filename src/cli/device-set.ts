/**
 * A device set's host in its data-plane thread (loaded there by DataPlane): it builds the set's
 * device generations (host adapters opened and locked here, transferring synchronously in this
 * thread; emulated chips and users' model modules live here), makes the VirtioI2cDevice of each
 * connection from the generation in use, answers the control socket's chip requests, saves its chips'
 * states for a successor process and restores the states a predecessor saved, and sends finished
 * transfers to the main thread's Observability in batches.
 * A generation is closed once a newer one is in use and its last connection has ended (SIGHUP).
 * Must not: serve sockets, read the configuration file, or write trace and capture files (the main
 * thread does all of that).
 * @module
 */

import {
  type BuiltSockets,
  buildSocketBuses,
  type DeviceDirectory,
  devicesOf,
  ResourcePool,
  type SocketDeviceLists,
} from "../config/devices.js";
import { reasonOf } from "../config/errors.js";
import { loadModules } from "../config/modules.js";
import { answerChipRequest, describeChips } from "../control/chip-host.js";
import type { ChipDirectory, ChipReply, ChipRequest } from "../control/chips.js";
import { hex } from "../i2c/bus.js";
import type { TransferObserver, TransferRecord } from "../i2c/observer.js";
import { VirtioI2cDevice } from "../i2c/virtio-i2c.js";
import { type Logger, logSuppression, rateLimitedLogger } from "../log.js";
import type { DataPlaneContext, DataPlaneHost } from "../vhost-user/data-plane-thread.js";
import type { VhostUserDevice } from "../vhost-user/device.js";

export interface DeviceSetInit {
  /** "set0", "set1", ...: names the thread's log lines. */
  readonly name: string;
  /** The sockets (guests) this set serves. */
  readonly sockets: readonly number[];
  /** Lock directory for host devices (undefined: no locks, tests of other layers). */
  readonly lockDir: string | undefined;
  /**
   * Send each finished transfer to the main thread (tracing, capture or counters are on): the
   * batches in flight and the records left out are counted in it (TRANSFER_FLOW indexes), so a main
   * thread that falls behind bounds what waits for it. Null: nobody observes.
   */
  readonly transferFlow: Int32Array | null;
}

/** One emulated chip's state (SimDevice.saveState) for a successor process: plain JSON data. */
export interface SavedChip {
  /** The chip's identity in its configuration (RegisteredDevice.key): only a chip of that key takes it. */
  readonly key: string;
  readonly model: string;
  readonly address: number;
  readonly state: unknown;
}

/**
 * Saved chips by chip id: the thread's own ("1"), or qualified by the set ("0:1") as the control
 * socket names them. An id only names the chip in the process that saved it; the key finds the chip
 * again in another.
 */
export type SavedChips = Readonly<Record<string, SavedChip>>;

export type DeviceSetRequest =
  /**
   * Builds a generation of this set's devices from the lists (nothing is used until "use"); a chip
   * whose key has a state in `restore` takes it (a refusal is logged: the chip starts afresh).
   */
  | {
      readonly kind: "build";
      readonly generation: number;
      readonly lists: SocketDeviceLists;
      readonly baseDir: string;
      readonly socketCount: number;
      readonly restore?: SavedChips;
    }
  /**
   * Every chip's state (the generation in use), by this thread's chip id: asked once no ring runs
   * and the control socket is gone. A chip that cannot save is logged and left out (it starts afresh
   * in the successor).
   */
  | { readonly kind: "saveChips" }
  /** New connections get `generation`; the one before closes once its connections have ended. */
  | { readonly kind: "use"; readonly generation: number }
  /** A generation built but never used (another set failed to build): closed now. */
  | { readonly kind: "discard"; readonly generation: number }
  | { readonly kind: "chips"; readonly request: ChipRequest }
  /** Resolves once no transfer is in flight on any connection of this set. */
  | { readonly kind: "idle" }
  /** Fails transfers still running (shutdown). */
  | { readonly kind: "abort" }
  /** This thread's count of rate-limited log lines left out (LogSuppression snapshot). */
  | { readonly kind: "logSuppressed" };

/** What a build tells the main thread. */
export interface DeviceSetBuild {
  readonly chips: ChipDirectory;
  /** Backing files open in this set (canonical paths): no file may be open in two sets. */
  readonly backingFiles: readonly string[];
  /** The backing files the new generation's chips hold, with each chip's label. */
  readonly backingClaims: BuiltSockets["backingClaims"];
  /** Per served socket: the guest addresses it reaches and the buses behind them. */
  readonly guests: readonly { socket: number; addresses: number[]; buses: string[] }[];
  /** The keys of the saved states (`restore`) a chip of this build was given, taken or refused. */
  readonly statesMatched: readonly string[];
}

/** A batch of finished transfers (an event to the main thread). */
export interface TransferBatch {
  readonly kind: "transfers";
  readonly records: readonly TransferRecord[];
}

/** Where DeviceSetInit.transferFlow counts: batches sent and not yet handled, records left out. */
export const TRANSFER_FLOW = { batchesInFlight: 0, recordsDropped: 1, length: 2 } as const;

/** Most transfer records held between two flushes: beyond it they are counted, not kept. */
const MAX_BATCH = 4096;
/** Most batches waiting for the main thread: while it has these, records wait (then are dropped). */
const MAX_BATCHES_IN_FLIGHT = 16;

interface Generation {
  readonly built: BuiltSockets;
  connections: number;
  retired: boolean;
}

/**
 * Copies each record's data out of guest memory and sends the records in one message per flush, never
 * more than MAX_BATCHES_IN_FLIGHT messages ahead of the main thread: the data plane never waits for
 * it, and what it cannot keep is counted (stats: unobservedTransfers).
 */
class ForwardingObserver implements TransferObserver {
  #records: TransferRecord[] = [];
  readonly #emit: (event: unknown) => void;
  readonly #flow: Int32Array;

  constructor(emit: (event: unknown) => void, flow: Int32Array) {
    this.#emit = emit;
    this.#flow = flow;
  }

  transferDone(record: TransferRecord): void {
    if (this.#records.length >= MAX_BATCH) {
      Atomics.add(this.#flow, TRANSFER_FLOW.recordsDropped, 1);
      return;
    }
    // The data may be views of guest memory: only copies leave the thread.
    this.#records.push({ ...record, data: record.data.map((bytes) => bytes.slice()) });
  }

  flush(): void {
    if (this.#records.length === 0) return;
    if (Atomics.load(this.#flow, TRANSFER_FLOW.batchesInFlight) >= MAX_BATCHES_IN_FLIGHT) return;
    const batch: TransferBatch = { kind: "transfers", records: this.#records };
    this.#records = [];
    Atomics.add(this.#flow, TRANSFER_FLOW.batchesInFlight, 1);
    this.#emit(batch);
  }
}

export async function createDataPlaneHost(
  init: unknown,
  context: DataPlaneContext,
): Promise<DataPlaneHost> {
  return new DeviceSetHost(init as DeviceSetInit, context);
}

class DeviceSetHost implements DataPlaneHost {
  readonly #init: DeviceSetInit;
  readonly #logger: Logger;
  readonly #loopWakeFd: number;
  readonly #pool: ResourcePool;
  readonly #generations = new Map<number, Generation>();
  #current: Generation | null = null;
  readonly #sessions = new Map<VhostUserDevice, Generation>();
  readonly #observer: ForwardingObserver | null;
  /** One log budget per guest, kept across its connections (reconnecting buys no new lines). */
  readonly #guestLoggers = new Map<number, Logger>();

  constructor(init: DeviceSetInit, context: DataPlaneContext) {
    this.#init = init;
    this.#logger = context.logger;
    this.#loopWakeFd = context.loopWakeFd;
    this.#pool = new ResourcePool(init.lockDir);
    this.#observer =
      init.transferFlow === null ? null : new ForwardingObserver(context.emit, init.transferFlow);
  }

  createDevice(socket: number): VhostUserDevice {
    const generation = this.#current;
    const addressMap = generation?.built.addressMaps[socket];
    if (generation === null || addressMap === undefined) {
      throw new Error(`no devices for socket ${socket} in this device set`);
    }
    const logger = this.#logger.child(`socket${socket}`);
    let guestLogger = this.#guestLoggers.get(socket);
    if (guestLogger === undefined) {
      guestLogger = rateLimitedLogger(logger, `socket${socket}`);
      this.#guestLoggers.set(socket, guestLogger);
    }
    const device = new VirtioI2cDevice(
      addressMap,
      logger,
      this.#observer === null ? null : { observer: this.#observer, guest: socket },
      guestLogger,
    );
    generation.connections++;
    this.#sessions.set(device, generation);
    return device;
  }

  releaseDevice(device: VhostUserDevice): void {
    const generation = this.#sessions.get(device);
    if (generation === undefined) return;
    this.#sessions.delete(device);
    generation.connections--;
    this.#closeIfUnused(generation);
  }

  request(request: unknown): unknown {
    const r = request as DeviceSetRequest;
    switch (r.kind) {
      case "build":
        return this.#build(r.generation, r.lists, r.baseDir, r.socketCount, r.restore);
      case "saveChips":
        return this.#saveChips();
      case "use":
        return this.#use(r.generation);
      case "discard": {
        const generation = this.#generations.get(r.generation);
        if (generation !== undefined && generation !== this.#current) {
          this.#generations.delete(r.generation);
          generation.built.close();
        }
        return undefined;
      }
      case "chips":
        return this.#chips(r.request);
      case "idle":
        return Promise.all([...this.#sessions.keys()].map((device) => device.whenIdle(0))).then(
          () => undefined,
        );
      case "logSuppressed":
        return logSuppression.snapshot();
      case "abort":
        for (const generation of this.#generations.values()) {
          for (const bus of generation.built.guards) bus.abort();
        }
        return undefined;
    }
  }

  flush(): void {
    this.#observer?.flush();
  }

  /** A stall or clock stretching completes on a timer: the thread's loop must keep turning. */
  waitsForTimers(): boolean {
    for (const generation of this.#generations.values()) {
      if (generation.built.waitsForTimers()) return true;
    }
    return false;
  }

  close(): void {
    for (const generation of this.#generations.values()) generation.built.close();
    this.#generations.clear();
    this.#current = null;
    this.#observer?.flush();
  }

  async #build(
    id: number,
    lists: SocketDeviceLists,
    baseDir: string,
    socketCount: number,
    restore: SavedChips | undefined,
  ): Promise<DeviceSetBuild> {
    const served = this.#init.sockets;
    const modules = await loadModules(devicesOf(lists, served), baseDir);
    const built = buildSocketBuses(
      lists,
      socketCount,
      {
        logger: this.#logger,
        baseDir,
        modules,
        pool: this.#pool,
        // Fast adapters run inline in this thread, slow ones on their I/O thread (which wakes it).
        hostCompletion: { mode: "adaptive", loopWakeFd: this.#loopWakeFd },
      },
      served,
    );
    this.#generations.set(id, { built, connections: 0, retired: false });
    const statesMatched = restore === undefined ? [] : this.#restoreChips(built.directory, restore);
    return {
      chips: describeChips(built.directory),
      backingFiles: this.#pool.backingFiles,
      backingClaims: built.backingClaims,
      guests: served.map((socket) => {
        const map = built.addressMaps[socket];
        return {
          socket,
          addresses: map?.addresses() ?? [],
          buses: map?.buses().map((bus) => bus.name) ?? [],
        };
      }),
      statesMatched,
    };
  }

  /** Gives each chip just built the state saved for its key; returns the keys given. */
  #restoreChips(directory: DeviceDirectory, restore: SavedChips): string[] {
    const byKey = new Map(Object.values(restore).map((chip) => [chip.key, chip]));
    const matched: string[] = [];
    for (const { key, device, model, address } of directory) {
      const saved = byKey.get(key);
      if (saved === undefined) continue;
      matched.push(key);
      const chip = { model, address: hex(address) };
      if (typeof device.restoreState !== "function") {
        this.#logger.warn("the emulated device has no restoreState: it starts afresh", chip);
        continue;
      }
      try {
        device.restoreState(saved.state);
        this.#logger.debug("restored the emulated device's state", chip);
      } catch (error) {
        this.#logger.warn("the emulated device refused its saved state: it starts afresh", {
          ...chip,
          error: reasonOf(error),
        });
      }
    }
    return matched;
  }

  #saveChips(): SavedChips {
    const directory = this.#current?.built.directory ?? [];
    const ids = describeChips(directory).map((chip) => chip.id);
    const saved: Record<string, SavedChip> = {};
    directory.forEach(({ key, device, model, address }, i) => {
      const chip = { model, address: hex(address) };
      if (typeof device.saveState !== "function") {
        this.#logger.warn(
          "the emulated device has no saveState: it starts afresh in the successor",
          chip,
        );
        return;
      }
      try {
        // JSON is what travels: whatever it cannot hold fails here, for this chip alone.
        const text = JSON.stringify(device.saveState());
        if (text === undefined) throw new Error("saveState returned nothing JSON can hold");
        saved[ids[i] as string] = { key, model, address, state: JSON.parse(text) };
      } catch (error) {
        this.#logger.warn(
          "the emulated device could not save its state: it starts afresh in the successor",
          { ...chip, error: reasonOf(error) },
        );
      }
    });
    return saved;
  }

  #use(id: number): void {
    const next = this.#generations.get(id);
    if (next === undefined) throw new Error(`no generation ${id} in this device set`);
    const previous = this.#current;
    this.#current = next;
    if (previous !== null && previous !== next) {
      previous.retired = true;
      this.#closeIfUnused(previous);
    }
  }

  #closeIfUnused(generation: Generation): void {
    if (!generation.retired || generation.connections > 0) return;
    for (const [id, known] of this.#generations) {
      if (known === generation) this.#generations.delete(id);
    }
    generation.built.close();
    this.#logger.info("closed the devices of the previous configuration");
  }

  #chips(request: ChipRequest): ChipReply {
    const directory = this.#current?.built.directory ?? [];
    return answerChipRequest(directory, request);
  }
}
