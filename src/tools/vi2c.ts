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

import { readSync, realpathSync, type Stats, statSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { hasCode } from "../sys/errors.js";
import { FrontendError } from "../vhost-user/frontend.js";
import { type CommandName, type Invocation, parseInvocation, UsageError } from "./args.js";
import { type CommandIo, ExitStatus, runCommand } from "./commands.js";
import {
  type BackendOffer,
  BackendSession,
  FEATURE_NAMES,
  PROTOCOL_FEATURE_NAMES,
  probeBackend,
} from "./session.js";

const USAGE: Readonly<Record<CommandName | "general", string>> = {
  general: `Usage: vi2c [--socket PATH] [--packed] [--timeout MS] [--queue-size N] COMMAND [ARGS]
  Talks to a vhost-user-i2c backend's socket as a VM would; no VM needed.
  Commands (arguments and output as the i2c-tools program in brackets, SOCKET in place of I2CBUS):
    detect [-y] [-a] [-q|-r|-F] SOCKET [FIRST LAST]        (i2cdetect)
    dump [-y] [-a] [-r FIRST-LAST] SOCKET ADDRESS [MODE]   (i2cdump; MODE b, w, W, c, i)
    get [-y] [-a] SOCKET ADDRESS [REG [MODE [LENGTH]]]     (i2cget; MODE b, w, c, i)
    set [-y] [-a] [-r] [-m MASK] SOCKET ADDRESS REG [VALUE]... [MODE]
                                                           (i2cset; MODE c, b, w, i, s)
    transfer [-y] [-v] [-a] SOCKET DESC [DATA] [DESC [DATA]]...   (i2ctransfer)
    info SOCKET                                            (features the backend offers)
  SOCKET may also come first (vi2c SOCKET detect -y) or as --socket PATH.
  --packed      use a packed virtqueue when the backend offers one
  --timeout MS  deadline for each reply and transfer (default 5000)
  --queue-size N  virtqueue size (power of two, default 128)
  Exit status: 0 done (or aborted at the prompt), 1 a transfer or the backend failed, 2 usage.
  Example: vi2c detect -y /tmp/vi2c.sock0; vi2c dump -y /tmp/vi2c.sock0 0x50
`,
  detect: `Usage: vi2c detect [-y] [-a] [-q|-r] SOCKET [FIRST LAST]
       vi2c detect -F SOCKET
  If provided, FIRST and LAST limit the probing range.
`,
  dump: `Usage: vi2c dump [-y] [-r first-last] [-a] SOCKET ADDRESS [MODE]
  ADDRESS is an integer (0x08 - 0x77, or 0x00 - 0x7f if -a is given)
  MODE is one of:
    b (byte, default)
    w (word)
    W (word on even register addresses)
    i (I2C block)
    c (consecutive byte)
`,
  get: `Usage: vi2c get [-y] [-a] SOCKET CHIP-ADDRESS [DATA-ADDRESS [MODE [LENGTH]]]
  ADDRESS is an integer (0x08 - 0x77, or 0x00 - 0x7f if -a is given)
  MODE is one of:
    b (read byte data, default)
    w (read word data)
    c (write byte/read byte)
    i (read I2C block data)
  LENGTH is the I2C block data length (between 1 and 32, default 32)
`,
  set: `Usage: vi2c set [-y] [-m MASK] [-r] [-a] SOCKET CHIP-ADDRESS DATA-ADDRESS [VALUE] ... [MODE]
  ADDRESS is an integer (0x08 - 0x77, or 0x00 - 0x7f if -a is given)
  MODE is one of:
    c (byte, no value)
    b (byte data, default)
    w (word data)
    i (I2C block data)
    s (SMBus block data)
`,
  transfer: `Usage: vi2c transfer [-y] [-v] [-a] SOCKET DESC [DATA] [DESC [DATA]]...
  DESC describes the transfer in the form: {r|w}LENGTH[@address]
    1) read/write-flag 2) LENGTH (range 0-65535)
    3) I2C address (use last one if omitted)
  DATA are LENGTH bytes for a write message. They can be shortened by a suffix:
    = (keep value constant until LENGTH)
    + (increase value by 1 until LENGTH)
    - (decrease value by 1 until LENGTH)
    p (use pseudo random generator until LENGTH with value as seed)

Example (read 8 byte at offset 0x64 from EEPROM at 0x50):
  # vi2c transfer -y SOCKET w1@0x50 0x64 r8
Example (same EEPROM, at offset 0x42 write 0xff 0xfe ... 0xf0):
  # vi2c transfer -y SOCKET w17@0x50 0x42 0xff-
`,
  info: `Usage: vi2c info SOCKET
  Shows the virtio and vhost-user protocol features the backend offers and its queue count.
`,
};

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
    io.err(`${error.message}\n${USAGE[error.topic ?? "general"]}`);
    return ExitStatus.USAGE;
  }
  const { command, options } = invocation;
  if (command.name === "help") {
    io.out(USAGE[command.topic ?? "general"]);
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
