/**
 * I2cDev: one open /dev/i2c-N. Functionality bits, the slave address check, and the transfers
 * (I2C_RDWR, I2C_SMBUS), which run one at a time either on the adapter's own I/O thread, so a slow
 * bus never blocks the event loop (rdwr, smbus; a thread that blocks in epoll_wait instead gives a
 * wake eventfd), or inline, blocking the calling thread, for a thread that has no event loop to keep
 * going (rdwrSync, smbusSync). Buffers are copied through one exchange buffer kept per adapter.
 * Also the kernel's i2c-dev constants for the i2c layer.
 * Must not: decide which addresses a guest may reach, map transfers to SMBus, or queue transfers
 * (src/i2c does).
 * @module
 */

import {
  checkInt,
  closedError,
  SysArgumentError,
  SysError,
  sysCall,
  toSysError,
} from "./errors.js";
import { closeFd } from "./fd.js";
import {
  I2C_EXCHANGE_HEADER,
  I2C_EXCHANGE_SENT,
  type I2cChannelHandle,
  type NativeI2cMsg,
  native,
} from "./native.js";

// struct i2c_msg flags (linux/i2c.h)
export const I2C_M_RD = 0x0001;
export const I2C_M_TEN = 0x0010;
export const I2C_M_RECV_LEN = 0x0400;

/** Kernel limits for I2C_RDWR. */
export const I2C_RDWR_MAX_MSGS = 42;
export const I2C_MAX_MSG_LEN = 65535;

// i2c_smbus_ioctl_data.read_write
export const I2C_SMBUS_READ = 1;
export const I2C_SMBUS_WRITE = 0;

// i2c_smbus_ioctl_data.size
export const I2C_SMBUS_QUICK = 0;
export const I2C_SMBUS_BYTE = 1;
export const I2C_SMBUS_BYTE_DATA = 2;
export const I2C_SMBUS_WORD_DATA = 3;
export const I2C_SMBUS_PROC_CALL = 4;
export const I2C_SMBUS_BLOCK_DATA = 5;
export const I2C_SMBUS_I2C_BLOCK_BROKEN = 6;
export const I2C_SMBUS_BLOCK_PROC_CALL = 7;
export const I2C_SMBUS_I2C_BLOCK_DATA = 8;

/** union i2c_smbus_data: block[0] is the length, then up to 32 bytes, plus one for PEC. */
export const I2C_SMBUS_BLOCK_MAX = 32;
export const I2C_SMBUS_DATA_SIZE = I2C_SMBUS_BLOCK_MAX + 2;

// I2C_FUNCS bits (linux/i2c.h)
export const I2C_FUNC_I2C = 0x00000001;
export const I2C_FUNC_10BIT_ADDR = 0x00000002;
export const I2C_FUNC_PROTOCOL_MANGLING = 0x00000004;
export const I2C_FUNC_SMBUS_PEC = 0x00000008;
export const I2C_FUNC_NOSTART = 0x00000010;
export const I2C_FUNC_SLAVE = 0x00000020;
export const I2C_FUNC_SMBUS_BLOCK_PROC_CALL = 0x00008000;
export const I2C_FUNC_SMBUS_QUICK = 0x00010000;
export const I2C_FUNC_SMBUS_READ_BYTE = 0x00020000;
export const I2C_FUNC_SMBUS_WRITE_BYTE = 0x00040000;
export const I2C_FUNC_SMBUS_READ_BYTE_DATA = 0x00080000;
export const I2C_FUNC_SMBUS_WRITE_BYTE_DATA = 0x00100000;
export const I2C_FUNC_SMBUS_READ_WORD_DATA = 0x00200000;
export const I2C_FUNC_SMBUS_WRITE_WORD_DATA = 0x00400000;
export const I2C_FUNC_SMBUS_PROC_CALL = 0x00800000;
export const I2C_FUNC_SMBUS_READ_BLOCK_DATA = 0x01000000;
export const I2C_FUNC_SMBUS_WRITE_BLOCK_DATA = 0x02000000;
export const I2C_FUNC_SMBUS_READ_I2C_BLOCK = 0x04000000;
export const I2C_FUNC_SMBUS_WRITE_I2C_BLOCK = 0x08000000;
export const I2C_FUNC_SMBUS_HOST_NOTIFY = 0x10000000;

