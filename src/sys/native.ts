/**
 * Loads the native addon (build/Release, else a prebuilt binary in prebuilds/<platform>-<arch>/, then
 * build/Debug, under the package root) and describes its whole surface as `NativeBinding`, so no other
 * file sees an untyped value.
 * Must not: wrap, validate or interpret calls; that is the job of the sys classes.
 * @module
 */

import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { CodedError } from "../errors.js";

declare const mappingBrand: unique symbol;
declare const pollBrand: unique symbol;
declare const i2cChannelBrand: unique symbol;
/** An mmap owned by the addon. Opaque: only the addon's functions accept it. */
export type MappingHandle = { readonly [mappingBrand]: true };
/** A uv_poll_t owned by the addon. Opaque: only the addon's functions accept it. */
export type PollHandle = { readonly [pollBrand]: true };
/** An adapter's I/O thread owned by the addon. Opaque: only the addon's functions accept it. */
export type I2cChannelHandle = { readonly [i2cChannelBrand]: true };

/**
 * Layout of a channel's exchange buffer: message i's addr, flags and len as host-endian u16 at
 * byte 6*i, the bytes of every message packed in message order from I2C_EXCHANGE_HEADER; an
 * SMBus call's 34-byte i2c_smbus_data at byte 0.
 */
export const I2C_EXCHANGE_HEADER = 256;
/** Where, after an I2C_RDWR, the exchange holds its return value (u16): the messages carried out. */
export const I2C_EXCHANGE_SENT = 252;

/** One I2C_RDWR message (struct i2c_msg); the channel takes it laid out in its exchange buffer. */
export interface NativeI2cMsg {
  addr: number;
  flags: number;
  buf: Uint8Array;
}

