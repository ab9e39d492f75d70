/**
 * The benchmark (`npm run bench`): drives the real daemon process through the in-repo vhost-user
 * frontend (I2cGuest, closed loop) over real sockets, on an emulated 24c02 and on a host adapter
 * faked by test/fake-i2c (with and without simulated bus time). Reports transfers/s, latency
 * percentiles, daemon and frontend CPU per transfer, daemon RSS, idle RSS and start-up time; pinned
 * (daemon and frontend on CPU 0) and unpinned. Prints numbers, never passes or fails on them.
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
import { I2cGuest, type I2cOp } from "../src/frontend/i2c-driver.js";
import { FAKE_LIBRARY } from "../test/fake-i2c/fake.js";
import { BenchDaemon, pinSelf } from "./daemon.js";

const { values: options } = parseArgs({
  options: {
    short: { type: "boolean", default: false },
    json: { type: "string" },
    "no-pin": { type: "boolean", default: false },
    "pin-only": { type: "boolean", default: false },
    only: { type: "string" },
    profile: { type: "string" },
    seconds: { type: "string" },
  },
});

const SHORT = options.short === true;
const MEASURE_MS = options.seconds ? Number(options.seconds) * 1000 : SHORT ? 400 : 3000;
const WARMUP_MS = SHORT ? 150 : 1000;
const QUEUE_SIZE = 32;
const BUS_DELAY_US = 100;
const FAKE_ADAPTER = 3;

/** Write the 1-byte register address, read 8 bytes: the depth-1 transfer. */
const REGISTER_READ: readonly I2cOp[] = [
  { addr: 0x50, write: Uint8Array.of(0x00) },
  { addr: 0x50, read: 8 },
];
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
  // The CLI serves at most 64 sockets: 63 idle + 1 busy.
  { name: "sim-63-idle-1-busy", backend: "sim", ops: REGISTER_READ, depth: 1, busy: 1, idle: 63 },
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

const dir = mkdtempSync(join(tmpdir(), "vdi2c-bench-"));

/** Daemon arguments and environment per backend; the fake adapter gets a sysfs name and a config. */
function daemonSetup(backend: Backend): { list: string; env: Record<string, string> } {
  if (backend === "sim") return { list: "sim:0x50=24c02", env: {} };
  const sysfs = join(dir, "sys");
  mkdirSync(join(sysfs, `bus/i2c/devices/i2c-${FAKE_ADAPTER}`), { recursive: true });
  writeFileSync(join(sysfs, `bus/i2c/devices/i2c-${FAKE_ADAPTER}/name`), "Bench adapter\n");
  const config = join(dir, `${backend}.conf`);
  const lines = [`adapter ${FAKE_ADAPTER} funcs=i2c`, `device ${FAKE_ADAPTER} 0x50`];
  if (backend === "host-delay") lines.push(`delay_us ${FAKE_ADAPTER} ${BUS_DELAY_US}`);
  writeFileSync(config, `${lines.join("\n")}\n`);
  return {
    list: `${FAKE_ADAPTER}:0x50`,
    env: { LD_PRELOAD: FAKE_LIBRARY, FAKE_I2C_CONFIG: config, VHOST_DEVICE_I2C_SYSFS_ROOT: sysfs },
  };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
}

async function runWorkload(
  workload: Workload,
  pinned: boolean,
  facts: DaemonFacts[],
): Promise<Result> {
  const sockets = workload.busy + workload.idle;
  const prefix = join(dir, `${workload.name}.sock`);
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
  });
  if (sockets === 1) {
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
    const busy = guests.slice(-workload.busy);
    // Warm up (JIT, caches), then measure.
    await Promise.all(
      busy.map((g) =>
        g.driver.runClosedLoop(workload.ops, { depth: workload.depth, durationMs: WARMUP_MS }),
      ),
    );
    const latencies = busy.map(() => new Float64Array(Math.ceil(MEASURE_MS * 1000)));
    const daemonCpu0 = daemon.cpuMicros();
    const frontendCpu0 = process.cpuUsage();
    const runs = await Promise.all(
      busy.map((g, i) =>
        g.driver.runClosedLoop(workload.ops, {
          depth: workload.depth,
          durationMs: MEASURE_MS,
          latenciesUs: latencies[i],
        }),
      ),
    );
    const frontendCpu = process.cpuUsage(frontendCpu0);
    const daemonCpu = daemon.cpuMicros() - daemonCpu0;
    const completed = runs.reduce((sum, r) => sum + r.completed, 0);
    const failed = runs.reduce((sum, r) => sum + r.failed, 0);
    const elapsedMs = Math.max(...runs.map((r) => r.elapsedMs));
    const all = new Float64Array(runs.reduce((sum, r) => sum + r.recorded, 0));
    let at = 0;
    runs.forEach((r, i) => {
      all.set((latencies[i] ?? new Float64Array(0)).subarray(0, r.recorded), at);
      at += r.recorded;
    });
    all.sort();
    return {
      workload: workload.name,
      pinned,
      transfersPerSec: (completed * 1000) / elapsedMs,
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
    throw new Error(`${workload.name}: ${String(err)}\n--- daemon stderr ---\n${daemon.stderr}`);
  } finally {
    for (const guest of guests) await guest.close();
    await daemon.stop();
  }
}

