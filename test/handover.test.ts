// Integration: SIGUSR2 hands every connection over to a successor process. A front-end playing QEMU
// (real socket, memfd guest RAM, eventfds) keeps its one connection: it never reconnects and sends
// no message, its transfers go on against the successor (another pid), which serves the rings from
// where they stood, split and packed, with a backed EEPROM whose every acknowledged write is read
// back. A successor that cannot start leaves the daemon serving on. Emulated chips without a backing
// file (EEPROM, LM75 with a temperature set on the control socket, DS1307) answer the guest the
// same after two handovers, and after a failed one; one whose model has no saveState, or whose
// configuration changed, starts afresh and is logged, and a backed EEPROM keeps its pointer.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { I2cGuest, QEMU_FEATURES, QEMU_PROTOCOL_FEATURES_B } from "../src/frontend/i2c-driver.js";
import { VIRTIO_F_RING_PACKED } from "../src/virtio/features.js";
import { memoryEepromArgs, transferOk, writeConfig } from "./helpers/configured-daemon.js";
import {
  DaemonProcess,
  MAIN_JS,
  makeTempDir,
  WAIT_MS,
  waitUntil,
  withDaemonLog,
} from "./helpers/daemon.js";
import { memoryEeprom } from "./helpers/eeprom.js";
import { HandoverChain, processGone } from "./helpers/handover-chain.js";
import { scaled } from "./helpers/time.js";

const dir = makeTempDir();
after(() => dir.remove());

const EEPROM = 0x50;

const addressed = (offset: number, data: readonly number[] = []) =>
  Uint8Array.of(offset >> 8, offset & 0xff, ...data);

/** The pid the daemon said it handed over to at its `count`-th handover (0-based). */
async function successorPid(daemon: DaemonProcess, count: number): Promise<number> {
  let pid = 0;
  await waitUntil(() => {
    const seen = [
      ...daemon.stderr.matchAll(/handed over: the successor serves every socket pid=(\d+)/g),
    ];
    const match = seen[count];
    if (match === undefined) return false;
    pid = Number(match[1]);
    return true;
  }, "the handover");
  return pid;
}

const alive = (pid: number) => !processGone(pid);

for (const ring of ["split", "packed"] as const) {
  describe(`SIGUSR2 handover (${ring} ring)`, () => {
    it("hands the connection to a successor: no reconnect, no message, transfers go on", async () => {
      const config = writeConfig(
        dir.path,
        [memoryEeprom("24c32", EEPROM, { backing: `${ring}.bin` })],
        `${ring}.json`,
      );
      const prefix = join(dir.path, `${ring}.sock`);
      const daemon = new DaemonProcess(["-s", prefix, "--config", config, "--log-level", "debug"]);
      const chain = new HandoverChain(daemon);
      let guest: I2cGuest | null = null;
      try {
        await daemon.waitForListening([`${prefix}0`]);
        guest = await I2cGuest.connect(`${prefix}0`, {
          protocolFeatures: QEMU_PROTOCOL_FEATURES_B,
          features: ring === "packed" ? QEMU_FEATURES | VIRTIO_F_RING_PACKED : QEMU_FEATURES,
        });
        const written: number[] = [];
        let offset = 0;
        const writeSome = async (count: number) => {
          for (let i = 0; i < count; i++, offset += 4) {
            const data = [offset & 0xff, (offset >> 8) & 0xff, 0x5a, written.length & 0xff];
            const result = await guest!.driver.transfer([
              { addr: EEPROM, write: addressed(offset, data) },
            ]);
            assert.equal(result.ok, true, `write at ${offset}`);
            written.push(...data);
          }
        };
        await writeSome(5);
        for (let round = 0; round < 3; round++) {
          const handing = chain.handOver();
          // Transfers sent while the handover runs wait for the successor.
          await writeSome(3);
          const { from, to } = await handing;
          assert.notEqual(to, from);
          await writeSome(3);
        }
        assert.equal(new Set(chain.pids).size, 4);
        const [read] = (
          await guest.driver.transfer([
            { addr: EEPROM, write: addressed(0) },
            { addr: EEPROM, read: written.length },
          ])
        ).reads;
        assert.deepEqual([...(read ?? [])], written);
        assert.equal(daemon.stderr.match(/front-end connected/g)?.length, 1, daemon.stderr);
        assert.equal(daemon.stderr.match(/front-end resumed/g)?.length, 3, daemon.stderr);
        assert.doesNotMatch(daemon.stderr, /front-end disconnected/);
        await guest.close();
        guest = null;
        await chain.stop();
        assert.deepEqual(
          [...readFileSync(join(dir.path, `${ring}.bin`)).subarray(0, written.length)],
          written,
        );
      } catch (err) {
        throw withDaemonLog(err, daemon);
      } finally {
        await guest?.close();
        await chain.kill();
      }
    });
  });
}

