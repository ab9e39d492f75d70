/**
 * Module resolution hooks for users' model modules, registered with `module.register` before the
 * first one is imported (modules.ts); they run on Node's loader thread.
 * - The package's own name, `vhost-device-i2c` (and `vhost-device-i2c/package.json`), always
 *   resolves to the running daemon's package. Node would otherwise look for it in every
 *   `node_modules` directory from the importing module's up to "/", and run whatever a local user
 *   put in one of them (a sticky /tmp/node_modules will do).
 * - Every file a module outside this package imports (relative, bare or `#` specifiers) is checked
 *   like the module itself (src/config/trusted-input.ts: owned by root or the daemon's user,
 *   writable by nobody else, and so is every directory above it) before Node reads it.
 * - Such modules must be ES modules: CommonJS `require()` would resolve without these hooks.
 * Must not: change how the daemon's own files resolve.
 * @module
 */

import { fileURLToPath } from "node:url";
import { CodedError } from "../errors.js";
import { checkModuleFile } from "./trusted-input.js";

/** The package's name as users import it (package.json "name"). */
const PACKAGE_NAME = "vhost-device-i2c";

/** The package root: this file is dist/src/config/module-hooks.js. */
const PACKAGE_ROOT = new URL("../../../", import.meta.url).href;
/** What the name resolves to: package.json's "exports" ".", and its "./package.json". */
const OWN_EXPORTS: Readonly<Record<string, string>> = {
  [PACKAGE_NAME]: new URL("../index.js", import.meta.url).href,
  [`${PACKAGE_NAME}/package.json`]: new URL("package.json", PACKAGE_ROOT).href,
};

interface ResolveContext {
  readonly parentURL?: string | undefined;
  readonly conditions: readonly string[];
  readonly importAttributes?: Record<string, string>;
}
interface ResolveResult {
  readonly url: string;
  readonly format?: string | null | undefined;
  readonly shortCircuit?: boolean;
}
interface LoadContext {
  readonly format?: string | null | undefined;
  readonly conditions: readonly string[];
}
interface LoadResult {
  readonly format: string;
  readonly source?: string | ArrayBuffer | Uint8Array | null | undefined;
  readonly shortCircuit?: boolean;
}

/** A user's module (or a file it imports) refused before Node read it. */
class ModuleRefusedError extends CodedError<"ERR_PACKAGE_PATH_NOT_EXPORTED" | "MODULE_NOT_ESM"> {}

/** A file outside this package: a user's module or something it imports. */
function isUserFile(url: string | undefined): url is string {
  return url?.startsWith("file:") === true && !url.startsWith(PACKAGE_ROOT);
}

export async function resolve(
  specifier: string,
  context: ResolveContext,
  nextResolve: (specifier: string, context: ResolveContext) => Promise<ResolveResult>,
): Promise<ResolveResult> {
  const own = OWN_EXPORTS[specifier];
  if (own !== undefined) return { url: own, shortCircuit: true };
  if (specifier.startsWith(`${PACKAGE_NAME}/`)) {
    throw new ModuleRefusedError(
      "ERR_PACKAGE_PATH_NOT_EXPORTED",
      `"${specifier}" is not exported by ${PACKAGE_NAME} (import "${PACKAGE_NAME}" itself)`,
    );
  }
  const resolved = await nextResolve(specifier, context);
  if (isUserFile(context.parentURL) && isUserFile(resolved.url)) {
    const path = fileURLToPath(resolved.url);
    // Checked here, read by Node just after: the window is closed by the checks themselves, since
    // only root or the daemon's user can change the file or a directory on its path.
    checkModuleFile(path, {
      where: "",
      what: `${path} (imported by ${fileURLToPath(context.parentURL)})`,
    });
  }
  return resolved;
}

export async function load(
  url: string,
  context: LoadContext,
  nextLoad: (url: string, context: LoadContext) => Promise<LoadResult>,
): Promise<LoadResult> {
  const loaded = await nextLoad(url, context);
  if (loaded.format === "commonjs" && isUserFile(url)) {
    throw new ModuleRefusedError(
      "MODULE_NOT_ESM",
      `${fileURLToPath(url)} is CommonJS: model modules must be ES modules (.mjs, or .js under a package.json with "type": "module"), whose imports these checks cover`,
    );
  }
  return loaded;
}
