// Integration: access control through the real daemon with the LD_PRELOAD fake adapter: remapping
// (the fake sees the host address), read-only devices (refused writes never reach the fake; only the
// configured register pointer, 1 or 2 bytes, may be written before a read; refusals are logged
// under a per-guest rate limit),
// per-guest lists (one guest cannot reach another's device) and host-device locks between daemons.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { RequestStatus } from "../src/i2c/protocol.js";
import { FakeI2c, fakeUnavailableReason } from "./fake-i2c/fake.js";
import { DaemonProcess, makeTempDir, withDaemon } from "./helpers/daemon.js";

const skip = fakeUnavailableReason() ?? false;

describe("access control through the daemon (LD_PRELOAD fake)", { skip }, () => {
  const dir = makeTempDir();
  let fake: FakeI2c;
  before(async () => {
    fake = await FakeI2c.create(
      ["adapter 3 funcs=i2c|emul", "device 3 0x50", "device 3 0x51", "device 3 0x52"].join("\n"),
    );
  });
  after(async () => {
    await fake?.cleanup();
    dir.remove();
  });
  const env = () => ({ ...fake.env({}), VHOST_DEVICE_I2C_LOCK_DIR: `${dir.path}/locks` });
  let n = 0;

  async function withGuests(
    args: readonly string[],
    count: number,
    body: (vms: I2cGuest[]) => Promise<void>,
  ): Promise<void> {
    const prefix = `${dir.path}/a${n++}.sock`;
    const paths = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
    await withDaemon(
      ["-s", prefix, "-c", String(count), ...args],
      paths,
      async () => {
        await fake.clearLog();
        const vms = await Promise.all(paths.map((p) => I2cGuest.connect(p)));
        try {
          await body(vms);
        } finally {
          for (const vm of vms) await vm.close();
        }
      },
      { env: env() },
    );
  }
  const busOps = async () => (await fake.readLog()).filter((e) => e.op !== "slave");

  it('remap "3:0x52@0x42": the guest addresses 0x42, the fake sees 0x52', async () => {
    await withGuests(["-l", "3:0x52@0x42"], 1, async ([vm]) => {
      assert.ok(vm);
      const result = await vm.driver.transfer([
        { addr: 0x42, write: Uint8Array.of(0x10) },
        { addr: 0x42, read: 2 },
      ]);
      assert.equal(result.ok, true);
      const direct = await vm.driver.transfer([{ addr: 0x52, read: 1 }]);
      assert.deepEqual(direct.statuses, [RequestStatus.ERR], "the host address is not a guest one");
      assert.deepEqual(
        (await busOps()).map((e) => [e.addr, e.dir]),
        [
          [0x52, "w"],
          [0x52, "r"],
        ],
      );
    });
  });

  it('read-only "3:0x52@0x42=ro": reads pass, writes never reach the fake', async () => {
    await withGuests(["-l", "3:0x52@0x42=ro"], 1, async ([vm]) => {
      assert.ok(vm);
      for (const ops of [
        [{ addr: 0x42, write: Uint8Array.of(0x10, 0xaa) }],
        [{ addr: 0x42, write: new Uint8Array(0) }],
        [{ addr: 0x42, write: Uint8Array.of(0x10) }],
        [
          { addr: 0x42, write: Uint8Array.of(0x10, 0xaa, 0xbb) },
          { addr: 0x42, read: 1 },
        ],
      ]) {
        const refused = await vm.driver.transfer(ops);
        assert.equal(refused.okCount, 0, JSON.stringify(ops));
      }
      assert.deepEqual(await busOps(), [], "nothing reached the adapter");
      const read = await vm.driver.transfer([
        { addr: 0x42, write: Uint8Array.of(0x10) },
        { addr: 0x42, read: 1 },
      ]);
      assert.equal(read.ok, true);
      assert.deepEqual(
        (await busOps()).map((e) => [e.addr, e.dir, e.data]),
        [
          [0x52, "w", [0x10]],
          [0x52, "r", [0x10]],
        ],
      );
    });
  });

  it('read-only "=ro" (8-bit register pointer): [w2 reg,val][r1] is refused, no write reaches the bus', async () => {
    await withGuests(["-l", "3:0x50=ro"], 1, async ([vm]) => {
      assert.ok(vm);
      const regWrite = await vm.driver.transfer([
        { addr: 0x50, write: Uint8Array.of(0x10, 0xab) },
        { addr: 0x50, read: 1 },
      ]);
      assert.equal(regWrite.okCount, 0, "a register address plus a data byte before a read");
      const chained = await vm.driver.transfer(
        [0x20, 0x21, 0x22, 0x23].flatMap((reg) => [
          { addr: 0x50, write: Uint8Array.of(reg, 0x5a) },
          { addr: 0x50, read: 1 },
        ]),
      );
      assert.equal(chained.okCount, 0, "four [w2][r1] pairs in one transfer");
      assert.deepEqual(await busOps(), [], "nothing reached the adapter");
      const read = await vm.driver.transfer([
        { addr: 0x50, write: Uint8Array.of(0x10) },
        { addr: 0x50, read: 1 },
      ]);
      assert.equal(read.ok, true);
      assert.deepEqual([...read.reads[0]!], [0x10], "register 0x10 unchanged (pattern=index)");
      assert.deepEqual(
        (await busOps()).map((e) => [e.dir, e.len]),
        [
          ["w", 1],
          ["r", 1],
        ],
        "only the 1-byte register address and the read reached the bus",
      );
    });
  });

  it('read-only "=ro16" and "pointerBytes": 2 (16-bit word address): [w2][rN] reads, [w1][r] and [w3][r] are refused', async () => {
    const config = `${dir.path}/ro16.json`;
    writeFileSync(
      config,
      JSON.stringify({ devices: [{ bus: 3, address: "0x51", readOnly: true, pointerBytes: 2 }] }),
    );
    for (const [args, addr] of [
      [["-l", "3:0x50=ro16"], 0x50],
      [["--config", config], 0x51],
    ] as const) {
      await withGuests(args, 1, async ([vm]) => {
        assert.ok(vm);
        const read = await vm.driver.transfer([
          { addr, write: Uint8Array.of(0x00, 0x10) },
          { addr, read: 4 },
        ]);
        assert.equal(read.ok, true, `${args.join(" ")}: a 2-byte word address before a read`);
        for (const pointer of [[0x10], [0x00, 0x10, 0xaa]]) {
          const refused = await vm.driver.transfer([
            { addr, write: Uint8Array.from(pointer) },
            { addr, read: 1 },
          ]);
          assert.equal(refused.okCount, 0, `${args.join(" ")}: ${pointer.length}-byte write`);
        }
        assert.deepEqual(
          (await busOps()).map((e) => [e.addr, e.dir, e.len]),
          [
            [addr, "w", 2],
            [addr, "r", 4],
          ],
        );
      });
    }
  });

  it("refused transfers are logged at most 10 lines a second per guest, with the count left out", async () => {
    const prefix = `${dir.path}/flood.sock`;
    await withDaemon(
      ["-s", prefix, "-l", "3:0x50=ro"],
      [`${prefix}0`],
      async (daemon) => {
        const vm = await I2cGuest.connect(`${prefix}0`);
        try {
          const start = Date.now();
          for (let i = 0; i < 200; i++) {
            const refused = await vm.driver.transfer([{ addr: 0x50, write: Uint8Array.of(i, 1) }]);
            assert.equal(refused.okCount, 0);
          }
          const floodMs = Date.now() - start;
          await new Promise((resolve) => setTimeout(resolve, 1100));
          await vm.driver.transfer([{ addr: 0x50, write: Uint8Array.of(0, 1) }]);
          await daemon.waitForLog(/transfer refused .*suppressed=\d+/);
          const lines = daemon.stderr.split("\n").filter((l) => l.includes("transfer refused"));
          // 200 refusals in floodMs: at most 10 lines per started second, plus the late one.
          assert.ok(
            lines.length <= 10 * (Math.ceil(floodMs / 1000) + 1) + 1,
            `${lines.length} lines for 200 refusals in ${floodMs} ms`,
          );
          assert.match(lines[0] ?? "", /WARN \[socket0\/i2c-3\] transfer refused/);
        } finally {
          await vm.close();
        }
      },
      { env: env() },
    );
  });

  it("per-guest lists (-c 2): guest 0 cannot reach guest 1's device", async () => {
    const config = `${dir.path}/per-guest.json`;
    writeFileSync(
      config,
      JSON.stringify({
        sockets: {
          "0": { devices: [{ bus: 3, address: "0x50" }] },
          "1": { devices: [{ bus: 3, address: "0x51" }] },
        },
      }),
    );
    await withGuests(["--config", config], 2, async ([vm0, vm1]) => {
      assert.ok(vm0 && vm1);
      const other = await vm0.driver.transfer([{ addr: 0x51, read: 1 }]);
      assert.deepEqual(other.statuses, [RequestStatus.ERR]);
      const own0 = await vm0.driver.transfer([{ addr: 0x50, read: 1 }]);
      const own1 = await vm1.driver.transfer([{ addr: 0x51, read: 1 }]);
      const cross = await vm1.driver.transfer([{ addr: 0x50, read: 1 }]);
      assert.deepEqual([own0.ok, own1.ok, cross.ok], [true, true, false]);
      assert.deepEqual(
        (await busOps()).map((e) => e.addr),
        [0x50, 0x51],
      );
    });
  });

  it("a second daemon on the same host device exits 2 naming the holder; shared allows it", async () => {
    const first = `${dir.path}/lock-a.sock`;
    await withDaemon(
      ["-s", first, "-l", "3:0x50"],
      [`${first}0`],
      async (holder) => {
        const second = new DaemonProcess(["-s", `${dir.path}/lock-b.sock`, "-l", "3:0x50"], {
          env: env(),
        });
        assert.deepEqual(await second.waitForExit(), { code: 2, signal: null });
        assert.match(
          second.stderr,
          new RegExp(`host device 0x50 on /dev/i2c-3 is in use by process ${holder.pid}`),
        );
      },
      { env: env() },
    );
    const shared = `${dir.path}/shared.json`;
    writeFileSync(shared, JSON.stringify({ devices: [{ bus: 3, address: "0x51", shared: true }] }));
    const a = `${dir.path}/shared-a.sock`;
    const b = `${dir.path}/shared-b.sock`;
    await withDaemon(
      ["-s", a, "--config", shared],
      [`${a}0`],
      () => withDaemon(["-s", b, "--config", shared], [`${b}0`], async () => {}, { env: env() }),
      { env: env() },
    );
  });
});
