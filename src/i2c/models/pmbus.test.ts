import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ModelBench, modelError } from "../../../test/helpers/model-bench.js";
import { findModel } from "../model.js";
import { crc8, SMBUS_PEC } from "./crc8.js";
import { PMBUS } from "./pmbus.js";
import { decodeLinear11, decodeLinear16 } from "./pmbus-linear.js";

const ADDR = 0x10;
const W = ADDR << 1;
const R = (ADDR << 1) | 1;

/** i2c-core's SMBus emulation, with or without PEC as the client's I2C_CLIENT_PEC says. */
function smbus(bench: ModelBench, pec: boolean) {
  const read = (command: number, size: number) => {
    const msg = bench.r(size + (pec ? 1 : 0));
    assert.equal(bench.transfer(bench.w(command), msg), 2);
    const bytes = [...msg.buf];
    if (pec) {
      const data = bytes.slice(0, size);
      assert.equal(
        bytes[size],
        crc8([W, command, R, ...data], SMBUS_PEC),
        `PEC of 0x${command.toString(16)}`,
      );
    }
    return bytes.slice(0, size);
  };
  const write = (command: number, ...data: number[]) => {
    const bytes = [command, ...data];
    if (pec) bytes.push(crc8([W, ...bytes], SMBUS_PEC));
    assert.equal(bench.transfer(bench.w(...bytes)), 1);
  };
  return {
    readByte: (command: number) => read(command, 1)[0] ?? -1,
    readWord: (command: number) => {
      const [lo = 0, hi = 0] = read(command, 2);
      return lo | (hi << 8);
    },
    readBlock: (command: number) => {
      const msg = bench.r(33);
      bench.transfer(bench.w(command), msg);
      const length = msg.buf[0] ?? 0;
      return Buffer.from(msg.buf.subarray(1, 1 + length)).toString("latin1");
    },
    write,
  };
}

