/*
 * bus-time-probe: the rate a fake adapter's bus sustains on its own, with no daemon in between: runs
 * the benchmark's transfer (write one byte 0x00, then read 8 bytes, one I2C_RDWR, repeated START) to
 * ADDR on /dev/i2c-ADAPTER back to back, SAMPLES times, and prints
 *   median_us=M p99_us=P cpu_us=C
 * (wall time per transfer, CPU time per transfer). Run it with libfakei2c.so preloaded and
 * FAKE_I2C_CONFIG set (test/fake-i2c/fake.ts measureBusTime does); against a real adapter it would
 * measure that adapter. It only measures: it never changes a device but for the register pointer.
 *
 * Usage: bus-time-probe ADAPTER ADDR SAMPLES
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/i2c-dev.h>
#include <linux/i2c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s ADAPTER ADDR SAMPLES\n", argv[0]);
    return 2;
  }
  int adapter = atoi(argv[1]);
  unsigned addr = (unsigned)strtoul(argv[2], NULL, 0);
  int samples = atoi(argv[3]);
  if (adapter < 0 || addr > 0x7f || samples < 1 || samples > 10000000) {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  char path[32];
  snprintf(path, sizeof path, "/dev/i2c-%d", adapter);
  int fd = open(path, O_RDWR);
  if (fd < 0) {
    fprintf(stderr, "open %s: %s\n", path, strerror(errno));
    return 1;
  }
  double *took = malloc(sizeof *took * (size_t)samples);
  if (took == NULL) return 1;
  unsigned char reg = 0, data[8];
  struct i2c_msg msgs[2] = {
      {.addr = (__u16)addr, .flags = 0, .len = 1, .buf = &reg},
      {.addr = (__u16)addr, .flags = I2C_M_RD, .len = sizeof data, .buf = data},
  };
  struct i2c_rdwr_ioctl_data transfer = {.msgs = msgs, .nmsgs = 2};
  struct rusage before, after;
  getrusage(RUSAGE_SELF, &before);
  for (int i = 0; i < samples; i++) {
    double t = now_us();
    if (ioctl(fd, I2C_RDWR, &transfer) != 2) {
      fprintf(stderr, "I2C_RDWR: %s\n", strerror(errno));
      return 1;
    }
    took[i] = now_us() - t;
  }
  getrusage(RUSAGE_SELF, &after);
  double cpu_us = (double)(after.ru_utime.tv_sec - before.ru_utime.tv_sec) * 1e6 +
                  (double)(after.ru_utime.tv_usec - before.ru_utime.tv_usec) +
                  (double)(after.ru_stime.tv_sec - before.ru_stime.tv_sec) * 1e6 +
                  (double)(after.ru_stime.tv_usec - before.ru_stime.tv_usec);
  qsort(took, (size_t)samples, sizeof *took, by_value);
  printf("median_us=%.1f p99_us=%.1f cpu_us=%.2f\n", took[samples / 2], took[(samples * 99) / 100],
         cpu_us / samples);
  free(took);
  close(fd);
  return 0;
}
