/**
 * A service manager for tests that speaks systemd's side of sd_notify and the fd store, so crash and
 * upgrade paths run without systemd as PID 1: it binds the notify socket, starts the main process
 * with NOTIFY_SOCKET, keeps the fds sent with FDSTORE=1 (FDNAME=, FDPOLL=0, FDSTOREREMOVE=1), follows
 * MAINPID=, and restarts the command whenever the main process dies (Restart=always), passing the
 * listening sockets it bound (a .socket unit) and then every stored fd from fd 3 on with LISTEN_FDS,
 * LISTEN_FDNAMES and LISTEN_PID. Everything it sees is recorded as events tests wait on.
 *
 * Where it follows systemd 252 (src/core/service.c), on purpose:
 * - Stored fds are passed newest first (the store is a list each fd is prepended to), and the fds of
 *   one message in no particular order (systemd takes them out of a hash set); a main process must
 *   tell stored fds apart by name, never by position. `fdOrder: "arrival"` turns this off.
 * - An fd already in the store (the same open file) is not stored twice.
 * - A stored fd that reports a hang-up (a socket whose peer closed) is dropped, unless it came with
 *   FDPOLL=0; fds that cannot be polled (memfds) stay.
 * - A missing or invalid FDNAME= stores under "stored"; FDSTOREREMOVE=1 wins over FDSTORE=1 and
 *   needs a valid FDNAME=; fds sent without FDSTORE=1, or beyond FileDescriptorStoreMax=, are closed.
 * - Messages are handled before the death of the process that sent them (MAINPID= before exit).
 * - Everything in the service's process groups (its "cgroup") is stopped before a restart; the store
 *   survives restarts and is released when the service is dead for good (stop, start limit).
 * - No $FDSTORE in the environment (systemd 254 and later set it; 252 does not).
 * Where it cannot: it accepts messages from any sender (NotifyAccess=all: the addon receives no
 * SCM_CREDENTIALS); a datagram carrying more than 16 fds is refused whole (the addon's receive
 * buffer; systemd takes 768); a process that leaves its process group escapes it.
 * Must not: reach into the daemon's modules; only sockets, fds, environment and signals.
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { fstatSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { constants } from "node:os";
import { join } from "node:path";
import { closeFdQuietly } from "../../src/sys/fd.js";
import { FdWatcher } from "../../src/sys/fd-watcher.js";
import { native, type PollHandle } from "../../src/sys/native.js";
import { DatagramSocket } from "../../src/sys/service-manager.js";
import { MAX_RECV_FDS, UnixListener } from "../../src/sys/unix-socket.js";
import { WAIT_MS } from "./daemon.js";
import { scaled } from "./time.js";

/** A listening socket the supervisor binds and passes first, as ListenStream= + FileDescriptorName=. */
export interface ListenSocket {
  readonly path: string;
  readonly name: string;
}

export interface FdStoreSupervisorOptions {
  /** ExecStart=: the program and its arguments. */
  readonly command: readonly string[];
  /** Where the notify socket is bound (a test's temporary directory). */
  readonly dir: string;
  /** Added to this process's environment (LISTEN_* and NOTIFY_SOCKET are the supervisor's). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Sockets bound now and passed before the stored fds on every start, kept until stop(). */
  readonly listen?: readonly ListenSocket[];
  /** FileDescriptorStoreMax= (default 4096, as in contrib/systemd). */
  readonly fdStoreMax?: number;
  /** Restart= (default "always": any exit or signal of the main process restarts it). */
  readonly restart?: "always" | "no";
  /** RestartSec= in ms (default 100, systemd's). */
  readonly restartDelayMs?: number;
  /** StartLimitBurst= starts within StartLimitIntervalSec= (default 5 in 10 s); null: no limit. */
  readonly startLimit?: { readonly burst: number; readonly intervalMs: number } | null;
  /** Order of the stored fds passed: "systemd" (default, see the module comment) or "arrival". */
  readonly fdOrder?: "systemd" | "arrival";
  /** TimeoutStopSec= in ms: SIGTERM, then SIGKILL after this long (default WAIT_MS). */
  readonly stopTimeoutMs?: number;
}