export interface NativeBinding {
  close(fd: number): void;
  /** _exit(status): ends the process without joining threads (one may be stuck in a system call). */
  exitNow(status: number): never;
  socketListen(path: string, backlog: number): number;
  socketAccept(listenFd: number): number;
  socketConnect(path: string): number;
  socketPair(): [number, number];
  recvMsg(fd: number, buf: Uint8Array, offset: number, length: number, fdsOut: Int32Array): number;
  sendMsg(
    fd: number,
    buf: Uint8Array,
    offset: number,
    length: number,
    fds: readonly number[],
  ): number;
  eventfd(initval: number): number;
  eventfdRead(fd: number): number;
  eventfdWrite(fd: number, value: number): void;
  /**
   * poll(2) for readability, blocking the thread (frontends only, never the daemon's loop): marks
   * `ready[i]` 1 when `fds[i]` is readable or hung up; the count, 0 on timeout (-1: no deadline).
   */
  waitReadable(fds: Int32Array, ready: Uint8Array, timeoutMs: number): number;
  /** memfd_create with MFD_CLOEXEC | MFD_ALLOW_SEALING. */
  memfdCreate(name: string): number;
  ftruncate(fd: number, size: number): void;
  /** fcntl F_GET_SEALS: the file's F_SEAL_* bits; 0 when the file cannot have seals (EINVAL). */
  fileSeals(fd: number): number;
  /** fcntl F_ADD_SEALS. */
  addSeals(fd: number, seals: number): void;
  /** fstat: [file type bits (S_IFMT), size in bytes]. */
  fdInfo(fd: number): [number, number];
  setNonBlocking(fd: number): void;
  mmap(fd: number, offset: number, length: number, writable: boolean): MappingHandle;
  mappingView(handle: MappingHandle, offset: number, length: number): ArrayBuffer;
  munmap(handle: MappingHandle): void;
  pollCreate(fd: number, callback: (status: number, events: number) => void): PollHandle;
  pollStart(handle: PollHandle, events: number): void;
  pollStop(handle: PollHandle): void;
  pollClose(handle: PollHandle): void;
  i2cOpen(path: string): number;
  i2cFuncs(fd: number): number;
  i2cSetSlave(fd: number, addr: number): void;
  /**
   * An I/O thread for the adapter open on `fd`, running one transfer at a time; `callback` is
   * called on the opening thread's event loop as each one ends (null, or an errno error with code
   * and syscall). Only an in-flight transfer keeps the process alive. `wakeFd` (an eventfd; -1 or
   * left out: none) gets 1 added as each transfer ends, after the event loop was signalled: a
   * thread blocked in epoll_wait on it learns that its loop has a callback to run. The caller keeps
   * it open until the channel is closed.
   */
  i2cChannelOpen(
    fd: number,
    callback: (err: Error | null) => void,
    wakeFd?: number,
  ): I2cChannelHandle;
  /**
   * One I2C_RDWR of `count` messages laid out in `exchange` (see I2C_EXCHANGE_HEADER); the bytes are
   * copied in now and back into `exchange` before the callback. Throws EBUSY while one runs.
   */
  i2cChannelRdwr(channel: I2cChannelHandle, exchange: Uint8Array, count: number): void;
  /** I2C_SLAVE `addr` then I2C_SMBUS with the i2c_smbus_data at the start of `exchange`. */
  i2cChannelSmbus(
    channel: I2cChannelHandle,
    exchange: Uint8Array,
    addr: number,
    readWrite: number,
    command: number,
    size: number,
  ): void;
  /** Joins the thread (idempotent); the fd stays open. No callback comes after it. */
  i2cChannelClose(channel: I2cChannelHandle): void;
  /**
   * i2cChannelRdwr's transfer run inline, blocking the calling thread (a worker that may block,
   * never an event loop): the same exchange layout and argument checks; read bytes land in
   * `exchange` before it returns; a failure is thrown as the channel's callback would get it.
   */
  i2cRdwr(fd: number, exchange: Uint8Array, count: number): void;
  /** i2cChannelSmbus's I2C_SLAVE + I2C_SMBUS run inline, as i2cRdwr. */
  i2cSmbus(
    fd: number,
    exchange: Uint8Array,
    addr: number,
    readWrite: number,
    command: number,
    size: number,
  ): void;
  /** epoll_create1(EPOLL_CLOEXEC). */
  epollCreate(): number;
  /**
   * epoll_ctl: `op` EPOLL_CTL_ADD (1), DEL (2) or MOD (3); `events` EPOLL* bits; `data` an int32
   * handed back by epollWait (kept in epoll_data.u32).
   */
  epollCtl(epfd: number, op: number, fd: number, events: number, data: number): void;
  /**
   * epoll_wait, blocking the calling thread up to `timeoutMs` (-1: no deadline, 0: just look; a
   * thread with an event loop passes 0 only): `out[2i]` = data, `out[2i+1]` = events of each ready
   * entry, at most `out.length / 2` (and 512); returns how many. A signal ends it with 0.
   * Allocates nothing.
   */
  epollWait(epfd: number, out: Int32Array, timeoutMs: number): number;
  /** flock(2): true when taken or released, false when LOCK_NB found it held (EWOULDBLOCK). */
  flock(fd: number, op: number): boolean;
  /** A nonblocking AF_UNIX SOCK_DGRAM socket bound to `path` ("@name": abstract). */
  datagramBind(path: string): number;
  /** One datagram to `path` ("@name": abstract) from a fresh socket, `fds` attached (SCM_RIGHTS). */
  datagramSend(path: string, buf: Uint8Array, fds?: readonly number[]): number;
  /** fcntl(F_DUPFD_CLOEXEC): a new fd for the same open file. */
  dup(fd: number): number;
  /** One datagram into `buf` (cut to its length): its length, or -1 when none is waiting. */
  datagramRecv(fd: number, buf: Uint8Array): number;
  /** getsockopt: [SO_DOMAIN, SO_TYPE, SO_ACCEPTCONN]. */
  socketInfo(fd: number): [number, number, number];
  /** getsockopt SO_PEERCRED: [pid, uid, gid] of the peer, as recorded when it connected. */
  socketPeerCred(fd: number): [number, number, number];
  /** getsockopt SO_PEERGROUPS: the peer's supplementary groups, as recorded when it connected. */
  socketPeerGroups(fd: number): number[];
  /** getsockname: the bound path, "@name" for an abstract address, "" when unbound. */
  socketName(fd: number): string;
  /** openat(2) (always O_CLOEXEC); `dirFd` may be AT_FDCWD. `name` is resolved by the kernel. */
  openAt(dirFd: number, name: string, flags: number, mode: number): number;
  /** fstatat(2) with AT_SYMLINK_NOFOLLOW: see RawStat. */
  statAt(dirFd: number, name: string): RawStat;
  /** fstat(2): see RawStat. */
  fstat(fd: number): RawStat;
  readlinkAt(dirFd: number, name: string): string;
  mkdirAt(dirFd: number, name: string, mode: number): void;
  unlinkAt(dirFd: number, name: string, removeDir: boolean): void;
  /** renameat2(2); `noReplace`: RENAME_NOREPLACE (EEXIST when `toName` exists). */
  renameAt(
    fromDirFd: number,
    fromName: string,
    toDirFd: number,
    toName: string,
    noReplace: boolean,
  ): void;
  /** fchownat(2) with AT_SYMLINK_NOFOLLOW; -1 keeps that id. */
  chownAt(dirFd: number, name: string, uid: number, gid: number): void;
  /** fchmodat(2): follows a final link, so only for entries of a directory nobody else can write. */
  chmodAt(dirFd: number, name: string, mode: number): void;
}

