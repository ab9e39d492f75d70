import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  type Command,
  nextFillByte,
  parseCInteger,
  parseInvocation,
  parseTransferMessages,
  readCInteger,
  UsageError,
} from "./args.js";

function command(...argv: string[]): Command {
  return parseInvocation(argv).command;
}

function refused(argv: readonly string[], message: RegExp | string): void {
  assert.throws(
    () => parseInvocation(argv),
    (error: unknown) =>
      error instanceof UsageError &&
      error.code === "EUSAGE" &&
      (typeof message === "string" ? error.message === message : message.test(error.message)),
  );
}

describe("readCInteger / parseCInteger", () => {
  it("reads numbers as strtol(…, 0): hex, octal, decimal, sign, rest", () => {
    assert.deepEqual(readCInteger("0x1F"), { value: 31, rest: "" });
    assert.deepEqual(readCInteger("010"), { value: 8, rest: "" });
    assert.deepEqual(readCInteger("16"), { value: 16, rest: "" });
    assert.deepEqual(readCInteger("0xff-"), { value: 255, rest: "-" });
    assert.deepEqual(readCInteger("0x"), { value: 0, rest: "x" });
    assert.deepEqual(readCInteger(" -1"), { value: -1, rest: "" });
    assert.deepEqual(readCInteger("09"), { value: 0, rest: "9" });
    assert.equal(readCInteger("x1"), null);
    assert.equal(readCInteger(""), null);
    assert.equal(parseCInteger("0x10@"), null);
  });

  it("round-trips any 16-bit value in hex, octal and decimal", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), (n) => {
        assert.equal(parseCInteger(`0x${n.toString(16)}`), n);
        assert.equal(parseCInteger(`0${n.toString(8)}`), n);
        assert.equal(parseCInteger(String(n)), n);
      }),
    );
  });
});

describe("parseInvocation: socket and global options", () => {
  it("takes the socket where i2c-tools take the bus, first, or with --socket", () => {
    for (const argv of [
      ["detect", "-y", "/s0"],
      ["/s0", "detect", "-y"],
      ["--socket", "/s0", "detect", "-y"],
      ["detect", "-y", "--socket=/s0"],
    ]) {
      const { options, command: c } = parseInvocation(argv);
      assert.equal(options.socket, "/s0", argv.join(" "));
      assert.deepEqual(c, { name: "detect", yes: true, mode: "auto", first: 8, last: 0x77 });
    }
  });

  it("reads --packed, --timeout and --queue-size, and refuses bad values", () => {
    const { options } = parseInvocation([
      "--packed",
      "--timeout",
      "250",
      "--queue-size=16",
      "info",
      "/s",
    ]);
    assert.deepEqual(options, { socket: "/s", packed: true, timeoutMs: 250, queueSize: 16 });
    refused(["--queue-size", "12", "info", "/s"], "Error: --queue-size must be a power of two!");
    refused(["--timeout", "soon", "info", "/s"], /--timeout must be an integer/);
    refused(["--bogus", "info", "/s"], 'Error: Unsupported option "--bogus"!');
  });

  it("refuses a missing or unknown command and a missing socket", () => {
    refused([], "Error: No command given!");
    refused(["scan", "/s"], 'Error: Unknown command "scan"!');
    refused(["get", "-y"], "Error: No socket specified!");
  });

  it("--version and -V, anywhere, before any check", () => {
    assert.deepEqual(command("--version"), { name: "version" });
    assert.deepEqual(command("-V"), { name: "version" });
    assert.deepEqual(command("get", "-V"), { name: "version" });
  });

  it("help with a topic", () => {
    assert.deepEqual(command("help", "dump"), { name: "help", topic: "dump" });
    assert.deepEqual(command("get", "--help"), { name: "help", topic: "get" });
  });
});

