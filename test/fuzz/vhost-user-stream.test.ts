/**
 * Property: whatever bytes and fds a front-end sends, the daemon survives, keeps serving the other
 * sockets and new connections, and leaks no fds. Message streams are random requests, valid requests
 * with random fields, mutated valid payloads (cut, extended, bit-flipped), wrong header sizes, wrong fd
 * counts (real eventfds, memfds of the wrong size, /dev/null, a socket as junk), half messages, and a
 * real start sequence followed by kicks over guest RAM full of random bytes. Some front-ends stop
 * reading their replies and keep sending: the daemon must stop reading them (their socket fills and
 * stays full) while the other sockets serve, and tear them down when they hang up.
 * Talks to the real daemon process over its sockets only. Budget: see harness.ts (FUZZ_RUNS).
 * @module
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { QEMU_FEATURES } from "../../src/frontend/i2c-driver.js";
import { EventFd } from "../../src/sys/eventfd.js";
import { UnixStream } from "../../src/sys/unix-socket.js";
import {
  encodeConfig,
  encodeHeader,
  encodeMemRegion,
  encodeMemTable,
  encodeU64,
  encodeVringAddr,
  encodeVringState,
  type MemRegion,
} from "../../src/vhost-user/codec.js";
import { MessageChannel } from "../../src/vhost-user/connection.js";
import { GuestRam } from "../../src/vhost-user/frontend.js";
import { HeaderFlag, Request } from "../../src/vhost-user/protocol.js";
import { withTimeout } from "../helpers/daemon.js";
import {
  assertServes,
  fuzzParameters,
  JunkFds,
  settledFootprint,
  startThreeSocketDaemon,
  type ThreeSocketDaemon,
} from "./harness.js";

/** Where the fuzzed front-end claims to have guest RAM mapped (any value works: it is only a key). */
const USER_BASE = 0x7f00_0000_0000;
const RAM_SIZE = 1 << 20;
const RAM_REGION: MemRegion = {
  guestPhysAddr: 0,
  size: RAM_SIZE,
  userAddr: USER_BASE,
  mmapOffset: 0,
};

/** One message as sent: header fields, payload bytes, fds (indices into the junk pool or RAM). */
interface FuzzMessage {
  readonly request: number;
  readonly flags: number;
  readonly payload: Uint8Array;
  /** Header size field minus the payload length actually sent (0: honest framing). */
  readonly sizeSkew: number;
  /** Indices into the fd pool; "ram" is the guest RAM memfd, "kick"/"call" the run's eventfds. */
  readonly fds: readonly (number | "ram" | "kick" | "call")[];
}

const knownRequests = Object.values(Request);

const u64 = fc.oneof(
  fc.constantFrom(0n, 1n, 0xffffn, 0xffff_ffffn, 2n ** 53n, 2n ** 64n - 1n),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
);
const smallIndex = fc.oneof(
  fc.integer({ min: 0, max: 3 }),
  fc.integer({ min: 0, max: 0xffff_ffff }),
);
const u32 = fc.oneof(
  fc.constantFrom(0, 1, 3, 4, 8, 0x8000, 0xffff, 0x8000_8000, 0xffff_ffff),
  fc.integer({ min: 0, max: 0xffff_ffff }),
);
const region = fc.record({
  guestPhysAddr: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 2 ** 40 })),
  size: fc.oneof(
    fc.constantFrom(0, 4096, RAM_SIZE, RAM_SIZE + 4096),
    fc.integer({ min: 0, max: 2 ** 40 }),
  ),
  userAddr: fc.oneof(fc.constant(USER_BASE), fc.integer({ min: 0, max: 2 ** 52 })),
  mmapOffset: fc.oneof(fc.constantFrom(0, 4096, RAM_SIZE), fc.integer({ min: 0, max: 2 ** 40 })),
});

