// Tests for Mapping over real memfds: shared views, the fd, detach on unmap, offsets above 4 GiB.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { closeSync, readSync, writeSync } from "node:fs";
import { describe, it } from "node:test";
import fc from "fast-check";
import { SysArgumentError, SysError } from "./errors.js";
import { Mapping } from "./mapping.js";
import { createMemfd } from "./memfd.js";

const MiB = 1 << 20;
const GiB = 1024 * MiB;

function withMemfd<T>(size: number, body: (fd: number) => T): T {
  const fd = createMemfd(size);
  try {
    return body(fd);
  } finally {
    closeSync(fd);
  }
}

describe("Mapping", () => {
  it("refuses to map a file beyond its end, where a touch would raise SIGBUS", () => {
    withMemfd(4096, (fd) => {
      assert.throws(
        () => Mapping.map(fd, 0, 8192, true),
        (error: unknown) => error instanceof SysError && error.code === "ERANGE",
      );
      assert.throws(
        () => Mapping.map(fd, 4096, 4096, true),
        (error: unknown) => error instanceof SysError && error.code === "ERANGE",
      );
      Mapping.map(fd, 0, 4096, true).unmap();
    });
  });

  it("shares bytes between two views, a second mapping and the fd", () => {
    withMemfd(MiB, (fd) => {
      const mapping = Mapping.map(fd, 0, MiB, true);
      const other = Mapping.map(fd, 4096, 8192, true);
      try {
        const a = new Uint8Array(mapping.view(4096, 8192));
        const b = new Uint8Array(mapping.view(4096 + 100, 16));
        const c = new Uint8Array(other.view(0, 8192));
        a.set([1, 2, 3], 100);
        assert.deepEqual([...b.subarray(0, 3)], [1, 2, 3]);
        assert.deepEqual([...c.subarray(100, 103)], [1, 2, 3]);

        const fromFd = Buffer.alloc(3);
        readSync(fd, fromFd, 0, 3, 4096 + 100);
        assert.deepEqual([...fromFd], [1, 2, 3]);

        writeSync(fd, Uint8Array.of(7, 8), 0, 2, 4096 + 200);
        assert.deepEqual([...a.subarray(200, 202)], [7, 8]);
      } finally {
        mapping.close();
        other.close();
      }
    });
  });

  it("writes through a view land in the file at the same offset (any range)", () => {
    withMemfd(64 * 1024, (fd) => {
      const mapping = Mapping.map(fd, 0, 64 * 1024, true);
      try {
        fc.assert(
          fc.property(
            fc.integer({ min: 0, max: 64 * 1024 - 1 }),
            fc.uint8Array({ minLength: 1, maxLength: 512 }),
            (offset, bytes) => {
              const length = Math.min(bytes.length, 64 * 1024 - offset);
              const data = bytes.subarray(0, length);
              new Uint8Array(mapping.view(offset, length)).set(data);
              const back = Buffer.alloc(length);
              readSync(fd, back, 0, length, offset);
              assert.deepEqual(new Uint8Array(back), data);
            },
          ),
          { numRuns: 100 },
        );
      } finally {
        mapping.close();
      }
    });
  });

  it("detaches every view on unmap, so stale views have length 0", () => {
    withMemfd(MiB, (fd) => {
      const mapping = Mapping.map(fd, 0, MiB, true);
      const view = mapping.view(0, 4096);
      const bytes = new Uint8Array(mapping.view(4096, 4096));
      bytes[0] = 1;
      mapping.unmap();
      assert.equal(view.byteLength, 0);
      assert.equal(bytes.length, 0);
      assert.equal(bytes[0], undefined, "reading a stale view must not fault");
      mapping.unmap();
      mapping.close();
      assert.ok(mapping.closed);
      assert.throws(
        () => mapping.view(0, 1),
        (error: unknown) => error instanceof SysError && error.code === "EBADF",
      );
    });
  });

  it("maps a sparse 16 GiB file and sees 1 MiB above 4 GiB through a view", () => {
    const size = 16 * GiB;
    withMemfd(size, (fd) => {
      const mapping = Mapping.map(fd, 0, size, true);
      try {
        const offset = 5 * GiB + 12345;
        const view = new Uint8Array(mapping.view(offset, MiB));
        assert.equal(view.length, MiB);
        for (let i = 0; i < MiB; i += 4093) view[i] = (i * 31 + 7) & 0xff;
        view[MiB - 1] = 0xa5;

        const back = Buffer.alloc(MiB);
        assert.equal(readSync(fd, back, 0, MiB, offset), MiB);
        assert.deepEqual(new Uint8Array(back), view);
        assert.equal(back[MiB - 1], 0xa5);

        writeSync(fd, Uint8Array.of(0x5a), 0, 1, 15 * GiB);
        assert.equal(new Uint8Array(mapping.view(15 * GiB, 1))[0], 0x5a);
      } finally {
        mapping.close();
      }
    });
  });

  it("refuses views outside the mapping and maps at a kernel-refused offset with EINVAL", () => {
    withMemfd(MiB, (fd) => {
      const mapping = Mapping.map(fd, 0, 8192, true);
      try {
        assert.throws(() => mapping.view(8192, 1), SysArgumentError);
        assert.throws(() => mapping.view(-1, 1), SysArgumentError);
        assert.throws(() => mapping.view(0, 1.5), SysArgumentError);
        assert.equal(mapping.view(8192, 0).byteLength, 0);
      } finally {
        mapping.close();
      }
      assert.throws(() => Mapping.map(fd, 100, 4096, true), { code: "EINVAL", syscall: "mmap" });
      assert.throws(() => Mapping.map(fd, 0, 0, true), SysArgumentError);
    });
  });

  it("keeps memory for a view whose Mapping was collected, and unmaps once both are gone", () => {
    const mappingUrl = new URL("./mapping.js", import.meta.url).href;
    const memfdUrl = new URL("./memfd.js", import.meta.url).href;
    const script = `
      import { readFileSync } from "node:fs";
      const { Mapping } = await import(${JSON.stringify(mappingUrl)});
      const { createMemfd } = await import(${JSON.stringify(memfdUrl)});
      const fd = createMemfd(1 << 20, "gc-probe");
      const mapped = () => readFileSync("/proc/self/maps", "utf8").includes("memfd:gc-probe");
      const settle = async () => {
        for (let i = 0; i < 10; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
      };
      let view = (() => new Uint8Array(Mapping.map(fd, 0, 1 << 20, true).view(0, 1 << 20)))();
      await settle();
      view.fill(3);
      console.log("alive:" + mapped() + ":" + view.reduce((s, v) => s + v, 0));
      view = null;
      await settle();
      console.log("released:" + !mapped());
    `;
    const result = spawnSync(
      process.execPath,
      ["--expose-gc", "--input-type=module", "-e", script],
      { encoding: "utf8" },
    );
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`alive:true:${3 * MiB}`));
    assert.match(result.stdout, /released:true/);
  });
});
