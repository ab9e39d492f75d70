/**
 * HostBus: an I2cBus on a host adapter (/dev/i2c-N). Owns the adapter's fd, the check at open that
 * every listed address is free of kernel drivers, the choice between I2C_RDWR and an SMBus command
 * per transfer, and the per-adapter queue that runs transfers one at a time, in order.
 * Must not: decide which addresses a guest may use (AddressMap does) or throw from transfer():
 * every failure becomes "0 messages succeeded" and a log line.
 * @module
 */

import type { Logger } from "../log.js";
import { hasCode } from "../sys/errors.js";
import { I2C_FUNC_SMBUS_QUICK, I2C_M_RD, I2cDev } from "../sys/i2c-dev.js";
import { hex, type I2cBus, type I2cMessage } from "./bus.js";
import { copySmbusResult, describeShape, mapToSmbus, type SmbusCommand } from "./smbus.js";

export type HostBusErrorCode =
  /** /dev/i2c-N does not exist (adapter number wrong, or i2c-dev not loaded). */
  | "I2C_ADAPTER_MISSING"
  /** /dev/i2c-N exists but cannot be opened or queried (permissions, not an i2c-dev node). */
  | "I2C_ADAPTER_OPEN"
  /** A listed address is owned by a kernel driver (I2C_SLAVE gave EBUSY). */
  | "I2C_ADDRESS_BUSY"
  /** I2C_SLAVE refused a listed address for another reason. */
  | "I2C_ADDRESS_CHECK";

export class HostBusError extends Error {
  readonly code: HostBusErrorCode;
  readonly adapter: number;
  /** The address concerned, for the address codes. */
  readonly addr: number | undefined;

  constructor(
    code: HostBusErrorCode,
    message: string,
    adapter: number,
    addr?: number,
    cause?: unknown,
  ) {
    super(message, { cause });
    this.name = "HostBusError";
    this.code = code;
    this.adapter = adapter;
    this.addr = addr;
  }
}

export interface HostBusOptions {
  /** Directory holding the i2c-dev nodes. Default "/dev". */
  devDir?: string;
}

/** Errors with which an adapter refuses a zero-length I2C_RDWR message (I2C_AQ_NO_ZERO_LEN). */
const ZERO_LENGTH_REFUSALS = ["EOPNOTSUPP", "ENOTSUP", "EINVAL"] as const;
/** Errors that are an ordinary NACK: probing an empty address produces them all the time. */
const NACK_CODES = ["ENXIO", "EREMOTEIO"] as const;

/**
 * Tail of the transfer queue per device path, shared by every HostBus on that adapter, so two
 * transfers on one adapter never overlap (the I2C_SLAVE + I2C_SMBUS pair in particular).
 */
const adapterQueues = new Map<string, Promise<unknown>>();

function enqueue<T>(key: string, job: () => Promise<T>): Promise<T> {
  const previous = adapterQueues.get(key) ?? Promise.resolve();
  const run = previous.then(job, job);
  const tail = run.then(
    () => undefined,
    () => undefined,
  );
  adapterQueues.set(key, tail);
  void tail.then(() => {
    if (adapterQueues.get(key) === tail) adapterQueues.delete(key);
  });
  return run;
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "UNKNOWN";
}

function isSingleZeroLength(msgs: readonly I2cMessage[]): boolean {
  return msgs.length === 1 && msgs[0]!.buf.length === 0;
}

export class HostBus implements I2cBus {
  readonly name: string;
  readonly adapter: number;
  readonly path: string;
  readonly #dev: I2cDev;
  readonly #logger: Logger;
  /** Raw I2C_FUNCS bits, read once at open. */
  readonly #funcs: number;
  readonly #canI2c: boolean;
  readonly #canQuick: boolean;
  /** Set once the adapter refused a zero-length I2C_RDWR message: use SMBus quick from then on. */
  #noZeroLength = false;
  #closed = false;

  private constructor(adapter: number, path: string, dev: I2cDev, logger: Logger) {
    this.adapter = adapter;
    this.path = path;
    this.name = `i2c-${adapter}`;
    this.#dev = dev;
    this.#logger = logger;
    this.#funcs = dev.funcs.raw;
    this.#canI2c = dev.funcs.i2c;
    this.#canQuick = dev.funcs.smbusQuick;
  }

