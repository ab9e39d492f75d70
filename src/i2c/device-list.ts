/**
 * Parser for the `-l` device list: which adapters (host or emulated) and which addresses a guest may
 * use. Pure: adapter names are resolved through an injected callback; no file or device access here.
 *
 * Grammar (whitespace around every token is ignored):
 * ```
 * list    = group *("," group)
 * group   = bus 1*(":" device)
 * bus     = adapter-number (decimal) | adapter-name (may contain spaces) | "sim"
 * device  = addr ["@" addr] [ro]             (host adapter: host address, shown at guest address)
 *         | addr "=" model [ro]              (on "sim", e.g. sim:0x50=24c02:0x51=24c32=ro16)
 * ro      = "=ro" | "=ro16"                  (read-only; 8-bit or 16-bit register pointer)
 * addr    = decimal | "0x" hex  (0..0x7f; decimal like the original daemon: 32 == 0x20)
 * ```
 * `3:0x52@0x42=ro` is host address 0x52 on /dev/i2c-3, which the guest sees at 0x42, read-only: the
 * guest may write one register-address byte right before a read, nothing else; `=ro16` allows a
 * two-byte word address instead (24c32 and larger EEPROMs).
 * Guest addresses form one flat space: an address (after remapping) may appear once in the whole
 * list; a host address may appear once per adapter.
 * @module
 */

import { CodedError } from "../errors.js";
import type { PointerBytes } from "./access.js";
import { hex, I2C_MAX_ADDR } from "./bus.js";
import { isModelName, MODEL_NAMES } from "./model.js";

/** A host adapter keeps its sysfs name when it was given by name: it is looked up again on reopen. */
export type BusRef = { kind: "host"; adapter: number; name?: string } | { kind: "sim" };
/** `model` only on the sim bus (e.g. "24c02"); `hostAddr` only on a host adapter, when remapped. */
export interface DeviceSpec {
  /** The guest address. */
  addr: number;
  /** The address on the host adapter when it differs from the guest's (`<host>@<guest>`). */
  hostAddr?: number;
  model?: string;
  /** `=ro`/`=ro16`: reads only, plus a register address written right before a read. */
  readOnly?: boolean;
  /** `=ro16`: the register address is 2 bytes (absent: 1 byte, `=ro`). */
  pointerBytes?: PointerBytes;
}

/** The suffix that makes a device read-only, with an 8-bit register pointer. */
export const READ_ONLY_SUFFIX = "ro";
/** The suffix that makes a device read-only, with a 16-bit register (word) pointer. */
export const READ_ONLY_16_SUFFIX = "ro16";
/** Read-only suffix → register pointer width. */
const READ_ONLY_SUFFIXES: ReadonlyMap<string, PointerBytes> = new Map([
  [READ_ONLY_SUFFIX, 1],
  [READ_ONLY_16_SUFFIX, 2],
]);
/** How the read-only suffixes are named in messages. */
const READ_ONLY_SPELLINGS = `"=${READ_ONLY_SUFFIX}" or "=${READ_ONLY_16_SUFFIX}"`;
/** Looks like a read-only suffix with a wrong width ("ro8", "ro2", "RO"), to name it as such. */
const NEAR_READ_ONLY = /^ro/i;
export interface DeviceGroup {
  bus: BusRef;
  /** The bus as written in the list (trimmed), for messages. */
  busText: string;
  devices: DeviceSpec[];
}

export type DeviceListErrorCode =
  | "EMPTY_LIST"
  | "EMPTY_GROUP"
  | "MISSING_ADAPTER"
  | "BAD_ADAPTER_NUMBER"
  | "ADAPTER_NOT_FOUND"
  | "DUPLICATE_ADAPTER"
  | "MISSING_ADDRESS"
  | "BAD_ADDRESS"
  | "ADDRESS_OUT_OF_RANGE"
  | "DUPLICATE_ADDRESS"
  | "DUPLICATE_HOST_ADDRESS"
  | "BAD_SUFFIX"
  | "REMAP_ON_SIM"
  | "MISSING_MODEL"
  | "UNKNOWN_MODEL"
  | "MODEL_ON_HOST_ADAPTER";

