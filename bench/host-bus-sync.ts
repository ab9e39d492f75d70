/**
 * HostBus transfers/s on the fake adapter (test/fake-i2c), synchronous mode (ioctls inline) against
 * asynchronous mode (the adapter's I/O thread), in one process, in interleaved runs, closed loop
 * (one transfer at a time: the next starts when the last ended). The transfer is the bench's
 * register read: write 0x00, read 8 bytes, at 0x50, as one I2C_RDWR.
 * Usage: node dist/bench/host-bus-sync.js [--rounds N] [--transfers N]
 * Must not: assert anything; it measures. It re-runs itself with the fake preloaded.
 * @module
 */

import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { I2cMessage } from "../src/i2c/bus.js";
import { HostBus } from "../src/i2c/host-bus.js";
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

async function measure(rounds: number, transfers: number): Promise<void> {
  const logger = createLogger("warn", { write: (line: string) => process.stderr.write(line) });
  const sync = HostBus.open(ADAPTER, [0x50], logger, { completion: "inline" });
  const async = HostBus.open(ADAPTER, [0x50], logger, { completion: "thread" });
  const msgs: I2cMessage[] = [
    { addr: 0x50, read: false, buf: Uint8Array.of(0x00) },
    { addr: 0x50, read: true, buf: new Uint8Array(8) },
  ];
  // Warm-up: both paths compiled, the I/O thread started, the exchange buffers sized.
  await closedLoop(sync, msgs, transfers / 10);
  await closedLoop(async, msgs, transfers / 10);
  const runs: { sync: Run[]; async: Run[] } = { sync: [], async: [] };
  for (let round = 0; round < rounds; round++) {
    // Alternate which mode goes first, so neither always runs on a warmer machine.
    const order = round % 2 === 0 ? (["sync", "async"] as const) : (["async", "sync"] as const);
    for (const mode of order) {
      runs[mode].push(await closedLoop(mode === "sync" ? sync : async, msgs, transfers));
    }
  }
  sync.close();
  async.close();
  const line = (mode: "sync" | "async") => {
    const rates = runs[mode].map((r) => r.rate);
    return `${mode.padEnd(5)}  median ${median(rates).toFixed(0).padStart(7)} transfers/s  (min ${Math.min(...rates).toFixed(0)}, max ${Math.max(...rates).toFixed(0)})  cpu ${median(runs[mode].map((r) => r.cpuUs)).toFixed(1)} us/transfer`;
  };
  process.stdout.write(
    `HostBus on the fake adapter, ${rounds} interleaved rounds of ${transfers} transfers each (write 1 + read 8, one I2C_RDWR)\n`,
  );
  process.stdout.write(`${line("sync")}\n${line("async")}\n`);
  const ratio = median(runs.sync.map((r) => r.rate)) / median(runs.async.map((r) => r.rate));
  process.stdout.write(`sync / async: ${ratio.toFixed(2)}x\n`);
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
