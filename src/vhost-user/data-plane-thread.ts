/**
 * The data-plane thread (a worker_thread started by DataPlane): it builds a host (the module named in
 * its ThreadInit builds the devices, in this thread) and then waits in a blocking epoll_wait on the
 * kick eventfds of its rings and on the wake eventfd of the main thread. A kick runs the device's pass
 * right here: pop, transfer (a host adapter's ioctl runs in this thread), push used, call. Requests
 * from the main thread (ring changes, host requests) are read with receiveMessageOnPort when the wake
 * eventfd fires. The event loop of this thread runs only between waits that found control-plane work,
 * async work pending, or nothing for a while (timers), never per kick.
 * Must not: speak the vhost-user protocol (the main thread's BackendConnection does) or know any
 * device class (the host does).
 * @module
 */

import { receiveMessageOnPort, workerData } from "node:worker_threads";
import { emittingLogger, type Logger } from "../log.js";
import { EPOLLIN, Epoll } from "../sys/epoll.js";
import { EventFd } from "../sys/eventfd.js";
import { closeFdQuietly } from "../sys/fd.js";
import type { FromThread, RingMethod, ThreadInit, ToThread } from "./data-plane.js";
import { toWire } from "./data-plane.js";
import type { VhostUserDevice } from "./device.js";
import { LocalRings, type RingControl, type RingScheduler } from "./rings.js";

/** What the thread's host module gives it (its `createDataPlaneHost` export builds one). */
export interface DataPlaneHost {
  /** The device for a new connection of socket `socket` (throws: the connection is refused). */
  createDevice(socket: number): VhostUserDevice;
  /** The connection of a device made by createDevice has ended (its rings are closed). */
  releaseDevice?(device: VhostUserDevice): void;
  /** A request of the host's own protocol from the main thread. */
  request(request: unknown): unknown;
  /** Runs after each batch of kicks and requests: send what was buffered (emit). */
  flush?(): void;
  /**
   * Whether work of the host waits for this thread's event loop with nothing to wake the thread
   * (a timer: an emulated device's stall or clock stretching): the thread then waits at most
   * PENDING_WAIT_MS in epoll, so the timer fires close to its time. Absent: never.
   */
  waitsForTimers?(): boolean;
  /** The thread ends: close everything the host opened. */
  close(): void;
}

/** What a host module gets besides its init data. */
export interface DataPlaneContext {
  readonly logger: Logger;
  /**
   * An eventfd for work that completes through this thread's event loop (an I/O thread's uv_async):
   * whoever queues such a completion writes it, so the thread stops waiting in epoll and turns its
   * loop. The thread owns it.
   */
  readonly loopWakeFd: number;
  /** Sends a host event to the main thread (DataPlaneOptions.onEvent). */
  emit(event: unknown): void;
}

export type CreateDataPlaneHost = (
  init: unknown,
  context: DataPlaneContext,
) => DataPlaneHost | Promise<DataPlaneHost>;

/** epoll data of the main thread's wake eventfd and of the loop wake; rings' kicks get 1, 2, ... */
const WAKE = 0;
const LOOP_WAKE = -1;
/**
 * Longest blocking wait when nothing is pending: timers of this thread (log summaries) run at least
 * this often, and the wait costs nothing while idle.
 */
const IDLE_WAIT_MS = 100;
/** Wait while async work of this thread (a promise, an import) is pending: its loop must turn. */
const PENDING_WAIT_MS = 1;

const init = workerData as ThreadInit;
const port = init.port;

function post(message: FromThread): void {
  port.postMessage(message);
}

/** Kick watches on the thread's epoll; `later` runs after the current batch. */
class EpollScheduler implements RingScheduler {
  readonly #epoll: Epoll;
  readonly #watches = new Map<number, () => void>();
  #nextData = 1;
  #later: { fn: () => void; cancelled: boolean }[] = [];
  #turnLoop = false;

  constructor(epoll: Epoll) {
    this.#epoll = epoll;
  }

  get hasLater(): boolean {
    return this.#later.length > 0;
  }