describe("a successor that cannot start", () => {
  it("leaves the daemon serving the same connection; a later SIGUSR2 succeeds", async () => {
    const config = writeConfig(
      dir.path,
      [memoryEeprom("24c32", EEPROM, { backing: "rollback.bin" })],
      "rollback.json",
    );
    const good = readFileSync(config, "utf8");
    const prefix = join(dir.path, "rollback.sock");
    const daemon = new DaemonProcess(["-s", prefix, "--config", config]);
    const chain = new HandoverChain(daemon);
    let guest: I2cGuest | null = null;
    try {
      await daemon.waitForListening([`${prefix}0`]);
      guest = await I2cGuest.connect(`${prefix}0`, { protocolFeatures: QEMU_PROTOCOL_FEATURES_B });
      const write = async (offset: number, value: number) => {
        const result = await guest!.driver.transfer([
          { addr: EEPROM, write: addressed(offset, [value]) },
        ]);
        assert.equal(result.ok, true, `write at ${offset}`);
      };
      await write(0, 1);
      // The successor reads the configuration again: one that does not parse stops it (exit 2).
      writeFileSync(config, "{ not json");
      process.kill(daemon.pid, "SIGUSR2");
      await daemon.waitForLog(/handover failed: serving on reason=.*exited \(status 2\)/);
      await write(1, 2);
      assert.ok(!processGone(daemon.pid));
      assert.ok(existsSync(`${prefix}0`), "the socket file stays");
      writeFileSync(config, good);
      await chain.handOver();
      await write(2, 3);
      const [read] = (
        await guest.driver.transfer([
          { addr: EEPROM, write: addressed(0) },
          { addr: EEPROM, read: 3 },
        ])
      ).reads;
      assert.deepEqual([...(read ?? [])], [1, 2, 3]);
      assert.equal(daemon.stderr.match(/front-end connected/g)?.length, 1, daemon.stderr);
      await guest.close();
      guest = null;
      await chain.stop();
      assert.ok(!existsSync(`${prefix}0`), "the last owner removes the socket file");
    } catch (err) {
      throw withDaemonLog(err, daemon);
    } finally {
      await guest?.close();
      await chain.kill();
    }
  });
});

const LM75 = 0x48;
const RTC = 0x68;
/** The chips of the state tests, none with a backing file. */
const CHIPS = [
  memoryEeprom("24c02", EEPROM),
  { bus: "sim", address: "0x48", model: "lm75" },
  { bus: "sim", address: "0x68", model: "ds1307" },
];
/** What the guest sets the DS1307 to: 10:20:30 AM in 12-hour mode, 2031-05-06, weekday 2. */
const RTC_TIME = [0x30, 0x20, 0x40 | 0x10, 2, 0x06, 0x05, 0x31];
const RTC_SECONDS = 10 * 3600 + 20 * 60 + 30;

/** `vhost-device-i2c control <path> <words>`: its output, which must come with exit 0. */
function control(path: string, ...words: string[]): string {
  const run = spawnSync(process.execPath, [MAIN_JS, "control", path, ...words], {
    encoding: "utf8",
    timeout: scaled(WAIT_MS),
  });
  assert.equal(run.status, 0, run.stderr);
  return run.stdout.trim();
}

