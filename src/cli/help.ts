/**
 * A program's help as data ({@link HelpDocument}) and its renderings: `--help` text filled to a
 * terminal's width ({@link renderHelp}), the man page in roff ({@link renderManPage}) and the
 * README's options table in Markdown ({@link renderOptionsTable}). The daemon's HELP (args.ts) and
 * vi2c's (src/tools/args.ts) are such documents; scripts/man.mjs writes the files. Must not hold any
 * program's help text.
 * @module
 */

/**
 * A definition: a term (an option with its argument, a placeholder, a command) and its text. The
 * text lines are one paragraph: renderers join and refill them.
 */
export interface HelpTerm {
  readonly term: string;
  readonly text: readonly string[];
  /** More of the same paragraph for the man page and the README, left out of `--help`. */
  readonly details?: readonly string[];
}

/** A titled part of the help: paragraphs (consecutive text lines form one) and definitions, in order. */
export interface HelpSection {
  readonly title: string;
  readonly body: readonly (string | HelpTerm)[];
}

export interface HelpExample {
  readonly command: string;
  readonly text: string;
}

/** The whole help, as data: `--help` (renderHelp) and the man page (scripts/man.mjs) render it. */
export interface HelpDocument {
  readonly name: string;
  /** One line: what the program is (the man page's NAME). */
  readonly summary: string;
  readonly synopsis: readonly string[];
  /** One paragraph. */
  readonly description: readonly string[];
  readonly options: readonly HelpTerm[];
  readonly sections: readonly HelpSection[];
  readonly examples: readonly HelpExample[];
  /** The man page's SEE ALSO: other pages, as `name(section)`. */
  readonly seeAlso: readonly string[];
}

export const term = (name: string, ...text: string[]): HelpTerm => ({ term: name, text });

/** `entry` with details for the man page and the README. */
export const detailed = (entry: HelpTerm, ...details: string[]): HelpTerm => ({
  ...entry,
  details,
});

/** The long form of a term's text: its text, then its details as the next sentences. */
function longText(entry: HelpTerm): readonly string[] {
  const { text, details = [] } = entry;
  if (details.length === 0) return text;
  const last = text.at(-1) ?? "";
  return [...text.slice(0, -1), /[.!?]$/.test(last) ? last : `${last}.`, ...details];
}

/** `--help`'s width when stdout is not a terminal. */
export const DEFAULT_HELP_WIDTH = 80;

/** Columns of `stream` when it is a terminal, else {@link DEFAULT_HELP_WIDTH}. */
export function helpWidth(stream: { readonly isTTY?: boolean; readonly columns?: number }): number {
  const columns = stream.isTTY ? stream.columns : undefined;
  return columns !== undefined && columns > 0 ? columns : DEFAULT_HELP_WIDTH;
}

/** Column where option and definition texts start in `--help`, when the width leaves room. */
const TERM_COLUMN = 31;
/** Narrowest text beside the terms; narrower widths put each text under its term. */
const MIN_TEXT_WIDTH = 36;
/** Indent of texts under their terms, and of continuation lines. */
const HANGING_INDENT = "        ";

/** Words of prose: runs of non-blanks. */
function proseWords(lines: readonly string[]): string[] {
  return lines.join(" ").split(/\s+/).filter(Boolean);
}

