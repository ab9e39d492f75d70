import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { FakeI2c, type FakeLogEntry, fakeUnavailableReason } from "../../test/fake-i2c/fake.js";
import type { MessageSpec, Plan, RunnerOutput, Step } from "../../test/fake-i2c/host-bus-runner.js";
import { scaled } from "../../test/helpers/time.js";
import { createLogger } from "../log.js";
import {
  decodeI2cFuncs,
  I2C_FUNC_I2C,
  I2C_FUNC_SMBUS_QUICK,
  I2C_FUNC_SMBUS_READ_BYTE,
  I2C_FUNC_SMBUS_WRITE_BYTE,
  type I2cDone,
  type I2cFuncs,
} from "../sys/i2c-dev.js";
import { hex, type I2cMessage } from "./bus.js";
import {
  type AdapterDev,
  classifyTransferError,
  HostBus,
  type HostBusOptions,
} from "./host-bus.js";

const RUNNER = fileURLToPath(new URL("../../test/fake-i2c/host-bus-runner.js", import.meta.url));
const unavailable = fakeUnavailableReason();

const I2C_ADAPTER = "adapter 3 funcs=i2c|emul\ndevice 3 0x50\ndevice 3 0x51\n";
const SMBUS_ADAPTER = "adapter 5 funcs=emul\ndevice 5 0x50\ndevice 5 0x51\n";

const w = (addr: number, ...data: number[]): MessageSpec => ({ addr, data });
const r = (addr: number, len: number): MessageSpec => ({ addr, read: true, len });

interface Run {
  out: RunnerOutput;
  /** Fake log lines after the open-time address checks, as "op addr dir data result". */
  ops: string[];
  entries: FakeLogEntry[];
}

function show(e: FakeLogEntry): string {
  const data = e.data.map((b) => b.toString(16).padStart(2, "0")).join("") || "-";
  return `${e.op} ${hex(e.addr)} ${e.dir} ${data} ${e.result}`;
}

/**
 * Every completion mode of HostBus: every suite below runs in each. The adaptive bus goes inline
 * after one fast transfer (and counts nothing as slow), so its suites run both ways: inline
 * transfers, and on the I/O thread the first one and every one that has to wait for another.
 */
const MODES = [
  { completion: "thread", name: "asynchronous", options: {} },
  { completion: "inline", name: "synchronous", options: {} },
  {
    completion: "adaptive",
    name: "adaptive",
    options: { inlineAfterFastTransfers: 1, fastTransferMs: 60_000 },
  },
] as const;

type Mode = (typeof MODES)[number];

async function runPlanIn(mode: Mode, config: string, plan: Plan): Promise<Run> {
  const fake = await FakeI2c.create(config);
  try {
    const modePlan: Plan = { ...plan, completion: mode.completion, ...mode.options };
    const child = await fake.run([RUNNER, JSON.stringify(modePlan)]);
    assert.equal(child.code, 0, `runner failed: ${child.stderr}`);
    const out = JSON.parse(child.stdout) as RunnerOutput;
    if (out.opened && mode.completion !== "adaptive") {
      const kind = mode.completion === "inline" ? "number" : "promise";
      assert.ok(
        out.returned.every((r) => r === kind),
        `transfer() returns a ${kind}: ${out.returned.join(",")}`,
      );
    }
    const log = await fake.readLog();
    const checks = out.opened ? plan.addrs.length : 0;
    assert.deepEqual(
      log.slice(0, checks).map(show),
      plan.addrs.slice(0, checks).map((a) => `slave ${hex(a)} - - ok`),
      "open checks every listed address once",
    );
    const entries = log.slice(checks);
    return { out, ops: entries.map(show), entries };
  } finally {
    await fake.cleanup();
  }
}

function results(out: RunnerOutput) {
  assert.ok(out.opened, `open failed: ${out.opened ? "" : out.error.message}`);
  return out.results;
}

const transfers = (...list: MessageSpec[][]): Step[] => list.map((t) => ({ transfer: t }));

