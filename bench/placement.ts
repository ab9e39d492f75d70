/**
 * Where the benchmark puts the daemon (or a floor's echo side) and the frontend: both on CPU 0
 * ("one-cpu", as a C frontend pinned beside the daemon runs), daemon on CPU 0 and frontend on CPU 1
 * ("two-cpus": every wake-up crosses CPUs), or wherever the scheduler likes ("unpinned").
 * Owns the names the bench and floor scripts take and print; must not pin anything itself.
 * @module
 */

import { cpus } from "node:os";

export const PLACEMENT_NAMES = ["one-cpu", "two-cpus", "unpinned"] as const;
export type PlacementName = (typeof PLACEMENT_NAMES)[number];

export interface Placement {
  readonly name: PlacementName;
  /** CPU of the daemon (or echo side), null when not pinned. */
  readonly daemonCpu: number | null;
  /** CPU of the frontend (this process), null when not pinned. */
  readonly frontendCpu: number | null;
}

export const PLACEMENTS: Readonly<Record<PlacementName, Placement>> = {
  "one-cpu": { name: "one-cpu", daemonCpu: 0, frontendCpu: 0 },
  "two-cpus": { name: "two-cpus", daemonCpu: 0, frontendCpu: 1 },
  unpinned: { name: "unpinned", daemonCpu: null, frontendCpu: null },
};

const isPlacementName = (name: string): name is PlacementName =>
  (PLACEMENT_NAMES as readonly string[]).includes(name);

/**
 * The placements of a comma-separated list such as "one-cpu,two-cpus", in the order given. Throws
 * on an unknown name, and on "two-cpus" on a machine with one CPU.
 */
export function parsePlacements(text: string): Placement[] {
  return text.split(",").map((name) => {
    if (!isPlacementName(name)) {
      throw new Error(`unknown placement "${name}" (one of ${PLACEMENT_NAMES.join(", ")})`);
    }
    const placement = PLACEMENTS[name];
    if ((placement.frontendCpu ?? 0) >= cpus().length) {
      throw new Error(
        `placement ${name} needs CPU ${placement.frontendCpu}: this machine has ${cpus().length}`,
      );
    }
    return placement;
  });
}
