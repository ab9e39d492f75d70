/**
 * Real guest, real daemon: the example user model (examples/pcf8574.ts, a model module written only
 * against the package's API) is bound by Linux's own gpio-pcf857x driver and used through its GPIO
 * lines, with the driver kit, as docs/MODELS.md shows a model author. The pins the host drives
 * (`inputs`, set over the control socket at a step) show in the guest; the line the guest drives
 * low shows in the chip's latch on the host, and the driver's shutdown releases every line. One
 * guest boot. Skips by name without QEMU or a built guest image (guest/build.sh). Must not reach
 * into the daemon's modules.
 */

import assert from "node:assert/strict";
import { it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  applyChanges,
  assertBound,
  assertNear,
  assertStepsDone,
  bindLines,
  bootWithChips,
  type Chip,
} from "./driver-kit.js";
import {
  describeOrSkip,
  guestSuite,
  stopDaemonCleanly,
  TEST_TIMEOUT_MS,
  withGuestBench,
} from "./harness.js";

const { skip, images } = guestSuite();

/** The example's compiled module, beside this file's under dist/. */
const EXAMPLE_MODULE = fileURLToPath(new URL("../../examples/pcf8574.js", import.meta.url));

const EXPANDER: Chip = {
  model: "pcf8574", // also the name new_device takes: an id in gpio-pcf857x's table
  module: EXAMPLE_MODULE,
  address: "0x20",
  driver: "pcf857x",
  options: { inputs: 0xf0 },
  change: { inputs: 0x3c },
};

describeOrSkip(
  "a user model module under its upstream Linux driver",
  { skip, timeout: TEST_TIMEOUT_MS },
  () => {
    it("examples/pcf8574.ts: gpio-pcf857x binds; its lines follow the host's inputs; the guest's output reaches the latch", async (t) => {
      await withGuestBench(images, async (bench) => {
        let atStep = { latch: "", pins: "" };
        const booted = await bootWithChips(
          bench,
          t,
          [EXPANDER],
          [
            ...bindLines([EXPANDER]),
            'echo "RESULT a.pins $(gpio_pins 0x20 8)"',
            // Line 4 an output, driven low: a 0 in the latch pulls the pin low whatever drives it.
            "gpio_out 0x20 4 low",
            'echo "RESULT a.out.pins $(gpio_pins 0x20 8)"',
            "step 1",
            'echo "RESULT b.pins $(gpio_pins 0x20 8)"',
          ],
          async (steps) => {
            await steps.at(1, async () => {
              atStep = {
                latch: await steps.get("0x20", "latch"),
                pins: await steps.get("0x20", "pins"),
              };
              await applyChanges(steps, [EXPANDER]);
            });
          },
        );
        if (!booted) return;
        const { run, daemon, steps } = booted;
        assertBound(run, { "0x20": "pcf857x" });
        assertStepsDone(run, 1);
        assertNear(run, "a.pins", 0xf0, 0);
        assertNear(run, "a.out.pins", 0xf0 & 0xef, 0);
        assert.deepEqual(atStep, { latch: String(0xef), pins: String(0xf0 & 0xef) });
        assertNear(run, "b.pins", 0x3c & 0xef, 0);
        // The guest powered off: the driver's shutdown drove every line high (latch 0xff).
        assert.equal(await steps.get("0x20", "latch"), String(0xff));
        assert.equal(await steps.get("0x20", "pins"), String(0x3c));
        await stopDaemonCleanly(daemon);
      });
    });
  },
);
