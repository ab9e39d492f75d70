/**
 * A guest that runs transfers without pause while the host restarts the daemon under it: the
 * devices (a backed 24c32 that takes the traffic, a 24c02 whose byte 0 tells the guest to stop), the
 * busybox loop (write a byte, read it back, one console line per transfer), the host's reading of that
 * console (counts, every acknowledged write, the times between successful transfers) and the checks
 * afterwards: every acknowledged write must be in what the guest reads back and in the backing file.
 * Used by the handover e2e tests and by bench/soak-restart.ts.
 * Must not reach into the daemon's modules: it sees the guest's console, the control socket and files.
 * @module
 */

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeConfig } from "../helpers/configured-daemon.js";
import { waitUntil } from "../helpers/daemon.js";
import { memoryEeprom } from "../helpers/eeprom.js";
import { GUEST_MARKERS, type GuestRun, vhostUserI2cArgs } from "../helpers/guest.js";
import type { RestartedDaemon, RestartTiming } from "../helpers/handover-chain.js";
import {
  controlCommand,
  eepromPattern,
  hex,
  socketPrefix,
  vhostUserI2cServerArgs,
} from "./harness.js";

/** The EEPROM the loop writes and reads (two-byte word addresses). */
export const LOOP_EEPROM = 0x50;
export const LOOP_EEPROM_MODEL = "24c32";
export const LOOP_EEPROM_SIZE = 4096;
/** The chip whose byte 0 the host sets (control socket) to end the loop. */
export const STOP_FLAG = 0x51;
/** What the host writes to it: "stop". */
const STOP_VALUE = "01";
const EEPROM = hex(LOOP_EEPROM);
const FLAG = hex(STOP_FLAG);
/** The loop writes addresses 0..SPAN-1 (then wraps); the rest of the EEPROM is the guest's own. */
export const LOOP_SPAN = 2048;
/** The loop looks at the stop flag before every this many writes. */
const FLAG_EVERY = 8;

export interface LoopDevices {
  readonly configFile: string;
  readonly backing: string;
  /** What the backing file held before the daemon started. */
  readonly initial: Uint8Array;
}

/** Writes the backing file (a pattern) and a `--config` file with the EEPROM and the stop flag. */
export function writeLoopConfig(dir: string, seed = 0x3c): LoopDevices {
  const initial = eepromPattern(LOOP_EEPROM_SIZE, seed);
  const backing = join(dir, "loop-eeprom.bin");
  const devices = [
    // No write cycle: the loop reads each byte back right after writing it, with i2c-dev tools
    // that do not retry as at24 does.
    memoryEeprom(LOOP_EEPROM_MODEL, LOOP_EEPROM, { backing: "loop-eeprom.bin" }),
    { bus: "sim", address: FLAG, model: "24c02" },
  ];
  writeFileSync(backing, initial);
  return { configFile: writeConfig(dir, devices, "loop-devices.json"), backing, initial };
}

/**
 * Shell lines defining `dump START COUNT`: prints "D <start> <byte> ..." lines with the EEPROM's
 * bytes from START on, 64 per transfer; a failed read prints "F dump <start> <error>".
 */
export const DUMP_FUNCTION = `
dump() {
  at=$1; end=$(($1 + $2))
  while [ $at -lt $end ]; do
    n=$((end - at)); [ $n -gt 64 ] && n=64
    if bytes=$(i2ctransfer -y 0 w2@${EEPROM} $((at >> 8)) $((at & 255)) r$n@${EEPROM} 2>&1); then
      echo "D $at $bytes"
    else
      echo "F dump $at $bytes"
    fi
    at=$((at + n))
  done
}
`;

/**
 * The loop: until the stop flag is set, write one byte (address seq % LOOP_SPAN, a value that differs
 * from one pass over the span to the next) and read it back. One console line per transfer:
 * "K" (flag read), "A seq addr value" (write acknowledged), "R seq" (read back right), "F ..." (a
 * transfer failed), "M seq got" (read back wrong). Ends with "RESULT loop writes=.. ok=.. failed=..
 * mismatched=.. acked=.."; $seq is then the number of writes tried.
 */
