import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { I2cMessage } from "../bus.js";
import { findModel, ModelError, modelContext, type SimDevice } from "../model.js";
import { SimBus, simTargets } from "../sim-bus.js";
import { ds1307Model } from "./ds1307.js";

const ADDR = 0x68;
const w = (...bytes: number[]): I2cMessage => ({
  addr: ADDR,
  read: false,
  buf: Uint8Array.from(bytes),
});
const r = (len: number): I2cMessage => ({ addr: ADDR, read: true, buf: new Uint8Array(len) });
const HOST_START = Date.UTC(2024, 4, 17, 13, 45, 30); // a Friday

interface FakeClock {
  ms: number;
  now(): number;
}

function setup(options: Record<string, unknown> = {}, baseDir?: string, shared?: FakeClock) {
  const clock: FakeClock = shared ?? { ms: HOST_START, now: () => clock.ms };
  const context = modelContext(
    baseDir === undefined ? { address: ADDR } : { address: ADDR, baseDir },
  );
  const device = ds1307Model(clock).create(options, context);
  const bus = new SimBus(simTargets(new Map([[ADDR, device]])));
  const readRegs = (reg: number, len: number) => {
    const msg = r(len);
    assert.equal(bus.transfer([w(reg), msg]), 2);
    return [...msg.buf];
  };
  const prop = (key: string) => {
    const p = device.properties?.[key];
    assert.ok(p, key);
    return p;
  };
  return { clock, device, bus, readRegs, prop };
}

