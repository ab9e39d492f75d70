// Integration: a SIGHUP reload that changes an emulated device with a backing file, through the real
// daemon. Each kind of change (device read-only, address moved, "initial" added, a model option
// changed) reloads, with no guest connected and with a guest that connected before the reload and
// keeps writing after it. A guest connecting after the reload gets the new device; the older guest
// keeps its own until it disconnects. Both generations work on one image of the file: what either
// writes the other reads, and the file holds every acknowledged write after SIGTERM. Two devices on
// one file in one configuration are still refused, naming both; so is a device that needs another
// size than the open file (the reload fails, the configuration in use stays).
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { transferOk } from "./helpers/configured-daemon.js";
import { DaemonProcess, makeTempDir, waitUntil, withDaemon } from "./helpers/daemon.js";
import { memoryEeprom } from "./helpers/eeprom.js";

const root = makeTempDir("vdi2c-reload-backing-");
after(() => root.remove());

const SIZE_24C02 = 256;
const FIRST = 0x50;

/** What the file holds before the daemon starts: byte i is i (so an image from elsewhere shows). */
const PATTERN = Uint8Array.from({ length: SIZE_24C02 }, (_, i) => i);

type Device = Record<string, unknown>;

/** A 24c02 backed by eeprom.bin (no write cycle: a write is read back in the next transfer). */
const backed = (extra: { address?: string; options?: Device } & Device = {}): Device => {
  const { address = "0x50", options = {}, ...flags } = extra;
  return {
    ...memoryEeprom("24c02", Number(address), { backing: "eeprom.bin", ...options }),
    ...flags,
  };
};

function writeDevices(config: string, devices: readonly Device[], more: Device = {}): void {
  writeFileSync(config, `${JSON.stringify({ devices, ...more }, null, 2)}\n`);
}

/** The 24c02 at `addr`: one word-address byte, then data. */
const writeAt = (vm: I2cGuest, addr: number, offset: number, data: readonly number[]) =>
  vm.driver.transfer([{ addr, write: Uint8Array.of(offset, ...data) }]);

async function readAt(vm: I2cGuest, addr: number, offset: number, length: number) {
  const [bytes] = await transferOk(vm, [
    { addr, write: Uint8Array.of(offset) },
    { addr, read: length },
  ]);
  return [...(bytes ?? [])];
}

/** Sends SIGHUP; returns the outcome line the daemon logs ("reloaded ..." or "reload failed ..."). */
async function hangup(daemon: DaemonProcess): Promise<string> {
  const before = daemon.stderr.length;
  const outcome = /reloaded the configuration|reload failed[^\n]*/;
  const line = () => daemon.stderr.slice(before).match(outcome)?.[0];
  daemon.child.kill("SIGHUP");
  await waitUntil(() => line() !== undefined || daemon.hasExited, "the reload's outcome");
  return line() ?? "(the daemon exited)";
}

/** Sends SIGHUP and fails at once (with the daemon's reason) unless the reload is taken. */
async function reload(daemon: DaemonProcess): Promise<void> {
  assert.equal(await hangup(daemon), "reloaded the configuration", "the reload is taken");
}

interface Change {
  readonly name: string;
  readonly device: Device;
  /** The address the new device answers on. */
  readonly address: number;
  /** A write by a guest of the new configuration lands (false: refused or ignored). */
  readonly writable: boolean;
  /** What a write by the new guest returns: acknowledged (ignored by the chip's WP pin) or refused. */
  readonly writeAcknowledged: boolean;
}

const CHANGES: readonly Change[] = [
  {
    name: "readOnly added",
    device: backed({ readOnly: true }),
    address: FIRST,
    writable: false,
    writeAcknowledged: false,
  },
  {
    name: "address moved 0x50 -> 0x51",
    device: backed({ address: "0x51" }),
    address: 0x51,
    writable: true,
    writeAcknowledged: true,
  },
  {
    name: "initial added",
    device: backed({ options: { initial: "a1a2a3" } }),
    address: FIRST,
    writable: true,
    writeAcknowledged: true,
  },
  {
    name: "model option changed (the chip's WP pin, options.readOnly)",
    device: backed({ options: { readOnly: true } }),
    address: FIRST,
    writable: false,
    writeAcknowledged: true,
  },
];

