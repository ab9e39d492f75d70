// Tests for loading user model modules: a good module is imported and used by buildBuses; every
// kind of broken module is refused with a message naming the module and what is wrong.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { defineModel } from "../index.js";
import { silentLogger } from "../log.js";
import { buildBuses, type DeviceConfig } from "./devices.js";
import { ConfigError } from "./errors.js";
import { definitionProblem, loadModelModule, loadModules } from "./modules.js";

const dir = mkdtempSync(join(tmpdir(), "vdi2c-modules-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A register chip: the last byte written is read back, plus `offset` from the options. */
const GOOD_MODULE = `
export default {
  name: "echo",
  description: "reads back the last byte written plus options.offset",
  options: { type: "object", properties: { offset: { type: "integer", min: 0, max: 255 } } },
  create(options) {
    let value = 0;
    const offset = options.offset ?? 0;
    return {
      targets: [{
        start: () => true,
        write(data) { value = data[data.length - 1] ?? value; return true; },
        read(into) { into.fill((value + offset) & 0xff); },
        stop() {},
      }],
    };
  },
};
`;

function moduleFile(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

async function refused(path: string, code: string, message: RegExp): Promise<void> {
  await assert.rejects(loadModelModule(path, dir, "devices[0]"), (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

describe("loadModelModule", () => {
  it("imports a module by a path relative to the base directory", async () => {
    moduleFile("good.mjs", GOOD_MODULE);
    const definition = await loadModelModule("good.mjs", dir);
    assert.equal(definition.name, "echo");
  });

  it("refuses a missing file", async () => {
    await refused(
      join(dir, "missing.mjs"),
      "MODULE_LOAD_FAILED",
      /^devices\[0\]: cannot load model module (\S+missing\.mjs): \1 does not exist \(ENOENT\)$/,
    );
  });

  it("refuses a syntax error", async () => {
    await refused(
      moduleFile("syntax.mjs", "export default {"),
      "MODULE_LOAD_FAILED",
      /^devices\[0\]: cannot load model module .*syntax\.mjs: /,
    );
  });

  it("refuses a module that throws while loading, with its message", async () => {
    await refused(
      moduleFile("throws.mjs", 'throw new Error("chip on fire");'),
      "MODULE_LOAD_FAILED",
      /throws\.mjs: chip on fire$/,
    );
  });

  it("refuses a module without a default export", async () => {
    await refused(
      moduleFile("named.mjs", "export const model = {};"),
      "MODULE_BAD_EXPORT",
      /named\.mjs: the default export must be a ModelDefinition .*: the module has no default export$/,
    );
  });

  it("refuses a default export of the wrong shape, saying which key", async () => {
    await refused(
      moduleFile("nocreate.mjs", 'export default { name: "x", description: "" };'),
      "MODULE_BAD_EXPORT",
      /: create: expected a function \(options, context\) => SimDevice, found nothing$/,
    );
  });
});

describe("loadModelModule: what a module may import", () => {
  it('gives "vhost-device-i2c" as the daemon\'s own package', async () => {
    moduleFile(
      "own.mjs",
      'import * as pkg from "vhost-device-i2c";\nexport default pkg.defineModel({ name: "own", description: "", options: { type: "object", properties: {} }, create: () => ({ targets: [] }) });\nexport const used = pkg;',
    );
    await loadModelModule("own.mjs", dir);
    const namespace = await import(pathToFileURL(join(dir, "own.mjs")).href);
    assert.equal(namespace.used.defineModel, defineModel, "the same module instance");
  });

  it("refuses a subpath of the package that it does not export", async () => {
    await refused(
      moduleFile("subpath.mjs", 'import "vhost-device-i2c/dist/src/cli/main.js";'),
      "MODULE_LOAD_FAILED",
      /is not exported by vhost-device-i2c/,
    );
  });

  it("refuses a module others can write to, before importing it", async () => {
    const path = moduleFile("open.mjs", "globalThis.openModuleRan = true; export default {};");
    chmodSync(path, 0o666);
    await refused(path, "CONFIG_UNSAFE_PATH", /refusing model module .*open\.mjs: .*mode 0666/);
    assert.equal((globalThis as { openModuleRan?: boolean }).openModuleRan, undefined);
  });

  it("refuses a file the module imports that others can write to", async () => {
    const imported = moduleFile("open-dep.mjs", "export default 1;");
    chmodSync(imported, 0o666);
    await refused(
      moduleFile("imports-open.mjs", 'import "./open-dep.mjs"; export default {};'),
      "CONFIG_UNSAFE_PATH",
      /refusing .*open-dep\.mjs \(imported by .*imports-open\.mjs\): .*mode 0666/,
    );
  });

  it("refuses CommonJS, whose require() the checks would not see", async () => {
    await refused(
      moduleFile("chip.cjs", "module.exports = {};"),
      "MODULE_LOAD_FAILED",
      /chip\.cjs is CommonJS: model modules must be ES modules/,
    );
  });
});

describe("definitionProblem", () => {
  const create = () => ({ targets: [] });
  const cases: [unknown, string | undefined][] = [
    [{ name: "a", description: "b", create }, undefined],
    [{ name: "a", description: "b", create, options: { type: "object" } }, undefined],
    [42, "expected an object, found 42 (a number)"],
    [
      { name: "", description: "b", create },
      'name: expected a non-empty string, found "" (a string)',
    ],
    [{ name: "a", create }, "description: expected a string, found nothing"],
    [
      { name: "a", description: "b", create, options: { temperature: 1 } },
      'options: expected an OptionSchema ({ type: "object", properties: {...} }), found an object',
    ],
  ];
  for (const [value, problem] of cases) {
    it(`${JSON.stringify(value)} → ${problem ?? "valid"}`, () => {
      assert.equal(definitionProblem(value), problem);
    });
  }
});

describe("loadModules + buildBuses", () => {
  it("loads each module once and builds its devices with validated options", async () => {
    const path = moduleFile("echo.mjs", GOOD_MODULE);
    const devices: DeviceConfig[] = [
      { kind: "sim", address: 0x20, model: { module: path }, options: { offset: 1 } },
      { kind: "sim", address: 0x21, model: { module: path }, options: {} },
    ];
    const modules = await loadModules(devices, dir);
    assert.equal(modules.size, 1);
    const built = buildBuses(devices, { logger: silentLogger, baseDir: dir, modules });
    try {
      assert.equal(built.registry.get(0x20)?.model, "echo");
      const bus = built.addressMap.lookup(0x20)?.bus;
      assert.ok(bus);
      const buf = new Uint8Array(1);
      const done = await bus.transfer([
        { addr: 0x20, read: false, buf: Uint8Array.of(9) },
        { addr: 0x20, read: true, buf },
      ]);
      assert.equal(done, 2);
      assert.equal(buf[0], 10);
    } finally {
      built.close();
    }
  });

  it("refuses options the module's schema refuses", async () => {
    const path = moduleFile("echo2.mjs", GOOD_MODULE);
    const devices: DeviceConfig[] = [
      { kind: "sim", address: 0x20, model: { module: path }, options: { offset: 300 } },
    ];
    const modules = await loadModules(devices, dir);
    assert.throws(
      () => buildBuses(devices, { logger: silentLogger, baseDir: dir, modules }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.code === "CONFIG_BAD_OPTIONS" &&
        err.message ===
          "the sim device: echo at 0x20: options.offset: expected an integer from 0 to 255, found number 300",
    );
  });

  it("refuses a create() that returns no SimDevice", async () => {
    const path = moduleFile(
      "bad-create.mjs",
      'export default { name: "bad", description: "", create: () => ({ targets: [{}] }) };',
    );
    const devices: DeviceConfig[] = [
      { kind: "sim", address: 0x20, model: { module: path }, options: {} },
    ];
    const modules = await loadModules(devices, dir);
    assert.throws(
      () => buildBuses(devices, { logger: silentLogger, baseDir: dir, modules }),
      (err: unknown) => err instanceof ConfigError && err.code === "MODULE_BAD_EXPORT",
    );
  });
});
