// Tests for DeviceConfig handling: -l groups → DeviceConfig, the merge with the config file (one
// address once), and buildBuses on real built-in models (options checked by the model's schema,
// multi-address chips, backing files, the registry, closing).
import assert from "node:assert/strict";
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { FakeI2c, fakeUnavailableReason } from "../../test/fake-i2c/fake.js";
import { NO_WRITE_CYCLE } from "../../test/helpers/eeprom.js";
import { GuardedBus } from "../i2c/access.js";
import { parseDeviceList } from "../i2c/device-list.js";
import { FaultBus, type FaultSpec } from "../i2c/faults.js";
import type { ModelDefinition } from "../i2c/model.js";
import { createLogger, silentLogger } from "../log.js";
import {
  buildBuses,
  buildSocketBuses,
  type DeviceConfig,
  deviceSets,
  devicesFromGroups,
  mergeDevices,
  ResourcePool,
} from "./devices.js";
import { ConfigError } from "./errors.js";
import { parseConfigText } from "./file.js";

// Real path: messages name backing files by their directory's real path.
const dir = realpathSync(mkdtempSync(join(tmpdir(), "vdi2c-devices-")));
after(() => rmSync(dir, { recursive: true, force: true }));

const noAdapters = (name: string): number => {
  throw new Error(`no adapter named "${name}"`);
};
const context = { logger: silentLogger, baseDir: dir };

function fromList(text: string): DeviceConfig[] {
  return devicesFromGroups(parseDeviceList(text, noAdapters));
}

function sim(address: number, model: string, options: Record<string, unknown> = {}): DeviceConfig {
  return { kind: "sim", address, model, options, origin: `test device ${address}` };
}

