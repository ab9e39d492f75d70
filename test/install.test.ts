// Packaging: the man page matches the help data; `npm pack` gives a package that installs into a
// clean prefix (the addon built by its install script, no network) and whose bins work: the installed
// daemon serves the in-repo frontend.
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { transferOk } from "./helpers/configured-daemon.js";
import { makeTempDir, WAIT_MS, waitUntil, withTimeout } from "./helpers/daemon.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const MAN_SCRIPT = join(ROOT, "scripts/man.mjs");

describe("man page", () => {
  it("man/vhost-device-i2c.1 is what `npm run man` generates from the help data", () => {
    const check = spawnSync(process.execPath, [MAN_SCRIPT, "--check"], { encoding: "utf8" });
    assert.equal(check.status, 0, check.stderr);
    const page = execFileSync(process.execPath, [MAN_SCRIPT, "--stdout"], { encoding: "utf8" });
    assert.match(page, /^\.TH VHOST-DEVICE-I2C 1 /);
    for (const section of ["NAME", "SYNOPSIS", "OPTIONS", "EXAMPLES"]) {
      assert.match(page, new RegExp(`^\\.SH ${section}$`, "m"));
    }
    assert.match(page, /\\fB\\-\\-socket\\-fd <fd>\\fR/);
  });
});

describe("npm pack, then npm install -g into a clean prefix", () => {
  let dir: ReturnType<typeof makeTempDir>;
  let prefix: string;
  before(() => {
    dir = makeTempDir("vdi2c-install-");
    prefix = join(dir.path, "prefix");
    // dist/ is already built (the tests run from it): no prepare step.
    const packed = execFileSync(
      "npm",
      ["pack", "--ignore-scripts", "--json", "--pack-destination", dir.path],
      { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    );
    const files = JSON.parse(packed) as { filename: string }[];
    const tarball = join(dir.path, files[0]?.filename ?? "");
    // No registry needed: the package has no runtime dependencies; its install script builds the addon.
    execFileSync(
      "npm",
      ["install", "-g", "--prefix", prefix, "--offline", "--no-audit", "--no-fund", tarball],
      { cwd: dir.path, stdio: ["ignore", "pipe", "pipe"] },
    );
  });
  after(() => dir.remove());

  const installed = (name: string) => join(prefix, "bin", name);
  const packageDir = () => join(prefix, "lib/node_modules/vhost-device-i2c");

  it("installs the package files, the addon built on install, and the man page", () => {
    const root = packageDir();
    for (const path of [
      "build/Release/vhost_device_i2c.node",
      "man/vhost-device-i2c.1",
      "contrib/systemd/vhost-device-i2c@.service",
      "contrib/systemd/vhost-device-i2c@.socket",
      "dist/src/cli/main.js",
      "native/vhost_device_i2c.c",
    ]) {
      assert.ok(existsSync(join(root, path)), path);
    }
    assert.ok(!readdirSync(join(root, "dist/src/cli")).some((f) => f.includes(".test.")));
    assert.ok(existsSync(join(prefix, "share/man/man1/vhost-device-i2c.1")));
  });

  it("the installed bins run: --version, --print-capabilities, vi2c --help", () => {
    const version = execFileSync(installed("vhost-device-i2c"), ["--version"], {
      encoding: "utf8",
    });
    assert.match(version, /^vhost-device-i2c \d+\.\d+\.\d+\n$/);
    const capabilities = execFileSync(installed("vhost-device-i2c"), ["--print-capabilities"], {
      encoding: "utf8",
    });
    assert.equal(JSON.parse(capabilities).type, "i2c");
    const help = spawnSync(installed("vi2c"), ["--help"], { encoding: "utf8" });
    assert.equal(help.status, 0, help.stderr);
  });

  it("the installed daemon looks adapter names up in /sys only, whatever VHOST_DEVICE_I2C_SYSFS_ROOT says", () => {
    const sysfs = join(dir.path, "sys");
    mkdirSync(join(sysfs, "bus/i2c/devices/i2c-3"), { recursive: true });
    writeFileSync(join(sysfs, "bus/i2c/devices/i2c-3/name"), "Planted adapter\n");
    assert.ok(!existsSync(join(packageDir(), "dist/test")), "the package has no test entry points");
    const result = spawnSync(
      installed("vhost-device-i2c"),
      ["-s", join(dir.path, "planted.sock"), "-l", "Planted adapter:0x50"],
      { encoding: "utf8", env: { ...process.env, VHOST_DEVICE_I2C_SYSFS_ROOT: sysfs } },
    );
    assert.equal(result.status, 2, result.stderr);
    assert.match(
      result.stderr,
      /no adapter named "Planted adapter" under \/sys\/bus\/i2c\/devices/,
    );
  });

  it("the installed daemon serves the in-repo frontend", async () => {
    const prefixPath = join(dir.path, "vi2c.sock");
    const daemon = spawn(
      installed("vhost-device-i2c"),
      ["-s", prefixPath, "-l", "sim:0x50=24c02"],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    let stderr = "";
    daemon.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    const exited = new Promise<number | null>((resolve) => daemon.on("close", resolve));
    try {
      await waitUntil(() => stderr.includes(`listening path=${prefixPath}0\n`), "the daemon");
      const guest = await I2cGuest.connect(`${prefixPath}0`);
      try {
        await transferOk(guest, [{ addr: 0x50, write: Uint8Array.of(0x10, 0xc3) }]);
        const [read] = await transferOk(guest, [
          { addr: 0x50, write: Uint8Array.of(0x10) },
          { addr: 0x50, read: 1 },
        ]);
        assert.deepEqual([...(read ?? [])], [0xc3]);
      } finally {
        await guest.close();
      }
      daemon.kill("SIGTERM");
      assert.equal(await withTimeout(exited, WAIT_MS, "daemon exit"), 0, stderr);
    } finally {
      daemon.kill("SIGKILL");
    }
  });
});