/** A payload shaped like the request's own layout, with random field values. */
function typedPayload(request: number): fc.Arbitrary<Uint8Array> {
  switch (request) {
    case Request.SET_FEATURES:
    case Request.SET_PROTOCOL_FEATURES:
    case Request.SET_STATUS:
    case Request.SET_VRING_KICK:
    case Request.SET_VRING_CALL:
    case Request.SET_VRING_ERR:
    case Request.SET_LOG_BASE:
      return u64.map(encodeU64);
    case Request.SET_VRING_NUM:
    case Request.SET_VRING_BASE:
    case Request.GET_VRING_BASE:
    case Request.SET_VRING_ENABLE:
      return fc.record({ index: smallIndex, num: u32 }).map(encodeVringState);
    case Request.SET_VRING_ADDR:
      return fc
        .record({
          index: smallIndex,
          flags: u32,
          descUser: fc.oneof(fc.constant(USER_BASE), fc.integer({ min: 0, max: 2 ** 53 - 1 })),
          usedUser: fc.oneof(
            fc.constant(USER_BASE + 0x2000),
            fc.integer({ min: 0, max: 2 ** 53 - 1 }),
          ),
          availUser: fc.oneof(
            fc.constant(USER_BASE + 0x1000),
            fc.integer({ min: 0, max: 2 ** 53 - 1 }),
          ),
          log: u64,
        })
        .map(encodeVringAddr);
    case Request.SET_MEM_TABLE:
      return fc
        .record({ regions: fc.array(region, { maxLength: 9 }), padded: fc.boolean() })
        .map(({ regions, padded }) => encodeMemTable(regions, padded && regions.length <= 8));
    case Request.ADD_MEM_REG:
    case Request.REM_MEM_REG:
      return region.map(encodeMemRegion);
    case Request.GET_CONFIG:
    case Request.SET_CONFIG:
      return fc
        .record({ offset: u32, flags: u32, payload: fc.uint8Array({ maxLength: 300 }) })
        .map(encodeConfig);
    default:
      return fc.uint8Array({ maxLength: 64 });
  }
}

/** Cuts, extends or flips bits of a payload. */
function mutated(payload: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(payload, fc.integer({ min: -16, max: 16 }), fc.nat(), fc.integer({ min: 0, max: 7 }))
    .map(([bytes, grow, at, bit]) => {
      const out = new Uint8Array(Math.max(0, bytes.length + grow));
      out.set(bytes.subarray(0, out.length));
      if (out.length > 0) out[at % out.length]! ^= 1 << bit;
      return out;
    });
}

const fdRef = fc.oneof(
  { weight: 4, arbitrary: fc.nat({ max: 7 }) },
  { weight: 1, arbitrary: fc.constantFrom<"ram" | "kick" | "call">("ram", "kick", "call") },
);

/** The fd count a request really takes (so that most messages get past the codec and go deeper). */
function expectedFdCount(request: number, payload: Uint8Array): number {
  switch (request) {
    case Request.SET_VRING_KICK:
    case Request.SET_VRING_CALL:
    case Request.SET_VRING_ERR:
    case Request.ADD_MEM_REG:
    case Request.SET_BACKEND_REQ_FD:
      return 1;
    case Request.SET_MEM_TABLE:
      return payload.length >= 4
        ? Math.min(12, new DataView(payload.buffer).getUint32(0, true))
        : 0;
    default:
      return 0;
  }
}

const fuzzMessage: fc.Arbitrary<FuzzMessage> = fc
  .oneof(
    { weight: 6, arbitrary: fc.constantFrom(...knownRequests) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff_ffff }) },
  )
  .chain((request) =>
    fc
      .oneof(
        { weight: 6, arbitrary: typedPayload(request) },
        { weight: 2, arbitrary: mutated(typedPayload(request)) },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }) },
      )
      .chain((payload) =>
        fc.record({
          request: fc.constant(request),
          flags: fc.oneof(
            {
              weight: 8,
              arbitrary: fc.constantFrom(
                HeaderFlag.VERSION,
                HeaderFlag.VERSION | HeaderFlag.NEED_REPLY,
              ),
            },
            { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff_ffff }) },
          ),
          payload: fc.constant(payload),
          sizeSkew: fc.oneof(
            { weight: 30, arbitrary: fc.constant(0) },
            { weight: 1, arbitrary: fc.integer({ min: -8, max: 8 }) },
            { weight: 1, arbitrary: fc.constantFrom(4097, 0x7fff_ffff) },
          ),
          fds: fc.oneof(
            {
              weight: 8,
              arbitrary: fc.array(fdRef, {
                minLength: expectedFdCount(request, payload),
                maxLength: expectedFdCount(request, payload),
              }),
            },
            { weight: 2, arbitrary: fc.array(fdRef, { maxLength: 2 }) },
            { weight: 1, arbitrary: fc.array(fdRef, { minLength: 3, maxLength: 12 }) },
          ),
        }),
      ),
  );

interface FuzzSession {
  /** Start the ring for real first (RAM + eventfds), so later messages and kicks hit a live queue. */
  readonly startFirst: boolean;
  /** Bytes written over the first 64 KiB of guest RAM (where the ring lives) before kicking. */
  readonly ramNoise: Uint8Array;
  /** avail.idx written over the noise (small: chains to pop; large: a broken ring). */
  readonly availIdx: number;
  readonly ringSize: number;
  readonly messages: readonly FuzzMessage[];
  /** Kick after message i when kickAfter[i]. */
  readonly kickAfter: readonly boolean[];
  /** After the messages, stop reading replies and send GET_FEATURES until the socket stays full. */
  readonly stopsReading: boolean;
  /** End by sending only part of a message, then hang up. */
  readonly halfMessageAtEnd: boolean;
  readonly socket: number;
}

