/**
 * The benchmark (`npm run bench`): drives the real daemon process through the in-repo vhost-user
 * frontend (I2cGuest queues run by the blocking closed loop, as a C frontend would) over real
 * sockets, on an emulated 24c02 and on a host adapter faked by test/fake-i2c (with and without
 * simulated bus time, the latter against what the fake bus sustains alone). Reports transfers/s,
 * latency percentiles, daemon and frontend CPU per transfer, daemon RSS, idle RSS and start-up time;
 * the isolation of one device set from another's stalled adapter; idle RSS per device set. Every
 * row in each placement asked for (bench/placement.ts: both on one CPU, daemon and frontend on two
 * CPUs, unpinned), next to that placement's round-trip floors (bench/floor.ts: a Node echo and a C
 * echo), and with --reference again on another daemon (rust-vmm's vhost-device-i2c), so each target
 * is read against numbers measured in the same run. Prints numbers, never passes or fails on them.
 *
 *   node dist/bench/bench.js [--short] [--seconds N] [--json FILE] [--only NAME,...]
 *                            [--placement one-cpu,two-cpus,unpinned | --pin-only | --no-pin]
 *                            [--reference BIN] [--profile DIR] [--help]
 *
 * Must not reach into the daemon's modules (sockets and /proc only) nor assert anything on time.
 * @module
 */

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { I2cGuest, type I2cOp } from "../src/frontend/i2c-driver.js";
import { type BusTime, FAKE_LIBRARY, measureBusTime } from "../test/fake-i2c/fake.js";
import { fakeSysfsEnv } from "../test/helpers/fake-sysfs.js";
import { BusyGuest } from "./busy-guest.js";
import { type ClosedLoopGuest, runClosedLoop } from "./closed-loop.js";
import { BenchDaemon, pinSelf } from "./daemon.js";
import { describeFloors, type Floors, measureFloors } from "./floor.js";
import { type Placement, type PlacementName, parsePlacements } from "./placement.js";

const HELP = `node dist/bench/bench.js [options]   (npm run bench -- [options])

  --short               CI mode: 400 ms per workload, shorter floors and warm-ups
  --seconds N           measure each workload for N seconds (default 3)
  --only NAME,...       run only these workloads (names below)
  --placement P,...     where daemon and frontend run, each row in each placement given:
                          one-cpu   both on CPU 0
                          two-cpus  daemon on CPU 0, frontend on CPU 1
                          unpinned  wherever the scheduler puts them
                        (default one-cpu,two-cpus)
  --pin-only            the same as --placement one-cpu
  --no-pin              the same as --placement unpinned
  --reference BIN       run the host workloads, isolation and idle RSS again, right after ours, on
                        another daemon with the same command line (rust-vmm's vhost-device-i2c);
                        rows marked [ref]
  --json FILE           write every number measured to FILE
  --profile DIR         run our daemon with --cpu-prof, one profile per workload and placement in DIR
  -h, --help            this text

Workloads:
${[
  "  sim-depth1, sim-depth8, sim-dump256, sim-4-guests, sim-64-idle-1-busy   emulated 24c02",
  "  host-depth1, host-depth8, host-64-idle-1-busy    fake /dev/i2c-3 (test/fake-i2c), no bus time",
  "  host-100us-depth1                                the same with 100 µs of bus time per transfer",
  "  isolation, isolation-sim    guest B's depth-1 loop with guest A (another device set, an adapter",
  "                              stalling 50 ms per transfer) idle and busy, interleaved; B on a",
  "                              second fake adapter or on an emulated 24c02",
  "  idle-rss                    idle RSS with 1, 8 and 64 device sets (one socket each)",
].join("\n")}
`;

