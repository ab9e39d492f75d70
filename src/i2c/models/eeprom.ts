/**
 * 24Cxx serial EEPROM family (at24-compatible): memory array, one address pointer per chip shared
 * by its targets, page-wrapping writes committed at STOP and written through to the backing file.
 * Owns only the chip's behaviour; must not know about buses, virtio or the configuration format.
 * @module
 */

import type {
  BackingStore,
  I2cDeviceModel,
  ModelContext,
  ModelDefinition,
  SimDevice,
} from "../model.js";
import {
  checkSavedMemory,
  DirtyRange,
  memoryStateSchema,
  openModelStore,
  savedMemory,
  storeMemory,
} from "./memory.js";
import { validateOptions, validateState } from "./options.js";

/** Geometry of one EEPROM type. */
export interface EepromGeometry {
  readonly name: string;
  /** Bytes (power of two). */
  readonly size: number;
  /** Write page bytes (power of two). */
  readonly pageSize: number;
  /** Word address bytes: 1 (with block-select addresses above 256 bytes) or 2 (big-endian). */
  readonly addressBytes: 1 | 2;
}

/** The at24 family as Linux's at24 driver knows it. */
export const EEPROM_GEOMETRIES: readonly EepromGeometry[] = [
  { name: "24c01", size: 128, pageSize: 8, addressBytes: 1 },
  { name: "24c02", size: 256, pageSize: 8, addressBytes: 1 },
  { name: "24c04", size: 512, pageSize: 16, addressBytes: 1 },
  { name: "24c08", size: 1024, pageSize: 16, addressBytes: 1 },
  { name: "24c16", size: 2048, pageSize: 16, addressBytes: 1 },
  { name: "24c32", size: 4096, pageSize: 32, addressBytes: 2 },
  { name: "24c64", size: 8192, pageSize: 32, addressBytes: 2 },
  { name: "24c128", size: 16384, pageSize: 64, addressBytes: 2 },
  { name: "24c256", size: 32768, pageSize: 64, addressBytes: 2 },
  { name: "24c512", size: 65536, pageSize: 128, addressBytes: 2 },
];

const BLOCK = 256;
/** Longest write cycle an option may ask for: datasheets give 5 or 10 ms; at24 waits 25 ms at most. */
const MAX_WRITE_CYCLE_MS = 100;
/** tWR of the 24Cxx datasheets (Microchip, Atmel, ST): what a driver written for the chip meets. */
const DEFAULT_WRITE_CYCLE_MS = 5;

/** Monotonic milliseconds (the write cycle's clock; tests pass a fake one). */
export interface EepromClock {
  now(): number;
}

const monotonicClock: EepromClock = { now: () => performance.now() };

/** The internal write cycle (tWR): its length, and the clock that times it. */
export interface WriteCycle {
  readonly ms: number;
  readonly clock: EepromClock;
}

/** Options of every EEPROM model. */
function eepromSchema(size: number) {
  return {
    type: "object",
    properties: {
      backing: { type: "string", description: "file holding the memory (relative to the config)" },
      initial: { type: "hex-bytes", maxLength: size, description: "content when no file exists" },
      readOnly: { type: "boolean", description: "WP pin: writes are acknowledged and ignored" },
      writeCycleMs: {
        type: "integer",
        min: 0,
        max: MAX_WRITE_CYCLE_MS,
        description: `internal write cycle (tWR): the chip NACKs its address for this long after a write's STOP (default ${DEFAULT_WRITE_CYCLE_MS}, as 24Cxx datasheets give; 0: no cycle)`,
      },
    },
  } as const;
}

/**
 * What a successor needs (SimDevice.saveState): the pointer, and the memory unless a backing file
 * holds it. A write cycle never spans a saved state: the state is taken between transfers.
 */
function eepromStateSchema(size: number) {
  return {
    type: "object",
    required: ["pointer"],
    properties: {
      pointer: { type: "integer", min: 0, max: size - 1 },
      memory: memoryStateSchema(size),
    },
  } as const;
}

/**
 * The chip, as in 24Cxx datasheets:
 * - a write message starts with the word address (1 byte, or 2 big-endian), which sets the pointer;
 *   on 1-byte parts above 256 bytes the target (address offset) selects the 256-byte block;
 * - further bytes go to the pointer, which wraps inside the current page;
 * - the write cycle starts at STOP: written bytes are committed then (and written through to the
 *   backing file), and discarded when a repeated START comes first;
 * - reads return bytes from the pointer and auto-increment, rolling over at the end of the memory;
 * - the pointer persists between transfers and is shared by all targets (current-address read);
 * - with a write cycle, the chip NACKs its address (on every target) from the STOP that committed
 *   data bytes until the cycle ends, as the at24 driver expects (it retries for up to 25 ms); a
 *   write of the word address alone (a random read's first half) starts no cycle.
 */
export class EepromChip {
  readonly geometry: EepromGeometry;
  readonly targets: readonly I2cDeviceModel[];
  readonly #store: BackingStore;
  readonly #readOnly: boolean;
  readonly #writeCycle: WriteCycle | null;
  /** When the current write cycle ends (clock ms); the chip NACKs until then. */
  #busyUntil = Number.NEGATIVE_INFINITY;
  #pointer = 0;
  #writing = false;
  #addressBytesPending = 0;
  #address = 0;
  /** Bytes written since the last START, by memory offset, committed at STOP. */
  readonly #pending = new Map<number, number>();