/** How a process ended: code or signal; both null when it was not ours to reap and left no status. */
export interface ExitInfo {
  readonly code: number | null;
  readonly signal: string | null;
}

type EventBody =
  /** The command was started (`start` 0, then each restart); `fdNames` is its LISTEN_FDNAMES. */
  | {
      readonly kind: "started";
      readonly pid: number;
      readonly start: number;
      readonly fdNames: readonly string[];
    }
  /** A process of the service ended; `main`: it was the main process then (a restart follows). */
  | ({ readonly kind: "exited"; readonly pid: number; readonly main: boolean } & ExitInfo)
  | { readonly kind: "mainpid"; readonly pid: number; readonly previous: number }
  /** READY=1; `pid`: the main process when it arrived. */
  | { readonly kind: "ready"; readonly pid: number }
  | { readonly kind: "reloading" }
  | { readonly kind: "stopping" }
  | { readonly kind: "status"; readonly text: string }
  /** FDSTORE=1: `fds` newly stored under `name`, `duplicates` already in the store (closed). */
  | {
      readonly kind: "stored";
      readonly name: string;
      readonly fds: number;
      readonly duplicates: number;
    }
  /** Stored fds closed: asked (FDSTOREREMOVE=1), hung up (polled), or the service is dead. */
  | {
      readonly kind: "removed";
      readonly name: string;
      readonly fds: number;
      readonly reason: "request" | "hangup" | "released";
    }
  /** fds closed unstored, or a message dropped, and why. */
  | { readonly kind: "refused"; readonly reason: string; readonly fds: number }
  /** Too many starts: no more restarts, the store is released. */
  | { readonly kind: "start-limit-hit" }
  /** Every datagram as received, before it is acted on. */
  | { readonly kind: "message"; readonly text: string; readonly fds: number }
  /** BARRIER=1: every earlier message is handled; its fd was closed (sd_notify_barrier waits for that). */
  | { readonly kind: "barrier" };

export type SupervisorEvent = { readonly seq: number; readonly at: number } & EventBody;
export type SupervisorEventKind = SupervisorEvent["kind"];
export type EventOf<K extends SupervisorEventKind> = Extract<SupervisorEvent, { kind: K }>;

export interface WaitOptions<K extends SupervisorEventKind> {
  /** Only events from this index on (see mark()); default 0. */
  readonly since?: number;
  readonly where?: (event: EventOf<K>) => boolean;
  readonly ms?: number;
}

/** One fd in the store. */
export interface StoredFd {
  readonly name: string;
  readonly fd: number;
}

interface StoreEntry extends StoredFd {
  /** What makes two fds the same open file for deduplication; null: never a duplicate. */
  readonly identity: string | null;
  poll: PollHandle | null;
}

/** systemd's NOTIFY_BUFFER_MAX: a longer datagram is dropped. */
const NOTIFY_BUFFER_MAX = 4096;
/** libuv's UV_DISCONNECT: the peer hung up (POLLRDHUP; a hang-up or error also reports it). */
const UV_DISCONNECT = 4;
/** How often a main process that is not our child is checked (it sends no SIGCHLD to us). */
const PID_POLL_MS = 20;

const DEFAULTS = {
  fdStoreMax: 4096,
  restartDelayMs: 100,
  startLimit: { burst: 5, intervalMs: 10_000 },
} as const;

/** Supervisors made by this process so far: each binds a notify socket of its own name. */
let supervisors = 0;

