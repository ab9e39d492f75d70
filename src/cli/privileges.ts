/**
 * --user/--group: the daemon started as root gives root up for good once everything it needs root
 * for is open (host adapters, locks, sockets, trace and backing files). Names are looked up in
 * /etc/passwd and /etc/group before anything is opened; the drop sets the supplementary groups, the
 * group, then the user (real, effective and saved, in every thread: glibc applies set*id process-wide),
 * and checks that root cannot be taken back. The kernel then clears the capabilities and makes the
 * process non-dumpable, so other processes of that user can neither trace it nor take its fds.
 * What the daemon opens afterwards (an adapter reopened after an unplug, a new device's lock or a
 * model module on SIGHUP, a rotated capture file) it opens as that user, or fails.
 * Must not: decide what is opened before the drop (daemon.ts does).
 * @module
 */

import { readFileSync } from "node:fs";
import { CodedError } from "../errors.js";

export const PASSWD_FILE = "/etc/passwd";
export const GROUP_FILE = "/etc/group";

/** Who the daemon becomes. */
export interface Identity {
  readonly uid: number;
  readonly gid: number;
  /** Supplementary groups (the user's groups in the group file, with `gid`). */
  readonly groups: readonly number[];
}

export type PrivilegeErrorCode =
  /** A user or group name that is not in the files. */
  | "PRIVILEGE_UNKNOWN_NAME"
  /** --user given to a daemon that was not started as root. */
  | "PRIVILEGE_NOT_ROOT"
  /** A set*id call failed, or the process could still become root afterwards. */
  | "PRIVILEGE_DROP_FAILED";

export class PrivilegeError extends CodedError<PrivilegeErrorCode> {}

const NUMBER = /^[0-9]+$/;

/** The colon-separated records of a passwd or group file ([] when it cannot be read). */
function records(file: string): string[][] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return [];
  }
  return text
    .split("\n")
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => line.split(":"));
}

/** The id (third field) of `name` in a passwd or group file, or undefined. */
export function lookupId(name: string, file: string): number | undefined {
  for (const [recordName, , id] of records(file)) {
    if (recordName === name && id !== undefined && NUMBER.test(id)) return Number(id);
  }
  return undefined;
}

/** A group name's gid in the group file, or undefined. */
export function lookupGroup(name: string, groupFile = GROUP_FILE): number | undefined {
  return lookupId(name, groupFile);
}

/**
 * The identity `--user USER [--group GROUP]` names. USER and GROUP are names or numbers; the group
 * defaults to the user's primary group, which a bare uid has not (then --group is required). A named
 * user also keeps the groups that list it in the group file (e.g. the group owning /dev/i2c-N).
 * Throws PrivilegeError.
 */
export function resolveIdentity(
  user: string,
  group: string | undefined,
  files: { passwd?: string; group?: string } = {},
): Identity {
  const passwdFile = files.passwd ?? PASSWD_FILE;
  const groupFile = files.group ?? GROUP_FILE;
  let uid: number;
  let primary: number | undefined;
  let name: string | undefined;
  if (NUMBER.test(user)) {
    uid = Number(user);
  } else {
    const entry = records(passwdFile).find(([entryName]) => entryName === user);
    if (entry === undefined || !NUMBER.test(entry[2] ?? "") || !NUMBER.test(entry[3] ?? "")) {
      throw new PrivilegeError(
        "PRIVILEGE_UNKNOWN_NAME",
        `--user: no user named "${user}" in ${passwdFile} (give the number instead)`,
      );
    }
    uid = Number(entry[2]);
    primary = Number(entry[3]);
    name = user;
  }
  let gid: number | undefined = primary;
  if (group !== undefined) {
    gid = NUMBER.test(group) ? Number(group) : lookupGroup(group, groupFile);
    if (gid === undefined) {
      throw new PrivilegeError(
        "PRIVILEGE_UNKNOWN_NAME",
        `--group: no group named "${group}" in ${groupFile} (give the number instead)`,
      );
    }
  }
  if (gid === undefined) {
    throw new PrivilegeError(
      "PRIVILEGE_UNKNOWN_NAME",
      `--user ${user} is a number: give its group with --group`,
    );
  }
  const groups = new Set([gid]);
  if (name !== undefined) {
    for (const [, , groupId, members] of records(groupFile)) {
      if (groupId !== undefined && NUMBER.test(groupId) && members?.split(",").includes(name)) {
        groups.add(Number(groupId));
      }
    }
  }
  return { uid, gid, groups: [...groups].sort((a, b) => a - b) };
}

function sameSet(a: readonly number[], b: readonly number[]): boolean {
  const left = new Set(a);
  const right = new Set(b);
  return left.size === right.size && [...left].every((id) => right.has(id));
}

/** Throws PrivilegeError PRIVILEGE_NOT_ROOT unless the process is root (checked before opening anything). */
export function requireRoot(): void {
  const euid = process.geteuid?.();
  if (euid !== 0) {
    throw new PrivilegeError(
      "PRIVILEGE_NOT_ROOT",
      `--user needs the daemon to start as root (it runs as uid ${euid}); without root, start it as that user instead`,
    );
  }
}

/**
 * Becomes `target` for good: supplementary groups, group, user, in that order (each needs root), then
 * checks every id and that setuid(0) is refused. Throws PrivilegeError (PRIVILEGE_NOT_ROOT when the
 * process is not root: nothing changed).
 */
export function dropPrivileges(target: Identity): void {
  requireRoot();
  try {
    process.setgroups?.([...target.groups]);
    process.setgid?.(target.gid);
    process.setuid?.(target.uid);
  } catch (err) {
    throw new PrivilegeError(
      "PRIVILEGE_DROP_FAILED",
      `cannot become uid ${target.uid} gid ${target.gid}: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  const now = {
    uid: [process.getuid?.(), process.geteuid?.()],
    gid: [process.getgid?.(), process.getegid?.()],
    groups: process.getgroups?.() ?? [],
  };
  let regained = false;
  try {
    process.setuid?.(0);
    regained = true;
  } catch {
    // EPERM: what a dropped process must get
  }
  if (
    regained ||
    now.uid.some((id) => id !== target.uid) ||
    now.gid.some((id) => id !== target.gid) ||
    !sameSet(
      now.groups.filter((id) => id !== target.gid),
      target.groups.filter((id) => id !== target.gid),
    )
  ) {
    throw new PrivilegeError(
      "PRIVILEGE_DROP_FAILED",
      `after the drop to uid ${target.uid} gid ${target.gid}: uid ${now.uid.join("/")}, gid ${now.gid.join("/")}, groups ${now.groups.join(",") || "none"}${regained ? ", and root could be taken back" : ""}`,
    );
  }
}
