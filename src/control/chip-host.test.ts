// The chips' side of the control socket: describeChips and answerChipRequest as plain data, and the
// same command lines answered alike in process and across a loopback that clones every message the
// way a worker's messages are (structuredClone).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { DeviceDirectory } from "../config/devices.js";
import { ChipFaults } from "../i2c/faults.js";
import { findModel, ModelError, modelContext, type SimDevice } from "../i2c/model.js";
import { silentLogger } from "../log.js";
import { answerChipRequest, describeChips, inProcessChips } from "./chip-host.js";
import { type ChipAccess, type ChipRequest, chipAccess } from "./chips.js";
import { handleLine } from "./server.js";

function lm75(): SimDevice {
  return findModel("lm75").create({ temperature: 21.5 }, modelContext({ address: 0x48 }));
}

function eeprom(): SimDevice {
  return findModel("24c02").create({}, modelContext({ address: 0x50 }));
}

/** A chip with a read-only property, one whose model fails, and memory read through a view. */
function oddChip(): SimDevice {
  const backing = new Uint8Array(4096);
  backing.set([1, 2, 3, 4], 100);
  return {
    targets: [],
    properties: {
      id: { description: "chip id", get: () => "odd" },
      broken: {
        description: "always fails",
        get: () => {
          throw new TypeError("model bug");
        },
        set: () => {
          throw new ModelError("I2C_MODEL_BAD_VALUE", "never");
        },
      },
    },
    memory: {
      size: 16,
      read: (offset, length) => backing.subarray(100 + offset, 100 + offset + length),
      write: () => {},
    },
  };
}

function directoryOf(...chips: [number, SimDevice, number[]][]): DeviceDirectory {
  return chips.map(([address, device, sockets]) => ({
    address,
    model: `model-${address.toString(16)}`,
    device,
    faults: new ChipFaults(address),
    key: `chip-${address.toString(16)}-${sockets.join(",")}`,
    sockets,
  }));
}

/** ChipAccess whose every directory, request and reply is cloned, as worker messages are. */
function clonedChips(source: () => DeviceDirectory): ChipAccess {
  return chipAccess({
    directory: () => structuredClone(describeChips(source())),
    request: async (request) =>
      structuredClone(answerChipRequest(source(), structuredClone(request))),
  });
}

describe("describeChips", () => {
  it("describes each chip as plain data: address, model, guests, properties, memory size", () => {
    const sensor = lm75();
    const [described] = describeChips(directoryOf([0x48, sensor, [0, 2]]));
    assert.ok(described);
    assert.deepEqual(structuredClone(described), described);
    assert.equal(described.address, 0x48);
    assert.equal(described.model, "model-48");
    assert.deepEqual(described.sockets, [0, 2]);
    assert.deepEqual(
      described.properties.map(({ name, writable }) => [name, writable]),
      [
        ["temperature", true],
        ["config", true],
        ["thyst", true],
        ["tos", true],
      ],
    );
    assert.match(described.properties[0]?.description ?? "", /measured temperature in °C/);
    assert.equal(described.memorySize, null);
    assert.equal(describeChips(directoryOf([0x50, eeprom(), [0]]))[0]?.memorySize, 256);
  });

  it("gives a chip the same id in every directory it is in, and another chip another id", () => {
    const kept = lm75();
    const before = describeChips(directoryOf([0x48, kept, [0]], [0x50, eeprom(), [0]]));
    const after = describeChips(directoryOf([0x49, lm75(), [0]], [0x48, kept, [1]]));
    assert.equal(after[1]?.id, before[0]?.id);
    const ids = new Set([...before, ...after].map((chip) => chip.id));
    assert.equal(ids.size, 3);
  });
});

