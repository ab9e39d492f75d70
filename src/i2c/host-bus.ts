/**
 * HostBus: an I2cBus on a host adapter (/dev/i2c-N). Owns the adapter's fd, the check at open that
 * every listed address is free of kernel drivers and its repetition, at most every 2 s, while
 * transfers run (I2C_RDWR does not look at bound drivers, so one bound later is found only by
 * checking again), the choice between I2C_RDWR and an SMBus command per transfer, the
 * per-adapter queue that runs transfers one at a time, in order, on the adapter's I/O thread
 * (transfer() returns a Promise), inline (for a thread that may block: transfer() returns a number)
 * or, adaptive, inline while the adapter answers fast and on its I/O thread while it is slow, through
 * one code path, and the adapter's
 * health: errors become failed transfers with rate-limited log lines, an adapter that went away is
 * marked down (transfers fail at once) and reopened, at most once per interval, when it comes back.
 * Must not: decide which addresses a guest may use (AddressMap does) or throw from transfer():
 * every failure becomes "0 messages succeeded" and a log line.
 * @module
 */

import { closeSync, constants as fsConstants, openSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { type Logger, LogRateLimiter, logSuppression } from "../log.js";
import { hasCode } from "../sys/errors.js";
import { I2C_FUNC_SMBUS_QUICK, I2C_M_RD, I2cDev, type I2cRdwrMsg } from "../sys/i2c-dev.js";
import { boundClient, resolveAdapter as resolveAdapterBySysfs } from "./adapters.js";
import { hex, type I2cBus, type I2cMessage } from "./bus.js";
import { copySmbusResult, describeShape, mapToSmbus, type SmbusCommand } from "./smbus.js";

export type HostBusErrorCode =
  /** /dev/i2c-N does not exist (adapter number wrong, or i2c-dev not loaded). */
  | "I2C_ADAPTER_MISSING"
  /** /dev/i2c-N exists but cannot be opened or queried (permissions, not an i2c-dev node). */
  | "I2C_ADAPTER_OPEN"
  /** A listed address is owned by a kernel driver (I2C_SLAVE gave EBUSY). */
  | "I2C_ADDRESS_BUSY"
  /** I2C_SLAVE refused a listed address for another reason. */
  | "I2C_ADDRESS_CHECK";

export class HostBusError extends Error {
  readonly code: HostBusErrorCode;
  readonly adapter: number;
  /** The address concerned, for the address codes. */
  readonly addr: number | undefined;

  constructor(
    code: HostBusErrorCode,
    message: string,
    adapter: number,
    addr?: number,
    cause?: unknown,
  ) {
    super(message, { cause });
    this.name = "HostBusError";
    this.code = code;
    this.adapter = adapter;
    this.addr = addr;
  }
}

/** What HostBus needs of an open adapter: I2cDev, or a test double. */
export type AdapterDev = Pick<
  I2cDev,
  "funcs" | "setSlave" | "rdwr" | "smbus" | "rdwrSync" | "smbusSync" | "close"
>;

/**
 * Where a HostBus runs its transfers and how they complete:
 * - "thread": on the adapter's I/O thread; transfer() returns a Promise, settled on the event loop.
 * - "inline": in the calling thread, which blocks until the adapter answered; transfer() returns a
 *   number. For a thread that may block (a data-plane worker), never an event loop's thread.
 * - "adaptive": for a thread that blocks in epoll_wait (a data-plane worker): a new adapter starts on
 *   its I/O thread; after `inlineAfterFastTransfers` fast transfers in a row (each under
 *   `fastTransferMs` from submission to answer) the next ones run inline, until one takes
 *   `fastTransferMs` or more: the ones after it go back to the I/O thread. A slow adapter (clock
 *   stretching, a failing device with long timeouts) so never holds up the thread for long twice,
 *   and a fast one pays no thread round trip. A transfer that would have to wait for one in flight
 *   on the adapter goes to the I/O thread too. transfer() returns a number or a Promise.
 */
export type HostCompletion = "thread" | "inline" | "adaptive";

export interface HostBusOptions {
  /** Default "thread". */
  completion?: HostCompletion;
  /**
   * An eventfd the adapter's I/O thread adds 1 to as each of its transfers ends, after signalling
   * the event loop (I2cDevOptions.completionWakeFd): a thread blocked in epoll_wait on it learns that
   * its loop has a completion to run. Kept open by the caller while the bus is open. Default: none.
   */
  loopWakeFd?: number;
  /** Adaptive: fast transfers in a row on the I/O thread before transfers run inline. Default 8. */
  inlineAfterFastTransfers?: number;
  /**
   * Adaptive: a transfer that took less (from submission to the adapter's answer, on `now`) is
   * fast; one that took this long or more is slow. Default 1 ms.
   */
  fastTransferMs?: number;
  /** Directory holding the i2c-dev nodes. Default "/dev". */
  devDir?: string;
  /**
   * The adapter's sysfs name, when the device list named it: a re-plugged adapter may come back under
   * another number, so a reopen looks the name up again.
   */
  adapterName?: string;
  /** Name → adapter number for reopens. Default: the sysfs lookup of src/i2c/adapters.ts. */
  resolveAdapter?: (name: string) => number;
  /** Opens an adapter node. Default I2cDev.open (with `loopWakeFd`). */
  openDev?: (path: string) => AdapterDev;
  /** Monotonic milliseconds. Default performance.now. */
  now?: () => number;
  /** Least time between two reopen attempts of an adapter that is down. Default 1000 ms. */
  reopenIntervalMs?: number;
  /** Warning lines about failed transfers per second and adapter; the rest are counted. Default 10. */
  warnLinesPerSecond?: number;
  /**
   * Least time between two checks (I2C_SLAVE, EBUSY when a kernel driver is bound) of every listed
   * address while transfers run. Default 2000 ms.
   */
  addressCheckIntervalMs?: number;
  /**
   * Whether the adapter's node still exists. Default: opening `path` succeeds (then it is closed);
   * with `openDev` given, always true (a world without nodes). See #watchRemoval.
   */
  nodePresent?: (path: string) => boolean;
  /** How often an open adapter's node is looked for (#watchRemoval). Default 1000 ms. */
  removalCheckIntervalMs?: number;
}

/** Errors with which an adapter refuses a zero-length I2C_RDWR message (I2C_AQ_NO_ZERO_LEN). */
const ZERO_LENGTH_REFUSALS = ["EOPNOTSUPP", "ENOTSUP", "EINVAL"] as const;
/** Errors that are an ordinary NACK: probing an empty address produces them all the time. */
const NACK_CODES = ["ENXIO", "EREMOTEIO"] as const;
/**
 * Errors that mean the adapter itself is gone: i2c-dev answers ENODEV on an fd whose adapter was
 * removed, a suspended or dying adapter ESHUTDOWN, and EBADF means our fd is no longer usable.
 */
const GONE_CODES = ["ENODEV", "ESHUTDOWN", "EBADF"] as const;

const DEFAULT_REOPEN_INTERVAL_MS = 1000;
const DEFAULT_ADDRESS_CHECK_INTERVAL_MS = 2000;
const DEFAULT_REMOVAL_CHECK_INTERVAL_MS = 1000;

/** Whether `path` opens: i2c-dev removes an adapter's node as soon as the adapter's removal starts. */
function nodeOpens(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (error) {
    return !(hasCode(error, "ENOENT") || hasCode(error, "ENODEV") || hasCode(error, "ENXIO"));
  }
  closeSync(fd);
  return true;
}
const DEFAULT_WARN_LINES_PER_SECOND = 10;
const DEFAULT_INLINE_AFTER_FAST_TRANSFERS = 8;
const DEFAULT_FAST_TRANSFER_MS = 1;

/**
 * What a failed transfer says about the adapter: "nack" (no device answered: routine, debug),
 * "gone" (the adapter disappeared: mark it down and reopen later), "fault" (the bus or the device
 * misbehaved: EIO, ETIMEDOUT, arbitration lost...; warn).
 */
export type TransferFailureKind = "nack" | "gone" | "fault";

export function classifyTransferError(code: string): TransferFailureKind {
  if ((NACK_CODES as readonly string[]).includes(code)) return "nack";
  if ((GONE_CODES as readonly string[]).includes(code)) return "gone";
  return "fault";
}

/** A transfer waiting for, or running on, its adapter; `msgs` null: the bus's close. */
interface AdapterJob {
  readonly bus: HostBus;
  readonly msgs: readonly I2cMessage[] | null;
  /** Runs in the calling thread (transfer() returns a number), not on the adapter's I/O thread. */
  readonly inline: boolean;
  readonly resolve: (done: number) => void;
}

/**
 * The transfers of one adapter, shared by every HostBus on its device path (in this thread) that
 * either always or never waits, so two transfers on one adapter never overlap (the I2C_SLAVE +
 * I2C_SMBUS pair in particular). Jobs run in order, one at a time; a job that ends synchronously
 * lets the next start in the same loop, not deeper. An inline job always ends before transfer()
 * returns, so it runs only on an idle queue: an "inline" bus has a queue of its own (it cannot
 * wait), an adaptive bus shares the threaded buses' queue and runs a transfer on the I/O thread
 * whenever it would have to wait.
 */
interface AdapterQueue {
  readonly waiting: AdapterJob[];
  running: boolean;
  pumping: boolean;
}

/**
 * One queue per device path for "inline" buses and one for the others, kept for the life of the
 * thread (a handful of adapters at most). Module state: buses in different threads have their own
 * queues (and fds).
 */
const adapterQueues = {
  waiting: new Map<string, AdapterQueue>(),
  inline: new Map<string, AdapterQueue>(),
};

function adapterQueue(path: string, completion: HostCompletion): AdapterQueue {
  const queues = completion === "inline" ? adapterQueues.inline : adapterQueues.waiting;
  let queue = queues.get(path);
  if (queue === undefined) {
    queue = { waiting: [], running: false, pumping: false };
    queues.set(path, queue);
  }
  return queue;
}

/** `new Promise(captureResolve)` leaves its resolve here: no closure per transfer. */
let capturedResolve: ((done: number) => void) | null = null;
function captureResolve(resolve: (done: number) => void): void {
  capturedResolve = resolve;
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "UNKNOWN";
}

/** The I2C_RDWR form of a transfer: the same buffers, read flags set. */
function toRdwrMsgs(msgs: readonly I2cMessage[]): I2cRdwrMsg[] {
  const rdwr: I2cRdwrMsg[] = [];
  for (const m of msgs) rdwr.push({ addr: m.addr, flags: m.read ? I2C_M_RD : 0, buf: m.buf });
  return rdwr;
}

function isSingleZeroLength(msgs: readonly I2cMessage[]): boolean {
  return msgs.length === 1 && msgs[0]!.buf.length === 0;
}

/** I2cDev.open, handing the I/O thread the wake fd of the options. */
function defaultOpenDev(options: HostBusOptions): (path: string) => AdapterDev {
  const wake = options.loopWakeFd;
  return wake === undefined
    ? (path) => I2cDev.open(path)
    : (path) => I2cDev.open(path, { completionWakeFd: wake });
}

function adapterPath(devDir: string | undefined, adapter: number): string {
  return `${devDir ?? "/dev"}/i2c-${adapter}`;
}

/** Who owns a busy address and how to free it, as sysfs tells. */
function busyAddressOwner(adapter: number, addr: number): string {
  const client = boundClient(adapter, addr);
  if (client === undefined) return "a kernel driver; unbind the driver";
  const device = client.device === undefined ? "" : `device ${client.device} at `;
  const unbind = join(dirname(dirname(client.path)), "drivers", client.driver, "unbind");
  return `the kernel driver ${client.driver} (${device}${client.path}); unbind it (echo ${basename(client.path)} > ${unbind})`;
}

function checkAddress(dev: AdapterDev, path: string, adapter: number, addr: number): void {
  try {
    dev.setSlave(addr);
  } catch (error) {
    if (hasCode(error, "EBUSY")) {
      throw new HostBusError(
        "I2C_ADDRESS_BUSY",
        `address ${hex(addr)} on ${path} is in use by ${busyAddressOwner(adapter, addr)} or remove the address from the device list`,
        adapter,
        addr,
        error,
      );
    }
    throw new HostBusError(
      "I2C_ADDRESS_CHECK",
      `address ${hex(addr)} on ${path} cannot be used (${codeOf(error)})`,
      adapter,
      addr,
      error,
    );
  }
}

/**
 * Opens `path`, reads its functions and checks that no kernel driver owns any of `addrs`. Throws
 * HostBusError with nothing left open. Used at start-up and for every reopen.
 */
function openAdapter(
  path: string,
  adapter: number,
  addrs: readonly number[],
  openDev: (path: string) => AdapterDev,
): AdapterDev {
  let dev: AdapterDev;
  try {
    dev = openDev(path);
  } catch (error) {
    if (hasCode(error, "ENOENT")) {
      throw new HostBusError(
        "I2C_ADAPTER_MISSING",
        `${path} does not exist: no I2C adapter ${adapter} (is the i2c-dev module loaded?)`,
        adapter,
        undefined,
        error,
      );
    }
    throw new HostBusError(
      "I2C_ADAPTER_OPEN",
      `cannot open ${path} (${codeOf(error)})`,
      adapter,
      undefined,
      error,
    );
  }
  try {
    void dev.funcs;
    for (const addr of addrs) checkAddress(dev, path, adapter, addr);
    return dev;
  } catch (error) {
    try {
      dev.close();
    } catch {
      // the adapter may be gone already; nothing else holds this fd
    }
    if (error instanceof HostBusError) throw error;
    throw new HostBusError(
      "I2C_ADAPTER_OPEN",
      `cannot read the functions of ${path} (${codeOf(error)}): is it an i2c-dev node?`,
      adapter,
      undefined,
      error,
    );
  }
}

export class HostBus implements I2cBus {
  /** True when transfer() always returns a number (completes before it returns): "inline" only. */
  readonly synchronous: boolean;
  readonly completion: HostCompletion;
  readonly #logger: Logger;
  /** The job running on this bus, the adapter it runs on and its SMBus command (if any). */
  #current: AdapterJob | null = null;
  #currentDev: AdapterDev | null = null;
  #currentCommand: SmbusCommand | null = null;
  /** The adapter's answers, bound once. */
  readonly #onRdwrDone = (error: Error | null, sent?: number): void => this.#rdwrDone(error, sent);
  readonly #onSmbusDone = (error: Error | null): void => this.#smbusDone(error);
  /** Where a synchronous transfer's job leaves its result (bound once, like the two above). */
  readonly #onSyncDone = (done: number): void => {
    this.#syncDone = done;
  };
  #syncDone = 0;
  /** Where the next transfer runs when the adapter is idle: inline, or on the I/O thread. */
  #inline: boolean;
  /** Adaptive: fast transfers in a row since the last slow one (or the open). */
  #fastInARow = 0;
  /** Adaptive: when the running job was first handed to the adapter (`now`), -1 if not yet. */
  #submittedAt = -1;
  readonly #inlineAfterFastTransfers: number;
  readonly #fastTransferMs: number;
  readonly #addrs: readonly number[];
  readonly #options: HostBusOptions;
  readonly #openDev: (path: string) => AdapterDev;
  readonly #now: () => number;
  readonly #reopenIntervalMs: number;
  readonly #addressCheckIntervalMs: number;
  readonly #warnLimiter: LogRateLimiter;
  /** The queue of the path at start-up, kept across reopens so one adapter keeps one queue. */
  readonly #queue: AdapterQueue;
  #adapter: number;
  #path: string;
  /** The open adapter, or null while it is down (gone, not reopened yet). */
  #dev: AdapterDev | null;
  /** Raw I2C_FUNCS bits, read at each (re)open. */
  #funcs = 0;
  #canI2c = false;
  #canQuick = false;
  /** Set once the adapter refused a zero-length I2C_RDWR message: use SMBus quick from then on. */
  #noZeroLength = false;
  /** While down: no reopen attempt before this time. */
  #retryAt = 0;
  /** No new check of the listed addresses before this time (set at every (re)open and check). */
  #nextAddressCheck = 0;
  /** Listed addresses whose last check failed (a kernel driver owns them): transfers to them fail. */
  readonly #unusable = new Set<number>();
  /** Why the last reopen failed, so a reason is warned about once and repeats go to debug. */
  #downReason: string | null = null;
  #closed = false;
  readonly #removalWatch: NodeJS.Timeout;

  private constructor(
    adapter: number,
    path: string,
    dev: AdapterDev,
    addrs: readonly number[],
    logger: Logger,
    options: HostBusOptions,
  ) {
    this.#adapter = adapter;
    this.#path = path;
    this.completion = options.completion ?? "thread";
    this.synchronous = this.completion === "inline";
    this.#inline = this.synchronous;
    this.#inlineAfterFastTransfers =
      options.inlineAfterFastTransfers ?? DEFAULT_INLINE_AFTER_FAST_TRANSFERS;
    this.#fastTransferMs = options.fastTransferMs ?? DEFAULT_FAST_TRANSFER_MS;
    this.#queue = adapterQueue(path, this.completion);
    this.#addrs = [...addrs];
    this.#logger = logger;
    this.#options = options;
    this.#openDev = options.openDev ?? defaultOpenDev(options);
    this.#now = options.now ?? (() => performance.now());
    this.#reopenIntervalMs = options.reopenIntervalMs ?? DEFAULT_REOPEN_INTERVAL_MS;
    this.#addressCheckIntervalMs =
      options.addressCheckIntervalMs ?? DEFAULT_ADDRESS_CHECK_INTERVAL_MS;
    // Left-out lines count in `stats` (logSuppressed) under the adapter's name.
    this.#warnLimiter = new LogRateLimiter(
      options.warnLinesPerSecond ?? DEFAULT_WARN_LINES_PER_SECOND,
      1000,
      this.#now,
      logSuppression,
      `i2c-${adapter}`,
    );
    this.#dev = dev;
    this.#useFuncs(dev);
    this.#removalWatch = this.#watchRemoval(
      options.nodePresent ?? (options.openDev === undefined ? nodeOpens : () => true),
      options.removalCheckIntervalMs ?? DEFAULT_REMOVAL_CHECK_INTERVAL_MS,
    );
  }

  /**
   * Unbinding an adapter's driver (or unplugging it) removes its node at once but waits, in
   * i2c_del_adapter, until every open fd of the adapter is closed, and transfers on those fds keep
   * working meanwhile: no error ever tells the daemon. So the node is looked for while the adapter
   * is up and idle; once it is gone, the adapter is marked down and its fd closed, which lets the
   * removal finish, and reopened like any adapter that went away.
   */
  #watchRemoval(nodePresent: (path: string) => boolean, intervalMs: number): NodeJS.Timeout {
    const timer = setInterval(() => {
      const dev = this.#dev;
      if (dev === null || this.#closed || this.#queue.running) return;
      if (!nodePresent(this.#path)) this.#markDown("ENOENT");
    }, intervalMs);
    timer.unref();
    return timer;
  }

  /** The adapter number (it may change when an adapter listed by name is re-plugged). */
  get adapter(): number {
    return this.#adapter;
  }

  get path(): string {
    return this.#path;
  }

  get name(): string {
    return `i2c-${this.#adapter}`;
  }

  /** False while the adapter is gone and not reopened yet. */
  get up(): boolean {
    return this.#dev !== null;
  }

  /**
   * Opens /dev/i2c-<adapter>, reads its functions once and checks that no kernel driver owns any of
   * `addrs`. Throws HostBusError (nothing stays open) when any of that fails.
   */
  static open(
    adapter: number,
    addrs: readonly number[],
    logger: Logger,
    options: HostBusOptions = {},
  ): HostBus {
    const path = adapterPath(options.devDir, adapter);
    const dev = openAdapter(path, adapter, addrs, options.openDev ?? defaultOpenDev(options));
    const bus = new HostBus(adapter, path, dev, addrs, logger, options);
    logger.debug("adapter opened", {
      path,
      funcs: `0x${bus.#funcs.toString(16)}`,
      mode: bus.#canI2c ? "i2c" : "smbus",
      completion: bus.completion,
    });
    return bus;
  }

  /** A freshly (re)opened adapter: its functions, and its addresses just checked by openAdapter. */
  #useFuncs(dev: AdapterDev): void {
    this.#funcs = dev.funcs.raw;
    this.#canI2c = dev.funcs.i2c;
    this.#canQuick = dev.funcs.smbusQuick;
    this.#noZeroLength = false;
    this.#unusable.clear();
    this.#nextAddressCheck = this.#now() + this.#addressCheckIntervalMs;
  }

  /** The next transfer() runs inline: inline mode, or adaptive and fast, with nothing queued. */
  get inlineNow(): boolean {
    if (this.synchronous) return true;
    const queue = this.#queue;
    return this.#inline && !this.#closed && !queue.running && queue.waiting.length === 0;
  }

  /**
   * Runs one transfer after every transfer queued before it on this adapter. `msgs.length` on
   * success, 0 on a failure (an errno says nothing of how far it got), the messages carried out
   * when an I2C_RDWR stopped early: the number itself when the transfer ran inline, else a Promise
   * of it.
   */
  transfer(msgs: readonly I2cMessage[]): number | Promise<number> {
    if (this.#closed) {
      this.#logger.warn("transfer on a closed adapter", { path: this.path });
      return this.#answer(0);
    }
    if (msgs.length === 0) return this.#answer(0);
    if (this.synchronous) return this.#transferInline(msgs);
    const queue = this.#queue;
    if (this.#inline && !queue.running && queue.waiting.length === 0) {
      return this.#transferInline(msgs);
    }
    const promise = new Promise<number>(captureResolve);
    const resolve = capturedResolve!;
    capturedResolve = null;
    this.#enqueue({ bus: this, msgs, inline: false, resolve });
    return promise;
  }

  /** A result as this bus's transfer() gives it when no transfer runs. */
  #answer(done: number): number | Promise<number> {
    return this.#inline ? done : Promise.resolve(done);
  }

  /** The inline transfer(): the job runs, to its end, inside #enqueue. */
  #transferInline(msgs: readonly I2cMessage[]): number {
    if (this.#queue.running) {
      // Only a transfer started from inside another one on this adapter (from a logger, say) gets
      // here: it cannot wait for the one under it to end.
      this.#logger.warn("transfer refused: another runs on this adapter in this thread", {
        path: this.path,
      });
      return 0;
    }
    this.#syncDone = 0;
    this.#enqueue({ bus: this, msgs, inline: true, resolve: this.#onSyncDone });
    return this.#syncDone;
  }

  /** Stops taking transfers; the fd closes once the transfers already queued have run. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#removalWatch);
    this.#enqueue({ bus: this, msgs: null, inline: this.#inline, resolve: () => {} });
  }

  #enqueue(job: AdapterJob): void {
    this.#queue.waiting.push(job);
    HostBus.#pump(this.#queue);
  }

  /** Starts waiting jobs (of any bus on the adapter) until one runs asynchronously. */
  static #pump(queue: AdapterQueue): void {
    if (queue.pumping) return;
    queue.pumping = true;
    try {
      while (!queue.running) {
        const job = queue.waiting.shift();
        if (job === undefined) break;
        queue.running = true;
        job.bus.#start(job);
      }
    } finally {
      queue.pumping = false;
    }
  }

  /** Ends the running job: its result to its caller, then the next job of the adapter. */
  #finish(job: AdapterJob, done: number): void {
    if (this.#submittedAt >= 0) this.#timed(job.inline, this.#now() - this.#submittedAt);
    this.#current = null;
    this.#currentDev = null;
    this.#currentCommand = null;
    job.resolve(done);
    this.#queue.running = false;
    HostBus.#pump(this.#queue);
  }

  #start(job: AdapterJob): void {
    const { msgs } = job;
    if (msgs === null) {
      this.#closeDev();
      if (this.#warnLimiter.pending > 0) {
        this.#logger.warn("failed transfers not logged", {
          path: this.path,
          suppressed: this.#warnLimiter.pending,
        });
      }
      this.#finish(job, 0);
      return;
    }
    this.#current = job;
    try {
      const dev = this.#dev ?? this.#reopen();
      if (dev === null) {
        this.#logger.debug("transfer failed: adapter down", {
          path: this.path,
          shape: describeShape(msgs),
        });
        this.#finish(job, 0);
        return;
      }
      // #start runs while no job is on the adapter's thread: the I2C_SLAVE calls of the check
      // cannot change the address of an SMBus command under it.
      if (this.#now() >= this.#nextAddressCheck && !this.#checkAddresses(dev)) {
        this.#finish(job, 0);
        return;
      }
      const taken = this.#unusable.size === 0 ? undefined : this.#unusableIn(msgs);
      if (taken !== undefined) {
        this.#warnLimited("transfer refused: a kernel driver owns the address", {
          path: this.path,
          addr: hex(taken),
        });
        this.#finish(job, 0);
        return;
      }
      this.#currentDev = dev;
      if (this.#canI2c && !(this.#noZeroLength && this.#canQuick && isSingleZeroLength(msgs))) {
        this.#submitRdwr(dev, job, msgs);
        return;
      }
      // SMBus-only adapter, or a zero-length probe on an adapter known to refuse them in I2C_RDWR.
      const cmd = mapToSmbus(msgs, this.#funcs);
      if (!cmd) {
        this.#logger.debug("transfer has no SMBus form on this adapter", {
          path: this.path,
          shape: describeShape(msgs),
        });
        this.#finish(job, 0);
        return;
      }
      this.#submitSmbus(dev, job, cmd);
    } catch (error) {
      // Refused before it reached the adapter (closed fd, bad message): a failed transfer, which
      // says nothing about the adapter's speed.
      this.#submittedAt = -1;
      if (this.#current === job) this.#transferFailed(error);
    }
  }

  /**
   * Adaptive: where the adapter's transfers run next, from how long one that reached the adapter
   * took (`inline`: the way it ran).
   */
  #timed(inline: boolean, tookMs: number): void {
    this.#submittedAt = -1;
    if (tookMs >= this.#fastTransferMs) {
      this.#fastInARow = 0;
      if (!this.#inline) return;
      this.#inline = false;
      this.#logger.debug("slow transfer: transfers go to the I/O thread", {
        path: this.path,
        ms: tookMs.toFixed(3),
        ran: inline ? "inline" : "I/O thread",
      });
      return;
    }
    if (this.#inline) return;
    if (++this.#fastInARow < this.#inlineAfterFastTransfers) return;
    this.#inline = true;
    this.#logger.debug("fast adapter: transfers run inline", {
      path: this.path,
      fastInARow: this.#fastInARow,
    });
  }

  /** The clock reading of a job's first submission, for an adaptive bus only. */
  #submitting(): void {
    if (this.completion === "adaptive" && this.#submittedAt < 0) this.#submittedAt = this.#now();
  }

  /**
   * Hands the transfer to the adapter: to its I/O thread (the answer comes to #rdwrDone later; a
   * refusal throws), or inline, its answer or refusal given to #rdwrDone before this returns.
   */
  #submitRdwr(dev: AdapterDev, job: AdapterJob, msgs: readonly I2cMessage[]): void {
    this.#submitting();
    if (!job.inline) {
      dev.rdwr(toRdwrMsgs(msgs), this.#onRdwrDone);
      return;
    }
    let failure: unknown = null;
    let sent: number | undefined;
    try {
      sent = dev.rdwrSync(toRdwrMsgs(msgs));
    } catch (error) {
      failure = error;
    }
    this.#rdwrDone(failure, sent);
  }

  /** The SMBus form of #submitRdwr, answered by #smbusDone. */
  #submitSmbus(dev: AdapterDev, job: AdapterJob, cmd: SmbusCommand): void {
    this.#currentCommand = cmd;
    this.#submitting();
    if (!job.inline) {
      dev.smbus(cmd.addr, cmd.readWrite, cmd.command, cmd.size, cmd.data, this.#onSmbusDone);
      return;
    }
    let failure: unknown = null;
    try {
      dev.smbusSync(cmd.addr, cmd.readWrite, cmd.command, cmd.size, cmd.data);
    } catch (error) {
      failure = error;
    }
    this.#smbusDone(failure);
  }

  /** The adapter's answer to an I2C_RDWR: null, or why it failed (or was refused). */
  #rdwrDone(error: unknown, sent?: number): void {
    const job = this.#current;
    const dev = this.#currentDev;
    if (job === null || job.msgs === null || dev === null) return;
    if (error === null && sent !== undefined && sent < job.msgs.length) {
      // The adapter stopped early (I2C_RDWR returned fewer messages): the rest never happened and
      // fail, as the kernel told i2c-dev's caller; their read buffers hold nothing.
      this.#warnLimited("transfer cut short by the adapter", {
        path: this.path,
        shape: describeShape(job.msgs),
        sent: `${sent}/${job.msgs.length}`,
      });
      this.#finish(job, sent);
      return;
    }
    if (error === null) {
      this.#succeeded(job, job.msgs);
      return;
    }
    const msgs = job.msgs;
    const refused = (ZERO_LENGTH_REFUSALS as readonly string[]).includes(codeOf(error));
    if (!refused || !this.#canQuick || !isSingleZeroLength(msgs) || this.#noZeroLength) {
      this.#transferFailed(error);
      return;
    }
    // The adapter cannot put a zero-length message on the bus through I2C_RDWR: from now on
    // such probes go out as SMBus quick commands, which are the same bus traffic.
    this.#noZeroLength = true;
    this.#logger.info("adapter refuses zero-length messages; using SMBus quick for them", {
      path: this.path,
      code: codeOf(error),
    });
    const quick = mapToSmbus(msgs, I2C_FUNC_SMBUS_QUICK);
    if (!quick) {
      this.#transferFailed(error);
      return;
    }
    try {
      this.#submitSmbus(dev, job, quick);
    } catch (submitError) {
      this.#transferFailed(submitError);
    }
  }

  /** The adapter's answer to an SMBus command: null, or why it failed (or was refused). */
  #smbusDone(error: unknown): void {
    const job = this.#current;
    const cmd = this.#currentCommand;
    if (job === null || job.msgs === null || cmd === null) return;
    if (error !== null) {
      this.#transferFailed(error);
      return;
    }
    copySmbusResult(cmd, job.msgs);
    this.#succeeded(job, job.msgs);
  }

  #succeeded(job: AdapterJob, msgs: readonly I2cMessage[]): void {
    // The shape string is built only when someone reads it: not per transfer on the hot path.
    if (this.#logger.enabled("debug")) {
      this.#logger.debug("transfer", { path: this.path, shape: describeShape(msgs), result: "ok" });
    }
    this.#finish(job, msgs.length);
  }

  /** The running transfer failed: log as its error says, then 0 to its caller. */
  #transferFailed(error: unknown): void {
    const job = this.#current;
    if (job === null || job.msgs === null) return;
    const dev = this.#currentDev;
    if (dev !== null) this.#failed(error, describeShape(job.msgs), dev);
    else this.#logger.warn("transfer failed", { path: this.path, code: codeOf(error) });
    this.#finish(job, 0);
  }

  #closeDev(): void {
    const dev = this.#dev;
    this.#dev = null;
    try {
      dev?.close();
    } catch (error) {
      this.#logger.warn("closing the adapter failed", { path: this.path, code: codeOf(error) });
    }
  }

  #failed(error: unknown, shape: string, dev: AdapterDev): void {
    const code = codeOf(error);
    const fields = { path: this.path, shape, code };
    switch (classifyTransferError(code)) {
      case "nack":
        // Routine (probing empty addresses): only when asked for.
        this.#logger.debug("transfer failed", fields);
        return;
      case "gone":
        if (this.#dev === dev) this.#markDown(code);
        return;
      case "fault":
        this.#warnLimited("transfer failed", fields);
    }
  }

  /** A warning a guest can repeat at will (one per transfer): through the adapter's rate limit. */
  #warnLimited(message: string, fields: Record<string, string>): void {
    const { write, suppressed } = this.#warnLimiter.admit();
    if (suppressed > 0) {
      this.#logger.warn("failed transfers not logged", { path: this.path, suppressed });
    }
    if (write) this.#logger.warn(message, fields);
  }

  /**
   * Checks every listed address again with I2C_SLAVE, as the open did: an address a kernel driver
   * took since (EBUSY, or any other refusal) becomes unusable, one that was released usable again;
   * each change is logged once. Returns false when the adapter turned out to be gone (marked down).
   */
  #checkAddresses(dev: AdapterDev): boolean {
    this.#nextAddressCheck = this.#now() + this.#addressCheckIntervalMs;
    for (const addr of this.#addrs) {
      try {
        dev.setSlave(addr);
        if (this.#unusable.delete(addr)) {
          this.#logger.info(`address ${hex(addr)} on ${this.path} is free again`, {
            path: this.path,
            addr: hex(addr),
          });
        }
      } catch (error) {
        const code = codeOf(error);
        if (classifyTransferError(code) === "gone") {
          this.#markDown(code);
          return false;
        }
        if (this.#unusable.has(addr)) continue;
        this.#unusable.add(addr);
        const client = code === "EBUSY" ? boundClient(this.adapter, addr) : undefined;
        const owner =
          code !== "EBUSY"
            ? "fails its check"
            : `is now in use by ${client === undefined ? "a kernel driver" : `the kernel driver ${client.driver} (${client.path})`}`;
        this.#logger.warn(
          `address ${hex(addr)} on ${this.path} ${owner}; transfers to it fail until it is free`,
          { path: this.path, addr: hex(addr), code, ...(client && { driver: client.driver }) },
        );
      }
    }
    return true;
  }

  /** The first address of `msgs` that the last check found unusable. */
  #unusableIn(msgs: readonly I2cMessage[]): number | undefined {
    for (const m of msgs) if (this.#unusable.has(m.addr)) return m.addr;
    return undefined;
  }

  #markDown(code: string): void {
    this.#logger.warn(`adapter ${this.name} gone; transfers fail until it is back`, {
      path: this.path,
      code,
    });
    this.#closeDev();
    this.#downReason = null;
    this.#retryAt = this.#now() + this.#reopenIntervalMs;
    // Adaptive: the adapter that comes back (maybe another one) has to show again that it is fast;
    // the transfer that found this one gone does not count.
    this.#inline = this.synchronous;
    this.#fastInARow = 0;
    this.#submittedAt = -1;
  }

  /**
   * While down: at most one attempt per interval to find the adapter again (by name when it was
   * named), open it, re-read its functions and re-check the listed addresses. Returns the open
   * adapter, or null (the transfer fails at once, nothing touched).
   */
  #reopen(): AdapterDev | null {
    const now = this.#now();
    if (now < this.#retryAt) return null;
    this.#retryAt = now + this.#reopenIntervalMs;
    const was = this.#adapter;
    let reason: string;
    try {
      const name = this.#options.adapterName;
      const adapter =
        name === undefined ? was : (this.#options.resolveAdapter ?? resolveAdapterBySysfs)(name);
      const path = adapterPath(this.#options.devDir, adapter);
      const dev = openAdapter(path, adapter, this.#addrs, this.#openDev);
      this.#adapter = adapter;
      this.#path = path;
      this.#dev = dev;
      this.#downReason = null;
      this.#useFuncs(dev);
      this.#logger.info(`adapter ${this.name} back`, {
        path,
        previous: adapter === was ? undefined : `i2c-${was}`,
        funcs: `0x${this.#funcs.toString(16)}`,
        mode: this.#canI2c ? "i2c" : "smbus",
      });
      return dev;
    } catch (error) {
      reason = error instanceof Error ? error.message : String(error);
      const fields = { path: this.path, code: codeOf(error), reason };
      // A kernel driver that took a listed address while the adapter was away is worth a warning;
      // an adapter that is simply still absent was warned about when it went.
      const busy = codeOf(error) === "I2C_ADDRESS_BUSY";
      if (busy && reason !== this.#downReason) {
        this.#logger.warn(`adapter i2c-${was} is back but stays down`, fields);
      } else {
        this.#logger.debug(`adapter i2c-${was} still down`, fields);
      }
      this.#downReason = reason;
      return null;
    }
  }
}
