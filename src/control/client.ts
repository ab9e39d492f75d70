/**
 * Control-socket client: `ControlClient` sends command lines and awaits their reply lines (tests,
 * tools); `runControlCommand` is what `vhost-device-i2c control PATH CMD...` runs.
 * Whatever listens at the path is not trusted: it may not make the client buffer without bound
 * (MAX_REPLY_BYTES) nor write terminal controls to the operator's terminal (escapeControls).
 * Must not: exit the process or write to stderr/stdout itself (the CLI passes `out`/`err` sinks).
 * @module
 */

import { createConnection, type Socket } from "node:net";
import { CodedError } from "../errors.js";
import { ControlError, parseReply, parseWords, type Reply } from "./protocol.js";

export type ControlClientErrorCode = "ECONNECT" | "ECLOSED" | "EBUSY" | "ETOOLONG";

export class ControlClientError extends CodedError<ControlClientErrorCode> {}

/**
 * Most reply bytes the client holds (lines not taken yet plus an unfinished one); a server that
 * sends more is disconnected. The longest reply of the daemon, `list` of every emulated chip of 64
 * guests with their properties, stays far below it.
 */
export const MAX_REPLY_BYTES = 16 * 1024 * 1024;

/**
 * Characters a terminal acts on, or that hide or reorder text: C0 controls except tab (ESC, BEL,
 * CR, backspace...), DEL, C1 controls (CSI U+009B, OSC U+009D...), and the Unicode bidirectional
 * and invisible formatting characters.
 */
const TERMINAL_CONTROLS =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point
  /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

/**
 * `text` with every terminal control written as a `\uXXXX` escape, so printing it cannot move the
 * cursor, change the title, hide or reorder text. JSON as the daemon writes it (no whitespace but
 * spaces and tabs between tokens) stays valid and means the same: a JSON string may not hold a raw
 * C0 control, and the other characters escaped here equal their `\uXXXX` escape inside a string.
 */
export function escapeControls(text: string): string {
  return text.replace(
    TERMINAL_CONTROLS,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** A connection to a control socket; one command at a time. */
export class ControlClient {
  readonly #socket: Socket;
  /** Complete reply lines not taken yet, with their length in bytes (newline included). */
  readonly #lines: { text: string; bytes: number }[] = [];
  /** The start of a line whose newline has not arrived. */
  #partial: Buffer[] = [];
  /** Bytes in #lines and #partial: at most MAX_REPLY_BYTES. */
  #bufferedBytes = 0;
  #waiting: { resolve: (line: string) => void; reject: (error: Error) => void } | null = null;
  #ended: Error | null = null;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => this.#receive(chunk));
    socket.on("close", () => this.#fail(new ControlClientError("ECLOSED", "connection closed")));
    socket.on("error", (error) =>
      this.#fail(new ControlClientError("ECLOSED", error.message, { cause: error })),
    );
  }

  /** Connects to the control socket at `path`. Rejects with ECONNECT when nobody serves it. */
  static connect(path: string): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      const onError = (error: Error) =>
        reject(
          new ControlClientError("ECONNECT", `cannot connect to ${path}: ${error.message}`, {
            cause: error,
          }),
        );
      socket.once("error", onError);
      socket.once("connect", () => {
        socket.off("error", onError);
        resolve(new ControlClient(socket));
      });
    });
  }

  /** Sends one line (no newline) and resolves with the reply line (no newline). */
  request(line: string): Promise<string> {
    if (this.#waiting !== null) {
      return Promise.reject(new ControlClientError("EBUSY", "a request is already waiting"));
    }
    if (this.#ended !== null) return Promise.reject(this.#ended);
    const reply = new Promise<string>((resolve, reject) => {
      this.#waiting = { resolve, reject };
    });
    this.#socket.write(`${line}\n`);
    this.#deliver();
    return reply;
  }

  /** Sends the command words and splits the reply into ok/error. */
  async command(words: readonly string[]): Promise<Reply> {
    return parseReply(await this.request(words.join(" ")));
  }

  /** Sends raw bytes as they are (tests: garbage, partial lines). */
  writeRaw(bytes: string | Uint8Array): void {
    this.#socket.write(bytes);
  }

  /** Resolves when the server closed the connection. */
  whenClosed(): Promise<void> {
    if (this.#socket.closed) return Promise.resolve();
    return new Promise((resolve) => this.#socket.once("close", () => resolve()));
  }

  close(): void {
    this.#socket.destroy();
  }

  /** Splits received bytes into lines (a newline never sits inside a UTF-8 sequence). */
  #receive(chunk: Buffer): void {
    this.#bufferedBytes += chunk.length;
    if (this.#bufferedBytes > MAX_REPLY_BYTES) {
      this.#fail(
        new ControlClientError(
          "ETOOLONG",
          `the server sent more than ${MAX_REPLY_BYTES} bytes without a complete reply; disconnected`,
        ),
      );
      this.#lines.length = 0;
      this.#partial = [];
      this.#socket.destroy();
      return;
    }
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(0x0a, start);
      if (newline < 0) break;
      const piece = chunk.subarray(start, newline);
      const bytes = this.#partial.length === 0 ? piece : Buffer.concat([...this.#partial, piece]);
      this.#partial = [];
      this.#lines.push({ text: bytes.toString("utf8"), bytes: bytes.length + 1 });
      start = newline + 1;
    }
    if (start < chunk.length) this.#partial.push(chunk.subarray(start));
    this.#deliver();
  }

  #deliver(): void {
    if (this.#waiting === null) return;
    const line = this.#lines.shift();
    if (line === undefined) return;
    this.#bufferedBytes -= line.bytes;
    const { resolve } = this.#waiting;
    this.#waiting = null;
    resolve(line.text);
  }

  #fail(error: Error): void {
    this.#ended ??= error;
    const waiting = this.#waiting;
    this.#waiting = null;
    waiting?.reject(error);
  }
}

