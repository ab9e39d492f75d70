/**
 * Round-trip floors, measured next to the workloads because this machine's speed moves with its load:
 * - the event-loop floor: the fastest depth-1 round trip any Node daemon could give here right now.
 *   A child Node process does only what the daemon must do per kick (uv_poll wakes it, it reads the
 *   kick eventfd and writes the call eventfd: no ring, no device) while this process plays a blocking
 *   frontend (write kick, poll(2) on call, read call);
 * - the C floor (bench/c-floor/c_floor.c): the same exchange between two C processes (epoll echo,
 *   blocking frontend), the kind of run the original daemon's figures come from.
 *
 *   node dist/bench/floor.js [--seconds N] [--placement one-cpu|two-cpus|unpinned] [--no-pin]
 *   (bench.ts calls measureFloors; --no-pin is --placement unpinned, the default is one-cpu)
 *
 * Must not reach into the daemon's modules beyond the system wrappers both sides use.
 * @module
 */

import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { BlockingWait } from "../src/sys/blocking-wait.js";
import { EventFd } from "../src/sys/eventfd.js";
import { FdWatcher } from "../src/sys/fd-watcher.js";
import { findPackageRoot } from "../src/sys/native.js";
import { pinSelf, processCpuMicros } from "./daemon.js";
import { PLACEMENTS, type Placement, parsePlacements } from "./placement.js";

/** The child's kick and call eventfds arrive as its fds 3 and 4. */
const CHILD_KICK_FD = 3;
const CHILD_CALL_FD = 4;
const ECHO_ROLE = "--echo";

const C_FLOOR_DIR = join(
  findPackageRoot(fileURLToPath(new URL(".", import.meta.url))),
  "bench",
  "c-floor",
);

export interface FloorResult {
  readonly roundTripsPerSec: number;
  /** Mean wall time of one round trip, µs. */
  readonly roundTripUs: number;
  /** CPU per round trip of the echoing child and of this (blocking) side, µs. */
  readonly echoCpuUsPerTrip: number;
  readonly frontendCpuUsPerTrip: number;
}

/** The echo side: a Node process that answers each kick with a call, through the event loop. */
function runEcho(): void {
  const kick = EventFd.adopt(CHILD_KICK_FD);
  const call = EventFd.adopt(CHILD_CALL_FD);
  const watcher = new FdWatcher(kick.fd, () => {
    kick.read();
    call.write(1);
  });
  watcher.start();
  process.on("disconnect", () => process.exit(0));
}

/**
 * Round trips for `durationMs` against an echo child pinned to the placement's daemon CPU (this
 * process should be on its frontend CPU: the caller pins itself).
 */
export async function measureEventLoopFloor(
  placement: Placement,
  durationMs: number,
): Promise<FloorResult> {
  const cpu = placement.daemonCpu;
  const kick = EventFd.create();
  const call = EventFd.create();
  const script = fileURLToPath(import.meta.url);
  const command = [process.execPath, script, ECHO_ROLE];
  const child =
    cpu === null
      ? spawn(command[0] as string, command.slice(1), {
          stdio: ["ignore", "inherit", "inherit", kick.fd, call.fd, "ipc"],
        })
      : spawn("taskset", ["-c", String(cpu), ...command], {
          stdio: ["ignore", "inherit", "inherit", kick.fd, call.fd, "ipc"],
        });
  try {
    const wait = new BlockingWait([call.fd]);
    const trip = (): void => {
      kick.write(1);
      // A missing answer within 5 s means the echo child died: fail rather than hang.
      if (wait.wait(5000) === 0) throw new Error("the echo process did not answer within 5 s");
      call.read();
    };
    const run = (ms: number) => {
      const end = performance.now() + ms;
      let trips = 0;
      while (performance.now() < end) {
        for (let k = 0; k < 1000; k++) trip();
        trips += 1000;
      }
      return trips;
    };
    run(Math.min(300, durationMs)); // warm-up: JIT and the child's loop
    const pid = child.pid ?? -1;
    const echoCpu0 = processCpuMicros(pid);
    const cpu0 = process.cpuUsage();
    const started = performance.now();
    const trips = run(durationMs);
    const elapsedUs = (performance.now() - started) * 1000;
    const own = process.cpuUsage(cpu0);
    return {
      roundTripsPerSec: (trips * 1e6) / elapsedUs,
      roundTripUs: elapsedUs / trips,
      echoCpuUsPerTrip: (processCpuMicros(pid) - echoCpu0) / trips,
      frontendCpuUsPerTrip: (own.user + own.system) / trips,
    };
  } finally {
    child.kill("SIGKILL");
    kick.close();
    call.close();
  }
}

