// Integration: the vhost-user conversation with the real daemon as QEMU 7.2 holds it: the observed
// message orders (REFERENCE 5.3 (a) and (b)), a memory table replaced while running, many
// reconnects on one socket without leaking fds, and two sockets served at once.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { I2cGuest, QEMU_PROTOCOL_FEATURES_B } from "../src/frontend/i2c-driver.js";
import { RequestStatus } from "../src/i2c/protocol.js";
import { EventFd } from "../src/sys/eventfd.js";
import { GuestRam } from "../src/vhost-user/frontend.js";
import { settledFootprint, whenSocketFree } from "./fuzz/harness.js";
import { memoryEepromArgs } from "./helpers/configured-daemon.js";
import { type DaemonProcess, makeTempDir, withDaemon } from "./helpers/daemon.js";

const dir = makeTempDir();
after(() => dir.remove());

/** The vhost-user requests the daemon received on `socket`, in order (from its trace log). */
function requestsSeen(daemon: DaemonProcess, socket = "socket0"): string[] {
  const pattern = new RegExp(`^TRACE \\[${socket}\\] request request=(\\w+)`, "gm");
  return [...daemon.stderr.matchAll(pattern)].map((m) => m[1] ?? "");
}

/** Realize, DRIVER_OK start, two transfers (write, write+read), stop, the final CALL(A). */
async function runQemuSession(path: string, protocolFeatures: bigint): Promise<number> {
  const vm = await I2cGuest.connect(path, { protocolFeatures });
  try {
    assert.equal(
      (await vm.driver.transfer([{ addr: 0x50, write: Uint8Array.of(0, 0xc3) }])).ok,
      true,
    );
    const read = await vm.driver.transfer([
      { addr: 0x50, write: Uint8Array.of(0) },
      { addr: 0x50, read: 1 },
    ]);
    assert.deepEqual([...(read.reads[0] ?? [])], [0xc3]);
    const [base] = await vm.stop();
    const callA = EventFd.create();
    await vm.frontend.setVringCall(0, callA.fd);
    callA.close();
    return base ?? -1;
  } finally {
    await vm.close();
  }
}

const REALIZE_A = [
  "GET_FEATURES",
  "GET_PROTOCOL_FEATURES",
  "SET_PROTOCOL_FEATURES",
  "SET_OWNER",
  "GET_FEATURES",
  "SET_VRING_CALL",
  "SET_VRING_ERR",
];
const START_TAIL = [
  "SET_VRING_NUM",
  "SET_VRING_BASE",
  "SET_VRING_ADDR",
  "SET_VRING_KICK",
  "SET_VRING_ENABLE",
  "SET_VRING_CALL",
];
const STOP = ["SET_VRING_ENABLE", "GET_VRING_BASE", "SET_VRING_CALL"];

describe("QEMU 7.2 message order", () => {
  it("(a) no protocol features: serves realize, start, transfers and stop", async () => {
    const prefix = `${dir.path}/a.sock`;
    await withDaemon(
      ["-s", prefix, ...memoryEepromArgs(dir.path), "--log-level", "trace"],
      [`${prefix}0`],
      async (daemon) => {
        const base = await runQemuSession(`${prefix}0`, 0n);
        assert.equal(base, 3, "GET_VRING_BASE = the 3 chains the daemon consumed");
        await daemon.waitForLog("waiting for the next front-end");
        assert.deepEqual(requestsSeen(daemon), [
          ...REALIZE_A,
          "SET_VRING_CALL",
          "SET_FEATURES",
          "SET_MEM_TABLE",
          ...START_TAIL,
          ...STOP,
        ]);
        assert.doesNotMatch(daemon.stderr, /^(WARN|ERROR)/m);
      },
    );
  });

  it("(b) MQ|REPLY_ACK|CONFIGURE_MEM_SLOTS|STATUS asked: acks memory, serves status", async () => {
    const prefix = `${dir.path}/b.sock`;
    await withDaemon(
      ["-s", prefix, ...memoryEepromArgs(dir.path), "--log-level", "trace"],
      [`${prefix}0`],
      async (daemon) => {
        const base = await runQemuSession(`${prefix}0`, QEMU_PROTOCOL_FEATURES_B);
        assert.equal(base, 3);
        await daemon.waitForLog("waiting for the next front-end");
        const seen = requestsSeen(daemon);
        // The daemon does not offer CONFIGURE_MEM_SLOTS (QEMU 7.2 restarts would hang): the memory
        // table comes as SET_MEM_TABLE with NEED_REPLY, as in the MQ|REPLY_ACK|STATUS variant.
        assert.deepEqual(seen, [
          "GET_FEATURES",
          "GET_PROTOCOL_FEATURES",
          "SET_PROTOCOL_FEATURES",
          "GET_QUEUE_NUM",
          "SET_OWNER",
          "GET_FEATURES",
          "SET_VRING_CALL",
          "SET_VRING_ERR",
          "SET_VRING_CALL",
          "SET_FEATURES",
          "GET_STATUS",
          "SET_STATUS",
          "SET_MEM_TABLE",
          ...START_TAIL,
          ...STOP,
        ]);
        assert.match(daemon.stderr, /request=SET_MEM_TABLE size=\d+ fds=1 needReply=true/);
        assert.doesNotMatch(daemon.stderr, /^(WARN|ERROR)/m);
      },
    );
  });
});