for (const mode of MODES)
  describe(`HostBus on the fake adapter (${mode.name})`, { skip: unavailable ?? false }, () => {
    const runPlan = (config: string, plan: Plan): Promise<Run> => runPlanIn(mode, config, plan);

    it("runs a write+read as one I2C_RDWR with a repeated START", async () => {
      const { out, ops, entries } = await runPlan(I2C_ADAPTER, {
        adapter: 3,
        addrs: [0x50],
        steps: transfers([w(0x50, 0x10, 0xde, 0xad)], [w(0x50, 0x10), r(0x50, 2)]),
      });
      assert.deepEqual(results(out), [
        { done: 1, reads: [] },
        { done: 2, reads: [[0xde, 0xad]] },
      ]);
      assert.deepEqual(ops, ["rdwr 0x50 w 10dead ok", "rdwr 0x50 w 10 ok", "rdwr 0x50 r dead ok"]);
      assert.equal(entries[1]!.seq, entries[2]!.seq, "both messages in one ioctl");
    });

    it("reads device memory filled from a configured pattern", async () => {
      const { out } = await runPlan("adapter 4 funcs=i2c\ndevice 4 0x50 pattern=0xa5\n", {
        adapter: 4,
        addrs: [0x50],
        steps: transfers([w(0x50, 0xfe), r(0x50, 3)]),
      });
      assert.deepEqual(results(out), [{ done: 2, reads: [[0xa5, 0xa5, 0xa5]] }]);
    });

    it("carries transfers larger than its first exchange buffer, and small ones after them", async () => {
      const data = Array.from({ length: 200 }, (_, i) => (i * 7 + 3) & 0xff);
      const { out } = await runPlan(I2C_ADAPTER, {
        adapter: 3,
        addrs: [0x50],
        steps: transfers(
          [w(0x50, 0x00, ...data)],
          [w(0x50, 0x00), r(0x50, 256)],
          [w(0x50, 0x05), r(0x50, 2)],
        ),
      });
      const [write, dump, small] = results(out);
      assert.equal(write?.done, 1);
      assert.equal(dump?.done, 2);
      assert.deepEqual(dump?.reads[0]?.slice(0, 200), data);
      assert.deepEqual(small, { done: 2, reads: [data.slice(5, 7)] });
    });

    it("answers zero-length probes: present address ACKs, absent one NACKs", async () => {
      const { out, ops } = await runPlan(I2C_ADAPTER, {
        adapter: 3,
        addrs: [],
        steps: transfers([w(0x50)], [r(0x51, 0)], [w(0x52)]),
      });
      assert.deepEqual(
        results(out).map((x) => x.done),
        [1, 1, 0],
      );
      assert.deepEqual(ops, ["rdwr 0x50 w - ok", "rdwr 0x51 r - ok", "rdwr 0x52 w - ENXIO"]);
      assert.ok(out.log.some((l) => l.includes("transfer failed") && l.includes("code=ENXIO")));
    });

    it("falls back to SMBus quick once the adapter refuses zero-length I2C_RDWR", async () => {
      const { out, ops } = await runPlan(`${I2C_ADAPTER}nozerolen 3\n`, {
        adapter: 3,
        addrs: [],
        steps: transfers([w(0x50)], [r(0x51, 0)], [w(0x52)], [w(0x50, 0x00), r(0x50, 1)]),
      });
      assert.deepEqual(
        results(out).map((x) => x.done),
        [1, 1, 0, 2],
      );
      assert.deepEqual(ops, [
        "slave 0x50 - - ok",
        "smbus-quick 0x50 w - ok",
        "slave 0x51 - - ok",
        "smbus-quick 0x51 r - ok",
        "slave 0x52 - - ok",
        "smbus-quick 0x52 w - ENXIO",
        "rdwr 0x50 w 00 ok",
        "rdwr 0x50 r 00 ok",
      ]);
      const notices = out.log.filter((l) => l.includes("refuses zero-length"));
      assert.equal(notices.length, 1, "the refusal is learned once and remembered");
    });

    it("maps every SMBus command on an SMBus-only adapter", async () => {
      const { out, ops } = await runPlan(SMBUS_ADAPTER, {
        adapter: 5,
        addrs: [0x50],
        steps: transfers(
          [w(0x50)],
          [r(0x50, 0)],
          [w(0x50, 0x20, 0xaa)],
          [w(0x50, 0x20)],
          [r(0x50, 1)],
          [w(0x50, 0x20), r(0x50, 1)],
          [w(0x50, 0x30, 0x34, 0x12)],
          [w(0x50, 0x30), r(0x50, 2)],
          [w(0x50, 0x40, 0x01, 0x02), r(0x50, 2)],
          [w(0x50, 0x60, 1, 2, 3, 4)],
          [w(0x50, 0x60), r(0x50, 4)],
        ),
      });
      assert.deepEqual(results(out), [
        { done: 1, reads: [] },
        { done: 1, reads: [[]] },
        { done: 1, reads: [] },
        { done: 1, reads: [] },
        { done: 1, reads: [[0xaa]] },
        { done: 2, reads: [[0xaa]] },
        { done: 1, reads: [] },
        { done: 2, reads: [[0x34, 0x12]] },
        { done: 2, reads: [[0x42, 0x43]] },
        { done: 1, reads: [] },
        { done: 2, reads: [[1, 2, 3, 4]] },
      ]);
      assert.deepEqual(
        ops.filter((o) => !o.startsWith("slave 0x50")),
        [
          "smbus-quick 0x50 w - ok",
          "smbus-quick 0x50 r - ok",
          "smbus-byte-data 0x50 w 20aa ok",
          "smbus-byte 0x50 w 20 ok",
          "smbus-byte 0x50 r aa ok",
          "smbus-byte-data 0x50 w 20 ok",
          "smbus-byte-data 0x50 r aa ok",
          "smbus-word-data 0x50 w 303412 ok",
          "smbus-word-data 0x50 w 30 ok",
          "smbus-word-data 0x50 r 3412 ok",
          "smbus-proc-call 0x50 w 400102 ok",
          "smbus-proc-call 0x50 r 4243 ok",
          "smbus-i2c-block-data 0x50 w 6001020304 ok",
          "smbus-i2c-block-data 0x50 w 60 ok",
          "smbus-i2c-block-data 0x50 r 01020304 ok",
        ],
      );
    });

    it("uses I2C block commands where the byte and word commands are missing", async () => {
      const config = "adapter 6 funcs=read-i2c-block|write-i2c-block\ndevice 6 0x50\n";
      const { out, ops } = await runPlan(config, {
        adapter: 6,
        addrs: [],
        steps: transfers([w(0x50, 0x08, 0x77)], [w(0x50, 0x08), r(0x50, 2)], [w(0x50)]),
      });
      assert.deepEqual(results(out), [
        { done: 1, reads: [] },
        { done: 2, reads: [[0x77, 0x09]] },
        { done: 0, reads: [] },
      ]);
      assert.deepEqual(
        ops.filter((o) => !o.startsWith("slave")),
        [
          "smbus-i2c-block-data 0x50 w 0877 ok",
          "smbus-i2c-block-data 0x50 w 08 ok",
          "smbus-i2c-block-data 0x50 r 7709 ok",
        ],
      );
    });

    it("fails a transfer with no SMBus form without touching the adapter", async () => {
      const { out, ops } = await runPlan(SMBUS_ADAPTER, {
        adapter: 5,
        addrs: [],
        steps: transfers([w(0x50, 0x00), r(0x50, 33)], [w(0x50, 0x00), r(0x51, 1)], [r(0x50, 2)]),
      });
      assert.deepEqual(
        results(out).map((x) => x.done),
        [0, 0, 0],
      );
      assert.deepEqual(ops, []);
      assert.equal(out.log.filter((l) => l.includes("no SMBus form")).length, 3);
    });

    it("refuses at open an address owned by a kernel driver, naming it", async () => {
      const { out, ops } = await runPlan(`${I2C_ADAPTER}busy 3 0x51\n`, {
        adapter: 3,
        addrs: [0x50, 0x51],
        steps: [],
      });
      assert.equal(out.opened, false);
      assert.ok(!out.opened);
      assert.equal(out.error.code, "I2C_ADDRESS_BUSY");
      assert.match(out.error.message, /0x51/);
      assert.match(out.error.message, /\/dev\/i2c-3/);
      assert.deepEqual(ops, ["slave 0x50 - - ok", "slave 0x51 - - EBUSY"]);
    });

    it("turns an injected EIO into 0 and carries on", async () => {
      const { out, ops } = await runPlan(`${I2C_ADAPTER}error 3 0x52 EIO\n`, {
        adapter: 3,
        addrs: [0x50, 0x52],
        steps: transfers([w(0x52, 0x00), r(0x52, 1)], [w(0x50, 0x05), r(0x50, 1)]),
      });
      assert.deepEqual(results(out), [
        { done: 0, reads: [[0]] },
        { done: 2, reads: [[0x05]] },
      ]);
      assert.deepEqual(ops, ["rdwr 0x52 w 00 EIO", "rdwr 0x50 w 05 ok", "rdwr 0x50 r 05 ok"]);
      assert.ok(out.log.some((l) => l.startsWith("WARN") && l.includes("code=EIO")));
    });

    it("never interleaves two streams of SMBus transfers on one adapter", async () => {
      const streamA = Array.from({ length: 12 }, (_, i) => [w(0x50, i, 0xa0 + i)]);
      const streamB = Array.from({ length: 12 }, (_, i) => [w(0x51, i, 0xb0 + i)]);
      const submitted = streamA.flatMap((a, i) => [a, streamB[i]!]);
      const { out, ops } = await runPlan(`${SMBUS_ADAPTER}delay_us 5 300\n`, {
        adapter: 5,
        addrs: [0x50, 0x51],
        steps: [{ concurrent: submitted }],
      });
      assert.ok(results(out).every((x) => x.done === 1));
      const expected = submitted.flatMap(([m]) => {
        const bytes = m!.data!.map((b) => b.toString(16).padStart(2, "0")).join("");
        return [`slave ${hex(m!.addr)} - - ok`, `smbus-byte-data ${hex(m!.addr)} w ${bytes} ok`];
      });
      assert.deepEqual(ops, expected, "each I2C_SLAVE is followed by its own I2C_SMBUS, in order");
    });

    it("never interleaves concurrent I2C_RDWR transfers and keeps their order", async () => {
      const submitted = Array.from({ length: 16 }, (_, i) => [
        w(0x50 + (i % 2), i),
        r(0x50 + (i % 2), 1),
      ]);
      const { out, entries } = await runPlan(`${I2C_ADAPTER}delay_us 3 300\n`, {
        adapter: 3,
        addrs: [],
        steps: [{ concurrent: submitted }],
      });
      assert.deepEqual(
        results(out),
        submitted.map((_, i) => ({ done: 2, reads: [[i]] })),
      );
      const order = entries.map((e) => `${hex(e.addr)} ${e.dir}`);
      assert.deepEqual(
        order,
        submitted.flatMap(([m]) => [`${hex(m!.addr)} w`, `${hex(m!.addr)} r`]),
      );
    });

    it("close() lets queued transfers finish and fails later ones", async () => {
      const { out, ops } = await runPlan(I2C_ADAPTER, {
        adapter: 3,
        addrs: [],
        steps: [
          {
            closeWhile: [[w(0x50, 0x01, 0x11)], [w(0x51, 0x02, 0x22)]],
            afterClose: [[w(0x50, 0x03, 0x33)]],
          },
        ],
      });
      assert.deepEqual(
        results(out).map((x) => x.done),
        [1, 1, 0],
      );
      assert.deepEqual(ops, ["rdwr 0x50 w 0111 ok", "rdwr 0x51 w 0222 ok"]);
    });

    it("refuses at open an address I2C_SLAVE cannot take", async () => {
      const { out } = await runPlan(I2C_ADAPTER, { adapter: 3, addrs: [0x80], steps: [] });
      assert.ok(!out.opened);
      assert.equal(out.error.code, "I2C_ADDRESS_CHECK");
      assert.match(out.error.message, /0x80/);
    });

    it("says clearly when /dev/i2c-N does not exist", async (t) => {
      if (existsSync("/dev/i2c-97")) {
        t.skip("this host has a real /dev/i2c-97");
        return;
      }
      const { out } = await runPlan(I2C_ADAPTER, { adapter: 97, addrs: [0x50], steps: [] });
      assert.ok(!out.opened);
      assert.equal(out.error.code, "I2C_ADAPTER_MISSING");
      assert.match(out.error.message, /\/dev\/i2c-97/);
    });
  });

