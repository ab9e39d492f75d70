/**
 * Daemon wiring: a validated DaemonConfig → devices (-l and --config, user model modules loaded) →
 * buses and one AddressMap (src/config/devices.ts) → a device factory → one vhost-user server (or
 * client) per socket, plus the control socket; and the SIGTERM/SIGINT shutdown.
 * Owns the lifetime of everything it opens and closes it all, also when start-up fails half-way.
 * Must not: parse argv, print to stdout or choose exit codes (main.ts does), nor hold protocol or
 * device logic (the vhost-user and i2c layers do).
 * @module
 */

import { resolve } from "node:path";
import {
  buildBuses,
  type DeviceConfig,
  devicesFromGroups,
  mergeDevices,
} from "../config/devices.js";
import { ConfigError } from "../config/errors.js";
import { loadConfigFile } from "../config/file.js";
import { loadModules } from "../config/modules.js";
import { ControlServer } from "../control/server.js";
import { resolveAdapter as resolveSysfsAdapter } from "../i2c/adapters.js";
import { HostBusError } from "../i2c/host-bus.js";
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
  /** Every device served, -l ones first, then the config file's. */
  readonly devices: readonly DeviceConfig[];
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

/** Configuration and adapter failures as DaemonError; anything else unchanged. */
function asDaemonError(err: unknown): unknown {
  if (err instanceof ConfigError) return new DaemonError("BAD_CONFIG", err.message, { cause: err });
  if (err instanceof HostBusError) return new DaemonError(err.code, err.message, { cause: err });
  return err;
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

export interface StartOptions {
  /** Adapter name → number for "bus" names in the config file (default: the sysfs lookup). */
  readonly resolveAdapter?: (name: string) => number;
}

/**
 * Every device the daemon serves: the -l list merged with the --config file's, and the directory
 * relative paths resolve in (the config file's, else the current directory). Throws ConfigError.
 */
export function collectDevices(
  config: DaemonConfig,
  options: StartOptions = {},
): { devices: DeviceConfig[]; baseDir: string } {
  const fromList = devicesFromGroups(config.deviceGroups);
  if (config.configFile === undefined) return { devices: fromList, baseDir: process.cwd() };
  const resolveAdapter = options.resolveAdapter ?? ((name: string) => resolveSysfsAdapter(name));
  const file = loadConfigFile(config.configFile, { resolveAdapter });
  return { devices: mergeDevices(fromList, file.devices), baseDir: file.dir };
}

/**
 * Loads the devices and user model modules, opens the buses, then serves every socket and the control
 * socket. Throws DaemonError with nothing left open.
 */
export async function startDaemon(
  config: DaemonConfig,
  logger: Logger,
  options: StartOptions = {},
): Promise<RunningDaemon> {
  const opened: Closable[] = [];
  let devices: DeviceConfig[];
  try {
    const collected = collectDevices(config, options);
    devices = collected.devices;
    const baseDir = collected.baseDir;
    const modules = await loadModules(devices, baseDir);
    const built = buildBuses(devices, { logger, baseDir, modules });
    opened.push(built);
    const { addressMap } = built;
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
    if (config.controlSocket !== undefined) {
      try {
        opened.push(
          ControlServer.listen(resolve(config.controlSocket), built.registry, {
            logger: logger.child("control"),
          }),
        );
      } catch (err) {
        if (err instanceof ServerError) throw serverErrorToDaemonError(err);
        throw err;
      }
    }
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
    throw asDaemonError(err);
  }
  let closed = false;
  return {
    config,
    devices,
    close() {
      if (closed) return;
      closed = true;
      closeAll(opened, logger);
    },
  };
}

const STOP_SIGNALS = ["SIGTERM", "SIGINT"] as const;

/** Starts the daemon and resolves once SIGTERM or SIGINT has stopped it. */
export async function runDaemonUntilSignal(
  config: DaemonConfig,
  logger: Logger,
  options: StartOptions = {},
): Promise<void> {
  const daemon = await startDaemon(config, logger, options);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    for (const name of STOP_SIGNALS) process.once(name, () => resolve(name));
  });
  for (const name of STOP_SIGNALS) process.removeAllListeners(name);
  logger.info("stopping", { signal });
  daemon.close();
}
