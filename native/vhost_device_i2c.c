/*
 * Native addon for vhost-device-i2c: syscalls and kernel handles only.
 *
 * Owns: Unix sockets with SCM_RIGHTS, eventfd, memfd, shared mappings and their ArrayBuffer views,
 * libuv poll handles, epoll instances (waited on by a thread that may block), datagram sockets
 * (service-manager notification), and the /dev/i2c-N ioctls (transfers run on each open adapter's
 * own I/O thread, or inline in a calling thread that may block).
 * Keeps no process-wide mutable state: every handle belongs to the environment (main thread or
 * worker) that made it, so the addon loads in any number of worker threads at once.
 * Must not: parse or validate any protocol, keep device state, or decide policy. The typed surface
 * lives in src/sys/native.ts; every failing syscall throws an Error with code/errno/syscall.
 */

/* On LP64 off_t is 64-bit anyway. Dropping the large-file switch keeps the plain libc `open`
 * symbol (not open64), so an LD_PRELOAD test adapter can interpose it. */
#if defined(__LP64__)
#undef _FILE_OFFSET_BITS
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define NAPI_VERSION 8

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/i2c-dev.h>
#include <linux/i2c.h>

#include <node_api.h>
#include <uv.h>

#define MAX_SAFE_INTEGER 9007199254740991.0
#define RECV_MAX_FDS 16 /* control buffer capacity; vhost-user needs at most 8 */
#define SEND_MAX_FDS 253 /* SCM_MAX_FD, the kernel's limit per message */
#define SMBUS_DATA_SIZE ((int)sizeof(union i2c_smbus_data))

/* ---------------------------------------------------------------------------------------------
 * Errors and argument helpers
 * ------------------------------------------------------------------------------------------- */

/* Sets a property or leaves the exception pending; errors here only happen when throwing anyway. */
static void set_prop_string(napi_env env, napi_value obj, const char* key, const char* value) {
  napi_value v;
  if (napi_create_string_utf8(env, value, NAPI_AUTO_LENGTH, &v) == napi_ok) {
    napi_set_named_property(env, obj, key, v);
  }
}

static void set_prop_int(napi_env env, napi_value obj, const char* key, int value) {
  napi_value v;
  if (napi_create_int32(env, value, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

static const char* errno_name(int err) {
  const char* name = strerrorname_np(err);
  return name != NULL ? name : "EUNKNOWN";
}

/* Builds `Error("<syscall>: <strerror> (<CODE>)")` with code, errno and syscall properties. */
static napi_value make_errno_error(napi_env env, const char* syscall, int err) {
  char message[256];
  const char* code = errno_name(err);
  snprintf(message, sizeof message, "%s failed: %s (%s)", syscall, strerror(err), code);
  napi_value msg, code_value, error;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value);
  napi_create_error(env, code_value, msg, &error);
  set_prop_int(env, error, "errno", err);
  set_prop_string(env, error, "syscall", syscall);
  return error;
}

static napi_value throw_errno(napi_env env, const char* syscall, int err) {
  napi_throw(env, make_errno_error(env, syscall, err));
  return NULL;
}

/* An error that is not an errno (e.g. ECTRUNC): code and syscall, errno left out. */
static napi_value make_coded_error(napi_env env, const char* code, const char* syscall,
                                   const char* message) {
  napi_value msg, code_value, error;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value);
  napi_create_error(env, code_value, msg, &error);
  if (syscall != NULL) set_prop_string(env, error, "syscall", syscall);
  return error;
}

static napi_value throw_type(napi_env env, const char* message) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
  return NULL;
}

static napi_value throw_range(napi_env env, const char* message) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", message);
  return NULL;
}

/* Throws `<what> <problem>` as a TypeError, e.g. "fd must be a number". */
static void throw_type_about(napi_env env, const char* what, const char* problem) {
  char message[128];
  snprintf(message, sizeof message, "%s %s", what, problem);
  throw_type(env, message);
}

static bool get_args(napi_env env, napi_callback_info info, size_t expected, napi_value* argv) {
  size_t argc = expected;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  if (argc < expected) {
    throw_type(env, "missing arguments");
    return false;
  }
  return true;
}

static bool get_number(napi_env env, napi_value value, const char* what, double* out) {
  if (napi_get_value_double(env, value, out) != napi_ok) {
    throw_type_about(env, what, "must be a number");
    return false;
  }
  return true;
}

/* A non-negative integer below 2^53 (sizes, offsets, counters). */
static bool get_u53(napi_env env, napi_value value, const char* what, uint64_t* out) {
  double d;
  if (!get_number(env, value, what, &d)) return false;
  if (!(d >= 0 && d <= MAX_SAFE_INTEGER) || d != (double)(uint64_t)d) {
    char message[128];
    snprintf(message, sizeof message, "%s must be a non-negative integer below 2^53", what);
    throw_range(env, message);
    return false;
  }
  *out = (uint64_t)d;
  return true;
}

/* An integer in [min, max]. */
static bool get_int_in(napi_env env, napi_value value, const char* what, int64_t min, int64_t max,
                       int64_t* out) {
  double d;
  if (!get_number(env, value, what, &d)) return false;
  if (!(d >= (double)min && d <= (double)max) || d != (double)(int64_t)d) {
    char message[160];
    snprintf(message, sizeof message, "%s must be an integer in [%lld, %lld]", what,
             (long long)min, (long long)max);
    throw_range(env, message);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

static bool get_fd(napi_env env, napi_value value, int* fd) {
  int64_t v;
  if (!get_int_in(env, value, "fd", 0, INT32_MAX, &v)) return false;
  *fd = (int)v;
  return true;
}

/* The single argument of a call that takes just an fd. */
static bool get_only_fd(napi_env env, napi_callback_info info, int* fd) {
  napi_value argv[1];
  return get_args(env, info, 1, argv) && get_fd(env, argv[0], fd);
}

static bool get_callback(napi_env env, napi_value value) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_function) {
    throw_type(env, "callback must be a function");
    return false;
  }
  return true;
}

/* (fd, callback) of a call that watches an fd from the event loop, and that loop. */
static bool get_fd_callback_loop(napi_env env, napi_callback_info info, napi_value* argv, int* fd,
                                 uv_loop_t** loop) {
  return get_args(env, info, 2, argv) && get_fd(env, argv[0], fd) && get_callback(env, argv[1]) &&
         napi_get_uv_event_loop(env, loop) == napi_ok;
}

/* (fd, <what>) where <what> is a non-negative integer below 2^53. */
static bool get_fd_and_u53(napi_env env, napi_callback_info info, const char* what, int* fd,
                           uint64_t* value) {
  napi_value argv[2];
  return get_args(env, info, 2, argv) && get_fd(env, argv[0], fd) &&
         get_u53(env, argv[1], what, value);
}

/* A string without embedded NUL, copied into a malloc'd buffer the caller frees. */
static char* get_string(napi_env env, napi_value value, const char* what) {
  size_t len;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok) {
    throw_type_about(env, what, "must be a string");
    return NULL;
  }
  char* s = malloc(len + 1);
  if (s == NULL) {
    throw_errno(env, "malloc", ENOMEM);
    return NULL;
  }
  napi_get_value_string_utf8(env, value, s, len + 1, &len);
  if (strlen(s) != len) {
    free(s);
    throw_type_about(env, what, "must not contain NUL characters");
    return NULL;
  }
  return s;
}

/* The memory of a typed array of the given kind; false (nothing thrown) for anything else. */
static bool typed_array_of(napi_env env, napi_value value, napi_typedarray_type kind, size_t* len,
                           void** data) {
  bool is_typed = false;
  napi_typedarray_type type;
  *data = NULL;
  return napi_is_typedarray(env, value, &is_typed) == napi_ok && is_typed &&
         napi_get_typedarray_info(env, value, &type, len, data, NULL, NULL) == napi_ok &&
         type == kind;
}

/* The single argument of a call that takes just a string; the caller frees it. */
static char* get_only_string(napi_env env, napi_callback_info info, const char* what) {
  napi_value argv[1];
  return get_args(env, info, 1, argv) ? get_string(env, argv[0], what) : NULL;
}

/* A Uint8Array's memory. */
static bool get_u8(napi_env env, napi_value value, const char* what, uint8_t** data, size_t* len) {
  void* raw;
  if (!typed_array_of(env, value, napi_uint8_array, len, &raw)) {
    throw_type_about(env, what, "must be a Uint8Array");
    return false;
  }
  *data = raw;
  return true;
}

/* A JS array's length; throws `message` as a TypeError for anything else. */
static bool get_array(napi_env env, napi_value value, const char* message, uint32_t* count) {
  bool is_array = false;
  if (napi_is_array(env, value, &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, value, count) != napi_ok) {
    throw_type(env, message);
    return false;
  }
  return true;
}

/* [offset, offset + length) inside a buffer of `size` bytes. */
static bool get_range(napi_env env, napi_value off_value, napi_value len_value, size_t size,
                      uint64_t* offset, uint64_t* length) {
  if (!get_u53(env, off_value, "offset", offset) || !get_u53(env, len_value, "length", length)) {
    return false;
  }
  if (*offset > size || *length > size - *offset) {
    throw_range(env, "offset + length exceeds the buffer");
    return false;
  }
  return true;
}

static napi_value make_int(napi_env env, int64_t v) {
  napi_value result;
  napi_create_int64(env, v, &result);
  return result;
}

static napi_value make_double(napi_env env, double v) {
  napi_value result;
  napi_create_double(env, v, &result);
  return result;
}

/* A new fd as the result, or the errno of the call that failed to make it. */
static napi_value fd_or_throw(napi_env env, int fd, const char* syscall) {
  if (fd < 0) return throw_errno(env, syscall, errno);
  return make_int(env, fd);
}

/* Frees an argument copy without losing the errno of the call it was passed to. */
static void free_keeping_errno(void* p) {
  int err = errno;
  free(p);
  errno = err;
}

static napi_value make_undefined(napi_env env) {
  napi_value result;
  napi_get_undefined(env, &result);
  return result;
}

/* ---------------------------------------------------------------------------------------------
 * close
 * ------------------------------------------------------------------------------------------- */

static napi_value js_close(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_only_fd(env, info, &fd)) return NULL;
  /* Linux releases the fd even when close reports EINTR: retrying could close someone else's. */
  if (close(fd) != 0 && errno != EINTR) return throw_errno(env, "close", errno);
  return make_undefined(env);
}

/* Ends the process at once (_exit): the one way out while a thread is stuck in a system call that
 * nothing interrupts, since Node's own exit joins every worker thread first. */
