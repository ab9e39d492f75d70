// Integration: `vhost-device-i2c control PATH ...` against a server that is not the daemon (whoever
// got to the path first). Its replies reach the operator's terminal with every terminal control
// escaped (JSON replies stay valid JSON with the same value), and a reply that never ends makes the
// client give up at its buffer limit instead of growing without bound.
import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import { after, describe, it } from "node:test";
import { MAIN_JS, makeTempDir } from "./helpers/daemon.js";
import { runToEnd } from "./helpers/run.js";

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `vhost-device-i2c control <path> <words>` to its end. */
function control(path: string, words: readonly string[]): Promise<Run> {
  return runToEnd(process.execPath, [MAIN_JS, "control", path, ...words]);
}

/** A server at `path` that answers the first line of each client with `answer(socket)`. */
async function fakeServer(path: string, answer: (socket: Socket) => void): Promise<Server> {
  const server = createServer((socket) => {
    socket.on("error", () => {});
    socket.once("data", () => answer(socket));
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return server;
}

const stop = (server: Server) => new Promise<void>((resolve) => server.close(() => resolve()));

/** Anything a terminal would act on, or that hides or reorders text. */
const TERMINAL_CONTROL =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding them is the point
  /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069]/;

describe("vhost-device-i2c control against a hostile server", () => {
  const dir = makeTempDir();
  after(() => dir.remove());

  it("prints replies with terminal escapes escaped, on stdout and stderr", async () => {
    const path = `${dir.path}/escapes.sock`;
    const evil = "\u001b]0;owned\u0007\u001b[2J\r\u009b31mred\u202eevil\b";
    const server = await fakeServer(path, (socket) => socket.end(`ok ${evil}\n`));
    try {
      const ok = await control(path, ["get", "0x48", "temperature"]);
      assert.equal(ok.status, 0, ok.stderr);
      assert.doesNotMatch(ok.stdout.slice(0, -1), TERMINAL_CONTROL);
      assert.equal(
        ok.stdout,
        "\\u001b]0;owned\\u0007\\u001b[2J\\u000d\\u009b31mred\\u202eevil\\u0008\n",
      );
    } finally {
      await stop(server);
    }
    const errorServer = await fakeServer(path, (socket) => socket.end(`error ENODEV ${evil}\n`));
    try {
      const refused = await control(path, ["get", "0x48", "temperature"]);
      assert.equal(refused.status, 1);
      assert.match(refused.stderr, /ENODEV \\u001b\]0;owned\\u0007/);
      assert.doesNotMatch(refused.stderr.slice(0, -1), TERMINAL_CONTROL);
    } finally {
      await stop(errorServer);
    }
  });

  it("keeps a JSON reply valid JSON with the same value", async () => {
    const path = `${dir.path}/json.sock`;
    const value = [{ name: "0x50", model: "\u009b2J\u007f\u202e\u2066", properties: { n: 1 } }];
    // JSON.stringify leaves DEL, C1 and formatting characters raw inside strings.
    const server = await fakeServer(path, (socket) => socket.end(`ok ${JSON.stringify(value)}\n`));
    try {
      const list = await control(path, ["list"]);
      assert.equal(list.status, 0, list.stderr);
      assert.doesNotMatch(list.stdout, TERMINAL_CONTROL);
      assert.deepEqual(JSON.parse(list.stdout), value);
    } finally {
      await stop(server);
    }
  });

  it("gives up on a reply that never ends instead of buffering it all", async () => {
    const path = `${dir.path}/endless.sock`;
    const chunk = Buffer.alloc(64 * 1024, 0x41);
    let sent = 0;
    const server = await fakeServer(path, (socket) => {
      const pump = () => {
        while (!socket.destroyed && socket.write(chunk)) sent += chunk.length;
      };
      socket.on("drain", pump);
      pump();
    });
    try {
      const endless = await control(path, ["list"]);
      assert.equal(endless.status, 2);
      assert.match(endless.stderr, /more than 16777216 bytes without a complete reply/);
      assert.ok(sent < 64 * 1024 * 1024, `the client stopped reading after ${sent} bytes`);
    } finally {
      await stop(server);
    }
  });
});
