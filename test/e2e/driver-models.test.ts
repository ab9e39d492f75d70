/**
 * Real guest, real daemon: every chip model is bound by its upstream Linux driver (`new_device`)
 * and used through that driver's own interface: hwmon (tmp102, lm75 for tmp75/tmp275, ina2xx, sht3x,
 * pmbus, the DS3231's sensor), iio (bmp280/bme280, ti-ads1015, mcp4725), rtc (hwclock on ds3231 and
 * pcf8563) and gpio sysfs (pca953x, pcf857x). The host changes the physical inputs over the control
 * socket and the guest's readings follow; what the guest drives (DAC code, GPIO outputs, RTC time)
 * shows on the host. Then faults: at24's retries while a 24c02 is busy with its write cycle (seen
 * in --trace), lm75 hwmon read errors from a NACK fault, an RTC that disappears and comes back,
 * and other chips on the bus undisturbed. One guest boot per group. Skips by name without QEMU or a
 * built guest image (guest/build.sh). Must not reach into the daemon's modules.
 */

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
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
  countLines,
  describeOrSkip,
  guestSuite,
  result,
  stopDaemonCleanly,
  TEST_TIMEOUT_MS,
  withGuestBench,
} from "./harness.js";

const { skip, images } = guestSuite();

/** One guest reading: its RESULT key, its value before and after step 1, and how close is enough. */
interface Reading {
  readonly key: string;
  readonly before: number;
  readonly after: number;
  readonly tolerance: number;
}

/**
 * When the fault test's scenario raises the temperature, in seconds from QEMU's connection: after
 * the guest has booted and gone through its steps (about 20 s under TCG here), so the guest sees the
 * reading change while it polls.
 */
const SCENARIO_EVENT_S = 40;

// --- hwmon and iio sensors --------------------------------------------------------------------------

const SENSORS: readonly Chip[] = [
  {
    model: "tmp102",
    address: "0x48",
    driver: "tmp102",
    options: { temperature: 30 },
    change: { temperature: -12.5 },
  },
  {
    model: "tmp75",
    address: "0x49",
    driver: "lm75",
    options: { temperature: 22.5 },
    change: { temperature: 85.25 },
  },
  {
    model: "tmp275",
    address: "0x4c",
    driver: "lm75",
    options: { temperature: -20 },
    change: { temperature: 50.5 },
  },
  {
    model: "ina226",
    address: "0x40",
    driver: "ina2xx",
    options: { current: 1.5, busVoltage: 12 },
    change: { current: 0.25, busVoltage: 5 },
  },
  {
    model: "ina219",
    address: "0x41",
    driver: "ina2xx",
    options: { current: 0.5, busVoltage: 3.3 },
    change: { current: 1.2, busVoltage: 5 },
  },
  {
    model: "ina220",
    address: "0x45",
    driver: "ina2xx",
    options: { current: -0.75, busVoltage: 12 },
    change: { current: 0.1, busVoltage: 24 },
  },
  {
    model: "sht3x",
    address: "0x44",
    driver: "sht3x",
    options: { temperature: 23.5, humidity: 41.2 },
    change: { temperature: -10.25, humidity: 88.5 },
  },
  {
    model: "sts3x",
    address: "0x4a",
    driver: "sht3x",
    options: { temperature: 40 },
    change: { temperature: 0 },
  },
  {
    model: "bme280",
    address: "0x76",
    driver: "bmp280",
    options: { temperature: 21, pressure: 95000, humidity: 40 },
    change: { temperature: 35.5, pressure: 101325, humidity: 70 },
  },
  {
    model: "bmp280",
    address: "0x77",
    driver: "bmp280",
    options: { temperature: -5.5, pressure: 80000 },
    change: { temperature: 60, pressure: 105000 },
  },
  {
    model: "ads1115",
    address: "0x4b",
    driver: "ads1015",
    options: { ain0: 1, ain1: 0.25, ain2: 2, ain3: 0 },
    change: { ain0: 0.5, ain1: 1.5, ain2: 0.125, ain3: 0.75 },
  },
  {
    model: "ads1015",
    address: "0x4d",
    driver: "ads1015",
    options: { ain0: 1.5 },
    change: { ain0: 0.3 },
  },
  { model: "mcp4725", address: "0x60", driver: "mcp4725", options: { vdd: 3.3 } },
  {
    model: "pmbus",
    address: "0x10",
    driver: "pmbus",
    options: { vin: 12.25, iout: 3.5, temperature: 45 },
    change: { vin: 11.5, iout: 7.25, temperature: 70 },
  },
];

