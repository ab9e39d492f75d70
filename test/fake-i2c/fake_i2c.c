/*
 * libfakei2c.so: an LD_PRELOAD fake of Linux /dev/i2c-N character devices, for testing the
 * host-adapter path (HostBus, I2cDev, the native addon) without I2C hardware.
 *
 * It owns: the emulated adapters, devices and the operation log. It must not touch anything that is
 * not a configured /dev/i2c-N path or an fd it handed out: every other open/openat/close/ioctl goes to
 * the real libc function (dlsym(RTLD_NEXT)), untouched.
 *
 * Build: make -C test/fake-i2c   (gcc -shared -fPIC -O2 -Wall -Wextra -Werror ... -ldl)
 *
 * Environment
 *   FAKE_I2C_CONFIG  path of the configuration file (unset: the library does nothing at all)
 *   FAKE_I2C_LOG     path of the operation log (appended, one write(2) per line; unset: no log)
 *
 * Configuration: one directive per line, fields separated by spaces, '#' starts a comment.
 * Numbers are decimal or 0x-prefixed hex. Addresses are 7-bit.
 *   adapter N funcs=SPEC     /dev/i2c-N exists. SPEC is a '|'-separated union of numbers and names:
 *                            i2c (I2C_FUNC_I2C), emul (I2C_FUNC_SMBUS_EMUL), quick, read-byte,
 *                            write-byte, read-byte-data, write-byte-data, read-word-data,
 *                            write-word-data, proc-call, read-block-data, write-block-data,
 *                            read-i2c-block, write-i2c-block.
 *                            A plain I2C adapter is "i2c|emul", an SMBus-only controller "emul".
 *   device N ADDR [pattern=index|0xNN] [hexfile=PATH]
 *                            a 256-byte memory with an 8-bit pointer (24c02-like): the first byte of
 *                            every write message sets the pointer, further bytes are stored at the
 *                            pointer, reads return bytes from the pointer; the pointer wraps at 256.
 *                            Initial content: byte i = i (pattern=index, the default), every byte
 *                            0xNN, or the whitespace-separated hex bytes of PATH from offset 0.
 *   busy N ADDR              a kernel driver owns ADDR: I2C_SLAVE (not I2C_SLAVE_FORCE) gives EBUSY
 *   error N ADDR ERRNO       every message to ADDR fails with ERRNO (a name such as EIO or a number)
 *   nozerolen N              the adapter refuses zero-length I2C_RDWR messages with EOPNOTSUPP
 *                            (the kernel's I2C_AQ_NO_ZERO_LEN quirk)
 *   rdwr_max N COUNT         an I2C_RDWR carries out at most COUNT messages and returns how many it did,
 *                            the rest untouched (as i2c-virtio does when its virtqueue is full)
 *   delay_us N US            every bus message takes US microseconds (the adapter stays locked): the
 *                            thread sleeps until the transfer's start + (messages so far) x US, with
 *                            a 1 ns timer slack, so the bus time does not grow by the default 50 us
 *                            slack per sleep (what is left is the machine's wake-up latency)
 *   unplug N [ERRNO]         the adapter is removed (hot-unplugged): open() fails with ERRNO (ENOENT
 *                            by default; ENODEV, ENXIO, ... as a driver being torn down gives), and
 *                            every ioctl on an fd opened before fails with ENODEV, as i2c-dev does
 *                            once its adapter is gone (a USB adapter unplugged). Leaving the adapter
 *                            out of the file is the same.
 *   removing N               the adapter's removal has begun (its PCI or platform driver unbound):
 *                            open() fails with ENOENT, but fds opened before keep working, as
 *                            i2c_del_adapter waits for every open fd to close and the driver is still
 *                            there meanwhile. "close" lines log each close of such an fd.
 *
 * Run-time control: the file is the control channel. Before every open of a /dev/i2c-N path and every
 * ioctl on a fake fd, the fake stat()s FAKE_I2C_CONFIG and, when its inode, size or mtime changed,
 * reads it again and applies it to the running process:
 *   - adapters and devices keep their identity: a device that already existed keeps its memory and
 *     pointer (its initial content applies only when it first appears); busy/error/presence, funcs,
 *     nozerolen, delay_us follow the new file; a device no longer listed stops answering (ENXIO);
 *   - an adapter that becomes unplugged (or disappears from the file) kills every fd open on it; when
 *     it is listed again (re-plugged) new opens work, while fds from before the unplug stay dead;
 *   - new adapters may appear (a re-plugged adapter under a new number).
 * Replace the file atomically (write a temporary file, rename it over): a half-written file would be
 * read as a broken configuration. A reload waits for the ioctls in flight and holds new ones back.
 *
 * Behaviour follows i2c-dev and i2c-core: I2C_FUNCS, I2C_SLAVE/I2C_SLAVE_FORCE (per-fd address),
 * I2C_TENBIT/I2C_PEC/I2C_RETRIES/I2C_TIMEOUT (accepted), I2C_RDWR (1..42 messages, len <= 8192,
 * EOPNOTSUPP without I2C_FUNC_I2C, read data copied back only on success) and I2C_SMBUS (every size
 * the kernel emulates except BLOCK_PROC_CALL, each refused with EOPNOTSUPP when its function bit is
 * missing). A message to an address without a device fails with ENXIO, as a NACK does. Transfers on
 * one adapter are serialised by a mutex (ioctls come from several threads). dup()ed fds are not
 * tracked.
 *
 * Log line, one per bus message performed or attempted (and per I2C_SLAVE check):
 *   seq=S adapter=N op=OP addr=0xAA dir=r|w|- len=L data=HEX|- result=ok|ERRNAME
 * S numbers the ioctl call, so all lines of one transfer share it. OP is "slave", "rdwr", the
 * SMBus size ("smbus-quick", "smbus-byte", "smbus-byte-data", "smbus-word-data",
 * "smbus-proc-call", "smbus-block-data", "smbus-i2c-block-data") or "overlap". data is the bytes
 * written, or the bytes read when the message succeeded.
 * "open" (failed opens of an unplugged adapter), "nodev" (an ioctl on an fd of a removed adapter) and
 * "close" (an fd of an adapter being removed closed) lines carry addr 0x00, dir -, and the errno.
 * An "overlap" line (addr 0x00) is written when an ioctl starts on an adapter while another ioctl on
 * it (any fd) is still running. The kernel allows that; the line lets tests prove that a caller
 * serialises its use of the adapter.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/i2c-dev.h>
#include <linux/i2c.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_ADAPTERS 16
#define MAX_DEVICES 64
#define MAX_FDS 256
#define MEM_SIZE 256
#define RDWR_MAX_LEN 8192

struct fake_device {
  int in_use;
  uint16_t addr;
  int busy;       /* I2C_SLAVE gives EBUSY */
  int error;      /* errno for every message, 0 = none */
  int present;    /* answers on the bus */
  uint8_t ptr;
  uint8_t mem[MEM_SIZE];
};