describe("HostBus adaptive completion on the fake adapter", { skip: unavailable ?? false }, () => {
  it("goes inline after 8 fast transfers, back to the I/O thread after a slow one; the wake fd counts each I/O-thread completion", async () => {
    const fast = `${I2C_ADAPTER}delay_us 3 0\n`;
    // 150 ms per message against a 50 ms threshold: slow whatever the machine's load. Both scaled:
    // under emulation an I/O-thread round trip of the fast adapter can take more than 50 ms.
    const slow = `${I2C_ADAPTER}delay_us 3 ${scaled(150) * 1000}\n`;
    const read = transfers([r(0x50, 1)]);
    const repeat = (count: number) => Array.from({ length: count }, () => read[0]!);
    const fake = await FakeI2c.create(fast);
    try {
      const plan: Plan = {
        adapter: 3,
        addrs: [0x50],
        completion: "adaptive",
        fastTransferMs: scaled(50),
        wake: true,
        steps: [
          ...repeat(9),
          { reconfigure: slow },
          ...repeat(2),
          { reconfigure: fast },
          ...repeat(9),
        ],
      };
      const child = await fake.run([RUNNER, JSON.stringify(plan)]);
      assert.equal(child.code, 0, `runner failed: ${child.stderr}`);
      const out = JSON.parse(child.stdout) as RunnerOutput;
      assert.ok(out.opened);
      assert.ok(out.results.every((t) => t.done === 1));
      const expected = [
        ...Array(8).fill("promise"),
        "number", // inline after 8 fast ones
        "number", // inline, but slow: the next ones go to the I/O thread
        "promise", // slow on the I/O thread: the count starts again
        ...Array(8).fill("promise"),
        "number",
      ];
      assert.deepEqual(out.returned, expected);
      assert.deepEqual(
        out.wakes,
        expected.map((kind) => (kind === "promise" ? 1 : 0)),
        "one wake-up per I/O-thread completion, none for inline ones",
      );
      const switches = out.log.filter((l) => /^DEBUG (fast adapter|slow transfer)/.test(l));
      assert.equal(switches.length, 3, switches.join("\n"));
      assert.match(switches[0]!, /fast adapter: transfers run inline .*fastInARow=8/);
      assert.match(switches[1]!, /slow transfer: transfers go to the I\/O thread .*ran=inline/);
      assert.match(switches[2]!, /fast adapter: transfers run inline/);
    } finally {
      await fake.cleanup();
    }
  });
});