/** The drivers' units: hwmon m°C, mV, mA, µW, m%RH; iio m°C, kPa, m%RH and raw ADC codes. */
/**
 * Every 24Cxx size beside the sensors, each at an address of its own (the 24c04/08/16 claim 2/4/8):
 * at24 sizes its nvmem file by the name given to `new_device` and must address the last 16 bytes
 * through the part's block or 16-bit word address.
 */
const EEPROMS: readonly (Chip & { readonly size: number })[] = [
  { model: "24c01", address: "0x5e", size: 128 },
  { model: "24c04", address: "0x5c", size: 512 },
  { model: "24c08", address: "0x58", size: 1024 },
  { model: "24c16", address: "0x50", size: 2048 },
  { model: "24c32", address: "0x5f", size: 4096 },
  { model: "24c64", address: "0x61", size: 8192 },
  { model: "24c128", address: "0x62", size: 16384 },
  { model: "24c256", address: "0x63", size: 32768 },
  { model: "24c512", address: "0x64", size: 65536 },
].map((chip) => ({ ...chip, driver: "at24" }));

/** The 16 bytes the guest writes at the end of the `index`th EEPROM: a pattern of its own. */
const eepromPattern = (index: number) =>
  Array.from({ length: 16 }, (_, i) => (index * 0x1d + i * 7 + 1) & 0xff);

/**
 * Guest lines: each EEPROM's nvmem size, a write of its pattern at its last 16 bytes through at24
 * (byte by byte, through the chip's write cycle) and the read-back.
 */
function eepromLines(): string[] {
  return EEPROMS.flatMap(({ model, address, size }, index) => {
    const file = `/sys/bus/i2c/devices/0-00${address.slice(2)}/eeprom`;
    const octal = eepromPattern(index)
      .map((byte) => `\\${byte.toString(8).padStart(3, "0")}`)
      .join("");
    const block = size / 16 - 1;
    return [
      `echo "RESULT ${model}.size $(stat -c %s ${file})"`,
      `printf '${octal}' | dd of=${file} bs=16 seek=${block} count=1 conv=notrunc 2>/dev/null`,
      `echo "RESULT ${model}.write_status $?"`,
      `echo "RESULT ${model}.readback $(dd if=${file} bs=16 skip=${block} count=1 2>/dev/null | od -An -tx1 -v | tr -s ' \\n' '  ')"`,
    ];
  });
}

const hexText = (bytes: readonly number[]) =>
  bytes.map((byte) => byte.toString(16).padStart(2, "0")).join(" ");

