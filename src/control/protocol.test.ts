// Control protocol: every command parses, bad input becomes EUSAGE, replies stay on one line.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  ControlError,
  formatDeviceRef,
  formatError,
  formatHex,
  formatOk,
  MAX_DATA_BYTES,
  parseHex,
  parseLine,
  parseNumber,
  parseReply,
  parseWords,
} from "./protocol.js";

function usageError(line: string): ControlError {
  const parsed = parseLine(line);
  assert.ok(parsed !== null);
  assert.ok(parsed.command instanceof ControlError, `${line} should not parse`);
  assert.equal(parsed.command.code, "EUSAGE");
  return parsed.command;
}

describe("parseLine text commands", () => {
  it("parses every command with decimal and hex numbers", () => {
    assert.deepEqual(parseLine("help")?.command, { cmd: "help" });
    assert.deepEqual(parseLine("LIST\r")?.command, { cmd: "list" });
    assert.deepEqual(parseLine("get 0x48 temperature")?.command, {
      cmd: "get",
      addr: 0x48,
      property: "temperature",
    });
    assert.deepEqual(parseLine("  set 72\ttemperature   31.5 ")?.command, {
      cmd: "set",
      addr: 72,
      property: "temperature",
      value: "31.5",
    });
    assert.deepEqual(parseLine("read 0x50 0x10 16")?.command, {
      cmd: "read",
      addr: 0x50,
      offset: 16,
      length: 16,
    });
    assert.deepEqual(parseLine("write 80 0 DEadbe")?.command, {
      cmd: "write",
      addr: 80,
      offset: 0,
      data: Uint8Array.of(0xde, 0xad, 0xbe),
    });
  });

  it("parses fault commands: a fault with its fields, clear, and the faults listing", () => {
    assert.deepEqual(parseLine("fault 1:0x48 nack every=3")?.command, {
      cmd: "fault",
      guest: 1,
      addr: 0x48,
      fault: { fault: "nack", every: 3 },
    });
    assert.deepEqual(parseLine("fault 0x50 clear")?.command, {
      cmd: "fault",
      addr: 0x50,
      fault: "clear",
    });
    assert.deepEqual(parseLine("faults")?.command, { cmd: "faults" });
    assert.deepEqual(
      parseLine('{"cmd":"fault","addr":"0x48","guest":1,"fault":"corrupt","byte":2,"xor":"0x01"}')
        ?.command,
      { cmd: "fault", guest: 1, addr: 0x48, fault: { fault: "corrupt", byte: 2, xor: 1 } },
    );
    assert.match(usageError("fault 0x48").message, /expected an address and a fault/);
    assert.match(usageError("fault 0x48 nack every").message, /"every" is not key=value/);
    assert.match(usageError("fault 0x48 melt").message, /"fault" must be one of/);
  });

  it("takes an address qualified by the guest, <guest>:<address>, in every device command", () => {
    assert.deepEqual(parseLine("set 1:0x48 temperature 30")?.command, {
      cmd: "set",
      guest: 1,
      addr: 0x48,
      property: "temperature",
      value: "30",
    });
    assert.deepEqual(parseLine("get 0x0:72 t")?.command, {
      cmd: "get",
      guest: 0,
      addr: 72,
      property: "t",
    });
    assert.deepEqual(parseLine("read 2:0x50 0 1")?.command, {
      cmd: "read",
      guest: 2,
      addr: 0x50,
      offset: 0,
      length: 1,
    });
    assert.deepEqual(parseLine("write 3:0x50 0 ff")?.command, {
      cmd: "write",
      guest: 3,
      addr: 0x50,
      offset: 0,
      data: Uint8Array.of(0xff),
    });
  });

  it("formatDeviceRef writes what deviceArg reads", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0x7f }),
        fc.option(fc.integer({ min: 0, max: 63 }), { nil: undefined }),
        (addr, guest) => {
          const ref = guest === undefined ? { addr } : { addr, guest };
          const command = parseLine(`get ${formatDeviceRef(ref)} p`)?.command;
          assert.deepEqual(command, { cmd: "get", ...ref, property: "p" });
        },
      ),
    );
  });

  it("refuses a malformed qualified address", () => {
    for (const word of [":0x48", "1:", "a:0x48", "1:0x4g", "1:2:3", "-1:0x48"]) {
      assert.match(
        usageError(`get ${word} temperature`).message,
        /is neither a number nor <guest>:<address>/,
        word,
      );
    }
  });

  it("ignores blank lines", () => {
    assert.equal(parseLine(""), null);
    assert.equal(parseLine(" \t\r"), null);
  });

  it("refuses unknown commands, wrong arity, bad numbers, bad hex and oversize data", () => {
    assert.match(usageError("frobnicate").message, /unknown command "frobnicate"/);
    assert.match(usageError("get 0x48").message, /usage: get <addr> <property>/);
    assert.match(usageError("list extra").message, /expected 0 argument/);
    assert.match(usageError("get 0x4g temperature").message, /address "0x4g" is not a number/);
    usageError("get -1 temperature");
    usageError("read 0x50 1.5 2");
    usageError("read 0x50 0 0");
    usageError(`read 0x50 0 ${MAX_DATA_BYTES + 1}`);
    usageError("read 0x50 0 99999999999999999999");
    assert.match(usageError("write 0x50 0 abc").message, /hex digits in pairs/);
    usageError("write 0x50 0 zz");
    usageError(`write 0x50 0 ${"00".repeat(MAX_DATA_BYTES + 1)}`);
    usageError("\u0000\u00ff garbage");
  });
});

