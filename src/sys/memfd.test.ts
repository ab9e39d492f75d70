// Tests for the memfd helpers on real memfds.
import assert from "node:assert/strict";
import { closeSync, fstatSync, openSync } from "node:fs";
import { describe, it } from "node:test";
import { SysArgumentError } from "./errors.js";
import { EventFd } from "./eventfd.js";
import { addSeals, createMemfd, fileSeals, GUEST_RAM_SEALS, resizeFd, SEAL } from "./memfd.js";

describe("createMemfd", () => {
  it("creates a file of the requested size that can be resized", () => {
    const fd = createMemfd(3 * 4096);
    try {
      assert.equal(fstatSync(fd).size, 3 * 4096);
      assert.equal(fileSeals(fd), 0, "unsealed unless asked");
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

  it("seals guest RAM as QEMU does: the size is fixed and no seal can be added or removed", () => {
    const fd = createMemfd(4096, "sealed", { seals: GUEST_RAM_SEALS });
    try {
      assert.equal(fileSeals(fd), SEAL.SHRINK | SEAL.GROW | SEAL.SEAL);
      assert.throws(() => resizeFd(fd, 0), { code: "EPERM" });
      assert.throws(() => resizeFd(fd, 8192), { code: "EPERM" });
      assert.throws(() => addSeals(fd, SEAL.WRITE), { code: "EPERM" });
      assert.equal(fstatSync(fd).size, 4096);
    } finally {
      closeSync(fd);
    }
  });
});

describe("fileSeals", () => {
  it("adds seals one at a time and reports them", () => {
    const fd = createMemfd(4096);
    try {
      addSeals(fd, SEAL.SHRINK);
      assert.equal(fileSeals(fd), SEAL.SHRINK);
      resizeFd(fd, 8192); // growing is still allowed
      assert.throws(() => resizeFd(fd, 4096), { code: "EPERM" });
    } finally {
      closeSync(fd);
    }
  });

  it("reports 0 for files that cannot have seals", () => {
    const devNull = openSync("/dev/null", "r");
    const event = EventFd.create();
    try {
      assert.equal(fileSeals(devNull), 0);
      assert.equal(fileSeals(event.fd), 0);
    } finally {
      closeSync(devNull);
      event.close();
    }
  });

  it("throws EBADF for a closed fd and refuses seals that are not bits", () => {
    const fd = createMemfd(0);
    closeSync(fd);
    assert.throws(() => fileSeals(fd), { code: "EBADF" });
    assert.throws(() => addSeals(0, -1), SysArgumentError);
  });
});