/**
 * What the guest and the control socket change in the chips: EEPROM bytes and pointer, LM75 limits,
 * configuration, pointer and temperature, DS1307 time, mode, weekday, control, RAM and pointer.
 * Returns when the clock was set.
 */
async function changeChips(guest: I2cGuest, controlPath: string): Promise<number> {
  await transferOk(guest, [{ addr: EEPROM, write: Uint8Array.of(0x30, 0x5a, 0x5b, 0x5c) }]);
  await transferOk(guest, [{ addr: EEPROM, write: Uint8Array.of(0xf8, 1, 2, 3, 4, 5, 6, 7, 8) }]);
  control(controlPath, "write", "0x50", "0x80", "c0ffee");
  await transferOk(guest, [{ addr: EEPROM, write: Uint8Array.of(0x31) }]); // the pointer
  await transferOk(guest, [{ addr: LM75, write: Uint8Array.of(3, 0x4b, 0x80) }]); // T_OS 75.5 °C
  await transferOk(guest, [{ addr: LM75, write: Uint8Array.of(2, 0x3c, 0x00) }]); // T_HYST 60 °C
  await transferOk(guest, [{ addr: LM75, write: Uint8Array.of(1, 0x02) }]); // interrupt mode
  await transferOk(guest, [{ addr: LM75, write: Uint8Array.of(3) }]); // the pointer: T_OS
  assert.equal(control(controlPath, "set", "0x48", "temperature", "31.5"), "31.5");
  const setAt = Date.now();
  await transferOk(guest, [{ addr: RTC, write: Uint8Array.of(0, ...RTC_TIME, 0x10, 0xaa, 0xbb) }]);
  control(controlPath, "write", "0x68", "0x36", "eeff"); // RAM at registers 0x3e, 0x3f
  await transferOk(guest, [{ addr: RTC, write: Uint8Array.of(0x3e) }]); // the pointer
  return setAt;
}

/**
 * Everything the guest reads from the chips, pointers first (then put back where they were), and
 * the DS1307's time of day in seconds, apart: it runs on.
 */
async function readChips(guest: I2cGuest): Promise<{ seen: unknown; rtcSeconds: number }> {
  const [eepromNext] = await transferOk(guest, [{ addr: EEPROM, read: 2 }]);
  const [lm75Pointed] = await transferOk(guest, [{ addr: LM75, read: 2 }]);
  const [rtcPointed] = await transferOk(guest, [{ addr: RTC, read: 2 }]);
  const [eeprom] = await transferOk(guest, [
    { addr: EEPROM, write: Uint8Array.of(0) },
    { addr: EEPROM, read: 256 },
  ]);
  const lm75: number[][] = [];
  for (const reg of [0, 1, 2, 3]) {
    const [value] = await transferOk(guest, [
      { addr: LM75, write: Uint8Array.of(reg) },
      { addr: LM75, read: 2 },
    ]);
    lm75.push([...(value ?? [])]);
  }
  const [rtcBytes] = await transferOk(guest, [
    { addr: RTC, write: Uint8Array.of(0) },
    { addr: RTC, read: 64 },
  ]);
  await transferOk(guest, [{ addr: EEPROM, write: Uint8Array.of(0x31) }]);
  await transferOk(guest, [{ addr: LM75, write: Uint8Array.of(3) }]);
  await transferOk(guest, [{ addr: RTC, write: Uint8Array.of(0x3e) }]);
  const rtc = [...(rtcBytes ?? [])];
  const bcd = (byte: number) => (byte >> 4) * 10 + (byte & 0x0f);
  const hours = rtc[2] ?? 0;
  const hour = (bcd(hours & 0x1f) % 12) + (hours & 0x20 ? 12 : 0);
  return {
    seen: {
      eepromNext: [...(eepromNext ?? [])],
      lm75Pointed: [...(lm75Pointed ?? [])],
      rtcPointed: [...(rtcPointed ?? [])],
      eeprom: [...(eeprom ?? [])],
      lm75,
      rtcTwelveHour: (hours & 0x40) !== 0,
      rtcDateAndAfter: rtc.slice(3),
    },
    rtcSeconds: hour * 3600 + bcd((rtc[1] ?? 0) & 0x7f) * 60 + bcd((rtc[0] ?? 0) & 0x7f),
  };
}

