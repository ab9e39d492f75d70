/**
 * runClosedLoop: the benchmark's frontend, run the way a C frontend pinned beside the daemon runs:
 * synchronous, blocking in poll(2) on the guests' call eventfds (one BlockingWait over all of them),
 * no allocation per transfer. On each guest it keeps `depth` separate transfers of the same messages
 * in flight, each with its own chains and FAIL_NEXT group, built once by I2cDriver.submitHeld (so
 * exactly I2cDriver's chain layout, indirect tables and packed rings included) and then handed back
 * unchanged (ring.republish) as soon as the transfer completes; one kick per batch, only when the
 * device asks. Failed transfers are counted from the status bytes in place; read data is not copied.
 * It owns the guests' queues while it runs (their I2cDriver must have nothing in flight) and blocks
 * the thread: must not be used where an event loop has to keep running (the daemon never does).
 * @module
 */

import {
  type HeldTransfer,
  type I2cDriver,
  I2cDriverError,
  type I2cOp,
  NO_STATUS,
} from "../src/frontend/i2c-driver.js";
import { RequestStatus } from "../src/i2c/protocol.js";
import { BlockingWait } from "../src/sys/blocking-wait.js";
import type { EventFd } from "../src/sys/eventfd.js";
import type { DriverRing } from "../src/vhost-user/frontend.js";
import type { UsedElement } from "../src/virtio/driver-split-queue.js";

/** A started guest queue to drive: its I2cDriver, and a name for errors. */
export interface ClosedLoopGuest {
  readonly name: string;
  readonly driver: I2cDriver;
}

export interface ClosedLoopOptions {
  /** Transfers kept in flight at once on each guest. */
  readonly depth: number;
  /** Stop submitting after this many transfers in all (the ones in flight still complete)... */
  readonly count?: number;
  /** ...or once this many milliseconds passed, whichever comes first. */
  readonly durationMs?: number;
  /** Receives each transfer's latency in microseconds, in completion order, up to its length. */
  readonly latenciesUs?: Float64Array;
  /** ETIMEDOUT when a guest with transfers in flight returns nothing for this long (default 5000). */
  readonly timeoutMs?: number;
}

export interface ClosedLoopResult {
  readonly completed: number;
  /** Completed transfers with any status not OK. */
  readonly failed: number;
  readonly elapsedMs: number;
  /** Latencies written to `latenciesUs`. */
  readonly recorded: number;
  /** Completed transfers per guest, in the order given. */
  readonly completedPerGuest: readonly number[];
}

/** One guest's part of the loop: its held transfers and where each chain's status byte is. */
class GuestLoop {
  readonly name: string;
  readonly driver: I2cDriver;
  readonly ring: DriverRing;
  readonly call: EventFd;
  readonly transfers: HeldTransfer[] = [];
  readonly #messages: number;
  /** Ring head / buffer id → chain index (transfer * messages + message), -1 when not ours. */
  readonly #chainOf: Int32Array;
  readonly #chainPending: Uint8Array;
  readonly #heads: Int32Array;
  readonly #statusViews: DataView[] = [];
  readonly #statusOffsets: Int32Array;
  readonly #remaining: Int32Array;
  readonly startedAt: Float64Array;
  /** Transfers in flight. */
  pending = 0;
  completed = 0;
  lastProgressAt = 0;

  constructor(guest: ClosedLoopGuest, messages: number, depth: number) {
    this.name = guest.name;
    this.driver = guest.driver;
    this.ring = guest.driver.queue.driver;
    this.call = guest.driver.queue.call;
    this.#messages = messages;
    this.#chainOf = new Int32Array(this.ring.size).fill(-1);
    this.#chainPending = new Uint8Array(depth * messages);
    this.#heads = new Int32Array(depth * messages);
    this.#statusOffsets = new Int32Array(depth * messages);
    this.#remaining = new Int32Array(depth);
    this.startedAt = new Float64Array(depth);
  }

  /** Queues transfer number `this.transfers.length` for the first time. */
  submitFirst(ops: readonly I2cOp[], now: number): void {
    const transfer = this.driver.submitHeld(ops);
    const t = this.transfers.length;
    this.transfers.push(transfer);
    const memory = this.ring.memory;
    transfer.chains.forEach((chain, m) => {
      const c = t * this.#messages + m;
      const { dv, offset } = memory.view(transfer.statusGpas[m] ?? 0, 1);
      this.#statusViews[c] = dv;
      this.#statusOffsets[c] = offset;
      this.#heads[c] = chain.head;
      this.#chainOf[chain.head] = c;
      this.#chainPending[c] = 1;
    });
    this.#remaining[t] = this.#messages;
    this.startedAt[t] = now;
    this.pending++;
  }

