/**
 * TransferOrder: the order in which one device's transfers run, and waiting until none is left.
 * Transfers run one after the other, in the order the guest queued them: a transfer submitted while
 * an asynchronous one runs (or others wait) waits behind it, and runs once everything ahead of it has
 * finished. A reset starts a new generation: waiting transfers are dropped, the result of the one
 * still running is to be ignored, and whoever waits for idle is woken.
 * Knows nothing of rings, guest memory or buses: the device's `run` starts a transfer and says
 * whether it went asynchronous. Allocates nothing for a transfer that runs at once.
 * @module
 */

/** What TransferOrder needs of a transfer: the generation it was submitted in. */
export interface OrderedTransfer {
  readonly generation: number;
}

/**
 * Starts `transfer`. Returns true when it went asynchronous: TransferOrder then runs nothing else
 * until `settle` is called for it.
 */
export type RunTransfer<T> = (transfer: T) => boolean;

export class TransferOrder<T extends OrderedTransfer> {
  readonly #run: RunTransfer<T>;
  #generation = 0;
  /** Transfers waiting behind the running one, oldest first. */
  readonly #waiting: T[] = [];
  /** An asynchronous transfer runs. */
  #running = false;
  #idleWaiters: (() => void)[] = [];

  constructor(run: RunTransfer<T>) {
    this.#run = run;
  }

  /** The current generation: a transfer submitted now carries it. */
  get generation(): number {
    return this.#generation;
  }

  /** Nothing runs asynchronously and nothing waits: a transfer submitted now may run at once. */
  get idle(): boolean {
    return !this.#running && this.#waiting.length === 0;
  }

  /**
   * Runs `transfer` at once when nothing runs or waits; otherwise queues `keep(transfer)` behind the
   * others. A transfer that runs at once may live in objects the caller reuses; one that waits
   * outlives the call, so `keep` gives it objects of its own.
   */
  submit(transfer: T, keep: (transfer: T) => T): void {
    if (!this.idle) {
      this.#waiting.push(keep(transfer));
      return;
    }
    if (this.#run(transfer)) this.#running = true;
  }

  /**
   * The asynchronous transfer submitted in `generation` has settled. False when a reset came in
   * between: its result is to be dropped, and nothing else changes. True otherwise: the caller
   * completes it, then calls `resume` so the transfers behind it run.
   */
  settle(generation: number): boolean {
    if (generation !== this.#generation) return false;
    this.#running = false;
    return true;
  }

  /** Runs waiting transfers in order until one goes asynchronous; wakes idle waiters when none is left. */
  resume(): void {
    while (!this.#running) {
      const transfer = this.#waiting.shift();
      if (transfer === undefined) break;
      if (this.#run(transfer)) this.#running = true;
    }
    if (this.idle) this.#wakeIdleWaiters();
  }

  /** Resolves once nothing runs asynchronously and nothing waits (at once when idle), or at a reset. */
  whenIdle(): Promise<void> {
    if (this.idle) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** A new generation: drops the waiting transfers, forgets the running one, wakes idle waiters. */
  reset(): void {
    this.#generation++;
    this.#waiting.length = 0;
    this.#running = false;
    this.#wakeIdleWaiters();
  }

  #wakeIdleWaiters(): void {
    if (this.#idleWaiters.length === 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const wake of waiters) wake();
  }
}
