// Tests for the addon loader, binding injection and the addon's own argument checks.
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { notAnAdapterCode, notAnAdapterErrno } from "../../test/helpers/emulation.js";
import {
  findPackageRoot,
  I2C_EXCHANGE_HEADER,
  type I2cChannelHandle,
  loadNativeBinding,
  type NativeBinding,
  NativeLoadError,
  native,
  PREBUILD_DIR,
  setNativeBinding,
} from "./native.js";

/** ENOTTY, the errno of an I2C ioctl on /dev/null; ENOSYS under qemu-user (test/helpers/emulation.ts). */
const NOT_AN_ADAPTER = notAnAdapterCode();

describe("loadNativeBinding", () => {
  it("loads the built addon from the package root", () => {
    const binding = loadNativeBinding();
    assert.equal(typeof binding.recvMsg, "function");
    assert.equal(typeof binding.i2cChannelRdwr, "function");
    assert.equal(typeof binding.i2cRdwr, "function");
    assert.equal(typeof binding.epollWait, "function");
  });

  it("reports every path tried when the addon is missing", () => {
    const root = mkdtempSync(join(tmpdir(), "vdi2c-native-"));
    try {
      assert.throws(
        () => loadNativeBinding(root),
        (error: unknown) => {
          assert.ok(error instanceof NativeLoadError);
          assert.equal(error.code, "ERR_NATIVE_LOAD");
          assert.deepEqual(error.tried, [
            join(root, "build/Release/vhost_device_i2c.node"),
            join(root, PREBUILD_DIR, "vhost_device_i2c.node"),
            join(root, "build/Debug/vhost_device_i2c.node"),
          ]);
          for (const path of error.tried) assert.ok(error.message.includes(path));
          // An installed package (no .git): what to install and the one command that rebuilds it.
          assert.match(error.message, /build-essential python3/);
          assert.match(error.message, /npm rebuild -g vhost-device-i2c/);
          assert.doesNotMatch(error.message, /npm run build:native/);
          return true;
        },
      );
    } finally {
      rmSync(root, { recursive: true });
    }
  });

  it("in a checkout, points at the package's own build script", () => {
    const root = mkdtempSync(join(tmpdir(), "vdi2c-native-"));
    try {
      mkdirSync(join(root, ".git"));
      assert.throws(() => loadNativeBinding(root), /run "npm run build:native" in the checkout/);
    } finally {
      rmSync(root, { recursive: true });
    }
  });

  it("falls back to the prebuilt binary for this platform when build/ has none that loads", () => {
    const root = mkdtempSync(join(tmpdir(), "vdi2c-prebuild-"));
    try {
      const built = join(
        findPackageRoot(import.meta.dirname),
        "build/Release/vhost_device_i2c.node",
      );
      mkdirSync(join(root, PREBUILD_DIR), { recursive: true });
      copyFileSync(built, join(root, PREBUILD_DIR, "vhost_device_i2c.node"));
      // A broken build/Release is passed over.
      mkdirSync(join(root, "build/Release"), { recursive: true });
      writeFileSync(join(root, "build/Release/vhost_device_i2c.node"), "not an addon");
      const binding = loadNativeBinding(root);
      assert.equal(typeof binding.datagramSend, "function");
    } finally {
      rmSync(root, { recursive: true });
    }
  });
});

describe("findPackageRoot", () => {
  it("walks up to the directory holding package.json", () => {
    const root = mkdtempSync(join(tmpdir(), "vdi2c-root-"));
    try {
      writeFileSync(join(root, "package.json"), "{}");
      const deep = join(root, "a", "b");
      assert.equal(findPackageRoot(deep), root);
    } finally {
      rmSync(root, { recursive: true });
    }
  });
});

describe("setNativeBinding", () => {
  it("swaps the binding used by native() and returns the previous one", () => {
    const real = native();
    const fake = { ...real, eventfd: () => 1234 } as NativeBinding;
    const previous = setNativeBinding(fake);
    try {
      assert.equal(previous, real);
      assert.equal(native().eventfd(0), 1234);
    } finally {
      setNativeBinding(previous);
    }
    assert.equal(native(), real);
  });
});

