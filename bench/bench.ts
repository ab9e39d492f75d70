/**
 * The benchmark (`npm run bench`): drives the real daemon process through the in-repo vhost-user
 * frontend (I2cGuest queues run by the blocking closed loop, as a C frontend would) over real
 * sockets, on an emulated 24c02 and on a host adapter faked by test/fake-i2c (with and without
 * simulated bus time, the latter against what the fake bus sustains alone). Reports transfers/s,
 * latency percentiles, daemon and frontend CPU per transfer, daemon RSS, idle RSS and start-up time;
 * pinned (daemon and frontend on CPU 0) and unpinned; per mode, the round-trip floors of bench/floor.ts
 * (a Node echo and a C echo) to read depth 1 against. Prints numbers, never passes or fails on them.
 *
 *   node dist/bench/bench.js [--short] [--json FILE] [--no-pin | --pin-only] [--only NAME,...]
 *                            [--profile DIR]
 *
 * Must not reach into the daemon's modules (sockets and /proc only) nor assert anything on time.
 * @module
 */

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { type ClosedLoopGuest, runClosedLoop } from "../src/frontend/closed-loop.js";
import { I2cGuest, type I2cOp } from "../src/frontend/i2c-driver.js";
import { type BusTime, FAKE_LIBRARY, measureBusTime } from "../test/fake-i2c/fake.js";
import { fakeSysfsEnv } from "../test/helpers/fake-sysfs.js";
import { BenchDaemon, pinSelf } from "./daemon.js";
import { describeFloors, type Floors, measureFloors } from "./floor.js";

const { values: options } = parseArgs({
  options: {
    short: { type: "boolean", default: false },
    json: { type: "string" },
    "no-pin": { type: "boolean", default: false },
    "pin-only": { type: "boolean", default: false },
    only: { type: "string" },
    profile: { type: "string" },
    seconds: { type: "string" },
    // A reference daemon with the same command line (rust-vmm's vhost-device-i2c, built with
    // shared tools/build-reference.sh): run on every host workload right after ours.
    reference: { type: "string" },
  },
});

const SHORT = options.short === true;
const MEASURE_MS = options.seconds ? Number(options.seconds) * 1000 : SHORT ? 400 : 3000;
const WARMUP_MS = SHORT ? 150 : 1000;
/** How long each round-trip floor (bench/floor.ts) is measured. */
const FLOOR_MS = SHORT ? 300 : 1500;
const QUEUE_SIZE = 32;
const FAKE_ADAPTER = 3;
/** Samples of the fake bus alone (the bus-limited reference). */
const BUS_TIME_SAMPLES = SHORT ? 500 : 3000;

/** Write the 1-byte register address, read 8 bytes: the depth-1 transfer. */
const REGISTER_READ: readonly I2cOp[] = [
  { addr: 0x50, write: Uint8Array.of(0x00) },
  { addr: 0x50, read: 8 },
];
/** Simulated bus time per transfer; the fake's delay_us applies per message. */
const BUS_TIME_US = 100;
const BUS_DELAY_PER_MESSAGE_US = BUS_TIME_US / REGISTER_READ.length;
const DUMP_256: readonly I2cOp[] = [
  { addr: 0x50, write: Uint8Array.of(0x00) },
  { addr: 0x50, read: 256 },
];

type Backend = "sim" | "host" | "host-delay";

interface Workload {
  readonly name: string;
  readonly backend: Backend;
  readonly ops: readonly I2cOp[];
  readonly depth: number;
  /** Guests running the closed loop at once. */
  readonly busy: number;
  /** Guests connected and idle meanwhile. */
  readonly idle: number;
}

const WORKLOADS: readonly Workload[] = [
  { name: "sim-depth1", backend: "sim", ops: REGISTER_READ, depth: 1, busy: 1, idle: 0 },
  { name: "sim-depth8", backend: "sim", ops: REGISTER_READ, depth: 8, busy: 1, idle: 0 },
  { name: "sim-dump256", backend: "sim", ops: DUMP_256, depth: 1, busy: 1, idle: 0 },
  { name: "sim-4-guests", backend: "sim", ops: REGISTER_READ, depth: 1, busy: 4, idle: 0 },
  { name: "sim-64-idle-1-busy", backend: "sim", ops: REGISTER_READ, depth: 1, busy: 1, idle: 64 },
  { name: "host-depth1", backend: "host", ops: REGISTER_READ, depth: 1, busy: 1, idle: 0 },
  { name: "host-depth8", backend: "host", ops: REGISTER_READ, depth: 8, busy: 1, idle: 0 },
  {
    name: "host-100us-depth1",
    backend: "host-delay",
    ops: REGISTER_READ,
    depth: 1,
    busy: 1,
    idle: 0,
  },
];

interface Result {
  readonly workload: string;
  readonly pinned: boolean;
  readonly transfersPerSec: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly maxUs: number;
  readonly daemonCpuUsPerTransfer: number;
  readonly frontendCpuUsPerTransfer: number;
  readonly daemonRssMiB: number;
  readonly failed: number;
  readonly completed: number;
}

