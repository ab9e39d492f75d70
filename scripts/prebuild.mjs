#!/usr/bin/env node
// `npm run build:prebuild` (not "prebuild": npm would run that before every `npm run build`): builds
// the addon for every target the package ships prebuilt, from the current sources, into
// prebuilds/<platform>-<arch>/vhost_device_i2c.node, where the loader (src/sys/native.ts) and the
// install script look and which `npm pack` ships, so installing there needs no compiler. The host's
// target is built by node-gyp, linux-arm64 on an x64 host by scripts/cross-addon.sh. Each build runs
// in a scratch copy of binding.gyp and native/: the checkout's build/ is left alone.
// One binary serves every Node the package supports: the addon uses Node-API (NAPI_VERSION 8) and
// libuv 1.x only, both ABI-stable across Node majors.
import { spawnSync } from "node:child_process";
import {
  closeSync,
  copyFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../", import.meta.url));
const host = `${process.platform}-${process.arch}`;
/** Targets and their ELF e_machine: a copy for the wrong machine must never be shipped. */
const TARGETS = { "linux-x64": 62, "linux-arm64": 183 };
const only = process.argv.slice(2);

function build(target, tree) {
  if (target === host) {
    return spawnSync("node-gyp", ["rebuild", "--loglevel=warn"], {
      cwd: tree,
      stdio: ["ignore", "ignore", "inherit"],
    });
  }
  if (target === "linux-arm64" && host === "linux-x64") {
    return spawnSync("bash", [join(root, "scripts/cross-addon.sh"), tree], {
      stdio: ["ignore", "ignore", "inherit"],
    });
  }
  process.stderr.write(`cannot build ${target} on ${host}\n`);
  process.exit(1);
}

function elfMachine(path) {
  const header = Buffer.alloc(20);
  const fd = openSync(path, "r");
  try {
    readSync(fd, header, 0, 20, 0);
  } finally {
    closeSync(fd);
  }
  return header.toString("latin1", 0, 4) === "\x7fELF" ? header.readUInt16LE(18) : -1;
}

for (const [target, machine] of Object.entries(TARGETS)) {
  if (only.length > 0 && !only.includes(target)) continue;
  const tree = mkdtempSync(join(tmpdir(), `vdi2c-prebuild-${target}-`));
  try {
    cpSync(join(root, "binding.gyp"), join(tree, "binding.gyp"));
    cpSync(join(root, "native"), join(tree, "native"), { recursive: true });
    const result = build(target, tree);
    if (result.status !== 0) {
      process.stderr.write(`building the addon for ${target} failed\n`);
      process.exit(1);
    }
    const built = join(tree, "build/Release/vhost_device_i2c.node");
    if (elfMachine(built) !== machine) {
      process.stderr.write(`${built}: not an ELF for ${target} (e_machine ${machine})\n`);
      process.exit(1);
    }
    if (target === host) createRequire(import.meta.url)(built);
    const dir = join(root, "prebuilds", target);
    mkdirSync(dir, { recursive: true });
    copyFileSync(built, join(dir, "vhost_device_i2c.node"));
    process.stdout.write(`prebuilds/${target}/vhost_device_i2c.node\n`);
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
}
