/**
 * The daemon's handover to a successor process (a planned restart or upgrade): what it hands over
 * (every socket's listening socket and front-end connection, and the control socket), how that
 * travels (the successor is started with the fds from fd 3 on, a manifest memfd first, HANDOVER_ENV
 * telling how many), and the two-step agreement that makes sure exactly one process serves: the
 * successor says it is prepared (its devices are up) and waits; the predecessor then tells it to go
 * and stops for good. Until "go" nothing touches a ring or reads a socket, so a successor that fails
 * before it leaves everything as it was, and the predecessor serves on.
 * Nothing here decides when to hand over or what to do after: daemon.ts does.
 * Must not: act on a connection's state (the vhost-user layer does), or bind or remove socket files.
 * @module
 */

import { spawn } from "node:child_process";
import { readSync, writeSync } from "node:fs";
import type { ControlHandover } from "../control/server.js";
import { CodedError } from "../errors.js";
import type { Logger } from "../log.js";
import { EventFd } from "../sys/eventfd.js";
import { closeFdQuietly } from "../sys/fd.js";
import { FdWatcher } from "../sys/fd-watcher.js";
import { createMemfd } from "../sys/memfd.js";
import type { ListenerHandover } from "../vhost-user/server.js";
import {
  type ConnectionState,
  decodeState,
  encodeState,
  fdsOfState,
  StateError,
} from "../vhost-user/state.js";

/** Set in the successor's environment: how many fds it got from fd 3 on (manifest, prepared, go, rest). */
export const HANDOVER_ENV = "VHOST_DEVICE_I2C_HANDOVER_FDS";

/** The first fd a successor gets (0-2 stay stdio). */
const FIRST_FD = 3;

/** How long a successor has to prepare before the daemon takes everything back. */
export const SUCCESSOR_TIMEOUT_MS = 30_000;
/** How long a prepared successor waits for "go" before it gives up (the predecessor serves on). */
export const GO_TIMEOUT_MS = 10_000;

/** What one socket index hands over. */
export type SocketHandover =
  | { readonly index: number; readonly kind: "server"; readonly server: ListenerHandover }
  | {
      readonly index: number;
      readonly kind: "client";
      readonly path: string;
      readonly connection: ConnectionState | null;
    };

/** Everything a daemon hands its successor. */
export interface DaemonHandover {
  readonly sockets: readonly SocketHandover[];
  readonly control: ControlHandover | null;
}

export type HandoverErrorCode = "BAD_MANIFEST";

/** A manifest the successor cannot read at all (a state of one connection is a StateError). */
export class HandoverError extends CodedError<HandoverErrorCode> {}

/** Every fd of a handover (each closed by whoever gives up on it). */
export function fdsOfHandover(handover: DaemonHandover): number[] {
  const fds: number[] = [];
  for (const socket of handover.sockets) {
    const connection = socket.kind === "server" ? socket.server.connection : socket.connection;
    if (socket.kind === "server") fds.push(socket.server.listener);
    if (connection !== null) fds.push(...fdsOfState(connection));
  }
  if (handover.control !== null) fds.push(handover.control.listener);
  return fds;
}

export function closeHandover(handover: DaemonHandover): void {
  for (const fd of fdsOfHandover(handover)) closeFdQuietly(fd);
}

interface EncodedConnection {
  readonly fds: number[];
  readonly state: string;
}

/** The manifest (JSON) with fds as positions in the list that travels with it. */
function encodeManifest(handover: DaemonHandover): { text: string; fds: number[] } {
  const fds: number[] = [];
  const place = (fd: number) => fds.push(fd) - 1;
  const connection = (state: ConnectionState | null): EncodedConnection | null =>
    state === null ? null : { fds: fdsOfState(state).map(place), state: encodeState(state) };
  const sockets = handover.sockets.map((socket) =>
    socket.kind === "server"
      ? {
          index: socket.index,
          kind: socket.kind,
          path: socket.server.path,
          listener: place(socket.server.listener),
          ownsFile: socket.server.ownsFile,
          connection: connection(socket.server.connection),
        }
      : {
          index: socket.index,
          kind: socket.kind,
          path: socket.path,
          connection: connection(socket.connection),
        },
  );
  const control =
    handover.control === null
      ? null
      : { path: handover.control.path, listener: place(handover.control.listener) };
  return { text: JSON.stringify({ version: 1, sockets, control }), fds };
}

