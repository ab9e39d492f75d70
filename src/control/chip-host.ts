/**
 * The side of the control socket where the chips live: `describeChips` gives a DeviceDirectory as a
 * ChipDirectory and `answerChipRequest` answers one ChipRequest against it, both synchronous and
 * plain data in, plain data out, so the thread that holds the chips needs nothing else to serve
 * them. `inProcessChips` is the ChipAccess for chips of this thread. Runs model code (property
 * get/set, memory read/write) and turns whatever it throws into a reply. Must not: throw, keep any
 * state but chip ids, or know where the requests come from.
 * @module
 */

import type { DeviceDirectory, DirectoryEntry } from "../config/devices.js";
import { reasonOf } from "../config/errors.js";
import type { DeviceProperty, SimDevice } from "../i2c/model.js";
import {
  type ChipAccess,
  type ChipDescription,
  type ChipDirectory,
  type ChipId,
  type ChipReply,
  type ChipRequest,
  checkMemoryRange,
  checkWritable,
  chipAccess,
  describedProperty,
  type PropertyDescription,
} from "./chips.js";
import { ControlError, formatDeviceRef } from "./protocol.js";

/** Chip ids by chip: a chip kept across reloads (the same SimDevice) keeps its id. */
const chipIds = new WeakMap<SimDevice, ChipId>();
let chipCount = 0;

function chipIdOf(device: SimDevice): ChipId {
  let id = chipIds.get(device);
  if (id === undefined) {
    chipCount++;
    id = String(chipCount);
    chipIds.set(device, id);
  }
  return id;
}

function describeChip(entry: DirectoryEntry): ChipDescription {
  return {
    id: chipIdOf(entry.device),
    address: entry.address,
    model: entry.model,
    sockets: [...entry.sockets],
    properties: Object.entries(entry.device.properties ?? {}).map(([name, property]) => ({
      name,
      description: String(property.description),
      writable: typeof property.set === "function",
    })),
    memorySize: entry.device.memory?.size ?? null,
  };
}

/** The directory as plain data, in its order. */
export function describeChips(directory: DeviceDirectory): ChipDirectory {
  return directory.map(describeChip);
}

/** Runs model code: an error naming a code (ModelError) is the model refusing, EINVAL. */
function callModel<T>(what: string, call: () => T): T {
  try {
    return call();
  } catch (error) {
    if (error instanceof ControlError) throw error;
    const refused = error instanceof Error && "code" in error;
    throw new ControlError(refused ? "EINVAL" : "EMODEL", `${what}: ${reasonOf(error)}`);
  }
}

/** The entry of the chip, checked against its own description. */
interface Target {
  readonly entry: DirectoryEntry;
  readonly description: ChipDescription;
  /** How messages name it: `<first guest>:<address>`, valid whatever the other chips are. */
  readonly label: string;
}

function target(directory: DeviceDirectory, chip: ChipId): Target {
  const entry = directory.find((candidate) => chipIds.get(candidate.device) === chip);
  if (entry === undefined) {
    throw new ControlError(
      "ENODEV",
      "the emulated device is gone (the configuration was reloaded)",
    );
  }
  const label = formatDeviceRef({ addr: entry.address, guest: entry.sockets[0] ?? 0 });
  return { entry, description: describeChip(entry), label };
}

/** The property and its description. Throws ENOPROP. */
function property(
  { entry, description, label }: Target,
  name: string,
): { readonly found: DeviceProperty; readonly describedAs: PropertyDescription } {
  const describedAs = describedProperty(description, label, name);
  const found = entry.device.properties?.[name];
  if (found === undefined) throw new Error(`property "${name}" vanished`);
  return { found, describedAs };
}

/** The guests given, each checked to see the chip (a fault never reaches a guest that does not). */
function seenBy({ entry, label }: Target, guests: readonly number[]): readonly number[] {
  for (const guest of guests) {
    if (!entry.sockets.includes(guest)) {
      throw new ControlError("ENODEV", `guest ${guest} does not see ${label}`);
    }
  }
  return guests;
}

/** A copy holding only `bytes`: a view of a larger buffer would carry all of it across threads. */
function ownBytes(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
    ? bytes
    : bytes.slice();
}

function answer(directory: DeviceDirectory, request: ChipRequest): ChipReply {
  const chip = target(directory, request.chip);
  switch (request.op) {
    case "values": {
      const values = Object.entries(chip.entry.device.properties ?? {}).map(
        ([name, found]) => [name, callModel(`${name}.get`, () => found.get())] as const,
      );
      return { op: "values", values: Object.fromEntries(values) };
    }
    case "get": {
      const { found } = property(chip, request.name);
      return { op: "get", value: callModel(request.name, () => found.get()) };
    }
    case "set": {
      const { found, describedAs } = property(chip, request.name);
      checkWritable(describedAs);
      callModel(`cannot set ${request.name}`, () => found.set?.(request.value));
      return { op: "set", value: callModel(request.name, () => found.get()) };
    }
    case "read": {
      const { offset, length } = request;
      checkMemoryRange(chip.description, chip.label, offset, length);
      const memory = chip.entry.device.memory;
      const bytes = callModel("read", () => memory?.read(offset, length));
      if (!(bytes instanceof Uint8Array)) throw new Error("the model's read returned no bytes");
      return { op: "read", bytes: ownBytes(bytes) };
    }
    case "write": {
      const { offset, data } = request;
      checkMemoryRange(chip.description, chip.label, offset, data.length);
      const memory = chip.entry.device.memory;
      callModel("write", () => memory?.write(offset, data));
      return { op: "write" };
    }
    case "setFault":
      for (const guest of seenBy(chip, request.guests)) {
        chip.entry.faults.forGuest(guest).add(request.fault);
      }
      return { op: "setFault" };
    case "clearFaults": {
      let removed = 0;
      for (const guest of seenBy(chip, request.guests)) {
        removed += chip.entry.faults.forGuest(guest).clear();
      }
      return { op: "clearFaults", removed };
    }
    case "faults":
      return {
        op: "faults",
        guests: chip.entry.sockets.map((guest) => {
          const faults = chip.entry.faults.forGuest(guest);
          return { guest, faults: faults.list(), injected: faults.injected };
        }),
      };
  }
}

/**
 * Answers one request against the chips of `directory` (the one `describeChips` described, or a
 * later one: a chip that is gone is ENODEV). Never throws: refusals and model failures are "failed"
 * replies, a fault of this code a "crashed" one.
 */
export function answerChipRequest(directory: DeviceDirectory, request: ChipRequest): ChipReply {
  try {
    return answer(directory, request);
  } catch (error) {
    if (error instanceof ControlError) {
      return { op: "failed", error: { code: error.code, message: error.message } };
    }
    return { op: "crashed", reason: reasonOf(error) };
  }
}

/**
 * The chips `source` returns, in this thread: asked again at every command, so a reload is served at
 * once.
 */
export function inProcessChips(source: () => DeviceDirectory): ChipAccess {
  return chipAccess({
    directory: () => describeChips(source()),
    request: async (request) => answerChipRequest(source(), request),
  });
}
