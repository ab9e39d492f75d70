/**
 * Real guest, daemon handed over (SIGUSR2) under it again and again, in server mode (the daemon
 * listens) and client mode (QEMU listens): a guest running transfers without pause sees none fail and
 * no pause it would notice as an error, every write it saw acknowledged is in what it reads back and
 * in the backing file, QEMU logs nothing and the daemon sees one connection only. And a guest that
 * reboots after a handover comes back up against the successor, which serves the device's stop and
 * start. Skips by name without QEMU or a built guest image (guest/build.sh). QEMU is the one first on
 * PATH (put a QEMU 10 wrapper first to run these against it).
 * Must not reach into the daemon's modules.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { it } from "node:test";
import type { GuestRun } from "../helpers/guest.js";
import {
  HandoverChain,
  type RestartedDaemon,
  type RestartTiming,
} from "../helpers/handover-chain.js";
import { SupervisedDaemon } from "../helpers/supervised-daemon.js";
import {
  countLines,
  describeOrSkip,
  type GuestBench,
  guestSuite,
  hex,
  result,
  TEST_TIMEOUT_MS,
  withGuestBench,
} from "./harness.js";
import {
  DUMP_FUNCTION,
  type Interval,
  LOOP_AND_DUMP_SCRIPT,
  LOOP_EEPROM,
  LOOP_SCRIPT,
  LOOP_SPAN,
  type LoopRun,
  type RestartKind,
  restartUnderLoad,
  type SocketMode,
  startLoop,
  stopLoop,
  TransferLog,
} from "./transfer-loop.js";

const { skip, images } = guestSuite();

/** Handovers under the running loop (the soak tool, bench/soak-restart.ts, runs more). */
const HANDOVERS = 5;
/** Successful guest transfers between two handovers. */
const TRANSFERS_BETWEEN = 12;

/** Hang: no successful guest transfer for this long around a handover. */
const HANG_MS = 60_000;

/** Starts the daemon with `args` and resolves once it has logged `ready`. */
type Launch<D extends RestartedDaemon> = (
  bench: GuestBench,
  args: readonly string[],
  ready: string,
) => Promise<D>;

/** The daemon as a plain process handing over to its successors; its log is kept as evidence. */
const launchChain: Launch<HandoverChain> = (bench, args, ready) =>
  HandoverChain.start(args, ready, (daemon) => {
    bench.evidence.daemon("daemon", daemon);
  });

/**
 * The daemon with --fd-store under the test service manager, which restarts it with its stored fds
 * after a crash (as systemd with Restart=always and FileDescriptorStoreMax=). A failure's message
 * carries the supervisor's events and the service's log.
 */
const launchSupervised: Launch<SupervisedDaemon> = async (bench, args, ready) => {
  const daemon = await SupervisedDaemon.start(args, bench.dir, ready);
  bench.evidence.section("service manager", () => daemon.describe());
  return daemon;
};

/** Crashes and handovers mixed, for the check under a service manager. */
const CRASHES: readonly RestartKind[] = ["crash", "handover", "crash", "crash"];

/**
 * Starts the daemon (`launch`) and the guest running `script`, in `mode`; `qemuArgs` are added to
 * the device's.
 */
function serve<D extends RestartedDaemon>(
  bench: GuestBench,
  launch: Launch<D>,
  mode: SocketMode,
  script: string,
  log: TransferLog,
  logLevel: string,
  qemuArgs: readonly string[] = [],
): Promise<LoopRun<D>> {
  return startLoop({
    dir: bench.dir,
    mode,
    logLevel,
    launch: (args, ready) => launch(bench, args, ready),
    boot: (deviceArgs) =>
      bench.boot(script, { qemuArgs: [...deviceArgs, ...qemuArgs], onConsole: log.onConsole }),
  });
}

/**
 * Runs the loop in `mode` with the restarts `kinds` under it, then checks what the guest saw: no
 * transfer failed, every acknowledged write read back and in the backing file, QEMU quiet, one
 * connection; the daemon then stops on SIGTERM.
 */
