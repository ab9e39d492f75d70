import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { I2cOp, TransferResult } from "../frontend/i2c-driver.js";
import { parseInvocation } from "./args.js";
import { type CommandBus, type CommandIo, detectProbeFor, runCommand } from "./commands.js";

/**
 * A bus with one register-pointer chip (256 bytes, auto-increment) at `chipAddr`, as a backend would
 * carry transfers out: every message must reach a present chip, else the transfer stops there.
 * Records every transfer so tests can check what went on the wire.
 */
class ChipBus implements CommandBus {
  readonly name = "/run/test.sock0";
  readonly zeroLength: boolean;
  readonly memory = new Uint8Array(256).fill(0xff);
  readonly log: I2cOp[][] = [];
  #pointer = 0;
  readonly #chipAddr: number;

  constructor(chipAddr = 0x50, zeroLength = true) {
    this.#chipAddr = chipAddr;
    this.zeroLength = zeroLength;
  }

  async transfer(ops: readonly I2cOp[]): Promise<TransferResult> {
    this.log.push([...ops]);
    const reads: Uint8Array[] = [];
    const statuses: number[] = [];
    let okCount = 0;
    for (const op of ops) {
      if (op.addr !== this.#chipAddr || statuses.includes(1)) {
        statuses.push(1);
        if ("read" in op) reads.push(new Uint8Array(0));
        continue;
      }
      if ("read" in op) {
        const data = new Uint8Array(op.read);
        for (let i = 0; i < op.read; i++) data[i] = this.memory[this.#pointer++ & 0xff] ?? 0;
        reads.push(data);
      } else if (op.write.length > 0) {
        this.#pointer = op.write[0] ?? 0;
        for (const byte of op.write.subarray(1)) this.memory[this.#pointer++ & 0xff] = byte;
      }
      statuses.push(0);
      okCount++;
    }
    return { ok: okCount === ops.length, okCount, statuses, reads };
  }
}

class RecordingIo implements CommandIo {
  stdout = "";
  stderr = "";
  readonly answers: boolean[];
  constructor(answers: boolean[] = []) {
    this.answers = answers;
  }
  out(text: string): void {
    this.stdout += text;
  }
  err(text: string): void {
    this.stderr += text;
  }
  confirm(): boolean {
    return this.answers.shift() ?? false;
  }
}

async function run(bus: CommandBus, io: CommandIo, ...argv: string[]): Promise<number> {
  const { command } = parseInvocation(argv);
  assert.ok(command.name !== "help" && command.name !== "version" && command.name !== "info");
  return runCommand(command, bus, io);
}

describe("detect", () => {
  it("reads a byte at 0x30-0x37 and 0x50-0x5f and quick-writes elsewhere, as i2cdetect", async () => {
    const bus = new ChipBus();
    const io = new RecordingIo();
    assert.equal(await run(bus, io, "detect", "-y", "/s"), 0);
    assert.equal(bus.log.length, 0x77 - 0x08 + 1);
    for (const [op] of bus.log) {
      assert.ok(op !== undefined);
      if (detectProbeFor(op.addr) === "read") assert.deepEqual(op, { addr: op.addr, read: 1 });
      else assert.deepEqual(op, { addr: op.addr, write: new Uint8Array(0) });
    }
    assert.equal(detectProbeFor(0x2f), "quick");
    assert.equal(detectProbeFor(0x37), "read");
    assert.equal(detectProbeFor(0x5f), "read");
    assert.equal(detectProbeFor(0x60), "quick");
    assert.match(io.stdout, /^50: 50 -- /m);
  });

  it("skips quick-write addresses with a warning when zero-length requests are not negotiated", async () => {
    const bus = new ChipBus(0x50, false);
    const io = new RecordingIo();
    assert.equal(await run(bus, io, "detect", "-y", "/s"), 0);
    assert.equal(
      io.stderr,
      "Warning: Can't use SMBus Quick Write command, will skip some addresses\n",
    );
    assert.ok(bus.log.every(([op]) => op !== undefined && "read" in op));
    assert.match(io.stdout, /^10: {49}$/m);
    assert.equal(await run(bus, new RecordingIo(), "detect", "-y", "-q", "/s"), 1);
  });

  it("lists the functionality with -F without touching the bus", async () => {
    const bus = new ChipBus(0x50, false);
    const io = new RecordingIo();
    assert.equal(await run(bus, io, "detect", "-F", "/s"), 0);
    assert.match(io.stdout, /^SMBus Quick Command +no$/m);
    assert.match(io.stdout, /^I2C Block Read +yes$/m);
    assert.equal(bus.log.length, 0);
  });

  it("asks first without -y and touches nothing when the answer is no", async () => {
    const bus = new ChipBus();
    const io = new RecordingIo([false]);
    assert.equal(await run(bus, io, "detect", "/s", "0x50", "0x57"), 0);
    assert.equal(
      io.stderr,
      "WARNING! This program can confuse your I2C bus, cause data loss and worse!\n" +
        "I will probe file /run/test.sock0.\n" +
        "I will probe address range 0x50-0x57.\n" +
        "Continue? [Y/n] Aborting on user request.\n",
    );
    assert.equal(bus.log.length, 0);
    assert.equal(io.stdout, "");
  });
});

describe("dump", () => {
  it("byte mode: one write-reg + read-1 transfer per register", async () => {
    const bus = new ChipBus();
    bus.memory.set([0x41, 0x42], 0x10);
    const io = new RecordingIo();
    assert.equal(await run(bus, io, "dump", "-y", "-r", "0x10-0x11", "/s", "0x50"), 0);
    assert.deepEqual(bus.log, [
      [
        { addr: 0x50, write: Uint8Array.of(0x10) },
        { addr: 0x50, read: 1 },
      ],
      [
        { addr: 0x50, write: Uint8Array.of(0x11) },
        { addr: 0x50, read: 1 },
      ],
    ]);
    assert.match(io.stdout, /^10: 41 42 {46}AB {14}$/m);
  });

  it("c mode writes the start address once, then reads bytes; a failed start exits 1", async () => {
    const bus = new ChipBus();
    bus.memory.set([1, 2, 3], 0x20);
    const io = new RecordingIo();
    assert.equal(await run(bus, io, "dump", "-y", "-r", "0x20-0x22", "/s", "0x50", "c"), 0);
    assert.deepEqual(bus.log[0], [{ addr: 0x50, write: Uint8Array.of(0x20) }]);
    assert.equal(bus.log.length, 4);
    assert.match(io.stdout, /^20: 01 02 03 /m);
    const failing = new RecordingIo();
    assert.equal(await run(new ChipBus(0x51), failing, "dump", "-y", "/s", "0x50", "c"), 1);
    assert.equal(failing.stderr, "Error: Write start address failed, return code -5\n");
  });

  it("i mode reads 32-byte blocks; w mode prints words low byte first", async () => {
    const bus = new ChipBus();
    bus.memory.set([0x34, 0x12], 0);
    const io = new RecordingIo();
    assert.equal(await run(bus, io, "dump", "-y", "/s", "0x50", "i"), 0);
    assert.equal(bus.log.length, 8);
    assert.deepEqual(bus.log[1], [
      { addr: 0x50, write: Uint8Array.of(0x20) },
      { addr: 0x50, read: 32 },
    ]);
    const words = new RecordingIo();
    assert.equal(await run(bus, words, "dump", "-y", "-r", "0-0", "/s", "0x50", "w"), 0);
    assert.match(words.stdout, /^00: 1234 {36}$/m);
  });

  it("absent chip: XX for every byte, still status 0 as i2cdump", async () => {
    const io = new RecordingIo();
    assert.equal(await run(new ChipBus(0x51), io, "dump", "-y", "-r", "0-1", "/s", "0x50"), 0);
    assert.match(io.stdout, /^00: XX XX /m);
  });
});

describe("get / set", () => {
  it("get: byte data, word, receive byte after a write, I2C block", async () => {
    const bus = new ChipBus();
    bus.memory.set([0xcd, 0xab, 0x07], 0x40);
    const out = async (...args: string[]) => {
      const io = new RecordingIo();
      assert.equal(await run(bus, io, "get", "-y", "/s", "0x50", ...args), 0, io.stderr);
      return io.stdout;
    };
    assert.equal(await out("0x40"), "0xcd\n");
    assert.equal(await out("0x40", "w"), "0xabcd\n");
    assert.equal(await out("0x41", "c"), "0xab\n");
    assert.equal(await out(), "0x07\n", "receive byte continues at the pointer");
    assert.equal(await out("0x40", "i", "3"), "0xcd 0xab 0x07\n");
  });

  it("get: SMBus block read is not available on virtio-i2c; a failed read exits 1", async () => {
    const io = new RecordingIo();
    assert.equal(await run(new ChipBus(), io, "get", "-y", "/s", "0x50", "0", "s"), 1);
    assert.equal(io.stderr, "Error: Adapter does not have SMBus block read capability\n");
    const failed = new RecordingIo();
    assert.equal(await run(new ChipBus(0x51), failed, "get", "-y", "/s", "0x50", "0"), 1);
    assert.equal(failed.stderr, "Error: Read failed\n");
  });

  it("set: byte, word (low byte first), blocks, and a mask that keeps the other bits", async () => {
    const bus = new ChipBus();
    const io = new RecordingIo();
    assert.equal(await run(bus, io, "set", "-y", "/s", "0x50", "0x10", "0x1234", "w"), 0);
    assert.deepEqual([...bus.memory.subarray(0x10, 0x12)], [0x34, 0x12]);
    assert.equal(await run(bus, io, "set", "-y", "/s", "0x50", "0x20", "1", "2", "s"), 0);
    assert.deepEqual([...bus.memory.subarray(0x20, 0x23)], [2, 1, 2], "count byte first");
    assert.equal(await run(bus, io, "set", "-y", "/s", "0x50", "0x30", "1", "2", "i"), 0);
    assert.deepEqual([...bus.memory.subarray(0x30, 0x32)], [1, 2]);
    bus.memory[0x40] = 0xa5;
    const masked = new RecordingIo([true, true]);
    assert.equal(
      await run(bus, masked, "set", "-r", "-m", "0x0f", "/s", "0x50", "0x40", "0x03"),
      0,
    );
    assert.equal(bus.memory[0x40], 0xa3);
    assert.match(masked.stderr, /Old value 0xa5, write mask 0x0f, will write 0xa3\n/);
    assert.equal(masked.stdout, "Value 0xa3 written, readback matched\n");
  });

  it("set: a write that fails exits 1", async () => {
    const io = new RecordingIo();
    assert.equal(await run(new ChipBus(0x51), io, "set", "-y", "/s", "0x50", "0", "1"), 1);
    assert.equal(io.stderr, "Error: Write failed\n");
  });
});

describe("transfer", () => {
  it("sends the messages as one transfer and prints what was read", async () => {
    const bus = new ChipBus();
    bus.memory.set([9, 8], 0x10);
    const io = new RecordingIo();
    assert.equal(await run(bus, io, "transfer", "-y", "/s", "w1@0x50", "0x10", "r2"), 0);
    assert.equal(bus.log.length, 1);
    assert.equal(io.stdout, "0x09 0x08\n");
  });

  it("a partly failed transfer warns like i2ctransfer, prints the sent part and exits 1", async () => {
    const bus = new ChipBus();
    const io = new RecordingIo();
    const status = await run(bus, io, "transfer", "-y", "/s", "r1@0x50", "r1@0x51", "r1@0x50");
    assert.equal(status, 1);
    assert.equal(io.stderr, "Warning: only 1/3 messages were sent\n");
    assert.equal(io.stdout, "0xff\n");
  });

  it("asks with default no, showing the messages", async () => {
    const bus = new ChipBus();
    const io = new RecordingIo([false]);
    assert.equal(await run(bus, io, "transfer", "/s", "w2@0x50", "0", "1"), 0);
    assert.match(io.stderr, /msg 0: addr 0x50, write, len 2, buf 0x00 0x01\nContinue\? \[y\/N\] /);
    assert.equal(bus.log.length, 0);
  });
});
