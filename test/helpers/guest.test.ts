/**
 * Tests of the real-guest harness: the cpio writer against the system `cpio`, console parsing, and
 * real boots of the guest image without any I2C device (no daemon needed). Boots skip by name when
 * the image is not built (`guest/build.sh`) or QEMU is missing; the cpio checks skip without `cpio`.
 * Must not start the daemon.
 */

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  bootGuest,
  encodeCpioNewc,
  findGuestImages,
  GUEST_MARKERS,
  noGuestImageReason,
  parseBuildOutput,
  parseConsole,
  qemuBinary,
  qemuVersion,
  scriptArchive,
  shellQuote,
  vhostUserI2cArgs,
} from "./guest.js";

function hasCommand(command: string, versionArg = "--version"): boolean {
  return spawnSync(command, [versionArg], { stdio: "ignore" }).status === 0;
}

const cpioSkip = hasCommand("cpio") ? false : "the cpio command is not installed";
const images = findGuestImages();
const bootSkip = !hasCommand(qemuBinary())
  ? `${qemuBinary()} is not installed`
  : images === null
    ? noGuestImageReason()
    : false;

/** Unpacks `archive` with the system cpio into a fresh directory; returns it and cpio's member list. */
function unpackWithCpio(archive: Uint8Array): { dir: string; listing: string[] } {
  const dir = mkdtempSync(join(tmpdir(), "vdi2c-cpio-"));
  // -v lists the members on stderr; --quiet drops the block count from it.
  const unpacked = spawnSync("cpio", ["-idmv", "--quiet", "--no-absolute-filenames"], {
    cwd: dir,
    input: archive,
    encoding: "utf8",
  });
  assert.equal(unpacked.status, 0, unpacked.stderr);
  return { dir, listing: unpacked.stderr.split("\n").filter((line) => line !== "") };
}

