/**
 * Run-time counters per guest (socket index) and per device (guest address): transfers, messages,
 * bytes written and read, errors, NACKs, and a latency histogram with fixed power-of-two buckets.
 * Fed with TransferRecords; read as a JSON-ready snapshot (the control socket's `stats`).
 * Must not: allocate per transfer beyond the first sight of a guest or address (a guest can name at
 * most 128 addresses), or keep any transfer data.
 * @module
 */

import type { TransferRecord } from "../i2c/observer.js";

/** Upper bounds (µs, inclusive) of the latency buckets: 1 µs to ~1 s; slower goes in the last count. */
export const LATENCY_BOUNDS_US: readonly number[] = Array.from({ length: 21 }, (_, i) => 2 ** i);

export interface LatencySnapshot {
  /** Upper bound of each bucket in µs; counts has one more entry, for anything slower. */
  readonly boundsUs: readonly number[];
  readonly counts: readonly number[];
  readonly count: number;
  readonly sumUs: number;
  readonly maxUs: number;
}

/** Index of the first bucket whose bound is >= us (the overflow bucket after the last bound). */
export function latencyBucket(us: number): number {
  if (us <= 1) return 0;
  const index = Math.ceil(Math.log2(us));
  return Math.min(index, LATENCY_BOUNDS_US.length);
}

export class LatencyHistogram {
  readonly #counts = new Array<number>(LATENCY_BOUNDS_US.length + 1).fill(0);
  #count = 0;
  #sumUs = 0;
  #maxUs = 0;

  add(us: number): void {
    const index = latencyBucket(us);
    this.#counts[index] = (this.#counts[index] ?? 0) + 1;
    this.#count++;
    this.#sumUs += us;
    if (us > this.#maxUs) this.#maxUs = us;
  }

  snapshot(): LatencySnapshot {
    return {
      boundsUs: LATENCY_BOUNDS_US,
      counts: [...this.#counts],
      count: this.#count,
      sumUs: this.#sumUs,
      maxUs: this.#maxUs,
    };
  }
}

export interface CounterSnapshot {
  readonly transfers: number;
  readonly messages: number;
  readonly bytesWritten: number;
  readonly bytesRead: number;
  /** Transfers refused or failed by their bus. */
  readonly errors: number;
  /** Transfers a target did not acknowledge. */
  readonly nacks: number;
  /** Messages a fault was injected into (src/i2c/faults.ts), counted once per message. */
  readonly injectedFaults: number;
  /** Time on the bus of transfers that reached one. */
  readonly latencyUs: LatencySnapshot;
}

class CounterSet {
  transfers = 0;
  messages = 0;
  bytesWritten = 0;
  bytesRead = 0;
  errors = 0;
  nacks = 0;
  injectedFaults = 0;
  readonly latency = new LatencyHistogram();

  countResult(record: TransferRecord): void {
    this.transfers++;
    if (record.result === "error") this.errors++;
    else if (record.result === "nack") this.nacks++;
    this.injectedFaults += record.injected.length;
    if (record.bus !== null) this.latency.add(record.durationUs);
  }

  snapshot(): CounterSnapshot {
    return {
      transfers: this.transfers,
      messages: this.messages,
      bytesWritten: this.bytesWritten,
      bytesRead: this.bytesRead,
      errors: this.errors,
      nacks: this.nacks,
      injectedFaults: this.injectedFaults,
      latencyUs: this.latency.snapshot(),
    };
  }
}

export interface GuestCounters extends CounterSnapshot {
  readonly guest: number;
}

export interface DeviceCounters extends CounterSnapshot {
  /** Guest address, `0x50`. */
  readonly address: string;
  /** The bus it was last reached on; null when it never reached one (unlisted). */
  readonly bus: string | null;
}

export interface CountersSnapshot {
  readonly guests: readonly GuestCounters[];
  readonly devices: readonly DeviceCounters[];
}

/**
 * Counters for the whole daemon. A device's transfer, error and latency counts include every
 * transfer that addressed it; an error or NACK is counted on the device of the failed message.
 */
export class TransferCounters {
  readonly #guests = new Map<number, CounterSet>();
  readonly #devices = new Map<number, CounterSet>();
  readonly #deviceBus = new Map<number, string | null>();

  record(record: TransferRecord): void {
    const guest = counterSet(this.#guests, record.guest);
    guest.countResult(record);
    const { messages, data, failedIndex } = record;
    for (const { index } of record.injected) {
      const addr = messages[index]?.addr;
      if (addr !== undefined) counterSet(this.#devices, addr).injectedFaults++;
    }
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i];
      if (!m) continue;
      const device = counterSet(this.#devices, m.addr);
      if (record.bus !== null || !this.#deviceBus.has(m.addr)) {
        this.#deviceBus.set(m.addr, record.bus);
      }
      // Count the transfer once per device it addressed.
      if (!addressedBefore(record, i)) {
        device.transfers++;
        if (record.bus !== null) device.latency.add(record.durationUs);
      }
      if (i === failedIndex) {
        if (record.result === "error") device.errors++;
        else if (record.result === "nack") device.nacks++;
      }
      if (i >= failedIndex) continue;
      const bytes = data[i]?.length ?? 0;
      guest.messages++;
      device.messages++;
      if (m.read) {
        guest.bytesRead += bytes;
        device.bytesRead += bytes;
      } else {
        guest.bytesWritten += bytes;
        device.bytesWritten += bytes;
      }
    }
  }

  snapshot(): CountersSnapshot {
    const guests = [...this.#guests]
      .sort(([a], [b]) => a - b)
      .map(([guest, set]) => ({ guest, ...set.snapshot() }));
    const devices = [...this.#devices]
      .sort(([a], [b]) => a - b)
      .map(([addr, set]) => ({
        address: `0x${addr.toString(16).padStart(2, "0")}`,
        bus: this.#deviceBus.get(addr) ?? null,
        ...set.snapshot(),
      }));
    return { guests, devices };
  }
}

function counterSet(map: Map<number, CounterSet>, key: number): CounterSet {
  let set = map.get(key);
  if (set === undefined) {
    set = new CounterSet();
    map.set(key, set);
  }
  return set;
}

function addressedBefore(record: TransferRecord, index: number): boolean {
  const addr = record.messages[index]?.addr;
  for (let i = 0; i < index; i++) if (record.messages[i]?.addr === addr) return true;
  return false;
}
