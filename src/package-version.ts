/**
 * The installed package's version (package.json), as `--version` prints it for each program.
 * @module
 */

import { readFileSync } from "node:fs";

/** package.json's version, or "unknown" when it has none. */
export function packageVersion(): string {
  const text = readFileSync(new URL("../../package.json", import.meta.url), "utf8");
  const version: unknown = JSON.parse(text).version;
  return typeof version === "string" ? version : "unknown";
}