/**
 * How long a 100 µs sleep really takes here (the fake's usleep pays the same timer slack), and the
 * CPU time one costs (timer set-up and wake-up from idle: on a VM this is charged to the sleeper, so
 * the daemon's CPU per transfer in the bus-time workload includes it twice).
 */
function measureSleep(): { wallUs: number; cpuUs: number } {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const samples = new Float64Array(200);
  const cpuBefore = process.cpuUsage();
  for (let i = 0; i < samples.length; i++) {
    const t = performance.now();
    Atomics.wait(cell, 0, 0, BUS_DELAY_US / 1000);
    samples[i] = (performance.now() - t) * 1000;
  }
  const cpu = process.cpuUsage(cpuBefore);
  samples.sort();
  return { wallUs: percentile(samples, 50), cpuUs: (cpu.user + cpu.system) / samples.length };
}

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "-");

async function main(): Promise<void> {
  if (options.profile) mkdirSync(options.profile, { recursive: true });
  const only = options.only?.split(",");
  const workloads = WORKLOADS.filter((w) => !only || only.includes(w.name));
  const modes = options["no-pin"] ? [false] : options["pin-only"] ? [true] : [true, false];
  const results: Result[] = [];
  const facts: DaemonFacts[] = [];
  const sleep = measureSleep();
  const sleepUs = sleep.wallUs;
  console.log(
    `machine: ${cpus().length} CPUs, ${cpus()[0]?.model ?? "?"}; node ${process.version}; ` +
      `${SHORT ? "short" : "full"} mode, ${MEASURE_MS} ms per workload, queue size ${QUEUE_SIZE}`,
  );
  console.log(
    "workload               pin    transfers/s   p50 µs   p99 µs   max µs  daemon µs/t  frontend µs/t  RSS MiB",
  );
  for (const pinned of modes) {
    pinSelf(pinned ? 0 : null);
    for (const workload of workloads) {
      const r = await runWorkload(workload, pinned, facts);
      results.push(r);
      console.log(
        `${r.workload.padEnd(22)} ${(pinned ? "cpu0" : "none").padEnd(5)} ${fmt(r.transfersPerSec, 0).padStart(13)} ` +
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
  const busRate = 1e6 / (BUS_DELAY_US * REGISTER_READ.length);
  const realBusRate = 1e6 / (sleepUs * REGISTER_READ.length);
  for (const r of results.filter((x) => x.workload === "host-100us-depth1")) {
    console.log(
      `bus-limited (${REGISTER_READ.length} messages x ${BUS_DELAY_US} µs; ${r.pinned ? "cpu0" : "unpinned"}): ` +
        `${fmt((100 * r.transfersPerSec) / busRate)}% of the nominal ${fmt(busRate, 0)}/s, ` +
        `${fmt((100 * r.transfersPerSec) / realBusRate)}% of ${fmt(realBusRate, 0)}/s with the ${fmt(sleepUs)} µs a 100 µs sleep takes here; ` +
        `added per transfer beyond the sleeps ${fmt(1e6 / r.transfersPerSec - sleepUs * REGISTER_READ.length)} µs; ` +
        `one sleep costs ${fmt(sleep.cpuUs)} µs CPU`,
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
          sleep100UsTakesUs: sleepUs,
          sleep100UsCpuUs: sleep.cpuUs,
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
