/*
 * The demo VI's stateful service: a TCP counter whose only state lives in memory.
 * Each line "INCR" adds one and answers the new value; "GET" answers it unchanged;
 * "CHECK" re-reads every word of the memory ballast and answers "OK <MiB>" or "BAD <words>":
 * the process itself witnesses that its memory arrived intact, whatever the migration reports.
 * If a live migration lost the process memory the counter would restart at 1, and if
 * it lost the TCP connection the client would see a reset: both are what tests look for.
 *
 * Usage: kv-server [port] [ballast-MiB]   (ballast: resident memory to make images bigger)
 * Built static so the container rootfs needs nothing else.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CLIENTS 64
#define LINE_MAX_LEN 128

struct client { int fd; size_t len; char buf[LINE_MAX_LEN]; };

static unsigned long long counter;
static unsigned long long *ballast;
static size_t ballast_words;

static unsigned long long pattern(size_t i) { return (unsigned long long)i * 0x9E3779B97F4A7C15ULL ^ 0x5bd1e995ULL; }

static void detach_stdio(void) {
  /* CRIU cannot dump a container whose stdio points at host files: use the container's /dev/null. */
  int null = open("/dev/null", O_RDWR);
  if (null < 0) return;
  dup2(null, 0); dup2(null, 1); dup2(null, 2);
  if (null > 2) close(null);
}

static void handle_line(int fd, const char *line) {
  char out[48];
  if (strcmp(line, "CHECK") == 0) {
    size_t bad = 0;
    for (size_t i = 0; i < ballast_words; i++) bad += ballast[i] != pattern(i);
    int n = bad ? snprintf(out, sizeof out, "BAD %zu\n", bad) : snprintf(out, sizeof out, "OK %zu\n", ballast_words >> 17);
    (void)!write(fd, out, (size_t)n);
    return;
  }
  if (strcmp(line, "INCR") == 0) counter++;
  else if (strcmp(line, "GET") != 0) { (void)!write(fd, "ERR\n", 4); return; }
  int n = snprintf(out, sizeof out, "%llu\n", counter);
  (void)!write(fd, out, (size_t)n);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 7000;
  long ballast_mib = argc > 2 ? atol(argv[2]) : 0;
  if (ballast_mib > 0) {
    ballast_words = (size_t)ballast_mib << 17; /* 8-byte words */
    ballast = malloc(ballast_words * sizeof *ballast);
    if (!ballast) return 1;
    for (size_t i = 0; i < ballast_words; i++) ballast[i] = pattern(i); /* every byte resident and known */
  }
  detach_stdio();

  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 16) < 0) return 2;

  struct pollfd pfd[MAX_CLIENTS + 1];
  struct client clients[MAX_CLIENTS];
  int nclients = 0;
  for (;;) {
    pfd[0].fd = lfd; pfd[0].events = POLLIN;
    for (int i = 0; i < nclients; i++) { pfd[i + 1].fd = clients[i].fd; pfd[i + 1].events = POLLIN; }
    if (poll(pfd, (nfds_t)nclients + 1, -1) < 0) { if (errno == EINTR) continue; return 3; }
    for (int i = nclients - 1; i >= 0; i--) {
      if (!(pfd[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      struct client *c = &clients[i];
      ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
      if (r <= 0) { close(c->fd); clients[i] = clients[--nclients]; continue; }
      c->len += (size_t)r;
      char *start = c->buf, *nl;
      while ((nl = memchr(start, '\n', c->len - (size_t)(start - c->buf))) != NULL) {
        *nl = '\0';
        if (nl > start && nl[-1] == '\r') nl[-1] = '\0';
        handle_line(c->fd, start);
        start = nl + 1;
      }
      c->len -= (size_t)(start - c->buf);
      memmove(c->buf, start, c->len);
      if (c->len == sizeof c->buf) c->len = 0; /* overlong line: drop it */
    }
    if ((pfd[0].revents & POLLIN) && nclients < MAX_CLIENTS) {
      int cfd = accept(lfd, NULL, NULL);
      if (cfd >= 0) { clients[nclients].fd = cfd; clients[nclients].len = 0; nclients++; }
    }
  }
}
