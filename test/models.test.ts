// Integration: every built-in model through the real daemon, driven like QEMU + the Linux driver.
// One daemon serves devices from the -l shorthand and from a config file at once (the merge), so the
// test also proves both ways reach the same buses.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { I2cGuest, I2cOp } from "../src/frontend/i2c-driver.js";
import {
  transferOk,
  transferOkWithin,
  transfersInOnePass,
  withGuest,
  writeConfig,
} from "./helpers/configured-daemon.js";
import { MAIN_JS, makeTempDir, WAIT_MS } from "./helpers/daemon.js";
import { scaled } from "./helpers/time.js";

const dir = makeTempDir("vdi2c-models-");
after(() => dir.remove());

const LM75 = 0x48;
const DS1307 = 0x68;
const EEPROM_24C32 = 0x50;
const EEPROM_24C16 = 0x58; // answers on 0x58..0x5f, one 256-byte block each
const REGISTERS = 0x40;

const SHORTHAND = `sim:${LM75}=lm75:0x68=ds1307`;
let config = "";
before(() => {
  config = writeConfig(dir.path, [
    { bus: "sim", address: "0x50", model: "24c32" },
    { bus: "sim", address: EEPROM_24C16, model: "24c16" },
    {
      bus: "sim",
      address: "0x40",
      model: "register-file",
      options: { registerSize: 2, size: 16, registers: { "0x0f": 0x1234 }, readOnly: [15] },
    },
  ]);
});

/** Runs `body` with a guest on a daemon serving every model (shorthand + config file). */
function withAllModels(body: (guest: I2cGuest) => Promise<void>): Promise<void> {
  return withGuest(dir.path, ["-l", SHORTHAND, "--config", config], body);
}

/** write(pointer) + read(length) in one transfer, as i2c_smbus / i2ctransfer do. */
const pointerRead = (addr: number, pointer: readonly number[], length: number): I2cOp[] => [
  { addr, write: Uint8Array.from(pointer) },
  { addr, read: length },
];

async function readAt(guest: I2cGuest, addr: number, pointer: readonly number[], length: number) {
  const [read] = await transferOk(guest, pointerRead(addr, pointer, length));
  return [...(read ?? [])];
}

/** readAt once the EEPROM's write cycle (tWR, 5 ms by default) is over: retried until it ACKs. */
async function readAtAfterCycle(
  guest: I2cGuest,
  addr: number,
  pointer: readonly number[],
  length: number,
) {
  const [read] = await transferOkWithin(guest, pointerRead(addr, pointer, length));
  return [...(read ?? [])];
}

const fromBcd = (byte: number) => (byte >> 4) * 10 + (byte & 0x0f);

