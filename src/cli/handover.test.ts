import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeManifest, HandoverError } from "./handover.js";

const manifest = (extra: Record<string, unknown>) =>
  JSON.stringify({ version: 1, sockets: [], control: null, ...extra });
const decode = (text: string) =>
  decodeManifest(text, [], () => assert.fail("no connection in these manifests"));

describe("decodeManifest: the chips' saved states", () => {
  it("reads them by chip id; a manifest without them (an older predecessor) has none", () => {
    const chips = {
      "0:1": { key: 'default|[80,"24c02",{}]', model: "24c02", address: 80, state: { pointer: 3 } },
    };
    assert.deepEqual(decode(manifest({ chips })).chips, chips);
    assert.deepEqual(decode(manifest({})).chips, {});
  });

  it("refuses chips it cannot match to a chip (BAD_MANIFEST)", () => {
    const good = { key: "k", model: "lm75", address: 72, state: {} };
    for (const chips of [
      [],
      "chips",
      { "0:1": null },
      { "0:1": { ...good, key: 1 } },
      { "0:1": { ...good, address: "72" } },
      { "0:1": { key: "k", model: "lm75", address: 72 } },
    ]) {
      assert.throws(
        () => decode(manifest({ chips })),
        (e: unknown) => e instanceof HandoverError && e.code === "BAD_MANIFEST",
        JSON.stringify(chips),
      );
    }
  });
});