const fuzzSession: fc.Arbitrary<FuzzSession> = fc.record({
  startFirst: fc.boolean(),
  ramNoise: fc.uint8Array({ minLength: 0, maxLength: 0x3000 }),
  availIdx: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 0xffff })),
  ringSize: fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(1, 2, 4, 8, 16, 1024) },
    { weight: 1, arbitrary: fc.constantFrom(0, 3, 2048, 0xffff_ffff) },
  ),
  messages: fc.array(fuzzMessage, { minLength: 1, maxLength: 12 }),
  kickAfter: fc.array(fc.boolean(), { maxLength: 24 }),
  stopsReading: fc.boolean(),
  halfMessageAtEnd: fc.boolean(),
  socket: fc.integer({ min: 0, max: 1 }),
});

/** What became of a front-end that stopped reading and kept sending. */
type FloodOutcome = "stays full" | "hung up" | "still read";

/** A raw front-end: sends whatever it is told, reads and drops the replies, notices a hang-up. */
class RawFrontend {
  readonly stream: UnixStream;
  readonly #channel: MessageChannel;
  #replies = 0;
  #closed = false;
  readonly #waiters: (() => void)[] = [];
  /** Set once the front-end stops reading: settles the reply that paused the channel, at close. */
  #stopped: (() => void) | null = null;

