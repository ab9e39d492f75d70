/**
 * ConnectionJournal: what a restart after a crash needs to resume one front-end connection, kept
 * where the crash cannot take it: in the service manager's fd store (systemd's FDSTORE=1). Every fd
 * the connection holds is stored under a name derived from its role (the socket, each memory region,
 * each vring's kick/call/err, the back-end request fd), and one memfd, the journal itself, holds the
 * connection's state (features, memory table, ring layout; ring positions are recovered from the
 * rings) and, in its first page, the ring position log of packed rings (rings.ts writes it).
 * The state is written after every request that changed it, before the reply goes out, into one of
 * two slots, and a header naming the slot is written last: a crash mid-write leaves the previous one.
 * Must not: speak the vhost-user protocol or touch the rings; the back-end records what succeeded.
 * @module
 */

import { randomBytes } from "node:crypto";
import { fstatSync, readSync, writeSync } from "node:fs";
import { closeFdQuietly, dupFd } from "../sys/fd.js";
import { createMemfd } from "../sys/memfd.js";
import type { MemRegion, VringAddr } from "./codec.js";
import type { VringFdKind } from "./rings.js";
import {
  type ConnectionState,
  decodeState,
  encodeState,
  fdsOfState,
  StateError,
  type VringState,
} from "./state.js";

/** Where fds outlive the process: the service manager's fd store. */
export interface FdStore {
  store(name: string, fd: number): void;
  remove(name: string): void;
}

/** Bytes at the start of a journal for the ring position log (one 32-bit word per vring). */
export const POSITION_LOG_BYTES = 4096;
const HEADER_OFFSET = POSITION_LOG_BYTES;
const HEADER_BYTES = 8;
/** Each of the two state slots; a state is a few hundred bytes per memory region and vring. */
const SLOT_BYTES = 64 * 1024;
const SLOT_OFFSET = HEADER_OFFSET + 4096;
const JOURNAL_BYTES = SLOT_OFFSET + 2 * SLOT_BYTES;
/** Every name the daemon stores starts with this; the rest of LISTEN_FDNAMES is not its own. */
export const STORE_NAME_PREFIX = "vdi2c-";
const JOURNAL_ROLE = "journal";

/** The protocol-level part of a connection's state, as the back-end holds it. */
export interface ProtocolState {
  readonly features: bigint;
  readonly protocolFeatures: bigint;
  readonly status: number;
  readonly ownerSet: boolean;
  readonly backendReqFd: number | null;
}

type MutableVring = { -readonly [K in keyof VringState]: VringState[K] };

export class ConnectionJournal {
  readonly prefix: string;
  readonly #store: FdStore;
  readonly #fd: number;
  readonly #socketIndex: number;
  readonly #socket: number;
  #protocol: ProtocolState;
  #ringFeatures = 0n;
  #regions: { region: MemRegion; fd: number }[] = [];
  #vrings: MutableVring[];
  /** The stored fd of each name, to store a replacement and drop what went away. */
  readonly #stored = new Map<string, number>();
  #slot = 0;
  #closed = false;

