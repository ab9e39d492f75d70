/**
 * README's model table ("models", between its markers), rendered from model definitions: name,
 * Linux driver, description and option names from each ModelDefinition, and the tests that prove
 * the model, which the caller gives (test/helpers/model-proofs.ts). scripts/man.mjs writes it;
 * test/docs.test.ts checks it. Documentation only, so it lives beside the tests, not in the package.
 * Must not hold any model's data.
 * @module
 */

import { markdownCell, markdownTable } from "../../src/cli/help.js";
import type { ModelDefinition } from "../../src/i2c/model.js";

/** A test that proves a model: a test file (from the repository's root) and, in it, one test. */
export interface ModelProof {
  readonly file: string;
  /** The start of the test's name (`it("...")`), when the file's other tests do not use the model. */
  readonly test?: string;
}

/** `[subsystem ]module` as "subsystem `module`"; no driver: the guest reaches it through i2c-dev. */
function driverCell(linuxDriver: string | undefined): string {
  if (linuxDriver === undefined) return "(none; `i2c-dev`)";
  const words = linuxDriver.split(" ");
  const module = words.pop() ?? "";
  return [...words.map(markdownCell), `\`${module}\``].join(" ");
}

/**
 * Links to the test files, each named by its path under src/i2c/models/ or test/ and followed by
 * the names of its tests that prove the model (a file once, in the order of its first proof).
 */
function proofsCell(proofs: readonly ModelProof[]): string {
  const tests = new Map<string, string[]>();
  for (const { file, test } of proofs) {
    const names = tests.get(file) ?? [];
    if (test !== undefined) names.push(`"${markdownCell(test)}"`);
    tests.set(file, names);
  }
  return [...tests]
    .map(([file, names]) => {
      const link = `[${markdownCell(file.replace(/^(?:src\/i2c\/models|test)\//, ""))}](${file})`;
      return names.length === 0 ? link : `${link} ${names.join(", ")}`;
    })
    .join("; ");
}

/** The table: one row per model in `models`' order, its proofs from `proofs` (none: empty cell). */
export function renderModelTable(
  models: readonly ModelDefinition[],
  proofs: (name: string) => readonly ModelProof[],
): string {
  return markdownTable([
    ["Model", "Linux driver", "What it is", "Options", "Proven by"],
    ...models.map((model) => [
      `\`${model.name}\``,
      driverCell(model.linuxDriver),
      markdownCell(model.description),
      Object.keys(model.options?.properties ?? {})
        .map((option) => `\`${option}\``)
        .join(", "),
      proofsCell(proofs(model.name)),
    ]),
  ]);
}
