import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as features from "./features.js";

describe("virtio feature bits", () => {
  it("sit at the bit numbers the virtio and vhost-user specifications give", () => {
    const expected: Record<string, number> = {
      VIRTIO_F_NOTIFY_ON_EMPTY: 24,
      VIRTIO_F_ANY_LAYOUT: 27,
      VIRTIO_F_RING_INDIRECT_DESC: 28,
      VIRTIO_F_RING_EVENT_IDX: 29,
      VHOST_USER_F_PROTOCOL_FEATURES: 30,
      VIRTIO_F_VERSION_1: 32,
      VIRTIO_F_ACCESS_PLATFORM: 33,
      VIRTIO_F_RING_PACKED: 34,
      VIRTIO_F_IN_ORDER: 35,
      VIRTIO_F_ORDER_PLATFORM: 36,
      VIRTIO_F_SR_IOV: 37,
      VIRTIO_F_NOTIFICATION_DATA: 38,
      VIRTIO_F_RING_RESET: 40,
    };
    const masks = Object.entries(features).filter(([, value]) => typeof value === "bigint");
    for (const [name, mask] of masks) {
      assert.equal((mask as bigint) & ((mask as bigint) - 1n), 0n, `${name} is one bit`);
    }
    assert.deepEqual(
      Object.fromEntries(
        masks.map(([name, mask]) => [name, (mask as bigint).toString(2).length - 1]),
      ),
      expected,
    );
  });

  it("hasFeatures requires every bit of the mask", () => {
    const { hasFeatures, VIRTIO_F_VERSION_1, VIRTIO_F_RING_EVENT_IDX } = features;
    const offered = VIRTIO_F_VERSION_1 | VIRTIO_F_RING_EVENT_IDX;
    assert.equal(hasFeatures(offered, VIRTIO_F_VERSION_1), true);
    assert.equal(hasFeatures(VIRTIO_F_VERSION_1, offered), false);
    assert.equal(hasFeatures(0n, 0n), true);
  });
});