// --- Error classification, log rate limit and the reopen state machine, on an injected adapter. ---

/** An SMBus-only controller (no I2C_FUNC_I2C). */
const SMBUS_ONLY = I2C_FUNC_SMBUS_QUICK | I2C_FUNC_SMBUS_READ_BYTE | I2C_FUNC_SMBUS_WRITE_BYTE;

const errorWithCode = (code: string) => Object.assign(new Error(code), { code });

/** A stand-in for an open /dev/i2c-N: counts what reaches it, fails as told. */
class StubDev implements AdapterDev {
  readonly funcs: I2cFuncs;
  /** Addresses a kernel driver owns: I2C_SLAVE gives EBUSY (tests may change it at run time). */
  readonly busy: Set<number>;
  slaveChecks = 0;
  /** Code every transfer fails with, or null. */
  failWith: string | null = null;
  /** Code an I/O-thread submission is refused with (thrown, nothing started), or null. */
  refuseWith: string | null = null;
  transfers = 0;
  closed = false;
  /** Messages an I2C_RDWR carries out (I2C_RDWR's return value), or null for all of them. */
  sent: number | null = null;
  /** How long each transfer takes on `clock` (set by stubBusIn), from submission to answer. */
  tookMs = 0;
  clock: { now: number } | null = null;

