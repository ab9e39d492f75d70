/**
 * `--scenario FILE`: a timeline of property changes and faults the daemon plays, so a CI job
 * reproduces a thermal event or a flaky sensor exactly. Owns the file's schema and its error
 * messages, the check of every step against the chips at start-up, and the player. Each step is a
 * control-socket command (`set`, `fault`) run through the same parser and executor, so a step means
 * what the command means. Must not: read the clock other than through timers, or reach a chip but
 * through ChipAccess.
 *
 * ```
 * { "steps": [
 *     { "at": 2, "device": "0x48", "set": { "temperature": 85 } },
 *     { "at": 3, "device": "0x48", "fault": "nack", "count": 3 },
 *     { "at": 5.5, "device": "1:0x48", "fault": "clear" } ] }
 * ```
 * `at` is in seconds (fractions allowed) from the first front-end connection to any socket: the
 * VMM's start, so neither the daemon's start-up nor the wait for the VMM shifts the timeline.
 * Steps run in `at` order (the file's order for equal times), each after the one before finished.
 * @module
 */

import { ConfigError, describeValue, reasonOf } from "../config/errors.js";
import { readConfigInput } from "../config/trusted-input.js";
import { FAULT_KINDS } from "../i2c/faults.js";
import type { Logger } from "../log.js";
import { type ChipAccess, type ChipDirectory, checkWritable, describedProperty } from "./chips.js";
import { type Command, ControlError, formatDeviceRef, parseWords } from "./protocol.js";
import { executeCommand, lookup } from "./server.js";

/** One step: the command it runs, when. */
export interface ScenarioStep {
  /** Milliseconds from the start of the timeline. */
  readonly atMs: number;
  readonly command: Extract<Command, { cmd: "set" | "fault" }>;
  /** Where the step is in its file, for messages: "steps[2]". */
  readonly where: string;
}

/** Longest timeline: a day (a longer `at` is more likely a unit mix-up than a plan). */
const MAX_AT_SECONDS = 86_400;

const STEP_KEYS = ["at", "device", "set", "fault"];

/** Reads and checks a scenario file's syntax. Throws ConfigError naming the file and the step. */
export function loadScenario(path: string): ScenarioStep[] {
  const text = readConfigInput(path, { where: "", what: `scenario file ${path}` }).toString("utf8");
  return parseScenario(text, path);
}

/** Checks a scenario's text (see the module's schema). Throws ConfigError. */
export function parseScenario(text: string, path: string): ScenarioStep[] {
  const fail = (where: string, message: string): never => {
    throw new ConfigError("CONFIG_INVALID", `${path}: ${where}: ${message}`);
  };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ConfigError("CONFIG_BAD_JSON", `${path}: not valid JSON: ${reasonOf(error)}`);
  }
  const top = isObject(json) ? json : fail("(top level)", `expected {"steps": [...]}`);
  for (const key of Object.keys(top))
    if (key !== "steps") fail(key, `unknown key (expected steps)`);
  if (!Array.isArray(top.steps))
    fail("steps", `expected an array, found ${describeValue(top.steps)}`);
  const steps = (top.steps as unknown[]).flatMap((entry, i) => {
    const where = `steps[${i}]`;
    const step = isObject(entry)
      ? entry
      : fail(where, `expected a step object, found ${describeValue(entry)}`);
    const { at, device } = step;
    if (typeof at !== "number" || !(at >= 0 && at <= MAX_AT_SECONDS)) {
      fail(`${where}.at`, `expected seconds 0..${MAX_AT_SECONDS}, found ${describeValue(at)}`);
    }
    if (typeof device !== "string" && typeof device !== "number") {
      fail(
        `${where}.device`,
        `expected an address such as "0x48" or "1:0x48", found ${describeValue(device)}`,
      );
    }
    const hasSet = step.set !== undefined;
    if (hasSet === (step.fault !== undefined)) {
      fail(where, `expected exactly one of "set" or "fault", found ${hasSet ? "both" : "neither"}`);
    }
    const address = String(device);
    const commands = hasSet
      ? setWords(step, address, where, fail)
      : faultWords(step, address, where, fail);
    const atMs = Math.round((at as number) * 1000);
    return commands.map((words) => {
      let command: Command;
      try {
        command = parseWords(words);
      } catch (error) {
        if (error instanceof ControlError) return fail(where, error.message);
        throw error;
      }
      if (command.cmd !== "set" && command.cmd !== "fault")
        throw new Error(`a step became ${command.cmd}`);
      return { atMs, command, where };
    });
  });
  // Stable: steps at the same time keep the file's order.
  return steps.sort((a, b) => a.atMs - b.atMs);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

