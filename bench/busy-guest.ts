/**
 * A second guest frontend for the isolation workload, in a worker thread so that it blocks on its
 * own while the bench's main thread runs the measured guest's closed loop: connects to a daemon
 * socket, then, while told to be busy, keeps one transfer in flight at all times (a closed loop of
 * one transfer, started again as soon as it completes); while told to be idle, has nothing queued.
 * Commands and state go through a SharedArrayBuffer (Atomics), since both threads block in poll(2)
 * and neither runs its event loop meanwhile.
 * Must not measure anything but its own completed transfers: the main thread measures.
 * @module
 */

import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { I2cGuest, type I2cOp } from "../src/frontend/i2c-driver.js";
import { runClosedLoop } from "./closed-loop.js";

/** Int32 slots of the shared control block. */
const WANT = 0;
const STATE = 1;
const COMPLETED = 2;
const FAILED = 3;
const SLOTS = 4;

const IDLE = 0;
const BUSY = 1;
/** WANT: close and end. */
const EXIT = 2;
/** STATE: the loop failed (the worker's error event says why). */
const BROKEN = 3;

/** How long the main thread waits for the worker to take up a command. */
const COMMAND_TIMEOUT_MS = 10_000;

interface BusyGuestData {
  readonly path: string;
  readonly queueSize: number;
  readonly ops: readonly I2cOp[];
  readonly control: SharedArrayBuffer;
}

type WorkerMessage =
  | { readonly kind: "ready" }
  | { readonly kind: "error"; readonly message: string };

/** The main thread's handle on a busy-guest worker. */
export class BusyGuest {
  readonly #worker: Worker;
  readonly #control: Int32Array;
  readonly #exited: Promise<number>;
  #error: unknown;

  private constructor(worker: Worker, control: Int32Array) {
    this.#worker = worker;
    this.#control = control;
    this.#exited = new Promise((resolve) => worker.once("exit", resolve));
    worker.on("error", (err) => {
      this.#error = err;
    });
  }

  /** Starts the worker and resolves once its guest is connected and idle. */
  static async connect(path: string, queueSize: number, ops: readonly I2cOp[]): Promise<BusyGuest> {
    const control = new SharedArrayBuffer(SLOTS * Int32Array.BYTES_PER_ELEMENT);
    const data: BusyGuestData = { path, queueSize, ops, control };
    const worker = new Worker(new URL(import.meta.url), { workerData: data });
    const guest = new BusyGuest(worker, new Int32Array(control));
    await new Promise<void>((resolve, reject) => {
      worker.once("message", (message: WorkerMessage) => {
        if (message.kind === "ready") resolve();
        else reject(new Error(`busy guest on ${path}: ${message.message}`));
      });
      worker.once("error", reject);
      worker.once("exit", (code) => reject(new Error(`busy guest on ${path} exited (${code})`)));
    });
    return guest;
  }

  /** Transfers completed so far, and how many of them failed. */
  get completed(): number {
    return Atomics.load(this.#control, COMPLETED);
  }

  get failed(): number {
    return Atomics.load(this.#control, FAILED);
  }

  /** Has a transfer in flight from (about) now on; returns once the worker took the command. */
  busy(): void {
    this.#command(BUSY);
  }

  /** Lets the transfer in flight complete, then queues nothing; returns once nothing is in flight. */
  idle(): void {
    this.#command(IDLE);
  }

  #command(want: typeof IDLE | typeof BUSY): void {
    Atomics.store(this.#control, WANT, want);
    Atomics.notify(this.#control, WANT);
    const deadline = performance.now() + COMMAND_TIMEOUT_MS;
    for (;;) {
      const state = Atomics.load(this.#control, STATE);
      if (state === want) return;
      if (state === BROKEN)
        throw new Error("the busy guest's loop failed (its error follows at close)");
      const left = deadline - performance.now();
      if (left <= 0)
        throw new Error(`the busy guest did not become ${want === BUSY ? "busy" : "idle"}`);
      Atomics.wait(this.#control, STATE, state, left);
    }
  }

  /** Closes the guest's connection and ends the worker; throws what made its loop fail, if anything. */
  async close(): Promise<void> {
    Atomics.store(this.#control, WANT, EXIT);
    Atomics.notify(this.#control, WANT);
    const timer = setTimeout(() => void this.#worker.terminate(), COMMAND_TIMEOUT_MS);
    await this.#exited;
    clearTimeout(timer);
    if (this.#error !== undefined) throw this.#error;
  }
}

function setState(control: Int32Array, state: typeof IDLE | typeof BUSY | typeof BROKEN): void {
  Atomics.store(control, STATE, state);
  Atomics.notify(control, STATE);
}

/** The worker's side: connect, then follow the commands until EXIT. */
async function runWorker(data: BusyGuestData, port: NonNullable<typeof parentPort>): Promise<void> {
  const control = new Int32Array(data.control);
  let guest: I2cGuest;
  try {
    guest = await I2cGuest.connect(data.path, { queueSize: data.queueSize });
  } catch (err) {
    port.postMessage({ kind: "error", message: String(err) } satisfies WorkerMessage);
    return;
  }
  port.postMessage({ kind: "ready" } satisfies WorkerMessage);
  const loopGuest = [{ name: `busy guest on ${data.path}`, driver: guest.driver }];
  try {
    for (;;) {
      const want = Atomics.load(control, WANT);
      if (want === EXIT) break;
      if (want === IDLE) {
        setState(control, IDLE);
        Atomics.wait(control, WANT, IDLE);
        continue;
      }
      setState(control, BUSY);
      // One transfer per call: the command is looked at again between two transfers, a few µs apart.
      const run = runClosedLoop(loopGuest, data.ops, { depth: 1, count: 1, timeoutMs: 10_000 });
      Atomics.add(control, COMPLETED, run.completed);
      Atomics.add(control, FAILED, run.failed);
    }
    setState(control, IDLE);
  } catch (err) {
    setState(control, BROKEN);
    throw err;
  } finally {
    await guest.close();
  }
}

if (!isMainThread && parentPort !== null) {
  await runWorker(workerData as BusyGuestData, parentPort);
}
