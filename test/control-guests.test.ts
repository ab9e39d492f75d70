// Integration: the control socket with per-guest device lists and SIGHUP reloads, through the real
// daemon. Two guests each with their own LM75 at 0x48 are set apart by `<guest>:0x48` and each reads
// its own temperature; a bare 0x48 is ambiguous. After a reload the control socket serves the new
// configuration (and an unchanged chip keeps its state).
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { after, describe, it } from "node:test";
import { ControlClient } from "../src/control/client.js";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { makeTempDir, withDaemon } from "./helpers/daemon.js";

/** `{"sockets": {...}}`: per socket index, its device list. */
function writeSocketLists(path: string, sockets: Record<string, readonly unknown[]>): void {
  const lists = Object.fromEntries(
    Object.entries(sockets).map(([index, devices]) => [index, { devices }]),
  );
  writeFileSync(path, `${JSON.stringify({ sockets: lists }, null, 2)}\n`);
}

const lm75 = (address: string, temperature?: number) => ({
  bus: "sim",
  address,
  model: "lm75",
  ...(temperature === undefined ? {} : { options: { temperature } }),
});

/** The guest's LM75 temperature read: pointer 0 (temperature register), then 2 bytes. */
async function guestTemperature(vm: I2cGuest, addr: number): Promise<number[]> {
  const result = await vm.driver.transfer([
    { addr, write: Uint8Array.of(0x00) },
    { addr, read: 2 },
  ]);
  assert.equal(result.ok, true, `temperature read at 0x${addr.toString(16)}`);
  return [...(result.reads[0] ?? [])];
}

describe("control socket with a device list per guest (-c 2)", () => {
  const dir = makeTempDir();
  after(() => dir.remove());

  it("each guest's LM75 at 0x48 is reached as <guest>:0x48; a reload is served at once", async () => {
    const config = `${dir.path}/guests.json`;
    writeSocketLists(config, { "0": [lm75("0x48")], "1": [lm75("0x48")] });
    const prefix = `${dir.path}/g.sock`;
    const control = `${dir.path}/control.sock`;
    await withDaemon(
      ["-s", prefix, "-c", "2", "--config", config, "--control-socket", control],
      [`${prefix}0`, `${prefix}1`, control],
      async (daemon) => {
        const client = await ControlClient.connect(control);
        const ok = async (line: string) => {
          const reply = await client.request(line);
          assert.match(reply, /^ok( |$)/, `${line} -> ${reply}`);
          return reply.slice(3);
        };
        const vm0 = await I2cGuest.connect(`${prefix}0`);
        let vm1 = await I2cGuest.connect(`${prefix}1`);
        try {
          const list = JSON.parse(await ok("list")) as { name: string; guests: number[] }[];
          assert.deepEqual(
            list.map(({ name, guests }) => [name, guests]),
            [
              ["0:0x48", [0]],
              ["1:0x48", [1]],
            ],
          );
          assert.equal(await ok("set 0:0x48 temperature 20"), "20");
          assert.equal(await ok("set 1:0x48 temperature 30.5"), "30.5");
          assert.deepEqual(await guestTemperature(vm0, 0x48), [0x14, 0x00], "guest 0: 20 °C");
          assert.deepEqual(await guestTemperature(vm1, 0x48), [0x1e, 0x80], "guest 1: 30.5 °C");
          assert.match(
            await client.request("get 0x48 temperature"),
            /^error EAMBIGUOUS .*0:0x48 .*1:0x48/,
          );
          assert.match(daemon.stderr, /control set 1:0x48 temperature=30\.5/);

          // Guest 1's sensor moves to 0x49; guest 0's list is unchanged.
          await vm1.close();
          writeSocketLists(config, { "0": [lm75("0x48")], "1": [lm75("0x49", 42)] });
          daemon.child.kill("SIGHUP");
          await daemon.waitForLog("reloaded the configuration");
          assert.equal(await ok("get 1:0x49 temperature"), "42", "the new device is served");
          assert.match(await client.request("get 1:0x48 temperature"), /^error ENODEV guest 1 /);
          assert.equal(await ok("get 0x48 temperature"), "20", "unchanged chip, now unambiguous");
          assert.equal(await ok("set 1:0x49 temperature -5"), "-5");
          vm1 = await I2cGuest.connect(`${prefix}1`);
          assert.deepEqual(await guestTemperature(vm1, 0x49), [0xfb, 0x00], "guest 1: -5 °C");
          assert.deepEqual(await guestTemperature(vm0, 0x48), [0x14, 0x00], "guest 0 unchanged");
        } finally {
          client.close();
          await vm0.close();
          await vm1.close();
        }
      },
    );
  });
});