function refused(build: () => unknown, code: string, message: string | RegExp): void {
  assert.throws(build, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (typeof message === "string") assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

/**
 * Writes `data` at `offset` then reads `length` back, as a 1-byte-address EEPROM expects: at once, so
 * the chip must have no write cycle (NO_WRITE_CYCLE).
 */
function writeThenRead(
  built: ReturnType<typeof buildBuses>,
  addr: number,
  write: Uint8Array,
  length: number,
): Uint8Array {
  const target = built.addressMap.lookup(addr);
  assert.ok(target, `address ${addr} is mapped`);
  const buf = new Uint8Array(length);
  const done = target.bus.transfer([{ addr, read: false, buf: write }]);
  assert.equal(done, 1);
  const pointer = write.slice(0, 1);
  const read = target.bus.transfer([
    { addr, read: false, buf: pointer },
    { addr, read: true, buf },
  ]);
  assert.equal(read, 2);
  return buf;
}

describe("devicesFromGroups", () => {
  it("gives every -l device its bus, address and model with default options", () => {
    assert.deepEqual(
      devicesFromGroups(
        parseDeviceList("3:0x20:0x21,sim:0x50=24c32:0x51=24c02", (name) =>
          name === "x" ? 9 : noAdapters(name),
        ),
      ),
      [
        { kind: "host", adapter: 3, address: 0x20, origin: '-l group 1 ("3")' },
        { kind: "host", adapter: 3, address: 0x21, origin: '-l group 1 ("3")' },
        { kind: "sim", address: 0x50, model: "24c32", options: {}, origin: '-l group 2 ("sim")' },
        { kind: "sim", address: 0x51, model: "24c02", options: {}, origin: '-l group 2 ("sim")' },
      ],
    );
  });
});

describe("mergeDevices", () => {
  const file = join(dir, "merge.json");
  const fromFile = parseConfigText(
    JSON.stringify({ devices: [{ bus: "sim", address: "0x51", model: "24c02" }] }),
    file,
    { resolveAdapter: noAdapters },
  );

  it("puts the -l devices first, then the file's", () => {
    const merged = mergeDevices(fromList("sim:0x50=24c02"), fromFile);
    assert.deepEqual(
      merged.map((d) => d.address),
      [0x50, 0x51],
    );
  });

  it("refuses one address given by -l and by the file, naming both", () => {
    refused(
      () => mergeDevices(fromList("3:0x51"), fromFile),
      "CONFIG_DUPLICATE_ADDRESS",
      `address 0x51 is given twice: by -l group 1 ("3") and by ${file}: devices[0]`,
    );
  });
});

describe("buildBuses", () => {
  it("serves every emulated chip on one sim bus and registers each by base address", () => {
    const built = buildBuses([sim(0x50, "24c02", NO_WRITE_CYCLE), sim(0x54, "24c16")], context);
    try {
      assert.deepEqual(
        built.addressMap.addresses(),
        [0x50, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x5b],
      );
      assert.equal(built.buses.length, 1);
      assert.deepEqual([...built.registry.keys()], [0x50, 0x54]);
      assert.equal(built.registry.get(0x54)?.model, "24c16");
      const written = Uint8Array.of(0xaa, 0xbb);
      assert.deepEqual(writeThenRead(built, 0x50, Uint8Array.of(0x10, 0xaa, 0xbb), 2), written);
      assert.deepEqual(built.registry.get(0x50)?.device.memory?.read(0x10, 2), written);
    } finally {
      built.close();
      built.close();
    }
  });

  it("refuses options the model's schema refuses, naming the device and the option", () => {
    refused(
      () => buildBuses([sim(0x50, "24c02", { size: 3 })], context),
      "CONFIG_BAD_OPTIONS",
      /^test device 80: 24c02 at 0x50: options\.size: expected no such option \(known: .*backing.*\), found number 3$/,
    );
  });

  it("refuses an unknown model, listing the known ones", () => {
    refused(
      () => buildBuses([sim(0x50, "24c03")], context),
      "CONFIG_UNKNOWN_MODEL",
      /^test device 80: unknown device model "24c03" \(built-in models: .*24c02.*\)$/,
    );
  });

  it("refuses a multi-address chip overlapping another device or running past 0x7f", () => {
    refused(
      () => buildBuses([sim(0x52, "24c02"), sim(0x50, "24c16")], context),
      "CONFIG_DUPLICATE_ADDRESS",
      "test device 80: 24c16 at 0x50 covers 0x50-0x57: 0x52 is already taken by 24c02 at 0x52",
    );
    refused(
      () => buildBuses([sim(0x50, "24c16"), sim(0x52, "24c02")], context),
      "CONFIG_DUPLICATE_ADDRESS",
      "test device 82: 24c02 at 0x52: 0x52 is already taken by 24c16 at 0x50, which covers 0x50-0x57",
    );
    refused(
      () => buildBuses([sim(0x7c, "24c16")], context),
      "CONFIG_ADDRESS_RANGE",
      "test device 124: 24c16 at 0x7c covers 0x7c-0x83: 0x80 is past the last 7-bit address 0x7f",
    );
  });

  it("creates a missing backing file from initial and writes through to it", () => {
    const backing = join(dir, "new.bin");
    const built = buildBuses(
      [sim(0x50, "24c02", { backing: "new.bin", initial: "0102", ...NO_WRITE_CYCLE })],
      context,
    );
    try {
      const before = readFileSync(backing);
      assert.equal(before.length, 256);
      assert.deepEqual([...before.subarray(0, 3)], [1, 2, 0xff]);
      writeThenRead(built, 0x50, Uint8Array.of(0x20, 0x5a), 1);
      assert.equal(readFileSync(backing)[0x20], 0x5a, "on disk after the STOP");
    } finally {
      built.close();
    }
  });

  it("refuses a backing file of the wrong size, naming the file, and leaves it alone", () => {
    const backing = join(dir, "short.bin");
    writeFileSync(backing, Uint8Array.of(1, 2, 3));
    refused(
      () => buildBuses([sim(0x50, "24c02", { backing })], context),
      "CONFIG_DEVICE_FAILED",
      new RegExp(`^test device 80: 24c02 at 0x50: .*${backing}`),
    );
    assert.equal(readFileSync(backing).length, 3);
  });

  it("closes the devices it created when a later device fails", () => {
    const backing = join(dir, "first.bin");
    refused(
      () => buildBuses([sim(0x50, "24c02", { backing }), sim(0x60, "no-such-model")], context),
      "CONFIG_UNKNOWN_MODEL",
      /no-such-model/,
    );
    // The first device's backing file was created and released: it can be opened again.
    const again = buildBuses([sim(0x50, "24c02", { backing })], context);
    again.close();
  });

  it("refuses a user module that was not loaded first", () => {
    refused(
      () =>
        buildBuses(
          [{ kind: "sim", address: 0x20, model: { module: "/x/chip.js" }, options: {} }],
          context,
        ),
      "MODULE_LOAD_FAILED",
      "the sim device: model module /x/chip.js was not loaded before the buses were built",
    );
  });
});

describe("buildSocketBuses (per-guest lists)", () => {
  const shared = (d: DeviceConfig): DeviceConfig => ({ ...d, shared: true });
  const read = (map: ReturnType<typeof buildSocketBuses>["addressMaps"][number], addr: number) => {
    const buf = new Uint8Array(1);
    assert.ok(map, "the socket is served");
    const target = map.lookup(addr);
    assert.ok(target);
    const done = target.bus.transfer([
      { addr, read: false, buf: Uint8Array.of(0) },
      { addr, read: true, buf },
    ]);
    return { done, byte: buf[0] };
  };
  const write = (
    map: ReturnType<typeof buildSocketBuses>["addressMaps"][number],
    addr: number,
    v: number,
  ) => map?.lookup(addr)?.bus.transfer([{ addr, read: false, buf: Uint8Array.of(0, v) }]);

  it("sockets without a list share the default; a socket's own list is its alone", () => {
    const built = buildSocketBuses(
      { defaults: [sim(0x50, "24c02")], sockets: new Map([[2, [sim(0x51, "24c02")]]]) },
      3,
      context,
    );
    try {
      const [m0, m1, m2] = built.addressMaps;
      assert.ok(m0 && m1 && m2);
      assert.deepEqual(m0.addresses(), m1.addresses(), "one default list for sockets 0 and 1");
      const [b0, b1] = [m0.lookup(0x50)?.bus, m1.lookup(0x50)?.bus];
      assert.ok(b0 instanceof GuardedBus && b1 instanceof GuardedBus);
      assert.notEqual(b0, b1, "each guest has its own guard");
      assert.ok(b0.inner instanceof FaultBus && b1.inner instanceof FaultBus);
      assert.notEqual(b0.inner, b1.inner, "and its own faults");
      assert.equal(b0.inner.inner, b1.inner.inner, "over one bus");
      assert.deepEqual(m2.addresses(), [0x51]);
      assert.equal(m0.lookup(0x51), undefined, "guest 0 cannot reach guest 2's device");
      assert.equal(m2.lookup(0x50), undefined);
      assert.deepEqual(
        built.directory.map((e) => [e.address, e.model, e.sockets]),
        [
          [0x50, "24c02", [0, 1]],
          [0x51, "24c02", [2]],
        ],
        "one default chip seen by sockets 0 and 1, socket 2's own chip",
      );
    } finally {
      built.close();
    }
  });

  it("an emulated chip in two lists: one instance when shared, else one per socket", () => {
    const lists = (dev: DeviceConfig) => ({
      defaults: [],
      sockets: new Map([
        [0, [dev]],
        [1, [dev]],
      ]),
    });
    const separate = buildSocketBuses(lists(sim(0x50, "24c02", NO_WRITE_CYCLE)), 2, context);
    try {
      const [a, b] = separate.addressMaps;
      assert.ok(a && b);
      write(a, 0x50, 0x11);
      assert.deepEqual(read(a, 0x50), { done: 2, byte: 0x11 });
      assert.deepEqual(read(b, 0x50), { done: 2, byte: 0xff }, "guest 1 has its own chip");
      const [first, second] = separate.directory;
      assert.equal(separate.directory.length, 2, "both chips at 0x50 are in the directory");
      assert.deepEqual([first?.sockets, second?.sockets], [[0], [1]]);
      assert.notEqual(first?.device, second?.device);
      assert.deepEqual(first?.device.memory?.read(0, 1), Uint8Array.of(0x11));
    } finally {
      separate.close();
    }
    const one = buildSocketBuses(lists(shared(sim(0x50, "24c02", NO_WRITE_CYCLE))), 2, context);
    try {
      const [a, b] = one.addressMaps;
      assert.ok(a && b);
      write(a, 0x50, 0x22);
      assert.deepEqual(read(b, 0x50), { done: 2, byte: 0x22 }, "one shared chip");
      assert.deepEqual(
        one.directory.map((e) => [e.address, e.sockets]),
        [[0x50, [0, 1]]],
        "a shared chip is one entry",
      );
    } finally {
      one.close();
    }
  });

  it("refused transfers are logged per guest: one guest's flood leaves another guest's lines", async () => {
    const lines: string[] = [];
    const logger = createLogger("info", { write: (line: string) => lines.push(line) });
    const built = buildSocketBuses(
      { defaults: [{ ...sim(0x50, "24c02"), readOnly: true }], sockets: new Map() },
      2,
      { ...context, logger },
    );
    try {
      const [m0, m1] = built.addressMaps;
      assert.ok(m0 && m1);
      for (let i = 0; i < 100; i++) assert.equal(await write(m0, 0x50, i), 0);
      const flood = lines.filter((l) => l.includes("[socket0/sim] transfer refused"));
      assert.ok(flood.length <= 10, `guest 0's refusals are rate-limited: ${flood.length} lines`);
      assert.equal(await write(m1, 0x50, 1), 0);
      assert.equal(
        lines.filter((l) => l.includes("[socket1/sim] transfer refused")).length,
        1,
        "guest 1's refusal is still logged",
      );
    } finally {
      built.close();
    }
  });

  it("read-only emulated chips: reads pass, writes fail and change nothing", async () => {
    const built = buildSocketBuses(
      { defaults: [{ ...sim(0x50, "24c02"), readOnly: true }], sockets: new Map() },
      1,
      context,
    );
    try {
      const [map] = built.addressMaps;
      assert.ok(map);
      assert.equal(await write(map, 0x50, 0x33), 0);
      assert.deepEqual(read(map, 0x50), { done: 2, byte: 0xff });
    } finally {
      built.close();
    }
  });

  it("refuses a host device given to two guests unless both say shared", () => {
    const host = (address: number, origin: string, hostAddress?: number): DeviceConfig => ({
      kind: "host",
      adapter: 3,
      address,
      ...(hostAddress === undefined ? {} : { hostAddress }),
      origin,
    });
    refused(
      () =>
        buildSocketBuses(
          {
            defaults: [host(0x52, "-l group 1")],
            sockets: new Map([[1, [host(0x42, "socket 1", 0x52)]]]),
          },
          2,
          context,
        ),
      "CONFIG_SHARED_CONFLICT",
      'host device 0x52 on adapter 3 is given to two guests, by -l group 1 and by socket 1; mark it "shared": true in both to allow that',
    );
    refused(
      () =>
        buildSocketBuses(
          {
            defaults: [],
            sockets: new Map([
              [0, [shared(host(0x52, "a"))]],
              [1, [host(0x52, "b")]],
            ]),
          },
          2,
          context,
        ),
      "CONFIG_SHARED_CONFLICT",
      /given to two guests, by a and by b/,
    );
  });

  it("refuses a list for a socket the daemon does not serve, and a socket with no devices", () => {
    refused(
      () =>
        buildSocketBuses(
          { defaults: [], sockets: new Map([[2, [sim(0x50, "24c02")]]]) },
          2,
          context,
        ),
      "CONFIG_INVALID",
      /socket 2, but the daemon serves 2 sockets \(0\.\.1\)/,
    );
    refused(
      () =>
        buildSocketBuses(
          { defaults: [], sockets: new Map([[1, [sim(0x50, "24c02")]]]) },
          2,
          context,
        ),
      "CONFIG_INVALID",
      /no devices for socket 0/,
    );
  });

  it("refuses two unshared chips on one backing file", () => {
    const backing = join(dir, "twice.bin");
    const dev = sim(0x50, "24c02", { backing });
    refused(
      () =>
        buildSocketBuses(
          {
            defaults: [],
            sockets: new Map([
              [0, [dev]],
              [1, [dev]],
            ]),
          },
          2,
          context,
        ),
      "CONFIG_DEVICE_FAILED",
      `backing file ${backing} is used by two emulated devices: test device 80 (24c02 at 0x50) and test device 80 (24c02 at 0x50); give each its own file, or list the device once with "shared": true`,
    );
  });

  it("a pool keeps a chip (and its state) across rebuilds while some build uses it", () => {
    const pool = new ResourcePool();
    const lists = { defaults: [sim(0x50, "24c02", NO_WRITE_CYCLE)], sockets: new Map() };
    const first = buildSocketBuses(lists, 1, { ...context, pool });
    const [m1] = first.addressMaps;
    assert.ok(m1);
    write(m1, 0x50, 0x44);
    const second = buildSocketBuses(lists, 1, { ...context, pool });
    first.close();
    const [m2] = second.addressMaps;
    assert.ok(m2);
    assert.deepEqual(read(m2, 0x50), { done: 2, byte: 0x44 });
    second.close();
  });

  it("a pool keeps a chip's faults across rebuilds unless its configured faults change", () => {
    const pool = new ResourcePool();
    const withFaults = (faults: FaultSpec[]) => ({
      defaults: [{ ...sim(0x50, "24c02"), faults }],
      sockets: new Map(),
    });
    const first = buildSocketBuses(withFaults([]), 1, { ...context, pool });
    const kept = buildSocketBuses(withFaults([]), 1, { ...context, pool });
    const changed = buildSocketBuses(withFaults([{ fault: "nack" }]), 1, { ...context, pool });
    const faultsOf = (built: ReturnType<typeof buildSocketBuses>) => built.directory[0]?.faults;
    faultsOf(first)?.forGuest(0).add({ fault: "disappear" });
    assert.equal(faultsOf(kept), faultsOf(first), "a fault set at run time reaches both builds");
    assert.equal(read(kept.addressMaps[0], 0x50).done, 0);
    assert.notEqual(faultsOf(changed), faultsOf(first));
    assert.deepEqual(faultsOf(changed)?.forGuest(0).list(), [
      { fault: "nack", injected: 0, left: null },
    ]);
    for (const built of [first, kept, changed]) built.close();
  });

  it("a pool's device locks are counted: taken once, released by the last user", () => {
    const lockDir = join(dir, "locks");
    const pool = new ResourcePool(lockDir);
    const a = pool.lock(3, 0x52, false);
    const b = pool.lock(3, 0x52, false);
    const other = new ResourcePool(lockDir);
    assert.throws(() => other.lock(3, 0x52, false), /in use/);
    a();
    assert.throws(() => other.lock(3, 0x52, false), /in use/);
    b();
    other.lock(3, 0x52, false)();
  });
});

describe("ResourcePool: one image per backing file across builds", () => {
  const pooled = join(dir, "pooled");
  mkdirSync(pooled);
  symlinkSync(pooled, join(dir, "pooled-link"));
  const openFds = () => readdirSync("/proc/self/fd").length;
  /** A file of `size` bytes where byte i is i & 0xff: an image from elsewhere shows. */
  const patterned = (name: string, size = 256) => {
    const file = join(pooled, name);
    writeFileSync(
      file,
      Uint8Array.from({ length: size }, (_, i) => i & 0xff),
      { mode: 0o600 },
    );
    return file;
  };

  it("chips of two builds on one file (two spellings) share its bytes; it closes with the last", () => {
    const file = patterned("shared.bin");
    const pool = new ResourcePool();
    const fds = openFds();
    const first = buildBuses(
      [sim(0x50, "24c02", { backing: "pooled/shared.bin", ...NO_WRITE_CYCLE })],
      {
        ...context,
        pool,
      },
    );
    const second = buildBuses(
      [
        sim(0x51, "24c02", {
          backing: "pooled-link/shared.bin",
          initial: "a1a2",
          ...NO_WRITE_CYCLE,
        }),
      ],
      { ...context, pool },
    );
    try {
      assert.equal(openFds(), fds + 1, "one fd for the file");
      // "initial" fills only a missing file: the second chip sees the file's image.
      assert.deepEqual([...writeThenRead(second, 0x51, Uint8Array.of(0), 2)], [0, 1]);
      assert.deepEqual([...writeThenRead(first, 0x50, Uint8Array.of(0x10, 0xaa), 1)], [0xaa]);
      assert.deepEqual([...writeThenRead(second, 0x51, Uint8Array.of(0x10), 1)], [0xaa]);
      assert.deepEqual([...writeThenRead(second, 0x51, Uint8Array.of(0x11, 0xbb), 1)], [0xbb]);
      assert.deepEqual([...writeThenRead(first, 0x50, Uint8Array.of(0x11), 1)], [0xbb]);
      assert.deepEqual([...readFileSync(file).subarray(0x10, 0x12)], [0xaa, 0xbb]);

      first.close();
      assert.equal(openFds(), fds + 1, "the second build still holds the file");
      writeThenRead(second, 0x51, Uint8Array.of(0x12, 0xcc), 1);
      assert.equal(readFileSync(file)[0x12], 0xcc, "written through after the first closed");
    } finally {
      first.close();
      second.close();
    }
    assert.equal(openFds(), fds, "closed with the last chip");
  });

  it("refuses a chip that needs another size than the open file; the open one goes on", () => {
    const file = patterned("sized.bin");
    const pool = new ResourcePool();
    const fds = openFds();
    const first = buildBuses([sim(0x50, "24c02", { backing: file, ...NO_WRITE_CYCLE })], {
      ...context,
      pool,
    });
    try {
      refused(
        () => buildBuses([sim(0x51, "24c32", { backing: file })], { ...context, pool }),
        "CONFIG_DEVICE_FAILED",
        `test device 81: 24c32 at 0x51: backing file ${file} holds 256 bytes, the device needs 4096 (the file is open for a device already running and is not resized; give this device another file)`,
      );
      assert.equal(openFds(), fds + 1);
      writeThenRead(first, 0x50, Uint8Array.of(0x20, 0x5a), 1);
      assert.equal(readFileSync(file).length, 256);
      assert.equal(readFileSync(file)[0x20], 0x5a);
    } finally {
      first.close();
    }
    assert.equal(openFds(), fds);
  });

  it("refuses two chips of one build on one file, naming both devices and where they are given", () => {
    const file = patterned("mistake.bin");
    const pool = new ResourcePool();
    const fds = openFds();
    const given = (address: number, backing: string, origin: string): DeviceConfig => ({
      ...sim(address, "24c02", { backing }),
      origin,
    });
    const message = (both: string) =>
      `backing file ${file} is used by two emulated devices: ${both}; give each its own file, or list the device once with "shared": true`;
    refused(
      () =>
        buildSocketBuses(
          {
            defaults: [given(0x50, "pooled/mistake.bin", "cfg.json: devices[0]")],
            sockets: new Map([
              [1, [given(0x52, "pooled-link/mistake.bin", "cfg.json: sockets.1.devices[2]")]],
            ]),
          },
          2,
          { ...context, pool },
        ),
      "CONFIG_DEVICE_FAILED",
      message(
        "cfg.json: devices[0] (24c02 at 0x50) and cfg.json: sockets.1.devices[2] (24c02 at 0x52)",
      ),
    );
    assert.equal(openFds(), fds, "nothing left open");
    // A chip an earlier build made is claimed too: the mistake is refused whichever comes first.
    const running = buildBuses([given(0x50, file, "cfg.json: devices[0]")], { ...context, pool });
    try {
      refused(
        () =>
          buildBuses(
            [given(0x51, file, "cfg.json: devices[0]"), given(0x50, file, "cfg.json: devices[1]")],
            { ...context, pool },
          ),
        "CONFIG_DEVICE_FAILED",
        message("cfg.json: devices[0] (24c02 at 0x51) and cfg.json: devices[1] (24c02 at 0x50)"),
      );
      assert.equal(openFds(), fds + 1, "only the running chip's file");
    } finally {
      running.close();
    }
  });

  it("lets go of the file when the model fails after opening it", () => {
    const file = patterned("failing.bin", 16);
    const failing: ModelDefinition = {
      name: "opens-then-fails",
      description: "opens its backing file, then refuses",
      create(_options, modelContext) {
        modelContext.openBacking("pooled/failing.bin", 16, new Uint8Array(16));
        throw new Error("cannot start");
      },
    };
    const pool = new ResourcePool();
    const fds = openFds();
    const modules = new Map([["/opens-then-fails.js", failing]]);
    const device: DeviceConfig = {
      kind: "sim",
      address: 0x40,
      model: { module: "/opens-then-fails.js" },
      options: {},
      origin: "test device 64",
    };
    refused(
      () => buildBuses([device], { ...context, modules, pool }),
      "CONFIG_DEVICE_FAILED",
      "test device 64: opens-then-fails at 0x40: cannot start",
    );
    assert.equal(openFds(), fds);
    assert.equal(readFileSync(file).length, 16);
  });
});

describe("devicesFromGroups with remapping and read-only", () => {
  it("carries the 16-bit register pointer of =ro16", () => {
    assert.deepEqual(
      fromList("3:0x50=ro16:0x51=ro,sim:0x57=24c32=ro16").map((d) => [
        d.address,
        d.readOnly,
        d.pointerBytes,
      ]),
      [
        [0x50, true, 2],
        [0x51, true, undefined],
        [0x57, true, 2],
      ],
    );
  });

  it("a read-only 24c32 (=ro16) is read through its 2-byte word address; 1 or 3 bytes are refused", () => {
    const built = buildBuses(fromList("sim:0x57=24c32=ro16"), context);
    try {
      const bus = built.addressMap.lookup(0x57)?.bus;
      assert.ok(bus);
      const buf = new Uint8Array(2);
      const word = [{ addr: 0x57, read: false, buf: Uint8Array.of(0x00, 0x10) }];
      assert.equal(bus.transfer([...word, { addr: 0x57, read: true, buf }]), 2);
      for (const bytes of [[0x00], [0x00, 0x10, 0xaa]]) {
        const pointer = { addr: 0x57, read: false, buf: Uint8Array.from(bytes) };
        assert.equal(bus.transfer([pointer, { addr: 0x57, read: true, buf }]), 0);
      }
    } finally {
      built.close();
    }
  });

  it("carries hostAddress and readOnly", () => {
    assert.deepEqual(fromList("3:0x52@0x42=ro,sim:0x50=24c02=ro"), [
      {
        kind: "host",
        adapter: 3,
        address: 0x42,
        hostAddress: 0x52,
        readOnly: true,
        origin: '-l group 1 ("3")',
      },
      {
        kind: "sim",
        address: 0x50,
        model: "24c02",
        options: {},
        readOnly: true,
        origin: '-l group 2 ("sim")',
      },
    ]);
  });

  it("mergeDevices refuses one host device given twice", () => {
    refused(
      () =>
        mergeDevices(fromList("3:0x52@0x42"), [
          { kind: "host", adapter: 3, address: 0x52, origin: "file" },
        ]),
      "CONFIG_DUPLICATE_ADDRESS",
      'host device 0x52 on adapter 3 is given twice: by -l group 1 ("3") and by file',
    );
  });
});

describe("deviceSets", () => {
  const sim = (address: number, shared = false): DeviceConfig => ({
    kind: "sim",
    address,
    model: "24c02",
    options: {},
    ...(shared && { shared: true }),
  });
  it("groups the default list's sockets, gives own lists their own set, joins sets over a shared chip", () => {
    const lists = (sockets: [number, DeviceConfig[]][]) => ({
      defaults: [sim(0x50)],
      sockets: new Map(sockets),
    });
    assert.deepEqual(deviceSets(lists([]), 3), [[0, 1, 2]]);
    assert.deepEqual(deviceSets(lists([[1, [sim(0x51)]]]), 3), [[0, 2], [1]]);
    assert.deepEqual(
      deviceSets(
        lists([
          [0, [sim(0x51)]],
          [1, [sim(0x52, true)]],
          [3, [sim(0x53), sim(0x52, true)]],
        ]),
        4,
      ),
      [[0], [1, 3], [2]],
    );
  });
});

describe("buildBuses hostCompletion (fake adapter)", {
  skip: fakeUnavailableReason() ?? false,
}, () => {
  /**
   * Builds adapter 3's bus in a child with the fake preloaded, with `context` (source of a
   * BuildContext field list, `wake` an eventfd in scope) and reports its completion mode, what its
   * first transfer returned and the wake eventfd's count after it.
   */
  async function build(
    context: string,
  ): Promise<{ completion: string; kind: string; wakes: number }> {
    const url = (path: string) => JSON.stringify(new URL(path, import.meta.url).href);
    const script = `
      const { buildBuses } = await import(${url("./devices.js")});
      const { silentLogger } = await import(${url("../log.js")});
      const { EventFd } = await import(${url("../sys/eventfd.js")});
      const { native } = await import(${url("../sys/native.js")});
      const wake = EventFd.create();
      const built = buildBuses(
        [{ kind: "host", adapter: 3, address: 0x50, origin: "test" }],
        { logger: silentLogger, baseDir: ".", ${context} },
      );
      const bus = built.guards[0].inner;
      const result = bus.transfer([{ addr: 0x50, read: true, buf: new Uint8Array(1) }]);
      await result;
      if (typeof result !== "number") native().waitReadable(Int32Array.of(wake.fd), new Uint8Array(1), 5000);
      const report = { completion: bus.completion, kind: typeof result, wakes: wake.read() };
      built.close();
      wake.close();
      process.stdout.write(JSON.stringify(report));
    `;
    const fake = await FakeI2c.create("adapter 3 funcs=i2c|emul\ndevice 3 0x50\n");
    try {
      const child = await fake.run(["--input-type=module", "-e", script]);
      assert.equal(child.code, 0, child.stderr);
      return JSON.parse(child.stdout) as { completion: string; kind: string; wakes: number };
    } finally {
      await fake.cleanup();
    }
  }

  it("opens host adapters threaded by default, inline or adaptive with the loop's wake fd when asked", async () => {
    assert.deepEqual(await build(""), { completion: "thread", kind: "object", wakes: 0 });
    assert.deepEqual(await build('hostCompletion: { mode: "inline" }'), {
      completion: "inline",
      kind: "number",
      wakes: 0,
    });
    assert.deepEqual(
      await build('hostCompletion: { mode: "adaptive", loopWakeFd: wake.fd }'),
      { completion: "adaptive", kind: "object", wakes: 1 },
      "a new adapter starts on its I/O thread, which writes the loop's wake fd",
    );
  });
});