  private constructor(
    store: FdStore,
    prefix: string,
    fd: number,
    socketIndex: number,
    socket: number,
    numQueues: number,
  ) {
    this.#store = store;
    this.prefix = prefix;
    this.#fd = fd;
    this.#socketIndex = socketIndex;
    this.#socket = socket;
    this.#protocol = {
      features: 0n,
      protocolFeatures: 0n,
      status: 0,
      ownerSet: false,
      backendReqFd: null,
    };
    this.#vrings = Array.from({ length: numQueues }, (_, index) => emptyVring(index));
  }

  /** A journal for a new connection on socket `socketIndex`: the socket and the journal stored. */
  static create(
    store: FdStore,
    socketIndex: number,
    socket: number,
    numQueues: number,
  ): ConnectionJournal {
    const prefix = `${STORE_NAME_PREFIX}s${socketIndex}-${randomBytes(4).toString("hex")}`;
    const fd = createMemfd(JOURNAL_BYTES, `${prefix}.${JOURNAL_ROLE}`);
    const journal = new ConnectionJournal(store, prefix, fd, socketIndex, socket, numQueues);
    try {
      journal.#put(JOURNAL_ROLE, fd);
      journal.#put("sock", socket);
      journal.#write();
    } catch (error) {
      journal.close();
      throw error;
    }
    return journal;
  }

  /**
   * The journal of a connection handed over or restored, its fds already in the store under their
   * names: takes the journal fd (closed with it) and records what is stored.
   */
  static adopt(store: FdStore, state: ConnectionState, numQueues: number): ConnectionJournal {
    const journal = state.journal;
    if (journal === null) throw new StateError("BAD_STATE", "the connection keeps no journal");
    const adopted = new ConnectionJournal(
      store,
      journal.prefix,
      journal.fd,
      state.socketIndex,
      state.socket,
      numQueues,
    );
    adopted.#protocol = protocolOf(state);
    adopted.#ringFeatures = state.rings.features;
    adopted.#regions = state.rings.regions.map((r) => ({ ...r }));
    for (const vring of state.rings.vrings) {
      if (vring.index < numQueues) adopted.#vrings[vring.index] = { ...vring, base: null };
    }
    for (const [role, fd] of adopted.#roles()) {
      const name = adopted.#name(role);
      if (!adopted.#stored.has(name)) adopted.#stored.set(name, fd);
    }
    adopted.#slot = readHeader(journal.fd)?.slot ?? 0;
    return adopted;
  }

  /** Records a whole connection (one handed over by a process that kept no journal) and commits. */
  record(state: ConnectionState): void {
    this.#ringFeatures = state.rings.features;
    this.#regions = state.rings.regions.map((r) => ({ ...r }));
    for (const vring of state.rings.vrings) {
      if (vring.index < this.#vrings.length) this.#vrings[vring.index] = { ...vring, base: null };
    }
    this.commit(state);
  }

  /** A copy of the journal fd for the rings' position log (the rings own it). */
  positionLogFd(): number {
    return dupFd(this.#fd);
  }

  /** The journal fd and prefix, for a handover (the journal object is done with). */
  release(): { prefix: string; fd: number } {
    this.#closed = true;
    return { prefix: this.prefix, fd: this.#fd };
  }

  // -------------------------------------------------------------------------------------------
  // What the rings were told (recorded once it succeeded, while its fds are still open)

  setRingFeatures(features: bigint): void {
    this.#ringFeatures = features;
  }

  setMemTable(regions: readonly MemRegion[], fds: readonly number[]): void {
    this.#regions = regions.map((region, i) => ({ region, fd: fds[i] as number }));
  }

  addMemRegion(region: MemRegion, fd: number): void {
    this.#regions = [...this.#regions, { region, fd }];
  }

  removeMemRegion(region: MemRegion): void {
    this.#regions = this.#regions.filter(
      (r) =>
        r.region.guestPhysAddr !== region.guestPhysAddr ||
        r.region.userAddr !== region.userAddr ||
        r.region.size !== region.size,
    );
  }

  setVringSize(index: number, size: number): void {
    this.#vring(index).size = size;
  }

  setVringAddr(addr: VringAddr): void {
    this.#vring(addr.index).addr = addr;
  }

  setVringFd(index: number, kind: VringFdKind, fd: number): void {
    this.#vring(index)[kind] = fd;
  }

  setVringEnabled(index: number, enabled: boolean): void {
    this.#vring(index).enabled = enabled;
  }

  /** GET_VRING_BASE stopped the ring: its kick fd is gone. */
  stopVring(index: number): void {
    this.#vring(index).kick = null;
  }

  resetRings(): void {
    this.#ringFeatures = 0n;
    this.#vrings = this.#vrings.map((v) => emptyVring(v.index));
  }

  /**
   * Brings the store and the journal in line with what was recorded and `protocol`: fds stored under
   * their names (replaced ones removed), the state written. Called after each request that succeeded.
   */
  commit(protocol: ProtocolState): void {
    if (this.#closed) return;
    this.#protocol = protocolOf(protocol);
    const wanted = new Map<string, number>();
    for (const [role, fd] of this.#roles()) {
      const name = this.#name(role);
      if (!wanted.has(name)) wanted.set(name, fd);
    }
    for (const [name, fd] of this.#stored) {
      if (wanted.get(name) !== fd) {
        this.#store.remove(name);
        this.#stored.delete(name);
      }
    }
    for (const [name, fd] of wanted) {
      if (this.#stored.get(name) === fd) continue;
      this.#store.store(name, fd);
      this.#stored.set(name, fd);
    }
    this.#write();
  }

  /** The connection ended: every fd it stored is dropped from the store; the journal closed. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const name of this.#stored.keys()) {
      try {
        this.#store.remove(name);
      } catch {
        // The service manager is gone: nothing holds the fds any more.
      }
    }
    this.#stored.clear();
    closeFdQuietly(this.#fd);
  }

  // -------------------------------------------------------------------------------------------

  #vring(index: number): MutableVring {
    const vring = this.#vrings[index];
    if (vring === undefined) throw new RangeError(`vring ${index} out of range`);
    return vring;
  }

  #name(role: string): string {
    return `${this.prefix}.${role}`;
  }

  #put(role: string, fd: number): void {
    const name = this.#name(role);
    this.#store.store(name, fd);
    this.#stored.set(name, fd);
  }

  /**
   * Every fd of the connection with its role. Regions of one file (QEMU splits a large guest's RAM
   * around the PCI hole, one memfd for both) share the first one's role: the service manager keeps
   * one copy of an open file however often it is stored, so only one name would come back.
   */
  *#roles(): Generator<[string, number]> {
    yield [JOURNAL_ROLE, this.#fd];
    yield ["sock", this.#socket];
    if (this.#protocol.backendReqFd !== null) yield ["breq", this.#protocol.backendReqFd];
    const files = new Map<string, string>();
    for (const { region, fd } of this.#regions) {
      const file = fileIdentity(fd);
      const role =
        files.get(file) ??
        `mem-${region.guestPhysAddr.toString(16)}-${region.userAddr.toString(16)}`;
      files.set(file, role);
      yield [role, fd];
    }
    for (const vring of this.#vrings) {
      for (const kind of ["kick", "call", "err"] as const) {
        const fd = vring[kind];
        if (fd !== null) yield [`${kind}${vring.index}`, fd];
      }
    }
  }

  #state(): ConnectionState {
    return {
      socketIndex: this.#socketIndex,
      socket: this.#socket,
      ...this.#protocol,
      journal: { prefix: this.prefix, fd: this.#fd },
      rings: {
        features: this.#ringFeatures,
        regions: this.#regions,
        vrings: this.#vrings.map((v) => ({ ...v, base: null })),
      },
    };
  }

  /** The state into the slot not in use, then the header that points at it. */
  #write(): void {
    const state = this.#state();
    // The names of the fds in the order encodeState numbers them: a restart finds them by name.
    const byFd = new Map<number, string>();
    for (const [role, fd] of this.#roles()) byFd.set(fd, this.#name(role));
    const names = fdsOfState(state).map((fd) => byFd.get(fd) as string);
    const bytes = Buffer.from(JSON.stringify({ names, state: encodeState(state) }), "utf8");
    if (bytes.length > SLOT_BYTES) throw new RangeError("connection state too large to journal");
    const slot = 1 - this.#slot;
    writeAll(this.#fd, bytes, SLOT_OFFSET + slot * SLOT_BYTES);
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32LE(slot, 0);
    header.writeUInt32LE(bytes.length, 4);
    writeAll(this.#fd, header, HEADER_OFFSET);
    this.#slot = slot;
  }
}

function protocolOf(state: ProtocolState): ProtocolState {
  const { features, protocolFeatures, status, ownerSet, backendReqFd } = state;
  return { features, protocolFeatures, status, ownerSet, backendReqFd };
}

function emptyVring(index: number): MutableVring {
  return {
    index,
    size: 0,
    addr: null,
    base: null,
    enabled: false,
    kick: null,
    call: null,
    err: null,
  };
}

/** What makes two fds one file for the service manager (the inode; regions are files). */
function fileIdentity(fd: number): string {
  const stat = fstatSync(fd, { bigint: true });
  return `${stat.dev}:${stat.ino}`;
}

function writeAll(fd: number, bytes: Buffer, position: number): void {
  for (let done = 0; done < bytes.length; ) {
    done += writeSync(fd, bytes, done, bytes.length - done, position + done);
  }
}

function readHeader(fd: number): { slot: number; length: number } | null {
  const header = Buffer.alloc(HEADER_BYTES);
  if (readSync(fd, header, 0, HEADER_BYTES, HEADER_OFFSET) !== HEADER_BYTES) return null;
  const slot = header.readUInt32LE(0);
  const length = header.readUInt32LE(4);
  if (slot > 1 || length === 0 || length > SLOT_BYTES) return null;
  return { slot, length };
}

/**
 * Reads the connection a journal describes, its fds found by name in `stored` (name → fd, what the
 * service manager passed back). StateError when the journal or its fds do not fit.
 */
export function readJournal(fd: number, stored: ReadonlyMap<string, number>): ConnectionState {
  const header = readHeader(fd);
  if (header === null) throw new StateError("BAD_STATE", "the journal has no state");
  const bytes = Buffer.alloc(header.length);
  const n = readSync(fd, bytes, 0, header.length, SLOT_OFFSET + header.slot * SLOT_BYTES);
  if (n !== header.length) throw new StateError("BAD_STATE", "the journal's state is cut short");
  let parsed: { names?: unknown; state?: unknown };
  try {
    parsed = JSON.parse(bytes.toString("utf8")) as typeof parsed;
  } catch {
    throw new StateError("BAD_STATE", "the journal's state is not JSON");
  }
  if (!Array.isArray(parsed.names) || typeof parsed.state !== "string") {
    throw new StateError("BAD_STATE", "the journal's state has no fd names");
  }
  const fds: number[] = [];
  const copies: number[] = [];
  try {
    for (const name of parsed.names) {
      const fd = typeof name === "string" ? stored.get(name) : undefined;
      if (fd === undefined) {
        throw new StateError(
          "BAD_STATE",
          `the fd "${String(name)}" of the journal was not passed back`,
        );
      }
      // A name used twice (regions of one file): each use gets an fd of its own.
      if (fds.includes(fd)) {
        const copy = dupFd(fd);
        copies.push(copy);
        fds.push(copy);
      } else fds.push(fd);
    }
    return decodeState(parsed.state, fds);
  } catch (error) {
    for (const copy of copies) closeFdQuietly(copy);
    throw error;
  }
}

/** Whether `name` is a journal's own name (one per stored connection). */
export function isJournalName(name: string): boolean {
  return name.startsWith(STORE_NAME_PREFIX) && name.endsWith(`.${JOURNAL_ROLE}`);
}

/** The prefix shared by every fd a connection stored (the name up to its role). */
export function storePrefixOf(name: string): string {
  const dot = name.lastIndexOf(".");
  return dot < 0 ? name : name.slice(0, dot);
}
