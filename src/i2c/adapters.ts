/**
 * Host I2C adapter discovery through sysfs: `<root>/bus/i2c/devices/i2c-N/name`, and the kernel
 * driver bound to a client (`<root>/bus/i2c/devices/N-00AA/driver`).
 * Reads names only; must not open /dev/i2c-N (host-bus.ts does that), nor take the root from the
 * environment: whoever sets a root daemon's environment must not decide which adapter a name means.
 * @module
 */

import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { basename, join } from "node:path";
import { CodedError } from "../errors.js";

/** Where the kernel shows sysfs. */
export const SYSFS_ROOT = "/sys";

/** The root every lookup without an explicit one uses: SYSFS_ROOT unless useSysfsRoot moved it. */
let rootInUse = SYSFS_ROOT;

export interface AdapterInfo {
  readonly number: number;
  readonly name: string;
}

export type AdapterLookupErrorCode = "ADAPTER_NOT_FOUND" | "ADAPTER_AMBIGUOUS";

export class AdapterLookupError extends CodedError<AdapterLookupErrorCode> {
  /** Adapters considered: all adapters found (not found) or the matching ones (ambiguous). */
  readonly candidates: readonly AdapterInfo[];
  constructor(code: AdapterLookupErrorCode, message: string, candidates: readonly AdapterInfo[]) {
    super(code, message);
    this.candidates = candidates;
  }
}

/** The sysfs root adapter lookups use: "/sys", unless useSysfsRoot moved it. */
export function sysfsRoot(): string {
  return rootInUse;
}

/**
 * Points every later lookup of this process (the device list, config files, reopens by name) at the
 * tree under `root`. Only a test entry point calls it, before the command line runs
 * (test/helpers/fake-sysfs-preload.ts, preloaded with --import): the command itself never does and
 * reads no variable for it, so an installed daemon always looks in /sys.
 */
export function useSysfsRoot(root: string): void {
  rootInUse = root;
}

const ADAPTER_DIR = /^i2c-([0-9]+)$/;

/** Adapters present under `root`, by number. No sysfs i2c directory means no adapters. */
export function listAdapters(root: string = sysfsRoot()): AdapterInfo[] {
  const dir = join(root, "bus", "i2c", "devices");
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  const adapters: AdapterInfo[] = [];
  for (const entry of entries) {
    const match = ADAPTER_DIR.exec(entry);
    if (!match?.[1]) continue; // client devices such as "0-0050"
    try {
      const name = readFileSync(join(dir, entry, "name"), "utf8").trim();
      adapters.push({ number: Number(match[1]), name });
    } catch {
      // an adapter without a readable name cannot be selected by name; skip it
    }
  }
  return adapters.sort((a, b) => a.number - b.number);
}

const describe = (adapters: readonly AdapterInfo[]) =>
  adapters.map((a) => `i2c-${a.number} "${a.name}"`).join(", ");

/** The number of the one adapter called `name`; AdapterLookupError when none or several are. */
export function resolveAdapter(name: string, root: string = sysfsRoot()): number {
  const adapters = listAdapters(root);
  const matches = adapters.filter((a) => a.name === name);
  const [only] = matches;
  if (only && matches.length === 1) return only.number;
  if (matches.length > 1) {
    throw new AdapterLookupError(
      "ADAPTER_AMBIGUOUS",
      `${matches.length} adapters are named "${name}": ${describe(matches)}; use the adapter number`,
      matches,
    );
  }
  const found = adapters.length > 0 ? `adapters found: ${describe(adapters)}` : "no adapters found";
  throw new AdapterLookupError(
    "ADAPTER_NOT_FOUND",
    `no adapter named "${name}" under ${join(root, "bus", "i2c", "devices")} (${found})`,
    adapters,
  );
}

/** A kernel client device at an adapter address, and the driver bound to it. */
export interface BoundClient {
  /** The sysfs device directory, e.g. /sys/bus/i2c/devices/0-0050. */
  readonly path: string;
  /** The driver's name, e.g. "at24". */
  readonly driver: string;
  /** The client's name (what `new_device` or the firmware called it), e.g. "24c02". */
  readonly device?: string;
}

/** The driver bound to the client at `addr` on adapter `adapter`, or undefined when none is. */
export function boundClient(
  adapter: number,
  addr: number,
  root: string = sysfsRoot(),
): BoundClient | undefined {
  const path = join(
    root,
    "bus",
    "i2c",
    "devices",
    `${adapter}-${addr.toString(16).padStart(4, "0")}`,
  );
  let driver: string;
  try {
    driver = basename(readlinkSync(join(path, "driver")));
  } catch {
    return undefined;
  }
  try {
    const device = readFileSync(join(path, "name"), "utf8").trim();
    return { path, driver, ...(device !== "" && { device }) };
  } catch {
    return { path, driver };
  }
}
