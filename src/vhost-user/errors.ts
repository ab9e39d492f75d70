/**
 * BackendError: how a vhost-user request fails, shared by the protocol state machine (backend.ts)
 * and the rings that carry requests out (rings.ts), in whatever thread those run.
 * @module
 */

import { CodedError } from "../errors.js";

export type BackendErrorCode =
  | "UNSUPPORTED" // request not implemented: error reply, connection kept
  | "EINVAL" // request refused: error reply, connection kept
  | "EPROTO"; // protocol violation: the connection is closed

export class BackendError extends CodedError<BackendErrorCode> {}

export function isBackendErrorCode(code: unknown): code is BackendErrorCode {
  return code === "UNSUPPORTED" || code === "EINVAL" || code === "EPROTO";
}
