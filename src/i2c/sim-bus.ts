/**
 * SimBus: an emulated I2C adapter whose targets are device models (src/i2c/model.ts).
 * Owns bus sequencing (START per message, one STOP per transfer, NACK on empty addresses) and
 * contains model failures to the transfer they happen in. Must not touch guest memory or hardware.
 * @module
 */

import { type Logger, silentLogger } from "../log.js";
import { hex, type I2cBus, type I2cMessage } from "./bus.js";
import { type I2cDeviceModel, MODEL_ERROR_CODES, ModelError, type SimDevice } from "./model.js";

/** Thrown internally when a model returns something other than the contract allows. */
class ModelContractError extends Error {
  readonly code = "I2C_MODEL_CONTRACT";
}

function expectBoolean(value: unknown, call: string): boolean {
  if (typeof value !== "boolean") throw new ModelContractError(`${call} returned ${typeof value}`);
  return value;
}

/** Highest 7-bit address a target may take (0x78-0x7f are reserved, but a model may still sit there). */
const MAX_ADDRESS = 0x7f;

/**
 * Expands chips into the address → target map SimBus takes: `targets[i]` of a device at `base`
 * answers on `base + i`. Throws ModelError "I2C_MODEL_BAD_OPTIONS" when a target would fall past
 * 0x7f or onto an address another device already holds.
 *
 * @example
 * ```ts
 * const eeprom = findModel("24c04").create({}, modelContext({ address: 0x50 }));
 * const bus = new SimBus(simTargets(new Map([[0x50, eeprom]])));   // answers on 0x50 and 0x51
 * ```
 */
export function simTargets(devices: ReadonlyMap<number, SimDevice>): Map<number, I2cDeviceModel> {
  const targets = new Map<number, I2cDeviceModel>();
  for (const [base, device] of devices) {
    device.targets.forEach((target, i) => {
      const addr = base + i;
      if (addr > MAX_ADDRESS || targets.has(addr)) {
        const why = addr > MAX_ADDRESS ? "past 0x7f" : "already taken by another device";
        throw new ModelError(
          MODEL_ERROR_CODES.badOptions,
          `device at ${hex(base)} needs address ${hex(addr)} for its target ${i}, which is ${why}`,
        );
      }
      targets.set(addr, target);
    });
  }
  return targets;
}

export class SimBus implements I2cBus {
  readonly name: string;
  /** Models run in the caller's turn: transfer() returns the count. */
  readonly synchronous = true;
  readonly #models: ReadonlyMap<number, I2cDeviceModel>;
  readonly #logger: Logger;

  constructor(
    models: ReadonlyMap<number, I2cDeviceModel>,
    logger: Logger = silentLogger,
    name = "sim",
  ) {
    this.#models = models;
    this.#logger = logger;
    this.name = name;
  }

  /**
   * Runs the messages in order and returns how many leading messages succeeded. An address without
   * a model NACKs, which ends the transfer. Every model that saw a START gets exactly one `stop()`.
   * A model that throws or breaks the contract fails this transfer only: from the failing message
   * on, or the whole transfer (0) when it threw in `stop()`, since then its end state is unknown.
   */
  transfer(msgs: readonly I2cMessage[]): number {
    // Almost every transfer talks to one model: no collection is built until a second one joins.
    let first: I2cDeviceModel | null = null;
    let more: I2cDeviceModel[] | null = null;
    let done = 0;
    try {
      for (let i = 0; i < msgs.length; i++) {
        const msg = msgs[i] as I2cMessage;
        const model = this.#models.get(msg.addr);
        if (!model) break;
        if (first === null) first = model;
        else if (model !== first && !more?.includes(model)) {
          more ??= [];
          more.push(model);
        }
        if (!this.#runMessage(model, msg)) break;
        done++;
      }
    } catch (err) {
      this.#logModelFailure(msgs[done]?.addr, err);
    }
    if (first !== null && !this.#stop(first)) done = 0;
    if (more !== null) for (const model of more) if (!this.#stop(model)) done = 0;
    return done;
  }

  /** Ends a model's part in the transfer; false when it threw. */
  #stop(model: I2cDeviceModel): boolean {
    try {
      model.stop();
      return true;
    } catch (err) {
      this.#logModelFailure(undefined, err);
      return false;
    }
  }

  close(): void {}

  #runMessage(model: I2cDeviceModel, msg: I2cMessage): boolean {
    if (!expectBoolean(model.start(msg.read), "start()")) return false;
    if (msg.buf.length === 0) return true; // zero-length message: address phase only
    if (msg.read) {
      model.read(msg.buf);
      return true;
    }
    return expectBoolean(model.write(msg.buf), "write()");
  }

  #logModelFailure(addr: number | undefined, err: unknown): void {
    this.#logger.warn("emulated device failed, transfer aborted", {
      bus: this.name,
      addr: addr === undefined ? undefined : hex(addr),
      error: err instanceof Error ? err.message : String(err),
    });
  }
}
