/**
 * A restart after a crash: what the daemon kept in the service manager's fd store (--fd-store) comes
 * back in LISTEN_FDS/LISTEN_FDNAMES, beside any sockets of socket activation. This module tells the
 * two apart and turns the stored fds into a DaemonHandover (the form a SIGUSR2 successor gets), so
 * the daemon resumes every connection exactly as a successor would, its ring positions recovered
 * from the rings. A connection whose journal cannot be used is dropped from the store (the service
 * manager then closes its copies, and the VMM sees a disconnect); the others resume.
 * Must not: decide what runs (daemon.ts) or read a journal's format (journal.ts does).
 * @module
 */

import { resolve } from "node:path";
import { closeFdQuietly } from "../sys/fd.js";
import type { InheritedFds } from "../sys/service-manager.js";
import {
  type FdStore,
  isJournalName,
  readJournal,
  STORE_NAME_PREFIX,
  storePrefixOf,
} from "../vhost-user/journal.js";
import { type ConnectionState, fdsOfState, StateError } from "../vhost-user/state.js";
import type { DaemonConfig } from "./args.js";
import { CONTROL_STORE_NAME, LISTENER_STORE_NAME } from "./daemon.js";
import type { DaemonHandover, SocketHandover } from "./handover.js";

/** What came back from the fd store, beside the sockets of socket activation. */
export interface StoredFds {
  readonly entries: readonly { readonly name: string; readonly fd: number }[];
}

/**
 * Splits inherited fds into the daemon's own stored ones (named STORE_NAME_PREFIX...) and the rest
 * (socket activation: what the command line serves). Null where a part is empty.
 */
export function splitInherited(inherited: InheritedFds | null): {
  activation: InheritedFds | null;
  stored: StoredFds | null;
} {
  if (inherited === null) return { activation: null, stored: null };
  const entries: { name: string; fd: number }[] = [];
  const fds: number[] = [];
  const names: string[] = [];
  inherited.fds.forEach((fd, i) => {
    const name = inherited.names[i] ?? "";
    if (name.startsWith(STORE_NAME_PREFIX)) entries.push({ name, fd });
    else {
      fds.push(fd);
      names.push(name);
    }
  });
  return {
    activation: fds.length === 0 ? null : { fds, names: inherited.names.length === 0 ? [] : names },
    stored: entries.length === 0 ? null : { entries },
  };
}

/**
 * The handover the fd store makes: each socket's stored listening socket (or the one socket
 * activation passed) with the connection its journal describes. Fds nothing takes are dropped from
 * the store and closed; a journal that does not fit drops its whole connection (`onBadState`).
 */
export function handoverFromStore(
  stored: StoredFds,
  config: DaemonConfig,
  store: FdStore,
  onBadState: (connection: string, error: StateError) => void,
): DaemonHandover {
  const byName = new Map<string, number>();
  const drop = (name: string, fd: number) => {
    closeFdQuietly(fd);
    try {
      store.remove(name);
    } catch {
      // No service manager any more: nothing holds it.
    }
  };
  for (const { name, fd } of stored.entries) {
    // One fd per name: a second one under a name is a copy (closed here, the store keeps its own).
    if (byName.has(name)) closeFdQuietly(fd);
    else byName.set(name, fd);
  }
  const connections = new Map<number, ConnectionState>();
  for (const [name, fd] of byName) {
    if (!isJournalName(name)) continue;
    try {
      const state = readJournal(fd, byName);
      if (state.socketIndex >= config.socketCount || connections.has(state.socketIndex)) {
        throw new StateError("BAD_STATE", `no socket ${state.socketIndex} to resume it on`);
      }
      connections.set(state.socketIndex, state);
    } catch (error) {
      if (!(error instanceof StateError)) throw error;
      onBadState(storePrefixOf(name), error);
    }
  }
  const kept = new Set<number>();
  const sockets: SocketHandover[] = [];
  for (let index = 0; index < config.socketCount; index++) {
    const connection = connections.get(index) ?? null;
    const path = config.socketPaths[index] as string;
    if (config.clientMode) {
      if (connection === null) continue;
      sockets.push({ index, kind: "client", path, connection });
      for (const fd of fdsOfState(connection)) kept.add(fd);
      continue;
    }
    const storedListener = byName.get(`${LISTENER_STORE_NAME}${index}`);
    const listener = storedListener ?? config.socketFds?.[index];
    // Without a listening socket to resume on (one the daemon binds anew) the guest reconnects.
    if (listener === undefined) continue;
    if (storedListener !== undefined) kept.add(storedListener);
    if (connection !== null) for (const fd of fdsOfState(connection)) kept.add(fd);
    sockets.push({
      index,
      kind: "server",
      server: {
        path: storedListener !== undefined ? path : `fd:${listener}`,
        listener,
        ownsFile: storedListener !== undefined,
        connection,
      },
    });
  }
  const controlPath =
    config.controlSocket === undefined ? undefined : resolve(config.controlSocket);
  const controlFd = controlPath === undefined ? undefined : byName.get(CONTROL_STORE_NAME);
  if (controlFd !== undefined) kept.add(controlFd);
  // What nothing resumes leaves the store: a connection that cannot resume is disconnected by it.
  for (const [name, fd] of byName) if (!kept.has(fd)) drop(name, fd);
  return {
    sockets,
    control:
      controlFd !== undefined && controlPath !== undefined
        ? { path: controlPath, listener: controlFd }
        : null,
  };
}