/** Checks the new guest's device: its address, the shared image, and writes as the change says. */
async function checkNewDevice(vm: I2cGuest, change: Change, expectedAt: Map<number, number>) {
  if (change.address !== FIRST) {
    const gone = await vm.driver.transfer([{ addr: FIRST, read: 1 }]);
    assert.equal(gone.ok, false, "the new device is not at the old address");
  }
  // The image is the file's: "initial" fills only a file that does not exist yet.
  assert.deepEqual(await readAt(vm, change.address, 0, 3), [0, 1, 2], "the image is the file's");
  for (const [offset, value] of expectedAt) {
    assert.deepEqual(await readAt(vm, change.address, offset, 1), [value], `offset ${offset}`);
  }
  const result = await writeAt(vm, change.address, 0x20, [0x33]);
  assert.equal(result.ok, change.writeAcknowledged, "the new guest's write status");
  const landed = change.writable ? 0x33 : 0x20;
  assert.deepEqual(await readAt(vm, change.address, 0x20, 1), [landed], "the new guest's write");
  return landed;
}

/** The file after the daemon stopped: the pattern with `writes` on top. */
function assertFile(path: string, writes: ReadonlyMap<number, number>): void {
  const expected = Uint8Array.from(PATTERN);
  for (const [offset, value] of writes) expected[offset] = value;
  assert.deepEqual([...readFileSync(path)], [...expected]);
}

