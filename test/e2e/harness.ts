/**
 * Shared pieces of the real-guest (QEMU + Linux) end-to-end tests: why a suite skips, probing whether
 * the daemon in the tree accepts a feature yet, failure evidence (guest console, QEMU stderr, daemon
 * log appended to any failing assertion), the control-socket client, EEPROM patterns and the host-side
 * reference of `i2cdump` output. Must not reach into the daemon's modules: the tests see the daemon
 * only as a process, its sockets and its files.
 * @module
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import { describe, it, type TestContext, type TestOptions } from "node:test";
import { DaemonProcess, makeTempDir, type SpawnOptions, withTimeout } from "../helpers/daemon.js";
import {
  type BootGuestOptions,
  bootGuest,
  findGuestImages,
  type GuestImages,
  type GuestRun,
  noGuestImageReason,
  qemuBinary,
  qemuOptionValue,
  vhostUserI2cArgs,
} from "../helpers/guest.js";

/** One boot never runs longer than this: a guest driver waiting on a lost request never returns. */
export const GUEST_TIMEOUT_MS = 90_000;
/**
 * node:test deadline for a whole suite: only a safety net, since every boot, daemon wait and control
 * command has its own deadline.
 */
export const TEST_TIMEOUT_MS = 600_000;

/** Whether `command` runs (`versionArg` must make it exit 0: i2c-tools want -V). */
function hasCommand(command: string, versionArg = "--version"): boolean {
  return spawnSync(command, [versionArg], { stdio: "ignore" }).status === 0;
}

/** Set by CI (.ci/run): a missing prerequisite fails the suite instead of skipping it. */
export const E2E_REQUIRED_ENV = "VHOST_DEVICE_I2C_E2E_REQUIRED";

/**
 * The guest images, or the reason the whole guest suite skips (QEMU missing, image not built).
 * Throws instead when E2E_REQUIRED_ENV is set, so CI cannot pass with the guest tests skipped.
 */
export function guestPrerequisites(): { images: GuestImages } | { skip: string } {
  const images = findGuestImages();
  const qemu = qemuBinary();
  const skip = !hasCommand(qemu)
    ? `${qemu} is not installed`
    : images === null
      ? noGuestImageReason()
      : null;
  if (skip === null && images) return { images };
  const reason = skip ?? "no guest image";
  if (process.env[E2E_REQUIRED_ENV]) throw new Error(`${E2E_REQUIRED_ENV} is set but ${reason}`);
  return { skip: reason };
}

/** What a guest suite needs up front: its skip reason (false to run) and the guest images. */
export function guestSuite(): { skip: string | false; images: GuestImages | null } {
  const prerequisites = guestPrerequisites();
  return "skip" in prerequisites
    ? { skip: prerequisites.skip, images: null }
    : { skip: false, images: prerequisites.images };
}

/**
 * `describe`, except that a suite skipped as a whole is reported as one skipped test of its name:
 * node:test counts skipped tests, not skipped suites, so a run whose guest suites all skip would
 * otherwise sum up as "skipped 0".
 */
export function describeOrSkip(
  name: string,
  options: TestOptions & { readonly skip: string | false },
  suite: () => void,
): void {
  const { skip, ...rest } = options;
  if (skip === false) describe(name, rest, suite);
  else it(name, { skip }, () => {});
}

/**
 * Why a test needing the host tool `command` (from Debian package `debianPackage`) skips, or false
 * when the tool runs. Throws instead when E2E_REQUIRED_ENV is set, as `guestPrerequisites` does.
 */
export function hostToolSkip(
  command: string,
  debianPackage: string,
  versionArg = "--version",
): string | false {
  if (hasCommand(command, versionArg)) return false;
  const reason = `${command} is not installed on the host (Debian package ${debianPackage})`;
  if (process.env[E2E_REQUIRED_ENV]) throw new Error(`${E2E_REQUIRED_ENV} is set but ${reason}`);
  return reason;
}

/**
 * Collects what explains a failure: every guest console (as it arrives, so a hung boot still shows
 * it), QEMU's stderr and every daemon's log. `explain` runs a test body and appends all of it to the
 * error the body throws; when the body ends, guests still running are killed (`signal`) and so are
 * daemons.
 */
