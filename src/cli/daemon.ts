/**
 * Daemon wiring: a validated DaemonConfig → device lists (-l and --config, per socket; user model
 * modules loaded) → buses and one AddressMap per socket (src/config/devices.ts) → a device factory →
 * one vhost-user server (or client) per socket, plus the control socket, each with its own socket
 * access and the peers admitted (src/sys/socket-file.ts and peer-policy.ts do the work); the SIGHUP
 * reload (new connections get the new lists, a generation of buses closes when its last connection
 * ends) and the SIGTERM/SIGINT shutdown (transfers finished or failed, chains returned).
 * Owns the lifetime of everything it opens and closes it all, also when start-up fails half-way.
 * Must not: parse argv, print to stdout or choose exit codes (main.ts does), nor hold protocol or
 * device logic (the vhost-user and i2c layers do).
 * @module
 */

import { resolve } from "node:path";
import {
  type DeviceConfig,
  devicesFromGroups,
  devicesOf,
  mergeDevices,
  type SocketDeviceLists,
  socketIndexes,
} from "../config/devices.js";
import { ConfigError } from "../config/errors.js";
import { loadConfigFile } from "../config/file.js";
import { chipAccess } from "../control/chips.js";
import {
  checkScenario,
  loadScenario,
  type ScenarioPlayer,
  scenarioPlayer,
} from "../control/scenario.js";
import { type ControlHandover, ControlServer } from "../control/server.js";
import { CodedError } from "../errors.js";
import { resolveAdapter as resolveSysfsAdapter } from "../i2c/adapters.js";
import { hex } from "../i2c/bus.js";
import { DeviceLockError, lockDirectory } from "../i2c/device-lock.js";
import { HostBusError } from "../i2c/host-bus.js";
import type { Logger } from "../log.js";
import type { PeerIds } from "../sys/peer-policy.js";
import { removeStoredFds, ServiceManagerError, storeFd } from "../sys/service-manager.js";
import { SocketFile, type SocketFileAccess, SocketFileError } from "../sys/socket-file.js";
import { Observability, OutputOpenError } from "../trace/observability.js";
import type { VhostUserDeviceFactory } from "../vhost-user/device.js";
import { type FdStore, STORE_NAME_PREFIX } from "../vhost-user/journal.js";
import { VhostUserClient, VhostUserServer } from "../vhost-user/server.js";
import { type DaemonConfig, HELP } from "./args.js";
import { DeviceSets } from "./device-sets.js";
import {
  closeHandover,
  type DaemonHandover,
  type SocketHandover,
  startSuccessor,
} from "./handover.js";
import {
  dropPrivileges,
  GROUP_FILE,
  type Identity,
  lookupId,
  PASSWD_FILE,
  PrivilegeError,
  requireRoot,
  resolveIdentity,
} from "./privileges.js";

/** Delay between connection attempts in client mode. */
export const CLIENT_RETRY_MS = 500;

export type DaemonErrorCode =
  | "SOCKET_DIR_MISSING"
  | "SOCKET_PATH_UNUSABLE"
  | "SOCKET_DIR_UNSAFE"
  | "SOCKET_IN_USE"
  | "SOCKET_PATH_TAKEN"
  | "SOCKET_LISTEN_FAILED"
  | "I2C_ADAPTER_MISSING"
  | "I2C_ADAPTER_OPEN"
  | "I2C_ADDRESS_BUSY"
  | "I2C_ADDRESS_CHECK"
  | "I2C_DEVICE_LOCKED"
  | "I2C_LOCK_FAILED"
  | "SOCKET_PERMISSIONS"
  | "SOCKET_INHERITED_BAD"
  | "BAD_CONFIG"
  | "DATA_PLANE_FAILED"
  | "HANDOVER_FAILED"
  | PrivilegeError["code"];

