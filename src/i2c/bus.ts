/**
 * The I2C bus abstraction shared by host adapters and emulated buses, and the guest address map
 * that decides which bus (and which host address) a guest message may reach.
 * Must not know about virtqueues, guest memory or vhost-user; must not open devices.
 * @module
 */

import { CodedError } from "../errors.js";

/** Highest 7-bit I2C address. */
export const I2C_MAX_ADDR = 0x7f;

/** One I2C message as a bus sees it: 7-bit host address, direction, data (filled in by reads). */
export interface I2cMessage {
  addr: number;
  read: boolean;
  buf: Uint8Array;
  /**
   * The fault a fault layer (src/i2c/faults.ts FaultBus) injected into this message, as trace lines
   * show it (`0x48: nack every=3`); set during transfer(), read by whoever made the message once it
   * completed. Absent or null: none. Whoever reuses message objects clears it.
   */
  injected?: string | null;
}

/** A bus that runs whole transfers: repeated START between messages, one STOP at the end. */
export interface I2cBus {
  readonly name: string;
  /**
   * True when transfer() always returns a number (completes before it returns); false when it may
   * return a Promise (then only a synchronous bus's messages may be views of guest memory).
   */
  readonly synchronous: boolean;
  /**
   * True when a transfer() called now returns a number, for a bus that is not `synchronous` but runs
   * transfers inline at the moment (an adaptive host bus that found its adapter fast): its messages
   * may then be views of guest memory too. Read it right before the call, with nothing in between.
   */
  readonly inlineNow?: boolean;
  /**
   * Runs one transfer. Returns how many leading messages succeeded (`msgs.length` = all).
   * Emulated buses return synchronously; host buses a Promise, or a number for a transfer they ran
   * inline (HostBus completion modes).
   */
  transfer(msgs: readonly I2cMessage[]): number | Promise<number>;
  close(): void;
}

/** Where a guest address leads. */
export interface AddressTarget {
  readonly bus: I2cBus;
  /** Address used on `bus`: the guest address, or the host address it is remapped to. */
  readonly hostAddr: number;
}

/** The addresses a guest may use on one bus. */
export interface BusAddresses {
  readonly bus: I2cBus;
  /** Guest addresses. */
  readonly addrs: readonly number[];
  /** Per guest address, the address on `bus` (remapping); absent = the same addresses. */
  readonly hostAddrs?: readonly number[];
}

export type AddressMapErrorCode = "I2C_BAD_ADDRESS" | "I2C_DUPLICATE_ADDRESS";

export class AddressMapError extends CodedError<AddressMapErrorCode> {}

export function isValidI2cAddress(addr: number): boolean {
  return Number.isInteger(addr) && addr >= 0 && addr <= I2C_MAX_ADDR;
}

/**
 * Guest address → { bus, hostAddr }. Guest addresses form one flat space across all buses, so an
 * address may appear only once in the whole map.
 */
export class AddressMap {
  readonly #targets = new Map<number, AddressTarget>();

  constructor(groups: readonly BusAddresses[]) {
    for (const { bus, addrs, hostAddrs } of groups) {
      if (hostAddrs !== undefined && hostAddrs.length !== addrs.length) {
        throw new AddressMapError(
          "I2C_BAD_ADDRESS",
          `${bus.name}: ${addrs.length} guest addresses but ${hostAddrs.length} host addresses`,
        );
      }
      addrs.forEach((addr, index) => {
        const hostAddr = hostAddrs?.[index] ?? addr;
        for (const a of [addr, hostAddr]) {
          if (!isValidI2cAddress(a)) {
            throw new AddressMapError(
              "I2C_BAD_ADDRESS",
              `address ${a} on ${bus.name} is not 0..0x7f`,
            );
          }
        }
        const existing = this.#targets.get(addr);
        if (existing) {
          throw new AddressMapError(
            "I2C_DUPLICATE_ADDRESS",
            `address ${hex(addr)} is listed on ${existing.bus.name} and again on ${bus.name}`,
          );
        }
        this.#targets.set(addr, { bus, hostAddr });
      });
    }
  }

  /** The target of a guest address, or undefined when the guest may not use it. */
  lookup(guestAddr: number): AddressTarget | undefined {
    return this.#targets.get(guestAddr);
  }

  get size(): number {
    return this.#targets.size;
  }

  /** Every distinct bus in the map, in the order first listed. */
  buses(): I2cBus[] {
    return [...new Set([...this.#targets.values()].map((t) => t.bus))];
  }

  /** Guest addresses in ascending order. */
  addresses(): number[] {
    return [...this.#targets.keys()].sort((a, b) => a - b);
  }
}

/** `0x50` style formatting used in messages and logs. */
export function hex(value: number): string {
  return `0x${value.toString(16).padStart(2, "0")}`;
}