/** Words of a shell command: a quoted string with what touches it is one word, never split. */
function commandWords(command: string): string[] {
  return [...command.matchAll(/(?:"[^"]*"|'[^']*'|[^\s"'])+/g)].map((match) => match[0]);
}

/**
 * Fills `words` into lines at most `width` columns wide: the first starts with `first`, the others
 * with `rest`; `breakMark` ends every line but the last (" \\" continues a shell command). Words
 * are never split: one longer than a line stands on its own and overflows by itself.
 */
export function fillWords(
  words: readonly string[],
  width: number,
  first: string,
  rest: string,
  breakMark = "",
): string[] {
  const lines: string[] = [];
  let line = first;
  let empty = true;
  for (const word of words) {
    if (!empty && line.length + 1 + word.length + breakMark.length > width) {
      lines.push(`${line}${breakMark}`);
      line = rest;
      empty = true;
    }
    line = empty ? `${line}${word}` : `${line} ${word}`;
    empty = false;
  }
  lines.push(line);
  return lines;
}

function renderTerm(entry: HelpTerm, indent: string, width: number): string[] {
  const heads = fillWords(proseWords([entry.term]), width, indent, `${indent}    `);
  const words = proseWords(entry.text);
  const [head = indent] = heads;
  if (width - TERM_COLUMN < MIN_TEXT_WIDTH) {
    return [...heads, ...fillWords(words, width, HANGING_INDENT, HANGING_INDENT)];
  }
  const pad = " ".repeat(TERM_COLUMN);
  if (heads.length === 1 && head.length < TERM_COLUMN - 1) {
    return fillWords(words, width, head.padEnd(TERM_COLUMN), pad);
  }
  return [...heads, ...fillWords(words, width, pad, pad)];
}

/** Consecutive text lines as paragraphs, definitions in between. */
function paragraphs(body: readonly (string | HelpTerm)[]): (string[] | HelpTerm)[] {
  const parts: (string[] | HelpTerm)[] = [];
  for (const part of body) {
    const last = parts.at(-1);
    if (typeof part !== "string") parts.push(part);
    else if (Array.isArray(last)) last.push(part);
    else parts.push([part]);
  }
  return parts;
}

/** `--help`: the document as plain text, filled to `width` columns (words are never split). */
export function renderHelp(doc: HelpDocument, width = DEFAULT_HELP_WIDTH): string {
  const out: string[] = [];
  doc.synopsis.forEach((line, i) => {
    const first = i === 0 ? "Usage: " : "       ";
    out.push(...fillWords(proseWords([line]), width, first, `       ${HANGING_INDENT}`));
  });
  out.push("", ...fillWords(proseWords(doc.description), width, "", ""), "", "Options:");
  for (const option of doc.options) {
    out.push(...renderTerm(option, option.term.startsWith("--") ? "      " : "  ", width));
  }
  for (const section of doc.sections) {
    out.push("", `${section.title}:`);
    for (const part of paragraphs(section.body)) {
      out.push(
        ...(Array.isArray(part)
          ? fillWords(proseWords(part), width, "", "")
          : renderTerm(part, "  ", width)),
      );
    }
  }
  out.push("", "Examples:");
  for (const example of doc.examples) {
    out.push(
      ...fillWords(commandWords(example.command), width, "  ", `  ${HANGING_INDENT}`, " \\"),
      ...fillWords(proseWords([example.text]), width, "      ", "      "),
    );
  }
  return `${out.join("\n")}\n`;
}

// ------------------------------------------------------------------------------------------------
// The man page (roff)

/** Escapes text for roff: backslashes, hyphens (so they stay ASCII), and leading control dots. */
function roff(text: string): string {
  return text
    .replaceAll("\\", "\\e")
    .replaceAll("-", "\\-")
    .replace(/^(['.])/, "\\&$1");
}

/** A term: options and placeholders in bold. */
function roffBold(text: string): string {
  return `\\fB${roff(text)}\\fR`;
}

/** A definition in roff: the term, its text and its details (the man page is the long form). */
function roffTerm(entry: HelpTerm): string[] {
  return [".TP", roffBold(entry.term), ...longText(entry).map(roff)];
}

/** The man page (section 1) of `doc`, for the program's `version`. */
export function renderManPage(doc: HelpDocument, version: string): string {
  const out = [
    `.TH ${doc.name.toUpperCase()} 1 "" "${doc.name} ${version}" "User Commands"`,
    ".SH NAME",
    `${roff(doc.name)} \\- ${roff(doc.summary)}`,
    ".SH SYNOPSIS",
  ];
  for (const line of doc.synopsis) out.push(".nf", roffBold(line), ".fi");
  out.push(".SH DESCRIPTION", ...doc.description.map(roff), ".SH OPTIONS");
  for (const option of doc.options) out.push(...roffTerm(option));
  for (const section of doc.sections) {
    out.push(`.SH ${roff(section.title.toUpperCase())}`);
    let inList = false;
    for (const part of section.body) {
      if (typeof part === "string") {
        if (inList) out.push(".PP");
        inList = false;
        out.push(roff(part));
      } else {
        inList = true;
        out.push(...roffTerm(part));
      }
    }
  }
  out.push(".SH EXAMPLES");
  for (const example of doc.examples) {
    out.push(".PP", ".nf", ".RS 4", roff(example.command), ".RE", ".fi", roff(example.text));
  }
  const pages = doc.seeAlso.map((page) => page.replace(/^([^(]+)/, (name) => roffBold(name)));
  out.push(".SH SEE ALSO", pages.join(", "));
  return `${out.join("\n")}\n`;
}

// ------------------------------------------------------------------------------------------------
// README's tables (Markdown)

/** A table README.md keeps between `<!-- NAME:begin -->` and `<!-- NAME:end -->`. */
export type ReadmeTable = "options" | "models";

const tableMarkers = (name: ReadmeTable) =>
  [`<!-- ${name}:begin -->`, `<!-- ${name}:end -->`] as const;

/** Escapes text for a Markdown table cell: nothing in it is markup, a pipe does not end the cell. */
export function markdownCell(text: string): string {
  return text.replace(/[\\`*<|]/g, "\\$&");
}

/**
 * `rows` (the first is the header) as a Markdown table with columns padded as Biome formats one.
 * Cells are Markdown already (see markdownCell).
 */
export function markdownTable(rows: readonly (readonly string[])[]): string {
  const columns = rows[0]?.length ?? 0;
  const widths = Array.from({ length: columns }, (_, column) =>
    Math.max(3, ...rows.map((row) => (row[column] ?? "").length)),
  );
  const line = (cells: readonly string[]) =>
    `| ${widths.map((width, i) => (cells[i] ?? "").padEnd(width)).join(" | ")} |`;
  const [header = [], ...body] = rows;
  return [line(header), line(widths.map((width) => "-".repeat(width))), ...body.map(line)].join(
    "\n",
  );
}

/** The options as a Markdown table (option, then its text and details): README's "options" table. */
export function renderOptionsTable(doc: HelpDocument): string {
  return markdownTable([
    ["Option", "Meaning"],
    ...doc.options.map((option) => [
      `\`${option.term.replaceAll("|", "\\|")}\``,
      markdownCell(proseWords(longText(option)).join(" ")),
    ]),
  ]);
}

/** Where table `name` lies in `readme`: from the end of its begin marker to its end marker. */
function tableSpan(readme: string, name: ReadmeTable): { begin: number; end: number } | null {
  const [beginMarker, endMarker] = tableMarkers(name);
  const marker = readme.indexOf(beginMarker);
  const end = readme.indexOf(endMarker);
  return marker < 0 || end < marker ? null : { begin: marker + beginMarker.length, end };
}

/** Table `name` in `readme`, or null when a marker is missing. */
export function readmeTable(readme: string, name: ReadmeTable): string | null {
  const span = tableSpan(readme, name);
  return span && readme.slice(span.begin, span.end).trim();
}

/** `readme` with table `name` replaced by `table`; null when a marker is missing. */
export function withReadmeTable(readme: string, name: ReadmeTable, table: string): string | null {
  const span = tableSpan(readme, name);
  return span && `${readme.slice(0, span.begin)}\n\n${table}\n\n${readme.slice(span.end)}`;
}
