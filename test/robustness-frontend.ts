/**
 * A front-end in its own process, for the kill tests of robustness.test.ts: connects an I2cGuest to the
 * socket given as argv[2], runs transfers back to back with several in flight, prints "busy" once the
 * first ones completed, and keeps going until it is killed (SIGKILL, so nothing is closed cleanly).
 * Must not exit by itself while transfers run: the test decides when it dies.
 * @module
 */

import { I2cGuest } from "../src/frontend/i2c-driver.js";

const path = process.argv[2];
if (!path) throw new Error("usage: robustness-frontend.js <socket>");
const guest = await I2cGuest.connect(path, { queueSize: 16 });
let announced = false;
for (let round = 0; ; round++) {
  // Several transfers queued before one kick, so a kill lands with chains in flight.
  const submissions = [0, 1, 2, 3].map((i) =>
    guest.driver.submit([{ addr: 0x50, write: Uint8Array.of(0x40 + i, round & 0xff) }], {
      kick: false,
    }),
  );
  guest.driver.kick();
  for (const submission of submissions) await guest.driver.wait(submission);
  if (!announced) {
    announced = true;
    process.stdout.write("busy\n");
  }
}
