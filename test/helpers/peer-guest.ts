/**
 * A guest run in its own process, usually as the unprivileged user (test/helpers/unprivileged.ts):
 * `node peer-guest.js <socket> [connections]` connects to a daemon's vhost-user socket, runs QEMU's
 * handshake and one write to 0x50, and prints one JSON line: {"handshake": true, "transferOk": ...}
 * or {"handshake": false, "error": ...}. With `connections` > 1 it first connects and drops that many
 * extra times (a flood of connections) and reports the last attempt only.
 * Must not: assert anything; the test reads the line.
 * @module
 */

import { I2cGuest } from "../../src/frontend/i2c-driver.js";
import { UnixStream } from "../../src/sys/unix-socket.js";
import { scaled } from "./time.js";

const [path = "", countText = "1"] = process.argv.slice(2);
for (let i = 1; i < Number(countText); i++) {
  try {
    UnixStream.connect(path).close();
  } catch {
    // refused or full: a flood keeps going
  }
}
try {
  const vm = await I2cGuest.connect(path, { timeoutMs: scaled(2000) });
  const result = await vm.driver.transfer([{ addr: 0x50, write: Uint8Array.of(0x00, 0xde, 0xad) }]);
  console.log(JSON.stringify({ handshake: true, transferOk: result.ok }));
  await vm.close();
} catch (error) {
  console.log(JSON.stringify({ handshake: false, error: String(error) }));
}