describe("answerChipRequest", () => {
  const sensor = lm75();
  const odd = oddChip();
  const directory = directoryOf([0x48, sensor, [0]], [0x20, odd, [1]]);
  const [sensorId = "", oddId = ""] = describeChips(directory).map((chip) => chip.id);
  const ask = (request: ChipRequest) => answerChipRequest(directory, request);

  it("gets, sets and lists property values through the model", () => {
    assert.deepEqual(ask({ op: "get", chip: sensorId, name: "temperature" }), {
      op: "get",
      value: 21.5,
    });
    assert.deepEqual(ask({ op: "set", chip: sensorId, name: "temperature", value: "-5" }), {
      op: "set",
      value: -5,
    });
    const values = ask({ op: "values", chip: sensorId });
    assert.deepEqual(values, {
      op: "values",
      values: { temperature: -5, config: 0, thyst: 75, tos: 80 },
    });
  });

  it("answers the model's refusal EINVAL and its failure EMODEL, naming the operation", () => {
    assert.deepEqual(ask({ op: "set", chip: sensorId, name: "temperature", value: "400" }), {
      op: "failed",
      error: {
        code: "EINVAL",
        message: 'cannot set temperature: expected a number from -55 to 125, got "400"',
      },
    });
    assert.deepEqual(ask({ op: "get", chip: oddId, name: "broken" }), {
      op: "failed",
      error: { code: "EMODEL", message: "broken: model bug" },
    });
    assert.deepEqual(ask({ op: "values", chip: oddId }), {
      op: "failed",
      error: { code: "EMODEL", message: "broken.get: model bug" },
    });
  });

  it("checks the request against the chip itself: property, read-only, memory range", () => {
    assert.deepEqual(ask({ op: "get", chip: oddId, name: "nope" }), {
      op: "failed",
      error: { code: "ENOPROP", message: '1:0x20 has no property "nope" (known: id, broken)' },
    });
    assert.deepEqual(ask({ op: "set", chip: oddId, name: "id", value: "x" }), {
      op: "failed",
      error: { code: "EREADONLY", message: 'property "id" is read-only' },
    });
    assert.deepEqual(ask({ op: "read", chip: sensorId, offset: 0, length: 1 }), {
      op: "failed",
      error: { code: "ENOMEM", message: "0:0x48 has no memory" },
    });
    assert.deepEqual(ask({ op: "write", chip: oddId, offset: 15, data: Uint8Array.of(1, 2) }), {
      op: "failed",
      error: {
        code: "ERANGE",
        message: "2 byte(s) at offset 15 exceed the 16-byte memory of 1:0x20",
      },
    });
  });

  it("answers ENODEV for a chip that is no longer in the directory", () => {
    const gone = describeChips(directoryOf([0x48, lm75(), [0]]))[0]?.id ?? "";
    assert.deepEqual(ask({ op: "get", chip: gone, name: "temperature" }), {
      op: "failed",
      error: {
        code: "ENODEV",
        message: "the emulated device is gone (the configuration was reloaded)",
      },
    });
    assert.equal(ask({ op: "values", chip: "no such id" }).op, "failed");
  });

  it("replies read bytes in a buffer of their own, so a clone carries only them", () => {
    const reply = ask({ op: "read", chip: oddId, offset: 0, length: 4 });
    assert.equal(reply.op, "read");
    assert.ok(reply.op === "read");
    assert.deepEqual([...reply.bytes], [1, 2, 3, 4]);
    assert.equal(reply.bytes.buffer.byteLength, 4);
  });

  it("never throws: a fault of its own is a crashed reply", () => {
    const faulty = directoryOf([
      0x30,
      {
        targets: [],
        memory: { size: 4, read: () => "not bytes" as unknown as Uint8Array, write() {} },
      },
      [0],
    ]);
    const [chip] = describeChips(faulty);
    assert.deepEqual(
      answerChipRequest(faulty, { op: "read", chip: chip?.id ?? "", offset: 0, length: 1 }),
      {
        op: "crashed",
        reason: "the model's read returned no bytes",
      },
    );
  });
});

