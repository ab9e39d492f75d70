// Tests for the memfd helpers on real memfds.
import assert from "node:assert/strict";
import { closeSync, fstatSync } from "node:fs";
import { describe, it } from "node:test";
import { SysArgumentError } from "./errors.js";
import { createMemfd, resizeFd } from "./memfd.js";

describe("createMemfd", () => {
  it("creates a file of the requested size that can be resized", () => {
    const fd = createMemfd(3 * 4096);
    try {
      assert.equal(fstatSync(fd).size, 3 * 4096);
      resizeFd(fd, 1 << 20);
      assert.equal(fstatSync(fd).size, 1 << 20);
    } finally {
      closeSync(fd);
    }
  });

  it("refuses negative and fractional sizes", () => {
    assert.throws(() => createMemfd(-1), SysArgumentError);
    assert.throws(() => createMemfd(1.5), SysArgumentError);
  });
});