describe("built-in models through the daemon", () => {
  it("24c32: 16-bit word address, write then read back once the write cycle is over", async () => {
    await withAllModels(async (guest) => {
      const data = [1, 2, 3, 4];
      const write = [{ addr: EEPROM_24C32, write: Uint8Array.of(0x0f, 0x23, ...data) }];
      const [written, early] = await transfersInOnePass(guest, [
        write,
        pointerRead(EEPROM_24C32, [0x0f, 0x23], 4),
      ]);
      assert.equal(written?.ok, true);
      assert.equal(early?.okCount, 0, "a read right behind the write: NACKed during tWR");
      assert.deepEqual(await readAtAfterCycle(guest, EEPROM_24C32, [0x0f, 0x23], 4), data);
      // With a 1-byte word address the data would have landed at 0x0f onwards: still erased.
      assert.deepEqual(await readAt(guest, EEPROM_24C32, [0x00, 0x0f], 2), [0xff, 0xff]);
      // Sequential reads run on past the write (and across pages): erased bytes follow.
      assert.deepEqual(await readAt(guest, EEPROM_24C32, [0x0f, 0x25], 4), [3, 4, 0xff, 0xff]);
    });
  });

  it("24c16: eight addresses, each one 256-byte block of one memory (and one write cycle)", async () => {
    await withAllModels(async (guest) => {
      const toBlock7 = [{ addr: EEPROM_24C16 + 7, write: Uint8Array.of(0xff, 0x77) }];
      const [toBlock1, early] = await transfersInOnePass(guest, [
        [{ addr: EEPROM_24C16 + 1, write: Uint8Array.of(0x10, 0xaa) }],
        toBlock7,
      ]);
      assert.equal(toBlock1?.ok, true);
      assert.equal(early?.ok, false, "block 1's write cycle NACKs block 7's address too");
      await transferOkWithin(guest, toBlock7);
      assert.deepEqual(await readAtAfterCycle(guest, EEPROM_24C16 + 1, [0x10], 1), [0xaa]);
      assert.deepEqual(await readAt(guest, EEPROM_24C16, [0x10], 1), [0xff], "block 0 untouched");
      assert.deepEqual(await readAt(guest, EEPROM_24C16 + 7, [0xff], 1), [0x77]);
      // Sequential reads cross from block 7's end back to the start of the memory.
      assert.deepEqual(await readAt(guest, EEPROM_24C16 + 7, [0xff], 2), [0x77, 0xff]);
    });
  });

  it("lm75: temperature read as `i2cget -y N 0x48 0x00 w` does (pointer write + 2-byte read)", async () => {
    await withAllModels(async (guest) => {
      // Default 25 °C: MSB 0x19 (whole degrees), LSB bit 7 = 0.5 °C.
      assert.deepEqual(await readAt(guest, LM75, [0x00], 2), [0x19, 0x00]);
      // T_OS (pointer 3) defaults to 80 °C, T_HYST (pointer 2) to 75 °C.
      assert.deepEqual(await readAt(guest, LM75, [0x03], 2), [0x50, 0x00]);
      assert.deepEqual(await readAt(guest, LM75, [0x02], 2), [0x4b, 0x00]);
    });
  });

  it("ds1307: BCD time registers close to the host clock (UTC, 24-hour mode)", async () => {
    await withAllModels(async (guest) => {
      const before = Date.now();
      const regs = await readAt(guest, DS1307, [0x00], 7);
      const after = Date.now();
      const [sec = 0, min = 0, hour = 0, , date = 0, month = 0, year = 0] = regs;
      for (const byte of regs) {
        assert.ok((byte & 0x0f) <= 9, `BCD digit in ${byte.toString(16)}`);
      }
      assert.equal(sec & 0x80, 0, "clock running (CH clear)");
      assert.equal(hour & 0x40, 0, "24-hour mode");
      const clock = Date.UTC(
        2000 + fromBcd(year),
        fromBcd(month) - 1,
        fromBcd(date),
        fromBcd(hour & 0x3f),
        fromBcd(min),
        fromBcd(sec & 0x7f),
      );
      // Whole seconds: the clock lies within [before, after] truncated to the second.
      assert.ok(
        clock >= Math.floor(before / 1000) * 1000 - 1000 && clock <= after,
        `${new Date(clock).toISOString()} within ${new Date(before).toISOString()}..${new Date(after).toISOString()}`,
      );
    });
  });

  it("register-file from the config file: initial values, writes, read-only registers", async () => {
    await withAllModels(async (guest) => {
      assert.deepEqual(await readAt(guest, REGISTERS, [0x0f], 2), [0x12, 0x34]);
      await transferOk(guest, [{ addr: REGISTERS, write: Uint8Array.of(0x01, 0xab, 0xcd) }]);
      assert.deepEqual(await readAt(guest, REGISTERS, [0x01], 2), [0xab, 0xcd]);
      await transferOk(guest, [{ addr: REGISTERS, write: Uint8Array.of(0x0f, 0, 0) }]);
      assert.deepEqual(await readAt(guest, REGISTERS, [0x0f], 2), [0x12, 0x34], "read-only");
    });
  });

  it("a guest reaches nothing else: an unlisted address fails", async () => {
    await withAllModels(async (guest) => {
      const result = await guest.driver.transfer([{ addr: 0x30, read: 1 }]);
      assert.equal(result.ok, false);
    });
  });
});

describe("configuration refusals through the daemon (exit 2)", () => {
  function runCli(args: readonly string[]) {
    return spawnSync(process.execPath, [MAIN_JS, "-s", join(dir.path, "no.sock"), ...args], {
      encoding: "utf8",
      timeout: scaled(WAIT_MS),
    });
  }

  it("one address in -l and in the config file", () => {
    const result = runCli(["-l", "sim:0x50=24c02", "--config", config]);
    assert.equal(result.status, 2, result.stderr);
    assert.match(
      result.stderr,
      /address 0x50 is given twice: by -l group 1 \("sim"\) and by .*devices\.json: devices\[0\]/,
    );
  });

  it("bad options, naming the file, the device and the option", () => {
    const bad = writeConfig(
      dir.path,
      [{ bus: "sim", address: "0x48", model: "lm75", options: { temperature: "hot" } }],
      "bad.json",
    );
    const result = runCli(["--config", bad]);
    assert.equal(result.status, 2, result.stderr);
    assert.match(
      result.stderr,
      /bad\.json: devices\[0\]: lm75 at 0x48: options\.temperature: expected a number from -55 to 125, found string "hot"/,
    );
  });

  it("an unknown key in the config file", () => {
    const bad = writeConfig(
      dir.path,
      [{ bus: "sim", address: "0x48", model: "lm75", option: {} }],
      "typo.json",
    );
    const result = runCli(["--config", bad]);
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /typo\.json: devices\[0\]\.option: unknown key/);
  });
});
