// Tests for the --user/--group lookups (the drop itself runs in the daemon: test/privilege-drop.test.ts).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { lookupGroup, PrivilegeError, resolveIdentity } from "./privileges.js";

const dir = mkdtempSync(join(tmpdir(), "vdi2c-priv-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const passwd = join(dir, "passwd");
const group = join(dir, "group");
writeFileSync(
  passwd,
  [
    "root:x:0:0:root:/root:/bin/bash",
    "# a comment",
    "vi2c:x:990:985:vhost-device-i2c:/nonexistent:/usr/sbin/nologin",
    "broken:x:abc:1::/:/bin/false",
  ].join("\n"),
);
writeFileSync(
  group,
  ["root:x:0:", "vi2c:x:985:", "i2c:x:120:alice,vi2c", "kvm:x:121:alice", "dialout:x:20:vi2c"].join(
    "\n",
  ),
);
const files = { passwd, group };

function unknown(fn: () => unknown, message: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PrivilegeError, String(e));
    assert.equal(e.code, "PRIVILEGE_UNKNOWN_NAME");
    assert.match(e.message, message);
    return true;
  });
}

describe("resolveIdentity", () => {
  it("a user name: its uid, primary group and the groups that list it", () => {
    assert.deepEqual(resolveIdentity("vi2c", undefined, files), {
      uid: 990,
      gid: 985,
      groups: [20, 120, 985],
    });
  });
  it("--group replaces the primary group, by name or number", () => {
    assert.deepEqual(resolveIdentity("vi2c", "i2c", files), {
      uid: 990,
      gid: 120,
      groups: [20, 120],
    });
    assert.deepEqual(resolveIdentity("vi2c", "77", files).gid, 77);
  });
  it("a bare uid needs --group and gets no other groups", () => {
    assert.deepEqual(resolveIdentity("1234", "1234", files), {
      uid: 1234,
      gid: 1234,
      groups: [1234],
    });
    unknown(
      () => resolveIdentity("1234", undefined, files),
      /--user 1234 is a number: give its group/,
    );
  });
  it("refuses names that are not in the files, or a malformed entry", () => {
    unknown(() => resolveIdentity("nobody-here", undefined, files), /no user named "nobody-here"/);
    unknown(() => resolveIdentity("broken", undefined, files), /no user named "broken"/);
    unknown(() => resolveIdentity("vi2c", "nogroup", files), /--group: no group named "nogroup"/);
    unknown(
      () => resolveIdentity("vi2c", undefined, { passwd: join(dir, "missing"), group }),
      /no user named "vi2c"/,
    );
  });
  it("lookupGroup reads the third field of the named group", () => {
    assert.equal(lookupGroup("kvm", group), 121);
    assert.equal(lookupGroup("alice", group), undefined);
  });
});
