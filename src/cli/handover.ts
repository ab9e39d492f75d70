/**
 * The daemon's handover to a successor process (a planned restart or upgrade): what it hands over
 * (every socket's listening socket and front-end connection, the control socket, and the emulated
 * chips' saved states), how that travels (a socketpair, the successor's end at fd 3, HANDOVER_ENV
 * naming it: fds and the manifest as records), and the agreement that makes sure exactly one process
 * serves. The successor is started first and says hello once Node and the program are loaded, so the
 * guests wait only for what must happen in order: the predecessor stops its rings and devices, sends
 * everything, the successor builds its devices, says it is prepared and waits; the predecessor then
 * tells it to go and stops for good. Until "go" nothing touches a ring or reads a socket, so a
 * successor that fails leaves everything as it was, and the predecessor serves on.
 * Nothing here decides when to hand over or what to do after: daemon.ts does.
 * Must not: act on a connection's state (the vhost-user layer does), or bind or remove socket files.
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import type { ControlHandover } from "../control/server.js";
import { CodedError } from "../errors.js";
import type { Logger } from "../log.js";
import { hasCode } from "../sys/errors.js";
import { closeFdQuietly } from "../sys/fd.js";
import { FdWatcher } from "../sys/fd-watcher.js";
import { MAX_RECV_FDS, UnixStream } from "../sys/unix-socket.js";
import type { ListenerHandover } from "../vhost-user/server.js";
import {
  type ConnectionState,
  decodeState,
  encodeState,
  fdsOfState,
  StateError,
} from "../vhost-user/state.js";
import type { SavedChips } from "./device-set.js";

/** Set in the successor's environment: the fd of its end of the link to the predecessor. */
export const HANDOVER_ENV = "VHOST_DEVICE_I2C_HANDOVER";

/**
 * Set in the successor's environment when the predecessor serves sockets passed by socket
 * activation: how many (the successor checks its command line with them before they arrive).
 */
export const HANDOVER_ACTIVATED_ENV = "VHOST_DEVICE_I2C_HANDOVER_ACTIVATED";

/** Where the successor finds its end of the link (0-2 stay stdio). */
const LINK_FD = 3;

/** How long a new process has to start (Node, the program's modules) and say hello. */
export const HELLO_TIMEOUT_MS = 30_000;
/** How long a successor that has everything has to prepare before the daemon takes it all back. */
export const SUCCESSOR_TIMEOUT_MS = 30_000;
/** How long an ended link waits for the successor's exit status, which says why. */
const EXIT_GRACE_MS = 2000;
/** How long a successor waits for the handover, and once prepared for "go" (else it gives up). */
export const GO_TIMEOUT_MS = 60_000;

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
  /** The emulated chips' states, by chip id (absent: none saved, as after a crash). */
  readonly chips?: SavedChips;
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
  // Still version 1: a reader that knows no "chips" serves on without them (chips start afresh).
  const chips = handover.chips ?? {};
  return { text: JSON.stringify({ version: 1, sockets, control, chips }), fds };
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
    chips?: unknown;
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
  return { sockets, control, chips: savedChips(raw.chips, fail) };
}

/** The manifest's chip states, each checked for what finds its chip; the states are the models'. */
function savedChips(value: unknown, fail: (what: string) => HandoverError): SavedChips {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw fail("chips that are not an object");
  }
  for (const [id, chip] of Object.entries(value as Record<string, unknown>)) {
    const { key, model, address, state } = (chip ?? {}) as Record<string, unknown>;
    if (
      typeof key !== "string" ||
      typeof model !== "string" ||
      typeof address !== "number" ||
      state === undefined
    ) {
      throw fail(`chip ${id} without its key, model, address or state`);
    }
  }
  return value as SavedChips;
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

