// Integration: the daemon's command line as a user meets it: exit statuses and messages for each
// refusal, help and version, shutdown on SIGTERM/SIGINT, socket files replaced or left alone.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { after, describe, it } from "node:test";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { UnixListener } from "../src/sys/unix-socket.js";
import { FakeI2c, fakeUnavailableReason } from "./fake-i2c/fake.js";
import {
  DaemonProcess,
  exists,
  isSocket,
  MAIN_JS,
  makeTempDir,
  startDaemon,
  WAIT_MS,
  withDaemonLog,
} from "./helpers/daemon.js";
import { fakeSysfsEnv } from "./helpers/fake-sysfs.js";
import { commandArgs, RUST_README_ADAPTERS, RUST_README_COMMANDS } from "./helpers/rust-readme.js";
import { scaled } from "./helpers/time.js";

interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion (it must exit by itself: every refusal happens before serving). */
function runCli(args: readonly string[], env: Readonly<Record<string, string>> = {}): RunResult {
  const result = spawnSync(process.execPath, [MAIN_JS, ...args], {
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: scaled(WAIT_MS),
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const dir = makeTempDir();
after(() => dir.remove());
const socket = `${dir.path}/vi2c.sock`;

/** A fake sysfs tree with adapters i2c-3 "Fake adapter three" and two adapters named "twin". */
function fakeSysfs(): string {
  const root = `${dir.path}/sys`;
  const adapters: [number, string][] = [
    [3, "Fake adapter three"],
    [4, "twin"],
    [5, "twin"],
  ];
  for (const [n, name] of adapters) {
    mkdirSync(`${root}/bus/i2c/devices/i2c-${n}`, { recursive: true });
    writeFileSync(`${root}/bus/i2c/devices/i2c-${n}/name`, `${name}\n`);
  }
  return root;
}

describe("vhost-device-i2c refusals (exit status 2 and a message)", () => {
  const sysfs = fakeSysfs();
  const cases: { what: string; args: string[]; message: RegExp }[] = [
    { what: "no options", args: [], message: /missing --socket-path/ },
    { what: "missing device list", args: ["-s", socket], message: /missing --device-list/ },
    { what: "unknown option", args: ["-s", socket, "-l", "3:0x50", "--fast"], message: /--fast/ },
    { what: "positional argument", args: ["-s", socket, "-l", "3:0x50", "x"], message: /"x"/ },
    {
      what: "socket count 0",
      args: ["-s", socket, "-c", "0", "-l", "3:0x50"],
      message: /socket-count "0"/,
    },
    {
      what: "negative socket count, in the count's own words",
      args: ["-s", socket, "-c", "-1", "-l", "3:0x50"],
      message: /^vhost-device-i2c: error: invalid --socket-count "-1": expected a whole number/,
    },
    {
      what: "a control socket on one of its own sockets (nothing bound)",
      args: ["-s", socket, "-c", "2", "-l", "3:0x50", "--control-socket", `${socket}1`],
      message: /--control-socket ".*vi2c.sock1" is the same file as the vhost-user socket/,
    },
    {
      what: "socket count not a number",
      args: ["-s", socket, "-c", "two", "-l", "3:0x50"],
      message: /socket-count/,
    },
    {
      what: "bad log level",
      args: ["-s", socket, "-l", "3:0x50", "--log-level", "loud"],
      message: /log-level "loud"/,
    },
    { what: "empty device list", args: ["-s", socket, "-l", ""], message: /empty/ },
    {
      what: "address above 0x7f",
      args: ["-s", socket, "-l", "3:0x80"],
      message: /0x80 is above 0x7f/,
    },
    {
      what: "duplicate address",
      args: ["-s", socket, "-l", "3:0x50:80"],
      message: /already listed/,
    },
    {
      what: "duplicate adapter",
      args: ["-s", socket, "-l", "3:0x50,3:0x51"],
      message: /adapter 3 is already listed/,
    },
    {
      what: "address not a number",
      args: ["-s", socket, "-l", "3:abc"],
      message: /"abc" is not a decimal or 0x-hex number/,
    },
    {
      what: "unknown model",
      args: ["-s", socket, "-l", "sim:0x50=24c99"],
      message: /unknown device model "24c99"/,
    },
    {
      what: "adapter name matching none (lists the adapters)",
      args: ["-s", socket, "-l", "nonesuch:0x50"],
      message: /no adapter named "nonesuch".*i2c-3 "Fake adapter three"/,
    },
    {
      what: "adapter name matching several (lists them)",
      args: ["-s", socket, "-l", "twin:0x50"],
      message: /2 adapters are named "twin": i2c-4 "twin", i2c-5 "twin"/,
    },
  ];
  for (const { what, args, message } of cases) {
    it(`refuses ${what}`, () => {
      const result = runCli(args, fakeSysfsEnv(sysfs));
      assert.equal(result.status, 2, result.stderr);
      assert.match(result.stderr, message);
      assert.match(result.stderr, /--help/);
      for (const path of [`${socket}0`, `${socket}1`]) {
        assert.equal(exists(path), false, `nothing listens at ${path} after a refusal`);
      }
    });
  }

  it("looks adapter names up in /sys only: VHOST_DEVICE_I2C_SYSFS_ROOT is not honoured", () => {
    const result = runCli(["-s", socket, "-l", "Fake adapter three:0x50"], {
      VHOST_DEVICE_I2C_SYSFS_ROOT: sysfs,
    });
    assert.equal(result.status, 2, result.stderr);
    assert.match(
      result.stderr,
      /no adapter named "Fake adapter three" under \/sys\/bus\/i2c\/devices/,
    );
    assert.doesNotMatch(result.stderr, /i2c-3/, "the fake tree was not read");
  });

  it("refuses a socket directory that does not exist", () => {
    const result = runCli(["-s", `${dir.path}/missing/vi2c.sock`, "-l", "sim:0x50=24c02"]);
    assert.equal(result.status, 2, result.stderr);
    assert.match(
      result.stderr,
      /cannot create socket .*\/missing\/vi2c\.sock0: .*\/missing does not exist \(ENOENT\) \(choose another --socket-path\)/,
    );
  });

  it("names the range of a multi-address chip that another device overlaps", () => {
    const result = runCli(["-s", socket, "-l", "sim:0x50=24c16:0x52=24c02"]);
    assert.equal(result.status, 2, result.stderr);
    assert.match(
      result.stderr,
      /24c02 at 0x52: 0x52 is already taken by 24c16 at 0x50, which covers 0x50-0x57\n/,
    );
  });

  it("refuses a socket path taken by a file that is not a socket", () => {
    writeFileSync(`${dir.path}/plain0`, "not a socket");
    const result = runCli(["-s", `${dir.path}/plain`, "-l", "sim:0x50=24c02"]);
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /is not a socket/);
    assert.equal(readFileSync(`${dir.path}/plain0`, "utf8"), "not a socket");
  });
});

describe("the Rust daemon's command lines (drop-in)", {
  skip: fakeUnavailableReason() ?? false,
}, () => {
  const [readmeLine] = RUST_README_COMMANDS;
  // The README's line with clap's short spellings: -s=PATH, -cN, -l=LIST.
  const shortLine = 'vhost-device-i2c -s=vi2c.sock -c1 -l="i915 gmbus dpd:32"';
  for (const line of [readmeLine, shortLine]) {
    it(`serves vi2c.sock0 in its working directory for: ${line}`, async () => {
      const cwd = `${dir.path}/readme-${line === readmeLine ? "long" : "short"}`;
      const sysfs = `${cwd}/sys`;
      const [name, adapter] = Object.entries(RUST_README_ADAPTERS)[0] ?? [];
      mkdirSync(`${sysfs}/bus/i2c/devices/i2c-${adapter}`, { recursive: true });
      writeFileSync(`${sysfs}/bus/i2c/devices/i2c-${adapter}/name`, `${name}\n`);
      const fake = await FakeI2c.create(`adapter ${adapter} funcs=i2c|emul\ndevice ${adapter} 32`);
      const socketPath = `${cwd}/vi2c.sock0`;
      const daemon = new DaemonProcess(commandArgs(line), {
        env: { ...fake.env({}), ...fakeSysfsEnv(sysfs) },
        cwd,
      });
      try {
        await daemon.waitForLog("listening path=vi2c.sock0\n");
        assert.ok(isSocket(socketPath), `${socketPath} is a socket`);
        const vm = await I2cGuest.connect(socketPath);
        try {
          assert.equal((await vm.driver.transfer([{ addr: 32, read: 1 }])).ok, true);
        } finally {
          await vm.close();
        }
      } catch (err) {
        throw withDaemonLog(err, daemon);
      } finally {
        await daemon.stop();
        await fake.cleanup();
      }
    });
  }
});

describe("vhost-device-i2c help and version", () => {
  it("prints usage with examples and exits 0", () => {
    const result = runCli(["--help"]);
    assert.equal(result.status, 0);
    assert.match(result.stdout, /Usage: vhost-device-i2c/);
    assert.match(result.stdout, /Examples:/);
    const wide = result.stdout.split("\n").filter((line) => line.length > 80);
    assert.deepEqual(wide, [], "80 columns when stdout is not a terminal");
  });

  it("prints the package version", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
    const result = runCli(["--version"]);
    assert.equal(result.status, 0);
    assert.equal(result.stdout, `vhost-device-i2c ${pkg.version}\n`);
  });
});

describe("vhost-device-i2c lifetime", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it(`exits 0 on ${signal} and removes its socket files`, async () => {
      const prefix = `${dir.path}/sig-${signal}.sock`;
      const paths = [`${prefix}0`, `${prefix}1`];
      const daemon = await startDaemon(["-s", prefix, "-c", "2", "-l", "sim:0x50=24c02"], paths);
      try {
        for (const path of paths) assert.ok(isSocket(path));
        daemon.child.kill(signal);
        assert.deepEqual(await daemon.waitForExit(), { code: 0, signal: null });
        for (const path of paths) assert.equal(exists(path), false, `${path} removed`);
      } catch (err) {
        throw withDaemonLog(err, daemon);
      } finally {
        if (!daemon.hasExited) daemon.child.kill("SIGKILL");
      }
    });
  }

  it("exits 0 on SIGTERM while a front-end is connected", async () => {
    const prefix = `${dir.path}/busy.sock`;
    const daemon = await startDaemon(["-s", prefix, "-l", "sim:0x50=24c02"], [`${prefix}0`]);
    const vm = await I2cGuest.connect(`${prefix}0`);
    try {
      assert.equal((await vm.driver.transfer([{ addr: 0x50, read: 1 }])).ok, true);
      daemon.child.kill("SIGTERM");
      assert.deepEqual(await daemon.waitForExit(), { code: 0, signal: null });
      assert.equal(exists(`${prefix}0`), false);
    } catch (err) {
      throw withDaemonLog(err, daemon);
    } finally {
      if (!daemon.hasExited) daemon.child.kill("SIGKILL");
      await vm.close();
    }
  });

  it("replaces a stale socket file left by a dead process", async () => {
    const prefix = `${dir.path}/stale.sock`;
    UnixListener.listen(`${prefix}0`).close(); // bound, then nobody listens: stale
    assert.ok(isSocket(`${prefix}0`));
    const daemon = await startDaemon(["-s", prefix, "-l", "sim:0x50=24c02"], [`${prefix}0`]);
    const vm = await I2cGuest.connect(`${prefix}0`);
    try {
      assert.equal((await vm.driver.transfer([{ addr: 0x50, read: 1 }])).ok, true);
    } catch (err) {
      throw withDaemonLog(err, daemon);
    } finally {
      await vm.close();
      await daemon.stop();
    }
  });

  it("does not steal a socket a live daemon serves (exit status 2, the first keeps serving)", async () => {
    const prefix = `${dir.path}/live.sock`;
    const first = await startDaemon(["-s", prefix, "-l", "sim:0x50=24c02"], [`${prefix}0`]);
    try {
      const second = new DaemonProcess(["-s", prefix, "-l", "sim:0x50=24c02"]);
      const status = await second.waitForExit();
      assert.deepEqual(status, { code: 2, signal: null }, second.stderr);
      assert.match(second.stderr, /served by a running process/);
      assert.ok(isSocket(`${prefix}0`));
      const vm = await I2cGuest.connect(`${prefix}0`);
      try {
        assert.equal((await vm.driver.transfer([{ addr: 0x50, read: 1 }])).ok, true);
      } finally {
        await vm.close();
      }
    } catch (err) {
      throw withDaemonLog(err, first);
    } finally {
      await first.stop();
    }
  });
});
