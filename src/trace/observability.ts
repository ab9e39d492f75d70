/**
 * Observability: what `--trace`, `--pcap` and the control socket's `stats` need, behind one
 * TransferObserver the daemon gives every VirtioI2cDevice. Opens the trace and capture files at
 * start-up (RotatingFiles: no links followed, size and count capped), feeds each finished transfer
 * to the trace output, the pcap writer and the counters, and answers `stats`. A trace line is built
 * only when its output has room for the longest line, so a dropped line costs nothing. Nothing is
 * created for what is off, and with everything off the daemon sets no observer at all.
 * Must not: block the event loop per transfer, or throw into the device.
 * @module
 */

import { CodedError } from "../errors.js";
import type { TransferObserver, TransferRecord } from "../i2c/observer.js";
import type { DeviceObservation } from "../i2c/virtio-i2c.js";
import { type Logger, silentLogger } from "../log.js";
import { type CountersSnapshot, TransferCounters } from "./counters.js";
import { formatTraceLine, TRACE_LINE_MAX_BYTES } from "./format.js";
import { type PcapCounters, PcapWriter } from "./pcap.js";
import { RotatingFile } from "./rotating-file.js";
import { AsyncFdSink, type ChunkOutput } from "./sink.js";

/** `--trace` to stdout. */
export const TRACE_STDOUT = "-";

/**
 * The trace file (`ETRACE`) or the capture file (`EPCAP`) cannot be opened: its path is unsafe or
 * unusable, or a limit is out of range. The message says why; `cause` is the original error.
 */
export class OutputOpenError extends CodedError<"ETRACE" | "EPCAP"> {}

/** Runs `open`, turning its failure into the OutputOpenError of output `code`. */
function openOutput<T>(code: OutputOpenError["code"], open: () => T): T {
  try {
    return open();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new OutputOpenError(code, message, { cause: error });
  }
}

export interface ObservabilityOptions {
  /** `-` for stdout, else a file appended to; undefined: no trace. */
  readonly trace?: string | undefined;
  /** Size limit of one trace file in bytes (default 64 MiB); at the limit it rotates to FILE.1. */
  readonly traceMaxSize?: number | undefined;
  /** Trace files kept, the current one included (default 2). */
  readonly traceMaxFiles?: number | undefined;
  /** Capture file; undefined: no capture. */
  readonly pcap?: string | undefined;
  /** Size limit of one capture file in bytes (default 64 MiB); at the limit it rotates to FILE.1. */
  readonly pcapMaxSize?: number | undefined;
  /** Capture files kept, the current one included (default 2). */
  readonly pcapMaxFiles?: number | undefined;
  /** Keep counters (the control socket serves them). */
  readonly counters?: boolean;
  readonly logger?: Logger;
}

export interface TraceCounters {
  readonly target: string;
  readonly lines: number;
  readonly dropped: number;
}

/** The `stats` reply. */
export interface StatsSnapshot extends CountersSnapshot {
  /** When counting started (daemon start), ISO 8601. */
  readonly since: string;
  readonly trace: TraceCounters | null;
  readonly pcap: PcapCounters | null;
}

interface TraceOutput {
  readonly target: string;
  readonly output: ChunkOutput;
}

export class Observability implements TransferObserver {
  readonly #since = new Date().toISOString();
  readonly #trace: TraceOutput | null;
  readonly #pcap: PcapWriter | null;
  readonly #counters: TransferCounters | null;
  #traceLines = 0;

  private constructor(options: ObservabilityOptions) {
    const logger = options.logger ?? silentLogger;
    // Not rate-limited: an output reports at most one failure, and stops writing with it.
    const onError = (what: string) => (error: Error) =>
      logger.warn(`${what} write failed; ${what} stopped`, { error: error.message });
    this.#counters = options.counters ? new TransferCounters() : null;
    let trace: TraceOutput | null = null;
    if (options.trace === TRACE_STDOUT) {
      trace = {
        target: "stdout",
        output: new AsyncFdSink(1, { ownsFd: false, onError: onError("trace") }),
      };
    } else if (options.trace !== undefined) {
      const path = options.trace;
      trace = {
        target: path,
        output: openOutput("ETRACE", () =>
          RotatingFile.open(path, {
            existing: "append",
            maxFileSize: options.traceMaxSize,
            maxFiles: options.traceMaxFiles,
            onError: onError("trace"),
          }),
        ),
      };
    }
    this.#trace = trace;
    const pcap = options.pcap;
    try {
      this.#pcap =
        pcap === undefined
          ? null
          : openOutput("EPCAP", () =>
              PcapWriter.open(pcap, {
                maxFileSize: options.pcapMaxSize,
                maxFiles: options.pcapMaxFiles,
                onError: onError("pcap"),
              }),
            );
    } catch (error) {
      this.#trace?.output.closeSync();
      throw error;
    }
  }

  /**
   * Opens what `options` turns on; null when nothing is on (the devices then get no observer).
   * Throws OutputOpenError when a trace or capture file cannot be opened safely or a limit is out
   * of range.
   */
  static open(options: ObservabilityOptions): Observability | null {
    if (options.trace === undefined && options.pcap === undefined && !options.counters) return null;
    return new Observability(options);
  }

  /** What a VirtioI2cDevice serving socket `guest` takes. */
  observationFor(guest: number): DeviceObservation {
    return { observer: this, guest };
  }

  get countsTransfers(): boolean {
    return this.#counters !== null;
  }

  transferDone(record: TransferRecord): void {
    this.#counters?.record(record);
    if (this.#trace !== null) {
      const written = this.#trace.output.writeBuilt(TRACE_LINE_MAX_BYTES + 1, () =>
        Buffer.from(`${formatTraceLine(record)}\n`),
      );
      if (written) this.#traceLines++;
    }
    this.#pcap?.write(record, record.guest);
  }

  stats(): StatsSnapshot {
    const counters = this.#counters?.snapshot() ?? { guests: [], devices: [] };
    return {
      since: this.#since,
      ...counters,
      trace:
        this.#trace === null
          ? null
          : {
              target: this.#trace.target,
              lines: this.#traceLines,
              dropped: this.#trace.output.counters.dropped,
            },
      pcap: this.#pcap?.counters ?? null,
    };
  }

  /** Writes what is queued and closes the files (shutdown). */
  close(): void {
    this.#trace?.output.closeSync();
    this.#pcap?.closeSync();
  }
}
