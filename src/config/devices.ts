/**
 * One description of a device however it was given (-l shorthand or --config file): DeviceConfig.
 * Owns the conversion of parsed -l groups into DeviceConfig[], the merge with the config file's list,
 * and `buildBuses`: devices → buses, the guest AddressMap and the DeviceRegistry of emulated chips;
 * `buildSocketBuses` does it per socket and lists every chip with the guests that see it (the
 * DeviceDirectory the control socket serves). ResourcePool keeps what outlives one build (device locks,
 * chips, backing files) for the SIGHUP rebuild. Closes everything it opened when building fails
 * half-way.
 * Must not parse argv or JSON (args.ts, file.ts) nor import user modules (modules.ts).
 * @module
 */

import { realpathSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { DEFAULT_POINTER_BYTES, GuardedBus, type PointerBytes } from "../i2c/access.js";
import { openBacking } from "../i2c/backing-store.js";
import { AddressMap, type BusAddresses, hex, I2C_MAX_ADDR, type I2cBus } from "../i2c/bus.js";
import type { DeviceGroup } from "../i2c/device-list.js";
import { DeviceLock } from "../i2c/device-lock.js";
import {
  ChipFaults,
  type DeviceFaults,
  FaultBus,
  type FaultSpec,
  type Stretch,
} from "../i2c/faults.js";
import { HostBus, type HostBusOptions } from "../i2c/host-bus.js";
import {
  type BackingStore,
  findModel,
  type I2cDeviceModel,
  MODEL_NAMES,
  type ModelContext,
  type ModelDefinition,
  type SimDevice,
  validateOptions,
} from "../i2c/model.js";
import { MODEL_ERROR_CODES, ModelError } from "../i2c/models/model-error.js";
import { SimBus } from "../i2c/sim-bus.js";
import { type Logger, rateLimitedLogger } from "../log.js";
import { ConfigError, reasonOf } from "./errors.js";

/**
 * A device the guests may reach. `origin` says where it was given (config file and key path, or the
 * -l group), for messages.
 */
export type DeviceConfig =
  | {
      kind: "host";
      adapter: number;
      /** The adapter's sysfs name when it was given by name (found again if its number changes). */
      adapterName?: string;
      /** The guest address. */
      address: number;
      /** The address on the adapter, when the guest sees the device elsewhere (remapping). */
      hostAddress?: number;
      readOnly?: boolean;
      /** A read-only device's register pointer width in bytes (default 1); see access.ts. */
      pointerBytes?: PointerBytes;
      /** Other guests (sockets, daemons) may drive this host device too. */
      shared?: boolean;
      /** Faults every guest that reaches the device meets (src/i2c/faults.ts). */
      faults?: FaultSpec[];
      /** Clock stretching added to each transfer that addresses the device. */
      stretch?: Stretch;
      origin?: string;
    }
  | {
      kind: "sim";
      address: number;
      /** A built-in model name, or a user module (absolute path once loaded from a config file). */
      model: string | { module: string };
      options: Record<string, unknown>;
      readOnly?: boolean;
      /** A read-only chip's register pointer width in bytes (default 1), on each of its addresses. */
      pointerBytes?: PointerBytes;
      /** One instance for every socket that lists it shared (else one per socket list). */
      shared?: boolean;
      /** Faults every guest that sees the chip starts with (src/i2c/faults.ts). */
      faults?: FaultSpec[];
      /** Clock stretching added to each transfer that addresses the chip. */
      stretch?: Stretch;
      origin?: string;
    };

/**
 * An emulated chip as the control socket reaches it: src/control/chip-host.ts describes it and
 * answers requests for it, in the thread that holds it.
 */
export interface RegisteredDevice {
  /** Base guest address (a 24c16 answers on this and the next 7). */
  readonly address: number;
  /** Model name (a user module's ModelDefinition.name). */
  readonly model: string;
  readonly device: SimDevice;
  /** The chip's faults, per guest that sees it (one object for a chip shared by several lists). */
  readonly faults: ChipFaults;
  /**
   * The chip's identity in its configuration (whose list, address, model, options): the same in any
   * process that builds the same configuration, so a successor gives a saved state (SimDevice
   * saveState) to the chip it came from, and to no chip whose configuration changed.
   */
  readonly key: string;
}

/** Base guest address → emulated chip (one device list). */
export type DeviceRegistry = ReadonlyMap<number, RegisteredDevice>;

/** An emulated chip and the guests that see it. */
export interface DirectoryEntry extends RegisteredDevice {
  /** Socket indexes (guests) whose list has this chip, ascending; never empty. */
  readonly sockets: readonly number[];
}

/**
 * Every emulated chip of one configuration, by address then first socket. Two entries may share an
 * address when sockets have their own lists; one chip shared by several sockets is one entry.
 */
export type DeviceDirectory = readonly DirectoryEntry[];

export interface BuildContext {
  readonly logger: Logger;
  /** Relative paths in model options resolve here (the config file's directory, else the cwd). */
  readonly baseDir: string;
  /** User model modules, loaded beforehand by modules.ts, by the module path in DeviceConfig. */
  readonly modules?: ReadonlyMap<string, ModelDefinition>;
  /**
   * Locks, emulated chips and backing files shared with other builds (default: a private pool, no
   * locks).
   */
  readonly pool?: ResourcePool;
  /**
   * How host adapters run and complete transfers (HostBusOptions.completion and loopWakeFd). Default
   * `{ mode: "thread" }`: on each adapter's I/O thread, completed on this thread's event loop.
   */
  readonly hostCompletion?: HostCompletionContext;
}

/**
 * Where host adapters of a build run their transfers: "thread" (an event loop's thread), "inline"
 * (a thread that may block), "adaptive" (a thread blocked in epoll_wait on `loopWakeFd`, an eventfd
 * it keeps open while the buses live: each I/O-thread completion adds 1 to it, and the thread then
 * turns its event loop to run the completion).
 */
export type HostCompletionContext =
  | { readonly mode: "thread" | "inline" }
  | { readonly mode: "adaptive"; readonly loopWakeFd: number };

/** The HostBus options that say how a build's adapters complete transfers. */
function hostCompletionOptions(context: BuildContext): HostBusOptions {
  const completion = context.hostCompletion ?? ({ mode: "thread" } as const);
  return completion.mode === "adaptive"
    ? { completion: "adaptive", loopWakeFd: completion.loopWakeFd }
    : { completion: completion.mode };
}

/** What one guest reaches: its AddressMap over the buses of a build, each behind its own guard. */
export interface GuestView {
  readonly addressMap: AddressMap;
  /** The guarded buses in the AddressMap: what shutdown aborts. */
  readonly guards: readonly GuardedBus[];
}

export interface BuiltBuses extends GuestView {
  /** The guarded buses in the AddressMap. */
  readonly buses: readonly I2cBus[];
  readonly registry: DeviceRegistry;
  /**
   * A view of the same buses for the guest called `name` ("socket0", socket index `guest`): its own
   * guards, whose log lines (refused transfers) go through a rate limit of that guest's own, so one
   * guest that floods does not silence another's lines, and the chips' faults for that guest. The
   * buses and chips stay shared.
   */
  guestView(name: string, guest: number): GuestView;
  /** Closes every device (flushing backing files) and every bus. Safe to call twice. */
  close(): void;
}

/** The -l groups (src/i2c/device-list.ts output) as DeviceConfig[]; sim models get default options. */
export function devicesFromGroups(groups: readonly DeviceGroup[]): DeviceConfig[] {
  return groups.flatMap((group, index) =>
    group.devices.map((device): DeviceConfig => {
      const origin = `-l group ${index + 1} ("${group.busText}")`;
      const readOnly = device.readOnly
        ? {
            readOnly: true,
            ...(device.pointerBytes === undefined ? {} : { pointerBytes: device.pointerBytes }),
          }
        : {};
      if (group.bus.kind === "host") {
        const remap = device.hostAddr === undefined ? {} : { hostAddress: device.hostAddr };
        return {
          kind: "host",
          adapter: group.bus.adapter,
          ...(group.bus.name === undefined ? {} : { adapterName: group.bus.name }),
          address: device.addr,
          ...remap,
          ...readOnly,
          origin,
        };
      }
      if (device.model === undefined) {
        throw new ConfigError("CONFIG_INVALID", `${origin}: ${hex(device.addr)} has no model`);
      }
      return {
        kind: "sim",
        address: device.addr,
        model: device.model,
        options: {},
        ...readOnly,
        origin,
      };
    }),
  );
}

/**
 * The -l devices followed by the config file's; one guest address may be claimed only once, and one
 * host device (adapter + host address) too.
 */
export function mergeDevices(
  fromCommandLine: readonly DeviceConfig[],
  fromFile: readonly DeviceConfig[],
): DeviceConfig[] {
  const merged = [...fromCommandLine, ...fromFile];
  const owners = new Map<number, DeviceConfig>();
  for (const device of merged) {
    const owner = owners.get(device.address);
    if (owner !== undefined) {
      throw new ConfigError(
        "CONFIG_DUPLICATE_ADDRESS",
        `address ${hex(device.address)} is given twice: by ${describeOrigin(owner)} and by ${describeOrigin(device)}`,
      );
    }
    owners.set(device.address, device);
  }
  const hostOwners = new Map<string, DeviceConfig>();
  for (const device of merged) {
    if (device.kind !== "host") continue;
    const key = `${device.adapter}:${hostAddressOf(device)}`;
    const owner = hostOwners.get(key);
    if (owner !== undefined) {
      throw new ConfigError(
        "CONFIG_DUPLICATE_ADDRESS",
        `host device ${hex(hostAddressOf(device))} on adapter ${device.adapter} is given twice: by ${describeOrigin(owner)} and by ${describeOrigin(device)}`,
      );
    }
    hostOwners.set(key, device);
  }
  return merged;
}

function describeOrigin(device: DeviceConfig): string {
  return (
    device.origin ?? `the ${device.kind === "host" ? `adapter ${device.adapter}` : "sim"} device`
  );
}

/** The ModelDefinition a sim DeviceConfig names. Throws ConfigError. */
export function modelFor(
  device: Extract<DeviceConfig, { kind: "sim" }>,
  modules: ReadonlyMap<string, ModelDefinition> | undefined,
): ModelDefinition {
  const where = describeOrigin(device);
  if (typeof device.model === "string") {
    if (!MODEL_NAMES.includes(device.model)) {
      throw new ConfigError(
        "CONFIG_UNKNOWN_MODEL",
        `${where}: unknown device model "${device.model}" (built-in models: ${MODEL_NAMES.join(", ")})`,
      );
    }
    return findModel(device.model);
  }
  const definition = modules?.get(device.model.module);
  if (definition === undefined) {
    throw new ConfigError(
      "MODULE_LOAD_FAILED",
      `${where}: model module ${device.model.module} was not loaded before the buses were built`,
    );
  }
  return definition;
}

/** The host address a host device uses on its adapter. */
export function hostAddressOf(device: Extract<DeviceConfig, { kind: "host" }>): number {
  return device.hostAddress ?? device.address;
}

interface Counted<T> {
  readonly value: T;
  refs: number;
  readonly close: () => void;
}

/** An emulated chip in the pool and the backing files it holds (canonical paths). */
interface PooledChip {
  readonly device: SimDevice;
  readonly files: readonly string[];
}

/** Opens a backing file for a chip being created: ModelContext.openBacking, `path` absolute. */
type BackingOpener = (path: string, size: number, initial: Uint8Array) => BackingStore;

/**
 * What outlives one build: device locks, emulated chips and backing files, counted by the builds
 * that use them, so a rebuild (SIGHUP) keeps an unchanged chip's state and an unchanged device's
 * lock, and a device is closed only when the last build using it is closed. A backing file is one
 * image for every chip on it, whatever build the chip belongs to: a changed device's old chip (kept
 * by the connections made before the reload) and its new chip read and write the same bytes, and
 * each write reaches the file once, through one fd.
 */
export class ResourcePool {
  /** Lock directory; undefined = take no locks (unit tests of other layers). */
  readonly lockDir: string | undefined;
  readonly #locks = new Map<string, Counted<DeviceLock>>();
  readonly #chips = new Map<string, Counted<PooledChip>>();
  /** Canonical path → the open backing file every chip on it shares. */
  readonly #stores = new Map<string, Counted<BackingStore>>();
  readonly #faults = new Map<string, Counted<ChipFaults>>();

  constructor(lockDir?: string) {
    this.lockDir = lockDir;
  }

  /** The backing files open now (canonical paths): one image each, whatever chips hold it. */
  get backingFiles(): readonly string[] {
    return [...this.#stores.keys()];
  }

  /** Takes (or shares) the lock of a host device; returns its release. Throws DeviceLockError. */
  lock(adapter: number, addr: number, shared: boolean): () => void {
    if (this.lockDir === undefined) return () => {};
    const dir = this.lockDir;
    return this.#acquire(this.#locks, `${adapter}:${addr}`, () => {
      const lock = DeviceLock.acquire(dir, adapter, addr, shared);
      return { value: lock, close: () => lock.release() };
    }).release;
  }

  /**
   * The chip for `key`, created on first use by `create`, which opens its backing files with the
   * opener it is given (one store per file, shared: see `#hold`). `claim` is given the canonical
   * path of every backing file the chip holds, before it is opened or, for a chip an earlier build
   * made, before the chip is handed out; it throws to refuse. Returns the chip and its release.
   */
  chip(
    key: string,
    claim: (file: string) => void,
    create: (openBacking: BackingOpener) => SimDevice,
  ): [SimDevice, () => void] {
    const known = this.#chips.get(key);
    if (known !== undefined) for (const file of known.value.files) claim(file);
    const { value, release } = this.#acquire(this.#chips, key, () => {
      const files: string[] = [];
      const holds: BackingStore[] = [];
      let device: SimDevice;
      try {
        device = create((path, size, initial) => {
          const file = canonicalFilePath(path);
          claim(file);
          const hold = this.#hold(file, path, size, initial);
          holds.push(hold);
          files.push(file);
          return hold;
        });
      } catch (err) {
        // The chip does not exist: nothing else will ever close what it opened.
        for (const hold of holds) hold.close();
        throw err;
      }
      return { value: { device, files }, close: () => device.close?.() };
    });
    return [value.device, release];
  }

  /**
   * The faults of the device of `key`, made by `create` on first use. A rebuild that keeps the device
   * and its configured faults (both in the key) keeps the object, so a fault set at run time reaches
   * the guests connected before the reload as well as those after. Returns it and its release.
   */
  faults(key: string, create: () => ChipFaults): [ChipFaults, () => void] {
    const { value, release } = this.#acquire(this.#faults, key, () => ({
      value: create(),
      close: () => {},
    }));
    return [value, release];
  }

  /**
   * A hold on the backing file `file` (canonical path; `path` as the model gave it, for messages):
   * the first hold opens it (openBacking and its file-safety rules, created from `initial` when
   * missing), later ones share its bytes and fd (`initial` unused). The file is closed with the
   * last hold. Throws ModelError I2C_BACKING_SIZE when the open file has another size.
   */
  #hold(file: string, path: string, size: number, initial: Uint8Array): BackingStore {
    const { value: store, release } = this.#acquire(this.#stores, file, () => {
      const opened = openBacking(path, size, initial);
      return { value: opened, close: () => opened.close() };
    });
    if (store.bytes.length !== size) {
      release();
      throw new ModelError(
        MODEL_ERROR_CODES.backingSize,
        `backing file ${path} holds ${store.bytes.length} bytes, the device needs ${size} (the file is open for a device already running and is not resized; give this device another file)`,
      );
    }
    return new BackingHold(path, store, release);
  }

  #acquire<T>(
    table: Map<string, Counted<T>>,
    key: string,
    open: () => { value: T; close: () => void },
  ): { value: T; release: () => void } {
    let entry = table.get(key);
    if (entry === undefined) {
      entry = { ...open(), refs: 0 };
      table.set(key, entry);
    }
    entry.refs++;
    const counted = entry;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      counted.refs--;
      if (counted.refs > 0) return;
      table.delete(key);
      counted.close();
    };
    return { value: counted.value, release };
  }
}

