/**
 * The daemon as a service with a file descriptor store (--fd-store under FdStoreSupervisor, as
 * systemd runs it with Restart=always and FileDescriptorStoreMax=): a handover moves the main process
 * to the successor (MAINPID=), and a main process killed with SIGKILL is started again with every fd
 * it stored. Either way the same service log and the same guest connections go on.
 * Must not reach into the daemon's modules: it sees the supervisor's events, signals and the log.
 * @module
 */

import { MAIN_JS, waitUntil } from "./daemon.js";
import { FdStoreSupervisor } from "./fd-store-supervisor.js";
import {
  HANDOVER_WAIT_MS,
  processGone,
  type RestartedDaemon,
  type RestartTiming,
} from "./handover-chain.js";

/** As contrib/systemd's unit: StartLimitBurst=20 in StartLimitIntervalSec=60. */
const START_LIMIT = { burst: 20, intervalMs: 60_000 } as const;

export class SupervisedDaemon implements RestartedDaemon {
  readonly #supervisor: FdStoreSupervisor;

  private constructor(supervisor: FdStoreSupervisor) {
    this.#supervisor = supervisor;
  }

  /**
   * Starts the daemon with `--fd-store` and `args` under a supervisor whose notify socket lives in
   * `dir`, and resolves once it has logged `ready`.
   */
  static async start(
    args: readonly string[],
    dir: string,
    ready: string,
    ms = 30_000,
  ): Promise<SupervisedDaemon> {
    const supervisor = FdStoreSupervisor.start({
      command: [process.execPath, MAIN_JS, "--fd-store", ...args],
      dir,
      startLimit: START_LIMIT,
    });
    const daemon = new SupervisedDaemon(supervisor);
    try {
      await waitUntil(() => supervisor.stderr.includes(ready), `the daemon to log ${ready}`, ms);
    } catch (error) {
      await supervisor.stop();
      throw supervisor.withLog(error);
    }
    return daemon;
  }

  get pid(): number {
    return this.#supervisor.mainPid;
  }

  get log(): string {
    return this.#supervisor.stderr;
  }

  /** The supervisor's events and the service's log, for a failure report. */
  describe(): string {
    return this.#supervisor.describe();
  }

  /** SIGUSR2; done once the successor is the main process (MAINPID=) and the old one has exited. */
  async handOver(ms = HANDOVER_WAIT_MS): Promise<RestartTiming> {
    const from = this.#liveMainPid();
    const since = this.#supervisor.mark();
    const signalledAt = performance.now();
    process.kill(from, "SIGUSR2");
    const moved = await this.#supervisor.waitFor("mainpid", {
      since,
      where: (event) => event.previous === from,
      ms,
    });
    await waitUntil(() => processGone(from), `pid ${from} to exit after handing over`, ms);
    return { from, to: moved.pid, signalledAt, doneAt: performance.now() };
  }

  /**
   * SIGKILL to the main process; done once the supervisor has started it again and the new one says
   * it is ready (every stored connection taken up).
   */
  async crash(ms = HANDOVER_WAIT_MS): Promise<RestartTiming> {
    const from = this.#liveMainPid();
    const since = this.#supervisor.mark();
    const signalledAt = performance.now();
    process.kill(from, "SIGKILL");
    const started = await this.#supervisor.waitFor("started", { since, ms });
    await this.#supervisor.waitFor("ready", {
      since,
      where: (event) => event.pid === started.pid,
      ms,
    });
    return { from, to: started.pid, signalledAt, doneAt: performance.now() };
  }

  /** `systemctl stop`: SIGTERM to the service, and its end; throws unless it exited with status 0. */
  async stop(): Promise<void> {
    const exit = await this.#supervisor.stop();
    if (exit !== null && (exit.code !== 0 || exit.signal !== null)) {
      throw new Error(`the daemon's exit on SIGTERM: ${JSON.stringify(exit)}`);
    }
  }

  async kill(): Promise<void> {
    await this.#supervisor.stop();
  }

  #liveMainPid(): number {
    const pid = this.#supervisor.mainPid;
    if (pid === 0) throw new Error(`the service has no main process\n${this.describe()}`);
    return pid;
  }
}
