/**
 * The files a configuration makes the real daemon read, write or run, against a local user (uid
 * 1234) who can write in a directory on their path:
 * - backing files: a link planted at the name (in a 0777 or a sticky 1777 directory) stops start-up
 *   with the target untouched; backing files are created 0600 and an existing wider one narrowed;
 * - `initial.file`: a link to a root-only file, a file others can write and a FIFO are refused
 *   before anything is read (the FIFO without blocking);
 * - model modules: `import "vhost-device-i2c"` is the daemon's own package even with another one
 *   planted in a `node_modules` above the module; a module, a file it imports, the config file or a
 *   directory above them that others can write is refused (exit 2), also on a SIGHUP reload.
 * Talks to the daemon only through its command line, config files, sockets and signals.
 * @module
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { transferOk, withGuest, writeConfig } from "./helpers/configured-daemon.js";
import { MAIN_JS, makeTempDir, WAIT_MS, withDaemon } from "./helpers/daemon.js";
import { scaled } from "./helpers/time.js";
import {
  makeWorldWritableDir,
  runAsAttacker,
  unprivilegedUnavailableReason,
} from "./helpers/unprivileged.js";

const SIZE_24C32 = 4096;
const SECRET = Buffer.concat([
  Buffer.from("ROOT-ONLY-SECRET"),
  Buffer.alloc(SIZE_24C32 - 16, 0x2e),
]);

const root = makeTempDir("vdi2c-cfgfiles-");
chmodSync(root.path, 0o755); // the attacker must reach the directories inside
after(() => root.remove());

let serial = 0;
/** A fresh case directory (0755) with `rootonly/secret` (0600, a 24c32's size). */
function makeCase(): { dir: string; secret: string } {
  const dir = join(root.path, `case${serial++}`);
  mkdirSync(dir, { mode: 0o755 });
  mkdirSync(join(dir, "rootonly"), { mode: 0o700 });
  const secret = join(dir, "rootonly", "secret");
  writeFileSync(secret, SECRET, { mode: 0o600 });
  return { dir, secret };
}

/** Runs the daemon on `config`, expecting it to refuse to start; returns its stderr. */
function refusedStart(dir: string, config: string): string {
  const result = spawnSync(
    process.execPath,
    [MAIN_JS, "-s", join(dir, "vi2c.sock"), "--config", config],
    // SIGKILL: a daemon stuck in a blocking open(2) never runs its SIGTERM handler.
    { encoding: "utf8", timeout: scaled(WAIT_MS), killSignal: "SIGKILL" },
  );
  assert.equal(result.status, 2, `exit status 2 expected\n${result.stderr}`);
  return result.stderr;
}

/** One 24c32 at 0x50 with `options`. */
function eepromConfig(dir: string, options: Record<string, unknown>, name?: string): string {
  return writeConfig(dir, [{ bus: "sim", address: "0x50", model: "24c32", options }], name);
}

describe("backing files", () => {
  const why = unprivilegedUnavailableReason();

  it("a link planted in a 0777 directory stops start-up; the root-only target is untouched", (t) => {
    if (why) return t.skip(why);
    const { dir, secret } = makeCase();
    const state = makeWorldWritableDir(join(dir, "state"));
    runAsAttacker(`ln -s ${secret} ${state}/eeprom.bin`);
    const stderr = refusedStart(dir, eepromConfig(dir, { backing: "state/eeprom.bin" }));
    assert.match(stderr, /backing file .*eeprom\.bin/);
    assert.match(stderr, /mode 0777 lets others than its owner create, rename and remove/);
    assert.deepEqual(readFileSync(secret), SECRET);
  });

  it("a link planted in a sticky 1777 directory stops start-up; the target is untouched", (t) => {
    if (why) return t.skip(why);
    const { dir, secret } = makeCase();
    const state = join(dir, "state");
    mkdirSync(state);
    chmodSync(state, 0o1777);
    runAsAttacker(`ln -s ${secret} ${state}/eeprom.bin`);
    const stderr = refusedStart(dir, eepromConfig(dir, { backing: "state/eeprom.bin" }));
    assert.match(stderr, /eeprom\.bin: is a symbolic link/);
    assert.deepEqual(readFileSync(secret), SECRET);
  });

  it("creates backing files 0600 and narrows an existing wider one", async () => {
    const { dir } = makeCase();
    const old = join(dir, "old.bin");
    writeFileSync(old, new Uint8Array(SIZE_24C32).fill(0x11));
    chmodSync(old, 0o644);
    const config = writeConfig(dir, [
      { bus: "sim", address: "0x50", model: "24c32", options: { backing: "new.bin" } },
      { bus: "sim", address: "0x51", model: "24c32", options: { backing: "old.bin" } },
    ]);
    await withGuest(dir, ["--config", config], async (guest) => {
      const [read] = await transferOk(guest, [
        { addr: 0x51, write: Uint8Array.of(0, 0) },
        { addr: 0x51, read: 2 },
      ]);
      assert.deepEqual([...(read ?? [])], [0x11, 0x11]);
    });
    assert.equal(statSync(join(dir, "new.bin")).mode & 0o777, 0o600);
    assert.equal(statSync(old).mode & 0o777, 0o600);
  });
});