struct fake_adapter {
  int number;
  unsigned long funcs;
  int no_zero_len;
  int rdwr_max; /* messages an I2C_RDWR carries out at most, 0 = all */
  unsigned delay_us;
  pthread_mutex_t bus_lock;
  int in_flight; /* ioctls running on this adapter, under table_lock */
  int unplugged;  /* removed: open fails with open_errno, ioctls on its fds give ENODEV */
  int removing;   /* removal begun: open fails with ENOENT, fds from before keep working */
  int open_errno; /* what open() of an unplugged adapter fails with (ENOENT by default) */
  unsigned generation; /* bumped at each unplug: fds opened before it stay dead after a replug */
  char path[32];
  struct fake_device devices[MAX_DEVICES];
};

struct fake_fd {
  int fd; /* -1 = free slot */
  struct fake_adapter *adapter;
  uint16_t slave;
  unsigned generation; /* the adapter's generation when this fd was opened */
};

/* A parsed configuration. Live adapter slots are never removed or moved (fds point at them). */
struct config_table {
  struct fake_adapter adapters[MAX_ADAPTERS];
  int count;
};

struct bus_msg {
  uint16_t addr;
  int read;
  uint16_t len;
  uint8_t *buf;
};

static struct config_table live;   /* what the fake emulates */
static struct config_table staged; /* the configuration file being read, merged into live */
/* Readers: every open of an adapter and every ioctl on its fds. Writer: a reload. Writers first, so
 * a daemon that keeps the adapter busy cannot starve a reload. */
static pthread_rwlock_t config_lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
} config_stamp;
static struct fake_fd fds[MAX_FDS];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = -1;
static unsigned long next_seq = 1;

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static int (*real_ioctl)(int, unsigned long, ...);

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static const struct {
  const char *name;
  int value;
} errno_names[] = {
    {"EIO", EIO},         {"ENXIO", ENXIO},       {"ETIMEDOUT", ETIMEDOUT}, {"EREMOTEIO", EREMOTEIO},
    {"ENODEV", ENODEV},   {"EAGAIN", EAGAIN},     {"EBUSY", EBUSY},         {"EINVAL", EINVAL},
    {"EPROTO", EPROTO},   {"ENOTTY", ENOTTY},     {"EFAULT", EFAULT},       {"ENOMEM", ENOMEM},
    {"EBADMSG", EBADMSG}, {"EOPNOTSUPP", EOPNOTSUPP}, {"ENOENT", ENOENT},     {"ESHUTDOWN", ESHUTDOWN},
    {"EACCES", EACCES},
};

static const struct {
  const char *name;
  unsigned long bits;
} func_names[] = {
    {"i2c", I2C_FUNC_I2C},
    {"emul", I2C_FUNC_SMBUS_EMUL},
    {"quick", I2C_FUNC_SMBUS_QUICK},
    {"read-byte", I2C_FUNC_SMBUS_READ_BYTE},
    {"write-byte", I2C_FUNC_SMBUS_WRITE_BYTE},
    {"read-byte-data", I2C_FUNC_SMBUS_READ_BYTE_DATA},
    {"write-byte-data", I2C_FUNC_SMBUS_WRITE_BYTE_DATA},
    {"read-word-data", I2C_FUNC_SMBUS_READ_WORD_DATA},
    {"write-word-data", I2C_FUNC_SMBUS_WRITE_WORD_DATA},
    {"proc-call", I2C_FUNC_SMBUS_PROC_CALL},
    {"read-block-data", I2C_FUNC_SMBUS_READ_BLOCK_DATA},
    {"write-block-data", I2C_FUNC_SMBUS_WRITE_BLOCK_DATA},
    {"read-i2c-block", I2C_FUNC_SMBUS_READ_I2C_BLOCK},
    {"write-i2c-block", I2C_FUNC_SMBUS_WRITE_I2C_BLOCK},
};