/** Codes that mean "the configuration cannot work" rather than "something failed while running". */
const CONFIG_ERRORS: ReadonlySet<DaemonErrorCode> = new Set([
  "SOCKET_DIR_MISSING",
  "SOCKET_PATH_UNUSABLE",
  "SOCKET_DIR_UNSAFE",
  // Like a locked device: the path must change, or the other process must stop.
  "SOCKET_IN_USE",
  "SOCKET_PATH_TAKEN",
  "I2C_ADAPTER_MISSING",
  "I2C_ADDRESS_BUSY",
  "I2C_DEVICE_LOCKED",
  "I2C_LOCK_FAILED",
  "SOCKET_PERMISSIONS",
  "SOCKET_INHERITED_BAD",
  "BAD_CONFIG",
  "PRIVILEGE_UNKNOWN_NAME",
  "PRIVILEGE_NOT_ROOT",
]);

/** How long in-flight host transfers may run after SIGTERM/SIGINT before they are failed. */
export const STOP_GRACE_MS = 2000;
/** After failing them: how long to wait for their chains to go back. */
const ABORT_SETTLE_MS = 1000;
/** How long a data-plane thread gets to close its devices and end. */
const SET_STOP_MS = 2000;

/** The daemon cannot start. `message` is meant for the user as is. */
export class DaemonError extends CodedError<DaemonErrorCode> {
  /** True when the command line must change (main.ts exits with the usage status). */
  get isConfigError(): boolean {
    return CONFIG_ERRORS.has(this.code);
  }
}

export interface RunningDaemon {
  readonly config: DaemonConfig;
  /** Every device served (all lists), -l ones first, then the config file's. */
  readonly devices: readonly DeviceConfig[];
  /** The device lists in use (the last reload's). */
  readonly deviceLists: DeviceLists;
  /**
   * Re-reads --config: new connections get the new lists; current ones keep theirs. A changed
   * device with a backing file is one image of that file for both (ResourcePool): what either
   * guest writes, the other reads, and the file gets it once. A configuration that cannot be built
   * is logged and ignored. Resolves true when the new one is in use.
   */
  reload(): Promise<boolean>;
  /**
   * Graceful stop: in-flight transfers get `graceMs` to finish, then fail with ERR; their chains go
   * back to the guests; then everything is closed (socket files removed). Resolves false when a
   * data-plane thread is still stuck in a system call: only ending the process ends it.
   */
  stop(graceMs?: number): Promise<boolean>;
  /**
   * Rejects (DaemonError DATA_PLANE_FAILED) when a data-plane thread ends on its own: its guests are
   * not served any more, so the daemon stops and exits with a failure for its service manager to see.
   */
  readonly failed: Promise<never>;
  /** Fails every in-flight transfer now (a second stop signal). */
  abort(): void;
  /** Stops serving at once: servers closed (socket files removed), connections dropped, adapters closed. */
  close(): void;
  /**
   * Gives everything up for a successor: accepting stops, each front-end is handed over once its
   * chains in flight are done (their rings stopped where they stand), the emulated chips' states
   * are saved, the device sets close (backing files written, host adapters and locks released).
   * Resolves what to hand over.
   */
  handOver(): Promise<DaemonHandover>;
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
  if (err instanceof DeviceLockError) return new DaemonError(err.code, err.message, { cause: err });
  if (err instanceof PrivilegeError) return new DaemonError(err.code, err.message, { cause: err });
  // A device set's thread built its devices: its errors arrive by name and code.
  if (err instanceof Error && "code" in err && typeof err.code === "string") {
    if (err.name === ConfigError.name) {
      return new DaemonError("BAD_CONFIG", err.message, { cause: err });
    }
    if (err.name === HostBusError.name || err.name === DeviceLockError.name) {
      return new DaemonError(err.code as DaemonErrorCode, err.message, { cause: err });
    }
  }
  return err;
}

const SOCKET_FILE_ERRORS: Readonly<Record<SocketFileError["code"], DaemonErrorCode>> = {
  ENOENT: "SOCKET_DIR_MISSING",
  EPATH: "SOCKET_PATH_UNUSABLE",
  EUNSAFE: "SOCKET_DIR_UNSAFE",
  EADDRINUSE: "SOCKET_IN_USE",
  EEXIST: "SOCKET_PATH_TAKEN",
  EPERM: "SOCKET_PERMISSIONS",
  ELISTEN: "SOCKET_LISTEN_FAILED",
};