  watch(fd: number, onReadable: () => void): { close(): void } {
    const data = this.#nextData++;
    this.#epoll.add(fd, data, EPOLLIN);
    this.#watches.set(data, onReadable);
    let open = true;
    return {
      close: () => {
        if (!open) return;
        open = false;
        this.#watches.delete(data);
        try {
          this.#epoll.remove(fd);
        } catch {
          // Closed already: the kernel dropped it from the set with its last reference.
        }
      },
    };
  }

  turnLoop(): void {
    this.#turnLoop = true;
  }

  /** Whether a device asked for a turn of the event loop since the last call. */
  takeTurn(): boolean {
    const turn = this.#turnLoop;
    this.#turnLoop = false;
    return turn;
  }

  later(fn: () => void): { cancel(): void } {
    const entry = { fn, cancelled: false };
    this.#later.push(entry);
    return {
      cancel: () => {
        entry.cancelled = true;
      },
    };
  }

  /** The watch callback of `data` (a kick fd became readable). */
  dispatch(data: number): void {
    this.#watches.get(data)?.();
  }

  runLater(): void {
    if (this.#later.length === 0) return;
    const due = this.#later;
    this.#later = [];
    for (const entry of due) if (!entry.cancelled) entry.fn();
  }
}

interface Connection {
  readonly device: VhostUserDevice;
  readonly rings: LocalRings;
}

class DataPlaneThread {
  readonly #epoll = Epoll.create();
  /** The main thread's eventfd: it closes it once this thread has ended. */
  readonly #wake = EventFd.adopt(init.wakeFd);
  readonly #scheduler = new EpollScheduler(this.#epoll);
  readonly #logger: Logger;
  readonly #host: DataPlaneHost;
  readonly #connections = new Map<number, Connection>();
  /** Requests whose answer is a promise not yet settled: the event loop must turn for them. */
  #pending = 0;
  #stopId: number | null = null;

  readonly #loopWake: EventFd;

  constructor(host: DataPlaneHost, logger: Logger, loopWake: EventFd) {
    this.#host = host;
    this.#logger = logger;
    this.#loopWake = loopWake;
    this.#epoll.add(this.#wake.fd, WAKE, EPOLLIN);
    this.#epoll.add(loopWake.fd, LOOP_WAKE, EPOLLIN);
  }

  /** One turn: blocking waits and their work until something needs this thread's event loop. */
  run = (): void => {
    for (;;) {
      const busy =
        this.#pending > 0 || this.#scheduler.hasLater || this.#host.waitsForTimers?.() === true;
      const ready = this.#epoll.wait(
        this.#scheduler.hasLater ? 0 : busy ? PENDING_WAIT_MS : IDLE_WAIT_MS,
      );
      let turnLoop = ready === 0 || this.#pending > 0;
      for (let i = 0; i < ready; i++) {
        const data = this.#epoll.data(i);
        if (data === WAKE) {
          if (this.#readMessages()) turnLoop = true;
        } else if (data === LOOP_WAKE) {
          this.#loopWake.read();
          turnLoop = true;
        } else {
          this.#scheduler.dispatch(data);
        }
      }
      this.#scheduler.runLater();
      if (this.#scheduler.takeTurn()) turnLoop = true;
      this.#flush();
      if (this.#stopId !== null && this.#pending === 0) {
        this.#finish();
        return;
      }
      if (turnLoop) {
        setImmediate(this.run);
        return;
      }
    }
  };

  #flush(): void {
    try {
      this.#host.flush?.();
    } catch (error) {
      this.#logger.error("data-plane flush failed", { error: String(error) });
    }
  }

  /** Handles every message waiting; true when there were some. */
  #readMessages(): boolean {
    this.#wake.read();
    let any = false;
    for (;;) {
      const received = receiveMessageOnPort(port);
      if (received === undefined) return any;
      any = true;
      this.#handle(received.message as ToThread);
    }
  }

