/*
 * LD_PRELOAD helper for the host-device lock tests: plays a process that replaces a lock file
 * between the daemon's open and its flock. The first flock(2) on a file whose name ends in ".lock"
 * first unlinks that name and creates a new empty file there (mode 0600), then locks the old fd as
 * asked. LOCK_SWAP_LOG (if set) gets one line "swapped <path> old=<ino> new=<ino>". Every other call
 * passes through to libc, and nothing happens after the first swap.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int swapped;

static void log_swap(const char *path, unsigned long old_ino, unsigned long new_ino) {
  const char *log_path = getenv("LOCK_SWAP_LOG");
  if (log_path == NULL) return;
  FILE *log = fopen(log_path, "ae");
  if (log == NULL) return;
  fprintf(log, "swapped %s old=%lu new=%lu\n", path, old_ino, new_ino);
  fclose(log);
}

static void swap_lock_file(int fd) {
  char link[64];
  char path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 6) return;
  path[n] = '\0';
  if (strcmp(path + n - 5, ".lock") != 0) return;
  swapped = 1;
  struct stat old_stat, new_stat;
  if (fstat(fd, &old_stat) != 0 || unlink(path) != 0) return;
  int replacement = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (replacement < 0) return;
  if (fstat(replacement, &new_stat) == 0) {
    log_swap(path, (unsigned long)old_stat.st_ino, (unsigned long)new_stat.st_ino);
  }
  close(replacement);
}

int flock(int fd, int operation) {
  static int (*real_flock)(int, int);
  if (real_flock == NULL) real_flock = (int (*)(int, int))dlsym(RTLD_NEXT, "flock");
  if (!swapped) swap_lock_file(fd);
  return real_flock(fd, operation);
}
