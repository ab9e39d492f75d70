/**
 * Daemon wiring: a validated DaemonConfig → buses (host adapters, emulated devices) → one AddressMap →
 * a device factory → one vhost-user server (or client) per socket; and the SIGTERM/SIGINT shutdown.
 * Owns the lifetime of everything it opens and closes it all, also when start-up fails half-way.
 * Must not: parse argv, print to stdout or choose exit codes (main.ts does), nor hold protocol or
 * device logic (the vhost-user and i2c layers do).
 * @module
 */

import { AddressMap, type BusAddresses, type I2cBus } from "../i2c/bus.js";
import type { DeviceGroup } from "../i2c/device-list.js";
import { HostBus, HostBusError } from "../i2c/host-bus.js";
import { createModel, type I2cDeviceModel } from "../i2c/model.js";
import { SimBus } from "../i2c/sim-bus.js";
import { VirtioI2cDevice } from "../i2c/virtio-i2c.js";
import type { Logger } from "../log.js";
import type { VhostUserDeviceFactory } from "../vhost-user/device.js";
import { ServerError, VhostUserClient, VhostUserServer } from "../vhost-user/server.js";
import type { DaemonConfig } from "./args.js";

/** Delay between connection attempts in client mode. */
export const CLIENT_RETRY_MS = 500;

export type DaemonErrorCode =
  | "SOCKET_DIR_MISSING"
  | "SOCKET_IN_USE"
  | "SOCKET_PATH_TAKEN"
  | "SOCKET_LISTEN_FAILED"
  | "I2C_ADAPTER_MISSING"
  | "I2C_ADAPTER_OPEN"
  | "I2C_ADDRESS_BUSY"
  | "I2C_ADDRESS_CHECK"
  | "BAD_CONFIG";

/** Codes that mean "the configuration cannot work" rather than "something failed while running". */
const CONFIG_ERRORS: ReadonlySet<DaemonErrorCode> = new Set([
  "SOCKET_DIR_MISSING",
  "SOCKET_PATH_TAKEN",
  "I2C_ADAPTER_MISSING",
  "I2C_ADDRESS_BUSY",
  "BAD_CONFIG",
]);

/** The daemon cannot start. `message` is meant for the user as is. */
export class DaemonError extends Error {
  readonly code: DaemonErrorCode;
  constructor(code: DaemonErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DaemonError";
    this.code = code;
  }

  /** True when the command line must change (main.ts exits with the usage status). */
  get isConfigError(): boolean {
    return CONFIG_ERRORS.has(this.code);
  }
}

export interface RunningDaemon {
  readonly config: DaemonConfig;
  /** Stops serving: servers closed (socket files removed), connections dropped, adapters closed. */
  close(): void;
}

interface Closable {
  close(): void;
}

function closeAll(items: readonly Closable[], logger: Logger): void {
  for (const item of [...items].reverse()) {
    try {
      item.close();
    } catch (err) {
      logger.warn("error while closing", { error: String(err) });
    }
  }
}

function openBus(group: DeviceGroup, logger: Logger): I2cBus {
  const addrs = group.devices.map((d) => d.addr);
  if (group.bus.kind === "host") {
    try {
      return HostBus.open(group.bus.adapter, addrs, logger.child(`i2c-${group.bus.adapter}`));
    } catch (err) {
      if (err instanceof HostBusError) throw new DaemonError(err.code, err.message, { cause: err });
      throw err;
    }
  }
  const models = new Map<number, I2cDeviceModel>();
  for (const device of group.devices) {
    if (device.model === undefined) {
      throw new DaemonError("BAD_CONFIG", `emulated device ${device.addr} has no model`);
    }
    models.set(device.addr, createModel(device.model));
  }
  return new SimBus(models, logger.child("sim"));
}

function serverErrorToDaemonError(err: ServerError): DaemonError {
  const code: DaemonErrorCode =
    err.code === "ENOENT"
      ? "SOCKET_DIR_MISSING"
      : err.code === "EADDRINUSE"
        ? "SOCKET_IN_USE"
        : err.code === "EEXIST"
          ? "SOCKET_PATH_TAKEN"
          : "SOCKET_LISTEN_FAILED";
  const advice =
    code === "SOCKET_IN_USE"
      ? " (another daemon serves it; stop it or choose another --socket-path)"
      : code === "SOCKET_DIR_MISSING"
        ? " (create it or choose another --socket-path)"
        : "";
  return new DaemonError(code, `${err.message}${advice}`, { cause: err });
}

/** Opens the buses, then serves every socket. Throws DaemonError with nothing left open. */
export function startDaemon(config: DaemonConfig, logger: Logger): RunningDaemon {
  const opened: Closable[] = [];
  try {
    const groups: BusAddresses[] = config.deviceGroups.map((group) => {
      const bus = openBus(group, logger);
      opened.push(bus);
      return { bus, addrs: group.devices.map((d) => d.addr) };
    });
    const addressMap = new AddressMap(groups);
    const factory: VhostUserDeviceFactory = (socketIndex) =>
      new VirtioI2cDevice(addressMap, logger.child(`socket${socketIndex}`));

    config.socketPaths.forEach((path, index) => {
      const options = { logger: logger.child(`socket${index}`) };
      if (config.clientMode) {
        options.logger.info("connecting to the VMM", { path });
        opened.push(
          new VhostUserClient(path, index, factory, { ...options, retryMs: CLIENT_RETRY_MS }),
        );
        return;
      }
      try {
        opened.push(VhostUserServer.listen(path, index, factory, options));
      } catch (err) {
        if (err instanceof ServerError) throw serverErrorToDaemonError(err);
        throw err;
      }
    });
    logger.info("serving", {
      devices: addressMap
        .addresses()
        .map((a) => `0x${a.toString(16).padStart(2, "0")}`)
        .join(","),
      buses: addressMap
        .buses()
        .map((b) => b.name)
        .join(","),
      sockets: config.socketCount,
      mode: config.clientMode ? "client" : "server",
    });
  } catch (err) {
    closeAll(opened, logger);
    throw err;
  }
  let closed = false;
  return {
    config,
    close() {
      if (closed) return;
      closed = true;
      closeAll(opened, logger);
    },
  };
}

const STOP_SIGNALS = ["SIGTERM", "SIGINT"] as const;

/** Starts the daemon and resolves once SIGTERM or SIGINT has stopped it. */
export async function runDaemonUntilSignal(config: DaemonConfig, logger: Logger): Promise<void> {
  const daemon = startDaemon(config, logger);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    for (const name of STOP_SIGNALS) process.once(name, () => resolve(name));
  });
  for (const name of STOP_SIGNALS) process.removeAllListeners(name);
  logger.info("stopping", { signal });
  daemon.close();
}