describe("initial.file", () => {
  const why = unprivilegedUnavailableReason();

  it("a link to a root-only file, planted in a sticky directory, is not read", (t) => {
    if (why) return t.skip(why);
    const { dir, secret } = makeCase();
    const pub = join(dir, "pub");
    mkdirSync(pub);
    chmodSync(pub, 0o1777);
    runAsAttacker(`ln -s ${secret} ${pub}/initial.bin`);
    const stderr = refusedStart(dir, eepromConfig(dir, { initial: { file: "pub/initial.bin" } }));
    assert.match(stderr, /initial\.file: .*initial\.bin: is a symbolic link/);
  });

  it("a file others can write is refused", () => {
    const { dir } = makeCase();
    writeFileSync(join(dir, "initial.bin"), "abc");
    chmodSync(join(dir, "initial.bin"), 0o666);
    const stderr = refusedStart(dir, eepromConfig(dir, { initial: { file: "initial.bin" } }));
    assert.match(
      stderr,
      /refusing .*initial\.bin: .*mode 0666 lets others than its owner change it/,
    );
  });

  it("a FIFO is refused at once, without waiting for a writer", () => {
    const { dir } = makeCase();
    const fifo = join(dir, "initial.fifo");
    assert.equal(spawnSync("mkfifo", [fifo]).status, 0);
    const stderr = refusedStart(dir, eepromConfig(dir, { initial: { file: "initial.fifo" } }));
    assert.match(stderr, /initial\.fifo: not a regular file/);
  });
});

/** A model module built on the package's public API: reads return `value`. */
const CHIP_MODULE = (value: number) => `
import { defineModel } from "vhost-device-i2c";
export default defineModel({
  name: "fixed",
  description: "reads return one fixed byte",
  options: { type: "object", properties: {} },
  create() {
    return { targets: [{ start: () => true, write: () => true, read(into) { into.fill(${value}); }, stop() {} }] };
  },
});
`;

/** An admin's module tree under `base`: site/cfg/{chip.mjs,devices.json}, all root 0755/0644. */
function moduleTree(base: string, value = 0x42): { cfg: string; config: string } {
  const cfg = join(base, "site", "cfg");
  mkdirSync(cfg, { recursive: true, mode: 0o755 });
  writeFileSync(join(cfg, "chip.mjs"), CHIP_MODULE(value));
  const config = join(cfg, "devices.json");
  writeFileSync(
    config,
    JSON.stringify({ devices: [{ bus: "sim", address: "0x20", module: "./chip.mjs" }] }),
  );
  return { cfg, config };
}

async function readsChip(dir: string, config: string): Promise<number[]> {
  return withGuest(dir, ["--config", config], async (guest) => {
    const [read] = await transferOk(guest, [{ addr: 0x20, read: 1 }]);
    return [...(read ?? [])];
  });
}