describe("addon argument checks", () => {
  const binding = native();

  it("rejects fractional, negative and unsafe numbers", () => {
    assert.throws(() => binding.eventfdWrite(0, -1), {
      name: "RangeError",
      code: "ERR_OUT_OF_RANGE",
    });
    assert.throws(() => binding.ftruncate(0, 1.5), { code: "ERR_OUT_OF_RANGE" });
    assert.throws(() => binding.ftruncate(0, 2 ** 53), { code: "ERR_OUT_OF_RANGE" });
    assert.throws(() => binding.close(-1), { code: "ERR_OUT_OF_RANGE" });
  });

  it("never takes one kind of handle for another", () => {
    const fd = binding.eventfd(0);
    const poll = binding.pollCreate(fd, () => undefined);
    try {
      const asMapping = poll as unknown as Parameters<NativeBinding["munmap"]>[0];
      assert.throws(() => binding.munmap(asMapping), { name: "TypeError" });
      const asPoll = {} as unknown as Parameters<NativeBinding["pollStart"]>[0];
      assert.throws(() => binding.pollStart(asPoll, 1), { name: "TypeError" });
    } finally {
      binding.pollClose(poll);
      binding.close(fd);
    }
  });

  it("rejects a receive range outside the buffer before any syscall", () => {
    const [a, b] = binding.socketPair();
    try {
      const fdsOut = new Int32Array(17);
      assert.throws(() => binding.recvMsg(a, new Uint8Array(8), 4, 5, fdsOut), {
        code: "ERR_OUT_OF_RANGE",
      });
      assert.throws(() => binding.sendMsg(a, new Uint8Array(8), 9, 0, []), {
        code: "ERR_OUT_OF_RANGE",
      });
      assert.throws(
        () => binding.recvMsg(a, new Uint8Array(8), 0, 8, new Int32Array(0)),
        TypeError,
      );
    } finally {
      binding.close(a);
      binding.close(b);
    }
  });

  it("throws errno errors with code, errno and syscall", () => {
    assert.throws(() => binding.eventfdRead(999_999), { code: "EBADF", errno: 9, syscall: "read" });
  });
});

const SMBUS_DATA = 34;
const MAX_MSGS = 42;
/** [addr, readWrite, command, size] that every SMBus call refuses with ERR_OUT_OF_RANGE. */
const BAD_SMBUS_COMMANDS: ReadonlyArray<[number, number, number, number]> = [
  [0x400, 1, 0, 2],
  [0x50, 2, 0, 2],
  [0x50, -1, 0, 2],
  [0x50, 1, 256, 2],
  [0x50, 1, 0, 9],
  [0x50, 1, 0, -1],
];

/** An exchange buffer of `bytes` whose header describes messages of `lengths` to 0x50. */
function exchangeFor(bytes: number, lengths: readonly number[]): Uint8Array {
  const exchange = new Uint8Array(bytes);
  const header = new Uint16Array(exchange.buffer, 0, I2C_EXCHANGE_HEADER / 2);
  lengths.forEach((length, i) => {
    header[3 * i] = 0x50;
    header[3 * i + 2] = length;
  });
  return exchange;
}

/**
 * Exchange buffers every I2C_RDWR call refuses with ERR_OUT_OF_RANGE as [exchange, count]: counts
 * outside 1..42, a buffer shorter than its header, message bytes past its end, an address over 0x3ff.
 */
function badRdwrExchanges(): Array<[Uint8Array, number]> {
  const full = exchangeFor(I2C_EXCHANGE_HEADER, Array(MAX_MSGS).fill(0));
  const badAddr = exchangeFor(I2C_EXCHANGE_HEADER, [0]);
  new Uint16Array(badAddr.buffer, 0, 1)[0] = 0x400;
  return [
    ...[0, MAX_MSGS + 1, 1.5, -1].map((count): [Uint8Array, number] => [full, count]),
    [new Uint8Array(I2C_EXCHANGE_HEADER - 1), 1],
    [exchangeFor(I2C_EXCHANGE_HEADER + 4, [5]), 1],
    [exchangeFor(I2C_EXCHANGE_HEADER + 65535, [65535, 1]), 2],
    [badAddr, 1],
  ];
}

