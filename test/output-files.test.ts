/**
 * The files the real daemon writes from guest traffic (`--pcap`, `--trace-file`), against a local
 * user (uid 1234) who can write in their directory:
 * - a link planted at the path before start-up (sticky 1777 directory) is refused with a clear
 *   message, nothing is written through it; a directory anyone can write to (0777) is refused;
 * - rotation never writes through a link planted at the name after each rename (a racer that plants
 *   it as fast as it can, for the whole run);
 * - the files are 0600, an existing wider one of the daemon's is narrowed;
 * - the size and count caps are on by default: a flood of guest traffic leaves at most 2 files of
 *   at most 64 MiB each;
 * - one 1024 x 64 KiB transfer with --trace-file costs a bounded line and a bounded amount of memory.
 * Talks to the daemon only through its command line, sockets, files and /proc.
 * @module
 */

import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { I2cDriver, I2cGuest } from "../src/frontend/i2c-driver.js";
import { MAX_TRANSFER_LENGTH } from "../src/i2c/request.js";
import { parseTraceLine, TRACE_BYTES_SHOWN, TRACE_LINE_MAX_BYTES } from "../src/trace/format.js";
import { PCAP_HEADER_SIZE } from "../src/trace/pcap.js";
import { DEFAULT_MAX_FILE_SIZE } from "../src/trace/rotating-file.js";
import { memoryEepromArgs } from "./helpers/configured-daemon.js";
import { MAIN_JS, makeTempDir, WAIT_MS, waitUntil, withDaemon } from "./helpers/daemon.js";
import { scaled } from "./helpers/time.js";
import {
  ATTACKER_UID,
  asAttacker,
  attackerNode,
  makeWorldWritableDir,
  runAsAttacker,
  unprivilegedUnavailableReason,
} from "./helpers/unprivileged.js";

const EEPROM = 0x50;
const VICTIM_TEXT = "precious root-only data\n";

const root = makeTempDir("vdi2c-outfiles-");
chmodSync(root.path, 0o755); // the attacker must reach the directories inside
after(() => root.remove());

let serial = 0;
/** A fresh case directory: `pub` (1777, like /tmp), `rootonly` (0700) holding the victim file. */
function makeCase(): { dir: string; pub: string; victim: string } {
  const dir = join(root.path, `case${serial++}`);
  mkdirSync(dir, { mode: 0o755 });
  const pub = join(dir, "pub");
  mkdirSync(pub);
  chmodSync(pub, 0o1777);
  mkdirSync(join(dir, "rootonly"), { mode: 0o700 });
  const victim = join(dir, "rootonly", "victim");
  writeFileSync(victim, VICTIM_TEXT, { mode: 0o600 });
  return { dir, pub, victim };
}

/** Runs the daemon expecting it to refuse to start; returns its stderr. */
function refusedStart(args: readonly string[]): string {
  const result = spawnSync(process.execPath, [MAIN_JS, ...args], {
    encoding: "utf8",
    timeout: scaled(WAIT_MS),
    killSignal: "SIGKILL",
  });
  assert.equal(result.status, 2, `exit status 2 expected\n${result.stderr}`);
  return result.stderr;
}

/** One write of `text` to the emulated EEPROM at offset 0. */
async function writeText(guest: I2cGuest, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  const result = await guest.driver.transfer([
    { addr: EEPROM, write: Uint8Array.of(0x00, 0x00, ...bytes.subarray(0, 30)) },
  ]);
  assert.equal(result.ok, true);
}

