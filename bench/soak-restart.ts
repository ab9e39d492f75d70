/**
 * Soak of the daemon's restarts under a real guest: a guest (QEMU + the test kernel, guest/build.sh)
 * writes and reads back an emulated, file-backed EEPROM without pause while the daemon is handed over
 * (SIGUSR2) and crashed (SIGKILL of its main process under a service manager that keeps its fds)
 * again and again. Prints what the guest saw: restarts done, transfers ok and failed, writes
 * acknowledged and lost (checked against the guest's read-back and the backing file), and the longest
 * time between two successful guest transfers around each restart. Exits 0 only when every restart
 * was done, no transfer failed, no acknowledged write was lost and the guest ended in time.
 *
 * Run by hand (takes minutes; TCG):
 *   npm run build && node dist/bench/soak-restart.js [--handovers 20] [--crashes 5]
 *     [--qemu BINARY] [--client] [--fd-store] [--between N] [--log-level LEVEL]
 * --qemu: the QEMU to run (default qemu-system-x86_64 from PATH, e.g. a QEMU 10 wrapper printed by
 * guest/qemu-10.sh); --client: QEMU listens and the daemon connects (default: the daemon listens);
 * --between: successful guest transfers between two restarts (default 12); --fd-store: run the daemon
 * with --fd-store under the test service manager (test/helpers/fd-store-supervisor.ts, as systemd
 * with Restart=always and FileDescriptorStoreMax=) even without crashes; crashes always do.
 * Must not reach into the daemon's modules: it sees processes, signals, the guest console and files.
 * @module
 */

import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import {
  type DoneRestart,
  type Interval,
  LOOP_AND_DUMP_SCRIPT,
  type LoopRun,
  type RestartKind,
  restartUnderLoad,
  type SocketMode,
  startLoop,
  stopLoop,
  TransferLog,
  type WriteCheck,
} from "../test/e2e/transfer-loop.js";
import { makeTempDir, withTimeout } from "../test/helpers/daemon.js";
import { bootGuest, requireGuestImages } from "../test/helpers/guest.js";
import { HandoverChain, type RestartedDaemon } from "../test/helpers/handover-chain.js";
import { SupervisedDaemon } from "../test/helpers/supervised-daemon.js";

export interface RestartSoakOptions {
  readonly handovers: number;
  readonly crashes: number;
  /** QEMU binary; qemu-system-x86_64 from PATH when null. */
  readonly qemu: string | null;
  readonly mode: SocketMode;
  /** Successful guest transfers between two restarts. */
  readonly between: number;
  readonly logLevel: string;
  /** The daemon runs with --fd-store under the test service manager (always with crashes). */
  readonly supervised: boolean;
}

/** One restart as done, and what the guest saw of it. */
export interface MeasuredRestart extends DoneRestart {
  /** The longest time between two successful guest transfers that overlaps the restart. */
  readonly stallMs: number;
}

export interface RestartSoakFigures {
  readonly qemu: string;
  readonly mode: SocketMode;
  readonly planned: { readonly handovers: number; readonly crashes: number };
  readonly done: readonly MeasuredRestart[];
  readonly transfersOk: number;
  readonly transfersFailed: number;
  /** Reads that succeeded with other bytes than the write before them had put there. */
  readonly readsWrong: number;
  readonly failures: readonly string[];
  /** Against the guest's read-back of the loop's span, and against the backing file. */
  readonly readBack: WriteCheck | null;
  readonly backingFile: WriteCheck | null;
  /** The median time between successful guest transfers away from any restart. */
  readonly typicalGapMs: number;
  /** Connections the daemon logged while the guest ran. */
  readonly connections: {
    readonly connected: number;
    readonly resumed: number;
    readonly disconnected: number;
  };
  /** QEMU's stderr lines (a listening QEMU's note that it waits for the daemon left out). */
  readonly qemuSaid: readonly string[];
  /** Seconds from the guest's boot until its script ended, null when it never did (a hang). */
  readonly guestSeconds: number | null;
  /** Why the soak stopped early, or null. */
  readonly aborted: string | null;
}

/** Guest transfers may pause this long around a restart; any longer is a hang. */
const HANG_MS = 60_000;
/** The guest's own deadline: boot, every restart with its transfers, and the read-back. */
const guestDeadlineMs = (restarts: number) => 120_000 + restarts * 2 * HANG_MS;

/** Handovers and crashes in the order the soak does them: the crashes spread evenly among them. */
export function restartSchedule(handovers: number, crashes: number): RestartKind[] {
  const total = handovers + crashes;
  const schedule: RestartKind[] = Array.from({ length: total }, () => "handover");
  for (let crash = 0; crash < crashes; crash++) {
    schedule[Math.floor(((crash + 0.5) * total) / crashes)] = "crash";
  }
  return schedule;
}

