// Tests for PeerPolicy (who may be the peer of a socket) and UnixStream.peerCredentials, with a
// real process of another user at the other end.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { describe, it } from "node:test";
import { peerGroupsUnavailableReason } from "../../test/helpers/emulation.js";
import { scaled } from "../../test/helpers/time.js";
import {
  ATTACKER_GID,
  ATTACKER_UID,
  asAttacker,
  attackerNode,
  unprivilegedUnavailableReason,
} from "../../test/helpers/unprivileged.js";
import { PeerPolicy } from "./peer-policy.js";
import { UnixListener, type UnixStream } from "./unix-socket.js";

const ownUid = process.geteuid?.() ?? 0;
const peer = (uid: number, gid: number, groups: number[] = []) => ({ pid: 1, uid, gid, groups });

describe("PeerPolicy", () => {
  it("forSocketFile admits root, the daemon's user and the file's owner; the group only when its bits let it connect", () => {
    const file = { uid: 500, gid: 107, mode: 0o140600 };
    const ownerOnly = PeerPolicy.forSocketFile(file);
    assert.equal(ownerOnly.admits(peer(0, 0)), true);
    assert.equal(ownerOnly.admits(peer(ownUid, 1)), true);
    assert.equal(ownerOnly.admits(peer(500, 500)), true);
    assert.equal(
      ownerOnly.admits(peer(1234, 107)),
      false,
      "group bits off: the group is not admitted",
    );
    const withGroup = PeerPolicy.forSocketFile({ ...file, mode: 0o140660 });
    assert.equal(withGroup.admits(peer(1234, 107)), true);
    assert.equal(withGroup.admits(peer(1234, 1234, [5, 107])), true, "a supplementary member");
    assert.equal(withGroup.admits(peer(1234, 1234, [5])), false);
    const wide = PeerPolicy.forSocketFile({ ...file, mode: 0o140666 });
    assert.equal(wide.admits(peer(1234, 1234)), false, "'other' bits admit nobody");
  });

  it("admits the extra uids and gids given, and describes itself for log lines", () => {
    const policy = PeerPolicy.forSocketFile(null, { uids: [1234], gids: [42] });
    assert.equal(policy.admits(peer(1234, 1234)), true);
    assert.equal(policy.admits(peer(999, 42)), true);
    assert.equal(policy.admits(peer(999, 999)), false);
    assert.match(policy.describe(), /^uid 0(,\d+)*,1234 gid 42$/);
    assert.match(PeerPolicy.forSocketFile(null).describe(), / gid -$/);
  });

  it("forDirectory admits root, the daemon's user and the directory's owner, never its group", () => {
    const policy = PeerPolicy.forDirectory({ uid: 64055 });
    assert.equal(policy.admits(peer(64055, 64055)), true);
    assert.equal(policy.admits(peer(1234, 0)), false);
    assert.equal(PeerPolicy.forDirectory(null).admits(peer(64055, 64055)), false);
  });
});

describe("UnixStream.peerCredentials", {
  skip: unprivilegedUnavailableReason() ?? peerGroupsUnavailableReason() ?? false,
}, () => {
  it("reports the connecting process's pid, uid, gid and groups", async () => {
    const dir = mkdtempSync(`${tmpdir()}/vdi2c-peer-`);
    chmodSync(dir, 0o755);
    const path = `${dir}/peer.sock`;
    const listener = UnixListener.listen(path);
    chmodSync(path, 0o666);
    const [command, ...args] = asAttacker([ATTACKER_GID, 4321]);
    const script = `const s=require("net").connect(${JSON.stringify(path)});s.on("connect",()=>setTimeout(()=>s.end(),2000));`;
    const child = spawn(command as string, [...args, attackerNode(), "-e", script], {
      stdio: "ignore",
    });
    try {
      const end = Date.now() + scaled(10_000);
      let stream: UnixStream | null = listener.accept();
      while (stream === null) {
        assert.ok(Date.now() < end, "the other user's process did not connect");
        await new Promise((resolve) => setTimeout(resolve, 10));
        stream = listener.accept();
      }
      const credentials = stream.peerCredentials();
      assert.equal(credentials.pid, child.pid);
      assert.equal(credentials.uid, ATTACKER_UID);
      assert.equal(credentials.gid, ATTACKER_GID);
      assert.deepEqual([...credentials.groups].sort(), [ATTACKER_GID, 4321].sort());
      stream.close();
    } finally {
      child.kill();
      listener.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
