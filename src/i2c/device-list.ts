/**
 * Parser for the `-l` device list: which adapters (host or emulated) and which addresses a guest may
 * use. Pure: adapter names are resolved through an injected callback; no file or device access here.
 *
 * Grammar (whitespace around every token is ignored):
 * ```
 * list    = group *("," group)
 * group   = bus 1*(":" device)
 * bus     = adapter-number (decimal) | adapter-name (may contain spaces) | "sim"
 * device  = addr                (host adapter)
 *         | addr "=" model      (on "sim", e.g. sim:0x50=24c02:0x51=24c02)
 * addr    = decimal | "0x" hex  (0..0x7f; decimal like the original daemon: 32 == 0x20)
 * ```
 * Guest addresses form one flat space: an address may appear once in the whole list.
 * @module
 */

import { hex, I2C_MAX_ADDR } from "./bus.js";
import { isModelName, MODEL_NAMES } from "./model.js";

export type BusRef = { kind: "host"; adapter: number } | { kind: "sim" };
/** `model` only on the sim bus (e.g. "24c02"). */
export interface DeviceSpec {
  addr: number;
  model?: string;
}
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
  | "MISSING_MODEL"
  | "UNKNOWN_MODEL"
  | "MODEL_ON_HOST_ADAPTER";

export class DeviceListError extends Error {
  readonly code: DeviceListErrorCode;
  /** 1-based group number the error is in, when it is in one. */
  readonly group: number | undefined;
  constructor(code: DeviceListErrorCode, message: string, group?: number, options?: ErrorOptions) {
    super(message, options);
    this.name = "DeviceListError";
    this.code = code;
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
    return { kind: "host", adapter: resolveAdapter(text) };
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
  const eq = token.indexOf("=");
  const addrText = (eq < 0 ? token : token.slice(0, eq)).trim();
  const modelText = eq < 0 ? undefined : token.slice(eq + 1).trim();
  const addr = parseAddress(addrText, where, group);
  if (bus.kind === "host") {
    if (modelText !== undefined) {
      throw new DeviceListError(
        "MODEL_ON_HOST_ADAPTER",
        `${where}: "${token}": device models are only allowed on "${SIM_BUS}", host adapters take plain addresses`,
        group,
      );
    }
    return { addr };
  }
  if (!modelText) {
    throw new DeviceListError(
      "MISSING_MODEL",
      `${where}: "${token}": an emulated device needs a model, e.g. ${hex(addr)}=24c02`,
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
  return { addr, model: modelText };
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
      return device;
    });
    groups.push({ bus, busText, devices });
  });
  return groups;
}
