// The help renderers: `--help` filled to a width without losing or splitting a word.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { checkHelpFills } from "../../test/helpers/help-check.js";
import { HELP } from "./args.js";
import { type HelpDocument, helpWidth, renderHelp } from "./help.js";

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
