/**
 * `vhost-device-i2c demo` (and `npm run demo`): the whole path end to end without hardware or a VM, as
 * a user would see it. Starts the real daemon (dist/src/cli/main.js, same Node binary) on an emulated 24c02 EEPROM at 0x50 and an LM75
 * at 0x48 in a temp dir, then runs real `vi2c` commands (dist/src/tools/vi2c.js) against its socket,
 * printing each command line and its output, and stops the daemon with SIGTERM. Exit status 0 only when
 * every command exited 0 and printed what it should. Must not format I2C output itself (vi2c prints)
 * nor reach into the daemon's modules: both run as child processes.
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const MAIN_JS = fileURLToPath(new URL("./main.js", import.meta.url));
const VI2C_JS = fileURLToPath(new URL("../tools/vi2c.js", import.meta.url));

/** Relative to the demo directory (the children's cwd), so the printed commands stay short. */
const SOCKET_PREFIX = "vi2c.sock";
const SOCKET = `${SOCKET_PREFIX}0`;
const DAEMON_ARGS = ["-s", SOCKET_PREFIX, "-l", "sim:0x50=24c02:0x48=lm75"];
const STOP_TIMEOUT_MS = 10_000;

interface Step {
  /** Shown as a shell comment above the command. */
  readonly about: string;
  readonly args: readonly string[];
  /** What the output must contain for the step to count as done. */
  readonly expect?: RegExp;
}

const STEPS: readonly Step[] = [
  {
    about: "what the backend offers (virtio and vhost-user features)",
    args: ["info", SOCKET],
    expect: /VIRTIO_I2C_F_ZERO_LENGTH_REQUEST/,
  },
  {
    about: "i2cdetect: the LM75 at 0x48 and the EEPROM at 0x50, nothing else is reachable",
    args: ["detect", "-y", SOCKET],
    expect: /^40:(?: --){8} 48 (?:-- ){7}\n50: 50 (?:-- ){15}$/m,
  },
  {
    about: "i2cset: write 0x42 at EEPROM offset 0x00",
    args: ["set", "-y", SOCKET, "0x50", "0x00", "0x42"],
  },
  {
    about: "i2cget: read it back",
    args: ["get", "-y", SOCKET, "0x50", "0x00"],
    expect: /^0x42$/m,
  },
  {
    about: "i2ctransfer: set the offset and read 8 bytes in one transfer (repeated START)",
    args: ["transfer", "-y", SOCKET, "w1@0x50", "0x00", "r8@0x50"],
    expect: /^0x42(?: 0x[0-9a-f]{2}){7}$/m,
  },
  {
    about: "i2cdump: the whole EEPROM",
    args: ["dump", "-y", SOCKET, "0x50"],
    expect: /^00: 42 /m,
  },
];

function say(line = ""): void {
  process.stdout.write(`${line}\n`);
}

class DemoFailure extends Error {}

interface Daemon {
  readonly child: ChildProcess;
  /** Log lines after start-up, shown only when something fails. */
  readonly laterLog: string[];
}

/** Starts the daemon in `dir`, echoing its log until it says it serves; rejects if it exits first. */
function startDaemon(dir: string): Promise<Daemon> {
  const child = spawn(process.execPath, [MAIN_JS, ...DAEMON_ARGS], {
    cwd: dir,
    stdio: ["ignore", "inherit", "pipe"],
  });
  const laterLog: string[] = [];
  let ready = false;
  let pending = "";
  return new Promise((resolve, reject) => {
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        if (ready) {
          laterLog.push(line);
          continue;
        }
        say(`  daemon | ${line}`);
        // Logged once every socket listens.
        if (/\bserving devices=/.test(line)) {
          ready = true;
          resolve({ child, laterLog });
        }
      }
    });
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (!ready) reject(new DemoFailure(`the daemon exited (code ${code}, signal ${signal})`));
    });
  });
}

function stopDaemon(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve(child.exitCode);
      return;
    }
    const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    child.kill("SIGTERM");
  });
}

interface Vi2cRun {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `vi2c args` in `dir` to completion, collecting its output. */
function runVi2c(dir: string, args: readonly string[]): Promise<Vi2cRun> {
  const child = spawn(process.execPath, [VI2C_JS, ...args], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

async function runStep(dir: string, step: Step): Promise<void> {
  say(`# ${step.about}`);
  say(`$ vi2c ${step.args.join(" ")}`);
  const run = await runVi2c(dir, step.args);
  process.stderr.write(run.stderr);
  process.stdout.write(run.stdout);
  say();
  if (run.status !== 0) throw new DemoFailure(`vi2c ${step.args[0]} exited with ${run.status}`);
  if (step.expect !== undefined && !step.expect.test(run.stdout)) {
    throw new DemoFailure(`vi2c ${step.args[0]} did not print ${step.expect}`);
  }
}

async function demo(dir: string): Promise<void> {
  say(
    "== vhost-device-i2c demo: an emulated bus, driven with vi2c (i2c-tools for a backend socket) ==",
  );
  say();
  say(`$ cd ${dir}`);
  say(`$ vhost-device-i2c ${DAEMON_ARGS.join(" ")} &`);
  const daemon = await startDaemon(dir);
  say();
  let daemonStatus: number | null = null;
  try {
    for (const step of STEPS) await runStep(dir, step);
  } catch (err) {
    process.stderr.write(daemon.laterLog.map((line) => `  daemon | ${line}\n`).join(""));
    throw err;
  } finally {
    say("$ kill %1    # SIGTERM: the daemon finishes and exits");
    daemonStatus = await stopDaemon(daemon.child);
    say(`The daemon exited with status ${daemonStatus}.`);
  }
  if (daemonStatus !== 0) throw new DemoFailure(`the daemon exited with status ${daemonStatus}`);
  say();
  say("Demo finished: every step worked.");
}

/**
 * Runs the demo in a temp dir, removed afterwards. Only files the package ships are used (the daemon
 * and vi2c beside this module), so it runs the same from a checkout and from an installed package.
 * Resolves to the exit status: 0 when every step worked, 1 otherwise (the reason is on stderr).
 */
export async function runDemo(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "vhost-device-i2c-demo-"));
  try {
    await demo(dir);
    return 0;
  } catch (err) {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