describe("parseInvocation: detect (i2cdetect)", () => {
  it("reads modes, -a and a FIRST LAST range", () => {
    assert.deepEqual(command("detect", "-r", "/s", "0x50", "0x57"), {
      name: "detect",
      yes: false,
      mode: "read",
      first: 0x50,
      last: 0x57,
    });
    assert.deepEqual(command("detect", "-ya", "/s"), {
      name: "detect",
      yes: true,
      mode: "auto",
      first: 0,
      last: 0x7f,
    });
    assert.equal((command("detect", "-F", "/s") as { mode: string }).mode, "func");
  });

  it("refuses what i2cdetect refuses, with its messages", () => {
    refused(["detect", "-q", "-r", "/s"], "Error: Different modes specified!");
    refused(["detect", "/s", "0x03", "0x10"], "Error: FIRST argument out of range (0x08-0x77)!");
    refused(["detect", "/s", "0x20", "0x10"], "Error: LAST argument out of range (0x20-0x77)!");
    refused(["detect", "/s", "z", "0x10"], "Error: FIRST argument not a number!");
    refused(["detect", "-x", "/s"], 'Error: Unsupported option "-x"!');
  });
});

describe("parseInvocation: dump (i2cdump)", () => {
  it("defaults to byte mode over the whole range", () => {
    assert.deepEqual(command("dump", "-y", "/s", "0x50"), {
      name: "dump",
      yes: true,
      addr: 0x50,
      mode: "b",
      modeDefaulted: true,
      first: 0,
      last: 0xff,
      rangeGiven: false,
    });
  });

  it("reads -r FIRST-LAST and the mode", () => {
    const c = command("dump", "-r", "0x10-0x2f", "/s", "0x50", "W");
    assert.deepEqual(c, {
      name: "dump",
      yes: false,
      addr: 0x50,
      mode: "W",
      modeDefaulted: false,
      first: 0x10,
      last: 0x2f,
      rangeGiven: true,
    });
  });

  it("refuses bad ranges, modes and addresses", () => {
    refused(["dump", "-r", "0x20-0x10", "/s", "0x50"], "Error: Invalid range parameter!");
    refused(["dump", "-r", "0x20", "/s", "0x50"], "Error: Invalid range parameter!");
    refused(
      ["dump", "-r", "0x11-0x20", "/s", "0x50", "W"],
      "Error: Range parameter not compatible with selected mode!",
    );
    refused(["dump", "/s", "0x50", "x"], "Error: Invalid mode!");
    refused(["dump", "/s", "0x50", "bp"], "Error: PEC is not supported on virtio-i2c!");
    refused(["dump", "/s", "0x78"], "Error: Chip address out of range (0x08-0x77)!");
    refused(["dump", "/s", "fifty"], "Error: Chip address is not a number!");
    refused(["dump", "/s"], "Error: No address specified!");
  });
});

describe("parseInvocation: get (i2cget)", () => {
  it("receive byte without a data address, byte data by default with one", () => {
    assert.deepEqual(command("get", "/s", "0x50"), {
      name: "get",
      yes: false,
      addr: 0x50,
      reg: null,
      mode: "c",
      length: 32,
    });
    assert.equal((command("get", "/s", "0x50", "0x10") as { mode: string }).mode, "b");
    assert.deepEqual(command("get", "-y", "/s", "0x50", "0", "i", "4"), {
      name: "get",
      yes: true,
      addr: 0x50,
      reg: 0,
      mode: "i",
      length: 4,
    });
  });

  it("refuses bad data addresses, modes and lengths", () => {
    refused(["get", "/s", "0x50", "0x100"], "Error: Data address invalid!");
    refused(["get", "/s", "0x50", "0", "q"], "Error: Invalid mode!");
    refused(["get", "/s", "0x50", "0", "b", "4"], "Error: Length only valid for I2C block data!");
    refused(["get", "/s", "0x50", "0", "i", "33"], "Error: Length invalid!");
  });
});