/** What to do about a refused socket path; `option` is the one that gave the path. */
const SOCKET_FILE_ADVICE: Partial<Readonly<Record<DaemonErrorCode, (option: string) => string>>> = {
  SOCKET_IN_USE: (option) => ` (another daemon serves it; stop it or choose another ${option})`,
  SOCKET_DIR_MISSING: (option) => ` (choose another ${option})`,
  SOCKET_PATH_UNUSABLE: (option) => ` (choose another ${option})`,
  SOCKET_DIR_UNSAFE: () =>
    " (use a directory only root or the daemon's user can write to, such as a RuntimeDirectory)",
};

function socketFileToDaemonError(err: SocketFileError, option: string): DaemonError {
  const code = SOCKET_FILE_ERRORS[err.code];
  const advice = SOCKET_FILE_ADVICE[code]?.(option) ?? "";
  return new DaemonError(code, `${err.message}${advice}`, { cause: err });
}

/** The option that names each output file. */
const OUTPUT_OPTIONS: Readonly<Record<OutputOpenError["code"], string>> = {
  ETRACE: "--trace-file",
  EPCAP: "--pcap",
};

/** --trace, --pcap and the counters the control socket serves; null when all are off. */
function openObservability(config: DaemonConfig, logger: Logger): Observability | null {
  try {
    return Observability.open({
      trace: config.trace,
      traceMaxSize: config.traceMaxSize,
      traceMaxFiles: config.traceMaxFiles,
      pcap: config.pcap,
      pcapMaxSize: config.pcapMaxSize,
      pcapMaxFiles: config.pcapMaxFiles,
      counters: config.controlSocket !== undefined,
      logger: logger.child("trace"),
    });
  } catch (err) {
    if (!(err instanceof OutputOpenError)) throw err;
    throw new DaemonError("BAD_CONFIG", `${OUTPUT_OPTIONS[err.code]}: ${err.message}`, {
      cause: err,
    });
  }
}

export interface StartOptions {
  /** Adapter name → number for "bus" names in the config file (default: the sysfs lookup). */
  readonly resolveAdapter?: (name: string) => number;
  /**
   * Sockets and connections a predecessor handed over (or this process, after a handover that
   * failed): served as they stand instead of new ones. `commit` (a successor) is awaited once the
   * devices are up, before anything is served: it resolves when the predecessor has let go.
   */
  readonly handover?: { readonly handover: DaemonHandover; readonly commit?: () => Promise<void> };
  /**
   * The device lists to serve instead of reading them (-l, --config): a daemon whose successor
   * failed serves on with what it served before, whatever the files say now.
   */
  readonly deviceLists?: DeviceLists;
}

/** The device lists of a configuration, and the directory its relative paths resolve in. */
export interface DeviceLists {
  readonly lists: SocketDeviceLists;
  readonly baseDir: string;
}

/**
 * The device lists: the -l list merged with the --config file's "devices" as the default, the file's
 * "sockets" lists per socket, and the directory relative paths resolve in (the config file's, else
 * the current directory). Throws ConfigError.
 */
export function collectDeviceLists(
  config: DaemonConfig,
  options: StartOptions = {},
): { lists: SocketDeviceLists; baseDir: string } {
  const fromList = devicesFromGroups(config.deviceGroups);
  if (config.configFile === undefined) {
    return { lists: { defaults: fromList, sockets: new Map() }, baseDir: process.cwd() };
  }
  const resolveAdapter = options.resolveAdapter ?? ((name: string) => resolveSysfsAdapter(name));
  const file = loadConfigFile(config.configFile, { resolveAdapter });
  return {
    lists: { defaults: mergeDevices(fromList, file.devices), sockets: file.sockets },
    baseDir: file.dir,
  };
}

/**
 * A user or group name or number → its id (names from /etc/passwd or /etc/group, the third field).
 * Throws DaemonError naming `option`.
 */
function resolveId(text: string, file: string, what: string, option: string): number {
  if (/^[0-9]+$/.test(text)) return Number(text);
  const id = lookupId(text, file);
  if (id !== undefined) return id;
  throw new DaemonError(
    "SOCKET_PERMISSIONS",
    `${option}: no ${what} named "${text}" in ${file} (give the number instead)`,
  );
}