const FUNC_BITS = {
  i2c: I2C_FUNC_I2C,
  tenBitAddr: I2C_FUNC_10BIT_ADDR,
  protocolMangling: I2C_FUNC_PROTOCOL_MANGLING,
  smbusPec: I2C_FUNC_SMBUS_PEC,
  noStart: I2C_FUNC_NOSTART,
  slave: I2C_FUNC_SLAVE,
  smbusBlockProcCall: I2C_FUNC_SMBUS_BLOCK_PROC_CALL,
  smbusQuick: I2C_FUNC_SMBUS_QUICK,
  smbusReadByte: I2C_FUNC_SMBUS_READ_BYTE,
  smbusWriteByte: I2C_FUNC_SMBUS_WRITE_BYTE,
  smbusReadByteData: I2C_FUNC_SMBUS_READ_BYTE_DATA,
  smbusWriteByteData: I2C_FUNC_SMBUS_WRITE_BYTE_DATA,
  smbusReadWordData: I2C_FUNC_SMBUS_READ_WORD_DATA,
  smbusWriteWordData: I2C_FUNC_SMBUS_WRITE_WORD_DATA,
  smbusProcCall: I2C_FUNC_SMBUS_PROC_CALL,
  smbusReadBlockData: I2C_FUNC_SMBUS_READ_BLOCK_DATA,
  smbusWriteBlockData: I2C_FUNC_SMBUS_WRITE_BLOCK_DATA,
  smbusReadI2cBlock: I2C_FUNC_SMBUS_READ_I2C_BLOCK,
  smbusWriteI2cBlock: I2C_FUNC_SMBUS_WRITE_I2C_BLOCK,
  smbusHostNotify: I2C_FUNC_SMBUS_HOST_NOTIFY,
} as const;

/** The adapter's I2C_FUNCS, one named flag per bit, plus the raw mask. */
export type I2cFuncs = Readonly<{ [K in keyof typeof FUNC_BITS]: boolean } & { raw: number }>;

export function decodeI2cFuncs(raw: number): I2cFuncs {
  const funcs = { raw: raw >>> 0 } as Record<string, number | boolean>;
  for (const [name, bit] of Object.entries(FUNC_BITS)) funcs[name] = (raw & bit) !== 0;
  return Object.freeze(funcs) as unknown as I2cFuncs;
}

/** One message of an I2C_RDWR transfer (flags: I2C_M_*; `buf` is filled in for reads). */
export type I2cRdwrMsg = NativeI2cMsg;

function checkAddr(addr: number, tenBit: boolean): void {
  checkInt(addr, "i2c address", 0, tenBit ? 0x3ff : 0x7f);
}

/** Counts, lengths and addresses, checked before the addon sees them. */
export function checkRdwrMsgs(msgs: readonly I2cRdwrMsg[]): void {
  if (msgs.length < 1 || msgs.length > I2C_RDWR_MAX_MSGS) {
    throw new SysArgumentError(
      `I2C_RDWR takes 1 to ${I2C_RDWR_MAX_MSGS} messages, got ${msgs.length}`,
    );
  }
  for (const msg of msgs) {
    checkInt(msg.flags, "i2c message flags", 0, 0xffff);
    checkAddr(msg.addr, (msg.flags & I2C_M_TEN) !== 0);
    if (!(msg.buf instanceof Uint8Array) || msg.buf.length > I2C_MAX_MSG_LEN) {
      throw new SysArgumentError(`i2c message buffer must be a Uint8Array of <= 65535 bytes`);
    }
  }
}

