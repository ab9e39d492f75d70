/**
 * What a test proving a chip model against its upstream Linux driver needs, on top of the harness:
 * guest shell functions that bind a driver with `new_device` and print what it shows in sysfs
 * (hwmon, iio, gpio, rtc) as RESULT lines, and a step protocol by which the guest script waits
 * while the host changes the chips' physical inputs (or faults) over the control socket. The guest
 * learns that the host is done from a mailbox: a `register-file` chip whose register 0 the host
 * sets to the step's number with the control socket's `write`. `bootWithChips` puts it together:
 * the config file of a list of chips (built-in models or model modules), the daemon, and the guest
 * running the functions and a test's script. Must not reach into the daemon's modules: the daemon
 * is a process, its config file and its sockets.
 * @module
 */

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { GuestRun } from "../helpers/guest.js";
import { ConsoleWatch, consoleOrExit, controlCommand, type GuestBench, result } from "./harness.js";

/** The mailbox chip's address; tests keep it free of other chips. */
export const MAILBOX_ADDRESS = 0x30;

/** The mailbox's entry in a `--config` file's `devices`. */
export const MAILBOX_DEVICE = {
  bus: "sim",
  address: `0x${MAILBOX_ADDRESS.toString(16)}`,
  model: "register-file",
} as const;

/**
 * Guest shell functions (busybox sh), for the start of a script; they never stop the script, so
 * every check is the host's. Addresses are written `0x4b` (lower case, two digits).
 * - `bind DRIVER ADDR`: new_device, then `RESULT driver.ADDR <bound driver>` (waits up to 2 s);
 * - `value FILE`: the file's contents, or `ERR` when reading fails (a driver error);
 * - `hwmon_dump PREFIX ADDR`: `RESULT PREFIX.<name>_input <value>` for every hwmon input of the
 *   chip, and `RESULT PREFIX.<label>.input <value>` for every labelled one;
 * - `iio_dump PREFIX ADDR`: `RESULT PREFIX.<attribute> <value>` for the chip's iio `in_*_input`,
 *   `in_*_raw`, `in_*_scale` and `out_*_raw` attributes; `iio_dir ADDR` is its iio device;
 * - `gpio_pins ADDR COUNT`: the levels of the chip's first COUNT lines as a decimal mask (bit n =
 *   line n, through /sys/class/gpio), or ERR; `gpio_out ADDR LINE high|low` drives a line;
 * - `rtc_dev ADDR`: the chip's /dev/rtcN;
 * - `step N`: prints `@@STEP N@@` and waits (up to 30 s) until the host has written N to the
 *   mailbox's register 0, then `RESULT step.N ok` (or `timeout`).
 */
