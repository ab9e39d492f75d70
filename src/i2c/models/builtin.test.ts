import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { builtinModels, findModel, MODEL_NAMES, modelContext } from "../model.js";

const ADDRESS = 0x50;

describe("built-in models", () => {
  it("have unique names, each found by name", () => {
    assert.equal(new Set(MODEL_NAMES).size, builtinModels.length);
    for (const name of MODEL_NAMES) assert.equal(findModel(name).name, name);
  });

  for (const definition of builtinModels) {
    it(`${definition.name}: defaults create a chip whose properties read and whose state survives JSON`, () => {
      const create = () => definition.create({}, modelContext({ address: ADDRESS }));
      const device = create();
      assert.ok(device.targets.length > 0);
      for (const [key, property] of Object.entries(device.properties ?? {})) {
        assert.ok(
          ["number", "string", "boolean"].includes(typeof property.get()),
          `${definition.name}.${key}`,
        );
      }
      if (device.saveState) {
        const state = JSON.parse(JSON.stringify(device.saveState()));
        const successor = create();
        assert.ok(successor.restoreState, `${definition.name} saves but cannot restore`);
        successor.restoreState(state);
        assert.deepEqual(JSON.parse(JSON.stringify(successor.saveState?.())), state);
      }
      device.close?.();
    });
  }
});
