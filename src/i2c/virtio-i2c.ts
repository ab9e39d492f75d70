/**
 * VirtioI2cDevice: the virtio-i2c device behind a vhost-user backend. Pops request chains, groups them
 * into transfers, checks every message against the AddressMap, runs transfers on their bus in order,
 * and returns every popped chain to the used ring with a status. Reports each finished transfer to an
 * optional TransferObserver (trace, pcap, counters); without one, no record is built and no time read.
 * Must not touch the socket, eventfds or the memory table (the backend owns them), nor open devices.
 * @module
 */

import { type Logger, rateLimitedLogger, silentLogger } from "../log.js";
import type { QueuePass, VhostUserDevice, VhostUserDeviceInfo } from "../vhost-user/device.js";
import type { GuestMemory } from "../virtio/guest-memory.js";
import type { DeviceQueue } from "../virtio/queue.js";
import { type AddressMap, hex, type I2cBus, type I2cMessage } from "./bus.js";
import type { TransferObserver, TransferRecord } from "./observer.js";
import { RequestStatus, VIRTIO_I2C_F_ZERO_LENGTH_REQUEST } from "./protocol.js";
import {
  gather,
  type I2cRequest,
  MAX_TRANSFER_LENGTH,
  RequestRecord,
  type Segment,
  scatter,
  transferEnd,
} from "./request.js";
import { type OrderedTransfer, TransferOrder } from "./transfer-order.js";

/**
 * One guest transfer waiting for, or running on, its bus: requests[start, end). Transfers run at
 * once use the device's reusable one over the batch just popped; those that wait or go asynchronous
 * get their own (they outlive the batch).
 */
interface Transfer extends OrderedTransfer {
  requests: readonly RequestRecord[];
  start: number;
  end: number;
  queue: DeviceQueue;
  /** Device generation when popped: a reset in between means the result is dropped. */
  generation: number;
}

/**
 * A transfer that passed validation: its bus and the messages handed to it, msgs[i] for
 * requests[start + i]. Synchronous buses get the device's reusable one.
 */
interface PreparedTransfer {
  bus: I2cBus;
  readonly msgs: I2cMessage[];
  /** Per message: the read buffer is a temporary copy to scatter into guest memory afterwards. */
  readonly copyBack: boolean[];
}

/**
 * The reusable PreparedTransfer: its message objects live on in `spare` while `msgs` is cut to the
 * transfer's length, so the steady state builds no message objects; `views[i]` is the guest memory
 * view message i had last time, reused while the guest uses the same buffer again.
 */
interface ReusablePrepared extends PreparedTransfer {
  readonly spare: I2cMessage[];
  readonly views: GuestView[];
}

/** A view of guest memory over [addr, addr + len) of `memory`. */
interface GuestView {
  memory: GuestMemory | null;
  addr: number;
  len: number;
  bytes: Uint8Array;
}

/** Why a transfer failed without a count from its bus: refused, or the bus threw. */
interface Failure {
  readonly index: number;
  readonly reason: string;
}

/** Who watches the transfers of this device, and which guest (socket index) it serves. */
export interface DeviceObservation {
  readonly observer: TransferObserver;
  readonly guest: number;
}

const STATUS_BYTES = {
  [RequestStatus.OK]: Uint8Array.of(RequestStatus.OK),
  [RequestStatus.ERR]: Uint8Array.of(RequestStatus.ERR),
} as const;
const EMPTY = new Uint8Array(0);
/** Takes a promise's outcome so that it is never left unhandled. */
const IGNORE = () => {};
/** Data bytes shown per write message in the debug line. */
const LOGGED_BYTES = 16;

/**
 * Longest descriptor chain taken. Linux's i2c-virtio sends out_hdr, at most one buffer (a
 * DMA-safe copy, one segment) and the status byte: 3 descriptors, 2 for a zero-length message;
 * QEMU's vhost-user-i2c only passes the guest's ring on, and our frontend sends the same shape.
 * 16 leaves room for a driver that splits its header or buffer over a few segments, and bounds
 * what one chain costs to walk and keep, however long a (shared) indirect table claims to be.
 */
