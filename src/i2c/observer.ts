/**
 * What the virtio-i2c device tells an observer about each finished transfer (trace, pcap, counters).
 * Types only. The device builds a record only when an observer is set, so observing costs nothing
 * when off. Must not: hold guest memory beyond the call (data views are valid only during it).
 * @module
 */

/** One message of a transfer as the guest asked for it. */
export interface ObservedMessage {
  /** 7-bit guest address. */
  readonly addr: number;
  readonly read: boolean;
  /** Bytes the guest asked to write or read. */
  readonly length: number;
}

/**
 * - `ok`: every message went through.
 * - `nack`: the bus stopped at message `failedIndex` (the target did not acknowledge).
 * - `error`: refused before reaching a bus (malformed request, unlisted address, two buses) or the
 *   bus failed; `failedIndex` is the message concerned (0 when the whole transfer failed).
 */
export type TransferResult = "ok" | "nack" | "error";

export interface TransferRecord {
  /** Socket index of the guest (the socket `<prefix>N` it connected to). */
  readonly guest: number;
  /** Name of the bus the transfer ran on ("sim", "i2c-6"), or null when it never reached one. */
  readonly bus: string | null;
  readonly messages: readonly ObservedMessage[];
  /**
   * Per message: write data as the guest sent it (empty when the transfer was refused before its data
   * was read), read data as received (empty for reads that did not complete). Views of guest memory
   * or of the device's buffers: copy what you keep.
   */
  readonly data: readonly Uint8Array[];
  readonly result: TransferResult;
  /** Index of the failed message (ok: messages.length). */
  readonly failedIndex: number;
  /** Why an `error` happened ("address 0x51 not listed"); null for ok and nack. */
  readonly reason: string | null;
  /**
   * Faults injected into this transfer (src/i2c/faults.ts), by message index: `fault` names the
   * device and the fault (`0x48: nack every=3`). Empty when none was.
   */
  readonly injected: readonly { readonly index: number; readonly fault: string }[];
  /** When the transfer started, in ms since the epoch (with fractions). */
  readonly startTime: number;
  /** How long the bus took, in microseconds (0 when refused before reaching a bus). */
  readonly durationUs: number;
}

export interface TransferObserver {
  /** Called synchronously for every transfer, before its chains go back to the guest. Must not throw. */
  transferDone(record: TransferRecord): void;
}