  /** Marks a used chain back; returns its transfer when that completed with it, else -1. */
  chainBack(head: number): number {
    const c = head < this.#chainOf.length ? (this.#chainOf[head] ?? -1) : -1;
    if (c < 0 || this.#chainPending[c] !== 1) {
      throw new I2cDriverError(
        "EBADRING",
        `${this.name}: used id ${head} is not a chain of this loop in flight`,
      );
    }
    this.#chainPending[c] = 0;
    const t = (c / this.#messages) | 0;
    const left = (this.#remaining[t] ?? 0) - 1;
    this.#remaining[t] = left;
    return left === 0 ? t : -1;
  }

  /** Whether any message of completed transfer `t` has a status other than OK. */
  failed(t: number): boolean {
    for (let c = t * this.#messages; c < (t + 1) * this.#messages; c++) {
      const view = this.#statusViews[c];
      if (view === undefined || view.getUint8(this.#statusOffsets[c] ?? 0) !== RequestStatus.OK) {
        return true;
      }
    }
    return false;
  }

  /** Hands completed transfer `t`'s chains to the device again, statuses reset (no kick). */
  republish(t: number, now: number): void {
    for (let c = t * this.#messages; c < (t + 1) * this.#messages; c++) {
      this.#statusViews[c]?.setUint8(this.#statusOffsets[c] ?? 0, NO_STATUS);
      this.#chainPending[c] = 1;
      this.ring.republish(this.#heads[c] ?? -1);
    }
    this.#remaining[t] = this.#messages;
    this.startedAt[t] = now;
  }

  /** Gives every (completed) transfer back to the driver. */
  releaseAll(): void {
    for (const transfer of this.transfers) this.driver.releaseHeld(transfer);
    this.transfers.length = 0;
  }
}

function badRing(name: string, error: unknown): I2cDriverError {
  if (error instanceof I2cDriverError) return error;
  return new I2cDriverError("EBADRING", `${name}: bad used ring: ${String(error)}`, {
    cause: error,
  });
}

/**
 * Runs the closed loop on `guests` until `count` transfers were submitted or `durationMs` passed,
 * then waits for the ones in flight and gives every chain back to its driver. Throws EINVAL when a
 * ring cannot hold `depth` transfers, ETIMEDOUT (naming the guest) when a guest with transfers in
 * flight returns nothing within timeoutMs, EBADRING on a used id that is not in flight. After a
 * throw the queues are left as they are: close the guests.
 */
export function runClosedLoop(
  guests: readonly ClosedLoopGuest[],
  ops: readonly I2cOp[],
  options: ClosedLoopOptions,
): ClosedLoopResult {
  const { depth, latenciesUs } = options;
  if (!Number.isInteger(depth) || depth < 1) {
    throw new I2cDriverError("EINVAL", `depth ${depth} is not a positive integer`);
  }
  if (guests.length === 0) throw new I2cDriverError("EINVAL", "no guest to run the loop on");
  if (ops.length === 0) throw new I2cDriverError("EINVAL", "a transfer needs at least one message");
  for (const guest of guests) {
    if (guest.driver.inFlight > 0) {
      throw new I2cDriverError("EINVAL", `${guest.name}: the driver has chains in flight`);
    }
    if (!guest.driver.canHold(ops, depth)) {
      throw new I2cDriverError("EINVAL", `${guest.name}: the ring cannot hold ${depth} transfers`);
    }
  }
  const timeoutMs = options.timeoutMs ?? 5000;
  const limit = options.count ?? Number.POSITIVE_INFINITY;
  const loops = guests.map((guest) => new GuestLoop(guest, ops.length, depth));
  const wait = new BlockingWait(loops.map((loop) => loop.call.fd));
  const used: UsedElement = { head: 0, len: 0 };
  const started = performance.now();
  const endAt = started + (options.durationMs ?? Number.POSITIVE_INFINITY);
  let submitted = 0;
  let pending = 0;
  let failed = 0;
  let completed = 0;
  let recorded = 0;

  for (const loop of loops) {
    const now = performance.now();
    for (let k = 0; k < depth && submitted < limit && now < endAt; k++) {
      loop.submitFirst(ops, now);
      submitted++;
      pending++;
    }
    loop.lastProgressAt = now;
    loop.driver.kickIfNeeded();
  }

  while (pending > 0) {
    let progressed = false;
    for (const loop of loops) {
      if (loop.pending === 0) continue;
      let got = false;
      let republished = false;
      try {
        while (loop.ring.getUsedInto(used)) {
          got = true;
          const t = loop.chainBack(used.head);
          if (t < 0) continue;
          const now = performance.now();
          completed++;
          loop.completed++;
          if (loop.failed(t)) failed++;
          if (latenciesUs !== undefined && recorded < latenciesUs.length) {
            latenciesUs[recorded++] = (now - (loop.startedAt[t] ?? now)) * 1000;
          }
          if (submitted < limit && now < endAt) {
            loop.republish(t, now);
            submitted++;
            republished = true;
          } else {
            loop.pending--;
            pending--;
          }
        }
      } catch (error) {
        throw badRing(loop.name, error);
      }
      if (republished) loop.driver.kickIfNeeded();
      if (got) {
        progressed = true;
        loop.lastProgressAt = performance.now();
      }
    }
    if (progressed || pending === 0) continue;
    // Nothing new: ask for calls, look once more (used entries may have landed meanwhile), then sleep.
    let arrived = false;
    for (const loop of loops) {
      if (loop.pending > 0 && loop.ring.enableCallbacks()) arrived = true;
    }
    if (arrived) continue;
    const now = performance.now();
    let deadline = Number.POSITIVE_INFINITY;
    for (const loop of loops) {
      if (loop.pending === 0) continue;
      if (now - loop.lastProgressAt >= timeoutMs) {
        throw new I2cDriverError(
          "ETIMEDOUT",
          `${loop.name}: the device returned none of ${loop.pending} transfer(s) in flight within ${timeoutMs} ms`,
        );
      }
      deadline = Math.min(deadline, loop.lastProgressAt + timeoutMs);
    }
    if (wait.wait(Math.max(1, Math.ceil(deadline - now))) === 0) continue;
    for (let i = 0; i < loops.length; i++) {
      if (wait.ready[i] === 1) loops[i]?.call.read();
    }
  }

  const elapsedMs = performance.now() - started;
  for (const loop of loops) loop.releaseAll();
  return {
    completed,
    failed,
    elapsedMs,
    recorded,
    completedPerGuest: loops.map((loop) => loop.completed),
  };
}
