/**
 * A generic single-page PMBus power device, as Linux's generic `pmbus` driver finds one: status
 * byte/word and the per-class status registers, CAPABILITY with packet error checking (SMBus PEC
 * on every transaction when the guest uses it), VOUT_MODE with LINEAR16 output voltage, LINEAR11
 * input voltage/current, output current, power and temperature, fault limits that raise status
 * bits, CLEAR_FAULTS, PMBUS_REVISION and the MFR_ID/MFR_MODEL blocks. The measured quantities are
 * settable at run time. Owns only the chip's behaviour; must not know about buses, virtio or the
 * configuration format.
 * @module
 */

import type { I2cDeviceModel, ModelDefinition, SimDevice } from "../model.js";
import { crc8, SMBUS_PEC } from "./crc8.js";
import { byteState as byte, validateOptions, validateState } from "./options.js";
import {
  decodeLinear11,
  encodeLinear11,
  encodeLinear16,
  voutModeExponent,
} from "./pmbus-linear.js";
import { numberProperty } from "./properties.js";

/** PMBus command codes used here (PMBus Part II, Appendix I). */
export const PMBUS = {
  page: 0x00,
  operation: 0x01,
  onOffConfig: 0x02,
  clearFaults: 0x03,
  writeProtect: 0x10,
  capability: 0x19,
  voutMode: 0x20,
  voutOvFaultLimit: 0x40,
  voutUvFaultLimit: 0x44,
  ioutOcFaultLimit: 0x46,
  otFaultLimit: 0x4f,
  otWarnLimit: 0x51,
  vinOvFaultLimit: 0x55,
  vinUvFaultLimit: 0x59,
  statusByte: 0x78,
  statusWord: 0x79,
  statusVout: 0x7a,
  statusIout: 0x7b,
  statusInput: 0x7c,
  statusTemperature: 0x7d,
  statusCml: 0x7e,
  readVin: 0x88,
  readIin: 0x89,
  readVout: 0x8b,
  readIout: 0x8c,
  readTemperature1: 0x8d,
  readPout: 0x96,
  readPin: 0x97,
  revision: 0x98,
  mfrId: 0x99,
  mfrModel: 0x9a,
} as const;

/** STATUS_CML bits. */
export const PMBUS_CML = { invalidCommand: 0x80, invalidData: 0x40, pecFailed: 0x20 } as const;
/** STATUS_BYTE bits (low byte of STATUS_WORD). */
const STATUS_BYTE = {
  off: 0x40,
  voutOv: 0x20,
  ioutOc: 0x10,
  vinUv: 0x08,
  temperature: 0x04,
  cml: 0x02,
} as const;
/** STATUS_WORD high-byte bits. */
const STATUS_WORD_HIGH = { vout: 0x8000, iout: 0x4000, input: 0x2000 } as const;

const CAPABILITY_PEC = 0x80;
const CAPABILITY_400KHZ = 0x20;
const REVISION_1_2 = 0x22;
const VOUT_MODE = 0x17; // linear, exponent -9 (1.95 mV steps)

/** What a measurement is, for the properties and the limits that watch it. */
type Quantity = "vin" | "iin" | "vout" | "iout" | "temperature";

/** Fault limits: the command, what it watches, over or under, and the status bits it raises. */
const LIMITS: readonly {
  command: number;
  quantity: Quantity;
  over: boolean;
  status: number; // STATUS_VOUT / _IOUT / _INPUT / _TEMPERATURE register
  bit: number;
  summary: number; // STATUS_WORD bits
  initial: number;
}[] = [
  {
    command: PMBUS.voutOvFaultLimit,
    quantity: "vout",
    over: true,
    status: PMBUS.statusVout,
    bit: 0x80,
    summary: STATUS_WORD_HIGH.vout | STATUS_BYTE.voutOv,
    initial: 1.5,
  },
  {
    command: PMBUS.voutUvFaultLimit,
    quantity: "vout",
    over: false,
    status: PMBUS.statusVout,
    bit: 0x10,
    summary: STATUS_WORD_HIGH.vout,
    initial: 0.5,
  },
  {
    command: PMBUS.ioutOcFaultLimit,
    quantity: "iout",
    over: true,
    status: PMBUS.statusIout,
    bit: 0x80,
    summary: STATUS_WORD_HIGH.iout | STATUS_BYTE.ioutOc,
    initial: 40,
  },
  {
    command: PMBUS.otFaultLimit,
    quantity: "temperature",
    over: true,
    status: PMBUS.statusTemperature,
    bit: 0x80,
    summary: STATUS_BYTE.temperature,
    initial: 125,
  },
  {
    command: PMBUS.otWarnLimit,
    quantity: "temperature",
    over: true,
    status: PMBUS.statusTemperature,
    bit: 0x40,
    summary: STATUS_BYTE.temperature,
    initial: 100,
  },
  {
    command: PMBUS.vinOvFaultLimit,
    quantity: "vin",
    over: true,
    status: PMBUS.statusInput,
    bit: 0x80,
    summary: STATUS_WORD_HIGH.input,
    initial: 16,
  },
  {
    command: PMBUS.vinUvFaultLimit,
    quantity: "vin",
    over: false,
    status: PMBUS.statusInput,
    bit: 0x10,
    summary: STATUS_WORD_HIGH.input | STATUS_BYTE.vinUv,
    initial: 8,
  },
];