export const GUEST_DRIVER_FUNCTIONS = `
# Kernel messages at error level would interleave with RESULT lines on the console.
echo 1 > /proc/sys/kernel/printk
NEW_DEVICE=/sys/bus/i2c/devices/i2c-0/new_device
dev() { echo /sys/bus/i2c/devices/0-00\${1#0x}; }
bind() {
  echo "$1 $2" > $NEW_DEVICE
  d=$(dev $2); n=0
  while [ ! -e $d/driver ] && [ $n -lt 20 ]; do sleep 0.1; n=$((n + 1)); done
  drv=$(readlink $d/driver 2>/dev/null)
  echo "RESULT driver.$2 \${drv##*/}"
}
# One read(2), so one driver call: busybox cat retries a failed sendfile with read.
value() { read -r v < "$1" 2>/dev/null && echo "$v" || echo ERR; }
hwmon_dump() {
  h=$(ls -d $(dev $2)/hwmon/hwmon* 2>/dev/null | head -n 1)
  for f in $h/*_input; do [ -e "$f" ] && echo "RESULT $1.$(basename $f) $(value $f)"; done
  for f in $h/*_label; do [ -e "$f" ] && echo "RESULT $1.$(cat $f).input $(value \${f%_label}_input)"; done
}
iio_dir() { ls -d $(dev $1)/iio:device* 2>/dev/null | head -n 1; }
iio_dump() {
  d=$(iio_dir $2)
  for f in $d/in_*_input $d/in_*_raw $d/in_*_scale $d/out_*_raw; do
    [ -e "$f" ] && echo "RESULT $1.$(basename $f) $(value $f)"
  done
}
gpio_base() {
  chip=$(readlink -f $(dev $1))
  for c in /sys/class/gpio/gpiochip*; do
    case "$(readlink -f $c/device)" in "$chip"*) cat $c/base; return ;; esac
  done
}
gpio_export() { [ -e /sys/class/gpio/gpio$1 ] || echo $1 > /sys/class/gpio/export; }
gpio_pins() {
  base=$(gpio_base $1); mask=0; i=0
  [ -n "$base" ] || { echo ERR; return; }
  while [ $i -lt $2 ]; do
    n=$((base + i)); gpio_export $n
    read -r v < /sys/class/gpio/gpio$n/value 2>/dev/null || { echo ERR; return; }
    mask=$((mask | (v << i))); i=$((i + 1))
  done
  echo $mask
}
gpio_out() { n=$(($(gpio_base $1) + $2)); gpio_export $n; echo $3 > /sys/class/gpio/gpio$n/direction; }
rtc_dev() { echo /dev/$(ls $(dev $1)/rtc 2>/dev/null | head -n 1); }
step() {
  echo "@@STEP $1@@"
  want=$(printf 0x%02x $1); n=0
  while [ "$(i2cget -y 0 ${MAILBOX_DEVICE.address} 0x00 2>/dev/null)" != "$want" ]; do
    n=$((n + 1)); [ $n -ge 300 ] && { echo "RESULT step.$1 timeout"; return; }
    sleep 0.1
  done
  echo "RESULT step.$1 ok"
}
`;

/**
 * The host's side of `step`: each `at(n, action)` waits for the guest's `@@STEP n@@`, runs `action`
 * (control-socket commands) and then releases the guest through the mailbox.
 */
export class GuestSteps {
  readonly watch = new ConsoleWatch();
  #guest: Promise<GuestRun> | null = null;

  readonly controlSocket: string;

  constructor(controlSocket: string) {
    this.controlSocket = controlSocket;
  }

  /** The guest run the steps belong to (boot it with `onConsole: steps.watch.onConsole`). */
  attach(guest: Promise<GuestRun>): Promise<GuestRun> {
    this.#guest = guest;
    return guest;
  }

