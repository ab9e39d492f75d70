/**
 * Leveled logger shared by every layer. Layers receive a Logger; only the CLI decides where it writes.
 * Lines are plain text: `LEVEL [context] message key=value ...`.
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

function formatLine(level: LogLevel, context: string, message: string, fields?: LogFields): string {
  let line = `${level.toUpperCase()}${context ? ` [${context}]` : ""} ${message}`;
  if (fields) {
    for (const [key, value] of Object.entries(fields)) {
      if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
    }
  }
  return `${line}\n`;
}

export interface LogSink {
  write(line: string): unknown;
}

export function createLogger(
  level: LogLevel,
  sink: LogSink = process.stderr,
  context = "",
): Logger {
  const rank = LOG_LEVELS.indexOf(level);
  const enabled = (l: LogLevel) => LOG_LEVELS.indexOf(l) <= rank;
  const emit = (l: LogLevel) => (message: string, fields?: LogFields) => {
    if (enabled(l)) sink.write(formatLine(l, context, message, fields));
  };
  return {
    level,
    enabled,
    error: emit("error"),
    warn: emit("warn"),
    info: emit("info"),
    debug: emit("debug"),
    trace: emit("trace"),
    child: (sub) => createLogger(level, sink, context ? `${context}/${sub}` : sub),
  };
}

/** A logger that writes nothing (library defaults, tests). */
export const silentLogger: Logger = createLogger("error", { write: () => undefined });
