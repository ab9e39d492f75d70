#!/usr/bin/env node
// Renders the man page man/vhost-device-i2c.1 (roff) from the same help data as `--help` (HELP in
// src/cli/args.ts, compiled into dist/). `--check`: exit 1 when the committed page is out of date;
// `--stdout`: print instead of writing. Must not hold any help text of its own.
import { readFileSync, writeFileSync } from "node:fs";

const root = new URL("../", import.meta.url);
const { HELP } = await import(new URL("dist/src/cli/args.js", root).href);
const version = JSON.parse(readFileSync(new URL("package.json", root), "utf8")).version;
const target = new URL("man/vhost-device-i2c.1", root);

/** Escapes text for roff: backslashes, hyphens (so they stay ASCII), and leading control dots. */
function esc(text) {
  return text
    .replaceAll("\\", "\\e")
    .replaceAll("-", "\\-")
    .replace(/^(['.])/, "\\&$1");
}

/** A term: options and placeholders in bold. */
function bold(text) {
  return `\\fB${esc(text)}\\fR`;
}

function render(help) {
  const out = [
    `.TH ${help.name.toUpperCase()} 1 "" "${help.name} ${version}" "User Commands"`,
    ".SH NAME",
    `${esc(help.name)} \\- ${esc(help.summary)}`,
    ".SH SYNOPSIS",
  ];
  for (const line of help.synopsis) out.push(".nf", bold(line), ".fi");
  out.push(".SH DESCRIPTION", ...help.description.map(esc), ".SH OPTIONS");
  for (const option of help.options) out.push(".TP", bold(option.term), ...option.text.map(esc));
  for (const section of help.sections) {
    out.push(`.SH ${esc(section.title.toUpperCase())}`);
    let inList = false;
    for (const part of section.body) {
      if (typeof part === "string") {
        if (inList) out.push(".PP");
        inList = false;
        out.push(esc(part));
      } else {
        inList = true;
        out.push(".TP", bold(part.term), ...part.text.map(esc));
      }
    }
  }
  out.push(".SH EXAMPLES");
  for (const example of help.examples) {
    out.push(".PP", ".nf", `.RS 4`, esc(example.command), ".RE", ".fi", esc(example.text));
  }
  out.push(".SH SEE ALSO", "\\fBvi2c\\fR(1), \\fBi2ctransfer\\fR(8), \\fBsystemd.socket\\fR(5)");
  return `${out.join("\n")}\n`;
}

const page = render(HELP);
const mode = process.argv[2];
if (mode === "--stdout") {
  process.stdout.write(page);
} else if (mode === "--check") {
  let current = "";
  try {
    current = readFileSync(target, "utf8");
  } catch {
    // missing: out of date
  }
  if (current !== page) {
    process.stderr.write("man/vhost-device-i2c.1 is out of date: run `npm run man`\n");
    process.exit(1);
  }
} else {
  writeFileSync(target, page);
}