  /**
   * Opens /dev/i2c-<adapter>, reads its functions once and checks that no kernel driver owns any of
   * `addrs`. Throws HostBusError (nothing stays open) when any of that fails.
   */
  static open(
    adapter: number,
    addrs: readonly number[],
    logger: Logger,
    options: HostBusOptions = {},
  ): HostBus {
    const path = `${options.devDir ?? "/dev"}/i2c-${adapter}`;
    let dev: I2cDev;
    try {
      dev = I2cDev.open(path);
    } catch (error) {
      if (hasCode(error, "ENOENT")) {
        throw new HostBusError(
          "I2C_ADAPTER_MISSING",
          `${path} does not exist: no I2C adapter ${adapter} (is the i2c-dev module loaded?)`,
          adapter,
          undefined,
          error,
        );
      }
      throw new HostBusError(
        "I2C_ADAPTER_OPEN",
        `cannot open ${path} (${codeOf(error)})`,
        adapter,
        undefined,
        error,
      );
    }
    try {
      const bus = new HostBus(adapter, path, dev, logger);
      for (const addr of addrs) bus.#checkAddress(addr);
      logger.debug("adapter opened", {
        path,
        funcs: `0x${bus.#funcs.toString(16)}`,
        mode: bus.#canI2c ? "i2c" : "smbus",
      });
      return bus;
    } catch (error) {
      dev.close();
      if (error instanceof HostBusError) throw error;
      throw new HostBusError(
        "I2C_ADAPTER_OPEN",
        `cannot read the functions of ${path} (${codeOf(error)}): is it an i2c-dev node?`,
        adapter,
        undefined,
        error,
      );
    }
  }

  #checkAddress(addr: number): void {
    try {
      this.#dev.setSlave(addr);
    } catch (error) {
      if (hasCode(error, "EBUSY")) {
        throw new HostBusError(
          "I2C_ADDRESS_BUSY",
          `address ${hex(addr)} on ${this.path} is in use by a kernel driver; unbind the driver or remove the address from the device list`,
          this.adapter,
          addr,
          error,
        );
      }
      throw new HostBusError(
        "I2C_ADDRESS_CHECK",
        `address ${hex(addr)} on ${this.path} cannot be used (${codeOf(error)})`,
        this.adapter,
        addr,
        error,
      );
    }
  }

  /**
   * Runs one transfer after every transfer queued before it on this adapter. Resolves to
   * `msgs.length` on success and 0 on any failure (an adapter reports no partial success).
   */
  transfer(msgs: readonly I2cMessage[]): Promise<number> {
    if (this.#closed) {
      this.#logger.warn("transfer on a closed adapter", { path: this.path });
      return Promise.resolve(0);
    }
    if (msgs.length === 0) return Promise.resolve(0);
    return enqueue(this.path, () => this.#run(msgs));
  }

  /** Stops taking transfers; the fd closes once the transfers already queued have run. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    void enqueue(this.path, async () => {
      try {
        this.#dev.close();
      } catch (error) {
        this.#logger.warn("closing the adapter failed", { path: this.path, code: codeOf(error) });
      }
    });
  }

  async #run(msgs: readonly I2cMessage[]): Promise<number> {
    const shape = describeShape(msgs);
    try {
      if (this.#canI2c && !(this.#noZeroLength && this.#canQuick && isSingleZeroLength(msgs))) {
        await this.#rdwr(msgs);
      } else {
        // SMBus-only adapter, or a zero-length probe on an adapter known to refuse them in I2C_RDWR.
        const cmd = mapToSmbus(msgs, this.#funcs);
        if (!cmd) {
          this.#logger.debug("transfer has no SMBus form on this adapter", {
            path: this.path,
            shape,
          });
          return 0;
        }
        await this.#smbus(cmd, msgs);
      }
      this.#logger.debug("transfer", { path: this.path, shape, result: "ok" });
      return msgs.length;
    } catch (error) {
      const code = codeOf(error);
      const isNack = (NACK_CODES as readonly string[]).includes(code);
      const fields = { path: this.path, shape, code };
      // A NACK is routine (probing empty addresses); anything else deserves attention.
      if (isNack) {
        this.#logger.debug("transfer failed", fields);
      } else {
        this.#logger.warn("transfer failed", fields);
      }
      return 0;
    }
  }

  async #rdwr(msgs: readonly I2cMessage[]): Promise<void> {
    const native = msgs.map((m) => ({ addr: m.addr, flags: m.read ? I2C_M_RD : 0, buf: m.buf }));
    try {
      await this.#dev.rdwr(native);
    } catch (error) {
      const refused = (ZERO_LENGTH_REFUSALS as readonly string[]).includes(codeOf(error));
      if (!refused || !this.#canQuick || !isSingleZeroLength(msgs) || this.#noZeroLength) {
        throw error;
      }
      // The adapter cannot put a zero-length message on the bus through I2C_RDWR: from now on
      // such probes go out as SMBus quick commands, which are the same bus traffic.
      this.#noZeroLength = true;
      this.#logger.info("adapter refuses zero-length messages; using SMBus quick for them", {
        path: this.path,
        code: codeOf(error),
      });
      const quick = mapToSmbus(msgs, I2C_FUNC_SMBUS_QUICK);
      if (!quick) throw error;
      await this.#smbus(quick, msgs);
    }
  }

  async #smbus(cmd: SmbusCommand, msgs: readonly I2cMessage[]): Promise<void> {
    await this.#dev.smbus(cmd.addr, cmd.readWrite, cmd.command, cmd.size, cmd.data);
    copySmbusResult(cmd, msgs);
  }
}