export class FdStoreSupervisor {
  /** The NOTIFY_SOCKET path the main process gets. */
  readonly notifySocket: string;
  readonly #options: FdStoreSupervisorOptions;
  readonly #socket: DatagramSocket;
  readonly #watcher: FdWatcher;
  readonly #listeners: UnixListener[] = [];
  readonly #buffer = new Uint8Array(NOTIFY_BUFFER_MAX + 1);
  readonly #fdsOut = new Int32Array(1 + MAX_RECV_FDS);
  /** In the order they are passed (index 0 becomes the fd after the listening sockets). */
  #store: StoreEntry[] = [];
  readonly #events: SupervisorEvent[] = [];
  readonly #waiters = new Set<() => void>();
  readonly #children = new Map<number, ChildProcess>();
  /** The process groups of the commands started: the service's "cgroup". */
  readonly #groups = new Set<number>();
  readonly #startTimes: number[] = [];
  readonly #startedAt = Date.now();
  #mainPid = 0;
  #starts = 0;
  #stopping = false;
  #dead = false;
  #pidPoll: NodeJS.Timeout | null = null;
  #restartTimer: NodeJS.Timeout | null = null;
  #stderr = "";
  #stdout = "";

  private constructor(options: FdStoreSupervisorOptions) {
    this.#options = options;
    this.notifySocket = join(options.dir, `notify-${process.pid}-${supervisors++}`);
    this.#socket = DatagramSocket.bind(this.notifySocket);
    this.#watcher = new FdWatcher(this.#socket.fd, () => this.#drain());
    this.#watcher.start();
    try {
      for (const { path } of options.listen ?? []) this.#listeners.push(UnixListener.listen(path));
    } catch (error) {
      this.#closeAll();
      throw error;
    }
  }

  /** Binds the notify socket and the listening sockets, and starts the command. */
  static start(options: FdStoreSupervisorOptions): FdStoreSupervisor {
    const supervisor = new FdStoreSupervisor(options);
    supervisor.#spawn();
    return supervisor;
  }

  /** The main process now (it changes on MAINPID= and on each restart); 0 while there is none. */
  get mainPid(): number {
    return this.#mainPid;
  }

  get events(): readonly SupervisorEvent[] {
    return this.#events;
  }

  /** The stderr of every process of the service, in arrival order (handover successors included). */
  get stderr(): string {
    return this.#stderr;
  }

  get stdout(): string {
    return this.#stdout;
  }

  /** The index the next event gets: pass it as `since` to wait for what happens after now. */
  mark(): number {
    return this.#events.length;
  }

  /** The store in the order the next start gets it. */
  stored(): readonly StoredFd[] {
    return this.#store.map(({ name, fd }) => ({ name, fd }));
  }

  /** LISTEN_FDNAMES of the stored fds for the next start (a name once per fd). */
  storedNames(): string[] {
    return this.#store.map((entry) => entry.name);
  }

  /** The supervisor's own fds stored under `name` (writing through one changes what is passed). */
  fdsOf(name: string): number[] {
    return this.#store.filter((entry) => entry.name === name).map((entry) => entry.fd);
  }

