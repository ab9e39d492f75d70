#!/usr/bin/env node
/**
 * Entry point of the `vhost-device-i2c` command: argv → config → running daemon. Owns the process
 * side only: where log lines go, what is printed on stdout/stderr and the exit status
 * (0 = stopped by SIGTERM/SIGINT or help/version, 2 = the command line, device list, config file, a
 * model module or a path cannot be used, or a host device or socket is another process's (locked, in
 * use): what the user must change; 1 = any other failure); `control PATH CMD...` runs the control client
 * (src/control/client.ts decides its output and status); `demo` runs src/cli/demo.ts. Also the
 * service-manager side: sockets inherited through LISTEN_FDS (the variables are then removed from the
 * environment), readiness and status sent to $NOTIFY_SOCKET, and the log style (logs go to stderr, as
 * plain text or JSON; stdout
 * is kept for --trace and command output; under journald each line carries its syslog priority).
 * Must not hold protocol or device logic: daemon.ts wires the layers.
 * @module
 */

import { fstatSync } from "node:fs";
import { ConfigError } from "../config/errors.js";
import { runControlCommand } from "../control/client.js";
import { resolveAdapter } from "../i2c/adapters.js";
import { createLogger, isJournalStream, type Logger, type LogStyle } from "../log.js";
import { packageVersion } from "../package-version.js";
import { NativeLoadError, native } from "../sys/native.js";
import {
  type InheritedFds,
  inheritedFds,
  LISTEN_ENV_NAMES,
  notifyServiceManager,
  ServiceManagerError,
} from "../sys/service-manager.js";
import { DataPlane } from "../vhost-user/data-plane.js";
import { CAPABILITIES, type DaemonConfig, HELP, parseCommandLine, UsageError } from "./args.js";
import {
  collectDeviceLists,
  DaemonError,
  type LifecycleHooks,
  runDaemonUntilSignal,
  serviceFdStore,
} from "./daemon.js";
import { runDemo } from "./demo.js";
import { handoverFromStore, type StoredFds, splitInherited } from "./fd-store.js";
import { type DaemonHandover, predecessorLink, type ReceivedHandover } from "./handover.js";
import { helpWidth, renderHelp } from "./help.js";

const PROGRAM = "vhost-device-i2c";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

function fail(status: number, message: string, hint: boolean): number {
  process.stderr.write(`${PROGRAM}: error: ${message}\n`);
  if (hint) process.stderr.write(`Try '${PROGRAM} --help' for more information.\n`);
  return status;
}

/** Log lines carry their syslog priority when stderr is the journal stream systemd gave us. */
function logStyle(config: DaemonConfig): LogStyle {
  let journal = false;
  try {
    journal = isJournalStream(process.env, fstatSync(process.stderr.fd));
  } catch {
    // stderr closed or not a file: no journal
  }
  return { format: config.logFormat, syslogPriority: journal };
}

/**
 * sd_notify states for the daemon's lifecycle. A failed notification is logged, never fatal: the
 * service manager then sees a start time-out, which names the problem better than an exit.
 */
function serviceNotifier(config: DaemonConfig, logger: Logger): LifecycleHooks {
  const notify = (state: string) => {
    try {
      notifyServiceManager(process.env, state);
    } catch (err) {
      logger.warn("cannot notify the service manager", {
        socket: process.env.NOTIFY_SOCKET,
        error: err instanceof Error ? err.message : String(err),
      });
    }
  };
  const serving = `STATUS=serving ${config.socketCount} socket(s)`;
  return {
    onReady: () => notify(`READY=1\n${serving}`),
    onReloading: () => notify("RELOADING=1\nSTATUS=reloading the configuration"),
    onReloaded: (inUse) =>
      notify(`READY=1\n${inUse ? serving : `${serving} (reload failed: configuration kept)`}`),
    onStopping: () => notify("STOPPING=1\nSTATUS=stopping: finishing transfers"),
    onHandedOver: (pid) => notify(`MAINPID=${pid}\nSTATUS=handed over to pid ${pid}`),
  };
}

