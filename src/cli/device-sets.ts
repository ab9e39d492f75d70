/**
 * DeviceSets: the main thread's view of the device sets (config/devices.ts deviceSets), each served
 * by a data-plane thread running device-set.ts. It builds every set's generation of devices (all or
 * none: a set that fails to build discards the others'), gives each connection a RemoteDevice of
 * its socket's set, routes the control socket's chip requests to the set holding the chip, gathers
 * the chips' saved states for a successor and hands a predecessor's to the first build, passes
 * finished transfers on to Observability, and waits for, aborts and ends the sets at shutdown.
 * Must not: serve sockets or decide exit codes (daemon.ts), or hold devices (the threads do).
 * @module
 */

import { deviceSets, type SocketDeviceLists } from "../config/devices.js";
import { ConfigError, reasonOf } from "../config/errors.js";
import type { ChipDirectory, ChipReply, ChipRequest, ChipTransport } from "../control/chips.js";
import { settlesWithin } from "../deadline.js";
import { hex } from "../i2c/bus.js";
import type { TransferRecord } from "../i2c/observer.js";
import { VIRTIO_I2C_DEVICE_INFO } from "../i2c/virtio-i2c.js";
import { type Logger, logSuppression, mergeSuppression, type SuppressionSnapshot } from "../log.js";
import { DataPlane, type RingOptions } from "../vhost-user/data-plane.js";
import type { RemoteDevice } from "../vhost-user/device.js";
import {
  type DeviceSetBuild,
  type DeviceSetInit,
  type DeviceSetRequest,
  type SavedChip,
  type SavedChips,
  TRANSFER_FLOW,
  type TransferBatch,
} from "./device-set.js";

/** One device set: its sockets, its thread, and what its current generation holds. */
interface DeviceSet {
  readonly index: number;
  readonly sockets: readonly number[];
  readonly plane: DataPlane;
  /** Shared with the set's thread (TRANSFER_FLOW); null when nobody observes transfers. */
  readonly transferFlow: Int32Array | null;
  build: DeviceSetBuild | null;
}

export interface DeviceSetsOptions {
  readonly logger: Logger;
  readonly lockDir: string | undefined;
  /** Map guest memory not sealed against shrinking (--allow-unsealed-memory). */
  readonly allowUnsealedMemory: boolean;
  /**
   * A set's thread ended without being asked to (an uncaught error in a model, say): its guests are
   * no longer served. Called once per thread.
   */
  readonly onThreadFailed: (set: number, error: Error) => void;
  /** Receives every finished transfer (null: nobody observes, the threads send none). */
  readonly observer: { transferDone(record: TransferRecord): void } | null;
  /**
   * Chip states a predecessor saved (SIGUSR2 handover): the first build gives each to the chip of the
   * same configuration; one with no such chip is logged and dropped.
   */
  readonly restore?: SavedChips | undefined;
}

/** The guests of one configuration as the "serving" line tells them. */
export interface ServedGuests {
  readonly addresses: readonly number[];
  readonly buses: readonly string[];
}

export class DeviceSets {
  readonly #sets: DeviceSet[];
  /** Socket index → its set. */
  readonly #bySocket: DeviceSet[];
  readonly #logger: Logger;
  readonly #ringOptions: RingOptions;
  #generation = 0;

  private constructor(sets: DeviceSet[], options: DeviceSetsOptions) {
    this.#sets = sets;
    this.#logger = options.logger;
    this.#ringOptions = { allowUnsealedMemory: options.allowUnsealedMemory };
    this.#bySocket = [];
    for (const set of sets) for (const socket of set.sockets) this.#bySocket[socket] = set;
  }

  /**
   * Starts one data-plane thread per device set of `lists` and builds the first generation in each.
   * Throws what a build threw (ConfigError, DeviceLockError, HostBusError by name and code), with
   * every thread ended.
   */
  static async start(
    lists: SocketDeviceLists,
    baseDir: string,
    socketCount: number,
    options: DeviceSetsOptions,
  ): Promise<DeviceSets> {
    const partition = deviceSets(lists, socketCount);
    const flows = partition.map(() =>
      options.observer === null
        ? null
        : new Int32Array(
            new SharedArrayBuffer(TRANSFER_FLOW.length * Int32Array.BYTES_PER_ELEMENT),
          ),
    );
    const started = await Promise.allSettled(
      partition.map((sockets, index) => {
        const transferFlow = flows[index] ?? null;
        const init: DeviceSetInit = {
          name: `set${index}`,
          sockets,
          lockDir: options.lockDir,
          transferFlow,
        };
        return DataPlane.start({
          hostModule: new URL("./device-set.js", import.meta.url),
          hostInit: init,
          logger: options.logger,
          onEvent: (event) => {
            const batch = event as TransferBatch;
            if (batch.kind !== "transfers" || options.observer === null) return;
            for (const record of batch.records) options.observer.transferDone(record);
            if (transferFlow !== null) Atomics.sub(transferFlow, TRANSFER_FLOW.batchesInFlight, 1);
          },
          onExit: (error) => options.onThreadFailed(index, error),
        });
      }),
    );
    const planes = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
    const failed = started.find((s) => s.status === "rejected");
    if (failed !== undefined) {
      await Promise.all(planes.map((plane) => plane.stop(2000)));
      throw failed.reason;
    }
    const sets = partition.map((sockets, index) => ({
      index,
      sockets,
      plane: planes[index] as DataPlane,
      transferFlow: flows[index] ?? null,
      build: null,
    }));
    const result = new DeviceSets(sets, options);
    try {
      await result.#buildAll(lists, baseDir, socketCount, options.restore);
    } catch (error) {
      await result.close(2000);
      throw error;
    }
    return result;
  }

