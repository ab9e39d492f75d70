/**
 * How the control socket reaches emulated chips, wherever they run (this thread or another): the
 * chips described as plain data (ChipDirectory), one operation asked and answered as plain data
 * (ChipRequest, ChipReply; structured-cloneable: no class instances, no functions), and ChipAccess,
 * the asynchronous accessor the server calls, built by `chipAccess` over any ChipTransport. Owns the
 * checks a command gets against a chip's description (ENOPROP, EREADONLY, ENOMEM, ERANGE), run once
 * before a request is sent and again where it is answered (the description may be older than the
 * chip). Must not: hold a chip, run model code (chip-host.ts does), or know how requests travel.
 * @module
 */

import type { FaultSpec, FaultStatus } from "../i2c/faults.js";
import type { DeviceProperty } from "../i2c/model.js";
import { ControlError, type ControlErrorCode } from "./protocol.js";

/**
 * Names one chip for as long as it exists: the same chip keeps its id across configuration reloads,
 * and an id is never given to another chip. Unique within the thread that holds the chips; a
 * transport serving chips of several threads qualifies the ids it passes on.
 */
export type ChipId = string;

/** What a property reads as. */
export type PropertyValue = ReturnType<DeviceProperty["get"]>;

/** A property of a chip, without its value. */
export interface PropertyDescription {
  readonly name: string;
  readonly description: string;
  /** False: `set` is refused (EREADONLY). */
  readonly writable: boolean;
}

/** One emulated chip as plain data: what the control socket needs to name, list and check it. */
export interface ChipDescription {
  readonly id: ChipId;
  /** Base guest address (a 24c16 answers on this and the next 7). */
  readonly address: number;
  /** Model name (a user module's ModelDefinition.name). */
  readonly model: string;
  /** Socket indexes (guests) whose list has this chip, ascending; never empty. */
  readonly sockets: readonly number[];
  /** In the model's order. */
  readonly properties: readonly PropertyDescription[];
  /** Bytes of memory `read`/`write` reach; null: the chip has none. */
  readonly memorySize: number | null;
}

/** Every emulated chip of one configuration, in DeviceDirectory order (address, then first socket). */
export type ChipDirectory = readonly ChipDescription[];

/** One operation on one chip. */
export type ChipRequest =
  /** Every property's value, in the model's order (the `list` reply). */
  | { readonly op: "values"; readonly chip: ChipId }
  | { readonly op: "get"; readonly chip: ChipId; readonly name: string }
  /** Sets the property from text, then reads it back. */
  | { readonly op: "set"; readonly chip: ChipId; readonly name: string; readonly value: string }
  | { readonly op: "read"; readonly chip: ChipId; readonly offset: number; readonly length: number }
  | {
      readonly op: "write";
      readonly chip: ChipId;
      readonly offset: number;
      readonly data: Uint8Array;
    }
  /** Sets the fault for each of `guests` (sockets that see the chip). */
  | {
      readonly op: "setFault";
      readonly chip: ChipId;
      readonly guests: readonly number[];
      readonly fault: FaultSpec;
    }
  /** Removes every fault of the chip for each of `guests`. */
  | { readonly op: "clearFaults"; readonly chip: ChipId; readonly guests: readonly number[] }
  /** The chip's faults, per guest that sees it. */
  | { readonly op: "faults"; readonly chip: ChipId };

/** One guest's faults on one chip. */
export interface GuestFaults {
  readonly guest: number;
  /** The faults still set. */
  readonly faults: readonly FaultStatus[];
  /** Every firing so far, of faults still set or since removed. */
  readonly injected: number;
}

/**
 * A refusal or failure, as the client hears it: `error <code> <message>`. A ControlError becomes its
 * code and message; a model's refusal (an error naming a code, such as ModelError) EINVAL, anything
 * else it throws EMODEL, both with the operation named before the model's message.
 */
export interface ChipError {
  readonly code: ControlErrorCode;
  readonly message: string;
}

/** The answer to one ChipRequest. */
export type ChipReply =
  | { readonly op: "values"; readonly values: Readonly<Record<string, PropertyValue>> }
  | { readonly op: "get"; readonly value: PropertyValue }
  /** The value read back after setting it. */
  | { readonly op: "set"; readonly value: PropertyValue }
  /** A copy of its own: no view of a larger buffer travels. */
  | { readonly op: "read"; readonly bytes: Uint8Array }
  | { readonly op: "write" }
  | { readonly op: "setFault" }
  /** How many faults were removed, over all the guests. */
  | { readonly op: "clearFaults"; readonly removed: number }
  /** In socket order. */
  | { readonly op: "faults"; readonly guests: readonly GuestFaults[] }
  | { readonly op: "failed"; readonly error: ChipError }
  /** A fault of the answering code itself, not of the model: logged, the client hears "internal error". */
  | { readonly op: "crashed"; readonly reason: string };

/**
 * What the main thread needs to reach chips that live elsewhere; `chipAccess` turns it into a
 * ChipAccess. Where the chips live, `describeChips` and `answerChipRequest` (chip-host.ts) produce
 * what it returns.
 */