const STATUS_REGISTERS = [
  PMBUS.statusVout,
  PMBUS.statusIout,
  PMBUS.statusInput,
  PMBUS.statusTemperature,
  PMBUS.statusCml,
] as const;

export const PMBUS_RANGES: Readonly<Record<Quantity, { min: number; max: number }>> = {
  vin: { min: 0, max: 100 },
  iin: { min: -100, max: 100 },
  vout: { min: 0, max: 100 },
  iout: { min: -500, max: 500 },
  temperature: { min: -55, max: 200 },
};

/** What a command does: its data size for reads and writes. */
type Access = "byte" | "word" | "sendByte" | "block";

/**
 * The device, as PMBus Parts I and II describe it and as Linux's pmbus core probes it:
 * - SMBus transactions: a write's first byte is the command; byte and word data follow (LSB
 *   first); a read after a repeated START returns the command's data, then the PEC byte (CRC-8
 *   over both addresses, the command and the data), which the guest reads or not;
 * - a write carrying one byte more than its data is checked as PEC; a wrong PEC, a write too long
 *   or to a read-only or unknown command is not done and sets STATUS_CML (PEC failed, invalid
 *   data, invalid command) and the CML bit of STATUS_BYTE/WORD; unknown commands read 0xff;
 * - `pmbus_do_probe` reads STATUS_WORD, CAPABILITY (PEC bit: Linux then uses PEC, which
 *   virtio-i2c's SMBus emulation supports) and WRITE_PROTECT; `pmbus_identify` reads PAGE (only
 *   page 0: a write of another page is refused, so Linux counts one page) and VOUT_MODE (linear);
 *   `pmbus_find_sensor_groups` tries READ_* commands and keeps those STATUS_CML does not refuse;
 * - measurements: LINEAR11, READ_VOUT LINEAR16 at VOUT_MODE's exponent (-9); power is V × I;
 * - the fault limits (LINEAR11, VOUT ones LINEAR16) raise their STATUS_* bits and the summary bits
 *   when a measurement passes them; the bits stay until CLEAR_FAULTS or a write of 1 to them.
 */
export class PmbusDevice implements I2cDeviceModel {
  readonly address: number;
  readonly pec: boolean;
  readonly measured: Record<Quantity, number>;
  /** The fault limits, as physical values (V, A, °C). */
  readonly #limits: number[] = LIMITS.map((limit) => limit.initial);
  readonly #status = new Map<number, number>(STATUS_REGISTERS.map((reg) => [reg, 0]));
  #statusWord = 0;
  #operation = 0x80;
  #writeProtect = 0;
  readonly #mfr: { id: string; model: string };
  /** The write message in progress, the last complete one (a command for a read), the read. */
  #writing = false;
  #message: number[] = [];
  #pendingWrite: number[] | null = null;
  #response: number[] = [];
  #readIndex = 0;

  constructor(
    address: number,
    pec: boolean,
    measured: Record<Quantity, number>,
    mfr: { id: string; model: string },
  ) {
    this.address = address;
    this.pec = pec;
    this.measured = { ...measured };
    this.#mfr = mfr;
    this.#evaluate();
  }

  get statusWord(): number {
    this.#evaluate();
    return this.#statusWord;
  }

  /** Sets a measured quantity and latches the faults it causes. */
  setMeasured(quantity: Quantity, value: number): void {
    this.measured[quantity] = value;
    this.#evaluate();
  }