const SENSOR_READINGS: readonly Reading[] = [
  { key: "tmp102.temp1_input", before: 30000, after: -12500, tolerance: 100 },
  { key: "tmp75.temp1_input", before: 22500, after: 85250, tolerance: 100 },
  { key: "tmp275.temp1_input", before: -20000, after: 50500, tolerance: 100 },
  { key: "ina226.curr1_input", before: 1500, after: 250, tolerance: 30 },
  { key: "ina226.in1_input", before: 12000, after: 5000, tolerance: 10 },
  { key: "ina226.power1_input", before: 18e6, after: 1.25e6, tolerance: 0.4e6 },
  { key: "ina219.curr1_input", before: 500, after: 1200, tolerance: 15 },
  { key: "ina219.in1_input", before: 3300, after: 5000, tolerance: 10 },
  { key: "ina219.power1_input", before: 1.65e6, after: 6e6, tolerance: 0.15e6 },
  { key: "ina220.curr1_input", before: -750, after: 100, tolerance: 15 },
  { key: "ina220.in1_input", before: 12000, after: 24000, tolerance: 10 },
  { key: "sht3x.temp1_input", before: 23500, after: -10250, tolerance: 50 },
  { key: "sht3x.humidity1_input", before: 41200, after: 88500, tolerance: 100 },
  { key: "sts3x.temp1_input", before: 40000, after: 0, tolerance: 50 },
  { key: "bme280.in_temp_input", before: 21000, after: 35500, tolerance: 20 },
  { key: "bme280.in_pressure_input", before: 95, after: 101.325, tolerance: 0.02 },
  { key: "bme280.in_humidityrelative_input", before: 40000, after: 70000, tolerance: 300 },
  { key: "bmp280.in_temp_input", before: -5500, after: 60000, tolerance: 20 },
  { key: "bmp280.in_pressure_input", before: 80, after: 105, tolerance: 0.02 },
  // ±2.048 V (the driver's default gain): 16-bit codes of 62.5 µV, 12-bit of 1 mV.
  { key: "ads1115.in_voltage0_raw", before: 16000, after: 8000, tolerance: 4 },
  { key: "ads1115.in_voltage1_raw", before: 4000, after: 24000, tolerance: 4 },
  { key: "ads1115.in_voltage2_raw", before: 32000, after: 2000, tolerance: 4 },
  { key: "ads1115.in_voltage0-voltage1_raw", before: 12000, after: -16000, tolerance: 4 },
  { key: "ads1015.in_voltage0_raw", before: 1500, after: 300, tolerance: 2 },
  { key: "pmbus.vin.input", before: 12250, after: 11500, tolerance: 60 },
  { key: "pmbus.iout1.input", before: 3500, after: 7250, tolerance: 40 },
  { key: "pmbus.temp1_input", before: 45000, after: 70000, tolerance: 250 },
];

const HWMON_SENSORS = [
  "tmp102",
  "tmp75",
  "tmp275",
  "ina226",
  "ina219",
  "ina220",
  "sht3x",
  "sts3x",
  "pmbus",
];
const IIO_SENSORS = ["bme280", "bmp280", "ads1115", "ads1015", "mcp4725"];

/** Guest lines printing every sensor's readings under `<phase>.<model>.`. */
function sensorDump(phase: string): string[] {
  const at = (model: string) => SENSORS.find((chip) => chip.model === model)?.address ?? "";
  return [
    ...HWMON_SENSORS.map((model) => `hwmon_dump ${phase}.${model} ${at(model)}`),
    ...IIO_SENSORS.map((model) => `iio_dump ${phase}.${model} ${at(model)}`),
  ];
}

/** The DAC code the guest writes, and the 3.3 V supply it divides. */
const DAC_CODE = 2048;

// --- rtc and gpio ----------------------------------------------------------------------------------

const DS3231_START = "2125-06-01T12:00:00Z";
const DS3231_SET = "2042-03-04T05:06:07Z";
/**
 * Written by the guest with hwclock -w. In the 21st century: Linux 6.1's rtc-ds1307 writes a later
 * year as bin2bcd(year - 2000), not BCD (fixed in later kernels with `tm_year % 100`), so only the
 * century bit's read side (DS3231_START) is proven on every kernel CI runs.
 */
const DS3231_GUEST_WRITE = "2087-02-03 04:05:06";
const PCF8563_GUEST_WRITE = "2061-07-08 09:10:11";