  constructor(funcs = I2C_FUNC_I2C | SMBUS_ONLY, busy: readonly number[] = []) {
    this.funcs = decodeI2cFuncs(funcs);
    this.busy = new Set(busy);
  }
  setSlave(addr: number): void {
    if (this.closed) throw errorWithCode("EBADF");
    this.slaveChecks++;
    if (this.busy.has(addr)) throw errorWithCode("EBUSY");
  }
  rdwr(msgs: readonly unknown[], done: I2cDone): void {
    this.#transfer((error) => done(error, this.sent ?? msgs.length));
  }
  smbus(_a: number, _rw: number, _c: number, _s: number, _d: Uint8Array, done: I2cDone): void {
    this.#transfer(done);
  }
  rdwrSync(msgs: readonly unknown[]): number {
    this.#transferInline();
    return this.sent ?? msgs.length;
  }
  smbusSync(_a: number, _rw: number, _c: number, _s: number, _d: Uint8Array): void {
    this.#transferInline();
  }
  /** Called inside each inline transfer, before it answers (tests may start another one here). */
  during: (() => void) | null = null;
  close(): void {
    this.closed = true;
  }
  /** Answers later, as an adapter's I/O thread does; a closed fd refuses at once. */
  #transfer(done: I2cDone): void {
    if (this.closed) throw errorWithCode("EBADF");
    if (this.refuseWith !== null) throw errorWithCode(this.refuseWith);
    this.transfers++;
    if (this.clock !== null) this.clock.now += this.tookMs;
    const failWith = this.failWith;
    queueMicrotask(() => done(failWith === null ? null : errorWithCode(failWith)));
  }
  /** Answers before it returns, as an inline transfer does; failures throw. */
  #transferInline(): void {
    if (this.closed) throw errorWithCode("EBADF");
    this.transfers++;
    if (this.clock !== null) this.clock.now += this.tookMs;
    this.during?.();
    if (this.failWith !== null) throw errorWithCode(this.failWith);
  }
}

/** A HostBus on stub adapters: `plan` answers each open in turn (a stub, or an errno to throw). */
function stubBusIn(mode: Mode, plan: (StubDev | string)[], options: HostBusOptions = {}) {
  const clock = { now: 0 };
  for (const dev of plan) if (dev instanceof StubDev) dev.clock = clock;
  const lines: string[] = [];
  const opened: string[] = [];
  const logger = createLogger("debug", { write: (line: string) => lines.push(line) });
  const bus = HostBus.open(3, [0x50], logger, {
    now: () => clock.now,
    openDev: (path) => {
      opened.push(path);
      const next = plan.shift();
      if (next === undefined || typeof next === "string") throw errorWithCode(next ?? "ENOENT");
      return next;
    },
    completion: mode.completion,
    ...mode.options,
    ...options,
  });
  const probe = (): number | Promise<number> =>
    bus.transfer([{ addr: 0x50, read: true, buf: new Uint8Array(1) } satisfies I2cMessage]);
  const take = () => lines.splice(0);
  return { bus, clock, lines, opened, probe, take };
}

describe("classifyTransferError", () => {
  it("sorts errnos into NACK, adapter gone and fault", () => {
    const kinds = [
      "ENXIO",
      "EREMOTEIO",
      "ENODEV",
      "ESHUTDOWN",
      "EBADF",
      "EIO",
      "ETIMEDOUT",
      "EAGAIN",
    ];
    assert.deepEqual(
      kinds.map((code) => classifyTransferError(code)),
      ["nack", "nack", "gone", "gone", "gone", "fault", "fault", "fault"],
    );
    assert.equal(classifyTransferError("UNKNOWN"), "fault");
  });
});

