#!/usr/bin/env node
// The package's install script: keeps a prebuilt addon for this platform when it loads, else builds
// it with node-gyp (which npm provides to install scripts). When the build cannot run (no compiler,
// make or Python on PATH) or fails, says what is missing and what fixes it, as the run-time loader
// does (the same text: src/sys/addon-fix.json), and exits non-zero. Must not download anything.
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { delimiter, join } from "node:path";

const root = new URL("../", import.meta.url);
const target = `${process.platform}-${process.arch}`;
const prebuilt = new URL(`prebuilds/${target}/vhost_device_i2c.node`, root);

function prebuiltLoads() {
  if (!existsSync(prebuilt)) return false;
  try {
    createRequire(import.meta.url)(prebuilt.pathname);
    return true;
  } catch (error) {
    process.stderr.write(
      `prebuilt addon for ${target} unusable here (${String(error).split("\n")[0]}): building it\n`,
    );
    return false;
  }
}

function onPath(command) {
  if (command.includes("/")) return isExecutable(command);
  return (process.env.PATH ?? "")
    .split(delimiter)
    .some((dir) => dir !== "" && isExecutable(join(dir, command)));
}

function isExecutable(path) {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * What node-gyp's build runs that is not here: make; the C compiler ($CC, make's default cc); the
 * C++ compiler, which also links ($CXX, make's default g++); Python 3 ($PYTHON or npm's python
 * setting, else python3 or python).
 */
function missingTools() {
  const first = (value, fallback) => value?.trim().split(/\s+/)[0] || fallback;
  const missing = [];
  if (!onPath("make")) missing.push("make");
  const cc = first(process.env.CC, "cc");
  if (!onPath(cc)) missing.push(`a C compiler (${cc})`);
  const cxx = first(process.env.CXX, "g++");
  if (!onPath(cxx)) missing.push(`a C++ compiler (${cxx})`);
  const python = first(process.env.PYTHON ?? process.env.npm_config_python, "");
  if (python ? !onPath(python) : !onPath("python3") && !onPath("python")) {
    missing.push(`Python 3 (${python || "python3"})`);
  }
  return missing;
}

function fail(what) {
  const texts = JSON.parse(
    readFileSync(
      ["dist/src/sys/addon-fix.json", "src/sys/addon-fix.json"]
        .map((path) => new URL(path, root))
        .find((url) => existsSync(url)),
      "utf8",
    ),
  );
  const fix = existsSync(new URL(".git", root)) ? texts.checkout : texts.installed;
  process.stderr.write(
    `vhost-device-i2c: cannot install the native addon: no prebuilt binary for ${target} loads here and ${what}; to build it, ${fix}.\n`,
  );
  process.exit(1);
}

if (!prebuiltLoads()) {
  const missing = missingTools();
  if (missing.length > 0) {
    fail(`building one from source needs ${missing.join(", ")}, not found on PATH`);
  }
  const result = spawnSync("node-gyp", ["rebuild"], { cwd: root, stdio: "inherit" });
  if (result.error) fail(`node-gyp could not run (${result.error.message})`);
  if (result.status !== 0) {
    fail(
      `node-gyp failed to build one (exit status ${result.status ?? result.signal}, output above)`,
    );
  }
}