describe("SIGHUP reload of a device with a backing file", () => {
  let serial = 0;
  const setup = () => {
    const dir = join(root.path, `case${serial++}`);
    mkdirSync(dir);
    const file = join(dir, "eeprom.bin");
    writeFileSync(file, PATTERN, { mode: 0o600 });
    const config = join(dir, "devices.json");
    writeDevices(config, [backed()]);
    return { dir, file, config, prefix: join(dir, "vi2c.sock") };
  };

  for (const change of CHANGES) {
    it(`${change.name}, no guest connected: a new guest gets the new device on the same file`, async () => {
      const { file, config, prefix } = setup();
      const writes = new Map<number, number>();
      await withDaemon(["-s", prefix, "--config", config], [`${prefix}0`], async (daemon) => {
        writeDevices(config, [change.device]);
        await reload(daemon);
        const vm = await I2cGuest.connect(`${prefix}0`);
        try {
          writes.set(0x20, await checkNewDevice(vm, change, writes));
        } finally {
          await vm.close();
        }
      });
      assertFile(file, writes);
    });

    it(`${change.name}, a guest connected and writing: both generations share the file`, async () => {
      const { file, config, prefix } = setup();
      const writes = new Map<number, number>();
      const sockets = [`${prefix}0`, `${prefix}1`];
      await withDaemon(["-s", prefix, "-c", "2", "--config", config], sockets, async (daemon) => {
        const guests = new Set<I2cGuest>();
        const connect = async (path: string) => {
          const vm = await I2cGuest.connect(path);
          guests.add(vm);
          return vm;
        };
        const disconnect = async (vm: I2cGuest) => {
          guests.delete(vm);
          await vm.close();
        };
        try {
          const old = await connect(sockets[0] as string);
          await transferOk(old, [{ addr: FIRST, write: Uint8Array.of(0x40, 0x11) }]);
          writes.set(0x40, 0x11);
          writeDevices(config, [change.device]);
          await reload(daemon);
          // The old guest keeps its device (at 0x50, writable) and keeps writing.
          await transferOk(old, [{ addr: FIRST, write: Uint8Array.of(0x41, 0x22) }]);
          writes.set(0x41, 0x22);

          const fresh = await connect(sockets[1] as string);
          const landed = await checkNewDevice(fresh, change, writes);
          writes.set(0x20, landed);
          assert.deepEqual(await readAt(old, FIRST, 0x20, 1), [landed], "the old guest sees it");
          await transferOk(old, [{ addr: FIRST, write: Uint8Array.of(0x42, 0x44) }]);
          writes.set(0x42, 0x44);
          assert.deepEqual(await readAt(fresh, change.address, 0x42, 1), [0x44], "and back");

          // The old generation closes with its last connection; the file stays open for the new.
          await disconnect(old);
          await daemon.waitForLog("closed the devices of the previous configuration");
          assert.deepEqual(await readAt(fresh, change.address, 0x40, 3), [0x11, 0x22, 0x44]);
          if (change.writable) {
            await transferOk(fresh, [{ addr: change.address, write: Uint8Array.of(0x43, 0x55) }]);
            writes.set(0x43, 0x55);
            assert.deepEqual(await readAt(fresh, change.address, 0x43, 1), [0x55]);
          }
          // Reconnecting, the old guest's VM gets the new device too.
          const again = await connect(sockets[0] as string);
          const moved = await again.driver.transfer([{ addr: FIRST, read: 1 }]);
          assert.equal(moved.ok, change.address === FIRST, "the old address after reconnecting");
          const rewrite = await writeAt(again, change.address, 0x44, [0x66]);
          assert.equal(rewrite.ok, change.writeAcknowledged, "a write after reconnecting");
          if (change.writable) writes.set(0x44, 0x66);
          assert.deepEqual(await readAt(fresh, change.address, 0x44, 1), [
            writes.get(0x44) ?? 0x44,
          ]);
        } finally {
          for (const vm of guests) await disconnect(vm);
        }
      });
      assertFile(file, writes);
    });
  }

  it("two devices on one file in one configuration are refused at start-up, naming both", async () => {
    const { dir, config, prefix } = setup();
    writeDevices(config, [backed()], {
      sockets: {
        "1": {
          devices: [
            { bus: "sim", address: "0x52", model: "24c02", options: { backing: "./eeprom.bin" } },
          ],
        },
      },
    });
    const daemon = new DaemonProcess(["-s", prefix, "-c", "2", "--config", config]);
    const status = await daemon.waitForExit();
    assert.equal(status.code, 2, daemon.stderr);
    assert.match(
      daemon.stderr,
      /backing file \S*eeprom\.bin is used by two emulated devices: \S*devices\.json: devices\[0\] \(24c02 at 0x50\) and \S*devices\.json: sockets\.1\.devices\[0\] \(24c02 at 0x52\)/,
    );
    assert.deepEqual([...readFileSync(join(dir, "eeprom.bin"))], [...PATTERN]);
  });

  it("two devices on one file (two spellings) are refused on reload; the current one stays", async () => {
    const { dir, file, config, prefix } = setup();
    symlinkSync(dir, join(dir, "same"));
    await withDaemon(["-s", prefix, "--config", config], [`${prefix}0`], async (daemon) => {
      writeDevices(config, [
        backed(),
        backed({ address: "0x52", options: { backing: "same/eeprom.bin" } }),
      ]);
      assert.match(
        await hangup(daemon),
        /^reload failed, keeping the current configuration .*is used by two emulated devices: \S*devices\.json: devices\[0\] \(24c02 at 0x50\) and \S*devices\.json: devices\[1\] \(24c02 at 0x52\)/,
      );
      const vm = await I2cGuest.connect(`${prefix}0`);
      try {
        assert.deepEqual(await readAt(vm, FIRST, 0, 3), [0, 1, 2]);
        await transferOk(vm, [{ addr: FIRST, write: Uint8Array.of(0x60, 0x66) }]);
        const missing = await vm.driver.transfer([{ addr: 0x52, read: 1 }]);
        assert.equal(missing.ok, false, "the refused configuration is not served");
      } finally {
        await vm.close();
      }
    });
    assertFile(file, new Map([[0x60, 0x66]]));
  });

  it("a device needing another size than the open file is refused on reload; the file is kept", async () => {
    const { file, config, prefix } = setup();
    await withDaemon(["-s", prefix, "--config", config], [`${prefix}0`], async (daemon) => {
      writeDevices(config, [{ ...backed(), model: "24c32" }]);
      assert.match(
        await hangup(daemon),
        /^reload failed, keeping the current configuration .*devices\[0\]: 24c32 at 0x50: backing file \S*eeprom\.bin holds 256 bytes, the device needs 4096/,
      );
      const vm = await I2cGuest.connect(`${prefix}0`);
      try {
        // Still the 24c02: one word-address byte.
        await transferOk(vm, [{ addr: FIRST, write: Uint8Array.of(0x61, 0x77) }]);
        assert.deepEqual(await readAt(vm, FIRST, 0x61, 1), [0x77]);
      } finally {
        await vm.close();
      }
    });
    assertFile(file, new Map([[0x61, 0x77]]));
  });
});
