// Integration: the built vi2c tool (dist/src/tools/vi2c.js) against the real daemon on an emulated
// 24c02 EEPROM at 0x50, over the daemon's socket as a VM would use it; outputs in i2c-tools form.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parseTraceLine } from "../src/trace/format.js";
import { memoryEepromArgs, writeConfig } from "./helpers/configured-daemon.js";
import {
  type DaemonProcess,
  makeTempDir,
  startDaemon,
  waitUntil,
  withDaemon,
} from "./helpers/daemon.js";
import { runToEnd } from "./helpers/run.js";
import { scaled } from "./helpers/time.js";

const VI2C_JS = fileURLToPath(new URL("../src/tools/vi2c.js", import.meta.url));

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs vi2c with `args` (stdin: `input`), with a deadline so a hang fails the test. */
function vi2c(args: readonly string[], input = ""): Promise<Run> {
  return runToEnd(process.execPath, [VI2C_JS, ...args], { input });
}

const DETECT_GRID = `     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f
00:                         -- -- -- -- -- -- -- -- 
10: -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- 
20: -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- 
30: -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- 
40: -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- 
50: 50 -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- 
60: -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- 
70: -- -- -- -- -- -- -- --                         
`;

describe("vi2c --version and --help", () => {
  it("prints the package version like the daemon's --version", async () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
    for (const option of ["--version", "-V"]) {
      const run = await vi2c([option]);
      assert.deepEqual([run.status, run.stdout, run.stderr], [0, `vi2c ${pkg.version}\n`, ""]);
    }
  });

  it("prints its help within 80 columns when stdout is not a terminal", async () => {
    const run = await vi2c(["--help"]);
    assert.equal(run.status, 0);
    assert.match(run.stdout, /^Usage: vi2c /);
    assert.deepEqual(
      run.stdout.split("\n").filter((line) => line.length > 80),
      [],
    );
  });
});

