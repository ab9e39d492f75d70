/**
 * A fake sysfs tree for daemons under test: `fakeSysfsEnv(root)` is the environment that preloads
 * fake-sysfs-preload.ts into the daemon, which points its adapter lookups at `root` (the daemon
 * itself never reads a sysfs root from its environment). Works for every way tests start the
 * command (DaemonProcess, spawnSync of main.js, the e2e bench), because Node reads NODE_OPTIONS.
 * @module
 */

/** The variable the preload reads; it means nothing to the command without the preload. */
export const SYSFS_ROOT_ENV = "VHOST_DEVICE_I2C_SYSFS_ROOT";

const PRELOAD = new URL("./fake-sysfs-preload.js", import.meta.url);

/** Environment additions that make a daemon started by a test look up adapter names under `root`. */
export function fakeSysfsEnv(
  root: string,
  base: NodeJS.ProcessEnv = process.env,
): Record<string, string> {
  // A file URL has no blanks or quotes (they are %-encoded): NODE_OPTIONS splits it nowhere.
  const options = `${base.NODE_OPTIONS ?? ""} --import=${PRELOAD.href}`.trim();
  return { NODE_OPTIONS: options, [SYSFS_ROOT_ENV]: root };
}
