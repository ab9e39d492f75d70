/**
 * Control-socket client: `ControlClient` sends command lines and awaits their reply lines (tests,
 * tools); `runControlCommand` is what `vhost-device-i2c control PATH CMD...` runs.
 * Must not: exit the process or write to stderr/stdout itself (the CLI passes `out`/`err` sinks).
 * @module
 */

import { createConnection, type Socket } from "node:net";
import { CodedError } from "../errors.js";
import { ControlError, parseReply, parseWords, type Reply } from "./protocol.js";

export type ControlClientErrorCode = "ECONNECT" | "ECLOSED" | "EBUSY";

export class ControlClientError extends CodedError<ControlClientErrorCode> {}

/** A connection to a control socket; one command at a time. */
export class ControlClient {
  readonly #socket: Socket;
  #buffered = "";
  #waiting: { resolve: (line: string) => void; reject: (error: Error) => void } | null = null;
  #ended: Error | null = null;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (text: string) => {
      this.#buffered += text;
      this.#deliver();
    });
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

  #deliver(): void {
    const newline = this.#buffered.indexOf("\n");
    if (newline < 0 || this.#waiting === null) return;
    const line = this.#buffered.slice(0, newline);
    this.#buffered = this.#buffered.slice(newline + 1);
    const { resolve } = this.#waiting;
    this.#waiting = null;
    resolve(line);
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
    if (reply.ok) {
      out.write(`${reply.payload}\n`);
      return CONTROL_EXIT.ok;
    }
    err.write(`error ${reply.code} ${reply.message}\n`);
    return CONTROL_EXIT.errorReply;
  } catch (error) {
    err.write(
      `vhost-device-i2c control: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    return CONTROL_EXIT.usage;
  } finally {
    client.close();
  }
}