const CLOCKS_AND_PINS: readonly Chip[] = [
  {
    model: "ds3231",
    address: "0x68",
    driver: "rtc-ds1307",
    options: { time: DS3231_START, temperature: 22.25 },
    change: { time: DS3231_SET, temperature: 30.5 },
  },
  { model: "pcf8563", address: "0x51", driver: "rtc-pcf8563", change: { voltageLow: "true" } },
  {
    model: "pca9555",
    address: "0x20",
    driver: "pca953x",
    options: { inputs: 0xa55a },
    change: { inputs: 0x0ff0 },
  },
  {
    model: "tca6416",
    address: "0x23",
    driver: "pca953x",
    options: { inputs: 0x00ff },
    change: { inputs: 0xff00 },
  },
  {
    model: "pca9554",
    address: "0x24",
    driver: "pca953x",
    options: { inputs: 0x81 },
    change: { inputs: 0x7e },
  },
  {
    model: "tca6408",
    address: "0x21",
    driver: "pca953x",
    options: { inputs: 0x3c },
    change: { inputs: 0xc3 },
  },
  {
    model: "pcf8574",
    address: "0x38",
    driver: "pcf857x",
    options: { inputs: 0xf0 },
    change: { inputs: 0xff },
  },
  {
    model: "pcf8574a",
    address: "0x39",
    driver: "pcf857x",
    options: { inputs: 0x0f },
    change: { inputs: 0xf0 },
  },
  {
    model: "pcf8575",
    address: "0x22",
    driver: "pcf857x",
    options: { inputs: 0x1234 },
    change: { inputs: 0xfedc },
  },
];

const EXPANDER_PINS: Readonly<Record<string, number>> = {
  pca9555: 16,
  tca6416: 16,
  pca9554: 8,
  tca6408: 8,
  pcf8574: 8,
  pcf8574a: 8,
  pcf8575: 16,
};

/** Guest lines printing every expander's pin levels as `<phase>.<model>.pins`. */
function pinsDump(phase: string): string[] {
  return Object.entries(EXPANDER_PINS).map(([model, count]) => {
    const address = CLOCKS_AND_PINS.find((chip) => chip.model === model)?.address ?? "";
    return `echo "RESULT ${phase}.${model}.pins $(gpio_pins ${address} ${count})"`;
  });
}

/** `seconds` of a UTC date written as busybox `date -s` takes it. */
const epochOf = (text: string) => Date.parse(`${text.replace(" ", "T")}Z`) / 1000;

/** Seconds from the host's reading of an RTC to the end of the guest run that may pass. */
const RTC_SLACK_S = 60;

