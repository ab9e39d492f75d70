/*
 * c-floor: the kernel's floor for a depth-1 round trip on this machine, the way a C back-end and a C
 * frontend do it (the kind of run the original daemon's figures come from): a forked child waits in
 * epoll_wait on the kick eventfd, reads it and writes the call eventfd; the parent writes the kick,
 * waits in poll(2) on the call eventfd and reads it. Both stay on the CPU they were started on (run it
 * under taskset to pin both on one CPU), or, given ECHO_CPU and FRONTEND_CPU, each side is pinned to
 * its own (the two-CPU placement: a cross-CPU wake-up per direction). Prints
 *   trips_per_sec=R trip_us=T echo_cpu_us=E frontend_cpu_us=F
 * Benchmark calibration only: the product's only C is the addon in native/.
 *
 * Usage: c-floor MILLISECONDS [ECHO_CPU FRONTEND_CPU]
 */
#define _GNU_SOURCE
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* utime + stime of `pid` in microseconds, from /proc (USER_HZ ticks). */
static double cpu_us_of(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (p == NULL) return -1;
  unsigned long utime = 0, stime = 0;
  /* After ")": state, then fields 4..13 before utime (14) and stime (15). */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2) return -1;
  return (double)(utime + stime) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

/* Pins the calling process to `cpu`; exits on failure (a floor measured elsewhere would mislead). */
static void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    perror("sched_setaffinity");
    exit(1);
  }
}

static void echo(int kick, int call) {
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = kick};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, kick, &ev) != 0) _exit(1);
  for (;;) {
    struct epoll_event out[4];
    if (epoll_wait(ep, out, 4, -1) <= 0) continue;
    uint64_t value;
    if (read(kick, &value, sizeof value) != sizeof value) continue;
    value = 1;
    if (write(call, &value, sizeof value) != sizeof value) _exit(1);
  }
}

/* One round trip; -1 when the echo did not answer within 5 s. */
static int trip(int kick, int call) {
  uint64_t value = 1;
  if (write(kick, &value, sizeof value) != sizeof value) return -1;
  struct pollfd pfd = {.fd = call, .events = POLLIN};
  if (poll(&pfd, 1, 5000) != 1) return -1;
  return read(call, &value, sizeof value) == sizeof value ? 0 : -1;
}

static long run(int kick, int call, double ms) {
  long trips = 0;
  double end = now_us() + ms * 1000;
  while (now_us() < end) {
    for (int k = 0; k < 1000; k++)
      if (trip(kick, call) != 0) return -1;
    trips += 1000;
  }
  return trips;
}

int main(int argc, char **argv) {
  double ms = argc == 2 || argc == 4 ? atof(argv[1]) : 0;
  if (ms <= 0) {
    fprintf(stderr, "usage: %s MILLISECONDS [ECHO_CPU FRONTEND_CPU]\n", argv[0]);
    return 2;
  }
  int echo_cpu = argc == 4 ? atoi(argv[2]) : -1, frontend_cpu = argc == 4 ? atoi(argv[3]) : -1;
  int kick = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), call = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (kick < 0 || call < 0) return 1;
  pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    if (echo_cpu >= 0) pin_to(echo_cpu);
    echo(kick, call);
  }
  if (frontend_cpu >= 0) pin_to(frontend_cpu);
  int status = 1;
  if (run(kick, call, ms < 300 ? ms : 300) >= 0) { /* warm-up */
    double echo0 = cpu_us_of(child);
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    double t0 = now_us();
    long trips = run(kick, call, ms);
    double elapsed = now_us() - t0;
    getrusage(RUSAGE_SELF, &r1);
    double echo_cpu = cpu_us_of(child) - echo0;
    double own = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e6 +
                 (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
    if (trips > 0) {
      printf("trips_per_sec=%.0f trip_us=%.2f echo_cpu_us=%.2f frontend_cpu_us=%.2f\n", trips * 1e6 / elapsed,
             elapsed / trips, echo_cpu / trips, own / trips);
      status = 0;
    }
  }
  if (status != 0) fprintf(stderr, "the echo process did not answer\n");
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  return status;
}
