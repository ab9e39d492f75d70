/**
 * The `--config FILE` loader: JSON text → validated DeviceConfig[]. Owns the file's schema and its
 * error messages (file, key path, what was expected, what was found; unknown keys are errors) and the
 * resolution of relative paths (model modules, `backing`, `initial.file`) against the file's directory:
 * `"initial": {"file": path}` is read here into bytes, which the models' hex-bytes option accepts.
 * Must not import model modules or create devices: modules.ts and devices.ts do, after this.
 *
 * Schema (`devices` is the default list, for sockets without their own; `sockets` gives lists per
 * socket index, as an object keyed "0", "1", ... or as an array; at least one of the two):
 * ```
 * { "devices": [
 *     { "bus": "sim", "address": "0x50" | 80, "model": "24c32", "options": { ... } },
 *     { "bus": "sim", "address": ..., "module": "./my-chip.js", "options": { ... } },
 *     { "bus": 3 | "adapter name", "address": ..., "hostAddress": ... } ],
 *   "sockets": { "1": { "devices": [ ... ] } } }
 * ```
 * Every device may say `"readOnly": true` and `"shared": true`; `hostAddress` (host adapters only) is
 * the address on the adapter when the guest sees the device at `address`. A read-only device may say
 * `"pointerBytes": 1 | 2`, the width of its register pointer (default 1; 2 for 16-bit word addresses,
 * 24c32 and larger EEPROMs): the only write it takes is exactly that many bytes before a read.
 * Every device may say `"faults": [{"fault": "nack", "every": 3}, ...]` (the faults every guest
 * that reaches it starts with) and `"stretch": {"usPerTransfer": N, "usPerByte": N}` (clock
 * stretching); src/i2c/faults.ts owns their fields.
 * @module
 */

import { dirname, resolve } from "node:path";
import { isPointerBytes, type PointerBytes } from "../i2c/access.js";
import { hex, I2C_MAX_ADDR } from "../i2c/bus.js";
import { SIM_BUS } from "../i2c/device-list.js";
import {
  FaultError,
  type FaultSpec,
  parseFaultSpec,
  parseStretch,
  type Stretch,
} from "../i2c/faults.js";
import type { DeviceConfig } from "./devices.js";
import { ConfigError, describeValue, reasonOf } from "./errors.js";
import { readConfigInput } from "./trusted-input.js";

export interface ConfigFileDeps {
  /** Adapter name → number; throws when not exactly one adapter has that name. */
  readonly resolveAdapter: (name: string) => number;
}

export interface LoadedConfigFile {
  /** Absolute path of the file. */
  readonly path: string;
  /** Its directory: relative paths in it resolve here. */
  readonly dir: string;
  readonly devices: DeviceConfig[];
  /** Socket index → that socket's own device list. */
  readonly sockets: ReadonlyMap<number, DeviceConfig[]>;
}

/** What a config file says: the default list and the per-socket lists. */
export interface ConfigDocument {
  readonly devices: DeviceConfig[];
  readonly sockets: ReadonlyMap<number, DeviceConfig[]>;
}

/** Option keys that hold file paths, resolved against the config file's directory. */
const PATH_OPTIONS = ["backing"] as const;

const TOP_KEYS = ["devices", "sockets"] as const;
const SOCKET_KEYS = ["devices"] as const;
const SIM_KEYS = [
  "bus",
  "address",
  "model",
  "module",
  "options",
  "readOnly",
  "pointerBytes",
  "shared",
  "faults",
  "stretch",
] as const;
const HOST_KEYS = [
  "bus",
  "address",
  "hostAddress",
  "readOnly",
  "pointerBytes",
  "shared",
  "faults",
  "stretch",
] as const;
/** Highest socket index a "sockets" key may name (the daemon serves at most 64). */
const MAX_SOCKET_INDEX = 63;
const DECIMAL = /^[0-9]+$/;
const HEX = /^0x[0-9a-f]+$/i;
/** Adapter numbers are minors of /dev/i2c-N (20 bits). */
const MAX_ADAPTER_NUMBER = (1 << 20) - 1;

/** Reads and validates a config file. Throws ConfigError. */
export function loadConfigFile(file: string, deps: ConfigFileDeps): LoadedConfigFile {
  const path = resolve(file);
  const text = readConfigInput(path, { where: "", what: `config file ${path}` }).toString("utf8");
  return { path, dir: dirname(path), ...parseConfigDocument(text, path, deps) };
}