describe("PMBus generic device", () => {
  it("probes as pmbus_do_probe and pmbus_identify do, then uses PEC", () => {
    const bench = new ModelBench(findModel("pmbus"), ADDR);
    const plain = smbus(bench, false);
    assert.equal(plain.readWord(PMBUS.statusWord), 0, "STATUS_WORD present, no faults");
    assert.equal(plain.readByte(PMBUS.capability) & 0x80, 0x80, "PEC supported");
    assert.equal(plain.readByte(PMBUS.writeProtect), 0);
    const pec = smbus(bench, true);
    pec.write(PMBUS.clearFaults);
    assert.equal(pec.readByte(PMBUS.page), 0);
    pec.write(PMBUS.page, 1); // pmbus_set_page(1): refused, reads back 0: one page
    assert.equal(pec.readByte(PMBUS.page), 0);
    pec.write(PMBUS.clearFaults);
    assert.equal(pec.readByte(PMBUS.voutMode) >> 5, 0, "linear mode");
    assert.equal(pec.readByte(PMBUS.revision), 0x22);
    assert.equal(pec.readBlock(PMBUS.mfrId), "VDI2C");
  });

  it("pmbus_check_register: an unknown command reads 0xffff and STATUS_CML says invalid", () => {
    const bench = new ModelBench(findModel("pmbus"), ADDR);
    const pec = smbus(bench, true);
    assert.equal(pec.readWord(0x90), 0xffff); // READ_FAN_SPEED_1
    assert.equal(pec.readWord(PMBUS.statusWord) & 0x02, 0x02, "CML");
    assert.equal(pec.readByte(PMBUS.statusCml) & 0x80, 0x80, "invalid command");
    pec.write(PMBUS.clearFaults);
    assert.equal(pec.readWord(PMBUS.statusWord), 0);
    assert.equal(pec.readWord(PMBUS.readVin) !== 0xffff, true);
    assert.equal(pec.readWord(PMBUS.statusWord), 0, "READ_VIN is supported");
  });

  it("telemetry in LINEAR11 and LINEAR16 (VOUT_MODE 0x17) as pmbus_reg2data_linear reads it", () => {
    const bench = new ModelBench(findModel("pmbus"), ADDR, {
      vin: 12.25,
      iin: 2,
      vout: 1.2,
      iout: 30,
      temperature: 55.5,
    });
    const pec = smbus(bench, true);
    assert.equal(decodeLinear11(pec.readWord(PMBUS.readVin)), 12.25);
    assert.equal(decodeLinear11(pec.readWord(PMBUS.readIin)), 2);
    assert.ok(Math.abs(decodeLinear16(pec.readWord(PMBUS.readVout), -9) - 1.2) < 2 ** -10);
    assert.equal(decodeLinear11(pec.readWord(PMBUS.readIout)), 30);
    assert.equal(decodeLinear11(pec.readWord(PMBUS.readTemperature1)), 55.5);
    assert.equal(decodeLinear11(pec.readWord(PMBUS.readPin)), 24.5);
    assert.equal(decodeLinear11(pec.readWord(PMBUS.readPout)), 36);
    bench.set("temperature", "-10.5");
    assert.equal(decodeLinear11(pec.readWord(PMBUS.readTemperature1)), -10.5);
  });

  it("a wrong PEC or a write to a read-only command is refused and reported in STATUS_CML", () => {
    const bench = new ModelBench(findModel("pmbus"), ADDR);
    const pec = smbus(bench, true);
    bench.transfer(bench.w(PMBUS.operation, 0x00, 0x12)); // bad PEC
    assert.equal(pec.readByte(PMBUS.operation), 0x80, "not turned off");
    assert.equal(pec.readByte(PMBUS.statusCml) & 0x20, 0x20);
    pec.write(PMBUS.clearFaults);
    pec.write(PMBUS.readVin, 0x00, 0x00);
    assert.equal(pec.readByte(PMBUS.statusCml) & 0x80, 0x80);
    pec.write(PMBUS.operation, 0x00);
    assert.equal(pec.readByte(PMBUS.statusByte) & 0x40, 0x40, "OFF");
  });

  it("fault limits raise status bits that stay until CLEAR_FAULTS", () => {
    const bench = new ModelBench(findModel("pmbus"), ADDR);
    const pec = smbus(bench, true);
    assert.equal(decodeLinear11(pec.readWord(PMBUS.otWarnLimit)), 100);
    pec.write(PMBUS.otWarnLimit, 0x40, 0xe2); // 0xe240: 576 × 2^-4 = 36 °C
    assert.equal(decodeLinear11(pec.readWord(PMBUS.otWarnLimit)), 36);
    assert.equal(pec.readByte(PMBUS.statusTemperature) & 0x40, 0x40, "40 °C > 36 °C: OT warning");
    assert.equal(pec.readByte(PMBUS.statusByte) & 0x04, 0x04);
    bench.set("vin", "7");
    assert.equal(pec.readByte(PMBUS.statusInput) & 0x10, 0x10, "VIN under 8 V");
    assert.equal(pec.readWord(PMBUS.statusWord) & 0x2008, 0x2008);
    bench.set("vin", "12");
    pec.write(PMBUS.otWarnLimit, 0x20, 0xeb); // 100 °C again
    assert.equal(pec.readByte(PMBUS.statusInput) & 0x10, 0x10, "latched");
    pec.write(PMBUS.clearFaults);
    assert.equal(pec.readWord(PMBUS.statusWord), 0);
  });

  it("refuses measurements outside the ranges", () => {
    const bench = new ModelBench(findModel("pmbus"), ADDR);
    assert.throws(() => bench.set("vin", "-1"), modelError("I2C_MODEL_BAD_VALUE"));
  });

  it("a successor keeps measurements, limits and latched status", () => {
    const saved = new ModelBench(findModel("pmbus"), ADDR);
    const fresh = new ModelBench(findModel("pmbus"), ADDR);
    saved.set("iout", "45");
    saved.handOverTo(fresh);
    const pec = smbus(fresh, true);
    assert.equal(decodeLinear11(pec.readWord(PMBUS.readIout)), 45);
    assert.equal(pec.readByte(PMBUS.statusIout) & 0x80, 0x80, "over-current latched");
    assert.equal(fresh.get("statusWord"), saved.get("statusWord"));
    assert.throws(
      () => fresh.device.restoreState?.({ limits: [] }),
      modelError("I2C_MODEL_BAD_STATE"),
    );
  });
});