/**
 * The C floor: builds bench/c-floor when needed (make, cc), runs it with its echo side on the
 * placement's daemon CPU and its blocking side on the frontend CPU.
 */
export function measureCFloor(placement: Placement, durationMs: number): FloorResult {
  const binary = join(C_FLOOR_DIR, "c-floor");
  // make decides: a binary older than its source (an update) is built again.
  const make = spawnSync("make", ["-s", "-C", C_FLOOR_DIR], { encoding: "utf8" });
  if (make.status !== 0) throw new Error(`building ${binary} failed: ${make.stderr}`);
  const { daemonCpu, frontendCpu } = placement;
  const args = [String(Math.round(durationMs))];
  const run =
    daemonCpu === null || frontendCpu === null
      ? spawnSync(binary, args, { encoding: "utf8" })
      : spawnSync(binary, [...args, String(daemonCpu), String(frontendCpu)], { encoding: "utf8" });
  const match =
    /trips_per_sec=([\d.]+) trip_us=([\d.]+) echo_cpu_us=([\d.]+) frontend_cpu_us=([\d.]+)/.exec(
      run.stdout ?? "",
    );
  if (run.status !== 0 || !match) throw new Error(`${binary} failed: ${run.stderr}`);
  return {
    roundTripsPerSec: Number(match[1]),
    roundTripUs: Number(match[2]),
    echoCpuUsPerTrip: Number(match[3]),
    frontendCpuUsPerTrip: Number(match[4]),
  };
}

export interface Floors {
  readonly eventLoop: FloorResult;
  readonly c: FloorResult;
}

/** Both floors, one after the other, each for `durationMs`. */
export async function measureFloors(placement: Placement, durationMs: number): Promise<Floors> {
  const eventLoop = await measureEventLoopFloor(placement, durationMs);
  return { eventLoop, c: measureCFloor(placement, durationMs) };
}

/** One line per floor, as bench.ts and this script print them. */
export function describeFloors(floors: Floors, placement: Placement): string[] {
  const where = placement.name;
  const line = (name: string, r: FloorResult) =>
    `${name} floor (${where}): ${r.roundTripsPerSec.toFixed(0)} round trips/s, ${r.roundTripUs.toFixed(2)} µs each; ` +
    `echo side ${r.echoCpuUsPerTrip.toFixed(2)} µs CPU, blocking side ${r.frontendCpuUsPerTrip.toFixed(2)} µs CPU per trip`;
  return [line("event-loop (Node echo)", floors.eventLoop), line("C (epoll echo)", floors.c)];
}

if (process.argv[2] === ECHO_ROLE) {
  runEcho();
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      seconds: { type: "string" },
      placement: { type: "string" },
      "no-pin": { type: "boolean", default: false },
    },
  });
  const placements = values.placement
    ? parsePlacements(values.placement)
    : [values["no-pin"] ? PLACEMENTS.unpinned : PLACEMENTS["one-cpu"]];
  for (const placement of placements) {
    pinSelf(placement.frontendCpu);
    const ms = values.seconds ? Number(values.seconds) * 1000 : 2000;
    const floors = await measureFloors(placement, ms);
    for (const line of describeFloors(floors, placement)) console.log(line);
  }
}