describe("model modules", () => {
  const why = unprivilegedUnavailableReason();

  it('"vhost-device-i2c" is the daemon\'s own package, whatever node_modules a user planted above', async (t) => {
    if (why) return t.skip(why);
    const { dir } = makeCase();
    const pub = join(dir, "pub");
    mkdirSync(pub);
    chmodSync(pub, 0o1777); // like /tmp: anyone may add entries
    const marker = join(dir, "attacker-code-ran");
    const planted = join(pub, "node_modules", "vhost-device-i2c");
    runAsAttacker(
      [
        `mkdir -p ${planted}`,
        `echo '{"name":"vhost-device-i2c","type":"module","exports":"./index.js"}' > ${planted}/package.json`,
        `echo 'import { writeFileSync } from "node:fs"; writeFileSync("${marker}", "uid " + process.getuid()); export const defineModel = (d) => d;' > ${planted}/index.js`,
      ].join(" && "),
    );
    const { config } = moduleTree(pub);
    assert.deepEqual(await readsChip(dir, config), [0x42]);
    assert.equal(existsSync(marker), false, "the planted package never ran");
  });

  it("a module others can write is refused (exit 2), naming the module and the rule", () => {
    const { dir } = makeCase();
    const { cfg, config } = moduleTree(dir);
    chmodSync(join(cfg, "chip.mjs"), 0o666);
    const stderr = refusedStart(dir, config);
    assert.match(
      stderr,
      /refusing model module .*chip\.mjs: .*mode 0666 lets others than its owner change it/,
    );
  });

  it("a file the module imports that others can write is refused", () => {
    const { dir } = makeCase();
    const { cfg, config } = moduleTree(dir);
    writeFileSync(join(cfg, "value.mjs"), "export default 0x42;\n");
    chmodSync(join(cfg, "value.mjs"), 0o666);
    writeFileSync(
      join(cfg, "chip.mjs"),
      CHIP_MODULE(0)
        .replace("into.fill(0)", "into.fill(value)")
        .replace(
          'import { defineModel } from "vhost-device-i2c";',
          'import { defineModel } from "vhost-device-i2c";\nimport value from "./value.mjs";',
        ),
    );
    const stderr = refusedStart(dir, config);
    assert.match(stderr, /refusing .*value\.mjs \(imported by .*chip\.mjs\): .*mode 0666/);
  });

  it("a module in a directory anyone can write to is refused", () => {
    const { dir } = makeCase();
    const { cfg, config } = moduleTree(dir);
    chmodSync(join(cfg, ".."), 0o777);
    const stderr = refusedStart(dir, config);
    assert.match(stderr, /site: mode 0777 lets others than its owner create, rename and remove/);
  });

  it("a config file others can write is refused", () => {
    const { dir } = makeCase();
    const { config } = moduleTree(dir);
    chmodSync(config, 0o664);
    const stderr = refusedStart(dir, config);
    assert.match(stderr, /refusing config file .*devices\.json: .*mode 0664/);
  });

  it("a SIGHUP reload refuses a module others can write and keeps the configuration it has", async () => {
    const { dir } = makeCase();
    const { cfg, config } = moduleTree(dir, 0x42);
    const prefix = join(dir, "hup.sock");
    await withDaemon(["-s", prefix, "--config", config], [`${prefix}0`], async (daemon) => {
      writeFileSync(join(cfg, "other.mjs"), CHIP_MODULE(0x99));
      chmodSync(join(cfg, "other.mjs"), 0o666);
      writeFileSync(
        config,
        JSON.stringify({ devices: [{ bus: "sim", address: "0x20", module: "./other.mjs" }] }),
      );
      daemon.child.kill("SIGHUP");
      await daemon.waitForLog("reload failed, keeping the current configuration");
      assert.match(daemon.stderr, /refusing model module .*other\.mjs/);
      const guest = await I2cGuest.connect(`${prefix}0`);
      try {
        const [read] = await transferOk(guest, [{ addr: 0x20, read: 1 }]);
        assert.deepEqual([...(read ?? [])], [0x42], "the module loaded at start-up still serves");
      } finally {
        await guest.close();
      }
    });
  });
});