  #handle(message: ToThread): void {
    if (message.kind === "stop") {
      // Answered once the thread has closed everything (#finish).
      this.#stopId = message.id;
      return;
    }
    let result: unknown;
    try {
      result = this.#execute(message);
    } catch (error) {
      if (message.id !== 0) post({ kind: "reply", id: message.id, error: toWire(error) });
      return;
    }
    if (message.id === 0) return;
    if (result instanceof Promise) {
      this.#pending++;
      result.then(
        (value: unknown) => {
          this.#pending--;
          post({ kind: "reply", id: message.id, value });
        },
        (error: unknown) => {
          this.#pending--;
          post({ kind: "reply", id: message.id, error: toWire(error) });
        },
      );
      return;
    }
    post({ kind: "reply", id: message.id, value: result });
  }

  #execute(message: ToThread): unknown {
    switch (message.kind) {
      case "open": {
        const device = this.#host.createDevice(message.socket);
        const rings = new LocalRings(device, {
          ...message.options,
          logger: this.#logger.child(`socket${message.socket}`),
          scheduler: this.#scheduler,
        });
        this.#connections.set(message.conn, { device, rings });
        return undefined;
      }
      case "ring": {
        const connection = this.#connections.get(message.conn);
        if (connection === undefined) {
          // Its device could not be made: the fds that came with the request are still ours.
          for (const fd of fdsOf(message.method, message.args)) closeFdQuietly(fd);
          throw new Error("no such connection in the data-plane thread");
        }
        if (message.method === "handOver") {
          // The connection goes on in another process: forget it here without closing its fds.
          return connection.rings.handOver().then((state) => {
            this.#connections.delete(message.conn);
            this.#host.releaseDevice?.(connection.device);
            return state;
          });
        }
        const method = connection.rings[message.method as RingMethod] as (
          this: RingControl,
          ...args: unknown[]
        ) => unknown;
        return method.apply(connection.rings, [...message.args]);
      }
      case "close": {
        const connection = this.#connections.get(message.conn);
        if (connection === undefined) return undefined;
        this.#connections.delete(message.conn);
        connection.rings.close();
        this.#host.releaseDevice?.(connection.device);
        return undefined;
      }
      case "host":
        return this.#host.request(message.request);
      case "stop":
        throw new Error("stop is handled by #handle");
    }
  }

  #finish(): void {
    for (const connection of this.#connections.values()) connection.rings.close();
    this.#connections.clear();
    try {
      this.#host.close();
    } catch (error) {
      this.#logger.error("closing the data-plane host failed", { error: String(error) });
    }
    this.#epoll.close();
    this.#loopWake.close();
    if (this.#stopId !== null) post({ kind: "reply", id: this.#stopId, value: undefined });
    port.close();
  }
}

/** The fds a ring request hands over (RingControl: the callee owns them). */
function fdsOf(method: RingMethod, args: readonly unknown[]): number[] {
  if (method === "setMemTable") return [...(args[1] as readonly number[])];
  if (method === "addMemRegion") return [args[1] as number];
  if (method === "setVringFd") return [args[2] as number];
  if (method === "setPositionLog") return [args[0] as number];
  return [];
}

async function main(): Promise<void> {
  // Lines go to the main thread, which writes them with its own logger.
  const logger = emittingLogger(init.logLevel, (level, context, message, fields) =>
    post({ kind: "log", level, context, message, fields }),
  );
  const loopWake = EventFd.create();
  let host: DataPlaneHost;
  try {
    const module = (await import(init.hostModule)) as { createDataPlaneHost?: CreateDataPlaneHost };
    if (typeof module.createDataPlaneHost !== "function") {
      throw new Error(`${init.hostModule} does not export createDataPlaneHost`);
    }
    host = await module.createDataPlaneHost(init.hostInit, {
      logger,
      loopWakeFd: loopWake.fd,
      emit: (event) => post({ kind: "event", event }),
    });
  } catch (error) {
    loopWake.close();
    post({ kind: "failed", error: toWire(error) });
    port.close();
    return;
  }
  post({ kind: "ready" });
  new DataPlaneThread(host, logger, loopWake).run();
}

void main();
