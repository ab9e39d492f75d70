// Tests for I2cDev without an adapter: errors by code, argument checks, funcs decoding.
// Transfers against a fake adapter are tested by the i2c layer (test/fake-i2c).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SysArgumentError, SysError } from "./errors.js";
import {
  checkRdwrMsgs,
  decodeI2cFuncs,
  I2C_FUNC_I2C,
  I2C_FUNC_SMBUS_QUICK,
  I2C_FUNC_SMBUS_READ_BYTE_DATA,
  I2C_M_RD,
  I2C_M_TEN,
  I2C_SMBUS_BYTE_DATA,
  I2C_SMBUS_DATA_SIZE,
  I2C_SMBUS_READ,
  I2cDev,
  type I2cRdwrMsg,
} from "./i2c-dev.js";

/** The callback transfers as promises; a synchronous throw (nothing started) rejects too. */
const rdwr = (dev: I2cDev, msgs: readonly I2cRdwrMsg[]): Promise<void> =>
  new Promise((resolve, reject) => dev.rdwr(msgs, (error) => (error ? reject(error) : resolve())));
const smbus = (dev: I2cDev, ...args: [number, number, number, number, Uint8Array]): Promise<void> =>
  new Promise((resolve, reject) =>
    dev.smbus(...args, (error) => (error ? reject(error) : resolve())),
  );

describe("I2cDev.open", () => {
  it("throws ENOENT with errno and syscall for a missing adapter", () => {
    assert.throws(
      () => I2cDev.open("/dev/i2c-does-not-exist"),
      (error: unknown) =>
        error instanceof SysError &&
        error.code === "ENOENT" &&
        error.errno === 2 &&
        error.syscall === "open",
    );
  });
});

describe("I2cDev on a file that is not an adapter", () => {
  it("reports the failing ioctl by name, in funcs, setSlave, rdwr and smbus", async () => {
    const dev = I2cDev.open("/dev/null");
    try {
      assert.throws(() => dev.funcs, { code: "ENOTTY", syscall: "ioctl(I2C_FUNCS)" });
      assert.throws(() => dev.setSlave(0x50), { code: "ENOTTY", syscall: "ioctl(I2C_SLAVE)" });
      await assert.rejects(rdwr(dev, [{ addr: 0x50, flags: I2C_M_RD, buf: new Uint8Array(2) }]), {
        code: "ENOTTY",
        syscall: "ioctl(I2C_RDWR)",
      });
      const data = new Uint8Array(I2C_SMBUS_DATA_SIZE);
      await assert.rejects(smbus(dev, 0x50, I2C_SMBUS_READ, 0, I2C_SMBUS_BYTE_DATA, data), {
        code: "ENOTTY",
        syscall: "ioctl(I2C_SLAVE)",
      });
    } finally {
      dev.close();
    }
  });

  it("closes only after a queued transfer settled", async () => {
    const dev = I2cDev.open("/dev/null");
    const transfer = rdwr(dev, [{ addr: 0x50, flags: 0, buf: new Uint8Array(1) }]);
    dev.close();
    dev.close();
    assert.equal(dev.fd, -1);
    await assert.rejects(transfer, { code: "ENOTTY" });
    await assert.rejects(rdwr(dev, [{ addr: 0x50, flags: 0, buf: new Uint8Array(1) }]), {
      code: "EBADF",
    });
  });

  it("runs one transfer at a time: another one while it runs is refused with EBUSY", async () => {
    const dev = I2cDev.open("/dev/null");
    try {
      const msgs = [{ addr: 0x50, flags: 0, buf: new Uint8Array(1) }];
      const first = rdwr(dev, msgs);
      assert.equal(dev.busy, true);
      assert.throws(() => dev.rdwr(msgs, () => assert.fail("must not start")), {
        code: "EBUSY",
        syscall: "ioctl(I2C_RDWR)",
      });
      const data = new Uint8Array(I2C_SMBUS_DATA_SIZE);
      assert.throws(() => dev.smbus(0x50, I2C_SMBUS_READ, 0, I2C_SMBUS_BYTE_DATA, data, () => {}), {
        code: "EBUSY",
      });
      await assert.rejects(first, { code: "ENOTTY" });
      assert.equal(dev.busy, false);
      // The adapter's thread takes the next transfer, larger than its first exchange buffer.
      const large = Array.from({ length: 3 }, () => ({
        addr: 0x50,
        flags: I2C_M_RD,
        buf: new Uint8Array(4096),
      }));
      await assert.rejects(rdwr(dev, large), { code: "ENOTTY", syscall: "ioctl(I2C_RDWR)" });
    } finally {
      dev.close();
    }
  });

  it("rejects bad SMBus arguments before queueing", async () => {
    const dev = I2cDev.open("/dev/null");
    try {
      const data = new Uint8Array(I2C_SMBUS_DATA_SIZE);
      await assert.rejects(smbus(dev, 0x80, 1, 0, 2, data), SysArgumentError);
      await assert.rejects(smbus(dev, 0x50, 2, 0, 2, data), SysArgumentError);
      await assert.rejects(smbus(dev, 0x50, 1, 256, 2, data), SysArgumentError);
      await assert.rejects(smbus(dev, 0x50, 1, 0, 9, data), SysArgumentError);
      await assert.rejects(smbus(dev, 0x50, 1, 0, 2, new Uint8Array(33)), SysArgumentError);
    } finally {
      dev.close();
    }
  });
});

describe("checkRdwrMsgs", () => {
  const msg = (addr: number, flags = 0, len = 1) => ({ addr, flags, buf: new Uint8Array(len) });

  it("accepts 1 to 42 messages of up to 65535 bytes", () => {
    checkRdwrMsgs([msg(0x50)]);
    checkRdwrMsgs(Array.from({ length: 42 }, () => msg(0x7f, 0, 65535)));
    checkRdwrMsgs([msg(0x3ff, I2C_M_TEN)]);
  });

  it("refuses counts, lengths, addresses and flags outside the kernel's limits", () => {
    assert.throws(() => checkRdwrMsgs([]), SysArgumentError);
    assert.throws(
      () => checkRdwrMsgs(Array.from({ length: 43 }, () => msg(0x50))),
      SysArgumentError,
    );
    assert.throws(() => checkRdwrMsgs([msg(0x50, 0, 65536)]), SysArgumentError);
    assert.throws(() => checkRdwrMsgs([msg(0x80)]), SysArgumentError);
    assert.throws(() => checkRdwrMsgs([msg(0x400, I2C_M_TEN)]), SysArgumentError);
    assert.throws(() => checkRdwrMsgs([msg(0x50, 0x10000)]), SysArgumentError);
  });
});

describe("decodeI2cFuncs", () => {
  it("names each bit and freezes the result", () => {
    const funcs = decodeI2cFuncs(
      I2C_FUNC_I2C | I2C_FUNC_SMBUS_QUICK | I2C_FUNC_SMBUS_READ_BYTE_DATA,
    );
    assert.equal(funcs.i2c, true);
    assert.equal(funcs.smbusQuick, true);
    assert.equal(funcs.smbusReadByteData, true);
    assert.equal(funcs.smbusWriteByteData, false);
    assert.equal(funcs.tenBitAddr, false);
    assert.equal(funcs.raw, I2C_FUNC_I2C | I2C_FUNC_SMBUS_QUICK | I2C_FUNC_SMBUS_READ_BYTE_DATA);
    assert.ok(Object.isFrozen(funcs));
  });

  it("keeps the mask unsigned when the top bit is set", () => {
    assert.equal(decodeI2cFuncs(0x8000_0001 | 0).raw, 0x8000_0001);
  });
});