/** Group name or number → gid (names from /etc/group). Throws DaemonError. */
export function resolveGroup(
  group: string,
  groupFile = GROUP_FILE,
  option = "--socket-group",
): number {
  return resolveId(group, groupFile, "group", option);
}

/** User name or number → uid (names from /etc/passwd). Throws DaemonError. */
export function resolveUser(
  user: string,
  passwdFile = PASSWD_FILE,
  option = "--allow-peer-uid",
): number {
  return resolveId(user, passwdFile, "user", option);
}

/** Mode and group of a socket file: 0600 by default, 0660 when a group is given without a mode. */
function socketAccess(mode: number | undefined, group: string | undefined, option: string) {
  const gid = group === undefined ? undefined : resolveGroup(group, GROUP_FILE, option);
  return { mode: mode ?? (gid === undefined ? 0o600 : 0o660), gid } satisfies SocketFileAccess;
}

/** The option that names the vhost-user sockets' paths (the VMM's, in client mode). */
const SOCKET_PATH_OPTION = "--socket-path";

/**
 * Runs `open` (a server or client constructor), turning socket-file refusals into DaemonError that
 * name `option`, the option that gave the path.
 */
function openSocket<T>(option: string, open: () => T): T {
  try {
    return open();
  } catch (err) {
    if (err instanceof SocketFileError) throw socketFileToDaemonError(err, option);
    throw err;
  }
}

/**
 * Loads the device lists and user model modules, opens the buses (taking the host-device locks), then
 * serves every socket and the control socket. Throws DaemonError with nothing left open.
 */