/**
 * One chip's hold on a pooled backing file: the file's bytes and write-through commits; `close` lets
 * go of the hold (the file closes with the last one).
 */
class BackingHold implements BackingStore {
  readonly bytes: Uint8Array;
  readonly #path: string;
  readonly #store: BackingStore;
  #release: (() => void) | null;

  constructor(path: string, store: BackingStore, release: () => void) {
    this.bytes = store.bytes;
    this.#path = path;
    this.#store = store;
    this.#release = release;
  }

  commit(offset: number, length: number): void {
    if (this.#release === null) {
      throw new ModelError(
        MODEL_ERROR_CODES.backingIo,
        `backing file ${this.#path}: cannot commit: closed`,
      );
    }
    this.#store.commit(offset, length);
  }

  close(): void {
    const release = this.#release;
    this.#release = null;
    release?.();
  }
}

/**
 * The absolute `path` with its directory's links resolved: one key for every spelling of one backing
 * file (the file itself is never a link and has one name; backing-store.ts refuses anything else).
 * A directory that cannot be resolved leaves `path` as it is: opening the file reports why.
 */
function canonicalFilePath(path: string): string {
  try {
    return join(realpathSync(dirname(path)), basename(path));
  } catch {
    return path;
  }
}

/**
 * Builds the buses: one HostBus per host adapter (locked and opened for its listed host addresses),
 * one SimBus for every emulated chip (each target at base address + index), each wrapped in a
 * GuardedBus that enforces read-only devices, the AddressMap over all of them and the registry of
 * emulated chips. Model options are validated by the model's schema first. Throws ConfigError for a
 * configuration that cannot work (HostBusError and DeviceLockError pass through) with nothing open.
 * `scope` names who the emulated chips belong to ("default", "socket1"): chips are instances per
 * scope unless marked shared.
 */
