// Tests for EventFd on real eventfds.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SysArgumentError } from "./errors.js";
import { EventFd } from "./eventfd.js";

describe("EventFd", () => {
  it("reads 0 when nothing is pending", () => {
    const efd = EventFd.create();
    try {
      assert.equal(efd.read(), 0);
    } finally {
      efd.close();
    }
  });

  it("sums writes until a read resets the counter", () => {
    const efd = EventFd.create();
    try {
      efd.write();
      efd.write(2);
      efd.write(40);
      assert.equal(efd.read(), 43);
      assert.equal(efd.read(), 0);
    } finally {
      efd.close();
    }
  });

  it("starts from the initial value", () => {
    const efd = EventFd.create(5);
    try {
      assert.equal(efd.read(), 5);
    } finally {
      efd.close();
    }
  });

  it("refuses non-positive and fractional writes", () => {
    const efd = EventFd.create();
    try {
      for (const bad of [0, -1, 1.5]) assert.throws(() => efd.write(bad), SysArgumentError);
    } finally {
      efd.close();
    }
  });

  it("closes twice safely and refuses use after close with EBADF", () => {
    const efd = EventFd.create();
    efd.close();
    efd.close();
    assert.equal(efd.fd, -1);
    assert.ok(efd.closed);
    assert.throws(() => efd.read(), { code: "EBADF" });
    assert.throws(() => efd.write(), { code: "EBADF" });
  });
});
