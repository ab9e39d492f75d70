/**
 * virtio-i2c wire constants (virtio spec, "I2C Adapter Device"): device id, feature bits, request
 * header layout, flags and status values. Constants only: parsing lives in request.ts.
 * @module
 */

/** Virtio device id of an I2C adapter. */
export const VIRTIO_I2C_DEVICE_ID = 34;

/** Feature bit numbers. */
export const VirtioI2cFeatureBit = {
  /** Zero-length requests and the M_RD flag; mandatory for device and driver. */
  ZERO_LENGTH_REQUEST: 0,
} as const;

/** Feature masks (64-bit, as negotiated). */
export const VIRTIO_I2C_F_ZERO_LENGTH_REQUEST =
  1n << BigInt(VirtioI2cFeatureBit.ZERO_LENGTH_REQUEST);

/** `struct virtio_i2c_out_hdr { le16 addr; le16 padding; le32 flags; }` */
export const OutHdr = {
  SIZE: 8,
  ADDR_OFFSET: 0,
  PADDING_OFFSET: 2,
  FLAGS_OFFSET: 4,
} as const;

/** `struct virtio_i2c_in_hdr { u8 status; }` */
export const IN_HDR_SIZE = 1;

/** out_hdr.flags bits. */
export const RequestFlag = {
  /** Fail the next request if this one fails: the next request belongs to the same transfer. */
  FAIL_NEXT: 1,
  /** Read request: the buffer is device-writable. */
  M_RD: 2,
} as const;

/** Every flag bit the spec defines; any other bit set makes the request invalid. */
export const KNOWN_FLAGS = RequestFlag.FAIL_NEXT | RequestFlag.M_RD;

/** in_hdr.status values. */
export const RequestStatus = {
  OK: 0,
  ERR: 1,
} as const;
export type RequestStatus = (typeof RequestStatus)[keyof typeof RequestStatus];
