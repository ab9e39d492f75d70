// The unprivileged local user of the security tests: uid/gid 1234 with no groups, reached with
// setpriv(1) from the root test run. Tests that need it skip only where they cannot become it
// (not root, or no setpriv), and say why.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

export const ATTACKER_UID = 1234;
export const ATTACKER_GID = 1234;
const SETPRIV = "/usr/bin/setpriv";

/** Why the tests cannot act as another user here, or null when they can. */
export function unprivilegedUnavailableReason(): string | null {
  if ((process.geteuid?.() ?? -1) !== 0) return "the tests do not run as root";
  if (!existsSync(SETPRIV)) return `${SETPRIV} is missing`;
  return null;
}

/** argv prefix that runs a command as the unprivileged user. */
export function asAttacker(groups: readonly number[] = []): string[] {
  return [
    SETPRIV,
    `--reuid=${ATTACKER_UID}`,
    `--regid=${ATTACKER_GID}`,
    groups.length === 0 ? "--clear-groups" : `--groups=${groups.join(",")}`,
    "--",
  ];
}

/** Runs a shell command as the unprivileged user; throws with its output when it fails. */
export function runAsAttacker(script: string, groups: readonly number[] = []): string {
  const [command, ...args] = asAttacker(groups);
  const result = spawnSync(command as string, [...args, "/bin/sh", "-c", script], {
    encoding: "utf8",
  });
  if (result.status !== 0) {
    throw new Error(`as uid ${ATTACKER_UID}: ${script}: exit ${result.status}: ${result.stderr}`);
  }
  return result.stdout;
}

/** What a process run as the unprivileged user printed, and how it ended. */
export interface AttackerResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A process of the unprivileged user: its output so far, and how it ends. */
export interface AttackerProcess {
  readonly child: ChildProcess;
  readonly done: Promise<AttackerResult>;
  stdout(): string;
}

/**
 * Starts `argv` as the unprivileged user without waiting for it (the daemon under test keeps being
 * served meanwhile); `done` resolves when it exits. What it runs must be readable by that user.
 */
export function spawnAsAttacker(
  argv: readonly string[],
  groups: readonly number[] = [],
): AttackerProcess {
  const [command, ...prefix] = asAttacker(groups);
  const child = spawn(command as string, [...prefix, ...argv], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const done = new Promise<AttackerResult>((resolve) => {
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
  return { child, done, stdout: () => stdout };
}

/** Whether the unprivileged user can do `test <flag> path` (-r, -x): reach and use it. */
function attackerCan(flag: "-r" | "-x", path: string): boolean {
  const [command, ...args] = asAttacker();
  return spawnSync(command as string, [...args, "test", flag, path]).status === 0;
}

let node: string | undefined;

/**
 * A Node.js binary the unprivileged user can run: this process's own when every directory above it
 * lets that user through, else the first `node` on PATH that does (CI installs a second Node in a
 * private temporary directory). Which Node the attacker's scripts run on does not matter.
 */
export function attackerNode(): string {
  if (node !== undefined) return node;
  const candidates = [
    process.execPath,
    ...(process.env.PATH ?? "").split(delimiter).map((dir) => join(dir, "node")),
  ];
  node = candidates.find((path) => path.startsWith("/") && attackerCan("-x", path));
  if (node === undefined) {
    throw new Error(
      `no Node.js binary uid ${ATTACKER_UID} can run: tried ${candidates.join(", ")}`,
    );
  }
  return node;
}

/** The package root: dist/test/helpers/ is three levels below it. */
const PACKAGE_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
let reachableRoot: string | undefined;

/**
 * `path` (a file of this package: dist/..., build/...) where the unprivileged user can read it. The
 * checkout may sit in a directory only root can enter (a CI clone in a 0700 temporary directory);
 * then the package's runtime (package.json, dist/, the built addon) is copied once into a
 * world-readable temporary directory, removed when the test process exits.
 */
export function attackerPath(path: string): string {
  if (reachableRoot === undefined) {
    if (attackerCan("-r", join(PACKAGE_ROOT, "package.json"))) {
      reachableRoot = PACKAGE_ROOT;
    } else {
      const copy = mkdtempSync(join(tmpdir(), "vdi2c-attacker-view-"));
      chmodSync(copy, 0o755);
      for (const part of ["package.json", "dist", "build/Release"]) {
        cpSync(join(PACKAGE_ROOT, part), join(copy, part), { recursive: true });
      }
      chmodSync(join(copy, "build"), 0o755);
      process.on("exit", () => rmSync(copy, { recursive: true, force: true }));
      reachableRoot = copy;
    }
  }
  return join(reachableRoot, relative(PACKAGE_ROOT, path));
}

/**
 * `node <script> <args>` as the unprivileged user, as spawnAsAttacker; `script` is a file of this
 * package, run from where that user can read it.
 */
export function spawnNodeAsAttacker(
  [script, ...args]: readonly string[],
  groups: readonly number[] = [],
): AttackerProcess {
  return spawnAsAttacker([attackerNode(), attackerPath(script as string), ...args], groups);
}

/** The JSON lines a test-kit script printed, parsed. */
export function jsonLines(text: string): Record<string, unknown>[] {
  return text
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** A directory anyone can write to without the sticky bit: the attacker's playground. */
export function makeWorldWritableDir(path: string): string {
  mkdirSync(path, { recursive: true });
  chmodSync(path, 0o777);
  return path;
}