  async at(step: number, action: () => Promise<void>): Promise<void> {
    assert.ok(this.#guest, "attach the guest first");
    await consoleOrExit(this.watch, `@@STEP ${step}@@`, this.#guest);
    await action();
    const byte = step.toString(16).padStart(2, "0");
    await controlCommand(this.controlSocket, `write ${MAILBOX_DEVICE.address} 0 ${byte}`);
  }

  /** `get <addr> <property>`'s value. */
  async get(address: string, property: string): Promise<string> {
    const reply = await controlCommand(this.controlSocket, `get ${address} ${property}`);
    return reply.replace(/^ok ?/, "");
  }

  /** `read <addr> <offset> <length>`: the device memory's bytes as hex. */
  async read(address: string, offset: number, length: number): Promise<string> {
    const reply = await controlCommand(this.controlSocket, `read ${address} ${offset} ${length}`);
    return reply.replace(/^ok ?/, "");
  }

  async set(address: string, property: string, value: string | number): Promise<void> {
    await controlCommand(this.controlSocket, `set ${address} ${property} ${value}`);
  }

  /** `fault <addr> <kind> [k=v...]` or `fault <addr> clear`, e.g. "0x48 nack count=2". */
  async fault(command: string): Promise<void> {
    await controlCommand(this.controlSocket, `fault ${command}`);
  }
}

/** Asserts that the RESULT `key` is a number within `tolerance` of `expected`. */
export function assertNear(run: GuestRun, key: string, expected: number, tolerance: number): void {
  const text = result(run, key);
  const value = Number(text);
  assert.ok(
    Number.isFinite(value) && Math.abs(value - expected) <= tolerance,
    `${key}: the guest read ${JSON.stringify(text)}, expected ${expected} ± ${tolerance}`,
  );
}

/** Asserts that every `driver.<addr>` RESULT names the driver the chip at that address should have. */
export function assertBound(run: GuestRun, drivers: Readonly<Record<string, string>>): void {
  for (const [address, driver] of Object.entries(drivers)) {
    assert.equal(result(run, `driver.${address}`), driver, `${driver} did not bind to ${address}`);
  }
}

/** Asserts that the guest saw every step released (none timed out). */
export function assertStepsDone(run: GuestRun, steps: number): void {
  for (let step = 1; step <= steps; step++) assert.equal(result(run, `step.${step}`), "ok");
}

/**
 * One chip of a guest test: its config entry, the Linux driver that must bind to it and what the
 * host sets at step 1. `model` is also the name `new_device` takes (the driver's I2C device id);
 * with `module`, the entry loads that model module (a path, e.g. into dist/) instead of a built-in.
 */
export interface Chip {
  readonly model: string;
  readonly module?: string;
  readonly address: string;
  readonly driver: string;
  readonly options?: Readonly<Record<string, unknown>>;
  readonly change?: Readonly<Record<string, string | number>>;
}

/** Writes the `--config` file of `chips` (plus the mailbox) and returns the daemon's arguments. */
export function chipConfig(
  bench: GuestBench,
  chips: readonly Chip[],
  extra: readonly string[] = [],
) {
  const configFile = join(bench.dir, "devices.json");
  const devices = chips.map(({ model, module, address, options }) => ({
    bus: "sim",
    address,
    ...(module === undefined ? { model } : { module }),
    ...(options && { options }),
  }));
  writeFileSync(configFile, JSON.stringify({ devices: [MAILBOX_DEVICE, ...devices] }));
  const control = join(bench.dir, "control.sock");
  return { args: ["--config", configFile, "--control-socket", control, ...extra], control };
}

/** Guest lines binding each chip's driver (`bind`). */
export const bindLines = (chips: readonly Chip[]): string[] =>
  chips.map(({ model, address }) => `bind ${model} ${address}`);

/** Sets every chip's `change` properties over the control socket. */
export async function applyChanges(steps: GuestSteps, chips: readonly Chip[]): Promise<void> {
  for (const chip of chips) {
    for (const [property, value] of Object.entries(chip.change ?? {})) {
      await steps.set(chip.address, property, value);
    }
  }
}

/**
 * Starts the daemon for `chips` (`extraArgs` added, e.g. `--trace`) and boots the guest running
 * GUEST_DRIVER_FUNCTIONS then `script`, while `hostSteps` drives the steps (`steps.at(n, ...)`).
 * Returns the finished guest run, the daemon (still running) and the steps' control socket; null
 * when the daemon does not accept the config yet and `t` was skipped.
 */
export async function bootWithChips(
  bench: GuestBench,
  t: Parameters<GuestBench["skippedUnlessAccepted"]>[0],
  chips: readonly Chip[],
  script: readonly string[],
  hostSteps: (steps: GuestSteps) => Promise<void>,
  extraArgs: readonly string[] = [],
) {
  const { args, control } = chipConfig(bench, chips, extraArgs);
  if (await bench.skippedUnlessAccepted(t, args)) return null;
  const daemon = await bench.startDaemon(args);
  await daemon.waitForLog(`control socket listening path=${control}\n`);
  const steps = new GuestSteps(control);
  const guest = steps.attach(
    bench.boot(
      [
        GUEST_DRIVER_FUNCTIONS,
        ...script,
        // The kernel's side of any failure above, for the evidence.
        "dmesg | tail -n 40 | sed 's/^/dmesg: /'",
        'echo "RESULT done 1"',
      ].join("\n"),
      {
        onConsole: steps.watch.onConsole,
      },
    ),
  );
  await hostSteps(steps);
  const run = await guest;
  assert.equal(result(run, "done"), "1");
  return { run, daemon, steps };
}
