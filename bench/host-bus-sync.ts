/**
 * HostBus transfers/s on the fake adapter (test/fake-i2c) in each completion mode: inline (ioctls in
 * the calling thread), thread (the adapter's I/O thread) and adaptive (which the fast fake sends
 * inline after its first transfers), in one process, in interleaved runs, closed loop (one transfer
 * at a time: the next starts when the last ended). The transfer is the bench's register read:
 * write 0x00, read 8 bytes, at 0x50, as one I2C_RDWR.
 * Usage: node dist/bench/host-bus-sync.js [--rounds N] [--transfers N]
 * Must not: assert anything; it measures. It re-runs itself with the fake preloaded.
 * @module
 */

import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { I2cMessage } from "../src/i2c/bus.js";
import { HostBus, type HostCompletion } from "../src/i2c/host-bus.js";
import { createLogger } from "../src/log.js";
import { FakeI2c } from "../test/fake-i2c/fake.js";

const ADAPTER = 3;
const CONFIG = `adapter ${ADAPTER} funcs=i2c|emul\ndevice ${ADAPTER} 0x50\n`;

interface Run {
  /** Transfers per second of wall time. */
  rate: number;
  /** Process CPU time (every thread) per transfer, in microseconds. */
  cpuUs: number;
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
};

/** `count` transfers back to back; `transfer` answers with a number or a Promise of one. */
async function closedLoop(bus: HostBus, msgs: readonly I2cMessage[], count: number): Promise<Run> {
  const cpu = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const result = bus.transfer(msgs);
    const done = typeof result === "number" ? result : await result;
    if (done !== msgs.length) throw new Error(`transfer ${i} failed (${done})`);
  }
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return { rate: count / seconds, cpuUs: (used.user + used.system) / count };
}

const MODES: readonly HostCompletion[] = ["inline", "thread", "adaptive"];

async function measure(rounds: number, transfers: number): Promise<void> {
  const logger = createLogger("warn", { write: (line: string) => process.stderr.write(line) });
  const buses = new Map(
    MODES.map((completion) => [completion, HostBus.open(ADAPTER, [0x50], logger, { completion })]),
  );
  const msgs: I2cMessage[] = [
    { addr: 0x50, read: false, buf: Uint8Array.of(0x00) },
    { addr: 0x50, read: true, buf: new Uint8Array(8) },
  ];
  // Warm-up: every path compiled, the I/O threads started, the exchange buffers sized.
  for (const bus of buses.values()) await closedLoop(bus, msgs, transfers / 10);
  const runs = new Map(MODES.map((mode) => [mode, [] as Run[]]));
  for (let round = 0; round < rounds; round++) {
    // Rotate which mode goes first, so none always runs on a warmer machine.
    for (let i = 0; i < MODES.length; i++) {
      const mode = MODES[(round + i) % MODES.length]!;
      runs.get(mode)!.push(await closedLoop(buses.get(mode)!, msgs, transfers));
    }
  }
  for (const bus of buses.values()) bus.close();
  const medianRate = (mode: HostCompletion) => median(runs.get(mode)!.map((r) => r.rate));
  const line = (mode: HostCompletion) => {
    const rates = runs.get(mode)!.map((r) => r.rate);
    return `${mode.padEnd(8)}  median ${medianRate(mode).toFixed(0).padStart(7)} transfers/s  (min ${Math.min(...rates).toFixed(0)}, max ${Math.max(...rates).toFixed(0)})  cpu ${median(runs.get(mode)!.map((r) => r.cpuUs)).toFixed(1)} us/transfer`;
  };
  process.stdout.write(
    `HostBus on the fake adapter, ${rounds} interleaved rounds of ${transfers} transfers each (write 1 + read 8, one I2C_RDWR)\n`,
  );
  for (const mode of MODES) process.stdout.write(`${line(mode)}\n`);
  const thread = medianRate("thread");
  process.stdout.write(
    `inline / thread: ${(medianRate("inline") / thread).toFixed(2)}x, adaptive / thread: ${(medianRate("adaptive") / thread).toFixed(2)}x\n`,
  );
}

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "10" },
    transfers: { type: "string", default: "20000" },
  },
});
const rounds = Number(values.rounds);
const transfers = Number(values.transfers);

if (process.env.FAKE_I2C_CONFIG === undefined) {
  const fake = await FakeI2c.create(CONFIG);
  try {
    const env = fake.env();
    delete env.FAKE_I2C_LOG; // a log line per message would be most of what is measured
    const self = fileURLToPath(import.meta.url);
    const child = spawnSync(process.execPath, [self, ...process.argv.slice(2)], {
      env,
      stdio: "inherit",
    });
    process.exitCode = child.status ?? 1;
  } finally {
    await fake.cleanup();
  }
} else {
  await measure(rounds, transfers);
}
