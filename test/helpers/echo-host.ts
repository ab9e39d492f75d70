/**
 * A data-plane host for the vhost-user layer's tests (src/vhost-user/data-plane.test.ts): EchoDevices
 * in the data-plane thread (none for socket 7); requests "connections" (how many devices were made)
 * and "threadId" (where they run).
 * @module
 */

import { threadId } from "node:worker_threads";
import type { DataPlaneContext, DataPlaneHost } from "../../src/vhost-user/data-plane-thread.js";
import { EchoDevice } from "./echo-device.js";

export function createDataPlaneHost(init: unknown, context: DataPlaneContext): DataPlaneHost {
  if (init === "fail") throw new Error("the host cannot be built");
  let made = 0;
  return {
    createDevice(socket) {
      if (socket === 7) throw new Error("no device for socket 7");
      made++;
      context.logger.info("device made", { socket });
      return new EchoDevice();
    },
    request(request) {
      if (request === "connections") return made;
      if (request === "threadId") return threadId;
      if (request === "later")
        return new Promise((resolve) => setTimeout(() => resolve("late"), 20));
      if (request === "event") {
        context.emit({ made });
        return undefined;
      }
      throw new Error(`unknown request ${String(request)}`);
    },
    close() {},
  };
}