describe("running daemon", () => {
  it("keeps serving after SET_MEM_TABLE replaces the memory table while running", async () => {
    const prefix = `${dir.path}/mem.sock`;
    await withDaemon(["-s", prefix, ...memoryEepromArgs(dir.path)], [`${prefix}0`], async () => {
      const vm = await I2cGuest.connect(`${prefix}0`);
      const extra = new GuestRam([{ guestPhysAddr: 0x400000, size: 0x10000 }]);
      try {
        assert.equal(
          (await vm.driver.transfer([{ addr: 0x50, write: Uint8Array.of(8, 0x5a) }])).ok,
          true,
        );
        // NEED_REPLY: the kick below travels on an eventfd and must not overtake the new table.
        await vm.frontend.setMemTable([...vm.ram.regions, ...extra.regions], { needReply: true });
        // Chains (indirect, as QEMU's 4-entry ring needs) whose buffers live in the new region only.
        const hdr = 0x400000;
        const status = 0x400010;
        const data = 0x400020;
        const header = new Uint8Array(8);
        new DataView(header.buffer).setUint16(0, 0x50 << 1, true);
        new DataView(header.buffer).setUint32(4, 1, true); // FAIL_NEXT: a write then a read
        extra.memory.write(hdr, header);
        extra.memory.write(data, Uint8Array.of(8));
        extra.memory.write(status, Uint8Array.of(0xee));
        const write = vm.driver.submitRaw(
          [
            { gpa: hdr, len: 8, writable: false },
            { gpa: data, len: 1, writable: false },
            { gpa: status, len: 1, writable: true },
          ],
          { indirect: true },
        );
        const readHdr = 0x400040;
        const readStatus = 0x400050;
        const readData = 0x400060;
        const header2 = new Uint8Array(8);
        new DataView(header2.buffer).setUint16(0, 0x50 << 1, true);
        new DataView(header2.buffer).setUint32(4, 2, true); // M_RD
        extra.memory.write(readHdr, header2);
        extra.memory.write(readStatus, Uint8Array.of(0xee));
        const read = vm.driver.submitRaw(
          [
            { gpa: readHdr, len: 8, writable: false },
            { gpa: readData, len: 1, writable: true },
            { gpa: readStatus, len: 1, writable: true },
          ],
          { indirect: true },
        );
        vm.driver.kick();
        await vm.driver.waitFor([write, read]);
        const byte = new Uint8Array(1);
        extra.memory.read(status, byte);
        assert.equal(byte[0], RequestStatus.OK);
        extra.memory.read(readStatus, byte);
        assert.equal(byte[0], RequestStatus.OK);
        extra.memory.read(readData, byte);
        assert.equal(byte[0], 0x5a);
        // And the old region still works through the driver.
        const again = await vm.driver.transfer([
          { addr: 0x50, write: Uint8Array.of(8) },
          { addr: 0x50, read: 1 },
        ]);
        assert.deepEqual([...(again.reads[0] ?? [])], [0x5a]);
      } finally {
        await vm.close();
        extra.close();
      }
    });
  });

  it("serves 100 connections in a row on one socket without leaking fds", async () => {
    const prefix = `${dir.path}/again.sock`;
    const paths = [`${prefix}0`];
    await withDaemon(["-s", prefix, ...memoryEepromArgs(dir.path)], paths, async (daemon) => {
      const cycle = async (n: number) => {
        // The daemon refuses a connection until it has seen the previous one hang up.
        const vm = await whenSocketFree(() => I2cGuest.connect(paths[0]!));
        try {
          const result = await vm.driver.transfer([{ addr: 0x50, write: Uint8Array.of(n & 0xff) }]);
          assert.equal(result.ok, true, `connection ${n}`);
        } finally {
          await vm.close();
        }
      };
      await cycle(0); // warm-up: lazily created handles exist from here on
      const before = (await settledFootprint(daemon, paths)).fds;
      for (let n = 1; n <= 100; n++) await cycle(n);
      const afterCount = (await settledFootprint(daemon, paths)).fds;
      assert.equal(afterCount, before, `fds before ${before}, after 100 reconnects ${afterCount}`);
    });
  });

  it("serves two sockets (-c 2) at once, both on the same devices", async () => {
    const prefix = `${dir.path}/two.sock`;
    const paths = [`${prefix}0`, `${prefix}1`];
    await withDaemon(["-s", prefix, "-c", "2", ...memoryEepromArgs(dir.path)], paths, async () => {
      const [vm0, vm1] = await Promise.all(paths.map((p) => I2cGuest.connect(p)));
      assert.ok(vm0 && vm1);
      try {
        const writes = await Promise.all([
          vm0.driver.transfer([{ addr: 0x50, write: Uint8Array.of(0x60, 0xa0) }]),
          vm1.driver.transfer([{ addr: 0x50, write: Uint8Array.of(0x68, 0xa1) }]),
        ]);
        assert.deepEqual(
          writes.map((w) => w.ok),
          [true, true],
        );
        // One emulated bus behind both sockets: each guest reads what the other wrote.
        const [r0, r1] = await Promise.all([
          vm0.driver.transfer([
            { addr: 0x50, write: Uint8Array.of(0x68) },
            { addr: 0x50, read: 1 },
          ]),
          vm1.driver.transfer([
            { addr: 0x50, write: Uint8Array.of(0x60) },
            { addr: 0x50, read: 1 },
          ]),
        ]);
        assert.deepEqual([...(r0.reads[0] ?? [])], [0xa1]);
        assert.deepEqual([...(r1.reads[0] ?? [])], [0xa0]);
      } finally {
        await Promise.all([vm0.close(), vm1.close()]);
      }
    });
  });
});
