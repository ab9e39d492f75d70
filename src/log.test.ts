// Tests for the log line formats: plain, JSON (one object per line), syslog priority prefixes.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  createLogger,
  formatLogLine,
  isJournalStream,
  LOG_LEVELS,
  LogRateLimiter,
  type LogStyle,
  LogSuppression,
  rateLimitedLogger,
} from "./log.js";

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

describe("LogRateLimiter", () => {
  it("never admits more than the limit per window and accounts for every line", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.array(fc.integer({ min: 0, max: 700 }), { maxLength: 200 }),
        (limit, steps) => {
          let now = 0;
          const limiter = new LogRateLimiter(limit, 1000, () => now);
          const admitted: number[] = [];
          let reported = 0;
          for (const step of steps) {
            now += step;
            const { write, suppressed } = limiter.admit();
            if (write) admitted.push(now);
            else assert.equal(suppressed, 0);
            reported += suppressed;
          }
          assert.equal(admitted.length + reported + limiter.pending, steps.length);
          for (const [i, t] of admitted.entries()) {
            const inWindow = admitted.filter((u) => u >= t && u < t + 1000).length;
            // Windows start at an admitted line; two windows can meet inside any 1000 ms span.
            assert.ok(inWindow <= 2 * limit, `line ${i}: ${inWindow} lines within 1 s`);
          }
        },
      ),
    );
  });

  it("reports the suppressed count with the first line of a later window", () => {
    let now = 0;
    const limiter = new LogRateLimiter(2, 1000, () => now);
    assert.deepEqual(
      [1, 2, 3, 4].map(() => limiter.admit()),
      [
        { write: true, suppressed: 0 },
        { write: true, suppressed: 0 },
        { write: false, suppressed: 0 },
        { write: false, suppressed: 0 },
      ],
    );
    now = 999;
    assert.deepEqual(limiter.admit(), { write: false, suppressed: 0 });
    now = 1000;
    assert.deepEqual(limiter.admit(), { write: true, suppressed: 3 });
    assert.equal(limiter.pending, 0);
  });
});

describe("rateLimitedLogger", () => {
  it("writes at most the budget per second, counts the rest per source, reports them on the next line", () => {
    let now = 0;
    const lines: string[] = [];
    const base = createLogger("debug", { write: (line: string) => lines.push(line) });
    const suppression = new LogSuppression();
    const a = rateLimitedLogger(base.child("socket0"), "socket0", {
      linesPerSecond: 3,
      now: () => now,
      suppression,
    });
    const b = rateLimitedLogger(base.child("socket1"), "socket1", {
      linesPerSecond: 3,
      now: () => now,
      suppression,
    });
    for (let i = 0; i < 1000; i++) a.warn("malformed request", { i });
    b.warn("other guest");
    assert.equal(lines.length, 4, "3 lines of socket0, then socket1's own line");
    assert.match(lines[3] ?? "", /^WARN \[socket1\] other guest\n$/);
    assert.deepEqual(JSON.parse(JSON.stringify(suppression.snapshot())), {
      total: 997,
      bySource: { socket0: 997 },
    });
    now = 1000;
    a.info("later");
    assert.equal(lines.at(-1), "INFO [socket0] later suppressed=997\n");
  });

  it("says how many lines it left out when no line follows within the next window", () => {
    let now = 0;
    const lines: string[] = [];
    const scheduled: { run: () => void; ms: number }[] = [];
    const log = rateLimitedLogger(
      createLogger("debug", { write: (line: string) => lines.push(line) }),
      "guest",
      {
        linesPerSecond: 2,
        now: () => now,
        suppression: new LogSuppression(),
        schedule: (run, ms) => scheduled.push({ run, ms }),
      },
    );
    now = 100;
    for (let i = 0; i < 7; i++) log.warn("malformed request");
    assert.equal(lines.length, 2);
    assert.deepEqual(
      scheduled.map((s) => s.ms),
      [2000],
      "one summary, due a window after the one the flood started in",
    );
    now = 2100;
    scheduled[0]?.run();
    assert.equal(lines.at(-1), "WARN log lines left out by the rate limit suppressed=5\n");
    log.warn("later");
    assert.equal(lines.at(-1), "WARN later\n", "the count is not reported twice");
  });

  it("does not spend the budget on levels that are not written", () => {
    const lines: string[] = [];
    const base = createLogger("info", { write: (line: string) => lines.push(line) });
    const suppression = new LogSuppression();
    const log = rateLimitedLogger(base, "peer", { linesPerSecond: 1, now: () => 0, suppression });
    for (let i = 0; i < 10; i++) log.debug("noise");
    log.warn("seen");
    assert.deepEqual(lines, ["WARN seen\n"]);
    assert.equal(suppression.total, 0);
  });
});
