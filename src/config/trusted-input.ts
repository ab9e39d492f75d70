/**
 * The files a configuration makes the daemon read or run (the --config file, `initial.file`
 * contents, model modules), held to OpenSSH's StrictModes rules through src/sys/trusted-dir.ts:
 * the file and every directory above it owned by root or the daemon's user and writable by nobody
 * else (a sticky directory such as /tmp excepted), links followed only where such a directory holds
 * them, the file opened without following a link and checked on its fd. A refusal is a ConfigError
 * naming the file and the rule, so the daemon exits 2 before anything is used.
 * Must not: parse what it reads, or import modules (modules.ts does, after checkModuleFile).
 * @module
 */

import { closeFd } from "../sys/fd.js";
import { openParent, readTrustedFile, UntrustedPathError } from "../sys/trusted-dir.js";
import { ConfigError, reasonOf } from "./errors.js";

/** How a refusal or a failure is told: `<where>: cannot <verb> <what>: ...`. */
interface Naming {
  /** Who asked for the file ("devices.json: devices[0].options.initial.file"), or "". */
  readonly where: string;
  /** The file as the message names it ("config file /etc/x.json"). */
  readonly what: string;
}

function prefix(where: string): string {
  return where === "" ? "" : `${where}: `;
}

/** The file could not be used: CONFIG_UNSAFE_PATH for a refusal, else `unreadable`. */
function inputError(
  err: unknown,
  { where, what }: Naming,
  unreadable: { code: "CONFIG_UNREADABLE" | "MODULE_LOAD_FAILED"; verb: string },
): ConfigError {
  if (err instanceof UntrustedPathError) {
    return new ConfigError(
      "CONFIG_UNSAFE_PATH",
      `${prefix(where)}refusing ${what}: ${err.message} (it must be writable by root or the daemon's user only, as must every directory above it)`,
      { cause: err },
    );
  }
  // A SysError's message names the path and ends with its code.
  return new ConfigError(
    unreadable.code,
    `${prefix(where)}cannot ${unreadable.verb} ${what}: ${reasonOf(err)}`,
    { cause: err },
  );
}

/**
 * The whole content of the file at `path` (absolute), read under the rules above. Throws ConfigError
 * CONFIG_UNSAFE_PATH or CONFIG_UNREADABLE, naming the file as `naming` says.
 */
export function readConfigInput(path: string, naming: Naming): Buffer {
  try {
    return readTrustedFile(path);
  } catch (err) {
    throw inputError(err, naming, { code: "CONFIG_UNREADABLE", verb: "read" });
  }
}

/**
 * Checks that the module at `path` (absolute) may be imported: the same rules, checked on the file
 * opened without following a link. Throws ConfigError CONFIG_UNSAFE_PATH or MODULE_LOAD_FAILED.
 */
export function checkModuleFile(path: string, naming: Naming): void {
  try {
    const { dir, name } = openParent(path);
    try {
      closeFd(dir.openFile(name).fd);
    } finally {
      dir.close();
    }
  } catch (err) {
    throw inputError(err, naming, { code: "MODULE_LOAD_FAILED", verb: "load" });
  }
}
