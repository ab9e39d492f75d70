// Tests for BlockingWait on real eventfds and a real socket pair (no timed assertions).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BlockingWait } from "./blocking-wait.js";
import { SysArgumentError, SysError } from "./errors.js";
import { EventFd } from "./eventfd.js";
import { native } from "./native.js";

describe("BlockingWait", () => {
  it("reports exactly the readable fds and leaves them undrained", () => {
    const a = EventFd.create();
    const b = EventFd.create();
    const c = EventFd.create();
    try {
      const waiter = new BlockingWait([a.fd, b.fd, c.fd]);
      b.write(3);
      c.write(1);
      assert.equal(waiter.wait(1000), 2);
      assert.deepEqual([...waiter.ready], [0, 1, 1]);
      assert.equal(b.read(), 3, "the counter is still there for the caller");
      assert.equal(c.read(), 1);
      a.write(1);
      assert.equal(waiter.wait(-1), 1);
      assert.deepEqual([...waiter.ready], [1, 0, 0]);
    } finally {
      for (const fd of [a, b, c]) fd.close();
    }
  });

  it("returns 0 with nothing ready once the timeout passed", () => {
    const a = EventFd.create();
    try {
      const waiter = new BlockingWait([a.fd]);
      assert.equal(waiter.wait(0), 0);
      assert.deepEqual([...waiter.ready], [0]);
      assert.equal(waiter.wait(20), 0);
    } finally {
      a.close();
    }
  });

  it("reports a hung-up peer as ready", () => {
    const [left, right] = native().socketPair();
    try {
      native().close(right);
      const waiter = new BlockingWait([left]);
      assert.equal(waiter.wait(1000), 1);
      assert.equal(waiter.ready[0], 1);
    } finally {
      native().close(left);
    }
  });

  it("refuses an empty set, bad fds and bad timeouts before any syscall", () => {
    assert.throws(() => new BlockingWait([]), SysArgumentError);
    assert.throws(() => new BlockingWait([-1]), SysArgumentError);
    assert.throws(() => new BlockingWait([1.5]), SysArgumentError);
    const a = EventFd.create();
    try {
      assert.throws(() => new BlockingWait([a.fd]).wait(-2), SysArgumentError);
      assert.throws(() => new BlockingWait([a.fd]).wait(0.5), SysArgumentError);
    } finally {
      a.close();
    }
  });

  it("rejects typed arrays of the wrong kind in the addon itself", () => {
    assert.throws(
      () => native().waitReadable(new Int32Array(0), new Uint8Array(1), 0),
      /fds must be an Int32Array/,
    );
    assert.throws(
      () => native().waitReadable(Int32Array.of(0, 1), new Uint8Array(1), 0),
      /ready must be a Uint8Array/,
    );
    assert.throws(() => native().waitReadable(Int32Array.of(0), new Uint8Array(1), -5), RangeError);
  });

  it("throws EBADF for a closed fd instead of reporting it forever", () => {
    const a = EventFd.create();
    const fd = a.fd;
    a.close();
    const waiter = new BlockingWait([fd]);
    assert.throws(
      () => waiter.wait(0),
      (error: unknown) => error instanceof SysError && error.code === "EBADF",
    );
  });
});
