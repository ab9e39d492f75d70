// The documents rendered from the help data (scripts/man.mjs, `npm run man`) are current: the man
// pages and README's options table; and the help documents every option the parser takes.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { HELP, OPTIONS } from "../src/cli/args.js";
import { optionsTableIn, renderManPage, renderOptionsTable } from "../src/cli/help.js";
import { COMMAND_USAGE, VI2C_HELP } from "../src/tools/help.js";
import { checkHelpFills } from "./helpers/help-check.js";

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
    assert.equal(optionsTableIn(read("README.md")), renderOptionsTable(HELP), RENDER);
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
