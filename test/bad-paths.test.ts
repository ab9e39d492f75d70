// Integration: every path option given a path that cannot work (a directory that takes no files such
// as /proc or /sys, a missing directory, a regular file where a directory should be) makes the real
// daemon exit 2 with one message that names the option or the file and says what is wrong with the
// path, no error class name, and no hang: a deadline kills a daemon that does not exit, and the time
// each refusal took is printed.
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { FakeI2c, fakeUnavailableReason } from "./fake-i2c/fake.js";
import { MAIN_JS, makeTempDir } from "./helpers/daemon.js";
import { runToEnd } from "./helpers/run.js";
import {
  asAttacker,
  attackerNode,
  attackerPath,
  unprivilegedUnavailableReason,
} from "./helpers/unprivileged.js";

/** Long enough for a loaded machine; a daemon that hangs on a path is killed at this deadline. */
const DEADLINE_MS = 20_000;
/** What a message written for users never shows. */
const CLASS_NAME = /\b[A-Z][A-Za-z]*Error\b/;

const dir = makeTempDir();
after(() => dir.remove());
const regular = `${dir.path}/regular`;
writeFileSync(regular, "a regular file\n");
const missing = `${dir.path}/missing`;
const socket = `${dir.path}/ok.sock`;

/** One bad location: where the path goes, and what the message must say about it. */
interface Location {
  readonly what: string;
  /** The path option's value for a file named `name` there. */
  readonly path: (name: string) => string;
  /** What the message says about the path (after the option or file it names). */
  readonly reason: string;
}

const PROC: Location = {
  what: "in /proc",
  path: (name) => `/proc/${name}`,
  reason: "/proc does not allow creating files (ENOENT)",
};
const SYS: Location = {
  what: "in /sys",
  path: (name) => `/sys/${name}`,
  reason: "/sys does not allow creating files (EPERM)",
};
const MISSING: Location = {
  what: "in a missing directory",
  path: (name) => `${missing}/${name}`,
  reason: `${missing} does not exist (ENOENT)`,
};
const NOT_A_DIRECTORY: Location = {
  what: "under a regular file",
  path: (name) => `${regular}/${name}`,
  reason: `${regular} is not a directory (ENOTDIR)`,
};

/** A path option: the arguments that give it `path`, and the message's start for `path`. */
interface PathOption {
  readonly option: string;
  readonly args: (path: string) => string[];
  readonly message: (path: string, reason: string) => string;
  readonly locations: readonly Location[];
}

const SIM = ["-l", "sim:0x50=24c02"];

/** A config file giving device 0x51 a backing file at `path`. */
function backingConfig(path: string): string {
  const file = `${dir.path}/backing-${path.replaceAll("/", "_")}.json`;
  const device = { bus: "sim", address: "0x51", model: "24c02", options: { backing: path } };
  writeFileSync(file, JSON.stringify({ devices: [device] }));
  return file;
}

const OPTIONS: readonly PathOption[] = [
  {
    option: "-s",
    args: (path) => ["-s", path, ...SIM],
    message: (path, reason) =>
      `cannot create socket ${path}0: ${reason} (choose another --socket-path)`,
    locations: [PROC, SYS, MISSING, NOT_A_DIRECTORY],
  },
  {
    option: "--control-socket",
    args: (path) => ["-s", socket, ...SIM, "--control-socket", path],
    message: (path, reason) =>
      `cannot create socket ${path}: ${reason} (choose another --control-socket)`,
    locations: [PROC, MISSING, NOT_A_DIRECTORY],
  },
  {
    option: "--trace-file",
    args: (path) => ["-s", socket, ...SIM, "--trace-file", path],
    message: (_path, reason) => `--trace-file: ${reason}`,
    locations: [PROC, MISSING, NOT_A_DIRECTORY],
  },
  {
    option: "--pcap",
    args: (path) => ["-s", socket, ...SIM, "--pcap", path],
    message: (_path, reason) => `--pcap: ${reason}`,
    locations: [PROC, MISSING, NOT_A_DIRECTORY],
  },
  {
    option: "--config",
    args: (path) => ["-s", socket, "--config", path],
    message: (path, reason) => `cannot read config file ${path}: ${reason}`,
    locations: [
      { ...PROC, reason: "/proc/x.json does not exist (ENOENT)" },
      MISSING,
      NOT_A_DIRECTORY,
    ],
  },
  {
    option: "a backing file in --config",
    args: (path) => ["-s", socket, "--config", backingConfig(path)],
    message: (path, reason) => `24c02 at 0x51: backing file ${path}: ${reason}`,
    locations: [
      { ...PROC, reason: `cannot create: ${PROC.reason}` },
      { ...MISSING, reason: `cannot open its directory: ${MISSING.reason}` },
      { ...NOT_A_DIRECTORY, reason: `cannot open its directory: ${NOT_A_DIRECTORY.reason}` },
    ],
  },
];

