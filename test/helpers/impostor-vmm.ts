/**
 * A VMM impostor run in its own process as the unprivileged user: `node impostor-vmm.js <path>
 * <waitMs>` listens at <path>, where a --client daemon connects, waits up to <waitMs> for it, then
 * plays QEMU (handshake, one write to 0x50). Prints JSON lines: {"listening": true}, then
 * {"connected": false} or {"connected": true} and {"handshake": ..., "transferOk"/"error": ...}.
 * Must not: assert anything; the test reads the lines.
 * @module
 */

import { chmodSync, unlinkSync } from "node:fs";
import { I2cGuest, QEMU_PROTOCOL_FEATURES_B } from "../../src/frontend/i2c-driver.js";
import { UnixListener, type UnixStream } from "../../src/sys/unix-socket.js";
import { scaled } from "./time.js";

const [path = "", waitText = "5000"] = process.argv.slice(2);
const listener = UnixListener.listen(path);
chmodSync(path, 0o777);
console.log(JSON.stringify({ listening: true }));
const end = Date.now() + Number(waitText);
let stream: UnixStream | null = listener.accept();
while (stream === null && Date.now() < end) {
  await new Promise((resolve) => setTimeout(resolve, 10));
  stream = listener.accept();
}
if (stream === null) {
  console.log(JSON.stringify({ connected: false }));
} else {
  console.log(JSON.stringify({ connected: true }));
  try {
    const vm = await I2cGuest.over(stream, {
      protocolFeatures: QEMU_PROTOCOL_FEATURES_B,
      timeoutMs: scaled(1500),
    });
    const result = await vm.driver.transfer([
      { addr: 0x50, write: Uint8Array.of(0x00, 0xde, 0xad, 0xbe, 0xef) },
    ]);
    console.log(JSON.stringify({ handshake: true, transferOk: result.ok }));
    await vm.close();
  } catch (error) {
    console.log(JSON.stringify({ handshake: false, error: String(error) }));
  }
}
listener.close();
unlinkSync(path);
