#!/usr/bin/env node
// Writes the documents rendered from data compiled into dist/: the man pages man/vhost-device-i2c.1
// and man/vi2c.1 and README.md's options table from the programs' help (src/cli/help.ts), and
// README.md's model table from the built-in model definitions and the tests that prove them
// (test/helpers/model-table.ts and model-proofs.ts). `--check`: exit 1 when a committed file is
// out of date; `--stdout`: print the daemon's page instead of writing. Must not hold any help text or
// model data of its own.
import { readFileSync, writeFileSync } from "node:fs";

const root = new URL("../", import.meta.url);
const dist = (path) => import(new URL(`dist/${path}`, root).href);
const { HELP } = await dist("src/cli/args.js");
const { VI2C_HELP } = await dist("src/tools/help.js");
const { renderManPage, renderOptionsTable, withReadmeTable } = await dist("src/cli/help.js");
const { renderModelTable } = await dist("test/helpers/model-table.js");
const { builtinModels } = await dist("src/i2c/models/builtin.js");
const { modelProofs } = await dist("test/helpers/model-proofs.js");
const version = JSON.parse(readFileSync(new URL("package.json", root), "utf8")).version;

function read(path) {
  try {
    return readFileSync(new URL(path, root), "utf8");
  } catch {
    return ""; // missing: out of date
  }
}

/** README.md with its rendered tables; exits when a table's markers are missing. */
function renderedReadme() {
  const tables = [
    ["options", renderOptionsTable(HELP)],
    ["models", renderModelTable(builtinModels, modelProofs)],
  ];
  let readme = read("README.md");
  for (const [name, table] of tables) {
    readme = withReadmeTable(readme, name, table);
    if (readme === null) {
      process.stderr.write(
        `README.md has no <!-- ${name}:begin --> ... <!-- ${name}:end --> markers\n`,
      );
      process.exit(1);
    }
  }
  return readme;
}

/** Each file and what it should hold. */
const files = [
  ["man/vhost-device-i2c.1", renderManPage(HELP, version)],
  ["man/vi2c.1", renderManPage(VI2C_HELP, version)],
  ["README.md", renderedReadme()],
];

const mode = process.argv[2];
if (mode === "--stdout") {
  process.stdout.write(files[0][1]);
} else if (mode === "--check") {
  const stale = files.filter(([path, text]) => read(path) !== text).map(([path]) => path);
  if (stale.length > 0) {
    process.stderr.write(`${stale.join(", ")} out of date: run \`npm run man\`\n`);
    process.exit(1);
  }
} else {
  for (const [path, text] of files) writeFileSync(new URL(path, root), text);
}