describe("parseLine JSON commands", () => {
  it("parses a JSON object into the same command and marks the reply format", () => {
    const parsed = parseLine('{"cmd":"set","addr":72,"property":"temperature","value":31.5}');
    assert.deepEqual(parsed, {
      format: "json",
      command: { cmd: "set", addr: 72, property: "temperature", value: "31.5" },
    });
    assert.deepEqual(parseLine('{"cmd":"read","addr":"0x50","offset":0,"length":2}')?.command, {
      cmd: "read",
      addr: 0x50,
      offset: 0,
      length: 2,
    });
  });

  it("qualifies the address by a guest field or by the text form", () => {
    const expected = { cmd: "get", guest: 1, addr: 0x48, property: "temperature" };
    for (const line of [
      '{"cmd":"get","guest":1,"addr":72,"property":"temperature"}',
      '{"cmd":"get","addr":"1:0x48","property":"temperature"}',
    ]) {
      assert.deepEqual(parseLine(line)?.command, expected, line);
    }
    const bad = parseLine('{"cmd":"get","guest":"x","addr":72,"property":"t"}')?.command;
    assert.ok(bad instanceof ControlError && bad.code === "EUSAGE");
  });

  it("refuses invalid JSON, non-objects, unknown cmd, missing fields and fractional numbers", () => {
    for (const line of [
      "{not json",
      "{}",
      '{"cmd":"nope"}',
      '{"cmd":"get","addr":72}',
      '{"cmd":"read","addr":80,"offset":0.5,"length":1}',
      '{"cmd":"get","addr":{"x":1},"property":"t"}',
    ]) {
      const parsed = parseLine(line);
      assert.equal(parsed?.format, "json", line);
      assert.ok(parsed?.command instanceof ControlError, line);
      assert.equal(parsed.command.code, "EUSAGE");
    }
  });
});

describe("numbers and hex", () => {
  it("parseNumber takes decimal and 0x hex, rejects the rest", () => {
    assert.equal(parseNumber("0x7F"), 127);
    assert.equal(parseNumber("010"), 10);
    for (const bad of ["", "0x", "1e3", "+1", "-1", " 1", "0b1", "9007199254740993"]) {
      assert.equal(parseNumber(bad), null, bad);
    }
  });

  it("formatHex and parseHex round-trip any bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        assert.deepEqual(parseHex(formatHex(bytes)), bytes);
      }),
    );
  });
});

describe("replies", () => {
  it("formats ok and error lines that never contain an inner newline", () => {
    fc.assert(
      fc.property(fc.string(), (text) => {
        const ok = formatOk({ text, value: text }, "text");
        const error = formatError(new ControlError("EINVAL", text), "text");
        for (const line of [ok, error, formatOk({ text, value: text }, "json")]) {
          assert.equal(line.indexOf("\n"), line.length - 1);
        }
      }),
    );
  });

  it("parseReply splits what the formatters write", () => {
    assert.deepEqual(parseReply(formatOk({ text: "31.5", value: 31.5 }, "text").trimEnd()), {
      ok: true,
      payload: "31.5",
    });
    assert.deepEqual(parseReply(formatOk({ text: "", value: null }, "text").trimEnd()), {
      ok: true,
      payload: "",
    });
    assert.deepEqual(
      parseReply(formatError(new ControlError("ENODEV", "no device"), "text").trimEnd()),
      { ok: false, code: "ENODEV", message: "no device" },
    );
    assert.equal(parseReply("what").ok, false);
  });

  it("JSON replies are objects with ok and result or code and message", () => {
    assert.deepEqual(JSON.parse(formatOk({ text: "2", value: 2 }, "json")), {
      ok: true,
      result: 2,
    });
    assert.deepEqual(JSON.parse(formatError(new ControlError("ERANGE", "too far"), "json")), {
      ok: false,
      code: "ERANGE",
      message: "too far",
    });
  });
});

describe("parseWords", () => {
  it("is what the CLI validates argv with", () => {
    assert.deepEqual(parseWords(["get", "0x48", "temperature"]), {
      cmd: "get",
      addr: 0x48,
      property: "temperature",
    });
    assert.throws(() => parseWords([]), { code: "EUSAGE" });
  });
});
