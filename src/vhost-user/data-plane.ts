/**
 * DataPlane: the main thread's side of a data-plane thread (data-plane-thread.ts). It starts the
 * thread with a host module (what builds the devices there), hands each connection's ring requests
 * to it as messages (RemoteDevice/RingControl: fds travel as numbers, the thread owns them from
 * then on) and wakes it through an eventfd, since the thread waits in epoll rather than in its event
 * loop. Log lines and host events come back as messages.
 * Must not: know any device class (the host module does), or touch rings or guest memory.
 * @module
 */

import {
  MessageChannel,
  type MessagePort,
  receiveMessageOnPort,
  Worker,
} from "node:worker_threads";
import { settlesWithin } from "../deadline.js";
import type { LogFields, Logger, LogLevel } from "../log.js";
import { EventFd } from "../sys/eventfd.js";
import type { RemoteDevice, VhostUserDeviceInfo } from "./device.js";
import { BackendError, isBackendErrorCode } from "./errors.js";
import type { LocalRingsOptions, RingControl } from "./rings.js";

/** A failure carried between threads as plain data. */
export interface WireError {
  readonly name: string;
  readonly code: string | undefined;
  readonly message: string;
}

/** What a connection's rings are told at their start (LocalRingsOptions that travel). */
export type RingOptions = Pick<LocalRingsOptions, "maxMemSlots" | "allowUnsealedMemory">;

/** The RingControl methods, by name, as the thread dispatches them. */
export type RingMethod = Exclude<keyof RingControl, "close">;

/** Main thread → data-plane thread. */
export type ToThread =
  | {
      readonly id: number;
      readonly kind: "open";
      readonly conn: number;
      readonly socket: number;
      readonly options: RingOptions;
    }
  | {
      readonly id: number;
      readonly kind: "ring";
      readonly conn: number;
      readonly method: RingMethod;
      readonly args: readonly unknown[];
    }
  | { readonly id: 0; readonly kind: "close"; readonly conn: number }
  | { readonly id: number; readonly kind: "host"; readonly request: unknown }
  | { readonly id: number; readonly kind: "stop" };

/** Data-plane thread → main thread. */
export type FromThread =
  | { readonly kind: "reply"; readonly id: number; readonly value: unknown }
  | { readonly kind: "reply"; readonly id: number; readonly error: WireError }
  | {
      readonly kind: "log";
      readonly level: LogLevel;
      readonly context: string;
      readonly message: string;
      readonly fields: LogFields | undefined;
    }
  | { readonly kind: "event"; readonly event: unknown }
  | { readonly kind: "ready" }
  | { readonly kind: "failed"; readonly error: WireError };

/** What the thread is started with (workerData). */
export interface ThreadInit {
  readonly port: MessagePort;
  /** The eventfd the main thread writes after every message (the thread's epoll waits on it). */
  readonly wakeFd: number;
  readonly hostModule: string;
  readonly hostInit: unknown;
  readonly logLevel: LogLevel;
}

export interface DataPlaneOptions {
  /** Module the thread imports: it exports `createDataPlaneHost` (see data-plane-thread.ts). */
  readonly hostModule: URL;
  /** Structured-cloneable data given to createDataPlaneHost. */
  readonly hostInit: unknown;
  /** Takes the thread's log lines (they keep their level and context). */
  readonly logger: Logger;
  /** Host events (e.g. finished transfers for tracing), in the order the thread sent them. */
  readonly onEvent?: (event: unknown) => void;
  /** The thread ended without being asked to (a crash): its connections are gone. */
  readonly onExit?: (error: Error) => void;
}

/** A failure the thread reported, as the error it was there (BackendError keeps its code). */
export function fromWire(error: WireError): Error {
  if (error.name === "BackendError" && isBackendErrorCode(error.code)) {
    return new BackendError(error.code, error.message);
  }
  const rebuilt = new Error(error.message) as Error & { code?: string };
  rebuilt.name = error.name;
  if (error.code !== undefined) rebuilt.code = error.code;
  return rebuilt;
}

export function toWire(error: unknown): WireError {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return {
      name: error.name,
      code: typeof code === "string" ? code : undefined,
      message: error.message,
    };
  }
  return { name: "Error", code: undefined, message: String(error) };
}

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

export class DataPlane {
  /** Threads asked to stop that did not end in time: stuck in a system call. */
  static #stuck = 0;

  /** How many data-plane threads did not end when asked to (Node's exit would wait for them). */
  static get stuck(): number {
    return DataPlane.#stuck;
  }

  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #wake: EventFd;
  readonly #options: DataPlaneOptions;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #nextConn = 1;
  #exited = false;
  #stopping = false;
  readonly #exit: Promise<void>;

