// Integration: the real daemon with --control-socket. What an operator changes on the control socket
// is what the guest reads through vhost-user, and what the guest writes the operator reads back.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { statSync } from "node:fs";
import { after, before, describe } from "node:test";
import { ControlClient } from "../src/control/client.js";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import {
  type DaemonProcess,
  exists,
  itWithDaemonLog,
  MAIN_JS,
  makeTempDir,
  startDaemon,
} from "./helpers/daemon.js";
import { scaled } from "./helpers/time.js";

describe("daemon control socket on sim:0x48=lm75:0x50=24c02", () => {
  const dir = makeTempDir();
  const socket = `${dir.path}/vi2c.sock`;
  const control = `${dir.path}/control.sock`;
  let daemon: DaemonProcess;
  let vm: I2cGuest;
  let client: ControlClient;

  before(async () => {
    daemon = await startDaemon(
      ["-s", socket, "-l", "sim:0x48=lm75:0x50=24c02", "--control-socket", control],
      [`${socket}0`, control],
    );
    vm = await I2cGuest.connect(`${socket}0`);
    client = await ControlClient.connect(control);
  });

  after(async () => {
    client?.close();
    await vm?.close();
    const status = await daemon?.stop();
    assert.equal(exists(control), false, "control socket removed at exit");
    dir.remove();
    assert.deepEqual(status, { code: 0, signal: null });
  });
  /** `it` whose failure carries the daemon's stderr. */
  const check = itWithDaemonLog(() => daemon);

  /** The guest's LM75 temperature read: pointer 0 (temperature register), then 2 bytes. */
  async function guestTemperature(): Promise<number[]> {
    const result = await vm.driver.transfer([
      { addr: 0x48, write: Uint8Array.of(0x00) },
      { addr: 0x48, read: 2 },
    ]);
    assert.equal(result.ok, true);
    return [...(result.reads[0] ?? [])];
  }

  async function ok(line: string): Promise<string> {
    const reply = await client.request(line);
    assert.match(reply, /^ok( |$)/, `${line} -> ${reply}`);
    return reply.slice(3);
  }

  check("the control socket file is mode 0600", async () => {
    assert.equal(statSync(control).mode & 0o777, 0o600);
  });

  check("list shows both emulated chips", async () => {
    const list = JSON.parse(await ok("list")) as { address: string; model: string }[];
    assert.deepEqual(
      list.map((d) => [d.address, d.model]),
      [
        ["0x48", "lm75"],
        ["0x50", "24c02"],
      ],
    );
  });

  check("a temperature set on the control socket is what the guest reads", async () => {
    assert.equal(await ok("set 0x48 temperature 31.5"), "31.5");
    // LM75 format: MSB = whole degrees (two's complement), LSB bit 7 = 0.5 °C.
    assert.deepEqual(await guestTemperature(), [0x1f, 0x80]);
    await ok("set 0x48 temperature -10");
    assert.deepEqual(await guestTemperature(), [0xf6, 0x00]);
    assert.equal(await ok("get 0x48 temperature"), "-10");
    assert.match(daemon.stderr, /control set 0x48 temperature=31\.5/);
  });

  check("the model refuses an impossible temperature and the guest keeps the old one", async () => {
    assert.match(await client.request("set 0x48 temperature 1000"), /^error EINVAL /);
    assert.deepEqual(await guestTemperature(), [0xf6, 0x00]);
  });

  check("EEPROM bytes written on the control socket are read by the guest", async () => {
    assert.equal(await ok("write 0x50 0x20 cafe01"), "3");
    const result = await vm.driver.transfer([
      { addr: 0x50, write: Uint8Array.of(0x20) },
      { addr: 0x50, read: 3 },
    ]);
    assert.deepEqual([...(result.reads[0] ?? [])], [0xca, 0xfe, 0x01]);
  });

  check("EEPROM bytes written by the guest are read on the control socket", async () => {
    const written = await vm.driver.transfer([
      { addr: 0x50, write: Uint8Array.of(0x30, 0x11, 0x22, 0x33) },
    ]);
    assert.equal(written.ok, true);
    assert.equal(await ok("read 0x50 0x30 3"), "112233");
  });

  check("vhost-device-i2c control prints the payload and exits 0, or 1 on an error", async () => {
    const got = spawnSync(
      process.execPath,
      [MAIN_JS, "control", control, "get", "0x48", "temperature"],
      {
        encoding: "utf8",
        timeout: scaled(10_000),
      },
    );
    assert.equal(got.status, 0, got.stderr);
    assert.equal(got.stdout, "-10\n");
    const missing = spawnSync(
      process.execPath,
      [MAIN_JS, "control", control, "read", "0x51", "0", "1"],
      {
        encoding: "utf8",
        timeout: scaled(10_000),
      },
    );
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /ENODEV/);
  });
});