async function restartsUnderLoad<D extends RestartedDaemon>(
  bench: GuestBench,
  launch: Launch<D>,
  mode: SocketMode,
  kinds: readonly RestartKind[],
): Promise<void> {
  const log = new TransferLog();
  const served = await serve(bench, launch, mode, LOOP_AND_DUMP_SCRIPT, log, "info");
  const { daemon, guest } = served;
  try {
    const done = await restartUnderLoad(served, log, kinds, {
      between: TRANSFERS_BETWEEN,
      hangMs: HANG_MS,
    });
    await stopLoop(served.control);
    const daemonLog = await log.scriptEnded.then(() => daemon.log);
    const run = await guest;

    const stalls = done.map((restart) => Math.round(log.stall(toInterval(restart))));
    const typical = Math.round(log.typicalGap(done.map(toInterval)));
    // What the guest saw, for the record (the soak tool prints the same figures).
    process.stdout.write(
      `# ${mode} mode: ${kinds.join(" ")}: ${log.ok} transfers ok, ${log.failed} failed, ` +
        `${log.acked} writes acknowledged; longest stall per restart ${stalls.join(" ")} ms ` +
        `(typical gap ${typical} ms)\n`,
    );
    assert.deepEqual(log.failures, [], "guest transfers failed or read back wrong");
    const loop = result(run, "loop");
    assert.match(loop, / failed=0 mismatched=0 /);
    assert.ok(loop.includes(` acked=${log.acked}`), `console lines lost: ${loop}`);
    assert.ok(log.acked >= kinds.length * 2, `too few writes: ${log.acked}`);
    assertQemuQuiet(run);
    assertOneConnection(daemonLog, kinds.length);
    assert.equal(
      new Set([done[0]?.from, ...done.map((restart) => restart.to)]).size,
      kinds.length + 1,
    );

    const readBack = log.checkWrites(served.devices.initial, log.dumped);
    assert.equal(Number(result(run, "dumped")), Math.min(log.acked, LOOP_SPAN));
    assert.equal(readBack.compared, Number(result(run, "dumped")));
    assert.equal(readBack.differing, 0, `guest read back: ${JSON.stringify(readBack)}`);
    await daemon.stop();
    const file = log.checkWrites(served.devices.initial, readFileSync(served.devices.backing));
    assert.equal(file.differing, 0, `backing file: ${JSON.stringify(file)}`);
    assert.match(daemon.log, /stopping signal=SIGTERM/);
  } finally {
    await daemon.kill();
  }
}

/**
 * QEMU said nothing about the device's back-end (a disconnect, a failed message, an assertion);
 * only a listening QEMU's note that it waits for the daemon (client mode) is expected.
 */
function assertQemuQuiet(run: GuestRun): void {
  const said = run.stderr
    .split("\n")
    .filter((line) => line !== "" && !line.includes("info: QEMU waiting for connection on:"));
  assert.deepEqual(said, [], "QEMU logged");
}

/**
 * The one connection stayed while the guest ran (`log`, the daemon's log until the guest's script
 * ended): connected once, resumed at each handover, never disconnected.
 */
function assertOneConnection(log: string, handovers: number): void {
  assert.equal(countLines(log, "front-end connected"), 1, "the front-end connected again");
  assert.equal(countLines(log, "front-end resumed"), handovers);
  assert.equal(countLines(log, "front-end disconnected"), 0);
}