/** Reads the chips and checks them against `before`, the clock against the time it was set at. */
async function checkChips(guest: I2cGuest, before: unknown, setAt: number, when: string) {
  const { seen, rtcSeconds } = await readChips(guest);
  assert.deepEqual(seen, before, when);
  const expected = RTC_SECONDS + (Date.now() - setAt) / 1000;
  assert.ok(Math.abs(rtcSeconds - expected) <= 2, `${when}: clock ${rtcSeconds}, not ${expected}`);
}

/** A user model module whose chip (one latch byte) has no saveState. */
const LATCH_MODULE = `
export default {
  name: "plain-latch",
  description: "one latch byte, no saved state",
  create() {
    let latch = 0;
    const target = {
      start: () => true,
      write(data) {
        latch = data.at(-1) ?? latch;
        return true;
      },
      read(into) {
        into.fill(latch);
      },
      stop() {},
    };
    return { targets: [target] };
  },
};
`;

describe("emulated chips without a backing file across handovers", () => {
  it("answer the guest and the control socket the same after two handovers", async () => {
    const prefix = join(dir.path, "chips.sock");
    const controlPath = join(dir.path, "chips.ctl");
    const list = ["-l", `sim:${LM75}=lm75:${RTC}=ds1307`, ...memoryEepromArgs(dir.path)];
    const daemon = new DaemonProcess(["-s", prefix, ...list, "--control-socket", controlPath]);
    const pids = [daemon.pid];
    let guest: I2cGuest | null = null;
    try {
      await daemon.waitForListening([`${prefix}0`, controlPath]);
      guest = await I2cGuest.connect(`${prefix}0`);
      const setAt = await changeChips(guest, controlPath);
      const { seen: before } = await readChips(guest);
      assert.deepEqual((before as { eepromNext: number[] }).eepromNext, [0x5b, 0x5c]);
      assert.deepEqual((before as { lm75: number[][] }).lm75[0], [0x1f, 0x80], "31.5 °C");
      for (let round = 0; round < 2; round++) {
        process.kill(pids.at(-1) as number, "SIGUSR2");
        pids.push(await successorPid(daemon, round));
        await waitUntil(() => !alive(pids.at(-2) as number), "the predecessor to exit");
        await checkChips(guest, before, setAt, `after handover ${round + 1}`);
        assert.equal(control(controlPath, "get", "0x48", "temperature"), "31.5");
      }
      assert.doesNotMatch(daemon.stderr, /afresh|saved state/);
      await guest.close();
      guest = null;
      process.kill(pids.at(-1) as number, "SIGTERM");
      await waitUntil(() => !alive(pids.at(-1) as number), "the last successor to stop");
    } catch (err) {
      throw withDaemonLog(err, daemon);
    } finally {
      await guest?.close();
      for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
      await daemon.exited;
    }
  });

  it("one whose model cannot save, or whose configuration changed, starts afresh, logged; a backed EEPROM keeps its pointer", async () => {
    writeFileSync(join(dir.path, "latch.mjs"), LATCH_MODULE);
    const LATCH = 0x20;
    const devices = (temperature: number) => [
      memoryEeprom("24c02", EEPROM, { backing: "kept.bin" }),
      { bus: "sim", address: "0x48", model: "lm75", options: { temperature } },
      { bus: "sim", address: "0x20", module: "./latch.mjs" },
    ];
    const config = writeConfig(dir.path, devices(20), "afresh.json");
    const prefix = join(dir.path, "afresh.sock");
    const daemon = new DaemonProcess(["-s", prefix, "--config", config]);
    let guest: I2cGuest | null = null;
    let successor = 0;
    try {
      await daemon.waitForListening([`${prefix}0`]);
      guest = await I2cGuest.connect(`${prefix}0`);
      await transferOk(guest, [{ addr: EEPROM, write: Uint8Array.of(0x10, 1, 2, 3) }]);
      await transferOk(guest, [{ addr: EEPROM, write: Uint8Array.of(0x11) }]); // the pointer
      await transferOk(guest, [{ addr: LM75, write: Uint8Array.of(3) }]); // the pointer: T_OS
      await transferOk(guest, [{ addr: LATCH, write: Uint8Array.of(0x77) }]);
      writeConfig(dir.path, devices(30), "afresh.json"); // the LM75 is another chip now
      process.kill(daemon.pid, "SIGUSR2");
      successor = await successorPid(daemon, 0);
      await waitUntil(() => !alive(daemon.pid), "the daemon to exit");
      const [eeprom] = await transferOk(guest, [{ addr: EEPROM, read: 2 }]);
      assert.deepEqual([...(eeprom ?? [])], [2, 3], "the file's bytes from the state's pointer");
      const [lm75] = await transferOk(guest, [{ addr: LM75, read: 2 }]);
      assert.deepEqual([...(lm75 ?? [])], [0x1e, 0x00], "a new LM75: pointer 0, 30 °C");
      const [latch] = await transferOk(guest, [{ addr: LATCH, read: 1 }]);
      assert.deepEqual([...(latch ?? [])], [0], "the latch starts afresh");
      const noSave = daemon.stderr.match(
        /WARN .*the emulated device has no saveState: it starts afresh in the successor model=plain-latch address=0x20/g,
      );
      assert.equal(noSave?.length, 1, "logged once, at the handover");
      assert.match(
        daemon.stderr,
        /WARN .*an emulated device's saved state has no device of the same configuration now: dropped chip=0:\d+ model=lm75 address=0x48/,
      );
      assert.doesNotMatch(daemon.stderr, /24c02.*(afresh|dropped)|(afresh|dropped).*24c02/);
      await guest.close();
      guest = null;
      process.kill(successor, "SIGTERM");
      await waitUntil(() => !alive(successor), "the successor to stop");
    } catch (err) {
      throw withDaemonLog(err, daemon);
    } finally {
      await guest?.close();
      if (successor !== 0 && alive(successor)) process.kill(successor, "SIGKILL");
      if (!daemon.hasExited) daemon.child.kill("SIGKILL");
      await daemon.exited;
    }
  });

  it("answer the same when a successor fails and the daemon serves on, then after a handover", async () => {
    const config = writeConfig(dir.path, CHIPS, "chips-rollback.json");
    const good = readFileSync(config, "utf8");
    const prefix = join(dir.path, "chips-rollback.sock");
    const controlPath = join(dir.path, "chips-rollback.ctl");
    const daemon = new DaemonProcess([
      "-s",
      prefix,
      "--config",
      config,
      "--control-socket",
      controlPath,
    ]);
    let guest: I2cGuest | null = null;
    let successor = 0;
    try {
      await daemon.waitForListening([`${prefix}0`, controlPath]);
      guest = await I2cGuest.connect(`${prefix}0`);
      const setAt = await changeChips(guest, controlPath);
      const { seen: before } = await readChips(guest);
      writeFileSync(config, "{ not json");
      process.kill(daemon.pid, "SIGUSR2");
      await daemon.waitForLog(/handover failed: serving on reason=.*exited \(status 2\)/);
      await checkChips(guest, before, setAt, "serving on");
      assert.equal(control(controlPath, "get", "0x48", "temperature"), "31.5");
      writeFileSync(config, good);
      process.kill(daemon.pid, "SIGUSR2");
      successor = await successorPid(daemon, 0);
      await waitUntil(() => !alive(daemon.pid), "the daemon to exit");
      await checkChips(guest, before, setAt, "after the handover");
      assert.doesNotMatch(daemon.stderr, /afresh|saved state/);
      await guest.close();
      guest = null;
      process.kill(successor, "SIGTERM");
      await waitUntil(() => !alive(successor), "the successor to stop");
    } catch (err) {
      throw withDaemonLog(err, daemon);
    } finally {
      await guest?.close();
      if (successor !== 0 && alive(successor)) process.kill(successor, "SIGKILL");
      if (!daemon.hasExited) daemon.child.kill("SIGKILL");
      await daemon.exited;
    }
  });
});
