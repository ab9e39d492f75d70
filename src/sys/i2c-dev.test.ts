// Tests for I2cDev without an adapter: errors by code, argument checks, funcs decoding; the inline
// transfers against the fake adapter (test/fake-i2c), in a child process that preloads it.
// The I/O-thread transfers against the fake are tested by the i2c layer (src/i2c/host-bus.test.ts).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeI2c, type FakeLogEntry, fakeUnavailableReason } from "../../test/fake-i2c/fake.js";
import { notAnAdapterCode, notAnAdapterErrno } from "../../test/helpers/emulation.js";
import { SysArgumentError, SysError } from "./errors.js";
import { EventFd } from "./eventfd.js";
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
import { native } from "./native.js";

/** ENOTTY, the errno of an I2C ioctl on /dev/null; ENOSYS under qemu-user (test/helpers/emulation.ts). */
const NOT_AN_ADAPTER = notAnAdapterCode();

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

describe("I2cDev completionWakeFd", () => {
  it("gets 1 added as each I/O-thread transfer ends, none for inline ones", async () => {
    const wake = EventFd.create();
    const dev = I2cDev.open("/dev/null", { completionWakeFd: wake.fd });
    try {
      const transfers = [
        () => rdwr(dev, [{ addr: 0x50, flags: 0, buf: new Uint8Array(1) }]),
        () => smbus(dev, 0x50, I2C_SMBUS_READ, 0, I2C_SMBUS_BYTE_DATA, new Uint8Array(34)),
      ];
      for (const transfer of transfers) {
        assert.equal(wake.read(), 0);
        await assert.rejects(transfer(), { code: NOT_AN_ADAPTER });
        // The I/O thread writes it right after signalling the loop, so it may trail the callback.
        assert.equal(native().waitReadable(Int32Array.of(wake.fd), new Uint8Array(1), 5000), 1);
        assert.equal(wake.read(), 1);
      }
      // Inline transfers end on the calling thread: nobody needs waking.
      assert.throws(() => dev.rdwrSync([{ addr: 0x50, flags: 0, buf: new Uint8Array(1) }]), {
        code: NOT_AN_ADAPTER,
      });
      assert.equal(wake.read(), 0);
    } finally {
      dev.close();
      wake.close();
    }
  });

  it("must be an fd or -1", () => {
    for (const completionWakeFd of [-2, 0.5, 2 ** 31]) {
      assert.throws(() => I2cDev.open("/dev/null", { completionWakeFd }), SysArgumentError);
    }
  });
});

