/**
 * Checks on a rendered help (src/cli/help.ts): filled to a width without losing, reordering or
 * splitting a word. Shared by the daemon's and vi2c's help tests.
 * @module
 */
import assert from "node:assert/strict";
import { type HelpDocument, renderHelp } from "../../src/cli/help.js";

const words = (text: string): string[] => text.split(/\s+/).filter(Boolean);

/** Every word of the document in reading order, with the headings `--help` adds. */
function documentWords(doc: HelpDocument): string[] {
  const out = ["Usage:", ...doc.synopsis.flatMap(words), ...doc.description.flatMap(words)];
  out.push("Options:");
  for (const option of doc.options) out.push(...words(option.term), ...option.text.flatMap(words));
  for (const section of doc.sections) {
    out.push(...words(`${section.title}:`));
    for (const part of section.body) {
      if (typeof part === "string") out.push(...words(part));
      else out.push(...words(part.term), ...part.text.flatMap(words));
    }
  }
  out.push("Examples:");
  for (const example of doc.examples) out.push(...words(example.command), ...words(example.text));
  return out;
}

/** Shell words of a line: a quoted string is one (examples never break inside one). */
const shellWords = (line: string): string[] => line.match(/(?:"[^"]*"|[^\s"])+/g) ?? [];

/** Lines wider than `width` that hold more than one word (only a lone long word may overflow). */
function overfullLines(text: string, width: number): string[] {
  return text
    .split("\n")
    .filter((line) => line.length > width && shellWords(line.replace(/ \\$/, "")).length > 1);
}

/**
 * Asserts that `--help` fits 40, 60, 80 and 120 columns (only a lone word too long for a line
 * overflows, alone) and keeps every word of the document in order; 80 columns by default.
 */
export function checkHelpFills(doc: HelpDocument): void {
  for (const width of [40, 60, 80, 120]) {
    const text = renderHelp(doc, width);
    assert.deepEqual(overfullLines(text, width), [], `width ${width}`);
    const rendered = words(text).filter((word) => word !== "\\");
    assert.deepEqual(rendered, documentWords(doc), `width ${width}: every word, in order`);
  }
  assert.ok(
    renderHelp(doc)
      .split("\n")
      .every((line) => line.length <= 80),
    "80 columns by default, no word too long for them",
  );
}