describeOrSkip(
  "upstream Linux drivers on the chip models",
  { skip, timeout: TEST_TIMEOUT_MS },
  () => {
    it("hwmon and iio sensors, and at24 on every 24Cxx size: readings follow the inputs set on the host; the DAC's output and the EEPROMs' bytes follow the guest", async (t) => {
      await withGuestBench(images, async (bench) => {
        const dac = "$(iio_dir 0x60)";
        let dacAtStep = { code: "", output: "" };
        const chips = [...SENSORS, ...EEPROMS];
        const booted = await bootWithChips(
          bench,
          t,
          chips,
          [
            ...bindLines(chips),
            // tmp102 refuses reads for its first conversion time (35 ms) after probe.
            "sleep 1",
            ...sensorDump("a"),
            `echo ${DAC_CODE} > ${dac}/out_voltage0_raw`,
            'echo "RESULT dac.write_status $?"',
            "step 1",
            // Past every driver's and chip's conversion or update interval.
            "sleep 1.5",
            ...sensorDump("b"),
            `echo 1 > ${dac}/store_eeprom`,
            'echo "RESULT dac.store_status $?"',
            `echo 1 > ${dac}/out_voltage0_powerdown`,
            'echo "RESULT dac.powerdown_status $?"',
            ...eepromLines(),
          ],
          async (steps) => {
            await steps.at(1, async () => {
              dacAtStep = {
                code: await steps.get("0x60", "code"),
                output: await steps.get("0x60", "output"),
              };
              await applyChanges(steps, SENSORS);
            });
          },
        );
        if (!booted) return;
        const { run, daemon, steps } = booted;
        assertBound(run, Object.fromEntries(chips.map((chip) => [chip.address, chip.driver])));
        assertStepsDone(run, 1);
        // at24 on every size: the nvmem file's size, and the last 16 bytes where the chip keeps them.
        for (const [index, { model, address, size }] of EEPROMS.entries()) {
          const pattern = eepromPattern(index);
          assertNear(run, `${model}.size`, size, 0);
          assert.equal(result(run, `${model}.write_status`), "0", model);
          assert.equal(result(run, `${model}.readback`).trim(), hexText(pattern), model);
          const held = await steps.read(address, size - 16, 16);
          assert.equal(held, Buffer.from(pattern).toString("hex"), model);
        }
        for (const reading of SENSOR_READINGS) {
          assertNear(run, `a.${reading.key}`, reading.before, reading.tolerance);
          assertNear(run, `b.${reading.key}`, reading.after, reading.tolerance);
        }
        // mcp4725: the guest's code reached the chip's output; the EEPROM and power-down too.
        assertNear(run, "a.mcp4725.out_voltage0_raw", 0, 0);
        assert.equal(result(run, "dac.write_status"), "0");
        assert.equal(dacAtStep.code, String(DAC_CODE));
        const volts = Number(dacAtStep.output);
        const expectedVolts = (3.3 * DAC_CODE) / 4096;
        assert.ok(Math.abs(volts - expectedVolts) < 1e-6, `DAC output ${dacAtStep.output} V`);
        assertNear(run, "b.mcp4725.out_voltage0_raw", DAC_CODE, 0);
        assert.equal(result(run, "dac.store_status"), "0");
        assert.equal(result(run, "dac.powerdown_status"), "0");
        assert.equal(await steps.get("0x60", "eeprom"), String(DAC_CODE));
        assert.equal(await steps.get("0x60", "output"), "0");
        assert.notEqual(await steps.get("0x60", "powerDown"), "normal");
        await stopDaemonCleanly(daemon);
      });
    });

    it("rtc and gpio: hwclock and GPIO lines follow the host; the guest's writes reach the chips", async (t) => {
      await withGuestBench(images, async (bench) => {
        let hostAtStep = { pca9555: "", pcf8574Pins: "", pcf8574Latch: "" };
        let stepReleasedAt = Number.NaN;
        const startedAt = Date.now() / 1000;
        const booted = await bootWithChips(
          bench,
          t,
          CLOCKS_AND_PINS,
          [
            ...bindLines(CLOCKS_AND_PINS),
            "r68=$(rtc_dev 0x68)",
            "r51=$(rtc_dev 0x51)",
            // -s copies the chip's time into the guest clock, whose seconds then show it.
            "hwclock -s -u -f $r68",
            'echo "RESULT a.ds3231.read_status $?"',
            'echo "RESULT a.ds3231.epoch $(date +%s)"',
            "hwmon_dump a.ds3231 0x68",
            "hwclock -s -u -f $r51",
            'echo "RESULT a.pcf8563.read_status $?"',
            'echo "RESULT a.pcf8563.epoch $(date +%s)"',
            ...pinsDump("a"),
            // Outputs: pca9555 line 0 high and line 15 low, pcf8574 line 4 low.
            "gpio_out 0x20 0 high",
            "gpio_out 0x20 15 low",
            "gpio_out 0x38 4 low",
            "step 1",
            "hwclock -s -u -f $r68",
            'echo "RESULT b.ds3231.read_status $?"',
            'echo "RESULT b.ds3231.epoch $(date +%s)"',
            "hwmon_dump b.ds3231 0x68",
            // VL set: the driver refuses the time until it is written again.
            "hwclock -r -u -f $r51 > /dev/null",
            'echo "RESULT b.pcf8563.read_status $?"',
            `date -u -s "${PCF8563_GUEST_WRITE}" > /dev/null`,
            "hwclock -w -u -f $r51",
            'echo "RESULT b.pcf8563.write_status $?"',
            "hwclock -s -u -f $r51",
            'echo "RESULT c.pcf8563.read_status $?"',
            'echo "RESULT c.pcf8563.epoch $(date +%s)"',
            `date -u -s "${DS3231_GUEST_WRITE}" > /dev/null`,
            "hwclock -w -u -f $r68",
            'echo "RESULT b.ds3231.write_status $?"',
            "date -u -s 1980-01-01 > /dev/null",
            "hwclock -s -u -f $r68",
            'echo "RESULT c.ds3231.epoch $(date +%s)"',
            ...pinsDump("b"),
          ],
          async (steps) => {
            await steps.at(1, async () => {
              hostAtStep = {
                pca9555: await steps.get("0x20", "pins"),
                pcf8574Pins: await steps.get("0x38", "pins"),
                pcf8574Latch: await steps.get("0x38", "latch"),
              };
              await applyChanges(steps, CLOCKS_AND_PINS);
              stepReleasedAt = Date.now() / 1000;
            });
          },
        );
        if (!booted) return;
        const { run, daemon, steps } = booted;
        const endedAt = Date.now() / 1000;
        assertBound(
          run,
          Object.fromEntries(CLOCKS_AND_PINS.map((chip) => [chip.address, chip.driver])),
        );
        assertStepsDone(run, 1);

        // ds3231: its configured time (22nd century) ran from the daemon's start; then the time set
        // on the host; the temperature sensor through hwmon; the guest's write with the century bit.
        assert.equal(result(run, "a.ds3231.read_status"), "0");
        assertNear(
          run,
          "a.ds3231.epoch",
          epochOf(DS3231_START.slice(0, 19)),
          stepReleasedAt - startedAt + 2,
        );
        assertNear(run, "a.ds3231.temp1_input", 22250, 0);
        assert.equal(result(run, "b.ds3231.read_status"), "0");
        assertNear(
          run,
          "b.ds3231.epoch",
          epochOf(DS3231_SET.slice(0, 19)) + RTC_SLACK_S / 2,
          RTC_SLACK_S / 2,
        );
        assertNear(run, "b.ds3231.temp1_input", 30500, 0);
        assert.equal(result(run, "b.ds3231.write_status"), "0");
        assertNear(run, "c.ds3231.epoch", epochOf(DS3231_GUEST_WRITE) + 5, 5);
        const ds3231Now = Date.parse(await steps.get("0x68", "time")) / 1000;
        assert.ok(
          ds3231Now >= epochOf(DS3231_GUEST_WRITE) &&
            ds3231Now <= epochOf(DS3231_GUEST_WRITE) + RTC_SLACK_S,
          `the DS3231 holds ${new Date(ds3231Now * 1000).toISOString()} after the guest wrote ${DS3231_GUEST_WRITE}`,
        );

        // pcf8563: host time; a flat battery (VL) makes reads fail until the guest sets the time.
        assert.equal(result(run, "a.pcf8563.read_status"), "0");
        assertNear(
          run,
          "a.pcf8563.epoch",
          (startedAt + stepReleasedAt) / 2,
          (stepReleasedAt - startedAt) / 2 + 2,
        );
        assert.notEqual(
          result(run, "b.pcf8563.read_status"),
          "0",
          "hwclock read a PCF8563 with VL set",
        );
        assert.equal(result(run, "b.pcf8563.write_status"), "0");
        assert.equal(result(run, "c.pcf8563.read_status"), "0");
        assertNear(run, "c.pcf8563.epoch", epochOf(PCF8563_GUEST_WRITE) + 5, 5);
        assert.equal(await steps.get("0x51", "voltageLow"), "false");
        assert.ok(endedAt > stepReleasedAt);

        // GPIO: the levels the host drives, and the outputs the guest drives.
        const before: Readonly<Record<string, number>> = {
          pca9555: 0xa55a,
          tca6416: 0x00ff,
          pca9554: 0x81,
          tca6408: 0x3c,
          pcf8574: 0xf0,
          pcf8574a: 0x0f,
          pcf8575: 0x1234,
        };
        const after: Readonly<Record<string, number>> = {
          // Line 0 driven high and line 15 low by the guest; the others follow the new inputs.
          pca9555: (0x0ff0 & ~0x8001) | 0x0001,
          tca6416: 0xff00,
          pca9554: 0x7e,
          tca6408: 0xc3,
          // Line 4 driven low by the guest's latch.
          pcf8574: 0xef,
          pcf8574a: 0xf0,
          pcf8575: 0xfedc,
        };
        for (const model of Object.keys(EXPANDER_PINS)) {
          assertNear(run, `a.${model}.pins`, before[model] ?? Number.NaN, 0);
          assertNear(run, `b.${model}.pins`, after[model] ?? Number.NaN, 0);
        }
        assert.deepEqual(hostAtStep, {
          pca9555: String((0xa55a & ~0x8001) | 0x0001),
          pcf8574Pins: String(0xf0 & 0xef),
          pcf8574Latch: String(0xef),
        });
        await stopDaemonCleanly(daemon);
      });
    });

    it("faults: at24 retries through the write cycle, lm75 read errors, an RTC gone and back, the rest undisturbed", async (t) => {
      await withGuestBench(images, async (bench) => {
        const chips: readonly Chip[] = [
          { model: "24c02", address: "0x50", driver: "at24", options: { writeCycleMs: 5 } },
          { model: "lm75", address: "0x48", driver: "lm75", options: { temperature: 40 } },
          { model: "ds3231", address: "0x68", driver: "rtc-ds1307" },
          // Another chip of the same driver beside the faulty one.
          { model: "lm75a", address: "0x49", driver: "lm75", options: { temperature: 20 } },
          // The scenario's chip: 30 °C before the guest is up, then a thermal event with a flaky read.
          { model: "lm75", address: "0x4b", driver: "lm75", options: { temperature: 25 } },
        ];
        const scenarioFile = join(bench.dir, "scenario.json");
        writeFileSync(
          scenarioFile,
          JSON.stringify({
            steps: [
              { at: 0.5, device: "0x4b", set: { temperature: 30 } },
              { at: SCENARIO_EVENT_S, device: "0x4b", fault: "nack", count: 2 },
              { at: SCENARIO_EVENT_S, device: "0x4b", set: { temperature: 85 } },
            ],
          }),
        );
        const eeprom = "/sys/bus/i2c/devices/0-0050/eeprom";
        const written = Array.from({ length: 16 }, (_, i) => (0xa0 + i * 7) & 0xff);
        const octal = written.map((byte) => `\\${byte.toString(8).padStart(3, "0")}`).join("");
        const readEeprom = `dd if=${eeprom} bs=16 skip=2 count=1 2>/dev/null | od -An -tx1 -v | tr -s ' \\n' '  '`;
        const sensors = (tag: string) => [
          `echo "RESULT ${tag}.lm75 $(value $(ls -d /sys/bus/i2c/devices/0-0048/hwmon/hwmon*)/temp1_input)"`,
          `echo "RESULT ${tag}.lm75a $(value $(ls -d /sys/bus/i2c/devices/0-0049/hwmon/hwmon*)/temp1_input)"`,
        ];
        const booted = await bootWithChips(
          bench,
          t,
          chips,
          [
            ...bindLines(chips),
            "sleep 0.5",
            // 16 bytes at 0x20: two 8-byte pages; the second and the read-back meet the write cycle.
            `printf '${octal}' | dd of=${eeprom} bs=16 seek=2 count=1 conv=notrunc 2>/dev/null`,
            'echo "RESULT at24.write_status $?"',
            `echo "RESULT at24.after $(${readEeprom})"`,
            ...sensors("a"),
            "r=$(rtc_dev 0x68)",
            "hwclock -r -u -f $r > /dev/null",
            'echo "RESULT rtc.a $?"',
            "step 1",
            ...sensors("try1"),
            ...sensors("try2"),
            ...sensors("try3"),
            "step 2",
            "hwclock -r -u -f $r > /dev/null",
            'echo "RESULT rtc.b $?"',
            ...sensors("gone"),
            `echo "RESULT at24.gone $(${readEeprom})"`,
            "step 3",
            "hwclock -r -u -f $r > /dev/null",
            'echo "RESULT rtc.c $?"',
            // The scenario's chip, polled until the thermal event: each change of reading once.
            'echo "RESULT scenario.uptime $(cut -d" " -f1 /proc/uptime)"',
            "seen=''; last=''; n=0",
            "while [ $n -lt 240 ]; do",
            "  v=$(value $(ls -d /sys/bus/i2c/devices/0-004b/hwmon/hwmon*)/temp1_input)",
            '  [ "$v" != "$last" ] && seen="$seen $v" && last=$v',
            '  [ "$v" = 85000 ] && break',
            "  sleep 0.25; n=$((n + 1))",
            "done",
            'echo "RESULT scenario.readings$seen"',
          ],
          async (steps) => {
            await steps.at(1, () => steps.fault("0x48 nack count=2"));
            await steps.at(2, () => steps.fault("0x68 disappear"));
            await steps.at(3, () => steps.fault("0x68 clear"));
          },
          ["--trace", "--scenario", scenarioFile],
        );
        if (!booted) return;
        const { run, daemon } = booted;
        assertBound(run, Object.fromEntries(chips.map((chip) => [chip.address, chip.driver])));
        assertStepsDone(run, 3);

        // at24: the write and the read-back went through, after NACKed attempts in the write cycle.
        assert.equal(result(run, "at24.write_status"), "0");
        const hexBytes = written.map((byte) => byte.toString(16).padStart(2, "0")).join(" ");
        assert.equal(result(run, "at24.after").trim(), hexBytes);
        const trace = daemon.stdout.split("\n");
        const eepromLines = trace.filter((line) => /@0x50\b/.test(line));
        // Without a "pagesize" property at24 writes one byte at a time: each write after the first
        // meets the previous one's write cycle, is NACKed, and at24 retries it until it is taken.
        const byteWrites = eepromLines.filter((line) => / w2@0x50 0x2[0-9a-f] /.test(line));
        assert.ok(
          byteWrites.some((line) => / nack:1 w2@0x50 /.test(line)),
          `no NACKed write in the trace:\n${eepromLines.join("\n")}`,
        );
        const taken = byteWrites.filter((line) => / ok w2@0x50 /.test(line));
        assert.deepEqual(
          taken.map((line) => / w2@0x50 (0x[0-9a-f]{2}) /.exec(line)?.[1]),
          written.map((_, i) => `0x${(0x20 + i).toString(16)}`),
        );
        assert.ok(!eepromLines.some((line) => line.includes("[injected")));

        // lm75: two hwmon read errors, then the reading.
        assertNear(run, "a.lm75", 40000, 0);
        assert.equal(result(run, "try1.lm75"), "ERR");
        assert.equal(result(run, "try2.lm75"), "ERR");
        assertNear(run, "try3.lm75", 40000, 0);
        assert.equal(countLines(daemon.stdout, "[injected 0x48:"), 2);

        // ds3231: read, gone (hwclock fails), back after clear.
        assert.equal(result(run, "rtc.a"), "0");
        assert.notEqual(result(run, "rtc.b"), "0", "hwclock read an RTC that had disappeared");
        assert.equal(result(run, "rtc.c"), "0");
        assert.ok(countLines(daemon.stdout, "[injected 0x68:") >= 1);

        // The others: every reading and every transfer to them succeeded while the faults fired.
        // The scenario: set before the guest looked, then two failed reads and the new temperature,
        // with each step in the daemon's log.
        assert.equal(
          result(run, "scenario.readings"),
          "30000 ERR 85000",
          `the guest polled from uptime ${result(run, "scenario.uptime")} s; the event was at ${SCENARIO_EVENT_S} s`,
        );
        assert.equal(countLines(daemon.stdout, "[injected 0x4b:"), 2);
        assert.equal(countLines(daemon.stderr, "[scenario] scenario "), 5);
        for (const tag of ["a", "try1", "try2", "try3", "gone"])
          assertNear(run, `${tag}.lm75a`, 20000, 0);
        assertNear(run, "gone.lm75", 40000, 0);
        assert.equal(result(run, "at24.gone").trim(), hexBytes);
        const bystander = trace.filter((line) => /@0x49\b/.test(line));
        assert.ok(bystander.length > 0);
        assert.deepEqual(
          bystander.filter((line) => !/ ok /.test(line)),
          [],
          "a transfer to 0x49 failed",
        );
        await stopDaemonCleanly(daemon);
      });
    });
  },
);
