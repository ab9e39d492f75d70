import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NO_WRITE_CYCLE } from "../../test/helpers/eeprom.js";
import { r, w } from "../../test/helpers/i2c-messages.js";
import type { I2cBus, I2cMessage } from "./bus.js";
import {
  ChipFaults,
  DeviceFaults,
  FaultBus,
  FaultError,
  type FaultSpec,
  formatFault,
  parseFaultSpec,
  parseFaultWords,
  parseStretch,
  seededRandom,
} from "./faults.js";
import { findModel, modelContext, type SimDevice } from "./model.js";
import { SimBus, simTargets } from "./sim-bus.js";

/**
 * An EEPROM at 0x50 (without write cycle: the faults, not the chip, make it NACK) and an LM75 at
 * 0x48 on one SimBus, with the chips' faults for guests 0 and 1.
 */
function rig() {
  const eeprom = findModel("24c02").create(
    { initial: "00112233445566778899", ...NO_WRITE_CYCLE },
    modelContext({ address: 0x50 }),
  );
  const lm75 = findModel("lm75").create({ temperature: 25 }, modelContext({ address: 0x48 }));
  const sim = new SimBus(
    simTargets(
      new Map<number, SimDevice>([
        [0x50, eeprom],
        [0x48, lm75],
      ]),
    ),
  );
  const chips = new Map([
    [0x50, new ChipFaults(0x50)],
    [0x48, new ChipFaults(0x48)],
  ]);
  const slept: number[] = [];
  const guestBus = (guest: number) =>
    new FaultBus(
      sim,
      new Map([...chips].map(([address, chip]) => [address, chip.forGuest(guest)])),
      async (ms) => {
        slept.push(ms);
      },
    );
  const faultsOf = (address: number, guest = 0) =>
    (chips.get(address) as ChipFaults).forGuest(guest);
  return { eeprom, bus: guestBus(0), other: guestBus(1), faultsOf, slept };
}

/** One EEPROM random read of `length` bytes from offset 0: [write offset, read]. */
const eepromRead = (length = 2) => [w(0x50, 0), r(0x50, length)];
const run = async (bus: FaultBus, msgs: I2cMessage[]) => await bus.transfer(msgs);

describe("parseFaultSpec / parseFaultWords / formatFault", () => {
  it("reads every fault kind from words and formats it back the same", () => {
    for (const text of [
      "nack",
      "nack count=1",
      "nack every=3",
      "nack probability=0.25 seed=7",
      "disappear",
      "nack-after bytes=2",
      "corrupt byte=2 xor=0x01",
      "corrupt byte=0 value=0x00 count=2",
      "stall ms=50",
    ]) {
      assert.equal(formatFault(parseFaultWords(text.split(" "))), text);
    }
  });

  it("takes JSON numbers and hex text alike, and fills in the defaults it documents", () => {
    assert.deepEqual(parseFaultSpec({ fault: "corrupt", byte: "0x1" }), {
      fault: "corrupt",
      byte: 1,
      xor: 0xff,
    });
    assert.equal(
      formatFault(parseFaultSpec({ fault: "nack", probability: 0.5 })),
      "nack probability=0.5 seed=1",
    );
  });

  it("refuses what it cannot use, naming the field", () => {
    const refused = (fields: Record<string, unknown>, message: RegExp) =>
      assert.throws(
        () => parseFaultSpec(fields),
        (e: unknown) => e instanceof FaultError && message.test(e.message),
      );
    refused(
      { fault: "explode" },
      /"fault" must be one of nack, disappear, nack-after, corrupt, stall/,
    );
    refused({ fault: "nack", bytes: 1 }, /"bytes" is not a field of a nack fault/);
    refused({ fault: "stall" }, /"ms" must be an integer 1\.\.60000/);
    refused({ fault: "nack", every: 0 }, /"every" must be an integer 1\.\./);
    refused({ fault: "nack", probability: 1.5 }, /"probability" must be a number in \(0, 1\]/);
    refused({ fault: "nack", every: 2, probability: 0.5 }, /not both/);
    refused({ fault: "nack", seed: 3 }, /"seed" seeds "probability"/);
    refused({ fault: "corrupt", xor: 1, value: 2 }, /"xor" or "value", not both/);
    assert.throws(() => parseFaultWords(["nack", "every"]), /"every" is not key=value/);
    assert.throws(() => parseStretch({ usPerBit: 1 }), /"usPerBit" is not a stretch field/);
  });
});

