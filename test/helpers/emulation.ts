/**
 * What a user-mode emulator (qemu-user, which runs the arm64 suite: scripts/arm64-test.sh) does
 * not do as a kernel does, found by asking the system, never by the architecture's name: a native
 * arm64 host passes every probe. Tests that need what is missing skip with the probe's reason, or
 * expect what the probe saw where that is all that differs.
 * @module
 */

import { closeSync, openSync, readdirSync } from "node:fs";
import { constants } from "node:os";
import { native } from "../../src/sys/native.js";

function errorCode(error: unknown): string | undefined {
  return (error as { code?: string }).code;
}

let ioctlCode: string | undefined;

/** notAnAdapterCode()'s errno number. */
export function notAnAdapterErrno(): number {
  return constants.errno[notAnAdapterCode()];
}

/**
 * The code of an I2C ioctl's error on a file that is not an adapter (/dev/null): ENOTTY from a
 * kernel; ENOSYS under qemu-user, which answers the ioctls it does not know without passing them
 * on (test/fake-i2c is not affected: it answers in the process, before any syscall).
 */
export function notAnAdapterCode(): "ENOTTY" | "ENOSYS" {
  if (ioctlCode === undefined) {
    const fd = openSync("/dev/null", "r");
    try {
      native().i2cFuncs(fd);
      throw new Error("ioctl(I2C_FUNCS) on /dev/null succeeded");
    } catch (error) {
      ioctlCode = errorCode(error);
    } finally {
      closeSync(fd);
    }
  }
  if (ioctlCode !== "ENOTTY" && ioctlCode !== "ENOSYS") {
    throw new Error(`ioctl(I2C_FUNCS) on /dev/null failed with ${ioctlCode}`);
  }
  return ioctlCode;
}

/**
 * Why SO_PEERGROUPS cannot be read here, or null when it can (or when this is not root, which the
 * probe needs, as the tests that read other users' groups do). Reads the groups of a socketpair made
 * while this process has two of them: qemu-user passes the option on with room for one gid and
 * returns ERANGE without the size needed, so the addon's retry with that size fails again.
 */
export function peerGroupsUnavailableReason(): string | null {
  const { getgroups, setgroups } = process;
  if ((process.geteuid?.() ?? -1) !== 0 || getgroups === undefined || setgroups === undefined) {
    return null;
  }
  const groups = getgroups();
  setgroups([0, 4321]);
  let pair: [number, number];
  try {
    pair = native().socketPair();
  } finally {
    setgroups(groups);
  }
  try {
    native().socketPeerGroups(pair[0]);
    return null;
  } catch (error) {
    if (errorCode(error) !== "ERANGE") throw error;
    return "getsockopt(SO_PEERGROUPS) of a peer with two groups fails with ERANGE, asked size included (qemu-user passes the option on with room for one gid)";
  } finally {
    native().close(pair[0]);
    native().close(pair[1]);
  }
}

/**
 * Why a recvmsg given room for fewer fds than arrived cannot be seen to truncate here, or null when
 * it can. Sends 20 fds, receives them with room for 40 in the addon and 16 (RECV_MAX_FDS) in its
 * control buffer: a kernel reports MSG_CTRUNC and closes the 4 it could not deliver; qemu-user
 * receives all 20 into a buffer of its own, delivers 16 without MSG_CTRUNC and leaves 4 open.
 */
export function fdTruncationUnseenReason(): string | null {
  const n = native();
  const [a, b] = n.socketPair();
  const fd = n.eventfd(0);
  const opened = () => readdirSync("/proc/self/fd").length;
  try {
    const before = opened();
    n.sendMsg(a, Uint8Array.of(0), 0, 1, Array(20).fill(fd));
    const fds = new Int32Array(41);
    try {
      n.recvMsg(b, new Uint8Array(1), 0, 1, fds);
    } catch (error) {
      if (errorCode(error) === "ECTRUNC") return null;
      throw error;
    }
    const received = fds.subarray(1, 1 + (fds[0] ?? 0));
    const unreachable = opened() - before - received.length;
    for (const got of received) n.close(got);
    if (unreachable <= 0) return null;
    return `recvmsg delivered ${received.length} of 20 fds without MSG_CTRUNC and left ${unreachable} open out of reach (qemu-user receives them into a larger buffer of its own)`;
  } finally {
    n.close(fd);
    n.close(a);
    n.close(b);
  }
}