export const LOOP_SCRIPT = `
seq=0; ok=0; failed=0; mismatched=0; acked=0
echo "@@LOOP-RUNNING@@"
while :; do
  if [ $((seq % ${FLAG_EVERY})) -eq 0 ]; then
    if flag=$(i2cget -y 0 ${FLAG} 0x00 2>&1); then
      ok=$((ok + 1)); echo "K $seq $flag"
      [ "$flag" = "0x${STOP_VALUE}" ] && break
    else
      failed=$((failed + 1)); echo "F flag $seq $flag"
    fi
  fi
  addr=$((seq % ${LOOP_SPAN})); hi=$((addr >> 8)); lo=$((addr & 255))
  val=$(((seq * 7 + seq / ${LOOP_SPAN} + 1) & 255))
  if out=$(i2ctransfer -y 0 w3@${EEPROM} $hi $lo $val 2>&1); then
    ok=$((ok + 1)); acked=$((acked + 1)); echo "A $seq $addr $val"
  else
    failed=$((failed + 1)); echo "F write $seq $addr $val $out"
  fi
  want=$(printf '0x%02x' $val)
  if got=$(i2ctransfer -y 0 w2@${EEPROM} $hi $lo r1@${EEPROM} 2>&1); then
    ok=$((ok + 1))
    if [ "$got" = "$want" ]; then echo "R $seq"; else mismatched=$((mismatched + 1)); echo "M $seq $got"; fi
  else
    failed=$((failed + 1)); echo "F read $seq $got"
  fi
  seq=$((seq + 1))
done
echo "RESULT loop writes=$seq ok=$ok failed=$failed mismatched=$mismatched acked=$acked"
`;

/** The loop, then a read-back of every address it wrote. */
export const LOOP_AND_DUMP_SCRIPT = `${DUMP_FUNCTION}${LOOP_SCRIPT}
used=$seq; [ $used -gt ${LOOP_SPAN} ] && used=${LOOP_SPAN}
dump 0 $used
echo "RESULT dumped $used"
`;

/** Who listens on the vhost-user socket: the daemon ("server"), or QEMU (the daemon runs --client). */
export type SocketMode = "server" | "client";

export type RestartKind = "handover" | "crash";

/** The loop running: the daemon serving its devices, the guest, the control socket, the devices. */
export interface LoopRun<D extends RestartedDaemon = RestartedDaemon> {
  readonly daemon: D;
  readonly guest: Promise<GuestRun>;
  readonly control: string;
  readonly devices: LoopDevices;
}

export interface StartLoopOptions<D extends RestartedDaemon> {
  /** Where the config, the backing file and the sockets go. */
  readonly dir: string;
  readonly mode: SocketMode;
  readonly logLevel: string;
  /** Starts the daemon with `args` and resolves once it has logged `ready`. */
  readonly launch: (args: readonly string[], ready: string) => Promise<D>;
  /** Boots the guest (running the loop) with the device's QEMU arguments `qemuArgs`. */
  readonly boot: (qemuArgs: readonly string[]) => Promise<GuestRun>;
}

/**
 * Writes the devices, starts the daemon and the guest in the order `mode` needs (a listening daemon
 * before QEMU; a listening QEMU before the daemon connects) and waits for the control socket.
 */
export async function startLoop<D extends RestartedDaemon>(
  options: StartLoopOptions<D>,
): Promise<LoopRun<D>> {
  const devices = writeLoopConfig(options.dir);
  const prefix = socketPrefix(options.dir);
  const socket = `${prefix}0`;
  const control = join(options.dir, "control.sock");
  const args = ["-s", prefix, "--config", devices.configFile, "--control-socket", control];
  args.push("--log-level", options.logLevel);
  let daemon: D;
  let guest: Promise<GuestRun>;
  if (options.mode === "server") {
    daemon = await options.launch(args, `listening path=${socket}\n`);
    guest = options.boot(vhostUserI2cArgs(socket));
  } else {
    guest = options.boot(vhostUserI2cServerArgs(socket));
    daemon = await options.launch(["--client", ...args], "front-end connected");
  }
  const controlReady = `control socket listening path=${control}\n`;
  await waitUntil(() => daemon.log.includes(controlReady), "the control socket", 30_000);
  return { daemon, guest, control, devices };
}

/** A restart done under the loop. */
export interface DoneRestart extends RestartTiming {
  readonly kind: RestartKind;
}

