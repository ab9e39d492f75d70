#!/usr/bin/env node
// The package's install script: keeps a prebuilt addon for this platform when it loads, else builds
// it with node-gyp (which npm provides to install scripts). Must not download anything.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";

const root = new URL("../", import.meta.url);
const prebuilt = new URL(
  `prebuilds/${process.platform}-${process.arch}/vhost_device_i2c.node`,
  root,
);

function prebuiltLoads() {
  if (!existsSync(prebuilt)) return false;
  try {
    createRequire(import.meta.url)(prebuilt.pathname);
    return true;
  } catch (error) {
    process.stderr.write(`prebuilt addon unusable (${String(error).split("\n")[0]}): building\n`);
    return false;
  }
}

if (!prebuiltLoads()) {
  const result = spawnSync("node-gyp", ["rebuild"], {
    cwd: root,
    stdio: "inherit",
    shell: process.platform === "win32",
  });
  if (result.error) {
    process.stderr.write(`cannot run node-gyp: ${result.error.message}\n`);
    process.exit(1);
  }
  process.exit(result.status ?? 1);
}