/** An SMBus command's arguments, checked before the addon sees them. */
function checkSmbus(
  addr: number,
  readWrite: number,
  command: number,
  size: number,
  data: Uint8Array,
): void {
  checkAddr(addr, false);
  checkInt(readWrite, "SMBus read/write", I2C_SMBUS_WRITE, I2C_SMBUS_READ);
  checkInt(command, "SMBus command", 0, 0xff);
  checkInt(size, "SMBus size", I2C_SMBUS_QUICK, I2C_SMBUS_I2C_BLOCK_DATA);
  if (!(data instanceof Uint8Array) || data.length !== I2C_SMBUS_DATA_SIZE) {
    throw new SysArgumentError(`SMBus data must be ${I2C_SMBUS_DATA_SIZE} bytes`);
  }
}

/**
 * How a transfer ends: null, or the error (a SysError with code and syscall for an ioctl). After an
 * rdwr() that succeeded, `sent` is how many messages the adapter carried out, which a driver may
 * stop short of (I2C_RDWR returns the count; virtio-i2c stops at a full queue): only those messages
 * happened, and only their read buffers hold data.
 */
export type I2cDone = (error: Error | null, sent?: number) => void;

export interface I2cDevOptions {
  /**
   * An eventfd to which the I/O thread adds 1 as each rdwr() or smbus() ends, after signalling the
   * event loop: a thread blocked in epoll_wait on it (a data-plane worker) learns that its loop has
   * the `done` callback to run. The caller keeps it open while the device is open. Default: none.
   */
  completionWakeFd?: number;
}

/** Exchange buffer size for the first transfers; it grows to the largest transfer seen. */
const INITIAL_EXCHANGE_BYTES = 512;
/** Message slots of the exchange header: addr, flags, len. */
const HEADER_FIELDS = 3;

export class I2cDev {
  #fd: number;
  #funcs: I2cFuncs | null = null;
  /** The adapter's I/O thread, started by the first transfer. */
  #channel: I2cChannelHandle | null = null;
  #exchange = new Uint8Array(INITIAL_EXCHANGE_BYTES);
  #header = new Uint16Array(this.#exchange.buffer, 0, I2C_EXCHANGE_HEADER / 2);
  /** The transfer in flight: its callback, and where its results go. */
  #done: I2cDone | null = null;
  #syscall = "";
  #readMsgs: readonly I2cRdwrMsg[] | null = null;
  #smbusData: Uint8Array | null = null;
  /** Set by close() during a transfer: the fd is closed once it settled. */
  #closeWhenIdle = -1;
  /** I2cDevOptions.completionWakeFd, or -1. */
  readonly #completionWakeFd: number;
  readonly path: string;

  private constructor(fd: number, path: string, completionWakeFd: number) {
    this.#fd = fd;
    this.path = path;
    this.#completionWakeFd = completionWakeFd;
  }

  /** Opens an adapter device node read-write (close-on-exec). */
  static open(path: string, options: I2cDevOptions = {}): I2cDev {
    const wakeFd = options.completionWakeFd ?? -1;
    checkInt(wakeFd, "completion wake fd", -1, 0x7fffffff);
    return new I2cDev(
      sysCall("open", () => native().i2cOpen(path)),
      path,
      wakeFd,
    );
  }

  /** The fd, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** True while a transfer runs. */
  get busy(): boolean {
    return this.#done !== null;
  }

  /** The adapter's functionality, asked once. */
  get funcs(): I2cFuncs {
    if (this.#funcs === null) {
      const fd = this.#checkOpen("ioctl(I2C_FUNCS)");
      this.#funcs = decodeI2cFuncs(sysCall("ioctl(I2C_FUNCS)", () => native().i2cFuncs(fd)));
    }
    return this.#funcs;
  }

  /** I2C_SLAVE: fails with EBUSY when a kernel driver owns the address. */
  setSlave(addr: number): void {
    const fd = this.#checkOpen("ioctl(I2C_SLAVE)");
    checkAddr(addr, false);
    sysCall("ioctl(I2C_SLAVE)", () => native().i2cSetSlave(fd, addr));
  }