/** [st_mode, st_uid, st_gid, st_nlink, st_dev, st_ino, st_size] */
export type RawStat = [number, number, number, number, number, number, number];

/** openat(2)'s "the working directory". */
export const AT_FDCWD = -100;

/** flock(2) operations (Linux values). */
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

/** Readiness bits for `pollStart` (libuv's UV_READABLE / UV_WRITABLE). */
export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;

const ADDON_FILE = "vhost_device_i2c.node";
/** Where `npm run build:prebuild` puts the binary for this platform (the package ships linux-x64 and linux-arm64). */
export const PREBUILD_DIR = `prebuilds/${process.platform}-${process.arch}`;
/**
 * What node-gyp built from this source first (a stale prebuilt binary must never hide a rebuilt
 * addon), then the prebuilt one (installs without a compiler keep it and build nothing).
 */
const ADDON_DIRS = ["build/Release", PREBUILD_DIR, "build/Debug"] as const;

/** The nearest directory at or above `start` that holds a package.json. */
export function findPackageRoot(start: string): string {
  let dir = start;
  for (;;) {
    if (existsSync(join(dir, "package.json"))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${start}`);
    dir = parent;
  }
}

/**
 * What builds the addon where it is: in a checkout the package's own script; in an installed
 * package a rebuild by npm, which needs a C and C++ compiler, make and Python (Debian's
 * build-essential and python3), as node-gyp does. The texts live in addon-fix.json, which the
 * install script (plain JavaScript, no build step) prints too.
 */
export function addonFix(packageRoot: string): string {
  const texts = JSON.parse(
    readFileSync(new URL("./addon-fix.json", import.meta.url), "utf8"),
  ) as Record<"installed" | "checkout", string>;
  return existsSync(join(packageRoot, ".git")) ? texts.checkout : texts.installed;
}

export class NativeLoadError extends CodedError<"ERR_NATIVE_LOAD"> {
  readonly tried: readonly string[];
  constructor(tried: readonly string[], causes: readonly unknown[], fix: string) {
    const lines = tried.map((path, i) => {
      const cause = causes[i];
      return `  ${path}: ${cause instanceof Error ? cause.message.split("\n")[0] : String(cause)}`;
    });
    super(
      "ERR_NATIVE_LOAD",
      `cannot load the native addon: no prebuilt binary for ${process.platform}-${process.arch} loads here and none was built; to build it, ${fix}. Tried:\n${lines.join("\n")}`,
      { cause: causes[causes.length - 1] },
    );
    this.tried = tried;
  }
}

/** Loads the addon from the first directory that has it; reports every path tried. */
export function loadNativeBinding(packageRoot?: string): NativeBinding {
  const here = dirname(fileURLToPath(import.meta.url));
  const root = packageRoot ?? findPackageRoot(here);
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  const causes: unknown[] = [];
  for (const dir of ADDON_DIRS) {
    const path = join(root, dir, ADDON_FILE);
    tried.push(path);
    if (!existsSync(path)) {
      causes.push(new Error("not found"));
      continue;
    }
    try {
      return require(path) as NativeBinding;
    } catch (error) {
      causes.push(error);
    }
  }
  throw new NativeLoadError(tried, causes, addonFix(root));
}

let current: NativeBinding | null = null;

/** The binding in use: the injected one, else the addon (loaded on first use). */
export function native(): NativeBinding {
  current ??= loadNativeBinding();
  return current;
}

/**
 * Replaces the binding for everything in src/sys (tests, tools). Returns the previous one so a
 * test can restore it; `null` goes back to loading the addon.
 */
export function setNativeBinding(binding: NativeBinding | null): NativeBinding | null {
  const previous = current;
  current = binding;
  return previous;
}
