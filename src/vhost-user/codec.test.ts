import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  CodecError,
  decodeHeader,
  decodeReply,
  decodeRequest,
  encodeConfig,
  encodeHeader,
  encodeInflight,
  encodeLog,
  encodeMemRegion,
  encodeMemTable,
  encodeMessage,
  encodePayload,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  hasReplyPayload,
  type MemRegion,
  type Payload,
  payloadAs,
  REPLY_FLAGS,
  requestFlags,
  toSafeNumber,
} from "./codec.js";
import { HEADER_SIZE, Request, requestName } from "./protocol.js";

const header = (request: number, size: number, flags = 1) => ({ request, flags, size });

function decode(request: number, payload: Uint8Array, fds = 0): Payload {
  return decodeRequest(header(request, payload.byteLength), payload, fds);
}

function assertCodecError(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => err instanceof CodecError && err.code === code);
}

const region: MemRegion = {
  guestPhysAddr: 0,
  size: 0x10000000,
  userAddr: 0x7f0000000000,
  mmapOffset: 0,
};

/** A payload of the right layout for every request that has a fixed one. */
const VALID: readonly [number, Uint8Array, number][] = [
  [Request.GET_FEATURES, new Uint8Array(0), 0],
  [Request.SET_FEATURES, encodeU64(0x170000001n), 0],
  [Request.SET_OWNER, new Uint8Array(0), 0],
  [Request.RESET_OWNER, new Uint8Array(0), 0],
  [Request.SET_MEM_TABLE, encodeMemTable([region]), 1],
  [Request.SET_LOG_BASE, encodeLog({ mmapSize: 4096, mmapOffset: 0 }), 1],
  [Request.SET_LOG_FD, new Uint8Array(0), 1],
  [Request.SET_VRING_NUM, encodeVringState({ index: 0, num: 4 }), 0],
  [
    Request.SET_VRING_ADDR,
    encodeVringAddr({ index: 0, flags: 0, descUser: 1, usedUser: 2, availUser: 3, log: 0n }),
    0,
  ],
  [Request.SET_VRING_BASE, encodeVringState({ index: 0, num: 0 }), 0],
  [Request.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }), 0],
  [Request.SET_VRING_KICK, encodeVringFd({ index: 0, noFd: false }), 1],
  [Request.SET_VRING_CALL, encodeVringFd({ index: 0, noFd: false }), 1],
  [Request.SET_VRING_ERR, encodeVringFd({ index: 0, noFd: false }), 1],
  [Request.GET_PROTOCOL_FEATURES, new Uint8Array(0), 0],
  [Request.SET_PROTOCOL_FEATURES, encodeU64(0x18009n), 0],
  [Request.GET_QUEUE_NUM, new Uint8Array(0), 0],
  [Request.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 }), 0],
  [Request.SET_BACKEND_REQ_FD, new Uint8Array(0), 1],
  [Request.SET_VRING_ENDIAN, encodeVringState({ index: 0, num: 0 }), 0],
  [Request.GET_CONFIG, encodeConfig({ offset: 0, flags: 0, payload: new Uint8Array(4) }), 0],
  [Request.SET_CONFIG, encodeConfig({ offset: 0, flags: 0, payload: new Uint8Array(4) }), 0],
  [
    Request.GET_INFLIGHT_FD,
    encodeInflight({ mmapSize: 0, mmapOffset: 0, numQueues: 1, queueSize: 4 }),
    0,
  ],
  [
    Request.SET_INFLIGHT_FD,
    encodeInflight({ mmapSize: 4096, mmapOffset: 0, numQueues: 1, queueSize: 4 }),
    1,
  ],
  [Request.RESET_DEVICE, new Uint8Array(0), 0],
  [Request.GET_MAX_MEM_SLOTS, new Uint8Array(0), 0],
  [Request.ADD_MEM_REG, encodeMemRegion(region), 1],
  [Request.REM_MEM_REG, encodeMemRegion(region), 0],
  [Request.SET_STATUS, encodeU64(8), 0],
  [Request.GET_STATUS, new Uint8Array(0), 0],
];

describe("codec header", () => {
  it("round trips request, flags and size", () => {
    fc.assert(
      fc.property(
        fc.nat(0xffffffff),
        fc.nat(0x3fffffff),
        fc.nat(0xffffffff),
        (request, high, size) => {
          const flags = ((high << 2) | 1) >>> 0;
          assert.deepEqual(decodeHeader(encodeHeader({ request, flags, size })), {
            request,
            flags,
            size,
          });
        },
      ),
    );
  });

  it("rejects a version other than 1", () => {
    for (const flags of [0, 2, 3, 0x4 | 2]) {
      assertCodecError(
        () => decodeHeader(encodeHeader({ request: 1, flags, size: 0 })),
        "BAD_VERSION",
      );
    }
  });

  it("encodes a message as header then payload", () => {
    const msg = encodeMessage(Request.SET_FEATURES, requestFlags(true), encodeU64(5n));
    assert.equal(msg.byteLength, HEADER_SIZE + 8);
    assert.deepEqual(decodeHeader(msg), { request: 2, flags: 0x9, size: 8 });
    assert.equal(REPLY_FLAGS, 0x5);
  });
});