interface DaemonFacts {
  readonly backend: Backend;
  readonly pinned: boolean;
  readonly startupMs: number;
  readonly idleRssMiB: number;
}

interface BusReference extends BusTime {
  readonly pinned: boolean;
}

const dir = mkdtempSync(join(tmpdir(), "vdi2c-bench-"));

/** The fake's configuration file for a host backend (bus time per message for host-delay). */
function fakeConfig(backend: Exclude<Backend, "sim">): string {
  const config = join(dir, `${backend}.conf`);
  const lines = [`adapter ${FAKE_ADAPTER} funcs=i2c`, `device ${FAKE_ADAPTER} 0x50`];
  if (backend === "host-delay") lines.push(`delay_us ${FAKE_ADAPTER} ${BUS_DELAY_PER_MESSAGE_US}`);
  writeFileSync(config, `${lines.join("\n")}\n`);
  return config;
}

/** Daemon arguments and environment per backend; the fake adapter gets a sysfs name and a config. */
function daemonSetup(backend: Backend): { list: string; env: Record<string, string> } {
  if (backend === "sim") return { list: "sim:0x50=24c02", env: {} };
  const sysfs = join(dir, "sys");
  mkdirSync(join(sysfs, `bus/i2c/devices/i2c-${FAKE_ADAPTER}`), { recursive: true });
  writeFileSync(join(sysfs, `bus/i2c/devices/i2c-${FAKE_ADAPTER}/name`), "Bench adapter\n");
  return {
    // Decimal, as rust-vmm's daemon reads addresses (a reference daemon gets the same list).
    list: `${FAKE_ADAPTER}:80`,
    env: {
      LD_PRELOAD: FAKE_LIBRARY,
      FAKE_I2C_CONFIG: fakeConfig(backend),
      ...fakeSysfsEnv(sysfs),
    },
  };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
}

/** What a result row is called: the workload, marked when a reference daemon ran it. */
const label = (workload: Workload, program: string | undefined) =>
  program === undefined ? workload.name : `${workload.name} [ref]`;

async function runWorkload(
  workload: Workload,
  pinned: boolean,
  facts: DaemonFacts[],
  program?: string,
): Promise<Result> {
  const sockets = workload.busy + workload.idle;
  const prefix = join(dir, `${workload.name}${program === undefined ? "" : "-ref"}.sock`);
  const paths = Array.from({ length: sockets }, (_, i) => `${prefix}${i}`);
  const { list, env } = daemonSetup(workload.backend);
  const nodeArgs = options.profile
    ? [
        "--cpu-prof",
        "--cpu-prof-dir",
        resolve(options.profile),
        "--cpu-prof-name",
        `${workload.name}-${pinned ? "pinned" : "unpinned"}.cpuprofile`,
      ]
    : [];
  const daemon = await BenchDaemon.start({
    args: ["-s", prefix, "-c", String(sockets), "-l", list],
    listenPaths: paths,
    cpu: pinned ? 0 : null,
    env,
    nodeArgs,
    ...(program !== undefined && { program }),
  });
  if (sockets === 1 && program === undefined) {
    facts.push({
      backend: workload.backend,
      pinned,
      startupMs: daemon.startupMs,
      idleRssMiB: daemon.rssMiB(),
    });
  }
  const guests: I2cGuest[] = [];
  try {
    for (const path of paths) guests.push(await I2cGuest.connect(path, { queueSize: QUEUE_SIZE }));
    // Every busy guest in the one blocking loop, as many C frontends would run them side by side.
    const busy: ClosedLoopGuest[] = guests
      .slice(-workload.busy)
      .map((g, i) => ({ name: `${workload.name} guest ${i}`, driver: g.driver }));
    // Warm up (JIT, caches), then measure.
    runClosedLoop(busy, workload.ops, { depth: workload.depth, durationMs: WARMUP_MS });
    const latencies = new Float64Array(Math.ceil(MEASURE_MS * 1000));
    const daemonCpu0 = daemon.cpuMicros();
    const frontendCpu0 = process.cpuUsage();
    const run = runClosedLoop(busy, workload.ops, {
      depth: workload.depth,
      durationMs: MEASURE_MS,
      latenciesUs: latencies,
    });
    const frontendCpu = process.cpuUsage(frontendCpu0);
    const daemonCpu = daemon.cpuMicros() - daemonCpu0;
    const { completed, failed } = run;
    const all = latencies.subarray(0, run.recorded).sort();
    return {
      workload: label(workload, program),
      pinned,
      transfersPerSec: (completed * 1000) / run.elapsedMs,
      p50Us: percentile(all, 50),
      p99Us: percentile(all, 99),
      maxUs: all.at(-1) ?? Number.NaN,
      daemonCpuUsPerTransfer: daemonCpu / completed,
      frontendCpuUsPerTransfer: (frontendCpu.user + frontendCpu.system) / completed,
      daemonRssMiB: daemon.rssMiB(),
      failed,
      completed,
    };
  } catch (err) {
    throw new Error(
      `${label(workload, program)}: ${String(err)}\n--- daemon stderr ---\n${daemon.stderr}`,
    );
  } finally {
    for (const guest of guests) await guest.close();
    await daemon.stop();
  }
}

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "-");

