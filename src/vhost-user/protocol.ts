/**
 * vhost-user wire constants: request codes, header flags, protocol feature bits, payload sizes.
 * Constants only: no parsing (codec.ts) and no state (backend.ts). Numbering follows QEMU's
 * docs/interop/vhost-user.rst.
 * @module
 */

/** Requests sent by the front-end (the VMM) to the back-end. */
export const Request = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;
export type RequestCode = (typeof Request)[keyof typeof Request];

const requestNames = new Map<number, string>(Object.entries(Request).map(([n, c]) => [c, n]));

/** "SET_MEM_TABLE" for 5; "UNKNOWN(99)" for codes outside the table (logs). */
export function requestName(code: number): string {
  return requestNames.get(code) ?? `UNKNOWN(${code})`;
}

export function isKnownRequest(code: number): code is RequestCode {
  return requestNames.has(code);
}

/** Requests sent by the back-end to the front-end over the SET_BACKEND_REQ_FD channel. */
export const BackendRequest = {
  IOTLB_MSG: 1,
  CONFIG_CHANGE_MSG: 2,
  VRING_HOST_NOTIFIER_MSG: 3,
  VRING_CALL: 4,
  VRING_ERR: 5,
  SHARED_OBJECT_ADD: 6,
  SHARED_OBJECT_REMOVE: 7,
  SHARED_OBJECT_LOOKUP: 8,
} as const;

/** Header flags word: bits 0-1 protocol version, then REPLY and NEED_REPLY. */
export const HeaderFlag = {
  VERSION: 0x1,
  VERSION_MASK: 0x3,
  REPLY: 0x4,
  NEED_REPLY: 0x8,
} as const;

/** Bit numbers of VHOST_USER_PROTOCOL_F_*. */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

/** Mask of one protocol feature bit. */
export function protocolBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

/** Virtio feature bit 30: the back-end speaks GET/SET_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;

/** Wire sizes in bytes. */
export const HEADER_SIZE = 12;
export const U64_SIZE = 8;
export const VRING_STATE_SIZE = 8;
export const VRING_ADDR_SIZE = 40;
export const MEM_REGION_SIZE = 32;
/** {u32 nregions; u32 padding} before the regions of SET_MEM_TABLE. */
export const MEM_TABLE_HEADER_SIZE = 8;
/** VHOST_MEMORY_BASELINE_NREGIONS: most regions (and fds) in one SET_MEM_TABLE. */
export const MAX_MEM_TABLE_REGIONS = 8;
/** {u64 padding; region} of ADD_MEM_REG / REM_MEM_REG. */
export const SINGLE_MEM_REGION_SIZE = 8 + MEM_REGION_SIZE;
/** {u32 offset; u32 size; u32 flags} before the config bytes. */
export const CONFIG_HEADER_SIZE = 12;
export const MAX_CONFIG_SIZE = 256;
/** {u64 mmap_size; u64 mmap_offset; u16 num_queues; u16 queue_size} padded to 8. */
export const INFLIGHT_SIZE = 24;
/** {u64 mmap_size; u64 mmap_offset} of SET_LOG_BASE. */
export const LOG_SIZE = 16;
/** Most fds one message may carry (SCM_RIGHTS budget). */
export const MAX_FDS = 8;
/** Largest payload accepted: anything above is a protocol error, not a wait for more data. */
export const MAX_PAYLOAD_SIZE = 4096;

/** KICK/CALL/ERR u64: bits 0-7 ring index, bit 8 set when no fd is attached (polling mode). */
export const VRING_INDEX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;

/** Virtio device status bits (SET_STATUS / GET_STATUS). */
export const DeviceStatus = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  NEEDS_RESET: 64,
  FAILED: 128,
} as const;

/** GET_MAX_MEM_SLOTS answers: what a back-end supports with CONFIGURE_MEM_SLOTS. */
export const MAX_MEM_SLOTS = 32;