describe("codec decodeRequest sizes", () => {
  for (const [request, payload, fds] of VALID) {
    it(`${requestName(request)} accepts its exact size and rejects one byte more or less`, () => {
      const decoded = decode(request, payload, fds);
      assert.deepEqual(encodePayload(decoded), payload);
      const longer = new Uint8Array(payload.byteLength + 1);
      longer.set(payload);
      assertCodecError(() => decode(request, longer, fds), "BAD_SIZE");
      if (payload.byteLength > 0) {
        assertCodecError(
          () => decode(request, payload.subarray(0, payload.byteLength - 1), fds),
          "BAD_SIZE",
        );
      }
    });
  }

  it("accepts the memory table padded to region[8] as well as the exact size", () => {
    const regions = [region, { ...region, guestPhysAddr: 0x100000000, mmapOffset: 0x10000000 }];
    for (const padded of [false, true]) {
      const payload = encodeMemTable(regions, padded);
      assert.equal(payload.byteLength, padded ? 8 + 32 * 8 : 8 + 32 * 2);
      assert.deepEqual(payloadAs(decode(Request.SET_MEM_TABLE, payload, 2), "memTable"), regions);
    }
    // Neither exact nor full: three regions' worth of bytes for two regions.
    const odd = new Uint8Array(8 + 32 * 3);
    odd.set(encodeMemTable(regions));
    assertCodecError(() => decode(Request.SET_MEM_TABLE, odd, 2), "BAD_SIZE");
  });

  it("rejects memory tables with 0 or more than 8 regions", () => {
    const empty = encodeMemTable([]);
    assertCodecError(() => decode(Request.SET_MEM_TABLE, empty, 0), "BAD_VALUE");
    const nine = new Uint8Array(8 + 32 * 9);
    nine.set(encodeMemTable([region]));
    new DataView(nine.buffer).setUint32(0, 9, true);
    assertCodecError(() => decode(Request.SET_MEM_TABLE, nine, 9), "BAD_VALUE");
  });

  it("rejects regions of size 0 and regions whose end does not fit in 53 bits", () => {
    for (const bad of [
      { ...region, size: 0 },
      { ...region, guestPhysAddr: Number.MAX_SAFE_INTEGER - 10, size: 4096 },
    ]) {
      assertCodecError(() => decode(Request.ADD_MEM_REG, encodeMemRegion(bad), 1), "BAD_VALUE");
    }
    const wrap = encodeMemRegion(region);
    new DataView(wrap.buffer).setBigUint64(8, 0xffff_ffff_ffff_f000n, true);
    assertCodecError(() => decode(Request.ADD_MEM_REG, wrap, 1), "BAD_VALUE");
  });

  it("rejects vring addresses of 2^53 and above", () => {
    const payload = encodeVringAddr({
      index: 0,
      flags: 0,
      descUser: 0,
      usedUser: 0,
      availUser: 0,
      log: 0n,
    });
    new DataView(payload.buffer).setBigUint64(8, 1n << 53n, true);
    assertCodecError(() => decode(Request.SET_VRING_ADDR, payload), "BAD_VALUE");
  });

  it("rejects config sizes above 256 and a size field that disagrees with the payload", () => {
    const big = encodeConfig({ offset: 0, flags: 0, payload: new Uint8Array(257) });
    assertCodecError(() => decode(Request.GET_CONFIG, big), "BAD_VALUE");
    const lying = encodeConfig({ offset: 0, flags: 0, payload: new Uint8Array(4) });
    new DataView(lying.buffer).setUint32(4, 8, true);
    assertCodecError(() => decode(Request.GET_CONFIG, lying), "BAD_SIZE");
  });

  it("keeps unknown requests raw whatever their size", () => {
    const decoded = decode(99, new Uint8Array([1, 2, 3]), 2);
    assert.deepEqual(decoded, { kind: "raw", value: new Uint8Array([1, 2, 3]) });
  });
});