describe("--pcap and --trace-file refuse what a local user planted", () => {
  const why = unprivilegedUnavailableReason();

  for (const option of ["--pcap", "--trace-file"]) {
    it(`${option}: a link at the path in a sticky 1777 directory is refused, the target untouched`, (t) => {
      if (why) return t.skip(why);
      const { dir, pub, victim } = makeCase();
      const path = join(pub, "bus.out");
      runAsAttacker(`ln -s ${victim} ${path}`);
      const stderr = refusedStart([
        ...["-s", join(dir, "vi2c.sock"), "-l", "sim:0x50=24c32", option, path],
      ]);
      assert.match(stderr, /is a symbolic link/);
      assert.match(stderr, new RegExp(path));
      assert.equal(readFileSync(victim, "utf8"), VICTIM_TEXT);
      assert.equal(statSync(victim).mode & 0o777, 0o600);
    });

    it(`${option}: a dangling link creates nothing where it points`, (t) => {
      if (why) return t.skip(why);
      const { dir, pub } = makeCase();
      const target = join(dir, "rootonly", "authorized_keys");
      const path = join(pub, "bus.out");
      runAsAttacker(`ln -s ${target} ${path}`);
      refusedStart(["-s", join(dir, "vi2c.sock"), "-l", "sim:0x50=24c32", option, path]);
      assert.equal(existsSync(target), false);
    });

    it(`${option}: a directory anyone can write to (0777) is refused`, (t) => {
      if (why) return t.skip(why);
      const { dir, victim } = makeCase();
      const open = makeWorldWritableDir(join(dir, "open"));
      const path = join(open, "bus.out");
      runAsAttacker(`ln -s ${victim} ${path}`);
      const stderr = refusedStart([
        ...["-s", join(dir, "vi2c.sock"), "-l", "sim:0x50=24c32", option, path],
      ]);
      assert.match(stderr, /mode 0777 lets others than its owner create, rename and remove/);
      assert.equal(readFileSync(victim, "utf8"), VICTIM_TEXT);
    });
  }

  it("a file of another user at the path is refused, and left as it was", (t) => {
    if (why) return t.skip(why);
    const { dir, pub } = makeCase();
    const path = join(pub, "bus.pcap");
    runAsAttacker(`printf theirs > ${path}`);
    const stderr = refusedStart([
      ...["-s", join(dir, "vi2c.sock"), "-l", "sim:0x50=24c32", "--pcap", path],
    ]);
    assert.match(stderr, new RegExp(`owned by uid ${ATTACKER_UID}`));
    assert.equal(readFileSync(path, "utf8"), "theirs");
  });
});

/**
 * An attacker process (uid 1234) that plants `name -> target` in `dir` whenever the name is free,
 * in a tight loop, until it is stopped; it prints how many links it planted.
 */
function startPlanter(dir: string, name: string, target: string): ChildProcess {
  const script = `
    const fs = require("node:fs");
    const [dir, name, target] = process.argv.slice(1);
    const path = dir + "/" + name;
    let planted = 0;
    let running = true;
    process.on("SIGTERM", () => { running = false; });
    const loop = () => {
      for (let i = 0; i < 2000; i++) {
        try { fs.symlinkSync(target, path); planted++; } catch {}
      }
      if (running) setImmediate(loop); else { console.log(planted); process.exit(0); }
    };
    console.log("ready");
    loop();`;
  const [command, ...prefix] = asAttacker();
  return spawn(command as string, [...prefix, attackerNode(), "-e", script, dir, name, target], {
    stdio: ["ignore", "pipe", "inherit"],
  });
}

async function stopPlanter(planter: ChildProcess): Promise<number> {
  let out = "";
  planter.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    out += chunk;
  });
  const exited = new Promise((resolve) => planter.on("close", resolve));
  planter.kill("SIGTERM");
  await exited;
  return Number(out.trim().split("\n").at(-1));
}

