// Tests for SocketFile and the socket-file helpers: the file appears at its path already listening
// with its final mode and group whatever the umask, through a private directory that is removed
// again; nothing at the path is followed or replaced except a socket nobody listens on; removal
// touches only the inode created; a listener that never accepts is reported at once.
import assert from "node:assert/strict";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { after, before, describe, it } from "node:test";
import { sysCall } from "./errors.js";
import { closeFd } from "./fd.js";
import { native } from "./native.js";
import {
  boundSocketFile,
  checkSocketDirectory,
  connectSocketFile,
  SocketFile,
  SocketFileError,
} from "./socket-file.js";
import { UnixListener, UnixStream } from "./unix-socket.js";

const failsWith = (code: string) => (error: unknown) =>
  error instanceof SocketFileError && error.code === code;

/** A listener with backlog 0 whose one pending slot is taken: a connect to it would block. */
function jam(path: string): { close(): void } {
  const listener = UnixListener.listen(path, 0);
  const filler = UnixStream.connect(path);
  return {
    close() {
      filler.close();
      listener.close();
    },
  };
}

describe("SocketFile.listen", () => {
  let root = "";
  before(() => {
    root = mkdtempSync(`${tmpdir()}/vdi2c-socket-file-`);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it("creates the socket with its mode and group whatever the umask, and leaves no private directory", () => {
    const dir = `${root}/modes`;
    mkdirSync(dir);
    const previous = process.umask(0);
    let created: ReturnType<typeof SocketFile.listen>[] = [];
    try {
      created = [
        SocketFile.listen(`${dir}/a.sock`, { mode: 0o600 }),
        SocketFile.listen(`${dir}/b.sock`, { mode: 0o660, gid: 1234 }),
      ];
    } finally {
      process.umask(previous);
    }
    const [a, b] = created.map((c) => statSync(c.file.path));
    assert.equal((a?.mode ?? 0) & 0o7777, 0o600);
    assert.equal((b?.mode ?? 0) & 0o7777, 0o660);
    assert.equal(b?.gid, 1234);
    assert.ok(a?.isSocket());
    assert.deepEqual(readdirSync(dir).sort(), ["a.sock", "b.sock"], "no private directory left");
    const stream = UnixStream.connect(`${dir}/a.sock`);
    stream.close();
    for (const { fd, file } of created) {
      closeFd(fd);
      assert.equal(file.remove(), true);
      assert.equal(file.remove(), false, "remove() is idempotent");
    }
    assert.deepEqual(readdirSync(dir), []);
  });

  it("never follows a link at the path: EEXIST, and the link's target keeps its mode", () => {
    const victim = `${root}/victim`;
    writeFileSync(victim, "secret");
    chmodSync(victim, 0o600);
    symlinkSync(victim, `${root}/link.sock`);
    assert.throws(
      () => SocketFile.listen(`${root}/link.sock`, { mode: 0o666 }),
      failsWith("EEXIST"),
    );
    assert.equal(statSync(victim).mode & 0o7777, 0o600);
    unlinkSync(`${root}/link.sock`);
  });

  it("replaces a stale socket, refuses a live one and one whose backlog is full (at once)", () => {
    const path = `${root}/claim.sock`;
    UnixListener.listen(path).close(); // the file stays: nobody listens
    const first = SocketFile.listen(path, { mode: 0o600 });
    assert.throws(() => SocketFile.listen(path, { mode: 0o600 }), failsWith("EADDRINUSE"));
    closeFd(first.fd);
    first.file.remove();

    const jammed = jam(path);
    try {
      const started = performance.now();
      assert.throws(
        () => SocketFile.listen(path, { mode: 0o600 }),
        (error: unknown) =>
          failsWith("EADDRINUSE")(error) && /in use.*backlog is full/.test(String(error)),
      );
      assert.ok(performance.now() - started < 1000, "the probe does not wait for an accept");
    } finally {
      jammed.close();
    }
    unlinkSync(path);
  });

  it("refuses a directory others can write to (EUNSAFE) and a missing one (ENOENT)", () => {
    const open = `${root}/open`;
    mkdirSync(open);
    chmodSync(open, 0o777);
    assert.throws(
      () => SocketFile.listen(`${open}/v.sock`, { mode: 0o600 }),
      (error: unknown) => failsWith("EUNSAFE")(error) && String(error).includes(open),
    );
    assert.deepEqual(readdirSync(open), [], "nothing was created there");
    assert.throws(
      () => SocketFile.listen(`${root}/missing/v.sock`, { mode: 0o600 }),
      failsWith("ENOENT"),
    );
  });

  it("remove() leaves another process's socket that took the path", () => {
    const path = `${root}/mine.sock`;
    const ours = SocketFile.listen(path, { mode: 0o600 });
    unlinkSync(path);
    const theirs = UnixListener.listen(path);
    try {
      assert.equal(ours.file.remove(), false);
      assert.ok(statSync(path).isSocket(), "the other socket is still there");
      UnixStream.connect(path).close();
    } finally {
      closeFd(ours.fd);
      theirs.close();
      unlinkSync(path);
    }
  });

  it("remove() acts on the directory it created the socket in, not on what its path names later", () => {
    const dir = `${root}/swapped`;
    const protectedDir = `${root}/protected`;
    mkdirSync(dir);
    mkdirSync(protectedDir, { mode: 0o700 });
    writeFileSync(`${protectedDir}/v.sock`, "root's file");
    const ours = SocketFile.listen(`${dir}/v.sock`, { mode: 0o600 });
    renameSync(dir, `${dir}.old`);
    symlinkSync(protectedDir, dir);
    try {
      assert.equal(ours.file.remove(), true);
      assert.equal(
        statSync(`${protectedDir}/v.sock`).isFile(),
        true,
        "the file behind the link stays",
      );
      assert.deepEqual(readdirSync(`${dir}.old`), [], "the socket the daemon made is gone");
    } finally {
      closeFd(ours.fd);
    }
  });
});

describe("connectSocketFile and checkSocketDirectory", () => {
  let root = "";
  before(() => {
    root = mkdtempSync(`${tmpdir()}/vdi2c-socket-connect-`);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it("connects to a socket in a trusted directory and reports the directory's owner", () => {
    const listener = UnixListener.listen(`${root}/vmm.sock`);
    try {
      const { stream, directory } = connectSocketFile(`${root}/vmm.sock`);
      assert.equal(directory.uid, process.geteuid?.());
      stream.close();
    } finally {
      listener.close();
      unlinkSync(`${root}/vmm.sock`);
    }
  });

  it("refuses a link at the path, a directory others can write, and waits for a missing socket", () => {
    const listener = UnixListener.listen(`${root}/real.sock`);
    symlinkSync(`${root}/real.sock`, `${root}/link.sock`);
    try {
      assert.throws(
        () => connectSocketFile(`${root}/link.sock`),
        (error: unknown) => failsWith("EUNSAFE")(error) && /symbolic link/.test(String(error)),
      );
    } finally {
      listener.close();
    }
    assert.throws(() => connectSocketFile(`${root}/none.sock`), failsWith("ENOENT"));
    mkdirSync(`${root}/open`, { mode: 0o777 });
    chmodSync(`${root}/open`, 0o777);
    assert.throws(() => checkSocketDirectory(`${root}/open/vmm.sock`), failsWith("EUNSAFE"));
    checkSocketDirectory(`${root}/not-yet/vmm.sock`); // missing: may appear later
  });

  it("a full backlog fails the connect at once (ELISTEN caused by EAGAIN)", () => {
    const jammed = jam(`${root}/jam.sock`);
    try {
      assert.throws(
        () => connectSocketFile(`${root}/jam.sock`),
        (error: unknown) =>
          failsWith("ELISTEN")(error) &&
          (error as SocketFileError).cause instanceof Error &&
          ((error as SocketFileError).cause as { code?: string }).code === "EAGAIN",
      );
    } finally {
      jammed.close();
    }
  });
});

describe("boundSocketFile", () => {
  it("finds the file an inherited listener is bound to, and nothing once that file is gone", () => {
    const root = mkdtempSync(`${tmpdir()}/vdi2c-socket-bound-`);
    try {
      const listener = UnixListener.listen(`${root}/inherited.sock`);
      chmodSync(`${root}/inherited.sock`, 0o660);
      const stat = boundSocketFile(listener.fd);
      assert.equal(stat?.isSocket, true);
      assert.equal((stat?.mode ?? 0) & 0o777, 0o660);
      listener.close();
      const abstract = sysCall("bind", () => native().socketListen(`${root}/x`, 1));
      unlinkSync(`${root}/x`);
      assert.equal(boundSocketFile(abstract), null, "no file at the bound path any more");
      closeFd(abstract);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
