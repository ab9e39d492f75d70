// ControlClient's reply buffering (lines split across chunks, a UTF-8 character split across
// chunks, lines that arrive together, the byte limit) against a plain net server, and
// escapeControls (no terminal control survives; JSON keeps its value).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { ControlClient, escapeControls, MAX_REPLY_BYTES } from "./client.js";

const dir = mkdtempSync(join(tmpdir(), "control-client-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** A server whose first client gets `serve(socket)`; resolves with the server and its path. */
async function serverFor(
  serve: (socket: Socket) => void,
): Promise<{ server: Server; path: string }> {
  const path = join(dir, `s${n++}.sock`);
  const server = createServer((socket) => {
    socket.on("error", () => {});
    serve(socket);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { server, path };
}

const CONTROL =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding them is the point
  /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/;

describe("escapeControls", () => {
  it("writes terminal controls as \\u escapes and leaves other text alone", () => {
    assert.equal(
      escapeControls("a\u001b[31mb\u0007\r\u009b\u202e\u00e9\t"),
      "a\\u001b[31mb\\u0007\\u000d\\u009b\\u202e\u00e9\t",
    );
  });

  it("property: no terminal control survives, and JSON keeps its value", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), (text) => {
        assert.doesNotMatch(escapeControls(text), CONTROL);
      }),
    );
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const escaped = escapeControls(JSON.stringify(value));
        assert.doesNotMatch(escaped, CONTROL);
        assert.deepEqual(JSON.parse(escaped), JSON.parse(JSON.stringify(value)));
      }),
    );
  });
});

describe("ControlClient reply buffering", () => {
  it("takes lines split across chunks (a UTF-8 character too) and lines sent together", async () => {
    const euro = Buffer.from("ok 1 \u20ac\n");
    const { server, path } = await serverFor((socket) => {
      socket.once("data", () => {
        socket.write(euro.subarray(0, 6)); // cuts the 3-byte euro sign after its first byte
        setTimeout(
          () => socket.write(Buffer.concat([euro.subarray(6), Buffer.from("ok 2\nok 3\n")])),
          20,
        );
      });
    });
    const client = await ControlClient.connect(path);
    try {
      assert.equal(await client.request("list"), "ok 1 \u20ac");
      assert.equal(await client.request("list"), "ok 2");
      assert.equal(await client.request("list"), "ok 3");
    } finally {
      client.close();
      server.close();
    }
  });

  it(`disconnects a server that sends more than ${MAX_REPLY_BYTES} bytes without a newline`, async () => {
    const chunk = Buffer.alloc(1 << 20, 0x41);
    const { server, path } = await serverFor((socket) => {
      const pump = () => {
        while (!socket.destroyed && socket.write(chunk)) {}
      };
      socket.on("drain", pump);
      socket.once("data", pump);
    });
    const client = await ControlClient.connect(path);
    try {
      await assert.rejects(client.request("list"), { code: "ETOOLONG" });
      await client.whenClosed();
    } finally {
      client.close();
      server.close();
    }
  });
});