async function main(): Promise<void> {
  if (options.profile) mkdirSync(options.profile, { recursive: true });
  const only = options.only?.split(",");
  const workloads = WORKLOADS.filter((w) => !only || only.includes(w.name));
  const modes = options["no-pin"] ? [false] : options["pin-only"] ? [true] : [true, false];
  const results: Result[] = [];
  const facts: DaemonFacts[] = [];
  const busReferences: BusReference[] = [];
  const floors: (Floors & { readonly pinned: boolean })[] = [];
  console.log(
    `machine: ${cpus().length} CPUs, ${cpus()[0]?.model ?? "?"}; node ${process.version}; ` +
      `${SHORT ? "short" : "full"} mode, ${MEASURE_MS} ms per workload, queue size ${QUEUE_SIZE}`,
  );
  console.log(
    "workload                 pin    transfers/s   p50 µs   p99 µs   max µs  daemon µs/t  frontend µs/t  RSS MiB",
  );
  for (const pinned of modes) {
    pinSelf(pinned ? 0 : null);
    if (workloads.some((w) => w.backend === "host-delay")) {
      // The probe runs in a child, so it gets this mode's CPU affinity.
      const bus = measureBusTime(fakeConfig("host-delay"), FAKE_ADAPTER, BUS_TIME_SAMPLES);
      busReferences.push({ ...bus, pinned });
    }
    // Measured in every mode: the machine's speed moves with its load from one run to the next.
    floors.push({ ...(await measureFloors(pinned ? 0 : null, FLOOR_MS)), pinned });
    const runs = workloads.flatMap((workload) =>
      options.reference !== undefined && workload.backend !== "sim"
        ? [{ workload }, { workload, program: resolve(options.reference) }]
        : [{ workload }],
    );
    for (const { workload, program } of runs) {
      const r = await runWorkload(workload, pinned, facts, program);
      results.push(r);
      console.log(
        `${r.workload.padEnd(24)} ${(pinned ? "cpu0" : "none").padEnd(5)} ${fmt(r.transfersPerSec, 0).padStart(13)} ` +
          `${fmt(r.p50Us).padStart(8)} ${fmt(r.p99Us).padStart(8)} ${fmt(r.maxUs, 0).padStart(8)} ` +
          `${fmt(r.daemonCpuUsPerTransfer, 2).padStart(12)} ${fmt(r.frontendCpuUsPerTransfer, 2).padStart(14)} ` +
          `${fmt(r.daemonRssMiB).padStart(8)}${r.failed > 0 ? `  FAILED ${r.failed}` : ""}`,
      );
    }
  }
  pinSelf(null);
  for (const f of facts) {
    console.log(
      `daemon ${f.backend} (${f.pinned ? "cpu0" : "unpinned"}): start-up to listening ${fmt(f.startupMs)} ms, idle RSS ${fmt(f.idleRssMiB)} MiB`,
    );
  }
  for (const floor of floors) {
    for (const line of describeFloors(floor, floor.pinned)) console.log(line);
    const depth1 = results.find((r) => r.workload === "sim-depth1" && r.pinned === floor.pinned);
    if (depth1 !== undefined) {
      console.log(
        `sim-depth1 (${floor.pinned ? "cpu0" : "unpinned"}) = ` +
          `${fmt((100 * depth1.transfersPerSec) / floor.eventLoop.roundTripsPerSec)}% of the event-loop floor, ` +
          `${fmt((100 * depth1.transfersPerSec) / floor.c.roundTripsPerSec)}% of the C floor`,
      );
    }
  }
  for (const r of results.filter((x) => x.workload.startsWith("host-100us-depth1"))) {
    const bus = busReferences.find((b) => b.pinned === r.pinned);
    if (bus === undefined) continue;
    const busRate = 1e6 / bus.medianUs;
    console.log(
      `bus-limited ${r.workload} (${r.pinned ? "cpu0" : "unpinned"}): the fake bus alone takes ${fmt(bus.medianUs)} µs ` +
        `per transfer (p99 ${fmt(bus.p99Us)}, ${fmt(bus.cpuUs)} µs CPU; ${BUS_TIME_US} µs nominal) = ` +
        `${fmt(busRate, 0)}/s; through the daemon ${fmt(r.transfersPerSec, 0)}/s = ` +
        `${fmt((100 * r.transfersPerSec) / busRate)}% of it; daemon + frontend add ` +
        `${fmt(1e6 / r.transfersPerSec - bus.medianUs)} µs per transfer beyond the bus time`,
    );
  }
  if (options.json) {
    writeFileSync(
      options.json,
      `${JSON.stringify(
        {
          machine: { cpus: cpus().length, model: cpus()[0]?.model ?? null, node: process.version },
          mode: SHORT ? "short" : "full",
          measureMs: MEASURE_MS,
          queueSize: QUEUE_SIZE,
          busTimeUs: BUS_TIME_US,
          busReferences,
          floors,
          results,
          daemons: facts,
        },
        null,
        2,
      )}\n`,
    );
  }
}

try {
  await main();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