/**
 * Reads a manifest. A connection whose state does not parse is dropped (its fds closed, `onBadState`
 * told) and its socket handed over without it; anything else malformed throws HandoverError.
 */
export function decodeManifest(
  text: string,
  fds: readonly number[],
  onBadState: (index: number, error: StateError) => void,
): DaemonHandover {
  const fail = (what: string) => new HandoverError("BAD_MANIFEST", `handover manifest: ${what}`);
  let raw: {
    version?: unknown;
    sockets?: unknown;
    control?: { path?: unknown; listener?: unknown } | null;
  };
  try {
    raw = JSON.parse(text) as typeof raw;
  } catch {
    throw fail("not JSON");
  }
  if (raw === null || typeof raw !== "object" || raw.version !== 1 || !Array.isArray(raw.sockets)) {
    throw fail("unknown version");
  }
  const fdAt = (position: unknown): number => {
    const fd = typeof position === "number" ? fds[position] : undefined;
    if (fd === undefined) throw fail(`fd position ${String(position)} out of range`);
    return fd;
  };
  const path = (value: unknown): string => {
    if (typeof value !== "string" || value === "") throw fail("a socket without a path");
    return value;
  };
  const sockets = (raw.sockets as unknown[]).map((item): SocketHandover => {
    if (typeof item !== "object" || item === null) throw fail("a socket that is not an object");
    const socket = item as Record<string, unknown>;
    const index = socket.index;
    if (typeof index !== "number" || !Number.isSafeInteger(index) || index < 0) {
      throw fail("a socket without an index");
    }
    let connection: ConnectionState | null = null;
    const encoded = socket.connection as EncodedConnection | null;
    if (encoded !== null && encoded !== undefined) {
      if (!Array.isArray(encoded.fds) || typeof encoded.state !== "string") {
        throw fail("a connection without its state");
      }
      const own = encoded.fds.map(fdAt);
      try {
        connection = decodeState(encoded.state, own);
      } catch (error) {
        if (!(error instanceof StateError)) throw error;
        for (const fd of own) closeFdQuietly(fd);
        onBadState(index, error);
      }
    }
    if (socket.kind === "client") {
      return { index, kind: "client", path: path(socket.path), connection };
    }
    if (socket.kind !== "server") throw fail(`socket ${index} of an unknown kind`);
    return {
      index,
      kind: "server",
      server: {
        path: path(socket.path),
        listener: fdAt(socket.listener),
        ownsFile: socket.ownsFile === true,
        connection,
      },
    };
  });
  const control =
    raw.control === null || raw.control === undefined
      ? null
      : { path: path(raw.control.path), listener: fdAt(raw.control.listener) };
  return { sockets, control };
}

/** A successor's view of what it was handed: the handover and the agreement with its predecessor. */
export interface ReceivedHandover {
  readonly handover: DaemonHandover;
  /**
   * Tells the predecessor this process is prepared and resolves when it says "go" (it has stopped
   * for good); rejects when it does not in time (it serves on: this process must not).
   */
  readonly commit: () => Promise<void>;
}

/**
 * The handover this process was started with (HANDOVER_ENV), or null. The variable is removed, so
 * nothing this process starts sees it. Throws HandoverError for a manifest it cannot read.
 */
export function receiveHandover(
  env: NodeJS.ProcessEnv,
  onBadState: (index: number, error: StateError) => void,
): ReceivedHandover | null {
  const countText = env[HANDOVER_ENV];
  if (countText === undefined) return null;
  delete env[HANDOVER_ENV];
  const count = Number(countText);
  if (!Number.isSafeInteger(count) || count < 3) {
    throw new HandoverError("BAD_MANIFEST", `${HANDOVER_ENV}="${countText}" is not a count`);
  }
  const all = Array.from({ length: count }, (_, i) => FIRST_FD + i);
  const [manifestFd, preparedFd, goFd, ...fds] = all as [number, number, number, ...number[]];
  let text: string;
  try {
    text = readWhole(manifestFd);
  } finally {
    closeFdQuietly(manifestFd);
  }
  let handover: DaemonHandover;
  try {
    handover = decodeManifest(text, fds, onBadState);
  } catch (error) {
    for (const fd of [preparedFd, goFd, ...fds]) closeFdQuietly(fd);
    throw error;
  }
  const prepared = EventFd.adopt(preparedFd);
  const go = EventFd.adopt(goFd);
  return {
    handover,
    commit: async () => {
      try {
        prepared.write(1);
        if (!(await readable(go, GO_TIMEOUT_MS))) {
          throw new HandoverError("BAD_MANIFEST", "the predecessor did not say go: it serves on");
        }
      } finally {
        prepared.close();
        go.close();
      }
    },
  };
}