export class Evidence {
  readonly #consoles = new Map<string, string>();
  readonly #qemuStderr = new Map<string, string>();
  readonly #daemons = new Map<string, DaemonProcess>();
  readonly #sections = new Map<string, () => string>();
  readonly #end = new AbortController();

  /** Aborted when the test body ends: guests booted with it never outlive their test. */
  get signal(): AbortSignal {
    return this.#end.signal;
  }

  /** An `onConsole` callback recording the console of the guest called `name`. */
  console(name: string): (text: string) => void {
    this.#consoles.set(name, "");
    return (text) => this.#consoles.set(name, (this.#consoles.get(name) ?? "") + text);
  }

  guestFinished(name: string, run: GuestRun): void {
    this.#consoles.set(name, run.console);
    if (run.stderr) this.#qemuStderr.set(name, run.stderr);
  }

  daemon(name: string, daemon: DaemonProcess): DaemonProcess {
    this.#daemons.set(name, daemon);
    return daemon;
  }

  /** A part of the report `describe` writes when it is made (e.g. a service manager's events). */
  section(name: string, describe: () => string): void {
    this.#sections.set(name, describe);
  }

  report(): string {
    const parts: string[] = [];
    for (const [name, text] of this.#consoles)
      parts.push(`--- guest console (${name}) ---\n${text}`);
    for (const [name, text] of this.#qemuStderr)
      parts.push(`--- QEMU stderr (${name}) ---\n${text}`);
    for (const [name, daemon] of this.#daemons) {
      parts.push(`--- daemon log (${name}) ---\n${daemon.stderr}${daemon.stdout}`);
    }
    for (const [name, describe] of this.#sections) parts.push(`--- ${name} ---\n${describe()}`);
    return `${parts.join("\n")}\n--- end of evidence ---`;
  }

  /** Runs `body`; a failure carries the whole report; daemons still running are killed afterwards. */
  async explain<T>(body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      error.message += `\n${this.report()}`;
      throw error;
    } finally {
      this.#end.abort();
      for (const daemon of this.#daemons.values()) {
        if (!daemon.hasExited) {
          daemon.child.kill("SIGKILL");
          await daemon.exited;
        }
      }
    }
  }
}

/** Boots a guest, recording its console in `evidence` under `name`. */
export async function runGuest(
  evidence: Evidence,
  name: string,
  options: Omit<BootGuestOptions, "onConsole"> & { onConsole?: (text: string) => void },
): Promise<GuestRun> {
  const record = evidence.console(name);
  const run = await bootGuest({
    timeoutMs: GUEST_TIMEOUT_MS,
    signal: evidence.signal,
    ...options,
    onConsole: (text) => {
      record(text);
      options.onConsole?.(text);
    },
  });
  evidence.guestFinished(name, run);
  return run;
}

/** Throws unless the guest script ran to its end with status 0 (before any finer assertion). */
export function assertScriptCompleted(run: GuestRun, name: string): void {
  if (run.timedOut) throw new Error(`guest ${name}: QEMU killed at the deadline (hung guest)`);
  if (run.scriptStatus === null) throw new Error(`guest ${name}: the test script never finished`);
  if (run.scriptStatus !== 0) {
    throw new Error(`guest ${name}: test script exited with status ${run.scriptStatus}`);
  }
}

/** A RESULT value the script must have printed. */
export function result(run: GuestRun, key: string): string {
  const value = run.results.get(key);
  if (value === undefined) throw new Error(`the guest printed no "RESULT ${key} ..." line`);
  return value;
}

/** Starts the daemon and waits for its listening sockets (server mode). */
export async function startServerDaemon(
  evidence: Evidence,
  name: string,
  args: readonly string[],
  listenPaths: readonly string[],
  options: SpawnOptions = {},
): Promise<DaemonProcess> {
  const daemon = evidence.daemon(name, new DaemonProcess(args, options));
  await daemon.waitForListening(listenPaths);
  return daemon;
}

/** SIGTERM and a clean exit: the daemon must survive every guest test and stop with status 0. */
export async function stopDaemonCleanly(daemon: DaemonProcess): Promise<void> {
  if (daemon.hasExited) throw new Error("the daemon exited during the test");
  const status = await daemon.stop();
  if (status.code !== 0)
    throw new Error(`daemon exit status on SIGTERM: ${JSON.stringify(status)}`);
}

/**
 * Whether the daemon in the tree accepts `args` (a feature other work may not have landed yet): null
 * when it starts listening on `listenPath`, else the usage error it printed, to be used as a skip
 * reason. Any other failure is a real failure and throws.
 */
export async function daemonRefusal(
  args: readonly string[],
  listenPath: string,
): Promise<string | null> {
  const daemon = new DaemonProcess(args);
  try {
    await daemon.waitForListening([listenPath]);
    return null;
  } catch (err) {
    const status = await withTimeout(daemon.exited, 10_000, "daemon exit after a failed start");
    if (status.code === 2) {
      return `the daemon does not accept "${args.join(" ")}" yet: ${daemon.stderr.trim()}`;
    }
    throw new Error(`daemon probe failed: ${String(err)}\n${daemon.stderr}`);
  } finally {
    if (!daemon.hasExited) {
      daemon.child.kill("SIGKILL");
      await daemon.exited;
    }
  }
}

/** A fresh temp dir and evidence for one test; the body runs under `evidence.explain`. */
export async function withScratch(
  body: (dir: string, evidence: Evidence) => Promise<void>,
): Promise<void> {
  const tmp = makeTempDir("vdi2c-e2e-");
  const evidence = new Evidence();
  try {
    await evidence.explain(() => body(tmp.path, evidence));
  } finally {
    tmp.remove();
  }
}

/** How `GuestBench.boot` starts one guest; `script` is the guest's test script. */
export interface BenchBootOptions {
  /** Names the guest in failures and the evidence; "guest" unless given. */
  readonly name?: string;
  /** The whole QEMU device arguments; vhostUserI2cArgs(bench.socket) unless given. */
  readonly qemuArgs?: readonly string[];
  readonly onConsole?: (text: string) => void;
}

/**
 * One guest test's surroundings: its scratch dir, its evidence and the daemon's socket prefix (`-s`)
 * with the first socket. The daemon argument lists given to its methods follow `-s PREFIX`.
 */
export interface GuestBench {
  readonly dir: string;
  readonly evidence: Evidence;
  readonly prefix: string;
  /** `${prefix}0`, the socket a one-guest test connects to. */
  readonly socket: string;
  /** Starts a server-mode daemon ("daemon" in the evidence) and waits for `sockets` listening sockets. */
  startDaemon(
    args: readonly string[],
    options?: SpawnOptions & { readonly sockets?: number },
  ): Promise<DaemonProcess>;
  /** Starts a --client daemon called `name` and waits until a front-end (QEMU) has connected to it. */
  connectClientDaemon(name: string, args: readonly string[]): Promise<DaemonProcess>;
  /** Skips `t` when the daemon does not accept `args` yet (see skippedUnlessAccepted). */
  skippedUnlessAccepted(t: TestContext, args: readonly string[]): Promise<boolean>;
  /** Boots a guest running `script` and throws unless the script completed (assertScriptCompleted). */
  boot(script: string, options?: BenchBootOptions): Promise<GuestRun>;
}

/**
 * Runs `body` on a fresh GuestBench against the guest `images` (null fails: the suite should have
 * skipped), under `evidence.explain` so any failure carries guest consoles and daemon logs.
 */
export async function withGuestBench(
  images: GuestImages | null,
  body: (bench: GuestBench) => Promise<void>,
): Promise<void> {
  assert.ok(images);
  await withScratch(async (dir, evidence) => {
    const prefix = socketPrefix(dir);
    const socket = `${prefix}0`;
    const bench: GuestBench = {
      dir,
      evidence,
      prefix,
      socket,
      startDaemon: (args, { sockets = 1, ...options } = {}) => {
        const listenPaths = Array.from({ length: sockets }, (_, index) => `${prefix}${index}`);
        return startServerDaemon(evidence, "daemon", ["-s", prefix, ...args], listenPaths, options);
      },
      connectClientDaemon: async (name, args) => {
        const argv = ["--client", "-s", prefix, ...args];
        const daemon = evidence.daemon(name, new DaemonProcess(argv));
        await daemon.waitForLog("front-end connected", 30_000);
        return daemon;
      },
      skippedUnlessAccepted: (t, args) => skippedUnlessAccepted(t, ["-s", prefix, ...args], socket),
      boot: (script, { name = "guest", qemuArgs, onConsole } = {}) => {
        const completed = runGuest(evidence, name, {
          ...images,
          qemuArgs: qemuArgs ?? vhostUserI2cArgs(socket),
          script,
          onConsole,
        }).then((run) => {
          assertScriptCompleted(run, name);
          return run;
        });
        // A body that fails before awaiting a guest it started already reports; this failure then
        // only follows from the guest being killed and must not surface as an unhandled rejection.
        completed.catch(() => {});
        return completed;
      },
    };
    await body(bench);
  });
}

/** QEMU arguments for the device on `socket` with `property` (e.g. "packed=on") added to it. */
export function vhostUserI2cArgsWith(socket: string, property: string): string[] {
  const [chardev, chardevValue, device, deviceValue] = vhostUserI2cArgs(socket);
  assert.ok(chardev && chardevValue && device && deviceValue);
  return [chardev, chardevValue, device, `${deviceValue},${property}`];
}

/** Skips `t` with the daemon's message when it does not accept `args` yet; true when skipped. */
export async function skippedUnlessAccepted(
  t: TestContext,
  args: readonly string[],
  socket: string,
): Promise<boolean> {
  const refusal = await daemonRefusal(args, socket);
  if (refusal) t.skip(refusal);
  return refusal !== null;
}

/**
 * Writes `contents` to `dir`/eeprom.bin and a `--config` file declaring a 24c02 at 0x50 backed by
 * it (a path relative to the config file's directory).
 */
export function writeBackedEepromConfig(
  dir: string,
  contents: Uint8Array,
): { configFile: string; backing: string } {
  const backing = join(dir, "eeprom.bin");
  const configFile = join(dir, "devices.json");
  const device = {
    bus: "sim",
    address: "0x50",
    model: "24c02",
    options: { backing: "eeprom.bin" },
  };
  writeFileSync(backing, contents);
  writeFileSync(configFile, JSON.stringify({ devices: [device] }));
  return { configFile, backing };
}

/** Sends one control-socket command line and returns the reply line; an `error ...` reply throws. */
export async function controlCommand(socketPath: string, command: string): Promise<string> {
  const reply = await withTimeout(
    new Promise<string>((resolve, reject) => {
      const socket = createConnection(socketPath);
      let received = "";
      socket.setEncoding("utf8");
      socket.on("connect", () => socket.write(`${command}\n`));
      socket.on("data", (chunk: string) => {
        received += chunk;
        const end = received.indexOf("\n");
        if (end >= 0) {
          socket.end();
          resolve(received.slice(0, end));
        }
      });
      socket.on("error", reject);
      socket.on("close", () => reject(new Error(`control socket closed without a reply`)));
    }),
    10_000,
    `control command "${command}"`,
  );
  if (!reply.startsWith("ok")) throw new Error(`control command "${command}" failed: ${reply}`);
  return reply;
}

/**
 * A non-trivial EEPROM pattern: every byte value exactly once per 256 bytes (0x00, 0xff, printable
 * and non-printable), in an order that depends on `seed`, so two fills are told apart.
 */
export function eepromPattern(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  // 167 is odd, so i*167 runs through all residues mod 256.
  for (let i = 0; i < size; i++) bytes[i] = (i * 167 + seed) & 0xff;
  return bytes;
}

/**
 * Guest shell lines writing `bytes` to an EEPROM at `address` on bus 0, one page per i2ctransfer
 * (word address, then the page's data) from `startOffset` on, as datasheet-conforming page writes;
 * with `ackPolling`, each write is followed by ackPollLine (a chip with its write cycle).
 */
export function eepromFillScript(
  address: number,
  bytes: Uint8Array,
  pageSize: number,
  startOffset = 0,
  options: { ackPolling?: boolean } = {},
): string {
  if (startOffset % pageSize !== 0) throw new RangeError("startOffset must be page-aligned");
  const lines: string[] = [];
  for (let page = 0; page < bytes.length; page += pageSize) {
    const data = [...bytes.subarray(page, page + pageSize)].map(hex);
    const offset = hex(startOffset + page);
    lines.push(`i2ctransfer -y 0 w${data.length + 1}@${hex(address)} ${offset} ${data.join(" ")}`);
    if (options.ackPolling) lines.push(ackPollLine(address));
  }
  return lines.join("\n");
}

/**
 * A guest line that waits, as 24Cxx datasheets advise after a write, until the chip at `address`
 * acknowledges again (its write cycle is over): reads until one succeeds, 200 tries at most.
 * i2ctransfer cannot tell (it exits 0 after a NACK), i2cget can.
 */
export function ackPollLine(address: number): string {
  return `n=0; until i2cget -y 0 ${hex(address)} >/dev/null 2>&1 || [ $n -ge 200 ]; do n=$((n + 1)); done`;
}

/** `0x..` with two digits, as i2c-tools print bytes. */
export function hex(value: number): string {
  return `0x${value.toString(16).padStart(2, "0")}`;
}

/**
 * What `i2cdump -y BUS ADDR b` prints on stdout for a 256-byte device whose reads return `bytes`:
 * a header, then 16 rows "RR: " + 16 × "xx " + 3 spaces + the ASCII column, where 0x00 and 0xff show
 * as ".", other bytes outside 32..126 as "?".
 */
export function i2cdumpByteMode(bytes: Uint8Array): string {
  if (bytes.length !== 256) throw new RangeError("i2cdump byte mode covers exactly 256 bytes");
  const lines = ["     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f    0123456789abcdef"];
  for (let row = 0; row < 256; row += 16) {
    const cells = [...bytes.subarray(row, row + 16)];
    const hexColumn = cells.map((byte) => `${byte.toString(16).padStart(2, "0")} `).join("");
    const asciiColumn = cells
      .map((byte) =>
        byte === 0x00 || byte === 0xff
          ? "."
          : byte < 32 || byte >= 127
            ? "?"
            : String.fromCharCode(byte),
      )
      .join("");
    lines.push(`${row.toString(16).padStart(2, "0")}: ${hexColumn}   ${asciiColumn}`);
  }
  return `${lines.join("\n")}\n`;
}

export function md5(data: string | Uint8Array): string {
  return createHash("md5").update(data).digest("hex");
}

/** Parses `od -An -tx1 -v` output (hex bytes separated by blanks) into bytes. */
export function parseOdHex(text: string): Uint8Array {
  const words = text.split(/\s+/).filter((word) => word !== "");
  return Uint8Array.from(words.map((word) => Number.parseInt(word, 16)));
}

/** The guest's `od` invocation matching `parseOdHex`, on one line per RESULT. */
export function odHexCommand(path: string, count?: number): string {
  const limit = count === undefined ? "" : ` -N ${count}`;
  return `od -An -tx1 -v${limit} ${path} | tr -s ' \\n' '  '`;
}

/** A path inside `dir` (kept here so tests build socket paths the same way). */
export function socketPrefix(dir: string): string {
  return join(dir, "vi2c.sock");
}

/**
 * Resolves when `text` has appeared on a console fed through the returned `onConsole`; lets a test
 * react to the guest while QEMU runs.
 */
export class ConsoleWatch {
  #seen = "";
  readonly #waiters: { text: string; resolve: () => void }[] = [];

  readonly onConsole = (text: string): void => {
    this.#seen += text;
    for (const waiter of [...this.#waiters]) {
      if (this.#seen.includes(waiter.text)) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };

  /** Resolves once `text` was seen (already or later). */
  seen(text: string): Promise<void> {
    if (this.#seen.includes(text)) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ text, resolve }));
  }
}

/**
 * QEMU arguments for a vhost-user-i2c-pci device whose socket QEMU itself listens on (the daemon runs
 * with --client). `wait=on` holds QEMU at start-up until the daemon connects, as 7.2 needs.
 */
export function vhostUserI2cServerArgs(socketPath: string, id = "vi2c"): string[] {
  return [
    "-chardev",
    `socket,id=${id},path=${qemuOptionValue(socketPath)},server=on,wait=on`,
    "-device",
    `vhost-user-i2c-pci,chardev=${id}`,
  ];
}

/** Resolves when `text` is on the console; rejects when the guest run ends first. */
export async function consoleOrExit(
  watch: ConsoleWatch,
  text: string,
  guest: Promise<GuestRun>,
): Promise<void> {
  await Promise.race([
    watch.seen(text),
    guest.then(() => {
      throw new Error(`the guest ended before printing ${text}`);
    }),
  ]);
}

/** How many lines of `log` contain `text`. */
export function countLines(log: string, text: string): number {
  return log.split("\n").filter((line) => line.includes(text)).length;
}
