/**
 * GuardedBus: the I2cBus wrapper that enforces access rules a bus itself does not know: read-only
 * devices (checked on the whole transfer before anything reaches the inner bus) and shutdown (a
 * transfer still running on a host adapter when the deadline passes is failed, so its chains can go
 * back to the guest). Every bus the daemon puts in an AddressMap is wrapped in one.
 * Must not: change messages, decide which addresses a guest may use (AddressMap does), or open devices.
 * @module
 */

import { type Logger, silentLogger } from "../log.js";
import { hex, type I2cBus, type I2cMessage } from "./bus.js";

/**
 * How many bytes a read-only device's register pointer (register or word address) has: 1 for chips
 * with 8-bit registers (sensors, PMICs, PMBus, 24c01..24c16), 2 for 16-bit word addresses (24c32 and
 * larger EEPROMs). Configured per device, never guessed: a 2-byte write to an 8-bit-register chip is
 * a register address plus a data byte, which the chip latches as a write.
 */
export type PointerBytes = 1 | 2;

/** The pointer width of a read-only device whose configuration does not give one. */
export const DEFAULT_POINTER_BYTES: PointerBytes = 1;

export function isPointerBytes(value: unknown): value is PointerBytes {
  return value === 1 || value === 2;
}

/**
 * Why `msgs` breaks the read-only rule for the host addresses in `readOnly` (address → pointer
 * width), or null when it does not. A read-only device may be read; the only write it takes is its
 * register pointer, exactly as many bytes as the device's pointer has, immediately followed in the
 * same transfer by a read of the same device. So a write never carries a byte past the pointer.
 * Everything else is refused, zero-length writes included: an SMBus quick write is a command on
 * some chips. The pointer itself still moves: that is what a read of a chosen register needs.
 */
export function readOnlyViolation(
  msgs: readonly I2cMessage[],
  readOnly: ReadonlyMap<number, PointerBytes>,
): string | null {
  for (const [index, msg] of msgs.entries()) {
    if (msg.read) continue;
    const pointerBytes = readOnly.get(msg.addr);
    if (pointerBytes === undefined) continue;
    const length = msg.buf.length;
    if (length === 0) return `zero-length write (quick command) to read-only ${hex(msg.addr)}`;
    if (length !== pointerBytes) {
      return `write of ${length} byte${length === 1 ? "" : "s"} to read-only ${hex(msg.addr)}, whose register pointer is ${pointerBytes} byte${pointerBytes === 1 ? "" : "s"}`;
    }
    const next = msgs[index + 1];
    if (next === undefined || !next.read || next.addr !== msg.addr) {
      return `write to read-only ${hex(msg.addr)} not followed by a read of it`;
    }
  }
  return null;
}

export interface GuardOptions {
  /** Host addresses on the inner bus that are read-only, with their register pointer widths. */
  readonly readOnly?: ReadonlyMap<number, PointerBytes>;
  readonly logger?: Logger;
}

/** A transfer handed to an asynchronous inner bus and not yet settled. */
type Pending = (done: number) => void;

export class GuardedBus implements I2cBus {
  readonly inner: I2cBus;
  /** The inner bus's: refusals answer in its manner too. */
  readonly synchronous: boolean;
  readonly readOnly: ReadonlyMap<number, PointerBytes>;
  readonly #logger: Logger;
  readonly #pending = new Set<Pending>();
  #aborted = false;

  constructor(inner: I2cBus, options: GuardOptions = {}) {
    this.inner = inner;
    this.synchronous = inner.synchronous;
    this.readOnly = new Map(options.readOnly ?? []);
    this.#logger = options.logger ?? silentLogger;
  }

  get name(): string {
    return this.inner.name;
  }

  /** The inner bus's: a refusal then answers at once too. */
  get inlineNow(): boolean {
    return this.synchronous || this.inner.inlineNow === true;
  }

  /** Transfers handed to the inner bus and not settled yet. */
  get inFlight(): number {
    return this.#pending.size;
  }

  transfer(msgs: readonly I2cMessage[]): number | Promise<number> {
    if (this.#aborted) return this.#refuse();
    const violation = this.readOnly.size > 0 ? readOnlyViolation(msgs, this.readOnly) : null;
    if (violation !== null) {
      this.#logger.warn("transfer refused", { bus: this.name, reason: violation });
      return this.#refuse();
    }
    const result = this.inner.transfer(msgs);
    if (typeof result === "number") return result;
    return new Promise<number>((resolve) => {
      const settle: Pending = (done) => {
        if (!this.#pending.delete(settle)) return;
        resolve(done);
      };
      this.#pending.add(settle);
      result.then(settle, (err: unknown) => {
        this.#logger.warn("bus transfer failed", { bus: this.name, error: String(err) });
        settle(0);
      });
    });
  }

  /**
   * Fails every transfer still running on the inner bus (they resolve to 0: ERR for the guest) and
   * refuses every later one. The inner bus may still finish them; its results are dropped.
   */
  abort(): void {
    this.#aborted = true;
    for (const settle of [...this.#pending]) settle(0);
  }

  close(): void {
    this.inner.close();
  }

  /**
   * "Nothing succeeded", in the inner bus's manner: a synchronous bus (or one that runs transfers
   * inline now) answers at once, an asynchronous one stays asynchronous (the device lends guest
   * memory in place only to buses that say they complete before returning, and counts on it).
   */
  #refuse(): number | Promise<number> {
    return this.inlineNow ? 0 : Promise.resolve(0);
  }
}
