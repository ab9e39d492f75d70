/**
 * PeerPolicy: which local users may be the process at the other end of a Unix socket, judged on the
 * credentials the kernel recorded when it connected (SO_PEERCRED, SO_PEERGROUPS). A peer is admitted
 * when its uid is one of the policy's uids, or its gid or one of its supplementary groups is one of
 * its gids: the same test the kernel applies to a socket file's owner and group bits, made again on
 * the connection, so a file whose mode is wrong, or a socket reached some other way, still serves
 * only those peers.
 * Must not: log, or decide where the ids come from beyond the socket file it is given.
 * @module
 */

import type { PeerCredentials } from "./peer-credentials.js";
import type { FileStat } from "./trusted-dir.js";

/** Users and groups named by the operator, admitted besides those a policy admits on its own. */
export interface PeerIds {
  readonly uids?: readonly number[];
  readonly gids?: readonly number[];
}

/** Write permission for the group: what a connect(2) needs. */
const GROUP_WRITE = 0o020;

/** The uid the daemon runs as: its own peers are always admitted (they could ptrace it anyway). */
function ownUid(): number {
  return process.geteuid?.() ?? 0;
}

export class PeerPolicy {
  readonly uids: ReadonlySet<number>;
  readonly gids: ReadonlySet<number>;

  constructor(uids: Iterable<number>, gids: Iterable<number>) {
    this.uids = new Set(uids);
    this.gids = new Set(gids);
  }

  /**
   * Root, the daemon's user, `extra`, and whom `file` (a socket file, as created or found) admits
   * apart from "other": its owner, and its group when the mode lets the group connect.
   */
  static forSocketFile(
    file: Pick<FileStat, "uid" | "gid" | "mode"> | null,
    extra: PeerIds = {},
  ): PeerPolicy {
    const uids = [0, ownUid(), ...(extra.uids ?? [])];
    const gids = [...(extra.gids ?? [])];
    if (file !== null) {
      uids.push(file.uid);
      if ((file.mode & GROUP_WRITE) !== 0) gids.push(file.gid);
    }
    return new PeerPolicy(uids, gids);
  }

  /**
   * Root, the daemon's user, `extra`, and the owner of `directory`: the socket directory of a VMM
   * the daemon connects to (only its owner, root and the daemon's user could have made the socket).
   */
  static forDirectory(directory: Pick<FileStat, "uid"> | null, extra: PeerIds = {}): PeerPolicy {
    const uids = [0, ownUid(), ...(extra.uids ?? [])];
    if (directory !== null) uids.push(directory.uid);
    return new PeerPolicy(uids, extra.gids ?? []);
  }

  admits(peer: PeerCredentials): boolean {
    if (this.uids.has(peer.uid) || this.gids.has(peer.gid)) return true;
    return peer.groups.some((gid) => this.gids.has(gid));
  }

  /** For log lines: "uid 0,1000 gid 107" ("gid -" when no group is admitted). */
  describe(): string {
    const list = (ids: ReadonlySet<number>) => (ids.size === 0 ? "-" : [...ids].join(","));
    return `uid ${list(this.uids)} gid ${list(this.gids)}`;
  }
}

/** A peer's identity as log fields. */
export function peerFields(peer: PeerCredentials): { pid: number; uid: number; gid: number } {
  return { pid: peer.pid, uid: peer.uid, gid: peer.gid };
}
