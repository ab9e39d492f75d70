// Control `stats`: answered from the stats source the server is given, ENOSTATS without one.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { DeviceDirectory } from "../config/devices.js";
import { silentLogger } from "../log.js";
import { inProcessChips } from "./chip-host.js";
import { parseLine } from "./protocol.js";
import { handleLine } from "./server.js";

const noDevices = inProcessChips((): DeviceDirectory => []);

describe("control stats", () => {
  it("parses as a command without arguments, in text and JSON", () => {
    assert.deepEqual(parseLine("stats")?.command, { cmd: "stats" });
    assert.deepEqual(parseLine('{"cmd":"stats"}')?.command, { cmd: "stats" });
    const extra = parseLine("stats now")?.command;
    assert.ok(extra instanceof Error && "code" in extra && extra.code === "EUSAGE");
  });

  it("replies with the source's snapshot as one JSON line, taken at each request", async () => {
    let transfers = 0;
    const source = () => ({ guests: [{ guest: 0, transfers }] });
    transfers = 3;
    assert.equal(
      await handleLine(noDevices, "stats", silentLogger, source),
      'ok {"guests":[{"guest":0,"transfers":3}]}\n',
    );
    transfers = 4;
    assert.equal(
      await handleLine(noDevices, '{"cmd":"stats"}', silentLogger, source),
      '{"ok":true,"result":{"guests":[{"guest":0,"transfers":4}]}}\n',
    );
  });

  it("answers ENOSTATS when the daemon keeps no counters", async () => {
    assert.match((await handleLine(noDevices, "stats", silentLogger)) ?? "", /^error ENOSTATS /);
  });
});