static napi_value js_exit_now(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t status;
  if (!get_args(env, info, 1, argv) || !get_int_in(env, argv[0], "status", 0, 255, &status)) {
    return NULL;
  }
  _exit((int)status);
}

/* ---------------------------------------------------------------------------------------------
 * Unix sockets
 * ------------------------------------------------------------------------------------------- */

/* A Unix socket address from a path; with `abstract_ok`, a leading '@' names an abstract address
 * (sun_path[0] = 0, no file). Stores the address length to pass to bind/connect/sendto. */
static bool fill_sockaddr(napi_env env, napi_value path_value, struct sockaddr_un* addr,
                          socklen_t* addr_len, const char* syscall, bool abstract_ok) {
  char* path = get_string(env, path_value, "path");
  if (path == NULL) return false;
  size_t len = strlen(path);
  if (len == 0 || len >= sizeof addr->sun_path) {
    free(path);
    throw_errno(env, syscall, len == 0 ? ENOENT : ENAMETOOLONG);
    return false;
  }
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (abstract_ok && path[0] == '@') {
    memcpy(addr->sun_path + 1, path + 1, len - 1); /* sun_path[0] stays 0 */
    *addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  } else {
    memcpy(addr->sun_path, path, len + 1);
    *addr_len = (socklen_t)sizeof *addr;
  }
  free(path);
  return true;
}

/* A failed nonblocking socket call: -1 when it would block, else the errno thrown. */
static napi_value would_block_or_throw(napi_env env, const char* syscall) {
  if (errno == EAGAIN || errno == EWOULDBLOCK) return make_int(env, -1);
  return throw_errno(env, syscall, errno);
}

/* Closes a half-set-up fd and throws the errno of the call that failed on it. */
static napi_value close_and_throw(napi_env env, int fd, const char* syscall) {
  int err = errno;
  close(fd);
  return throw_errno(env, syscall, err);
}

/* The single argument of a call that takes just a socket path. */
static bool get_only_sockaddr(napi_env env, napi_callback_info info, struct sockaddr_un* addr,
                              socklen_t* addr_len, const char* syscall, bool abstract_ok) {
  napi_value argv[1];
  return get_args(env, info, 1, argv) &&
         fill_sockaddr(env, argv[0], addr, addr_len, syscall, abstract_ok);
}

/* A new Unix socket of `type` bound to addr; -1 (exception pending) on failure. */
static int bound_socket(napi_env env, int type, const struct sockaddr_un* addr,
                        socklen_t addr_len) {
  int fd = socket(AF_UNIX, type, 0);
  if (fd < 0) {
    throw_errno(env, "socket", errno);
    return -1;
  }
  if (bind(fd, (const struct sockaddr*)addr, addr_len) != 0) {
    close_and_throw(env, fd, "bind");
    return -1;
  }
  return fd;
}

static napi_value js_socket_listen(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct sockaddr_un addr;
  socklen_t addr_len;
  int64_t backlog;
  if (!get_args(env, info, 2, argv) ||
      !fill_sockaddr(env, argv[0], &addr, &addr_len, "bind", false) ||
      !get_int_in(env, argv[1], "backlog", 0, INT32_MAX, &backlog)) {
    return NULL;
  }
  int fd = bound_socket(env, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, &addr, addr_len);
  if (fd < 0) return NULL;
  if (listen(fd, (int)backlog) != 0) return close_and_throw(env, fd, "listen");
  return make_int(env, fd);
}

static napi_value js_socket_accept(napi_env env, napi_callback_info info) {
  int listen_fd;
  if (!get_only_fd(env, info, &listen_fd)) return NULL;
  for (;;) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return make_int(env, fd);
    if (errno == EINTR) continue;
    /* A connection that died before accept is not the listener's failure: report "none". */
    if (errno == ECONNABORTED) return make_int(env, -1);
    return would_block_or_throw(env, "accept4");
  }
}

static napi_value js_socket_connect(napi_env env, napi_callback_info info) {
  struct sockaddr_un addr;
  socklen_t addr_len;
  if (!get_only_sockaddr(env, info, &addr, &addr_len, "connect", false)) return NULL;
  /* Nonblocking from the start: a listener whose backlog is full answers EAGAIN at once instead of
   * putting the calling thread (the event loop) to sleep until somebody accepts. A Unix stream
   * connect completes or fails immediately otherwise. */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int rc;
  do {
    rc = connect(fd, (struct sockaddr*)&addr, addr_len);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return close_and_throw(env, fd, "connect");
  return make_int(env, fd);
}

/* socketPeerCred(fd): [pid, uid, gid] of the process at the other end (SO_PEERCRED), as the kernel
 * recorded it at connect (or listen) time. */
static napi_value js_socket_peer_cred(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_only_fd(env, info, &fd)) return NULL;
  struct ucred cred;
  socklen_t size = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &size) != 0) {
    return throw_errno(env, "getsockopt", errno);
  }
  napi_value result;
  if (napi_create_array_with_length(env, 3, &result) != napi_ok) return NULL;
  napi_set_element(env, result, 0, make_int(env, cred.pid));
  napi_set_element(env, result, 1, make_int(env, cred.uid));
  napi_set_element(env, result, 2, make_int(env, cred.gid));
  return result;
}

/* socketPeerGroups(fd): the supplementary groups of the process at the other end (SO_PEERGROUPS,
 * Linux 4.13), as the kernel recorded them at connect time, so a peer policy can admit a group's
 * members the way the socket file's permissions do. */
static napi_value js_socket_peer_groups(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_only_fd(env, info, &fd)) return NULL;
  gid_t small[64];
  gid_t* groups = small;
  socklen_t size = sizeof small;
  while (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &size) != 0) {
    /* ERANGE: the kernel stored the size it needs. */
    if (errno != ERANGE || groups != small) {
      int err = errno;
      if (groups != small) free(groups);
      return throw_errno(env, "getsockopt", err);
    }
    groups = malloc(size);
    if (groups == NULL) return throw_errno(env, "getsockopt", ENOMEM);
  }
  uint32_t count = (uint32_t)(size / sizeof(gid_t));
  napi_value result;
  if (napi_create_array_with_length(env, count, &result) != napi_ok) result = NULL;
  for (uint32_t i = 0; result != NULL && i < count; i++) {
    napi_set_element(env, result, i, make_int(env, groups[i]));
  }
  if (groups != small) free(groups);
  return result;
}

/* socketName(fd): the path a Unix socket is bound to (getsockname), "@name" for an abstract
 * address, "" when unbound; an inherited listener's file is found this way. */
static napi_value js_socket_name(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_only_fd(env, info, &fd)) return NULL;
  struct sockaddr_un addr;
  socklen_t size = sizeof addr;
  memset(&addr, 0, sizeof addr);
  if (getsockname(fd, (struct sockaddr*)&addr, &size) != 0) {
    return throw_errno(env, "getsockname", errno);
  }
  char name[sizeof addr.sun_path + 1];
  size_t length = size > offsetof(struct sockaddr_un, sun_path)
                      ? size - offsetof(struct sockaddr_un, sun_path)
                      : 0;
  if (length > 0 && addr.sun_path[0] == '\0') {
    name[0] = '@';
    memcpy(name + 1, addr.sun_path + 1, length - 1);
    name[length] = '\0';
  } else {
    memcpy(name, addr.sun_path, length);
    name[length] = '\0';
  }
  napi_value result;
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &result) != napi_ok) return NULL;
  return result;
}

static napi_value js_socket_pair(napi_env env, napi_callback_info info) {
  (void)info;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
    return throw_errno(env, "socketpair", errno);
  }
  napi_value result;
  if (napi_create_array_with_length(env, 2, &result) != napi_ok ||
      napi_set_element(env, result, 0, make_int(env, fds[0])) != napi_ok ||
      napi_set_element(env, result, 1, make_int(env, fds[1])) != napi_ok) {
    close(fds[0]);
    close(fds[1]);
    return NULL;
  }
  return result;
}

/* recvMsg/sendMsg(fd, buf, offset, length, ...): the fd and the byte range as one iovec. */
static bool get_message_args(napi_env env, napi_callback_info info, napi_value* argv, int* fd,
                             struct iovec* iov) {
  uint8_t* buf;
  size_t buf_len;
  uint64_t offset, length;
  if (!get_args(env, info, 5, argv) || !get_fd(env, argv[0], fd) ||
      !get_u8(env, argv[1], "buf", &buf, &buf_len) ||
      !get_range(env, argv[2], argv[3], buf_len, &offset, &length)) {
    return false;
  }
  iov->iov_base = buf + offset;
  iov->iov_len = length;
  return true;
}

/* A message of one iovec and the given control buffer (NULL for none). */
static void init_msghdr(struct msghdr* msg, struct iovec* iov, void* control, size_t control_len) {
  memset(msg, 0, sizeof *msg);
  msg->msg_iov = iov;
  msg->msg_iovlen = 1;
  msg->msg_control = control;
  msg->msg_controllen = control_len;
}

/* Walks every fd carried by SCM_RIGHTS in a received message: copies each into `copy_to` when
 * given, closes each when `close_them`; returns how many there are. */
static size_t walk_received_fds(struct msghdr* msg, int32_t* copy_to, bool close_them) {
  size_t total = 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++, total++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (copy_to != NULL) copy_to[total] = fd;
      if (close_them) close(fd);
    }
  }
  return total;
}

static napi_value js_recv_msg(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int fd;
  struct iovec iov;
  if (!get_message_args(env, info, argv, &fd, &iov)) return NULL;
  size_t fds_len;
  void* fds_raw;
  if (!typed_array_of(env, argv[4], napi_int32_array, &fds_len, &fds_raw) || fds_len < 1) {
    return throw_type(env, "fdsOut must be an Int32Array of length >= 1");
  }
  int32_t* fds_out = fds_raw;
  fds_out[0] = 0;

  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(RECV_MAX_FDS * sizeof(int))];
  } control;
  struct msghdr msg;
  ssize_t n;
  do {
    init_msghdr(&msg, &iov, control.buf, sizeof control.buf);
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return would_block_or_throw(env, "recvmsg");

  /* Count first, so that either all fds reach the caller or none stays open. */
  size_t received = walk_received_fds(&msg, NULL, false);
  if ((msg.msg_flags & MSG_CTRUNC) != 0 || received > fds_len - 1) {
    walk_received_fds(&msg, NULL, true);
    napi_throw(env, make_coded_error(env, "ECTRUNC", "recvmsg",
                                     "recvmsg failed: more file descriptors than the receive "
                                     "buffer holds; they were closed (ECTRUNC)"));
    return NULL;
  }
  fds_out[0] = (int32_t)walk_received_fds(&msg, fds_out + 1, false);
  return make_int(env, n);
}

