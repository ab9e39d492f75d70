// Integration: --fd-store under a service manager that keeps fds (FdStoreSupervisor, which behaves
// as systemd's Restart=always with FileDescriptorStoreMax=: newest first, deduplicated). The daemon is
// killed with SIGKILL five times while a front-end playing QEMU (real socket, memfd guest RAM,
// eventfds) keeps its one connection: every restart resumes it from the fd store, split and packed
// rings, and every write the guest saw acknowledged is read back and is in the backing file. A
// journal that cannot be read disconnects that guest alone; the other one resumes.
import assert from "node:assert/strict";
import { readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { I2cGuest, QEMU_FEATURES, QEMU_PROTOCOL_FEATURES_B } from "../src/frontend/i2c-driver.js";
import { VIRTIO_F_RING_PACKED } from "../src/virtio/features.js";
import { writeConfig } from "./helpers/configured-daemon.js";
import { MAIN_JS, makeTempDir, waitUntil } from "./helpers/daemon.js";
import { memoryEeprom } from "./helpers/eeprom.js";
import { FdStoreSupervisor } from "./helpers/fd-store-supervisor.js";

const dir = makeTempDir("vdi2c-crash-");
after(() => dir.remove());

const EEPROM = 0x50;

const addressed = (offset: number, data: readonly number[] = []) =>
  Uint8Array.of(offset >> 8, offset & 0xff, ...data);

/** Starts the daemon under the supervisor with one backed 24c32 (no write cycle) per socket. */
function supervise(name: string, sockets: number): { sup: FdStoreSupervisor; prefix: string } {
  const config = writeConfig(
    dir.path,
    [memoryEeprom("24c32", EEPROM, { backing: `${name}.bin` })],
    `${name}.json`,
  );
  const prefix = join(dir.path, `${name}.sock`);
  const sup = FdStoreSupervisor.start({
    command: [
      process.execPath,
      MAIN_JS,
      "-s",
      prefix,
      "-c",
      String(sockets),
      "--config",
      config,
      "--fd-store",
    ],
    dir: dir.path,
    // As contrib/systemd's unit: StartLimitBurst=20 in StartLimitIntervalSec=60.
    startLimit: { burst: 20, intervalMs: 60_000 },
  });
  return { sup, prefix };
}

/** Kills the main process (SIGKILL) and waits until its restart is ready. */
async function crash(sup: FdStoreSupervisor): Promise<void> {
  const since = sup.mark();
  sup.kill("SIGKILL");
  await sup.waitFor("exited", { since });
  await sup.waitFor("ready", { since });
}

for (const ring of ["split", "packed"] as const) {
  describe(`crash resume from the fd store (${ring} ring)`, () => {
    it("five SIGKILLs: the connection goes on, every acknowledged write is kept", async () => {
      const { sup, prefix } = supervise(`crash-${ring}`, 1);
      let guest: I2cGuest | null = null;
      try {
        await sup.waitFor("ready");
        guest = await I2cGuest.connect(`${prefix}0`, {
          protocolFeatures: QEMU_PROTOCOL_FEATURES_B,
          features: ring === "packed" ? QEMU_FEATURES | VIRTIO_F_RING_PACKED : QEMU_FEATURES,
        });
        const written: number[] = [];
        const writeSome = async (count: number) => {
          for (let i = 0; i < count; i++) {
            const offset = written.length;
            const data = [offset & 0xff, 0xc3];
            const result = await guest!.driver.transfer([
              { addr: EEPROM, write: addressed(offset, data) },
            ]);
            assert.equal(result.ok, true, `write at ${offset}`);
            written.push(...data);
          }
        };
        await writeSome(4);
        for (let round = 0; round < 5; round++) {
          await crash(sup);
          await writeSome(4);
        }
        const [read] = (
          await guest.driver.transfer([
            { addr: EEPROM, write: addressed(0) },
            { addr: EEPROM, read: written.length },
          ])
        ).reads;
        assert.deepEqual([...(read ?? [])], written);
        assert.equal(sup.stderr.match(/front-end connected/g)?.length, 1, sup.stderr);
        assert.equal(sup.stderr.match(/restarting from the fd store/g)?.length, 5, sup.stderr);
        assert.equal(sup.stderr.match(/vring resumed where the ring stands/g)?.length, 5);
        assert.deepEqual(
          [...readFileSync(join(dir.path, `crash-${ring}.bin`)).subarray(0, written.length)],
          written,
        );
        await guest.close();
        guest = null;
        // The connection left: its fds leave the store; the listening socket stays.
        await waitUntil(
          () => sup.storedNames().every((name) => !name.includes(".")),
          "the connection's fds to leave the store",
        );
        assert.deepEqual(sup.storedNames(), ["vdi2c-listen0"]);
      } catch (err) {
        throw sup.withLog(err);
      } finally {
        await guest?.close();
        await sup.stop();
      }
    });
  });
}

describe("a journal that cannot be read", () => {
  it("disconnects that guest alone; the other resumes", async () => {
    const { sup, prefix } = supervise("bad-journal", 2);
    const guests: I2cGuest[] = [];
    try {
      await sup.waitFor("ready");
      for (const i of [0, 1]) {
        const guest = await I2cGuest.connect(`${prefix}${i}`, {
          protocolFeatures: QEMU_PROTOCOL_FEATURES_B,
        });
        guests.push(guest);
        const result = await guest.driver.transfer([
          { addr: EEPROM, write: addressed(0x10 * i, [i]) },
        ]);
        assert.equal(result.ok, true);
      }
      // The ring runs on a data-plane thread, the messages on the main thread: a transfer can be
      // answered before the last start-up message (fire-and-forget, as QEMU sends it) was taken and
      // journaled. A reply proves every message before it was: only then is the journal spoiled.
      for (const guest of guests) await guest.frontend.getFeatures();
      const journal = sup.storedNames().find((name) => /^vdi2c-s1-.*\.journal$/.test(name));
      assert.ok(journal, sup.storedNames().join(" "));
      const [fd] = sup.fdsOf(journal);
      // Both state slots and their header: nothing readable is left.
      writeSync(fd as number, Buffer.alloc(200 * 1024, 0x7b), 0, 200 * 1024, 4096);
      await crash(sup);
      await waitUntil(
        () => /a connection in the fd store cannot be resumed/.test(sup.stderr),
        "the refusal",
      );
      const [first, second] = guests as [I2cGuest, I2cGuest];
      const ok = await first.driver.transfer([{ addr: EEPROM, write: addressed(0x20, [7]) }]);
      assert.equal(ok.ok, true, "the other guest resumes");
      await waitUntil(() => second.frontend.closed, "the refused guest to see its disconnect");
      assert.ok(!sup.storedNames().some((name) => name.startsWith("vdi2c-s1-")));
    } catch (err) {
      throw sup.withLog(err);
    } finally {
      for (const guest of guests) await guest.close();
      await sup.stop();
    }
  });
});