describe("vi2c against the daemon with -l sim:0x50=24c02 (its 5 ms write cycle included)", () => {
  const dir = makeTempDir("vi2c-test-");
  const prefix = join(dir.path, "vi2c.sock");
  const socket = `${prefix}0`;
  let daemon: DaemonProcess;

  before(async () => {
    daemon = await startDaemon(["-s", prefix, "-l", "sim:0x50=24c02"], [socket]);
  });
  after(async () => {
    const status = await daemon.stop();
    dir.remove();
    assert.equal(status.code, 0, daemon.stderr);
  });

  it("detect -y prints i2cdetect's grid with the EEPROM at 0x50 and exits 0", async () => {
    const run = await vi2c(["detect", "-y", socket]);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, DETECT_GRID);
  });

  it("takes the socket first or as --socket as well", async () => {
    const first = await vi2c([socket, "detect", "-y", "0x50", "0x52"]);
    const option = await vi2c(["--socket", socket, "detect", "-y", "0x50", "0x52"]);
    assert.equal(first.status, 0, first.stderr);
    assert.equal(option.stdout, first.stdout);
    assert.match(first.stdout, /^50: 50 -- -- {40}\s*$/m);
  });

  it("set then get a byte, and with a mask (-m)", async () => {
    // Each vi2c is a process of its own: the 24c02's 5 ms write cycle is over before the next one.
    const set = await vi2c(["set", "-y", socket, "0x50", "0x10", "0x5a"]);
    assert.deepEqual([set.status, set.stdout], [0, ""], set.stderr);
    const written = await vi2c(["get", "-y", socket, "0x50", "0x10"]);
    assert.deepEqual([written.status, written.stdout], [0, "0x5a\n"], "the write took");
    const masked = await vi2c(["set", "-y", "-m", "0x0f", socket, "0x50", "0x10", "0x03"]);
    assert.equal(masked.status, 0, masked.stderr);
    const get = await vi2c(["get", "-y", socket, "0x50", "0x10"]);
    assert.deepEqual([get.status, get.stdout], [0, "0x53\n"]);
    const word = await vi2c(["get", "-y", socket, "0x50", "0x10", "w"]);
    assert.equal(word.stdout, "0xff53\n");
  });

  it("set -r during a 24Cxx write cycle: readback failed, as i2cset says on hardware; the byte is there after the cycle", async () => {
    const own = makeTempDir("vi2c-test-");
    const ownPrefix = join(own.path, "vi2c.sock");
    // The longest cycle a model takes (100 ms): the readback, one round trip later, surely meets it.
    const slow = { bus: "sim", address: "0x50", model: "24c02", options: { writeCycleMs: 100 } };
    try {
      await withDaemon(
        ["-s", ownPrefix, "--config", writeConfig(own.path, [slow])],
        [`${ownPrefix}0`],
        async () => {
          const set = await vi2c(["set", "-y", "-r", `${ownPrefix}0`, "0x50", "0x10", "0x5a"]);
          assert.deepEqual([set.status, set.stdout], [0, "Warning - readback failed\n"]);
          const deadline = Date.now() + scaled(5000);
          let get = await vi2c(["get", "-y", `${ownPrefix}0`, "0x50", "0x10"]);
          while (get.status !== 0 && Date.now() < deadline) {
            get = await vi2c(["get", "-y", `${ownPrefix}0`, "0x50", "0x10"]);
          }
          assert.deepEqual([get.status, get.stdout], [0, "0x5a\n"], get.stderr);
        },
      );
    } finally {
      own.remove();
    }
  });

  it("set -r on an EEPROM without write cycle (writeCycleMs 0): readback matched", async () => {
    const own = makeTempDir("vi2c-test-");
    const ownPrefix = join(own.path, "vi2c.sock");
    try {
      await withDaemon(
        ["-s", ownPrefix, ...memoryEepromArgs(own.path)],
        [`${ownPrefix}0`],
        async () => {
          const set = await vi2c(["set", "-y", "-r", `${ownPrefix}0`, "0x50", "0x10", "0x5a"]);
          assert.deepEqual([set.status, set.stdout], [0, "Value 0x5a written, readback matched\n"]);
        },
      );
    } finally {
      own.remove();
    }
  });

  it("transfer writes with a fill suffix and reads back in i2ctransfer's format", async () => {
    const write = await vi2c(["transfer", "-y", socket, "w5@0x50", "0x20", "0x04-"]);
    assert.deepEqual([write.status, write.stdout], [0, ""]);
    const read = await vi2c(["transfer", "-y", socket, "w1@0x50", "0x20", "r4"]);
    assert.deepEqual([read.status, read.stdout], [0, "0x04 0x03 0x02 0x01\n"]);
    const verbose = await vi2c(["transfer", "-y", "-v", socket, "w1@0x50", "0x21", "r2@0x50"]);
    assert.equal(
      verbose.stdout,
      "msg 0: addr 0x50, write, len 1, buf 0x21\nmsg 1: addr 0x50, read, len 2, buf 0x03 0x02\n",
    );
  });

  it("dump prints i2cdump's byte table, and a limited range in block mode", async () => {
    const full = await vi2c(["dump", "-y", socket, "0x50"]);
    assert.equal(full.status, 0, full.stderr);
    assert.equal(full.stderr, "No size specified (using byte-data access)\n");
    const lines = full.stdout.split("\n");
    assert.equal(lines.length, 18);
    assert.equal(
      lines[0],
      "     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f    0123456789abcdef",
    );
    assert.equal(
      lines[3],
      "20: 04 03 02 01 ff ff ff ff ff ff ff ff ff ff ff ff    ????............",
    );
    const block = await vi2c(["dump", "-y", "-r", "0x20-0x23", socket, "0x50", "i"]);
    assert.equal(
      block.stdout,
      "     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f    0123456789abcdef\n" +
        `20: 04 03 02 01 ${" ".repeat(36)}   ????${" ".repeat(12)}\n`,
    );
  });

  it("an address the daemon does not list fails with status 1", async () => {
    const get = await vi2c(["get", "-y", socket, "0x51", "0x00"]);
    assert.deepEqual([get.status, get.stdout, get.stderr], [1, "", "Error: Read failed\n"]);
    const transfer = await vi2c(["transfer", "-y", socket, "w1@0x50", "0x00", "r1@0x51"]);
    assert.equal(transfer.status, 1);
    // The daemon checks every message's address before any reaches the bus: nothing was sent.
    assert.equal(transfer.stderr, "Warning: only 0/2 messages were sent\n");
  });

  it("asks before touching the bus without -y, and stops on no", async () => {
    const refused = await vi2c(["set", socket, "0x50", "0x30", "0x77"], "n\n");
    assert.equal(refused.status, 0);
    assert.match(refused.stderr, /WARNING! This program can confuse your I2C bus/);
    assert.match(refused.stderr, /Aborting on user request\.\n$/);
    const get = await vi2c(["get", "-y", socket, "0x50", "0x30"]);
    assert.equal(get.stdout, "0xff\n", "nothing was written");
    const accepted = await vi2c(["get", socket, "0x50", "0x10"], "\n");
    assert.deepEqual([accepted.status, accepted.stdout], [0, "0x53\n"]);
  });

  it("usage errors exit 2 with the command's usage", async () => {
    const run = await vi2c(["get", "-y", socket, "0x80"]);
    assert.equal(run.status, 2);
    assert.match(run.stderr, /^Error: Chip address out of range \(0x08-0x77\)!\nUsage: vi2c get/);
  });

  it("info shows what the backend offers", async () => {
    const run = await vi2c(["info", socket]);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /bit 0 {3}VIRTIO_I2C_F_ZERO_LENGTH_REQUEST/);
    assert.match(run.stdout, /bit 3 {3}REPLY_ACK/);
    assert.match(run.stdout, /^queues: 1$/m);
  });

  it("--packed runs the same transfers on a packed ring", async () => {
    const run = await vi2c(["--packed", "transfer", "-y", socket, "w1@0x50", "0x20", "r2"]);
    assert.deepEqual([run.status, run.stdout], [0, "0x04 0x03\n"]);
  });

  it("a socket nobody listens on fails with status 1 and says why", async () => {
    const run = await vi2c(["get", "-y", join(dir.path, "nothing"), "0x50", "0x00"]);
    assert.equal(run.status, 1);
    assert.match(run.stderr, /^Error: Could not talk to the backend at .*nothing: .*ENOENT/);
  });

  it("a regular file or a directory as SOCKET: says it is not a socket", async () => {
    const file = join(dir.path, "plain");
    writeFileSync(file, "not a socket\n");
    for (const [path, why] of [
      [file, `${file} is not a socket`],
      [dir.path, `${dir.path} is a directory, not a socket`],
    ] as const) {
      for (const command of [["detect", "-y"], ["info"]]) {
        const run = await vi2c([...command, path]);
        assert.equal(run.status, 1, run.stderr);
        assert.equal(run.stderr, `Error: Could not talk to the backend at ${path}: ${why}\n`);
      }
    }
  });

  it("the daemon's -s prefix as SOCKET: suggests the socket it serves", async () => {
    const run = await vi2c(["detect", "-y", prefix]);
    assert.equal(run.status, 1, run.stderr);
    assert.equal(
      run.stderr,
      `Error: Could not talk to the backend at ${prefix}: ${prefix} does not exist: did you mean ${socket}? (a daemon given -s ${prefix} serves ${socket})\n`,
    );
  });

  it("a second vi2c while one is connected: prints the daemon's reason (one front-end per socket)", async () => {
    // The first waits at its prompt, connected: the socket's one front-end.
    const first = spawn(process.execPath, [VI2C_JS, "detect", socket], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    try {
      let prompt = "";
      first.stderr.setEncoding("utf8").on("data", (text: string) => {
        prompt += text;
      });
      await waitUntil(() => prompt.includes("Continue?"), "the first vi2c's prompt");
      for (const command of [["detect", "-y"], ["info"]]) {
        const second = await vi2c([...command, socket]);
        assert.equal(second.status, 1, second.stderr);
        assert.equal(
          second.stderr,
          `Error: Could not talk to the backend at ${socket}: vhost-device-i2c: refused: ${socket} already serves a front-end (pid ${first.pid}); one front-end per socket; -c 2 serves one more socket for another front-end\n`,
        );
      }
    } finally {
      first.stdin.end("n\n");
      await new Promise((resolve) => first.once("close", resolve));
    }
    // The socket serves the next front-end once the first has gone.
    const after = await vi2c(["detect", "-y", socket]);
    assert.equal(after.status, 0, after.stderr);
  });
});