static const char *errno_name(int err) {
  static __thread char other[16];
  if (err == 0) return "ok";
  for (size_t i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++) {
    if (errno_names[i].value == err) return errno_names[i].name;
  }
  snprintf(other, sizeof other, "E%d", err);
  return other;
}

/* A broken configuration is a broken test: say where and stop the process. */
static void config_fail(int line, const char *what, const char *text) {
  fprintf(stderr, "fake_i2c: %s line %d: %s: %s\n", getenv("FAKE_I2C_CONFIG"), line, what, text);
  abort();
}

static int parse_number(const char *text, unsigned long max, unsigned long *out) {
  char *end;
  if (text == NULL || *text == '\0') return -1;
  errno = 0;
  unsigned long value = strtoul(text, &end, 0);
  if (errno != 0 || *end != '\0' || value > max) return -1;
  *out = value;
  return 0;
}

static struct fake_adapter *find_adapter(struct config_table *table, int number) {
  for (int i = 0; i < table->count; i++) {
    if (table->adapters[i].number == number) return &table->adapters[i];
  }
  return NULL;
}

static int parse_errno(const char *text, int line) {
  unsigned long value;
  for (size_t i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++) {
    if (strcmp(text, errno_names[i].name) == 0) return errno_names[i].value;
  }
  if (parse_number(text, 4095, &value) != 0 || value == 0) config_fail(line, "bad errno", text);
  return (int)value;
}

static struct fake_device *find_device(struct fake_adapter *adapter, uint16_t addr) {
  for (int i = 0; i < MAX_DEVICES; i++) {
    if (adapter->devices[i].in_use && adapter->devices[i].addr == addr) return &adapter->devices[i];
  }
  return NULL;
}

static struct fake_device *device_slot(struct fake_adapter *adapter, uint16_t addr, int line) {
  struct fake_device *device = find_device(adapter, addr);
  if (device != NULL) return device;
  for (int i = 0; i < MAX_DEVICES; i++) {
    if (!adapter->devices[i].in_use) {
      device = &adapter->devices[i];
      memset(device, 0, sizeof *device);
      device->in_use = 1;
      device->addr = addr;
      return device;
    }
  }
  config_fail(line, "too many devices", "");
  return NULL;
}

static unsigned long parse_funcs(const char *spec, int line) {
  unsigned long funcs = 0;
  char copy[256];
  snprintf(copy, sizeof copy, "%s", spec);
  char *save = NULL;
  for (char *part = strtok_r(copy, "|", &save); part != NULL; part = strtok_r(NULL, "|", &save)) {
    unsigned long value;
    int known = 0;
    for (size_t i = 0; i < sizeof func_names / sizeof func_names[0]; i++) {
      if (strcmp(part, func_names[i].name) == 0) {
        funcs |= func_names[i].bits;
        known = 1;
      }
    }
    if (!known) {
      if (parse_number(part, 0xffffffffUL, &value) != 0) config_fail(line, "unknown function", part);
      funcs |= value;
    }
  }
  return funcs;
}

static void load_hex_file(struct fake_device *device, const char *path, int line) {
  FILE *file = fopen(path, "re");
  if (file == NULL) config_fail(line, "cannot open hex file", path);
  unsigned value;
  size_t offset = 0;
  while (offset < MEM_SIZE && fscanf(file, "%x", &value) == 1) device->mem[offset++] = (uint8_t)value;
  fclose(file);
}

static void parse_device(struct fake_adapter *adapter, char **fields, int count, int line) {
  unsigned long addr;
  if (count < 3 || parse_number(fields[2], 0x7f, &addr) != 0) config_fail(line, "bad address", fields[0]);
  struct fake_device *device = device_slot(adapter, (uint16_t)addr, line);
  device->present = 1;
  for (int i = 0; i < MEM_SIZE; i++) device->mem[i] = (uint8_t)i;
  for (int f = 3; f < count; f++) {
    unsigned long fill;
    if (strcmp(fields[f], "eeprom") == 0 || strcmp(fields[f], "pattern=index") == 0) continue;
    if (strncmp(fields[f], "pattern=", 8) == 0 && parse_number(fields[f] + 8, 0xff, &fill) == 0) {
      memset(device->mem, (int)fill, MEM_SIZE);
    } else if (strncmp(fields[f], "hexfile=", 8) == 0) {
      load_hex_file(device, fields[f] + 8, line);
    } else {
      config_fail(line, "unknown device option", fields[f]);
    }
  }
}