describe("rotation against a link planted at the name after every rename", () => {
  const why = unprivilegedUnavailableReason();

  for (const [option, limits] of [
    ["--pcap", ["--pcap-max-size", "200"]],
    ["--trace-file", ["--trace-max-size", "300"]],
  ] as const) {
    it(`${option} never writes through it`, async (t) => {
      if (why) return t.skip(why);
      const { dir, pub, victim } = makeCase();
      const path = join(pub, "cap.out");
      const prefix = join(dir, "vi2c.sock");
      await withDaemon(
        ["-s", prefix, ...memoryEepromArgs(dir, "24c32"), option, path, ...limits],
        [`${prefix}0`],
        async () => {
          const planter = startPlanter(pub, "cap.out", victim);
          let planted = 0;
          try {
            const guest = await I2cGuest.connect(`${prefix}0`, { queueSize: 16 });
            try {
              for (let i = 0; i < 1500; i++) await writeText(guest, `ssh-ed25519 AAAA${i}`);
            } finally {
              await guest.close();
            }
          } finally {
            planted = await stopPlanter(planter);
          }
          t.diagnostic(`links planted: ${planted}`);
          assert.ok(planted > 0, "the racer planted links at the free name");
        },
      );
      assert.equal(readFileSync(victim, "utf8"), VICTIM_TEXT, "the victim is unchanged");
      const current = lstatSync(path);
      assert.ok(current.isFile(), "the daemon's file holds the name at the end");
      assert.equal(current.uid, 0);
      for (const name of readdirSync(pub)) {
        const entry = lstatSync(join(pub, name));
        if (entry.isFile()) assert.equal(entry.mode & 0o777, 0o600, `${name} is 0600`);
      }
    });
  }
});

describe("file modes", () => {
  it("creates the capture and trace files 0600 and narrows an existing wider one", async () => {
    const { dir } = makeCase();
    const pcap = join(dir, "bus.pcap");
    const trace = join(dir, "trace.txt");
    writeFileSync(trace, "earlier line\n", { mode: 0o644 });
    chmodSync(trace, 0o666);
    const prefix = join(dir, "vi2c.sock");
    await withDaemon(
      ["-s", prefix, ...memoryEepromArgs(dir, "24c32"), "--pcap", pcap, "--trace-file", trace],
      [`${prefix}0`],
      async () => {
        const guest = await I2cGuest.connect(`${prefix}0`);
        try {
          await writeText(guest, "hello");
        } finally {
          await guest.close();
        }
        await waitUntil(() => readFileSync(trace, "utf8").split("\n").length > 2, "a trace line");
      },
    );
    assert.equal(statSync(pcap).mode & 0o777, 0o600);
    assert.equal(statSync(trace).mode & 0o777, 0o600);
    assert.match(readFileSync(trace, "utf8"), /^earlier line\n.* w\d+@0x50 0x00 0x00 0x68/);
  });
});

/** Peak resident set of a process, in KiB (Linux /proc). */
function peakRssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmHWM:\s+([0-9]+) kB/.exec(status)?.[1]);
}