/** Starts the loop's daemon and guest as `options` say, in `dir`. */
function start(options: RestartSoakOptions, dir: string, log: TransferLog): Promise<LoopRun> {
  return startLoop<RestartedDaemon>({
    dir,
    mode: options.mode,
    logLevel: options.logLevel,
    // Only a daemon under a service manager that keeps its fds survives a crash.
    launch: (args, ready) =>
      options.supervised || options.crashes > 0
        ? SupervisedDaemon.start(args, dir, ready)
        : HandoverChain.start(args, ready),
    boot: (qemuArgs) =>
      bootGuest({
        ...requireGuestImages(),
        script: LOOP_AND_DUMP_SCRIPT,
        qemuArgs: [...qemuArgs],
        timeoutMs: guestDeadlineMs(options.handovers + options.crashes),
        onConsole: log.onConsole,
        ...(options.qemu !== null && { qemu: options.qemu }),
      }),
  });
}

/** How many lines of `log` contain `text`. */
function linesWith(log: string, text: string): number {
  return log.split("\n").filter((line) => line.includes(text)).length;
}

/** The first line `qemu --version` prints, or the binary's name when it prints none. */
function qemuVersion(qemu: string): string {
  const printed = spawnSync(qemu, ["--version"], { encoding: "utf8" }).stdout ?? "";
  return printed.split("\n")[0]?.trim() || qemu;
}

/**
 * Runs the soak; `print` gets one line per restart as it is done. Stops early (`aborted`) when the
 * guest makes no transfer for a minute, ends too soon or a restart fails; still measures what was.
 */
export async function runRestartSoak(
  options: RestartSoakOptions,
  print: (line: string) => void = () => {},
): Promise<RestartSoakFigures> {
  const qemu = options.qemu ?? "qemu-system-x86_64";
  const tmp = makeTempDir("vdi2c-soak-");
  const log = new TransferLog();
  const done: DoneRestart[] = [];
  let aborted: string | null = null;
  let started: LoopRun | null = null;
  try {
    const bootedAt = performance.now();
    started = await start(options, tmp.path, log);
    const { daemon, guest, control, devices } = started;
    let scriptSeconds: number | null = null;
    void log.scriptEnded.then(() => {
      scriptSeconds = (performance.now() - bootedAt) / 1000;
    });
    try {
      const kinds = restartSchedule(options.handovers, options.crashes);
      await restartUnderLoad(started, log, kinds, {
        between: options.between,
        hangMs: HANG_MS,
        onDone: (restart) => {
          done.push(restart);
          print(
            `${restart.kind} ${done.length}: pid ${restart.from} -> ${restart.to} in ` +
              `${Math.round(restart.doneAt - restart.signalledAt)} ms`,
          );
        },
      });
      await stopLoop(control);
      await withTimeout(log.scriptEnded, HANG_MS, "the guest's read-back after the loop");
    } catch (error) {
      aborted = error instanceof Error ? error.message : String(error);
    }
    // What the daemon logged while the guest ran (QEMU's exit disconnects it).
    const daemonLog = daemon.log;
    if (aborted !== null) await daemon.kill();
    const run = await guest;
    let backing: Uint8Array | null = null;
    if (aborted === null) {
      await daemon.stop();
      backing = readFileSync(devices.backing);
    }
    const intervals = done.map((timing) => ({ start: timing.signalledAt, end: timing.doneAt }));
    return {
      qemu: qemuVersion(qemu),
      mode: options.mode,
      planned: { handovers: options.handovers, crashes: options.crashes },
      done: done.map((restart, index) => ({
        ...restart,
        stallMs: Math.round(log.stall(intervals[index] as Interval)),
      })),
      transfersOk: log.ok,
      transfersFailed: log.failed,
      readsWrong: log.mismatched,
      failures: log.failures,
      readBack: log.dumped.size > 0 ? log.checkWrites(devices.initial, log.dumped) : null,
      backingFile: backing === null ? null : log.checkWrites(devices.initial, backing),
      typicalGapMs: Math.round(log.typicalGap(intervals)),
      connections: {
        connected: linesWith(daemonLog, "front-end connected"),
        resumed: linesWith(daemonLog, "front-end resumed"),
        disconnected: linesWith(daemonLog, "front-end disconnected"),
      },
      qemuSaid: run.stderr
        .split("\n")
        .filter((line) => line !== "" && !line.includes("info: QEMU waiting for connection on:")),
      guestSeconds: run.scriptStatus === 0 ? scriptSeconds : null,
      aborted,
    };
  } finally {
    await started?.daemon.kill();
    tmp.remove();
  }
}