/** The default device list of a config file's text (see parseConfigDocument). */
export function parseConfigText(text: string, path: string, deps: ConfigFileDeps): DeviceConfig[] {
  return parseConfigDocument(text, path, deps).devices;
}

/** Validates the text of a config file named `path` (relative paths resolve against its directory). */
export function parseConfigDocument(
  text: string,
  path: string,
  deps: ConfigFileDeps,
): ConfigDocument {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError("CONFIG_BAD_JSON", `${path}: not valid JSON: ${reasonOf(err)}`, {
      cause: err,
    });
  }
  const reader = new SchemaReader(path, dirname(resolve(path)), deps);
  return reader.readTop(json);
}

/** Walks the parsed JSON; every refusal goes through `fail` so messages share one shape. */
class SchemaReader {
  readonly #file: string;
  readonly #dir: string;
  readonly #deps: ConfigFileDeps;

  constructor(file: string, dir: string, deps: ConfigFileDeps) {
    this.#file = file;
    this.#dir = dir;
    this.#deps = deps;
  }

  readTop(json: unknown): ConfigDocument {
    const top = this.#object(json, "(top level)", `an object like {"devices": [...]}`);
    this.#onlyKeys(top, TOP_KEYS, "");
    if (!("devices" in top) && !("sockets" in top)) {
      this.#fail("devices", `an array of devices (or "sockets" with per-socket lists)`, undefined);
    }
    const devices = "devices" in top ? this.#readList(top.devices, "devices") : [];
    const sockets = new Map<number, DeviceConfig[]>();
    if ("sockets" in top) {
      const expected = `per-socket lists: {"0": {"devices": [...]}, ...} or [{"devices": [...]}, ...]`;
      const value = top.sockets;
      const entries: [string, unknown][] = Array.isArray(value)
        ? value.map((entry, index) => [String(index), entry])
        : Object.entries(this.#object(value, "sockets", expected));
      for (const [key, entry] of entries) {
        const keyPath = `sockets.${key}`;
        const index = DECIMAL.test(key) ? Number(key) : Number.NaN;
        if (!(index <= MAX_SOCKET_INDEX)) {
          this.#fail(keyPath, `a socket index 0..${MAX_SOCKET_INDEX} as the key`, key);
        }
        if (Array.isArray(value) && entry === null) continue; // [null, {...}]: socket 0 keeps the default
        const socket = this.#object(entry, keyPath, `{"devices": [...]}`);
        this.#onlyKeys(socket, SOCKET_KEYS, keyPath);
        sockets.set(index, this.#readList(socket.devices, `${keyPath}.devices`));
      }
    }
    return { devices, sockets };
  }

  /** One device list; guest addresses and host devices once each. */
  #readList(list: unknown, listPath: string): DeviceConfig[] {
    if (!Array.isArray(list)) this.#fail(listPath, "an array of devices", list);
    if (list.length === 0) this.#fail(listPath, "at least one device", list);
    const owners = new Map<number, string>();
    const hostOwners = new Map<string, string>();
    return list.map((entry, index) => {
      const keyPath = `${listPath}[${index}]`;
      const device = this.#readDevice(entry, keyPath);
      const owner = owners.get(device.address);
      if (owner !== undefined) {
        throw new ConfigError(
          "CONFIG_DUPLICATE_ADDRESS",
          `${this.#file}: ${keyPath}.address: address ${hex(device.address)} is already used by ${owner}`,
        );
      }
      owners.set(device.address, keyPath);
      if (device.kind === "host") {
        const hostAddress = device.hostAddress ?? device.address;
        const key = `${device.adapter}:${hostAddress}`;
        const hostOwner = hostOwners.get(key);
        if (hostOwner !== undefined) {
          throw new ConfigError(
            "CONFIG_DUPLICATE_ADDRESS",
            `${this.#file}: ${keyPath}: host device ${hex(hostAddress)} on adapter ${device.adapter} is already listed by ${hostOwner}`,
          );
        }
        hostOwners.set(key, keyPath);
      }
      return device;
    });
  }

  #readDevice(entry: unknown, keyPath: string): DeviceConfig {
    const device = this.#object(entry, keyPath, `a device object {"bus": ..., "address": ...}`);
    const origin = `${this.#file}: ${keyPath}`;
    if (!("bus" in device))
      this.#fail(`${keyPath}.bus`, `"${SIM_BUS}" or a host adapter`, undefined);
    if (device.bus === SIM_BUS) {
      this.#onlyKeys(device, SIM_KEYS, keyPath);
      const address = this.#address(device.address, `${keyPath}.address`);
      return {
        kind: "sim",
        address,
        model: this.#model(device, keyPath),
        options: this.#options(device.options, `${keyPath}.options`),
        ...this.#flags(device, keyPath),
        ...this.#faults(device, keyPath),
        origin,
      };
    }
    const adapter = this.#adapter(device.bus, `${keyPath}.bus`);
    for (const key of ["model", "module", "options"]) {
      if (key in device) {
        this.#fail(
          `${keyPath}.${key}`,
          `no "${key}" on a host adapter (models are only for "bus": "${SIM_BUS}")`,
          device[key],
        );
      }
    }
    this.#onlyKeys(device, HOST_KEYS, keyPath);
    const host: DeviceConfig = {
      kind: "host",
      adapter,
      ...(typeof device.bus === "string" ? { adapterName: device.bus } : {}),
      address: this.#address(device.address, `${keyPath}.address`),
      ...this.#flags(device, keyPath),
      ...this.#faults(device, keyPath),
      origin,
    };
    if ("hostAddress" in device) {
      host.hostAddress = this.#address(device.hostAddress, `${keyPath}.hostAddress`);
    }
    return host;
  }

  /** `readOnly` and `shared`, when given (true or false), and a read-only device's `pointerBytes`. */
  #flags(
    device: Record<string, unknown>,
    keyPath: string,
  ): { readOnly?: boolean; pointerBytes?: PointerBytes; shared?: boolean } {
    const flags: { readOnly?: boolean; pointerBytes?: PointerBytes; shared?: boolean } = {};
    for (const key of ["readOnly", "shared"] as const) {
      if (!(key in device)) continue;
      const value = device[key];
      if (typeof value !== "boolean") this.#fail(`${keyPath}.${key}`, "true or false", value);
      if (value) flags[key] = true;
    }
    if ("pointerBytes" in device) {
      const value = device.pointerBytes;
      if (!isPointerBytes(value)) {
        this.#fail(
          `${keyPath}.pointerBytes`,
          "1 (8-bit register address) or 2 (16-bit word address, 24c32 and larger EEPROMs)",
          value,
        );
      }
      if (!flags.readOnly) {
        throw new ConfigError(
          "CONFIG_INVALID",
          `${this.#file}: ${keyPath}.pointerBytes: only a read-only device takes a register pointer width; add "readOnly": true or remove "pointerBytes"`,
        );
      }
      if (value !== 1) flags.pointerBytes = value;
    }
    return flags;
  }

  /** `faults` (an array of fault objects) and `stretch`, when given; see src/i2c/faults.ts. */
  #faults(
    device: Record<string, unknown>,
    keyPath: string,
  ): { faults?: FaultSpec[]; stretch?: Stretch } {
    const checked = <T>(where: string, parse: () => T): T => {
      try {
        return parse();
      } catch (err) {
        if (!(err instanceof FaultError)) throw err;
        throw new ConfigError("CONFIG_INVALID", `${this.#file}: ${where}: ${err.message}`, {
          cause: err,
        });
      }
    };
    const result: { faults?: FaultSpec[]; stretch?: Stretch } = {};
    if ("faults" in device) {
      const where = `${keyPath}.faults`;
      if (!Array.isArray(device.faults)) {
        this.#fail(where, `an array of faults like [{"fault": "nack", "every": 3}]`, device.faults);
      }
      result.faults = device.faults.map((entry: unknown, i) => {
        const at = `${where}[${i}]`;
        const fields = this.#object(entry, at, `a fault object like {"fault": "nack"}`);
        return checked(at, () => parseFaultSpec(fields));
      });
    }
    if ("stretch" in device) {
      const where = `${keyPath}.stretch`;
      const fields = this.#object(device.stretch, where, `{"usPerTransfer": N, "usPerByte": N}`);
      result.stretch = checked(where, () => parseStretch(fields));
    }
    return result;
  }

  #model(device: Record<string, unknown>, keyPath: string): string | { module: string } {
    const hasModel = "model" in device;
    const hasModule = "module" in device;
    if (hasModel === hasModule) {
      throw new ConfigError(
        "CONFIG_INVALID",
        `${this.#file}: ${keyPath}: expected exactly one of "model" (a built-in model name) or "module" (a path to a model module), found ${hasModel ? "both" : "neither"}`,
      );
    }
    if (hasModel) {
      const model = device.model;
      // {"model": {"module": path}} is the DeviceConfig spelling of "module": path; both work.
      if (typeof model === "object" && model !== null && !Array.isArray(model)) {
        const spec = model as Record<string, unknown>;
        this.#onlyKeys(spec, ["module"], `${keyPath}.model`);
        return { module: this.#modulePath(spec.module, `${keyPath}.model.module`) };
      }
      if (typeof model !== "string" || model === "") {
        this.#fail(`${keyPath}.model`, 'a model name such as "24c32"', model);
      }
      return model;
    }
    return { module: this.#modulePath(device.module, `${keyPath}.module`) };
  }

  #modulePath(module: unknown, keyPath: string): string {
    if (typeof module !== "string" || module === "") {
      this.#fail(keyPath, 'a path to a JavaScript module such as "./my-chip.js"', module);
    }
    return resolve(this.#dir, module);
  }

  /** Options stay as the model's schema will judge them; only file paths are made absolute. */
  #options(value: unknown, keyPath: string): Record<string, unknown> {
    if (value === undefined) return {};
    const options = { ...this.#object(value, keyPath, "an object of model options") };
    for (const key of PATH_OPTIONS) {
      const path = options[key];
      if (path === undefined) continue;
      if (typeof path !== "string" || path === "") {
        this.#fail(`${keyPath}.${key}`, "a file path", path);
      }
      options[key] = resolve(this.#dir, path);
    }
    const initial = options.initial;
    if (typeof initial === "object" && initial !== null && !Array.isArray(initial)) {
      const spec = initial as Record<string, unknown>;
      this.#onlyKeys(spec, ["file"], `${keyPath}.initial`);
      if (typeof spec.file !== "string" || spec.file === "") {
        this.#fail(`${keyPath}.initial.file`, "a file path", spec.file);
      }
      options.initial = this.#readBytes(resolve(this.#dir, spec.file), `${keyPath}.initial.file`);
    }
    return options;
  }

  #readBytes(path: string, keyPath: string): Uint8Array {
    return new Uint8Array(
      readConfigInput(path, { where: `${this.#file}: ${keyPath}`, what: path }),
    );
  }

  #address(value: unknown, keyPath: string): number {
    const expected = `a 7-bit I2C address (0..0x7f) as a number or a string like "0x50"`;
    let address = Number.NaN;
    if (typeof value === "number") address = value;
    else if (typeof value === "string" && (DECIMAL.test(value) || HEX.test(value))) {
      address = Number(value);
    }
    if (!Number.isInteger(address) || address < 0 || address > I2C_MAX_ADDR) {
      this.#fail(keyPath, expected, value);
    }
    return address;
  }

  #adapter(value: unknown, keyPath: string): number {
    const expected = `"${SIM_BUS}", a host adapter number (3 means /dev/i2c-3) or an adapter name`;
    if (typeof value === "number") {
      if (!Number.isInteger(value) || value < 0 || value > MAX_ADAPTER_NUMBER) {
        this.#fail(keyPath, expected, value);
      }
      return value;
    }
    if (typeof value !== "string" || value.trim() === "") this.#fail(keyPath, expected, value);
    try {
      return this.#deps.resolveAdapter(value);
    } catch (err) {
      throw new ConfigError(
        "CONFIG_ADAPTER_NOT_FOUND",
        `${this.#file}: ${keyPath}: adapter "${value}": ${reasonOf(err)}`,
        { cause: err },
      );
    }
  }

  #object(value: unknown, keyPath: string, expected: string): Record<string, unknown> {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      this.#fail(keyPath, expected, value);
    }
    return value as Record<string, unknown>;
  }

  #onlyKeys(object: Record<string, unknown>, allowed: readonly string[], keyPath: string): void {
    for (const key of Object.keys(object)) {
      if (!allowed.includes(key)) {
        const where = keyPath === "" ? key : `${keyPath}.${key}`;
        throw new ConfigError(
          "CONFIG_INVALID",
          `${this.#file}: ${where}: unknown key (expected one of: ${allowed.join(", ")})`,
        );
      }
    }
  }

  #fail(keyPath: string, expected: string, found: unknown): never {
    throw new ConfigError(
      "CONFIG_INVALID",
      `${this.#file}: ${keyPath}: expected ${expected}, found ${describeValue(found)}`,
    );
  }
}
