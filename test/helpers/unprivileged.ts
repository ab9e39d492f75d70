// The unprivileged local user of the security tests: uid/gid 1234 with no groups, reached with
// setpriv(1) from the root test run. Tests that need it skip only where they cannot become it
// (not root, or no setpriv), and say why.
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync } from "node:fs";

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

/** A directory anyone can write to without the sticky bit: the attacker's playground. */
export function makeWorldWritableDir(path: string): string {
  mkdirSync(path, { recursive: true });
  chmodSync(path, 0o777);
  return path;
}
