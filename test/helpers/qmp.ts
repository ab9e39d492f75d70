/**
 * A minimal QMP (QEMU Machine Protocol) client for tests that change a running guest's machine:
 * hot-plug and unplug of devices and chardevs. One JSON object per line each way; commands carry an
 * id and are answered in order, events arrive in between and are kept for `waitForEvent`.
 * Must not start QEMU or the daemon: the test passes `qmpArgs(path)` to QEMU and connects here.
 * @module
 */

import { createConnection, type Socket } from "node:net";
import { isSocket, waitUntil, withTimeout } from "./daemon.js";
import { qemuOptionValue } from "./guest.js";

/** QEMU arguments for a QMP server on the Unix socket `path` that does not hold the machine's start. */
export function qmpArgs(path: string): string[] {
  return ["-qmp", `unix:${qemuOptionValue(path)},server=on,wait=off`];
}

export interface QmpEvent {
  readonly event: string;
  readonly data?: Record<string, unknown>;
  readonly timestamp?: { readonly seconds: number; readonly microseconds: number };
}

/** A command's `error` reply. */
export class QmpError extends Error {
  readonly command: string;
  readonly errorClass: string;

  constructor(command: string, errorClass: string, description: string) {
    super(`QMP ${command}: ${errorClass}: ${description}`);
    this.command = command;
    this.errorClass = errorClass;
  }
}

export interface WaitForEventOptions {
  readonly match?: (event: QmpEvent) => boolean;
  /** Only events at this index of `events` or later count. */
  readonly since?: number;
  readonly ms?: number;
}

interface Pending {
  readonly command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
}

/** One QMP connection, in command mode once `connectQmp` resolves. */
export class QmpClient {
  readonly #socket: Socket;
  readonly #pending = new Map<number, Pending>();
  readonly #events: QmpEvent[] = [];
  readonly #eventWaiters = new Set<() => void>();
  #nextId = 1;
  #buffered = "";
  #closed: Error | null = null;
  #greeting: ((value: unknown) => void) | null = null;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.#receive(chunk));
    socket.on("error", (error) => this.#fail(error));
    socket.on("close", () => this.#fail(new Error("QMP connection closed")));
  }

  /**
   * Connects to QEMU's QMP socket at `path` (waiting up to `ms` for QEMU to create it), reads the
   * greeting and leaves capabilities negotiation, so commands can be sent.
   */
  static async connect(path: string, ms = 10_000): Promise<QmpClient> {
    await waitUntil(() => isSocket(path), `QMP socket ${path}`, ms);
    const socket = createConnection(path);
    const client = new QmpClient(socket);
    const greeted = new Promise<unknown>((resolve) => {
      client.#greeting = resolve;
    });
    await withTimeout(greeted, ms, `QMP greeting on ${path}`);
    await client.execute("qmp_capabilities", undefined, ms);
    return client;
  }

  /** Every event received so far, oldest first. */
  get events(): readonly QmpEvent[] {
    return this.#events;
  }

  /** Runs `command` with `args`; resolves with its `return` value, rejects with a QmpError. */
  execute(command: string, args?: Record<string, unknown>, ms = 10_000): Promise<unknown> {
    if (this.#closed) return Promise.reject(this.#closed);
    const id = this.#nextId++;
    const reply = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(id, { command, resolve, reject });
    });
    this.#socket.write(
      `${JSON.stringify({ execute: command, ...(args && { arguments: args }), id })}\n`,
    );
    return withTimeout(reply, ms, `QMP ${command}`);
  }

  /**
   * Resolves with the first event called `name` for which `match` holds, among those received from
   * index `since` of `events` on (default: all, those already received included) and those to come;
   * rejects after `ms` or when the connection closes. Take `events.length` before a command to wait
   * only for what it causes.
   */
  async waitForEvent(name: string, options: WaitForEventOptions = {}): Promise<QmpEvent> {
    const { match = () => true, since = 0, ms = 10_000 } = options;
    const find = (): QmpEvent | undefined =>
      this.#events.slice(since).find((event) => event.event === name && match(event));
    let wake = (): void => {};
    const arrived = new Promise<QmpEvent>((resolve, reject) => {
      wake = () => {
        const found = find();
        if (found) resolve(found);
        else if (this.#closed) reject(this.#closed);
      };
      this.#eventWaiters.add(wake);
      wake();
    });
    try {
      return await withTimeout(arrived, ms, `QMP event ${name}`);
    } finally {
      this.#eventWaiters.delete(wake);
    }
  }

  close(): void {
    this.#socket.destroy();
  }

  #receive(chunk: string): void {
    this.#buffered += chunk;
    let end = this.#buffered.indexOf("\n");
    while (end >= 0) {
      const line = this.#buffered.slice(0, end).trim();
      this.#buffered = this.#buffered.slice(end + 1);
      if (line) this.#message(JSON.parse(line) as Record<string, unknown>);
      end = this.#buffered.indexOf("\n");
    }
  }

  #message(message: Record<string, unknown>): void {
    if ("QMP" in message) {
      this.#greeting?.(message.QMP);
      this.#greeting = null;
    } else if (typeof message.event === "string") {
      this.#events.push(message as unknown as QmpEvent);
      for (const wake of this.#eventWaiters) wake();
    } else if (typeof message.id === "number") {
      const pending = this.#pending.get(message.id);
      if (!pending) return;
      this.#pending.delete(message.id);
      const error = message.error as { class?: string; desc?: string } | undefined;
      if (error) {
        pending.reject(new QmpError(pending.command, error.class ?? "?", error.desc ?? ""));
      } else {
        pending.resolve(message.return);
      }
    }
  }

  #fail(error: Error): void {
    if (this.#closed) return;
    this.#closed = error;
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
    for (const wake of this.#eventWaiters) wake();
  }
}
