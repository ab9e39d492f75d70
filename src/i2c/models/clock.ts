/**
 * The host clock models read (time-keeping chips, conversion times), injectable so tests can move
 * time by hand. Must not know about any particular chip.
 * @module
 */

export interface HostClock {
  /** Host time in milliseconds since the epoch (Date.now by default; tests inject a fake). */
  now(): number;
}

export const systemClock: HostClock = { now: Date.now };
