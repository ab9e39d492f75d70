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

import { readSync, realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { helpWidth } from "../cli/help.js";
import { packageVersion } from "../package-version.js";
import { type Invocation, parseInvocation, UsageError } from "./args.js";
import { type CommandIo, ExitStatus, runCommand } from "./commands.js";
import { usageText } from "./help.js";
import { BackendSession, FEATURE_NAMES, PROTOCOL_FEATURE_NAMES, probeBackend } from "./session.js";

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

async function info(invocation: Invocation, io: CommandIo): Promise<number> {
  const { socket, timeoutMs } = invocation.options;
  const offer = await probeBackend(socket, timeoutMs);
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
  try {
    if (command.name === "info") return await info(invocation, io);
    let session: BackendSession;
    try {
      session = await BackendSession.open(options.socket, options);
    } catch (error) {
      io.err(`Error: Could not talk to the backend at ${options.socket}: ${describe(error)}\n`);
      return ExitStatus.FAILED;
    }
    try {
      const bus = {
        name: options.socket,
        zeroLength: session.zeroLength,
        transfer: session.transfer.bind(session),
      };
      return await runCommand(command, bus, io);
    } finally {
      await session.close();
    }
  } catch (error) {
    io.err(`Error: ${describe(error)}\n`);
    return ExitStatus.FAILED;
  }
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && !error.message.includes(code)
    ? `${error.message} (${code})`
    : error.message;
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
