#!/usr/bin/env node
/**
 * `vi2c`: i2c-tools for a vhost-user-i2c backend, no VM needed. It plays the VMM and the guest's
 * i2c-virtio driver against the backend's socket (any vhost-user-i2c backend) and offers i2cdetect,
 * i2cdump, i2cget, i2cset and i2ctransfer as `vi2c detect|dump|get|set|transfer`, with their
 * arguments and output, plus `vi2c info` (what the backend offers). This file owns the process: argv,
 * stdin prompts, stdout/stderr and the exit status. Must not hold command logic (commands.ts) or
 * protocol code (the in-repo frontend).
 * @module
 */

import { readSync, realpathSync, type Stats, statSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { helpWidth } from "../cli/help.js";
import { packageVersion } from "../package-version.js";
import { hasCode } from "../sys/errors.js";
import { FrontendError } from "../vhost-user/frontend.js";
import { type Invocation, parseInvocation, UsageError } from "./args.js";
import { type CommandIo, ExitStatus, runCommand } from "./commands.js";
import { usageText } from "./help.js";
import {
  type BackendOffer,
  BackendSession,
  FEATURE_NAMES,
  PROTOCOL_FEATURE_NAMES,
  probeBackend,
} from "./session.js";

/** One answer line from stdin, as i2c-tools' user_ack reads it (EOF: no). */
function confirmOnStdin(defaultYes: boolean): boolean {
  const byte = Buffer.alloc(1);
  let line = "";
  for (;;) {
    let count: number;
    try {
      count = readSync(0, byte, 0, 1, null);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EAGAIN") {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
        continue;
      }
      return false;
    }
    if (count === 0) {
      if (line === "") return false;
      break;
    }
    const char = byte.toString("latin1");
    if (char === "\n") break;
    line += char;
  }
  const answer = line[0];
  if (answer === "y" || answer === "Y") return true;
  if (answer === "n" || answer === "N") return false;
  return defaultYes;
}

const processIo: CommandIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  confirm: confirmOnStdin,
};

function bitList(mask: bigint, names: ReadonlyMap<number, string>): string {
  let out = "";
  for (let bit = 0; bit < 64; bit++) {
    if ((mask & (1n << BigInt(bit))) === 0n) continue;
    out += `  bit ${String(bit).padEnd(3)} ${names.get(bit) ?? "(unknown)"}\n`;
  }
  return out;
}

function hex64(value: bigint): string {
  return `0x${value.toString(16).padStart(16, "0")}`;
}

async function info(offer: BackendOffer, socket: string, io: CommandIo): Promise<number> {
  let text = `socket: ${socket}\nfeatures: ${hex64(offer.features)}\n`;
  text += bitList(offer.features, FEATURE_NAMES);
  if (offer.protocolFeatures === null) {
    text += "protocol features: none (VHOST_USER_F_PROTOCOL_FEATURES not offered)\n";
  } else {
    text += `protocol features: ${hex64(offer.protocolFeatures)}\n`;
    text += bitList(offer.protocolFeatures, PROTOCOL_FEATURE_NAMES);
  }
  const { queueNum, maxMemSlots } = offer.negotiated;
  text += `queues: ${queueNum ?? "not reported (no MQ)"}\n`;
  text += `memory slots: ${maxMemSlots ?? "not reported (no CONFIGURE_MEM_SLOTS)"}\n`;
  io.out(text);
  return ExitStatus.OK;
}

