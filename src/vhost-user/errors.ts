/**
 * BackendError: how a vhost-user request fails, shared by the protocol state machine (backend.ts)
 * and the rings that carry requests out (rings.ts), in whatever thread those run.
 * @module
 */

export type BackendErrorCode =
  | "UNSUPPORTED" // request not implemented: error reply, connection kept
  | "EINVAL" // request refused: error reply, connection kept
  | "EPROTO"; // protocol violation: the connection is closed

export class BackendError extends Error {
  readonly code: BackendErrorCode;
  constructor(code: BackendErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BackendError";
    this.code = code;
  }
}

export function isBackendErrorCode(code: unknown): code is BackendErrorCode {
  return code === "UNSUPPORTED" || code === "EINVAL" || code === "EPROTO";
}
