// Integration: --scenario in the real daemon. The timeline starts at the first front-end connection,
// changes the LM75's temperature when it says, injects its fault, logs each step; a scenario that
// names a device or property the configuration does not have stops the daemon at start-up (exit 2).
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { MAIN_JS, makeTempDir, waitUntil, withDaemon } from "./helpers/daemon.js";
import { runToEnd } from "./helpers/run.js";

const dir = makeTempDir("vdi2c-scenario-");
after(() => dir.remove());

function scenarioFile(name: string, steps: unknown[]): string {
  const path = join(dir.path, name);
  writeFileSync(path, JSON.stringify({ steps }));
  return path;
}

/** The LM75's temperature register (°C, whole degrees) as the guest reads it; null on a NACK. */
async function guestTemperature(vm: I2cGuest): Promise<number | null> {
  const result = await vm.driver.transfer([
    { addr: 0x48, write: Uint8Array.of(0x00) },
    { addr: 0x48, read: 2 },
  ]);
  return result.ok ? (result.reads[0]?.[0] ?? null) : null;
}

describe("daemon --scenario", () => {
  it("plays a thermal event from the first connection: 85 °C at 0.6 s, then 2 NACKs at 1.2 s", async () => {
    const scenario = scenarioFile("thermal.json", [
      { at: 1.2, device: "0x48", fault: "nack", count: 2 },
      { at: 0.6, device: "0x48", set: { temperature: 85 } },
    ]);
    const socket = join(dir.path, "a.sock");
    await withDaemon(
      ["-s", socket, "-l", "sim:0x48=lm75", "--scenario", scenario],
      [`${socket}0`],
      async (daemon) => {
        // Nothing plays before the VMM connects.
        await new Promise((resolve) => setTimeout(resolve, 700));
        assert.doesNotMatch(daemon.stderr, /scenario started/);
        const vm = await I2cGuest.connect(`${socket}0`);
        const connectedAt = performance.now();
        try {
          assert.equal(await guestTemperature(vm), 25);
          // Poll the way a hwmon driver would, a bit faster.
          let hotAt = 0;
          while (hotAt === 0) {
            const reading = await guestTemperature(vm);
            if (reading === 85) hotAt = performance.now() - connectedAt;
            else assert.equal(reading, 25);
            await new Promise((resolve) => setTimeout(resolve, 10));
          }
          assert.ok(hotAt >= 550 && hotAt < 800, `85 °C after ${hotAt} ms`);
          const readings: (number | null)[] = [];
          await waitUntil(() => /scenario done/.test(daemon.stderr), "the scenario's end");
          for (let i = 0; i < 3; i++) readings.push(await guestTemperature(vm));
          assert.deepEqual(readings, [null, null, 85], "two NACKs, then the chip answers again");
        } finally {
          await vm.close();
        }
        assert.match(daemon.stderr, /scenario started .*steps=2/);
        assert.match(daemon.stderr, /\[scenario\] control set 0x48 temperature=85/);
        assert.match(
          daemon.stderr,
          /\[scenario\] scenario fault 0x48: nack count=2 step=2\/2 at=1\.2s/,
        );
      },
    );
  });

  it("refuses, before serving, a scenario naming a device or property the chips do not have", async () => {
    const socket = join(dir.path, "b.sock");
    for (const [steps, message] of [
      [[{ at: 1, device: "0x49", fault: "nack" }], /steps\[0\]: no emulated device at 0x49/],
      [[{ at: 1, device: "0x48", set: { heat: 1 } }], /steps\[0\]: 0x48 has no property "heat"/],
      [[{ at: "soon", device: "0x48", fault: "nack" }], /steps\[0\]\.at: expected seconds/],
    ] as const) {
      const path = scenarioFile("bad.json", [...steps]);
      const run = await runToEnd(process.execPath, [
        ...[MAIN_JS, "-s", socket, "-l", "sim:0x48=lm75", "--scenario", path],
      ]);
      assert.equal(run.status, 2, run.stderr);
      assert.match(run.stderr, message);
    }
  });
});