export const MAX_CHAIN_DESCRIPTORS = 16;

/**
 * What one processQueue pass takes before it yields the event loop, so that other guests and the
 * control socket are served in between. Checked between transfers: a transfer is one I2C
 * transaction (repeated STARTs, one STOP) and runs whole, so a pass goes past the budget by at most
 * one transfer (MAX_TRANSFER_LENGTH bytes; its chains are bounded by the ring size). 256 KiB is a
 * few milliseconds of an emulated EEPROM's work; 256 chains of Linux's shape are 768 descriptors.
 */
const PASS_BUDGET = { chains: 256, descriptors: 1024, bytes: 256 * 1024 } as const;

/** What the vhost-user protocol side needs of a virtio-i2c device, wherever its queues run. */
export const VIRTIO_I2C_DEVICE_INFO: VhostUserDeviceInfo = {
  numQueues: 1,
  maxQueueSize: 1024,
  maxChainLength: MAX_CHAIN_DESCRIPTORS,
  features: VIRTIO_I2C_F_ZERO_LENGTH_REQUEST,
  requiredFeatures: VIRTIO_I2C_F_ZERO_LENGTH_REQUEST,
};

export class VirtioI2cDevice implements VhostUserDevice {
  readonly numQueues = VIRTIO_I2C_DEVICE_INFO.numQueues;
  readonly maxQueueSize = VIRTIO_I2C_DEVICE_INFO.maxQueueSize;
  readonly maxChainLength = MAX_CHAIN_DESCRIPTORS;
  readonly features = VIRTIO_I2C_DEVICE_INFO.features;
  readonly requiredFeatures = VIRTIO_I2C_DEVICE_INFO.requiredFeatures;

  readonly #addressMap: AddressMap;
  /** Lines the operator asked for (debug: one per transfer). */
  readonly #logger: Logger;
  /** Every line a guest or its VMM can cause: rate-limited, one budget per guest. */
  readonly #guestLogger: Logger;
  /** Strict order per device: a transfer waits behind a running asynchronous one. */
  readonly #order = new TransferOrder<Transfer>((transfer) => this.#start(transfer));
  /** The chains of one processQueue pass, parsed: batch[0, count) is current, the rest stale. */
  readonly #batch: RequestRecord[] = [];
  /** Records whose chain went back to the used ring, for the next chains. */
  readonly #freeRecords: RequestRecord[] = [];
  /** freeRecords[0, count) are free: a stack that never shrinks the array (that would allocate). */
  #freeRecordCount = 0;
  /** The transfer run at once (see #submit) and the messages of a synchronous bus: reused. */
  #current: Transfer | null = null;
  #prepared: ReusablePrepared | null = null;
  readonly #observer: TransferObserver | null;
  readonly #guest: number;

  /**
   * `guestLogger` takes the warnings a guest can cause; give each guest (socket) one
   * rateLimitedLogger that outlives its connections, so reconnecting buys no new budget. Default: a
   * rate-limited `logger` of this device's own.
   */
  constructor(
    addressMap: AddressMap,
    logger: Logger = silentLogger,
    observation: DeviceObservation | null = null,
    guestLogger: Logger = rateLimitedLogger(logger, "virtio-i2c"),
  ) {
    this.#addressMap = addressMap;
    this.#logger = logger;
    this.#guestLogger = guestLogger;
    this.#observer = observation?.observer ?? null;
    this.#guest = observation?.guest ?? 0;
  }

  /** No feature changes what the device does: the queue counts the ring slots each chain takes. */
  setFeatures(_features: bigint): void {}