/**
 * Resolves true once `eventFd` is written (its count read), false after `timeoutMs` or when
 * `abandon` fires (the watch is gone before the fd may be closed).
 */
function readable(eventFd: EventFd, timeoutMs: number, abandon?: AbortSignal): Promise<boolean> {
  return new Promise((resolveReadable) => {
    const done = (written: boolean) => {
      clearTimeout(timer);
      watcher.close();
      abandon?.removeEventListener("abort", onAbort);
      resolveReadable(written);
    };
    const onAbort = () => done(false);
    const watcher = new FdWatcher(eventFd.fd, () => {
      try {
        eventFd.read();
      } catch {
        return;
      }
      done(true);
    });
    const timer = setTimeout(() => done(false), timeoutMs);
    abandon?.addEventListener("abort", onAbort);
    watcher.start();
  });
}

/** The whole content of a file from offset 0 (the offset is shared with the process that wrote it). */
function readWhole(fd: number): string {
  const chunks: Buffer[] = [];
  let offset = 0;
  for (;;) {
    const chunk = Buffer.alloc(64 * 1024);
    const n = readSync(fd, chunk, 0, chunk.length, offset);
    if (n === 0) break;
    chunks.push(chunk.subarray(0, n));
    offset += n;
  }
  return Buffer.concat(chunks).toString("utf8");
}

export interface SuccessorOptions {
  readonly logger: Logger;
  /** The command that starts the successor: by default this process's own (node, script, argv). */
  readonly command?: readonly string[];
  readonly timeoutMs?: number;
  /** Called once the successor is prepared, before it is told to go (e.g. to tell systemd its pid). */
  readonly beforeGo?: (pid: number) => void;
}

/** How a handover ended: the successor's pid, or why it did not take over (the fds are still ours). */
export type SuccessorResult =
  | { readonly ok: true; readonly pid: number }
  | { readonly ok: false; readonly reason: string };

/**
 * Starts the successor with everything in `handover`, waits until it is prepared, and tells it to go.
 * Then this process's copies of the fds are closed (the successor has its own) and it must serve
 * nothing more. When the successor fails or is late, it is killed and the fds stay open for this
 * process to serve again.
 */
export async function startSuccessor(
  handover: DaemonHandover,
  options: SuccessorOptions,
): Promise<SuccessorResult> {
  const { text, fds } = encodeManifest(handover);
  const manifest = createMemfd(0, "vhost-device-i2c-handover");
  const prepared = EventFd.create();
  const go = EventFd.create();
  try {
    const bytes = Buffer.from(text, "utf8");
    for (let written = 0; written < bytes.length; ) {
      written += writeSync(manifest, bytes, written);
    }
    const [command, ...args] = options.command ?? [
      process.execPath,
      ...process.execArgv,
      ...process.argv.slice(1),
    ];
    const child = spawn(command as string, args, {
      stdio: ["inherit", "inherit", "inherit", manifest, prepared.fd, go.fd, ...fds],
      env: { ...process.env, [HANDOVER_ENV]: String(fds.length + 3) },
    });
    const exited = new Promise<string>((resolveExit) => {
      child.once("error", (error) => resolveExit(`cannot start the successor: ${error.message}`));
      child.once("exit", (code, signal) =>
        resolveExit(`the successor exited (${signal ?? `status ${code}`}) before it took over`),
      );
    });
    const timeoutMs = options.timeoutMs ?? SUCCESSOR_TIMEOUT_MS;
    const abandon = new AbortController();
    const outcome = await Promise.race([
      readable(prepared, timeoutMs, abandon.signal).then((ok) =>
        ok ? null : `the successor was not prepared within ${timeoutMs} ms`,
      ),
      exited,
    ]);
    abandon.abort();
    if (outcome !== null || child.pid === undefined) {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      const reason = outcome ?? "the successor has no pid";
      options.logger.error("handover failed: serving on", { reason });
      return { ok: false, reason };
    }
    options.beforeGo?.(child.pid);
    // From here on the successor serves: this process lets go of everything.
    go.write(1);
    child.unref();
    for (const fd of fds) closeFdQuietly(fd);
    return { ok: true, pid: child.pid };
  } finally {
    closeFdQuietly(manifest);
    prepared.close();
    go.close();
  }
}
