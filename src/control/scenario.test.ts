import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ChipFaults } from "../i2c/faults.js";
import { findModel, modelContext } from "../i2c/model.js";
import { createLogger } from "../log.js";
import { describeChips, inProcessChips } from "./chip-host.js";
import { checkScenario, parseScenario, scenarioPlayer } from "./scenario.js";

const FILE = "/etc/scenario.json";
const parse = (json: unknown) => parseScenario(JSON.stringify(json), FILE);

function refused(json: unknown, message: string): void {
  assert.throws(
    () => parse(json),
    (e: unknown) =>
      e instanceof Error && "code" in e && e.code === "CONFIG_INVALID" && e.message === message,
  );
}

/** One LM75 at 0x48 seen by guest 0. */
function lm75Directory() {
  const device = findModel("lm75").create({ temperature: 25 }, modelContext({ address: 0x48 }));
  return [
    { address: 0x48, model: "lm75", device, faults: new ChipFaults(0x48), key: "k", sockets: [0] },
  ];
}

describe("parseScenario", () => {
  it("turns each step into control commands, in time order (file order for equal times)", () => {
    const steps = parse({
      steps: [
        { at: 3, device: "0x48", fault: "nack", count: 3 },
        { at: 2, device: "0x48", set: { temperature: 85, tos: 90 } },
        { at: 3, device: "1:0x48", fault: "clear" },
      ],
    });
    assert.deepEqual(
      steps.map((s) => [s.atMs, s.where, s.command]),
      [
        [2000, "steps[1]", { cmd: "set", addr: 0x48, property: "temperature", value: "85" }],
        [2000, "steps[1]", { cmd: "set", addr: 0x48, property: "tos", value: "90" }],
        [3000, "steps[0]", { cmd: "fault", addr: 0x48, fault: { fault: "nack", count: 3 } }],
        [3000, "steps[2]", { cmd: "fault", guest: 1, addr: 0x48, fault: "clear" }],
      ],
    );
  });

  it("refuses a bad step, naming the file, the step and what it expected", () => {
    refused({ step: [] }, `${FILE}: step: unknown key (expected steps)`);
    refused(
      { steps: [{ device: "0x48", set: {} }] },
      `${FILE}: steps[0].at: expected seconds 0..86400, found nothing`,
    );
    refused(
      { steps: [{ at: 1, device: "0x48" }] },
      `${FILE}: steps[0]: expected exactly one of "set" or "fault", found neither`,
    );
    refused(
      { steps: [{ at: 1, device: "0x48", fault: "nack", every: 0 }] },
      `${FILE}: steps[0]: "every" must be an integer 1..2147483648, not "0"; usage: fault <addr> <kind> [<key>=<value>...] | fault <addr> clear`,
    );
    refused(
      { steps: [{ at: 1, device: "0x4g", set: { temperature: 1 } }] },
      `${FILE}: steps[0]: address "0x4g" is not a number; usage: set <addr> <property> <value>`,
    );
    assert.throws(() => parseScenario("{", FILE), { code: "CONFIG_BAD_JSON" });
  });
});

describe("checkScenario", () => {
  it("refuses a device nobody has and a property the chip does not have", () => {
    const directory = describeChips(lm75Directory());
    checkScenario(
      parse({ steps: [{ at: 0, device: "0x48", set: { temperature: 85 } }] }),
      directory,
      FILE,
    );
    assert.throws(
      () =>
        checkScenario(
          parse({ steps: [{ at: 0, device: "0x49", fault: "nack" }] }),
          directory,
          FILE,
        ),
      { message: `${FILE}: steps[0]: no emulated device at 0x49` },
    );
    assert.throws(
      () =>
        checkScenario(
          parse({ steps: [{ at: 0, device: "0x48", set: { temp: 1 } }] }),
          directory,
          FILE,
        ),
      /steps\[0\]: 0x48 has no property "temp"/,
    );
  });
});

describe("scenarioPlayer", () => {
  it("plays each step at its time from start(), and logs a step the model refuses", async () => {
    const directory = lm75Directory();
    const chips = inProcessChips(() => directory);
    const lines: string[] = [];
    const logger = createLogger("info", { write: (line: string) => lines.push(line) });
    const steps = parse({
      steps: [
        { at: 0.05, device: "0x48", set: { temperature: 85 } },
        { at: 0.1, device: "0x48", set: { temperature: 1000 } },
        { at: 0.1, device: "0x48", fault: "nack", count: 1 },
      ],
    });
    const player = scenarioPlayer(steps, chips, logger, FILE);
    await new Promise((resolve) => setTimeout(resolve, 80));
    assert.equal(
      await chips.getProperty(describeChips(directory)[0]?.id ?? "", "temperature"),
      25,
      "nothing before start",
    );
    const startedAt = performance.now();
    player.start();
    await player.done;
    assert.ok(performance.now() - startedAt >= 100);
    assert.equal(await chips.getProperty(describeChips(directory)[0]?.id ?? "", "temperature"), 85);
    assert.deepEqual(directory[0]?.faults.forGuest(0).list(), [
      { fault: "nack count=1", injected: 0, left: 1 },
    ]);
    assert.ok(
      lines.some((line) => /scenario step failed: cannot set temperature/.test(line)),
      lines.join("\n"),
    );
    assert.ok(lines.some((line) => /scenario done/.test(line)));
  });
});
