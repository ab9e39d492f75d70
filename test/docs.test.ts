// The documents rendered by scripts/man.mjs (`npm run man`) are current: the man pages and README's
// options table from the help, README's model table from the model definitions and their proofs;
// the help documents every option the parser takes; every test the model table names as a proof
// exists and configures that model.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { HELP, OPTIONS } from "../src/cli/args.js";
import { readmeTable, renderManPage, renderOptionsTable } from "../src/cli/help.js";
import { builtinModels } from "../src/i2c/models/builtin.js";
import { COMMAND_USAGE, VI2C_HELP } from "../src/tools/help.js";
import { checkHelpFills } from "./helpers/help-check.js";
import { MODEL_PROOFS, modelProofs } from "./helpers/model-proofs.js";
import { renderModelTable } from "./helpers/model-table.js";

const ROOT = new URL("../../", import.meta.url);
const read = (path: string): string => readFileSync(new URL(path, ROOT), "utf8");
const version: string = JSON.parse(read("package.json")).version;
const RENDER = "out of date: run `npm run man`";

describe("documents rendered from the help", () => {
  it("documents exactly the options the parser takes, with their short names", () => {
    const documented = new Set<string>();
    for (const { term } of HELP.options) {
      for (const [, name] of term.matchAll(/(?:^|, )--([a-z][a-z-]*)/g)) documented.add(name ?? "");
    }
    assert.deepEqual([...documented].sort(), Object.keys(OPTIONS).sort());
    for (const [name, spec] of Object.entries(OPTIONS)) {
      if (!("short" in spec)) continue;
      const entry = HELP.options.find((option) => option.term.includes(`--${name}`));
      assert.ok(entry?.term.startsWith(`-${spec.short}, --${name}`), name);
    }
  });

  it("README.md's options table is the one rendered from the help", () => {
    assert.equal(readmeTable(read("README.md"), "options"), renderOptionsTable(HELP), RENDER);
  });

  it("man/vhost-device-i2c.1 and man/vi2c.1 are the pages rendered from the help", () => {
    assert.equal(read("man/vhost-device-i2c.1"), renderManPage(HELP, version), RENDER);
    assert.equal(read("man/vi2c.1"), renderManPage(VI2C_HELP, version), RENDER);
  });

  it("package.json installs both man pages", () => {
    const { man } = JSON.parse(read("package.json"));
    assert.deepEqual(man, ["./man/vhost-device-i2c.1", "./man/vi2c.1"]);
  });

  it("vi2c's help fills 40 to 120 columns like the daemon's, every word kept", () => {
    checkHelpFills(VI2C_HELP);
  });

  it("vi2c's command usages (fixed, worded as i2c-tools) fit 80 columns", () => {
    for (const [name, usage] of Object.entries(COMMAND_USAGE)) {
      assert.deepEqual(
        usage.split("\n").filter((line) => line.length > 80),
        [],
        name,
      );
    }
  });
});

/**
 * The part of `source` that makes up test `name` (`it("name...`): its body up to the next test, and
 * the top-level declarations it uses (the chips of a guest test are often a constant above it).
 * Null when no test's name starts so.
 */
function testSource(source: string, name: string): string | null {
  const start = source.indexOf(`it("${name}`);
  if (start < 0) return null;
  const next = source.slice(start + 1).search(/\n\s*it\(/);
  const body = next < 0 ? source.slice(start) : source.slice(start, start + 1 + next);
  const declarations = source.split(/\n(?=[^\s\]})])/).filter((chunk) => {
    const declared = /^(?:export )?(?:const|function|async function) (\w+)/.exec(chunk)?.[1];
    return declared !== undefined && new RegExp(`\\b${declared}\\b`).test(body);
  });
  return [body, ...declarations].join("\n");
}

/** True when `source` puts model `name` on the bus: a config entry or a `-l sim:ADDR=name` list. */
const configures = (source: string, name: string): boolean =>
  source.includes(`model: "${name}"`) || new RegExp(`sim:[^"\\s]*=${name}(?![\\w-])`).test(source);

describe("README's model table", () => {
  const names = builtinModels.map((model) => model.name);

  it("lists every built-in model, in the registry's order", () => {
    const rows = (readmeTable(read("README.md"), "models") ?? "").split("\n").slice(2);
    assert.deepEqual(
      rows.map((row) => /^\| `([^`]+)`/.exec(row)?.[1]),
      names,
    );
  });

  it("is the one rendered from the model definitions (Linux driver, options) and their proofs", () => {
    assert.equal(
      readmeTable(read("README.md"), "models"),
      renderModelTable(builtinModels, modelProofs),
      RENDER,
    );
  });

  it("proves every model with its unit test, and by its Linux driver in the guest", () => {
    assert.deepEqual(Object.keys(MODEL_PROOFS).sort(), [...names].sort());
    for (const model of builtinModels) {
      const [first, ...guest] = modelProofs(model.name);
      assert.match(first?.file ?? "", /^src\/i2c\/models\/[\w-]+\.test\.ts$/, model.name);
      if (model.linuxDriver === undefined) continue;
      assert.ok(
        guest.some((proof) => proof.file.startsWith("test/e2e/")),
        `${model.name}: no guest test binds ${model.linuxDriver}`,
      );
    }
  });

  it("names only tests that exist and put the model on the bus", () => {
    for (const [name, proofs] of Object.entries(MODEL_PROOFS)) {
      for (const { file, test } of proofs) {
        const where = `${name}: ${file}${test === undefined ? "" : ` "${test}"`}`;
        assert.ok(existsSync(new URL(file, ROOT)), `${where}: no such file`);
        const source = read(file);
        if (test === undefined) {
          assert.ok(source.includes(`"${name}"`), `${where} does not name the model`);
          continue;
        }
        const part = testSource(source, test);
        assert.ok(part !== null, `${where}: no test of that name`);
        assert.ok(configures(part, name), `${where} does not put ${name} on the bus`);
      }
    }
  });
});

describe("docs/MODELS.md", () => {
  it("quotes the example's guest test as it is", () => {
    const test = read("test/e2e/example-model.test.ts");
    const body = test.slice(test.indexOf("const { skip"));
    const doc = read("docs/MODELS.md");
    const start = doc.indexOf("```ts\nconst { skip");
    const quoted = doc.slice(start + "```ts\n".length, doc.indexOf("```\n", start + 1));
    assert.ok(start >= 0, "docs/MODELS.md has no quote of test/e2e/example-model.test.ts");
    assert.equal(quoted, body);
  });
});