export function buildBuses(
  configs: readonly DeviceConfig[],
  context: BuildContext,
  scope = "default",
): BuiltBuses {
  return buildScope(configs, context, scope, new Map());
}

/**
 * Backing file (canonical path) → the chip of one build that holds it: two different chips of one
 * configuration on one file are a mistake (across builds, a changed chip's generations share it).
 */
type BackingClaims = Map<string, { readonly key: string; readonly label: string }>;

/** buildBuses for one scope of a build whose backing files are claimed in `claims`. */
function buildScope(
  configs: readonly DeviceConfig[],
  context: BuildContext,
  scope: string,
  claims: BackingClaims,
): BuiltBuses {
  const pool = context.pool ?? new ResourcePool();
  const opened: { close(): void }[] = [];
  const closeOpened = () => closeAll(opened, context.logger);
  try {
    /**
     * Each bus with its guest addresses, read-only devices and the faults of its devices (by
     * address on the bus), before any guard.
     */
    const plain: (BusAddresses & {
      readOnly: Map<number, PointerBytes>;
      faults: ReadonlyMap<number, ChipFaults>;
    })[] = [];
    const addBus = (
      bus: I2cBus,
      readOnly: Map<number, PointerBytes>,
      faults: ReadonlyMap<number, ChipFaults>,
      addrs: number[],
      hostAddrs?: number[],
    ) => {
      plain.push(
        hostAddrs === undefined
          ? { bus, addrs, readOnly, faults }
          : { bus, addrs, hostAddrs, readOnly, faults },
      );
    };
    /**
     * The faults of the device of `key` (one object for a device shared by several lists, and kept by
     * a rebuild that changes neither the device nor its configured faults).
     */
    const faultsOf = (
      key: string,
      device: { address: number; faults?: FaultSpec[]; stretch?: Stretch },
    ): ChipFaults => {
      const configured = JSON.stringify([device.faults ?? [], device.stretch ?? null]);
      const [faults, release] = pool.faults(`${key}|${configured}`, () => {
        return new ChipFaults(device.address, device.stretch ?? null, device.faults ?? []);
      });
      opened.push({ close: release });
      return faults;
    };
    const hostDevices = new Map<number, Extract<DeviceConfig, { kind: "host" }>[]>();
    for (const device of configs) {
      if (device.kind !== "host") continue;
      const list = hostDevices.get(device.adapter) ?? [];
      list.push(device);
      hostDevices.set(device.adapter, list);
    }
    for (const [adapter, devices] of hostDevices) {
      const hostAddrs = devices.map(hostAddressOf);
      for (const device of devices) {
        opened.push({ close: pool.lock(adapter, hostAddressOf(device), device.shared === true) });
      }
      const adapterName = devices.find((d) => d.adapterName !== undefined)?.adapterName;
      const bus = HostBus.open(adapter, hostAddrs, context.logger.child(`i2c-${adapter}`), {
        ...(adapterName !== undefined && { adapterName }),
        ...hostCompletionOptions(context),
      });
      opened.push(bus);
      const readOnly = new Map(
        devices
          .filter((d) => d.readOnly)
          .map((d) => [hostAddressOf(d), d.pointerBytes ?? DEFAULT_POINTER_BYTES] as const),
      );
      // Only devices with configured faults or stretching: the control socket cannot reach a host
      // device, and an adapter without them keeps its bus as it is.
      const faults = new Map(
        devices
          .filter((d) => d.faults !== undefined || d.stretch !== undefined)
          .map((d) => {
            const hostAddr = hostAddressOf(d);
            const key = `${d.shared ? "shared" : scope}|host|${adapter}|${hostAddr}`;
            return [hostAddr, faultsOf(key, d)] as const;
          }),
      );
      addBus(
        bus,
        readOnly,
        faults,
        devices.map((d) => d.address),
        hostAddrs,
      );
    }

    const targets = new Map<number, I2cDeviceModel>();
    /** Each target's address → its chip's faults. */
    const targetFaults = new Map<number, ChipFaults>();
    const registry = new Map<number, RegisteredDevice>();
    const targetOwner = new Map<number, string>();
    const readOnlyTargets = new Map<number, PointerBytes>();
    for (const config of configs) {
      if (config.kind !== "sim") continue;
      const definition = modelFor(config, context.modules);
      const key = chipKey(config, scope);
      const label = `${definition.name} at ${hex(config.address)}`;
      const claim = (file: string) => {
        const holder = claims.get(file);
        if (holder !== undefined && holder.key !== key) {
          throw new ConfigError(
            "CONFIG_DEVICE_FAILED",
            `backing file ${file} is used by two emulated devices: ${holder.label} and ${describeOrigin(config)} (${label}); give each its own file, or list the device once with "shared": true`,
          );
        }
        claims.set(file, { key, label: `${describeOrigin(config)} (${label})` });
      };
      const [device, release] = pool.chip(key, claim, (openPooled) =>
        createDevice(definition, config, context, openPooled),
      );
      opened.push({ close: release });
      const count = device.targets.length;
      // A chip on several addresses is named with its range: a clash may be at none of the bases.
      const range = `${hex(config.address)}-${hex(config.address + count - 1)}`;
      const subject = count === 1 ? label : `${label} covers ${range}`;
      const asOwner = count === 1 ? label : `${label}, which covers ${range}`;
      const chipFaults = faultsOf(key, config);
      device.targets.forEach((target, offset) => {
        const address = config.address + offset;
        const owner = targetOwner.get(address);
        if (address > I2C_MAX_ADDR || owner !== undefined) {
          throw new ConfigError(
            address > I2C_MAX_ADDR ? "CONFIG_ADDRESS_RANGE" : "CONFIG_DUPLICATE_ADDRESS",
            `${describeOrigin(config)}: ${subject}: ${hex(address)} is ${
              owner === undefined ? "past the last 7-bit address 0x7f" : `already taken by ${owner}`
            }`,
          );
        }
        targetOwner.set(address, asOwner);
        targets.set(address, target);
        targetFaults.set(address, chipFaults);
        if (config.readOnly) {
          readOnlyTargets.set(address, config.pointerBytes ?? DEFAULT_POINTER_BYTES);
        }
      });
      registry.set(config.address, {
        address: config.address,
        model: definition.name,
        device,
        faults: chipFaults,
        key,
      });
    }
    if (targets.size > 0) {
      const bus = new SimBus(targets, context.logger.child("sim"));
      opened.push(bus);
      addBus(bus, readOnlyTargets, targetFaults, [...targets.keys()]);
    }
    const hostTaken = [...hostDevices.values()]
      .flat()
      .map((d) => d.address)
      .find((a) => targetOwner.has(a));
    if (hostTaken !== undefined) {
      throw new ConfigError(
        "CONFIG_DUPLICATE_ADDRESS",
        `address ${hex(hostTaken)} is listed on a host adapter and answered by ${targetOwner.get(hostTaken)}`,
      );
    }
    const guestView = (name: string, guest: number): GuestView => {
      const logger = rateLimitedLogger(context.logger.child(name), name);
      const groups = plain.map(({ bus, readOnly, faults, ...addresses }) => ({
        ...addresses,
        bus: new GuardedBus(withFaults(bus, faults, guest), {
          readOnly,
          logger: logger.child(bus.name),
        }),
      }));
      return { addressMap: new AddressMap(groups), guards: groups.map((g) => g.bus) };
    };
    const own = guestView(scope, 0);
    let closed = false;
    return {
      ...own,
      buses: own.guards,
      guestView,
      registry,
      close() {
        if (closed) return;
        closed = true;
        closeOpened();
      },
    };
  } catch (err) {
    closeOpened();
    throw err;
  }
}

