/**
 * SysError: a failed syscall with a stable `code` (errno name such as "ENOENT", or one of the
 * addon's own codes such as "ECTRUNC"), the `errno` number and the `syscall` that failed, plus the
 * one place that classifies codes (retry, disconnect, fatal).
 * Must not: log, retry or decide what a caller does next.
 * @module
 */

import { CodedError } from "../errors.js";

/** Codes that mean "try again later"; nothing is wrong with the object. */
const RETRYABLE_CODES: ReadonlySet<string> = new Set(["EAGAIN", "EWOULDBLOCK", "EINTR", "ENOBUFS"]);

/** Codes that mean the peer is gone: drop the connection, maybe reconnect. */
const DISCONNECT_CODES: ReadonlySet<string> = new Set([
  "EOF",
  "EPIPE",
  "ECONNRESET",
  "ENOTCONN",
  "ECONNREFUSED",
  "ECONNABORTED",
  "ESHUTDOWN",
  "ESHORTSEND",
]);

export type SysErrorClass = "retry" | "disconnect" | "fatal";

/** `code`: errno name ("ENOENT") or an addon code ("ECTRUNC", "EOF", "ERR_MAPPING_CLOSED"). */
export class SysError extends CodedError<string> {
  /** Positive errno, or undefined when the failure is not an errno. */
  readonly errno: number | undefined;
  readonly syscall: string;

  constructor(
    code: string,
    syscall: string,
    message?: string,
    options?: { errno?: number; cause?: unknown },
  ) {
    super(code, message ?? `${syscall} failed (${code})`, { cause: options?.cause });
    this.errno = options?.errno;
    this.syscall = syscall;
  }
}

/** Any use of a wrapper after close(): the fd is gone, as the kernel would say. */
export function closedError(syscall: string): SysError {
  return new SysError("EBADF", syscall, `${syscall} failed: already closed (EBADF)`);
}

/** A bad argument caught before the addon sees it. */
export class SysArgumentError extends RangeError {
  readonly code = "ERR_OUT_OF_RANGE";
  constructor(message: string) {
    super(message);
    this.name = "SysArgumentError";
  }
}

/** Integer in [min, max], else SysArgumentError naming `what`. */
export function checkInt(value: number, what: string, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new SysArgumentError(`${what} must be an integer in [${min}, ${max}], got ${value}`);
  }
}

interface NativeErrorShape {
  code?: unknown;
  errno?: unknown;
  syscall?: unknown;
  message?: unknown;
}

/**
 * The SysError for anything the addon threw: native errors carry code/errno/syscall. Argument
 * errors (TypeError/RangeError) are not syscall failures and pass through unchanged.
 */
export function toSysError(error: unknown, fallbackSyscall = "unknown"): unknown {
  if (error instanceof SysError) return error;
  if (!(error instanceof Error) || error instanceof TypeError || error instanceof RangeError) {
    return error;
  }
  const shape = error as NativeErrorShape;
  if (typeof shape.code !== "string") return error;
  return new SysError(
    shape.code,
    typeof shape.syscall === "string" ? shape.syscall : fallbackSyscall,
    error.message,
    { errno: typeof shape.errno === "number" ? shape.errno : undefined, cause: error },
  );
}

/** Runs one addon call and rethrows its failure as a SysError. */
export function sysCall<T>(syscall: string, call: () => T): T {
  try {
    return call();
  } catch (error) {
    throw toSysError(error, syscall);
  }
}

function codeOf(error: unknown): string | undefined {
  if (error === null || typeof error !== "object") return undefined;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
}

/** Check errors by code, never by message. */
export function hasCode(error: unknown, code: string): boolean {
  return codeOf(error) === code;
}

export function isRetryable(error: unknown): boolean {
  const code = codeOf(error);
  return code !== undefined && RETRYABLE_CODES.has(code);
}

/** EPIPE, ECONNRESET, EOF and friends: the other end went away. */
export function isDisconnect(error: unknown): boolean {
  const code = codeOf(error);
  return code !== undefined && DISCONNECT_CODES.has(code);
}

export function classify(error: unknown): SysErrorClass {
  if (isRetryable(error)) return "retry";
  if (isDisconnect(error)) return "disconnect";
  return "fatal";
}