export async function startDaemon(
  config: DaemonConfig,
  logger: Logger,
  options: StartOptions = {},
): Promise<RunningDaemon> {
  const opened: Closable[] = [];
  /** The vhost-user sockets by index, and the control socket: what a handover gives up. */
  const hosts: { index: number; host: VhostUserClient | VhostUserServer }[] = [];
  let control: ControlServer | null = null;
  const handedOver = options.handover?.handover;
  /** Handed-over sockets not served (yet): closed, and their files removed, if nothing takes them. */
  const unclaimed = new Set(handedOver?.sockets ?? []);
  let unclaimedControl = handedOver?.control ?? null;
  /**
   * Whether this process may remove files handed over: not while a predecessor may still take them
   * back (a successor that fails before "go" leaves everything as it was).
   */
  let mayRemoveFiles = options.handover?.commit === undefined;
  let removeStoredListeners = () => {};
  let sets: DeviceSets | null = null;
  let fail: (error: DaemonError) => void = () => {};
  const failed = new Promise<never>((_, reject) => {
    fail = reject;
  });
  // Nobody waits for it before the daemon runs: a failure is not an unhandled rejection meanwhile.
  failed.catch(() => undefined);
  /** Every distinct device of the configuration in use (the lists its sockets use). */
  let devices: readonly DeviceConfig[] = [];
  let deviceLists: DeviceLists | null = null;
  /** --scenario: started by the first front-end connection. */
  let scenario: ScenarioPlayer | null = null;

  try {
    // --user: the names are looked up, and root checked, before anything is opened.
    let identity: Identity | undefined;
    if (config.runAs !== undefined) {
      requireRoot();
      identity = resolveIdentity(config.runAs.user, config.runAs.group);
    }
    const observability = openObservability(config, logger);
    if (observability !== null) opened.push(observability);
    const { lists, baseDir } = options.deviceLists ?? collectDeviceLists(config, options);
    deviceLists = { lists, baseDir };
    const running = await DeviceSets.start(lists, baseDir, config.socketCount, {
      logger,
      lockDir: lockDirectory(process.env, config.lockDir),
      allowUnsealedMemory: config.allowUnsealedMemory,
      observer: observability,
      restore: handedOver?.chips,
      onThreadFailed: (set, error) => {
        logger.error("a data-plane thread ended: its guests are not served; stopping", {
          set,
          error: error.message,
        });
        fail(
          new DaemonError(
            "DATA_PLANE_FAILED",
            `the data-plane thread of device set ${set} ended: ${error.message}`,
            { cause: error },
          ),
        );
      },
    });
    sets = running;
    if (options.handover?.commit !== undefined) {
      try {
        await options.handover.commit();
        mayRemoveFiles = true;
      } catch (error) {
        throw new DaemonError("HANDOVER_FAILED", (error as Error).message, { cause: error });
      }
      logger.info("took over from the predecessor");
    }
    devices = devicesOf(lists, socketIndexes(config.socketCount));
    if (config.scenarioFile !== undefined) {
      const path = resolve(config.scenarioFile);
      const steps = loadScenario(path);
      // Checked against the chips now: a typo in an address or a property exits 2 before serving.
      checkScenario(steps, await running.chips.directory(), path);
      scenario = scenarioPlayer(steps, chipAccess(running.chips), logger.child("scenario"), path);
    }
    const factory: VhostUserDeviceFactory = (socketIndex) => {
      // The timeline starts with the VMM: its first connection to any socket.
      scenario?.start();
      return running.device(socketIndex);
    };
    const fdStore = config.fdStore ? serviceFdStore(logger) : undefined;
    /** Listening sockets this process bound, kept in the fd store (removed at a real stop). */
    const storedListeners: string[] = [];
    /** `fd` under `name` in the store, unless it is there already (handed over, or restored). */
    const storeListener = (name: string, fd: number, alreadyStored: boolean) => {
      if (fdStore === undefined) return;
      if (!alreadyStored) fdStore.store(name, fd);
      storedListeners.push(name);
    };
    removeStoredListeners = () => {
      for (const name of storedListeners.splice(0)) {
        try {
          fdStore?.remove(name);
        } catch {
          // The service manager is gone: it holds nothing any more.
        }
      }
    };
    const access = socketAccess(config.socketMode, config.socketGroup, "--socket-group");
    const peers: PeerIds = {
      uids: config.allowPeerUids.map((user) => resolveUser(user)),
      gids: config.allowPeerGids.map((group) =>
        resolveGroup(group, GROUP_FILE, "--allow-peer-gid"),
      ),
    };

    config.socketPaths.forEach((path, index) => {
      const options = {
        logger: logger.child(`socket${index}`),
        peers,
        ...(config.handshakeTimeoutMs !== undefined && {
          handshakeTimeoutMs: config.handshakeTimeoutMs,
        }),
        backend: {
          allowUnsealedMemory: config.allowUnsealedMemory,
          offerPackedRing: config.packedRing,
        },
        ...(fdStore !== undefined && { fdStore }),
        busyNotice: (reason: string) =>
          `${HELP.name}: refused: ${reason}; -c ${config.socketCount + 1} serves one more socket for another front-end`,
      };
      let host: VhostUserClient | VhostUserServer;
      /** This process bound the socket (rather than being handed or passed it). */
      let bound = false;
      const inheritedFd = config.socketFds?.[index];
      const handed = handedOver?.sockets.find(
        (socket) =>
          socket.index === index &&
          (socket.kind === "server"
            ? !config.clientMode &&
              (socket.server.path === path || socket.server.listener === inheritedFd)
            : config.clientMode && socket.path === path),
      );
      if (handed !== undefined) unclaimed.delete(handed);
      if (handed?.kind === "server") {
        host = openSocket(SOCKET_PATH_OPTION, () =>
          VhostUserServer.resume(handed.server, index, factory, { ...options, access }),
        );
      } else if (config.clientMode) {
        const resumed = handed?.kind === "client" ? handed.connection : null;
        options.logger.info(
          resumed !== null ? "serving the VMM connection handed over" : "connecting to the VMM",
          { path },
        );
        host = openSocket(
          SOCKET_PATH_OPTION,
          () =>
            new VhostUserClient(path, index, factory, {
              ...options,
              retryMs: CLIENT_RETRY_MS,
              unsafePath: config.clientUnsafePath,
              ...(resumed !== null && { resumed }),
            }),
        );
      } else if (inheritedFd !== undefined) {
        try {
          host = VhostUserServer.adopt(inheritedFd, index, factory, options);
        } catch (err) {
          if (!(err instanceof ServiceManagerError)) throw err;
          throw new DaemonError("SOCKET_INHERITED_BAD", err.message, { cause: err });
        }
      } else {
        host = openSocket(SOCKET_PATH_OPTION, () =>
          VhostUserServer.listen(path, index, factory, { ...options, access }),
        );
        bound = true;
      }
      if (host instanceof VhostUserServer) {
        options.logger.info("front-ends admitted", { allowed: host.peers.describe() });
      }
      opened.push(host);
      hosts.push({ index, host });
      const ownsFile = bound || (handed?.kind === "server" && handed.server.ownsFile);
      if (host instanceof VhostUserServer && ownsFile) {
        storeListener(`${LISTENER_STORE_NAME}${index}`, host.listenerFd, !bound);
      }
    });
    for (const socket of unclaimed) releaseUnclaimed(socket, logger, mayRemoveFiles);
    unclaimed.clear();
    if (config.controlSocket !== undefined) {
      const path = resolve(config.controlSocket);
      // Its own access: options meant for the VMM's sockets never open the control socket.
      const controlAccess = socketAccess(
        config.controlSocketMode,
        config.controlSocketGroup,
        "--control-socket-group",
      );
      // Asked at every command: after a reload it serves the current configuration's devices.
      const chips = chipAccess(running.chips);
      const controlOptions = {
        logger: logger.child("control"),
        access: controlAccess,
        ...(config.controlIdleTimeoutMs !== undefined && {
          idleTimeoutMs: config.controlIdleTimeoutMs,
        }),
        ...(observability !== null && {
          stats: async () => ({
            ...observability.stats(),
            unobservedTransfers: running.unobservedTransfers,
            logSuppressed: await running.logSuppressed(),
          }),
        }),
      };
      const handedControl = unclaimedControl?.path === path ? unclaimedControl : null;
      if (handedControl !== null) unclaimedControl = null;
      control = openSocket("--control-socket", () =>
        handedControl !== null
          ? ControlServer.resume(handedControl, chips, controlOptions)
          : ControlServer.listen(path, chips, controlOptions),
      );
      opened.push(control);
      storeListener(CONTROL_STORE_NAME, control.listenerFd, handedControl !== null);
    }
    if (unclaimedControl !== null) releaseUnclaimed(unclaimedControl, logger, mayRemoveFiles);
    unclaimedControl = null;
    if (identity !== undefined) {
      // Everything that needs root is open: adapters, locks, sockets, trace and backing files.
      dropPrivileges(identity);
      logger.info("gave up root", {
        uid: identity.uid,
        gid: identity.gid,
        groups: identity.groups.join(","),
      });
    }
    const guests = running.guests();
    logger.info("serving", {
      devices: [...new Set(guests.map((g) => g.addresses.map(hex).join(",")))].join(" | "),
      buses: [...new Set(guests.flatMap((g) => g.buses))].join(","),
      sockets: config.socketCount,
      mode: config.clientMode ? "client" : "server",
      threads: running.partition.length,
    });
  } catch (err) {
    removeStoredListeners();
    closeAll(opened, logger);
    for (const socket of unclaimed) releaseUnclaimed(socket, null, mayRemoveFiles);
    if (unclaimedControl !== null) releaseUnclaimed(unclaimedControl, null, mayRemoveFiles);
    await sets?.close(SET_STOP_MS);
    throw asDaemonError(err);
  }

  const deviceSets = sets;
  let closed = false;
  /** Servers first (no new connection), then the threads (devices closed, files flushed). */
  const closeAsync = async (): Promise<boolean> => {
    if (closed) return true;
    closed = true;
    scenario?.stop();
    removeStoredListeners();
    closeAll(opened, logger);
    return deviceSets.close(SET_STOP_MS);
  };
  return {
    config,
    failed,
    get devices() {
      return devices;
    },
    get deviceLists() {
      return deviceLists as DeviceLists;
    },
    async reload() {
      if (config.configFile === undefined) {
        logger.info("SIGHUP: no --config file to reload");
        return false;
      }
      try {
        const { lists, baseDir } = collectDeviceLists(config, options);
        await deviceSets.reload(lists, baseDir, config.socketCount);
        devices = devicesOf(lists, socketIndexes(config.socketCount));
        deviceLists = { lists, baseDir };
      } catch (err) {
        logger.error("reload failed, keeping the current configuration", {
          error: err instanceof Error ? err.message : String(err),
        });
        return false;
      }
      logger.info("reloaded the configuration: new connections get the new device lists", {
        file: config.configFile,
      });
      return true;
    },
    async stop(graceMs = STOP_GRACE_MS) {
      if (!(await deviceSets.idle(graceMs))) {
        logger.warn("transfers still running after the grace period: failing them", {
          graceMs,
        });
        deviceSets.abort();
        await deviceSets.idle(ABORT_SETTLE_MS);
      }
      return closeAsync();
    },
    abort: () => deviceSets.abort(),
    close: () => void closeAsync(),
    async handOver() {
      closed = true;
      scenario?.stop();
      const sockets = await Promise.all(
        hosts.map(async ({ index, host }): Promise<SocketHandover> => {
          if (host instanceof VhostUserServer) {
            return { index, kind: "server", server: await host.handOver() };
          }
          return { index, kind: "client", path: host.path, connection: await host.handOver() };
        }),
      );
      const controlHandover = control?.handOver() ?? null;
      // No ring runs and no control command comes any more: the chips are as the successor gets them.
      const chips = await deviceSets.saveChips();
      // The successor opens them again: trace files, host adapters, locks, backing files.
      closeAll(opened, logger);
      await deviceSets.close(SET_STOP_MS);
      return { sockets, control: controlHandover, chips };
    },
  };
}