static void parse_line(struct config_table *table, char *text, int line) {
  char *fields[8];
  int count = 0;
  char *save = NULL;
  char *hash = strchr(text, '#');
  if (hash != NULL) *hash = '\0';
  for (char *f = strtok_r(text, " \t\r\n", &save); f != NULL && count < 8; f = strtok_r(NULL, " \t\r\n", &save)) {
    fields[count++] = f;
  }
  if (count == 0) return;
  unsigned long number;
  if (count < 2 || parse_number(fields[1], 0xfffff, &number) != 0) config_fail(line, "bad adapter number", fields[0]);
  if (strcmp(fields[0], "adapter") == 0) {
    if (count != 3 || strncmp(fields[2], "funcs=", 6) != 0) config_fail(line, "expected funcs=", fields[0]);
    if (find_adapter(table, (int)number) != NULL) config_fail(line, "adapter defined twice", fields[1]);
    if (table->count == MAX_ADAPTERS) config_fail(line, "too many adapters", fields[1]);
    struct fake_adapter *adapter = &table->adapters[table->count++];
    adapter->number = (int)number;
    adapter->funcs = parse_funcs(fields[2] + 6, line);
    return;
  }
  struct fake_adapter *adapter = find_adapter(table, (int)number);
  if (adapter == NULL) config_fail(line, "adapter not defined yet", fields[1]);
  unsigned long value;
  if (strcmp(fields[0], "device") == 0) {
    parse_device(adapter, fields, count, line);
  } else if (strcmp(fields[0], "busy") == 0) {
    if (count != 3 || parse_number(fields[2], 0x7f, &value) != 0) config_fail(line, "bad address", fields[0]);
    device_slot(adapter, (uint16_t)value, line)->busy = 1;
  } else if (strcmp(fields[0], "error") == 0) {
    if (count != 4 || parse_number(fields[2], 0x7f, &value) != 0) config_fail(line, "bad address", fields[0]);
    device_slot(adapter, (uint16_t)value, line)->error = parse_errno(fields[3], line);
  } else if (strcmp(fields[0], "unplug") == 0) {
    if (count > 3) config_fail(line, "extra fields", fields[0]);
    adapter->unplugged = 1;
    adapter->open_errno = count == 3 ? parse_errno(fields[2], line) : ENOENT;
  } else if (strcmp(fields[0], "removing") == 0) {
    if (count != 2) config_fail(line, "extra fields", fields[0]);
    adapter->removing = 1;
  } else if (strcmp(fields[0], "nozerolen") == 0) {
    if (count != 2) config_fail(line, "extra fields", fields[0]);
    adapter->no_zero_len = 1;
  } else if (strcmp(fields[0], "rdwr_max") == 0) {
    if (count != 3 || parse_number(fields[2], I2C_RDWR_IOCTL_MAX_MSGS, &value) != 0 || value == 0) {
      config_fail(line, "bad message count", fields[0]);
    }
    adapter->rdwr_max = (int)value;
  } else if (strcmp(fields[0], "delay_us") == 0) {
    if (count != 3 || parse_number(fields[2], 10000000, &value) != 0) config_fail(line, "bad delay", fields[0]);
    adapter->delay_us = (unsigned)value;
  } else {
    config_fail(line, "unknown directive", fields[0]);
  }
}

/* Device flags follow the new configuration; a device that already existed keeps its memory. */
static void merge_devices(struct fake_adapter *adapter, struct fake_adapter *from) {
  for (int i = 0; i < MAX_DEVICES; i++) {
    struct fake_device *device = &adapter->devices[i];
    if (!device->in_use) continue;
    struct fake_device *next = find_device(from, device->addr);
    device->busy = next != NULL && next->busy;
    device->error = next != NULL ? next->error : 0;
    device->present = next != NULL && next->present;
  }
  for (int i = 0; i < MAX_DEVICES; i++) {
    struct fake_device *next = &from->devices[i];
    if (next->in_use && find_device(adapter, next->addr) == NULL) *device_slot(adapter, next->addr, 0) = *next;
  }
}

/* Applies the staged configuration to the live one. Caller holds config_lock for writing. */
static void merge_staged(void) {
  for (int i = 0; i < live.count; i++) {
    struct fake_adapter *adapter = &live.adapters[i];
    struct fake_adapter *next = find_adapter(&staged, adapter->number);
    int gone = next == NULL || next->unplugged;
    if (gone && !adapter->unplugged) adapter->generation++;
    adapter->unplugged = gone;
    adapter->open_errno = next != NULL && next->open_errno != 0 ? next->open_errno : ENOENT;
    if (next == NULL) continue;
    adapter->funcs = next->funcs;
    adapter->no_zero_len = next->no_zero_len;
    adapter->removing = next->removing;
    adapter->rdwr_max = next->rdwr_max;
    adapter->delay_us = next->delay_us;
    merge_devices(adapter, next);
  }
  for (int i = 0; i < staged.count; i++) {
    struct fake_adapter *next = &staged.adapters[i];
    if (find_adapter(&live, next->number) != NULL) continue;
    if (live.count == MAX_ADAPTERS) config_fail(0, "too many adapters", "");
    struct fake_adapter *adapter = &live.adapters[live.count];
    *adapter = *next;
    if (adapter->open_errno == 0) adapter->open_errno = ENOENT;
    pthread_mutex_init(&adapter->bus_lock, NULL);
    snprintf(adapter->path, sizeof adapter->path, "/dev/i2c-%d", adapter->number);
    live.count++;
  }
}

/* Reads the configuration file when it changed since the last read (the first call always reads). */
static void reload_config(void) {
  const char *path = getenv("FAKE_I2C_CONFIG");
  if (path == NULL || *path == '\0') return;
  struct stat st;
  pthread_mutex_lock(&reload_lock);
  if (stat(path, &st) != 0) {
    if (live.count == 0) config_fail(0, "cannot stat", path);
    pthread_mutex_unlock(&reload_lock); /* being replaced: keep the current configuration */
    return;
  }
  if (live.count > 0 && st.st_dev == config_stamp.dev && st.st_ino == config_stamp.ino &&
      st.st_size == config_stamp.size && st.st_mtim.tv_sec == config_stamp.mtime.tv_sec &&
      st.st_mtim.tv_nsec == config_stamp.mtime.tv_nsec) {
    pthread_mutex_unlock(&reload_lock);
    return;
  }
  FILE *file = fopen(path, "re");
  if (file == NULL) config_fail(0, "cannot open", path);
  memset(&staged, 0, sizeof staged);
  char text[512];
  int line = 0;
  while (fgets(text, sizeof text, file) != NULL) parse_line(&staged, text, ++line);
  fclose(file);
  pthread_rwlock_wrlock(&config_lock);
  merge_staged();
  pthread_rwlock_unlock(&config_lock);
  config_stamp.dev = st.st_dev;
  config_stamp.ino = st.st_ino;
  config_stamp.size = st.st_size;
  config_stamp.mtime = st.st_mtim;
  pthread_mutex_unlock(&reload_lock);
}

