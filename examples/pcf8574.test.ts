// The example user chip (examples/pcf8574.ts) loaded from its config file (examples/pcf8574.json)
// by the real daemon, driven by a guest like the Linux driver, and steered over the control socket.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { after, it } from "node:test";
import { fileURLToPath } from "node:url";
import { ControlClient } from "../src/control/client.js";
import { ModelError, modelContext, SimBus, simTargets } from "../src/index.js";
import { transferOk, withGuest } from "../test/helpers/configured-daemon.js";
import { MAIN_JS, makeTempDir, WAIT_MS } from "../test/helpers/daemon.js";
import pcf8574 from "./pcf8574.js";

const dir = makeTempDir("vdi2c-example-");
after(() => dir.remove());

/** The config file as shipped, in the source tree (its module path points into dist/). */
const CONFIG = fileURLToPath(new URL("../../examples/pcf8574.json", import.meta.url));
const EXPANDER = 0x20;

it("serves the example PCF8574 from examples/pcf8574.json", async () => {
  const control = join(dir.path, "control.sock");
  await withGuest(dir.path, ["--config", CONFIG, "--control-socket", control], async (guest) => {
    // Options from the config: inputs 240 (0xf0): the low nibble is pulled low from outside.
    const [pins] = await transferOk(guest, [{ addr: EXPANDER, read: 1 }]);
    assert.deepEqual([...(pins ?? [])], [0xf0]);

    // The guest drives pins 4 and 5 low (latch 0xcf): they read low whatever the outside does.
    await transferOk(guest, [{ addr: EXPANDER, write: Uint8Array.of(0xcf) }]);
    const [after] = await transferOk(guest, [{ addr: EXPANDER, read: 1 }]);
    assert.deepEqual([...(after ?? [])], [0xc0]);

    // The operator changes what drives the pins; the guest sees it on its next read.
    const client = await ControlClient.connect(control);
    try {
      const set = await client.command(["set", "0x20", "inputs", "0xff"]);
      assert.equal(set.ok, true, JSON.stringify(set));
      const [now] = await transferOk(guest, [{ addr: EXPANDER, read: 1 }]);
      assert.deepEqual([...(now ?? [])], [0xcf]);
      const latch = await client.command(["get", "0x20", "latch"]);
      assert.ok(latch.ok && latch.payload === String(0xcf), JSON.stringify(latch));
      const bad = await client.command(["set", "0x20", "inputs", "256"]);
      assert.equal(bad.ok, false);
    } finally {
      client.close();
    }
  });
});

it("a copy of the config elsewhere fails to load the module (exit 2), and says which", () => {
  const copy = join(dir.path, "moved.json");
  copyFileSync(CONFIG, copy);
  const result = spawnSync(
    process.execPath,
    [MAIN_JS, "-s", join(dir.path, "x.sock"), "--config", copy],
    { encoding: "utf8", timeout: WAIT_MS },
  );
  assert.equal(result.status, 2, result.stderr);
  assert.match(
    result.stderr,
    /devices\[0\]: cannot load model module .*dist\/examples\/pcf8574\.js/,
  );
});

it("a fresh PCF8574 given the saved state reads as the saved one; a bad state is refused", () => {
  const create = () => pcf8574.create({ inputs: 0xf0 }, modelContext({ address: EXPANDER }));
  const saved = create();
  const fresh = create();
  const pins = (device: typeof saved) => {
    const read = { addr: EXPANDER, read: true, buf: new Uint8Array(1) };
    assert.equal(new SimBus(simTargets(new Map([[EXPANDER, device]]))).transfer([read]), 1);
    return read.buf[0];
  };
  const write = { addr: EXPANDER, read: false, buf: Uint8Array.of(0xcf) };
  assert.equal(new SimBus(simTargets(new Map([[EXPANDER, saved]]))).transfer([write]), 1);
  saved.properties?.inputs?.set?.("0x3c");
  assert.ok(saved.saveState);
  fresh.restoreState?.(JSON.parse(JSON.stringify(saved.saveState())));
  assert.equal(pins(fresh), pins(saved));
  assert.equal(pins(fresh), 0x0c);
  assert.throws(
    () => fresh.restoreState?.({ latch: 0x100, inputs: 0 }),
    (e: unknown) => e instanceof ModelError && e.code === "I2C_MODEL_BAD_STATE",
  );
  assert.equal(pins(fresh), 0x0c, "unchanged");
});