  /**
   * One combined transfer (repeated START between messages); read buffers are filled in before
   * `done` is called. One transfer at a time: throws EBUSY while one runs, and throws (nothing
   * started, `done` never called) on a closed device or bad messages.
   */
  rdwr(msgs: readonly I2cRdwrMsg[], done: I2cDone): void {
    const syscall = "ioctl(I2C_RDWR)";
    const channel = this.#idleChannel(syscall);
    const exchange = this.#layOut(msgs);
    try {
      native().i2cChannelRdwr(channel, exchange, msgs.length);
    } catch (error) {
      throw toSysError(error, syscall);
    }
    this.#started(done, syscall);
    this.#readMsgs = msgs;
  }

  /**
   * rdwr() run inline: blocks the calling thread until the adapter answered (for a thread without an
   * event loop to keep going, never the main thread's). Read buffers are filled in when it returns;
   * a failure throws, as a SysError with code and syscall. Returns how many messages the adapter
   * carried out (see I2cDone). Throws EBUSY while an rdwr() or smbus() runs on the I/O thread.
   */
  rdwrSync(msgs: readonly I2cRdwrMsg[]): number {
    const syscall = "ioctl(I2C_RDWR)";
    const fd = this.#idleFd(syscall);
    const exchange = this.#layOut(msgs);
    try {
      native().i2cRdwr(fd, exchange, msgs.length);
    } catch (error) {
      throw toSysError(error, syscall);
    }
    // Nothing could resize a buffer while the call ran: every read result fits.
    this.#copyResults(msgs, null);
    return this.#sent(msgs.length);
  }

  /**
   * I2C_SLAVE(addr) then I2C_SMBUS, together on the I/O thread. `data` is the 34-byte
   * i2c_smbus_data; it is filled in for reads and process calls before `done` is called. One
   * transfer at a time, as rdwr().
   */
  smbus(
    addr: number,
    readWrite: number,
    command: number,
    size: number,
    data: Uint8Array,
    done: I2cDone,
  ): void {
    const syscall = "ioctl(I2C_SMBUS)";
    const channel = this.#idleChannel(syscall);
    checkSmbus(addr, readWrite, command, size, data);
    const exchange = this.#exchange;
    exchange.set(data);
    try {
      native().i2cChannelSmbus(channel, exchange, addr, readWrite, command, size);
    } catch (error) {
      throw toSysError(error, syscall);
    }
    this.#started(done, syscall);
    this.#smbusData = data;
  }

  /**
   * smbus() run inline, as rdwrSync(): `data` is filled in for reads and process calls when it
   * returns; a failure throws.
   */
  smbusSync(
    addr: number,
    readWrite: number,
    command: number,
    size: number,
    data: Uint8Array,
  ): void {
    const syscall = "ioctl(I2C_SMBUS)";
    const fd = this.#idleFd(syscall);
    checkSmbus(addr, readWrite, command, size, data);
    try {
      // `data` is exactly an i2c_smbus_data: the addon copies it in and, on success, back.
      native().i2cSmbus(fd, data, addr, readWrite, command, size);
    } catch (error) {
      throw toSysError(error, syscall);
    }
  }