/** Records on the link: [type u8][payload length u32 LE][payload]; fds ride on a record's first byte. */
const RECORD = {
  /** successor → predecessor: started, waiting for the handover. */
  hello: 0x48,
  /** predecessor → successor: fds (payload: their count, at most FDS_PER_RECORD). */
  fds: 0x46,
  /** predecessor → successor: the manifest (JSON), after every fd it names. */
  manifest: 0x4d,
  /** successor → predecessor: devices up, ready to serve. */
  prepared: 0x50,
  /** predecessor → successor: serve; the predecessor has let go. */
  go: 0x47,
} as const;
const RECORD_HEADER = 5;
/** fds per record: what one receive takes whole (unix-socket.ts MAX_RECV_FDS). */
const FDS_PER_RECORD = MAX_RECV_FDS;
/** Manifest bytes per record, so a full socket buffer never cuts one in two. */
const CHUNK_BYTES = 16 * 1024;

interface LinkRecord {
  readonly type: number;
  readonly payload: Buffer;
  /** The fds of an fds record. */
  readonly fds: number[];
}

/**
 * One end of the socketpair between predecessor and successor: records out (waiting for room),
 * records in (with the fds that came with them), each wait bounded.
 */
class HandoverLink {
  readonly #stream: UnixStream;
  readonly #watcher: FdWatcher;
  #input = Buffer.alloc(0);
  readonly #receivedFds: number[] = [];
  readonly #records: LinkRecord[] = [];
  #wake: (() => void) | null = null;
  #ended = false;

  constructor(stream: UnixStream) {
    this.#stream = stream;
    this.#watcher = new FdWatcher(
      stream.fd,
      () => this.#read(),
      () => this.#end(),
      () => this.#wake?.(),
    );
    this.#watcher.watch(true, false);
  }

  /** The next record, or null when the link ended or `timeoutMs` passed first. */
  async receive(timeoutMs: number, abandon?: AbortSignal): Promise<LinkRecord | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const record = this.#records.shift();
      if (record !== undefined) return record;
      if (this.#ended || abandon?.aborted || Date.now() >= deadline) return null;
      await new Promise<void>((resolveWait) => {
        const timer = setTimeout(done, Math.max(0, deadline - Date.now()));
        const onAbort = () => done();
        abandon?.addEventListener("abort", onAbort);
        function done() {
          clearTimeout(timer);
          abandon?.removeEventListener("abort", onAbort);
          resolveWait();
        }
        this.#wake = done;
      });
      this.#wake = null;
    }
  }

  /** Sends one record, waiting for room while the socket is full. */
  async send(type: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = []) {
    const bytes = Buffer.alloc(RECORD_HEADER + payload.length);
    bytes.writeUInt8(type, 0);
    bytes.writeUInt32LE(payload.length, 1);
    bytes.set(payload, RECORD_HEADER);
    for (;;) {
      try {
        this.#stream.send(bytes, fds);
        return;
      } catch (error) {
        if (!hasCode(error, "EAGAIN")) throw error;
      }
      // Full: the other side reads as it can; wait for room.
      await new Promise<void>((resolveRoom) => {
        const timer = setTimeout(resolveRoom, 100);
        this.#wake = () => {
          clearTimeout(timer);
          resolveRoom();
        };
        this.#watcher.watch(true, true);
      });
      this.#wake = null;
      this.#watcher.watch(true, false);
    }
  }

  /** Sends `fds` in records the other side takes whole. */
  async sendFds(fds: readonly number[]): Promise<void> {
    for (let at = 0; at < fds.length; at += FDS_PER_RECORD) {
      const batch = fds.slice(at, at + FDS_PER_RECORD);
      const count = Buffer.alloc(4);
      count.writeUInt32LE(batch.length, 0);
      await this.send(RECORD.fds, count, batch);
    }
  }

  close(): void {
    this.#ended = true;
    this.#watcher.close();
    this.#stream.close();
    for (const fd of this.#receivedFds.splice(0)) closeFdQuietly(fd);
    this.#wake?.();
  }

  #read(): void {
    const chunk = Buffer.alloc(64 * 1024);
    let ended = false;
    for (;;) {
      let n: number;
      try {
        n = this.#stream.recv(chunk, 0, chunk.length, this.#receivedFds);
      } catch {
        ended = true;
        break;
      }
      if (n <= 0) {
        ended = n === 0;
        break;
      }
      this.#input = Buffer.concat([this.#input, chunk.subarray(0, n)]);
    }
    // What came before the end still counts ("go" is the predecessor's last word).
    while (this.#input.length >= RECORD_HEADER) {
      const length = this.#input.readUInt32LE(1);
      if (this.#input.length < RECORD_HEADER + length) break;
      const type = this.#input.readUInt8(0);
      const payload = Buffer.from(this.#input.subarray(RECORD_HEADER, RECORD_HEADER + length));
      this.#input = this.#input.subarray(RECORD_HEADER + length);
      const fds =
        type === RECORD.fds && length === 4
          ? this.#receivedFds.splice(0, payload.readUInt32LE(0))
          : [];
      this.#records.push({ type, payload, fds });
    }
    if (ended) this.#end();
    else this.#wake?.();
  }

  #end(): void {
    this.#ended = true;
    this.#watcher.watch(false, false);
    this.#wake?.();
  }
}

