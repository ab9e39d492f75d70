// Tests for TrustedDirectory: which directories and files are trusted, links followed only inside
// trusted directories, checks on the fd before anything is read or written, and removal only of the
// inode the daemon made. The attacker cases run a real unprivileged user (test/helpers/unprivileged).
import assert from "node:assert/strict";
import {
  chmodSync,
  chownSync,
  closeSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { after, before, describe, it } from "node:test";
import {
  ATTACKER_GID,
  ATTACKER_UID,
  runAsAttacker,
  unprivilegedUnavailableReason,
} from "../../test/helpers/unprivileged.js";
import {
  openParent,
  readTrustedFile,
  TrustedDirectory,
  UntrustedPathError,
} from "./trusted-dir.js";

const refused = (code: string) => (error: unknown) =>
  error instanceof UntrustedPathError && error.code === code;

describe("TrustedDirectory", () => {
  let root = "";
  before(() => {
    root = mkdtempSync(`${tmpdir()}/vdi2c-trusted-`);
    chmodSync(root, 0o755);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it("opens a directory owned by the daemon's user and writable by it only", () => {
    mkdirSync(`${root}/ok`, { mode: 0o755 });
    const dir = TrustedDirectory.open(`${root}/ok`);
    assert.equal(dir.path, `${root}/ok`);
    dir.close();
  });

  it("accepts a sticky world-writable directory such as /tmp", () => {
    mkdirSync(`${root}/sticky`);
    chmodSync(`${root}/sticky`, 0o1777);
    TrustedDirectory.open(`${root}/sticky`).close();
    TrustedDirectory.open("/tmp").close();
  });

  it("refuses a world- or group-writable directory without the sticky bit, anywhere on the path", () => {
    mkdirSync(`${root}/open/inner`, { recursive: true });
    chmodSync(`${root}/open`, 0o777);
    assert.throws(() => TrustedDirectory.open(`${root}/open/inner`), refused("EUNSAFE_MODE"));
    mkdirSync(`${root}/group`);
    chmodSync(`${root}/group`, 0o775);
    assert.throws(() => TrustedDirectory.open(`${root}/group`), /mode 0775/);
  });

  it("refuses a directory owned by another user unless that owner is named", (t) => {
    const why = unprivilegedUnavailableReason();
    if (why) return t.skip(why);
    mkdirSync(`${root}/theirs`, { mode: 0o755 });
    chownSync(`${root}/theirs`, ATTACKER_UID, ATTACKER_GID);
    assert.throws(() => TrustedDirectory.open(`${root}/theirs`), refused("EUNSAFE_OWNER"));
    TrustedDirectory.open(`${root}/theirs`, { owners: [ATTACKER_UID] }).close();
  });

  it("follows a link inside trusted directories, refuses one reached through an untrusted one", (t) => {
    mkdirSync(`${root}/real`, { mode: 0o755 });
    symlinkSync(`${root}/real`, `${root}/alias`);
    symlinkSync("real", `${root}/relative-alias`);
    assert.equal(TrustedDirectory.open(`${root}/alias`).path, `${root}/real`);
    assert.equal(TrustedDirectory.open(`${root}/relative-alias`).path, `${root}/real`);
    const why = unprivilegedUnavailableReason();
    if (why) return t.skip(why);
    mkdirSync(`${root}/pub`);
    chmodSync(`${root}/pub`, 0o777);
    runAsAttacker(`ln -s ${root}/real ${root}/pub/planted`);
    assert.throws(() => TrustedDirectory.open(`${root}/pub/planted`), refused("EUNSAFE_MODE"));
  });

  it("creates missing directories with the given mode and checks what it finds", () => {
    const dir = TrustedDirectory.open(`${root}/made/deeper`, { create: 0o700 });
    assert.equal(statSync(`${root}/made/deeper`).mode & 0o777, 0o700);
    dir.close();
    assert.throws(() => TrustedDirectory.open(`${root}/missing`), { code: "ENOENT" });
  });

  it("writes only regular files the daemon owns with one link, never through a link", (t) => {
    const dir = TrustedDirectory.open(root);
    writeFileSync(`${root}/victim`, "precious");
    chmodSync(`${root}/victim`, 0o600);
    symlinkSync(`${root}/victim`, `${root}/link.pcap`);
    assert.throws(() => dir.openFile("link.pcap", { access: "write", create: "either" }), {
      code: "ELOOP",
    });
    symlinkSync(`${root}/nowhere`, `${root}/dangling.pcap`);
    assert.throws(() => dir.openFile("dangling.pcap", { access: "write", create: "either" }), {
      code: "ELOOP",
    });
    assert.throws(() => statSync(`${root}/nowhere`), { code: "ENOENT" }, "nothing was created");
    linkSync(`${root}/victim`, `${root}/hardlink`);
    assert.throws(
      () => dir.openFile("hardlink", { access: "write", truncate: true }),
      refused("EUNSAFE_LINKS"),
    );
    assert.equal(readFileSync(`${root}/victim`, "utf8"), "precious", "nothing truncated");
    mkdirSync(`${root}/adir`);
    assert.throws(() => dir.openFile("adir", { access: "read" }), refused("EUNSAFE_TYPE"));
    const why = unprivilegedUnavailableReason();
    if (why) return t.skip(why);
    writeFileSync(`${root}/theirs.bin`, "x");
    chownSync(`${root}/theirs.bin`, ATTACKER_UID, ATTACKER_GID);
    assert.throws(
      () => dir.openFile("theirs.bin", { access: "readwrite" }),
      refused("EUNSAFE_OWNER"),
    );
  });

  it("creates files with the asked mode and narrows a wider existing one on its fd", () => {
    const dir = TrustedDirectory.open(root);
    const created = dir.openFile("new.bin", { access: "write", create: "exclusive", mode: 0o600 });
    writeSync(created.fd, "abc");
    closeSync(created.fd);
    assert.equal(statSync(`${root}/new.bin`).mode & 0o777, 0o600);
    assert.throws(() => dir.openFile("new.bin", { access: "write", create: "exclusive" }), {
      code: "EEXIST",
    });
    chmodSync(`${root}/new.bin`, 0o666);
    const reopened = dir.openFile("new.bin", { access: "readwrite", mode: 0o640 });
    closeSync(reopened.fd);
    assert.equal(statSync(`${root}/new.bin`).mode & 0o777, 0o640);
  });

  it("reads only files a trusted owner owns and nobody else can write", () => {
    writeFileSync(`${root}/config.json`, "{}");
    chmodSync(`${root}/config.json`, 0o644);
    assert.equal(readTrustedFile(`${root}/config.json`).toString(), "{}");
    chmodSync(`${root}/config.json`, 0o646);
    assert.throws(() => readTrustedFile(`${root}/config.json`), refused("EUNSAFE_MODE"));
  });

  it("removes an entry only while it is still the inode the daemon made", () => {
    const { dir, name } = openParent(`${root}/mine.sock`);
    writeFileSync(`${root}/mine.sock`, "");
    const mine = dir.stat(name);
    assert.ok(mine);
    // Replaced by another file (made before the old one goes, so the inode cannot be reused).
    writeFileSync(`${root}/other`, "someone else's");
    renameSync(`${root}/other`, `${root}/mine.sock`);
    assert.equal(dir.unlinkIfSame(name, mine), false);
    assert.equal(readFileSync(`${root}/mine.sock`, "utf8"), "someone else's");
    const now = dir.stat(name);
    assert.ok(now);
    assert.equal(dir.unlinkIfSame(name, now), true);
    assert.equal(dir.stat(name), null);
  });

  it("refuses names that are not one plain component", () => {
    const dir = TrustedDirectory.open(root);
    for (const name of ["", ".", "..", "a/b"]) {
      assert.throws(() => dir.openFile(name), refused("EUNSAFE_NAME"), name);
    }
  });
});