/* Attaches the `count` fds of the JS array `fds` to `msg` as one SCM_RIGHTS message, in `control`
 * (room for SEND_MAX_FDS); nothing when count is 0. False with a JS exception pending. */
static bool attach_fds(napi_env env, struct msghdr* msg, char* control, napi_value fds,
                       uint32_t count) {
  if (count == 0) return true;
  memset(control, 0, CMSG_SPACE(SEND_MAX_FDS * sizeof(int)));
  msg->msg_control = control;
  msg->msg_controllen = CMSG_SPACE(count * sizeof(int));
  struct cmsghdr* c = CMSG_FIRSTHDR(msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(count * sizeof(int));
  for (uint32_t i = 0; i < count; i++) {
    napi_value element;
    int passed;
    if (napi_get_element(env, fds, i, &element) != napi_ok || !get_fd(env, element, &passed)) {
      return false;
    }
    memcpy(CMSG_DATA(c) + i * sizeof(int), &passed, sizeof passed);
  }
  return true;
}

static napi_value js_send_msg(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int fd;
  struct iovec iov;
  if (!get_message_args(env, info, argv, &fd, &iov)) return NULL;
  uint32_t count = 0;
  if (!get_array(env, argv[4], "fds must be an array", &count)) return NULL;
  if (count > SEND_MAX_FDS) return throw_range(env, "at most 253 fds per message");
  if (count > 0 && iov.iov_len == 0) return throw_range(env, "fds need at least one byte of data");

  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(SEND_MAX_FDS * sizeof(int))];
  } control;
  struct msghdr msg;
  init_msghdr(&msg, &iov, NULL, 0);
  if (!attach_fds(env, &msg, control.buf, argv[4], count)) return NULL;
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return would_block_or_throw(env, "sendmsg");
  return make_int(env, n);
}

/* ---------------------------------------------------------------------------------------------
 * eventfd, memfd
 * ------------------------------------------------------------------------------------------- */

static napi_value js_eventfd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t initval;
  if (!get_args(env, info, 1, argv) ||
      !get_int_in(env, argv[0], "initval", 0, UINT32_MAX, &initval)) {
    return NULL;
  }
  return fd_or_throw(env, eventfd((unsigned int)initval, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd");
}

/* One 8-byte eventfd counter read or write, retried when a signal interrupts it. */
static ssize_t eventfd_io(int fd, uint64_t* value, bool writing) {
  ssize_t n;
  do {
    n = writing ? write(fd, value, sizeof *value) : read(fd, value, sizeof *value);
  } while (n < 0 && errno == EINTR);
  return n;
}

static napi_value js_eventfd_read(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_only_fd(env, info, &fd)) return NULL;
  uint64_t value;
  ssize_t n = eventfd_io(fd, &value, false);
  if (n == (ssize_t)sizeof value) return make_double(env, (double)value);
  if (n >= 0) return throw_errno(env, "read", EIO);
  if (errno == EAGAIN) return make_int(env, -1);
  return throw_errno(env, "read", errno);
}

static napi_value js_eventfd_write(napi_env env, napi_callback_info info) {
  int fd;
  uint64_t value;
  if (!get_fd_and_u53(env, info, "value", &fd, &value)) return NULL;
  ssize_t n = eventfd_io(fd, &value, true);
  if (n == (ssize_t)sizeof value) return make_undefined(env);
  return throw_errno(env, "write", n >= 0 ? EIO : errno);
}

/* poll(2) for readability, blocking the calling thread: for frontends that have nothing else to do
 * while they wait (benchmarks, probes), never for the daemon's event loop. ready[i] becomes 1 when
 * fds[i] is readable or hung up. Returns how many are; 0 when timeoutMs passed (-1: no deadline).
 * A closed fd among them throws EBADF. */
static napi_value js_wait_readable(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t count, ready_len;
  void *fds_raw, *ready_raw;
  int64_t timeout_ms;
  if (!get_args(env, info, 3, argv)) return NULL;
  if (!typed_array_of(env, argv[0], napi_int32_array, &count, &fds_raw) || count < 1 ||
      count > 1024) {
    return throw_type(env, "fds must be an Int32Array of 1..1024 fds");
  }
  if (!typed_array_of(env, argv[1], napi_uint8_array, &ready_len, &ready_raw) ||
      ready_len < count) {
    return throw_type(env, "ready must be a Uint8Array at least as long as fds");
  }
  if (!get_int_in(env, argv[2], "timeoutMs", -1, INT32_MAX, &timeout_ms)) return NULL;
  const int32_t* fds = fds_raw;
  uint8_t* ready = ready_raw;
  struct pollfd polled[1024];
  for (size_t i = 0; i < count; i++) polled[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += timeout_ms / 1000;
  deadline.tv_nsec += (timeout_ms % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000;
  }
  int n;
  int wait_ms = (int)timeout_ms;
  for (;;) {
    n = poll(polled, count, wait_ms);
    if (n >= 0 || errno != EINTR) break;
    if (timeout_ms < 0) continue;
    /* Interrupted by a signal: wait only for what is left of the deadline. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t left = (deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000;
    wait_ms = left > 0 ? (int)left : 0;
  }
  if (n < 0) return throw_errno(env, "poll", errno);
  for (size_t i = 0; i < count; i++) {
    /* A closed fd would otherwise be "ready" forever and spin the caller. */
    if (polled[i].revents & POLLNVAL) return throw_errno(env, "poll", EBADF);
    ready[i] = (polled[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
  }
  return make_int(env, n);
}

/* ---------------------------------------------------------------------------------------------
 * epoll: readiness for a thread that blocks (a data-plane worker), never for the event loop
 * ------------------------------------------------------------------------------------------- */

/* Most entries one epollWait returns: its events live on the stack. Entries left over stay on the
 * epoll's ready list and come with the next wait. */
#define EPOLL_MAX_EVENTS 512

static napi_value js_epoll_create(napi_env env, napi_callback_info info) {
  (void)info;
  return fd_or_throw(env, epoll_create1(EPOLL_CLOEXEC), "epoll_create1");
}

/* epollCtl(epfd, op, fd, events, data): EPOLL_CTL_ADD (1), DEL (2) or MOD (3); `data` is an int32
 * kept in epoll_data.u32 and handed back by epollWait. */
static napi_value js_epoll_ctl(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int epfd, fd;
  int64_t op, events, data;
  if (!get_args(env, info, 5, argv) || !get_fd(env, argv[0], &epfd) ||
      !get_int_in(env, argv[1], "op", EPOLL_CTL_ADD, EPOLL_CTL_MOD, &op) ||
      !get_fd(env, argv[2], &fd) || !get_int_in(env, argv[3], "events", 0, UINT32_MAX, &events) ||
      !get_int_in(env, argv[4], "data", INT32_MIN, INT32_MAX, &data)) {
    return NULL;
  }
  struct epoll_event event = {.events = (uint32_t)events, .data.u32 = (uint32_t)(int32_t)data};
  if (epoll_ctl(epfd, (int)op, fd, &event) != 0) return throw_errno(env, "epoll_ctl", errno);
  return make_undefined(env);
}

/* epollWait(epfd, out, timeoutMs): blocks the calling thread up to timeoutMs (-1: no deadline, 0:
 * just look). out[2i] = data, out[2i+1] = events of each ready entry, at most out.length / 2 (and
 * EPOLL_MAX_EVENTS); returns how many. A signal ends the wait early with 0, so the caller's loop
 * decides what to do next. Allocates nothing. */
static napi_value js_epoll_wait(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int epfd;
  size_t out_len;
  void* out_raw;
  int64_t timeout_ms;
  if (!get_args(env, info, 3, argv) || !get_fd(env, argv[0], &epfd)) return NULL;
  if (!typed_array_of(env, argv[1], napi_int32_array, &out_len, &out_raw) || out_len < 2) {
    return throw_type(env, "out must be an Int32Array of at least 2 elements");
  }
  if (!get_int_in(env, argv[2], "timeoutMs", -1, INT32_MAX, &timeout_ms)) return NULL;
  struct epoll_event events[EPOLL_MAX_EVENTS];
  int max = out_len / 2 < EPOLL_MAX_EVENTS ? (int)(out_len / 2) : EPOLL_MAX_EVENTS;
  int n = epoll_wait(epfd, events, max, (int)timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return make_int(env, 0);
    return throw_errno(env, "epoll_wait", errno);
  }
  int32_t* out = out_raw;
  for (int i = 0; i < n; i++) {
    out[2 * i] = (int32_t)events[i].data.u32;
    out[2 * i + 1] = (int32_t)events[i].events;
  }
  return make_int(env, n);
}

static napi_value js_memfd_create(napi_env env, napi_callback_info info) {
  char* name = get_only_string(env, info, "name");
  if (name == NULL) return NULL;
  /* Sealable: guest RAM is sealed against resizing, as QEMU's memory-backend-memfd does. */
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  free_keeping_errno(name);
  return fd_or_throw(env, fd, "memfd_create");
}

/* fcntl F_GET_SEALS: the file's seals, 0 for a file that cannot have any (EINVAL). */
static napi_value js_file_seals(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_only_fd(env, info, &fd)) return NULL;
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals >= 0) return make_int(env, seals);
  if (errno == EINVAL) return make_int(env, 0);
  return throw_errno(env, "fcntl", errno);
}

/* fcntl F_ADD_SEALS. */
static napi_value js_add_seals(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int64_t seals;
  if (!get_args(env, info, 2, argv) || !get_fd(env, argv[0], &fd) ||
      !get_int_in(env, argv[1], "seals", 0, INT32_MAX, &seals)) {
    return NULL;
  }
  if (fcntl(fd, F_ADD_SEALS, (int)seals) != 0) return throw_errno(env, "fcntl", errno);
  return make_undefined(env);
}

static napi_value js_ftruncate(napi_env env, napi_callback_info info) {
  int fd;
  uint64_t size;
  if (!get_fd_and_u53(env, info, "size", &fd, &size)) return NULL;
  for (;;) {
    if (ftruncate(fd, (off_t)size) == 0) return make_undefined(env);
    if (errno != EINTR) return throw_errno(env, "ftruncate", errno);
  }
}

/* fstat: [file type bits (S_IFMT), size]. Guest memory fds are checked against it before mmap, since
 * touching a shared mapping past the end of its file raises SIGBUS. */
static napi_value js_fd_info(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_only_fd(env, info, &fd)) return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) return throw_errno(env, "fstat", errno);
  napi_value result;
  if (napi_create_array_with_length(env, 2, &result) != napi_ok) return NULL;
  napi_set_element(env, result, 0, make_int(env, (int64_t)(st.st_mode & S_IFMT)));
  napi_set_element(env, result, 1, make_double(env, (double)st.st_size));
  return result;
}