/** A successor's link to its predecessor, before the handover arrives. */
export interface PredecessorLink {
  /**
   * Placeholders for the sockets socket activation passed the predecessor (the real fds come with
   * the handover), to check the command line with; null when there are none.
   */
  readonly activated: { readonly fds: readonly number[]; readonly names: readonly string[] } | null;
  /**
   * Says hello (this process runs and its command line is good), then waits for the fds and the
   * manifest. Throws HandoverError when the predecessor sends nothing usable (it then serves on).
   */
  receive(onBadState: (index: number, error: StateError) => void): Promise<ReceivedHandover>;
}

/**
 * The link to the predecessor this process was started by (HANDOVER_ENV), or null. The variables
 * are removed, so nothing this process starts sees them.
 */
export function predecessorLink(env: NodeJS.ProcessEnv): PredecessorLink | null {
  const text = env[HANDOVER_ENV];
  if (text === undefined) return null;
  const activatedText = env[HANDOVER_ACTIVATED_ENV];
  delete env[HANDOVER_ENV];
  delete env[HANDOVER_ACTIVATED_ENV];
  if (text !== String(LINK_FD)) {
    throw new HandoverError("BAD_MANIFEST", `${HANDOVER_ENV}="${text}" is not the link's fd`);
  }
  const activated = Number(activatedText ?? 0);
  const placeholders = Number.isSafeInteger(activated) && activated > 0 ? activated : 0;
  return {
    activated:
      placeholders === 0
        ? null
        : { fds: Array.from({ length: placeholders }, (_, i) => LINK_FD + 1 + i), names: [] },
    receive: (onBadState) => receiveHandover(onBadState),
  };
}

async function receiveHandover(
  onBadState: (index: number, error: StateError) => void,
): Promise<ReceivedHandover> {
  const link = new HandoverLink(UnixStream.adopt(LINK_FD));
  const fds: number[] = [];
  let manifest = "";
  try {
    await link.send(RECORD.hello);
    for (;;) {
      const record = await link.receive(GO_TIMEOUT_MS);
      if (record === null) {
        throw new HandoverError("BAD_MANIFEST", "the predecessor sent no handover: it serves on");
      }
      if (record.type === RECORD.fds) fds.push(...record.fds);
      else if (record.type === RECORD.manifest && record.payload.length > 0) {
        manifest += record.payload.toString("utf8");
      } else if (record.type === RECORD.manifest) break;
      else
        throw new HandoverError("BAD_MANIFEST", `unexpected record 0x${record.type.toString(16)}`);
    }
  } catch (error) {
    for (const fd of fds) closeFdQuietly(fd);
    link.close();
    throw error;
  }
  let handover: DaemonHandover;
  try {
    handover = decodeManifest(manifest, fds, onBadState);
  } catch (error) {
    for (const fd of fds) closeFdQuietly(fd);
    link.close();
    throw error;
  }
  return {
    handover,
    commit: async () => {
      try {
        await link.send(RECORD.prepared);
        const go = await link.receive(GO_TIMEOUT_MS);
        if (go?.type !== RECORD.go) {
          throw new HandoverError("BAD_MANIFEST", "the predecessor did not say go: it serves on");
        }
      } finally {
        link.close();
      }
    },
  };
}

