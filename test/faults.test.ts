// Integration: fault injection in the real daemon, over its real sockets. A fault set on the control
// socket makes vi2c fail the way a NACKing chip does, shows in --trace and in stats, and touches
// neither the other chips on the bus nor the other guest; a configured fault acts from the start; a
// stall holds up only its own guest's transfer.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { ControlClient } from "../src/control/client.js";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { parseTraceLine } from "../src/trace/format.js";
import { FakeI2c, fakeUnavailableReason } from "./fake-i2c/fake.js";
import {
  type DaemonProcess,
  itWithDaemonLog,
  makeTempDir,
  startDaemon,
  waitUntil,
  withDaemon,
} from "./helpers/daemon.js";
import { runToEnd } from "./helpers/run.js";

const fakeSkip = fakeUnavailableReason() ?? false;
const VI2C_JS = fileURLToPath(new URL("../src/tools/vi2c.js", import.meta.url));

describe("daemon fault injection on two guests sharing an LM75 at 0x48 and a 24c02 at 0x50", () => {
  const dir = makeTempDir("vdi2c-faults-");
  const prefix = join(dir.path, "vi2c.sock");
  const control = join(dir.path, "control.sock");
  const config = join(dir.path, "devices.json");
  let daemon: DaemonProcess;
  let client: ControlClient;
  let guest1: I2cGuest;

  before(async () => {
    writeFileSync(
      config,
      JSON.stringify({
        devices: [
          { bus: "sim", address: "0x48", model: "lm75", options: { temperature: 25 } },
          {
            bus: "sim",
            address: "0x50",
            model: "24c02",
            options: { initial: "a0a1a2a3" },
            // Byte 1 of every read from the EEPROM comes back with its low bit flipped.
            faults: [{ fault: "corrupt", byte: 1, xor: 1 }],
            // The chip holds SCL 10 ms per transfer and 2 ms per byte.
            stretch: { usPerTransfer: 10_000, usPerByte: 2_000 },
          },
        ],
      }),
    );
    daemon = await startDaemon(
      [
        ...["-s", prefix, "--socket-count", "2", "--config", config],
        ...["--control-socket", control, "--trace"],
      ],
      [`${prefix}0`, `${prefix}1`, control],
    );
    client = await ControlClient.connect(control);
    guest1 = await I2cGuest.connect(`${prefix}1`);
  });

  after(async () => {
    client?.close();
    await guest1?.close();
    const status = await daemon?.stop();
    dir.remove();
    assert.deepEqual(status, { code: 0, signal: null });
  });
  const check = itWithDaemonLog(() => daemon);

  const vi2c = (...args: string[]) => runToEnd(process.execPath, [VI2C_JS, ...args]);
  const getTemperature = () => vi2c("get", "-y", `${prefix}0`, "0x48", "0x00");
  async function ok(line: string): Promise<string> {
    const reply = await client.request(line);
    assert.match(reply, /^ok( |$)/, `${line} -> ${reply}`);
    return reply.slice(3);
  }
  /** The trace lines of guest 0 so far that mention `text`. */
  const traced = (text: string) =>
    daemon.stdout
      .split("\n")
      .filter((line) => line.includes(text))
      .map(parseTraceLine);

  check("a NACK set on the control socket fails vi2c get once, traced and counted", async () => {
    assert.equal((await getTemperature()).stdout, "0x19\n", "25 °C before the fault");
    assert.equal(await ok("fault 0:0x48 nack count=1"), "nack count=1");
    const failed = await getTemperature();
    assert.deepEqual([failed.status, failed.stderr], [1, "Error: Read failed\n"]);
    assert.equal((await getTemperature()).stdout, "0x19\n", "answers again once the fault is used");
    await waitUntil(() => traced("[injected").length > 0, "the trace line of the fault");
    const [line] = traced("[injected 0x48");
    assert.equal(line?.result, "nack");
    assert.equal(line?.failedIndex, 0);
    assert.equal(line?.injected, "0x48: nack count=1");
    const stats = JSON.parse(await ok("stats")) as {
      guests: { guest: number; injectedFaults: number }[];
      devices: { address: string; injectedFaults: number; nacks: number }[];
    };
    const device = stats.devices.find((d) => d.address === "0x48");
    assert.deepEqual([device?.injectedFaults, device?.nacks], [1, 1]);
    assert.deepEqual(JSON.parse(await ok("faults")), [
      {
        name: "0:0x48",
        guest: 0,
        model: "lm75",
        faults: [],
        injected: 1,
      },
      {
        name: "0:0x50",
        guest: 0,
        model: "24c02",
        faults: [{ fault: "corrupt byte=1 xor=0x01", injected: 0, left: null }],
        injected: 0,
      },
      {
        name: "1:0x50",
        guest: 1,
        model: "24c02",
        faults: [{ fault: "corrupt byte=1 xor=0x01", injected: 0, left: null }],
        injected: 0,
      },
    ]);
  });

  check(
    "a disappeared chip NACKs guest 0 only; the other chip and guest 1 are untouched",
    async () => {
      await ok("fault 0:0x48 disappear");
      for (let i = 0; i < 3; i++) assert.equal((await getTemperature()).status, 1);
      const detect = await vi2c("detect", "-y", `${prefix}0`, "0x48", "0x50");
      assert.match(detect.stdout, /\n40: {25}-- /, "0x48 is gone for guest 0");
      assert.match(detect.stdout, /50: 50 /, "0x50 still answers");
      const other = await guest1.driver.transfer([
        { addr: 0x48, write: Uint8Array.of(0) },
        { addr: 0x48, read: 2 },
      ]);
      assert.deepEqual([other.ok, [...(other.reads[0] ?? [])]], [true, [0x19, 0x00]]);
      assert.equal(await ok("fault 0:0x48 clear"), "1");
      assert.equal((await getTemperature()).stdout, "0x19\n", "and it comes back");
    },
  );

  check(
    "a configured corruption acts from the start, on byte 1 of each read, stretched",
    async () => {
      const read = await vi2c("transfer", "-y", `${prefix}0`, "w1@0x50", "0x00", "r4");
      assert.equal(read.stdout, "0xa0 0xa0 0xa2 0xa3\n");
      await waitUntil(
        () => traced("[injected 0x50").length > 0,
        "the trace line of the corruption",
      );
      const [line] = traced("[injected 0x50");
      assert.equal(line?.injected, "0x50: corrupt byte=1 xor=0x01");
      // 10 ms for the transfer and 2 ms for each of its 5 bytes, give or take a timer's lateness.
      const ms = (line?.durationUs ?? 0) / 1000;
      assert.ok(ms >= 20 && ms < 40, `the stretched transfer took ${ms} ms`);
    },
  );

  check("a stall holds up only its own guest: guest 1 and the control socket go on", async () => {
    await ok("fault 0:0x48 stall ms=1500 count=1");
    const startedAt = performance.now();
    const stalled = getTemperature();
    // While guest 0's transfer stalls, guest 1 and the control socket are served.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const other = await guest1.driver.transfer([{ addr: 0x48, read: 2 }]);
    assert.equal(other.ok, true);
    assert.equal(await ok("get 0x48 temperature"), "25");
    assert.ok(
      performance.now() - startedAt < 1500,
      "guest 1 and control answered during the stall",
    );
    const done = await stalled;
    assert.equal(done.stdout, "0x19\n", "the stalled transfer completes, with its data");
    assert.ok(performance.now() - startedAt >= 1500, "after the stall");
    await waitUntil(() => traced("stall ms=1500").length > 0, "the trace line of the stall");
    const ms = (traced("stall ms=1500")[0]?.durationUs ?? 0) / 1000;
    assert.ok(ms >= 1500 && ms < 1530, `the stalled transfer took ${ms} ms`);
  });
});