/* Sets O_NONBLOCK on an fd received from a peer: a blocking read on the main thread would stall
 * every guest. */
static napi_value js_set_nonblocking(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_only_fd(env, info, &fd)) return NULL;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return throw_errno(env, "fcntl", errno);
  if ((flags & O_NONBLOCK) == 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return throw_errno(env, "fcntl", errno);
  }
  return make_undefined(env);
}

/* ---------------------------------------------------------------------------------------------
 * Mappings and their views
 *
 * A mapping is shared by its JS handle and by every view created over it. Each holds one count;
 * the memory is unmapped by munmap() (the owner) or, as a safety net, when the last count drops.
 * munmap() detaches every live view first, so a stale view reads as length 0 instead of faulting.
 * ------------------------------------------------------------------------------------------- */

typedef struct {
  uint8_t* addr;
  size_t length;
  bool unmapped;
  bool handle_finalized;
  size_t holders; /* the handle + views not yet finalized */
  napi_ref* views; /* weak refs to live views */
  size_t view_count;
  size_t view_capacity;
} mapping_t;

static void mapping_unmap_memory(mapping_t* m) {
  if (!m->unmapped) {
    munmap(m->addr, m->length);
    m->unmapped = true;
  }
}

static void mapping_release(mapping_t* m) {
  if (--m->holders > 0) return;
  mapping_unmap_memory(m);
  free(m->views);
  free(m);
}

static void mapping_delete_view_refs(napi_env env, mapping_t* m) {
  for (size_t i = 0; i < m->view_count; i++) napi_delete_reference(env, m->views[i]);
  m->view_count = 0;
}

static void mapping_handle_finalize(napi_env env, void* data, void* hint) {
  (void)hint;
  mapping_t* m = data;
  /* No one can reach munmap() any more; views keep the memory through their own counts. */
  mapping_delete_view_refs(env, m);
  m->handle_finalized = true;
  mapping_release(m);
}

/* `data` is the view's first byte; the mapping travels as the hint. */
static void mapping_view_finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)data;
  mapping_release(hint);
}

/* Drops refs whose view was collected, so a long-lived mapping does not grow without bound. */
static void mapping_prune_views(napi_env env, mapping_t* m) {
  size_t kept = 0;
  for (size_t i = 0; i < m->view_count; i++) {
    napi_value value = NULL;
    if (napi_get_reference_value(env, m->views[i], &value) == napi_ok && value != NULL) {
      m->views[kept++] = m->views[i];
    } else {
      napi_delete_reference(env, m->views[i]);
    }
  }
  m->view_count = kept;
}

static bool mapping_reserve_view(napi_env env, mapping_t* m) {
  if (m->view_count < m->view_capacity) return true;
  mapping_prune_views(env, m);
  if (m->view_count < m->view_capacity) return true;
  size_t capacity = m->view_capacity == 0 ? 8 : m->view_capacity * 2;
  napi_ref* grown = realloc(m->views, capacity * sizeof *grown);
  if (grown == NULL) return false;
  m->views = grown;
  m->view_capacity = capacity;
  return true;
}

/* Handles are externals tagged by kind, so one kind can never be taken for another. */
static const napi_type_tag MAPPING_TAG = {0x6d617070696e6748ULL, 0x76686f7374693263ULL};
static const napi_type_tag POLL_TAG = {0x706f6c6c48616e64ULL, 0x76686f7374693263ULL};

static void* get_handle(napi_env env, napi_value value, const napi_type_tag* tag,
                        const char* message) {
  napi_valuetype type;
  bool tagged = false;
  void* data = NULL;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external ||
      napi_check_object_type_tag(env, value, tag, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
    throw_type(env, message);
    return NULL;
  }
  return data;
}

/* A new external for `data`, tagged as one kind of handle; NULL (exception pending) on failure,
 * in which case `finalize` never runs. Tagging a fresh external only fails on out-of-memory. */
static napi_value make_handle(napi_env env, void* data, napi_finalize finalize,
                              const napi_type_tag* tag) {
  napi_value handle;
  if (napi_create_external(env, data, finalize, NULL, &handle) != napi_ok) return NULL;
  napi_type_tag_object(env, handle, tag);
  return handle;
}

static mapping_t* get_mapping(napi_env env, napi_value value) {
  return get_handle(env, value, &MAPPING_TAG, "handle must be a MappingHandle");
}

static napi_value js_mmap(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int fd;
  uint64_t offset, length;
  bool writable;
  if (!get_args(env, info, 4, argv) || !get_fd(env, argv[0], &fd) ||
      !get_u53(env, argv[1], "offset", &offset) || !get_u53(env, argv[2], "length", &length)) {
    return NULL;
  }
  if (napi_get_value_bool(env, argv[3], &writable) != napi_ok) {
    return throw_type(env, "writable must be a boolean");
  }
  if (length == 0) return throw_errno(env, "mmap", EINVAL);
  mapping_t* m = calloc(1, sizeof *m);
  if (m == NULL) return throw_errno(env, "malloc", ENOMEM);
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* addr = mmap(NULL, (size_t)length, prot, MAP_SHARED, fd, (off_t)offset);
  if (addr == MAP_FAILED) {
    int err = errno;
    free(m);
    return throw_errno(env, "mmap", err);
  }
  m->addr = addr;
  m->length = (size_t)length;
  m->holders = 1;
  napi_value handle = make_handle(env, m, mapping_handle_finalize, &MAPPING_TAG);
  if (handle == NULL) {
    munmap(addr, (size_t)length);
    free(m);
    return NULL;
  }
  return handle; /* its finalizer owns `m` from here on */
}

static napi_value js_mapping_view(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  mapping_t* m;
  uint64_t offset, length;
  if (!get_args(env, info, 3, argv) || (m = get_mapping(env, argv[0])) == NULL ||
      !get_range(env, argv[1], argv[2], m->length, &offset, &length)) {
    return NULL;
  }
  if (m->unmapped) {
    napi_throw(env, make_coded_error(env, "ERR_MAPPING_CLOSED", "mappingView",
                                     "mappingView failed: the mapping was unmapped"));
    return NULL;
  }
  napi_value ab;
  if (length == 0) {
    /* Nothing to see through: a plain empty buffer needs no tracking. */
    if (napi_create_arraybuffer(env, 0, NULL, &ab) != napi_ok) return NULL;
    return ab;
  }
  if (!mapping_reserve_view(env, m)) return throw_errno(env, "malloc", ENOMEM);
  /* The view's finalizer only drops its count; the memory belongs to the mapping. Take the count
   * only once the buffer exists, so a failed creation cannot release it twice. */
  if (napi_create_external_arraybuffer(env, m->addr + offset, (size_t)length,
                                       mapping_view_finalize, m, &ab) != napi_ok) {
    return NULL;
  }
  m->holders++;
  napi_ref ref;
  if (napi_create_reference(env, ab, 0, &ref) != napi_ok) {
    /* Untracked views could outlive munmap: make this one empty instead of returning it. */
    napi_detach_arraybuffer(env, ab);
    return NULL;
  }
  m->views[m->view_count++] = ref;
  return ab;
}

static napi_value js_munmap(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  mapping_t* m = get_args(env, info, 1, argv) ? get_mapping(env, argv[0]) : NULL;
  if (m == NULL) return NULL;
  if (m->unmapped) return make_undefined(env);
  for (size_t i = 0; i < m->view_count; i++) {
    napi_value value = NULL;
    if (napi_get_reference_value(env, m->views[i], &value) == napi_ok && value != NULL) {
      napi_detach_arraybuffer(env, value);
    }
  }
  mapping_delete_view_refs(env, m);
  mapping_unmap_memory(m);
  return make_undefined(env);
}

/* ---------------------------------------------------------------------------------------------
 * Readiness (uv_poll)
 *
 * The struct lives until both the uv_close callback ran and the JS handle was finalized, so a
 * late call through a stale handle sees `closing` instead of freed memory.
 * ------------------------------------------------------------------------------------------- */

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  bool closing;
  bool uv_closed;
  bool js_finalized;
} poll_t;

static void poll_maybe_free(poll_t* p) {
  if (p->uv_closed && p->js_finalized) free(p);
}

static void poll_on_close(uv_handle_t* handle) {
  poll_t* p = handle->data;
  p->uv_closed = true;
  poll_maybe_free(p);
}

static void poll_begin_close(napi_env env, poll_t* p) {
  if (p->closing) return;
  p->closing = true;
  uv_poll_stop(&p->handle);
  if (p->callback != NULL) napi_delete_reference(env, p->callback);
  p->callback = NULL;
  if (p->context != NULL) napi_async_destroy(env, p->context);
  p->context = NULL;
  uv_close((uv_handle_t*)&p->handle, poll_on_close);
}

static void poll_finalize(napi_env env, void* data, void* hint) {
  (void)hint;
  poll_t* p = data;
  poll_begin_close(env, p);
  p->js_finalized = true;
  poll_maybe_free(p);
}

/* Calls a JS callback from a libuv callback (no JS on the stack): through make_callback, which runs
 * microtasks afterwards; an exception becomes an uncaught exception. Needs an open handle scope. */
static void call_from_loop(napi_env env, napi_async_context context, napi_ref callback_ref,
                           size_t argc, const napi_value* argv) {
  napi_value callback, recv;
  if (napi_get_reference_value(env, callback_ref, &callback) != napi_ok || callback == NULL) {
    return;
  }
  napi_get_global(env, &recv); /* make_callback needs an object as receiver */
  if (napi_make_callback(env, context, recv, callback, argc, argv, NULL) != napi_ok) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value error;
      napi_get_and_clear_last_exception(env, &error);
      napi_fatal_exception(env, error);
    }
  }
}

static void poll_on_event(uv_poll_t* handle, int status, int events) {
  poll_t* p = handle->data;
  if (p->closing) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value args[2];
  napi_create_int32(env, status, &args[0]);
  napi_create_int32(env, events, &args[1]);
  call_from_loop(env, p->context, p->callback, 2, args);
  napi_close_handle_scope(env, scope);
}

static poll_t* get_poll(napi_env env, napi_value value) {
  return get_handle(env, value, &POLL_TAG, "handle must be a PollHandle");
}

/* The single argument of a call that takes just a PollHandle. */
static poll_t* get_only_poll(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  return get_args(env, info, 1, argv) ? get_poll(env, argv[0]) : NULL;
}