/** fd-store names of the listening sockets the daemon binds (socket index appended) and its control socket. */
export const LISTENER_STORE_NAME = `${STORE_NAME_PREFIX}listen`;
export const CONTROL_STORE_NAME = `${STORE_NAME_PREFIX}control`;

/** The service manager's fd store, or undefined (with a warning) when there is no service manager. */
export function serviceFdStore(logger: Logger): FdStore | undefined {
  if (!process.env.NOTIFY_SOCKET) {
    logger.warn("--fd-store: no service manager ($NOTIFY_SOCKET unset): nothing is stored");
    return undefined;
  }
  return {
    store: (name, fd) => {
      storeFd(process.env, name, fd);
    },
    remove: (name) => {
      removeStoredFds(process.env, name);
    },
  };
}

/** A socket handed over that this process does not serve: closed, and its file removed if ours. */
function releaseUnclaimed(
  socket: SocketHandover | ControlHandover,
  logger: Logger | null,
  removeFile: boolean,
): void {
  if (!("kind" in socket)) {
    closeHandover({ sockets: [], control: socket });
    if (removeFile) removeSocketFile(socket.path);
    return;
  }
  const path = socket.kind === "server" ? socket.server.path : socket.path;
  if (removeFile) {
    logger?.info("a socket handed over is not in the configuration any more: closing it", { path });
  }
  closeHandover({ sockets: [socket], control: null });
  if (removeFile && socket.kind === "server" && socket.server.ownsFile) removeSocketFile(path);
}

