/**
 * Preloaded into a daemon under test (`node --import`, see fake-sysfs.ts): adapter names resolve in
 * the fake sysfs tree named by $VHOST_DEVICE_I2C_SYSFS_ROOT. The shipped command has no such hook:
 * without this module that variable means nothing (the published package does not contain dist/test).
 * Must not: do anything else.
 * @module
 */

import { useSysfsRoot } from "../../src/i2c/adapters.js";
import { SYSFS_ROOT_ENV } from "./fake-sysfs.js";

const root = process.env[SYSFS_ROOT_ENV];
if (root) useSysfsRoot(root);
