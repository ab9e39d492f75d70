// Integration: the built vi2c tool (dist/src/tools/vi2c.js) against the real daemon on an emulated
// 24c02 EEPROM at 0x50, over the daemon's socket as a VM would use it; outputs in i2c-tools form.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type DaemonProcess, makeTempDir, startDaemon, waitUntil } from "./helpers/daemon.js";
import { runToEnd } from "./helpers/run.js";

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

describe("vi2c against the daemon with -l sim:0x50=24c02", () => {
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

  it("set then get a byte, with readback (-r) and a mask (-m)", async () => {
    const set = await vi2c(["set", "-y", "-r", socket, "0x50", "0x10", "0x5a"]);
    assert.equal(set.status, 0, set.stderr);
    assert.equal(set.stdout, "Value 0x5a written, readback matched\n");
    const masked = await vi2c(["set", "-y", "-m", "0x0f", socket, "0x50", "0x10", "0x03"]);
    assert.equal(masked.status, 0, masked.stderr);
    const get = await vi2c(["get", "-y", socket, "0x50", "0x10"]);
    assert.deepEqual([get.status, get.stdout], [0, "0x53\n"]);
    const word = await vi2c(["get", "-y", socket, "0x50", "0x10", "w"]);
    assert.equal(word.stdout, "0xff53\n");
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
