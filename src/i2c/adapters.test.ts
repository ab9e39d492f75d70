import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  AdapterLookupError,
  boundClient,
  listAdapters,
  resolveAdapter,
  SYSFS_ROOT,
  sysfsRoot,
  useSysfsRoot,
} from "./adapters.js";
import { DeviceListError, parseDeviceList } from "./device-list.js";

let root = "";

function addAdapter(n: number, name: string | null): void {
  const dir = join(root, "bus", "i2c", "devices", `i2c-${n}`);
  mkdirSync(dir, { recursive: true });
  if (name !== null) writeFileSync(join(dir, "name"), `${name}\n`);
}

before(() => {
  root = mkdtempSync(join(tmpdir(), "fake-sysfs-"));
  addAdapter(0, "SMBus I801 adapter at efa0");
  addAdapter(3, "i915 gmbus dpd");
  addAdapter(10, "i915 gmbus dpb");
  addAdapter(4, "twin");
  addAdapter(7, "twin");
  addAdapter(9, null); // name file missing
  mkdirSync(join(root, "bus", "i2c", "devices", "0-0050"), { recursive: true }); // a client
});
after(() => rmSync(root, { recursive: true, force: true }));

describe("listAdapters", () => {
  it("lists i2c-N adapters with their names, sorted by number, skipping clients and nameless ones", () => {
    assert.deepEqual(listAdapters(root), [
      { number: 0, name: "SMBus I801 adapter at efa0" },
      { number: 3, name: "i915 gmbus dpd" },
      { number: 4, name: "twin" },
      { number: 7, name: "twin" },
      { number: 10, name: "i915 gmbus dpb" },
    ]);
  });

  it("treats a tree without an i2c bus as having no adapters", () => {
    assert.deepEqual(listAdapters(join(root, "nowhere")), []);
  });
});

describe("resolveAdapter", () => {
  it("returns the number of the single adapter with that name (spaces included)", () => {
    assert.equal(resolveAdapter("i915 gmbus dpd", root), 3);
    assert.equal(resolveAdapter("SMBus I801 adapter at efa0", root), 0);
  });

  it("refuses a name that matches no adapter and lists what exists", () => {
    assert.throws(
      () => resolveAdapter("i915 gmbus", root),
      (e: unknown) =>
        e instanceof AdapterLookupError &&
        e.code === "ADAPTER_NOT_FOUND" &&
        e.candidates.length === 5 &&
        /i2c-3 "i915 gmbus dpd"/.test(e.message),
    );
    assert.throws(
      () => resolveAdapter("x", join(root, "nowhere")),
      (e: unknown) => e instanceof AdapterLookupError && /no adapters found/.test(e.message),
    );
  });

  it("refuses a name shared by several adapters and lists them", () => {
    assert.throws(
      () => resolveAdapter("twin", root),
      (e: unknown) =>
        e instanceof AdapterLookupError &&
        e.code === "ADAPTER_AMBIGUOUS" &&
        e.candidates.map((c) => c.number).join() === "4,7" &&
        /i2c-4 "twin", i2c-7 "twin"/.test(e.message),
    );
  });

  it("plugs into parseDeviceList, which reports lookup failures with the cause", () => {
    const lookup = (name: string) => resolveAdapter(name, root);
    assert.deepEqual(
      parseDeviceList("i915 gmbus dpd:0x50,0:0x20", lookup).map((g) => g.bus),
      [
        { kind: "host", adapter: 3, name: "i915 gmbus dpd" },
        { kind: "host", adapter: 0 },
      ],
    );
    assert.throws(
      () => parseDeviceList("twin:0x50", lookup),
      (e: unknown) =>
        e instanceof DeviceListError &&
        e.code === "ADAPTER_NOT_FOUND" &&
        e.cause instanceof AdapterLookupError &&
        e.cause.code === "ADAPTER_AMBIGUOUS",
    );
    assert.throws(
      () => parseDeviceList("i915 gmbus dpd:0x50,3:0x20", lookup),
      (e: unknown) => e instanceof DeviceListError && e.code === "DUPLICATE_ADAPTER",
    );
  });
});

describe("boundClient", () => {
  it("names the driver bound to a client and the client, by adapter and 4-digit address", () => {
    const devices = join(root, "bus", "i2c", "devices");
    mkdirSync(join(root, "bus", "i2c", "drivers", "at24"), { recursive: true });
    mkdirSync(join(devices, "0-0050"), { recursive: true });
    writeFileSync(join(devices, "0-0050", "name"), "24c02\n");
    symlinkSync("../../../bus/i2c/drivers/at24", join(devices, "0-0050", "driver"));
    assert.deepEqual(boundClient(0, 0x50, root), {
      path: join(devices, "0-0050"),
      driver: "at24",
      device: "24c02",
    });
  });

  it("is undefined for a client without a driver and for no client at all", () => {
    const devices = join(root, "bus", "i2c", "devices");
    mkdirSync(join(devices, "3-001a"));
    writeFileSync(join(devices, "3-001a", "name"), "wm8731\n");
    assert.equal(boundClient(3, 0x1a, root), undefined);
    assert.equal(boundClient(3, 0x1b, root), undefined);
  });
});

describe("sysfsRoot", () => {
  it("is /sys whatever the environment says; only useSysfsRoot moves it", () => {
    const saved = process.env.VHOST_DEVICE_I2C_SYSFS_ROOT;
    process.env.VHOST_DEVICE_I2C_SYSFS_ROOT = root;
    try {
      assert.equal(sysfsRoot(), SYSFS_ROOT);
      assert.equal(SYSFS_ROOT, "/sys");
      assert.throws(() => resolveAdapter("i915 gmbus dpb"), AdapterLookupError);
      useSysfsRoot(root);
      assert.equal(sysfsRoot(), root);
      assert.equal(resolveAdapter("i915 gmbus dpb"), 10);
    } finally {
      useSysfsRoot(SYSFS_ROOT);
      if (saved === undefined) delete process.env.VHOST_DEVICE_I2C_SYSFS_ROOT;
      else process.env.VHOST_DEVICE_I2C_SYSFS_ROOT = saved;
    }
  });
});
