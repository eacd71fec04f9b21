/*
 * migravi-uffd-guard: keeps a post-copy restore safe when CRIU's lazy-pages daemon dies.
 *
 * CRIU hands each restored process's userfaultfd to its lazy-pages daemon only; if the daemon
 * dies (or loses its page server), the kernel drops the registration and every page not copied
 * yet reads as zeros — silent corruption (docs/notes/postcopy-lab/RESULT.md). This guard takes
 * duplicates of those userfaultfds from the running daemon (pidfd_getfd). While it holds them a
 * missing page stalls the process instead, and the worker can copy the missing pages in through
 * the guard (UFFDIO_COPY), fetched from a restarted page server. Released once every page is in.
 *
 *   migravi-uffd-guard DAEMON_PID SOCKET_PATH
 *
 * Commands on the unix socket, one connection at a time, one line each (replies are one line):
 *   take                    → "held FD..."     duplicates every userfaultfd the daemon holds now
 *   copy FD ADDR LEN\n<LEN bytes>  → "ok COPIED EXISTED GONE"  pages into the process of daemon fd FD
 *   drain                   → "drained N"      reads and drops pending events (daemon gone only)
 *   release                 → "released", then exits: the pages are all in
 * It outlives the worker that started it (the worker may die mid-window: the next one reconnects).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

#define PAGE 4096UL
#define MAX_HELD 256

static int held_daemon_fd[MAX_HELD];
static int held_fd[MAX_HELD];
static int nheld;

static int find_held(int daemon_fd) {
  for (int i = 0; i < nheld; i++)
    if (held_daemon_fd[i] == daemon_fd) return held_fd[i];
  return -1;
}

static void reply(int sk, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(int sk, const char *fmt, ...) {
  char buf[8192];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
  buf[n++] = '\n';
  for (int off = 0; off < n;) {
    ssize_t w = write(sk, buf + off, n - off);
    if (w <= 0) return;
    off += w;
  }
}

/* Duplicates every userfaultfd the daemon holds that is not held yet. */
static void take(int sk, int pidfd, int daemon_pid) {
  char dir[64], link[PATH_MAX], target[128];
  snprintf(dir, sizeof dir, "/proc/%d/fd", daemon_pid);
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      snprintf(link, sizeof link, "%s/%s", dir, e->d_name);
      ssize_t n = readlink(link, target, sizeof target - 1);
      if (n <= 0) continue;
      target[n] = 0;
      if (strcmp(target, "anon_inode:[userfaultfd]") != 0) continue;
      int dfd = atoi(e->d_name);
      if (find_held(dfd) >= 0 || nheld >= MAX_HELD) continue;
      int fd = syscall(SYS_pidfd_getfd, pidfd, dfd, 0);
      if (fd < 0) continue;
      held_daemon_fd[nheld] = dfd;
      held_fd[nheld++] = fd;
    }
    closedir(d);
  }
  char out[4096] = "held";
  for (int i = 0; i < nheld; i++) snprintf(out + strlen(out), sizeof out - strlen(out), " %d", held_daemon_fd[i]);
  reply(sk, "%s", out);
}

/* UFFDIO_COPY of whole pages; a page already present is counted, one whose range is gone too. */
static int copy_pages(int uffd, uint64_t addr, const char *data, uint64_t len, uint64_t *copied, uint64_t *existed, uint64_t *gone) {
  uint64_t done = 0;
  while (done < len) {
    struct uffdio_copy c = {.dst = addr + done, .src = (uint64_t)(uintptr_t)(data + done), .len = len - done, .mode = 0};
    if (ioctl(uffd, UFFDIO_COPY, &c) == 0) {
      *copied += c.len / PAGE;
      done += c.len;
      continue;
    }
    if (c.copy > 0) { /* partial: go on after what was copied */
      *copied += c.copy / PAGE;
      done += c.copy;
      continue;
    }
    if (errno == EAGAIN) continue; /* the address space is changing: try again */
    if (errno == EEXIST) { *existed += 1; done += PAGE; continue; }
    if (errno == ENOENT || errno == ESRCH || errno == EINVAL) { *gone += 1; done += PAGE; continue; }
    return -errno;
  }
  return 0;
}

static int read_full(int sk, char *buf, uint64_t len) {
  uint64_t got = 0;
  while (got < len) {
    ssize_t n = read(sk, buf + got, len - got);
    if (n <= 0) return -1;
    got += n;
  }
  return 0;
}

static int read_line(int sk, char *buf, size_t size) {
  size_t n = 0;
  while (n < size - 1) {
    char ch;
    ssize_t r = read(sk, &ch, 1);
    if (r <= 0) return -1;
    if (ch == '\n') break;
    buf[n++] = ch;
  }
  buf[n] = 0;
  return (int)n;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s DAEMON_PID SOCKET_PATH\n", argv[0]);
    return 2;
  }
  int daemon_pid = atoi(argv[1]);
  int pidfd = syscall(SYS_pidfd_open, daemon_pid, 0);
  if (pidfd < 0) {
    perror("pidfd_open");
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  /* Only the worker may stop it: a hang-up or an interrupt of its starter must not drop the uffds. */
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  int ls = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(argv[2]) >= sizeof sa.sun_path) {
    fprintf(stderr, "socket path too long: %s\n", argv[2]);
    return 1;
  }
  strcpy(sa.sun_path, argv[2]);
  unlink(argv[2]);
  if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 4) < 0) {
    perror("bind/listen");
    return 1;
  }
  chmod(argv[2], 0600);
  fprintf(stderr, "guarding the userfaultfds of lazy-pages daemon %d on %s\n", daemon_pid, argv[2]);

  size_t cap = 0;
  char *data = NULL;
  for (;;) {
    int sk = accept(ls, NULL, NULL);
    if (sk < 0) continue;
    char line[256];
    while (read_line(sk, line, sizeof line) >= 0) {
      int dfd;
      unsigned long long addr, len;
      if (strcmp(line, "take") == 0) {
        take(sk, pidfd, daemon_pid);
      } else if (sscanf(line, "copy %d %llx %llu", &dfd, &addr, &len) == 3) {
        if (len > cap) {
          free(data);
          cap = len;
          data = malloc(cap);
        }
        if (!data || read_full(sk, data, len) < 0) break;
        int uffd = find_held(dfd);
        if (uffd < 0) {
          reply(sk, "error not-held %d", dfd);
          continue;
        }
        uint64_t copied = 0, existed = 0, gone = 0;
        int rc = copy_pages(uffd, addr, data, len, &copied, &existed, &gone);
        if (rc < 0)
          reply(sk, "error %s", strerror(-rc));
        else
          reply(sk, "ok %llu %llu %llu", (unsigned long long)copied, (unsigned long long)existed, (unsigned long long)gone);
      } else if (strcmp(line, "drain") == 0) {
        /* With the daemon gone, events (fork, remove, ...) would block the process until read. */
        struct uffd_msg msg;
        long drained = 0;
        for (int i = 0; i < nheld; i++) {
          int fl = fcntl(held_fd[i], F_GETFL);
          fcntl(held_fd[i], F_SETFL, fl | O_NONBLOCK);
          while (read(held_fd[i], &msg, sizeof msg) == sizeof msg) drained++;
        }
        reply(sk, "drained %ld", drained);
      } else if (strcmp(line, "release") == 0) {
        for (int i = 0; i < nheld; i++) close(held_fd[i]);
        reply(sk, "released");
        unlink(argv[2]);
        return 0;
      } else {
        reply(sk, "error unknown command");
      }
    }
    close(sk);
  }
}