/**
 * Does each restart of `kinds` once the guest has made `between` more successful transfers (and a
 * moment more, so the signal lands inside a transfer rather than always right after one), then
 * waits for `between` more. Throws when the guest makes no headway for `hangMs`, ends meanwhile, or
 * a restart fails; `onDone` has seen every restart done until then.
 */
export async function restartUnderLoad(
  run: LoopRun,
  log: TransferLog,
  kinds: readonly RestartKind[],
  options: {
    readonly between: number;
    readonly hangMs: number;
    readonly onDone?: (restart: DoneRestart) => void;
  },
): Promise<DoneRestart[]> {
  let ended = false;
  void run.guest.finally(() => {
    ended = true;
  });
  const done: DoneRestart[] = [];
  for (const kind of kinds) {
    await log.progress(options.between, options.hangMs);
    if (ended) throw new Error("the guest ended before every restart was done");
    await new Promise((resolve) => setTimeout(resolve, Math.random() * 100));
    const timing = kind === "handover" ? await run.daemon.handOver() : await run.daemon.crash();
    const restart = { kind, ...timing };
    done.push(restart);
    options.onDone?.(restart);
  }
  await log.progress(options.between, options.hangMs);
  return done;
}

/** Ends the loop: sets the stop flag through the control socket, retrying while it is not served. */
export async function stopLoop(controlSocket: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      await controlCommand(controlSocket, `write ${FLAG} 0 ${STOP_VALUE}`);
      return;
    } catch (error) {
      if (Date.now() > end) throw new Error(`cannot set the stop flag: ${String(error)}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/** One line of the loop's console, with the host's time of its arrival. */
interface TimedLine {
  readonly at: number;
  readonly text: string;
}

/** An interval of host time (performance.now()), e.g. from a signal until the successor served. */
export interface Interval {
  readonly start: number;
  readonly end: number;
}

/** An acknowledged (or failed) write, in the order the guest made them. */
interface LoopWrite {
  readonly seq: number;
  readonly addr: number;
  readonly value: number;
  readonly acked: boolean;
}

export interface WriteCheck {
  /** Writes acknowledged to the guest. */
  readonly acked: number;
  /** Addresses whose last acknowledged value is not there (and no failed write came after it). */
  readonly lost: number;
  readonly lostAt: readonly number[];
  /** Addresses compared (acknowledged writes and untouched bytes alike). */
  readonly compared: number;
  /** Other bytes than expected anywhere compared (lost writes included). */
  readonly differing: number;
}

/**
 * Reads the loop's console as it arrives: counts, writes, read-back dumps and arrival times. Feed it
 * through `onConsole`; `progress` lets the host wait for the guest to make headway.
 */
export class TransferLog {
  #partial = "";
  readonly #lines: TimedLine[] = [];
  readonly #okTimes: number[] = [];
  readonly #writes: LoopWrite[] = [];
  readonly #dumped = new Map<number, number>();
  readonly #failures: string[] = [];
  #mismatched = 0;
  #scriptEnded = (): void => {};
  /**
   * Resolves as the script's end marker arrives, while QEMU still runs: what the daemon logged by
   * then happened under the guest, not at QEMU's exit.
   */
  readonly scriptEnded = new Promise<void>((resolve) => {
    this.#scriptEnded = resolve;
  });
  readonly #now: () => number;

  /** `now` stamps each line as it arrives (performance.now() unless a test gives its clock). */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  readonly onConsole = (text: string): void => {
    const at = this.#now();
    const parts = (this.#partial + text).split("\n");
    this.#partial = parts.pop() ?? "";
    for (const line of parts) this.#take({ at, text: line });
  };

  #take(line: TimedLine): void {
    this.#lines.push(line);
    if (line.text.startsWith(GUEST_MARKERS.end)) this.#scriptEnded();
    const words = line.text.trim().split(/\s+/);
    const [kind] = words;
    const number = (index: number) => Number(words[index]);
    switch (kind) {
      case "K":
      case "R":
        this.#okTimes.push(line.at);
        break;
      case "A":
        this.#okTimes.push(line.at);
        this.#writes.push({ seq: number(1), addr: number(2), value: number(3), acked: true });
        break;
      case "M":
        this.#okTimes.push(line.at);
        this.#mismatched++;
        this.#failures.push(line.text);
        break;
      case "F":
        this.#failures.push(line.text);
        if (words[1] === "write") {
          this.#writes.push({ seq: number(2), addr: number(3), value: number(4), acked: false });
        }
        break;
      case "D": {
        const start = number(1);
        words.slice(2).forEach((byte, index) => {
          this.#dumped.set(start + index, Number.parseInt(byte, 16));
        });
        break;
      }
    }
  }

  /** Successful transfers seen so far (the flag reads, acknowledged writes and reads back). */
  get ok(): number {
    return this.#okTimes.length;
  }

  /** The lines of failed transfers and wrong read-backs. */
  get failures(): readonly string[] {
    return this.#failures;
  }

  get failed(): number {
    return this.#failures.length - this.#mismatched;
  }

  get mismatched(): number {
    return this.#mismatched;
  }

  get acked(): number {
    return this.#writes.filter((write) => write.acked).length;
  }

  /** Resolves once `count` more transfers have succeeded; rejects after `ms` without them. */
  async progress(count: number, ms = 60_000): Promise<void> {
    const target = this.ok + count;
    await waitUntil(() => this.ok >= target, `${count} more successful guest transfers`, ms);
  }

  /** The host time of the last successful transfer seen (or -Infinity). */
  get lastOkAt(): number {
    return this.#okTimes.at(-1) ?? Number.NEGATIVE_INFINITY;
  }

  /**
   * The longest time between two consecutive successful transfers that overlaps `interval`: what the
   * guest saw of it (it includes one transfer's own time).
   */
  stall(interval: Interval): number {
    let longest = 0;
    for (let i = 1; i < this.#okTimes.length; i++) {
      const before = this.#okTimes[i - 1] as number;
      const after = this.#okTimes[i] as number;
      if (after >= interval.start && before <= interval.end) {
        longest = Math.max(longest, after - before);
      }
    }
    return longest;
  }

  /** The median time between consecutive successful transfers outside `intervals`. */
  typicalGap(intervals: readonly Interval[]): number {
    const gaps: number[] = [];
    for (let i = 1; i < this.#okTimes.length; i++) {
      const before = this.#okTimes[i - 1] as number;
      const after = this.#okTimes[i] as number;
      if (!intervals.some((interval) => after >= interval.start && before <= interval.end)) {
        gaps.push(after - before);
      }
    }
    gaps.sort((a, b) => a - b);
    return gaps[Math.floor(gaps.length / 2)] ?? 0;
  }

  /** The bytes the guest's `dump` printed, by address. */
  get dumped(): ReadonlyMap<number, number> {
    return this.#dumped;
  }

  /**
   * Compares `actual` (address → byte, e.g. the guest's dump or the backing file) with `initial`
   * overwritten by every acknowledged write in order. An address whose last write failed may hold
   * either value and is left out.
   */
  checkWrites(initial: Uint8Array, actual: ReadonlyMap<number, number> | Uint8Array): WriteCheck {
    const expected = new Map<number, number>();
    const lastAcked = new Map<number, number>();
    const uncertain = new Set<number>();
    for (const write of this.#writes) {
      if (write.acked) {
        expected.set(write.addr, write.value);
        lastAcked.set(write.addr, write.value);
        uncertain.delete(write.addr);
      } else {
        uncertain.add(write.addr);
      }
    }
    const read = (addr: number) => (actual instanceof Uint8Array ? actual[addr] : actual.get(addr));
    const addresses =
      actual instanceof Uint8Array ? [...actual.keys()] : [...actual.keys()].sort((a, b) => a - b);
    const lostAt: number[] = [];
    let compared = 0;
    let differing = 0;
    for (const addr of addresses) {
      if (uncertain.has(addr)) continue;
      compared++;
      const want = expected.get(addr) ?? initial[addr];
      if (read(addr) === want) continue;
      differing++;
      if (lastAcked.has(addr)) lostAt.push(addr);
    }
    // An acknowledged write the dump never reached is not checked: say so by what was compared.
    return { acked: this.acked, lost: lostAt.length, lostAt, compared, differing };
  }

  /** The console lines seen so far (for a failure report). */
  get text(): string {
    return this.#lines.map((line) => line.text).join("\n");
  }
}
