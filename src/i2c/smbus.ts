/**
 * Maps an I2C transfer onto the one SMBus command that puts the same bytes on the wire, for adapters
 * that cannot run raw I2C transfers (no I2C_FUNC_I2C). Pure: no I/O, no state.
 * Must not open devices or issue ioctls (HostBus does), and must never map a transfer to a command
 * whose bus traffic differs from the transfer's.
 *
 * Shapes (w = write message, r = read message, number = length; all messages to one address):
 *
 * | transfer      | command (first the adapter supports)                     |
 * |---------------|----------------------------------------------------------|
 * | w0            | quick write                                              |
 * | r0            | quick read                                               |
 * | r1            | receive byte                                             |
 * | w1            | send byte                                                |
 * | w2            | write byte data, else I2C block write of 1 byte          |
 * | w3            | write word data, else I2C block write of 2 bytes         |
 * | wN, 4..33     | I2C block write of N-1 bytes                             |
 * | w1 r1         | read byte data, else I2C block read of 1 byte            |
 * | w1 r2         | read word data, else I2C block read of 2 bytes           |
 * | w1 rN, 3..32  | I2C block read of N bytes                                |
 * | w3 r2         | process call                                             |
 *
 * Anything else (messages to different addresses, more than two messages, other lengths, a missing
 * function bit without a fallback) has no SMBus form: `mapToSmbus` returns null.
 * SMBus block read/write (with a count byte on the wire) never matches a plain transfer, so it is
 * not used.
 * @module
 */

import {
  I2C_FUNC_SMBUS_PROC_CALL,
  I2C_FUNC_SMBUS_QUICK,
  I2C_FUNC_SMBUS_READ_BYTE,
  I2C_FUNC_SMBUS_READ_BYTE_DATA,
  I2C_FUNC_SMBUS_READ_I2C_BLOCK,
  I2C_FUNC_SMBUS_READ_WORD_DATA,
  I2C_FUNC_SMBUS_WRITE_BYTE,
  I2C_FUNC_SMBUS_WRITE_BYTE_DATA,
  I2C_FUNC_SMBUS_WRITE_I2C_BLOCK,
  I2C_FUNC_SMBUS_WRITE_WORD_DATA,
  I2C_SMBUS_BLOCK_MAX,
  I2C_SMBUS_BYTE,
  I2C_SMBUS_BYTE_DATA,
  I2C_SMBUS_DATA_SIZE,
  I2C_SMBUS_I2C_BLOCK_DATA,
  I2C_SMBUS_PROC_CALL,
  I2C_SMBUS_QUICK,
  I2C_SMBUS_READ,
  I2C_SMBUS_WORD_DATA,
  I2C_SMBUS_WRITE,
} from "../sys/i2c-dev.js";
import { hex, type I2cMessage } from "./bus.js";

export type SmbusKind =
  | "quick-write"
  | "quick-read"
  | "receive-byte"
  | "send-byte"
  | "write-byte-data"
  | "read-byte-data"
  | "write-word-data"
  | "read-word-data"
  | "process-call"
  | "i2c-block-write"
  | "i2c-block-read";

/**
 * Where the result of a read command lands in `data`, to be copied into message `msgIndex`:
 * "byte" = data[0]; "word" = the host-endian u16 at data[0..1], sent low byte first;
 * "block" = data[1..1+length].
 */
export interface SmbusReadBack {
  readonly msgIndex: number;
  readonly layout: "byte" | "word" | "block";
}

/** One I2C_SMBUS ioctl, ready to issue: I2C_SLAVE `addr`, then these arguments. */
export interface SmbusCommand {
  readonly kind: SmbusKind;
  readonly addr: number;
  /** I2C_SMBUS_READ or I2C_SMBUS_WRITE. */
  readonly readWrite: number;
  readonly command: number;
  /** I2C_SMBUS_* transaction size. */
  readonly size: number;
  /** The 34-byte `union i2c_smbus_data`, filled for writes (and block[0] for block reads). */
  readonly data: Uint8Array;
  readonly readBack: SmbusReadBack | null;
}

const hostIsLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function has(funcs: number, bit: number): boolean {
  return (funcs & bit) !== 0;
}

function command(
  kind: SmbusKind,
  addr: number,
  readWrite: number,
  cmd: number,
  size: number,
  readBack: SmbusReadBack | null,
): SmbusCommand {
  return {
    kind,
    addr,
    readWrite,
    command: cmd,
    size,
    data: new Uint8Array(I2C_SMBUS_DATA_SIZE),
    readBack,
  };
}

function setWord(data: Uint8Array, low: number, high: number): void {
  new DataView(data.buffer, data.byteOffset).setUint16(0, low | (high << 8), hostIsLittleEndian);
}

function blockWrite(addr: number, bytes: Uint8Array): SmbusCommand {
  const c = command(
    "i2c-block-write",
    addr,
    I2C_SMBUS_WRITE,
    bytes[0]!,
    I2C_SMBUS_I2C_BLOCK_DATA,
    null,
  );
  c.data[0] = bytes.length - 1;
  c.data.set(bytes.subarray(1), 1);
  return c;
}

function blockRead(addr: number, cmd: number, length: number): SmbusCommand {
  const c = command("i2c-block-read", addr, I2C_SMBUS_READ, cmd, I2C_SMBUS_I2C_BLOCK_DATA, {
    msgIndex: 1,
    layout: "block",
  });
  c.data[0] = length;
  return c;
}

