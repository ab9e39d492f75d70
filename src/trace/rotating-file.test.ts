// RotatingFile: opened without following links in a trusted directory, checked before it is emptied
// or added to, 0600, capped in size and number of files, rotated by renames on the held directory
// (a link put at the name is replaced, never written through), drops counted, nothing built that
// would be dropped.
import assert from "node:assert/strict";
import {
  chmodSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { UntrustedPathError } from "../sys/trusted-dir.js";
import {
  DEFAULT_MAX_FILE_SIZE,
  DEFAULT_MAX_FILES,
  OUTPUT_FILE_MODE,
  RotatingFile,
} from "./rotating-file.js";

const root = mkdtempSync(join(tmpdir(), "vdi2c-rotating-"));
after(() => rmSync(root, { recursive: true, force: true }));

let serial = 0;
function caseDir(): string {
  const dir = join(root, `case${serial++}`);
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

const text = (value: string) => new TextEncoder().encode(value);
const HEADER = text("HDR\n");

describe("RotatingFile.open", () => {
  it("creates a new file 0600 starting with the header", () => {
    const dir = caseDir();
    const file = RotatingFile.open(join(dir, "out"), { existing: "truncate", header: HEADER });
    file.write(text("one\n"));
    file.closeSync();
    assert.equal(readFileSync(join(dir, "out"), "utf8"), "HDR\none\n");
    assert.equal(statSync(join(dir, "out")).mode & 0o777, OUTPUT_FILE_MODE);
    assert.deepEqual([DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_FILES], [64 * 1024 * 1024, 2]);
  });

  it("empties an existing file of its own (truncate) or adds to it (append), narrowed to 0600", () => {
    const dir = caseDir();
    for (const existing of ["truncate", "append"] as const) {
      const path = join(dir, existing);
      writeFileSync(path, "before\n");
      chmodSync(path, 0o644);
      const file = RotatingFile.open(path, { existing });
      file.write(text("after\n"));
      assert.equal(file.counters.fileSize, existing === "append" ? 13 : 6);
      file.closeSync();
      assert.equal(
        readFileSync(path, "utf8"),
        existing === "append" ? "before\nafter\n" : "after\n",
      );
      assert.equal(statSync(path).mode & 0o777, 0o600, "narrowed on the fd");
    }
  });

  it("refuses a link, a hard link and a directory others can write to, changing nothing", () => {
    const dir = caseDir();
    const victim = join(dir, "victim");
    writeFileSync(victim, "precious", { mode: 0o600 });
    symlinkSync(victim, join(dir, "link"));
    assert.throws(
      () => RotatingFile.open(join(dir, "link"), { existing: "truncate" }),
      (error: unknown) =>
        (error as { code?: string }).code === "ELOOP" &&
        /is a symbolic link/.test((error as Error).message),
    );
    symlinkSync(join(dir, "nowhere"), join(dir, "dangling"));
    assert.throws(() => RotatingFile.open(join(dir, "dangling"), { existing: "append" }), {
      code: "ELOOP",
    });
    assert.equal(existsSync(join(dir, "nowhere")), false, "nothing created through the link");
    linkSync(victim, join(dir, "hard"));
    assert.throws(
      () => RotatingFile.open(join(dir, "hard"), { existing: "truncate" }),
      (error: unknown) => error instanceof UntrustedPathError && error.code === "EUNSAFE_LINKS",
    );
    const open = join(dir, "open");
    mkdirSync(open);
    chmodSync(open, 0o777);
    assert.throws(
      () => RotatingFile.open(join(open, "out"), { existing: "truncate" }),
      (error: unknown) => error instanceof UntrustedPathError && error.code === "EUNSAFE_MODE",
    );
    assert.equal(readFileSync(victim, "utf8"), "precious");
    assert.equal(existsSync(join(open, "out")), false);
  });

  it("refuses limits that cannot work", () => {
    const dir = caseDir();
    assert.throws(
      () =>
        RotatingFile.open(join(dir, "a"), { existing: "truncate", header: HEADER, maxFileSize: 4 }),
      RangeError,
    );
    assert.throws(
      () => RotatingFile.open(join(dir, "b"), { existing: "truncate", maxFiles: 0 }),
      RangeError,
    );
  });
});

describe("RotatingFile rotation", () => {
  it("keeps maxFiles files of at most maxFileSize, each starting with the header", () => {
    const dir = caseDir();
    const path = join(dir, "cap");
    // Header (4) + two 6-byte chunks per file.
    const file = RotatingFile.open(path, {
      existing: "truncate",
      header: HEADER,
      maxFileSize: 16,
      maxFiles: 3,
    });
    for (let i = 0; i < 9; i++) assert.equal(file.write(text(`rec${i}\n\n`.slice(0, 6))), true);
    file.closeSync();
    assert.equal(file.counters.rotations, 4);
    assert.deepEqual(readdirSync(dir).sort(), ["cap", "cap.1", "cap.2"], "no temp file left");
    assert.equal(readFileSync(path, "utf8"), "HDR\nrec8\n\n");
    assert.equal(readFileSync(`${path}.1`, "utf8"), "HDR\nrec6\n\nrec7\n\n");
    assert.equal(readFileSync(`${path}.2`, "utf8"), "HDR\nrec4\n\nrec5\n\n");
    for (const name of readdirSync(dir)) {
      assert.equal(statSync(join(dir, name)).mode & 0o777, 0o600);
    }
  });

  it("with one file, starts it afresh at the cap", () => {
    const dir = caseDir();
    const path = join(dir, "one");
    const file = RotatingFile.open(path, { existing: "append", maxFileSize: 10, maxFiles: 1 });
    for (const chunk of ["aaaaa", "bbbbb", "ccccc"]) file.write(text(chunk));
    file.closeSync();
    assert.deepEqual(readdirSync(dir), ["one"]);
    assert.equal(readFileSync(path, "utf8"), "ccccc");
  });

  it("replaces a link put at the name, never writing through it", () => {
    const dir = caseDir();
    const victim = join(dir, "victim");
    writeFileSync(victim, "precious", { mode: 0o600 });
    const path = join(dir, "out");
    const file = RotatingFile.open(path, { existing: "truncate", maxFileSize: 8 });
    file.write(text("12345678"));
    // Someone who may change the directory puts a link where the file was.
    unlinkSync(path);
    symlinkSync(victim, path);
    file.write(text("abc"));
    file.closeSync();
    assert.equal(readFileSync(victim, "utf8"), "precious");
    assert.equal(readFileSync(path, "utf8"), "abc", "a new file of its own holds the name");
    assert.equal(existsSync(`${path}.1`), false, "the link was not kept as an older file");
  });

  it("stops at the cap when asked, counting what it drops", () => {
    const dir = caseDir();
    const file = RotatingFile.open(join(dir, "stop"), {
      existing: "truncate",
      maxFileSize: 8,
      onLimit: "stop",
    });
    assert.equal(file.write(text("12345")), true);
    assert.equal(file.write(text("6789")), false);
    assert.equal(file.write(text("1")), false);
    file.closeSync();
    assert.deepEqual(
      { dropped: file.counters.dropped, stopped: file.counters.stopped },
      { dropped: 2, stopped: true },
    );
    assert.equal(readFileSync(join(dir, "stop"), "utf8"), "12345");
  });

  it("stops and reports once when it cannot rotate", () => {
    const dir = caseDir();
    const path = join(dir, "fail");
    mkdirSync(`${path}.1`);
    writeFileSync(join(`${path}.1`, "keep"), "x"); // a non-empty directory cannot be renamed over
    const errors: Error[] = [];
    const file = RotatingFile.open(path, {
      existing: "truncate",
      maxFileSize: 4,
      onError: (error) => errors.push(error),
    });
    file.write(text("1234"));
    assert.equal(file.write(text("5")), false);
    assert.equal(file.write(text("6")), false);
    file.closeSync();
    assert.equal(errors.length, 1);
    assert.equal(file.counters.stopped, true);
    assert.equal(readFileSync(path, "utf8"), "1234");
    assert.deepEqual(readdirSync(dir).sort(), ["fail", "fail.1"], "the next file was removed");
  });
});

describe("RotatingFile.writeBuilt", () => {
  it("builds a chunk only when one of the given size would be queued", () => {
    const dir = caseDir();
    const file = RotatingFile.open(join(dir, "built"), { existing: "truncate", maxBuffered: 10 });
    let built = 0;
    const build = () => {
      built++;
      return text("12345");
    };
    assert.equal(file.writeBuilt(5, build), true);
    assert.equal(file.writeBuilt(6, build), false, "5 queued + 6 > 10");
    assert.equal(built, 1);
    assert.equal(file.counters.dropped, 1);
    file.closeSync();
  });
});
