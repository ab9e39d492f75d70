/**
 * The state of a vhost-user connection as one process hands it to the next (a planned handover, or a
 * restart that gets its fds back from the service manager): what the front-end negotiated and told
 * the rings, with every fd the connection holds. In memory a state names fds by number; `encodeState`
 * turns it into JSON that names them by their index in an fd list (the order they travel in), and
 * `decodeState` checks every field before anything is built from it.
 * Must not: act on a state (backend.ts and rings.ts do) or move fds between processes (the CLI does).
 * @module
 */

import { CodedError } from "../errors.js";
import type { MemRegion, VringAddr } from "./codec.js";

/** One vring as the rings hold it. */
export interface VringState {
  readonly index: number;
  readonly size: number;
  readonly addr: VringAddr | null;
  /**
   * Where processing goes on (the GET_VRING_BASE value: split avail index; packed avail | used << 16),
   * or null when it must be recovered from the ring itself (a restart after a crash).
   */
  readonly base: number | null;
  readonly enabled: boolean;
  readonly kick: number | null;
  readonly call: number | null;
  readonly err: number | null;
}

/** A connection's rings: negotiated features, guest memory, vrings. */
export interface RingsState {
  readonly features: bigint;
  readonly regions: readonly { readonly region: MemRegion; readonly fd: number }[];
  readonly vrings: readonly VringState[];
}

/** Everything a connection holds. */
export interface ConnectionState {
  /** The socket it was accepted on (or connected for, in client mode). */
  readonly socketIndex: number;
  readonly socket: number;
  readonly features: bigint;
  readonly protocolFeatures: bigint;
  readonly status: number;
  readonly ownerSet: boolean;
  readonly backendReqFd: number | null;
  readonly rings: RingsState;
  /** The connection's journal in the service manager's fd store (journal.ts), if it keeps one. */
  readonly journal: { readonly prefix: string; readonly fd: number } | null;
}

export type StateErrorCode = "BAD_STATE";

/** A state that cannot be used: that connection is closed, the others go on. */
export class StateError extends CodedError<StateErrorCode> {}

/** Format of the encoded state; a successor that reads another refuses it. */
export const STATE_VERSION = 1;

/** Every fd of a state, socket first, in a fixed order (the order encodeState numbers them in). */
export function fdsOfState(state: ConnectionState): number[] {
  const fds = [state.socket];
  if (state.backendReqFd !== null) fds.push(state.backendReqFd);
  if (state.journal !== null) fds.push(state.journal.fd);
  for (const { fd } of state.rings.regions) fds.push(fd);
  for (const vring of state.rings.vrings) {
    for (const fd of [vring.kick, vring.call, vring.err]) if (fd !== null) fds.push(fd);
  }
  return fds;
}

/** JSON of `state` with each fd replaced by its position in `fdsOfState(state)`. */
export function encodeState(state: ConnectionState): string {
  const fds = fdsOfState(state);
  const at = (fd: number | null) => (fd === null ? null : fds.indexOf(fd));
  return JSON.stringify({
    version: STATE_VERSION,
    socketIndex: state.socketIndex,
    socket: at(state.socket),
    features: state.features.toString(16),
    protocolFeatures: state.protocolFeatures.toString(16),
    status: state.status,
    ownerSet: state.ownerSet,
    backendReqFd: at(state.backendReqFd),
    journal:
      state.journal === null ? null : { prefix: state.journal.prefix, fd: at(state.journal.fd) },
    rings: {
      features: state.rings.features.toString(16),
      regions: state.rings.regions.map(({ region, fd }) => ({ ...region, fd: at(fd) })),
      vrings: state.rings.vrings.map((vring) => ({
        ...vring,
        addr: vring.addr === null ? null : { ...vring.addr, log: vring.addr.log.toString(16) },
        kick: at(vring.kick),
        call: at(vring.call),
        err: at(vring.err),
      })),
    },
  });
}

