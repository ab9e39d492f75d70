/**
 * Child-process driver for the HostBus tests: runs in a process with libfakei2c.so preloaded, takes
 * a plan (JSON) as its only argument, opens a HostBus, runs the transfers and prints one JSON result
 * on stdout. Without an argument it does nothing: `node --test` runs every .js file under a test/
 * directory, this one included.
 * Must not: assert anything (the test does) or exit non-zero for a transfer failure, since reporting
 * failures is its job.
 * @module
 */

import type { I2cMessage } from "../../src/i2c/bus.js";
import { HostBus } from "../../src/i2c/host-bus.js";
import { createLogger } from "../../src/log.js";

/** A write carries `data`; a read carries `len`. */
export interface MessageSpec {
  addr: number;
  read?: boolean;
  len?: number;
  data?: number[];
}

/**
 * One transfer awaited on its own; several submitted at once and awaited together; or several
 * submitted, then close() called before awaiting them (`afterClose` are submitted after close()).
 */
export type Step =
  | { transfer: MessageSpec[] }
  | { concurrent: MessageSpec[][] }
  | { closeWhile: MessageSpec[][]; afterClose: MessageSpec[][] };

export interface Plan {
  adapter: number;
  addrs: number[];
  steps: Step[];
  /** Open the bus in synchronous mode (transfers inline). Default false. */
  synchronous?: boolean;
}

export interface TransferResult {
  /** What transfer() resolved to. */
  done: number;
  /** Contents of every read message afterwards, in message order. */
  reads: number[][];
}

export type RunnerOutput =
  | {
      opened: true;
      results: TransferResult[];
      log: string[];
      /** What each transfer() call returned, in call order: a number or a Promise. */
      returned: Array<"number" | "promise">;
    }
  | { opened: false; error: { name: string; code: string; message: string }; log: string[] };

function toMessages(specs: readonly MessageSpec[]): I2cMessage[] {
  return specs.map((s) => ({
    addr: s.addr,
    read: s.read === true,
    buf: s.read ? new Uint8Array(s.len ?? 0) : Uint8Array.from(s.data ?? []),
  }));
}

/** What each transfer() call returned, in call order. */
const returned: Array<"number" | "promise"> = [];

async function runTransfer(bus: HostBus, msgs: I2cMessage[]): Promise<TransferResult> {
  const result = bus.transfer(msgs);
  returned.push(typeof result === "number" ? "number" : "promise");
  const done = await result;
  return { done, reads: msgs.filter((m) => m.read).map((m) => [...m.buf]) };
}

async function main(planJson: string): Promise<void> {
  const plan = JSON.parse(planJson) as Plan;
  const log: string[] = [];
  const logger = createLogger("debug", { write: (line: string) => log.push(line.trimEnd()) });
  let bus: HostBus;
  try {
    bus = HostBus.open(plan.adapter, plan.addrs, logger, { synchronous: plan.synchronous });
  } catch (error) {
    const e = error as { name?: string; code?: string; message?: string };
    const output: RunnerOutput = {
      opened: false,
      error: { name: String(e.name), code: String(e.code), message: String(e.message) },
      log,
    };
    process.stdout.write(`${JSON.stringify(output)}\n`);
    return;
  }
  const results: TransferResult[] = [];
  for (const step of plan.steps) {
    if ("transfer" in step) {
      results.push(await runTransfer(bus, toMessages(step.transfer)));
    } else if ("concurrent" in step) {
      // Submit every transfer before awaiting any, so they compete for the adapter.
      const pending = step.concurrent.map((specs) => runTransfer(bus, toMessages(specs)));
      results.push(...(await Promise.all(pending)));
    } else {
      const pending = step.closeWhile.map((specs) => runTransfer(bus, toMessages(specs)));
      bus.close();
      pending.push(...step.afterClose.map((specs) => runTransfer(bus, toMessages(specs))));
      results.push(...(await Promise.all(pending)));
    }
  }
  bus.close();
  const output: RunnerOutput = { opened: true, results, log, returned };
  process.stdout.write(`${JSON.stringify(output)}\n`);
}

const planArgument = process.argv[2];
if (planArgument !== undefined) await main(planArgument);