export class DeviceListError extends CodedError<DeviceListErrorCode> {
  /** 1-based group number the error is in, when it is in one. */
  readonly group: number | undefined;
  constructor(code: DeviceListErrorCode, message: string, group?: number, options?: ErrorOptions) {
    super(code, message, options);
    this.group = group;
  }
}

/** The keyword that selects the emulated bus. */
export const SIM_BUS = "sim";

const DECIMAL = /^[0-9]+$/;
const HEX = /^0x[0-9a-f]+$/i;
/** Adapter numbers are minors of /dev/i2c-N (20 bits). */
const MAX_ADAPTER_NUMBER = (1 << 20) - 1;

/** Parses an address token: decimal or 0x hex, 0..0x7f. `where` prefixes error messages. */
function parseAddress(token: string, where: string, group: number): number {
  if (token === "") {
    throw new DeviceListError("MISSING_ADDRESS", `${where}: empty address`, group);
  }
  if (!DECIMAL.test(token) && !HEX.test(token)) {
    throw new DeviceListError(
      "BAD_ADDRESS",
      `${where}: address "${token}" is not a decimal or 0x-hex number`,
      group,
    );
  }
  const addr = Number(token);
  if (addr > I2C_MAX_ADDR) {
    throw new DeviceListError(
      "ADDRESS_OUT_OF_RANGE",
      `${where}: address ${token} is above 0x7f (7-bit addresses only)`,
      group,
    );
  }
  return addr;
}

function parseBus(
  text: string,
  where: string,
  group: number,
  resolveAdapter: (name: string) => number,
): BusRef {
  if (text === "")
    throw new DeviceListError("MISSING_ADAPTER", `${where}: no adapter before ":"`, group);
  if (text === SIM_BUS) return { kind: "sim" };
  if (DECIMAL.test(text)) {
    const adapter = Number(text);
    if (adapter > MAX_ADAPTER_NUMBER) {
      throw new DeviceListError(
        "BAD_ADAPTER_NUMBER",
        `${where}: adapter number ${text} is too large`,
        group,
      );
    }
    return { kind: "host", adapter };
  }
  try {
    return { kind: "host", adapter: resolveAdapter(text), name: text };
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new DeviceListError(
      "ADAPTER_NOT_FOUND",
      `${where}: adapter "${text}": ${reason}`,
      group,
      {
        cause,
      },
    );
  }
}

function parseDevice(token: string, bus: BusRef, where: string, group: number): DeviceSpec {
  const [addrPart = "", ...suffixes] = token.split("=").map((part) => part.trim());
  const at = addrPart.indexOf("@");
  const firstText = (at < 0 ? addrPart : addrPart.slice(0, at)).trim();
  const first = parseAddress(firstText, where, group);
  const pointerBytes = READ_ONLY_SUFFIXES.get(suffixes.at(-1) ?? "");
  if (pointerBytes !== undefined) suffixes.pop();
  const readOnly =
    pointerBytes === undefined
      ? {}
      : { readOnly: true, ...(pointerBytes === 1 ? {} : { pointerBytes }) };
  const misplaced = suffixes.find((s) => READ_ONLY_SUFFIXES.has(s));
  if (misplaced !== undefined) {
    throw new DeviceListError(
      "BAD_SUFFIX",
      `${where}: "${token}": ${READ_ONLY_SPELLINGS} may be given once, at the end`,
      group,
    );
  }
  const unknownRo = bus.kind === "host" ? suffixes[0] : suffixes[1];
  if (unknownRo !== undefined && NEAR_READ_ONLY.test(unknownRo)) {
    throw new DeviceListError(
      "BAD_SUFFIX",
      `${where}: "${token}": unknown read-only suffix "=${unknownRo}"; use "=${READ_ONLY_SUFFIX}" (8-bit register address) or "=${READ_ONLY_16_SUFFIX}" (16-bit word address, 24c32 and larger EEPROMs)`,
      group,
    );
  }
  if (bus.kind === "host") {
    if (suffixes.length > 0) {
      throw new DeviceListError(
        "MODEL_ON_HOST_ADAPTER",
        `${where}: "${token}": device models are only allowed on "${SIM_BUS}", host adapters take an address, <host>@<guest> and ${READ_ONLY_SPELLINGS}`,
        group,
      );
    }
    const spec: DeviceSpec = { addr: first };
    if (at >= 0) {
      spec.addr = parseAddress(addrPart.slice(at + 1).trim(), where, group);
      spec.hostAddr = first;
    }
    return { ...spec, ...readOnly };
  }
  if (at >= 0) {
    throw new DeviceListError(
      "REMAP_ON_SIM",
      `${where}: "${token}": "@" remaps host devices; an emulated device sits at its guest address`,
      group,
    );
  }
  const [modelText, ...extra] = suffixes;
  if (!modelText) {
    throw new DeviceListError(
      "MISSING_MODEL",
      `${where}: "${token}": an emulated device needs a model, e.g. ${hex(first)}=24c02`,
      group,
    );
  }
  if (extra.length > 0) {
    throw new DeviceListError(
      "BAD_SUFFIX",
      `${where}: "${token}": after the model only ${READ_ONLY_SPELLINGS} may follow`,
      group,
    );
  }
  if (!isModelName(modelText)) {
    throw new DeviceListError(
      "UNKNOWN_MODEL",
      `${where}: unknown device model "${modelText}" (known: ${MODEL_NAMES.join(", ")})`,
      group,
    );
  }
  return { addr: first, model: modelText, ...readOnly };
}