type Fail = (where: string, message: string) => never;

/** `set` words per property: `{"temperature": 85, "tos": 80}` → two commands. */
function setWords(
  step: Record<string, unknown>,
  device: string,
  where: string,
  fail: Fail,
): string[][] {
  for (const key of Object.keys(step)) {
    if (!["at", "device", "set"].includes(key))
      fail(`${where}.${key}`, `unknown key in a "set" step (expected at, device, set)`);
  }
  const values = isObject(step.set)
    ? step.set
    : fail(
        `${where}.set`,
        `expected {"<property>": <value>, ...}, found ${describeValue(step.set)}`,
      );
  const entries = Object.entries(values);
  if (entries.length === 0) fail(`${where}.set`, "expected at least one property");
  return entries.map(([name, value]) => {
    if (typeof value !== "number" && typeof value !== "string" && typeof value !== "boolean") {
      return fail(
        `${where}.set.${name}`,
        `expected a number, string or boolean, found ${describeValue(value)}`,
      );
    }
    return ["set", device, name, String(value)];
  });
}

/** `fault` words: the kind, then the step's other keys as key=value (`clear` alone). */
function faultWords(
  step: Record<string, unknown>,
  device: string,
  where: string,
  fail: Fail,
): string[][] {
  const kind = step.fault;
  if (kind === "clear") {
    for (const key of Object.keys(step)) {
      if (!["at", "device", "fault"].includes(key))
        fail(`${where}.${key}`, `unknown key in a "clear" step`);
    }
    return [["fault", device, "clear"]];
  }
  if (typeof kind !== "string") {
    fail(
      `${where}.fault`,
      `expected one of ${[...FAULT_KINDS, "clear"].join(", ")}, found ${describeValue(kind)}`,
    );
  }
  const fields = Object.entries(step)
    .filter(([key]) => !STEP_KEYS.includes(key))
    .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`);
  return [["fault", device, kind as string, ...fields]];
}

/**
 * Checks every step against the chips at start-up: the device exists (unambiguously) and a `set`
 * names a property it can set. Values are the model's to check, when the step plays. Throws
 * ConfigError naming the file and the step.
 */
export function checkScenario(
  steps: readonly ScenarioStep[],
  directory: ChipDirectory,
  path: string,
): void {
  for (const { command, where } of steps) {
    try {
      const chip = lookup(directory, command);
      if (command.cmd === "set") {
        checkWritable(describedProperty(chip, formatDeviceRef(command), command.property));
      }
    } catch (error) {
      if (!(error instanceof ControlError)) throw error;
      throw new ConfigError("CONFIG_INVALID", `${path}: ${where}: ${error.message}`, {
        cause: error,
      });
    }
  }
}

/** A timeline being played. */
export interface ScenarioPlayer {
  /** Starts the timeline now (later calls do nothing). */
  start(): void;
  /** Resolves when every step has run, or the player was stopped. */
  readonly done: Promise<void>;
  /** Stops it: no further step runs. */
  stop(): void;
}

/**
 * Plays `steps` through `chips`, logging each (a step the daemon refuses when it plays, say a value
 * the model refuses, is logged as an error and the timeline goes on). `stop` clears its timer.
 */
export function scenarioPlayer(
  steps: readonly ScenarioStep[],
  chips: ChipAccess,
  logger: Logger,
  path: string,
): ScenarioPlayer {
  let started = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let finish = () => {};
  const done = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const run = async (startedAt: number) => {
    for (const [i, { atMs, command, where }] of steps.entries()) {
      const wait = startedAt + atMs - performance.now();
      if (wait > 0) {
        await new Promise<void>((resolve) => {
          timer = setTimeout(resolve, wait);
        });
      }
      if (stopped) return;
      const step = { step: `${i + 1}/${steps.length}`, at: `${atMs / 1000}s`, where };
      try {
        const result = await executeCommand(chips, command, logger);
        logger.info(`scenario ${command.cmd} ${formatDeviceRef(command)}: ${result.text}`, step);
      } catch (error) {
        logger.error(`scenario step failed: ${reasonOf(error)}`, step);
      }
    }
    logger.info("scenario done", { file: path, steps: steps.length });
  };
  return {
    start() {
      if (started || stopped) return;
      started = true;
      logger.info("scenario started", { file: path, steps: steps.length });
      run(performance.now()).then(finish, (error: unknown) => {
        logger.error("scenario stopped", { error: reasonOf(error) });
        finish();
      });
    },
    done,
    stop() {
      stopped = true;
      clearTimeout(timer);
      finish();
    },
  };
}
