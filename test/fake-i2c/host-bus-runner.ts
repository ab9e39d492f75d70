/**
 * Child-process driver for the HostBus tests: runs in a process with libfakei2c.so preloaded, takes
 * a plan (JSON) as its only argument, opens a HostBus, runs the transfers and prints one JSON result
 * on stdout. Without an argument it does nothing: `node --test` runs every .js file under a test/
 * directory, this one included.
 * Must not: assert anything (the test does) or exit non-zero for a transfer failure, since reporting
 * failures is its job.
 * @module
 */

import { renameSync, writeFileSync } from "node:fs";
import type { I2cMessage } from "../../src/i2c/bus.js";
import { HostBus, type HostCompletion } from "../../src/i2c/host-bus.js";
import { createLogger } from "../../src/log.js";
import { EventFd } from "../../src/sys/eventfd.js";
import { native } from "../../src/sys/native.js";

/** A write carries `data`; a read carries `len`. */
export interface MessageSpec {
  addr: number;
  read?: boolean;
  len?: number;
  data?: number[];
}

/**
 * One transfer awaited on its own; several submitted at once and awaited together; several
 * submitted, then close() called before awaiting them (`afterClose` are submitted after close());
 * or the fake's configuration replaced (atomically) by `reconfigure`.
 */
export type Step =
  | { transfer: MessageSpec[] }
  | { concurrent: MessageSpec[][] }
  | { closeWhile: MessageSpec[][]; afterClose: MessageSpec[][] }
  | { reconfigure: string };

export interface Plan {
  adapter: number;
  addrs: number[];
  steps: Step[];
  /** HostBusOptions.completion. Default "thread". */
  completion?: HostCompletion;
  /** HostBusOptions.inlineAfterFastTransfers and fastTransferMs (adaptive). */
  inlineAfterFastTransfers?: number;
  fastTransferMs?: number;
  /**
   * Give the bus an eventfd as loopWakeFd and report, per transfer step, what it counted by the
   * time the transfer ended (waiting up to 5 s for it after a Promise: the I/O thread writes it
   * right after signalling the loop).
   */
  wake?: boolean;
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
      /** With `wake`: the wake eventfd's count after each `transfer` step. */
      wakes: number[];
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

/** The wake eventfd's count now, or after up to 5 s when `expectOne` (0 if none came). */
function wakeCount(wake: EventFd, expectOne: boolean): number {
  if (expectOne) native().waitReadable(Int32Array.of(wake.fd), new Uint8Array(1), 5000);
  return wake.read();
}

/** Replaces the fake's configuration file the way it asks: a new file renamed over it. */
function reconfigure(config: string): void {
  const path = process.env.FAKE_I2C_CONFIG;
  if (path === undefined) throw new Error("FAKE_I2C_CONFIG is not set");
  writeFileSync(`${path}.next`, config);
  renameSync(`${path}.next`, path);
}

async function main(planJson: string): Promise<void> {
  const plan = JSON.parse(planJson) as Plan;
  const log: string[] = [];
  const logger = createLogger("debug", { write: (line: string) => log.push(line.trimEnd()) });
  const wake = plan.wake === true ? EventFd.create() : null;
  const wakes: number[] = [];
  let bus: HostBus;
  try {
    bus = HostBus.open(plan.adapter, plan.addrs, logger, {
      ...(plan.completion !== undefined && { completion: plan.completion }),
      ...(plan.inlineAfterFastTransfers !== undefined && {
        inlineAfterFastTransfers: plan.inlineAfterFastTransfers,
      }),
      ...(plan.fastTransferMs !== undefined && { fastTransferMs: plan.fastTransferMs }),
      ...(wake !== null && { loopWakeFd: wake.fd }),
    });
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
      if (wake !== null) wakes.push(wakeCount(wake, returned.at(-1) === "promise"));
    } else if ("reconfigure" in step) {
      reconfigure(step.reconfigure);
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
  wake?.close();
  const output: RunnerOutput = { opened: true, results, log, returned, wakes };
  process.stdout.write(`${JSON.stringify(output)}\n`);
}

const planArgument = process.argv[2];
if (planArgument !== undefined) await main(planArgument);
