/**
 * Test helpers for libfakei2c.so (test/fake-i2c/fake_i2c.c): write a fake configuration, build the
 * environment that preloads the fake into a child process, run such a child, and parse the fake's
 * operation log. The fake only works when preloaded into a fresh process, so every test that uses
 * it runs its subject in a child.
 * Must not: emulate anything itself or decide what a test asserts.
 * @module
 */

import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { findPackageRoot } from "../../src/sys/native.js";
import { scaled } from "../helpers/time.js";

export const REPO_ROOT = findPackageRoot(fileURLToPath(new URL(".", import.meta.url)));
export const FAKE_LIBRARY = join(REPO_ROOT, "test", "fake-i2c", "libfakei2c.so");
export const ADDON = join(REPO_ROOT, "build", "Release", "vhost_device_i2c.node");
export const BUS_TIME_PROBE = join(REPO_ROOT, "test", "fake-i2c", "bus-time-probe");

/** Why child-process tests with the fake cannot run here, or null when they can. */
export function fakeUnavailableReason(): string | null {
  if (!existsSync(FAKE_LIBRARY)) return `${FAKE_LIBRARY} not built (make -C test/fake-i2c)`;
  if (!existsSync(ADDON)) return `${ADDON} not built (npx node-gyp rebuild)`;
  return null;
}

/** What a bus sustains on its own: wall and CPU time per transfer, in microseconds. */
export interface BusTime {
  readonly medianUs: number;
  readonly p99Us: number;
  readonly cpuUs: number;
}

/**
 * Runs the benchmark's transfer (write 0x00, read 8, at 0x50) `samples` times back to back on fake
 * adapter `adapter` of the configuration file `config`, straight through the fake with no daemon
 * (test/fake-i2c/bus_time_probe.c): the bus-limited reference of the bus-time benchmark. Runs in a
 * child process, so it inherits this process's CPU affinity.
 */
export function measureBusTime(config: string, adapter: number, samples: number): BusTime {
  const result = spawnSync(BUS_TIME_PROBE, [String(adapter), "0x50", String(samples)], {
    encoding: "utf8",
    env: { ...process.env, LD_PRELOAD: FAKE_LIBRARY, FAKE_I2C_CONFIG: config },
  });
  const match = /median_us=([\d.]+) p99_us=([\d.]+) cpu_us=([\d.]+)/.exec(result.stdout ?? "");
  if (result.status !== 0 || !match) {
    throw new Error(
      `bus-time probe failed (${result.error?.message ?? `exit ${result.status}`}): ${result.stderr}`,
    );
  }
  return { medianUs: Number(match[1]), p99Us: Number(match[2]), cpuUs: Number(match[3]) };
}

/** One line of the fake's log (see the header of fake_i2c.c). */
export interface FakeLogEntry {
  /** Numbers the ioctl call: lines of one transfer share it. */
  seq: number;
  adapter: number;
  /** "slave", "rdwr", or the SMBus size such as "smbus-byte-data". */
  op: string;
  addr: number;
  dir: "r" | "w" | "-";
  len: number;
  /** Bytes written, or bytes read when the message succeeded. */
  data: number[];
  /** "ok" or an errno name. */
  result: string;
}

export function parseFakeLog(text: string): FakeLogEntry[] {
  return text
    .split("\n")
    .filter((line) => line.length > 0)
    .map((line) => {
      const fields = new Map(
        line.split(" ").map((pair) => {
          const eq = pair.indexOf("=");
          return [pair.slice(0, eq), pair.slice(eq + 1)] as const;
        }),
      );
      const field = (name: string): string => {
        const value = fields.get(name);
        if (value === undefined) throw new Error(`fake log line without ${name}: ${line}`);
        return value;
      };
      const data = field("data");
      const dir = field("dir");
      if (dir !== "r" && dir !== "w" && dir !== "-") throw new Error(`bad dir in ${line}`);
      return {
        seq: Number(field("seq")),
        adapter: Number(field("adapter")),
        op: field("op"),
        addr: Number.parseInt(field("addr"), 16),
        dir,
        len: Number(field("len")),
        data: data === "-" ? [] : (data.match(/../g) ?? []).map((b) => Number.parseInt(b, 16)),
        result: field("result"),
      };
    });
}

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A fake configuration and log in a fresh temporary directory. */
export class FakeI2c {
  readonly dir: string;
  readonly configPath: string;
  readonly logPath: string;

  private constructor(dir: string) {
    this.dir = dir;
    this.configPath = join(dir, "fake-i2c.conf");
    this.logPath = join(dir, "fake-i2c.log");
  }

  /** Writes `config` (the line format documented in fake_i2c.c) to a new temporary directory. */
  static async create(config: string): Promise<FakeI2c> {
    const fake = new FakeI2c(await mkdtemp(join(tmpdir(), "fake-i2c-")));
    await writeFile(fake.configPath, config);
    await writeFile(fake.logPath, "");
    return fake;
  }

  /** `base` plus the variables that preload the fake with this configuration and log. */
  env(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
    const preload = base.LD_PRELOAD ? `${FAKE_LIBRARY}:${base.LD_PRELOAD}` : FAKE_LIBRARY;
    return {
      ...base,
      LD_PRELOAD: preload,
      FAKE_I2C_CONFIG: this.configPath,
      FAKE_I2C_LOG: this.logPath,
    };
  }

  /**
   * Runs `node <args>` with the fake preloaded, feeding `stdin`; resolves when it exits. A child
   * still running after `deadlineMs` (scaled) is killed and the promise rejects, so a hang fails the test
   * instead of the suite.
   */
  run(args: readonly string[], stdin = "", deadlineMs = 30_000): Promise<ChildResult> {
    const limit = scaled(deadlineMs);
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, args, {
        cwd: REPO_ROOT,
        env: this.env(),
        stdio: ["pipe", "pipe", "pipe"],
      });
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`child still running after ${limit} ms: node ${args.join(" ")}`));
      }, limit);
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
        stdout += chunk;
      });
      child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
        stderr += chunk;
      });
      child.on("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr });
      });
      child.stdin.end(stdin);
    });
  }

  /**
   * Replaces the configuration while a process with the fake preloaded runs: the fake re-reads it on
   * its next open or ioctl (run-time errors, unplug, re-plug; see fake_i2c.c). Written to a temporary
   * file and renamed over, so the fake never reads half a file.
   */
  async update(config: string): Promise<void> {
    const next = `${this.configPath}.next`;
    await writeFile(next, config);
    await rename(next, this.configPath);
  }

  async readLog(): Promise<FakeLogEntry[]> {
    return parseFakeLog(await readFile(this.logPath, "utf8"));
  }

  async clearLog(): Promise<void> {
    await writeFile(this.logPath, "");
  }

  async cleanup(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