for (const mode of MODES)
  describe(`HostBus adapter errors (stub adapter, ${mode.name})`, () => {
    const stubBus = (plan: (StubDev | string)[], options: HostBusOptions = {}) =>
      stubBusIn(mode, plan, options);
    const synchronous = mode.completion === "inline";

    it(`says it is ${mode.name}, and what transfer() returns`, async () => {
      const dev = new StubDev();
      const { bus, probe } = stubBus([dev]);
      assert.equal(bus.synchronous, synchronous);
      assert.equal(bus.completion, mode.completion);
      // The adaptive bus starts on the I/O thread and goes inline after its first (fast) transfer.
      const result = probe();
      assert.equal(typeof result === "number", synchronous);
      assert.equal(await result, 1);
      const inline = mode.completion !== "thread";
      dev.failWith = "EIO";
      const failed = probe();
      assert.equal(typeof failed === "number", inline);
      assert.equal(await failed, 0);
      bus.close();
      const closed = probe();
      assert.equal(typeof closed === "number", inline);
      assert.equal(await closed, 0);
    });

    if (synchronous) {
      it("refuses a transfer started from inside another on the same adapter: it cannot wait", () => {
        const dev = new StubDev();
        const { probe, take } = stubBus([dev]);
        let nested: number | Promise<number> = -1;
        dev.during = () => {
          dev.during = null;
          nested = probe();
        };
        assert.equal(probe(), 1);
        assert.equal(nested, 0);
        assert.equal(dev.transfers, 1, "the nested transfer never reached the adapter");
        assert.ok(
          take().some((l) => /^WARN transfer refused: another runs on this adapter/.test(l)),
        );
      });
    }

    for (const code of ["EIO", "ETIMEDOUT", "EAGAIN"]) {
      it(`${code}: the transfer fails and a warning names it`, async () => {
        const dev = new StubDev();
        const { probe, take, bus } = stubBus([dev]);
        dev.failWith = code;
        assert.equal(await probe(), 0);
        const lines = take();
        assert.ok(
          lines.some((l) => l.startsWith("WARN transfer failed") && l.includes(`code=${code}`)),
          lines.join(""),
        );
        assert.equal(bus.up, true, "a fault does not take the adapter down");
        dev.failWith = null;
        assert.equal(await probe(), 1);
      });
    }

    for (const code of ["ENXIO", "EREMOTEIO"]) {
      it(`${code} (NACK): the transfer fails, logged at debug only`, async () => {
        const dev = new StubDev();
        const { probe, take } = stubBus([dev]);
        dev.failWith = code;
        assert.equal(await probe(), 0);
        const lines = take();
        assert.ok(
          lines.some((l) => l.startsWith("DEBUG transfer failed") && l.includes(`code=${code}`)),
        );
        assert.deepEqual(
          lines.filter((l) => l.startsWith("WARN")),
          [],
        );
      });
    }

    it("limits fault warnings per second and reports how many it left out", async () => {
      const dev = new StubDev();
      const { probe, take, clock } = stubBus([dev], { warnLinesPerSecond: 3 });
      dev.failWith = "EIO";
      take();
      for (let i = 0; i < 10; i++) assert.equal(await probe(), 0);
      assert.equal(take().filter((l) => l.startsWith("WARN")).length, 3);
      clock.now += 1000;
      assert.equal(await probe(), 0);
      const warns = take().filter((l) => l.startsWith("WARN"));
      assert.equal(warns.length, 2);
      assert.match(warns[0]!, /failed transfers not logged .*suppressed=7/);
      assert.match(warns[1]!, /transfer failed .*code=EIO/);
    });

    it("ENODEV: marks the adapter down, fails fast without touching it, reopens after the interval", async () => {
      const first = new StubDev();
      const second = new StubDev(SMBUS_ONLY);
      const { bus, probe, take, clock, opened } = stubBus([first, "ENOENT", second], {
        reopenIntervalMs: 1000,
      });
      first.failWith = "ENODEV";
      assert.equal(await probe(), 0);
      assert.equal(bus.up, false);
      assert.equal(first.closed, true, "the dead fd is closed");
      assert.ok(take().some((l) => /^WARN adapter i2c-3 gone.*code=ENODEV/.test(l)));

      clock.now += 999;
      for (let i = 0; i < 5; i++) assert.equal(await probe(), 0);
      assert.equal(first.transfers, 1, "no transfer reached the dead adapter");
      assert.equal(opened.length, 1, "no reopen before the interval");

      clock.now += 1;
      assert.equal(await probe(), 0, "still unplugged: the reopen fails");
      assert.equal(opened.length, 2);
      assert.equal(await probe(), 0);
      assert.equal(opened.length, 2, "one attempt per interval");
      assert.deepEqual(
        take().filter((l) => l.startsWith("WARN")),
        [],
        "retries are quiet",
      );

      clock.now += 1000;
      assert.equal(await probe(), 1, "re-plugged: the transfer runs on the new fd");
      assert.equal(bus.up, true);
      assert.equal(second.transfers, 1);
      assert.deepEqual(opened, ["/dev/i2c-3", "/dev/i2c-3", "/dev/i2c-3"]);
      assert.ok(
        take().some((l) => /^INFO adapter i2c-3 back .*mode=smbus/.test(l)),
        "functions re-read",
      );
    });

    it("an I2C_RDWR the adapter stopped early: the messages carried out count, the rest fail", async () => {
      const dev = new StubDev();
      const { bus, take } = stubBus([dev]);
      dev.sent = 4;
      const msgs = Array.from({ length: 6 }, (_, i) => ({
        addr: 0x50,
        read: i % 2 === 1,
        buf: new Uint8Array(1),
      }));
      assert.equal(await bus.transfer(msgs), 4);
      assert.ok(take().some((l) => /^WARN transfer cut short by the adapter .*sent=4\/6/.test(l)));
      assert.equal(bus.up, true, "the adapter stays up");
      dev.sent = null;
      assert.equal(await bus.transfer(msgs), 6);
    });

    it("an idle adapter whose node went away (driver unbound) is marked down and its fd closed, so the removal can finish", async () => {
      const first = new StubDev();
      const second = new StubDev();
      let present = true;
      const { bus, probe, take, clock } = stubBus([first, second], {
        reopenIntervalMs: 1000,
        nodePresent: () => present,
        removalCheckIntervalMs: 5,
      });
      await delay(30);
      assert.equal(bus.up, true, "the node is there: nothing happens");
      present = false;
      await delay(30);
      assert.equal(bus.up, false);
      assert.equal(first.closed, true, "the fd the kernel's removal waits for is closed");
      assert.ok(take().some((l) => /^WARN adapter i2c-3 gone.*code=ENOENT/.test(l)));
      assert.equal(await probe(), 0, "ERR while it is gone");
      assert.equal(first.transfers, 0);
      present = true;
      clock.now += 1000;
      assert.equal(await probe(), 1, "bound again: reopened");
      assert.equal(second.transfers, 1);
      bus.close();
    });

    it("checks the addresses again while transfers run: one a driver took later is refused until freed", async () => {
      const dev = new StubDev();
      const { probe, take, clock, bus } = stubBus([dev], { addressCheckIntervalMs: 2000 });
      take();
      assert.equal(await probe(), 1);
      assert.equal(dev.slaveChecks, 1, "checked at open only");
      dev.busy.add(0x50); // a kernel driver binds 0x50
      clock.now += 1999;
      assert.equal(await probe(), 1, "not noticed before the interval");
      clock.now += 1;
      assert.equal(await probe(), 0, "the next transfer after the interval finds the driver");
      assert.equal(dev.slaveChecks, 2);
      const transfersBefore = dev.transfers;
      for (let i = 0; i < 20; i++) assert.equal(await probe(), 0);
      assert.equal(dev.transfers, transfersBefore, "nothing reached the adapter for 0x50");
      assert.equal(dev.slaveChecks, 2, "one check per interval, not per transfer");
      const lines = take();
      assert.equal(
        lines.filter((l) =>
          /^WARN address 0x50 on \/dev\/i2c-3 is now in use by a kernel driver/.test(l),
        ).length,
        1,
        lines.join(""),
      );
      const refusals = lines.filter((l) =>
        /^WARN transfer refused: a kernel driver owns the address .*addr=0x50/.test(l),
      );
      assert.ok(refusals.length >= 1 && refusals.length <= 10, `rate-limited: ${refusals.length}`);
      assert.equal(bus.up, true, "the adapter stays up: only that address is refused");

      dev.busy.delete(0x50);
      clock.now += 2000;
      assert.equal(await probe(), 1, "released: transfers run again");
      assert.ok(take().some((l) => /^INFO address 0x50 on \/dev\/i2c-3 is free again/.test(l)));
    });

    it("an address check that finds the adapter gone marks it down", async () => {
      const dev = new StubDev();
      const { probe, take, clock, bus } = stubBus([dev], { addressCheckIntervalMs: 2000 });
      dev.closed = true; // every ioctl on it now fails with EBADF
      clock.now += 2000;
      assert.equal(await probe(), 0);
      assert.equal(bus.up, false);
      assert.ok(take().some((l) => /^WARN adapter i2c-3 gone.*code=EBADF/.test(l)));
    });

    it("keeps the adapter down when a kernel driver took a listed address meanwhile", async () => {
      const first = new StubDev();
      const grabbed = new StubDev(undefined, [0x50]);
      const free = new StubDev();
      const { bus, probe, take, clock } = stubBus([first, grabbed, free]);
      first.failWith = "ENODEV";
      await probe();
      take();
      clock.now += 1000;
      assert.equal(await probe(), 0);
      assert.equal(bus.up, false);
      assert.equal(grabbed.closed, true, "the refused fd is closed again");
      assert.equal(grabbed.transfers, 0);
      assert.ok(
        take().some((l) => /^WARN adapter i2c-3 is back but stays down.*kernel driver/.test(l)),
      );
      clock.now += 1000;
      assert.equal(await probe(), 1);
    });

    it("finds an adapter listed by name again under its new number", async () => {
      const first = new StubDev();
      const moved = new StubDev();
      const numbers = [7];
      const { bus, probe, take, clock, opened } = stubBus([first, moved], {
        adapterName: "Fake adapter",
        resolveAdapter: (name) => {
          assert.equal(name, "Fake adapter");
          const next = numbers.shift();
          if (next === undefined) throw errorWithCode("ADAPTER_NOT_FOUND");
          return next;
        },
      });
      first.failWith = "ENODEV";
      await probe();
      clock.now += 1000;
      assert.equal(await probe(), 1);
      assert.deepEqual(opened, ["/dev/i2c-3", "/dev/i2c-7"]);
      assert.equal(bus.name, "i2c-7");
      assert.equal(bus.path, "/dev/i2c-7");
      assert.ok(take().some((l) => /^INFO adapter i2c-7 back .*previous=i2c-3/.test(l)));
    });

    it("tries to reopen at most once per interval, whatever the transfer pattern", async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.record({ advance: fc.integer({ min: 0, max: 1500 }), transfers: fc.nat(3) }),
            {
              maxLength: 30,
            },
          ),
          async (steps) => {
            const first = new StubDev();
            const { probe, clock, opened } = stubBus([first], { reopenIntervalMs: 1000 });
            const attempts: number[] = [];
            first.failWith = "ENODEV";
            await probe();
            for (const step of steps) {
              clock.now += step.advance;
              for (let i = 0; i < step.transfers; i++) {
                const before = opened.length;
                assert.equal(await probe(), 0);
                if (opened.length > before) attempts.push(clock.now);
              }
            }
            for (let i = 1; i < attempts.length; i++) {
              assert.ok(
                attempts[i]! - attempts[i - 1]! >= 1000,
                `attempts at ${attempts.join(",")}`,
              );
            }
            assert.equal(first.transfers, 1, "the dead adapter saw only the failing transfer");
          },
        ),
        { numRuns: 50 },
      );
    });
  });

