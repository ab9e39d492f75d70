/**
 * A command run to its end with its output collected, and a deadline so a hang fails the test.
 * @module
 */

import { spawn } from "node:child_process";
import { scaled } from "./time.js";

/** What a command printed and how it ended. */
export interface Ran {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Written to its stdin, which is then closed (default: no stdin). */
  readonly input?: string;
  /** Killed (SIGKILL) and the promise rejected after this long (scaled; default 10 s). */
  readonly deadlineMs?: number;
}

export function runToEnd(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<Ran> {
  const { env, cwd, input, deadlineMs = 10_000 } = options;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env,
      cwd,
      stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout?.setEncoding("utf8").on("data", (text: string) => {
      stdout += text;
    });
    child.stderr?.setEncoding("utf8").on("data", (text: string) => {
      stderr += text;
    });
    const limit = scaled(deadlineMs);
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`still running after ${limit} ms: ${command} ${args.join(" ")}\n${stderr}`));
    }, limit);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}
