/**
 * Leveled logger shared by every layer. Layers receive a Logger; only the CLI decides where it writes.
 * Owns the line formats: plain text `LEVEL [context] message key=value ...` (default), or one JSON
 * object per line `{"time","level","context","message","fields"}` (--log-format json); either may
 * start with a syslog priority `<N>` so journald records the level (when writing to the journal).
 * Plain lines carry no time stamp: journald and other collectors add their own.
 * Must not: decide the destination, the level or the format (the CLI does).
 * @module
 */

export const LOG_LEVELS = ["error", "warn", "info", "debug", "trace"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export type LogFields = Readonly<
  Record<string, string | number | bigint | boolean | null | undefined>
>;

export interface Logger {
  readonly level: LogLevel;
  /** True when a message at `level` would be written: guard costly formatting with it. */
  enabled(level: LogLevel): boolean;
  error(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  trace(message: string, fields?: LogFields): void;
  /** A logger that prefixes every line with `context` (e.g. "socket0"). */
  child(context: string): Logger;
}

export function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

function formatValue(value: LogFields[string]): string {
  if (typeof value === "string") return /[\s"=]/.test(value) ? JSON.stringify(value) : value;
  return String(value);
}

function formatPlain(
  level: LogLevel,
  context: string,
  message: string,
  fields?: LogFields,
): string {
  let line = `${level.toUpperCase()}${context ? ` [${context}]` : ""} ${message}`;
  if (fields) {
    for (const [key, value] of Object.entries(fields)) {
      if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
    }
  }
  return line;
}

function formatJson(level: LogLevel, context: string, message: string, fields?: LogFields): string {
  // No prototype: a field named "__proto__" is data like any other, not a prototype change.
  const values: Record<string, string | number | boolean | null> = Object.create(null);
  if (fields) {
    for (const [key, value] of Object.entries(fields)) {
      // JSON has no bigint: a decimal string keeps every digit.
      if (value !== undefined) values[key] = typeof value === "bigint" ? String(value) : value;
    }
  }
  const time = new Date().toISOString();
  return JSON.stringify({ time, level, context, message, fields: values });
}

export const LOG_FORMATS = ["plain", "json"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export function isLogFormat(value: string): value is LogFormat {
  return (LOG_FORMATS as readonly string[]).includes(value);
}

/** How lines look: the format, and whether each starts with a syslog priority `<N>` (journald). */
export interface LogStyle {
  readonly format: LogFormat;
  readonly syslogPriority: boolean;
}

export const PLAIN_STYLE: LogStyle = { format: "plain", syslogPriority: false };

/** syslog(3) priorities: what journald reads from a leading `<N>`. */
const SYSLOG_PRIORITY: Readonly<Record<LogLevel, number>> = {
  error: 3,
  warn: 4,
  info: 6,
  debug: 7,
  trace: 7,
};

/** One complete line, newline included. */
export function formatLogLine(
  style: LogStyle,
  level: LogLevel,
  context: string,
  message: string,
  fields?: LogFields,
): string {
  const body =
    style.format === "json"
      ? formatJson(level, context, message, fields)
      : formatPlain(level, context, message, fields);
  return `${style.syslogPriority ? `<${SYSLOG_PRIORITY[level]}>` : ""}${body}\n`;
}

/**
 * True when `stream` (as fstat's device and inode) is the journal stream systemd connected us to:
 * $JOURNAL_STREAM is "<device>:<inode>" of that stream (see systemd.exec(5)).
 */
export function isJournalStream(
  env: Readonly<Record<string, string | undefined>>,
  stream: { readonly dev: number | bigint; readonly ino: number | bigint },
): boolean {
  const value = env.JOURNAL_STREAM;
  return value !== undefined && value === `${stream.dev}:${stream.ino}`;
}

export interface LogSink {
  write(line: string): unknown;
}

export function createLogger(
  level: LogLevel,
  sink: LogSink = process.stderr,
  context = "",
  style: LogStyle = PLAIN_STYLE,
): Logger {
  return emittingLogger(
    level,
    (l, c, message, fields) => sink.write(formatLogLine(style, l, c, message, fields)),
    context,
  );
}

/** Where a line goes once its level let it through. */
export type LineEmitter = (
  level: LogLevel,
  context: string,
  message: string,
  fields: LogFields | undefined,
) => void;

/** A Logger at `level` whose lines, and its children's, go to `emit` unformatted (another thread). */
export function emittingLogger(level: LogLevel, emit: LineEmitter, context = ""): Logger {
  const rank = LOG_LEVELS.indexOf(level);
  const enabled = (l: LogLevel) => LOG_LEVELS.indexOf(l) <= rank;
  const at = (l: LogLevel) => (message: string, fields?: LogFields) => {
    if (enabled(l)) emit(l, context, message, fields);
  };
  return {
    level,
    enabled,
    error: at("error"),
    warn: at("warn"),
    info: at("info"),
    debug: at("debug"),
    trace: at("trace"),
    child: (sub) => emittingLogger(level, emit, context ? `${context}/${sub}` : sub),
  };
}

/** A logger that writes nothing (library defaults, tests). */
export const silentLogger: Logger = createLogger("error", { write: () => undefined });

/**
 * At most `limit` lines per window of `windowMs`; lines over the limit are counted and the count is
 * handed back with the first line admitted in a later window, so an untrusted party cannot flood
 * the log and the operator still learns how much was left out. Every suppressed line is also
 * counted in `suppression` under `source`, for the control socket's `stats`.
 */
export class LogRateLimiter {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #suppression: LogSuppression | undefined;
  readonly #source: string;
  #windowStart = Number.NEGATIVE_INFINITY;
  #written = 0;
  #suppressed = 0;

  constructor(
    limit: number,
    windowMs: number,
    now: () => number,
    suppression?: LogSuppression,
    source = "",
  ) {
    this.#limit = limit;
    this.#windowMs = windowMs;
    this.#now = now;
    this.#suppression = suppression;
    this.#source = source;
  }

  /**
   * Whether one more line may be written now, and how many lines were suppressed before it (to be
   * reported first; non-zero only when `write` is true).
   */
  admit(): { write: boolean; suppressed: number } {
    const now = this.#now();
    if (now - this.#windowStart >= this.#windowMs) {
      this.#windowStart = now;
      this.#written = 0;
    }
    if (this.#written >= this.#limit) {
      this.#suppressed++;
      this.#suppression?.count(this.#source);
      return { write: false, suppressed: 0 };
    }
    this.#written++;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    return { write: true, suppressed };
  }

  /** Lines suppressed and not yet reported. */
  get pending(): number {
    return this.#suppressed;
  }

  /** Milliseconds until the current window ends. */
  get msLeft(): number {
    return Math.max(0, this.#windowStart + this.#windowMs - this.#now());
  }

  /** Hands the count of suppressed lines over to a summary line and clears it. */
  takePending(): number {
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    return suppressed;
  }
}

/** Log lines left out by rate limiting, per source (a logger's context, e.g. "socket0"). */
export class LogSuppression {
  readonly #counts = new Map<string, number>();
  #total = 0;

  count(source: string): void {
    this.#total++;
    this.#counts.set(source, (this.#counts.get(source) ?? 0) + 1);
  }

  get total(): number {
    return this.#total;
  }

  /** JSON-ready: the total and the count per source. */
  snapshot(): { readonly total: number; readonly bySource: Readonly<Record<string, number>> } {
    const bySource: Record<string, number> = Object.create(null);
    for (const [source, n] of this.#counts) bySource[source] = n;
    return { total: this.#total, bySource };
  }
}

/** A LogSuppression snapshot: the total and the count per source. */
export type SuppressionSnapshot = ReturnType<LogSuppression["snapshot"]>;

/** The sum of the snapshots of several threads (each thread counts its own lines). */
export function mergeSuppression(snapshots: readonly SuppressionSnapshot[]): SuppressionSnapshot {
  const bySource: Record<string, number> = Object.create(null);
  let total = 0;
  for (const snapshot of snapshots) {
    total += snapshot.total;
    for (const [source, n] of Object.entries(snapshot.bySource)) {
      bySource[source] = (bySource[source] ?? 0) + n;
    }
  }
  return { total, bySource };
}

/** The thread's own count of suppressed lines: what `stats` reports as `logSuppressed`. */
export const logSuppression = new LogSuppression();

/** Lines per second one rate-limited source may write before its lines are counted instead. */
export const DEFAULT_LOG_LINES_PER_SECOND = 10;

export interface RateLimitOptions {
  readonly linesPerSecond?: number;
  readonly now?: () => number;
  readonly suppression?: LogSuppression;
  /** Runs the summary of a window's suppressed lines when the window ends (tests inject it). */
  readonly schedule?: (run: () => void, ms: number) => void;
}

/** A timer that never keeps the process alive for the sake of a log summary. */
function scheduleUnref(run: () => void, ms: number): void {
  setTimeout(run, ms).unref();
}

/**
 * A logger for lines an untrusted party (a guest, a VMM, a socket peer, a control client) can
 * cause: every level shares one budget of `linesPerSecond`; past it lines are dropped and counted,
 * and the next line written carries `suppressed=N`; when no line follows within a window, one
 * warning says how many were left out. Make one per source (per guest, per socket), so
 * that one flooding source never silences another. `name` is the source's name in the counts.
 */
export function rateLimitedLogger(
  logger: Logger,
  name: string,
  options: RateLimitOptions = {},
): Logger {
  const limiter = new LogRateLimiter(
    options.linesPerSecond ?? DEFAULT_LOG_LINES_PER_SECOND,
    1000,
    options.now ?? (() => performance.now()),
    options.suppression ?? logSuppression,
    name,
  );
  const schedule = options.schedule ?? scheduleUnref;
  let summaryDue = false;
  const summarize = (): void => {
    summaryDue = false;
    const suppressed = limiter.takePending();
    if (suppressed > 0) logger.warn("log lines left out by the rate limit", { suppressed });
  };
  const emit =
    (level: LogLevel) =>
    (message: string, fields?: LogFields): void => {
      if (!logger.enabled(level)) return;
      const { write, suppressed } = limiter.admit();
      if (!write) {
        if (!summaryDue) {
          summaryDue = true;
          // One window late: while the flood goes on, the next window's first line reports the
          // count itself; the summary speaks only for a flood that stopped.
          schedule(summarize, limiter.msLeft + 1000);
        }
        return;
      }
      logger[level](message, suppressed > 0 ? { ...fields, suppressed } : fields);
    };
  return {
    level: logger.level,
    enabled: (level) => logger.enabled(level),
    error: emit("error"),
    warn: emit("warn"),
    info: emit("info"),
    debug: emit("debug"),
    trace: emit("trace"),
    child: (sub) => rateLimitedLogger(logger.child(sub), `${name}/${sub}`, options),
  };
}
