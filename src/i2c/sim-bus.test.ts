import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { r, w } from "../../test/helpers/i2c-messages.js";
import { createLogger } from "../log.js";
import type { I2cDeviceModel } from "./model.js";
import { SimBus } from "./sim-bus.js";

/** A model that records every event and can be told to NACK or throw at a given call. */
class RecordingModel implements I2cDeviceModel {
  readonly events: string[] = [];
  nackStart = false;
  nackWrite = false;
  throwOn: "start" | "write" | "read" | "stop" | null = null;
  fill = 0xa5;

  #maybeThrow(call: "start" | "write" | "read" | "stop"): void {
    if (this.throwOn === call) throw new Error(`${call} exploded`);
  }
  start(read: boolean): boolean {
    this.events.push(read ? "start-r" : "start-w");
    this.#maybeThrow("start");
    return !this.nackStart;
  }
  write(data: Uint8Array): boolean {
    this.events.push(`write ${[...data].join(" ")}`);
    this.#maybeThrow("write");
    return !this.nackWrite;
  }
  read(into: Uint8Array): void {
    this.events.push(`read ${into.length}`);
    this.#maybeThrow("read");
    into.fill(this.fill);
  }
  stop(): void {
    this.events.push("stop");
    this.#maybeThrow("stop");
  }
}

describe("SimBus.transfer", () => {
  it("runs messages in order with one stop at the end", () => {
    const model = new RecordingModel();
    const bus = new SimBus(new Map([[0x50, model]]));
    const read = r(0x50, 2);
    assert.equal(bus.transfer([w(0x50, 1, 2), read]), 2);
    assert.deepEqual(model.events, ["start-w", "write 1 2", "start-r", "read 2", "stop"]);
    assert.deepEqual([...read.buf], [0xa5, 0xa5]);
  });

  it("zero-length messages only address the model (quick write probe)", () => {
    const model = new RecordingModel();
    const bus = new SimBus(new Map([[0x50, model]]));
    assert.equal(bus.transfer([w(0x50)]), 1);
    assert.equal(bus.transfer([r(0x50, 0)]), 1);
    assert.deepEqual(model.events, ["start-w", "stop", "start-r", "stop"]);
  });

  it("an address without a model NACKs and stops the transfer there", () => {
    const model = new RecordingModel();
    const bus = new SimBus(new Map([[0x50, model]]));
    assert.equal(bus.transfer([w(0x51)]), 0);
    assert.equal(bus.transfer([w(0x50, 7), w(0x51, 1), w(0x50, 8)]), 1);
    assert.deepEqual(model.events, ["start-w", "write 7", "stop"]);
  });

  it("a NACKed start or write ends the transfer, and the model still gets stop", () => {
    const model = new RecordingModel();
    const bus = new SimBus(new Map([[0x50, model]]));
    model.nackStart = true;
    assert.equal(bus.transfer([w(0x50, 1), r(0x50, 1)]), 0);
    assert.deepEqual(model.events, ["start-w", "stop"]);
    model.events.length = 0;
    model.nackStart = false;
    model.nackWrite = true;
    assert.equal(bus.transfer([r(0x50, 1), w(0x50, 1), r(0x50, 1)]), 1);
    assert.deepEqual(model.events, ["start-r", "read 1", "start-w", "write 1", "stop"]);
  });

  it("stops every model that took part exactly once", () => {
    const a = new RecordingModel();
    const b = new RecordingModel();
    const c = new RecordingModel();
    const bus = new SimBus(
      new Map([
        [0x10, a],
        [0x11, b],
        [0x12, c],
      ]),
    );
    assert.equal(bus.transfer([w(0x10, 1), w(0x11, 2), w(0x10, 3)]), 3);
    assert.deepEqual(a.events, ["start-w", "write 1", "start-w", "write 3", "stop"]);
    assert.deepEqual(b.events, ["start-w", "write 2", "stop"]);
    assert.deepEqual(c.events, []);
  });

  for (const call of ["start", "write", "read"] as const) {
    it(`a model that throws in ${call} fails only that transfer and is stopped`, () => {
      const good = new RecordingModel();
      const bad = new RecordingModel();
      const lines: string[] = [];
      const bus = new SimBus(
        new Map([
          [0x51, good],
          [0x50, bad],
        ]),
        createLogger("warn", { write: (l) => lines.push(l) }),
      );
      bad.throwOn = call;
      const msgs = [w(0x51, 0), call === "write" ? w(0x50, 1) : r(0x50, 1)];
      assert.equal(bus.transfer(msgs), 1);
      assert.equal(bad.events.at(-1), "stop");
      assert.equal(good.events.at(-1), "stop");
      assert.match(lines.join(""), /WARN .*emulated device failed.*addr=0x50/);
      bad.throwOn = null;
      assert.equal(bus.transfer(msgs), 2, "the next transfer works again");
    });
  }

  it("a model that throws in stop fails the whole transfer, other models are still stopped", () => {
    const bad = new RecordingModel();
    const good = new RecordingModel();
    const bus = new SimBus(
      new Map([
        [0x50, bad],
        [0x51, good],
      ]),
    );
    bad.throwOn = "stop";
    assert.equal(bus.transfer([w(0x50, 1), w(0x51, 1)]), 0);
    assert.equal(good.events.at(-1), "stop");
  });

  it("a model returning a non-boolean breaks the contract and fails the message", () => {
    const sloppy: I2cDeviceModel = {
      start: () => 1 as unknown as boolean,
      write: () => true,
      read: () => undefined,
      stop: () => undefined,
    };
    const bus = new SimBus(new Map([[0x20, sloppy]]));
    assert.equal(bus.transfer([w(0x20, 1)]), 0);
  });

  it("the JSDoc example of I2cDeviceModel works as written", () => {
    class Register implements I2cDeviceModel {
      value = 0;
      start(_read: boolean): boolean {
        return true;
      }
      write(data: Uint8Array): boolean {
        const last = data.at(-1);
        if (last !== undefined) this.value = last;
        return true;
      }
      read(into: Uint8Array): void {
        into.fill(this.value);
      }
      stop(): void {}
    }
    const bus = new SimBus(new Map([[0x20, new Register()]]));
    const buf = new Uint8Array(1);
    bus.transfer([
      { addr: 0x20, read: false, buf: Uint8Array.of(7) },
      { addr: 0x20, read: true, buf },
    ]);
    assert.equal(buf[0], 7);
  });
});
