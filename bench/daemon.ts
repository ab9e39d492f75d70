/**
 * Benchmark side of the daemon process: start the real CLI, or a reference daemon with the same
 * command line (rust-vmm's vhost-device-i2c), optionally pinned with taskset, with a fake
 * /dev/i2c-N preloaded, with --cpu-prof; time start-up to listening, read its CPU time and RSS from
 * /proc, stop it cleanly (so a CPU profile gets written).
 * Must not reach into the daemon's modules: the bench talks to it only through its sockets.
 * @module
 */

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";

/**
 * How long a daemon may take to listen. Generous: a daemon with 64 device sets takes 5-8 s on an
 * idle 2-core machine, several times that on a loaded one, and the bench reports start-up time
 * rather than failing on it.
 */
const LISTEN_DEADLINE_MS = 120_000;

export const MAIN_JS = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on every Linux we run on). */
const CLOCK_TICKS =
  Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

export interface DaemonOptions {
  readonly args: readonly string[];
  /** Paths that must be listening before the daemon counts as started. */
  readonly listenPaths: readonly string[];
  /** Run under `taskset -c <cpu>`. */
  readonly cpu: number | null;
  readonly env?: Readonly<Record<string, string>>;
  /** Extra node flags (--cpu-prof ...). */
  readonly nodeArgs?: readonly string[];
  /**
   * Another daemon's executable, given the same arguments (`-s`, `-c`, `-l`); it counts as started
   * once the kernel shows every listen path as a listening socket, since its log lines are not ours.
   */
  readonly program?: string;
}

/** __SO_ACCEPTCON in /proc/net/unix's Flags column: listen(2) was called on the socket. */
const SO_ACCEPTCON = 0x10000;

/**
 * Whether every path in `paths` is a listening Unix socket, from /proc/net/unix (columns Num
 * RefCount Protocol Flags Type St Inode Path): a socket file appears at bind(2), before listen(2),
 * and a connect in between is refused.
 */
function allListening(paths: readonly string[]): boolean {
  const listening = new Set<string>();
  for (const line of readFileSync("/proc/net/unix", "utf8").split("\n")) {
    const fields = line.trim().split(/\s+/);
    const path = fields[7];
    if (path !== undefined && (Number.parseInt(fields[3] ?? "0", 16) & SO_ACCEPTCON) !== 0) {
      listening.add(path);
    }
  }
  return paths.every((path) => listening.has(path));
}

export class BenchDaemon {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  /** Milliseconds from spawn to the last listen path logged. */
  startupMs = Number.NaN;
  #stderr = "";

  private constructor(options: DaemonOptions) {
    const command =
      options.program === undefined
        ? [process.execPath, ...(options.nodeArgs ?? []), MAIN_JS, ...options.args]
        : [options.program, ...options.args];
    const argv =
      options.cpu === null ? command : ["taskset", "-c", String(options.cpu), ...command];
    this.child = spawn(argv[0] as string, argv.slice(1), {
      env: { ...process.env, ...options.env },
    });
    this.child.stdout?.resume();
    this.exited = new Promise((resolve) => this.child.on("close", (code) => resolve(code)));
  }

  static async start(options: DaemonOptions): Promise<BenchDaemon> {
    const started = performance.now();
    const daemon = new BenchDaemon(options);
    const wanted = options.listenPaths.map((path) => `listening path=${path}\n`);
    const listening =
      options.program === undefined
        ? () => wanted.every((line) => daemon.#stderr.includes(line))
        : () => allListening(options.listenPaths);
    await new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (!Number.isNaN(daemon.startupMs) || !listening()) return;
        daemon.startupMs = performance.now() - started;
        clearTimeout(timer);
        clearInterval(poll);
        resolve();
      };
      const timer = setTimeout(() => {
        clearInterval(poll);
        reject(new Error(`daemon did not listen:\n${daemon.#stderr}`));
      }, LISTEN_DEADLINE_MS);
      // Only a reference daemon is watched on the file system; ours says when it listens.
      const poll = setInterval(check, options.program === undefined ? 1_000 : 2);
      daemon.child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
        daemon.#stderr += chunk;
        check();
      });
      daemon.child.on("close", (code) => {
        clearTimeout(timer);
        clearInterval(poll);
        reject(new Error(`daemon exited (${code}) before listening:\n${daemon.#stderr}`));
      });
    });
    return daemon;
  }

  get pid(): number {
    const pid = this.child.pid;
    if (pid === undefined) throw new Error("daemon has no pid");
    return pid;
  }

  get stderr(): string {
    return this.#stderr;
  }

  /** utime + stime of every thread of the daemon, in microseconds (10 ms resolution). */
  cpuMicros(): number {
    return processCpuMicros(this.pid);
  }

  /** Resident set size in MiB. */
  rssMiB(): number {
    const status = readFileSync(`/proc/${this.pid}/status`, "utf8");
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
    return kb / 1024;
  }

  /** SIGTERM and wait for the exit (a --cpu-prof profile is written on the way out). */
  async stop(): Promise<number | null> {
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

/** utime + stime of every thread of process `pid`, in microseconds (10 ms resolution). */
export function processCpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may contain spaces) start at field 3.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1e6) / CLOCK_TICKS;
}

/** Pins every thread of this process to `cpu`, or back to all CPUs with null. */
export function pinSelf(cpu: number | null): void {
  const list = cpu === null ? `0-${cpus().length - 1}` : String(cpu);
  execFileSync("taskset", ["-a", "-p", "-c", list, String(process.pid)], { stdio: "ignore" });
}
