// Packaging: the man page matches the help data; `npm pack` gives a package that ships prebuilt
// addons for linux-x64 and linux-arm64 and installs into a clean prefix (no network, no registry):
// with no C compiler on PATH the prebuilt addon is used; with --ignore-scripts it still loads; on a
// platform with no prebuilt and no compiler the install (or, scripts ignored, the first run) fails
// naming what is missing and the command that fixes it, and that command then builds the addon.
// Every install is run for real: the installed daemon serves a socket the installed vi2c drives, and
// the installed demo runs.
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { delimiter, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { makeTempDir, WAIT_MS, waitUntil, withTimeout } from "./helpers/daemon.js";
import { type Ran, runToEnd } from "./helpers/run.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const MAN_SCRIPT = join(ROOT, "scripts/man.mjs");
const ADDON = "vhost_device_i2c.node";
const HOST = `${process.platform}-${process.arch}`;
/** The prebuilt targets the package ships, with their ELF e_machine. */
const SHIPPED = { "linux-x64": 62, "linux-arm64": 183 } as const;
/** Set by CI (.ci/run, after `npm run build:prebuild`): missing prebuilds fail instead of skipping. */
const PREBUILDS_REQUIRED_ENV = "VHOST_DEVICE_I2C_PREBUILDS_REQUIRED";

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

/**
 * Why the checks of the shipped prebuilds skip (false: they run): prebuilds/ is built by `npm run
 * build:prebuild` (linux-arm64 with a cross compiler), not by `npm run build`. A prebuilt older than
 * the C sources would ship a stale addon: that fails.
 */
function prebuildsSkip(): string | false {
  const sources = [
    join(ROOT, "binding.gyp"),
    ...readdirSync(join(ROOT, "native")).map((f) => join(ROOT, "native", f)),
  ];
  const newestSource = Math.max(...sources.map((path) => statSync(path).mtimeMs));
  const missing: string[] = [];
  for (const target of Object.keys(SHIPPED)) {
    const path = join(ROOT, "prebuilds", target, ADDON);
    if (!existsSync(path)) missing.push(target);
    else if (statSync(path).mtimeMs < newestSource) {
      throw new Error(
        `prebuilds/${target}/${ADDON} is older than native/: run npm run build:prebuild`,
      );
    }
  }
  if (missing.length === 0) return false;
  const reason = `no prebuilds/ for ${missing.join(", ")}: npm run build:prebuild builds them (linux-arm64 needs gcc-aarch64-linux-gnu)`;
  if (process.env[PREBUILDS_REQUIRED_ENV])
    throw new Error(`${PREBUILDS_REQUIRED_ENV} is set but ${reason}`);
  return reason;
}

function elfMachine(path: string): number {
  const header = readFileSync(path).subarray(0, 20);
  return header.toString("latin1", 0, 4) === "\x7fELF" ? header.readUInt16LE(18) : -1;
}

/** An npm install, or the installed daemon: minutes under qemu-user, never forever. */
const RUN_DEADLINE_MS = 600_000;

function run(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  cwd?: string,
): Promise<Ran> {
  return runToEnd(command, args, {
    env,
    ...(cwd !== undefined && { cwd }),
    deadlineMs: RUN_DEADLINE_MS,
  });
}

/** Where one case installs the package: its own npm prefix and npm cache. */
class Install {
  readonly dir: string;
  /** The command npm (the link in the test's PATH directory). */
  readonly #npm: string;
  constructor(dir: string, npm: string) {
    mkdirSync(dir);
    this.dir = dir;
    this.#npm = npm;
  }
  get prefix(): string {
    return join(this.dir, "prefix");
  }
  get packageDir(): string {
    return join(this.prefix, "lib/node_modules/vhost-device-i2c");
  }
  bin(name: string): string {
    return join(this.prefix, "bin", name);
  }
  /** `npm install -g` of `tarball` into the prefix, offline, from an empty cache. */
  install(tarball: string, env: NodeJS.ProcessEnv, ...flags: string[]): Promise<Ran> {
    return run(
      this.#npm,
      [
        "install",
        "-g",
        "--prefix",
        this.prefix,
        "--offline",
        "--cache",
        join(this.dir, "cache"),
        "--no-audit",
        "--no-fund",
        ...flags,
        tarball,
      ],
      env,
      this.dir,
    );
  }
}

/**
 * The installed daemon serves a socket with an emulated EEPROM; the installed vi2c writes a byte and
 * reads it back through it; SIGTERM ends the daemon with status 0.
 */
async function serveAndUse(install: Install, env: NodeJS.ProcessEnv): Promise<void> {
  const socket = join(install.dir, "vi2c.sock");
  const daemon = spawn(install.bin("vhost-device-i2c"), ["-s", socket, "-l", "sim:0x50=24c02"], {
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  daemon.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => daemon.on("close", resolve));
  try {
    await waitUntil(
      () => stderr.includes(`listening path=${socket}0\n`) || daemon.exitCode !== null,
      "the daemon",
    );
    assert.equal(daemon.exitCode, null, stderr);
    const set = await run(
      install.bin("vi2c"),
      ["set", "-y", `${socket}0`, "0x50", "0x10", "0xc3"],
      env,
    );
    assert.equal(set.status, 0, set.stderr);
    const get = await run(install.bin("vi2c"), ["get", "-y", `${socket}0`, "0x50", "0x10"], env);
    assert.equal(get.status, 0, get.stderr);
    assert.equal(get.stdout, "0xc3\n");
    daemon.kill("SIGTERM");
    assert.equal(await withTimeout(exited, WAIT_MS, "daemon exit"), 0, stderr);
  } finally {
    daemon.kill("SIGKILL");
  }
}

describe("npm pack, then npm install -g into clean prefixes", () => {
  const skipShipped = prebuildsSkip();
  let dir: ReturnType<typeof makeTempDir>;
  /** The package as `npm pack` makes it from the checkout, and its file list. */
  let packed: string;
  let packedFiles: string[];
  /** The package with this platform's prebuilt addon: the packed one when it ships it. */
  let withPrebuilt: string;
  /** The package without a prebuilt addon for this platform. */
  let withoutPrebuilt: string;
  /** PATH for "no compiler": one directory with links to node (this test's), npm and sh only. */
  let bare: NodeJS.ProcessEnv;
  /** The usual PATH, this test's node first (the installed bins run on it: Node 24 in CI's second run). */
  let full: NodeJS.ProcessEnv;
  let noCompiler: Install;
  let scriptsIgnored: Install;
  let failing: Install;
  let failingIgnored: Install;
  /** What each install above printed, in that order. */
  let results: Ran[];

  before(async () => {
    dir = makeTempDir("vdi2c-install-");
    // dist/ is already built (the tests run from it): no prepare step.
    const output = execFileSync(
      "npm",
      ["pack", "--ignore-scripts", "--json", "--pack-destination", dir.path],
      { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    );
    const [entry] = JSON.parse(output) as { filename: string; files: { path: string }[] }[];
    assert.ok(entry);
    packed = join(dir.path, entry.filename);
    packedFiles = entry.files.map((file) => file.path);

    // Variants of the package, repacked from its tree (npm takes any gzipped tar of package/).
    const variant = (name: string, change: (tree: string) => void) => {
      const tree = join(dir.path, name);
      mkdirSync(tree);
      execFileSync("tar", ["xzf", packed, "-C", tree]);
      change(join(tree, "package"));
      const tarball = join(dir.path, `${name}.tgz`);
      execFileSync("tar", ["czf", tarball, "-C", tree, "package"]);
      return tarball;
    };
    withPrebuilt = packedFiles.includes(`prebuilds/${HOST}/${ADDON}`)
      ? packed
      : // No prebuilds/ in the checkout: the addon `npm run build` made stands in for this platform's.
        variant("with-prebuilt", (pkg) => {
          mkdirSync(join(pkg, "prebuilds", HOST), { recursive: true });
          copyFileSync(join(ROOT, "build/Release", ADDON), join(pkg, "prebuilds", HOST, ADDON));
        });
    withoutPrebuilt = variant("without-prebuilt", (pkg) =>
      rmSync(join(pkg, "prebuilds", HOST), { recursive: true, force: true }),
    );

    const bin = join(dir.path, "bin");
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, "node"));
    const npm = execFileSync("sh", ["-c", "command -v npm"], { encoding: "utf8" }).trim();
    symlinkSync(npm, join(bin, "npm"));
    // npm runs every package script with sh: a shell is on any host, a compiler is not.
    symlinkSync("/bin/sh", join(bin, "sh"));
    bare = { ...process.env, PATH: bin };
    full = { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` };

    const install = (name: string) => new Install(join(dir.path, name), join(bin, "npm"));
    noCompiler = install("no-compiler");
    scriptsIgnored = install("scripts-ignored");
    failing = install("failing");
    failingIgnored = install("failing-ignored");
    // The four installs are independent: run together, they take the time of one.
    results = await Promise.all([
      noCompiler.install(withPrebuilt, bare),
      scriptsIgnored.install(withPrebuilt, full, "--ignore-scripts"),
      failing.install(withoutPrebuilt, bare),
      failingIgnored.install(withoutPrebuilt, bare, "--ignore-scripts"),
    ]);
  });
  after(() => dir?.remove());

  it("ships prebuilt addons for linux-x64 and linux-arm64, each an ELF for its machine", {
    skip: skipShipped,
  }, () => {
    const tree = join(dir.path, "without-prebuilt/package");
    for (const [target, machine] of Object.entries(SHIPPED)) {
      assert.ok(packedFiles.includes(`prebuilds/${target}/${ADDON}`), target);
      if (target !== HOST)
        assert.equal(elfMachine(join(tree, "prebuilds", target, ADDON)), machine, target);
    }
    assert.equal(
      elfMachine(join(ROOT, "prebuilds", HOST, ADDON)),
      SHIPPED[HOST as keyof typeof SHIPPED],
    );
  });

  it("with no C compiler on PATH, the install keeps the prebuilt addon, builds nothing, and works", async () => {
    const [result] = results;
    assert.equal(result?.status, 0, result?.stderr);
    const root = noCompiler.packageDir;
    // No build/: the only addon the installed loader can find is the prebuilt one.
    assert.ok(!existsSync(join(root, "build")), "nothing was built");
    assert.ok(existsSync(join(root, "prebuilds", HOST, ADDON)));
    for (const path of [
      "man/vhost-device-i2c.1",
      "contrib/systemd/vhost-device-i2c@.service",
      "contrib/systemd/vhost-device-i2c@.socket",
      "dist/src/cli/main.js",
      "dist/src/sys/addon-fix.json",
      "native/vhost_device_i2c.c",
    ]) {
      assert.ok(existsSync(join(root, path)), path);
    }
    assert.ok(!readdirSync(join(root, "dist/src/cli")).some((f) => f.includes(".test.")));
    assert.ok(existsSync(join(noCompiler.prefix, "share/man/man1/vhost-device-i2c.1")));
    await serveAndUse(noCompiler, bare);
  });

  it("the installed bins run: --version, --print-capabilities, vi2c --help", () => {
    const options = { encoding: "utf8", env: bare } as const;
    const version = execFileSync(noCompiler.bin("vhost-device-i2c"), ["--version"], options);
    assert.match(version, /^vhost-device-i2c \d+\.\d+\.\d+\n$/);
    const capabilities = execFileSync(
      noCompiler.bin("vhost-device-i2c"),
      ["--print-capabilities"],
      options,
    );
    assert.equal(JSON.parse(capabilities).type, "i2c");
    const help = spawnSync(noCompiler.bin("vi2c"), ["--help"], options);
    assert.equal(help.status, 0, help.stderr);
  });

  it("the installed `vhost-device-i2c demo` runs every step and exits 0", async () => {
    const demo = await run(noCompiler.bin("vhost-device-i2c"), ["demo"], bare, dir.path);
    assert.equal(demo.status, 0, `${demo.stdout}\n${demo.stderr}`);
    assert.match(demo.stdout, /^\$ vi2c get -y vi2c\.sock0 0x50 0x00\n0x42\n/m);
    assert.match(demo.stdout, /^Demo finished: every step worked\.$/m);
  });

  it("the installed daemon looks adapter names up in /sys only, whatever VHOST_DEVICE_I2C_SYSFS_ROOT says", () => {
    const sysfs = join(dir.path, "sys");
    mkdirSync(join(sysfs, "bus/i2c/devices/i2c-3"), { recursive: true });
    writeFileSync(join(sysfs, "bus/i2c/devices/i2c-3/name"), "Planted adapter\n");
    assert.ok(
      !existsSync(join(noCompiler.packageDir, "dist/test")),
      "the package has no test entry points",
    );
    const result = spawnSync(
      noCompiler.bin("vhost-device-i2c"),
      ["-s", join(dir.path, "planted.sock"), "-l", "Planted adapter:0x50"],
      { encoding: "utf8", env: { ...bare, VHOST_DEVICE_I2C_SYSFS_ROOT: sysfs } },
    );
    assert.equal(result.status, 2, result.stderr);
    assert.match(
      result.stderr,
      /no adapter named "Planted adapter" under \/sys\/bus\/i2c\/devices/,
    );
  });

  it("installed with --ignore-scripts, the prebuilt addon still loads and works", async () => {
    const result = results[1];
    assert.equal(result?.status, 0, result?.stderr);
    assert.ok(!existsSync(join(scriptsIgnored.packageDir, "build")), "nothing was built");
    await serveAndUse(scriptsIgnored, full);
  });

  it("with no prebuilt for this platform and no compiler, the install fails naming what is missing and the fix", () => {
    const result = results[2];
    assert.notEqual(result?.status, 0);
    const stderr = result?.stderr ?? "";
    assert.match(stderr, new RegExp(`no prebuilt binary for ${HOST} loads here`));
    for (const missing of ["make", "a C compiler (cc)", "a C++ compiler (g++)", "Python 3"]) {
      assert.ok(stderr.includes(missing), `${missing} in: ${stderr}`);
    }
    assert.match(stderr, /apt-get install build-essential python3/);
    assert.match(stderr, /then run "npm rebuild -g vhost-device-i2c"/);
  });

  it("with no prebuilt and scripts ignored, the first run fails with the same advice, which then works", async (t) => {
    const result = results[3];
    assert.equal(result?.status, 0, result?.stderr);
    const first = spawnSync(
      failingIgnored.bin("vhost-device-i2c"),
      ["-s", join(failingIgnored.dir, "x.sock"), "-l", "sim:0x50=24c02"],
      { encoding: "utf8", env: bare },
    );
    assert.equal(first.status, 1, first.stderr);
    // The daemon's own error line, not an unexpected failure of whatever used the addon first.
    assert.match(
      first.stderr,
      new RegExp(
        `^vhost-device-i2c: error: cannot load the native addon: no prebuilt binary for ${HOST} loads here`,
      ),
    );
    assert.doesNotMatch(first.stderr, /unexpected failure|\n\s+at /);
    assert.match(first.stderr, /apt-get install build-essential python3/);
    assert.match(first.stderr, /then run "npm rebuild -g vhost-device-i2c"/);
    assert.doesNotMatch(first.stderr, /npm run build:native/);

    // The compiler must build for this Node's machine (not so under qemu-user: that one is the host's).
    const machine = spawnSync("cc", ["-dumpmachine"], { encoding: "utf8" }).stdout ?? "";
    const wanted = { x64: "x86_64", arm64: "aarch64" }[process.arch as string] ?? process.arch;
    if (!machine.startsWith(`${wanted}-`)) {
      t.skip(
        `cc builds for ${machine.trim() || "nothing"}, not ${process.arch}: npm rebuild not run`,
      );
      return;
    }
    const rebuild = await run(
      join(dir.path, "bin/npm"),
      ["rebuild", "-g", "--prefix", failingIgnored.prefix, "--offline", "vhost-device-i2c"],
      full,
    );
    assert.equal(rebuild.status, 0, rebuild.stderr);
    assert.ok(existsSync(join(failingIgnored.packageDir, "build/Release", ADDON)));
    await serveAndUse(failingIgnored, full);
  });
});