function mapSingle(msg: I2cMessage, funcs: number): SmbusCommand | null {
  const { addr, buf } = msg;
  const len = buf.length;
  if (len === 0) {
    if (!has(funcs, I2C_FUNC_SMBUS_QUICK)) return null;
    const rw = msg.read ? I2C_SMBUS_READ : I2C_SMBUS_WRITE;
    return command(msg.read ? "quick-read" : "quick-write", addr, rw, 0, I2C_SMBUS_QUICK, null);
  }
  if (msg.read) {
    if (len !== 1 || !has(funcs, I2C_FUNC_SMBUS_READ_BYTE)) return null;
    return command("receive-byte", addr, I2C_SMBUS_READ, 0, I2C_SMBUS_BYTE, {
      msgIndex: 0,
      layout: "byte",
    });
  }
  if (len === 1) {
    if (!has(funcs, I2C_FUNC_SMBUS_WRITE_BYTE)) return null;
    return command("send-byte", addr, I2C_SMBUS_WRITE, buf[0]!, I2C_SMBUS_BYTE, null);
  }
  if (len === 2 && has(funcs, I2C_FUNC_SMBUS_WRITE_BYTE_DATA)) {
    const c = command("write-byte-data", addr, I2C_SMBUS_WRITE, buf[0]!, I2C_SMBUS_BYTE_DATA, null);
    c.data[0] = buf[1]!;
    return c;
  }
  if (len === 3 && has(funcs, I2C_FUNC_SMBUS_WRITE_WORD_DATA)) {
    const c = command("write-word-data", addr, I2C_SMBUS_WRITE, buf[0]!, I2C_SMBUS_WORD_DATA, null);
    setWord(c.data, buf[1]!, buf[2]!);
    return c;
  }
  if (len <= I2C_SMBUS_BLOCK_MAX + 1 && has(funcs, I2C_FUNC_SMBUS_WRITE_I2C_BLOCK)) {
    return blockWrite(addr, buf);
  }
  return null;
}

function mapPair(first: I2cMessage, second: I2cMessage, funcs: number): SmbusCommand | null {
  if (first.read || !second.read || first.addr !== second.addr) return null;
  const { addr } = first;
  const writeLen = first.buf.length;
  const readLen = second.buf.length;
  if (writeLen === 3 && readLen === 2) {
    if (!has(funcs, I2C_FUNC_SMBUS_PROC_CALL)) return null;
    // The kernel and i2c-tools issue process call as a write that returns data.
    const c = command("process-call", addr, I2C_SMBUS_WRITE, first.buf[0]!, I2C_SMBUS_PROC_CALL, {
      msgIndex: 1,
      layout: "word",
    });
    setWord(c.data, first.buf[1]!, first.buf[2]!);
    return c;
  }
  if (writeLen !== 1 || readLen < 1 || readLen > I2C_SMBUS_BLOCK_MAX) return null;
  const cmd = first.buf[0]!;
  if (readLen === 1 && has(funcs, I2C_FUNC_SMBUS_READ_BYTE_DATA)) {
    return command("read-byte-data", addr, I2C_SMBUS_READ, cmd, I2C_SMBUS_BYTE_DATA, {
      msgIndex: 1,
      layout: "byte",
    });
  }
  if (readLen === 2 && has(funcs, I2C_FUNC_SMBUS_READ_WORD_DATA)) {
    return command("read-word-data", addr, I2C_SMBUS_READ, cmd, I2C_SMBUS_WORD_DATA, {
      msgIndex: 1,
      layout: "word",
    });
  }
  if (!has(funcs, I2C_FUNC_SMBUS_READ_I2C_BLOCK)) return null;
  return blockRead(addr, cmd, readLen);
}

/**
 * The SMBus command equivalent to `msgs` on an adapter with function bits `funcs` (I2C_FUNCS), or
 * null when there is none. The returned `data` is a fresh buffer owned by the caller.
 */
export function mapToSmbus(msgs: readonly I2cMessage[], funcs: number): SmbusCommand | null {
  const [first, second] = msgs;
  if (msgs.length === 1 && first) return mapSingle(first, funcs);
  if (msgs.length === 2 && first && second) return mapPair(first, second, funcs);
  return null;
}

/** Copies the result of a completed read command from `cmd.data` into its read message. */
export function copySmbusResult(cmd: SmbusCommand, msgs: readonly I2cMessage[]): void {
  if (!cmd.readBack) return;
  const target = msgs[cmd.readBack.msgIndex];
  if (!target) return;
  const { data } = cmd;
  switch (cmd.readBack.layout) {
    case "byte":
      target.buf[0] = data[0]!;
      break;
    case "word": {
      const word = new DataView(data.buffer, data.byteOffset).getUint16(0, hostIsLittleEndian);
      target.buf[0] = word & 0xff;
      target.buf[1] = word >> 8;
      break;
    }
    case "block":
      target.buf.set(data.subarray(1, 1 + target.buf.length));
      break;
  }
}

/** `w1 r2 @0x50` style summary of a transfer's shape, for log lines. */
export function describeShape(msgs: readonly I2cMessage[]): string {
  const parts = msgs.map((m) => `${m.read ? "r" : "w"}${m.buf.length}@${hex(m.addr)}`);
  return parts.join(" ") || "(empty)";
}