describe("DS1307", () => {
  it("is registered as a built-in model", () => {
    assert.equal(findModel("ds1307").name, "ds1307");
  });

  it("reads the host time in BCD, 24-hour mode, ISO weekday", () => {
    const { readRegs } = setup();
    assert.deepEqual(readRegs(0, 7), [0x30, 0x45, 0x13, 5, 0x17, 0x05, 0x24]);
  });

  it("follows the host clock", () => {
    const { clock, readRegs } = setup();
    clock.ms += 3_600_000 + 31_000; // 14:46:01
    assert.deepEqual(readRegs(0, 3), [0x01, 0x46, 0x14]);
  });

  it("a write of the time registers sets the offset at STOP", () => {
    const { clock, bus, readRegs, prop } = setup();
    // 2031-12-31 23:59:58, weekday 3, 24-hour mode
    assert.equal(bus.transfer([w(0, 0x58, 0x59, 0x23, 3, 0x31, 0x12, 0x31)]), 1);
    assert.equal(prop("time").get(), "2031-12-31T23:59:58.000Z");
    clock.ms += 3000;
    assert.deepEqual(
      readRegs(0, 7),
      [0x01, 0x00, 0x00, 4, 0x01, 0x01, 0x32],
      "rolls into the new year, weekday counts",
    );
  });

  it("writing only the minutes keeps the other fields", () => {
    const { bus, readRegs } = setup();
    bus.transfer([w(1, 0x05)]);
    assert.deepEqual(readRegs(0, 7), [0x30, 0x05, 0x13, 5, 0x17, 0x05, 0x24]);
  });

  it("12-hour mode: the guest's choice is kept and reported with AM/PM", () => {
    const { clock, bus, readRegs } = setup();
    bus.transfer([w(2, 0x40 | 0x20 | 0x11)]); // 11 PM
    assert.deepEqual(readRegs(2, 1), [0x40 | 0x20 | 0x11]);
    clock.ms += 3_600_000; // midnight: 12 AM
    assert.deepEqual(readRegs(2, 1), [0x40 | 0x12]);
    clock.ms += 13 * 3_600_000; // 1 PM
    assert.deepEqual(readRegs(2, 1), [0x40 | 0x20 | 0x01]);
    bus.transfer([w(1, 0x00)]); // a minutes write keeps 12-hour mode
    assert.deepEqual(readRegs(2, 1), [0x40 | 0x20 | 0x01]);
    bus.transfer([w(2, 0x12)]); // back to 24-hour mode, 12:xx
    assert.deepEqual(readRegs(2, 1), [0x12]);
  });

  it("the CH bit stops the clock; clearing it resumes from the frozen time", () => {
    const { clock, bus, readRegs, prop } = setup();
    bus.transfer([w(0, 0x80 | 0x10)]);
    assert.equal(prop("halted").get(), true);
    clock.ms += 60_000;
    assert.deepEqual(readRegs(0, 2), [0x90, 0x45]);
    bus.transfer([w(0, 0x10)]);
    clock.ms += 5000;
    assert.deepEqual(readRegs(0, 2), [0x15, 0x45]);
    prop("halted").set?.("true");
    clock.ms += 10_000;
    assert.deepEqual(readRegs(0, 1), [0x95]);
  });

  it("time registers are one snapshot per transfer", () => {
    const { clock, bus } = setup();
    clock.ms = HOST_START + 29_500; // 13:45:59.5
    const ticking = clock.now;
    clock.now = () => {
      const t = ticking();
      clock.ms += 1000; // every look at the host clock moves it on
      return t;
    };
    const seconds = r(1);
    const minutes = r(1);
    assert.equal(bus.transfer([w(0), seconds, w(1), minutes]), 4);
    assert.deepEqual([seconds.buf[0], minutes.buf[0]], [0x59, 0x45]);
  });

  it("RAM: 56 bytes at 0x08-0x3f, pointer wraps from 0x3f to 0x00", () => {
    const { bus, readRegs, device } = setup();
    bus.transfer([w(0x3e, 0xaa, 0xbb)]);
    assert.deepEqual(readRegs(0x3e, 3), [0xaa, 0xbb, 0x30]);
    assert.deepEqual([...(device.memory?.read(54, 2) ?? [])], [0xaa, 0xbb]);
    assert.equal(device.memory?.size, 56);
  });

  it("control register keeps OUT, SQWE, RS1, RS0", () => {
    const { bus, readRegs } = setup();
    bus.transfer([w(7, 0xff)]);
    assert.deepEqual(readRegs(7, 1), [0x93]);
  });

  it("time property sets and reads ISO 8601; options time and halted", () => {
    const { prop, readRegs, clock } = setup({ time: "2001-02-03T04:05:06Z", halted: true });
    clock.ms += 10_000;
    assert.equal(prop("time").get(), "2001-02-03T04:05:06.000Z");
    prop("time").set?.("2099-12-31T23:59:59Z");
    assert.deepEqual(readRegs(0, 7).slice(4), [0x31, 0x12, 0x99]);
    assert.throws(() => prop("time").set?.("1999-01-01T00:00:00Z"), {
      code: "I2C_MODEL_BAD_VALUE",
    });
  });

  it("RAM is backed by a 56-byte file, written through at STOP", () => {
    const dir = mkdtempSync(join(tmpdir(), "ds1307-test-"));
    try {
      const first = setup({ backing: "rtc.bin" }, dir);
      first.bus.transfer([w(0x08, 1, 2, 3)]);
      const file = readFileSync(join(dir, "rtc.bin"));
      assert.equal(file.length, 56);
      assert.deepEqual([...file.subarray(0, 4)], [1, 2, 3, 0]);
      first.device.close?.();
      assert.deepEqual(setup({ backing: "rtc.bin" }, dir).readRegs(0x08, 3), [1, 2, 3]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("DS1307 saveState / restoreState", () => {
  const carried = (device: SimDevice): unknown => {
    assert.ok(device.saveState);
    return JSON.parse(JSON.stringify(device.saveState()));
  };
  const badState = (e: unknown) => e instanceof ModelError && e.code === "I2C_MODEL_BAD_STATE";

  for (const halt of [false, true]) {
    it(`a fresh chip given the state goes on as the saved one (clock ${halt ? "halted" : "running"})`, () => {
      const saved = setup();
      const fresh = setup({}, undefined, saved.clock);
      // 2031-12-31 11:59:58 PM in 12-hour mode, weekday 3, control OUT, RAM 0x08-0x09
      const time = [0x58, 0x59, 0x40 | 0x20 | 0x11, 3, 0x31, 0x12, 0x31];
      assert.equal(saved.bus.transfer([w(0, ...time, 0x80, 0xaa, 0xbb)]), 1);
      saved.device.memory?.write(10, Uint8Array.of(0xcc)); // over the control socket
      if (halt) saved.prop("halted").set?.("true");
      saved.clock.ms += 1500;
      assert.equal(saved.bus.transfer([w(0x3e)]), 1); // the pointer
      fresh.device.restoreState?.(carried(saved.device));
      const pointed = (chip: typeof saved) => {
        const msg = r(4); // from the pointer: 0x3e, 0x3f, then wraps to the seconds
        assert.equal(chip.bus.transfer([msg]), 1);
        return [...msg.buf];
      };
      assert.deepEqual(pointed(fresh), pointed(saved));
      assert.deepEqual(fresh.readRegs(0, 64), saved.readRegs(0, 64));
      saved.clock.ms += 61_000; // across midnight and the new year when running
      assert.deepEqual(fresh.readRegs(0, 64), saved.readRegs(0, 64));
      assert.equal(fresh.prop("time").get(), saved.prop("time").get());
      assert.equal(fresh.prop("halted").get(), halt);
      for (const chip of [fresh, saved]) chip.prop("halted").set?.("false");
      saved.clock.ms += 5000;
      assert.deepEqual(fresh.readRegs(0, 8), saved.readRegs(0, 8));
    });
  }

  it("with a backing file: the RAM is the file's, the clock the state's", () => {
    const dir = mkdtempSync(join(tmpdir(), "ds1307-state-"));
    try {
      const saved = setup({ backing: "rtc.bin" }, dir);
      assert.equal(saved.bus.transfer([w(1, 0x07), w(0x08, 0x11, 0x22)]), 2);
      const state = carried(saved.device);
      assert.equal((state as Record<string, unknown>).memory, undefined);
      saved.device.close?.();
      const fresh = setup({ backing: "rtc.bin" }, dir, saved.clock);
      fresh.device.restoreState?.(state);
      assert.deepEqual(fresh.readRegs(0, 10), saved.readRegs(0, 10));
      assert.deepEqual(fresh.readRegs(0x08, 2), [0x11, 0x22]);
      assert.throws(
        () => fresh.device.restoreState?.({ ...(state as object), memory: "00".repeat(56) }),
        badState,
      );
      fresh.device.close?.();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses a state it cannot take and changes nothing", () => {
    const { device, prop, readRegs } = setup();
    assert.ok(device.saveState);
    const good = device.saveState() as Record<string, unknown>;
    const { twelveHour: _, ...noMode } = good;
    for (const state of [
      0,
      noMode,
      { ...good, weekdayBias: 7 },
      { ...good, offsetMs: "1000" },
      { ...good, offsetMs: 1e16 },
      { ...good, haltedAt: null },
      { ...good, control: 0x100 },
      { ...good, pointer: 64 },
      { ...good, memory: "00".repeat(57) },
    ]) {
      assert.throws(() => device.restoreState?.(state), badState, JSON.stringify(state));
    }
    assert.equal(prop("time").get(), "2024-05-17T13:45:30.000Z");
    assert.deepEqual(readRegs(0, 3), [0x30, 0x45, 0x13]);
    device.restoreState?.({ ...good, offsetMs: 60_000, twelveHour: true });
    assert.equal(prop("time").get(), "2024-05-17T13:46:30.000Z");
    assert.deepEqual(readRegs(2, 1), [0x40 | 0x20 | 0x01], "1 PM, 12-hour mode");
  });
});