  processQueue(index: number, queue: DeviceQueue): QueuePass {
    if (index !== 0) {
      this.#guestLogger.warn("kick on a queue virtio-i2c does not have", { queue: index });
      return "drained";
    }
    const batch = this.#batch;
    let count = 0;
    let brokenRing: unknown = null;
    let pass: QueuePass = "drained";
    // The pass budget is checked only where a transfer ends (no FAIL_NEXT group open), so a group
    // is never cut by it: the rest of the ring waits for the next pass.
    let descriptors = 0;
    let bytes = 0;
    let groupOpen = false;
    try {
      for (;;) {
        if (
          !groupOpen &&
          (count >= PASS_BUDGET.chains ||
            descriptors >= PASS_BUDGET.descriptors ||
            bytes >= PASS_BUDGET.bytes)
        ) {
          pass = "yield";
          break;
        }
        const chain = queue.pop();
        if (chain === null) break;
        const record = this.#takeRecord();
        record.parse(chain, queue.memory);
        if (count < batch.length) batch[count] = record;
        else batch.push(record);
        count++;
        descriptors += chain.descriptors.length;
        bytes += record.length;
        groupOpen = record.failNext;
      }
    } catch (err) {
      brokenRing = err; // handle what was popped, then let the backend stop the queue
    }
    const generation = this.#order.generation;
    let start = 0;
    while (start < count) {
      let end = transferEnd(batch, start, count);
      if (end < 0) {
        // The rest of this group is not in the ring yet: give it back and wait for it, unless it can
        // never come: the ring is broken, or the slots left are fewer than the group's last chain
        // took. A driver adds a message only where it fits (Linux does), then kicks for what it
        // queued and waits for it: run what there is rather than hang the driver.
        const last = batch[count - 1] as RequestRecord;
        const slotsLeft = queue.size - queue.inFlightSlots;
        if (brokenRing === null && slotsLeft >= queue.ringSlots(last.chain)) {
          for (let i = start; i < count; i++) this.#returnRecord(batch[i] as RequestRecord);
          queue.rewind(count - start);
          break;
        }
        end = count;
      }
      this.#submit(batch, start, end, queue, generation);
      start = end;
    }
    if (count > 0) queue.notify();
    if (brokenRing !== null) throw brokenRing;
    return pass;
  }

  isIdle(_index: number): boolean {
    return this.#order.idle;
  }

  whenIdle(_index: number): Promise<void> {
    return this.#order.whenIdle();
  }

  reset(): void {
    this.#order.reset();
  }

  #takeRecord(): RequestRecord {
    if (this.#freeRecordCount === 0) return new RequestRecord();
    return this.#freeRecords[--this.#freeRecordCount] as RequestRecord;
  }