  constructor(path: string) {
    this.stream = UnixStream.connect(path);
    this.#channel = new MessageChannel(this.stream, {
      onMessage: () => {
        this.#replies++;
        this.#wake();
        // A pending handler pauses the channel: nothing more is read until close.
        if (this.#stopped !== null)
          return new Promise<void>((resolve) => (this.#stopped = resolve));
      },
      onClose: () => {
        this.#closed = true;
        this.#wake();
      },
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Sends header + payload with the fds; false when the daemon already hung up. */
  send(message: FuzzMessage, fds: readonly number[]): boolean {
    if (this.#closed) return false;
    const size = Math.max(0, Math.min(0xffff_ffff, message.payload.length + message.sizeSkew));
    const header = encodeHeader({
      request: message.request >>> 0,
      flags: message.flags >>> 0,
      size,
    });
    const bytes = new Uint8Array(header.length + message.payload.length);
    bytes.set(header);
    bytes.set(message.payload, header.length);
    return this.#sendBytes(bytes, fds);
  }

  /** The first `count` bytes of a message whose header promises more. */
  sendHalf(request: number, promised: number, count: number): boolean {
    const header = encodeHeader({ request, flags: HeaderFlag.VERSION, size: promised });
    const bytes = new Uint8Array(header.length + promised);
    bytes.set(header);
    return this.#sendBytes(bytes.subarray(0, Math.min(bytes.length, count)), []);
  }

  /**
   * A barrier: GET_FEATURES, then wait for its reply or the hang-up. Everything sent before it was
   * handled by then (the daemon handles one message at a time, in order).
   */
  async barrier(): Promise<void> {
    const before = this.#replies;
    if (
      !this.send(
        {
          request: Request.GET_FEATURES,
          flags: 1,
          payload: new Uint8Array(0),
          sizeSkew: 0,
          fds: [],
        },
        [],
      )
    ) {
      return;
    }
    await withTimeout(
      new Promise<void>((resolve) => {
        const check = () => {
          if (this.#closed || this.#replies > before) resolve();
          else this.#waiters.push(check);
        };
        check();
      }),
      10_000,
      "the daemon answers GET_FEATURES or hangs up",
    );
  }

  /**
   * Stops reading replies and sends GET_FEATURES until the socket is full, then checks 20 ms later
   * that it still is: a daemon that stopped reading this peer leaves it full ("stays full"); one that
   * keeps reading takes more ("still read", also after `maxMessages` sent).
   */
  async floodWithoutReading(maxMessages: number): Promise<FloodOutcome> {
    this.#stopped = () => {};
    const request = encodeHeader({ request: Request.GET_FEATURES, flags: 1, size: 0 });
    let sent = 0;
    let full = false;
    while (sent < maxMessages) {
      try {
        // 12 bytes go whole or not at all: the daemon always sees whole headers.
        this.stream.send(request);
        sent++;
        full = false;
      } catch (error) {
        if ((error as { code?: string }).code !== "EAGAIN") return "hung up";
        if (full) return "stays full";
        full = true;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
    return "still read";
  }

  close(): void {
    this.#channel.close("fuzz session over");
    this.#stopped?.();
  }

  #sendBytes(bytes: Uint8Array, fds: readonly number[]): boolean {
    if (this.#closed) return false;
    try {
      this.stream.send(bytes, fds);
      return true;
    } catch {
      // The daemon hung up (EPIPE/ECONNRESET) or the stream broke: the session is over.
      return false;
    }
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }
}

/** The real start sequence (no protocol features): memory, one ring at the start of RAM, kick. */
function startMessages(ringSize: number): FuzzMessage[] {
  const message = (
    request: number,
    payload: Uint8Array,
    fds: FuzzMessage["fds"] = [],
  ): FuzzMessage => ({
    request,
    flags: HeaderFlag.VERSION,
    payload,
    sizeSkew: 0,
    fds,
  });
  const noProtocolFeatures = QEMU_FEATURES & ~(1n << 30n);
  return [
    message(Request.SET_OWNER, new Uint8Array(0)),
    message(Request.SET_FEATURES, encodeU64(noProtocolFeatures)),
    message(Request.SET_MEM_TABLE, encodeMemTable([RAM_REGION]), ["ram"]),
    message(Request.SET_VRING_CALL, encodeU64(0), ["call"]),
    message(Request.SET_VRING_NUM, encodeVringState({ index: 0, num: ringSize })),
    message(Request.SET_VRING_BASE, encodeVringState({ index: 0, num: 0 })),
    message(
      Request.SET_VRING_ADDR,
      encodeVringAddr({
        index: 0,
        flags: 0,
        descUser: USER_BASE,
        availUser: USER_BASE + 16 * ringSize,
        usedUser: USER_BASE + 0x8000,
        log: 0n,
      }),
    ),
    message(Request.SET_VRING_KICK, encodeU64(0), ["kick"]),
  ];
}

describe("fuzzing the vhost-user message stream against the real daemon", () => {
  let daemon: ThreeSocketDaemon;
  let junk: JunkFds;

  before(async () => {
    daemon = await startThreeSocketDaemon();
    junk = new JunkFds();
  });

  after(async () => {
    junk?.close();
    await daemon?.stop();
  });

  it("survives random, mutated and truncated messages with junk fds; serves afterwards; no fd leak", async () => {
    // Warm-up: the first connections load code and allocate pools that stay.
    for (let i = 0; i < 3; i++) await assertServes(daemon.paths[2]!);
    const fdsBefore = (await settledFootprint(daemon.daemon, daemon.paths)).fds;

    await fc.assert(
      fc.asyncProperty(fuzzSession, async (session) => {
        const ram = new GuestRam([{ guestPhysAddr: 0, size: RAM_SIZE }]);
        const kick = EventFd.create();
        const call = EventFd.create();
        const frontend = new RawFrontend(daemon.paths[session.socket]!);
        try {
          ram.memory.write(0, session.ramNoise);
          const ringSize = session.ringSize > 0 && session.ringSize <= 1024 ? session.ringSize : 1;
          ram.memory.writeU16(16 * ringSize + 2, session.availIdx);
          const fdOf = (ref: FuzzMessage["fds"][number]): number => {
            if (ref === "ram") return ram.regions[0]!.fd;
            if (ref === "kick") return kick.fd;
            if (ref === "call") return call.fd;
            return junk.fds[ref % junk.fds.length]!;
          };
          const sequence = session.startFirst
            ? [...startMessages(session.ringSize), ...session.messages]
            : session.messages;
          for (const [i, message] of sequence.entries()) {
            if (!frontend.send(message, message.fds.map(fdOf))) break;
            if (session.kickAfter[i]) kick.write(1);
          }
          // Skewed sizes desynchronise framing on purpose; only honest streams can use a barrier.
          const honest = sequence.every((m) => m.sizeSkew === 0);
          if (honest) await frontend.barrier();
          if (honest && session.stopsReading) {
            const outcome = await frontend.floodWithoutReading(20_000);
            assert.notEqual(
              outcome,
              "still read",
              "the daemon stops reading a peer that does not read",
            );
            // Its replies wait for room: the other sockets are served meanwhile.
            await assertServes(daemon.paths[2]!);
          }
          if (session.halfMessageAtEnd) frontend.sendHalf(Request.SET_VRING_ADDR, 40, 20);
        } finally {
          frontend.close();
          kick.close();
          call.close();
          ram.close();
        }
        assert.equal(daemon.daemon.hasExited, false, "the daemon is alive");
        await assertServes(daemon.paths[2]!);
      }),
      fuzzParameters(1000),
    );

    // Every connection is gone: a new one on each fuzzed socket is served, and no fd stayed behind.
    await assertServes(daemon.paths[0]!);
    await assertServes(daemon.paths[1]!);
    const fdsAfter = (await settledFootprint(daemon.daemon, daemon.paths)).fds;
    assert.equal(fdsAfter, fdsBefore, "the daemon holds as many fds as before the fuzzing");
  });
});