describe("addon I2C channel checks", () => {
  const binding = native();

  /**
   * A channel on /dev/null, where every transfer that starts ends with NOT_AN_ADAPTER. `ended()` is the
   * next callback's argument; a callback nobody waits for (a check let a transfer through) throws.
   */
  function nullChannel(wakeFd?: number) {
    const fd = binding.i2cOpen("/dev/null");
    let settle: ((error: Error | null) => void) | null = null;
    let channel: I2cChannelHandle;
    try {
      channel = binding.i2cChannelOpen(
        fd,
        (error) => {
          const resolve = settle;
          settle = null;
          if (resolve === null) assert.fail(`a transfer ran that no test started: ${error}`);
          resolve(error);
        },
        wakeFd,
      );
    } catch (error) {
      binding.close(fd);
      throw error;
    }
    return {
      channel,
      ended: () => new Promise<Error | null>((resolve) => (settle = resolve)),
      close: () => {
        binding.i2cChannelClose(channel);
        binding.close(fd);
      },
    };
  }

  /** A transfer that reached the adapter: /dev/null answers the ioctl with NOT_AN_ADAPTER. */
  async function assertReached(ended: Promise<Error | null>, syscall: string): Promise<void> {
    const error = await ended;
    assert.ok(error instanceof Error);
    assert.equal((error as NodeJS.ErrnoException).code, NOT_AN_ADAPTER);
    assert.equal((error as NodeJS.ErrnoException).syscall, syscall);
  }

  it("takes 1 to 42 messages; refuses other counts, bytes past the buffer's end, addresses over 0x3ff", async () => {
    const ch = nullChannel();
    try {
      for (const [exchange, count] of badRdwrExchanges()) {
        assert.throws(
          () => binding.i2cChannelRdwr(ch.channel, exchange, count),
          { name: "RangeError", code: "ERR_OUT_OF_RANGE" },
          `count ${count}, ${exchange.length} bytes`,
        );
      }
      let ended = ch.ended();
      const exchange = exchangeFor(I2C_EXCHANGE_HEADER, Array(MAX_MSGS).fill(0));
      binding.i2cChannelRdwr(ch.channel, exchange, MAX_MSGS);
      await assertReached(ended, "ioctl(I2C_RDWR)");
      // Message lengths are u16 in the header; the bytes they claim must be in the buffer.
      ended = ch.ended();
      binding.i2cChannelRdwr(ch.channel, exchangeFor(I2C_EXCHANGE_HEADER + 65535, [65535, 1]), 1);
      await assertReached(ended, "ioctl(I2C_RDWR)");
    } finally {
      ch.close();
    }
  });

  it("refuses an exchange buffer too short for its header or the SMBus data, or not a Uint8Array", () => {
    const ch = nullChannel();
    try {
      assert.throws(
        () => binding.i2cChannelRdwr(ch.channel, new Uint8Array(I2C_EXCHANGE_HEADER - 1), 1),
        { code: "ERR_OUT_OF_RANGE" },
      );
      assert.throws(
        () => binding.i2cChannelSmbus(ch.channel, new Uint8Array(SMBUS_DATA - 1), 0x50, 1, 0, 2),
        { code: "ERR_OUT_OF_RANGE" },
      );
      const words = new Uint16Array(I2C_EXCHANGE_HEADER) as unknown as Uint8Array;
      assert.throws(() => binding.i2cChannelRdwr(ch.channel, words, 1), TypeError);
      const notChannel = {} as unknown as I2cChannelHandle;
      const exchange = exchangeFor(I2C_EXCHANGE_HEADER, [0]);
      assert.throws(() => binding.i2cChannelRdwr(notChannel, exchange, 1), TypeError);
    } finally {
      ch.close();
    }
  });

  it("refuses SMBus addresses, readWrite, commands and sizes out of range", async () => {
    const ch = nullChannel();
    try {
      const data = new Uint8Array(SMBUS_DATA);
      for (const [addr, readWrite, command, size] of BAD_SMBUS_COMMANDS) {
        assert.throws(
          () => binding.i2cChannelSmbus(ch.channel, data, addr, readWrite, command, size),
          { code: "ERR_OUT_OF_RANGE" },
          `addr ${addr} readWrite ${readWrite} command ${command} size ${size}`,
        );
      }
      const ended = ch.ended();
      binding.i2cChannelSmbus(ch.channel, data, 0x3ff, 1, 255, 8);
      await assertReached(ended, "ioctl(I2C_SLAVE)");
    } finally {
      ch.close();
    }
  });

  it("runs one transfer at a time: another one is refused with EBUSY until the callback", async () => {
    const ch = nullChannel();
    try {
      const exchange = exchangeFor(I2C_EXCHANGE_HEADER + 1, [1]);
      const ended = ch.ended();
      binding.i2cChannelRdwr(ch.channel, exchange, 1);
      // The callback cannot run before this synchronous code returns to the loop.
      assert.throws(() => binding.i2cChannelRdwr(ch.channel, exchange, 1), {
        code: "EBUSY",
        syscall: "i2c channel",
      });
      assert.throws(
        () => binding.i2cChannelSmbus(ch.channel, new Uint8Array(SMBUS_DATA), 0x50, 1, 0, 2),
        { code: "EBUSY" },
      );
      await assertReached(ended, "ioctl(I2C_RDWR)");
      const next = ch.ended();
      binding.i2cChannelRdwr(ch.channel, exchange, 1);
      await assertReached(next, "ioctl(I2C_RDWR)");
    } finally {
      ch.close();
    }
  });

  it("adds 1 to wakeFd as each transfer ends: a thread blocked in epollWait on it wakes", async () => {
    const wakeFd = binding.eventfd(0);
    const epfd = binding.epollCreate();
    const ch = nullChannel(wakeFd);
    try {
      binding.epollCtl(epfd, 1, wakeFd, 1, 7);
      const out = new Int32Array(2);
      for (const submit of [
        () => binding.i2cChannelRdwr(ch.channel, exchangeFor(I2C_EXCHANGE_HEADER + 1, [1]), 1),
        () => binding.i2cChannelSmbus(ch.channel, new Uint8Array(SMBUS_DATA), 0x50, 1, 0, 2),
      ]) {
        assert.equal(binding.eventfdRead(wakeFd), -1, "no wake-up before a transfer ends");
        const ended = ch.ended();
        submit();
        // This thread stands for one blocked in epoll_wait: its loop cannot run the callback
        // until the wait returns, so only the I/O thread's write can end the wait.
        assert.equal(binding.epollWait(epfd, out, 10_000), 1);
        assert.deepEqual([...out], [7, 1]);
        assert.equal(binding.eventfdRead(wakeFd), 1);
        await ended;
      }
      assert.equal(binding.eventfdRead(wakeFd), -1, "one wake-up per transfer");
    } finally {
      ch.close();
      binding.close(epfd);
      binding.close(wakeFd);
    }
  });

  it("takes no wakeFd (undefined or -1) or an fd; refuses other values", () => {
    for (const wakeFd of [undefined, -1]) nullChannel(wakeFd).close();
    for (const wakeFd of [-2, 1.5, 2 ** 31]) {
      assert.throws(() => nullChannel(wakeFd), { code: "ERR_OUT_OF_RANGE" }, `wakeFd ${wakeFd}`);
    }
    assert.throws(() => nullChannel("3" as unknown as number), TypeError);
  });

  it("refuses transfers on a closed channel with ERR_I2C_CHANNEL_CLOSED; close is idempotent", () => {
    const ch = nullChannel();
    ch.close();
    binding.i2cChannelClose(ch.channel);
    assert.throws(
      () => binding.i2cChannelRdwr(ch.channel, exchangeFor(I2C_EXCHANGE_HEADER, [0]), 1),
      { code: "ERR_I2C_CHANNEL_CLOSED" },
    );
    assert.throws(
      () => binding.i2cChannelSmbus(ch.channel, new Uint8Array(SMBUS_DATA), 0x50, 1, 0, 2),
      { code: "ERR_I2C_CHANNEL_CLOSED" },
    );
  });
});

