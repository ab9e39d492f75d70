/**
 * Who is at the other end of a Unix stream socket: the pid, uid and gid the kernel recorded when the
 * peer connected (SO_PEERCRED), for sockets the daemon holds as raw fds or as Node `net.Socket`s.
 * Must not: decide what an identity may do (the servers do).
 * @module
 */

import type { Socket } from "node:net";
import { sysCall } from "./errors.js";
import { native } from "./native.js";

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** SO_PEERCRED of a connected Unix socket fd. Throws SysError. */
export function peerCredentials(fd: number): PeerCredentials {
  const [pid, uid, gid] = sysCall("getsockopt(SO_PEERCRED)", () => native().socketPeerCred(fd));
  return { pid, uid, gid };
}

/**
 * SO_PEERCRED of a Node socket on a Unix path, or null when Node does not show its fd (not
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
