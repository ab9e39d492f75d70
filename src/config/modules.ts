/**
 * Loading users' model modules: a path (absolute, or relative to the config file's directory) →
 * checks (the file and every directory above it writable by root or the daemon's user only; see
 * trusted-input.ts) → dynamic `import()` → its default export checked to be a ModelDefinition.
 * Before the first import, module-hooks.ts is registered: `import "vhost-device-i2c"` in a module
 * then always means the running daemon's own package, and whatever a module imports is checked
 * like the module. Loading happens at start-up and again for a SIGHUP reload, before any bus is
 * built; a module that fails is a ConfigError (the daemon exits 2, a reload is refused).
 * Must not create devices or validate options (devices.ts does, with the definition's schema).
 * @module
 */

import * as nodeModule from "node:module";
import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { ModelDefinition } from "../i2c/model.js";
import type { DeviceConfig } from "./devices.js";
import { ConfigError, describeValue, reasonOf } from "./errors.js";
import { checkModuleFile } from "./trusted-input.js";

/** Whether module-hooks.ts is registered (once per process, for every later import). */
let hooksRegistered = false;

/**
 * Registers module-hooks.ts. Throws ConfigError MODULE_LOAD_FAILED where Node has no
 * `module.register` (before 20.6): without it the package name would resolve through node_modules.
 */
function registerModuleHooks(where: string): void {
  if (hooksRegistered) return;
  // Looked up at run time: Node 20.0-20.5 lacks it, and @types/node may not say so.
  const register = (nodeModule as { register?: (specifier: URL) => void }).register;
  if (typeof register !== "function") {
    throw new ConfigError(
      "MODULE_LOAD_FAILED",
      `${where}: model modules need Node.js 20.6 or later (module.register), this is ${process.version}`,
    );
  }
  register(new URL("./module-hooks.js", import.meta.url));
  hooksRegistered = true;
}

const OPTION_TYPES = ["number", "integer", "string", "boolean", "hex-bytes", "object", "array"];

/**
 * Checks, then imports the module at `path` (resolved against `baseDir` when relative) and returns its
 * default export. Throws ConfigError CONFIG_UNSAFE_PATH (the module, a directory above it or a file
 * it imports could be changed by someone other than root and the daemon's user), MODULE_LOAD_FAILED
 * (missing file, CommonJS, syntax error, throws while loading) or MODULE_BAD_EXPORT (the default
 * export is not a ModelDefinition). `where` names who asked for it.
 */
export async function loadModelModule(
  path: string,
  baseDir: string,
  where = "model module",
): Promise<ModelDefinition> {
  const absolute = isAbsolute(path) ? path : resolve(baseDir, path);
  registerModuleHooks(where);
  checkModuleFile(absolute, { where, what: `model module ${absolute}` });
  // import() opens the file by its path again. Nothing can change between the check and the read:
  // the check walked that same path from "/" and found every directory on it, and the file,
  // writable by root or the daemon's user only (links followed only where such a directory holds
  // them), so nobody else can replace a directory, a link or the file in between.
  let namespace: Record<string, unknown>;
  try {
    namespace = await import(pathToFileURL(absolute).href);
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code;
    throw new ConfigError(
      code === "CONFIG_UNSAFE_PATH" ? "CONFIG_UNSAFE_PATH" : "MODULE_LOAD_FAILED",
      `${where}: cannot load model module ${absolute}: ${reasonOf(err)}`,
      { cause: err },
    );
  }
  const problem = definitionProblem(namespace.default);
  if (problem !== undefined) {
    throw new ConfigError(
      "MODULE_BAD_EXPORT",
      `${where}: model module ${absolute}: the default export must be a ModelDefinition ({ name, description, options?, create }): ${problem}`,
    );
  }
  return namespace.default as ModelDefinition;
}

/** What is wrong with `value` as a ModelDefinition, or undefined when it has the right shape. */
export function definitionProblem(value: unknown): string | undefined {
  if (value === undefined) return "the module has no default export";
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return `expected an object, found ${describeValue(value)}`;
  }
  const definition = value as Record<string, unknown>;
  if (typeof definition.name !== "string" || definition.name.trim() === "") {
    return `name: expected a non-empty string, found ${describeValue(definition.name)}`;
  }
  if (typeof definition.description !== "string") {
    return `description: expected a string, found ${describeValue(definition.description)}`;
  }
  if (typeof definition.create !== "function") {
    return `create: expected a function (options, context) => SimDevice, found ${describeValue(definition.create)}`;
  }
  const options = definition.options;
  if (options !== undefined) {
    const type = (options as { type?: unknown } | null)?.type;
    if (typeof options !== "object" || options === null || !OPTION_TYPES.includes(String(type))) {
      return `options: expected an OptionSchema ({ type: "object", properties: {...} }), found ${describeValue(options)}`;
    }
  }
  return undefined;
}

/**
 * Loads every user module the devices name, each path once, in order. Returns module path →
 * definition, for `buildBuses`.
 */
export async function loadModules(
  devices: readonly DeviceConfig[],
  baseDir: string,
): Promise<Map<string, ModelDefinition>> {
  const modules = new Map<string, ModelDefinition>();
  for (const device of devices) {
    if (device.kind !== "sim" || typeof device.model === "string") continue;
    const path = device.model.module;
    if (modules.has(path)) continue;
    modules.set(path, await loadModelModule(path, baseDir, device.origin));
  }
  return modules;
}