// --- Adaptive completion: where transfers run, from how long they take on the bus's clock. ---

const ADAPTIVE: Mode = MODES[2];

/** "number" or "promise" for each of `count` probes, awaited one after the other. */
async function kinds(probe: () => number | Promise<number>, count: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const result = probe();
    out.push(typeof result === "number" ? "number" : "promise");
    assert.equal(await result, 1);
  }
  return out;
}

const times = (count: number, kind: string): string[] => Array(count).fill(kind);

describe("HostBus adaptive completion (stub adapter, fake clock)", () => {
  /** Defaults: 8 fast transfers in a row, fast below 1 ms. */
  const adaptiveBus = (plan: (StubDev | string)[], options: HostBusOptions = {}) =>
    stubBusIn(ADAPTIVE, plan, {
      inlineAfterFastTransfers: undefined,
      fastTransferMs: undefined,
      ...options,
    });

  it("starts on the I/O thread, runs inline after 8 fast transfers, goes back after a slow inline one", async () => {
    const dev = new StubDev();
    const { bus, probe, take } = adaptiveBus([dev]);
    assert.equal(bus.synchronous, false, "it may return a Promise");
    assert.equal(bus.inlineNow, false, "a new adapter starts on its I/O thread");
    take();
    dev.tookMs = 0.999;
    assert.deepEqual(await kinds(probe, 8), times(8, "promise"));
    assert.ok(
      take().some((l) => /^DEBUG fast adapter: transfers run inline .*fastInARow=8/.test(l)),
    );
    assert.equal(bus.inlineNow, true, "the next transfer runs inline");
    assert.deepEqual(await kinds(probe, 5), times(5, "number"));
    dev.tookMs = 1;
    assert.equal(probe(), 1, "the slow one itself ran inline");
    assert.equal(bus.inlineNow, false, "back on the I/O thread");
    const lines = take();
    assert.ok(
      lines.some((l) =>
        /^DEBUG slow transfer: transfers go to the I\/O thread .*ms=1\.000 ran=inline/.test(l),
      ),
      lines.join(""),
    );
    dev.tookMs = 0;
    assert.deepEqual(await kinds(probe, 9), [...times(8, "promise"), "number"]);
  });

  it("counts fast transfers in a row: a slow one on the I/O thread starts the count again", async () => {
    const dev = new StubDev();
    const { probe } = adaptiveBus([dev]);
    assert.deepEqual(await kinds(probe, 7), times(7, "promise"));
    dev.tookMs = 5;
    assert.deepEqual(await kinds(probe, 1), ["promise"]);
    dev.tookMs = 0;
    assert.deepEqual(await kinds(probe, 9), [...times(8, "promise"), "number"]);
  });

  it("takes its thresholds as options", async () => {
    const dev = new StubDev();
    const { probe } = adaptiveBus([dev], { inlineAfterFastTransfers: 2, fastTransferMs: 5 });
    dev.tookMs = 4.9;
    assert.deepEqual(await kinds(probe, 3), ["promise", "promise", "number"]);
    dev.tookMs = 5;
    assert.deepEqual(await kinds(probe, 2), ["number", "promise"]);
  });

  it("counts failed transfers that reached the adapter, not those refused before it", async () => {
    const dev = new StubDev();
    const { probe, bus } = adaptiveBus([dev], { inlineAfterFastTransfers: 2 });
    dev.failWith = "ENXIO";
    const nack = probe();
    assert.ok(nack instanceof Promise);
    assert.equal(await nack, 0);
    dev.failWith = null;
    dev.refuseWith = "ERR_OUT_OF_RANGE"; // the I/O thread refuses: nothing reached the adapter
    for (let i = 0; i < 3; i++) {
      const refused = probe();
      assert.ok(refused instanceof Promise, `refusal ${i} counted as a fast transfer`);
      assert.equal(await refused, 0);
    }
    bus.close(); // refuses every later transfer before it reaches the adapter
    for (let i = 0; i < 3; i++) {
      const refused = probe();
      assert.ok(refused instanceof Promise, `refusal after close ${i} counted as a fast transfer`);
      assert.equal(await refused, 0);
    }
    assert.equal(dev.transfers, 1);
  });

  it("starts again on the I/O thread when the adapter is gone, until the one back proves fast", async () => {
    const first = new StubDev();
    const second = new StubDev();
    const { probe, clock, bus } = adaptiveBus([first, second], { inlineAfterFastTransfers: 1 });
    assert.deepEqual(await kinds(probe, 2), ["promise", "number"]);
    first.failWith = "ENODEV";
    assert.equal(probe(), 0, "ran inline, found the adapter gone");
    assert.equal(bus.up, false);
    const down = probe();
    assert.ok(down instanceof Promise, "down: refused before the adapter, on the thread's terms");
    assert.equal(await down, 0);
    clock.now += 1000;
    assert.deepEqual(await kinds(probe, 2), ["promise", "number"], "reopened");
    assert.equal(second.transfers, 2);
  });

  it("sends a transfer that has to wait for one in flight to the I/O thread", async () => {
    const dev = new StubDev();
    const { probe, take } = adaptiveBus([dev], { inlineAfterFastTransfers: 1 });
    assert.equal(await probe(), 1);
    assert.equal(typeof probe(), "number", "inline from now on");
    const nested: (number | Promise<number>)[] = [];
    dev.during = () => {
      dev.during = null;
      nested.push(probe());
    };
    assert.equal(probe(), 1);
    assert.ok(nested[0] instanceof Promise, "started inside the inline one: it waits, no refusal");
    assert.equal(await nested[0], 1);
    assert.equal(dev.transfers, 4);
    assert.deepEqual(
      take().filter((l) => l.startsWith("WARN")),
      [],
    );
    // Another bus on the adapter keeps a transfer in flight on the I/O thread: this one queues.
    const other = new StubDev();
    const threaded = stubBusIn(MODES[0], [other]);
    const inFlight = threaded.probe();
    const queued = probe();
    assert.ok(queued instanceof Promise);
    assert.deepEqual(await Promise.all([inFlight, queued]), [1, 1]);
    threaded.bus.close();
  });
});