/**
 * Runs the daemon to its end (as `user`: the argv prefix that runs it as another user, and the Node
 * and script that user can reach); prints how long it took (never asserted: machines differ).
 */
async function refusal(
  t: { diagnostic(message: string): void },
  args: readonly string[],
  env?: NodeJS.ProcessEnv,
  user: readonly string[] = [process.execPath, MAIN_JS],
) {
  const [command, ...prefix] = user;
  const started = performance.now();
  const ran = await runToEnd(command as string, [...prefix, ...args], {
    deadlineMs: DEADLINE_MS,
    ...(env !== undefined && { env }),
  });
  t.diagnostic(`exited ${ran.status} after ${Math.round(performance.now() - started)} ms`);
  return ran;
}

function assertRefused(ran: { status: number | null; stderr: string }, expected: string): void {
  assert.equal(ran.status, 2, ran.stderr);
  assert.ok(ran.stderr.includes(`vhost-device-i2c: error: `), ran.stderr);
  assert.ok(ran.stderr.includes(expected), `expected "${expected}" in:\n${ran.stderr}`);
  assert.doesNotMatch(ran.stderr, CLASS_NAME);
}

describe("a bad path in any path option: exit 2 at once, saying what is wrong", () => {
  for (const { option, args, message, locations } of OPTIONS) {
    for (const location of locations) {
      it(`${option} ${location.what}`, async (t) => {
        const path = location.path(option === "--config" ? "x.json" : "x");
        assertRefused(await refusal(t, args(path)), message(path, location.reason));
      });
    }
  }
});

describe("a bad --lock-dir: exit 2 at once (LD_PRELOAD fake adapter)", {
  skip: fakeUnavailableReason() ?? false,
}, () => {
  let fake: FakeI2c;
  before(async () => {
    fake = await FakeI2c.create(["adapter 3 funcs=i2c|emul", "device 3 0x50"].join("\n"));
  });
  after(async () => {
    await fake?.cleanup();
  });
  const cases: { what: string; dir: string; reason: string }[] = [
    {
      what: "in /proc (Node's recursive mkdir loops there forever)",
      dir: "/proc/vhost-lock",
      reason:
        "cannot create directory /proc/vhost-lock: /proc does not allow creating files (ENOENT)",
    },
    {
      what: "below /proc",
      dir: "/proc/vhost/lock",
      reason: "cannot create directory /proc/vhost: /proc does not allow creating files (ENOENT)",
    },
    {
      what: "in /sys",
      dir: "/sys/vhost-lock",
      reason: "cannot create directory /sys/vhost-lock: /sys does not allow creating files (EPERM)",
    },
    { what: "under a regular file", dir: `${regular}/lock`, reason: NOT_A_DIRECTORY.reason },
    { what: "a regular file", dir: regular, reason: `${regular} is not a directory (ENOTDIR)` },
  ];
  for (const { what, dir: lockDir, reason } of cases) {
    it(what, async (t) => {
      const ran = await refusal(
        t,
        ["-s", socket, "-l", "3:0x50", "--lock-dir", lockDir],
        fake.env(),
      );
      assertRefused(
        ran,
        `cannot lock host device 0x50 on /dev/i2c-3: lock directory ${lockDir}: ${reason}`,
      );
    });
  }
});

describe("a path the daemon's user may not use: exit 2 saying so (as uid 1234)", {
  skip: unprivilegedUnavailableReason() ?? false,
}, () => {
  // The daemon runs as uid 1234: it can enter the test directory (root's, 0755) but not write
  // there, and cannot enter a 0700 directory of root's.
  const root = makeTempDir();
  chmodSync(root.path, 0o755);
  const privateDir = `${root.path}/private`;
  mkdirSync(privateDir, { mode: 0o700 });
  after(() => root.remove());
  const asUser = () => [...asAttacker(), attackerNode(), attackerPath(MAIN_JS)];
  const unreachable = `${privateDir} cannot be reached by the daemon's user: permission denied (EACCES)`;
  const cases: { what: string; args: string[]; message: string }[] = [
    {
      what: "-s in a directory it cannot enter",
      args: ["-s", `${privateDir}/x.sock`, ...SIM],
      message: `cannot create socket ${privateDir}/x.sock0: ${unreachable} (choose another --socket-path)`,
    },
    {
      what: "-s in a directory it cannot write to",
      args: ["-s", `${root.path}/x.sock`, ...SIM],
      message: `cannot create socket ${root.path}/x.sock0: ${root.path} is not writable by the daemon's user: permission denied (EACCES) (choose another --socket-path)`,
    },
    {
      what: "--trace-file in a directory it cannot enter",
      args: [
        "-s",
        `/tmp/vdi2c-bad-paths-${process.pid}.sock`,
        ...SIM,
        "--trace-file",
        `${privateDir}/t`,
      ],
      message: `--trace-file: ${unreachable}`,
    },
  ];
  for (const { what, args, message } of cases) {
    it(what, async (t) => {
      assertRefused(await refusal(t, args, undefined, asUser()), message);
    });
  }
});