  /** Sends `signal` to the main process. */
  kill(signal: NodeJS.Signals = "SIGTERM"): void {
    if (this.#mainPid === 0) throw new Error("no main process to signal");
    process.kill(this.#mainPid, signal);
  }

  /** Resolves with the first event of `kind` (matching `where`) from `since` on; rejects after `ms`. */
  waitFor<K extends SupervisorEventKind>(
    kind: K,
    options: WaitOptions<K> = {},
  ): Promise<EventOf<K>> {
    const { since = 0, where, ms = WAIT_MS } = options;
    const find = (): EventOf<K> | undefined =>
      this.#events
        .slice(since)
        .find(
          (event): event is EventOf<K> =>
            event.kind === kind && (where === undefined || where(event as EventOf<K>)),
        );
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = find();
        if (found === undefined) return;
        this.#waiters.delete(check);
        clearTimeout(timer);
        resolve(found);
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(
          new Error(`timed out after ${ms} ms waiting for a "${kind}" event\n${this.describe()}`),
        );
      }, ms);
      this.#waiters.add(check);
      check();
    });
  }

  /** The events and the service's stderr, for a failing test's message. */
  describe(): string {
    const events = this.#events.map((event) => {
      const { seq, at, kind, ...rest } = event;
      return `  #${seq} +${at}ms ${kind} ${JSON.stringify(rest)}`;
    });
    return `--- supervisor events ---\n${events.join("\n")}\n--- service stderr ---\n${this.#stderr}--- end ---`;
  }

  /** `err` with describe() appended. */
  withLog(err: unknown): Error {
    const error = err instanceof Error ? err : new Error(String(err));
    error.message += `\n${this.describe()}`;
    return error;
  }

  /**
   * Stops the service as `systemctl stop` does: no restart, SIGTERM to every process of it, SIGKILL
   * after stopTimeoutMs; then the store, the listening sockets (their files removed, as with
   * RemoveOnStop=yes) and the notify socket are closed. Resolves with the main process's exit (null
   * when none was running). Safe to call twice.
   */
  async stop(): Promise<ExitInfo | null> {
    if (this.#stopping) return null;
    this.#stopping = true;
    if (this.#restartTimer !== null) clearTimeout(this.#restartTimer);
    const main = this.#mainPid;
    const since = this.mark();
    const ended = await this.#terminate(this.#options.stopTimeoutMs ?? WAIT_MS);
    // A child is gone from /proc's live processes a moment before Node reaps it and says so.
    const exitOfMain = () =>
      this.#events.slice(since).find((event) => event.kind === "exited" && event.pid === main);
    for (let waited = 0; main !== 0 && exitOfMain() === undefined && waited < 1000; ) {
      await sleep(PID_POLL_MS);
      waited += PID_POLL_MS;
    }
    const exit = exitOfMain();
    this.#drain();
    this.#closeAll();
    if (!ended) throw new Error(`the service did not stop even after SIGKILL\n${this.describe()}`);
    return exit?.kind === "exited" ? { code: exit.code, signal: exit.signal } : null;
  }

  #record(body: EventBody): void {
    this.#events.push({ seq: this.#events.length, at: Date.now() - this.#startedAt, ...body });
    for (const waiter of [...this.#waiters]) waiter();
  }

  #spawn(): void {
    const { command, env = {}, listen = [] } = this.#options;
    const [program, ...args] = command;
    if (program === undefined) throw new Error("no command");
    const fds = [
      ...this.#listeners.map((listener) => listener.fd),
      ...this.#store.map((e) => e.fd),
    ];
    const names = [...listen.map((socket) => socket.name), ...this.storedNames()];
    const childEnv: Record<string, string | undefined> = { ...process.env, ...env };
    for (const name of ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"]) delete childEnv[name];
    childEnv.NOTIFY_SOCKET = this.notifySocket;
    if (fds.length > 0) {
      childEnv.LISTEN_FDS = String(fds.length);
      childEnv.LISTEN_FDNAMES = names.join(":");
    }
    // Node cannot set the environment between fork and exec: the shell sets LISTEN_PID to its own pid
    // and execs the command in place, so it is the command's pid.
    const script = fds.length > 0 ? 'LISTEN_PID=$$ exec "$0" "$@"' : 'exec "$0" "$@"';
    // Its own process group: what the service starts stays in it, and stop() finds it there.
    const child = spawn("/bin/sh", ["-c", script, program, ...args], {
      env: childEnv,
      stdio: ["ignore", "pipe", "pipe", ...fds],
      detached: true,
    });
    const pid = child.pid;
    if (pid === undefined) throw new Error(`cannot start ${program}`);
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      this.#stderr += chunk;
    });
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      this.#stdout += chunk;
    });
    child.on("exit", (code, signal) => this.#onChildExit(pid, { code, signal }));
    this.#children.set(pid, child);
    this.#groups.add(pid);
    this.#startTimes.push(Date.now());
    this.#mainPid = pid;
    this.#record({ kind: "started", pid, start: this.#starts++, fdNames: names });
  }

  #onChildExit(pid: number, exit: ExitInfo): void {
    this.#children.delete(pid);
    // A MAINPID= sent before this exit must count first (systemd handles notifications before SIGCHLD).
    this.#drain();
    this.#ended(pid, exit);
  }

  /** A process of the service ended; when it was the main one, the service restarts or is dead. */
  #ended(pid: number, exit: ExitInfo): void {
    const main = pid === this.#mainPid;
    this.#record({ kind: "exited", pid, main, ...exit });
    if (!main) return;
    this.#mainPid = 0;
    this.#stopPidPoll();
    if (this.#stopping) return;
    if ((this.#options.restart ?? "always") === "no") {
      void this.#terminate(this.#options.stopTimeoutMs ?? WAIT_MS).then(() => this.#release());
      return;
    }
    void this.#restart();
  }

  async #restart(): Promise<void> {
    // The rest of the "cgroup" goes before the next start (KillMode=control-group).
    await this.#terminate(this.#options.stopTimeoutMs ?? WAIT_MS);
    if (this.#stopping) return;
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = null;
      if (this.#stopping) return;
      const limit =
        this.#options.startLimit === undefined ? DEFAULTS.startLimit : this.#options.startLimit;
      if (limit !== null) {
        const since = Date.now() - limit.intervalMs;
        if (this.#startTimes.filter((time) => time > since).length >= limit.burst) {
          this.#record({ kind: "start-limit-hit" });
          this.#release();
          return;
        }
      }
      this.#spawn();
    }, this.#options.restartDelayMs ?? DEFAULTS.restartDelayMs);
  }

  /** The service is dead for good: the store goes (systemd releases a dead unit's resources). */
  #release(): void {
    this.#dead = true;
    for (const name of new Set(this.#store.map((entry) => entry.name))) {
      this.#removeStored(name, "released");
    }
  }

  /**
   * SIGTERM to every process of the service, SIGKILL to what is left after `ms`; true once none is
   * left. A main process that is not our child is seen dying here too.
   */
  async #terminate(ms: number): Promise<boolean> {
    const end = Date.now() + scaled(ms);
    let signal: NodeJS.Signals = "SIGTERM";
    for (const pid of this.#members()) signalQuietly(pid, signal);
    for (;;) {
      this.#checkMain();
      const left = this.#members();
      if (left.length === 0) return true;
      if (Date.now() > end) {
        if (signal === "SIGKILL") return false;
        signal = "SIGKILL";
        for (const pid of left) signalQuietly(pid, signal);
      }
      await sleep(PID_POLL_MS);
    }
  }

  /** Live (not zombie) processes in the service's process groups. */
  #members(): number[] {
    const pids: number[] = [];
    for (const entry of readdirSync("/proc")) {
      if (!/^[0-9]+$/.test(entry)) continue;
      const stat = procStat(Number(entry));
      if (stat !== null && stat.state !== "Z" && this.#groups.has(stat.pgrp)) {
        pids.push(Number(entry));
      }
    }
    return pids;
  }

  /** A main process that is not our child: checked until it is gone. */
  #startPidPoll(): void {
    this.#stopPidPoll();
    this.#pidPoll = setInterval(() => this.#checkMain(), PID_POLL_MS);
  }

  #stopPidPoll(): void {
    if (this.#pidPoll !== null) clearInterval(this.#pidPoll);
    this.#pidPoll = null;
  }

  #checkMain(): void {
    const pid = this.#mainPid;
    if (pid === 0 || this.#children.has(pid)) return;
    const stat = procStat(pid);
    if (stat !== null && stat.state !== "Z" && stat.state !== "X") return;
    this.#drain();
    if (this.#mainPid !== pid) return;
    this.#ended(
      pid,
      stat === null ? { code: null, signal: null } : decodeWaitStatus(stat.exitCode),
    );
  }

  /** Handles every waiting datagram. */
  #drain(): void {
    if (this.#socket.fd < 0) return;
    for (;;) {
      let length: number;
      try {
        length = native().recvMsg(
          this.#socket.fd,
          this.#buffer,
          0,
          this.#buffer.length,
          this.#fdsOut,
        );
      } catch (error) {
        // ECTRUNC: more fds than the addon receives; they were closed.
        this.#record({ kind: "refused", reason: String(error), fds: 0 });
        continue;
      }
      if (length < 0) return;
      const fds = Array.from(this.#fdsOut.subarray(1, 1 + (this.#fdsOut[0] ?? 0)));
      const text = new TextDecoder().decode(this.#buffer.subarray(0, length));
      this.#record({ kind: "message", text, fds: fds.length });
      if (length > NOTIFY_BUFFER_MAX) {
        this.#refuse(fds, "notification longer than 4096 bytes");
        continue;
      }
      this.#handle(text, fds);
    }
  }

  /** One notification, as service_notify_message() takes it. */
  #handle(text: string, fds: number[]): void {
    const lines = text.split("\n").filter((line) => line !== "");
    const value = (key: string) =>
      lines.find((line) => line.startsWith(`${key}=`))?.slice(key.length + 1);
    const mainPid = value("MAINPID");
    if (mainPid !== undefined) {
      const pid = /^[1-9][0-9]*$/.test(mainPid) ? Number(mainPid) : 0;
      if (pid > 0 && pid !== this.#mainPid && !this.#stopping && !this.#dead) {
        const previous = this.#mainPid;
        this.#mainPid = pid;
        this.#record({ kind: "mainpid", pid, previous });
        if (!this.#children.has(pid)) this.#startPidPoll();
      }
    }
    if (lines.includes("READY=1")) this.#record({ kind: "ready", pid: this.#mainPid });
    if (lines.includes("STOPPING=1")) this.#record({ kind: "stopping" });
    if (lines.includes("RELOADING=1")) this.#record({ kind: "reloading" });
    const status = value("STATUS");
    if (status !== undefined) this.#record({ kind: "status", text: status });
    const fdName = value("FDNAME");
    const validName = fdName !== undefined && isValidFdName(fdName) ? fdName : undefined;
    if (lines.includes("BARRIER=1")) {
      // Messages are handled in order, so closing its one fd now answers it.
      if (lines.length !== 1 || fds.length !== 1) {
        this.#refuse(fds, "BARRIER=1 must come alone with one fd");
      } else {
        closeFdQuietly(fds[0] as number);
        this.#record({ kind: "barrier" });
      }
      return;
    }
    if (lines.includes("FDSTOREREMOVE=1")) {
      if (validName === undefined) {
        this.#refuse(fds, "FDSTOREREMOVE=1 without a valid FDNAME=");
      } else {
        this.#removeStored(validName, "request");
        this.#refuse(fds, "fds sent with FDSTOREREMOVE=1");
      }
      return;
    }
    if (lines.includes("FDSTORE=1")) {
      const poll = value("FDPOLL");
      this.#addToStore(
        fds,
        validName ?? "stored",
        poll === undefined || parseBoolean(poll) !== false,
      );
      return;
    }
    this.#refuse(fds, "fds sent without FDSTORE=1");
  }

  #addToStore(fds: number[], name: string, poll: boolean): void {
    const max = this.#options.fdStoreMax ?? DEFAULTS.fdStoreMax;
    if (this.#dead) {
      this.#refuse(fds, "the service is dead");
      return;
    }
    const systemdOrder = (this.#options.fdOrder ?? "systemd") === "systemd";
    // systemd takes a message's fds out of a hash set: any order.
    const incoming = systemdOrder ? shuffled(fds) : fds;
    let added = 0;
    let duplicates = 0;
    for (const [i, fd] of incoming.entries()) {
      if (this.#store.length >= max) {
        this.#refuse(incoming.slice(i), `FileDescriptorStoreMax=${max} reached`);
        break;
      }
      const identity = fdIdentity(fd);
      if (identity !== null && this.#store.some((entry) => entry.identity === identity)) {
        closeFdQuietly(fd);
        duplicates++;
        continue;
      }
      const entry: StoreEntry = { name, fd, identity, poll: null };
      if (poll) entry.poll = this.#pollHangup(entry);
      if (systemdOrder) this.#store.unshift(entry);
      else this.#store.push(entry);
      added++;
    }
    if (added > 0 || duplicates > 0) this.#record({ kind: "stored", name, fds: added, duplicates });
  }

  /** Drops `entry` when its fd hangs up; null when the fd cannot be polled (a regular file). */
  #pollHangup(entry: StoreEntry): PollHandle | null {
    let handle: PollHandle;
    try {
      handle = native().pollCreate(entry.fd, (status, events) => {
        if (status < 0 || (events & UV_DISCONNECT) !== 0) this.#drop(entry, "hangup");
      });
    } catch {
      return null; // EPERM: not pollable, kept as systemd keeps it
    }
    native().pollStart(handle, UV_DISCONNECT);
    return handle;
  }

  #removeStored(name: string, reason: "request" | "released"): void {
    const matching = this.#store.filter((entry) => entry.name === name);
    for (const entry of matching) this.#closeEntry(entry);
    this.#store = this.#store.filter((entry) => entry.name !== name);
    if (matching.length > 0) this.#record({ kind: "removed", name, fds: matching.length, reason });
  }

  #drop(entry: StoreEntry, reason: "hangup"): void {
    if (!this.#store.includes(entry)) return;
    this.#closeEntry(entry);
    this.#store = this.#store.filter((other) => other !== entry);
    this.#record({ kind: "removed", name: entry.name, fds: 1, reason });
  }

  #closeEntry(entry: StoreEntry): void {
    if (entry.poll !== null) native().pollClose(entry.poll);
    entry.poll = null;
    closeFdQuietly(entry.fd);
  }

  #refuse(fds: readonly number[], reason: string): void {
    if (fds.length === 0) return;
    for (const fd of fds) closeFdQuietly(fd);
    this.#record({ kind: "refused", reason, fds: fds.length });
  }

  #closeAll(): void {
    this.#stopPidPoll();
    this.#watcher.close();
    this.#socket.close();
    rmSync(this.notifySocket, { force: true });
    for (const entry of this.#store) this.#closeEntry(entry);
    this.#store = [];
    for (const listener of this.#listeners) {
      listener.close();
      rmSync(listener.path, { force: true });
    }
    this.#listeners.length = 0;
  }
}

