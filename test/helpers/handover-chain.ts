/**
 * A daemon that hands over (SIGUSR2) again and again: which process serves now, the signal to it,
 * its "handed over ... pid=N" line, its exit, and the stop or kill of whichever process serves at the
 * end. Every process of the chain writes to the pipes of the first one (a successor inherits its
 * stdio), so the first DaemonProcess collects the whole log and only closes once the last process
 * is gone.
 * Must not reach into the daemon's modules: it sees processes, signals and the log.
 * @module
 */

import { readFileSync } from "node:fs";
import { DaemonProcess, waitUntil, withDaemonLog, withTimeout } from "./daemon.js";

/** The line the old process logs once its successor serves (the daemon's own wording). */
const HANDED_OVER = /handed over: the successor serves every socket pid=(\d+)/g;

/** How long one handover may take: the successor is a fresh Node process on a busy machine. */
export const HANDOVER_WAIT_MS = 60_000;

/**
 * Whether `pid` has ended: no such process, or a zombie (a successor is not this process's child,
 * and its reaper, once its parent is gone, may be slow or absent in a container).
 */
export function processGone(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return true;
  }
  // The state follows the command name in parentheses, which may itself contain ") ".
  return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
}

/** One restart (a handover or a crash) as the host saw it. */
export interface RestartTiming {
  /** The process replaced, and the one serving after it. */
  readonly from: number;
  readonly to: number;
  /** performance.now() when the signal was sent, and when the new process had taken over. */
  readonly signalledAt: number;
  readonly doneAt: number;
}

/**
 * A daemon the host replaces under a running guest: by a planned handover (SIGUSR2), or by killing
 * its main process (SIGKILL) when a service manager brings it back. `log` is every process's log.
 */
export interface RestartedDaemon {
  readonly pid: number;
  readonly log: string;
  handOver(): Promise<RestartTiming>;
  crash(): Promise<RestartTiming>;
  /** SIGTERM to the serving process, and its end. */
  stop(): Promise<void>;
  /** Everything of it gone, at once; safe to call twice. */
  kill(): Promise<void>;
}

export class HandoverChain implements RestartedDaemon {
  readonly #daemon: DaemonProcess;
  readonly #pids: number[];

  constructor(daemon: DaemonProcess) {
    this.#daemon = daemon;
    this.#pids = [daemon.pid];
  }

  /**
   * Starts the daemon with `args` and resolves once it has logged `ready`; `adopt` sees the process
   * first (e.g. to keep its log as a test's evidence).
   */
  static async start(
    args: readonly string[],
    ready: string,
    adopt: (daemon: DaemonProcess) => void = () => {},
    ms = 30_000,
  ): Promise<HandoverChain> {
    const daemon = new DaemonProcess(args);
    adopt(daemon);
    const chain = new HandoverChain(daemon);
    try {
      await daemon.waitForLog(ready, ms);
    } catch (error) {
      await chain.kill();
      throw withDaemonLog(error, daemon);
    }
    return chain;
  }

  /** The process serving now. */
  get pid(): number {
    return this.#pids.at(-1) as number;
  }

  /** Every process of the chain, the first one first. */
  get pids(): readonly number[] {
    return this.#pids;
  }

  /** The log of the whole chain. */
  get log(): string {
    return this.#daemon.stderr;
  }

  /**
   * Signals the serving process, waits for its "handed over" line and its exit, and returns the
   * timing; the successor serves from then on. Throws when the process exits without handing over.
   */
  async handOver(ms = HANDOVER_WAIT_MS): Promise<RestartTiming> {
    const from = this.pid;
    const already = this.#pids.length - 1;
    const signalledAt = performance.now();
    process.kill(from, "SIGUSR2");
    let to = 0;
    await waitUntil(
      () => {
        const match = [...this.#daemon.stderr.matchAll(HANDED_OVER)][already];
        if (match?.[1] !== undefined) {
          to = Number(match[1]);
          return true;
        }
        if (processGone(from)) throw new Error(`pid ${from} exited without handing over`);
        return false;
      },
      `pid ${from} to hand over`,
      ms,
    );
    await waitUntil(() => processGone(from), `pid ${from} to exit after handing over`, ms);
    this.#pids.push(to);
    return { from, to, signalledAt, doneAt: performance.now() };
  }

  /** Nothing brings this daemon back after a crash: it needs a service manager keeping its fds. */
  crash(): Promise<RestartTiming> {
    return Promise.reject(
      new Error("a daemon without a service manager does not come back after a crash"),
    );
  }

  /**
   * SIGTERM to the serving process, and its exit (every pipe closed). Throws when it is gone
   * already or does not stop in time. A successor's exit status is not ours to read: its log says
   * "stopping" or the failure.
   */
  async stop(ms = HANDOVER_WAIT_MS): Promise<void> {
    if (processGone(this.pid)) throw new Error(`the serving daemon (pid ${this.pid}) is gone`);
    process.kill(this.pid, "SIGTERM");
    await withTimeout(this.#daemon.exited, ms, `pid ${this.pid} to stop on SIGTERM`);
  }

  /** SIGKILL to every process of the chain still running, and the close of the log pipes. */
  async kill(): Promise<void> {
    for (const pid of this.#pids) {
      if (!processGone(pid)) process.kill(pid, "SIGKILL");
    }
    await this.#daemon.exited;
  }
}
