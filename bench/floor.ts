/**
 * The event-loop floor: the fastest depth-1 round trip any Node daemon could give on this machine
 * right now. A child Node process does only what the daemon must do per kick (uv_poll wakes it, it
 * reads the kick eventfd and writes the call eventfd: no ring, no device) while this process plays a
 * blocking frontend (write kick, poll(2) on call, read call). Printed next to the workloads, it shows
 * how much of a depth-1 transfer is the runtime and the kernel, and how loaded the machine is.
 *
 *   node dist/bench/floor.js [--seconds N] [--no-pin]     (bench.ts calls measureEventLoopFloor)
 *
 * Must not reach into the daemon's modules beyond the system wrappers both sides use.
 * @module
 */

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { BlockingWait } from "../src/sys/blocking-wait.js";
import { EventFd } from "../src/sys/eventfd.js";
import { FdWatcher } from "../src/sys/fd-watcher.js";
import { pinSelf, processCpuMicros } from "./daemon.js";

/** The child's kick and call eventfds arrive as its fds 3 and 4. */
const CHILD_KICK_FD = 3;
const CHILD_CALL_FD = 4;
const ECHO_ROLE = "--echo";

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
 * Round trips for `durationMs` against an echo child (pinned to `cpu` when not null, as this process
 * should be too: the caller pins itself).
 */
export async function measureEventLoopFloor(
  cpu: number | null,
  durationMs: number,
): Promise<FloorResult> {
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

if (process.argv[2] === ECHO_ROLE) {
  runEcho();
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: { seconds: { type: "string" }, "no-pin": { type: "boolean", default: false } },
  });
  const cpu = values["no-pin"] ? null : 0;
  pinSelf(cpu);
  const r = await measureEventLoopFloor(cpu, values.seconds ? Number(values.seconds) * 1000 : 2000);
  console.log(
    `event-loop floor (${cpu === null ? "unpinned" : "cpu0"}): ${r.roundTripsPerSec.toFixed(0)} round trips/s, ` +
      `${r.roundTripUs.toFixed(2)} µs each; echo CPU ${r.echoCpuUsPerTrip.toFixed(2)} µs, ` +
      `blocking side ${r.frontendCpuUsPerTrip.toFixed(2)} µs per trip`,
  );
}
