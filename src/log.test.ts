// Tests for the log line formats: plain, JSON (one object per line), syslog priority prefixes.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { createLogger, formatLogLine, isJournalStream, LOG_LEVELS, type LogStyle } from "./log.js";

const JSON_STYLE: LogStyle = { format: "json", syslogPriority: false };

function capture(style?: LogStyle) {
  const lines: string[] = [];
  const logger = createLogger("debug", { write: (line: string) => lines.push(line) }, "", style);
  return { lines, logger };
}

describe("log formats", () => {
  it("plain: level, context, message, fields; no time stamp", () => {
    const { lines, logger } = capture();
    logger.child("socket0").info("front-end connected", { path: "/a b", n: 3, big: 5n });
    assert.deepEqual(lines, ['INFO [socket0] front-end connected path="/a b" n=3 big=5\n']);
  });

  it("json: one object per line with time, level, context, message and fields", () => {
    const { lines, logger } = capture(JSON_STYLE);
    logger
      .child("socket1")
      .child("trace")
      .warn("slow", { us: 12, big: 2n ** 70n, gone: undefined });
    assert.equal(lines.length, 1);
    const line = lines[0] ?? "";
    assert.ok(line.endsWith("\n") && !line.slice(0, -1).includes("\n"));
    const record = JSON.parse(line);
    assert.equal(record.level, "warn");
    assert.equal(record.context, "socket1/trace");
    assert.equal(record.message, "slow");
    assert.deepEqual(record.fields, { us: 12, big: "1180591620717411303424" });
    assert.ok(!Number.isNaN(Date.parse(record.time)));
  });

  it("json: a field named __proto__ is kept as data", () => {
    const record = JSON.parse(formatLogLine(JSON_STYLE, "info", "", "m", { ["__proto__"]: "x" }));
    assert.equal(Object.getOwnPropertyDescriptor(record.fields, "__proto__")?.value, "x");
  });

  it("json: any message and field text stays on one parseable line", () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.string(), (message, key, value) => {
        const line = formatLogLine(JSON_STYLE, "error", "", message, { [key]: value });
        assert.equal(line.indexOf("\n"), line.length - 1);
        const record = JSON.parse(line);
        assert.equal(record.message, message);
        assert.equal(record.fields[key], value);
      }),
    );
  });

  it("syslog priority prefix per level, in both formats", () => {
    const expected = { error: 3, warn: 4, info: 6, debug: 7, trace: 7 };
    for (const level of LOG_LEVELS) {
      for (const format of ["plain", "json"] as const) {
        const line = formatLogLine({ format, syslogPriority: true }, level, "", "m");
        assert.ok(line.startsWith(`<${expected[level]}>`), line);
      }
    }
  });

  it("the journal stream is recognised by device and inode only", () => {
    const stream = { dev: 23, ino: 4567 };
    assert.equal(isJournalStream({ JOURNAL_STREAM: "23:4567" }, stream), true);
    assert.equal(isJournalStream({ JOURNAL_STREAM: "23:4568" }, stream), false);
    assert.equal(isJournalStream({}, stream), false);
  });
});
