/**
 * Virtio transport feature bits (device-independent), as bigint masks. Device-specific bits live with
 * their device; vhost-user message codes live in the vhost-user layer.
 * @module
 */

export const VIRTIO_F_NOTIFY_ON_EMPTY = 1n << 24n;
export const VIRTIO_F_ANY_LAYOUT = 1n << 27n;
export const VIRTIO_F_RING_INDIRECT_DESC = 1n << 28n;
export const VIRTIO_F_RING_EVENT_IDX = 1n << 29n;
/** Bit 30 is not a virtio bit: vhost-user reuses it in GET/SET_FEATURES to announce protocol features. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 1n << 30n;
export const VIRTIO_F_VERSION_1 = 1n << 32n;
export const VIRTIO_F_ACCESS_PLATFORM = 1n << 33n;
export const VIRTIO_F_RING_PACKED = 1n << 34n;
export const VIRTIO_F_IN_ORDER = 1n << 35n;
export const VIRTIO_F_ORDER_PLATFORM = 1n << 36n;
export const VIRTIO_F_SR_IOV = 1n << 37n;
export const VIRTIO_F_NOTIFICATION_DATA = 1n << 38n;
export const VIRTIO_F_RING_RESET = 1n << 40n;

/** True when every bit of `mask` is set in `features`. */
export function hasFeatures(features: bigint, mask: bigint): boolean {
  return (features & mask) === mask;
}
