/**
 * Deadlines for slow hosts. `VHOST_DEVICE_I2C_TEST_TIME_SCALE` (a number >= 1, default 1) stretches
 * every deadline a test sets: under emulation (scripts/arm64-test.sh sets 10 for qemu-user, about
 * ten times slower) a correct daemon must not fail on time alone. Only deadlines go through
 * `scaled`: delays a test waits on purpose and durations it measures keep their values.
 * @module
 */

function readScale(text: string | undefined): number {
  if (text === undefined || text === "") return 1;
  const scale = Number(text);
  if (!Number.isFinite(scale) || scale < 1) {
    throw new Error(`VHOST_DEVICE_I2C_TEST_TIME_SCALE=${text} is not a number >= 1`);
  }
  return scale;
}

/** How many times longer every test deadline is than its value on a native host. */
export const TIME_SCALE = readScale(process.env.VHOST_DEVICE_I2C_TEST_TIME_SCALE);

/** The deadline `ms` stretched by TIME_SCALE. */
export function scaled(ms: number): number {
  return Math.round(ms * TIME_SCALE);
}