static napi_value js_poll_create(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uv_loop_t* loop;
  if (!get_fd_callback_loop(env, info, argv, &fd, &loop)) return NULL;
  poll_t* p = calloc(1, sizeof *p);
  if (p == NULL) return throw_errno(env, "malloc", ENOMEM);
  p->env = env;
  p->handle.data = p;
  int rc = uv_poll_init(loop, &p->handle, fd);
  if (rc != 0) {
    /* Never initialized: nothing to uv_close, free directly. */
    free(p);
    return throw_errno(env, "uv_poll_init", -rc);
  }
  napi_value name, handle = NULL;
  napi_create_string_utf8(env, "FdWatcher", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, argv[1], 1, &p->callback) != napi_ok ||
      napi_async_init(env, NULL, name, &p->context) != napi_ok ||
      (handle = make_handle(env, p, poll_finalize, &POLL_TAG)) == NULL) {
    p->js_finalized = true; /* no JS handle will ever finalize it */
    poll_begin_close(env, p);
    return NULL;
  }
  return handle;
}

static napi_value js_poll_start(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  poll_t* p;
  int64_t events;
  if (!get_args(env, info, 2, argv) || (p = get_poll(env, argv[0])) == NULL ||
      !get_int_in(env, argv[1], "events", 1, UV_READABLE | UV_WRITABLE | UV_DISCONNECT,
                  &events)) {
    return NULL;
  }
  if (p->closing) {
    napi_throw(env, make_coded_error(env, "ERR_POLL_CLOSED", "uv_poll_start",
                                     "uv_poll_start failed: the poll handle was closed"));
    return NULL;
  }
  int rc = uv_poll_start(&p->handle, (int)events, poll_on_event);
  if (rc != 0) return throw_errno(env, "uv_poll_start", -rc);
  return make_undefined(env);
}

static napi_value js_poll_stop(napi_env env, napi_callback_info info) {
  poll_t* p = get_only_poll(env, info);
  if (p == NULL) return NULL;
  if (!p->closing) uv_poll_stop(&p->handle);
  return make_undefined(env);
}

static napi_value js_poll_close(napi_env env, napi_callback_info info) {
  poll_t* p = get_only_poll(env, info);
  if (p == NULL) return NULL;
  poll_begin_close(env, p);
  return make_undefined(env);
}

/* ---------------------------------------------------------------------------------------------
 * i2c-dev: open, I2C_FUNCS, I2C_SLAVE inline; I2C_RDWR and I2C_SMBUS off the main thread
 *
 * A transfer is an i2c_job_t: native memory only, so the thread that runs it never touches JS
 * memory. It runs on the adapter's own I/O thread (i2cChannel*: one thread per open adapter, one
 * job at a time in memory kept across transfers, completions through one uv_async).
 * ------------------------------------------------------------------------------------------- */

/* Channel exchange buffer: message i's {addr, flags, len} as host-endian u16 at 6*i, the bytes of
 * every message packed in message order from I2C_EXCHANGE_HEADER; an SMBus job's data at 0. After an
 * I2C_RDWR, the u16 at I2C_EXCHANGE_SENT holds what it returned: the messages the adapter carried out
 * (a driver may stop early, e.g. virtio-i2c on a full queue). */
#define I2C_EXCHANGE_HEADER 256
#define I2C_EXCHANGE_SENT 252