describe("chipAccess over a cloning loopback", () => {
  // Lines covering every command and every error a chip can cause.
  const lines = [
    "list",
    "get 0x48 temperature",
    "set 0x48 temperature 31.5",
    "get 0:0x48 tos",
    "set 0x48 temperature 400",
    "set 0x48 config x",
    "get 0x48 nope",
    "get 0x49 temperature",
    "get 0x20 broken",
    "set 0x20 id 1",
    "set 0x20 broken 1",
    "read 0x48 0 1",
    "write 0x50 0 0102030405",
    "read 0x50 0 8",
    "read 0x50 250 8",
    "read 0x20 0 4",
    '{"cmd":"get","addr":72,"property":"temperature"}',
    '{"cmd":"read","addr":80,"offset":0,"length":2}',
    '{"cmd":"set","addr":32,"property":"broken","value":"2"}',
    "fault 0x48 nack every=3",
    "fault 0:0x48 corrupt byte=1",
    '{"cmd":"fault","addr":"0x50","fault":"stall","ms":20,"count":1}',
    "faults",
    "fault 1:0x48 nack",
    "fault 0x48 explode",
    "fault 0x48 clear",
    "faults",
  ];

  it("answers every line exactly as the chips in process do", async () => {
    const build = () =>
      directoryOf([0x20, oddChip(), [1]], [0x48, lm75(), [0]], [0x50, eeprom(), [0]]);
    const local = build();
    const remote = build();
    const inProcess = inProcessChips(() => local);
    const cloned = clonedChips(() => remote);
    for (const line of lines) {
      const expected = await handleLine(inProcess, line, silentLogger);
      assert.equal(await handleLine(cloned, line, silentLogger), expected, line);
    }
    assert.equal(
      await handleLine(cloned, "set 0x20 broken 1", silentLogger),
      "error EINVAL cannot set broken: never\n",
    );
    assert.equal(await handleLine(cloned, "read 0x50 0 8", silentLogger), "ok 0102030405ffffff\n");
  });

  it("sets, lists and clears faults per guest: a bare address reaches every guest of the chip", async () => {
    const shared = lm75();
    const directory = directoryOf([0x48, shared, [0, 2]]);
    const chips = clonedChips(() => directory);
    const ask = async (line: string) => (await handleLine(chips, line, silentLogger)) ?? "";
    assert.equal(await ask("fault 0x48 nack every=3"), "ok nack every=3\n");
    assert.equal(await ask("fault 2:0x48 stall ms=5"), "ok stall ms=5\n");
    assert.deepEqual(JSON.parse((await ask("faults")).slice(3)), [
      {
        name: "0:0x48",
        guest: 0,
        model: "model-48",
        faults: [{ fault: "nack every=3", injected: 0, left: null }],
        injected: 0,
      },
      {
        name: "2:0x48",
        guest: 2,
        model: "model-48",
        faults: [
          { fault: "nack every=3", injected: 0, left: null },
          { fault: "stall ms=5", injected: 0, left: null },
        ],
        injected: 0,
      },
    ]);
    const faults = directory[0]?.faults;
    assert.equal(faults?.forGuest(2).list().length, 2, "the chip's own fault state changed");
    assert.equal(
      await ask("fault 1:0x48 nack"),
      "error ENODEV guest 1 has no emulated device at 0x48\n",
    );
    assert.match(await ask("fault 0x48 nack every=x"), /^error EUSAGE "every" must be an integer/);
    assert.equal(await ask("fault 2:0x48 clear"), "ok 2\n");
    assert.equal(await ask("fault 0x48 clear"), "ok 1\n");
    assert.equal(await ask("faults"), "ok []\n");
  });

  it("a reply that answers another operation is a fault, not a value", async () => {
    const directory = directoryOf([0x48, lm75(), [0]]);
    const confused = chipAccess({
      directory: () => describeChips(directory),
      request: async () => ({ op: "write" }),
    });
    const [chip] = await confused.directory();
    await assert.rejects(confused.getProperty(chip?.id ?? "", "temperature"), {
      message: 'a "get" request was answered "write"',
    });
  });
});
