// Tests for the config file schema: what it accepts, and each refusal with its precise message
// (file, key path, what was expected, what was found).
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { ConfigError } from "./errors.js";
import { loadConfigFile, parseConfigDocument, parseConfigText } from "./file.js";

const dir = mkdtempSync(join(tmpdir(), "vdi2c-config-file-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const FILE = join(dir, "devices.json");
const deps = {
  resolveAdapter(name: string): number {
    if (name === "Fake adapter three") return 3;
    throw new Error(`no adapter named "${name}"`);
  },
};

function parse(json: unknown) {
  return parseConfigText(JSON.stringify(json), FILE, deps);
}

function refused(json: unknown, code: string, message: string): void {
  assert.throws(
    () => parse(json),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
      assert.equal(err.code, code);
      assert.equal(err.message, message);
      return true;
    },
  );
}

describe("parseConfigText accepts", () => {
  it("built-in models, user modules and host adapters by number and name", () => {
    const devices = parse({
      devices: [
        { bus: "sim", address: "0x50", model: "24c32", options: { backing: "eeprom.bin" } },
        { bus: "sim", address: 0x20, module: "./chips/my-chip.js" },
        { bus: 3, address: "0x36" },
        { bus: "Fake adapter three", address: "41" },
        { bus: "sim", address: 0x21, model: { module: "/abs/chip.js" } },
      ],
    });
    assert.deepEqual(devices, [
      {
        kind: "sim",
        address: 0x50,
        model: "24c32",
        options: { backing: join(dir, "eeprom.bin") },
        origin: `${FILE}: devices[0]`,
      },
      {
        kind: "sim",
        address: 0x20,
        model: { module: join(dir, "chips", "my-chip.js") },
        options: {},
        origin: `${FILE}: devices[1]`,
      },
      { kind: "host", adapter: 3, address: 0x36, origin: `${FILE}: devices[2]` },
      {
        kind: "host",
        adapter: 3,
        adapterName: "Fake adapter three",
        address: 41,
        origin: `${FILE}: devices[3]`,
      },
      {
        kind: "sim",
        address: 0x21,
        model: { module: "/abs/chip.js" },
        options: {},
        origin: `${FILE}: devices[4]`,
      },
    ]);
  });

  it("keeps absolute paths and reads initial {file} into bytes, relative to the file's directory", () => {
    writeFileSync(join(dir, "initial.bin"), Uint8Array.of(1, 2, 3));
    const [device] = parse({
      devices: [
        {
          bus: "sim",
          address: 80,
          model: "24c32",
          options: { backing: "/var/lib/x.bin", initial: { file: "initial.bin" } },
        },
      ],
    });
    assert.ok(device?.kind === "sim");
    assert.equal(device.options.backing, "/var/lib/x.bin");
    assert.deepEqual(device.options.initial, Uint8Array.of(1, 2, 3));
  });

  it("passes a hex string initial through for the model's schema", () => {
    const [device] = parse({
      devices: [{ bus: "sim", address: 80, model: "24c32", options: { initial: "00ff" } }],
    });
    assert.ok(device?.kind === "sim");
    assert.equal(device.options.initial, "00ff");
  });

  it("every address 0..0x7f, as a number, a decimal string or a hex string", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0x7f }), fc.nat(2), (address, form) => {
        const text = [address, String(address), `0x${address.toString(16)}`][form];
        const [device] = parse({ devices: [{ bus: 3, address: text }] });
        assert.equal(device?.address, address);
      }),
    );
  });
});