describe("encodeCpioNewc", { skip: cpioSkip }, () => {
  it("writes an archive the system cpio unpacks to the same names, contents and modes", () => {
    const archive = encodeCpioNewc([
      { name: "a" },
      { name: "a/b.txt", data: "hello\n", mode: 0o600 },
      { name: "/a/empty", data: "" },
      { name: "a/bin", data: new Uint8Array([0, 255, 1, 2, 3]), mode: 0o755 },
    ]);
    assert.equal(archive.length % 4, 0);
    const { dir } = unpackWithCpio(archive);
    try {
      assert.equal(readFileSync(join(dir, "a/b.txt"), "utf8"), "hello\n");
      assert.equal(readFileSync(join(dir, "a/empty"), "utf8"), "");
      assert.deepEqual([...readFileSync(join(dir, "a/bin"))], [0, 255, 1, 2, 3]);
      const mode = execFileSync("stat", ["-c", "%a", join(dir, "a/b.txt"), join(dir, "a/bin")], {
        encoding: "utf8",
      });
      assert.deepEqual(mode.trim().split("\n"), ["600", "755"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("round-trips any names and contents through the system cpio", () => {
    const name = fc.stringMatching(/^[a-zA-Z0-9_.-]{1,40}$/).filter((n) => n !== "." && n !== "..");
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.tuple(name, fc.uint8Array({ maxLength: 70 })), {
          minLength: 1,
          maxLength: 6,
          selector: ([entryName]) => entryName,
        }),
        (files) => {
          const archive = encodeCpioNewc([
            { name: "d" },
            ...files.map(([entryName, data]) => ({ name: `d/${entryName}`, data })),
          ]);
          const { dir } = unpackWithCpio(archive);
          try {
            for (const [entryName, data] of files) {
              assert.deepEqual(new Uint8Array(readFileSync(join(dir, "d", entryName))), data);
            }
          } finally {
            rmSync(dir, { recursive: true, force: true });
          }
        },
      ),
      { numRuns: 30 },
    );
  });

  it("rejects an empty member name", () => {
    assert.throws(() => encodeCpioNewc([{ name: "/" }]), RangeError);
  });
});

describe("scriptArchive", { skip: cpioSkip }, () => {
  it("puts the script at test/script-body.sh with a final newline, run by test/script.sh, which keeps its status and drains the console; extra files under their parents", () => {
    const archive = scriptArchive("echo hi", { "etc/x/data.bin": new Uint8Array([7, 8]) });
    const { dir, listing } = unpackWithCpio(archive);
    try {
      assert.deepEqual(listing, [
        "etc",
        "etc/x",
        "etc/x/data.bin",
        "test",
        "test/script-body.sh",
        "test/script.sh",
      ]);
      assert.equal(readFileSync(join(dir, "test/script-body.sh"), "utf8"), "echo hi\n");
      const wrapper = readFileSync(join(dir, "test/script.sh"), "utf8");
      assert.match(wrapper, /^sh \/test\/script-body\.sh\nstatus=\$\?\n/);
      assert.match(wrapper, /stty -F \/dev\/console onlcr/);
      assert.match(wrapper, /exit \$status\n$/);
      assert.deepEqual([...readFileSync(join(dir, "etc/x/data.bin"))], [7, 8]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("parseConsole", () => {
  it("returns the framed output, the status and the RESULT lines", () => {
    const parsed = parseConsole(
      `boot noise\n${GUEST_MARKERS.begin}\nline\nRESULT read 0x5a\nRESULT empty\nRESULT read 0x5b\n` +
        `${GUEST_MARKERS.end}4@@\n[ 1.0] reboot: Power down\n`,
    );
    assert.equal(parsed.scriptOutput, "line\nRESULT read 0x5a\nRESULT empty\nRESULT read 0x5b\n");
    assert.equal(parsed.scriptStatus, 4);
    assert.deepEqual(
      [...parsed.results],
      [
        ["read", "0x5b"],
        ["empty", ""],
      ],
    );
  });

  it("keeps everything after the begin marker when the script never finished", () => {
    const parsed = parseConsole(`${GUEST_MARKERS.begin}\nRESULT step 1\nstuck`);
    assert.equal(parsed.scriptOutput, "RESULT step 1\nstuck");
    assert.equal(parsed.scriptStatus, null);
    assert.equal(parsed.results.get("step"), "1");
  });

  it("reports no script output when the script never started", () => {
    assert.deepEqual(parseConsole("Kernel panic - not syncing"), {
      scriptOutput: null,
      scriptStatus: null,
      results: new Map(),
    });
  });
});

describe("helpers", () => {
  it("parseBuildOutput reads the paths guest/build.sh prints", () => {
    assert.deepEqual(
      parseBuildOutput("GUEST_KERNEL=/c/bzImage\nGUEST_INITRD=/c/i.cpio\nGUEST_DIR=/c\n"),
      {
        kernel: "/c/bzImage",
        initrd: "/c/i.cpio",
      },
    );
    assert.equal(parseBuildOutput("GUEST_KERNEL=/c/bzImage\n"), null);
  });

  it("qemuVersion reads the version QEMU prints; qemuBinary follows VHOST_DEVICE_I2C_QEMU", () => {
    const dir = mkdtempSync(join(tmpdir(), "vdi2c-qemu-version-"));
    const saved = process.env.VHOST_DEVICE_I2C_QEMU;
    try {
      const fake = join(dir, "qemu-system-x86_64");
      writeFileSync(
        fake,
        "#!/bin/sh\necho 'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)'\n",
        { mode: 0o755 },
      );
      assert.deepEqual(qemuVersion(fake), {
        major: 10,
        minor: 0,
        text: "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)",
      });
      assert.equal(qemuVersion(join(dir, "missing")), null);
      process.env.VHOST_DEVICE_I2C_QEMU = fake;
      assert.equal(qemuBinary(), fake);
      delete process.env.VHOST_DEVICE_I2C_QEMU;
      assert.equal(qemuBinary(), "qemu-system-x86_64");
    } finally {
      if (saved === undefined) delete process.env.VHOST_DEVICE_I2C_QEMU;
      else process.env.VHOST_DEVICE_I2C_QEMU = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("vhostUserI2cArgs doubles commas in the socket path", () => {
    assert.deepEqual(vhostUserI2cArgs("/tmp/a,b.sock"), [
      "-chardev",
      "socket,id=vi2c,path=/tmp/a,,b.sock",
      "-device",
      "vhost-user-i2c-pci,chardev=vi2c",
    ]);
  });

  it("shellQuote survives single quotes", () => {
    const word = "it's a 'test' $HOME";
    const echoed = execFileSync("sh", ["-c", `printf %s ${shellQuote(word)}`], {
      encoding: "utf8",
    });
    assert.equal(echoed, word);
  });
});

describe("bootGuest", { skip: bootSkip }, () => {
  const guest = images ?? { kernel: "", initrd: "" };

  it("runs the script in a guest without I2C devices and QEMU exits after poweroff", async () => {
    const data = new Uint8Array([1, 2, 3, 250]);
    const expectedMd5 = execFileSync("md5sum", { input: data, encoding: "utf8" }).split(" ")[0];
    const run = await bootGuest({
      ...guest,
      script: [
        "i2cdetect -l",
        "echo hello",
        'echo "RESULT adapters $(ls /sys/bus/i2c/devices | wc -l)"',
        'echo "RESULT md5 $(md5sum < /test/data.bin | cut -d" " -f1)"',
        "exit 3",
      ].join("\n"),
      files: { "test/data.bin": data },
      timeoutMs: 180_000,
    });
    assert.equal(run.timedOut, false, run.console);
    assert.equal(run.exitCode, 0, run.stderr);
    assert.equal(run.scriptStatus, 3, run.console);
    assert.match(run.scriptOutput ?? "", /^hello$/m);
    assert.equal(run.results.get("adapters"), "0");
    assert.equal(run.results.get("md5"), expectedMd5);
    assert.notEqual(run.bootMs, null);
  });

  it("kills QEMU when aborted while the script still runs", async () => {
    const abort = new AbortController();
    let seen = ""; // console text arrives in arbitrary chunks: look at all of it
    const run = await bootGuest({
      ...guest,
      script: "echo RESULT started yes\nsleep 100000",
      timeoutMs: 60_000,
      signal: abort.signal,
      onConsole: (text) => {
        seen += text;
        if (seen.includes("RESULT started yes\n")) abort.abort();
      },
    });
    assert.equal(abort.signal.aborted, true, "the abort, not the deadline, ended the run");
    assert.equal(run.timedOut, true);
    assert.equal(run.signal, "SIGKILL");
    assert.equal(run.scriptStatus, null);
    assert.equal(run.results.get("started"), "yes");
  });

  it("kills QEMU at the deadline even before the guest booted", async () => {
    const run = await bootGuest({ ...guest, script: "echo never", timeoutMs: 1 });
    assert.equal(run.timedOut, true);
    assert.equal(run.signal, "SIGKILL");
  });

  it("reports QEMU's error when no vhost-user backend listens on the socket", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vdi2c-guest-nosock-"));
    try {
      const socketPath = join(dir, "nobody-listens.sock");
      const run = await bootGuest({
        ...guest,
        script: "echo unreachable",
        qemuArgs: vhostUserI2cArgs(socketPath),
        timeoutMs: 60_000,
      });
      assert.equal(run.timedOut, false);
      assert.notEqual(run.exitCode, 0);
      assert.equal(run.scriptOutput, null);
      assert.ok(run.stderr.includes(socketPath), run.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