/**
 * The bus as guest `guest` sees it: behind a FaultBus over its devices' faults for that guest (every
 * emulated chip: faults may be set at run time), or as it is when none of its devices has any (a
 * host adapter without configured faults).
 */
function withFaults(bus: I2cBus, faults: ReadonlyMap<number, ChipFaults>, guest: number): I2cBus {
  if (faults.size === 0) return bus;
  const devices = new Map<number, DeviceFaults>();
  for (const [address, chip] of faults) devices.set(address, chip.forGuest(guest));
  return new FaultBus(bus, devices);
}

/** Identity of an emulated chip: same key = same instance (shared ones across scopes). */
function chipKey(config: Extract<DeviceConfig, { kind: "sim" }>, scope: string): string {
  const what = JSON.stringify([config.address, config.model, config.options], (_key, value) =>
    value instanceof Uint8Array ? Buffer.from(value).toString("hex") : value,
  );
  return `${config.shared ? "shared" : scope}|${what}`;
}

/** 0 .. count-1: every socket of a daemon serving `count`. */
export function socketIndexes(count: number): number[] {
  return Array.from({ length: count }, (_, i) => i);
}

/**
 * Every device `sockets` use: the default list when one of them has no list of its own, then their
 * own lists in socket order.
 */
export function devicesOf(lists: SocketDeviceLists, sockets: readonly number[]): DeviceConfig[] {
  return [
    ...(sockets.some((s) => !lists.sockets.has(s)) ? lists.defaults : []),
    ...sockets.flatMap((s) => lists.sockets.get(s) ?? []),
  ];
}