describe("codec decodeRequest fd counts", () => {
  it("requires exactly one fd per memory table region", () => {
    const payload = encodeMemTable([region, { ...region, guestPhysAddr: 0x20000000 }]);
    assert.equal(payloadAs(decode(Request.SET_MEM_TABLE, payload, 2), "memTable").length, 2);
    for (const fds of [0, 1, 3])
      assertCodecError(() => decode(Request.SET_MEM_TABLE, payload, fds), "BAD_FDS");
  });

  it("requires one fd on KICK/CALL/ERR unless bit 8 says none", () => {
    for (const request of [Request.SET_VRING_KICK, Request.SET_VRING_CALL, Request.SET_VRING_ERR]) {
      const withFd = encodeVringFd({ index: 3, noFd: false });
      assert.deepEqual(payloadAs(decode(request, withFd, 1), "vringFd"), { index: 3, noFd: false });
      assertCodecError(() => decode(request, withFd, 0), "BAD_FDS");
      assertCodecError(() => decode(request, withFd, 2), "BAD_FDS");
      const noFd = encodeVringFd({ index: 3, noFd: true });
      assert.deepEqual(payloadAs(decode(request, noFd, 0), "vringFd"), { index: 3, noFd: true });
      assertCodecError(() => decode(request, noFd, 1), "BAD_FDS");
    }
  });

  it("rejects unknown bits in the KICK/CALL/ERR u64", () => {
    assertCodecError(() => decode(Request.SET_VRING_KICK, encodeU64(0x200n), 1), "BAD_VALUE");
  });

  it("takes fds only on the requests that may carry them", () => {
    for (const [request, payload, fds] of VALID) {
      if (request === Request.REM_MEM_REG) {
        decode(request, payload, 1); // optional fd from older front-ends
        assertCodecError(() => decode(request, payload, 2), "BAD_FDS");
        continue;
      }
      if (request === Request.SET_VRING_KICK || request === Request.SET_VRING_CALL) continue;
      if (request === Request.SET_VRING_ERR || request === Request.SET_MEM_TABLE) continue;
      assertCodecError(() => decode(request, payload, fds + 1), "BAD_FDS");
      if (fds > 0) assertCodecError(() => decode(request, payload, fds - 1), "BAD_FDS");
    }
  });
});

describe("codec replies", () => {
  it("decodes GET_* payloads and u64 acks for everything else", () => {
    assert.equal(payloadAs(decodeReply(Request.GET_FEATURES, encodeU64(7n)), "u64"), 7n);
    assert.deepEqual(
      payloadAs(
        decodeReply(Request.GET_VRING_BASE, encodeVringState({ index: 1, num: 9 })),
        "vringState",
      ),
      {
        index: 1,
        num: 9,
      },
    );
    assert.equal(payloadAs(decodeReply(Request.SET_MEM_TABLE, encodeU64(0n)), "u64"), 0n);
    assertCodecError(
      () => decodeReply(Request.GET_VRING_BASE, encodeU64(0n).subarray(0, 4)),
      "BAD_SIZE",
    );
    assert.equal(hasReplyPayload(Request.GET_STATUS), true);
    assert.equal(hasReplyPayload(Request.SET_STATUS), false);
  });
});

describe("codec properties", () => {
  const safe = fc.integer({ min: 0, max: 2 ** 40 });
  const regionArb = fc.record({
    guestPhysAddr: safe,
    size: fc.integer({ min: 1, max: 2 ** 40 }),
    userAddr: safe,
    mmapOffset: safe,
  });

  it("round trips memory tables of 1 to 8 regions", () => {
    fc.assert(
      fc.property(
        fc.array(regionArb, { minLength: 1, maxLength: 8 }),
        fc.boolean(),
        (regions, padded) => {
          const payload = encodeMemTable(regions, padded);
          assert.deepEqual(
            payloadAs(decode(Request.SET_MEM_TABLE, payload, regions.length), "memTable"),
            regions.map((r) => ({ ...r })),
          );
        },
      ),
    );
  });

  it("round trips vring addresses", () => {
    fc.assert(
      fc.property(
        fc.nat(0xffff),
        fc.nat(1),
        safe,
        safe,
        safe,
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        (index, flags, d, u, a, log) => {
          const addr = { index, flags, descUser: d, usedUser: u, availUser: a, log };
          assert.deepEqual(
            payloadAs(decode(Request.SET_VRING_ADDR, encodeVringAddr(addr)), "vringAddr"),
            addr,
          );
        },
      ),
    );
  });

  it("never throws anything but CodecError on arbitrary input", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 50 }),
        fc.uint8Array({ maxLength: 300 }),
        fc.nat(9),
        (request, bytes, fds) => {
          try {
            decode(request, bytes, fds);
          } catch (err) {
            assert.ok(err instanceof CodecError, String(err));
          }
        },
      ),
    );
  });

  it("converts 64-bit values to numbers only below 2^53", () => {
    assert.equal(toSafeNumber(2n ** 53n - 1n, "x"), Number.MAX_SAFE_INTEGER);
    assertCodecError(() => toSafeNumber(2n ** 53n, "x"), "BAD_VALUE");
  });
});