/**
 * Parses the device list. Throws DeviceListError (stable `.code`; the message names the group and the
 * offending token). `resolveAdapter(name)` turns an adapter name into its number or throws.
 *
 * @example
 * ```ts
 * parseDeviceList("1:4,i915 gmbus dpd:0x50,sim:0x51=24c02", resolveAdapter);
 * // [{ bus: { kind: "host", adapter: 1 }, busText: "1", devices: [{ addr: 4 }] }, ...]
 * ```
 */
export function parseDeviceList(
  text: string,
  resolveAdapter: (name: string) => number,
): DeviceGroup[] {
  if (text.trim() === "") throw new DeviceListError("EMPTY_LIST", "the device list is empty");
  const groups: DeviceGroup[] = [];
  const addressOwner = new Map<number, number>(); // guest address → group number
  const adapterOwner = new Map<string, number>(); // "sim" or adapter number → group number

  text.split(",").forEach((rawGroup, index) => {
    const group = index + 1;
    const groupText = rawGroup.trim();
    const where = `group ${group} ("${groupText}")`;
    if (groupText === "") {
      throw new DeviceListError("EMPTY_GROUP", `group ${group} is empty (stray ",")`, group);
    }
    const [rawBus = "", ...deviceTokens] = groupText.split(":");
    const busText = rawBus.trim();
    const bus = parseBus(busText, where, group, resolveAdapter);

    const adapterKey = bus.kind === "sim" ? SIM_BUS : String(bus.adapter);
    const previousGroup = adapterOwner.get(adapterKey);
    if (previousGroup !== undefined) {
      const which = bus.kind === "sim" ? `"${SIM_BUS}"` : `adapter ${bus.adapter}`;
      throw new DeviceListError(
        "DUPLICATE_ADAPTER",
        `${where}: ${which} is already listed in group ${previousGroup} ("${groups[previousGroup - 1]?.busText}")`,
        group,
      );
    }
    adapterOwner.set(adapterKey, group);

    if (deviceTokens.length === 0) {
      throw new DeviceListError("MISSING_ADDRESS", `${where}: no address after the adapter`, group);
    }
    const hostAddrs = new Set<number>();
    const devices = deviceTokens.map((token) => {
      const device = parseDevice(token.trim(), bus, where, group);
      const owner = addressOwner.get(device.addr);
      if (owner !== undefined) {
        throw new DeviceListError(
          "DUPLICATE_ADDRESS",
          `${where}: address ${device.addr} (${hex(device.addr)}) is already listed${owner === group ? " in this group" : ` in group ${owner}`}`,
          group,
        );
      }
      addressOwner.set(device.addr, group);
      const hostAddr = device.hostAddr ?? device.addr;
      if (hostAddrs.has(hostAddr)) {
        throw new DeviceListError(
          "DUPLICATE_HOST_ADDRESS",
          `${where}: host address ${hex(hostAddr)} is listed twice on this adapter (one device, one guest address)`,
          group,
        );
      }
      hostAddrs.add(hostAddr);
      return device;
    });
    groups.push({ bus, busText, devices });
  });
  return groups;
}
