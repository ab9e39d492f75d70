/**
 * Worker-thread body for the addon's worker tests: loads the addon in a worker, uses an eventfd
 * through an Epoll, runs an inline transfer, opens an adapter I/O thread it never closes, reports,
 * then blocks in epoll_wait until its wake eventfd is written. Run as a main script (as bare
 * `node --test` does with every file under test/) it does nothing.
 * Must not: assert anything (the test does) or close what it reports (the test closes it after
 * terminating the worker).
 * @module
 */

import { parentPort, workerData } from "node:worker_threads";
import { EPOLLIN, Epoll } from "../../src/sys/epoll.js";
import { EventFd } from "../../src/sys/eventfd.js";
import { I2C_EXCHANGE_HEADER, native } from "../../src/sys/native.js";

/** What the worker tells its parent once it is set up. */
export interface EpollWorkerReport {
  /** [count, data, events] of a wait after writing 3 to the eventfd. */
  ready: [number, number, number];
  /** What the eventfd read back. */
  counter: number;
  /** A wait with timeout 0 after draining. */
  afterDrain: number;
  /** The code of an inline I2C_RDWR on /dev/null (ENOTTY; ENOSYS under qemu-user). */
  inlineTransfer: string;
  /** fds the test closes once the worker is gone: epoll, eventfd, /dev/null. */
  fds: [number, number, number];
  /** The eventfd to write so the blocked wait returns. */
  wakeFd: number;
}

function setUp(id: number): { report: EpollWorkerReport; epoll: Epoll; wake: EventFd } {
  const epoll = Epoll.create(4);
  const wake = EventFd.create();
  epoll.add(wake.fd, id, EPOLLIN);
  wake.write(3);
  const count = epoll.wait(1000);
  const ready: [number, number, number] = [count, epoll.data(0), epoll.events(0)];
  const counter = wake.read();
  const afterDrain = epoll.wait(0);
  const devNull = native().i2cOpen("/dev/null");
  let inlineTransfer = "none";
  try {
    native().i2cRdwr(devNull, new Uint8Array(I2C_EXCHANGE_HEADER), 1);
  } catch (error) {
    inlineTransfer = String((error as { code?: unknown }).code);
  }
  // Left open on purpose: terminating the worker must stop this thread (environment cleanup).
  native().i2cChannelOpen(devNull, () => {});
  const report: EpollWorkerReport = {
    ready,
    counter,
    afterDrain,
    inlineTransfer,
    fds: [epoll.fd, wake.fd, devNull],
    wakeFd: wake.fd,
  };
  return { report, epoll, wake };
}

if (parentPort !== null) {
  const id = (workerData as { id: number }).id;
  const { report, epoll, wake } = setUp(id);
  parentPort.postMessage(report);
  // Blocks until the parent writes the wake eventfd; termination takes effect when it returns.
  for (;;) if (epoll.wait(-1) > 0) wake.read();
}