const { values: options } = parseArgs({
  options: {
    help: { type: "boolean", short: "h", default: false },
    short: { type: "boolean", default: false },
    json: { type: "string" },
    placement: { type: "string" },
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
/** The isolation workload's second fake adapter (guest B's, no bus time). */
const NEIGHBOUR_ADAPTER = 4;
/** Samples of the fake bus alone (the bus-limited reference). */
const BUS_TIME_SAMPLES = SHORT ? 500 : 3000;
/** Idle and busy slices per condition of the isolation workload, alternating. */
const ISOLATION_ROUNDS = SHORT ? 2 : 6;
/** Device sets (sockets with a list each) of the idle-RSS workload. */
const RSS_SETS = [1, 8, 64] as const;
/** How long a daemon is left alone before its RSS is read (lazy start-up work settles). */
const RSS_SETTLE_MS = 300;
/** The README's idle RSS target, in bytes. */
const RSS_TARGET_BYTES = 60e6;

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
/** Guest B's transfer in the isolation workload: the depth-1 transfer, to B's own chip. */
const NEIGHBOUR_ADDRESS = 0x51;
const NEIGHBOUR_READ: readonly I2cOp[] = [
  { addr: NEIGHBOUR_ADDRESS, write: Uint8Array.of(0x00) },
  { addr: NEIGHBOUR_ADDRESS, read: 8 },
];
/** How long guest A's chip stretches each transfer (clock stretching), split over its messages. */
const STALL_US = 50_000;
const STALL_PER_MESSAGE_US = STALL_US / REGISTER_READ.length;

type Backend = "sim" | "host" | "host-delay";

/** Guests running the blocking closed loop on one device set. */
interface LoopWorkload {
  readonly kind: "loop";
  readonly name: string;
  readonly backend: Backend;
  readonly ops: readonly I2cOp[];
  readonly depth: number;
  /** Guests running the closed loop at once. */
  readonly busy: number;
  /** Guests connected and idle meanwhile. */
  readonly idle: number;
}

/**
 * Guest A (socket 0, device set of fake adapter 3, stalling STALL_US per transfer) idle or busy
 * while guest B (socket 1, its own device set: fake adapter 4 or an emulated 24c02) runs the
 * depth-1 loop.
 */
interface IsolationWorkload {
  readonly kind: "isolation";
  readonly name: string;
  readonly neighbour: "host" | "sim";
}

interface IdleRssWorkload {
  readonly kind: "idle-rss";
  readonly name: string;
}

type Workload = LoopWorkload | IsolationWorkload | IdleRssWorkload;

const loop = (
  name: string,
  backend: Backend,
  ops: readonly I2cOp[],
  depth: number,
  busy = 1,
  idle = 0,
): LoopWorkload => ({ kind: "loop", name, backend, ops, depth, busy, idle });

const WORKLOADS: readonly Workload[] = [
  loop("sim-depth1", "sim", REGISTER_READ, 1),
  loop("sim-depth8", "sim", REGISTER_READ, 8),
  loop("sim-dump256", "sim", DUMP_256, 1),
  loop("sim-4-guests", "sim", REGISTER_READ, 1, 4),
  loop("sim-64-idle-1-busy", "sim", REGISTER_READ, 1, 1, 64),
  loop("host-depth1", "host", REGISTER_READ, 1),
  loop("host-depth8", "host", REGISTER_READ, 8),
  loop("host-64-idle-1-busy", "host", REGISTER_READ, 1, 1, 64),
  loop("host-100us-depth1", "host-delay", REGISTER_READ, 1),
  { kind: "isolation", name: "isolation", neighbour: "host" },
  { kind: "isolation", name: "isolation-sim", neighbour: "sim" },
  { kind: "idle-rss", name: "idle-rss" },
];

/** Which daemon ran a row: ours, or the --reference one. */
type DaemonKind = "ours" | "reference";

interface Result {
  readonly workload: string;
  /** For the isolation rows: "A idle" or "A busy". */
  readonly condition?: string;
  readonly daemon: DaemonKind;
  readonly placement: PlacementName;
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

/** What guest A did in the busy slices of an isolation run. */
interface IsolationFacts {
  readonly workload: string;
  readonly daemon: DaemonKind;
  readonly placement: PlacementName;
  readonly busyTransfersPerSec: number;
  readonly failed: number;
}

interface DaemonFacts {
  readonly backend: Backend;
  readonly daemon: DaemonKind;
  readonly placement: PlacementName;
  readonly startupMs: number;
  readonly idleRssMiB: number;
}

interface RssRow {
  readonly daemon: DaemonKind;
  readonly placement: PlacementName;
  /** Device sets (ours: sockets with a list each) or sockets sharing one list (reference). */
  readonly sockets: number;
  readonly startupMs: number;
  readonly idleRssMiB: number;
  /** With an idle guest connected to every socket (rings started). */
  readonly guestsRssMiB: number;
}

interface BusReference extends BusTime {
  readonly placement: PlacementName;
}

/** Everything measured, as --json writes it. */
interface Measured {
  readonly results: Result[];
  readonly isolation: IsolationFacts[];
  readonly daemons: DaemonFacts[];
  readonly idleRss: RssRow[];
  readonly busReferences: BusReference[];
  readonly floors: (Floors & { readonly placement: PlacementName })[];
}

const dir = mkdtempSync(join(tmpdir(), "vdi2c-bench-"));

/** Writes a fake configuration file (the line format of test/fake-i2c/fake_i2c.c) named after `name`. */
function writeFakeConfig(name: string, lines: readonly string[]): string {
  const config = join(dir, `${name}.conf`);
  writeFileSync(config, `${lines.join("\n")}\n`);
  return config;
}

/** The fake's configuration file for a host backend (bus time per message for host-delay). */
function fakeConfig(backend: Exclude<Backend, "sim">): string {
  const lines = [`adapter ${FAKE_ADAPTER} funcs=i2c`, `device ${FAKE_ADAPTER} 0x50`];
  if (backend === "host-delay") lines.push(`delay_us ${FAKE_ADAPTER} ${BUS_DELAY_PER_MESSAGE_US}`);
  return writeFakeConfig(backend, lines);
}

/** The environment that gives a daemon the fake adapters of `config`, named in a fake sysfs. */
function fakeEnv(config: string, adapters: readonly number[]): Record<string, string> {
  const sysfs = join(dir, "sys");
  for (const adapter of adapters) {
    mkdirSync(join(sysfs, `bus/i2c/devices/i2c-${adapter}`), { recursive: true });
    writeFileSync(join(sysfs, `bus/i2c/devices/i2c-${adapter}/name`), `Bench adapter ${adapter}\n`);
  }
  return { LD_PRELOAD: FAKE_LIBRARY, FAKE_I2C_CONFIG: config, ...fakeSysfsEnv(sysfs) };
}

/** Daemon device arguments and environment per backend. */
function daemonSetup(backend: Backend): { args: string[]; env: Record<string, string> } {
  if (backend === "sim") return { args: ["-l", "sim:0x50=24c02"], env: {} };
  // Decimal, as rust-vmm's daemon reads addresses (a reference daemon gets the same list).
  return { args: ["-l", `${FAKE_ADAPTER}:80`], env: fakeEnv(fakeConfig(backend), [FAKE_ADAPTER]) };
}

/** A --config file giving socket i the device list `lists[i]`, and no default list. */
function writeSocketsConfig(name: string, lists: readonly (readonly object[])[]): string {
  const path = join(dir, `${name}.json`);
  const sockets = Object.fromEntries(lists.map((devices, i) => [String(i), { devices }]));
  writeFileSync(path, `${JSON.stringify({ sockets }, null, 2)}\n`);
  return path;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
}

/** What a result row is called: the workload, its condition, marked when a reference daemon ran it. */
const label = (r: { workload: string; condition?: string; daemon: DaemonKind }) =>
  `${r.workload}${r.condition === undefined ? "" : ` B, ${r.condition}`}${r.daemon === "reference" ? " [ref]" : ""}`;

const daemonKind = (program: string | undefined): DaemonKind =>
  program === undefined ? "ours" : "reference";

/** Starts our daemon or the reference, on the placement's daemon CPU; with its socket paths. */
async function startDaemon(
  name: string,
  placement: Placement,
  sockets: number,
  deviceArgs: readonly string[],
  env: Record<string, string>,
  program: string | undefined,
): Promise<{ daemon: BenchDaemon; paths: string[] }> {
  const prefix = join(dir, `${name}-${placement.name}${program === undefined ? "" : "-ref"}.sock`);
  const nodeArgs =
    options.profile && program === undefined
      ? // One profile per thread (the main thread and each data-plane thread), in a directory per run.
        [
          "--cpu-prof",
          "--cpu-prof-dir",
          join(resolve(options.profile), `${name}-${placement.name}`),
        ]
      : [];
  const paths = Array.from({ length: sockets }, (_, i) => `${prefix}${i}`);
  // A reference daemon counts as started once its paths are sockets: none may be left from before.
  for (const path of paths) rmSync(path, { force: true });
  const daemon = await BenchDaemon.start({
    args: ["-s", prefix, "-c", String(sockets), ...deviceArgs],
    listenPaths: paths,
    cpu: placement.daemonCpu,
    env,
    nodeArgs,
    ...(program !== undefined && { program }),
  });
  return { daemon, paths };
}

/**
 * Closed-loop measurements summed over one or more slices: latencies, transfers, wall time, and the
 * CPU of the daemon and of this process (which includes a BusyGuest worker's thread, whose share is
 * a few transfers per second).
 */
class LoopSample {
  readonly #latencies = new Float64Array(Math.ceil(MEASURE_MS * 1000));
  #recorded = 0;
  #completed = 0;
  #failed = 0;
  #elapsedMs = 0;
  #daemonCpuUs = 0;
  #frontendCpuUs = 0;

  /** Runs the loop on `guests` for `durationMs` and adds what it measured. */
  run(
    daemon: BenchDaemon,
    guests: readonly ClosedLoopGuest[],
    ops: readonly I2cOp[],
    depth: number,
    durationMs: number,
  ): void {
    const daemonCpu0 = daemon.cpuMicros();
    const frontendCpu0 = process.cpuUsage();
    const run = runClosedLoop(guests, ops, {
      depth,
      durationMs,
      latenciesUs: this.#latencies.subarray(this.#recorded),
    });
    const frontendCpu = process.cpuUsage(frontendCpu0);
    this.#daemonCpuUs += daemon.cpuMicros() - daemonCpu0;
    this.#frontendCpuUs += frontendCpu.user + frontendCpu.system;
    this.#recorded += run.recorded;
    this.#completed += run.completed;
    this.#failed += run.failed;
    this.#elapsedMs += run.elapsedMs;
  }

  result(
    row: Pick<Result, "workload" | "condition" | "daemon" | "placement">,
    daemon: BenchDaemon,
  ): Result {
    const all = this.#latencies.subarray(0, this.#recorded).sort();
    return {
      ...row,
      transfersPerSec: (this.#completed * 1000) / this.#elapsedMs,
      p50Us: percentile(all, 50),
      p99Us: percentile(all, 99),
      maxUs: all.at(-1) ?? Number.NaN,
      daemonCpuUsPerTransfer: this.#daemonCpuUs / this.#completed,
      frontendCpuUsPerTransfer: this.#frontendCpuUs / this.#completed,
      daemonRssMiB: daemon.rssMiB(),
      failed: this.#failed,
      completed: this.#completed,
    };
  }
}

/** Adds the daemon's stderr to a failure, so a daemon-side refusal shows. */
function withStderr(what: string, err: unknown, daemon: BenchDaemon): Error {
  return new Error(`${what}: ${String(err)}\n--- daemon stderr ---\n${daemon.stderr}`, {
    cause: err,
  });
}

async function connectAll(paths: readonly string[]): Promise<I2cGuest[]> {
  const guests: I2cGuest[] = [];
  try {
    for (const path of paths) guests.push(await I2cGuest.connect(path, { queueSize: QUEUE_SIZE }));
  } catch (err) {
    for (const guest of guests) await guest.close();
    throw err;
  }
  return guests;
}

async function runLoopWorkload(
  workload: LoopWorkload,
  placement: Placement,
  measured: Measured,
  program?: string,
): Promise<Result[]> {
  const sockets = workload.busy + workload.idle;
  const { args, env } = daemonSetup(workload.backend);
  const { daemon, paths } = await startDaemon(
    workload.name,
    placement,
    sockets,
    args,
    env,
    program,
  );
  const kind = daemonKind(program);
  if (sockets === 1) {
    measured.daemons.push({
      backend: workload.backend,
      daemon: kind,
      placement: placement.name,
      startupMs: daemon.startupMs,
      idleRssMiB: daemon.rssMiB(),
    });
  }
  let guests: I2cGuest[] = [];
  try {
    guests = await connectAll(paths);
    // Every busy guest in the one blocking loop, as many C frontends would run them side by side.
    const busy: ClosedLoopGuest[] = guests
      .slice(-workload.busy)
      .map((g, i) => ({ name: `${workload.name} guest ${i}`, driver: g.driver }));
    // Warm up (JIT, caches), then measure.
    runClosedLoop(busy, workload.ops, { depth: workload.depth, durationMs: WARMUP_MS });
    const sample = new LoopSample();
    sample.run(daemon, busy, workload.ops, workload.depth, MEASURE_MS);
    return [
      sample.result({ workload: workload.name, daemon: kind, placement: placement.name }, daemon),
    ];
  } catch (err) {
    throw withStderr(label({ workload: workload.name, daemon: kind }), err, daemon);
  } finally {
    for (const guest of guests) await guest.close();
    await daemon.stop();
  }
}

/**
 * Guest B's depth-1 loop on its own device set, measured in ISOLATION_ROUNDS slices per condition,
 * alternating (A idle, A busy, A busy, A idle, ...) so that drift of the machine falls on both alike.
 * Our daemon gets a --config with one list per socket; the reference, which has no per-socket lists,
 * gets both chips in one list (A still uses only adapter 3, B only its own chip).
 */
async function runIsolation(
  workload: IsolationWorkload,
  placement: Placement,
  measured: Measured,
  program?: string,
): Promise<Result[]> {
  const kind = daemonKind(program);
  const stalling = [
    `adapter ${FAKE_ADAPTER} funcs=i2c`,
    `device ${FAKE_ADAPTER} 0x50`,
    `delay_us ${FAKE_ADAPTER} ${STALL_PER_MESSAGE_US}`,
  ];
  const neighbourHost = workload.neighbour === "host";
  const fake = writeFakeConfig(
    workload.name,
    neighbourHost
      ? [
          ...stalling,
          `adapter ${NEIGHBOUR_ADAPTER} funcs=i2c`,
          `device ${NEIGHBOUR_ADAPTER} ${NEIGHBOUR_ADDRESS}`,
        ]
      : stalling,
  );
  const env = fakeEnv(fake, neighbourHost ? [FAKE_ADAPTER, NEIGHBOUR_ADAPTER] : [FAKE_ADAPTER]);
  const neighbourDevice = neighbourHost
    ? { bus: NEIGHBOUR_ADAPTER, address: NEIGHBOUR_ADDRESS }
    : { bus: "sim", address: NEIGHBOUR_ADDRESS, model: "24c02" };
  const deviceArgs =
    program === undefined
      ? [
          "--config",
          writeSocketsConfig(workload.name, [
            [{ bus: FAKE_ADAPTER, address: 0x50 }],
            [neighbourDevice],
          ]),
        ]
      : ["-l", `${FAKE_ADAPTER}:80,${NEIGHBOUR_ADAPTER}:${NEIGHBOUR_ADDRESS}`];
  const { daemon, paths } = await startDaemon(
    workload.name,
    placement,
    2,
    deviceArgs,
    env,
    program,
  );
  const [pathA, pathB] = paths as [string, string];
  let a: BusyGuest | undefined;
  let b: I2cGuest | undefined;
  try {
    a = await BusyGuest.connect(pathA, QUEUE_SIZE, REGISTER_READ);
    [b] = await connectAll([pathB]);
    if (b === undefined) throw new Error("guest B did not connect");
    const guestB: ClosedLoopGuest[] = [{ name: `${workload.name} guest B`, driver: b.driver }];
    // Warm up B with A busy, then idle (A's first transfers open its adapter).
    a.busy();
    runClosedLoop(guestB, NEIGHBOUR_READ, { depth: 1, durationMs: WARMUP_MS / 2 });
    a.idle();
    runClosedLoop(guestB, NEIGHBOUR_READ, { depth: 1, durationMs: WARMUP_MS / 2 });
    const idle = new LoopSample();
    const busy = new LoopSample();
    const slice = MEASURE_MS / ISOLATION_ROUNDS;
    let busyMs = 0;
    let busyTransfers = 0;
    const failedBefore = a.failed;
    for (let round = 0; round < ISOLATION_ROUNDS; round++) {
      for (const aBusy of round % 2 === 0 ? [false, true] : [true, false]) {
        if (!aBusy) {
          idle.run(daemon, guestB, NEIGHBOUR_READ, 1, slice);
          continue;
        }
        // A's rate counts from busy() until its last transfer is back, so no transfer is cut in two.
        const completed0 = a.completed;
        const started = performance.now();
        a.busy();
        busy.run(daemon, guestB, NEIGHBOUR_READ, 1, slice);
        a.idle();
        busyMs += performance.now() - started;
        busyTransfers += a.completed - completed0;
      }
    }
    measured.isolation.push({
      workload: workload.name,
      daemon: kind,
      placement: placement.name,
      busyTransfersPerSec: (busyTransfers * 1000) / busyMs,
      failed: a.failed - failedBefore,
    });
    const row = { workload: workload.name, daemon: kind, placement: placement.name };
    return [
      idle.result({ ...row, condition: "A idle" }, daemon),
      busy.result({ ...row, condition: "A busy" }, daemon),
    ];
  } catch (err) {
    throw withStderr(label({ workload: workload.name, daemon: kind }), err, daemon);
  } finally {
    await a?.close();
    await b?.close();
    await daemon.stop();
  }
}

/**
 * The daemon's RSS after start-up and with an idle guest on every socket, for each count of
 * RSS_SETS: ours with one device list per socket (an emulated 24c02 each: every socket its own
 * device set), the reference with every socket on one list (it has no per-socket lists).
 */
async function runIdleRss(
  workload: IdleRssWorkload,
  placement: Placement,
  measured: Measured,
  program?: string,
): Promise<void> {
  const kind = daemonKind(program);
  for (const sockets of RSS_SETS) {
    const name = `${workload.name}-${sockets}`;
    const setup =
      program === undefined
        ? {
            args: [
              "--config",
              writeSocketsConfig(
                name,
                Array.from({ length: sockets }, () => [
                  { bus: "sim", address: 0x50, model: "24c02" },
                ]),
              ),
            ],
            env: {},
          }
        : daemonSetup("host");
    const { daemon, paths } = await startDaemon(
      name,
      placement,
      sockets,
      setup.args,
      setup.env,
      program,
    );
    let guests: I2cGuest[] = [];
    try {
      await sleep(RSS_SETTLE_MS);
      const idleRssMiB = daemon.rssMiB();
      guests = await connectAll(paths);
      await sleep(RSS_SETTLE_MS);
      measured.idleRss.push({
        daemon: kind,
        placement: placement.name,
        sockets,
        startupMs: daemon.startupMs,
        idleRssMiB,
        guestsRssMiB: daemon.rssMiB(),
      });
    } catch (err) {
      throw withStderr(`${name}${program === undefined ? "" : " [ref]"}`, err, daemon);
    } finally {
      for (const guest of guests) await guest.close();
      await daemon.stop();
    }
  }
}

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "-");
/** A rate in thousands when large: 106123 → "106.1k". */
const rate = (n: number) => (n >= 10_000 ? `${fmt(n / 1000)}k` : fmt(n, 0));
const ratio = (a: number, b: number) => `${fmt(a / b, 2)} x`;
/** "low-high" of `values`, or the one value when they agree at this precision. */
const range = (values: readonly number[], digits = 0) => {
  const low = fmt(Math.min(...values), digits);
  const high = fmt(Math.max(...values), digits);
  return low === high ? low : `${low}-${high}`;
};
const percent = (a: number, b: number) => `${fmt((100 * a) / b)}%`;

const ROW_WIDTH = 30;

function printRow(r: Result): void {
  console.log(
    `${label(r).padEnd(ROW_WIDTH)} ${r.placement.padEnd(9)} ${fmt(r.transfersPerSec, 0).padStart(11)} ` +
      `${fmt(r.p50Us).padStart(8)} ${fmt(r.p99Us).padStart(8)} ${fmt(r.maxUs, 0).padStart(8)} ` +
      `${fmt(r.daemonCpuUsPerTransfer, 2).padStart(12)} ${fmt(r.frontendCpuUsPerTransfer, 2).padStart(14)} ` +
      `${fmt(r.daemonRssMiB).padStart(8)}${r.failed > 0 ? `  FAILED ${r.failed}` : ""}`,
  );
}

function printRssRows(rows: readonly RssRow[]): void {
  for (const r of rows) {
    const what =
      r.daemon === "ours"
        ? `${r.sockets} device set${r.sockets === 1 ? "" : "s"}`
        : `${r.sockets} socket${r.sockets === 1 ? "" : "s"}, one list [ref]`;
    console.log(
      `idle-rss ${r.placement}: ${what}: ${fmt(r.idleRssMiB)} MiB after start-up, ` +
        `${fmt(r.guestsRssMiB)} MiB with an idle guest on each socket (start-up ${fmt(r.startupMs)} ms)`,
    );
  }
}

/** The lines that read each target against what was measured beside it, per placement. */
function printComparisons(measured: Measured, placement: Placement): void {
  const here = <T extends { placement: PlacementName }>(rows: readonly T[]) =>
    rows.filter((r) => r.placement === placement.name);
  const results = here(measured.results);
  const find = (workload: string, daemon: DaemonKind, condition?: string) =>
    results.find(
      (r) => r.workload === workload && r.daemon === daemon && r.condition === condition,
    );
  const floor = here(measured.floors)[0];
  const at = `(${placement.name})`;
  console.log(
    `--- ${placement.name}: targets read against the rows and floors of this placement ---`,
  );

  if (floor !== undefined) {
    for (const line of describeFloors(floor, placement)) console.log(line);
    const c = floor.c.roundTripsPerSec;
    const sim = find("sim-depth1", "ours");
    if (sim !== undefined) {
      console.log(
        `sim-depth1 ${at}: ${rate(sim.transfersPerSec)}/s = ` +
          `${percent(sim.transfersPerSec, floor.eventLoop.roundTripsPerSec)} of the event-loop floor, ` +
          `${percent(sim.transfersPerSec, c)} of the C floor`,
      );
    }
    const depth8 = find("sim-depth8", "ours");
    if (depth8 !== undefined) {
      console.log(
        `sim-depth8 ${at}: ${rate(depth8.transfersPerSec)}/s, eight separate transfers in flight (target >= 250k/s)`,
      );
    }
    for (const workload of ["host-depth1", "host-depth8"]) {
      const ours = find(workload, "ours");
      if (ours === undefined) continue;
      const ref = find(workload, "reference");
      console.log(
        `${workload} ${at}: ${rate(ours.transfersPerSec)}/s = ${ratio(ours.transfersPerSec, c)} the C floor (${rate(c)} round trips/s)` +
          (ref === undefined
            ? "; no reference row (--reference)"
            : ` = ${ratio(ours.transfersPerSec, ref.transfersPerSec)} the reference (${rate(ref.transfersPerSec)}/s, itself ${ratio(ref.transfersPerSec, c)} the C floor); ` +
              `p50 ${fmt(ours.p50Us)} µs vs ${fmt(ref.p50Us)}, p99 ${fmt(ours.p99Us)} µs vs ${fmt(ref.p99Us)} µs = ${ratio(ours.p99Us, ref.p99Us)} the reference p99`),
      );
    }
  }

  const bus = here(measured.busReferences)[0];
  for (const daemon of ["ours", "reference"] as const) {
    const r = find("host-100us-depth1", daemon);
    if (r === undefined || bus === undefined) continue;
    const busRate = 1e6 / bus.medianUs;
    console.log(
      `${label(r)} ${at}: the fake bus alone takes ${fmt(bus.medianUs)} µs per transfer ` +
        `(p99 ${fmt(bus.p99Us)}, ${fmt(bus.cpuUs)} µs CPU; ${BUS_TIME_US} µs nominal) = ${rate(busRate)}/s; ` +
        `through the daemon ${rate(r.transfersPerSec)}/s = ${percent(r.transfersPerSec, busRate)} of it (target >= 95%), ` +
        `p99 ${fmt(r.p99Us)} µs = ${ratio(r.p99Us, bus.p99Us)} the bus-alone p99; daemon + frontend add ` +
        `${fmt(1e6 / r.transfersPerSec - bus.medianUs)} µs per transfer beyond the bus time`,
    );
  }

  // One line per backend and daemon, over every one-socket start of this placement.
  const starts = here(measured.daemons);
  const seen = new Set<string>();
  for (const { backend, daemon } of starts) {
    const key = `${backend} ${daemon}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const same = starts.filter((f) => f.backend === backend && f.daemon === daemon);
    const startup = range(same.map((f) => f.startupMs));
    const rssMiB = range(
      same.map((f) => f.idleRssMiB),
      1,
    );
    const rssMB = range(
      same.map((f) => (f.idleRssMiB * 2 ** 20) / 1e6),
      1,
    );
    console.log(
      `daemon ${backend}${daemon === "reference" ? " [ref]" : ""} ${at}: start-up to listening ` +
        `${startup} ms, idle RSS ${rssMiB} MiB = ${rssMB} MB over ${same.length} start(s) ` +
        `(targets < 200 ms, < ${RSS_TARGET_BYTES / 1e6} MB)`,
    );
  }

  for (const [many, one] of [
    ["sim-64-idle-1-busy", "sim-depth1"],
    ["host-64-idle-1-busy", "host-depth1"],
  ] as const) {
    for (const daemon of ["ours", "reference"] as const) {
      const m = find(many, daemon);
      const o = find(one, daemon);
      if (m === undefined || o === undefined) continue;
      console.log(
        `${label(m)} vs ${label(o)} ${at}: ${rate(m.transfersPerSec)}/s vs ${rate(o.transfersPerSec)}/s = ` +
          `${ratio(m.transfersPerSec, o.transfersPerSec)}, p99 ${fmt(m.p99Us)} µs vs ${fmt(o.p99Us)} µs = ` +
          `${ratio(m.p99Us, o.p99Us)}`,
      );
    }
  }

  for (const facts of here(measured.isolation)) {
    const idle = find(facts.workload, facts.daemon, "A idle");
    const busy = find(facts.workload, facts.daemon, "A busy");
    if (idle === undefined || busy === undefined) continue;
    console.log(
      `${facts.workload}${facts.daemon === "reference" ? " [ref]" : ""} ${at}: B's p99 with A busy / A idle = ` +
        `${fmt(busy.p99Us)} / ${fmt(idle.p99Us)} µs = ${ratio(busy.p99Us, idle.p99Us)} (target <= 1.10 x); ` +
        `p50 ${ratio(busy.p50Us, idle.p50Us)}, transfers/s ${ratio(busy.transfersPerSec, idle.transfersPerSec)}; ` +
        `A completed ${fmt(facts.busyTransfersPerSec)} transfers/s while busy (${1e6 / STALL_US}/s at ${STALL_US / 1000} ms each)` +
        (facts.failed > 0 ? `, A FAILED ${facts.failed}` : ""),
    );
  }
  if (options.reference !== undefined && here(measured.isolation).length > 0) {
    console.log(
      `isolation [ref]: the reference has no per-socket device lists: both sockets get ` +
        `-l ${FAKE_ADAPTER}:80,${NEIGHBOUR_ADAPTER}:${NEIGHBOUR_ADDRESS} (A uses only adapter ${FAKE_ADAPTER}, B only adapter ${NEIGHBOUR_ADAPTER}; ` +
        `it serves each socket on its own thread); isolation-sim [ref] not run: it has no emulated devices`,
    );
  }

  const rss = here(measured.idleRss);
  for (const daemon of ["ours", "reference"] as const) {
    const rows = rss.filter((r) => r.daemon === daemon);
    const first = rows[0];
    const last = rows.at(-1);
    if (first === undefined || last === undefined || last.sockets === first.sockets) continue;
    const extra = last.sockets - first.sockets;
    console.log(
      `idle-rss${daemon === "reference" ? " [ref]" : ""} ${at}: each extra ` +
        `${daemon === "ours" ? "device set" : "socket (one shared list)"} costs ` +
        `${fmt((last.idleRssMiB - first.idleRssMiB) / extra, 2)} MiB after start-up, ` +
        `${fmt((last.guestsRssMiB - first.guestsRssMiB) / extra, 2)} MiB with a guest connected ` +
        `(${last.sockets} vs ${first.sockets})`,
    );
  }
}

/** The placements asked for: --placement, or the older --pin-only / --no-pin. */
function chosenPlacements(): Placement[] {
  const legacy = options["pin-only"] || options["no-pin"];
  if (options.placement !== undefined && legacy) {
    throw new Error("give --placement, or --pin-only / --no-pin, not both");
  }
  if (options["pin-only"] && options["no-pin"]) {
    throw new Error("--pin-only and --no-pin exclude each other");
  }
  if (options["pin-only"]) return parsePlacements("one-cpu");
  if (options["no-pin"]) return parsePlacements("unpinned");
  return parsePlacements(options.placement ?? "one-cpu,two-cpus");
}

function chosenWorkloads(): Workload[] {
  if (options.only === undefined) return [...WORKLOADS];
  const names = options.only.split(",");
  const unknown = names.filter((name) => !WORKLOADS.some((w) => w.name === name));
  if (unknown.length > 0) throw new Error(`unknown workload ${unknown.join(", ")} (see --help)`);
  return WORKLOADS.filter((w) => names.includes(w.name));
}

/** Ours, then (with --reference, where the reference daemon can run it) the reference. */
function programsFor(workload: Workload): (string | undefined)[] {
  const reference = options.reference === undefined ? undefined : resolve(options.reference);
  const runsOnReference =
    workload.kind === "loop"
      ? workload.backend !== "sim"
      : workload.kind === "isolation"
        ? workload.neighbour === "host"
        : true;
  return reference !== undefined && runsOnReference ? [undefined, reference] : [undefined];
}

async function main(): Promise<void> {
  if (options.help) {
    process.stdout.write(HELP);
    return;
  }
  const placements = chosenPlacements();
  const workloads = chosenWorkloads();
  if (options.profile) mkdirSync(options.profile, { recursive: true });
  const measured: Measured = {
    results: [],
    isolation: [],
    daemons: [],
    idleRss: [],
    busReferences: [],
    floors: [],
  };
  console.log(
    `machine: ${cpus().length} CPUs, ${cpus()[0]?.model ?? "?"}; node ${process.version}; ` +
      `${SHORT ? "short" : "full"} mode, ${MEASURE_MS} ms per workload, queue size ${QUEUE_SIZE}; ` +
      `placements ${placements.map((p) => p.name).join(", ")}` +
      (options.reference === undefined ? "" : `; reference ${resolve(options.reference)}`),
  );
  console.log(
    `${"workload".padEnd(ROW_WIDTH)} placement transfers/s   p50 µs   p99 µs   max µs  daemon µs/t  frontend µs/t  RSS MiB`,
  );
  for (const placement of placements) {
    pinSelf(placement.frontendCpu);
    if (workloads.some((w) => w.kind === "loop" && w.backend === "host-delay")) {
      // The probe runs in a child, so it gets the frontend's CPU affinity.
      const bus = measureBusTime(fakeConfig("host-delay"), FAKE_ADAPTER, BUS_TIME_SAMPLES);
      measured.busReferences.push({ ...bus, placement: placement.name });
    }
    // Measured in every placement: the machine's speed moves with its load from one run to the next.
    measured.floors.push({
      ...(await measureFloors(placement, FLOOR_MS)),
      placement: placement.name,
    });
    for (const workload of workloads) {
      for (const program of programsFor(workload)) {
        if (workload.kind === "idle-rss") {
          const before = measured.idleRss.length;
          await runIdleRss(workload, placement, measured, program);
          printRssRows(measured.idleRss.slice(before));
          continue;
        }
        const rows =
          workload.kind === "loop"
            ? await runLoopWorkload(workload, placement, measured, program)
            : await runIsolation(workload, placement, measured, program);
        for (const row of rows) {
          measured.results.push(row);
          printRow(row);
        }
      }
    }
  }
  pinSelf(null);
  for (const placement of placements) printComparisons(measured, placement);
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
          stallUs: STALL_US,
          placements,
          ...measured,
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