  constructor(
    geometry: EepromGeometry,
    store: BackingStore,
    readOnly = false,
    writeCycle: WriteCycle | null = null,
  ) {
    this.geometry = geometry;
    this.#store = store;
    this.#readOnly = readOnly;
    this.#writeCycle = writeCycle !== null && writeCycle.ms > 0 ? writeCycle : null;
    const blocks = geometry.addressBytes === 1 ? Math.max(1, geometry.size / BLOCK) : 1;
    this.targets = Array.from({ length: blocks }, (_, block) => this.#target(block));
  }

  /** The current address pointer. */
  get pointer(): number {
    return this.#pointer;
  }

  /** Moves the pointer (a saved state restored), wrapping at the end of the memory. */
  set pointer(offset: number) {
    this.#pointer = offset & (this.geometry.size - 1);
  }

  #target(block: number): I2cDeviceModel {
    return {
      start: (read) => this.#start(block, read),
      write: (data) => this.#write(data),
      read: (into) => this.#read(into),
      stop: () => this.#stop(),
    };
  }

  #start(block: number, read: boolean): boolean {
    // The clock is read only while a cycle may run: reading it costs more than the rest of a START.
    if (this.#writeCycle !== null && this.#busyUntil !== Number.NEGATIVE_INFINITY) {
      if (this.#writeCycle.clock.now() < this.#busyUntil) return false;
      this.#busyUntil = Number.NEGATIVE_INFINITY;
    }
    // A repeated START before STOP aborts the write cycle. (Clearing an empty Map still allocates.)
    if (this.#pending.size > 0) this.#pending.clear();
    this.#writing = !read;
    this.#addressBytesPending = read ? 0 : this.geometry.addressBytes;
    this.#address = this.geometry.addressBytes === 1 ? block * BLOCK : 0;
    return true;
  }

  #write(data: Uint8Array): boolean {
    if (!this.#writing) return false;
    const { size, pageSize } = this.geometry;
    for (const byte of data) {
      if (this.#addressBytesPending > 0) {
        this.#address =
          this.geometry.addressBytes === 1 ? this.#address | byte : (this.#address << 8) | byte;
        if (--this.#addressBytesPending === 0) this.#pointer = this.#address & (size - 1);
        continue;
      }
      this.#pending.set(this.#pointer, byte);
      const pageBase = this.#pointer & ~(pageSize - 1);
      this.#pointer = pageBase | ((this.#pointer + 1) & (pageSize - 1));
    }
    return true;
  }

  #read(into: Uint8Array): void {
    const bytes = this.#store.bytes;
    for (let i = 0; i < into.length; i++) {
      into[i] = bytes[this.#pointer] ?? 0xff;
      this.#pointer = (this.#pointer + 1) & (this.geometry.size - 1);
    }
  }

  #stop(): void {
    this.#writing = false;
    this.#addressBytesPending = 0;
    if (this.#pending.size === 0) return;
    if (this.#readOnly) {
      this.#pending.clear();
      return;
    }
    const bytes = this.#store.bytes;
    const dirty = new DirtyRange();
    for (const [offset, value] of this.#pending) {
      if (bytes[offset] === value) continue;
      bytes[offset] = value;
      dirty.mark(offset);
    }
    this.#pending.clear();
    dirty.commit(this.#store);
    // The cycle runs whether or not the bytes changed: the chip programs the page regardless.
    if (this.#writeCycle !== null) {
      this.#busyUntil = this.#writeCycle.clock.now() + this.#writeCycle.ms;
    }
  }
}

/** The ModelDefinition of one EEPROM type; `clock` times the write cycle (tests pass a fake one). */
export function eepromModel(
  geometry: EepromGeometry,
  clock: EepromClock = monotonicClock,
): ModelDefinition {
  const schema = eepromSchema(geometry.size);
  const stateSchema = eepromStateSchema(geometry.size);
  const blocks = geometry.addressBytes === 1 && geometry.size > BLOCK ? geometry.size / BLOCK : 1;
  const where = blocks > 1 ? `, answers on ${blocks} consecutive addresses` : "";
  return {
    name: geometry.name,
    linuxDriver: "at24",
    description: `${geometry.size}-byte EEPROM, ${geometry.pageSize}-byte pages, ${geometry.addressBytes * 8}-bit word address${where}`,
    options: schema,
    create(options, context: ModelContext): SimDevice {
      const o = validateOptions(schema, options, geometry.name);
      const store = openModelStore(context, o.backing, geometry.size, o.initial);
      const writeCycle = { ms: o.writeCycleMs ?? DEFAULT_WRITE_CYCLE_MS, clock };
      const chip = new EepromChip(geometry, store, o.readOnly ?? false, writeCycle);
      const backed = o.backing !== undefined;
      return {
        targets: chip.targets,
        memory: storeMemory(store),
        properties: {
          pointer: { description: "current address pointer", get: () => chip.pointer },
        },
        close: () => store.close(),
        saveState: () => ({ pointer: chip.pointer, ...savedMemory(store, backed) }),
        restoreState(state) {
          const saved = validateState(stateSchema, state, geometry.name);
          const putMemory = checkSavedMemory(saved.memory, store, backed, geometry.name);
          putMemory();
          chip.pointer = saved.pointer ?? 0;
        },
      };
    },
  };
}

/** One ModelDefinition per EEPROM type ("24c01" ... "24c512"). */
export const eepromModels: readonly ModelDefinition[] = EEPROM_GEOMETRIES.map((geometry) =>
  eepromModel(geometry),
);