describe("I2cDev on a file that is not an adapter", () => {
  it("reports the failing ioctl by name, in funcs, setSlave, rdwr and smbus", async () => {
    const dev = I2cDev.open("/dev/null");
    try {
      assert.throws(() => dev.funcs, { code: NOT_AN_ADAPTER, syscall: "ioctl(I2C_FUNCS)" });
      assert.throws(() => dev.setSlave(0x50), {
        code: NOT_AN_ADAPTER,
        syscall: "ioctl(I2C_SLAVE)",
      });
      await assert.rejects(rdwr(dev, [{ addr: 0x50, flags: I2C_M_RD, buf: new Uint8Array(2) }]), {
        code: NOT_AN_ADAPTER,
        syscall: "ioctl(I2C_RDWR)",
      });
      const data = new Uint8Array(I2C_SMBUS_DATA_SIZE);
      await assert.rejects(smbus(dev, 0x50, I2C_SMBUS_READ, 0, I2C_SMBUS_BYTE_DATA, data), {
        code: NOT_AN_ADAPTER,
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
    await assert.rejects(transfer, { code: NOT_AN_ADAPTER });
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
      await assert.rejects(first, { code: NOT_AN_ADAPTER });
      assert.equal(dev.busy, false);
      // The adapter's thread takes the next transfer, larger than its first exchange buffer.
      const large = Array.from({ length: 3 }, () => ({
        addr: 0x50,
        flags: I2C_M_RD,
        buf: new Uint8Array(4096),
      }));
      await assert.rejects(rdwr(dev, large), { code: NOT_AN_ADAPTER, syscall: "ioctl(I2C_RDWR)" });
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

describe("I2cDev inline transfers (rdwrSync, smbusSync) without an adapter", () => {
  it("throw the failing ioctl's errno error, as the I/O thread's callback gets it", () => {
    const dev = I2cDev.open("/dev/null");
    try {
      assert.throws(
        () => dev.rdwrSync([{ addr: 0x50, flags: I2C_M_RD, buf: new Uint8Array(2) }]),
        (error: unknown) =>
          error instanceof SysError &&
          error.code === NOT_AN_ADAPTER &&
          error.errno === notAnAdapterErrno() &&
          error.syscall === "ioctl(I2C_RDWR)",
      );
      const data = new Uint8Array(I2C_SMBUS_DATA_SIZE);
      assert.throws(() => dev.smbusSync(0x50, I2C_SMBUS_READ, 0, I2C_SMBUS_BYTE_DATA, data), {
        code: NOT_AN_ADAPTER,
        errno: notAnAdapterErrno(),
        syscall: "ioctl(I2C_SLAVE)",
      });
    } finally {
      dev.close();
    }
  });

  it("refuse to run while a transfer is on the I/O thread (EBUSY) or after close (EBADF)", async () => {
    const dev = I2cDev.open("/dev/null");
    const msgs = [{ addr: 0x50, flags: 0, buf: new Uint8Array(1) }];
    const data = new Uint8Array(I2C_SMBUS_DATA_SIZE);
    const running = rdwr(dev, msgs);
    assert.throws(() => dev.rdwrSync(msgs), { code: "EBUSY", syscall: "ioctl(I2C_RDWR)" });
    assert.throws(() => dev.smbusSync(0x50, 1, 0, 2, data), { code: "EBUSY" });
    await assert.rejects(running, { code: NOT_AN_ADAPTER });
    assert.throws(() => dev.rdwrSync(msgs), { code: NOT_AN_ADAPTER });
    dev.close();
    assert.throws(() => dev.rdwrSync(msgs), { code: "EBADF", syscall: "ioctl(I2C_RDWR)" });
    assert.throws(() => dev.smbusSync(0x50, 1, 0, 2, data), { code: "EBADF" });
  });

  it("check their arguments as the I/O-thread transfers do", () => {
    const dev = I2cDev.open("/dev/null");
    try {
      const data = new Uint8Array(I2C_SMBUS_DATA_SIZE);
      assert.throws(() => dev.rdwrSync([]), SysArgumentError);
      assert.throws(() => dev.rdwrSync([{ addr: 0x80, flags: 0, buf: data }]), SysArgumentError);
      assert.throws(() => dev.smbusSync(0x80, 1, 0, 2, data), SysArgumentError);
      assert.throws(() => dev.smbusSync(0x50, 2, 0, 2, data), SysArgumentError);
      assert.throws(() => dev.smbusSync(0x50, 1, 256, 2, data), SysArgumentError);
      assert.throws(() => dev.smbusSync(0x50, 1, 0, 9, data), SysArgumentError);
      assert.throws(() => dev.smbusSync(0x50, 1, 0, 2, new Uint8Array(33)), SysArgumentError);
    } finally {
      dev.close();
    }
  });
});

/** What the child below reports of each step: the result, or the error's code/errno/syscall. */
type StepOutcome = { ok: number[] } | { code: string; errno: number; syscall: string };

/**
 * Runs the inline transfers of `steps` (source of an expression per step over `dev` and the
 * module's exports `m`, evaluating to the bytes to report) on /dev/i2c-3 of the fake, in a child.
 */
async function runInline(
  config: string,
  steps: readonly string[],
): Promise<{ outcomes: StepOutcome[]; log: FakeLogEntry[] }> {
  const module = new URL("./i2c-dev.js", import.meta.url).href;
  const script = `
    const m = await import(${JSON.stringify(module)});
    const dev = m.I2cDev.open("/dev/i2c-3");
    const outcomes = [];
    for (const step of ${JSON.stringify(steps)}) {
      try {
        outcomes.push({ ok: [...new Function("dev", "m", "return " + step)(dev, m)] });
      } catch (e) {
        outcomes.push({ code: e.code, errno: e.errno, syscall: e.syscall });
      }
    }
    dev.close();
    process.stdout.write(JSON.stringify(outcomes));
  `;
  const fake = await FakeI2c.create(config);
  try {
    const child = await fake.run(["--input-type=module", "-e", script]);
    assert.equal(child.code, 0, child.stderr);
    return { outcomes: JSON.parse(child.stdout) as StepOutcome[], log: await fake.readLog() };
  } finally {
    await fake.cleanup();
  }
}

describe("I2cDev inline transfers on the fake adapter", {
  skip: fakeUnavailableReason() ?? false,
}, () => {
  const CONFIG = "adapter 3 funcs=i2c|emul\ndevice 3 0x50\ndevice 3 0x51 pattern=0x5a\n";
  /** An rdwrSync step: `msgs` source, then the read buffers' bytes. */
  const rdwrStep = (msgs: string) =>
    `((msgs) => (dev.rdwrSync(msgs), msgs.filter((x) => x.flags & m.I2C_M_RD).flatMap((x) => [...x.buf])))(${msgs})`;
  /** An smbusSync step on a fresh i2c_smbus_data whose first bytes are `data`; then that data. */
  const smbusStep = (args: string, data = "[]") =>
    `((d) => (d.set(${data}), dev.smbusSync(${args}, d), d))(new Uint8Array(m.I2C_SMBUS_DATA_SIZE))`;

  it("rdwrSync writes, then reads back in one I2C_RDWR with a repeated START", async () => {
    const { outcomes, log } = await runInline(CONFIG, [
      rdwrStep("[{ addr: 0x50, flags: 0, buf: Uint8Array.of(0x10, 0xde, 0xad) }]"),
      rdwrStep(
        "[{ addr: 0x50, flags: 0, buf: Uint8Array.of(0x10) }, { addr: 0x50, flags: m.I2C_M_RD, buf: new Uint8Array(2) }]",
      ),
      // Larger than the first exchange buffer: 600 bytes read through the 256-byte memory.
      rdwrStep(
        "[{ addr: 0x51, flags: 0, buf: Uint8Array.of(0) }, { addr: 0x51, flags: m.I2C_M_RD, buf: new Uint8Array(600) }]",
      ),
    ]);
    assert.deepEqual(outcomes[0], { ok: [] });
    assert.deepEqual(outcomes[1], { ok: [0xde, 0xad] });
    assert.deepEqual(outcomes[2], { ok: Array(600).fill(0x5a) });
    assert.deepEqual(
      log.map((e) => `${e.seq}:${e.op} ${e.dir} ${e.result}`),
      [
        `${log[0]!.seq}:rdwr w ok`,
        `${log[1]!.seq}:rdwr w ok`,
        `${log[1]!.seq}:rdwr r ok`,
        `${log[3]!.seq}:rdwr w ok`,
        `${log[3]!.seq}:rdwr r ok`,
      ],
    );
  });

  it("smbusSync runs I2C_SLAVE then I2C_SMBUS and fills in what it read", async () => {
    // i2c_smbus_data.word is host-endian; the bus sends its low byte first whatever the host.
    const word = [...new Uint8Array(Uint16Array.of(0x1234).buffer)];
    const { outcomes, log } = await runInline(CONFIG, [
      smbusStep("0x50, m.I2C_SMBUS_WRITE, 0x20, m.I2C_SMBUS_WORD_DATA", JSON.stringify(word)),
      smbusStep("0x50, m.I2C_SMBUS_READ, 0x20, m.I2C_SMBUS_WORD_DATA"),
    ]);
    assert.deepEqual(outcomes[0], { ok: [...word, ...Array(32).fill(0)] });
    assert.deepEqual(outcomes[1], { ok: [...word, ...Array(32).fill(0)] });
    assert.deepEqual(
      log.map(
        (e) => `${e.op} ${e.dir} ${e.data.map((b) => b.toString(16)).join("") || "-"} ${e.result}`,
      ),
      [
        "slave - - ok",
        "smbus-word-data w 203412 ok",
        "slave - - ok",
        "smbus-word-data w 20 ok",
        "smbus-word-data r 3412 ok",
      ],
    );
  });

  it("throws the adapter's errors with code, errno and syscall", async () => {
    const { outcomes } = await runInline(`${CONFIG}error 3 0x52 EIO\nbusy 3 0x53\n`, [
      rdwrStep("[{ addr: 0x52, flags: m.I2C_M_RD, buf: new Uint8Array(1) }]"),
      rdwrStep("[{ addr: 0x54, flags: 0, buf: Uint8Array.of(1) }]"),
      smbusStep("0x53, m.I2C_SMBUS_READ, 0, m.I2C_SMBUS_BYTE_DATA"),
      smbusStep("0x52, m.I2C_SMBUS_READ, 0, m.I2C_SMBUS_BYTE_DATA", "[0xee]"),
    ]);
    assert.deepEqual(outcomes, [
      { code: "EIO", errno: 5, syscall: "ioctl(I2C_RDWR)" },
      { code: "ENXIO", errno: 6, syscall: "ioctl(I2C_RDWR)" },
      { code: "EBUSY", errno: 16, syscall: "ioctl(I2C_SLAVE)" },
      { code: "EIO", errno: 5, syscall: "ioctl(I2C_SMBUS)" },
    ]);
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