describe("parseInvocation: set (i2cset)", () => {
  it("implicit c, implicit b, explicit modes, blocks, mask and readback", () => {
    const base = { name: "set", yes: true, addr: 0x50, reg: 0x10, mask: null, readback: false };
    assert.deepEqual(command("set", "-y", "/s", "0x50", "0x10"), {
      ...base,
      mode: "c",
      values: [0x10],
    });
    assert.deepEqual(command("set", "-y", "/s", "0x50", "0x10", "c"), {
      ...base,
      mode: "c",
      values: [0x10],
    });
    assert.deepEqual(command("set", "-y", "/s", "0x50", "0x10", "0x41"), {
      ...base,
      mode: "b",
      values: [0x41],
    });
    assert.deepEqual(command("set", "-y", "/s", "0x50", "0x10", "0x1234", "w"), {
      ...base,
      mode: "w",
      values: [0x1234],
    });
    assert.deepEqual(command("set", "-y", "/s", "0x50", "0x10", "1", "2", "3", "i"), {
      ...base,
      mode: "i",
      values: [1, 2, 3],
    });
    assert.deepEqual(command("set", "-y", "-r", "-m", "0xf0", "/s", "0x50", "0x10", "0x41"), {
      ...base,
      mode: "b",
      values: [0x41],
      mask: 0xf0,
      readback: true,
    });
  });

  it("refuses what i2cset refuses", () => {
    refused(["set", "/s", "0x50", "0x10", "0x100"], "Error: Data value out of range!");
    refused(["set", "/s", "0x50", "0x10", "1", "2", "b"], "Error: Too many arguments!");
    refused(["set", "/s", "0x50", "0x10", "1", "bq"], "Error: Invalid mode 'bq'!");
    refused(["set", "/s", "0x50", "0x10", "1", "x"], "Error: Invalid mode 'x'!");
    refused(["set", "-m", "0", "/s", "0x50", "0x10", "1"], "Error: Data value mask invalid!");
    refused(
      ["set", "-m", "0x100", "/s", "0x50", "0x10", "1"],
      "Error: Data value mask out of range!",
    );
    refused(
      ["set", "-m", "1", "/s", "0x50", "0x10", "1", "i"],
      "Error: Mask not supported for block writes!",
    );
    refused(["set", "/s", "0x50"], "Error: Not enough arguments!");
  });
});

describe("parseInvocation: snapshot", () => {
  it("takes i2cdump's arguments, with byte mode, the whole range and stdout by default", () => {
    assert.deepEqual(parseInvocation(["snapshot", "-y", "s", "0x48"]), {
      options: { socket: "s", packed: false, timeoutMs: 5000, queueSize: 128 },
      command: {
        name: "snapshot",
        yes: true,
        addr: 0x48,
        mode: "b",
        first: 0,
        last: 0xff,
        rangeGiven: false,
        skip: [],
        readOnly: [],
        as: null,
        entryOnly: false,
        output: null,
      },
    });
  });

  it("reads MODE, -r, --skip and --read-only lists, -o and --entry, anywhere on the line", () => {
    const taken = command(
      "--skip",
      "0x10-0x1f, 0x40",
      "snapshot",
      "-r",
      "0-0x7f",
      "--socket=s",
      "0x48",
      "w",
      "--read-only=0,2-3",
      "-oout.json",
      "--entry",
    );
    assert.deepEqual(taken, {
      name: "snapshot",
      yes: false,
      addr: 0x48,
      mode: "w",
      first: 0,
      last: 0x7f,
      rangeGiven: true,
      skip: [
        { first: 0x10, last: 0x1f },
        { first: 0x40, last: 0x40 },
      ],
      readOnly: [
        { first: 0, last: 0 },
        { first: 2, last: 3 },
      ],
      as: null,
      entryOnly: true,
      output: "out.json",
    });
    assert.equal(
      (command("s", "snapshot", "--output", "f", "0x50", "i") as { output: string }).output,
      "f",
    );
  });

  it("--as names a 24Cxx EEPROM, read whole: no MODE, range, skip or read-only with it", () => {
    assert.equal((command("snapshot", "s", "0x50", "--as", "24c32") as { as: string }).as, "24c32");
    refused(
      ["snapshot", "s", "0x50", "--as", "lm75"],
      /--as takes an EEPROM model: 24c01, .*24c512/,
    );
    refused(["snapshot", "s", "0x50", "b", "--as", "24c02"], /MODE does not go with --as/);
    refused(["snapshot", "-r", "0-1", "s", "0x50", "--as", "24c02"], /-r does not go with --as/);
    refused(["snapshot", "s", "0x50", "--as", "24c02", "--skip", "1"], /--skip does not go/);
  });

  it("refuses what it cannot run, with the snapshot usage", () => {
    refused(["snapshot", "s"], "Error: No address specified!");
    refused(["snapshot", "s", "0x50", "c"], "Error: Invalid mode (b, w or i)!");
    refused(["snapshot", "s", "0x50", "b", "x"], "Error: Too many arguments!");
    refused(["snapshot", "-r", "5-4", "s", "0x50"], "Error: Invalid range parameter!");
    for (const bad of ["", "0x10-", "0x100", "1,,2", "3-1", "x"]) {
      refused(["snapshot", "--skip", bad, "s", "0x50"], /Invalid --skip list/);
    }
    refused(["snapshot", "s", "0x50", "--read-only", "0-0x100"], /Invalid --read-only list/);
    refused(["snapshot", "s", "0x50", "--entry=1"], "Error: --entry takes no value!");
    assert.throws(
      () => parseInvocation(["snapshot", "s"]),
      (error: unknown) => error instanceof UsageError && error.topic === "snapshot",
    );
  });

  it("its long options belong to it alone", () => {
    refused(["dump", "-y", "s", "0x50", "--skip", "1"], 'Error: Unsupported option "--skip"!');
    refused(["--entry", "get", "s", "0x50"], 'Error: Unsupported option "--entry"!');
  });
});

