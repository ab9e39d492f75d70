// Integration: `npm run demo` (dist/src/cli/demo.js) runs end to end and exits 0.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { it } from "node:test";
import { fileURLToPath } from "node:url";

const DEMO_JS = fileURLToPath(new URL("../src/cli/demo.js", import.meta.url));

it("demo scans, writes, reads back and dumps the emulated EEPROM, then exits 0", () => {
  const result = spawnSync(process.execPath, [DEMO_JS], { encoding: "utf8", timeout: 60_000 });
  assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
  assert.match(result.stdout, /^50: 50 --/m, "i2cdetect grid shows the EEPROM at 0x50");
  assert.match(result.stdout, /Read back with one write\+read transfer: "Hello from the guest/);
  assert.match(result.stdout, /^20: 48 65 6c 6c 6f/m, "i2cdump shows the message");
  assert.match(result.stdout, /The daemon exited with status 0/);
});
