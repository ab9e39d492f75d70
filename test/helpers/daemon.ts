/**
 * Integration-test harness around the real daemon process (`dist/src/cli/main.js` run by the same
 * Node binary as the tests): start it, wait until its sockets listen, collect its stderr, stop it.
 * Every wait has a deadline, so a broken daemon fails a test instead of hanging the suite.
 * Must not reach into the daemon's modules: tests talk to it only through its sockets and signals.
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { fileURLToPath } from "node:url";
import { scaled } from "./time.js";

/** The compiled CLI entry, from dist/test/helpers/. */
export const MAIN_JS = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

/**
 * Default deadline for one wait (daemon start, a reply, a transfer) on a native host. withTimeout and
 * waitUntil scale what they are given (./time.ts); anything else given WAIT_MS scales it itself.
 */
export const WAIT_MS = 10_000;

/**
 * Host-device locks of the daemons this test process starts: its own directory, so parallel test runs
 * never contend for the system one. Daemons of one process share it (lock conflicts stay testable).
 */
const TEST_LOCK_DIR = mkdtempSync(join(tmpdir(), "vdi2c-locks-"));
process.on("exit", () => rmSync(TEST_LOCK_DIR, { recursive: true, force: true }));

/** A fresh directory under the system temp dir; `remove()` deletes it and everything in it. */
export function makeTempDir(prefix = "vdi2c-test-"): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}

export function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Rejects with `what` when `promise` does not settle within `ms` (scaled). */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  const limit = scaled(ms);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${limit} ms: ${what}`)), limit);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` every few ms until it holds; rejects after `ms` (scaled). */
export async function waitUntil(
  condition: () => boolean,
  what: string,
  ms = WAIT_MS,
): Promise<void> {
  const limit = scaled(ms);
  const end = Date.now() + limit;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out after ${limit} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  /** Extra environment for the daemon (LD_PRELOAD, FAKE_I2C_CONFIG, ...). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Working directory of the daemon (relative socket paths are resolved there). */
  readonly cwd?: string;
}

/** A daemon child process. */
export class DaemonProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<ExitStatus>;
  #stderr = "";
  #stdout = "";
  #exit: ExitStatus | null = null;

  constructor(args: readonly string[], options: SpawnOptions = {}) {
    this.child = spawn(process.execPath, [MAIN_JS, ...args], {
      env: { VHOST_DEVICE_I2C_LOCK_DIR: TEST_LOCK_DIR, ...process.env, ...options.env },
      cwd: options.cwd,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      this.#stderr += chunk;
    });
    this.child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      this.#stdout += chunk;
    });
    this.exited = new Promise((resolve) => {
      this.child.on("close", (code, signal) => {
        this.#exit = { code, signal };
        resolve(this.#exit);
      });
    });
  }

  get pid(): number {
    const pid = this.child.pid;
    if (pid === undefined) throw new Error(`daemon did not start\n${this.stderr}`);
    return pid;
  }

  get stderr(): string {
    return this.#stderr;
  }

  get stdout(): string {
    return this.#stdout;
  }

  get hasExited(): boolean {
    return this.#exit !== null;
  }

  /** Waits until stderr contains `text`; fails early (with stderr) when the daemon exits first. */
  async waitForLog(text: string | RegExp, ms = WAIT_MS): Promise<void> {
    const seen = () =>
      typeof text === "string" ? this.#stderr.includes(text) : text.test(this.#stderr);
    await waitUntil(
      () => {
        if (seen()) return true;
        if (this.#exit) {
          throw new Error(
            `daemon exited (${JSON.stringify(this.#exit)}) before logging ${String(text)}`,
          );
        }
        return false;
      },
      `daemon log ${String(text)}`,
      ms,
    );
  }

  /** Waits until the daemon has logged that it listens on each of `paths`. */
  async waitForListening(paths: readonly string[], ms = WAIT_MS): Promise<void> {
    for (const path of paths) {
      await this.waitForLog(`listening path=${path}\n`, ms);
      if (!isSocket(path)) throw new Error(`${path} is not a socket after the daemon logged it`);
    }
  }

  /** The number of open fds of the daemon (Linux /proc). */
  fdCount(): number {
    return readdirSync(`/proc/${this.pid}/fd`).length;
  }

  async waitForExit(ms = WAIT_MS): Promise<ExitStatus> {
    return withTimeout(this.exited, ms, "daemon exit");
  }

  /** SIGTERM, then SIGKILL if it does not exit in time. Safe to call twice. */
  async stop(ms = WAIT_MS): Promise<ExitStatus> {
    if (this.#exit) return this.#exit;
    this.child.kill("SIGTERM");
    try {
      return await this.waitForExit(ms);
    } catch (err) {
      this.child.kill("SIGKILL");
      await this.exited;
      throw err;
    }
  }
}

/** Starts the daemon with `args` and waits for each of `listenPaths` to be served. */
export async function startDaemon(
  args: readonly string[],
  listenPaths: readonly string[],
  options: SpawnOptions = {},
): Promise<DaemonProcess> {
  const daemon = new DaemonProcess(args, options);
  try {
    await daemon.waitForListening(listenPaths);
  } catch (err) {
    daemon.child.kill("SIGKILL");
    await daemon.exited;
    throw withDaemonLog(err, daemon);
  }
  return daemon;
}

/** `err` with the daemon's stderr appended to its message, so a failing test shows what happened. */
export function withDaemonLog(err: unknown, daemon: DaemonProcess): Error {
  const error = err instanceof Error ? err : new Error(String(err));
  error.message += `\n--- daemon stderr ---\n${daemon.stderr}--- end of daemon stderr ---`;
  return error;
}

/**
 * `it` for a suite whose daemon starts in `before`: a failing test carries the stderr of the daemon
 * `daemonOf` returns when the test fails.
 */
export function itWithDaemonLog(
  daemonOf: () => DaemonProcess,
): (name: string, body: () => Promise<void>) => void {
  return (name, body) => {
    it(name, async () => {
      try {
        await body();
      } catch (err) {
        throw withDaemonLog(err, daemonOf());
      }
    });
  };
}

/**
 * Runs `body` against a freshly started daemon and always stops it afterwards. A failure carries the
 * daemon's stderr. Checks that the daemon is still alive when the body ends (a crash is a failure)
 * and that SIGTERM then stops it with status 0.
 */
export async function withDaemon<T>(
  args: readonly string[],
  listenPaths: readonly string[],
  body: (daemon: DaemonProcess) => Promise<T>,
  options: SpawnOptions = {},
): Promise<T> {
  const daemon = await startDaemon(args, listenPaths, options);
  try {
    const result = await body(daemon);
    if (daemon.hasExited) throw new Error("daemon exited during the test");
    const status = await daemon.stop();
    if (status.code !== 0)
      throw new Error(`daemon exit status on SIGTERM: ${JSON.stringify(status)}`);
    return result;
  } catch (err) {
    throw withDaemonLog(err, daemon);
  } finally {
    if (!daemon.hasExited) {
      daemon.child.kill("SIGKILL");
      await daemon.exited;
    }
  }
}
