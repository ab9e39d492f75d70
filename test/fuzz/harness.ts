/**
 * Shared pieces of the fault-tolerance tests: the fuzz budget (fixed seed and run count in CI, more on
 * demand), a daemon with three sockets on an emulated 24c02, the "still serves" check (a fresh guest
 * completes a write+read transfer), /proc measurements of the daemon (fds, mappings, RSS) and a pool of
 * junk fds of every kind a front-end could pass.
 * Must not reach into the daemon's modules: everything goes through its sockets and /proc.
 *
 * Budget: `FUZZ_RUNS=100000 FUZZ_SEED=7 npm run test:unit` (or `node --test dist/test/fuzz/`) runs
 * each property that many times from that seed; CI uses the defaults given at each property.
 * @module
 */

import assert from "node:assert/strict";
import { closeSync, openSync, readdirSync, readFileSync } from "node:fs";
import { I2cGuest } from "../../src/frontend/i2c-driver.js";
import { EventFd } from "../../src/sys/eventfd.js";
import { createMemfd } from "../../src/sys/memfd.js";
import { UnixStream } from "../../src/sys/unix-socket.js";
import { FrontendError } from "../../src/vhost-user/frontend.js";
import {
  type DaemonProcess,
  makeTempDir,
  startDaemon,
  WAIT_MS,
  waitUntil,
} from "../helpers/daemon.js";

/** Runs per property: FUZZ_RUNS when set, else the CI budget given by the test. */
export function fuzzRuns(ciRuns: number): number {
  const wanted = Number(process.env.FUZZ_RUNS);
  return Number.isInteger(wanted) && wanted > 0 ? wanted : ciRuns;
}

/** The fast-check seed: FUZZ_SEED when set, else fixed so CI runs are reproducible. */
export function fuzzSeed(): number {
  const wanted = Number(process.env.FUZZ_SEED);
  return Number.isInteger(wanted) ? wanted : 0x12c5eed;
}

/** fast-check parameters for one property. */
export function fuzzParameters(ciRuns: number): {
  numRuns: number;
  seed: number;
  includeErrorInReport: true;
} {
  return { numRuns: fuzzRuns(ciRuns), seed: fuzzSeed(), includeErrorInReport: true };
}

/** The one emulated device every test talks to. */
export const EEPROM_ADDR = 0x50;

export interface ThreeSocketDaemon {
  readonly daemon: DaemonProcess;
  /** `<prefix>0`, `<prefix>1`, `<prefix>2`. */
  readonly paths: readonly string[];
  stop(): Promise<void>;
}

/** Starts `-c 3 -l sim:0x50=24c02` (info: the harness waits for its "listening" lines). */
export async function startThreeSocketDaemon(logLevel = "info"): Promise<ThreeSocketDaemon> {
  const dir = makeTempDir("vdi2c-fuzz-");
  const prefix = `${dir.path}/vi2c.sock`;
  const paths = [0, 1, 2].map((i) => `${prefix}${i}`);
  const daemon = await startDaemon(
    [
      "-s",
      prefix,
      "-c",
      "3",
      "-l",
      `sim:0x${EEPROM_ADDR.toString(16)}=24c02`,
      "--log-level",
      logLevel,
    ],
    paths,
  );
  return {
    daemon,
    paths,
    async stop() {
      try {
        const status = await daemon.stop();
        assert.deepEqual(status, { code: 0, signal: null }, "SIGTERM exits 0");
      } finally {
        dir.remove();
      }
    },
  };
}

/**
 * A well-formed transfer on a fresh connection: writes `marker` at an offset, reads it back. Proves
 * the daemon accepts connections and serves the full path.
 */
export async function assertServes(path: string, marker = 0x5a, offset = 0xf0): Promise<void> {
  const guest = await whenSocketFree(() => I2cGuest.connect(path));
  try {
    await assertTransfer(guest, marker, offset);
  } finally {
    await guest.close();
  }
}

/**
 * Runs `connect` until the daemon stops refusing it: a socket serves one front-end at a time, and the
 * daemon may not have seen the previous one hang up yet (it closes a second connection at once).
 */
export async function whenSocketFree<T>(connect: () => Promise<T>, ms = WAIT_MS): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await connect();
    } catch (error) {
      const refused = error instanceof FrontendError && error.code === "ECONNRESET";
      if (!refused || Date.now() > end) throw error;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }
}

/** Write then combined write+read on a running guest. */
export async function assertTransfer(
  guest: I2cGuest,
  marker: number,
  offset = 0xf0,
): Promise<void> {
  const wrote = await guest.driver.transfer([
    { addr: EEPROM_ADDR, write: Uint8Array.of(offset, marker & 0xff) },
  ]);
  assert.equal(wrote.ok, true, "the write transfer succeeds");
  const read = await guest.driver.transfer([
    { addr: EEPROM_ADDR, write: Uint8Array.of(offset) },
    { addr: EEPROM_ADDR, read: 1 },
  ]);
  assert.equal(read.ok, true, "the write+read transfer succeeds");
  assert.deepEqual([...(read.reads[0] ?? [])], [marker & 0xff]);
}

export interface ProcessFootprint {
  readonly fds: number;
  readonly maps: number;
  /** Resident set size in KiB (VmRSS). */
  readonly rssKiB: number;
}

/** Open fds, mapping lines and RSS of a process, from /proc. */
export function footprint(pid: number): ProcessFootprint {
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  const maps = readFileSync(`/proc/${pid}/maps`, "utf8").trimEnd().split("\n").length;
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rss = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!rss?.[1]) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return { fds, maps, rssKiB: Number(rss[1]) };
}

/** The daemon's footprint once every session it accepted has been torn down (per its own log). */
export async function settledFootprint(daemon: DaemonProcess): Promise<ProcessFootprint> {
  const count = (line: string) => daemon.stderr.split(line).length - 1;
  await waitUntil(
    () => count("front-end connected pid=") === count("waiting for the next front-end path="),
    "every session torn down",
  );
  return footprint(daemon.pid);
}

/** Junk fds of each kind a front-end can send: eventfds, memfds (big, tiny, empty), /dev/null, a socket. */
export class JunkFds {
  readonly fds: readonly number[];
  /** A 1 MiB memfd: maps as guest RAM when a region asks for at most that much. */
  readonly ram: number;
  readonly #eventFds: EventFd[];
  readonly #plain: number[];
  readonly #streams: UnixStream[];

  constructor() {
    this.#eventFds = [EventFd.create(), EventFd.create()];
    this.ram = createMemfd(1 << 20, "fuzz-ram");
    this.#plain = [this.ram, createMemfd(4096, "fuzz-tiny"), createMemfd(0, "fuzz-empty")];
    this.#plain.push(openSync("/dev/null", "r+"));
    this.#streams = UnixStream.pair();
    this.fds = [
      ...this.#eventFds.map((e) => e.fd),
      ...this.#plain,
      ...this.#streams.map((s) => s.fd),
    ];
  }

  close(): void {
    for (const e of this.#eventFds) e.close();
    for (const fd of this.#plain) closeSync(fd);
    for (const s of this.#streams) s.close();
  }
}
