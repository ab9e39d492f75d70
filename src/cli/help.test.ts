// The help renderers: `--help` filled to a width without losing or splitting a word.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HELP } from "./args.js";
import { type HelpDocument, helpWidth, renderHelp } from "./help.js";

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

describe("--help filled to the terminal", () => {
  it("fits the daemon's help into 40, 60, 80 and 120 columns, every word kept in order", () => {
    checkHelpFills(HELP);
  });

  it("never splits a word: one longer than the width stands alone on its line", () => {
    const doc: HelpDocument = {
      ...HELP,
      options: [{ term: "--x", text: ["short", "a".repeat(50), "tail"] }],
      sections: [],
      examples: [{ command: 'prog -l "one two three" --long-option value', text: "quoted" }],
    };
    const text = renderHelp(doc, 40);
    assert.ok(text.split("\n").includes(`        ${"a".repeat(50)}`), text);
    assert.match(text, /^ {2}prog -l "one two three" \\$/m, "a quoted word stays whole");
  });

  it("is 80 columns wide unless stdout is a terminal, then the terminal's width", () => {
    assert.equal(helpWidth({ isTTY: true, columns: 132 }), 132);
    assert.equal(helpWidth({ isTTY: false, columns: 132 }), 80);
    assert.equal(helpWidth({}), 80);
    assert.equal(helpWidth({ isTTY: true, columns: 0 }), 80);
  });
});