export interface ChipTransport {
  /** The chips of the current configuration; asked at every command that names or lists chips. */
  directory(): ChipDirectory | Promise<ChipDirectory>;
  /**
   * Delivers one request where its chip lives and resolves with the reply. Rejects only when it
   * cannot deliver it or get the reply; the control server then answers within its reply timeout.
   */
  request(request: ChipRequest): Promise<ChipReply>;
}

/**
 * The chips as the control server uses them. Every operation settles with the value, or rejects with
 * a ControlError whose code and message are the reply the client gets (any other error is a fault,
 * logged and answered "internal error").
 */
export interface ChipAccess {
  directory(): Promise<ChipDirectory>;
  /** Every property's value by name, in the model's order. */
  propertyValues(chip: ChipId): Promise<Readonly<Record<string, PropertyValue>>>;
  getProperty(chip: ChipId, name: string): Promise<PropertyValue>;
  /** Sets the property from text; resolves with the value it reads back. */
  setProperty(chip: ChipId, name: string, value: string): Promise<PropertyValue>;
  readMemory(chip: ChipId, offset: number, length: number): Promise<Uint8Array>;
  writeMemory(chip: ChipId, offset: number, data: Uint8Array): Promise<void>;
  setFault(chip: ChipId, guests: readonly number[], fault: FaultSpec): Promise<void>;
  /** Resolves with how many faults were removed. */
  clearFaults(chip: ChipId, guests: readonly number[]): Promise<number>;
  listFaults(chip: ChipId): Promise<readonly GuestFaults[]>;
}

/** The property `name` of `chip` (called `label` in messages). Throws ENOPROP. */
export function describedProperty(
  chip: ChipDescription,
  label: string,
  name: string,
): PropertyDescription {
  const found = chip.properties.find((property) => property.name === name);
  if (found === undefined) {
    const known = chip.properties.map((property) => property.name);
    throw new ControlError(
      "ENOPROP",
      `${label} has no property "${name}" (known: ${known.length ? known.join(", ") : "none"})`,
    );
  }
  return found;
}

/** Throws EREADONLY unless the property can be set. */
export function checkWritable(property: PropertyDescription): void {
  if (!property.writable) {
    throw new ControlError("EREADONLY", `property "${property.name}" is read-only`);
  }
}

/** Throws ENOMEM when `chip` (called `label`) has no memory, ERANGE when the bytes run past it. */
export function checkMemoryRange(
  chip: ChipDescription,
  label: string,
  offset: number,
  length: number,
): void {
  const size = chip.memorySize;
  if (size === null) throw new ControlError("ENOMEM", `${label} has no memory`);
  if (offset + length > size) {
    throw new ControlError(
      "ERANGE",
      `${length} byte(s) at offset ${offset} exceed the ${size}-byte memory of ${label}`,
    );
  }
}

/** The reply of `transport` to `request`: a failure thrown as the ControlError it describes. */
async function answered(
  transport: ChipTransport,
  request: ChipRequest,
): Promise<Exclude<ChipReply, { op: "failed" | "crashed" }>> {
  const reply = await transport.request(request);
  if (reply.op === "failed") throw new ControlError(reply.error.code, reply.error.message);
  if (reply.op === "crashed") throw new Error(reply.reason);
  return reply;
}

function mismatch(request: ChipRequest, reply: ChipReply): Error {
  return new Error(`a "${request.op}" request was answered "${reply.op}"`);
}

/** A ChipAccess over a transport: each operation one request, its reply checked. */
export function chipAccess(transport: ChipTransport): ChipAccess {
  return {
    directory: async () => transport.directory(),
    async propertyValues(chip) {
      const request = { op: "values", chip } as const;
      const reply = await answered(transport, request);
      if (reply.op !== "values") throw mismatch(request, reply);
      return reply.values;
    },
    async getProperty(chip, name) {
      const request = { op: "get", chip, name } as const;
      const reply = await answered(transport, request);
      if (reply.op !== "get") throw mismatch(request, reply);
      return reply.value;
    },
    async setProperty(chip, name, value) {
      const request = { op: "set", chip, name, value } as const;
      const reply = await answered(transport, request);
      if (reply.op !== "set") throw mismatch(request, reply);
      return reply.value;
    },
    async readMemory(chip, offset, length) {
      const request = { op: "read", chip, offset, length } as const;
      const reply = await answered(transport, request);
      if (reply.op !== "read") throw mismatch(request, reply);
      return reply.bytes;
    },
    async writeMemory(chip, offset, data) {
      const request = { op: "write", chip, offset, data } as const;
      const reply = await answered(transport, request);
      if (reply.op !== "write") throw mismatch(request, reply);
    },
    async setFault(chip, guests, fault) {
      const request = { op: "setFault", chip, guests, fault } as const;
      const reply = await answered(transport, request);
      if (reply.op !== "setFault") throw mismatch(request, reply);
    },
    async clearFaults(chip, guests) {
      const request = { op: "clearFaults", chip, guests } as const;
      const reply = await answered(transport, request);
      if (reply.op !== "clearFaults") throw mismatch(request, reply);
      return reply.removed;
    },
    async listFaults(chip) {
      const request = { op: "faults", chip } as const;
      const reply = await answered(transport, request);
      if (reply.op !== "faults") throw mismatch(request, reply);
      return reply.guests;
    },
  };
}