/** Device lists per socket: each socket's own list, else the default list. */
export interface SocketDeviceLists {
  readonly defaults: readonly DeviceConfig[];
  readonly sockets: ReadonlyMap<number, readonly DeviceConfig[]>;
}

export interface BuiltSockets {
  /** Per socket index, the addresses its guest may reach (undefined: a socket not served here). */
  readonly addressMaps: readonly (AddressMap | undefined)[];
  /** Every emulated chip with the sockets that see it, for the control socket. */
  readonly directory: DeviceDirectory;
  readonly guards: readonly GuardedBus[];
  /**
   * Whether a transfer on these buses waits on a timer (an emulated device's stall or clock
   * stretching): the thread that runs them must keep turning its event loop.
   */
  waitsForTimers(): boolean;
  /** Every distinct device given to some socket. */
  readonly devices: readonly DeviceConfig[];
  /** The backing files this build's chips hold (canonical paths), each with its chip's label. */
  readonly backingClaims: readonly { readonly file: string; readonly device: string }[];
  close(): void;
}

/**
 * Builds the buses of every socket: the default list once (every socket without its own list shares
 * it, as with one list), and each socket's own list separately, so no guest sees another's devices.
 * A host device may appear in two lists only when both say "shared". Throws ConfigError with nothing
 * open (HostBusError and DeviceLockError pass through).
 */