describe("parseConfigText faults and stretching", () => {
  it("reads an emulated device's faults and stretch", () => {
    const [device] = parse({
      devices: [
        {
          bus: "sim",
          address: "0x48",
          model: "lm75",
          faults: [
            { fault: "nack", every: 3 },
            { fault: "corrupt", byte: 1, xor: "0x01" },
          ],
          stretch: { usPerByte: 10 },
        },
      ],
    });
    assert.ok(device?.kind === "sim");
    assert.deepEqual(device.faults, [
      { fault: "nack", every: 3 },
      { fault: "corrupt", byte: 1, xor: 1 },
    ]);
    assert.deepEqual(device.stretch, { usPerTransfer: 0, usPerByte: 10 });
  });

  it("reads a host device's faults too", () => {
    const [device] = parse({
      devices: [{ bus: 3, address: 80, faults: [{ fault: "disappear" }] }],
    });
    assert.ok(device?.kind === "host");
    assert.deepEqual(device.faults, [{ fault: "disappear" }]);
  });

  it("refuses a bad fault, naming where it is", () => {
    refused(
      {
        devices: [
          { bus: "sim", address: 72, model: "lm75", faults: [{ fault: "nack", every: 0 }] },
        ],
      },
      "CONFIG_INVALID",
      `${FILE}: devices[0].faults[0]: "every" must be an integer 1..2147483648, not 0`,
    );
    refused(
      { devices: [{ bus: "sim", address: 72, model: "lm75", stretch: { usPerByte: 10001 } }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].stretch: "usPerByte" must be an integer 0..10000, not 10001`,
    );
  });
});

describe("parseConfigText refuses", () => {
  it("text that is not JSON", () => {
    assert.throws(
      () => parseConfigText("{devices: []}", FILE, deps),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.code === "CONFIG_BAD_JSON" &&
        err.message.startsWith(`${FILE}: not valid JSON: `),
    );
  });

  it("a top level that is not an object", () => {
    refused(
      [],
      "CONFIG_INVALID",
      `${FILE}: (top level): expected an object like {"devices": [...]}, found an array of 0`,
    );
  });

  it("an unknown top-level key", () => {
    refused(
      { devices: [{ bus: 3, address: 1 }], device: [] },
      "CONFIG_INVALID",
      `${FILE}: device: unknown key (expected one of: devices, sockets)`,
    );
  });

  it("devices that is not an array, or empty", () => {
    refused(
      { devices: {} },
      "CONFIG_INVALID",
      `${FILE}: devices: expected an array of devices, found an object`,
    );
    refused(
      { devices: [] },
      "CONFIG_INVALID",
      `${FILE}: devices: expected at least one device, found an array of 0`,
    );
  });

  it("a device that is not an object", () => {
    refused(
      { devices: ["sim:0x50"] },
      "CONFIG_INVALID",
      `${FILE}: devices[0]: expected a device object {"bus": ..., "address": ...}, found "sim:0x50" (a string)`,
    );
  });

  it("a missing bus", () => {
    refused(
      { devices: [{ address: 1 }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].bus: expected "sim" or a host adapter, found nothing`,
    );
  });

  it("a bus of the wrong kind", () => {
    refused(
      { devices: [{ bus: -1, address: 1 }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].bus: expected "sim", a host adapter number (3 means /dev/i2c-3) or an adapter name, found -1 (a number)`,
    );
    refused(
      { devices: [{ bus: true, address: 1 }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].bus: expected "sim", a host adapter number (3 means /dev/i2c-3) or an adapter name, found true (a boolean)`,
    );
  });

  it("an adapter name that matches no adapter", () => {
    refused(
      { devices: [{ bus: "nope", address: 1 }] },
      "CONFIG_ADAPTER_NOT_FOUND",
      `${FILE}: devices[0].bus: adapter "nope": no adapter named "nope"`,
    );
  });

  it("addresses out of range or badly written", () => {
    const expected = `a 7-bit I2C address (0..0x7f) as a number or a string like "0x50"`;
    refused(
      { devices: [{ bus: 3, address: "0x80" }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].address: expected ${expected}, found "0x80" (a string)`,
    );
    refused(
      { devices: [{ bus: "sim", address: 1.5, model: "lm75" }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].address: expected ${expected}, found 1.5 (a number)`,
    );
    refused(
      { devices: [{ bus: 3 }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].address: expected ${expected}, found nothing`,
    );
  });

  it("an unknown key in a device", () => {
    refused(
      { devices: [{ bus: "sim", address: 1, model: "lm75", adress: 2 }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].adress: unknown key (expected one of: bus, address, model, module, options, readOnly, pointerBytes, shared, faults, stretch)`,
    );
  });

  it("model, module or options on a host adapter", () => {
    refused(
      { devices: [{ bus: 3, address: 1, model: "lm75" }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].model: expected no "model" on a host adapter (models are only for "bus": "sim"), found "lm75" (a string)`,
    );
  });

  it("both or neither of model and module", () => {
    const message = (found: string) =>
      `${FILE}: devices[0]: expected exactly one of "model" (a built-in model name) or "module" (a path to a model module), found ${found}`;
    refused({ devices: [{ bus: "sim", address: 1 }] }, "CONFIG_INVALID", message("neither"));
    refused(
      { devices: [{ bus: "sim", address: 1, model: "lm75", module: "./x.js" }] },
      "CONFIG_INVALID",
      message("both"),
    );
  });

  it("a model or module that is not a non-empty string", () => {
    refused(
      { devices: [{ bus: "sim", address: 1, model: 75 }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].model: expected a model name such as "24c32", found 75 (a number)`,
    );
    refused(
      { devices: [{ bus: "sim", address: 1, module: "" }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].module: expected a path to a JavaScript module such as "./my-chip.js", found "" (a string)`,
    );
  });

  it("options that are not an object, and bad path options", () => {
    refused(
      { devices: [{ bus: "sim", address: 1, model: "lm75", options: [] }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].options: expected an object of model options, found an array of 0`,
    );
    refused(
      { devices: [{ bus: "sim", address: 1, model: "24c32", options: { backing: 7 } }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].options.backing: expected a file path, found 7 (a number)`,
    );
    refused(
      {
        devices: [{ bus: "sim", address: 1, model: "24c32", options: { initial: { path: "x" } } }],
      },
      "CONFIG_INVALID",
      `${FILE}: devices[0].options.initial.path: unknown key (expected one of: file)`,
    );
  });

  it("an initial file that cannot be read, naming the file", () => {
    assert.throws(
      () =>
        parse({
          devices: [
            { bus: "sim", address: 1, model: "24c32", options: { initial: { file: "gone.bin" } } },
          ],
        }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.code === "CONFIG_UNREADABLE" &&
        err.message.startsWith(
          `${FILE}: devices[0].options.initial.file: cannot read ${join(dir, "gone.bin")}: `,
        ),
    );
  });

  it("two devices on one address, naming both", () => {
    refused(
      {
        devices: [
          { bus: 3, address: 1 },
          { bus: "sim", address: "0x01", model: "lm75" },
        ],
      },
      "CONFIG_DUPLICATE_ADDRESS",
      `${FILE}: devices[1].address: address 0x01 is already used by devices[0]`,
    );
  });
});

describe("loadConfigFile", () => {
  it("reads the file and resolves relative to its directory", () => {
    const path = join(dir, "load.json");
    writeFileSync(path, JSON.stringify({ devices: [{ bus: "sim", address: 1, module: "m.js" }] }));
    const loaded = loadConfigFile(path, deps);
    assert.equal(loaded.dir, dir);
    assert.deepEqual(loaded.devices[0]?.kind === "sim" && loaded.devices[0].model, {
      module: join(dir, "m.js"),
    });
  });

  it("refuses a file others can write, or one reached through an open directory", () => {
    const path = join(dir, "open.json");
    writeFileSync(path, JSON.stringify({ devices: [] }));
    chmodSync(path, 0o646);
    const unsafe = (err: unknown, what: RegExp) =>
      err instanceof ConfigError && err.code === "CONFIG_UNSAFE_PATH" && what.test(err.message);
    assert.throws(
      () => loadConfigFile(path, deps),
      (err: unknown) => unsafe(err, /^refusing config file .*open\.json: .*mode 0646/),
    );
    const openDir = join(dir, "open-dir");
    mkdirSync(openDir);
    chmodSync(openDir, 0o777);
    writeFileSync(join(openDir, "devices.json"), JSON.stringify({ devices: [] }));
    assert.throws(
      () => loadConfigFile(join(openDir, "devices.json"), deps),
      (err: unknown) => unsafe(err, /open-dir: mode 0777/),
    );
  });

  it("names a file it cannot read", () => {
    assert.throws(
      () => loadConfigFile(join(dir, "missing.json"), deps),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.code === "CONFIG_UNREADABLE" &&
        err.message ===
          `cannot read config file ${join(dir, "missing.json")}: ${join(dir, "missing.json")} does not exist (ENOENT)`,
    );
  });
});

describe("per-socket lists, remapping, readOnly and shared", () => {
  const doc = (json: unknown) => parseConfigDocument(JSON.stringify(json), FILE, deps);
  const refusedDoc = (json: unknown, code: string, message: string | RegExp) =>
    assert.throws(
      () => doc(json),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.equal(err.code, code);
        if (typeof message === "string") assert.equal(err.message, message);
        else assert.match(err.message, message);
        return true;
      },
    );

  it("hostAddress, readOnly and shared on host devices; readOnly and shared on sim", () => {
    assert.deepEqual(
      parse({
        devices: [
          { bus: 3, address: "0x42", hostAddress: "0x52", readOnly: true },
          { bus: 3, address: "0x52", hostAddress: "0x42", shared: true, readOnly: false },
          { bus: "sim", address: "0x50", model: "24c02", readOnly: true, shared: true },
        ],
      }),
      [
        {
          kind: "host",
          adapter: 3,
          address: 0x42,
          hostAddress: 0x52,
          readOnly: true,
          origin: `${FILE}: devices[0]`,
        },
        {
          kind: "host",
          adapter: 3,
          address: 0x52,
          hostAddress: 0x42,
          shared: true,
          origin: `${FILE}: devices[1]`,
        },
        {
          kind: "sim",
          address: 0x50,
          model: "24c02",
          options: {},
          readOnly: true,
          shared: true,
          origin: `${FILE}: devices[2]`,
        },
      ],
    );
  });

  it("pointerBytes: a read-only device's register pointer width, 1 (the default) or 2", () => {
    const devices = parse({
      devices: [
        { bus: 3, address: "0x50", readOnly: true, pointerBytes: 2 },
        { bus: 3, address: "0x51", readOnly: true, pointerBytes: 1 },
        { bus: "sim", address: "0x57", model: "24c32", readOnly: true, pointerBytes: 2 },
      ],
    });
    assert.deepEqual(
      devices.map((d) => [d.address, d.readOnly, d.pointerBytes]),
      [
        [0x50, true, 2],
        [0x51, true, undefined],
        [0x57, true, 2],
      ],
    );
  });

  it("refuses a pointerBytes other than 1 or 2, and one on a device that is not read-only", () => {
    for (const [value, found] of [
      [3, "3 (a number)"],
      ["2", '"2" (a string)'],
      [1.5, "1.5 (a number)"],
    ] as const) {
      refusedDoc(
        { devices: [{ bus: 3, address: 1, readOnly: true, pointerBytes: value }] },
        "CONFIG_INVALID",
        `${FILE}: devices[0].pointerBytes: expected 1 (8-bit register address) or 2 (16-bit word address, 24c32 and larger EEPROMs), found ${found}`,
      );
    }
    for (const device of [
      { bus: 3, address: 1, pointerBytes: 2 },
      { bus: "sim", address: 1, model: "24c32", readOnly: false, pointerBytes: 2 },
    ]) {
      refusedDoc(
        { sockets: { "2": { devices: [device] } } },
        "CONFIG_INVALID",
        `${FILE}: sockets.2.devices[0].pointerBytes: only a read-only device takes a register pointer width; add "readOnly": true or remove "pointerBytes"`,
      );
    }
  });

  it("sockets as an object keyed by index, or as an array (null keeps the default)", () => {
    const one = { devices: [{ bus: 3, address: 1 }] };
    const byKey = doc({ devices: [{ bus: 3, address: 2 }], sockets: { "1": one } });
    assert.deepEqual([...byKey.sockets.keys()], [1]);
    assert.equal(byKey.sockets.get(1)?.[0]?.origin, `${FILE}: sockets.1.devices[0]`);
    assert.equal(byKey.devices.length, 1);
    const byArray = doc({ sockets: [null, one, one] });
    assert.deepEqual([...byArray.sockets.keys()], [1, 2]);
    assert.deepEqual(byArray.devices, []);
  });

  it("refuses bad sockets, flags and one host device at two guest addresses", () => {
    refusedDoc({}, "CONFIG_INVALID", /devices: expected an array of devices \(or "sockets"/);
    refusedDoc(
      { sockets: { x: { devices: [] } } },
      "CONFIG_INVALID",
      `${FILE}: sockets.x: expected a socket index 0..63 as the key, found "x" (a string)`,
    );
    refusedDoc(
      { sockets: { "0": { devices: [{ bus: 3, address: 1 }], extra: 1 } } },
      "CONFIG_INVALID",
      /sockets\.0\.extra: unknown key/,
    );
    refusedDoc(
      { sockets: { "0": { devices: [] } } },
      "CONFIG_INVALID",
      `${FILE}: sockets.0.devices: expected at least one device, found an array of 0`,
    );
    refusedDoc(
      { devices: [{ bus: 3, address: 1, readOnly: "yes" }] },
      "CONFIG_INVALID",
      `${FILE}: devices[0].readOnly: expected true or false, found "yes" (a string)`,
    );
    refusedDoc(
      { devices: [{ bus: "sim", address: 1, model: "24c02", hostAddress: 2 }] },
      "CONFIG_INVALID",
      /devices\[0\]\.hostAddress: unknown key/,
    );
    refusedDoc(
      {
        devices: [
          { bus: 3, address: "0x42", hostAddress: "0x52" },
          { bus: 3, address: "0x52" },
        ],
      },
      "CONFIG_DUPLICATE_ADDRESS",
      `${FILE}: devices[1]: host device 0x52 on adapter 3 is already listed by devices[0]`,
    );
    refusedDoc(
      { devices: [{ bus: 3, address: "0x42", hostAddress: "0x80" }] },
      "CONFIG_INVALID",
      /devices\[0\]\.hostAddress: expected a 7-bit I2C address/,
    );
  });
});
