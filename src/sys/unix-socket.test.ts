// Tests for UnixListener and UnixStream on real sockets: fd passing, partial reads, errors.
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { fdTruncationUnseenReason } from "../../test/helpers/emulation.js";
import { isDisconnect, isRetryable, SysError } from "./errors.js";
import { EventFd } from "./eventfd.js";
import { native } from "./native.js";
import { UnixListener, UnixStream } from "./unix-socket.js";

const openFdCount = () => readdirSync("/proc/self/fd").length;

function withPair<T>(body: (a: UnixStream, b: UnixStream) => T): T {
  const [a, b] = UnixStream.pair();
  try {
    return body(a, b);
  } finally {
    a.close();
    b.close();
  }
}

/** Receives exactly `length` bytes (the data is already queued, so -1 means it never came). */
function recvExactly(stream: UnixStream, length: number, fds: number[] = []): Uint8Array {
  const buf = new Uint8Array(length);
  let got = 0;
  while (got < length) {
    const n = stream.recv(buf, got, length - got, fds);
    assert.ok(n > 0, `recv returned ${n} after ${got} of ${length} bytes`);
    got += n;
  }
  return buf;
}

describe("UnixStream fd passing", () => {
  it("passes three eventfds that stay the same kernel objects", () => {
    withPair((a, b) => {
      const sent = [EventFd.create(), EventFd.create(), EventFd.create()];
      const fds: number[] = [];
      a.send(
        Uint8Array.of(1, 2, 3),
        sent.map((e) => e.fd),
      );
      assert.deepEqual(recvExactly(b, 3, fds), Uint8Array.of(1, 2, 3));
      assert.equal(fds.length, 3);
      const received = fds.map((fd) => EventFd.adopt(fd));
      try {
        for (const [i, original] of sent.entries()) {
          const copy = received[i]!;
          assert.notEqual(copy.fd, original.fd);
          original.write(10 + i);
          assert.equal(copy.read(), 10 + i);
          copy.write(20 + i);
          assert.equal(original.read(), 20 + i);
        }
      } finally {
        for (const e of [...sent, ...received]) e.close();
      }
    });
  });

  it("closes the received fds and throws ECTRUNC when a message carries more than 16", {
    skip: fdTruncationUnseenReason() ?? false,
  }, () => {
    withPair((a, b) => {
      const efd = EventFd.create();
      const before = openFdCount();
      a.send(Uint8Array.of(9), Array(20).fill(efd.fd));
      const fds: number[] = [];
      assert.throws(() => b.recv(new Uint8Array(1), 0, 1, fds), { code: "ECTRUNC" });
      assert.deepEqual(fds, []);
      assert.equal(openFdCount(), before, "no received fd may stay open");
      efd.close();
    });
  });

  it("throws ECTRUNC when the caller's fd array is smaller than what arrived", () => {
    withPair((a, b) => {
      const efd = EventFd.create();
      const before = openFdCount();
      a.send(Uint8Array.of(9), [efd.fd, efd.fd, efd.fd]);
      const fdsOut = new Int32Array(3); // room for two
      assert.throws(() => native().recvMsg(b.fd, new Uint8Array(1), 0, 1, fdsOut), {
        code: "ECTRUNC",
      });
      assert.equal(openFdCount(), before);
      efd.close();
    });
  });
});