  /** Device sets now: each one's sockets. */
  get partition(): number[][] {
    return this.#sets.map((set) => [...set.sockets]);
  }

  /**
   * Builds a new generation everywhere and puts it in use for new connections. A configuration whose
   * sockets group into other device sets cannot be loaded into running threads: ConfigError.
   */
  async reload(lists: SocketDeviceLists, baseDir: string, socketCount: number): Promise<void> {
    const wanted = deviceSets(lists, socketCount);
    if (JSON.stringify(wanted) !== JSON.stringify(this.partition)) {
      throw new ConfigError(
        "CONFIG_INVALID",
        `the new configuration groups the sockets into other device sets (${describe(wanted)} instead of ${describe(this.partition)}: own lists and shared emulated devices decide them); restart the daemon to use it`,
      );
    }
    await this.#buildAll(lists, baseDir, socketCount);
  }

  async #buildAll(
    lists: SocketDeviceLists,
    baseDir: string,
    socketCount: number,
    restore?: SavedChips,
  ): Promise<void> {
    const generation = ++this.#generation;
    const request: DeviceSetRequest = {
      kind: "build",
      generation,
      lists,
      baseDir,
      socketCount,
      ...(restore !== undefined && { restore }),
    };
    const results = await Promise.allSettled(
      this.#sets.map((set) => set.plane.request(request) as Promise<DeviceSetBuild>),
    );
    const failed = results.find((r) => r.status === "rejected");
    let error: unknown = failed?.reason;
    const builds = results.map((r) => (r.status === "fulfilled" ? r.value : null));
    if (error === undefined) error = sharedBackingFile(this.#sets, builds);
    if (error !== undefined) {
      await Promise.all(
        this.#sets.map((set, i) =>
          builds[i] === null
            ? undefined
            : set.plane.request({ kind: "discard", generation } satisfies DeviceSetRequest),
        ),
      );
      throw error;
    }
    await Promise.all(
      this.#sets.map((set) =>
        set.plane.request({ kind: "use", generation } satisfies DeviceSetRequest),
      ),
    );
    this.#sets.forEach((set, i) => {
      set.build = builds[i] ?? null;
    });
    if (restore !== undefined) this.#reportUnmatched(restore, builds);
  }

  /** Logs each saved state no chip was given: its chip's configuration changed, or it is gone. */
  #reportUnmatched(restore: SavedChips, builds: readonly (DeviceSetBuild | null)[]): void {
    const matched = new Set(builds.flatMap((build) => build?.statesMatched ?? []));
    for (const [id, { key, model, address }] of Object.entries(restore)) {
      if (matched.has(key)) continue;
      this.#logger.warn(
        "an emulated device's saved state has no device of the same configuration now: dropped",
        { chip: id, model, address: hex(address) },
      );
    }
  }

  /**
   * Every chip's saved state (SimDevice.saveState), by chip id as the control socket names it
   * ("0:1"), for a successor. Ask once the rings have stopped and the control socket is gone, so
   * nothing changes a chip after. A set that cannot answer is logged: its chips start afresh.
   */
  async saveChips(): Promise<SavedChips> {
    const saved: Record<string, SavedChip> = {};
    const request: DeviceSetRequest = { kind: "saveChips" };
    await Promise.all(
      this.#sets.map(async (set) => {
        try {
          const chips = (await set.plane.request(request)) as SavedChips;
          for (const [id, chip] of Object.entries(chips)) saved[`${set.index}:${id}`] = chip;
        } catch (error) {
          this.#logger.warn("a device set could not save its emulated devices: they start afresh", {
            set: set.index,
            error: reasonOf(error),
          });
        }
      }),
    );
    return saved;
  }

  /** A new connection's device on socket `socket`: its rings run in the socket's set's thread. */
  device(socket: number): RemoteDevice {
    const set = this.#bySocket[socket];
    if (set === undefined) throw new Error(`socket ${socket} is in no device set`);
    return set.plane.device(socket, VIRTIO_I2C_DEVICE_INFO, this.#ringOptions);
  }

  /** What each served guest reaches, per socket index. */
  guests(): ServedGuests[] {
    const guests: ServedGuests[] = [];
    for (const set of this.#sets) {
      for (const guest of set.build?.guests ?? []) guests[guest.socket] = guest;
    }
    return guests;
  }

  /** The control socket's way to the chips: ids qualified by their set ("1:7"). */
  get chips(): ChipTransport {
    return {
      directory: (): ChipDirectory =>
        this.#sets
          .flatMap((set) =>
            (set.build?.chips ?? []).map((chip) => ({ ...chip, id: `${set.index}:${chip.id}` })),
          )
          .sort((a, b) => a.address - b.address || (a.sockets[0] ?? 0) - (b.sockets[0] ?? 0)),
      request: async (request: ChipRequest): Promise<ChipReply> => {
        const split = request.chip.indexOf(":");
        const set = this.#sets[Number(request.chip.slice(0, split))];
        if (split < 0 || set === undefined) throw new Error(`no chip ${request.chip}`);
        const local = { ...request, chip: request.chip.slice(split + 1) };
        return (await set.plane.request({ kind: "chips", request: local })) as ChipReply;
      },
    };
  }

  /** Resolves true once no transfer is in flight in any set, false when `ms` passed first. */
  idle(ms: number): Promise<boolean> {
    const idle = Promise.all(
      this.#sets.map((set) =>
        set.plane.running ? set.plane.request({ kind: "idle" }).catch(() => undefined) : undefined,
      ),
    );
    return settlesWithin(idle, ms);
  }

  /** Finished transfers no observer saw: the main thread fell too far behind (all sets). */
  get unobservedTransfers(): number {
    let dropped = 0;
    for (const set of this.#sets) {
      if (set.transferFlow !== null)
        dropped += Atomics.load(set.transferFlow, TRANSFER_FLOW.recordsDropped);
    }
    return dropped;
  }

  /** Every set's count of rate-limited log lines left out, and the main thread's, summed. */
  async logSuppressed(): Promise<SuppressionSnapshot> {
    const threads = await Promise.all(
      this.#sets.map((set) =>
        set.plane.running
          ? (set.plane.request({
              kind: "logSuppressed",
            } satisfies DeviceSetRequest) as Promise<SuppressionSnapshot>)
          : { total: 0, bySource: {} },
      ),
    );
    return mergeSuppression([logSuppression.snapshot(), ...threads]);
  }

  /** Fails transfers still running in every set. */
  abort(): void {
    for (const set of this.#sets) {
      if (set.plane.running) set.plane.request({ kind: "abort" }).catch(() => undefined);
    }
  }

  /**
   * Ends every set's thread (its devices closed, backing files flushed). Resolves true when all
   * ended within `ms`; false when one is stuck in a system call (only exiting the process ends it).
   */
  async close(ms: number): Promise<boolean> {
    const ended = await Promise.all(this.#sets.map((set) => set.plane.stop(ms)));
    const stuck = ended.filter((ok) => !ok).length;
    if (stuck > 0)
      this.#logger.warn("a data-plane thread did not end: it is stuck in a transfer", { stuck });
    return stuck === 0;
  }
}