function removeSocketFile(path: string): void {
  try {
    SocketFile.existing(path).remove();
  } catch {
    // Gone already, or not a socket any more: nothing of ours to remove.
  }
}

const STOP_SIGNALS = ["SIGTERM", "SIGINT"] as const;
/** Asks the daemon to hand over to a successor started from the installed program. */
export const HANDOVER_SIGNAL = "SIGUSR2";

/** Moments a service manager is told about (main.ts sends them as sd_notify states). */
export interface LifecycleHooks {
  /** Every socket is served: the daemon is ready for VMMs. */
  readonly onReady?: (daemon: RunningDaemon) => void;
  /** A SIGHUP reload starts, and when it has ended. */
  readonly onReloading?: () => void;
  readonly onReloaded?: (inUse: boolean) => void;
  /** A stop signal arrived: transfers are being finished. */
  readonly onStopping?: () => void;
  /** A successor (pid) is prepared and about to serve: it is the daemon's main process from now on. */
  readonly onHandedOver?: (pid: number) => void;
}

/**
 * Starts the daemon and resolves once SIGTERM or SIGINT has stopped it gracefully (a second stop
 * signal fails in-flight transfers at once), or once a successor has taken over (SIGUSR2). SIGHUP
 * reloads the config file. A successor that fails to take over leaves this process serving on.
 */