describe("vi2c snapshot: capture emulated chips, serve the capture, diff the dumps", () => {
  const dir = makeTempDir("vi2c-snapshot-");
  const original = join(dir.path, "original.sock");
  const copy = join(dir.path, "copy.sock");
  const REGISTERS = { "0x01": 0x11, "0x02": 0x22, "0x10": 0xc1, "0x1f": 0xc2, "0x3f": 0x3f };
  const config = writeConfig(dir.path, [
    { bus: "sim", address: "0x50", model: "24c02", options: { initial: "000102030405deadbeef" } },
    {
      bus: "sim",
      address: "0x54",
      model: "24c32",
      options: { initial: `${"5a".repeat(200)}0102` },
    },
    { bus: "sim", address: "0x48", model: "lm75" },
    { bus: "sim", address: "0x49", model: "tmp102" },
    { bus: "sim", address: "0x40", model: "ina226" },
    // 0x10-0x1f stand for a FIFO or clear-on-read registers: never to be touched.
    {
      bus: "sim",
      address: "0x20",
      model: "register-file",
      options: { size: 64, default: 7, registers: REGISTERS, readOnly: [1] },
    },
    {
      bus: "sim",
      address: "0x21",
      model: "register-file",
      options: { size: 64, default: 0, registers: REGISTERS },
    },
  ]);
  /** Per chip: its address, the snapshot's arguments, the dumps to compare (not the skipped). */
  const CHIPS: [string, string[], string[][]][] = [
    ["0x50", ["--as", "24c02"], [[]]],
    ["0x54", ["--as", "24c32"], [[]]],
    ["0x48", ["w", "-r", "0-3"], [["w", "-r", "0-3"]]],
    ["0x49", ["w", "-r", "0-3"], [["w", "-r", "0-3"]]],
    ["0x40", ["w"], [["w"]]],
    [
      "0x20",
      ["-r", "0-0x3f", "--skip", "0x10-0x1f", "--read-only", "0x01"],
      [
        ["-r", "0-0x0f"],
        ["-r", "0x20-0x3f"],
      ],
    ],
    [
      "0x21",
      ["i", "-r", "0-0x3f", "--skip", "0x10-0x1f,0x30"],
      [
        ["i", "-r", "0-0x0f"],
        ["i", "-r", "0x20-0x2f"],
        ["i", "-r", "0x31-0x3f"],
      ],
    ],
  ];
  let first: DaemonProcess;
  let second: DaemonProcess | undefined;
  const snapshots = new Map<string, string>();
  /** The original daemon's trace of the snapshots alone (the dumps come later). */
  let snapshotTrace = "";

  before(async () => {
    first = await startDaemon(["-s", original, "--config", config, "--trace"], [`${original}0`]);
    for (const [addr, args] of CHIPS) {
      const file = join(dir.path, `${addr}.json`);
      const run = await vi2c(["snapshot", "-y", `${original}0`, addr, ...args, "-o", file]);
      assert.equal(run.status, 0, run.stderr);
      assert.equal(run.stdout, "", "the JSON goes to the -o file");
      snapshots.set(addr, readFileSync(file, "utf8"));
    }
    // The last snapshot's last read: 0x31-0x3f, its run's end.
    await waitUntil(() => /w1@0x21 0x31 r15/.test(first.stdout), "the snapshots' trace");
    snapshotTrace = first.stdout;
    const devices = [...snapshots.values()].flatMap((text) => JSON.parse(text).devices);
    const served = writeConfig(dir.path, devices, "snapshot.json");
    second = await startDaemon(["-s", copy, "--config", served], [`${copy}0`]);
  });
  after(async () => {
    const statuses = [await first.stop(), await second?.stop()];
    dir.remove();
    assert.deepEqual(
      statuses.map((status) => status?.code),
      [0, 0],
    );
  });

  it("writes a config file: register-file entries for register chips, the EEPROM model with --as", () => {
    const entry = (addr: string) => JSON.parse(snapshots.get(addr) ?? "{}").devices[0];
    assert.deepEqual(entry("0x50"), {
      bus: "sim",
      address: "0x50",
      model: "24c02",
      options: { initial: "000102030405deadbeef" },
    });
    assert.equal(entry("0x54").options.initial, `${"5a".repeat(200)}0102`);
    assert.deepEqual(entry("0x20").options, {
      size: 64,
      default: 7,
      registers: { "0x01": 0x11, "0x02": 0x22, "0x3f": 0x3f },
      readOnly: [1],
    });
    assert.deepEqual(
      [entry("0x48").options.registerSize, entry("0x48").options.littleEndian],
      [2, true],
    );
  });

  it("the served snapshot dumps as the chip did; skipped registers hold the default", async () => {
    for (const [addr, , dumps] of CHIPS) {
      for (const args of dumps) {
        const [was, is] = await Promise.all(
          [original, copy].map((prefix) => vi2c(["dump", "-y", `${prefix}0`, addr, ...args])),
        );
        assert.equal(was?.status, 0, was?.stderr);
        assert.equal(is?.stdout, was?.stdout, `dump ${addr} ${args.join(" ")}`);
      }
    }
    const skipped = await vi2c(["dump", "-y", `${copy}0`, "0x20", "-r", "0x10-0x1f"]);
    assert.match(skipped.stdout, /^10: (07 ){16}/m);
  });

  it("never touched a skipped register: no transfer of the snapshot named one", () => {
    const lines = snapshotTrace
      .split("\n")
      .filter((line) => line !== "")
      .map(parseTraceLine);
    const touched = (addr: number, regs: (reg: number) => boolean) =>
      lines.filter((line) => {
        const [pointer, read] = line.messages;
        if (pointer?.addr !== addr) return false;
        const reg = pointer.data[0] ?? -1;
        const end = reg + (read?.read ? read.length : 1) - 1;
        for (let r = reg; r <= end; r++) if (regs(r)) return true;
        return false;
      });
    assert.ok(
      lines.some((line) => line.messages[0]?.addr === 0x20),
      "the trace has the snapshot",
    );
    assert.deepEqual(
      touched(0x20, (r) => r >= 0x10 && r <= 0x1f),
      [],
    );
    assert.deepEqual(
      touched(0x21, (r) => (r >= 0x10 && r <= 0x1f) || r === 0x30),
      [],
    );
  });

  it("--read-only registers refuse writes in the served snapshot; the others take them", async () => {
    const socket = `${copy}0`;
    assert.equal((await vi2c(["set", "-y", socket, "0x20", "0x01", "0x99"])).status, 0);
    assert.equal((await vi2c(["set", "-y", socket, "0x20", "0x02", "0x99"])).status, 0);
    const kept = await vi2c(["get", "-y", socket, "0x20", "0x01"]);
    const taken = await vi2c(["get", "-y", socket, "0x20", "0x02"]);
    assert.deepEqual([kept.stdout, taken.stdout], ["0x11\n", "0x99\n"]);
  });
});
