import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { createArrayGuestMemory } from "../virtio/guest-memory.js";
import type { Descriptor, DescriptorChain } from "../virtio/queue.js";
import { RequestFlag } from "./protocol.js";
import { groupRequests, type I2cRequest, parseRequest, REQUEST_ERROR } from "./request.js";

const memory = createArrayGuestMemory([{ guestPhysAddr: 0, size: 0x10000 }]);
const HDR = 0x100;

function writeHeader(addr7: number, flags: number, rawAddr = addr7 << 1): void {
  const bytes = new Uint8Array(8);
  const dv = new DataView(bytes.buffer);
  dv.setUint16(0, rawAddr, true);
  dv.setUint32(4, flags, true);
  memory.write(HDR, bytes);
}

const ro = (addr: number, len: number): Descriptor => ({ addr, len, writable: false });
const rw = (addr: number, len: number): Descriptor => ({ addr, len, writable: true });
const chain = (descriptors: Descriptor[], error: string | null = null): DescriptorChain => ({
  head: 0,
  descriptors,
  error,
});

function expectError(request: I2cRequest, kind: string): void {
  assert.ok(request.error?.startsWith(`${kind}: `), `expected "${kind}", got ${request.error}`);
}

describe("parseRequest", () => {
  it("parses a write: header + readable buffer + status", () => {
    writeHeader(0x50, RequestFlag.FAIL_NEXT);
    const req = parseRequest(chain([ro(HDR, 8), ro(0x200, 3), rw(0x300, 1)]), memory);
    assert.equal(req.error, null);
    assert.deepEqual(
      {
        addr: req.addr,
        read: req.read,
        failNext: req.failNext,
        length: req.length,
        status: req.status,
      },
      { addr: 0x50, read: false, failNext: true, length: 3, status: 0x300 },
    );
    assert.deepEqual(req.buffer, [{ addr: 0x200, len: 3 }]);
  });

  it("parses a read: header + writable buffer + status", () => {
    writeHeader(0x7f, RequestFlag.M_RD);
    const req = parseRequest(chain([ro(HDR, 8), rw(0x200, 4), rw(0x300, 1)]), memory);
    assert.equal(req.error, null);
    assert.equal(req.read, true);
    assert.equal(req.failNext, false);
    assert.deepEqual(req.buffer, [{ addr: 0x200, len: 4 }]);
    assert.equal(req.status, 0x300);
  });

  it("parses zero-length requests (two descriptors) in both directions", () => {
    for (const flags of [0, RequestFlag.M_RD]) {
      writeHeader(0x20, flags);
      const req = parseRequest(chain([ro(HDR, 8), rw(0x300, 1)]), memory);
      assert.equal(req.error, null);
      assert.equal(req.length, 0);
      assert.deepEqual(req.buffer, []);
    }
  });

  it("reads a header split over descriptors, and buffers sharing a descriptor with header or status", () => {
    writeHeader(0x33, 0);
    memory.write(HDR + 8, Uint8Array.of(0xaa, 0xbb));
    const split = parseRequest(chain([ro(HDR, 3), ro(HDR + 3, 7), rw(0x300, 1)]), memory);
    assert.equal(split.error, null);
    assert.equal(split.addr, 0x33);
    assert.deepEqual(split.buffer, [{ addr: HDR + 8, len: 2 }]);

    writeHeader(0x33, RequestFlag.M_RD);
    const shared = parseRequest(chain([ro(HDR, 8), rw(0x200, 5)]), memory);
    assert.equal(shared.error, null);
    assert.deepEqual(shared.buffer, [{ addr: 0x200, len: 4 }]);
    assert.equal(shared.status, 0x204);
  });

  it("marks every malformed shape bad, with the status located when a writable last byte exists", () => {
    const cases: [string, () => I2cRequest, number | null][] = [
      [
        REQUEST_ERROR.malformedChain,
        () => parseRequest(chain([ro(HDR, 8), rw(0x300, 1)], "loop: x"), memory),
        0x300,
      ],
      [
        REQUEST_ERROR.shortHeader,
        () => parseRequest(chain([ro(HDR, 7), rw(0x300, 1)]), memory),
        0x300,
      ],
      [REQUEST_ERROR.noStatus, () => parseRequest(chain([ro(HDR, 8), ro(0x200, 2)]), memory), null],
      [
        REQUEST_ERROR.headerUnreadable,
        () => parseRequest(chain([ro(0xfffc, 8), rw(0x300, 1)]), memory),
        0x300,
      ],
      [
        REQUEST_ERROR.reservedFlags,
        () => {
          writeHeader(0x10, 4);
          return parseRequest(chain([ro(HDR, 8), rw(0x300, 1)]), memory);
        },
        0x300,
      ],
      [
        REQUEST_ERROR.badAddress,
        () => {
          writeHeader(0, 0, 0xa1);
          return parseRequest(chain([ro(HDR, 8), rw(0x300, 1)]), memory);
        },
        0x300,
      ],
      [
        REQUEST_ERROR.badAddress,
        () => {
          writeHeader(0, 0, 0xf0 | (1 << 8));
          return parseRequest(chain([ro(HDR, 8), rw(0x300, 1)]), memory);
        },
        0x300,
      ],
      [
        REQUEST_ERROR.readWithData,
        () => {
          writeHeader(0x10, RequestFlag.M_RD);
          return parseRequest(chain([ro(HDR, 8), ro(0x200, 1), rw(0x300, 1)]), memory);
        },
        0x300,
      ],
      [
        REQUEST_ERROR.writeWithWritableBuffer,
        () => {
          writeHeader(0x10, 0);
          return parseRequest(chain([ro(HDR, 8), rw(0x200, 2), rw(0x300, 1)]), memory);
        },
        0x300,
      ],
      [
        REQUEST_ERROR.tooLong,
        () => {
          writeHeader(0x10, 0);
          return parseRequest(chain([ro(HDR, 8), ro(0, 0x10000), rw(0x300, 1)]), memory);
        },
        0x300,
      ],
    ];
    for (const [kind, make, status] of cases) {
      const req = make();
      expectError(req, kind);
      assert.equal(req.status, status, kind);
    }
  });

  it("keeps FAIL_NEXT of a readable but invalid header, and clears it when the header is unreadable", () => {
    writeHeader(0x10, RequestFlag.FAIL_NEXT | 8);
    assert.equal(parseRequest(chain([ro(HDR, 8), rw(0x300, 1)]), memory).failNext, true);
    assert.equal(parseRequest(chain([ro(HDR, 8), rw(0x300, 1)], "x: y"), memory).failNext, false);
  });

  it("never throws, whatever the descriptors", () => {
    const desc = fc.record({
      addr: fc.nat(0x20000),
      len: fc.nat(0x12000),
      writable: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(desc, { maxLength: 5 }), fc.nat(0xffffffff), (descriptors, flags) => {
        writeHeader(0x10, flags);
        const req = parseRequest(chain(descriptors), memory);
        if (req.error === null) assert.ok(req.status !== null);
      }),
    );
  });
});

describe("groupRequests", () => {
  const req = (failNext: boolean, id: number): I2cRequest => ({
    chain: chain([], null),
    addr: id,
    read: false,
    failNext,
    buffer: [],
    length: 0,
    status: null,
    error: null,
  });

  it("closes a transfer at each request without FAIL_NEXT and keeps the unfinished tail apart", () => {
    const requests = [req(true, 1), req(false, 2), req(false, 3), req(true, 4), req(true, 5)];
    const { transfers, partial } = groupRequests(requests);
    assert.deepEqual(
      transfers.map((t) => t.map((r) => r.addr)),
      [[1, 2], [3]],
    );
    assert.deepEqual(
      partial.map((r) => r.addr),
      [4, 5],
    );
  });

  it("returns nothing for nothing", () => {
    assert.deepEqual(groupRequests([]), { transfers: [], partial: [] });
  });
});