/** Runs vi2c with `argv` (without node and the script); resolves with the exit status. */
export async function main(argv: readonly string[], io: CommandIo = processIo): Promise<number> {
  let invocation: Invocation;
  try {
    invocation = parseInvocation(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.err(`${error.message}\n${usageText(error.topic, helpWidth(process.stderr))}`);
    return ExitStatus.USAGE;
  }
  const { command, options } = invocation;
  if (command.name === "help") {
    io.out(usageText(command.topic, helpWidth(process.stdout)));
    return ExitStatus.OK;
  }
  if (command.name === "version") {
    io.out(`vi2c ${packageVersion()}\n`);
    return ExitStatus.OK;
  }
  if (command.name === "dump" && command.modeDefaulted) {
    io.err("No size specified (using byte-data access)\n");
  }
  const unreachable = (error: unknown) => {
    const why = connectFailure(options.socket, error) ?? describe(error);
    io.err(`Error: Could not talk to the backend at ${options.socket}: ${why}\n`);
    return ExitStatus.FAILED;
  };
  try {
    if (command.name === "info") {
      let offer: BackendOffer;
      try {
        offer = await probeBackend(options.socket, options.timeoutMs);
      } catch (error) {
        return unreachable(error);
      }
      return info(offer, options.socket, io);
    }
    let session: BackendSession;
    try {
      session = await BackendSession.open(options.socket, options);
    } catch (error) {
      return unreachable(error);
    }
    try {
      const bus = {
        name: options.socket,
        zeroLength: session.zeroLength,
        transfer: session.transfer.bind(session),
      };
      if (command.name !== "snapshot" || command.output === null) {
        return await runCommand(command, bus, io);
      }
      return await snapshotToFile(command.output, (fileIo) => runCommand(command, bus, fileIo), io);
    } finally {
      await session.close();
    }
  } catch (error) {
    io.err(`Error: ${describe(error)}\n`);
    return ExitStatus.FAILED;
  }
}

/**
 * Runs a command whose stdout goes to `path` instead, written only when it succeeds (a failed
 * snapshot leaves no half-written file behind); failing to write it fails the command.
 */
async function snapshotToFile(
  path: string,
  run: (io: CommandIo) => Promise<number>,
  io: CommandIo,
): Promise<number> {
  let text = "";
  const status = await run({ ...io, out: (chunk) => (text += chunk) });
  if (status !== ExitStatus.OK || text === "") return status;
  try {
    writeFileSync(path, text);
  } catch (error) {
    io.err(`Error: Could not write ${path}: ${describe(error)}\n`);
    return ExitStatus.FAILED;
  }
  return status;
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // The back-end's own line, as it wrote it.
  if (error instanceof FrontendError && error.code === "EREFUSED") return error.message;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && !error.message.includes(code)
    ? `${error.message} (${code})`
    : error.message;
}

/** The sockets a daemon given `prefix` as -s serves: PREFIX0, PREFIX1, ... while they exist. */
function servedSockets(prefix: string): number {
  let count = 0;
  while (statOrNull(`${prefix}${count}`)?.isSocket()) count++;
  return count;
}

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

/**
 * What the user most likely got wrong when connecting to `path` failed, or null: a path that is
 * not a socket (a connect to a regular file or directory says "connection refused"), or the
 * daemon's -s prefix given where its sockets are PREFIX0..PREFIXN-1.
 */
function connectFailure(path: string, error: unknown): string | null {
  if (!hasCode(error, "ECONNREFUSED") && !hasCode(error, "ENOENT")) return null;
  const stat = statOrNull(path);
  if (stat !== null && !stat.isSocket()) {
    return stat.isDirectory() ? `${path} is a directory, not a socket` : `${path} is not a socket`;
  }
  if (stat !== null) return null;
  const count = servedSockets(path);
  if (count === 0) return null;
  const served = count === 1 ? `${path}0` : `${path}0 to ${path}${count - 1}`;
  return `${path} does not exist: did you mean ${path}0? (a daemon given -s ${path} serves ${served})`;
}

/** Run as a program (also through an npm bin symlink), not imported by a test. */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then(
    (status) => {
      process.exitCode = status;
    },
    (error: unknown) => {
      process.stderr.write(`vi2c: ${describe(error)}\n`);
      process.exitCode = ExitStatus.FAILED;
    },
  );
}
