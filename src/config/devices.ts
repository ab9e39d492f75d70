/**
 * One description of a device however it was given (-l shorthand or --config file): DeviceConfig.
 * Owns the conversion of parsed -l groups into DeviceConfig[], the merge with the config file's list,
 * and `buildBuses`: devices → buses, the guest AddressMap and the DeviceRegistry the control socket
 * serves. Closes everything it opened when building fails half-way.
 * Must not parse argv or JSON (args.ts, file.ts) nor import user modules (modules.ts).
 * @module
 */

import { openBacking } from "../i2c/backing-store.js";
import { AddressMap, type BusAddresses, hex, I2C_MAX_ADDR, type I2cBus } from "../i2c/bus.js";
import type { DeviceGroup } from "../i2c/device-list.js";
import { HostBus } from "../i2c/host-bus.js";
import {
  findModel,
  type I2cDeviceModel,
  MODEL_NAMES,
  type ModelContext,
  type ModelDefinition,
  type SimDevice,
  validateOptions,
} from "../i2c/model.js";
import { SimBus } from "../i2c/sim-bus.js";
import type { Logger } from "../log.js";
import { ConfigError, reasonOf } from "./errors.js";

/**
 * A device the guests may reach. `origin` says where it was given (config file and key path, or the
 * -l group), for messages.
 */
export type DeviceConfig =
  | { kind: "host"; adapter: number; address: number; origin?: string }
  | {
      kind: "sim";
      address: number;
      /** A built-in model name, or a user module (absolute path once loaded from a config file). */
      model: string | { module: string };
      options: Record<string, unknown>;
      origin?: string;
    };

/** An emulated chip as the control socket sees it. */
export interface RegisteredDevice {
  /** Base guest address (a 24c16 answers on this and the next 7). */
  readonly address: number;
  /** Model name (a user module's ModelDefinition.name). */
  readonly model: string;
  readonly device: SimDevice;
}

/** Base guest address → emulated chip. */
export type DeviceRegistry = ReadonlyMap<number, RegisteredDevice>;

export interface BuildContext {
  readonly logger: Logger;
  /** Relative paths in model options resolve here (the config file's directory, else the cwd). */
  readonly baseDir: string;
  /** User model modules, loaded beforehand by modules.ts, by the module path in DeviceConfig. */
  readonly modules?: ReadonlyMap<string, ModelDefinition>;
}

export interface BuiltBuses {
  readonly buses: readonly I2cBus[];
  readonly addressMap: AddressMap;
  readonly registry: DeviceRegistry;
  /** Closes every device (flushing backing files) and every bus. Safe to call twice. */
  close(): void;
}

/** The -l groups (src/i2c/device-list.ts output) as DeviceConfig[]; sim models get default options. */
export function devicesFromGroups(groups: readonly DeviceGroup[]): DeviceConfig[] {
  return groups.flatMap((group, index) =>
    group.devices.map((device): DeviceConfig => {
      const origin = `-l group ${index + 1} ("${group.busText}")`;
      if (group.bus.kind === "host") {
        return { kind: "host", adapter: group.bus.adapter, address: device.addr, origin };
      }
      if (device.model === undefined) {
        throw new ConfigError("CONFIG_INVALID", `${origin}: ${hex(device.addr)} has no model`);
      }
      return { kind: "sim", address: device.addr, model: device.model, options: {}, origin };
    }),
  );
}

/** The -l devices followed by the config file's; one guest address may be claimed only once. */
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

/**
 * Builds the buses: one HostBus per host adapter (opened for its listed addresses), one SimBus for
 * every emulated chip (each target at base address + index), the AddressMap over all of them and the
 * registry of emulated chips. Model options are validated by the model's schema first. Throws
 * ConfigError for a configuration that cannot work (HostBusError passes through) with nothing open.
 */
export function buildBuses(configs: readonly DeviceConfig[], context: BuildContext): BuiltBuses {
  const opened: { close(): void }[] = [];
  const closeOpened = () => closeAll(opened, context.logger);
  try {
    const groups: BusAddresses[] = [];
    const hostAddresses = new Map<number, number[]>();
    for (const device of configs) {
      if (device.kind !== "host") continue;
      const list = hostAddresses.get(device.adapter) ?? [];
      list.push(device.address);
      hostAddresses.set(device.adapter, list);
    }
    for (const [adapter, addrs] of hostAddresses) {
      const bus = HostBus.open(adapter, addrs, context.logger.child(`i2c-${adapter}`));
      opened.push(bus);
      groups.push({ bus, addrs });
    }

    const targets = new Map<number, I2cDeviceModel>();
    const registry = new Map<number, RegisteredDevice>();
    const targetOwner = new Map<number, string>();
    for (const config of configs) {
      if (config.kind !== "sim") continue;
      const definition = modelFor(config, context.modules);
      const device = createDevice(definition, config, context);
      opened.push({ close: () => device.close?.() });
      const label = `${definition.name} at ${hex(config.address)}`;
      device.targets.forEach((target, offset) => {
        const address = config.address + offset;
        const owner = targetOwner.get(address);
        if (address > I2C_MAX_ADDR || owner !== undefined) {
          throw new ConfigError(
            address > I2C_MAX_ADDR ? "CONFIG_ADDRESS_RANGE" : "CONFIG_DUPLICATE_ADDRESS",
            `${describeOrigin(config)}: ${label} answers on ${device.targets.length} addresses, ${
              owner === undefined
                ? `past the last 7-bit address 0x7f`
                : `and ${hex(address)} is already taken by ${owner}`
            }`,
          );
        }
        targetOwner.set(address, label);
        targets.set(address, target);
      });
      registry.set(config.address, { address: config.address, model: definition.name, device });
    }
    if (targets.size > 0) {
      const bus = new SimBus(targets, context.logger.child("sim"));
      opened.push(bus);
      groups.push({ bus, addrs: [...targets.keys()] });
    }
    const hostTaken = [...hostAddresses.values()].flat().find((a) => targetOwner.has(a));
    if (hostTaken !== undefined) {
      throw new ConfigError(
        "CONFIG_DUPLICATE_ADDRESS",
        `address ${hex(hostTaken)} is listed on a host adapter and answered by ${targetOwner.get(hostTaken)}`,
      );
    }
    const addressMap = new AddressMap(groups);
    let closed = false;
    return {
      buses: groups.map((g) => g.bus),
      addressMap,
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

function createDevice(
  definition: ModelDefinition,
  config: Extract<DeviceConfig, { kind: "sim" }>,
  context: BuildContext,
): SimDevice {
  const where = `${describeOrigin(config)}: ${definition.name} at ${hex(config.address)}`;
  const options = checkedOptions(definition, config.options, where);
  const modelContext: ModelContext = {
    address: config.address,
    logger: context.logger.child(`${definition.name}@${hex(config.address)}`),
    baseDir: context.baseDir,
    openBacking: (path, size, initial) => openBacking(path, size, initial, context.baseDir),
  };
  let device: SimDevice;
  try {
    device = definition.create(options, modelContext);
  } catch (err) {
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