function describe(partition: readonly (readonly number[])[]): string {
  return partition.map((sockets) => `{${sockets.join(",")}}`).join(" ");
}

/**
 * A backing file open in two sets would be two images of one file: refused, as two chips on one file
 * of one configuration are (naming both), or as a file another set still holds.
 */
function sharedBackingFile(
  sets: readonly DeviceSet[],
  builds: readonly (DeviceSetBuild | null)[],
): ConfigError | undefined {
  const claimed = new Map<string, { set: number; device: string }>();
  for (const [i, build] of builds.entries()) {
    for (const { file, device } of build?.backingClaims ?? []) {
      const other = claimed.get(file);
      if (other !== undefined && other.set !== i) {
        return new ConfigError(
          "CONFIG_DEVICE_FAILED",
          `backing file ${file} is used by two emulated devices: ${other.device} and ${device}; give each its own file, or list the device once with "shared": true`,
        );
      }
      claimed.set(file, { set: i, device });
    }
  }
  const owner = new Map<string, number>();
  for (const [i, build] of builds.entries()) {
    for (const file of build?.backingFiles ?? []) {
      const other = owner.get(file);
      if (other !== undefined && other !== i) {
        return new ConfigError(
          "CONFIG_DEVICE_FAILED",
          `backing file ${file} is open for devices of two device sets (sockets ${describe([sets[other]?.sockets ?? []])} and ${describe([sets[i]?.sockets ?? []])}), which would be two images of one file; give each its own file, or restart the daemon to move a device between sets`,
        );
      }
      owner.set(file, i);
    }
  }
  return undefined;
}
