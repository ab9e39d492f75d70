/**
 * Host I2C adapter discovery through sysfs: `<root>/bus/i2c/devices/i2c-N/name`.
 * Reads names only; must not open /dev/i2c-N (host-bus.ts does that).
 * @module
 */

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { CodedError } from "../errors.js";

/** Environment variable that moves the sysfs root (tests point it at a fake tree). */
export const SYSFS_ROOT_ENV = "VHOST_DEVICE_I2C_SYSFS_ROOT";

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

/** The sysfs root: the environment override, else "/sys". */
export function sysfsRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env[SYSFS_ROOT_ENV] || "/sys";
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
