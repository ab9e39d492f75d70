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
import { createMemfd, GUEST_RAM_SEALS } from "../../src/sys/memfd.js";
import { UnixStream } from "../../src/sys/unix-socket.js";
import { FrontendError, VhostUserFrontend } from "../../src/vhost-user/frontend.js";
import { memoryEepromArgs } from "../helpers/configured-daemon.js";
import { type DaemonProcess, makeTempDir, startDaemon, WAIT_MS } from "../helpers/daemon.js";
import { MEMORY_EEPROM_ADDR } from "../helpers/eeprom.js";
import { scaled } from "../helpers/time.js";

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

/** The one emulated device every test talks to (an EEPROM without write cycle: plain memory). */
export const EEPROM_ADDR = MEMORY_EEPROM_ADDR;

export interface ThreeSocketDaemon {
  readonly daemon: DaemonProcess;
  /** `<prefix>0`, `<prefix>1`, `<prefix>2`. */
  readonly paths: readonly string[];
  stop(): Promise<void>;
}

/**
 * Starts `-c 3` on a 24c02 at 0x50 without write cycle (info: the harness waits for its "listening"
 * lines).
 */
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
      ...memoryEepromArgs(dir.path, "24c02", EEPROM_ADDR),
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
  const end = Date.now() + scaled(ms);
  for (;;) {
    try {
      return await connect();
    } catch (error) {
      // The daemon says why it refuses: another front-end (the previous one) is still connected.
      const refused = error instanceof FrontendError && error.code === "EREFUSED";
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

/**
 * The daemon's footprint once every session it accepted on `paths` has been torn down. A socket
 * serves one front-end at a time, so a probe front-end whose GET_FEATURES is answered proves that
 * the session before it on that socket is gone (its log lines are rate-limited, so counting them
 * cannot tell). Taken while the probes hold the sockets, the same for every measurement; the probes
 * then hang up.
 */
export async function settledFootprint(
  daemon: DaemonProcess,
  paths: readonly string[],
): Promise<ProcessFootprint> {
  const probes: VhostUserFrontend[] = [];
  try {
    for (const path of paths) {
      probes.push(
        await whenSocketFree(async () => {
          const probe = VhostUserFrontend.connect(path);
          try {
            await probe.getFeatures();
            return probe;
          } catch (error) {
            probe.close();
            throw error;
          }
        }),
      );
    }
    return await steadyFootprint(daemon.pid);
  } finally {
    for (const probe of probes) probe.close();
  }
}

/**
 * A footprint that has stopped moving: fds of a session that just ended can still be closing in
 * the daemon (a kick fd waits for the epoll worker to let go of it), so one sample can count them.
 * Samples 20 ms apart until three in a row agree on the fds and mappings (at most 2 s).
 */
async function steadyFootprint(pid: number): Promise<ProcessFootprint> {
  let last = footprint(pid);
  let agreeing = 1;
  for (let sample = 0; sample < 100 && agreeing < 3; sample++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    const next = footprint(pid);
    agreeing = next.fds === last.fds && next.maps === last.maps ? agreeing + 1 : 1;
    last = next;
  }
  return last;
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
    // Sealed as a VMM's guest RAM is, so memory tables get past the seal check to the size checks.
    const sealed = { seals: GUEST_RAM_SEALS };
    this.ram = createMemfd(1 << 20, "fuzz-ram", sealed);
    this.#plain = [
      this.ram,
      createMemfd(4096, "fuzz-tiny", sealed),
      createMemfd(0, "fuzz-empty", sealed),
    ];
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