  private constructor(options: DataPlaneOptions, ready: (error: Error | null) => void) {
    this.#options = options;
    this.#wake = EventFd.create();
    const channel = new MessageChannel();
    this.#port = channel.port1;
    const init: ThreadInit = {
      port: channel.port2,
      wakeFd: this.#wake.fd,
      hostModule: options.hostModule.href,
      hostInit: options.hostInit,
      logLevel: options.logger.level,
    };
    this.#worker = new Worker(new URL("./data-plane-thread.js", import.meta.url), {
      workerData: init,
      transferList: [channel.port2],
    });
    let started = false;
    const onMessage = (message: FromThread) => {
      if (message.kind === "ready" || message.kind === "failed") {
        started = true;
        ready(message.kind === "failed" ? fromWire(message.error) : null);
        return;
      }
      this.#receive(message);
    };
    this.#port.on("message", onMessage);
    this.#exit = new Promise((resolveExit) => {
      this.#worker.on("error", (error) => {
        if (!started) {
          started = true;
          ready(error);
        }
        this.#ended(error);
      });
      this.#worker.on("exit", (code) => {
        // What the thread said last may still wait in the port (its exit can be seen first).
        for (
          let left = receiveMessageOnPort(this.#port);
          left;
          left = receiveMessageOnPort(this.#port)
        ) {
          onMessage(left.message as FromThread);
        }
        if (!started) {
          started = true;
          ready(new Error(`the data-plane thread exited with ${code} while starting`));
        }
        this.#ended(new Error(`the data-plane thread exited with ${code}`));
        resolveExit();
      });
    });
  }

  /** Starts the thread; resolves once its host is built (rejects with the host's failure). */
  static start(options: DataPlaneOptions): Promise<DataPlane> {
    return new Promise((resolveStart, rejectStart) => {
      const plane: DataPlane = new DataPlane(options, (error) => {
        if (error === null) {
          resolveStart(plane);
          return;
        }
        void plane.#exit.then(() => plane.#wake.close());
        rejectStart(error);
      });
    });
  }

  /** True until the thread has ended. */
  get running(): boolean {
    return !this.#exited;
  }

  /** A device of socket `socket` whose rings run in the thread; one per connection. */
  device(socket: number, info: VhostUserDeviceInfo, options: RingOptions = {}): RemoteDevice {
    const conn = this.#nextConn++;
    this.#call({ id: 0, kind: "open", conn, socket, options }).catch(() => {
      // The ring requests that follow fail with the same reason; the connection closes on them.
    });
    const ring =
      <M extends RingMethod>(method: M) =>
      (...args: Parameters<RingControl[M]>) =>
        this.#call({ id: 0, kind: "ring", conn, method, args }) as ReturnType<RingControl[M]>;
    const rings: RingControl = {
      setFeatures: ring("setFeatures"),
      setMemTable: ring("setMemTable"),
      addMemRegion: ring("addMemRegion"),
      removeMemRegion: ring("removeMemRegion"),
      setVringSize: ring("setVringSize"),
      setVringAddr: ring("setVringAddr"),
      setVringBase: ring("setVringBase"),
      setVringFd: ring("setVringFd"),
      setVringEnabled: ring("setVringEnabled"),
      getVringBase: ring("getVringBase"),
      reset: ring("reset"),
      handOver: ring("handOver"),
      setPositionLog: ring("setPositionLog"),
      recoverVringBase: ring("recoverVringBase"),
      close: () => this.#post({ id: 0, kind: "close", conn }),
    };
    return {
      numQueues: info.numQueues,
      maxQueueSize: info.maxQueueSize,
      ...(info.maxChainLength !== undefined && { maxChainLength: info.maxChainLength }),
      features: info.features,
      requiredFeatures: info.requiredFeatures,
      ...(info.getConfig !== undefined && { getConfig: info.getConfig.bind(info) }),
      rings,
    };
  }

  /** A request for the host (its own protocol); resolves with its answer. */
  request(request: unknown): Promise<unknown> {
    return this.#call({ id: 0, kind: "host", request });
  }

  /**
   * Asks the thread to close its host and end, and resolves when it has. A thread that does not end
   * within `timeoutMs` (stuck in a system call) is left behind: resolves false.
   */
  async stop(timeoutMs: number): Promise<boolean> {
    if (this.#exited) return true;
    if (!this.#stopping) {
      this.#stopping = true;
      this.#call({ id: 0, kind: "stop" }).catch(() => undefined);
    }
    const ended = await settlesWithin(this.#exit, timeoutMs);
    if (ended) this.#wake.close();
    else DataPlane.#stuck++;
    return ended;
  }

  #call(message: ToThread): Promise<unknown> {
    if (this.#exited) return Promise.reject(new Error("the data-plane thread has ended"));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#post({ ...message, id } as ToThread);
    });
  }

  #post(message: ToThread): void {
    if (this.#exited) return;
    this.#port.postMessage(message);
    this.#wake.write(1);
  }

  #receive(message: FromThread): void {
    switch (message.kind) {
      case "reply": {
        const pending = this.#pending.get(message.id);
        if (pending === undefined) return;
        this.#pending.delete(message.id);
        if ("error" in message) pending.reject(fromWire(message.error));
        else pending.resolve(message.value);
        return;
      }
      case "log": {
        const logger =
          message.context === ""
            ? this.#options.logger
            : this.#options.logger.child(message.context);
        logger[message.level](message.message, message.fields);
        return;
      }
      case "event":
        this.#options.onEvent?.(message.event);
        return;
      default:
        return;
    }
  }

  #ended(error: Error): void {
    if (this.#exited) return;
    this.#exited = true;
    this.#port.close();
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
    if (!this.#stopping) this.#options.onExit?.(error);
  }
}