for (const mode of ["server", "client"] as const) {
  describeOrSkip(
    `daemon restarts under a running guest (${mode} mode)`,
    {
      skip,
      timeout: TEST_TIMEOUT_MS,
    },
    () => {
      it(`${HANDOVERS} handovers under continuous transfers: none fails, every acknowledged write is read back and in the backing file, QEMU sees nothing`, async () => {
        await withGuestBench(images, (bench) =>
          restartsUnderLoad(bench, launchChain, mode, Array(HANDOVERS).fill("handover")),
        );
      });

      it(`under a service manager keeping its fds (--fd-store): ${CRASHES.join(", ")} (SIGKILL of the main process) under continuous transfers: none fails, every acknowledged write is read back and in the backing file, QEMU sees nothing`, async () => {
        await withGuestBench(images, (bench) =>
          restartsUnderLoad(bench, launchSupervised, mode, CRASHES),
        );
      });

      it("a guest that reboots after a handover comes back up against the successor, which serves the stop and the restart of the device", async () => {
        await withGuestBench(images, async (bench) => {
          // The boot marker lives in the backed EEPROM, outside the loop's span: the successor
          // starts its devices from the backing file, so only a backed byte outlives the handover.
          const marker = LOOP_SPAN + 0x7ff;
          const log = new TransferLog();
          const script = rebootScript(marker);
          // A guest reboot resets the machine instead of ending QEMU (the harness passes -no-reboot).
          const served = await serve(bench, launchChain, mode, script, log, "trace", [
            "-action",
            "reboot=reset",
          ]);
          const { daemon: chain, guest } = served;
          try {
            const [timing] = await restartUnderLoad(served, log, ["handover"], {
              between: TRANSFERS_BETWEEN,
              hangMs: HANG_MS,
            });
            assert.ok(timing);
            await stopLoop(served.control);
            const daemonLog = await log.scriptEnded.then(() => chain.log);
            const run = await guest;

            assert.equal(
              countLines(run.console, "@@GUEST-BOOTED"),
              2,
              "the guest did not boot twice",
            );
            assert.deepEqual(log.failures, []);
            assert.match(result(run, "loop"), / failed=0 mismatched=0 /);
            assert.equal(result(run, "boot2_marker"), BOOT_MARK);
            const readBack = log.checkWrites(served.devices.initial, log.dumped);
            assert.equal(readBack.compared, LOOP_SPAN);
            assert.equal(readBack.differing, 0, `boot 2 read back: ${JSON.stringify(readBack)}`);
            assert.equal(result(run, "boot2_wrote"), "0x5c");
            assert.match(result(run, "boot2_scan"), /^50: 50 51 /);
            assertQemuQuiet(run);
            assertOneConnection(daemonLog, 1);
            // Everything after the handover line is the successor's (its predecessor had exited):
            // the reset stopped the ring there and the re-probe started it there again.
            const successorLog = daemonLog.slice(daemonLog.lastIndexOf("handed over:"));
            assert.ok(countLines(successorLog, "request=GET_VRING_BASE") >= 1, "no ring stop");
            assert.ok(countLines(successorLog, "request=SET_VRING_ADDR") >= 1, "no ring start");
            assert.ok(countLines(successorLog, "request=SET_VRING_ENABLE") >= 1, "no ring enable");
            await chain.stop();
          } finally {
            await chain.kill();
          }
        });
      });
    },
  );
}

const toInterval = (timing: RestartTiming): Interval => ({
  start: timing.signalledAt,
  end: timing.doneAt,
});

/** What the first boot leaves in the marker byte (the backing file's pattern has other bytes). */
const BOOT_MARK = "0xb2";

/**
 * Boot 1 runs the loop until the host stops it, marks the EEPROM and reboots; boot 2 reads the
 * loop's span back, writes and reads a new byte and scans the bus.
 */
function rebootScript(marker: number): string {
  const at = `${hex(marker >> 8)} ${hex(marker & 0xff)}`;
  const eeprom = hex(LOOP_EEPROM);
  return `${DUMP_FUNCTION}
seen=$(i2ctransfer -y 0 w2@${eeprom} ${at} r1@${eeprom})
if [ "$seen" != ${BOOT_MARK} ]; then
${LOOP_SCRIPT}
  i2ctransfer -y 0 w3@${eeprom} ${at} ${BOOT_MARK}
  echo "RESULT boot1_marked $?"
  reboot -f
  sleep 60
fi
echo "RESULT boot2_marker $seen"
dump 0 ${LOOP_SPAN}
i2ctransfer -y 0 w3@${eeprom} ${at} 0x5c
echo "RESULT boot2_wrote $(i2ctransfer -y 0 w2@${eeprom} ${at} r1@${eeprom})"
echo "RESULT boot2_scan $(i2cdetect -y 0 | grep '^50:')"
`;
}
