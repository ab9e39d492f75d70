/**
 * I2cDev: one open /dev/i2c-N. Functionality bits, the slave address check, and the transfers
 * (I2C_RDWR, I2C_SMBUS) run on the libuv threadpool so a slow bus never blocks the event loop.
 * Also the kernel's i2c-dev constants for the i2c layer.
 * Must not: decide which addresses a guest may reach or map transfers to SMBus (src/i2c does).
 * @module
 */

import { checkInt, closedError, SysArgumentError, sysCall, toSysError } from "./errors.js";
import { type NativeI2cMsg, native } from "./native.js";

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

export class I2cDev {
  #fd: number;
  #funcs: I2cFuncs | null = null;
  /** Transfers queued on the threadpool; the fd is closed only once they are done. */
  #pending = 0;
  #closeWhenIdle = -1;
  readonly path: string;

  private constructor(fd: number, path: string) {
    this.#fd = fd;
    this.path = path;
  }

  /** Opens an adapter device node read-write (close-on-exec). */
  static open(path: string): I2cDev {
    return new I2cDev(
      sysCall("open", () => native().i2cOpen(path)),
      path,
    );
  }

  /** The fd, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
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

  /** One combined transfer (repeated START between messages). Read buffers are filled in. */
  rdwr(msgs: readonly I2cRdwrMsg[]): Promise<void> {
    return this.#queue("ioctl(I2C_RDWR)", (fd, done) => {
      checkRdwrMsgs(msgs);
      native().i2cRdwr(fd, msgs, done);
    });
  }

  /**
   * I2C_SLAVE(addr) then I2C_SMBUS, together on the threadpool. `data` is the 34-byte
   * i2c_smbus_data; it is filled in for reads and process calls.
   */
  smbus(
    addr: number,
    readWrite: number,
    command: number,
    size: number,
    data: Uint8Array,
  ): Promise<void> {
    return this.#queue("ioctl(I2C_SMBUS)", (fd, done) => {
      checkAddr(addr, false);
      checkInt(readWrite, "SMBus read/write", I2C_SMBUS_WRITE, I2C_SMBUS_READ);
      checkInt(command, "SMBus command", 0, 0xff);
      checkInt(size, "SMBus size", I2C_SMBUS_QUICK, I2C_SMBUS_I2C_BLOCK_DATA);
      if (data.length !== I2C_SMBUS_DATA_SIZE) {
        throw new SysArgumentError(`SMBus data must be ${I2C_SMBUS_DATA_SIZE} bytes`);
      }
      native().i2cSmbus(fd, addr, readWrite, command, size, data, done);
    });
  }

  /** Closes the device; a transfer in flight finishes first. Safe to call twice. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    if (this.#pending > 0) {
      this.#closeWhenIdle = fd;
      return;
    }
    sysCall("close", () => native().close(fd));
  }

  #queue(
    syscall: string,
    start: (fd: number, done: (err: Error | null) => void) => void,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const fd = this.#checkOpen(syscall);
      start(fd, (err) => {
        this.#settled();
        if (err === null) resolve();
        else reject(toSysError(err, syscall));
      });
      this.#pending++;
    });
  }

  #settled(): void {
    this.#pending--;
    const fd = this.#closeWhenIdle;
    if (this.#pending === 0 && fd >= 0) {
      this.#closeWhenIdle = -1;
      native().close(fd);
    }
  }

  #checkOpen(syscall: string): number {
    if (this.#fd < 0) throw closedError(syscall);
    return this.#fd;
  }
}
