// Tests for SysError conversion and the one classification of codes.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  checkInt,
  classify,
  closedError,
  hasCode,
  isDisconnect,
  isRetryable,
  SysArgumentError,
  SysError,
  sysCall,
  toSysError,
} from "./errors.js";
import { native } from "./native.js";

describe("toSysError", () => {
  it("keeps code, errno and syscall of an addon error and wraps it as cause", () => {
    const original = Object.assign(new Error("read failed"), {
      code: "EBADF",
      errno: 9,
      syscall: "read",
    });
    const error = toSysError(original);
    assert.ok(error instanceof SysError);
    assert.equal(error.code, "EBADF");
    assert.equal(error.errno, 9);
    assert.equal(error.syscall, "read");
    assert.equal(error.cause, original);
  });

  it("passes argument errors and foreign values through", () => {
    const typeError = new TypeError("x");
    assert.equal(toSysError(typeError), typeError);
    assert.equal(toSysError("text"), "text");
    const plain = new Error("no code");
    assert.equal(toSysError(plain), plain);
  });

  it("converts a real failing syscall", () => {
    assert.throws(
      () => sysCall("read", () => native().eventfdRead(999_999)),
      (error: unknown) =>
        error instanceof SysError &&
        error.code === "EBADF" &&
        error.errno === 9 &&
        error.syscall === "read",
    );
  });
});

describe("classify", () => {
  it("sorts codes into retry, disconnect and fatal", () => {
    const of = (code: string) => new SysError(code, "test");
    assert.equal(classify(of("EAGAIN")), "retry");
    assert.equal(classify(of("EINTR")), "retry");
    for (const code of ["EPIPE", "ECONNRESET", "EOF", "ESHORTSEND"]) {
      assert.equal(classify(of(code)), "disconnect", code);
      assert.ok(isDisconnect(of(code)));
    }
    assert.equal(classify(of("ENOENT")), "fatal");
    assert.equal(classify(new Error("no code")), "fatal");
    assert.equal(isRetryable(null), false);
  });

  it("checks by code", () => {
    assert.ok(hasCode(closedError("read"), "EBADF"));
    assert.ok(!hasCode(new Error("EBADF"), "EBADF"));
  });
});

describe("checkInt", () => {
  it("accepts the bounds and refuses fractions and values outside", () => {
    checkInt(0, "x", 0, 3);
    checkInt(3, "x", 0, 3);
    for (const bad of [-1, 4, 1.5, Number.NaN]) {
      assert.throws(() => checkInt(bad, "x", 0, 3), SysArgumentError);
    }
  });
});