export async function main(argv: readonly string[]): Promise<number> {
  let inherited: InheritedFds | null;
  let command: ReturnType<typeof parseCommandLine>;
  let received: (Pick<ReceivedHandover, "handover"> & Partial<ReceivedHandover>) | null = null;
  const badStates: string[] = [];
  let stored: StoredFds | null = null;
  const parse = (fds: InheritedFds | null) =>
    parseCommandLine(argv, {
      resolveAdapter: (name) => resolveAdapter(name),
      ...(fds !== null && { inheritedFds: fds.fds }),
    });
  try {
    const predecessor = predecessorLink(process.env);
    if (predecessor !== null) {
      // A successor: everything that can be checked is checked before the predecessor stops its
      // guests (a configuration that no longer parses must not cost them a thing).
      const first = parse(predecessor.activated);
      if (first.kind === "run") collectDeviceLists(first.config, { resolveAdapter });
      try {
        received = await predecessor.receive((index, error) =>
          badStates.push(`socket ${index}: ${error.message}`),
        );
      } catch (err) {
        return fail(EXIT_FAILURE, err instanceof Error ? err.message : String(err), false);
      }
      // Socket activation's sockets came with the handover: the command line serves those fds.
      inherited = activatedSockets(received.handover);
    } else {
      // After a crash the fd store comes back beside socket activation's sockets.
      const split = splitInherited(inheritedFds(process.env, process.pid));
      inherited = split.activation;
      stored = split.stored;
    }
    command = parse(inherited);
  } catch (err) {
    if (err instanceof UsageError) return fail(EXIT_USAGE, err.message, true);
    if (err instanceof ServiceManagerError) return fail(EXIT_USAGE, err.message, false);
    if (err instanceof ConfigError) return fail(EXIT_USAGE, err.message, false);
    throw err;
  }
  // Like sd_listen_fds(1): anything the daemon starts must not take the sockets for its own.
  for (const name of LISTEN_ENV_NAMES) delete process.env[name];
  if (command.kind === "help") {
    process.stdout.write(renderHelp(HELP, helpWidth(process.stdout)));
    return EXIT_OK;
  }
  if (command.kind === "version") {
    process.stdout.write(`${PROGRAM} ${packageVersion()}\n`);
    return EXIT_OK;
  }
  if (command.kind === "capabilities") {
    process.stdout.write(`${JSON.stringify(CAPABILITIES, null, 2)}\n`);
    return EXIT_OK;
  }
  // Everything else needs the addon: when it cannot load, that is the error, with what fixes it,
  // not a failure of whatever call used it first.
  try {
    native();
  } catch (err) {
    if (err instanceof NativeLoadError) return fail(EXIT_FAILURE, err.message, false);
    throw err;
  }
  if (command.kind === "control") {
    return runControlCommand(command.socketPath, command.words, process.stdout, process.stderr);
  }
  if (command.kind === "demo") return runDemo();
  const { config } = command;
  const logger = createLogger(config.logLevel, process.stderr, "", logStyle(config));
  for (const bad of badStates) {
    logger.error("a connection handed over has a state that cannot be used: it is closed", {
      detail: bad,
    });
  }
  if (stored !== null) {
    const store = serviceFdStore(logger) ?? { store: () => undefined, remove: () => undefined };
    const handover = handoverFromStore(stored, config, store, (connection, error) =>
      logger.error("a connection in the fd store cannot be resumed: it is disconnected", {
        connection,
        error: error.message,
      }),
    );
    const count = handover.sockets.filter((socket) =>
      socket.kind === "server" ? socket.server.connection !== null : socket.connection !== null,
    ).length;
    logger.info("restarting from the fd store: resuming the guests", { connections: count });
    received = { handover };
  }
  if (inherited !== null && config.socketFds === inherited.fds) {
    logger.info("serving sockets passed by the service manager", {
      fds: inherited.fds.join(","),
      names: inherited.names.join(":") || undefined,
    });
  }
  try {
    await runDaemonUntilSignal(config, logger, {
      resolveAdapter: (name) => resolveAdapter(name),
      ...serviceNotifier(config, logger),
      ...(received !== null && { handover: received }),
    });
    return EXIT_OK;
  } catch (err) {
    if (err instanceof DaemonError) {
      return fail(err.isConfigError ? EXIT_USAGE : EXIT_FAILURE, err.message, false);
    }
    return fail(EXIT_FAILURE, unexpectedFailure(err), false);
  }
}

/**
 * A failure no check foresaw (a bug): its message, then where it happened, for a report. The stack's
 * first line ("SysError: ...") is left out: class names mean nothing to a user.
 */
function unexpectedFailure(err: unknown): string {
  if (!(err instanceof Error)) return `unexpected failure: ${String(err)}`;
  const frames = (err.stack ?? "").split("\n").filter((line) => /^\s+at /.test(line));
  return [`unexpected failure: ${err.message}`, ...frames].join("\n");
}

/** The listening sockets of a handover that came from socket activation ("fd:N"), in socket order. */
function activatedSockets(handover: DaemonHandover): InheritedFds | null {
  const servers = handover.sockets
    .flatMap((socket) =>
      socket.kind === "server" ? [{ index: socket.index, ...socket.server }] : [],
    )
    .sort((a, b) => a.index - b.index);
  if (servers.length === 0 || !servers.every((server) => server.path.startsWith("fd:")))
    return null;
  return { fds: servers.map((server) => server.listener), names: [] };
}

// Exit explicitly: after a stop nothing may keep the process alive (stderr is synchronous on pipes
// and files, so no message is lost).
main(process.argv.slice(2)).then(
  (status) => {
    // Node's exit waits for every worker thread: one stuck in a transfer would keep it forever.
    if (DataPlane.stuck > 0) native().exitNow(status);
    process.exit(status);
  },
  (err: unknown) => {
    process.stderr.write(`${PROGRAM}: error: ${unexpectedFailure(err)}\n`);
    process.exit(EXIT_FAILURE);
  },
);