static napi_value js_i2c_open(napi_env env, napi_callback_info info) {
  char* path = get_only_string(env, info, "path");
  if (path == NULL) return NULL;
  int fd;
  do {
    fd = open(path, O_RDWR | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  free_keeping_errno(path);
  return fd_or_throw(env, fd, "open");
}

static napi_value js_i2c_funcs(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_only_fd(env, info, &fd)) return NULL;
  unsigned long funcs = 0;
  if (ioctl(fd, I2C_FUNCS, &funcs) != 0) return throw_errno(env, "ioctl(I2C_FUNCS)", errno);
  return make_double(env, (double)(uint32_t)funcs);
}

static napi_value js_i2c_set_slave(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int64_t addr;
  if (!get_args(env, info, 2, argv) || !get_fd(env, argv[0], &fd) ||
      !get_int_in(env, argv[1], "addr", 0, 0x3ff, &addr)) {
    return NULL;
  }
  if (ioctl(fd, I2C_SLAVE, (unsigned long)addr) != 0) {
    return throw_errno(env, "ioctl(I2C_SLAVE)", errno);
  }
  return make_undefined(env);
}

/* One transfer as the I/O thread sees it. */
typedef struct {
  bool smbus;
  int fd;
  int err;             /* errno from the I/O thread, 0 on success */
  uint16_t sent;       /* I2C_RDWR's return value when it succeeded */
  const char* syscall; /* which ioctl failed */
  /* I2C_RDWR */
  uint32_t count;
  struct i2c_msg msgs[I2C_RDWR_IOCTL_MAX_MSGS];
  uint8_t* storage; /* every message's bytes, packed in message order */
  size_t total;     /* bytes of storage in use */
  size_t capacity;
  /* I2C_SLAVE + I2C_SMBUS */
  uint16_t addr;
  uint8_t read_write;
  uint8_t command;
  uint32_t size;
  union i2c_smbus_data data;
} i2c_job_t;

/* ioctl on the I/O thread, retried when a signal interrupts it. */
static int ioctl_retrying(int fd, unsigned long request, void* arg) {
  int rc;
  do {
    rc = ioctl(fd, request, arg);
  } while (rc < 0 && errno == EINTR);
  return rc;
}

/* Runs the job on the calling (I/O) thread. */
static void i2c_job_run(i2c_job_t* job) {
  if (!job->smbus) {
    struct i2c_rdwr_ioctl_data request = {.msgs = job->msgs, .nmsgs = job->count};
    int rc = ioctl_retrying(job->fd, I2C_RDWR, &request);
    job->err = rc < 0 ? errno : 0;
    job->sent = rc < 0 ? 0 : (uint16_t)rc;
    job->syscall = "ioctl(I2C_RDWR)";
    return;
  }
  /* Address and transfer in one job, so no other transfer on this fd comes between. */
  int rc = ioctl_retrying(job->fd, I2C_SLAVE, (void*)(uintptr_t)job->addr);
  if (rc < 0) {
    job->err = errno;
    job->syscall = "ioctl(I2C_SLAVE)";
    return;
  }
  struct i2c_smbus_ioctl_data request = {.read_write = job->read_write,
                                         .command = job->command,
                                         .size = job->size,
                                         .data = &job->data};
  rc = ioctl_retrying(job->fd, I2C_SMBUS, &request);
  job->err = rc < 0 ? errno : 0;
  job->syscall = "ioctl(I2C_SMBUS)";
}

/* The messages laid out in an exchange buffer (`data`, `len` bytes; see I2C_EXCHANGE_HEADER) into
 * the job: count, each message's addr, flags and len. RangeError when an address is over 0x3ff or
 * the messages' bytes are not all in the buffer. The bytes themselves stay where they are: see
 * i2c_job_point_messages. */
static bool i2c_job_take_messages(napi_env env, i2c_job_t* job, const uint8_t* data, size_t len,
                                  uint32_t count) {
  size_t total = 0;
  for (uint32_t i = 0; i < count; i++) {
    uint16_t fields[3];
    memcpy(fields, data + 6 * i, sizeof fields);
    if (fields[0] > 0x3ff) {
      throw_range(env, "message address must be at most 0x3ff");
      return false;
    }
    job->msgs[i] = (struct i2c_msg){.addr = fields[0], .flags = fields[1], .len = fields[2]};
    total += fields[2];
  }
  if (total > len - I2C_EXCHANGE_HEADER) {
    throw_range(env, "exchange is too short for the messages' bytes");
    return false;
  }
  job->smbus = false;
  job->count = count;
  job->total = total;
  return true;
}

/* Points each message's buf at its place in `bytes`, where the messages' bytes are packed in
 * message order: the job's own storage (a job run on another thread) or the exchange buffer itself
 * (a job run inline, which no JS can touch until it returns). */
static void i2c_job_point_messages(i2c_job_t* job, uint8_t* bytes) {
  size_t at = 0;
  for (uint32_t i = 0; i < job->count; i++) {
    job->msgs[i].buf = bytes + at;
    at += job->msgs[i].len;
  }
}

/* Room in the job's own storage for the bytes of its messages. Storage only grows, so a long-lived
 * job allocates nothing once it saw its largest transfer. */
static bool i2c_job_reserve(i2c_job_t* job) {
  if (job->total > job->capacity || job->storage == NULL) {
    size_t size = job->total > 0 ? job->total : 1;
    uint8_t* grown = realloc(job->storage, size);
    if (grown == NULL) return false;
    job->storage = grown;
    job->capacity = size;
  }
  return true;
}

/* An exchange buffer argument: a Uint8Array of at least `min_len` bytes. */
static bool get_exchange(napi_env env, napi_value value, size_t min_len, uint8_t** data,
                         size_t* len) {
  if (!get_u8(env, value, "exchange", data, len)) return false;
  if (*len < min_len) {
    throw_range(env, "exchange is too short for the transfer");
    return false;
  }
  return true;
}

/* (addr, readWrite, command, size) of an SMBus call into the job. */
static bool get_smbus_command(napi_env env, const napi_value* argv, i2c_job_t* job) {
  int64_t addr, read_write, command, size;
  if (!get_int_in(env, argv[0], "addr", 0, 0x3ff, &addr) ||
      !get_int_in(env, argv[1], "readWrite", 0, 1, &read_write) ||
      !get_int_in(env, argv[2], "command", 0, 0xff, &command) ||
      !get_int_in(env, argv[3], "size", 0, 8, &size)) {
    return false;
  }
  job->smbus = true;
  job->addr = (uint16_t)addr;
  job->read_write = (uint8_t)read_write;
  job->command = (uint8_t)command;
  job->size = (uint32_t)size;
  return true;
}

/* The job's failure as an errno error, or NULL when it succeeded. */
static napi_value i2c_job_error(napi_env env, const i2c_job_t* job) {
  return job->err != 0 ? make_errno_error(env, job->syscall, job->err) : NULL;
}

/* Copies native bytes back into a Uint8Array; false if it was detached or is too short. */
static bool copy_back(napi_env env, napi_value value, size_t at, const uint8_t* from, size_t len) {
  uint8_t* data;
  size_t data_len;
  if (value == NULL || !typed_array_of(env, value, napi_uint8_array, &data_len, (void**)&data) ||
      data_len < at + len || (len > 0 && data == NULL)) {
    return false;
  }
  if (len > 0) memcpy(data + at, from, len);
  return true;
}

static napi_value detached_error(napi_env env) {
  return make_coded_error(env, "ERR_BUFFER_DETACHED", NULL,
                          "a transfer buffer was detached before its data could be copied back");
}

/* --- Adapter I/O threads (i2cChannel*) ------------------------------------------------------

 * The main thread hands the job over under `lock` and signals `wake` after unlocking, so the woken
 * thread never blocks on the mutex; the thread answers through `done` (uv_async) outside the lock,
 * then, when the owner gave one, adds 1 to `wake_fd`: an owner blocked in epoll_wait on that
 * eventfd learns that its event loop has `done` to run (the uv_async alone would wait for the loop).
 * The struct lives until both the uv_close callback ran and the JS handle was finalized. The
 * thread is joined before `done` is closed, so it can never signal a closed handle. */

typedef struct {
  i2c_job_t job;
  napi_env env;
  napi_ref callback;
  napi_ref exchange; /* the JS buffer the last job came from, its results go back to */
  napi_async_context context;
  napi_async_cleanup_hook_handle cleanup;
  uv_async_t done;
  int wake_fd; /* -1, or the owner's eventfd, written after each `done` (the owner keeps it open) */
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  bool thread_started;
  bool queued;   /* under lock: a job waits for the thread */
  bool finished; /* under lock: the thread finished a job */
  bool stopping; /* under lock: the thread must exit */
  bool busy;     /* main thread: submitted, its callback not called yet */
  bool calling;  /* main thread: inside the callback (which may close the channel) */
  bool closed;
  bool uv_closed;
  bool js_finalized;
} i2c_channel_t;

static const napi_type_tag I2C_CHANNEL_TAG = {0x6932634368616e6eULL, 0x76686f7374693263ULL};

static void* channel_thread(void* arg) {
  i2c_channel_t* ch = arg;
  pthread_mutex_lock(&ch->lock);
  for (;;) {
    while (!ch->queued && !ch->stopping) pthread_cond_wait(&ch->wake, &ch->lock);
    if (ch->stopping) break;
    ch->queued = false;
    pthread_mutex_unlock(&ch->lock);
    i2c_job_run(&ch->job);
    pthread_mutex_lock(&ch->lock);
    ch->finished = true;
    bool stopping = ch->stopping;
    pthread_mutex_unlock(&ch->lock);
    if (!stopping) {
      uv_async_send(&ch->done);
      /* After the uv_async, so the loop the owner turns on this wake-up finds `done` pending. A
       * full counter (EAGAIN) means the owner has wake-ups pending already. */
      uint64_t one = 1;
      if (ch->wake_fd >= 0) (void)eventfd_io(ch->wake_fd, &one, true);
    }
    pthread_mutex_lock(&ch->lock);
  }
  pthread_mutex_unlock(&ch->lock);
  return NULL;
}

static void channel_maybe_free(i2c_channel_t* ch) {
  if (!ch->uv_closed || !ch->js_finalized) return;
  pthread_mutex_destroy(&ch->lock);
  pthread_cond_destroy(&ch->wake);
  free(ch->job.storage);
  free(ch);
}

static void channel_on_close(uv_handle_t* handle) {
  i2c_channel_t* ch = handle->data;
  ch->uv_closed = true;
  /* Also what tells an environment being torn down that this channel is done. */
  if (ch->cleanup != NULL) napi_remove_async_cleanup_hook(ch->cleanup);
  ch->cleanup = NULL;
  channel_maybe_free(ch);
}

static void channel_release_js(napi_env env, i2c_channel_t* ch) {
  if (ch->callback != NULL) napi_delete_reference(env, ch->callback);
  if (ch->exchange != NULL) napi_delete_reference(env, ch->exchange);
  if (ch->context != NULL) napi_async_destroy(env, ch->context);
  ch->callback = ch->exchange = NULL;
  ch->context = NULL;
}

/* Stops and joins the thread (it is idle unless the owner closes with a transfer in flight, which
 * then finishes first), drops the JS references (after the callback, when it is the one closing)
 * and closes `done`. Idempotent. */
static void channel_close(napi_env env, i2c_channel_t* ch) {
  if (ch->closed) return;
  ch->closed = true;
  if (ch->thread_started) {
    pthread_mutex_lock(&ch->lock);
    ch->stopping = true;
    pthread_mutex_unlock(&ch->lock);
    pthread_cond_signal(&ch->wake);
    pthread_join(ch->thread, NULL);
  }
  if (!ch->calling) channel_release_js(env, ch);
  uv_close((uv_handle_t*)&ch->done, channel_on_close);
}

static void channel_finalize(napi_env env, void* data, void* hint) {
  (void)hint;
  i2c_channel_t* ch = data;
  channel_close(env, ch);
  ch->js_finalized = true;
  channel_maybe_free(ch);
}

static void channel_env_cleanup(napi_async_cleanup_hook_handle handle, void* data) {
  (void)handle;
  i2c_channel_t* ch = data;
  channel_close(ch->env, ch); /* channel_on_close removes the hook */
}

/* The result of the job, copied back into the exchange buffer, as the callback's argument. */
static napi_value channel_result(napi_env env, i2c_channel_t* ch) {
  napi_value error = i2c_job_error(env, &ch->job);
  if (error != NULL) return error;
  napi_value exchange = NULL;
  napi_get_reference_value(env, ch->exchange, &exchange);
  const i2c_job_t* job = &ch->job;
  bool copied = job->smbus
                    ? copy_back(env, exchange, 0, (const uint8_t*)&job->data, SMBUS_DATA_SIZE)
                    : copy_back(env, exchange, I2C_EXCHANGE_HEADER, job->storage, job->total) &&
                          copy_back(env, exchange, I2C_EXCHANGE_SENT, (const uint8_t*)&job->sent,
                                    sizeof job->sent);
  if (!copied) return detached_error(env);
  napi_value null_value;
  napi_get_null(env, &null_value);
  return null_value;
}

static void channel_on_done(uv_async_t* handle) {
  i2c_channel_t* ch = handle->data;
  pthread_mutex_lock(&ch->lock); /* also makes the thread's writes to the job visible here */
  bool finished = ch->finished;
  ch->finished = false;
  pthread_mutex_unlock(&ch->lock);
  if (!finished || !ch->busy || ch->closed) return;
  ch->busy = false;
  uv_unref((uv_handle_t*)&ch->done);
  napi_env env = ch->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value result = channel_result(env, ch);
  ch->calling = true;
  call_from_loop(env, ch->context, ch->callback, 1, &result);
  ch->calling = false;
  if (ch->closed) channel_release_js(env, ch); /* closed by its own callback */
  napi_close_handle_scope(env, scope);
}

/* Starts the thread with every signal blocked, so signals keep going to the main thread. */
static int channel_start_thread(i2c_channel_t* ch) {
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  int rc = pthread_create(&ch->thread, &attr, channel_thread, ch);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  if (rc == 0) {
    ch->thread_started = true;
    pthread_setname_np(ch->thread, "i2c-io");
  }
  return rc;
}

/* i2cChannelOpen(fd, callback, wakeFd?): the adapter's I/O thread; wakeFd undefined or -1: none. */
static napi_value js_i2c_channel_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  uv_loop_t* loop;
  if (!get_fd_callback_loop(env, info, argv, &fd, &loop)) return NULL;
  size_t argc = 3; /* napi fills the slots past the arguments given with undefined */
  napi_valuetype wake_type;
  int64_t wake_fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok ||
      napi_typeof(env, argv[2], &wake_type) != napi_ok ||
      (wake_type != napi_undefined &&
       !get_int_in(env, argv[2], "wakeFd", -1, INT32_MAX, &wake_fd))) {
    return NULL;
  }
  i2c_channel_t* ch = calloc(1, sizeof *ch);
  if (ch == NULL) return throw_errno(env, "malloc", ENOMEM);
  ch->env = env;
  ch->wake_fd = (int)wake_fd;
  ch->job.fd = fd;
  ch->done.data = ch;
  pthread_mutex_init(&ch->lock, NULL);
  pthread_cond_init(&ch->wake, NULL);
  int rc = uv_async_init(loop, &ch->done, channel_on_done);
  if (rc != 0) {
    ch->uv_closed = ch->js_finalized = true;
    channel_maybe_free(ch);
    return throw_errno(env, "uv_async_init", -rc);
  }
  uv_unref((uv_handle_t*)&ch->done); /* only a transfer in flight keeps the process alive */
  napi_value name, handle = NULL;
  napi_create_string_utf8(env, "I2cChannel", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, argv[1], 1, &ch->callback) != napi_ok ||
      napi_async_init(env, NULL, name, &ch->context) != napi_ok) {
    ch->js_finalized = true; /* no JS handle will ever finalize it */
    channel_close(env, ch);
    return NULL;
  }
  rc = channel_start_thread(ch);
  if (rc != 0) {
    ch->js_finalized = true;
    channel_close(env, ch);
    return throw_errno(env, "pthread_create", rc);
  }
  if ((handle = make_handle(env, ch, channel_finalize, &I2C_CHANNEL_TAG)) == NULL) {
    ch->js_finalized = true;
    channel_close(env, ch);
    return NULL;
  }
  napi_add_async_cleanup_hook(env, channel_env_cleanup, ch, &ch->cleanup);
  return handle; /* its finalizer owns `ch` from here on */
}

/* The channel of a submitting call, open and idle. */
static i2c_channel_t* get_idle_channel(napi_env env, napi_value value) {
  i2c_channel_t* ch = get_handle(env, value, &I2C_CHANNEL_TAG, "channel must be an I2cChannel");
  if (ch == NULL) return NULL;
  if (ch->closed) {
    napi_throw(env, make_coded_error(env, "ERR_I2C_CHANNEL_CLOSED", NULL,
                                     "the I2C channel was closed"));
    return NULL;
  }
  if (ch->busy) {
    throw_errno(env, "i2c channel", EBUSY);
    return NULL;
  }
  return ch;
}

/* Hands the job to the thread; `exchange` is where its results go back to. */
static napi_value channel_submit(napi_env env, i2c_channel_t* ch, napi_value exchange) {
  napi_value previous = NULL;
  bool same = false;
  if (ch->exchange != NULL) napi_get_reference_value(env, ch->exchange, &previous);
  if (previous != NULL) napi_strict_equals(env, previous, exchange, &same);
  if (!same) {
    napi_ref ref;
    if (napi_create_reference(env, exchange, 1, &ref) != napi_ok) return NULL;
    if (ch->exchange != NULL) napi_delete_reference(env, ch->exchange);
    ch->exchange = ref;
  }
  pthread_mutex_lock(&ch->lock);
  ch->queued = true;
  pthread_mutex_unlock(&ch->lock);
  pthread_cond_signal(&ch->wake);
  ch->busy = true;
  uv_ref((uv_handle_t*)&ch->done);
  return make_undefined(env);
}

/* i2cChannelRdwr(channel, exchange, count): one I2C_RDWR of `count` messages laid out in the
 * exchange buffer; their bytes come back into it before the callback. */