export function buildSocketBuses(
  lists: SocketDeviceLists,
  socketCount: number,
  context: BuildContext,
  served: readonly number[] = socketIndexes(socketCount),
): BuiltSockets {
  for (const index of lists.sockets.keys()) {
    if (index >= socketCount) {
      throw new ConfigError(
        "CONFIG_INVALID",
        `a device list is given for socket ${index}, but the daemon serves ${socketCount} socket${socketCount === 1 ? "" : "s"} (0..${socketCount - 1}); raise --socket-count`,
      );
    }
  }
  const usesDefault = socketIndexes(socketCount).filter((i) => !lists.sockets.has(i));
  const all: { scope: string; devices: readonly DeviceConfig[]; sockets: number[] }[] = [];
  if (usesDefault.length > 0) {
    all.push({ scope: "default", devices: lists.defaults, sockets: usesDefault });
  } else if (lists.defaults.length > 0 && served.length === socketCount) {
    context.logger.warn("every socket has its own device list: the default list is not used");
  }
  for (const [index, devices] of [...lists.sockets].sort(([a], [b]) => a - b)) {
    all.push({ scope: `socket${index}`, devices, sockets: [index] });
  }
  checkHostSharing(all);
  // Only the lists of the sockets served here are built (a device set builds its own).
  const used = all.filter((u) => u.sockets.some((i) => served.includes(i)));

  const pool = context.pool ?? new ResourcePool();
  const claims: BackingClaims = new Map();
  const built: BuiltBuses[] = [];
  try {
    for (const { scope, devices } of used) {
      if (devices.length === 0) {
        throw new ConfigError(
          "CONFIG_INVALID",
          `no devices for ${scope === "default" ? `socket ${usesDefault.join(", ")} (no -l, no "devices" in the config file)` : scope}`,
        );
      }
      built.push(buildScope(devices, { ...context, pool }, scope, claims));
    }
  } catch (err) {
    for (const b of built) b.close();
    throw err;
  }
  const byScope = new Map(used.map(({ scope }, i) => [scope, built[i]]));
  const socketBuilds = Array.from({ length: socketCount }, (_, i) => {
    if (!served.includes(i)) return undefined;
    const own = byScope.get(lists.sockets.has(i) ? `socket${i}` : "default");
    if (own === undefined) throw new Error(`socket ${i} has no device list`);
    return own;
  });
  // Every guest gets its own guards over its list's buses (their refusals are logged per guest).
  const views = socketBuilds.map((b, i) => b?.guestView(`socket${i}`, i));
  const addressMaps = views.map((v) => v?.addressMap);
  const directory = directoryOf(socketBuilds);
  const guards = views.flatMap((v) => v?.guards ?? []);
  let closed = false;
  return {
    addressMaps,
    directory,
    guards,
    waitsForTimers: () =>
      guards.some((guard) => guard.inner instanceof FaultBus && guard.inner.waitingOnTimer),
    devices: used.flatMap((u) => u.devices),
    backingClaims: [...claims].map(([file, holder]) => ({ file, device: holder.label })),
    close() {
      if (closed) return;
      closed = true;
      for (const b of built) b.close();
    },
  };
}

