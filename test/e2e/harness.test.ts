// An e2e file run where no guest image is built: each guest suite is reported as a skipped test (so
// the run's summary counts it: node:test does not count skipped suites) whose reason says what
// builds the image; with VHOST_DEVICE_I2C_E2E_REQUIRED set, the same run fails instead.
import assert from "node:assert/strict";
import { after, before, it } from "node:test";
import { fileURLToPath } from "node:url";
import { makeTempDir } from "../helpers/daemon.js";
import { noGuestImageReason, QEMU_ENV } from "../helpers/guest.js";
import { runToEnd } from "../helpers/run.js";
import { E2E_REQUIRED_ENV } from "./harness.js";

/** One of the guest files: its suite is skipped as a whole without an image. */
const GUEST_FILE = fileURLToPath(new URL("./bus.test.js", import.meta.url));
/** guest/build.sh --check computes its cache key with apt-cache: seconds, on a loaded machine more. */
const RUN_DEADLINE_MS = 60_000;

let cache: ReturnType<typeof makeTempDir>;
before(() => {
  cache = makeTempDir("vdi2c-no-guest-");
});
after(() => cache.remove());

/** `node --test` on GUEST_FILE with an empty image cache, QEMU present (`true --version` exits 0). */
function runWithoutImage(env: NodeJS.ProcessEnv = {}) {
  const {
    VHOST_DEVICE_I2C_GUEST_KERNEL: _kernel,
    VHOST_DEVICE_I2C_GUEST_INITRD: _initrd,
    [E2E_REQUIRED_ENV]: _required,
    // Set for the files this runner starts: the inner runner would report to it, not on stdout.
    NODE_TEST_CONTEXT: _context,
    ...inherited
  } = process.env;
  return runToEnd(process.execPath, ["--test", "--test-reporter=tap", GUEST_FILE], {
    env: { ...inherited, XDG_CACHE_HOME: cache.path, [QEMU_ENV]: "true", ...env },
    deadlineMs: RUN_DEADLINE_MS,
  });
}

it("without a guest image, the summary counts the skipped suites and says what builds the image", async () => {
  const run = await runWithoutImage();
  assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`);
  const skipped = Number(/^# skipped (\d+)$/m.exec(run.stdout)?.[1]);
  assert.ok(skipped > 0, run.stdout);
  assert.match(run.stdout, /^# pass 0$/m);
  assert.ok(run.stdout.includes(`# SKIP ${noGuestImageReason()}`), run.stdout);
});

it(`without a guest image and with ${E2E_REQUIRED_ENV} set, the run fails naming the reason`, async () => {
  const run = await runWithoutImage({ [E2E_REQUIRED_ENV]: "1" });
  assert.notEqual(run.status, 0, run.stdout);
  assert.ok(
    `${run.stdout}${run.stderr}`.includes(`${E2E_REQUIRED_ENV} is set but ${noGuestImageReason()}`),
    `${run.stdout}\n${run.stderr}`,
  );
});