export interface SuccessorOptions {
  readonly logger: Logger;
  /** How many sockets socket activation passed this process (told to the successor). */
  readonly activatedSockets?: number;
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

/** A successor started and waiting for what to take over. */
export interface StartedSuccessor {
  /**
   * Gives it `handover` and waits until it is prepared, then tells it to go. On success this
   * process's copies of the fds are closed (the successor has its own) and it must serve nothing
   * more. When the successor fails or is late, it is killed and the fds stay open for this process
   * to serve again.
   */
  takeOver(handover: DaemonHandover): Promise<SuccessorResult>;
}

/**
 * Starts the successor (by default this process's own command line) and resolves once it runs and
 * waits for the handover: Node and the program are loaded, so what is left of the handover is the
 * devices and the rings. A successor that cannot start is killed and reported; nothing was stopped.
 */
export async function startSuccessor(
  options: SuccessorOptions,
): Promise<{ ok: true; successor: StartedSuccessor } | { ok: false; reason: string }> {
  const [ours, theirs] = UnixStream.pair();
  const link = new HandoverLink(ours);
  const [command, ...args] = options.command ?? [
    process.execPath,
    ...process.execArgv,
    ...process.argv.slice(1),
  ];
  let child: ChildProcess;
  try {
    child = spawn(command as string, args, {
      stdio: ["inherit", "inherit", "inherit", theirs.fd],
      env: {
        ...process.env,
        [HANDOVER_ENV]: String(LINK_FD),
        ...(options.activatedSockets !== undefined &&
          options.activatedSockets > 0 && {
            [HANDOVER_ACTIVATED_ENV]: String(options.activatedSockets),
          }),
      },
    });
  } finally {
    theirs.close();
  }
  const abandon = new AbortController();
  const exited = new Promise<string>((resolveExit) => {
    child.once("error", (error) => resolveExit(`cannot start the successor: ${error.message}`));
    child.once("exit", (code, signal) =>
      resolveExit(`the successor exited (${signal ?? `status ${code}`}) before it took over`),
    );
  });
  void exited.then(() => abandon.abort());
  const fail = (reason: string) => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    link.close();
    options.logger.error("handover failed: serving on", { reason });
    return { ok: false as const, reason };
  };
  const expect = async (type: number, timeoutMs: number, what: string): Promise<string | null> => {
    const record = await link.receive(timeoutMs, abandon.signal);
    if (record?.type === type) return null;
    if (record !== null) return `the successor sent 0x${record.type.toString(16)}`;
    // The link ended or the time is up: an exit says why better (it may follow the end closely).
    const exit = await Promise.race([
      exited,
      new Promise<null>((resolveLate) => setTimeout(() => resolveLate(null), EXIT_GRACE_MS)),
    ]);
    return exit ?? `the successor was not ${what} within ${timeoutMs} ms`;
  };
  const notStarted = await expect(RECORD.hello, HELLO_TIMEOUT_MS, "started");
  if (notStarted !== null) return fail(notStarted);
  return {
    ok: true,
    successor: {
      takeOver: async (handover) => {
        const { text, fds } = encodeManifest(handover);
        try {
          await link.sendFds(fds);
          const bytes = Buffer.from(text, "utf8");
          for (let at = 0; at < bytes.length; at += CHUNK_BYTES) {
            await link.send(RECORD.manifest, bytes.subarray(at, at + CHUNK_BYTES));
          }
          await link.send(RECORD.manifest);
        } catch (error) {
          return fail(`cannot send the handover: ${(error as Error).message}`);
        }
        const timeoutMs = options.timeoutMs ?? SUCCESSOR_TIMEOUT_MS;
        const notPrepared = await expect(RECORD.prepared, timeoutMs, "prepared");
        if (notPrepared !== null || child.pid === undefined) {
          return fail(notPrepared ?? "the successor has no pid");
        }
        options.beforeGo?.(child.pid);
        // From here on the successor serves: this process lets go of everything.
        try {
          await link.send(RECORD.go);
        } finally {
          link.close();
        }
        child.unref();
        for (const fd of fds) closeFdQuietly(fd);
        return { ok: true, pid: child.pid };
      },
    },
  };
}