/** The chips each socket's build registered, merged by identity (a shared chip is one entry). */
function directoryOf(perSocket: readonly (BuiltBuses | undefined)[]): DeviceDirectory {
  const entries = new Map<SimDevice, { entry: RegisteredDevice; sockets: number[] }>();
  perSocket.forEach((built, socket) => {
    if (built === undefined) return;
    for (const entry of built.registry.values()) {
      const known = entries.get(entry.device);
      if (known === undefined) entries.set(entry.device, { entry, sockets: [socket] });
      else known.sockets.push(socket);
    }
  });
  return [...entries.values()]
    .map(({ entry, sockets }) => ({ ...entry, sockets }))
    .sort((a, b) => a.address - b.address || (a.sockets[0] ?? 0) - (b.sockets[0] ?? 0));
}

/** A host device in two lists must be shared in both; a shared chip address must be one chip. */
function checkHostSharing(
  used: readonly { scope: string; devices: readonly DeviceConfig[] }[],
): void {
  const hostOwners = new Map<string, Extract<DeviceConfig, { kind: "host" }>>();
  const sharedChips = new Map<number, Extract<DeviceConfig, { kind: "sim" }>>();
  for (const { devices } of used) {
    for (const device of devices) {
      if (device.kind === "sim") {
        if (!device.shared) continue;
        const other = sharedChips.get(device.address);
        if (other !== undefined && chipKey(other, "") !== chipKey(device, "")) {
          throw new ConfigError(
            "CONFIG_SHARED_CONFLICT",
            `shared emulated device at ${hex(device.address)} is described differently by ${describeOrigin(other)} and by ${describeOrigin(device)}; a shared device must have the same model and options everywhere`,
          );
        }
        sharedChips.set(device.address, device);
        continue;
      }
      const key = `${device.adapter}:${hostAddressOf(device)}`;
      const other = hostOwners.get(key);
      if (other !== undefined && !(other.shared && device.shared)) {
        throw new ConfigError(
          "CONFIG_SHARED_CONFLICT",
          `host device ${hex(hostAddressOf(device))} on adapter ${device.adapter} is given to two guests, by ${describeOrigin(other)} and by ${describeOrigin(device)}; mark it "shared": true in both to allow that`,
        );
      }
      hostOwners.set(key, device);
    }
  }
}