describe("addon inline I2C calls", () => {
  const binding = native();

  /** Runs `body` with /dev/null opened as an adapter: every ioctl that starts fails with NOT_AN_ADAPTER. */
  function withNullFd(body: (fd: number) => void): void {
    const fd = binding.i2cOpen("/dev/null");
    try {
      body(fd);
    } finally {
      binding.close(fd);
    }
  }

  it("i2cRdwr refuses what i2cChannelRdwr refuses, and reports ioctl failures as errno errors", () => {
    withNullFd((fd) => {
      for (const [exchange, count] of badRdwrExchanges()) {
        assert.throws(
          () => binding.i2cRdwr(fd, exchange, count),
          { name: "RangeError", code: "ERR_OUT_OF_RANGE" },
          `count ${count}, ${exchange.length} bytes`,
        );
      }
      const words = new Uint16Array(I2C_EXCHANGE_HEADER) as unknown as Uint8Array;
      assert.throws(() => binding.i2cRdwr(fd, words, 1), TypeError);
      assert.throws(() => binding.i2cRdwr(-1, exchangeFor(I2C_EXCHANGE_HEADER, [0]), 1), {
        code: "ERR_OUT_OF_RANGE",
      });
      const largest = exchangeFor(I2C_EXCHANGE_HEADER + 65535, [65535, 1]);
      for (const count of [1, MAX_MSGS]) {
        const exchange =
          count === 1 ? largest : exchangeFor(I2C_EXCHANGE_HEADER, Array(count).fill(0));
        assert.throws(() => binding.i2cRdwr(fd, exchange, count), {
          code: NOT_AN_ADAPTER,
          errno: notAnAdapterErrno(),
          syscall: "ioctl(I2C_RDWR)",
        });
      }
    });
  });

  it("i2cSmbus refuses what i2cChannelSmbus refuses, and reports ioctl failures as errno errors", () => {
    withNullFd((fd) => {
      const data = new Uint8Array(SMBUS_DATA);
      for (const [addr, readWrite, command, size] of BAD_SMBUS_COMMANDS) {
        assert.throws(() => binding.i2cSmbus(fd, data, addr, readWrite, command, size), {
          code: "ERR_OUT_OF_RANGE",
        });
      }
      assert.throws(() => binding.i2cSmbus(fd, new Uint8Array(SMBUS_DATA - 1), 0x50, 1, 0, 2), {
        code: "ERR_OUT_OF_RANGE",
      });
      data.fill(0xab);
      assert.throws(() => binding.i2cSmbus(fd, data, 0x3ff, 1, 255, 8), {
        code: NOT_AN_ADAPTER,
        errno: notAnAdapterErrno(),
        syscall: "ioctl(I2C_SLAVE)",
      });
      assert.ok(
        data.every((b) => b === 0xab),
        "nothing copied back from a failed call",
      );
    });
  });
});

describe("addon socket identity and connect", () => {
  it("socketPeerCred names this process at both ends of a pair", () => {
    const [a, b] = native().socketPair();
    try {
      const [pid, uid, gid] = native().socketPeerCred(a);
      assert.deepEqual([pid, uid, gid], [process.pid, process.getuid?.(), process.getgid?.()]);
    } finally {
      native().close(a);
      native().close(b);
    }
  });

  it("connect to a listener whose backlog is full fails with EAGAIN instead of blocking", () => {
    const root = mkdtempSync(join(tmpdir(), "vdi2c-connect-"));
    const path = join(root, "full.sock");
    const listener = native().socketListen(path, 0);
    const connected: number[] = [];
    try {
      let error: unknown = null;
      // Backlog 0 admits one pending connection (Linux accepts backlog + 1); the next must not wait.
      for (let i = 0; i < 4 && error === null; i++) {
        try {
          connected.push(native().socketConnect(path));
        } catch (e) {
          error = e;
        }
      }
      assert.equal((error as { code?: string } | null)?.code, "EAGAIN");
    } finally {
      for (const fd of connected) native().close(fd);
      native().close(listener);
      rmSync(root, { recursive: true, force: true });
    }
  });
});
