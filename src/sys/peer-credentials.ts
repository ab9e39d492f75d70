/**
 * Who is at the other end of a Unix stream socket: the pid, uid and gid the kernel recorded when the
 * peer connected (SO_PEERCRED) and its supplementary groups (SO_PEERGROUPS), for sockets the daemon
 * holds as raw fds or as Node `net.Socket`s.
 * Must not: decide what an identity may do (peer-policy.ts and the servers do).
 * @module
 */

import type { Socket } from "node:net";
import { hasCode, sysCall } from "./errors.js";
import { native } from "./native.js";

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  /** Supplementary groups; empty on kernels before 4.13 (no SO_PEERGROUPS). */
  readonly groups: readonly number[];
}

/** SO_PEERCRED and SO_PEERGROUPS of a connected Unix socket fd. Throws SysError. */
export function peerCredentials(fd: number): PeerCredentials {
  const binding = native();
  const [pid, uid, gid] = sysCall("getsockopt", () => binding.socketPeerCred(fd));
  let groups: number[] = [];
  try {
    groups = sysCall("getsockopt", () => binding.socketPeerGroups(fd));
  } catch (error) {
    // Kernels before 4.13 have no SO_PEERGROUPS: the peer's own gid is all there is to judge.
    if (!hasCode(error, "ENOPROTOOPT")) throw error;
  }
  return { pid, uid, gid, groups };
}

/**
 * The credentials of a Node socket on a Unix path, or null when Node does not show its fd (not
 * connected yet, already closed). Node keeps the fd of a pipe handle as `_handle.fd`, which it
 * does not document; null is what a caller must be ready for.
 */
export function socketPeerCredentials(socket: Socket): PeerCredentials | null {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) return null;
  try {
    return peerCredentials(fd);
  } catch {
    return null;
  }
}