/** The chip; its backing files opened with `openPooled` (relative paths from baseDir). */
function createDevice(
  definition: ModelDefinition,
  config: Extract<DeviceConfig, { kind: "sim" }>,
  context: BuildContext,
  openPooled: BackingOpener,
): SimDevice {
  const where = `${describeOrigin(config)}: ${definition.name} at ${hex(config.address)}`;
  const options = checkedOptions(definition, config.options, where);
  const modelContext: ModelContext = {
    address: config.address,
    logger: context.logger.child(`${definition.name}@${hex(config.address)}`),
    baseDir: context.baseDir,
    openBacking: (path, size, initial) => openPooled(resolve(context.baseDir, path), size, initial),
  };
  let device: SimDevice;
  try {
    device = definition.create(options, modelContext);
  } catch (err) {
    // A refusal of the build's own (two devices on one file) already names both devices.
    if (err instanceof ConfigError) throw err;
    throw new ConfigError("CONFIG_DEVICE_FAILED", `${where}: ${reasonOf(err)}`, { cause: err });
  }
  if (!isSimDevice(device)) {
    throw new ConfigError(
      "MODULE_BAD_EXPORT",
      `${where}: create() must return a SimDevice ({ targets: [...] } with start/write/read/stop on each target)`,
    );
  }
  return device;
}

/** Options after the model's schema accepted them; messages name the device and the option path. */
function checkedOptions(
  definition: ModelDefinition,
  options: Readonly<Record<string, unknown>>,
  where: string,
): Readonly<Record<string, unknown>> {
  const schema = definition.options;
  if (schema === undefined) {
    const keys = Object.keys(options);
    if (keys.length > 0) {
      throw new ConfigError(
        "CONFIG_BAD_OPTIONS",
        `${where}: options.${keys[0]}: unknown option (model "${definition.name}" takes no options)`,
      );
    }
    return options;
  }
  try {
    return validateOptions(schema, options, where) as Readonly<Record<string, unknown>>;
  } catch (err) {
    throw new ConfigError("CONFIG_BAD_OPTIONS", reasonOf(err), { cause: err });
  }
}

const isFunction = (value: unknown): boolean => typeof value === "function";

/** True when `value` has the shape of a SimDevice (targets with the four bus-event methods). */
export function isSimDevice(value: unknown): value is SimDevice {
  if (typeof value !== "object" || value === null) return false;
  const targets = (value as { targets?: unknown }).targets;
  if (!Array.isArray(targets) || targets.length === 0) return false;
  return targets.every(
    (t: unknown) =>
      typeof t === "object" &&
      t !== null &&
      ["start", "write", "read", "stop"].every((m) =>
        isFunction((t as Record<string, unknown>)[m]),
      ),
  );
}

function closeAll(items: readonly { close(): void }[], logger: Logger): void {
  for (const item of [...items].reverse()) {
    try {
      item.close();
    } catch (err) {
      logger.warn("error while closing", { error: reasonOf(err) });
    }
  }
}

/**
 * The device sets of a configuration: the sockets that use the default list are one set, every
 * socket with a list of its own is a set of its own, and sets that list one shared emulated chip are
 * one set (the chip is one instance). Each set is served by one data-plane thread, so a slow device
 * stalls only the guests of its set. Sets are ordered by their first socket; sockets ascending.
 */
export function deviceSets(lists: SocketDeviceLists, socketCount: number): number[][] {
  const setOf = Array.from({ length: socketCount }, (_, i) => (lists.sockets.has(i) ? i : -1));
  const firstDefault = setOf.indexOf(-1);
  for (let i = 0; i < socketCount; i++) if (setOf[i] === -1) setOf[i] = firstDefault;
  const find = (i: number): number => {
    let root = i;
    while (setOf[root] !== root) root = setOf[root] as number;
    return root;
  };
  const sharedChipOwner = new Map<string, number>();
  for (let i = 0; i < socketCount; i++) {
    for (const device of lists.sockets.get(i) ?? lists.defaults) {
      if (device.kind !== "sim" || !device.shared) continue;
      const key = chipKey(device, "");
      const owner = sharedChipOwner.get(key);
      if (owner === undefined) sharedChipOwner.set(key, i);
      else {
        const [a, b] = [find(owner), find(i)];
        if (a !== b) setOf[Math.max(a, b)] = Math.min(a, b);
      }
    }
  }
  const sets = new Map<number, number[]>();
  for (let i = 0; i < socketCount; i++) {
    const root = find(i);
    const set = sets.get(root) ?? [];
    set.push(i);
    sets.set(root, set);
  }
  return [...sets.values()].sort((a, b) => (a[0] as number) - (b[0] as number));
}
