// Integration: `vhost-device-i2c demo` (what `npm run demo` runs) runs the real daemon and real vi2c
// commands end to end, prints each command line with the command's own output, and exits 0.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { it } from "node:test";
import { MAIN_JS } from "./helpers/daemon.js";
import { scaled } from "./helpers/time.js";

it("demo drives the emulated bus with vi2c info, detect, set, get, transfer and dump, then exits 0", () => {
  const result = spawnSync(process.execPath, [MAIN_JS, "demo"], {
    encoding: "utf8",
    timeout: scaled(60_000),
  });
  const out = result.stdout;
  assert.equal(result.status, 0, `${out}\n${result.stderr}`);
  assert.match(out, /^\$ vhost-device-i2c -s vi2c\.sock -l sim:0x50=24c02:0x48=lm75 &$/m);
  assert.match(
    out,
    /^\$ vi2c info vi2c\.sock0\n(?:.*\n)*? {2}bit 0 +VIRTIO_I2C_F_ZERO_LENGTH_REQUEST$/m,
  );
  assert.match(
    out,
    /^\$ vi2c detect -y vi2c\.sock0\n {5}0 {2}1 [^\n]*\n(?:.*\n){4}40:(?: --){8} 48 [^\n]*\n50: 50 (?:-- ){15}$/m,
    "the i2cdetect grid shows the LM75 at 0x48 and the EEPROM at 0x50",
  );
  assert.match(out, /^\$ vi2c set -y vi2c\.sock0 0x50 0x00 0x42\n\n/m, "i2cset prints nothing");
  assert.match(out, /^\$ vi2c get -y vi2c\.sock0 0x50 0x00\n0x42\n/m, "i2cget reads back 0x42");
  assert.match(
    out,
    /^\$ vi2c transfer -y vi2c\.sock0 w1@0x50 0x00 r8@0x50\n0x42(?: 0xff){7}\n/m,
    "i2ctransfer reads 0x42 then the erased bytes",
  );
  assert.match(
    out,
    /^\$ vi2c dump -y vi2c\.sock0 0x50\n {5}0 {2}1 [^\n]*\n00: 42(?: ff){15} {4}B\.{15}\n(?:[1-9a-f]0: ff[^\n]*\n){15}/m,
    "i2cdump shows 0x42 at offset 0 in a full 16-row table",
  );
  assert.match(
    result.stderr,
    /^No size specified \(using byte-data access\)$/m,
    "i2cdump's notice",
  );
  assert.match(out, /^The daemon exited with status 0\.$/m);
  assert.match(out, /^Demo finished: every step worked\.$/m);
});

it("demo takes no arguments: anything after it is a usage error (exit 2)", () => {
  const result = spawnSync(process.execPath, [MAIN_JS, "demo", "-l", "sim:0x50=24c02"], {
    encoding: "utf8",
  });
  assert.equal(result.status, 2, result.stderr);
  assert.match(result.stderr, /^vhost-device-i2c: error: demo takes no arguments$/m);
});