/**
 * What makes two fds one open file, as far as can be seen without kcmp(2): the inode, or for an
 * eventfd its id (every anonymous-inode fd shares one inode). null: never taken for a duplicate (a
 * device, which systemd never merges, or another anonymous inode).
 */
function fdIdentity(fd: number): string | null {
  let link: string;
  try {
    link = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
  if (link.startsWith("anon_inode:")) {
    const id = /^eventfd-id:\s*(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
    return id === null ? null : `eventfd:${id[1]}`;
  }
  const stat = fstatSync(fd, { bigint: true });
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return null;
  return `${stat.dev}:${stat.ino}`;
}

/** systemd's fdname_is_valid: printable ASCII but ':', at most 255 characters (empty is valid). */
function isValidFdName(name: string): boolean {
  return name.length < 256 && /^[\x20-\x39\x3b-\x7e]*$/.test(name);
}

/** systemd's parse_boolean; undefined when it is none. */
function parseBoolean(text: string): boolean | undefined {
  const lower = text.toLowerCase();
  if (["1", "yes", "y", "true", "t", "on"].includes(lower)) return true;
  if (["0", "no", "n", "false", "f", "off"].includes(lower)) return false;
  return undefined;
}

function shuffled<T>(items: readonly T[]): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
}

interface ProcStat {
  readonly state: string;
  readonly pgrp: number;
  /** The wait status, set once the process is a zombie (field 52). */
  readonly exitCode: number;
}

/** /proc/<pid>/stat, or null when the process is gone. */
function procStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: fields start after the last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return {
    state: fields[0] ?? "",
    pgrp: Number(fields[2]),
    exitCode: Number(fields[49] ?? 0),
  };
}

function decodeWaitStatus(status: number): ExitInfo {
  const signal = status & 0x7f;
  if (signal === 0) return { code: (status >> 8) & 0xff, signal: null };
  const name = Object.entries(constants.signals).find(([, number]) => number === signal)?.[0];
  return { code: null, signal: name ?? String(signal) };
}

function signalQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already.
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