export async function runDaemonUntilSignal(
  config: DaemonConfig,
  logger: Logger,
  options: StartOptions & LifecycleHooks = {},
): Promise<boolean> {
  // Handlers first: a stop signal that arrives while the daemon starts (sockets may already exist)
  // must still mean a clean stop, never the default action that kills it and leaves socket files.
  const stopSignal = new Promise<NodeJS.Signals>((resolveSignal) => {
    for (const name of STOP_SIGNALS) process.once(name, () => resolveSignal(name));
  });
  let daemon: RunningDaemon | null = null;
  let handing = false;
  const onHangup = () => {
    if (daemon === null || handing) return; // still starting: the configuration being loaded is the new one
    logger.info("SIGHUP: reloading the configuration");
    options.onReloading?.();
    void daemon.reload().then((inUse) => options.onReloaded?.(inUse));
  };
  let requestHandover = () => {};
  const onHandoverSignal = () => {
    if (config.runAs !== undefined) {
      logger.warn(
        `${HANDOVER_SIGNAL}: no handover with --user: a successor could not open what needs root (use the service manager's User= instead)`,
      );
      return;
    }
    if (daemon === null || handing) {
      logger.info(`${HANDOVER_SIGNAL}: not now (starting, or a handover is under way)`);
      return;
    }
    requestHandover();
  };
  process.on("SIGHUP", onHangup);
  process.on(HANDOVER_SIGNAL, onHandoverSignal);
  let startOptions: StartOptions = options;
  try {
    for (;;) {
      const running = await startDaemon(config, logger, startOptions);
      daemon = running;
      options.onReady?.(running);
      let event: NodeJS.Signals | "handover";
      /** What this daemon handed out to a successor that then failed: it serves it again. */
      let handedOut: DaemonHandover | null = null;
      for (;;) {
        const handoverRequested = new Promise<"handover">((resolveRequest) => {
          requestHandover = () => resolveRequest("handover");
        });
        try {
          event = await Promise.race([stopSignal, running.failed, handoverRequested]);
        } catch (error) {
          // A data-plane thread died: stop serving everyone, then report it (exit 1).
          await running.stop(0);
          throw error;
        }
        if (event !== "handover") break;
        handing = true;
        logger.info(`${HANDOVER_SIGNAL}: starting a successor`);
        // Started first (Node and the program load meanwhile); the guests wait only from here on.
        const started = await startSuccessor({
          logger,
          activatedSockets: config.socketFds?.length ?? 0,
          ...(options.onHandedOver !== undefined && { beforeGo: options.onHandedOver }),
        });
        if (!started.ok) {
          // Nothing was stopped: this daemon serves on as it was.
          handing = false;
          continue;
        }
        logger.info("handing over to the successor");
        const handover = await running.handOver();
        const result = await started.successor.takeOver(handover);
        if (result.ok) {
          logger.info("handed over: the successor serves every socket", { pid: result.pid });
          return true;
        }
        handedOut = handover;
        break;
      }
      if (handedOut !== null) {
        // Serve again from what was handed over, as a successor would, with the same devices.
        daemon = null;
        startOptions = {
          ...options,
          handover: { handover: handedOut },
          deviceLists: running.deviceLists,
        };
        handing = false;
        continue;
      }
      for (const name of STOP_SIGNALS) {
        process.removeAllListeners(name);
        process.on(name, () => running.abort());
      }
      logger.info("stopping", { signal: event });
      options.onStopping?.();
      return await running.stop();
    }
  } finally {
    process.removeListener("SIGHUP", onHangup);
    process.removeListener(HANDOVER_SIGNAL, onHandoverSignal);
    for (const name of STOP_SIGNALS) process.removeAllListeners(name);
  }
}