export interface TextSink {
  write(text: string): unknown;
}

/** Exit statuses of `vhost-device-i2c control`. */
export const CONTROL_EXIT = { ok: 0, errorReply: 1, usage: 2 } as const;

/**
 * Runs one command against the control socket at `path`: prints the payload to `out` and returns 0
 * on `ok`; prints `error <code> <message>` to `err` and returns 1 on an error reply; returns 2 for
 * bad usage (checked before connecting) or when the socket cannot be reached.
 */
export async function runControlCommand(
  path: string,
  words: readonly string[],
  out: TextSink,
  err: TextSink = process.stderr,
): Promise<number> {
  try {
    // The line is the words joined by spaces: a word must not hide a blank or a second line.
    const blank = words.find((word) => word === "" || /\s/.test(word));
    if (blank !== undefined) {
      throw new ControlError("EUSAGE", `argument ${JSON.stringify(blank)} is empty or has blanks`);
    }
    parseWords(words);
  } catch (error) {
    if (error instanceof ControlError) {
      err.write(`vhost-device-i2c control: ${error.message}\n`);
      return CONTROL_EXIT.usage;
    }
    throw error;
  }
  let client: ControlClient;
  try {
    client = await ControlClient.connect(path);
  } catch (error) {
    err.write(
      `vhost-device-i2c control: ${error instanceof Error ? error.message : String(error)} (is the daemon running with --control-socket ${path}?)\n`,
    );
    return CONTROL_EXIT.usage;
  }
  try {
    const reply = await client.command(words);
    // The reply is the server's text: printed with its terminal controls escaped.
    if (reply.ok) {
      out.write(`${escapeControls(reply.payload)}\n`);
      return CONTROL_EXIT.ok;
    }
    err.write(`error ${escapeControls(`${reply.code} ${reply.message}`)}\n`);
    return CONTROL_EXIT.errorReply;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    err.write(`vhost-device-i2c control: ${escapeControls(message)}\n`);
    return CONTROL_EXIT.usage;
  } finally {
    client.close();
  }
}