static void load_config(void) {
  const char *path = getenv("FAKE_I2C_CONFIG");
  if (path == NULL || *path == '\0') return;
  reload_config();
  const char *log_path = getenv("FAKE_I2C_LOG");
  if (log_path != NULL && *log_path != '\0') {
    log_fd = real_open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (log_fd < 0) config_fail(0, "cannot open log", log_path);
  }
}

static void init(void) {
  real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
  real_open64 = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open64");
  real_openat = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, "openat");
  real_openat64 = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, "openat64");
  real_close = (int (*)(int))dlsym(RTLD_NEXT, "close");
  real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
  for (int i = 0; i < MAX_FDS; i++) fds[i].fd = -1;
  load_config();
}

static void ensure_init(void) { pthread_once(&init_once, init); }

static unsigned long take_seq(void) {
  pthread_mutex_lock(&table_lock);
  unsigned long seq = next_seq++;
  pthread_mutex_unlock(&table_lock);
  return seq;
}

static void log_op(unsigned long seq, const struct fake_adapter *adapter, const char *op, uint16_t addr,
                   char dir, const uint8_t *data, size_t len, int err) {
  if (log_fd < 0) return;
  size_t size = 160 + len * 2;
  char *line = malloc(size);
  if (line == NULL) return;
  int n = snprintf(line, size, "seq=%lu adapter=%d op=%s addr=0x%02x dir=%c len=%zu data=", seq,
                   adapter->number, op, addr, dir, len);
  if (data != NULL && len > 0) {
    for (size_t i = 0; i < len; i++) n += snprintf(line + n, size - (size_t)n, "%02x", data[i]);
  } else {
    line[n++] = '-';
  }
  n += snprintf(line + n, size - (size_t)n, " result=%s\n", errno_name(err));
  ssize_t written = write(log_fd, line, (size_t)n);
  (void)written;
  free(line);
}

/* --- fd table --- */

static int is_adapter_path(const char *path) { return path != NULL && strncmp(path, "/dev/i2c-", 9) == 0; }

/* Caller holds config_lock. */
static struct fake_adapter *path_adapter(const char *path) {
  for (int i = 0; i < live.count; i++) {
    if (strcmp(path, live.adapters[i].path) == 0) return &live.adapters[i];
  }
  return NULL;
}

/* Caller holds config_lock. */
static int fake_open(struct fake_adapter *adapter, int flags) {
  if (adapter->unplugged || adapter->removing) {
    int err = adapter->unplugged ? adapter->open_errno : ENOENT;
    log_op(take_seq(), adapter, "open", 0, '-', NULL, 0, err);
    errno = err;
    return -1;
  }
  int fd = real_open("/dev/null", O_RDWR | (flags & O_CLOEXEC));
  if (fd < 0) return -1;
  pthread_mutex_lock(&table_lock);
  for (int i = 0; i < MAX_FDS; i++) {
    if (fds[i].fd == -1) {
      fds[i].fd = fd;
      fds[i].adapter = adapter;
      fds[i].slave = 0;
      fds[i].generation = adapter->generation;
      pthread_mutex_unlock(&table_lock);
      return fd;
    }
  }
  pthread_mutex_unlock(&table_lock);
  real_close(fd);
  errno = EMFILE;
  return -1;
}

/* 1 when `path` is a configured adapter (its open's result in *result), 0 to pass it to libc. */
static int intercept_open(const char *path, int flags, int *result) {
  ensure_init();
  if (!is_adapter_path(path)) return 0;
  reload_config();
  pthread_rwlock_rdlock(&config_lock);
  struct fake_adapter *adapter = path_adapter(path);
  if (adapter != NULL) *result = fake_open(adapter, flags);
  pthread_rwlock_unlock(&config_lock);
  return adapter != NULL;
}

static struct fake_fd *lookup_fd(int fd) {
  if (fd < 0) return NULL;
  for (int i = 0; i < MAX_FDS; i++) {
    if (fds[i].fd == fd) return &fds[i];
  }
  return NULL;
}

static int has_mode(int flags) { return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE; }