describe("configured faults on a host adapter's device (LD_PRELOAD fake)", {
  skip: fakeSkip,
}, () => {
  const dir = makeTempDir("vdi2c-host-faults-");
  let fake: FakeI2c;
  before(async () => {
    fake = await FakeI2c.create("adapter 3 funcs=i2c\ndevice 3 0x50\n");
  });
  after(async () => {
    await fake?.cleanup();
    dir.remove();
  });

  it("NACKs every 2nd transfer to 0x50 before it reaches the adapter, and traces it", async () => {
    const config = join(dir.path, "host.json");
    writeFileSync(
      config,
      JSON.stringify({
        devices: [{ bus: 3, address: "0x50", faults: [{ fault: "nack", every: 2 }] }],
      }),
    );
    const prefix = join(dir.path, "host.sock");
    await withDaemon(
      ["-s", prefix, "--config", config, "--trace"],
      [`${prefix}0`],
      async (daemon) => {
        await fake.clearLog();
        const vm = await I2cGuest.connect(`${prefix}0`);
        try {
          const results: boolean[] = [];
          for (let i = 0; i < 4; i++) {
            results.push((await vm.driver.transfer([{ addr: 0x50, read: 1 }])).ok);
          }
          assert.deepEqual(results, [true, false, true, false]);
        } finally {
          await vm.close();
        }
        const reads = (await fake.readLog()).filter((e) => e.op === "rdwr");
        assert.equal(reads.length, 2, "the NACKed transfers never reached the adapter");
        await waitUntil(
          () => daemon.stdout.includes("[injected 0x50: nack every=2]"),
          "the trace line of the fault",
        );
      },
      { env: fake.env({}) },
    );
  });
});