  /** Latches the fault bits of every limit a measurement has passed. */
  #evaluate(): void {
    LIMITS.forEach((limit, i) => {
      const value = this.measured[limit.quantity];
      const threshold = this.#limits[i] ?? 0;
      if (limit.over ? value > threshold : value < threshold) {
        this.#status.set(limit.status, (this.#status.get(limit.status) ?? 0) | limit.bit);
        this.#statusWord |= limit.summary;
      }
    });
    if (this.#status.get(PMBUS.statusCml)) this.#statusWord |= STATUS_BYTE.cml;
    if ((this.#operation & 0x80) === 0) this.#statusWord |= STATUS_BYTE.off;
  }

  #cml(bit: number): void {
    this.#status.set(PMBUS.statusCml, (this.#status.get(PMBUS.statusCml) ?? 0) | bit);
    this.#statusWord |= STATUS_BYTE.cml;
  }

  #clearFaults(): void {
    for (const reg of STATUS_REGISTERS) this.#status.set(reg, 0);
    this.#statusWord = 0;
    this.#evaluate(); // conditions still present are reported again at once
  }

  #access(command: number): Access | null {
    if (command === PMBUS.clearFaults) return "sendByte";
    if (command === PMBUS.mfrId || command === PMBUS.mfrModel) return "block";
    if (
      command === PMBUS.page ||
      command === PMBUS.operation ||
      command === PMBUS.onOffConfig ||
      command === PMBUS.writeProtect ||
      command === PMBUS.capability ||
      command === PMBUS.voutMode ||
      command === PMBUS.statusByte ||
      command === PMBUS.revision ||
      (STATUS_REGISTERS as readonly number[]).includes(command)
    ) {
      return "byte";
    }
    if (
      command === PMBUS.statusWord ||
      LIMITS.some((l) => l.command === command) ||
      [
        PMBUS.readVin,
        PMBUS.readIin,
        PMBUS.readVout,
        PMBUS.readIout,
        PMBUS.readTemperature1,
        PMBUS.readPout,
        PMBUS.readPin,
      ].includes(command as never)
    ) {
      return "word";
    }
    return null;
  }

  #encode(quantity: Quantity | "pin" | "pout"): number {
    const m = this.measured;
    switch (quantity) {
      case "vout":
        return encodeLinear16(m.vout, voutModeExponent(VOUT_MODE));
      case "pin":
        return encodeLinear11(m.vin * m.iin);
      case "pout":
        return encodeLinear11(m.vout * m.iout);
      default:
        return encodeLinear11(m[quantity]);
    }
  }

  /** The data bytes a read of `command` returns, or null for a command the device lacks. */
  #readData(command: number): number[] | null {
    this.#evaluate();
    const word = (value: number) => [value & 0xff, (value >> 8) & 0xff];
    const block = (text: string) => [text.length, ...Buffer.from(text, "latin1")];
    const limit = LIMITS.findIndex((l) => l.command === command);
    if (limit >= 0) {
      const spec = LIMITS[limit];
      const value = this.#limits[limit] ?? 0;
      return word(
        spec?.quantity === "vout"
          ? encodeLinear16(value, voutModeExponent(VOUT_MODE))
          : encodeLinear11(value),
      );
    }
    const status = this.#status.get(command);
    if (status !== undefined) return [status];
    switch (command) {
      case PMBUS.page:
        return [0];
      case PMBUS.operation:
        return [this.#operation];
      case PMBUS.onOffConfig:
        return [0x17]; // on by OPERATION and CONTROL, active high
      case PMBUS.writeProtect:
        return [this.#writeProtect];
      case PMBUS.capability:
        return [(this.pec ? CAPABILITY_PEC : 0) | CAPABILITY_400KHZ];
      case PMBUS.voutMode:
        return [VOUT_MODE];
      case PMBUS.statusByte:
        return [this.#statusWord & 0xff];
      case PMBUS.statusWord:
        return word(this.#statusWord);
      case PMBUS.readVin:
        return word(this.#encode("vin"));
      case PMBUS.readIin:
        return word(this.#encode("iin"));
      case PMBUS.readVout:
        return word(this.#encode("vout"));
      case PMBUS.readIout:
        return word(this.#encode("iout"));
      case PMBUS.readTemperature1:
        return word(this.#encode("temperature"));
      case PMBUS.readPin:
        return word(this.#encode("pin"));
      case PMBUS.readPout:
        return word(this.#encode("pout"));
      case PMBUS.revision:
        return [REVISION_1_2];
      case PMBUS.mfrId:
        return block(this.#mfr.id);
      case PMBUS.mfrModel:
        return block(this.#mfr.model);
      default:
        return null;
    }
  }

  /** A complete write transaction: command, data and maybe PEC. */
  #write(bytes: readonly number[]): void {
    const refusal = this.#refusal(bytes);
    if (refusal !== 0) {
      this.#cml(refusal);
      return;
    }
    const [command = 0, low = 0, high = 0] = bytes;
    this.#apply(command, this.#dataSize(command) === 2 ? low | (high << 8) : low);
  }

  /** Data bytes a write of `command` carries (before any PEC); -1 for a command the device lacks. */
  #dataSize(command: number): number {
    const access = this.#access(command);
    return access === "sendByte" ? 0 : access === "byte" ? 1 : access === "word" ? 2 : -1;
  }

  /** The STATUS_CML bit a write transaction is refused with, or 0 when it is well-formed. */
  #refusal(bytes: readonly number[]): number {
    const [command = 0, ...rest] = bytes;
    const size = this.#dataSize(command);
    if (size < 0) return PMBUS_CML.invalidCommand;
    if (rest.length === size + 1) {
      const pec = crc8([this.address << 1, command, ...rest.slice(0, size)], SMBUS_PEC);
      return pec === rest[size] ? 0 : PMBUS_CML.pecFailed;
    }
    return rest.length === size ? 0 : PMBUS_CML.invalidData;
  }

  #apply(command: number, value: number): void {
    const limit = LIMITS.findIndex((l) => l.command === command);
    if (limit >= 0) {
      const vout = LIMITS[limit]?.quantity === "vout";
      this.#limits[limit] = vout ? value * 2 ** voutModeExponent(VOUT_MODE) : decodeLinear11(value);
      this.#evaluate();
      return;
    }
    if ((STATUS_REGISTERS as readonly number[]).includes(command)) {
      // Writing 1 to a status bit clears it.
      this.#status.set(command, (this.#status.get(command) ?? 0) & ~value);
      return;
    }
    switch (command) {
      case PMBUS.clearFaults:
        this.#clearFaults();
        return;
      case PMBUS.page:
        if (value !== 0) this.#cml(PMBUS_CML.invalidData);
        return;
      case PMBUS.operation:
        this.#operation = value;
        if (value & 0x80) this.#statusWord &= ~STATUS_BYTE.off;
        this.#evaluate();
        return;
      case PMBUS.writeProtect:
        this.#writeProtect = value & 0xe0;
        return;
      default:
        this.#cml(PMBUS_CML.invalidCommand); // read-only
    }
  }

  start(read: boolean): boolean {
    if (this.#writing) this.#endWriteMessage();
    this.#writing = !read;
    this.#message = [];
    if (read) {
      const command = this.#pendingWrite?.[0];
      this.#pendingWrite = null;
      const data = command === undefined ? null : this.#readData(command);
      if (command !== undefined && data === null) this.#cml(PMBUS_CML.invalidCommand);
      const bytes = data ?? [0xff, 0xff];
      const pec = crc8(
        [this.address << 1, command ?? 0, (this.address << 1) | 1, ...bytes],
        SMBUS_PEC,
      );
      this.#response = [...bytes, pec];
      this.#readIndex = 0;
    }
    return true;
  }

  write(data: Uint8Array): boolean {
    if (!this.#writing) return false;
    this.#message.push(...data);
    return true;
  }

  read(into: Uint8Array): void {
    for (let i = 0; i < into.length; i++) into[i] = this.#response[this.#readIndex++] ?? 0xff;
  }

  stop(): void {
    if (this.#writing) this.#endWriteMessage();
    // A write not followed by a read in its transfer is a write transaction.
    if (this.#pendingWrite) this.#write(this.#pendingWrite);
    this.#pendingWrite = null;
    this.#writing = false;
  }

  #endWriteMessage(): void {
    if (this.#message.length > 0) this.#pendingWrite = this.#message;
    this.#message = [];
    this.#writing = false;
  }

  saveState(): Record<string, unknown> {
    return {
      measured: { ...this.measured },
      limits: [...this.#limits],
      status: STATUS_REGISTERS.map((reg) => this.#status.get(reg) ?? 0),
      statusWord: this.#statusWord,
      operation: this.#operation,
      writeProtect: this.#writeProtect,
    };
  }

  restoreState(state: unknown): void {
    const quantity = (q: Quantity) => ({ type: "number", ...PMBUS_RANGES[q] }) as const;
    const schema = {
      type: "object",
      required: ["measured", "limits", "status", "statusWord", "operation", "writeProtect"],
      properties: {
        measured: {
          type: "object",
          properties: {
            vin: quantity("vin"),
            iin: quantity("iin"),
            vout: quantity("vout"),
            iout: quantity("iout"),
            temperature: quantity("temperature"),
          },
        },
        limits: { type: "array", items: { type: "number" }, maxItems: LIMITS.length },
        status: { type: "array", items: byte, maxItems: STATUS_REGISTERS.length },
        statusWord: { type: "integer", min: 0, max: 0xffff },
        operation: byte,
        writeProtect: byte,
      },
    } as const;
    const saved = validateState(schema, state, "pmbus");
    Object.assign(this.measured, saved.measured ?? {});
    (saved.limits ?? []).forEach((v, i) => {
      this.#limits[i] = v;
    });
    (saved.status ?? []).forEach((v, i) => {
      const reg = STATUS_REGISTERS[i];
      if (reg !== undefined) this.#status.set(reg, v);
    });
    this.#statusWord = saved.statusWord ?? 0;
    this.#operation = saved.operation ?? 0x80;
    this.#writeProtect = saved.writeProtect ?? 0;
  }
}

const DEFAULTS: Record<Quantity, number> = { vin: 12, iin: 1, vout: 1, iout: 10, temperature: 40 };

const quantityOption = (q: Quantity, what: string) =>
  ({
    type: "number",
    ...PMBUS_RANGES[q],
    description: `initial ${what} (default ${DEFAULTS[q]})`,
  }) as const;

const schema = {
  type: "object",
  properties: {
    vin: quantityOption("vin", "input voltage in V"),
    iin: quantityOption("iin", "input current in A"),
    vout: quantityOption("vout", "output voltage in V"),
    iout: quantityOption("iout", "output current in A"),
    temperature: quantityOption("temperature", "temperature in °C"),
    pec: { type: "boolean", description: "CAPABILITY advertises PEC (default true)" },
    mfrId: { type: "string", description: 'MFR_ID block (default "VDI2C")' },
    mfrModel: { type: "string", description: 'MFR_MODEL block (default "PMBUS-SIM")' },
  },
} as const;

/** The generic PMBus device under Linux's generic driver name. */
export const pmbusModel: ModelDefinition = {
  name: "pmbus",
  linuxDriver: "hwmon pmbus",
  description: "generic PMBus power device (LINEAR11/16 telemetry, status, fault limits, PEC)",
  options: schema,
  create(options, context): SimDevice {
    const o = validateOptions(schema, options, "pmbus");
    const device = new PmbusDevice(
      context.address,
      o.pec ?? true,
      {
        vin: o.vin ?? DEFAULTS.vin,
        iin: o.iin ?? DEFAULTS.iin,
        vout: o.vout ?? DEFAULTS.vout,
        iout: o.iout ?? DEFAULTS.iout,
        temperature: o.temperature ?? DEFAULTS.temperature,
      },
      { id: (o.mfrId ?? "VDI2C").slice(0, 32), model: (o.mfrModel ?? "PMBUS-SIM").slice(0, 32) },
    );
    const quantity = (q: Quantity, what: string) =>
      numberProperty(
        `${what} (${PMBUS_RANGES[q].min}..${PMBUS_RANGES[q].max})`,
        () => device.measured[q],
        (v) => device.setMeasured(q, v),
        PMBUS_RANGES[q],
      );
    return {
      targets: [device],
      properties: {
        vin: quantity("vin", "input voltage in V"),
        iin: quantity("iin", "input current in A"),
        vout: quantity("vout", "output voltage in V"),
        iout: quantity("iout", "output current in A"),
        temperature: quantity("temperature", "temperature in °C"),
        statusWord: { description: "STATUS_WORD", get: () => device.statusWord },
      },
      saveState: () => device.saveState(),
      restoreState: (state) => device.restoreState(state),
    };
  },
};
