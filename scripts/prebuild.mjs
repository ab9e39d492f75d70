#!/usr/bin/env node
// `npm run build:prebuild` (not "prebuild": npm would run that before every `npm run build`): copies
// the addon node-gyp built (build/Release) to prebuilds/<platform>-<arch>/, where the loader (src/sys/native.ts) looks first and which `npm pack` ships, so installing on the
// same platform needs no compiler. Must not build anything itself (`npm run build:native` does).
import { copyFileSync, existsSync, mkdirSync } from "node:fs";

const root = new URL("../", import.meta.url);
const built = new URL("build/Release/vhost_device_i2c.node", root);
const dir = new URL(`prebuilds/${process.platform}-${process.arch}/`, root);
if (!existsSync(built)) {
  process.stderr.write(
    "no build/Release/vhost_device_i2c.node: run `npm run build:native` first\n",
  );
  process.exit(1);
}
mkdirSync(dir, { recursive: true });
copyFileSync(built, new URL("vhost_device_i2c.node", dir));
process.stdout.write(`prebuilds/${process.platform}-${process.arch}/vhost_device_i2c.node\n`);
