// Integration: the control socket's limits through the real daemon. Clients that send commands and
// never read the replies keep the daemon's memory bounded (no reply is built while a client's write
// buffer is full); idle clients and clients that stop reading are disconnected after the idle
// timeout; 64 idle clients of another uid cannot lock the operator (the daemon's uid) out.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, readFileSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { after, describe, it } from "node:test";
import {
  type DaemonProcess,
  MAIN_JS,
  makeTempDir,
  waitUntil,
  withDaemon,
} from "./helpers/daemon.js";
import { asAttacker, unprivilegedUnavailableReason } from "./helpers/unprivileged.js";

/** The daemon's resident memory in MiB (Linux /proc). */
function rssMiB(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!match) throw new Error(`no VmRSS for ${pid}`);
  return Number(match[1]) / 1024;
}

/** `vhost-device-i2c control PATH list`, run to its end: exit status and output. */
function controlList(path: string): Promise<Ran> {
  return runToEnd(process.execPath, [MAIN_JS, "control", path, "list"]);
}

/** A connected client; resolves once connected. */
function connect(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.off("error", reject);
      socket.on("error", () => {});
      resolve(socket);
    });
  });
}

const closed = (socket: Socket) =>
  socket.closed ? Promise.resolve() : new Promise<void>((r) => socket.once("close", () => r()));

/** 64 KiB of `read 0x50 0 4096` lines: each is answered with 8 KiB of hex. */
const READ_LINE = Buffer.from("read 0x50 0 4096\n");
const READ_CHUNK = Buffer.concat(
  Array.from({ length: Math.floor(65536 / READ_LINE.length) }, () => READ_LINE),
);

describe("control socket limits through the daemon", () => {
  const dir = makeTempDir();
  after(() => dir.remove());
  let n = 0;
  const paths = () => {
    n++;
    return { socket: `${dir.path}/v${n}.sock`, control: `${dir.path}/c${n}.ctl` };
  };

  it("clients that send read commands and never read the replies keep the daemon's memory bounded", async () => {
    const { socket, control } = paths();
    await withDaemon(
      ["-s", socket, "-l", "sim:0x50=24c32", "--control-socket", control],
      [`${socket}0`, control],
      async (daemon) => {
        const before = rssMiB(daemon.pid);
        const clients: Socket[] = [];
        try {
          for (let i = 0; i < 16; i++) {
            const client = await connect(control);
            client.pause(); // never reads a reply
            for (let c = 0; c < 4; c++) client.write(READ_CHUNK);
            clients.push(client);
          }
          // Time to parse what it can: 16 x 4 x 64 KiB of commands would be 16 x 4 x 30 MB of
          // replies if every command were answered.
          await new Promise((resolve) => setTimeout(resolve, 3000));
          const grown = rssMiB(daemon.pid) - before;
          assert.ok(grown < 80, `RSS grew by ${grown.toFixed(0)} MiB for 16 clients`);
          const list = await controlList(control);
          assert.equal(list.status, 0, `the operator still gets in: ${list.stderr}`);
          assert.doesNotMatch(daemon.stderr, /MaxListenersExceededWarning/);
        } finally {
          for (const client of clients) client.destroy();
        }
      },
    );
  });

  it("disconnects clients that complete no command within --control-idle-timeout", async () => {
    const { socket, control } = paths();
    await withDaemon(
      [
        ...["-s", socket, "-l", "sim:0x50=24c32", "--control-socket", control],
        ...["--control-idle-timeout", "0.5"],
      ],
      [`${socket}0`, control],
      async (daemon) => {
        const silent = await connect(control);
        const halfLine = await connect(control);
        halfLine.write("lis");
        const notReading = await connect(control);
        notReading.pause();
        for (let c = 0; c < 4; c++) notReading.write(READ_CHUNK);
        const active = await connect(control);
        let answers = 0;
        active.on("data", (chunk: Buffer) => {
          answers += chunk.toString().split("\n").length - 1;
        });
        const start = Date.now();
        const ticker = setInterval(() => active.write("help\n"), 150);
        try {
          // The paused client cannot see the daemon's close by itself: when the daemon had read
          // all it sent, the close is an EOF queued behind the replies it never reads, and Node
          // emits "close" only once they are consumed (a reset, when input was left unread, shows
          // at once). The daemon's log line is the proof; reading then lets the EOF through.
          await Promise.all([
            closed(silent),
            closed(halfLine),
            daemon.waitForLog(/control client does not read its replies; disconnecting/),
          ]);
          const took = Date.now() - start;
          assert.ok(took >= 400 && took < 3000, `dropped after ${took} ms`);
          notReading.resume();
          await closed(notReading);
          await new Promise((resolve) => setTimeout(resolve, 700));
          assert.equal(active.closed, false, "a client that keeps sending commands stays");
          assert.ok(answers >= 5, `${answers} answers`);
          await daemon.waitForLog(/control client idle; disconnecting/);
        } finally {
          clearInterval(ticker);
          for (const client of [silent, halfLine, notReading, active]) client.destroy();
        }
      },
    );
  });

  const skip = unprivilegedUnavailableReason() ?? false;
  it("64 idle clients of another uid: the operator's `control list` still works", {
    skip,
  }, async () => {
    const { socket, control } = paths();
    chmodSync(dir.path, 0o755);
    await withDaemon(
      ["-s", socket, "-l", "sim:0x50=24c32", "--control-socket", control],
      [`${socket}0`, control],
      async (daemon: DaemonProcess) => {
        // Let uid 1234 in, as a group or mode setting would.
        chmodSync(control, 0o666);
        const fdsBefore = daemon.fdCount();
        const holders: ChildProcess[] = [];
        const hold = (count: number): Promise<string> => {
          const [command, ...args] = asAttacker();
          const child = spawn(
            command as string,
            [...args, "/usr/bin/python3", "-c", HOLD, control, String(count)],
            {
              stdio: ["ignore", "pipe", "pipe"],
            },
          );
          holders.push(child);
          return new Promise((resolve, reject) => {
            let out = "";
            child.stdout?.setEncoding("utf8").on("data", (text: string) => {
              out += text;
              if (out.includes("\n")) resolve(out.trim());
            });
            child.on("error", reject);
            child.on("close", (code) => reject(new Error(`holder exited ${code}: ${out}`)));
          });
        };
        try {
          assert.equal(await hold(64), "connected 64");
          await waitUntil(() => daemon.fdCount() >= fdsBefore + 64, "64 clients accepted");
          const list = await controlList(control);
          assert.equal(list.status, 0, list.stderr);
          assert.match(list.stdout, /"model":"24c32"/);
          await daemon.waitForLog(
            /control socket full: dropping the longest-idle client for the operator .*dropped=1234/,
          );
          // One more uid-1234 client fills the place again; the next is refused.
          assert.equal(await hold(1), "connected 1");
          await waitUntil(() => daemon.fdCount() >= fdsBefore + 64, "64 clients again");
          assert.equal(await hold(1), "connected 1");
          await daemon.waitForLog(/too many clients, one refused .*uid=1234/);
        } finally {
          for (const child of holders) child.kill("SIGKILL");
        }
      },
    );
  });
});

/** Python for uid 1234: connect N times to argv[1], say so, then stay silent. */
const HOLD = `
import socket, sys, time
socks = []
for i in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    socks.append(s)
print("connected", len(socks), flush=True)
time.sleep(60)
`;

import { type Ran, runToEnd } from "./helpers/run.js";