static napi_value js_i2c_channel_rdwr(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint8_t* data;
  size_t len;
  int64_t count;
  i2c_channel_t* ch;
  if (!get_args(env, info, 3, argv) ||
      !get_int_in(env, argv[2], "count", 1, I2C_RDWR_IOCTL_MAX_MSGS, &count) ||
      (ch = get_idle_channel(env, argv[0])) == NULL ||
      !get_exchange(env, argv[1], I2C_EXCHANGE_HEADER, &data, &len)) {
    return NULL;
  }
  i2c_job_t* job = &ch->job;
  if (!i2c_job_take_messages(env, job, data, len, (uint32_t)count)) return NULL;
  if (!i2c_job_reserve(job)) return throw_errno(env, "malloc", ENOMEM);
  i2c_job_point_messages(job, job->storage);
  if (job->total > 0) memcpy(job->storage, data + I2C_EXCHANGE_HEADER, job->total);
  return channel_submit(env, ch, argv[1]);
}

/* i2cChannelSmbus(channel, exchange, addr, readWrite, command, size): I2C_SLAVE then I2C_SMBUS
 * with the 34-byte i2c_smbus_data at the start of the exchange buffer, copied back before the
 * callback. */
static napi_value js_i2c_channel_smbus(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  uint8_t* data;
  size_t len;
  i2c_channel_t* ch;
  if (!get_args(env, info, 6, argv) ||
      (ch = get_idle_channel(env, argv[0])) == NULL ||
      !get_exchange(env, argv[1], SMBUS_DATA_SIZE, &data, &len) ||
      !get_smbus_command(env, argv + 2, &ch->job)) {
    return NULL;
  }
  memcpy(&ch->job.data, data, SMBUS_DATA_SIZE);
  return channel_submit(env, ch, argv[1]);
}

/* i2cChannelClose(channel): joins the thread; the fd stays open (the caller closes it after). */
static napi_value js_i2c_channel_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  i2c_channel_t* ch;
  if (!get_args(env, info, 1, argv) ||
      (ch = get_handle(env, argv[0], &I2C_CHANNEL_TAG, "channel must be an I2cChannel")) == NULL) {
    return NULL;
  }
  channel_close(env, ch);
  return make_undefined(env);
}

/* --- Inline transfers (i2cRdwr, i2cSmbus) ----------------------------------------------------

 * The same jobs, run on the calling thread: for a thread that may block (a data-plane worker),
 * never for an event loop. The job lives on the stack; a failure is thrown as the errno error a
 * channel's callback would get. */

/* The end of an inline job: undefined, or its errno error thrown. */
static napi_value i2c_job_settle_inline(napi_env env, const i2c_job_t* job) {
  napi_value error = i2c_job_error(env, job);
  if (error != NULL) {
    napi_throw(env, error);
    return NULL;
  }
  return make_undefined(env);
}

/* i2cRdwr(fd, exchange, count): one I2C_RDWR of `count` messages laid out in the exchange buffer,
 * run in place: read bytes land in the buffer directly. */
static napi_value js_i2c_rdwr(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  uint8_t* data;
  size_t len;
  int64_t count;
  i2c_job_t job = {0};
  if (!get_args(env, info, 3, argv) ||
      !get_int_in(env, argv[2], "count", 1, I2C_RDWR_IOCTL_MAX_MSGS, &count) ||
      !get_fd(env, argv[0], &fd) ||
      !get_exchange(env, argv[1], I2C_EXCHANGE_HEADER, &data, &len) ||
      !i2c_job_take_messages(env, &job, data, len, (uint32_t)count)) {
    return NULL;
  }
  job.fd = fd;
  i2c_job_point_messages(&job, data + I2C_EXCHANGE_HEADER);
  i2c_job_run(&job);
  memcpy(data + I2C_EXCHANGE_SENT, &job.sent, sizeof job.sent);
  return i2c_job_settle_inline(env, &job);
}

/* i2cSmbus(fd, exchange, addr, readWrite, command, size): I2C_SLAVE then I2C_SMBUS with the
 * i2c_smbus_data at the start of the exchange buffer, copied back when it succeeded. */
static napi_value js_i2c_smbus(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int fd;
  uint8_t* data;
  size_t len;
  i2c_job_t job = {0};
  if (!get_args(env, info, 6, argv) || !get_fd(env, argv[0], &fd) ||
      !get_exchange(env, argv[1], SMBUS_DATA_SIZE, &data, &len) ||
      !get_smbus_command(env, argv + 2, &job)) {
    return NULL;
  }
  job.fd = fd;
  memcpy(&job.data, data, SMBUS_DATA_SIZE);
  i2c_job_run(&job);
  if (job.err == 0) memcpy(data, &job.data, SMBUS_DATA_SIZE);
  return i2c_job_settle_inline(env, &job);
}

/* ---------------------------------------------------------------------------------------------
 * Files relative to a directory fd
 *
 * Paths the daemon does not own are resolved one component at a time from a directory fd the
 * caller has checked, so nothing is followed through a link or looked up twice by name. Every call
 * takes a single name (no '/'); the caller decides what is trusted.
 * ------------------------------------------------------------------------------------------- */

/* A directory fd argument: an fd, or AT_FDCWD (-100) for the working directory. */
static bool get_dir_fd(napi_env env, napi_value value, int* fd) {
  int64_t v;
  if (!get_int_in(env, value, "dirFd", AT_FDCWD, INT32_MAX, &v)) return false;
  *fd = (int)v;
  return true;
}

/* (dirFd, name, ...) of a call on one directory entry; the caller frees *name. */
static bool get_dir_and_name(napi_env env, napi_value* argv, int* dir_fd, char** name) {
  if (!get_dir_fd(env, argv[0], dir_fd)) return false;
  *name = get_string(env, argv[1], "name");
  return *name != NULL;
}

/* (dirFd, name) of a call that takes just that; on success the caller frees *name. */
static bool get_only_dir_and_name(napi_env env, napi_callback_info info, int* dir_fd, char** name) {
  napi_value argv[2];
  *name = NULL;
  if (!get_args(env, info, 2, argv) || !get_dir_and_name(env, argv, dir_fd, name)) {
    free(*name);
    return false;
  }
  return true;
}

/* The end of a call on one entry: frees its name, then undefined, or the errno of `rc` thrown. */
static napi_value done_at(napi_env env, int rc, char* name, const char* syscall) {
  free_keeping_errno(name);
  if (rc != 0) return throw_errno(env, syscall, errno);
  return make_undefined(env);
}

/* [st_mode, st_uid, st_gid, st_nlink, st_dev, st_ino, st_size] */
static napi_value make_stat(napi_env env, const struct stat* st) {
  napi_value result;
  if (napi_create_array_with_length(env, 7, &result) != napi_ok) return NULL;
  const double values[7] = {(double)st->st_mode, (double)st->st_uid,  (double)st->st_gid,
                            (double)st->st_nlink, (double)st->st_dev, (double)st->st_ino,
                            (double)st->st_size};
  for (uint32_t i = 0; i < 7; i++) napi_set_element(env, result, i, make_double(env, values[i]));
  return result;
}

/* openAt(dirFd, name, flags, mode): openat(2), always O_CLOEXEC. */
static napi_value js_open_at(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int dir_fd;
  char* name = NULL;
  int64_t flags, mode;
  if (!get_args(env, info, 4, argv) || !get_dir_and_name(env, argv, &dir_fd, &name) ||
      !get_int_in(env, argv[2], "flags", 0, INT32_MAX, &flags) ||
      !get_int_in(env, argv[3], "mode", 0, 07777, &mode)) {
    free(name);
    return NULL;
  }
  int fd;
  do {
    fd = openat(dir_fd, name, (int)flags | O_CLOEXEC, (mode_t)mode);
  } while (fd < 0 && errno == EINTR);
  free_keeping_errno(name);
  return fd_or_throw(env, fd, "openat");
}

/* statAt(dirFd, name): fstatat(2) without following a final link; see make_stat. */
static napi_value js_stat_at(napi_env env, napi_callback_info info) {
  int dir_fd;
  char* name;
  if (!get_only_dir_and_name(env, info, &dir_fd, &name)) return NULL;
  struct stat st;
  int rc = fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW);
  free_keeping_errno(name);
  if (rc != 0) return throw_errno(env, "fstatat", errno);
  return make_stat(env, &st);
}

/* fstat(fd); see make_stat. */
static napi_value js_fstat(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_only_fd(env, info, &fd)) return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) return throw_errno(env, "fstat", errno);
  return make_stat(env, &st);
}

/* readlinkAt(dirFd, name): the target of a symbolic link. */
static napi_value js_readlink_at(napi_env env, napi_callback_info info) {
  int dir_fd;
  char* name;
  if (!get_only_dir_and_name(env, info, &dir_fd, &name)) return NULL;
  char target[4096];
  ssize_t n = readlinkat(dir_fd, name, target, sizeof target);
  free_keeping_errno(name);
  if (n < 0) return throw_errno(env, "readlinkat", errno);
  if ((size_t)n >= sizeof target) return throw_errno(env, "readlinkat", ENAMETOOLONG);
  napi_value result;
  napi_create_string_utf8(env, target, (size_t)n, &result);
  return result;
}

/* (dirFd, name, mode) of mkdirAt and chmodAt; on success the caller frees *name. */
static bool get_dir_name_mode(napi_env env, napi_callback_info info, int* dir_fd, char** name,
                              mode_t* mode) {
  napi_value argv[3];
  int64_t value;
  *name = NULL;
  if (!get_args(env, info, 3, argv) || !get_dir_and_name(env, argv, dir_fd, name) ||
      !get_int_in(env, argv[2], "mode", 0, 07777, &value)) {
    free(*name);
    return false;
  }
  *mode = (mode_t)value;
  return true;
}

/* mkdirAt(dirFd, name, mode) */
static napi_value js_mkdir_at(napi_env env, napi_callback_info info) {
  int dir_fd;
  char* name;
  mode_t mode;
  if (!get_dir_name_mode(env, info, &dir_fd, &name, &mode)) return NULL;
  return done_at(env, mkdirat(dir_fd, name, mode), name, "mkdirat");
}

/* unlinkAt(dirFd, name, removeDir) */
static napi_value js_unlink_at(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int dir_fd;
  char* name = NULL;
  bool remove_dir = false;
  if (!get_args(env, info, 3, argv) || !get_dir_and_name(env, argv, &dir_fd, &name)) {
    free(name);
    return NULL;
  }
  if (napi_get_value_bool(env, argv[2], &remove_dir) != napi_ok) {
    free(name);
    return throw_type(env, "removeDir must be a boolean");
  }
  return done_at(env, unlinkat(dir_fd, name, remove_dir ? AT_REMOVEDIR : 0), name, "unlinkat");
}