describe("UnixStream data", () => {
  it("delivers a message split across reads of exact sizes", () => {
    withPair((a, b) => {
      const message = Uint8Array.from({ length: 100 }, (_, i) => i);
      a.send(message);
      const buf = new Uint8Array(100);
      const fds: number[] = [];
      assert.equal(b.recv(buf, 0, 12, fds), 12);
      assert.equal(b.recv(buf, 12, 40, fds), 40);
      assert.equal(b.recv(buf, 52, 48, fds), 48);
      assert.deepEqual(buf, message);
      assert.equal(b.recv(buf, 0, 1, fds), -1, "nothing left");
    });
  });

  it("keeps the byte stream intact for any split of sends and receives", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 20 }),
        (chunks, readSizes) =>
          withPair((a, b) => {
            for (const chunk of chunks) a.send(chunk);
            const expected = Buffer.concat(chunks);
            const got = new Uint8Array(expected.length);
            let at = 0;
            for (let i = 0; at < got.length; i++) {
              const want = Math.min(readSizes[i % readSizes.length]!, got.length - at);
              const n = b.recv(got, at, want, []);
              assert.ok(n > 0 && n <= want);
              at += n;
            }
            assert.deepEqual(Buffer.from(got), expected);
          }),
      ),
      { numRuns: 50 },
    );
  });

  it("returns -1 when nothing is available and 0 at end of stream", () => {
    const [a, b] = UnixStream.pair();
    assert.equal(b.recv(new Uint8Array(4), 0, 4, []), -1);
    a.close();
    assert.equal(b.recv(new Uint8Array(4), 0, 4, []), 0);
    b.close();
  });

  it("throws a disconnect error (not SIGPIPE) when the peer is gone", () => {
    const [a, b] = UnixStream.pair();
    b.close();
    assert.throws(
      () => a.send(Uint8Array.of(1)),
      (error: unknown) =>
        error instanceof SysError && error.code === "EPIPE" && isDisconnect(error),
    );
    a.close();
  });

  it("throws a retryable EAGAIN once the socket buffer is full", () => {
    withPair((a) => {
      const chunk = new Uint8Array(1);
      let failure: unknown = null;
      for (let i = 0; i < 1_000_000 && failure === null; i++) {
        try {
          a.send(chunk);
        } catch (error) {
          failure = error;
        }
      }
      assert.ok(failure instanceof SysError);
      assert.equal(failure.code, "EAGAIN");
      assert.ok(isRetryable(failure));
    });
  });

  it("refuses use after close with EBADF and closes twice safely", () => {
    const [a, b] = UnixStream.pair();
    a.close();
    a.close();
    b.close();
    assert.equal(a.fd, -1);
    assert.throws(() => a.recv(new Uint8Array(1), 0, 1, []), { code: "EBADF" });
    assert.throws(() => a.send(Uint8Array.of(1)), { code: "EBADF" });
  });
});

describe("UnixListener", () => {
  const dir = mkdtempSync(join(tmpdir(), "vdi2c-sock-"));
  after(() => rmSync(dir, { recursive: true }));

  it("accepts a connection and carries data both ways", () => {
    const path = join(dir, "accept.sock");
    const listener = UnixListener.listen(path);
    try {
      assert.equal(listener.accept(), null, "nobody connected yet");
      const client = UnixStream.connect(path);
      const server = listener.accept();
      assert.ok(server !== null);
      try {
        client.send(Uint8Array.of(1, 2));
        assert.deepEqual(recvExactly(server, 2), Uint8Array.of(1, 2));
        server.send(Uint8Array.of(3));
        assert.deepEqual(recvExactly(client, 1), Uint8Array.of(3));
      } finally {
        client.close();
        server.close();
      }
    } finally {
      listener.close();
      listener.close();
    }
    assert.throws(() => listener.accept(), { code: "EBADF" });
  });

  it("leaves the socket file alone and refuses an existing path", () => {
    const path = join(dir, "stale.sock");
    UnixListener.listen(path).close();
    assert.throws(() => UnixListener.listen(path), { code: "EADDRINUSE", syscall: "bind" });
  });

  it("reports a missing socket and an over-long path by errno name", () => {
    assert.throws(() => UnixStream.connect(join(dir, "missing.sock")), {
      code: "ENOENT",
      syscall: "connect",
    });
    assert.throws(() => UnixListener.listen(join(dir, "x".repeat(200))), {
      code: "ENAMETOOLONG",
    });
  });
});
