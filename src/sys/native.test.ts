// Tests for the addon loader, binding injection and the addon's own argument checks.
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  findPackageRoot,
  loadNativeBinding,
  type NativeBinding,
  NativeLoadError,
  native,
  PREBUILD_DIR,
  setNativeBinding,
} from "./native.js";

describe("loadNativeBinding", () => {
  it("loads the built addon from the package root", () => {
    const binding = loadNativeBinding();
    assert.equal(typeof binding.recvMsg, "function");
    assert.equal(typeof binding.i2cSmbus, "function");
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
          return true;
        },
      );
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

  it("rejects I2C_RDWR message counts outside 1..42 and buffers over 65535 bytes", () => {
    const cb = () => assert.fail("must not be queued");
    const msg = { addr: 0x50, flags: 0, buf: new Uint8Array(1) };
    assert.throws(() => binding.i2cRdwr(0, [], cb), { code: "ERR_OUT_OF_RANGE" });
    assert.throws(() => binding.i2cRdwr(0, Array(43).fill(msg), cb), { code: "ERR_OUT_OF_RANGE" });
    assert.throws(
      () => binding.i2cRdwr(0, [{ addr: 0x50, flags: 0, buf: new Uint8Array(65536) }], cb),
      { code: "ERR_OUT_OF_RANGE" },
    );
    assert.throws(
      () => binding.i2cRdwr(0, [{ addr: 0x50, flags: 0, buf: [1] as unknown as Uint8Array }], cb),
      TypeError,
    );
    assert.throws(() => binding.i2cSmbus(0, 0x50, 1, 0, 2, new Uint8Array(33), cb), {
      code: "ERR_OUT_OF_RANGE",
    });
  });

  it("throws errno errors with code, errno and syscall", () => {
    assert.throws(() => binding.eventfdRead(999_999), { code: "EBADF", errno: 9, syscall: "read" });
  });
});
