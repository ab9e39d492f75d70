#!/usr/bin/env node
/**
 * Entry point of the `vhost-device-i2c` command: argv → config → running daemon. Owns the process
 * side only: where log lines go, what is printed on stdout/stderr and the exit status
 * (0 = stopped by SIGTERM/SIGINT or help/version, 2 = the command line, device list, config file or a
 * model module cannot be run, 1 = any other failure); `control PATH CMD...` runs the control client
 * (src/control/client.ts decides its output and status). Must not hold protocol or device logic: daemon.ts wires the layers.
 * @module
 */

import { readFileSync } from "node:fs";
import { runControlCommand } from "../control/client.js";
import { resolveAdapter, sysfsRoot } from "../i2c/adapters.js";
import { createLogger } from "../log.js";
import { parseCommandLine, USAGE, UsageError } from "./args.js";
import { DaemonError, runDaemonUntilSignal } from "./daemon.js";

const PROGRAM = "vhost-device-i2c";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

function packageVersion(): string {
  const text = readFileSync(new URL("../../../package.json", import.meta.url), "utf8");
  const version: unknown = JSON.parse(text).version;
  return typeof version === "string" ? version : "unknown";
}

function fail(status: number, message: string, hint: boolean): number {
  process.stderr.write(`${PROGRAM}: error: ${message}\n`);
  if (hint) process.stderr.write(`Try '${PROGRAM} --help' for more information.\n`);
  return status;
}

export async function main(argv: readonly string[]): Promise<number> {
  const root = sysfsRoot(process.env);
  let command: ReturnType<typeof parseCommandLine>;
  try {
    command = parseCommandLine(argv, { resolveAdapter: (name) => resolveAdapter(name, root) });
  } catch (err) {
    if (err instanceof UsageError) return fail(EXIT_USAGE, err.message, true);
    throw err;
  }
  if (command.kind === "help") {
    process.stdout.write(USAGE);
    return EXIT_OK;
  }
  if (command.kind === "version") {
    process.stdout.write(`${PROGRAM} ${packageVersion()}\n`);
    return EXIT_OK;
  }
  if (command.kind === "control") {
    return runControlCommand(command.socketPath, command.words, process.stdout, process.stderr);
  }
  const logger = createLogger(command.config.logLevel, process.stderr);
  try {
    await runDaemonUntilSignal(command.config, logger, {
      resolveAdapter: (name) => resolveAdapter(name, root),
    });
    return EXIT_OK;
  } catch (err) {
    if (err instanceof DaemonError) {
      return fail(err.isConfigError ? EXIT_USAGE : EXIT_FAILURE, err.message, false);
    }
    const detail = err instanceof Error ? (err.stack ?? err.message) : String(err);
    return fail(EXIT_FAILURE, `unexpected failure: ${detail}`, false);
  }
}

// Exit explicitly: after a stop nothing may keep the process alive (stderr is synchronous on pipes
// and files, so no message is lost).
main(process.argv.slice(2)).then(
  (status) => process.exit(status),
  (err: unknown) => {
    const detail = err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`${PROGRAM}: error: ${detail}\n`);
    process.exit(EXIT_FAILURE);
  },
);