/** Reads `text` back, fds taken from `fds` by position; StateError for anything malformed. */
export function decodeState(text: string, fds: readonly number[]): ConnectionState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new StateError("BAD_STATE", `state is not JSON: ${(error as Error).message}`);
  }
  const r = new Reader(raw, "state", fds);
  if (r.int("version") !== STATE_VERSION) {
    throw new StateError(
      "BAD_STATE",
      `state version ${String(r.field("version"))} is not ${STATE_VERSION}`,
    );
  }
  const rings = r.object("rings");
  const journal = r.field("journal") === null ? null : r.object("journal");
  const used = new Set<number>();
  const take = (reader: Reader, key: string, optional: boolean): number | null => {
    const fd = reader.fd(key, optional);
    if (fd === null) return null;
    if (used.has(fd)) throw new StateError("BAD_STATE", `${reader.where}.${key}: fd used twice`);
    used.add(fd);
    return fd;
  };
  const state: ConnectionState = {
    socketIndex: r.int("socketIndex"),
    socket: take(r, "socket", false) as number,
    features: r.bigHex("features"),
    protocolFeatures: r.bigHex("protocolFeatures"),
    status: r.int("status", 0xff),
    ownerSet: r.bool("ownerSet"),
    backendReqFd: take(r, "backendReqFd", true),
    journal:
      journal === null
        ? null
        : { prefix: journal.string("prefix"), fd: take(journal, "fd", false) as number },
    rings: {
      features: rings.bigHex("features"),
      regions: rings.list("regions").map((region) => ({
        region: {
          guestPhysAddr: region.int("guestPhysAddr"),
          size: region.int("size"),
          userAddr: region.int("userAddr"),
          mmapOffset: region.int("mmapOffset"),
        },
        fd: take(region, "fd", false) as number,
      })),
      vrings: rings.list("vrings").map((vring) => {
        const addr = vring.field("addr") === null ? null : vring.object("addr");
        return {
          index: vring.int("index", 0xffff),
          size: vring.int("size", 0x8000),
          addr:
            addr === null
              ? null
              : {
                  index: addr.int("index", 0xffff),
                  flags: addr.int("flags", 0xffffffff),
                  descUser: addr.int("descUser"),
                  usedUser: addr.int("usedUser"),
                  availUser: addr.int("availUser"),
                  log: addr.bigHex("log"),
                },
          base: vring.field("base") === null ? null : vring.int("base", 0xffffffff),
          enabled: vring.bool("enabled"),
          kick: take(vring, "kick", true),
          call: take(vring, "call", true),
          err: take(vring, "err", true),
        };
      }),
    },
  };
  if (used.size !== fds.length) {
    throw new StateError("BAD_STATE", `state names ${used.size} fds, ${fds.length} came with it`);
  }
  return state;
}

/** Typed access to one object of the parsed JSON, with the path for messages. */
class Reader {
  readonly #object: Record<string, unknown>;
  readonly where: string;
  readonly #fds: readonly number[];

  constructor(value: unknown, where: string, fds: readonly number[]) {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new StateError("BAD_STATE", `${where} is not an object`);
    }
    this.#object = value as Record<string, unknown>;
    this.where = where;
    this.#fds = fds;
  }

  field(key: string): unknown {
    return this.#object[key];
  }

  #bad(key: string, what: string): StateError {
    return new StateError("BAD_STATE", `${this.where}.${key} is not ${what}`);
  }

  int(key: string, max = Number.MAX_SAFE_INTEGER): number {
    const value = this.#object[key];
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0 || value > max) {
      throw this.#bad(key, `an integer from 0 to ${max}`);
    }
    return value;
  }

  bool(key: string): boolean {
    const value = this.#object[key];
    if (typeof value !== "boolean") throw this.#bad(key, "true or false");
    return value;
  }

  string(key: string): string {
    const value = this.#object[key];
    if (typeof value !== "string" || value === "") throw this.#bad(key, "a name");
    return value;
  }

  bigHex(key: string): bigint {
    const value = this.#object[key];
    if (typeof value !== "string" || !/^[0-9a-f]{1,16}$/.test(value)) {
      throw this.#bad(key, "a 64-bit hex number");
    }
    return BigInt(`0x${value}`);
  }

  fd(key: string, optional: boolean): number | null {
    const value = this.#object[key];
    if (value === null && optional) return null;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
      throw this.#bad(key, "an fd position");
    }
    const fd = this.#fds[value];
    if (fd === undefined) throw this.#bad(key, `one of the ${this.#fds.length} fds that came`);
    return fd;
  }

  object(key: string): Reader {
    return new Reader(this.#object[key], `${this.where}.${key}`, this.#fds);
  }

  list(key: string): Reader[] {
    const value = this.#object[key];
    if (!Array.isArray(value)) throw this.#bad(key, "a list");
    return value.map((item, i) => new Reader(item, `${this.where}.${key}[${i}]`, this.#fds));
  }
}