describe("bounded cost of guest traffic", () => {
  it("the largest transfer (1024 messages, 512 KiB) with --trace-file: a bounded line, bounded memory", async () => {
    const { dir } = makeCase();
    const trace = join(dir, "trace.txt");
    const prefix = join(dir, "vi2c.sock");
    // The device refuses transfers over 512 KiB (request.ts): the most a guest can make one line show.
    const length = MAX_TRANSFER_LENGTH / 1024;
    await withDaemon(
      ["-s", prefix, ...memoryEepromArgs(dir, "24c512"), "--trace-file", trace],
      [`${prefix}0`],
      async (daemon) => {
        const guest = await I2cGuest.connect(`${prefix}0`, {
          queueSize: 1024,
          ramSize: 256 << 20,
          timeoutMs: scaled(60_000),
        });
        try {
          const queue = guest.queues[0];
          assert.ok(queue);
          const driver = new I2cDriver(queue, guest.ram, {
            indirect: true,
            maxMessageLength: length,
            timeoutMs: scaled(60_000),
          });
          const data = new Uint8Array(length).fill(0x41);
          const ops = Array.from({ length: 1024 }, () => ({ addr: EEPROM, write: data }));
          const result = await driver.transfer(ops);
          assert.equal(result.ok, true);
        } finally {
          await guest.close();
        }
        await waitUntil(() => readFileSync(trace).length > 0, "the trace line", 30_000);
        // Guest memory the daemon maps counts too (256 MiB, of which the transfer touches 0.5).
        const peakMiB = peakRssKiB(daemon.pid) / 1024;
        assert.ok(peakMiB < 400, `daemon peak RSS ${peakMiB.toFixed(0)} MiB`);
      },
      { env: { NODE_OPTIONS: "--max-old-space-size=512" } },
    );
    const text = readFileSync(trace, "utf8");
    const lines = text.split("\n").filter(Boolean);
    assert.equal(lines.length, 1);
    const line = lines[0] as string;
    assert.ok(Buffer.byteLength(line) <= TRACE_LINE_MAX_BYTES, `line of ${line.length} bytes`);
    const parsed = parseTraceLine(line);
    assert.equal(parsed.result, "ok");
    assert.equal(parsed.messages.length + parsed.messagesOmitted, 1024);
    assert.equal(parsed.messages[0]?.data.length, TRACE_BYTES_SHOWN);
    assert.match(line, new RegExp(`…\\(\\+${length - TRACE_BYTES_SHOWN} bytes\\)`));
  });

  it("the default caps hold: a flood leaves FILE and FILE.1 of at most 64 MiB each", async () => {
    const { dir } = makeCase();
    const pcap = join(dir, "flood.pcap");
    const trace = join(dir, "flood.txt");
    const prefix = join(dir, "vi2c.sock");
    await withDaemon(
      ["-s", prefix, ...memoryEepromArgs(dir, "24c512"), "--pcap", pcap, "--trace-file", trace],
      [`${prefix}0`],
      async () => {
        // Two rotations happened once FILE.1 is no longer the first file.
        const firsts = new Map([pcap, trace].map((path) => [path, statSync(path).ino]));
        const rotatedTwice = (path: string) =>
          existsSync(`${path}.1`) && statSync(`${path}.1`).ino !== firsts.get(path);
        const guest = await I2cGuest.connect(`${prefix}0`, {
          queueSize: 64,
          ramSize: 16 << 20,
          timeoutMs: scaled(60_000),
        });
        try {
          const queue = guest.queues[0];
          assert.ok(queue);
          const driver = new I2cDriver(queue, guest.ram, {
            indirect: true,
            maxMessageLength: 0xffff,
            timeoutMs: scaled(60_000),
          });
          // 48 writes of 64 bytes: a trace line at its 16 KiB cap; 8 writes of 64 KiB: 512 KiB of
          // pcap records (the largest transfer). Whichever file has not rotated twice yet gets its
          // kind of transfer.
          const forTrace = Array.from({ length: 48 }, (_, i) => ({
            addr: EEPROM,
            write: new Uint8Array(64).fill(i),
          }));
          const forPcap = Array.from({ length: 8 }, () => ({
            addr: EEPROM,
            write: new Uint8Array(0xffff).fill(0x5a),
          }));
          const deadline = Date.now() + scaled(90_000);
          while (!(rotatedTwice(trace) && rotatedTwice(pcap))) {
            assert.ok(Date.now() < deadline, "the flood rotated both files twice in time");
            for (let i = 0; i < 16; i++) {
              const result = await driver.transfer(rotatedTwice(trace) ? forPcap : forTrace);
              assert.equal(result.ok, true);
            }
          }
        } finally {
          await guest.close();
        }
      },
    );
    for (const path of [pcap, trace]) {
      const base = path.slice(dir.length + 1);
      const names = readdirSync(dir).filter((name) => name.includes(base));
      assert.deepEqual(names.sort(), [base, `${base}.1`], "two files, no more");
      for (const name of names) {
        const size = statSync(join(dir, name)).size;
        assert.ok(size <= DEFAULT_MAX_FILE_SIZE, `${name}: ${size} bytes`);
      }
    }
    assert.ok(readFileSync(pcap).length >= PCAP_HEADER_SIZE);
  });
});