  #returnRecord(record: RequestRecord): void {
    this.#freeRecords[this.#freeRecordCount++] = record;
  }

  /**
   * Hands batch[start, end) to the transfer order in the reusable transfer: it runs now when nothing
   * runs or waits before it, else it waits behind with requests of its own (ownTransfer).
   */
  #submit(
    batch: readonly RequestRecord[],
    start: number,
    end: number,
    queue: DeviceQueue,
    generation: number,
  ): void {
    let transfer = this.#current;
    if (transfer === null) {
      transfer = { requests: batch, start, end, queue, generation };
      this.#current = transfer;
    } else {
      transfer.requests = batch;
      transfer.start = start;
      transfer.end = end;
      transfer.queue = queue;
      transfer.generation = generation;
    }
    this.#order.submit(transfer, ownTransfer);
  }

  /** Runs one transfer (TransferOrder's RunTransfer): true when it went asynchronous. */
  #start(transfer: Transfer): boolean {
    // Only observed transfers read the clock.
    const startedAt = this.#observer === null ? 0 : performance.now();
    const prepared = this.#prepare(transfer);
    if (!("bus" in prepared)) {
      this.#complete(transfer, null, 0, startedAt, prepared);
      return false;
    }
    const bus = prepared.bus;
    let result: number | Promise<number>;
    let busFailure: Failure | null = null;
    try {
      result = bus.transfer(prepared.msgs);
    } catch (err) {
      busFailure = this.#busFailure(bus, err);
      result = 0;
    }
    if (typeof result === "number") {
      this.#complete(transfer, prepared, result, startedAt, busFailure);
      return false;
    }
    if (prepared === this.#prepared) {
      // A broken promise: the bus said it completes before returning (synchronous, or inline now),
      // so it was lent guest memory in place and the device's reusable messages. Whatever it does
      // with them later, the chains go back now, failed, and once.
      result.then(undefined, IGNORE);
      const reason = `bus ${bus.name} said it completes synchronously but returned a Promise`;
      this.#guestLogger.error("bus broke its synchronous contract, transfer failed", {
        bus: bus.name,
      });
      this.#complete(transfer, prepared, 0, startedAt, { index: 0, reason });
      return false;
    }
    // It outlives this call: the reusable transfer becomes a transfer of its own.
    const owned = transfer === this.#current ? ownTransfer(transfer) : transfer;
    // One reaction per transfer: both outcomes settle here, no promise chain behind it.
    result.then(
      (done) => this.#asyncDone(owned, prepared, done, startedAt, null),
      (err: unknown) => this.#asyncDone(owned, prepared, 0, startedAt, this.#busFailure(bus, err)),
    );
    return true;
  }

  /** Completes an asynchronous transfer, then runs what waited behind it. */
  #asyncDone(
    transfer: Transfer,
    prepared: PreparedTransfer,
    done: number,
    startedAt: number,
    busFailure: Failure | null,
  ): void {
    if (!this.#order.settle(transfer.generation)) return; // reset meanwhile: dropped
    try {
      try {
        this.#complete(transfer, prepared, done, startedAt, busFailure);
      } finally {
        this.#order.resume();
      }
      transfer.queue.notify();
    } catch (err) {
      this.#guestLogger.error("completing an I2C transfer failed", { error: errorText(err) });
    }
  }

  /**
   * Checks the whole transfer before anything reaches a bus: no bad request, every address listed,
   * all on one bus. Builds the messages: guest memory in place for synchronous buses when contiguous,
   * temporary buffers otherwise (an asynchronous bus must never hold views of guest memory, nor
   * message objects the device reuses).
   */
  #prepare(transfer: Transfer): PreparedTransfer | Failure {
    const { requests, start, end } = transfer;
    let length = 0;
    for (let i = start; i < end; i++) {
      const bad = requests[i] as RequestRecord;
      if (bad.error !== null) {
        this.#guestLogger.warn("malformed request, transfer failed", {
          head: bad.chain.head,
          error: bad.error,
        });
        return { index: i - start, reason: bad.error };
      }
      length += bad.length;
    }
    if (length > MAX_TRANSFER_LENGTH) {
      const reason = `transfer of ${length} bytes, more than ${MAX_TRANSFER_LENGTH}`;
      this.#guestLogger.warn("transfer too long, refused", { bytes: length });
      return { index: 0, reason };
    }
    // Every target first: nothing is built for a transfer that is refused.
    let bus: I2cBus | undefined;
    for (let i = start; i < end; i++) {
      const r = requests[i] as RequestRecord;
      const target = this.#addressMap.lookup(r.addr);
      if (!target) {
        const reason = `address ${hex(r.addr)} not listed`;
        this.#debugTransfer(transfer, null, reason);
        return { index: i - start, reason };
      }
      if (bus && target.bus !== bus) {
        const buses = `${bus.name},${target.bus.name}`;
        this.#guestLogger.warn("transfer spans two buses, refused", { buses });
        return { index: i - start, reason: `transfer spans two buses (${buses})` };
      }
      bus = target.bus;
    }
    if (!bus) return { index: 0, reason: "empty transfer" };
    // Read right before the bus is called (#start): nothing runs in between.
    const inPlace = bus.synchronous || bus.inlineNow === true;
    const prepared = inPlace ? this.#reusablePrepared(bus, end - start) : newPrepared(bus);
    const memory = transfer.queue.memory;
    try {
      for (let i = start; i < end; i++) {
        const r = requests[i] as RequestRecord;
        const hostAddr = this.#addressMap.lookup(r.addr)?.hostAddr ?? r.addr;
        const view = inPlace ? this.#inPlaceView(memory, r.buffer, i - start) : null;
        const buf = view ?? copyOf(memory, r);
        prepared.copyBack[i - start] = r.read && r.length > 0 && view === null;
        const msg = prepared.msgs[i - start];
        if (msg === undefined)
          prepared.msgs.push({ addr: hostAddr, read: r.read, buf, injected: null });
        else {
          msg.addr = hostAddr;
          msg.read = r.read;
          msg.buf = buf;
          msg.injected = null;
        }
      }
      return prepared;
    } catch (err) {
      const reason = errorText(err);
      this.#guestLogger.warn("request buffer not in guest memory, transfer failed", {
        error: reason,
      });
      return { index: 0, reason };
    }
  }

  /** The reusable PreparedTransfer, cut to `count` messages (their objects are the spare ones). */
  #reusablePrepared(bus: I2cBus, count: number): PreparedTransfer {
    this.#prepared ??= { bus, msgs: [], copyBack: [], spare: [], views: [] };
    const prepared = this.#prepared;
    prepared.bus = bus;
    const { msgs, spare, copyBack, views } = prepared;
    while (spare.length < count) spare.push({ addr: 0, read: false, buf: EMPTY });
    while (views.length < count) views.push({ memory: null, addr: 0, len: 0, bytes: EMPTY });
    if (msgs.length > count) msgs.length = count;
    while (msgs.length < count) msgs.push(spare[msgs.length] as I2cMessage);
    if (copyBack.length !== count) copyBack.length = count;
    return prepared;
  }

  /**
   * Guest memory in place for message `index` of the reusable transfer, over a one-segment buffer in
   * one window; EMPTY for no buffer, null otherwise (the caller copies). Guests tend to reuse their
   * buffers, so the view of the last transfer is handed out again when it covers the same bytes of the
   * same memory (a closed memory detaches its views, which then no longer match).
   */
  #inPlaceView(memory: GuestMemory, buffer: readonly Segment[], index: number): Uint8Array | null {
    if (buffer.length === 0) return EMPTY;
    const only = buffer[0] as Segment;
    if (buffer.length !== 1) return null;
    const cached = (this.#prepared as ReusablePrepared).views[index] as GuestView;
    if (
      cached.memory === memory &&
      cached.addr === only.addr &&
      cached.len === only.len &&
      cached.bytes.length === only.len
    ) {
      return cached.bytes;
    }
    const bytes = memory.slice(only.addr, only.len);
    if (bytes === null) return null;
    cached.memory = memory;
    cached.addr = only.addr;
    cached.len = only.len;
    cached.bytes = bytes;
    return bytes;
  }

  /** Writes statuses (first failure and everything after it: ERR) and returns every chain. */
  #complete(
    transfer: Transfer,
    prepared: PreparedTransfer | null,
    done: number,
    startedAt: number,
    failure: Failure | null,
  ): void {
    const { requests, start, end } = transfer;
    // The result text only when it is logged: no string per transfer otherwise.
    if (prepared && this.#logger.enabled("debug")) {
      this.#debugTransfer(transfer, prepared, `${done}/${end - start}`);
    }
    // Before the chains go back: read data in guest memory is still the guest's answer.
    if (this.#observer !== null) this.#observe(transfer, prepared, done, startedAt, failure);
    const memory = transfer.queue.memory;
    for (let i = start; i < end; i++) {
      const r = requests[i] as RequestRecord;
      const index = i - start;
      let ok = prepared !== null && index < done;
      let written = 0;
      try {
        const msg = prepared?.msgs[index];
        if (ok && msg && prepared?.copyBack[index]) scatter(memory, r.buffer, msg.buf);
      } catch {
        ok = false;
      }
      if (r.status !== null) {
        try {
          memory.write(r.status, STATUS_BYTES[ok ? RequestStatus.OK : RequestStatus.ERR]);
          written = 1 + (ok && r.read ? r.length : 0);
        } catch {
          written = 0; // status byte outside guest memory: the chain still goes back
        }
      }
      try {
        transfer.queue.pushUsed(r.chain, written);
      } catch (err) {
        this.#guestLogger.error("returning a chain to the used ring failed", {
          error: errorText(err),
        });
      }
      // The chain went back: the record may be parsed again.
      this.#returnRecord(r);
    }
  }

  #debugTransfer(transfer: Transfer, prepared: PreparedTransfer | null, result: string): void {
    if (!this.#logger.enabled("debug")) return;
    const { requests, start, end } = transfer;
    const parts = requests.slice(start, end).map((r, i) => {
      let text = `${r.read ? "r" : "w"}${r.length}@${hex(r.addr)}`;
      const buf = prepared?.msgs[i]?.buf;
      if (!r.read && buf) {
        for (const byte of buf.subarray(0, LOGGED_BYTES)) text += ` ${hex(byte)}`;
        if (buf.length > LOGGED_BYTES) text += " ...";
      }
      return text;
    });
    this.#logger.debug(`transfer ${parts.join(" ")}`, { result });
  }

  /** Builds the record of a finished transfer and hands it to the observer (only when one is set). */
  #observe(
    transfer: Transfer,
    prepared: PreparedTransfer | null,
    done: number,
    startedAt: number,
    failure: Failure | null,
  ): void {
    const requests = transfer.requests.slice(transfer.start, transfer.end);
    const record: TransferRecord = {
      guest: this.#guest,
      bus: prepared?.bus.name ?? null,
      messages: requests.map((r) => ({ addr: r.addr, read: r.read, length: r.length })),
      data: requests.map((r, i) =>
        r.read && i >= done ? EMPTY : (prepared?.msgs[i]?.buf ?? EMPTY),
      ),
      result: failure !== null ? "error" : done < requests.length ? "nack" : "ok",
      failedIndex: failure?.index ?? done,
      reason: failure?.reason ?? null,
      injected: injectedFaults(prepared),
      startTime: performance.timeOrigin + startedAt,
      durationUs: prepared === null ? 0 : Math.round((performance.now() - startedAt) * 1000),
    };
    try {
      this.#observer?.transferDone(record);
    } catch (err) {
      this.#guestLogger.error("transfer observer failed", { error: errorText(err) });
    }
  }

  #busFailure(bus: I2cBus, err: unknown): Failure {
    const reason = errorText(err);
    this.#guestLogger.warn("bus transfer failed", { bus: bus.name, error: reason });
    return { index: 0, reason };
  }
}

/** A transfer of its own for one that outlives the device's reusable transfer (TransferOrder's keep). */
function ownTransfer(transfer: Transfer): Transfer {
  const { requests, start, end, queue, generation } = transfer;
  return { requests: requests.slice(start, end), start: 0, end: end - start, queue, generation };
}

/** The faults a fault layer injected, per message (TransferRecord.injected). */
function injectedFaults(prepared: PreparedTransfer | null): TransferRecord["injected"] {
  const injected: { index: number; fault: string }[] = [];
  prepared?.msgs.forEach((msg, index) => {
    if (msg.injected) injected.push({ index, fault: msg.injected });
  });
  return injected;
}

function newPrepared(bus: I2cBus): PreparedTransfer {
  return { bus, msgs: [], copyBack: [] };
}

/** A private buffer for a message: write data gathered from guest memory, or room for read data. */
function copyOf(memory: GuestMemory, request: I2cRequest): Uint8Array {
  if (request.length === 0) return EMPTY;
  const buf = new Uint8Array(request.length);
  if (!request.read) gather(memory, request.buffer, buf);
  return buf;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
