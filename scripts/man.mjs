#!/usr/bin/env node
// Writes the documents rendered from the programs' help data (src/cli/help.ts, compiled into dist/):
// the man pages man/vhost-device-i2c.1 and man/vi2c.1, and README.md's options table (between its
// markers). `--check`: exit 1 when a committed file is out of date; `--stdout`: print the daemon's
// page instead of writing. Must not hold any help text of its own.
import { readFileSync, writeFileSync } from "node:fs";

const root = new URL("../", import.meta.url);
const dist = (path) => import(new URL(`dist/src/${path}`, root).href);
const { HELP } = await dist("cli/args.js");
const { VI2C_HELP } = await dist("tools/help.js");
const { renderManPage, renderOptionsTable, withOptionsTable } = await dist("cli/help.js");
const version = JSON.parse(readFileSync(new URL("package.json", root), "utf8")).version;

function read(path) {
  try {
    return readFileSync(new URL(path, root), "utf8");
  } catch {
    return ""; // missing: out of date
  }
}

/** Each file and what it should hold. */
const readmeNow = read("README.md");
const readme = withOptionsTable(readmeNow, renderOptionsTable(HELP));
if (readme === null) {
  process.stderr.write(
    "README.md has no <!-- options:begin --> ... <!-- options:end --> markers\n",
  );
  process.exit(1);
}
const files = [
  ["man/vhost-device-i2c.1", renderManPage(HELP, version)],
  ["man/vi2c.1", renderManPage(VI2C_HELP, version)],
  ["README.md", readme],
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