int open(const char *path, int flags, ...) {
  int result;
  if (intercept_open(path, flags, &result)) return result;
  mode_t mode = 0;
  if (has_mode(flags)) {
    va_list args;
    va_start(args, flags);
    mode = va_arg(args, mode_t);
    va_end(args);
  }
  return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
  int result;
  if (intercept_open(path, flags, &result)) return result;
  mode_t mode = 0;
  if (has_mode(flags)) {
    va_list args;
    va_start(args, flags);
    mode = va_arg(args, mode_t);
    va_end(args);
  }
  return real_open64(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
  int result;
  if (intercept_open(path, flags, &result)) return result;
  mode_t mode = 0;
  if (has_mode(flags)) {
    va_list args;
    va_start(args, flags);
    mode = va_arg(args, mode_t);
    va_end(args);
  }
  return real_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
  int result;
  if (intercept_open(path, flags, &result)) return result;
  mode_t mode = 0;
  if (has_mode(flags)) {
    va_list args;
    va_start(args, flags);
    mode = va_arg(args, mode_t);
    va_end(args);
  }
  return real_openat64(dirfd, path, flags, mode);
}

/* Fortified callers (-D_FORTIFY_SOURCE) reach these instead of open/openat. */
int __open_2(const char *path, int flags) { return open(path, flags); }
int __open64_2(const char *path, int flags) { return open64(path, flags); }
int __openat_2(int dirfd, const char *path, int flags) { return openat(dirfd, path, flags); }
int __openat64_2(int dirfd, const char *path, int flags) { return openat64(dirfd, path, flags); }

int close(int fd) {
  ensure_init();
  pthread_rwlock_rdlock(&config_lock);
  pthread_mutex_lock(&table_lock);
  struct fake_fd *entry = lookup_fd(fd);
  struct fake_adapter *removing = entry != NULL && entry->adapter->removing ? entry->adapter : NULL;
  if (entry != NULL) entry->fd = -1;
  pthread_mutex_unlock(&table_lock);
  if (removing != NULL) log_op(take_seq(), removing, "close", 0, '-', NULL, 0, 0);
  pthread_rwlock_unlock(&config_lock);
  return real_close(fd);
}

/* --- bus emulation --- */

/* Sleeps until `start` + `us` microseconds; the first call on a thread drops its timer slack to 1 ns. */
static void sleep_until(const struct timespec *start, unsigned long long us) {
  static __thread int slack_set;
  if (!slack_set) {
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    slack_set = 1;
  }
  unsigned long long ns = (unsigned long long)start->tv_nsec + us * 1000ULL;
  struct timespec deadline = {start->tv_sec + (time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL) == EINTR) {
  }
}

/* Runs the messages in order as one transfer; stops at the first failure. Caller holds bus_lock. */
static int run_messages(unsigned long seq, struct fake_adapter *adapter, const char *op, struct bus_msg *msgs,
                        int count) {
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (int i = 0; i < count; i++) {
    struct bus_msg *msg = &msgs[i];
    struct fake_device *device = find_device(adapter, msg->addr);
    int err = 0;
    /* Deadlines from the transfer's start: one late wake-up does not add up over the messages. */
    if (adapter->delay_us > 0) sleep_until(&start, (unsigned long long)adapter->delay_us * (unsigned)(i + 1));
    if (device != NULL && device->error != 0) {
      err = device->error;
    } else if (device == NULL || !device->present) {
      err = ENXIO;
    } else if (msg->read) {
      for (uint16_t b = 0; b < msg->len; b++) msg->buf[b] = device->mem[device->ptr++];
    } else if (msg->len > 0) {
      device->ptr = msg->buf[0];
      for (uint16_t b = 1; b < msg->len; b++) device->mem[device->ptr++] = msg->buf[b];
    }
    int show = !msg->read || err == 0;
    log_op(seq, adapter, op, msg->addr, msg->read ? 'r' : 'w', show ? msg->buf : NULL, show ? msg->len : 0, err);
    if (err != 0) return err;
  }
  return 0;
}

/* do_rdwr's return value on success: the messages it carried out. */
static __thread int rdwr_sent;

static int do_rdwr(struct fake_fd *entry, struct i2c_rdwr_ioctl_data *arg) {
  struct fake_adapter *adapter = entry->adapter;
  if (arg == NULL || arg->msgs == NULL || arg->nmsgs == 0 || arg->nmsgs > I2C_RDWR_IOCTL_MAX_MSGS) return EINVAL;
  struct bus_msg msgs[I2C_RDWR_IOCTL_MAX_MSGS];
  uint8_t *copies[I2C_RDWR_IOCTL_MAX_MSGS] = {0};
  int count = (int)arg->nmsgs;
  int err = 0;
  for (int i = 0; i < count && err == 0; i++) {
    const struct i2c_msg *user = &arg->msgs[i];
    if (user->len > RDWR_MAX_LEN || (user->len > 0 && user->buf == NULL)) err = EINVAL;
    else if (user->flags & (I2C_M_TEN | I2C_M_RECV_LEN | I2C_M_NOSTART)) err = EOPNOTSUPP;
    else if (user->addr > 0x7f) err = EINVAL;
    else if (user->len == 0 && adapter->no_zero_len) err = EOPNOTSUPP;
    if (err != 0) break;
    copies[i] = malloc(user->len > 0 ? user->len : 1);
    if (copies[i] == NULL) {
      err = ENOMEM;
      break;
    }
    if (user->len > 0) memcpy(copies[i], user->buf, user->len);
    msgs[i] = (struct bus_msg){user->addr, (user->flags & I2C_M_RD) != 0, user->len, copies[i]};
  }
  if (err == 0 && !(adapter->funcs & I2C_FUNC_I2C)) err = EOPNOTSUPP;
  int carried = adapter->rdwr_max > 0 && count > adapter->rdwr_max ? adapter->rdwr_max : count;
  if (err == 0) {
    unsigned long seq = take_seq();
    pthread_mutex_lock(&adapter->bus_lock);
    err = run_messages(seq, adapter, "rdwr", msgs, carried);
    pthread_mutex_unlock(&adapter->bus_lock);
    rdwr_sent = carried;
  }
  for (int i = 0; i < count; i++) {
    if (err == 0 && i < carried && msgs[i].read && msgs[i].len > 0) memcpy(arg->msgs[i].buf, copies[i], msgs[i].len);
    free(copies[i]);
  }
  return err;
}

static unsigned long smbus_func(int read, uint32_t size) {
  switch (size) {
    case I2C_SMBUS_QUICK: return I2C_FUNC_SMBUS_QUICK;
    case I2C_SMBUS_BYTE: return read ? I2C_FUNC_SMBUS_READ_BYTE : I2C_FUNC_SMBUS_WRITE_BYTE;
    case I2C_SMBUS_BYTE_DATA: return read ? I2C_FUNC_SMBUS_READ_BYTE_DATA : I2C_FUNC_SMBUS_WRITE_BYTE_DATA;
    case I2C_SMBUS_WORD_DATA: return read ? I2C_FUNC_SMBUS_READ_WORD_DATA : I2C_FUNC_SMBUS_WRITE_WORD_DATA;
    case I2C_SMBUS_PROC_CALL: return I2C_FUNC_SMBUS_PROC_CALL;
    case I2C_SMBUS_BLOCK_DATA: return read ? I2C_FUNC_SMBUS_READ_BLOCK_DATA : I2C_FUNC_SMBUS_WRITE_BLOCK_DATA;
    case I2C_SMBUS_I2C_BLOCK_BROKEN:
    case I2C_SMBUS_I2C_BLOCK_DATA:
      return read ? I2C_FUNC_SMBUS_READ_I2C_BLOCK : I2C_FUNC_SMBUS_WRITE_I2C_BLOCK;
    default: return 0;
  }
}

static const char *smbus_op(uint32_t size) {
  switch (size) {
    case I2C_SMBUS_QUICK: return "smbus-quick";
    case I2C_SMBUS_BYTE: return "smbus-byte";
    case I2C_SMBUS_BYTE_DATA: return "smbus-byte-data";
    case I2C_SMBUS_WORD_DATA: return "smbus-word-data";
    case I2C_SMBUS_PROC_CALL: return "smbus-proc-call";
    case I2C_SMBUS_BLOCK_DATA: return "smbus-block-data";
    default: return "smbus-i2c-block-data";
  }
}

/* SMBus block read: the device sends a count byte (1..32), then that many bytes. */
static int smbus_block_read(unsigned long seq, struct fake_adapter *adapter, uint16_t addr, uint8_t command,
                            union i2c_smbus_data *data) {
  uint8_t cmd = command;
  struct bus_msg first[2] = {{addr, 0, 1, &cmd}, {addr, 1, 1, &data->block[0]}};
  int err = run_messages(seq, adapter, "smbus-block-data", first, 2);
  if (err != 0) return err;
  if (data->block[0] == 0 || data->block[0] > I2C_SMBUS_BLOCK_MAX) return EPROTO;
  struct bus_msg rest = {addr, 1, data->block[0], &data->block[1]};
  return run_messages(seq, adapter, "smbus-block-data", &rest, 1);
}

static int do_smbus(struct fake_fd *entry, struct i2c_smbus_ioctl_data *arg) {
  struct fake_adapter *adapter = entry->adapter;
  if (arg == NULL) return EFAULT;
  uint32_t size = arg->size;
  int read = arg->read_write == I2C_SMBUS_READ;
  if (arg->read_write != I2C_SMBUS_READ && arg->read_write != I2C_SMBUS_WRITE) return EINVAL;
  if (size > I2C_SMBUS_I2C_BLOCK_DATA) return EINVAL;
  int needs_data = !(size == I2C_SMBUS_QUICK || (size == I2C_SMBUS_BYTE && !read));
  if (needs_data && arg->data == NULL) return EINVAL;
  union i2c_smbus_data data;
  memset(&data, 0, sizeof data);
  if (needs_data) data = *arg->data;
  if (size == I2C_SMBUS_I2C_BLOCK_BROKEN) {
    size = I2C_SMBUS_I2C_BLOCK_DATA;
    if (read) data.block[0] = I2C_SMBUS_BLOCK_MAX;
  }
  if (size == I2C_SMBUS_PROC_CALL) read = 1;
  unsigned long func = smbus_func(read, size);
  if (size == I2C_SMBUS_PROC_CALL) func = I2C_FUNC_SMBUS_PROC_CALL;
  if (func == 0 || (adapter->funcs & func) != func) return EOPNOTSUPP;
  if ((size == I2C_SMBUS_I2C_BLOCK_DATA || (size == I2C_SMBUS_BLOCK_DATA && !read)) &&
      (data.block[0] == 0 || data.block[0] > I2C_SMBUS_BLOCK_MAX)) {
    return EINVAL;
  }

  uint16_t addr = entry->slave;
  uint8_t out[I2C_SMBUS_BLOCK_MAX + 2];
  uint8_t word_in[2] = {0, 0};
  struct bus_msg msgs[2];
  int count = 2;
  out[0] = arg->command;
  msgs[0] = (struct bus_msg){addr, 0, 1, out};
  switch (size) {
    case I2C_SMBUS_QUICK:
      msgs[0] = (struct bus_msg){addr, read, 0, out};
      count = 1;
      break;
    case I2C_SMBUS_BYTE:
      msgs[0] = read ? (struct bus_msg){addr, 1, 1, &data.byte} : (struct bus_msg){addr, 0, 1, out};
      count = 1;
      break;
    case I2C_SMBUS_BYTE_DATA:
      if (read) msgs[1] = (struct bus_msg){addr, 1, 1, &data.byte};
      else {
        out[1] = data.byte;
        msgs[0].len = 2;
        count = 1;
      }
      break;
    case I2C_SMBUS_WORD_DATA:
    case I2C_SMBUS_PROC_CALL:
      if (size == I2C_SMBUS_PROC_CALL || !read) {
        out[1] = (uint8_t)(data.word & 0xff); /* words are little-endian on the bus */
        out[2] = (uint8_t)(data.word >> 8);
        msgs[0].len = 3;
      }
      if (read) msgs[1] = (struct bus_msg){addr, 1, 2, word_in};
      else count = 1;
      break;
    case I2C_SMBUS_BLOCK_DATA:
      if (!read) {
        memcpy(&out[1], data.block, (size_t)data.block[0] + 1);
        msgs[0].len = (uint16_t)(data.block[0] + 2);
        count = 1;
      }
      break;
    default: /* I2C_SMBUS_I2C_BLOCK_DATA */
      if (read) msgs[1] = (struct bus_msg){addr, 1, data.block[0], &data.block[1]};
      else {
        memcpy(&out[1], &data.block[1], data.block[0]);
        msgs[0].len = (uint16_t)(data.block[0] + 1);
        count = 1;
      }
      break;
  }

  unsigned long seq = take_seq();
  pthread_mutex_lock(&adapter->bus_lock);
  int err = (size == I2C_SMBUS_BLOCK_DATA && read) ? smbus_block_read(seq, adapter, addr, arg->command, &data)
                                                   : run_messages(seq, adapter, smbus_op(size), msgs, count);
  pthread_mutex_unlock(&adapter->bus_lock);
  if (size == I2C_SMBUS_WORD_DATA || size == I2C_SMBUS_PROC_CALL) data.word = (uint16_t)(word_in[0] | word_in[1] << 8);
  if (err == 0 && read) *arg->data = data;
  return err;
}

static int do_slave(struct fake_fd *entry, unsigned long addr, int force) {
  struct fake_adapter *adapter = entry->adapter;
  if (addr > 0x7f) return EINVAL;
  /* Like the kernel, no bus lock: I2C_SLAVE only changes the fd's address. */
  unsigned long seq = take_seq();
  struct fake_device *device = find_device(adapter, (uint16_t)addr);
  int err = (!force && device != NULL && device->busy) ? EBUSY : 0;
  log_op(seq, adapter, "slave", (uint16_t)addr, '-', NULL, 0, err);
  if (err == 0) {
    pthread_mutex_lock(&table_lock);
    struct fake_fd *current = lookup_fd(entry->fd);
    if (current != NULL && current->adapter == adapter) current->slave = (uint16_t)addr;
    pthread_mutex_unlock(&table_lock);
  }
  return err;
}

int ioctl(int fd, unsigned long request, ...) {
  ensure_init();
  va_list args;
  va_start(args, request);
  void *arg = va_arg(args, void *);
  va_end(args);

  /* Work on a snapshot: another thread may close the fd and reuse the slot meanwhile. */
  pthread_mutex_lock(&table_lock);
  struct fake_fd *found = lookup_fd(fd);
  struct fake_fd snapshot = found != NULL ? *found : (struct fake_fd){-1, NULL, 0, 0};
  pthread_mutex_unlock(&table_lock);
  if (snapshot.fd == -1) return real_ioctl(fd, request, arg);
  struct fake_fd *entry = &snapshot;

  reload_config();
  pthread_rwlock_rdlock(&config_lock);
  if (entry->adapter->unplugged || entry->generation != entry->adapter->generation) {
    /* As i2c-dev after its adapter was removed: the fd stays, every ioctl fails. */
    log_op(take_seq(), entry->adapter, "nodev", 0, '-', NULL, 0, ENODEV);
    pthread_rwlock_unlock(&config_lock);
    errno = ENODEV;
    return -1;
  }

  /* The overlap detector: the kernel allows concurrent ioctls, but callers that promise to
   * serialise an adapter can be checked against this line. */
  struct fake_adapter *adapter = entry->adapter;
  pthread_mutex_lock(&table_lock);
  int overlapping = adapter->in_flight++;
  pthread_mutex_unlock(&table_lock);
  if (overlapping > 0) log_op(take_seq(), adapter, "overlap", 0, '-', NULL, 0, 0);

  int err;
  switch (request) {
    case I2C_FUNCS:
      if (arg == NULL) err = EFAULT;
      else {
        *(unsigned long *)arg = entry->adapter->funcs;
        err = 0;
      }
      break;
    case I2C_SLAVE:
    case I2C_SLAVE_FORCE: err = do_slave(entry, (unsigned long)arg, request == I2C_SLAVE_FORCE); break;
    case I2C_TENBIT: err = arg == NULL ? 0 : EINVAL; break;
    case I2C_PEC:
    case I2C_RETRIES:
    case I2C_TIMEOUT: err = 0; break;
    case I2C_RDWR: err = do_rdwr(entry, arg); break;
    case I2C_SMBUS: err = do_smbus(entry, arg); break;
    default: err = ENOTTY; break;
  }
  pthread_mutex_lock(&table_lock);
  adapter->in_flight--;
  pthread_mutex_unlock(&table_lock);
  pthread_rwlock_unlock(&config_lock);
  if (err != 0) {
    errno = err;
    return -1;
  }
  return request == I2C_RDWR ? rdwr_sent : 0;
}