/* renameAt(fromDirFd, fromName, toDirFd, toName, noReplace): renameat2, RENAME_NOREPLACE when asked. */
static napi_value js_rename_at(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int from_dir, to_dir;
  char* from = NULL;
  char* to = NULL;
  bool no_replace = false;
  if (!get_args(env, info, 5, argv) || !get_dir_and_name(env, argv, &from_dir, &from) ||
      !get_dir_and_name(env, argv + 2, &to_dir, &to) ||
      napi_get_value_bool(env, argv[4], &no_replace) != napi_ok) {
    free(from);
    free(to);
    if (to != NULL) return throw_type(env, "noReplace must be a boolean");
    return NULL;
  }
  int rc = renameat2(from_dir, from, to_dir, to, no_replace ? RENAME_NOREPLACE : 0);
  int err = errno;
  free(from);
  free(to);
  if (rc != 0) return throw_errno(env, "renameat2", err);
  return make_undefined(env);
}

/* chownAt(dirFd, name, uid, gid): fchownat without following a final link (-1 keeps an id). */
static napi_value js_chown_at(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int dir_fd;
  char* name = NULL;
  int64_t uid, gid;
  if (!get_args(env, info, 4, argv) || !get_dir_and_name(env, argv, &dir_fd, &name) ||
      !get_int_in(env, argv[2], "uid", -1, UINT32_MAX - 1, &uid) ||
      !get_int_in(env, argv[3], "gid", -1, UINT32_MAX - 1, &gid)) {
    free(name);
    return NULL;
  }
  return done_at(env, fchownat(dir_fd, name, (uid_t)uid, (gid_t)gid, AT_SYMLINK_NOFOLLOW), name, "fchownat");
}

/* chmodAt(dirFd, name, mode): fchmodat. It follows a final link (Linux has no other way to change
 * a socket file's mode), so callers use it only inside a directory nobody else can write to. */
static napi_value js_chmod_at(napi_env env, napi_callback_info info) {
  int dir_fd;
  char* name;
  mode_t mode;
  if (!get_dir_name_mode(env, info, &dir_fd, &name, &mode)) return NULL;
  return done_at(env, fchmodat(dir_fd, name, mode, 0), name, "fchmodat");
}

/* ---------------------------------------------------------------------------------------------
 * Module
 * ------------------------------------------------------------------------------------------- */

/* flock(fd, LOCK_EX|LOCK_SH [|LOCK_NB]) or LOCK_UN: advisory whole-file lock. Returns true when
 * taken (or released), false when LOCK_NB found it held (EWOULDBLOCK). */
static napi_value js_flock(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int64_t op;
  if (!get_args(env, info, 2, argv) || !get_fd(env, argv[0], &fd) ||
      !get_int_in(env, argv[1], "op", 0, LOCK_SH | LOCK_EX | LOCK_NB | LOCK_UN, &op)) {
    return NULL;
  }
  int rc;
  do {
    rc = flock(fd, (int)op);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EWOULDBLOCK) return throw_errno(env, "flock", errno);
  napi_value result;
  napi_get_boolean(env, rc == 0, &result);
  return result;
}

/* ---------------------------------------------------------------------------------------------
 * Datagram Unix sockets (service-manager notification) and inherited sockets
 * ------------------------------------------------------------------------------------------- */

/* datagramBind(path): a nonblocking SOCK_DGRAM socket bound to path (or an abstract "@name"). */
static napi_value js_datagram_bind(napi_env env, napi_callback_info info) {
  struct sockaddr_un addr;
  socklen_t addr_len;
  if (!get_only_sockaddr(env, info, &addr, &addr_len, "bind", true)) return NULL;
  int fd = bound_socket(env, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, &addr, addr_len);
  return fd < 0 ? NULL : make_int(env, fd);
}

/* datagramSend(path, buf): one datagram from a fresh unbound socket; returns the bytes sent. */
static napi_value js_datagram_send(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  struct sockaddr_un addr;
  socklen_t addr_len;
  uint8_t* data;
  size_t len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2) return throw_type(env, "datagramSend(path, buf[, fds])");
  if (!fill_sockaddr(env, argv[0], &addr, &addr_len, "sendto", true) ||
      !get_u8(env, argv[1], "buf", &data, &len)) {
    return NULL;
  }
  uint32_t count = 0;
  if (argc >= 3 && !get_array(env, argv[2], "fds must be an array", &count)) return NULL;
  if (count > SEND_MAX_FDS) return throw_range(env, "at most 253 fds per message");
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(SEND_MAX_FDS * sizeof(int))];
  } control;
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg;
  init_msghdr(&msg, &iov, NULL, 0);
  msg.msg_name = &addr;
  msg.msg_namelen = addr_len;
  if (argc >= 3 && !attach_fds(env, &msg, control.buf, argv[2], count)) return NULL;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (n < 0) return throw_errno(env, "sendto", err);
  return make_int(env, n);
}

/* dup(fd): a new close-on-exec fd for the same open file. */
static napi_value js_dup(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_only_fd(env, info, &fd)) return NULL;
  return fd_or_throw(env, fcntl(fd, F_DUPFD_CLOEXEC, 3), "fcntl");
}

/* datagramRecv(fd, buf): one datagram into buf; its length (truncated to buf), or -1 when none. */
static napi_value js_datagram_recv(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint8_t* data;
  size_t len;
  if (!get_args(env, info, 2, argv) || !get_fd(env, argv[0], &fd) ||
      !get_u8(env, argv[1], "buf", &data, &len)) {
    return NULL;
  }
  ssize_t n;
  do {
    n = recv(fd, data, len, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return would_block_or_throw(env, "recv");
  return make_int(env, n);
}

/* socketInfo(fd): [SO_DOMAIN, SO_TYPE, SO_ACCEPTCONN] of a socket, so an fd handed over by a
 * service manager can be checked before it is served. */
static napi_value js_socket_info(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_only_fd(env, info, &fd)) return NULL;
  static const int options[3] = {SO_DOMAIN, SO_TYPE, SO_ACCEPTCONN};
  napi_value result;
  if (napi_create_array_with_length(env, 3, &result) != napi_ok) return NULL;
  for (uint32_t i = 0; i < 3; i++) {
    int value = 0;
    socklen_t size = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, options[i], &value, &size) != 0) {
      return throw_errno(env, "getsockopt", errno);
    }
    napi_set_element(env, result, i, make_int(env, value));
  }
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor properties[] = {
      {"close", NULL, js_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"exitNow", NULL, js_exit_now, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketListen", NULL, js_socket_listen, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketAccept", NULL, js_socket_accept, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketConnect", NULL, js_socket_connect, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketPair", NULL, js_socket_pair, NULL, NULL, NULL, napi_enumerable, NULL},
      {"recvMsg", NULL, js_recv_msg, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendMsg", NULL, js_send_msg, NULL, NULL, NULL, napi_enumerable, NULL},
      {"eventfd", NULL, js_eventfd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"eventfdRead", NULL, js_eventfd_read, NULL, NULL, NULL, napi_enumerable, NULL},
      {"eventfdWrite", NULL, js_eventfd_write, NULL, NULL, NULL, napi_enumerable, NULL},
      {"waitReadable", NULL, js_wait_readable, NULL, NULL, NULL, napi_enumerable, NULL},
      {"memfdCreate", NULL, js_memfd_create, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ftruncate", NULL, js_ftruncate, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fileSeals", NULL, js_file_seals, NULL, NULL, NULL, napi_enumerable, NULL},
      {"addSeals", NULL, js_add_seals, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fdInfo", NULL, js_fd_info, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setNonBlocking", NULL, js_set_nonblocking, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mmap", NULL, js_mmap, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mappingView", NULL, js_mapping_view, NULL, NULL, NULL, napi_enumerable, NULL},
      {"munmap", NULL, js_munmap, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pollCreate", NULL, js_poll_create, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pollStart", NULL, js_poll_start, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pollStop", NULL, js_poll_stop, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pollClose", NULL, js_poll_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"i2cOpen", NULL, js_i2c_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"i2cFuncs", NULL, js_i2c_funcs, NULL, NULL, NULL, napi_enumerable, NULL},
      {"i2cSetSlave", NULL, js_i2c_set_slave, NULL, NULL, NULL, napi_enumerable, NULL},
      {"i2cChannelOpen", NULL, js_i2c_channel_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"i2cChannelRdwr", NULL, js_i2c_channel_rdwr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"i2cChannelSmbus", NULL, js_i2c_channel_smbus, NULL, NULL, NULL, napi_enumerable, NULL},
      {"i2cChannelClose", NULL, js_i2c_channel_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"i2cRdwr", NULL, js_i2c_rdwr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"i2cSmbus", NULL, js_i2c_smbus, NULL, NULL, NULL, napi_enumerable, NULL},
      {"epollCreate", NULL, js_epoll_create, NULL, NULL, NULL, napi_enumerable, NULL},
      {"epollCtl", NULL, js_epoll_ctl, NULL, NULL, NULL, napi_enumerable, NULL},
      {"epollWait", NULL, js_epoll_wait, NULL, NULL, NULL, napi_enumerable, NULL},
      {"flock", NULL, js_flock, NULL, NULL, NULL, napi_enumerable, NULL},
      {"datagramBind", NULL, js_datagram_bind, NULL, NULL, NULL, napi_enumerable, NULL},
      {"datagramSend", NULL, js_datagram_send, NULL, NULL, NULL, napi_enumerable, NULL},
      {"dup", NULL, js_dup, NULL, NULL, NULL, napi_enumerable, NULL},
      {"datagramRecv", NULL, js_datagram_recv, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketInfo", NULL, js_socket_info, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketPeerCred", NULL, js_socket_peer_cred, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketPeerGroups", NULL, js_socket_peer_groups, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketName", NULL, js_socket_name, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openAt", NULL, js_open_at, NULL, NULL, NULL, napi_enumerable, NULL},
      {"statAt", NULL, js_stat_at, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fstat", NULL, js_fstat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readlinkAt", NULL, js_readlink_at, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mkdirAt", NULL, js_mkdir_at, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unlinkAt", NULL, js_unlink_at, NULL, NULL, NULL, napi_enumerable, NULL},
      {"renameAt", NULL, js_rename_at, NULL, NULL, NULL, napi_enumerable, NULL},
      {"chownAt", NULL, js_chown_at, NULL, NULL, NULL, napi_enumerable, NULL},
      {"chmodAt", NULL, js_chmod_at, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof properties / sizeof properties[0],
                             properties) != napi_ok) {
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