  /** Closes the device; a transfer in flight finishes first. Safe to call twice. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    if (this.busy) {
      this.#closeWhenIdle = fd;
      return;
    }
    this.#release(fd);
  }

  /** Stops the I/O thread, then closes the fd it used. */
  #release(fd: number): void {
    const channel = this.#channel;
    this.#channel = null;
    if (channel !== null) native().i2cChannelClose(channel);
    closeFd(fd);
  }

  /** The fd, when no transfer runs on the I/O thread (an inline one would share the fd with it). */
  #idleFd(syscall: string): number {
    const fd = this.#checkOpen(syscall);
    if (this.busy) {
      throw new SysError("EBUSY", syscall, `${syscall} failed: a transfer is running (EBUSY)`);
    }
    return fd;
  }

  #idleChannel(syscall: string): I2cChannelHandle {
    const fd = this.#idleFd(syscall);
    this.#channel ??= sysCall("i2c channel", () =>
      native().i2cChannelOpen(fd, (error) => this.#settled(error), this.#completionWakeFd),
    );
    return this.#channel;
  }

  /** The messages checked and laid out in the exchange buffer (see I2C_EXCHANGE_HEADER). */
  #layOut(msgs: readonly I2cRdwrMsg[]): Uint8Array {
    checkRdwrMsgs(msgs);
    let total = 0;
    for (const msg of msgs) total += msg.buf.length;
    const exchange = this.#reserve(I2C_EXCHANGE_HEADER + total);
    const header = this.#header;
    let at = I2C_EXCHANGE_HEADER;
    for (let i = 0; i < msgs.length; i++) {
      const msg = msgs[i]!;
      header[i * HEADER_FIELDS] = msg.addr;
      header[i * HEADER_FIELDS + 1] = msg.flags;
      header[i * HEADER_FIELDS + 2] = msg.buf.length;
      if ((msg.flags & I2C_M_RD) === 0) exchange.set(msg.buf, at);
      at += msg.buf.length;
    }
    return exchange;
  }

  /** The exchange buffer, grown (doubling) to at least `bytes`. */
  #reserve(bytes: number): Uint8Array {
    if (bytes > this.#exchange.length) {
      let size = this.#exchange.length * 2;
      while (size < bytes) size *= 2;
      this.#exchange = new Uint8Array(size);
      this.#header = new Uint16Array(this.#exchange.buffer, 0, I2C_EXCHANGE_HEADER / 2);
    }
    return this.#exchange;
  }

  #started(done: I2cDone, syscall: string): void {
    this.#done = done;
    this.#syscall = syscall;
  }

  /** The I/O thread's answer: results out of the exchange buffer, then the caller's callback. */
  #settled(error: Error | null): void {
    const done = this.#done;
    const msgs = this.#readMsgs;
    const smbusData = this.#smbusData;
    this.#done = null;
    this.#readMsgs = null;
    this.#smbusData = null;
    let failure = error;
    if (failure === null && !this.#copyResults(msgs, smbusData)) {
      failure = new SysError(
        "ERR_BUFFER_DETACHED",
        this.#syscall,
        "a transfer buffer was detached or resized before its data could be copied back",
      );
    }
    const fd = this.#closeWhenIdle;
    if (fd >= 0) {
      this.#closeWhenIdle = -1;
      this.#release(fd);
    }
    // toSysError hands back an Error for an Error: a SysError when it carries an errno code.
    if (failure !== null) done?.(toSysError(failure, this.#syscall) as Error);
    else if (msgs !== null) done?.(null, this.#sent(msgs.length));
    else done?.(null);
  }

  /** I2C_RDWR's return value, left in the exchange: at most `count` messages carried out. */
  #sent(count: number): number {
    return Math.min(this.#header[I2C_EXCHANGE_SENT / 2]!, count);
  }

  /** Copies read results to their buffers; false if one no longer has its length at submission. */
  #copyResults(msgs: readonly I2cRdwrMsg[] | null, smbusData: Uint8Array | null): boolean {
    const exchange = this.#exchange;
    if (smbusData !== null) {
      if (smbusData.length !== I2C_SMBUS_DATA_SIZE) return false;
      smbusData.set(exchange.subarray(0, I2C_SMBUS_DATA_SIZE));
      return true;
    }
    if (msgs === null) return true;
    const header = this.#header;
    let copied = true;
    let at = I2C_EXCHANGE_HEADER;
    for (let i = 0; i < msgs.length; i++) {
      const msg = msgs[i]!;
      const length = header[i * HEADER_FIELDS + 2]!;
      if ((header[i * HEADER_FIELDS + 1]! & I2C_M_RD) !== 0) {
        if (msg.buf.length === length) msg.buf.set(exchange.subarray(at, at + length));
        else copied = false;
      }
      at += length;
    }
    return copied;
  }

  #checkOpen(syscall: string): number {
    if (this.#fd < 0) throw closedError(syscall);
    return this.#fd;
  }
}