/** Whether the figures meet the bar: every restart done, nothing failed or lost, no hang. */
export function passed(figures: RestartSoakFigures): boolean {
  const restarts = figures.planned.handovers + figures.planned.crashes;
  return (
    figures.aborted === null &&
    figures.done.length === restarts &&
    figures.transfersFailed === 0 &&
    figures.readsWrong === 0 &&
    figures.readBack !== null &&
    figures.readBack.lost === 0 &&
    figures.readBack.differing === 0 &&
    figures.backingFile !== null &&
    figures.backingFile.lost === 0 &&
    figures.backingFile.differing === 0 &&
    figures.qemuSaid.length === 0 &&
    figures.guestSeconds !== null
  );
}

/** Longest, median and each stall of the restarts of `kind`, or "none". */
function stallLine(done: readonly MeasuredRestart[], kind: RestartKind): string {
  const stalls = done.filter((restart) => restart.kind === kind).map((r) => r.stallMs);
  if (stalls.length === 0) return "none";
  const sorted = [...stalls].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  return `longest ${sorted.at(-1)} ms, median ${median} ms; each: ${stalls.join(" ")}`;
}

function checkLine(check: WriteCheck | null, what: string): string {
  if (check === null) return `${what}: not checked`;
  const lost = check.lost === 0 ? "" : ` (lost at ${check.lostAt.slice(0, 16).join(",")})`;
  return `${what}: ${check.compared} bytes compared, ${check.differing} differ, ${check.lost} acknowledged writes lost${lost}`;
}

/** The figures as the lines the tool prints. */
export function formatFigures(figures: RestartSoakFigures): string[] {
  const count = (kind: RestartKind) => figures.done.filter((r) => r.kind === kind).length;
  const lost =
    (figures.readBack?.lost ?? 0) + (figures.backingFile?.lost ?? 0) === 0 &&
    figures.readBack !== null &&
    figures.backingFile !== null
      ? "0"
      : `${figures.readBack?.lost ?? "?"} (read-back), ${figures.backingFile?.lost ?? "?"} (backing file)`;
  const lines = [
    `qemu: ${figures.qemu}; ${figures.mode} mode`,
    `handovers done: ${count("handover")} of ${figures.planned.handovers}`,
    `crashes done: ${count("crash")} of ${figures.planned.crashes}`,
    `guest transfers: ${figures.transfersOk} ok, ${figures.transfersFailed} failed, ${figures.readsWrong} read back wrong`,
    `acknowledged writes: ${figures.readBack?.acked ?? figures.backingFile?.acked ?? 0}; lost: ${lost}`,
    `  ${checkLine(figures.readBack, "guest read-back")}`,
    `  ${checkLine(figures.backingFile, "backing file")}`,
    `guest-visible stall (longest time between two successful transfers around a restart; typical gap ${figures.typicalGapMs} ms):`,
    `  handovers: ${stallLine(figures.done, "handover")}`,
    `  crashes: ${stallLine(figures.done, "crash")}`,
    `daemon, while the guest ran: ${figures.connections.connected} connect, ${figures.connections.resumed} resumed, ${figures.connections.disconnected} disconnected`,
    `qemu said: ${figures.qemuSaid.length === 0 ? "nothing" : figures.qemuSaid.join(" | ")}`,
    `hang: ${figures.guestSeconds === null ? "yes (the guest's script did not end in time)" : `none (the guest's script ended after ${figures.guestSeconds.toFixed(1)} s)`}`,
  ];
  if (figures.aborted !== null) lines.push(`aborted: ${figures.aborted}`);
  for (const failure of figures.failures.slice(0, 10)) lines.push(`guest failure: ${failure}`);
  lines.push(`verdict: ${passed(figures) ? "PASS" : "FAIL"}`);
  return lines;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const { values } = parseArgs({
    options: {
      handovers: { type: "string", default: "20" },
      crashes: { type: "string", default: "5" },
      qemu: { type: "string" },
      client: { type: "boolean", default: false },
      "fd-store": { type: "boolean", default: false },
      between: { type: "string", default: "12" },
      "log-level": { type: "string", default: "info" },
    },
  });
  const count = (name: "handovers" | "crashes" | "between"): number => {
    const value = Number(values[name]);
    if (!Number.isSafeInteger(value) || value < 0) {
      process.stderr.write(`soak-restart: --${name} must be a whole number\n`);
      process.exit(2);
    }
    return value;
  };
  const options: RestartSoakOptions = {
    handovers: count("handovers"),
    crashes: count("crashes"),
    qemu: values.qemu ?? null,
    mode: values.client ? "client" : "server",
    between: Math.max(1, count("between")),
    logLevel: values["log-level"],
    supervised: values["fd-store"],
  };
  const figures = await runRestartSoak(options, (line) => console.log(line));
  for (const line of formatFigures(figures)) console.log(line);
  process.exitCode = passed(figures) ? 0 : 1;
}
