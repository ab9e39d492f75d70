/**
 * UnixListener and UnixStream: nonblocking AF_UNIX stream sockets that carry fds (SCM_RIGHTS), and
 * who is at the other end (SO_PEERCRED, SO_PEERGROUPS).
 * Must not: frame messages, wait for readiness (FdWatcher does) or remove socket files; whether a
 * stale path may be unlinked is the caller's decision.
 * @module
 */

import { closedError, SysArgumentError, SysError, sysCall } from "./errors.js";
import { closeFd } from "./fd.js";
import { native } from "./native.js";
import { type PeerCredentials, peerCredentials } from "./peer-credentials.js";

/** fds one recv can deliver; the addon's control buffer holds 16, vhost-user sends at most 8. */
export const MAX_RECV_FDS = 16;
/** The kernel's limit of fds in one message (SCM_MAX_FD). */
export const MAX_SEND_FDS = 253;

export class UnixStream {
  #fd: number;
  /** fdsOut for recvMsg: [count, fd...], reused across calls. */
  readonly #fdsOut = new Int32Array(1 + MAX_RECV_FDS);

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Connects to a listening socket without ever waiting: SysError ECONNREFUSED when nobody listens,
   * EAGAIN when the listener's backlog is full. The returned stream is nonblocking.
   */
  static connect(path: string): UnixStream {
    return new UnixStream(sysCall("connect", () => native().socketConnect(path)));
  }

  /** A connected pair (tests, in-process frontends). */
  static pair(): [UnixStream, UnixStream] {
    const [a, b] = sysCall("socketpair", () => native().socketPair());
    return [new UnixStream(a), new UnixStream(b)];
  }

  /** Takes ownership of a connected, nonblocking stream socket fd. */
  static adopt(fd: number): UnixStream {
    if (!Number.isInteger(fd) || fd < 0) throw new SysArgumentError(`invalid fd ${fd}`);
    sysCall("fcntl", () => native().setNonBlocking(fd));
    return new UnixStream(fd);
  }

  /** The fd (for FdWatcher), or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** The connecting process's pid, uid, gid and groups (SO_PEERCRED, SO_PEERGROUPS). */
  peerCredentials(): PeerCredentials {
    return peerCredentials(this.#checkOpen("getsockopt"));
  }

  /**
   * One receive into buf[offset, offset + length). Returns the byte count, 0 at end of stream, or
   * -1 when nothing is available. Received fds are appended to `fds`; the caller owns them. Throws
   * SysError "ECTRUNC" (the fds closed) when a message carried more fds than can be received.
   */
  recv(buf: Uint8Array, offset: number, length: number, fds: number[]): number {
    const fd = this.#checkOpen("recvmsg");
    const fdsOut = this.#fdsOut;
    const n = sysCall("recvmsg", () => native().recvMsg(fd, buf, offset, length, fdsOut));
    const count = fdsOut[0] ?? 0;
    for (let i = 1; i <= count; i++) fds.push(fdsOut[i] ?? -1);
    return n;
  }

  /**
   * Sends all of `buf`, with `fds` attached to its first byte. Throws SysError "EAGAIN" when the
   * socket cannot take anything now (nothing was sent), and "ESHORTSEND" when it took only part:
   * the byte stream is then broken and the connection must be dropped.
   */
  send(buf: Uint8Array, fds: readonly number[] = []): void {
    const fd = this.#checkOpen("sendmsg");
    if (fds.length > MAX_SEND_FDS) {
      throw new SysArgumentError(`at most ${MAX_SEND_FDS} fds per message, got ${fds.length}`);
    }
    if (fds.length > 0 && buf.length === 0) {
      throw new SysArgumentError("fds need at least one byte of data to travel with");
    }
    const binding = native();
    let sent = 0;
    let attach = fds;
    while (sent < buf.length) {
      const remaining = buf.length - sent;
      const n = sysCall("sendmsg", () => binding.sendMsg(fd, buf, sent, remaining, attach));
      if (n < 0) {
        if (sent === 0) throw new SysError("EAGAIN", "sendmsg", "sendmsg would block (EAGAIN)");
        throw new SysError(
          "ESHORTSEND",
          "sendmsg",
          `sendmsg sent ${sent} of ${buf.length} bytes before the socket filled (ESHORTSEND)`,
        );
      }
      sent += n;
      attach = [];
    }
  }

  /** Closes the socket; safe to call twice. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    closeFd(fd);
  }

  /** Gives the fd up without closing it (a handover); -1 when already closed. */
  release(): number {
    const fd = this.#fd;
    this.#fd = -1;
    return fd;
  }

  #checkOpen(syscall: string): number {
    if (this.#fd < 0) throw closedError(syscall);
    return this.#fd;
  }
}

export class UnixListener {
  #fd: number;
  readonly path: string;

  private constructor(fd: number, path: string) {
    this.#fd = fd;
    this.path = path;
  }

  /**
   * Takes ownership of a listening socket made elsewhere (inherited from a service manager) and makes
   * it nonblocking. The caller checks what the fd is; `path` is only a name for messages.
   */
  static adopt(fd: number, path: string): UnixListener {
    if (!Number.isInteger(fd) || fd < 0) throw new SysArgumentError(`invalid fd ${fd}`);
    sysCall("fcntl", () => native().setNonBlocking(fd));
    return new UnixListener(fd, path);
  }

  /** Binds and listens on `path`. Fails with EADDRINUSE if the path exists (stale or not). */
  static listen(path: string, backlog = 16): UnixListener {
    return new UnixListener(
      sysCall("bind", () => native().socketListen(path, backlog)),
      path,
    );
  }

  /** The fd (for FdWatcher), or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** The next pending connection, or null when none is waiting. */
  accept(): UnixStream | null {
    const listenFd = this.#fd;
    if (listenFd < 0) throw closedError("accept4");
    const fd = sysCall("accept4", () => native().socketAccept(listenFd));
    return fd < 0 ? null : UnixStream.adopt(fd);
  }

  /** Stops listening; the socket file stays (the caller decides about it). Safe to call twice. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    closeFd(fd);
  }

  /** Gives the fd up without closing it (a handover); -1 when already closed. */
  release(): number {
    const fd = this.#fd;
    this.#fd = -1;
    return fd;
  }
}