describe("parseTransferMessages (i2ctransfer syntax)", () => {
  it("reads descriptors, data bytes and reuses the last address", () => {
    assert.deepEqual(parseTransferMessages(["w2@0x50", "0x00", "0x10", "r4@0x50", "r1"], false), [
      { addr: 0x50, read: false, data: Uint8Array.of(0x00, 0x10) },
      { addr: 0x50, read: true, length: 4 },
      { addr: 0x50, read: true, length: 1 },
    ]);
    assert.deepEqual(parseTransferMessages(["w0@0x20"], false), [
      { addr: 0x20, read: false, data: new Uint8Array(0) },
    ]);
  });

  it("fills the rest of a write with =, +, - and p as i2ctransfer does", () => {
    const data = (args: string[]) => {
      const [message] = parseTransferMessages(args, false);
      assert.ok(message !== undefined && !message.read);
      return [...message.data];
    };
    // i2ctransfer's own help example: at 0x42 write 0xff 0xfe ... 0xf0.
    assert.deepEqual(data(["w17@0x50", "0x42", "0xff-"]), [
      0x42,
      ...Array.from({ length: 16 }, (_, i) => 0xff - i),
    ]);
    assert.deepEqual(data(["w4@0x50", "0x01-"]), [0x01, 0x00, 0xff, 0xfe]);
    assert.deepEqual(data(["w3@0x50", "0xfe+"]), [0xfe, 0xff, 0x00]);
    assert.deepEqual(data(["w3@0x50", "7="]), [7, 7, 7]);
    assert.deepEqual(data(["w3@0x50", "0p"]), [0x00, 0x50, 0xb0]);
  });

  it("the p sequence stays a byte and matches its definition", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 255 }), (v) => {
        const mixed = ((v ^ 27) + 13) % 256;
        const expected = ((mixed * 2) % 256) + Math.floor(mixed / 128);
        assert.equal(nextFillByte(v, "p"), expected);
      }),
    );
  });

  it("refuses bad messages with i2ctransfer's messages", () => {
    const refusedTransfer = (args: string[], first: string) =>
      assert.throws(
        () => parseTransferMessages(args, false),
        (error: unknown) => error instanceof UsageError && error.message.split("\n")[0] === first,
      );
    refusedTransfer(["x1@0x50"], "Error: Invalid direction");
    refusedTransfer(["r1"], "Error: No address given");
    refusedTransfer(["r1:0x50"], "Error: Unknown separator after length");
    refusedTransfer(["r65536@0x50"], "Error: Length invalid");
    refusedTransfer(["r1@0x78"], "Error: Chip address out of range (0x08-0x77)!");
    refusedTransfer(["w1@0x50", "0x100"], "Error: Invalid data byte");
    refusedTransfer(["w2@0x50", "1*"], "Error: Invalid data byte suffix");
    refusedTransfer(["w2@0x50", "1"], "Error: Incomplete message");
    refusedTransfer([], "Error: Incomplete message");
    refusedTransfer(["w?@0x50"], "Error: variable length not allowed with write");
    refusedTransfer(
      Array.from({ length: 43 }, () => "r1@0x50"),
      "Error: Too many messages (max: 42)",
    );
    assert.equal(parseTransferMessages(["r1@0x00"], true)[0]?.addr, 0);
  });
});