describe("seededRandom", () => {
  it("gives the same sequence for the same seed, another for another seed", () => {
    const take = (seed: number) => Array.from({ length: 8 }, seededRandom(seed));
    assert.deepEqual(take(42), take(42));
    assert.notDeepEqual(take(42), take(43));
    for (const x of take(5)) assert.ok(x >= 0 && x < 1);
  });
});

describe("FaultBus", () => {
  it("passes transfers through untouched while no device has a fault, inline", () => {
    const { bus } = rig();
    assert.equal(bus.inlineNow, true);
    const msgs = eepromRead();
    assert.equal(bus.transfer(msgs), 2);
    assert.deepEqual([...(msgs[1] as I2cMessage).buf], [0x00, 0x11]);
  });

  it("NACKs the address `count` times, then the device answers again; the listing counts down", async () => {
    const { bus, faultsOf } = rig();
    faultsOf(0x50).add(parseFaultWords(["nack", "count=2"]));
    assert.deepEqual(faultsOf(0x50).list(), [{ fault: "nack count=2", injected: 0, left: 2 }]);
    const msgs = eepromRead();
    assert.equal(await run(bus, msgs), 0);
    assert.equal(msgs[0]?.injected, "0x50: nack count=2", "the message says which fault");
    assert.equal(await run(bus, eepromRead()), 0);
    assert.equal(await run(bus, eepromRead()), 2);
    assert.deepEqual(faultsOf(0x50).list(), [], "an expired fault is gone");
    assert.equal(faultsOf(0x50).injected, 2, "and still counted");
  });

  it("NACKs every Nth transfer it could act on", async () => {
    const { bus, faultsOf } = rig();
    faultsOf(0x50).add({ fault: "nack", every: 3 });
    const results: number[] = [];
    for (let i = 0; i < 7; i++) results.push(await run(bus, eepromRead()));
    assert.deepEqual(results, [2, 2, 0, 2, 2, 0, 2]);
  });

  it("NACKs with a seeded probability: the same seed gives the same pattern, on every guest", async () => {
    const pattern = async (seed: number, guest: 0 | 1) => {
      const { bus, other, faultsOf } = rig();
      faultsOf(0x50, guest).add({ fault: "nack", probability: 0.5, seed });
      const results: number[] = [];
      for (let i = 0; i < 24; i++) results.push(await run(guest === 0 ? bus : other, eepromRead()));
      return results.map((done) => (done === 0 ? "N" : ".")).join("");
    };
    const first = await pattern(9, 0);
    assert.equal(await pattern(9, 0), first);
    assert.equal(await pattern(9, 1), first);
    assert.notEqual(await pattern(10, 0), first);
    assert.match(first, /N/);
    assert.match(first, /\./);
  });

  it("NACKs a write after N bytes: the bytes before it reach the chip, the transfer fails there", async () => {
    const { bus, eeprom, faultsOf } = rig();
    faultsOf(0x50).add({ fault: "nack-after", bytes: 2 });
    // Word address 0x04, then 0xaa 0xbb 0xcc: the chip takes the address and 0xaa, NACKs 0xbb.
    assert.equal(await run(bus, [w(0x50, 0x04, 0xaa, 0xbb, 0xcc)]), 0);
    assert.deepEqual([...(eeprom.memory?.read(4, 3) ?? [])], [0xaa, 0x55, 0x66]);
    // A write it could not act on (2 bytes) does not count as a firing.
    assert.equal(await run(bus, [w(0x50, 0x04, 0x01)]), 1);
    assert.equal(faultsOf(0x50).injected, 1);
  });

  it("corrupts byte K of each read message (XOR or a fixed value), after the chip answered", async () => {
    const { bus, faultsOf } = rig();
    faultsOf(0x50).add({ fault: "corrupt", byte: 1, xor: 0x0f });
    const msgs = eepromRead(3);
    assert.equal(await run(bus, msgs), 2);
    assert.deepEqual([...(msgs[1] as I2cMessage).buf], [0x00, 0x11 ^ 0x0f, 0x22]);
    assert.equal(msgs[1]?.injected, "0x50: corrupt byte=1 xor=0x0f");
    assert.equal(msgs[0]?.injected, undefined);
    faultsOf(0x50).clear();
    faultsOf(0x50).add({ fault: "corrupt", byte: 0, value: 0x5a });
    const again = eepromRead(1);
    await run(bus, again);
    assert.deepEqual([...(again[1] as I2cMessage).buf], [0x5a]);
  });

  it("stalls: the transfer completes after the stall, and the bus stops offering guest memory in place", async () => {
    const { bus, faultsOf, slept } = rig();
    faultsOf(0x50).add({ fault: "stall", ms: 40, count: 1 });
    assert.equal(bus.inlineNow, false);
    const result = bus.transfer(eepromRead());
    assert.ok(result instanceof Promise, "a stalled transfer completes later");
    assert.equal(await result, 2);
    assert.deepEqual(slept, [40]);
    assert.equal(bus.inlineNow, true, "once the stall is used up");
  });

  it("stretches each transfer by its per-transfer and per-byte time", async () => {
    const stretch = parseStretch({ usPerTransfer: 500, usPerByte: 250 });
    const device = new DeviceFaults(0x50, stretch);
    const sim = new SimBus(
      simTargets(new Map([[0x50, findModel("24c02").create({}, modelContext({ address: 0x50 }))]])),
    );
    const slept: number[] = [];
    const bus = new FaultBus(sim, new Map([[0x50, device]]), async (ms) => {
      slept.push(ms);
    });
    assert.equal(await bus.transfer(eepromRead(3)), 2);
    assert.deepEqual(slept, [(500 + 4 * 250) / 1000]);
  });

  it("disappears until cleared: every transfer NACKs, then the chip is back", async () => {
    const { bus, faultsOf } = rig();
    faultsOf(0x50).add({ fault: "disappear" });
    for (let i = 0; i < 3; i++) assert.equal(await run(bus, eepromRead()), 0);
    assert.equal(faultsOf(0x50).clear(), 1);
    assert.equal(await run(bus, eepromRead()), 2);
  });

  it("leaves other devices on the bus and other guests alone", async () => {
    const { bus, other, faultsOf } = rig();
    faultsOf(0x50).add({ fault: "disappear" });
    assert.equal(await run(bus, [w(0x48, 0), r(0x48, 2)]), 2, "the LM75 on the same bus answers");
    assert.equal(await run(other, eepromRead()), 2, "guest 1 still sees the EEPROM");
    assert.equal(faultsOf(0x50, 1).injected, 0);
  });

  it("cuts a transfer at the NACKed message: the messages before it run, with their STOP", async () => {
    const { bus, faultsOf } = rig();
    faultsOf(0x50).add({ fault: "nack" });
    const msgs = [w(0x48, 0), r(0x48, 2), ...eepromRead()];
    assert.equal(await run(bus, msgs), 2);
    assert.deepEqual([...(msgs[1] as I2cMessage).buf], [0x19, 0x00], "the LM75 read went through");
  });

  it("works over an asynchronous bus (a host adapter): corrupts once its transfer completed", async () => {
    const ran: I2cMessage[][] = [];
    const host: I2cBus = {
      name: "i2c-3",
      synchronous: false,
      inlineNow: false,
      transfer: async (msgs) => {
        ran.push([...msgs]);
        for (const msg of msgs) if (msg.read) msg.buf.fill(0x11);
        return msgs.length;
      },
      close: () => {},
    };
    const device = new DeviceFaults(0x50, null, [{ fault: "corrupt", byte: 0, value: 0 }]);
    const bus = new FaultBus(host, new Map([[0x36, device]]));
    assert.equal(bus.inlineNow, false, "the inner bus's");
    const msgs = [w(0x36, 0), r(0x36, 2)];
    const result = bus.transfer(msgs);
    assert.ok(result instanceof Promise);
    assert.equal(await result, 2);
    assert.deepEqual([...(msgs[1] as I2cMessage).buf], [0x00, 0x11]);
    assert.equal(
      msgs[1]?.injected,
      "0x50: corrupt byte=0 value=0x00",
      "named by its guest address",
    );
    device.add({ fault: "nack" });
    assert.equal(await bus.transfer([w(0x36, 0)]), 0);
    assert.equal(ran.length, 1, "a NACK on the first message reaches no device");
  });

  it("gives each guest its own copy of the configured faults", async () => {
    const spec: FaultSpec = { fault: "nack", count: 1 };
    const chip = new ChipFaults(0x50, null, [spec]);
    chip.forGuest(0).faults()[0]?.fires();
    assert.deepEqual(chip.forGuest(0).list(), []);
    assert.deepEqual(chip.forGuest(1).list(), [{ fault: "nack count=1", injected: 0, left: 1 }]);
  });
});
